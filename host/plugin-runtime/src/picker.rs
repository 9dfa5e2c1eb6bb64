//! One loaded picker: a plugin instance per data-path worker, each behind its
//! own mutex, with the host's checks, native fallback, fault counting and
//! self-repair around every call.
//!
//! Why an instance per worker: with one instance, every pick on every worker
//! took the same mutex, so adding cores added waiting rather than throughput.
//! Each worker thread picks on its own instance ([`set_worker_index`]) and the
//! outcome of an attempt goes back to the instance that picked it
//! ([`Choice`] remembers which). What must be global about a backend
//! (eligibility, health, the concurrency cap) is the host's and is applied to
//! every instance; what a policy learns from outcomes (latency averages,
//! Q-values, its own in-flight counts) it learns from its worker's share of
//! the traffic.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use wasmtime::{Store, Trap};

use super::bindings::Picker as PickerWorld;
use super::bindings::veer::picker::types::Feedback;
use super::conversions;
use super::native::NativePicker;
use super::runtime::{BackendLoad, NoLoad, PluginCode, PluginRuntime, RequestMeta, StoreState};
use super::{PluginError, PluginSource};
use veer_core::{BackendEvent, BackendId, ErrorKind, HttpMethod, Membership, Outcome, PickContext};

/// What a plugin says about itself (`policy.info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PickerInfo {
    /// Policy name, shared by versions of one policy.
    pub name: String,
    /// Plugin version, `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// Whether it receives `observe` calls.
    pub wants_outcomes: bool,
    /// Where the code came from (`builtin:NAME` or a path).
    pub source: String,
}

/// The backend chosen for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The backend.
    pub backend: BackendId,
    /// `true` if the plugin chose it, `false` if the host's fallback did.
    pub by_plugin: bool,
    /// The instance that chose it, which hears the attempt's outcome.
    instance: usize,
}

impl Choice {
    /// A backend the host chose without asking a picker (its outcome goes to
    /// the first instance, marked as not picked).
    pub fn by_host(backend: BackendId) -> Choice {
        Choice { backend, by_plugin: false, instance: 0 }
    }
}

thread_local! {
    /// Which instance of every picker this thread picks on.
    static WORKER_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Numbers for threads that never called [`set_worker_index`].
static NEXT_THREAD_INDEX: AtomicUsize = AtomicUsize::new(0);

/// Makes the calling thread pick on instance `index` (modulo the number of
/// instances) of every picker. The data-path workers call it with their
/// number, so that no two of them share an instance; any other thread gets
/// the next number on its first pick.
pub fn set_worker_index(index: usize) {
    WORKER_INDEX.set(Some(index));
}

/// The calling thread's worker number (see [`set_worker_index`]).
pub(super) fn worker_index() -> usize {
    WORKER_INDEX.get().unwrap_or_else(|| {
        let index = NEXT_THREAD_INDEX.fetch_add(1, Ordering::Relaxed);
        WORKER_INDEX.set(Some(index));
        index
    })
}

/// Why the host did not use a plugin's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The plugin trapped (panic, out-of-bounds, memory cap, ...).
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The answer was an unknown, ineligible or excluded backend.
    InvalidAnswer,
    /// The plugin answered "none" although an eligible backend existed.
    EmptyAnswer,
}

/// Counters for one picker, read by metrics and the admin API.
#[derive(Debug, Default)]
pub struct PickerStats {
    picks: AtomicU64,
    fallbacks: AtomicU64,
    faults: [AtomicU64; 4],
    rebuilds: AtomicU64,
}

/// A point-in-time copy of a picker's counters (see [`Picker::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PickerStatsSnapshot {
    /// Picks answered (by the plugin or the fallback).
    pub picks: u64,
    /// Picks the host's fallback answered.
    pub fallbacks: u64,
    /// Traps outside of deadlines.
    pub traps: u64,
    /// Deadline overruns.
    pub deadlines: u64,
    /// Unknown, ineligible or excluded answers.
    pub invalid_answers: u64,
    /// "None" while a backend was eligible.
    pub empty_answers: u64,
    /// Times the instance was replaced by a fresh one.
    pub rebuilds: u64,
}

