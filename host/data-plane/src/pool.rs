//! The backend registry: who the backends are and how each is doing right now.
//!
//! The set itself is an immutable snapshot behind `arc-swap` (read on every
//! attempt without a lock); live numbers are atomics inside each backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::StatusCode;
use http::uri::Authority;
use prometheus::{GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};

use crate::series::{Registrar, duration_buckets};

pub use veer_core::{BackendProtocol, BackendSpec, MAX_WEIGHT};
use veer_plugin_runtime::{Backend as PluginBackend, BackendEvent, BackendId, BackendLoad};

/// Where a pool gets each backend's attempt series, and says when a backend's
/// series may go. `observe::Metrics` implements it (with [`PoolSeries`], and
/// forgetting the backend's series of every component), so that the pool
/// needs no registry of its own.
pub trait BackendSeries: std::fmt::Debug + Send + Sync {
    /// The series of a backend joining the pool.
    fn backend(&self, name: &str) -> BackendMetrics;
    /// The last backend of this name left the pool.
    fn forget(&self, name: &str);
}

/// Series that go nowhere, for a pool nobody scrapes (tests, tools).
#[derive(Debug, Default)]
pub struct Unrecorded;

impl BackendSeries for Unrecorded {
    fn backend(&self, _name: &str) -> BackendMetrics {
        let counter = || IntCounter::new("veer_unrecorded", "not registered").expect("a valid name");
        let histogram = Histogram::with_opts(HistogramOpts::new("veer_unrecorded", "not registered"));
        BackendMetrics { attempts: [(); 6].map(|()| counter()), response_seconds: histogram.expect("a valid name") }
    }

    fn forget(&self, _name: &str) {}
}

/// A backend's attempt series, resolved once when it joins the pool: counters
/// by result (1xx to 5xx, then no response) and the time to response headers.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    pub(crate) attempts: [IntCounter; 6],
    pub(crate) response_seconds: Histogram,
}

impl BackendMetrics {
    /// Records one attempt: its status, or `None` when no response came.
    pub fn record(&self, status: Option<StatusCode>, latency: Duration) {
        let result = status.map_or(5, |status| usize::from(status.as_u16() / 100).clamp(1, 5) - 1);
        self.attempts[result].inc();
        self.response_seconds.observe(latency.as_secs_f64());
    }

    /// Attempts sent, all results.
    pub fn attempts(&self) -> u64 {
        self.attempts.iter().map(IntCounter::get).sum()
    }

    /// Attempts that got no response or a 5xx.
    pub fn failures(&self) -> u64 {
        self.attempts[4].get() + self.attempts[5].get()
    }
}

/// Results of a backend attempt as a label: a status class, or no response.
const ATTEMPT_RESULTS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// The pool's series: each backend's attempts and response times (resolved
/// per backend as it joins, see [`PoolSeries::backend`]), and its in-flight
/// count, latency average and weight, read from the pool at scrape time.
#[derive(Debug)]
pub struct PoolSeries {
    attempts: IntCounterVec,
    response_seconds: HistogramVec,
    in_flight: IntGaugeVec,
    ewma_seconds: GaugeVec,
    weight: IntGaugeVec,
}

impl PoolSeries {
    /// The series, registered.
    pub fn register(r: Registrar<'_>) -> Self {
        let backend = ["backend"];
        PoolSeries {
            attempts: r.counter_vec(
                "veer_backend_attempts_total",
                "Attempts sent to each backend, by result: status class, or error when no response came.",
                &["backend", "result"],
            ),
            response_seconds: r.histogram_vec(
                "veer_backend_response_duration_seconds",
                "Time from sending an attempt to a backend to its response headers (or failure).",
                &backend,
                duration_buckets(),
            ),
            in_flight: r.gauge_vec(
                "veer_backend_in_flight",
                "Attempts awaiting response headers per backend.",
                &backend,
            ),
            ewma_seconds: r.float_gauge_vec(
                "veer_backend_latency_ewma_seconds",
                "Moving average of each backend's time to response headers.",
                &backend,
            ),
            weight: r.gauge_vec("veer_backend_weight", "Configured weight of each backend.", &backend),
        }
    }

    /// The attempt series of a backend joining a pool.
    pub fn backend(&self, name: &str) -> BackendMetrics {
        BackendMetrics {
            attempts: ATTEMPT_RESULTS.map(|r| self.attempts.with_label_values(&[name, r])),
            response_seconds: self.response_seconds.with_label_values(&[name]),
        }
    }

