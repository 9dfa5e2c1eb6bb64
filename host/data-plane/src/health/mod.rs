//! Health of the backends: active checks, circuit breakers, passive outlier
//! ejection, slow start and drain, combined into one decision per backend —
//! eligible or not, and at what weight — that reaches the picker as events.
//!
//! - [`check`]: the active HTTP checker, one task per backend, off the request path.
//! - [`breaker`], [`outlier`], [`slow_start`]: pure state machines (they take `now`).
//! - [`Health`]: the one place that owns that state, decides eligibility and
//!   effective weight, and emits `eligibility` / `updated` events to the picker
//!   only when either changes. The data path asks it for admission when a pick
//!   lands on a backend ([`Health::admit`]: concurrency cap, half-open probes)
//!   and reports every attempt's outcome to it ([`Admitted::finish`]).
//!
//! Per attempt this costs one map lookup and one short per-backend lock; no
//! per-request copying, nothing that grows with the number of backends.

pub mod breaker;
pub mod check;
mod config;
pub mod outlier;
mod series;
pub mod slow_start;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use breaker::{Breaker, BreakerPhase, BreakerRefusal};
pub use config::{BreakerConfig, CheckConfig, HealthConfig, InvalidHealthConfig, OutlierConfig, SlowStartConfig};
pub use outlier::{EjectionReason, IntervalStats, Outlier};
pub use series::HealthSeries;

use crate::clock;
use crate::pool::{BackendSpec, BackendState, Pool};
use veer_plugin_runtime::{BackendEvent, BackendId, ErrorKind};

/// How often time-driven changes are looked at: an open breaker turning
/// half-open, an ejection ending, a ramp step, an outlier analysis.
pub const TICK: Duration = Duration::from_millis(25);

/// Where events about eligibility and weight go (the picker slot, in a server).
pub type Publish = Box<dyn Fn(&[BackendEvent]) + Send + Sync>;

/// What an attempt on a backend came to, as far as health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Response headers arrived with this status.
    Status(u16),
    /// No response.
    Failed(ErrorKind),
}

impl AttemptOutcome {
    /// A failure for the breaker: the backend did not answer, or answered that
    /// it (or something behind it) is unavailable.
    fn breaker_failure(self) -> bool {
        matches!(self, AttemptOutcome::Failed(_) | AttemptOutcome::Status(502..=504))
    }

    /// An error for outlier detection: no answer, or any 5xx.
    fn outlier_error(self) -> bool {
        matches!(self, AttemptOutcome::Failed(_) | AttemptOutcome::Status(500..=599))
    }
}

/// Why an attempt was not sent to the backend the picker chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The backend has `max_concurrent` attempts in flight.
    AtCapacity,
    /// Its breaker is open, or half-open with every probe slot taken.
    Breaker(BreakerRefusal),
    /// It is drained (the picker had not heard yet).
    Drained,
}

/// Active check verdicts of one backend.
#[derive(Debug, Clone)]
struct CheckState {
    healthy: bool,
    passes: u32,
    failures: u32,
    failed_total: u64,
    last_error: Option<String>,
}

/// Everything health knows about one backend. Guarded by its own mutex, held
/// only for bookkeeping (and, on a change, for publishing the event, so that
/// events about one backend are published in the order they were decided).
#[derive(Debug)]
struct State {
    check: CheckState,
    breaker: Breaker,
    outlier: Outlier,
    ejection_reason: Option<EjectionReason>,
    drained: bool,
    ramp_started: Option<Instant>,
    /// What the picker was last told.
    published_eligible: bool,
    published_weight: u32,
    /// When the current run of failed attempts began (for failover reports).
    failure_streak_started: Option<Instant>,
    /// When the latest failed attempt ended.
    last_failure_at: Option<Instant>,
    /// When the backend last became ineligible.
    last_ineligible_at: Option<Instant>,
    eligibility_changes: u64,
    /// Removed from the group: nothing more is published about it.
    removed: bool,
}

#[derive(Debug)]
struct Tracked {
    backend: Arc<BackendState>,
    state: Mutex<State>,
    /// Breaker closed and not drained, mirrored from `state` by `reconcile`:
    /// the common admission needs no lock. A racing admission that reads a
    /// stale `true` sends one attempt, like a pick racing an eligibility event.
    open_gate: AtomicBool,
    /// Picks refused because the backend was at its cap.
    refused_at_cap: AtomicU64,
    /// Picks refused by an open or busy half-open breaker.
    refused_by_breaker: AtomicU64,
}