impl PickerStatsSnapshot {
    /// The counts of two pickers together.
    pub fn plus(&self, other: &PickerStatsSnapshot) -> PickerStatsSnapshot {
        PickerStatsSnapshot {
            picks: self.picks + other.picks,
            fallbacks: self.fallbacks + other.fallbacks,
            traps: self.traps + other.traps,
            deadlines: self.deadlines + other.deadlines,
            invalid_answers: self.invalid_answers + other.invalid_answers,
            empty_answers: self.empty_answers + other.empty_answers,
            rebuilds: self.rebuilds + other.rebuilds,
        }
    }
}

impl PickerStats {
    fn fault(&self, kind: FaultKind) {
        self.faults[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> PickerStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PickerStatsSnapshot {
            picks: get(&self.picks),
            fallbacks: get(&self.fallbacks),
            traps: get(&self.faults[FaultKind::Trap as usize]),
            deadlines: get(&self.faults[FaultKind::Deadline as usize]),
            invalid_answers: get(&self.faults[FaultKind::InvalidAnswer as usize]),
            empty_answers: get(&self.faults[FaultKind::EmptyAnswer as usize]),
            rebuilds: get(&self.rebuilds),
        }
    }
}

/// Whether the plugin is deciding, or the host's fallback has taken over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PickerHealth {
    /// The plugin answers picks.
    Serving,
    /// The plugin faulted too often; the host's round robin answers every pick
    /// until the picker is swapped or reloaded.
    FallbackOnly {
        /// The last fault, in words.
        reason: String,
    },
}

/// A running plugin instance.
struct Live {
    store: Store<StoreState>,
    world: PickerWorld,
}

/// One instance and its counters. Aligned to its own cache lines, so that
/// workers counting picks on neighbouring instances do not share one.
#[repr(align(128))]
struct Instance {
    inner: Mutex<Inner>,
    stats: PickerStats,
}

impl Instance {
    fn new(live: Option<Live>, membership: Membership) -> Instance {
        Instance {
            inner: Mutex::new(Inner {
                live,
                membership,
                fallback_next: 0,
                consecutive_faults: 0,
                rebuild_times: VecDeque::new(),
                last_fault: String::new(),
                repair_due: false,
            }),
            stats: PickerStats::default(),
        }
    }
}

struct Inner {
    /// `None` once the host has given up on the plugin (see [`PickerHealth`]).
    live: Option<Live>,
    membership: Membership,
    fallback_next: usize,
    consecutive_faults: u32,
    rebuild_times: VecDeque<Instant>,
    last_fault: String,
    /// A fault took the instance out and a replacement is due (made by
    /// [`Picker::repair`], off the request path).
    repair_due: bool,
}

/// A loaded picker. Cheap to share: requests hold an `Arc<Picker>` for their
/// whole life, so a request routed before a hot swap finishes on the picker
/// that routed it.
pub struct Picker {
    runtime: Arc<PluginRuntime>,
    /// What `host.in-flight` reads, for every instance (repairs included).
    load: Arc<dyn BackendLoad>,
    /// `None` for a picker that runs in the host (`native:round-robin`, [`NativePicker`]).
    code: Option<Arc<PluginCode>>,
    /// The host-side policy of a [`NativePicker`]; `None` means round robin (or Wasm).
    native: Option<NativePicker>,
    params: Vec<(String, String)>,
    info: PickerInfo,
    /// What it was loaded from, for a restart with the same code (restoring
    /// state, undoing a swap): not parsed back from `info.source`, which
    /// cannot name a native policy.
    source: PluginSource,
    /// At least one; [`Limits::instances`](super::Limits::instances) for
    /// Wasm and the native round robin, one for a [`NativePicker`] (whose
    /// policy is a single object).
    instances: Box<[Instance]>,
}

impl std::fmt::Debug for Picker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picker")
            .field("info", &self.info)
            .field("instances", &self.instances.len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A previous picker's identity and exported state, offered to its successor.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// Who exported the state.
    pub from: PickerInfo,
    /// The exported bytes.
    pub state: Vec<u8>,
}

