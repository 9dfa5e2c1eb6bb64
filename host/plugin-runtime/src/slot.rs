//! The current picker of a backend group, swappable while traffic flows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::picker::{Handoff, HandoffResult, Picker, PickerInfo, PickerStatsSnapshot, worker_index};
use super::runtime::{BackendLoad, NoLoad, PluginRuntime};
use super::{PluginError, PluginSource};
use veer_core::BackendEvent;
use veer_core::Membership;

/// How often the control task looks for a faulted instance to replace.
pub const REPAIR_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

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

/// The serving picker as one data-path worker holds it for a request
/// ([`PickerSlot::for_request`]). Each worker has its own reference count:
/// with one `Arc<Picker>` cloned per request by every worker, the count's
/// cache line moved between cores on every request.
#[derive(Clone)]
pub struct RequestPicker(Arc<WorkerRef>);

/// One worker's reference to the serving picker, on cache lines of its own.
#[repr(align(128))]
struct WorkerRef(Arc<Picker>);

impl std::ops::Deref for RequestPicker {
    type Target = Picker;

    fn deref(&self) -> &Picker {
        &self.0.0
    }
}

impl RequestPicker {
    /// The picker as a plain `Arc`, to keep past the request (the access
    /// log's record does). Shares the reference count every control path uses.
    pub fn shared(&self) -> Arc<Picker> {
        self.0.0.clone()
    }
}

impl std::fmt::Debug for RequestPicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.0.fmt(f)
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
            per_worker: (0..workers).map(|_| ArcSwap::from_pointee(WorkerRef(picker.clone()))).collect(),
            runtime,
            load,
            current: ArcSwap::new(picker),
            membership: Mutex::new(Membership::default()),
            pending: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            swaps: AtomicU64::new(0),
            retired: Mutex::new(PickerStatsSnapshot::default()),
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
    pub fn for_request(&self) -> RequestPicker {
        RequestPicker(self.per_worker[worker_index() % self.per_worker.len()].load_full())
    }

    /// Applies backend events to the canonical set and to the serving picker
    /// now, after any published before them. For control paths (startup,
    /// reloads, the admin API); request threads use [`PickerSlot::publish`].
    pub fn apply(&self, events: &[BackendEvent]) {
        let mut membership = self.membership.lock();
        self.apply_pending(&mut membership);
        membership.apply(events);
        self.current.load().backends_changed(events);
    }

    /// Queues backend events for the control task; returns at once.
    pub fn publish(&self, events: &[BackendEvent]) {
        self.pending.lock().extend_from_slice(events);
        self.wake.notify_one();
    }

    /// Applies what was published, and replaces the serving picker's
    /// instance if a fault took it out. What the control task does.
    pub fn maintain(&self) {
        let mut membership = self.membership.lock();
        self.apply_pending(&mut membership);
        drop(membership);
        self.current.load().repair();
    }

    fn apply_pending(&self, membership: &mut Membership) {
        let events = std::mem::take(&mut *self.pending.lock());
        if !events.is_empty() {
            membership.apply(&events);
            self.current.load().backends_changed(&events);
        }
    }

    /// The group's control task: applies published events as they come and
    /// repairs a faulted instance within `REPAIR_INTERVAL` (50 ms), until `stop`.
    /// Plugin calls run on a blocking thread, off the async workers.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut repair = tokio::time::interval(REPAIR_INTERVAL);
        repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                _ = repair.tick() => {
                    if !self.current.load().needs_repair() {
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
        for worker in &self.per_worker {
            worker.store(Arc::new(WorkerRef(picker.clone())));
        }
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

    /// The counters of every picker this slot has served with, current included.
    pub fn lifetime_stats(&self) -> PickerStatsSnapshot {
        let retired = *self.retired.lock();
        retired.plus(&self.current.load().stats())
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
