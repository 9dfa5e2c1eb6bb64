//! The current picker of a backend group, swappable while traffic flows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;

use super::picker::{Handoff, HandoffResult, Picker, PickerInfo, PickerStatsSnapshot, worker_index};
use super::runtime::{BackendLoad, NoLoad, PluginRuntime};
use super::trial::{Decider, Role, Trial, TrialEnd, TrialOutcome, TrialReport, TrialSpec, Verdict};
use super::{PluginError, PluginSource};
use veer_core::BackendEvent;
use veer_core::Membership;

/// How often the control task looks for a faulted instance to replace.
pub const REPAIR_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// How often the control task asks a trial's rule for a decision.
pub const TRIAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a successful swap did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwapReport {
    /// The picker that was replaced.
    pub from: PickerInfo,
    /// The picker now serving.
    pub to: PickerInfo,
    /// What happened to the old picker's learned state.
    pub handoff: HandoffResult,
}

/// The picker that routes one request, as a data-path worker holds it
/// ([`PickerSlot::for_request`]): the serving picker, or the candidate of a
/// running trial. Each worker has its own reference count: with one
/// `Arc<Picker>` cloned per request by every worker, the count's cache line
/// moved between cores on every request.
#[derive(Clone)]
pub struct RequestPicker {
    worker: Arc<WorkerRef>,
    role: Role,
}

/// One worker's reference to the serving picker and the trial, on cache
/// lines of its own.
#[repr(align(128))]
struct WorkerRef {
    serving: Arc<Picker>,
    trial: Option<Arc<Trial>>,
}

impl WorkerRef {
    fn picker(&self, role: Role) -> &Arc<Picker> {
        match (role, &self.trial) {
            (Role::Candidate, Some(trial)) => trial.candidate(),
            _ => &self.serving,
        }
    }
}

impl std::ops::Deref for RequestPicker {
    type Target = Picker;

    fn deref(&self) -> &Picker {
        self.worker.picker(self.role)
    }
}

impl RequestPicker {
    /// The picker as a plain `Arc`, to keep past the request (the access
    /// log's record does). Shares the reference count every control path uses.
    pub fn shared(&self) -> Arc<Picker> {
        self.worker.picker(self.role).clone()
    }

    /// Whether a trial runs: only then does [`RequestPicker::finished`]
    /// count anything, and the caller need not time the request otherwise.
    pub fn on_trial(&self) -> bool {
        self.worker.trial.is_some()
    }

    /// Counts the request this picker routed for the trial, if one runs:
    /// `ok` unless veer answered 5xx, `latency` from the first pick to the
    /// response head. Not called for a request the client broke off.
    pub fn finished(&self, ok: bool, latency: std::time::Duration) {
        if let Some(trial) = &self.worker.trial {
            trial.record(self.role, ok, latency);
        }
    }
}

impl std::fmt::Debug for RequestPicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.worker.picker(self.role).fmt(f)
    }
}

/// Holds the serving picker of one backend group.
///
/// Requests read it without a lock ([`PickerSlot::for_request`]). Membership changes
/// and swaps are serialised by one mutex so that a picker being built for a swap
/// cannot miss an event: it is built from the canonical membership under that
/// mutex and stored before the next event is applied.
///
/// Calls into the plugin that are not picks (`backends-changed`, replacing a
/// faulted instance) never run on a request's thread: events decided there
/// (a breaker opening on an attempt's outcome) are queued with
/// [`PickerSlot::publish`] and applied by the group's control task
/// ([`PickerSlot::run`]), so a slow plugin call stalls no request.
pub struct PickerSlot {
    runtime: Arc<PluginRuntime>,
    /// What every picker this slot starts reads through `host.in-flight`.
    load: Arc<dyn BackendLoad>,
    current: ArcSwap<Picker>,
    /// The same picker, once per worker (see [`RequestPicker`]).
    per_worker: Box<[ArcSwap<WorkerRef>]>,
    membership: Mutex<Membership>,
    /// Events published from request threads, not yet applied.
    pending: Mutex<Vec<BackendEvent>>,
    wake: tokio::sync::Notify,
    swaps: AtomicU64,
    /// What replaced pickers counted, so that totals survive swaps.
    retired: Mutex<PickerStatsSnapshot>,
    /// The candidate on trial, if any; changed under `membership`'s lock.
    trial: ArcSwapOption<Trial>,
    /// How the last trial ended.
    last_trial: Mutex<Option<TrialEnd>>,
    promotions: AtomicU64,
    trial_retirements: AtomicU64,
}