/// What happened to handed-off state when a picker started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HandoffResult {
    /// There was no state to hand over.
    None,
    /// A different policy, or an older version: state not offered.
    NotApplicable,
    /// The new picker imported the state.
    Imported {
        /// Size of the state.
        bytes: usize,
    },
    /// The new picker refused the state; it starts fresh.
    Refused {
        /// The plugin's message.
        reason: String,
    },
}

impl Picker {
    /// Instantiates `code` ([`Limits::instances`](super::Limits::instances)
    /// times), configures each instance with `params`, tells it about
    /// `membership`, offers it `handoff` state when it is the same policy at
    /// the same or a newer version, and smoke-tests a pick on each. Any
    /// failure is returned and nothing is left running. Its `host.in-flight`
    /// reads [`NoLoad`]: for a picker with no pool behind it (tests, benches);
    /// a group's picker starts with [`Picker::start_with_load`].
    pub fn start(
        runtime: Arc<PluginRuntime>,
        code: Arc<PluginCode>,
        params: Vec<(String, String)>,
        membership: Membership,
        handoff: Option<&Handoff>,
    ) -> Result<(Picker, HandoffResult), PluginError> {
        Picker::start_with_load(runtime, code, params, membership, handoff, Arc::new(NoLoad))
    }

    /// [`Picker::start`] for a picker whose `host.in-flight` reads `load`
    /// (the group's pool).
    pub fn start_with_load(
        runtime: Arc<PluginRuntime>,
        code: Arc<PluginCode>,
        params: Vec<(String, String)>,
        membership: Membership,
        handoff: Option<&Handoff>,
        load: Arc<dyn BackendLoad>,
    ) -> Result<(Picker, HandoffResult), PluginError> {
        let count = runtime.limits().instances.max(1);
        let mut instances = Vec::with_capacity(count);
        let mut handoff_result = HandoffResult::None;
        let mut info = None;
        for _ in 0..count {
            let (mut live, started) = Live::start(&runtime, &load, &code, &params, &membership)?;
            // Every instance is told the same state, so they agree on what was learned.
            handoff_result = import(&runtime, &mut live, &started, handoff)?;
            instances.push(Instance::new(Some(live), membership.clone()));
            info = Some(started);
        }
        let picker = Picker {
            runtime,
            load,
            source: PluginSource::parse(&code.source),
            code: Some(code),
            native: None,
            params,
            info: info.expect("at least one instance was started"),
            instances: instances.into_boxed_slice(),
        };
        picker.smoke_test()?;
        Ok((picker, handoff_result))
    }

    /// The host's own round robin behind the same interface: no Wasm, no faults.
    pub fn native_round_robin(runtime: Arc<PluginRuntime>, membership: Membership) -> Picker {
        let info = PickerInfo {
            name: "native-round-robin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            wants_outcomes: false,
            source: "native:round-robin".into(),
        };
        let count = runtime.limits().instances.max(1);
        Picker::host_side(runtime, info, None, membership, PluginSource::NativeRoundRobin, count)
    }

    /// A policy implemented in the host ([`NativePicker`]). It hears every
    /// outcome. Should it answer `None` or an invalid backend, the host's round
    /// robin answers (counted as a fallback, as for a plugin).
    pub fn native(runtime: Arc<PluginRuntime>, native: NativePicker, membership: Membership) -> Picker {
        let info = PickerInfo {
            name: native.name().to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            wants_outcomes: true,
            source: format!("native:{}", native.name()),
        };
        let source = PluginSource::Native(native.clone());
        // One instance: the policy is one object that must see picks and
        // outcomes in order.
        Picker::host_side(runtime, info, Some(native), membership, source, 1)
    }

    fn host_side(
        runtime: Arc<PluginRuntime>,
        info: PickerInfo,
        native: Option<NativePicker>,
        membership: Membership,
        source: PluginSource,
        instances: usize,
    ) -> Picker {
        Picker {
            runtime,
            load: Arc::new(NoLoad),
            source,
            code: None,
            native,
            params: Vec::new(),
            info,
            instances: (0..instances).map(|_| Instance::new(None, membership.clone())).collect(),
        }
    }