/// The health of one backend group. See the module docs.
pub struct Health {
    config: HealthConfig,
    pool: Arc<Pool>,
    backends: ArcSwap<HashMap<BackendId, Arc<Tracked>>>,
    publish: Publish,
    /// Backends ejected by outlier detection right now (for the share cap).
    ejected: AtomicUsize,
    next_analysis: Mutex<Instant>,
    /// Backends that need an active checker; `run` takes the receiver.
    checks_tx: tokio::sync::mpsc::UnboundedSender<Arc<BackendState>>,
    checks_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Arc<BackendState>>>>,
    /// Serialises adding and removing backends (each copies and replaces the
    /// pool's and health's maps; two at once would lose one's change).
    membership: Mutex<()>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A granted attempt on a backend: holds its in-flight slot (and a half-open
/// probe slot, if it is a probe) until dropped. Report the outcome with
/// [`Admitted::finish`]; dropping it unfinished (a cancelled request) just
/// frees the slots.
#[derive(Debug)]
pub struct Admitted<'a> {
    health: &'a Health,
    tracked: Arc<Tracked>,
    probe: bool,
    finished: bool,
}

impl Admitted<'_> {
    /// Reports the attempt's outcome (at response headers or failure).
    pub fn finish(mut self, outcome: AttemptOutcome, latency: Duration) {
        self.finished = true;
        self.health.record(&self.tracked, self.probe, outcome, latency, clock::now());
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.tracked.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.finished {
            self.tracked.state.lock().breaker.release_probe();
        }
    }
}

/// One backend's health, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendHealth {
    /// Backend id.
    pub id: BackendId,
    /// Backend name.
    pub name: String,
    /// Whether the picker may choose it.
    pub eligible: bool,
    /// The weight the picker sees (slow start applied).
    pub effective_weight: u32,
    /// Verdict of the active checks (`true` when checks are off).
    pub healthy: bool,
    /// Why the last failed check failed.
    pub last_check_error: Option<String>,
    /// Failed active checks so far.
    pub checks_failed_total: u64,
    /// Breaker phase.
    pub breaker: BreakerPhase,
    /// Times the breaker opened.
    pub breaker_opened_total: u64,
    /// Milliseconds until an ejection ends, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Why it is ejected.
    pub ejection_reason: Option<EjectionReason>,
    /// Ejections so far.
    pub ejections_total: u64,
    /// Drained by the operator.
    pub drained: bool,
    /// Concurrency cap.
    pub max_concurrent: Option<u32>,
    /// Picks refused because the backend was at its cap.
    pub refused_at_cap_total: u64,
    /// Picks refused by its breaker (open, or half-open with every probe slot taken).
    pub refused_by_breaker_total: u64,
    /// Times eligibility flipped.
    pub eligibility_changes: u64,
}

/// Times around the last failover of one backend, for benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct FailoverTimes {
    /// When the run of failures that took it out began.
    pub first_failure: Option<Instant>,
    /// When the latest failed attempt on it ended: after this, no traffic
    /// reached it, whether health took it out or the picker stopped choosing it.
    pub last_failure: Option<Instant>,
    /// When it became ineligible.
    pub ineligible_at: Option<Instant>,
}