    /// Reads a pool's live numbers into the series.
    pub fn mirror(&self, pool: &Pool) {
        for backend in pool.all() {
            let name = [backend.spec.name.as_str()];
            self.in_flight.with_label_values(&name).set(i64::from(backend.in_flight.load(Ordering::Relaxed)));
            self.ewma_seconds
                .with_label_values(&name)
                .set(backend.ewma_latency_us.load(Ordering::Relaxed) as f64 / 1e6);
            self.weight.with_label_values(&name).set(i64::from(backend.weight()));
        }
    }

    /// Drops every series of a backend that left.
    pub fn forget(&self, name: &str) {
        for result in ATTEMPT_RESULTS {
            let _ = self.attempts.remove_label_values(&[name, result]);
        }
        let _ = self.response_seconds.remove_label_values(&[name]);
        let _ = self.ewma_seconds.remove_label_values(&[name]);
        let _ = self.in_flight.remove_label_values(&[name]);
        let _ = self.weight.remove_label_values(&[name]);
    }
}

/// Pickers see the configured weight times this, so that slow start can ramp
/// even a weight-1 backend in steps (weights are relative, so the scale changes
/// no ratio). `MAX_WEIGHT × WEIGHT_SCALE` stays within the contract's 1..=1000000.
pub const WEIGHT_SCALE: u32 = 100;

/// One backend and its live numbers.
#[derive(Debug)]
pub struct BackendState {
    /// Host-assigned id, never reused in this process.
    pub id: BackendId,
    /// The operator's description.
    pub spec: BackendSpec,
    /// `spec.address` as a URI authority, made once instead of per attempt.
    pub authority: Authority,
    /// What the affinity cookie carries for this backend: a hash of its name
    /// (FNV-1a), stable across restarts and picker swaps.
    pub sticky_key: u64,
    /// Attempts sent and not yet answered (response headers not received).
    pub in_flight: AtomicU32,
    /// Attempt counts and durations, as exported to Prometheus.
    pub metrics: BackendMetrics,
    /// Exponentially weighted moving average of time to response headers, µs.
    pub ewma_latency_us: AtomicU64,
    /// The configured weight now: `spec.weight` at first, changed at run time
    /// by the admin API or a reload without touching the live numbers.
    weight: AtomicU32,
}

/// The affinity key of the backend named `name`: 64-bit FNV-1a.
pub fn sticky_key(name: &str) -> u64 {
    veer_core::hash::fnv1a(name.as_bytes())
}

/// Weight of a new latency sample in [`BackendState::ewma_latency_us`].
const EWMA_NEW_SAMPLE_WEIGHT: f64 = 0.2;

impl BackendState {
    /// Records the end of an attempt: its status, or `None` when no response came.
    pub fn record(&self, status: Option<StatusCode>, latency: Duration) {
        self.metrics.record(status, latency);
        let sample = latency.as_micros() as f64;
        // A lost update under a race only drops one sample from an average.
        let old = self.ewma_latency_us.load(Ordering::Relaxed) as f64;
        let new = if old == 0.0 { sample } else { old + EWMA_NEW_SAMPLE_WEIGHT * (sample - old) };
        self.ewma_latency_us.store(new as u64, Ordering::Relaxed);
    }