    /// The smoke test, on demand (admin `POST /selftest`): one pick that must
    /// be the plugin's own valid answer, never sent. The host's native round
    /// robin has nothing to test and passes.
    pub fn self_test(&self) -> Result<(), PluginError> {
        if self.info.source == "native:round-robin" {
            return Ok(());
        }
        self.smoke_test()
    }

    /// One pick on each instance that must be a valid answer from the plugin
    /// itself: proves the plugin works before it is put on the request path.
    fn smoke_test(&self) -> Result<(), PluginError> {
        self.instances.iter().try_for_each(|instance| self.smoke_test_one(instance))
    }

    fn smoke_test_one(&self, instance: &Instance) -> Result<(), PluginError> {
        let mut inner = instance.inner.lock();
        let Inner { live: Some(live), membership, .. } = &mut *inner else {
            return Err(PluginError::Smoke { plugin: self.info.name.clone(), reason: "no instance".into() });
        };
        let ctx = PickContext { attempt: 0, exclude: None, method: HttpMethod::Get };
        let request = RequestMeta::get("/", IpAddr::V4(Ipv4Addr::LOCALHOST));
        let answer = self.call_pick(live, request, ctx).0;
        let fail = |reason: String| PluginError::Smoke { plugin: self.info.name.clone(), reason };
        match answer {
            Err(trap) => Err(fail(describe(&trap))),
            Ok(Some(id)) if !membership.is_eligible(id) => {
                Err(fail(format!("answered backend {id}, which is not eligible")))
            }
            Ok(None) if membership.has_candidate(None) => {
                Err(fail("answered none although backends are eligible".into()))
            }
            Ok(Some(id)) => {
                // The smoke pick is never sent; tell the plugin so its in-flight counts stay exact.
                self.notify_not_sent(live, id);
                Ok(())
            }
            Ok(None) => Ok(()),
        }
    }

    /// The plugin's identity.
    pub fn info(&self) -> &PickerInfo {
        &self.info
    }

    /// Where its code came from.
    pub fn source(&self) -> &PluginSource {
        &self.source
    }

    /// The parameters it was configured with.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Its counters, every instance's together.
    pub fn stats(&self) -> PickerStatsSnapshot {
        self.instances.iter().fold(PickerStatsSnapshot::default(), |sum, i| sum.plus(&i.stats.snapshot()))
    }

    /// How many instances share the picks (one per data-path worker).
    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Whether the plugin or the host's fallback is deciding: the fallback,
    /// if it has taken over from any instance.
    pub fn health(&self) -> PickerHealth {
        for instance in &self.instances {
            let inner = instance.inner.lock();
            match inner.live {
                Some(_) => {}
                // Host-side, or a replacement for a faulted instance is on its way.
                None if self.code.is_none() || inner.repair_due => {}
                None => return PickerHealth::FallbackOnly { reason: inner.last_fault.clone() },
            }
        }
        PickerHealth::Serving
    }

    /// A copy of the backend set as this picker knows it.
    pub fn membership(&self) -> Membership {
        self.instances[0].inner.lock().membership.clone()
    }

    /// Chooses the backend for one attempt, on the calling thread's instance.
    /// Never fails because of the plugin: a trap, an overrun or a bad answer
    /// is counted and answered by the host's fallback. `None` only when no
    /// eligible backend other than `ctx.exclude` exists. The request is lent
    /// to the plugin and handed back.
    pub fn pick(&self, request: RequestMeta, ctx: PickContext) -> (Option<Choice>, RequestMeta) {
        let index = worker_index() % self.instances.len();
        let (choice, request) = self.pick_on(&self.instances[index], request, ctx);
        (choice.map(|choice| Choice { instance: index, ..choice }), request)
    }