impl Health {
    /// Health for the backends in `pool`, publishing changes through `publish`.
    /// The pool's present backends start eligible at full weight (no ramp: they
    /// all start together).
    pub fn new(pool: Arc<Pool>, config: HealthConfig, publish: Publish) -> Arc<Health> {
        let now = clock::now();
        let (checks_tx, checks_rx) = tokio::sync::mpsc::unbounded_channel();
        let health = Arc::new(Health {
            checks_tx,
            checks_rx: Mutex::new(Some(checks_rx)),
            membership: Mutex::new(()),
            next_analysis: Mutex::new(now + config.outlier.interval),
            config,
            pool,
            backends: ArcSwap::default(),
            publish,
            ejected: AtomicUsize::new(0),
        });
        health.track(health.pool.all(), None, now);
        health
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    fn track(&self, backends: Vec<Arc<BackendState>>, ramp_started: Option<Instant>, now: Instant) {
        let mut map = HashMap::clone(&self.backends.load());
        for backend in backends {
            let state = State {
                check: CheckState { healthy: true, passes: 0, failures: 0, failed_total: 0, last_error: None },
                breaker: Breaker::new(now),
                outlier: Outlier::default(),
                ejection_reason: None,
                drained: false,
                ramp_started: None,
                published_eligible: true,
                published_weight: backend.plugin_weight(),
                failure_streak_started: None,
                last_failure_at: None,
                last_ineligible_at: None,
                eligibility_changes: 0,
                removed: false,
            };
            // Nobody listens when checks are off or the group is not running: fine.
            let _ = self.checks_tx.send(backend.clone());
            let tracked = Arc::new(Tracked {
                backend,
                state: Mutex::new(state),
                open_gate: AtomicBool::new(true),
                refused_at_cap: AtomicU64::new(0),
                refused_by_breaker: AtomicU64::new(0),
            });
            if let Some(started) = ramp_started {
                let mut state = tracked.state.lock();
                state.ramp_started = Some(started);
                self.reconcile(&tracked, &mut state, now);
            }
            map.insert(tracked.backend.id, tracked);
        }
        self.backends.store(Arc::new(map));
    }

    /// Adds backends to the pool at run time; the picker hears of them, and
    /// each ramps up from a tenth of its weight over the slow-start window.
    pub fn add(&self, specs: Vec<BackendSpec>) {
        let _membership = self.membership.lock();
        self.add_locked(specs);
    }

    /// Changes membership as `decide` says, with no other change between
    /// deciding and applying (an admin add racing a reload cannot create two
    /// backends with one name). `decide` sees the pool and returns the
    /// backends to add, then the ids to remove (added first, so a replaced
    /// backend's successor is in the pool before it leaves), and a result.
    pub fn change<R>(&self, decide: impl FnOnce(&Pool) -> (Vec<BackendSpec>, Vec<BackendId>, R)) -> R {
        let _membership = self.membership.lock();
        let (to_add, to_remove, result) = decide(&self.pool);
        if !to_add.is_empty() {
            self.add_locked(to_add);
        }
        if !to_remove.is_empty() {
            self.remove_locked(&to_remove);
        }
        result
    }

    fn add_locked(&self, specs: Vec<BackendSpec>) {
        let now = clock::now();
        let events = self.pool.add(specs);
        (self.publish)(&events);
        let added = events
            .iter()
            .filter_map(|e| match e {
                BackendEvent::Added(b) => self.pool.get(b.id),
                _ => None,
            })
            .collect();
        self.track(added, Some(now), now);
    }

    /// Removes the backends named in `names` at run time (see
    /// [`Health::remove_ids`]); returns the names removed.
    pub fn remove(&self, names: &[&str]) -> Vec<String> {
        let ids: Vec<_> = self
            .backends
            .load()
            .values()
            .filter(|t| names.contains(&t.backend.spec.name.as_str()))
            .map(|t| t.backend.id)
            .collect();
        self.remove_ids(&ids)
    }

    /// Removes backends from the pool at run time: the picker hears they are
    /// gone, their checkers stop, and their health state is forgotten.
    /// Attempts in flight to them finish normally. Returns the names removed.
    pub fn remove_ids(&self, ids: &[BackendId]) -> Vec<String> {
        let _membership = self.membership.lock();
        self.remove_locked(ids)
    }

    fn remove_locked(&self, ids: &[BackendId]) -> Vec<String> {
        let mut map = HashMap::clone(&self.backends.load());
        let mut removed = Vec::new();
        let mut events = Vec::new();
        for id in ids {
            let Some(tracked) = map.remove(id) else { continue };
            let mut state = tracked.state.lock();
            // A tick racing this must not publish about it after `Removed`.
            state.removed = true;
            // Its ejection ends with it, so that no later tick ends it again.
            if state.outlier.end_ejection() {
                self.release_ejection();
            }
            removed.push(tracked.backend.spec.name.clone());
            events.push(BackendEvent::Removed(*id));
        }
        self.backends.store(Arc::new(map));
        // The picker hears before the pool forgets them, so that a pick racing
        // the event still resolves (and is then refused by `admit`).
        (self.publish)(&events);
        self.pool.remove(ids);
        removed
    }

    /// Changes the configured weight of the backend named `name`, keeping
    /// every live number and health verdict; the picker hears the new
    /// (slow-start adjusted) weight. `None` if there is no such backend.
    pub fn set_weight(&self, name: &str, weight: u32) -> Option<BackendHealth> {
        let tracked = self.backends.load().values().find(|t| t.backend.spec.name == name).cloned()?;
        let now = clock::now();
        let mut state = tracked.state.lock();
        tracked.backend.set_weight(weight);
        self.reconcile(&tracked, &mut state, now);
        Some(self.describe(&tracked, &state, now))
    }

    /// Whether the picker may choose the backend with `id` now (what it was
    /// last told). `false` for a backend that is not tracked.
    pub fn is_eligible(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(|tracked| tracked.state.lock().published_eligible)
    }

    /// Whether the backend with `id` is still tracked (not removed).
    pub fn tracks(&self, id: BackendId) -> bool {
        self.backends.load().contains_key(&id)
    }

    fn get(&self, id: BackendId) -> Option<Arc<Tracked>> {
        self.backends.load().get(&id).cloned()
    }

    /// Asks to send an attempt to `backend`, which a picker just chose. Takes
    /// an in-flight slot under the backend's cap; refuses if the cap is reached,
    /// the breaker does not admit it, or the backend is drained.
    pub fn admit(&self, backend: &BackendState) -> Result<Admitted<'_>, Refusal> {
        // Every backend of the pool is tracked; one that is not was removed meanwhile.
        let Some(tracked) = self.get(backend.id) else { return Err(Refusal::Drained) };
        let in_flight = &tracked.backend.in_flight;
        match tracked.backend.spec.max_concurrent {
            Some(cap) => {
                in_flight.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < cap).then_some(n + 1)).map_err(
                    |_| {
                        tracked.refused_at_cap.fetch_add(1, Ordering::Relaxed);
                        Refusal::AtCapacity
                    },
                )?;
            }
            None => {
                in_flight.fetch_add(1, Ordering::Relaxed);
            }
        }
        // From here the slot is held; dropping `admitted` gives it back.
        let mut admitted = Admitted { health: self, tracked: tracked.clone(), probe: false, finished: false };
        if tracked.open_gate.load(Ordering::Acquire) {
            return Ok(admitted);
        }
        let now = clock::now();
        let mut state = tracked.state.lock();
        if state.drained {
            return Err(Refusal::Drained);
        }
        let before = state.breaker.phase();
        let result = state.breaker.admit(&self.config.breaker, now);
        if state.breaker.phase() != before {
            self.reconcile(&tracked, &mut state, now);
        }
        drop(state);
        admitted.probe = result.map_err(|refusal| {
            tracked.refused_by_breaker.fetch_add(1, Ordering::Relaxed);
            Refusal::Breaker(refusal)
        })?;
        Ok(admitted)
    }

    fn record(&self, tracked: &Tracked, probe: bool, outcome: AttemptOutcome, latency: Duration, now: Instant) {
        let mut state = tracked.state.lock();
        if state.removed {
            // An attempt that was in flight when its backend left: nothing to judge.
            return;
        }
        let breaker_failure = outcome.breaker_failure();
        let outlier_error = outcome.outlier_error();
        if breaker_failure || outlier_error {
            state.failure_streak_started.get_or_insert(now);
            state.last_failure_at = Some(now);
        } else {
            state.failure_streak_started = None;
        }
        let mut changed = state.breaker.record(&self.config.breaker, probe, breaker_failure, now);
        if state.outlier.record(&self.config.outlier, outlier_error, latency) && self.try_eject(&mut state, now) {
            state.ejection_reason = Some(EjectionReason::ConsecutiveErrors);
            changed = true;
        }
        if changed {
            self.reconcile(tracked, &mut state, now);
        }
    }

    /// Gives back one ejected place (never below zero: a wrapped count would
    /// turn ejection off for good).
    fn release_ejection(&self) {
        let _ = self.ejected.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Ejects if the share cap allows; keeps the ejected count. A removed
    /// backend is never ejected.
    fn try_eject(&self, state: &mut State, now: Instant) -> bool {
        if state.removed {
            return false;
        }
        let max = (self.backends.load().len() as f64 * self.config.outlier.max_ejected_share).floor() as usize;
        let reserved = self.ejected.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1));
        if reserved.is_err() {
            return false;
        }
        state.outlier.eject(&self.config.outlier, now);
        true
    }

    /// Records an active check's verdict: `Err` says why it failed.
    pub fn record_check(&self, id: BackendId, verdict: Result<(), String>, now: Instant) {
        let Some(tracked) = self.get(id) else { return };
        let mut state = tracked.state.lock();
        let check = &mut state.check;
        let before = check.healthy;
        match verdict {
            Ok(()) => {
                check.passes += 1;
                check.failures = 0;
                if check.passes >= self.config.check.rise {
                    check.healthy = true;
                }
            }
            Err(reason) => {
                check.failures += 1;
                check.passes = 0;
                check.failed_total += 1;
                check.last_error = Some(reason);
                if check.failures >= self.config.check.fall {
                    check.healthy = false;
                }
            }
        }
        if state.check.healthy != before {
            tracing::info!(backend = %tracked.backend.spec.name, healthy = state.check.healthy, reason = ?state.check.last_error, "active health check verdict changed");
            self.reconcile(&tracked, &mut state, now);
        }
    }

    /// Drains (`true`) or undrains a backend by name; its state afterwards, or
    /// `None` if no backend has that name. A drained backend gets no new
    /// attempts; those in flight finish.
    pub fn set_drained(&self, name: &str, drained: bool) -> Option<BackendHealth> {
        let tracked = self.backends.load().values().find(|t| t.backend.spec.name == name).cloned()?;
        let now = clock::now();
        let mut state = tracked.state.lock();
        if state.drained != drained {
            state.drained = drained;
            tracing::info!(backend = %name, drained, "drain changed by the operator");
            self.reconcile(&tracked, &mut state, now);
        }
        Some(self.describe(&tracked, &state, now))
    }

    /// Moves time-driven state along: breakers turning half-open, ejections
    /// ending, ramp steps, and the periodic outlier analysis. Run every [`TICK`].
    pub fn tick(&self, now: Instant) {
        let backends = self.backends.load();
        let analyse = {
            let mut next = self.next_analysis.lock();
            let due = now >= *next;
            if due {
                *next = now + self.config.outlier.interval;
            }
            due
        };
        let mut intervals = Vec::new();
        for tracked in backends.values() {
            let mut state = tracked.state.lock();
            if state.removed {
                // Removed since this tick loaded the map.
                continue;
            }
            let mut changed = state.breaker.poll(now);
            if state.outlier.poll(now) {
                self.release_ejection();
                state.ejection_reason = None;
                changed = true;
            }
            if changed || state.ramp_started.is_some() {
                self.reconcile(tracked, &mut state, now);
            }
            if analyse {
                intervals.push((tracked.backend.id, state.outlier.take_interval()));
            }
        }
        if analyse {
            for (id, reason) in outlier::outliers(&self.config.outlier, &intervals) {
                let Some(tracked) = backends.get(&id) else { continue };
                let mut state = tracked.state.lock();
                if state.outlier.ejected_until().is_none() && self.try_eject(&mut state, now) {
                    tracing::info!(backend = %tracked.backend.spec.name, ?reason, "outlier ejected");
                    state.ejection_reason = Some(reason);
                    self.reconcile(tracked, &mut state, now);
                }
            }
        }
    }

    /// The single place that decides eligibility and effective weight, and
    /// tells the picker when either changed.
    fn reconcile(&self, tracked: &Tracked, state: &mut State, now: Instant) {
        if state.removed {
            return;
        }
        tracked.open_gate.store(state.breaker.phase() == BreakerPhase::Closed && !state.drained, Ordering::Release);
        let eligible = state.check.healthy
            && state.breaker.phase() != BreakerPhase::Open
            && state.outlier.ejected_until().is_none()
            && !state.drained;
        if eligible && !state.published_eligible && !self.config.slow_start.window.is_zero() {
            state.ramp_started = Some(now);
        }
        if !eligible {
            state.ramp_started = None;
        }
        let full = tracked.backend.plugin_weight();
        let (weight, ramp_done) =
            slow_start::effective_weight(full, state.ramp_started, self.config.slow_start.window, now);
        if ramp_done {
            state.ramp_started = None;
        }
        let mut events = Vec::new();
        if weight != state.published_weight {
            let mut view = tracked.backend.plugin_view();
            view.weight = weight;
            events.push(BackendEvent::Updated(view));
            state.published_weight = weight;
        }
        if eligible != state.published_eligible {
            events.push(BackendEvent::Eligibility((tracked.backend.id, eligible)));
            state.published_eligible = eligible;
            state.eligibility_changes += 1;
            if !eligible {
                state.last_ineligible_at = Some(now);
            }
            tracing::info!(
                backend = %tracked.backend.spec.name,
                eligible,
                healthy = state.check.healthy,
                breaker = ?state.breaker.phase(),
                ejected = state.outlier.ejected_until().is_some(),
                drained = state.drained,
                "backend eligibility changed"
            );
        }
        if !events.is_empty() {
            (self.publish)(&events);
        }
    }

    fn describe(&self, tracked: &Tracked, state: &State, now: Instant) -> BackendHealth {
        BackendHealth {
            id: tracked.backend.id,
            name: tracked.backend.spec.name.clone(),
            eligible: state.published_eligible,
            effective_weight: state.published_weight,
            healthy: state.check.healthy,
            last_check_error: state.check.last_error.clone(),
            checks_failed_total: state.check.failed_total,
            breaker: state.breaker.phase(),
            breaker_opened_total: state.breaker.opened_total(),
            ejected_for_ms: state
                .outlier
                .ejected_until()
                .map(|until| until.saturating_duration_since(now).as_millis() as u64),
            ejection_reason: state.ejection_reason,
            ejections_total: state.outlier.ejections_total(),
            drained: state.drained,
            max_concurrent: tracked.backend.spec.max_concurrent,
            refused_at_cap_total: tracked.refused_at_cap.load(Ordering::Relaxed),
            refused_by_breaker_total: tracked.refused_by_breaker.load(Ordering::Relaxed),
            eligibility_changes: state.eligibility_changes,
        }
    }

    /// Every backend's health, ordered by id.
    pub fn snapshot(&self) -> Vec<BackendHealth> {
        let now = clock::now();
        let mut all: Vec<_> =
            self.backends.load().values().map(|tracked| self.describe(tracked, &tracked.state.lock(), now)).collect();
        all.sort_by_key(|b| b.id);
        all
    }

    /// One backend's health by name.
    pub fn backend(&self, name: &str) -> Option<BackendHealth> {
        let tracked = self.backends.load().values().find(|t| t.backend.spec.name == name).cloned()?;
        let state = tracked.state.lock();
        Some(self.describe(&tracked, &state, clock::now()))
    }

    /// When the backend named `name` last failed over.
    pub fn failover_times(&self, name: &str) -> Option<FailoverTimes> {
        let tracked = self.backends.load().values().find(|t| t.backend.spec.name == name).cloned()?;
        let state = tracked.state.lock();
        Some(FailoverTimes {
            first_failure: state.failure_streak_started,
            last_failure: state.last_failure_at,
            ineligible_at: state.last_ineligible_at,
        })
    }

    /// Runs the ticker and, when enabled, one active checker per backend
    /// (backends added later get theirs too; over TLS as `tls` says, like the
    /// group's requests), until `stop` completes. Call once.
    pub async fn run(self: Arc<Self>, tls: crate::transport::TlsSlot, stop: impl std::future::Future<Output = ()>) {
        let Some(mut new_backends) = self.checks_rx.lock().take() else {
            tracing::error!("Health::run called twice; the second call does nothing");
            return;
        };
        let mut tasks = tokio::task::JoinSet::new();
        let health = Arc::downgrade(&self);
        tasks.spawn({
            let health = health.clone();
            async move {
                let mut interval = tokio::time::interval(TICK);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let Some(health) = health.upgrade() else { return };
                    health.tick(clock::now());
                }
            }
        });
        let checker = self.config.check.enabled.then(|| check::Checker::new(&self.config.check, tls));
        // The tasks hold only weak references: a dropped group stops them.
        drop(self);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                backend = new_backends.recv() => match (backend, &checker) {
                    (Some(backend), Some(checker)) => {
                        tasks.spawn(checker.clone().run(health.clone(), backend));
                    }
                    (Some(_), None) => {}
                    (None, _) => break,
                },
            }
        }
        tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