impl std::fmt::Debug for PickerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickerSlot").field("current", &self.current.load().info()).finish()
    }
}

impl PickerSlot {
    /// Loads, configures and smoke-tests the first picker, for an empty group
    /// with no pool behind it: `host.in-flight` reads [`NoLoad`]. A group's
    /// slot is made with [`PickerSlot::with_load`].
    pub fn new(
        runtime: Arc<PluginRuntime>,
        source: &PluginSource,
        params: Vec<(String, String)>,
    ) -> Result<Self, PluginError> {
        Self::with_load(runtime, source, params, Arc::new(NoLoad))
    }

    /// [`PickerSlot::new`] for a group whose pool keeps the in-flight counts
    /// its pickers read (`load`).
    pub fn with_load(
        runtime: Arc<PluginRuntime>,
        source: &PluginSource,
        params: Vec<(String, String)>,
        load: Arc<dyn BackendLoad>,
    ) -> Result<Self, PluginError> {
        let picker = Arc::new(Self::build(&runtime, &load, source, params, Membership::default(), None)?.0);
        let workers = runtime.limits().instances.max(1);
        Ok(PickerSlot {
            per_worker: (0..workers)
                .map(|_| ArcSwap::from_pointee(WorkerRef { serving: picker.clone(), trial: None }))
                .collect(),
            runtime,
            load,
            current: ArcSwap::new(picker),
            membership: Mutex::new(Membership::default()),
            pending: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            swaps: AtomicU64::new(0),
            retired: Mutex::new(PickerStatsSnapshot::default()),
            trial: ArcSwapOption::empty(),
            last_trial: Mutex::new(None),
            promotions: AtomicU64::new(0),
            trial_retirements: AtomicU64::new(0),
        })
    }

    /// The plugin runtime this slot loads pickers with.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// The serving picker, for control paths (the admin API, reload, metrics).
    pub fn current(&self) -> Arc<Picker> {
        self.current.load_full()
    }

    /// The serving picker, for a request on the calling worker: hold it for
    /// the whole request so that the picker that routed an attempt also hears
    /// its outcome. Touches no reference count shared with other workers.
    /// Never the candidate of a trial: client requests use
    /// [`PickerSlot::for_request_drawn`].
    pub fn for_request(&self) -> RequestPicker {
        RequestPicker { worker: self.worker_ref(), role: Role::Serving }
    }

    /// [`PickerSlot::for_request`], or the candidate when a trial runs and
    /// `draw` (called only then: a number the client cannot choose) falls in
    /// its share.
    pub fn for_request_drawn(&self, draw: impl FnOnce() -> u64) -> RequestPicker {
        let worker = self.worker_ref();
        let role = worker.trial.as_ref().map_or(Role::Serving, |trial| trial.role_of(draw()));
        RequestPicker { worker, role }
    }

    fn worker_ref(&self) -> Arc<WorkerRef> {
        self.per_worker[worker_index() % self.per_worker.len()].load_full()
    }

    /// Points every worker at `serving` and the running trial. Called under
    /// `membership`'s lock, after either changed.
    fn publish_workers(&self, serving: &Arc<Picker>) {
        let trial = self.trial.load_full();
        for worker in &*self.per_worker {
            worker.store(Arc::new(WorkerRef { serving: serving.clone(), trial: trial.clone() }));
        }
    }

    /// Applies backend events to the canonical set and to the serving picker
    /// now, after any published before them. For control paths (startup,
    /// reloads, the admin API); request threads use [`PickerSlot::publish`].
    pub fn apply(&self, events: &[BackendEvent]) {
        let mut membership = self.membership.lock();
        self.apply_pending(&mut membership);
        membership.apply(events);
        self.tell_pickers(events);
    }

    /// Tells the serving picker and the candidate, if any, about `events`.
    fn tell_pickers(&self, events: &[BackendEvent]) {
        self.current.load().backends_changed(events);
        if let Some(trial) = &*self.trial.load() {
            trial.candidate().backends_changed(events);
        }
    }

    /// Queues backend events for the control task; returns at once.
    pub fn publish(&self, events: &[BackendEvent]) {
        self.pending.lock().extend_from_slice(events);
        self.wake.notify_one();
    }