    fn pick_on(&self, instance: &Instance, request: RequestMeta, ctx: PickContext) -> (Option<Choice>, RequestMeta) {
        instance.stats.picks.fetch_add(1, Ordering::Relaxed);
        let mut guard = instance.inner.lock();
        let inner = &mut *guard;
        if !inner.membership.has_candidate(ctx.exclude) {
            return (None, request);
        }
        let Some(live) = &mut inner.live else {
            if let Some(native) = &self.native {
                match native.policy().pick(&inner.membership, ctx.exclude) {
                    Some(id) if Some(id) != ctx.exclude && inner.membership.is_eligible(id) => {
                        return (Some(Choice { backend: id, by_plugin: true, instance: 0 }), request);
                    }
                    answer => {
                        if let Some(backend) = answer {
                            // Not used: tell the policy, as a plugin is told, so its in-flight counts stay exact.
                            native.policy().observe(&Outcome {
                                backend,
                                picked: true,
                                status: 0,
                                latency_us: 0,
                                error: Some(ErrorKind::NotSent),
                            });
                        }
                        instance.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                        let choice = self.fallback(&instance.stats, inner, ctx.exclude);
                        return (choice.map(|c| Choice { by_plugin: false, ..c }), request);
                    }
                }
            }
            let choice = self.fallback(&instance.stats, inner, ctx.exclude);
            return (choice.map(|c| Choice { by_plugin: self.code.is_none(), ..c }), request);
        };
        let (answer, request) = self.call_pick(live, request, ctx);
        let fault = match answer {
            Ok(Some(id)) if Some(id) != ctx.exclude && inner.membership.is_eligible(id) => {
                inner.consecutive_faults = 0;
                return (Some(Choice { backend: id, by_plugin: true, instance: 0 }), request);
            }
            Ok(Some(id)) => {
                self.notify_not_sent(live, id);
                (FaultKind::InvalidAnswer, format!("answered backend {id}, which is unknown, ineligible or excluded"))
            }
            Ok(None) => (FaultKind::EmptyAnswer, "answered none although a backend was eligible".to_string()),
            Err(trap) => (fault_kind(&trap), describe(&trap)),
        };
        self.record_fault(&instance.stats, inner, fault.0, "pick", fault.1);
        (self.fallback(&instance.stats, inner, ctx.exclude), request)
    }

    fn call_pick(
        &self,
        live: &mut Live,
        request: RequestMeta,
        ctx: PickContext,
    ) -> (wasmtime::Result<Option<BackendId>>, RequestMeta) {
        live.store.data_mut().request = Some(request);
        let world = &live.world;
        let answer = self.runtime.guest_call(&mut live.store, self.runtime.limits().call_timeout, |store| {
            world.veer_picker_policy().call_pick(store, conversions::pick_context(ctx))
        });
        let request = live.store.data_mut().request.take().expect("the request was lent to the store just above");
        (answer, request)
    }

    /// Reports the outcome of an attempt to the instance that made `choice`,
    /// if the plugin subscribes. Faults are handled as in [`Picker::pick`];
    /// the caller never sees them.
    pub fn observe(&self, choice: &Choice, outcome: Outcome) {
        if !self.info.wants_outcomes {
            return;
        }
        // A choice made by another picker (swapped out meanwhile) has an index of its own.
        let instance = &self.instances[choice.instance % self.instances.len()];
        if let Some(native) = &self.native {
            // Under the lock, so that a native policy sees picks and outcomes in order.
            let _guard = instance.inner.lock();
            native.policy().observe(&outcome);
            return;
        }
        let mut guard = instance.inner.lock();
        let inner = &mut *guard;
        let Some(live) = &mut inner.live else { return };
        let world = &live.world;
        if let Err(trap) = self.runtime.guest_call(&mut live.store, self.runtime.limits().call_timeout, |store| {
            world.veer_picker_policy().call_observe(store, conversions::outcome(outcome))
        }) {
            self.record_fault(&instance.stats, inner, fault_kind(&trap), "observe", describe(&trap));
        }
    }

    /// Whether [`Picker::observe`] does anything.
    pub fn wants_outcomes(&self) -> bool {
        self.info.wants_outcomes
    }

    /// Applies backend events to this picker's view and the plugin's, on
    /// every instance.
    pub fn backends_changed(&self, events: &[BackendEvent]) {
        let lowered = conversions::events(events);
        for instance in &self.instances {
            let mut guard = instance.inner.lock();
            let inner = &mut *guard;
            inner.membership.apply(events);
            let Some(live) = &mut inner.live else { continue };
            let world = &live.world;
            if let Err(trap) =
                self.runtime.guest_call(&mut live.store, self.runtime.limits().control_timeout, |store| {
                    world.veer_picker_policy().call_backends_changed(store, &lowered)
                })
            {
                self.record_fault(&instance.stats, inner, fault_kind(&trap), "backends-changed", describe(&trap));
            }
        }
    }