    /// The configured weight now (see [`BackendState::set_weight`]).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Changes the configured weight, clamped to 1..=[`MAX_WEIGHT`]. Only the
    /// weight changes: connections, latency average and counters stay. Health
    /// publishes the new weight to the picker (`Health::set_weight`).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.clamp(1, MAX_WEIGHT), Ordering::Relaxed);
    }

    /// The weight a picker sees at full strength (see [`WEIGHT_SCALE`]).
    pub fn plugin_weight(&self) -> u32 {
        self.weight().clamp(1, MAX_WEIGHT) * WEIGHT_SCALE
    }

    /// The backend as a picker plugin sees it, at full weight.
    pub fn plugin_view(&self) -> PluginBackend {
        PluginBackend {
            id: self.id,
            name: self.spec.name.clone(),
            address: self.spec.address.to_string(),
            weight: self.plugin_weight(),
            labels: self.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// A JSON-friendly copy of the live numbers.
    pub fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            id: self.id,
            name: self.spec.name.clone(),
            address: self.spec.address.to_string(),
            weight: self.weight(),
            protocol: self.spec.protocol,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            requests: self.metrics.attempts(),
            failures: self.metrics.failures(),
            ewma_latency_ms: self.ewma_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

/// Live numbers of one backend, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendSnapshot {
    /// Id.
    pub id: BackendId,
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Weight.
    pub weight: u32,
    /// Protocol.
    pub protocol: BackendProtocol,
    /// Attempts awaiting response headers.
    pub in_flight: u32,
    /// Attempts sent.
    pub requests: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Moving average of time to response headers.
    pub ewma_latency_ms: f64,
}

/// The backend set of one group.
#[derive(Debug)]
pub struct Pool {
    backends: ArcSwap<HashMap<BackendId, Arc<BackendState>>>,
    /// The same backends by [`BackendState::sticky_key`] (the newest wins when
    /// a reload briefly holds two of one name).
    by_sticky_key: ArcSwap<HashMap<u64, Arc<BackendState>>>,
    next_id: AtomicU32,
    series: Arc<dyn BackendSeries>,
}

impl Pool {
    /// A pool with `specs` whose backends record into `series`; returns it
    /// with the `added` events for its picker.
    pub fn new(specs: Vec<BackendSpec>, series: Arc<dyn BackendSeries>) -> (Pool, Vec<BackendEvent>) {
        let pool = Pool {
            backends: ArcSwap::default(),
            by_sticky_key: ArcSwap::default(),
            next_id: AtomicU32::new(0),
            series,
        };
        let events = pool.add(specs);
        (pool, events)
    }

    /// Adds backends; returns the events that tell a picker about them.
    pub fn add(&self, specs: Vec<BackendSpec>) -> Vec<BackendEvent> {
        let mut map = HashMap::clone(&self.backends.load());
        let mut events = Vec::with_capacity(specs.len());
        for spec in specs {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let authority = Authority::try_from(spec.address.to_string().as_str())
                .expect("a socket address is a valid URI authority");
            let metrics = self.series.backend(&spec.name);
            let state = Arc::new(BackendState {
                id,
                sticky_key: sticky_key(&spec.name),
                weight: AtomicU32::new(spec.weight.clamp(1, MAX_WEIGHT)),
                authority,
                spec,
                in_flight: AtomicU32::new(0),
                metrics,
                ewma_latency_us: AtomicU64::new(0),
            });
            events.push(BackendEvent::Added(state.plugin_view()));
            map.insert(id, state);
        }
        self.backends.store(Arc::new(map));
        self.index_sticky_keys();
        events
    }

    fn index_sticky_keys(&self) {
        let mut all: Vec<_> = self.backends.load().values().cloned().collect();
        all.sort_by_key(|b| b.id);
        self.by_sticky_key.store(Arc::new(all.into_iter().map(|b| (b.sticky_key, b)).collect()));
    }

    /// The backend an affinity cookie names, if it is in the pool.
    pub fn by_sticky_key(&self, key: u64) -> Option<Arc<BackendState>> {
        self.by_sticky_key.load().get(&key).cloned()
    }

    /// Removes the backends with these ids; returns the events that tell a
    /// picker they are gone. Attempts already sent to them finish normally
    /// (they hold their `Arc<BackendState>`). Unknown ids are ignored.
    pub fn remove(&self, ids: &[BackendId]) -> Vec<BackendEvent> {
        let mut map = HashMap::clone(&self.backends.load());
        let gone: Vec<Arc<BackendState>> = ids.iter().filter_map(|id| map.remove(id)).collect();
        for backend in &gone {
            // A replacement of the same name (a changed address) keeps the series.
            if !map.values().any(|b| b.spec.name == backend.spec.name) {
                self.series.forget(&backend.spec.name);
            }
        }
        let gone: Vec<BackendId> = gone.iter().map(|b| b.id).collect();
        self.backends.store(Arc::new(map));
        self.index_sticky_keys();
        gone.into_iter().map(BackendEvent::Removed).collect()
    }

    /// The backend named `name`, if it is in the pool.
    pub fn by_name(&self, name: &str) -> Option<Arc<BackendState>> {
        self.backends.load().values().find(|b| b.spec.name == name).cloned()
    }

    /// The backend with `id`, if it is in the pool.
    pub fn get(&self, id: BackendId) -> Option<Arc<BackendState>> {
        self.backends.load().get(&id).cloned()
    }

    /// Every backend, ordered by id.
    pub fn all(&self) -> Vec<Arc<BackendState>> {
        let mut all: Vec<_> = self.backends.load().values().cloned().collect();
        all.sort_by_key(|b| b.id);
        all
    }
}

/// What a group's pickers read through `host.in-flight`: the count every
/// admitted attempt raises and its end lowers, across all workers.
impl BackendLoad for Pool {
    fn in_flight(&self, backend: BackendId) -> u32 {
        self.backends.load().get(&backend).map_or(0, |b| b.in_flight.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, port: u16) -> BackendSpec {
        BackendSpec::new(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn labels_reach_the_picker() {
        let mut labelled = spec("a", 1);
        labelled.labels.insert("zone".into(), "eu-1".into());
        let (pool, events) = Pool::new(vec![labelled], Arc::new(crate::pool::Unrecorded));
        let added = events.iter().find_map(|e| match e {
            BackendEvent::Added(backend) => Some(backend.clone()),
            _ => None,
        });
        assert_eq!(added.unwrap().labels, vec![("zone".to_string(), "eu-1".to_string())]);
        assert_eq!(pool.all()[0].plugin_view().labels.len(), 1);
    }

    #[test]
    fn ids_are_unique_and_events_describe_each_backend() {
        let (pool, events) = Pool::new(vec![spec("a", 1), spec("b", 2)], Arc::new(crate::pool::Unrecorded));
        assert_eq!(events.len(), 2);
        let more = pool.add(vec![spec("c", 3)]);
        let ids: Vec<_> = pool.all().iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(matches!(&more[0], BackendEvent::Added(b) if b.name == "c" && b.id == 3 && b.weight == WEIGHT_SCALE));
    }

    /// Records which names the pool lets go of.
    #[derive(Debug, Default)]
    struct Forgotten(parking_lot::Mutex<Vec<String>>);

    impl BackendSeries for Forgotten {
        fn backend(&self, name: &str) -> BackendMetrics {
            Unrecorded.backend(name)
        }

        fn forget(&self, name: &str) {
            self.0.lock().push(name.to_string());
        }
    }

    #[test]
    fn a_removed_backend_leaves_the_metrics_unless_a_replacement_has_its_name() {
        let forgotten = Arc::new(Forgotten::default());
        let (pool, _) = Pool::new(vec![spec("a", 1), spec("b", 2)], forgotten.clone());
        pool.get(1).unwrap().record(Some(StatusCode::OK), Duration::from_millis(1));
        pool.remove(&[1]);
        assert_eq!(*forgotten.0.lock(), ["a"]);
        // "b" moves: the new one is added before the old one leaves.
        pool.add(vec![spec("b", 9)]);
        pool.remove(&[2]);
        assert_eq!(*forgotten.0.lock(), ["a"], "a replacement keeps the series");
    }

    #[test]
    fn removing_by_name_emits_removed_and_keeps_the_others() {
        let (pool, _) = Pool::new(vec![spec("a", 1), spec("b", 2)], Arc::new(crate::pool::Unrecorded));
        let events = pool.remove(&[1, 7]);
        assert!(matches!(events.as_slice(), [BackendEvent::Removed(1)]));
        assert_eq!(pool.all().len(), 1);
        assert!(pool.by_name("b").is_some() && pool.by_name("a").is_none());
    }

    #[test]
    fn weight_changes_live_and_is_clamped() {
        let (pool, _) = Pool::new(vec![spec("a", 1)], Arc::new(crate::pool::Unrecorded));
        let backend = pool.by_name("a").unwrap();
        backend.set_weight(7);
        assert_eq!((backend.weight(), backend.plugin_weight()), (7, 7 * WEIGHT_SCALE));
        backend.set_weight(0);
        assert_eq!(backend.weight(), 1);
    }

    #[test]
    fn latency_average_moves_toward_new_samples() {
        let (pool, _) = Pool::new(vec![spec("a", 1)], Arc::new(crate::pool::Unrecorded));
        let backend = pool.get(1).unwrap();
        backend.record(Some(StatusCode::OK), Duration::from_millis(10));
        assert_eq!(backend.snapshot().ewma_latency_ms, 10.0);
        backend.record(None, Duration::from_millis(20));
        assert_eq!(backend.snapshot().ewma_latency_ms, 12.0);
        assert_eq!((backend.snapshot().requests, backend.snapshot().failures), (2, 1));
    }
}