    /// Applies what was published, replaces a picker instance a fault took
    /// out, and carries out what a trial's rule decided. What the control
    /// task does.
    pub fn maintain(&self) {
        let mut membership = self.membership.lock();
        self.apply_pending(&mut membership);
        drop(membership);
        self.current.load().repair();
        if let Some(trial) = &*self.trial.load() {
            trial.candidate().repair();
        }
        self.carry_out_verdict();
    }

    fn needs_maintenance(&self) -> bool {
        self.current.load().needs_repair() || self.trial.load().as_ref().is_some_and(|t| t.candidate().needs_repair())
    }

    fn apply_pending(&self, membership: &mut Membership) {
        let events = std::mem::take(&mut *self.pending.lock());
        if !events.is_empty() {
            membership.apply(&events);
            self.tell_pickers(&events);
        }
    }

    /// The group's control task: applies published events as they come,
    /// repairs a faulted instance within `REPAIR_INTERVAL` (50 ms) and asks a
    /// trial's rule for a decision every `TRIAL_INTERVAL` (1 s), until `stop`.
    /// Plugin calls run on a blocking thread, off the async workers.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut repair = tokio::time::interval(REPAIR_INTERVAL);
        repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut judge = tokio::time::interval(TRIAL_INTERVAL);
        judge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                _ = repair.tick() => {
                    if !self.needs_maintenance() {
                        continue;
                    }
                }
                _ = judge.tick() => {
                    if self.trial.load().as_ref().is_none_or(|trial| trial.spec().rule.is_none()) {
                        continue;
                    }
                }
            }
            let slot = self.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || slot.maintain()).await {
                tracing::error!(%error, "picker control task failed; retrying on the next event");
            }
        }
    }

    /// Replaces the serving picker with `source` configured by `params`.
    ///
    /// The new picker is loaded, configured, told the backend set, offered the
    /// old one's state (same policy, same or newer version) and smoke-tested,
    /// all off the request path; only then is it published with one pointer
    /// swap. On any failure the old picker keeps serving and the error says why.
    pub fn swap(&self, source: &PluginSource, params: Vec<(String, String)>) -> Result<SwapReport, PluginError> {
        self.replace(source, params, None)
    }

    /// Restarts the serving picker (same source and parameters) offering it
    /// `saved` state instead of its own, e.g. state persisted by an earlier
    /// process. Offered only if `saved` comes from the same policy at the same
    /// or an older version; the report says whether it was imported.
    pub fn restore(&self, saved: Handoff) -> Result<SwapReport, PluginError> {
        let current = self.current();
        self.replace(current.source(), current.params().to_vec(), Some(saved))
    }

    fn replace(
        &self,
        source: &PluginSource,
        params: Vec<(String, String)>,
        saved: Option<Handoff>,
    ) -> Result<SwapReport, PluginError> {
        // Compile outside the lock: it is the slow part and needs no membership.
        if !source.is_native() {
            self.runtime.load(source)?;
        }
        let mut membership = self.membership.lock();
        // The new picker starts from every event published so far.
        self.apply_pending(&mut membership);
        let old = self.current.load_full();
        let handoff = match saved {
            Some(saved) => Some(saved),
            None => match old.export_state() {
                Ok(state) => Some(Handoff { from: old.info().clone(), state }),
                Err(error) => {
                    tracing::warn!(%error, "the old picker's state could not be exported; the new one starts fresh");
                    None
                }
            },
        };
        let (picker, handoff) =
            Self::build(&self.runtime, &self.load, source, params, membership.clone(), handoff.as_ref())?;
        let report = SwapReport { from: old.info().clone(), to: picker.info().clone(), handoff };
        let picker = Arc::new(picker);
        self.current.store(picker.clone());
        // A running trial now compares its candidate with another picker: its numbers start afresh.
        if let Some(trial) = &*self.trial.load() {
            self.trial.store(Some(Arc::new(trial.restarted())));
        }
        self.publish_workers(&picker);
        self.swaps.fetch_add(1, Ordering::Relaxed);
        // Requests still holding the old picker may add a few picks (retries)
        // after this; they go uncounted rather than counted twice.
        let mut retired = self.retired.lock();
        *retired = retired.plus(&old.stats());
        drop(membership);
        tracing::info!(from = %report.from.name, to = %report.to.name, handoff = ?report.handoff, "picker swapped");
        Ok(report)
    }

    fn build(
        runtime: &Arc<PluginRuntime>,
        load: &Arc<dyn BackendLoad>,
        source: &PluginSource,
        params: Vec<(String, String)>,
        membership: Membership,
        handoff: Option<&Handoff>,
    ) -> Result<(Picker, HandoffResult), PluginError> {
        match source {
            PluginSource::NativeRoundRobin => {
                return Ok((Picker::native_round_robin(runtime.clone(), membership), HandoffResult::NotApplicable));
            }
            PluginSource::Native(native) => {
                return Ok((Picker::native(runtime.clone(), native.clone(), membership), HandoffResult::NotApplicable));
            }
            PluginSource::Builtin(_) | PluginSource::Path(_) => {}
        }
        // Cached after the first load, so this is cheap when `swap` loaded it already.
        let code = runtime.load(source)?;
        Picker::start_with_load(runtime.clone(), code, params, membership, handoff, load.clone())
    }

    /// Starts a trial of `spec`'s candidate beside the serving picker (the
    /// one running, if any, ends as `stopped`). The candidate is loaded,
    /// configured, told the backend set, offered the serving picker's state
    /// (taken when it is the same policy) and smoke-tested off the request
    /// path; on any failure nothing changes and the error says why.
    pub fn start_trial(&self, spec: TrialSpec) -> Result<TrialReport, PluginError> {
        if !spec.source.is_native() {
            self.runtime.load(&spec.source)?;
        }
        let mut membership = self.membership.lock();
        self.apply_pending(&mut membership);
        let serving = self.current.load_full();
        let handoff = serving.export_state().ok().map(|state| Handoff { from: serving.info().clone(), state });
        let (candidate, _) = Self::build(
            &self.runtime,
            &self.load,
            &spec.source,
            spec.params.clone(),
            membership.clone(),
            handoff.as_ref(),
        )?;
        let trial = Arc::new(Trial::new(spec, Arc::new(candidate)));
        if let Some(old) = self.trial.swap(Some(trial.clone())) {
            self.settle(&old, &serving, TrialOutcome::Stopped, Decider::Operator);
        }
        self.publish_workers(&serving);
        drop(membership);
        tracing::info!(candidate = %trial.candidate().info().name, share = trial.spec().share, "picker trial started");
        Ok(trial.report(serving.info()))
    }

    /// The running trial's numbers and verdict; `None`: no trial runs.
    pub fn trial(&self) -> Option<TrialReport> {
        let trial = self.trial.load_full()?;
        Some(trial.report(self.current.load().info()))
    }

    /// What the running trial runs; `None`: no trial runs.
    pub fn trial_spec(&self) -> Option<TrialSpec> {
        self.trial.load().as_ref().map(|trial| trial.spec().clone())
    }

    /// How the last trial ended, if one did.
    pub fn last_trial(&self) -> Option<TrialEnd> {
        self.last_trial.lock().clone()
    }

    /// Whether a trial of `spec` against the serving picker `serving`
    /// (source text, parameters) already ended by a decision (promoted or
    /// retired, by the rule or an operator): a reload of an unchanged file
    /// neither starts it again nor undoes a promotion.
    pub fn trial_settled(&self, spec: &TrialSpec, serving: &str, params: &[(String, String)]) -> Option<TrialOutcome> {
        let last = self.last_trial.lock();
        let last = last.as_ref().filter(|end| end.outcome != TrialOutcome::Stopped && end.spec.same_as(spec))?;
        (last.against.0 == serving && crate::same_params(&last.against.1, params)).then_some(last.outcome)
    }

    /// Ends the running trial without promoting its candidate; `None`: no
    /// trial ran.
    pub fn stop_trial(&self) -> Option<TrialEnd> {
        let _membership = self.membership.lock();
        let trial = self.trial.swap(None)?;
        let serving = self.current.load_full();
        self.publish_workers(&serving);
        Some(self.settle(&trial, &serving, TrialOutcome::Stopped, Decider::Operator))
    }

    /// Makes the running trial's candidate the serving picker: the live
    /// instance itself, with what it learned on its share, in one pointer
    /// swap (requests already routed finish on the picker that routed them).
    /// `None`: no trial ran.
    pub fn promote(&self) -> Option<SwapReport> {
        let _membership = self.membership.lock();
        let trial = self.trial.swap(None)?;
        Some(self.promote_locked(&trial, Decider::Operator))
    }

    fn promote_locked(&self, trial: &Trial, by: Decider) -> SwapReport {
        let old = self.current.load_full();
        let new = trial.candidate().clone();
        self.current.store(new.clone());
        self.publish_workers(&new);
        self.swaps.fetch_add(1, Ordering::Relaxed);
        self.promotions.fetch_add(1, Ordering::Relaxed);
        let mut retired = self.retired.lock();
        *retired = retired.plus(&old.stats());
        drop(retired);
        self.settle(trial, &old, TrialOutcome::Promoted, by);
        let handoff = HandoffResult::NotApplicable;
        let report = SwapReport { from: old.info().clone(), to: new.info().clone(), handoff };
        tracing::info!(from = %report.from.name, to = %report.to.name, ?by, "picker trial: candidate promoted");
        report
    }

    /// What the control task does every `TRIAL_INTERVAL`: asks the running
    /// trial's rule, and promotes or retires the candidate if it decided.
    fn carry_out_verdict(&self) {
        let Some(trial) = self.trial.load_full().filter(|trial| trial.spec().rule.is_some()) else {
            return;
        };
        let verdict = trial.report(self.current.load().info()).verdict;
        if matches!(verdict, Verdict::Undecided { .. }) {
            return;
        }
        let _membership = self.membership.lock();
        // An operator may have ended or replaced it meanwhile.
        if !self.trial.load().as_ref().is_some_and(|now| Arc::ptr_eq(now, &trial)) {
            return;
        }
        self.trial.store(None);
        match verdict {
            Verdict::Promote { .. } => {
                self.promote_locked(&trial, Decider::Rule);
            }
            Verdict::Retire { reason } => {
                let serving = self.current.load_full();
                self.publish_workers(&serving);
                self.trial_retirements.fetch_add(1, Ordering::Relaxed);
                self.settle(&trial, &serving, TrialOutcome::Retired, Decider::Rule);
                tracing::info!(candidate = %trial.candidate().info().name, %reason, "picker trial: candidate retired");
            }
            Verdict::Undecided { .. } => {}
        }
    }

    /// Records how `trial`, compared with `serving`, ended.
    fn settle(&self, trial: &Trial, serving: &Picker, outcome: TrialOutcome, by: Decider) -> TrialEnd {
        if outcome != TrialOutcome::Promoted {
            // Its picks stay in the totals; a promoted one's go on as the serving picker's.
            let mut retired = self.retired.lock();
            *retired = retired.plus(&trial.candidate().stats());
        }
        let end = TrialEnd {
            outcome,
            by,
            report: trial.report(serving.info()),
            spec: trial.spec().clone(),
            against: (serving.info().source.clone(), serving.params().to_vec()),
        };
        *self.last_trial.lock() = Some(end.clone());
        end
    }

    /// Candidates promoted since the slot was created.
    pub fn promotions(&self) -> u64 {
        self.promotions.load(Ordering::Relaxed)
    }

    /// Candidates the rule retired since the slot was created.
    pub fn trial_retirements(&self) -> u64 {
        self.trial_retirements.load(Ordering::Relaxed)
    }

    /// The counters of every picker this slot has served with, current included.
    /// A running trial's candidate counts too: its picks are the group's.
    pub fn lifetime_stats(&self) -> PickerStatsSnapshot {
        let retired = *self.retired.lock();
        let candidate = self.trial.load().as_ref().map(|trial| trial.candidate().stats()).unwrap_or_default();
        retired.plus(&self.current.load().stats()).plus(&candidate)
    }

    /// Successful swaps since the slot was created.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Limits, NativePicker, NativePolicy};
    use veer_core::{BackendId, Outcome};

    struct First;

    impl NativePolicy for First {
        fn pick(&self, membership: &Membership, exclude: Option<BackendId>) -> Option<BackendId> {
            membership.eligible().iter().copied().find(|id| Some(*id) != exclude)
        }

        fn observe(&self, _outcome: &Outcome) {}
    }

    #[test]
    fn a_native_picker_restarts_with_its_own_source() {
        let runtime = PluginRuntime::new(Limits::default()).unwrap();
        let native = NativePicker::new("first", Arc::new(First));
        let slot = PickerSlot::new(runtime, &PluginSource::Native(native.clone()), vec![]).unwrap();
        let saved = Handoff { from: slot.current().info().clone(), state: vec![] };
        // Before, the source was parsed back from "native:first" as a file path.
        let report = slot.restore(saved).unwrap();
        assert_eq!(report.to.source, "native:first");
        assert_eq!(slot.current().source(), &PluginSource::Native(native));
    }
}