    /// The plugin's learned state, for a successor or for disk: that of the
    /// first running instance (each learned from its worker's share of the
    /// traffic; a successor starts every instance from it). Empty when the
    /// plugin keeps none or is not running.
    pub fn export_state(&self) -> Result<Vec<u8>, PluginError> {
        for instance in &self.instances {
            let mut guard = instance.inner.lock();
            let inner = &mut *guard;
            let Some(live) = &mut inner.live else { continue };
            let world = &live.world;
            let exported = self.runtime.guest_call(&mut live.store, self.runtime.limits().control_timeout, |store| {
                world.veer_picker_policy().call_export_state(store)
            });
            return match exported {
                Ok(state) => Ok(state),
                Err(trap) => {
                    let reason = describe(&trap);
                    self.record_fault(&instance.stats, inner, fault_kind(&trap), "export-state", reason.clone());
                    Err(PluginError::Trap { plugin: self.info.name.clone(), call: "export-state", reason })
                }
            };
        }
        Ok(Vec::new())
    }

    fn notify_not_sent(&self, live: &mut Live, backend: BackendId) {
        if self.info.wants_outcomes {
            let outcome = Outcome { backend, picked: true, status: 0, latency_us: 0, error: Some(ErrorKind::NotSent) };
            let world = &live.world;
            // A fault here shows up on the next call, which handles it.
            let _ = self.runtime.guest_call(&mut live.store, self.runtime.limits().call_timeout, |store| {
                world.veer_picker_policy().call_observe(store, conversions::outcome(outcome))
            });
        }
    }

    /// The host's own choice: round robin over the eligible backends.
    fn fallback(&self, stats: &PickerStats, inner: &mut Inner, exclude: Option<BackendId>) -> Option<Choice> {
        let eligible = inner.membership.eligible();
        for _ in 0..eligible.len().min(2) {
            let id = eligible[inner.fallback_next % eligible.len()];
            inner.fallback_next = inner.fallback_next.wrapping_add(1);
            if Some(id) != exclude {
                if self.code.is_some() {
                    stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                }
                return Some(Choice { backend: id, by_plugin: false, instance: 0 });
            }
        }
        None
    }

    /// Counts a fault and decides what to do with the instance: a trap leaves it
    /// unusable, so it is replaced at once; bad answers replace it after
    /// `max_consecutive_faults`. Too many replacements in the window hand the
    /// picker to the fallback for good.
    fn record_fault(&self, stats: &PickerStats, inner: &mut Inner, kind: FaultKind, call: &str, reason: String) {
        stats.fault(kind);
        inner.consecutive_faults += 1;
        inner.last_fault = format!("{call}: {reason}");
        tracing::warn!(plugin = %self.info.name, ?kind, call, %reason, "picker fault; the host's fallback served the request");
        let trapped = matches!(kind, FaultKind::Trap | FaultKind::Deadline);
        if !trapped && inner.consecutive_faults < self.runtime.limits().max_consecutive_faults {
            return;
        }
        let limits = self.runtime.limits();
        let now = Instant::now();
        while inner.rebuild_times.front().is_some_and(|t| now.duration_since(*t) > limits.rebuild_window) {
            inner.rebuild_times.pop_front();
        }
        inner.live = None;
        if inner.rebuild_times.len() >= limits.max_rebuilds as usize {
            tracing::error!(
                plugin = %self.info.name,
                last_fault = %inner.last_fault,
                "picker replaced {} times within {:?}; the host's fallback now answers every pick until the picker is swapped or reloaded",
                inner.rebuild_times.len(),
                limits.rebuild_window
            );
            return;
        }
        if self.code.is_some() {
            // Replaced by the control task: instantiating here would run guest
            // code (up to the control deadline) on a request's thread.
            inner.repair_due = true;
        }
    }

    /// Whether a fault took an instance out and [`Picker::repair`] should run.
    pub fn needs_repair(&self) -> bool {
        self.instances.iter().any(|instance| instance.inner.lock().repair_due)
    }

    /// Replaces each instance a fault took out with a fresh one (its learned
    /// state is lost); until then the host's fallback answers that worker's
    /// picks. For the control task, never a request: instantiation runs
    /// guest code.
    pub fn repair(&self) {
        for instance in &self.instances {
            self.repair_one(instance);
        }
    }

    fn repair_one(&self, instance: &Instance) {
        let (code, membership) = {
            let mut inner = instance.inner.lock();
            if !inner.repair_due {
                return;
            }
            inner.repair_due = false;
            let Some(code) = &self.code else { return };
            inner.rebuild_times.push_back(Instant::now());
            instance.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
            inner.consecutive_faults = 0;
            (code.clone(), inner.membership.clone())
        };
        // Built outside the lock, so picks (served by the fallback) go on meanwhile.
        let started = Live::start(&self.runtime, &self.load, &code, &self.params, &membership);
        let mut inner = instance.inner.lock();
        let started = match started {
            // Events applied while it was built: build again from the current set.
            Ok(_) if inner.membership.generation() != membership.generation() => {
                Live::start(&self.runtime, &self.load, &code, &self.params, &inner.membership)
            }
            started => started,
        };
        match started {
            Ok((live, _)) => {
                tracing::warn!(plugin = %self.info.name, "picker instance replaced after a fault; learned state was reset");
                inner.live = Some(live);
            }
            Err(error) => {
                inner.last_fault = format!("replacement failed: {error}");
                tracing::error!(plugin = %self.info.name, %error, "could not replace the picker instance; the host's fallback answers every pick");
            }
        }
    }
}

impl Live {
    /// Instantiates and configures a plugin and replays `membership` into it.
    fn start(
        runtime: &PluginRuntime,
        load: &Arc<dyn BackendLoad>,
        code: &PluginCode,
        params: &[(String, String)],
        membership: &Membership,
    ) -> Result<(Live, PickerInfo), PluginError> {
        let control = runtime.limits().control_timeout;
        let mut store = runtime.new_store(&code.source, load.clone());
        let instantiate = |reason: String| PluginError::Instantiate { origin: code.source.clone(), reason };
        // Instantiation runs guest code too (initialisers), so it gets a deadline.
        let world = runtime
            .guest_call(&mut store, control, |store| code.pre.instantiate(store))
            .map_err(|e| instantiate(format!("{e:#}")))?;
        let policy = world.veer_picker_policy();
        let info = runtime
            .guest_call(&mut store, control, |store| policy.call_info(store))
            .map_err(|e| instantiate(format!("info: {}", describe(&e))))?;
        let info = PickerInfo {
            name: info.name,
            version: info.version,
            wants_outcomes: info.feedback.contains(Feedback::OUTCOMES),
            source: code.source.clone(),
        };
        let trap = |call: &'static str, e: wasmtime::Error| PluginError::Trap {
            plugin: info.name.clone(),
            call,
            reason: describe(&e),
        };
        runtime
            .guest_call(&mut store, control, |store| policy.call_configure(store, params))
            .map_err(|e| trap("configure", e))?
            .map_err(|message| PluginError::Rejected { plugin: info.name.clone(), message })?;
        runtime
            .guest_call(&mut store, control, |store| {
                policy.call_backends_changed(store, &conversions::events(&membership.replay()))
            })
            .map_err(|e| trap("backends-changed", e))?;
        Ok((Live { store, world }, info))
    }
}

/// Offers `handoff` to a just-started instance: imported when it comes from
/// the same policy at the same or an older version.
fn import(
    runtime: &PluginRuntime,
    live: &mut Live,
    info: &PickerInfo,
    handoff: Option<&Handoff>,
) -> Result<HandoffResult, PluginError> {
    Ok(match handoff {
        Some(h) if h.state.is_empty() => HandoffResult::None,
        Some(h) if h.from.name == info.name && !is_older(&info.version, &h.from.version) => {
            let world = &live.world;
            let imported = runtime.guest_call(&mut live.store, runtime.limits().control_timeout, |store| {
                world.veer_picker_policy().call_import_state(store, &h.state)
            });
            match imported {
                Ok(Ok(())) => HandoffResult::Imported { bytes: h.state.len() },
                Ok(Err(reason)) => HandoffResult::Refused { reason },
                Err(trap) => {
                    return Err(PluginError::Trap {
                        plugin: info.name.clone(),
                        call: "import-state",
                        reason: describe(&trap),
                    });
                }
            }
        }
        Some(_) => HandoffResult::NotApplicable,
        None => HandoffResult::None,
    })
}

fn fault_kind(error: &wasmtime::Error) -> FaultKind {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FaultKind::Deadline,
        _ => FaultKind::Trap,
    }
}

/// A one-line description of a call failure.
fn describe(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "ran past its deadline".to_string(),
        Some(trap) => format!("trapped: {trap}"),
        // Wasm backtraces are attached as context; the root cause says what happened.
        None => format!("failed: {}", error.root_cause()),
    }
}

/// Whether version `a` is older than `b` (`MAJOR.MINOR.PATCH`, missing parts are
/// 0, anything unparsable counts as 0).
fn is_older(a: &str, b: &str) -> bool {
    // Exactly three numbers each, so that "1.2" and "1.2.0" compare equal
    // (as vectors of different lengths, the shorter one was "older").
    let parse = |v: &str| -> [u64; 3] {
        let mut parts = v.split(['.', '-', '+']).map(|p| p.parse().unwrap_or(0));
        [(); 3].map(|()| parts.next().unwrap_or(0))
    };
    parse(a) < parse(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::runtime::Limits;
    use veer_core::Backend;

    /// Runs `f` on a thread that picks as worker `index`.
    fn as_worker<T: Send>(index: usize, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    set_worker_index(index);
                    f()
                })
                .join()
                .unwrap()
        })
    }

    fn pick(picker: &Picker) -> Choice {
        let request = RequestMeta::get("/", IpAddr::V4(Ipv4Addr::LOCALHOST));
        picker.pick(request, PickContext { attempt: 0, exclude: None, method: HttpMethod::Get }).0.unwrap()
    }

    #[test]
    fn each_worker_picks_on_its_own_instance_and_outcomes_go_to_the_picking_one() {
        let runtime = PluginRuntime::new(Limits { instances: 2, seed: Some(1), ..Limits::default() }).unwrap();
        let code = runtime.load(&PluginSource::Builtin("least-conn".into())).unwrap();
        let mut membership = Membership::default();
        membership.apply(&[1, 2].map(|id| {
            let address = format!("10.0.0.{id}:80");
            BackendEvent::Added(Backend { id, name: format!("b{id}"), address, weight: 1, labels: vec![] })
        }));
        let (picker, _) = Picker::start(runtime, code, vec![], membership, None).unwrap();
        assert_eq!(picker.instances(), 2);

        // Worker 0 has one attempt in flight on each backend.
        let (first, second) = as_worker(0, || (pick(&picker), pick(&picker)));
        assert_ne!(first.backend, second.backend, "least-conn spreads over its own in-flight attempts");
        // Worker 1's instance knows nothing of them: it starts where worker 0's did.
        assert_eq!(as_worker(1, || pick(&picker)).backend, first.backend);

        // The second attempt's outcome, reported from another thread, reaches
        // the instance that picked it: worker 0 now has the second backend free.
        as_worker(1, || {
            let outcome = Outcome { backend: second.backend, picked: true, status: 200, latency_us: 10, error: None };
            picker.observe(&second, outcome);
        });
        assert_eq!(as_worker(0, || pick(&picker)).backend, second.backend);
        assert_eq!(picker.stats().picks, 4, "the counts of both instances");
    }

    #[test]
    fn version_order_is_numeric() {
        assert!(is_older("0.9.0", "0.10.0"));
        assert!(!is_older("1.0.0", "1.0.0"));
        assert!(!is_older("1.2.0", "1.1.9"));
    }

    #[test]
    fn missing_version_parts_count_as_zero() {
        assert!(!is_older("1.2", "1.2.0"));
        assert!(!is_older("1.2.0", "1.2"));
        assert!(!is_older("1", "1.0.0"));
        assert!(is_older("1.2", "1.2.1"));
        assert!(!is_older("1.2.0-beta", "1.2"));
    }
}
