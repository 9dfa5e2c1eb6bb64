//! Observability: Prometheus metrics, access logs, metric dumps and the
//! latency advisory.
//!
//! The data path only touches counters and histograms that were resolved
//! ahead of time (per backend when it joins the pool, per method and status
//! class at start), so recording costs a few atomic adds and no label lookup.
//! Gauges that mirror live state (in-flight, EWMA, picker) are read from that
//! state when `/metrics` is scraped instead of being kept twice.

pub mod access_log;
pub mod advisory;
pub mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::admission::AdmissionSnapshot;
use crate::fault::Fault;
use crate::health::{BreakerPhase, Health};
use crate::pool::{BackendMetrics, BackendSeries, Pool};
use crate::upstream::Upstream;
use veer_plugin_runtime::PickerStatsSnapshot;

/// Observability settings.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// Access log; `None` turns it off.
    pub access_log: Option<access_log::AccessLogConfig>,
    /// Periodic JSON-lines dumps of the snapshot.
    pub dump: snapshot::DumpConfig,
    /// The latency advisory.
    pub advisory: advisory::AdvisoryConfig,
}

/// Method classes used as a label: the common methods, everything else as `OTHER`.
const METHOD_CLASSES: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "OTHER"];
/// Status classes used as a label.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Circuit breaker states used as a label.
const BREAKER_STATES: [&str; 3] = ["closed", "half_open", "open"];
/// Results of a backend attempt: a status class, or no response at all.
const ATTEMPT_RESULTS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// The label index of `method`.
pub fn method_class(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        _ => 7,
    }
}

fn status_class(status: StatusCode) -> usize {
    (usize::from(status.as_u16() / 100)).clamp(1, 5) - 1
}

/// What `/metrics` reads from the running veer besides its own counters,
/// handed in by whoever serves it (the proxy builds it: observe depends on
/// nothing above the groups it reports on).
#[derive(Debug)]
pub struct Live<'a> {
    /// The main upstream group.
    pub main: &'a Upstream,
    /// The canary group, if any.
    pub canary: Option<&'a Upstream>,
    /// Admission control now.
    pub admission: AdmissionSnapshot,
    /// Client connections.
    pub connections: ConnectionCounts,
}

/// Client connections open now, and refused at accept since the start.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionCounts {
    /// Open now.
    pub open: usize,
    /// Refused by the total cap.
    pub refused_total: u64,
    /// Refused by the per-client cap.
    pub refused_per_client: u64,
}

/// Every metric of one running veer, in its own registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Vec<[IntCounter; 5]>,
    request_seconds: [Histogram; 5],
    in_flight: IntGauge,
    backend_attempts: IntCounterVec,
    backend_response_seconds: HistogramVec,
    backend_in_flight: IntGaugeVec,
    backend_ewma_seconds: GaugeVec,
    backend_weight: IntGaugeVec,
    backend_advisory: IntGaugeVec,
    backend_advisories: IntCounterVec,
    backend_eligible: IntGaugeVec,
    backend_healthy: IntGaugeVec,
    backend_effective_weight: IntGaugeVec,
    backend_breaker: IntGaugeVec,
    backend_breaker_opened: IntCounterVec,
    backend_ejected: IntGaugeVec,
    backend_ejections: IntCounterVec,
    backend_checks_failed: IntCounterVec,
    backend_refusals: IntCounterVec,
    failures: [IntCounter; 7],
    request_refusals: IntCounterVec,
    connections_refused: IntCounterVec,
    client_connections: IntGauge,
    /// Retries made (attempts after the first).
    pub retries: IntCounter,
    /// Retries wanted but refused by the retry budget.
    pub retry_budget_exhausted: IntCounter,
    /// Duration of `pick` calls, plugin and fallback alike.
    pub pick_seconds: Histogram,
    picks: IntCounter,
    picker_faults: IntCounterVec,
    picker_fallbacks: IntCounter,
    picker_rebuilds: IntCounter,
    picker_swaps: IntCounter,
    picker_info: IntGaugeVec,
    access_log_written: IntCounter,
    access_log_dropped: IntCounter,
    admission_in_flight: IntGauge,
    admission_limit: IntGauge,
    admission_adaptive_limit: IntGauge,
    admission_queue_waiting: IntGauge,
    admission_tracked_clients: IntGauge,
    admission_admitted: IntCounter,
    admission_refusals: IntCounterVec,
    /// Scrapes bring mirrored counters up to date; one at a time, so none is counted twice.
    render_lock: parking_lot::Mutex<()>,
    /// Access log records, set by the access log (if any) before a scrape.
    pub access_log_counts: AccessLogCounts,
}

/// Counters the access log keeps for the metrics.
#[derive(Debug, Default)]
pub struct AccessLogCounts {
    /// Records written.
    pub written: AtomicU64,
    /// Records dropped because the writer was behind.
    pub dropped: AtomicU64,
}

/// Histogram buckets for request and backend durations, in seconds.
fn duration_buckets() -> Vec<f64> {
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

impl Metrics {
    /// All metrics, registered in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let requests = r.counter_vec(
            "veer_requests_total",
            "Client requests answered, by method and status class.",
            &["method", "status_class"],
        );
        let request_seconds = r.histogram_vec(
            "veer_request_duration_seconds",
            "Time from receiving a client request to the end of its response body.",
            &["status_class"],
            duration_buckets(),
        );
        let failures = r.counter_vec(
            "veer_failures_total",
            "Failed attempts and requests by the side at fault (client, backend) and reason; \
             only the backend's feed health, breakers and the picker.",
            &["side", "reason"],
        );
        r.gauge_vec("veer_build_info", "The running veer's version (value 1).", &["version"])
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let backend = ["backend"];
        Metrics {
            requests: METHOD_CLASSES
                .iter()
                .map(|m| STATUS_CLASSES.map(|s| requests.with_label_values(&[*m, s])))
                .collect(),
            request_seconds: STATUS_CLASSES.map(|s| request_seconds.with_label_values(&[s])),
            in_flight: r.gauge("veer_requests_in_flight", "Client requests being answered."),
            failures: Fault::ALL.map(|fault| failures.with_label_values(&[fault.side(), fault.reason()])),
            request_refusals: r.counter_vec(
                "veer_request_refusals_total",
                "Client requests refused before forwarding because of a request limit, by status.",
                &["status"],
            ),
            connections_refused: r.counter_vec(
                "veer_connections_refused_total",
                "Client connections closed at accept by a connection cap (total, per_client).",
                &["reason"],
            ),
            client_connections: r.gauge("veer_client_connections", "Client connections open."),
            retries: r.counter("veer_retries_total", "Attempts made after a request's first."),
            retry_budget_exhausted: r
                .counter("veer_retry_budget_exhausted_total", "Retries not made because the retry budget was spent."),
            backend_attempts: r.counter_vec(
                "veer_backend_attempts_total",
                "Attempts sent to each backend, by result: status class, or error when no response came.",
                &["backend", "result"],
            ),
            backend_response_seconds: r.histogram_vec(
                "veer_backend_response_duration_seconds",
                "Time from sending an attempt to a backend to its response headers (or failure).",
                &backend,
                duration_buckets(),
            ),
            backend_in_flight: r.gauge_vec(
                "veer_backend_in_flight",
                "Attempts awaiting response headers per backend.",
                &backend,
            ),
            backend_ewma_seconds: r.float_gauge_vec(
                "veer_backend_latency_ewma_seconds",
                "Moving average of each backend's time to response headers.",
                &backend,
            ),
            backend_weight: r.gauge_vec("veer_backend_weight", "Configured weight of each backend.", &backend),
            backend_advisory: r.gauge_vec(
                "veer_backend_latency_advisory",
                "1 while a backend's latency is above its baseline by more than the configured share.",
                &backend,
            ),
            backend_advisories: r.counter_vec(
                "veer_backend_latency_advisories_total",
                "Times a backend's latency rose above its baseline by more than the configured share.",
                &backend,
            ),
            backend_eligible: r.gauge_vec(
                "veer_backend_eligible",
                "1 while the picker may choose the backend.",
                &backend,
            ),
            backend_healthy: r.gauge_vec(
                "veer_backend_healthy",
                "Verdict of the active health checks (1 healthy, also when checks are off).",
                &backend,
            ),
            backend_effective_weight: r.gauge_vec(
                "veer_backend_effective_weight",
                "Weight the picker sees, slow start applied (configured weight x 100 at full).",
                &backend,
            ),
            backend_breaker: r.gauge_vec(
                "veer_backend_breaker_state",
                "Circuit breaker state per backend (1 for the current state).",
                &["backend", "state"],
            ),
            backend_breaker_opened: r.counter_vec(
                "veer_backend_breaker_opened_total",
                "Times the breaker opened.",
                &backend,
            ),
            backend_ejected: r.gauge_vec(
                "veer_backend_ejected",
                "1 while the backend is ejected as an outlier.",
                &backend,
            ),
            backend_ejections: r.counter_vec(
                "veer_backend_ejections_total",
                "Outlier ejections of the backend.",
                &backend,
            ),
            backend_checks_failed: r.counter_vec(
                "veer_backend_health_checks_failed_total",
                "Active health checks of the backend that failed.",
                &backend,
            ),
            backend_refusals: r.counter_vec(
                "veer_backend_refusals_total",
                "Picks of the backend refused at admission, by reason (at_cap, breaker).",
                &["backend", "reason"],
            ),
            pick_seconds: r.histogram(
                "veer_picker_call_duration_seconds",
                "Duration of pick calls, including fallbacks.",
                vec![1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3, 1e-2],
            ),
            // Picker counters live in the picker slot and survive swaps; these mirror them.
            picks: r.counter("veer_picker_picks_total", "Picks answered by the picker or its fallback."),
            picker_faults: r.counter_vec(
                "veer_picker_faults_total",
                "Picker faults by kind (trap, deadline, invalid answer, empty answer).",
                &["kind"],
            ),
            picker_fallbacks: r.counter(
                "veer_picker_fallbacks_total",
                "Picks the host's round robin answered because the plugin could not.",
            ),
            picker_rebuilds: r
                .counter("veer_picker_rebuilds_total", "Times a trapped plugin instance was replaced by a fresh one."),
            picker_swaps: r.counter("veer_picker_swaps_total", "Successful live picker swaps."),
            picker_info: r.gauge_vec(
                "veer_picker_info",
                "The serving picker (value 1).",
                &["name", "version", "source"],
            ),
            access_log_written: r.counter("veer_access_log_records_total", "Access log records written."),
            access_log_dropped: r
                .counter("veer_access_log_dropped_total", "Access log records dropped because the writer fell behind."),
            admission_in_flight: r
                .gauge("veer_admission_in_flight", "Requests past admission and not yet answered (response headers)."),
            admission_limit: r.gauge(
                "veer_admission_limit",
                "In-flight limit in force: the global cap or the adaptive limit, whichever is lower (0: none).",
            ),
            admission_adaptive_limit: r.gauge(
                "veer_admission_adaptive_limit",
                "The AIMD controller's current limit (0 while adaptive concurrency is off).",
            ),
            admission_queue_waiting: r
                .gauge("veer_admission_queue_waiting", "Requests waiting in the admission queue."),
            admission_tracked_clients: r
                .gauge("veer_admission_tracked_clients", "Clients with a rate-limit bucket in memory."),
            admission_admitted: r.counter("veer_admission_admitted_total", "Requests admitted."),
            admission_refusals: r.counter_vec(
                "veer_admission_refusals_total",
                "Requests refused at admission, by reason (global_limit, adaptive_limit, queue_timeout, client_rate).",
                &["reason"],
            ),
            access_log_counts: AccessLogCounts::default(),
            render_lock: parking_lot::Mutex::new(()),
            registry,
        }
    }

    /// Drops every series of a backend that left the pool, so that
    /// `/metrics` does not keep reporting it.
    fn forget_backend(&self, name: &str) {
        for result in ATTEMPT_RESULTS {
            let _ = self.backend_attempts.remove_label_values(&[name, result]);
        }
        let _ = self.backend_response_seconds.remove_label_values(&[name]);
        let _ = self.backend_ewma_seconds.remove_label_values(&[name]);
        for gauge in [
            &self.backend_in_flight,
            &self.backend_weight,
            &self.backend_advisory,
            &self.backend_eligible,
            &self.backend_healthy,
            &self.backend_effective_weight,
            &self.backend_ejected,
        ] {
            let _ = gauge.remove_label_values(&[name]);
        }
        for counter in [
            &self.backend_advisories,
            &self.backend_breaker_opened,
            &self.backend_ejections,
            &self.backend_checks_failed,
        ] {
            let _ = counter.remove_label_values(&[name]);
        }
        for state in BREAKER_STATES {
            let _ = self.backend_breaker.remove_label_values(&[name, state]);
        }
        for reason in ["at_cap", "breaker"] {
            let _ = self.backend_refusals.remove_label_values(&[name, reason]);
        }
    }

    /// How many series carry `backend="name"`; for tests.
    pub fn series_of_backend(&self, name: &str) -> usize {
        self.registry
            .gather()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|metric| metric.get_label().iter().any(|l| l.name() == "backend" && l.value() == name))
            .count()
    }

    /// A client request arrived; [`Metrics::request_finished`] must follow.
    pub fn request_began(&self) {
        self.in_flight.inc();
    }

    /// Records a finished client request.
    pub fn request_finished(&self, method: usize, status: StatusCode, duration: Duration) {
        self.in_flight.dec();
        let class = status_class(status);
        self.requests[method.min(METHOD_CLASSES.len() - 1)][class].inc();
        self.request_seconds[class].observe(duration.as_secs_f64());
    }

    /// Counts a failure on the side at fault.
    pub fn record_failure(&self, fault: Fault) {
        self.failures[fault.index()].inc();
    }

    /// Failures so far blamed on `side` (`client` or `backend`).
    pub fn failures_of(&self, side: &str) -> u64 {
        Fault::ALL.iter().filter(|f| f.side() == side).map(|f| self.failures[f.index()].get()).sum()
    }

    /// Counts a request refused by a request limit with `status`.
    pub fn request_refused(&self, status: StatusCode) {
        self.request_refusals.with_label_values(&[status.as_str()]).inc();
    }

    /// Sets or clears a backend's latency advisory.
    pub fn set_advisory(&self, backend: &str, raised: bool) {
        let gauge = self.backend_advisory.with_label_values(&[backend]);
        if raised && gauge.get() == 0 {
            self.backend_advisories.with_label_values(&[backend]).inc();
        }
        gauge.set(i64::from(raised));
    }

    /// Client requests answered so far, all classes.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().map(IntCounter::get).sum()
    }

    /// Client requests answered so far, by status class (`"2xx"` ...).
    pub fn requests_by_class(&self) -> [(&'static str, u64); 5] {
        let mut counts = STATUS_CLASSES.map(|class| (class, 0));
        for by_method in &self.requests {
            for (i, counter) in by_method.iter().enumerate() {
                counts[i].1 += counter.get();
            }
        }
        counts
    }

    /// Client requests being answered now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// The Prometheus text exposition of everything, with the live gauges
    /// read from `live` (pools, health, admission, picker) first.
    pub fn render(&self, live: &Live<'_>) -> String {
        let _one_at_a_time = self.render_lock.lock();
        let slot = &live.main.slot;
        self.mirror_admission(&live.admission);
        let connections = live.connections;
        self.client_connections.set(i64::try_from(connections.open).unwrap_or(i64::MAX));
        for (reason, count) in [("total", connections.refused_total), ("per_client", connections.refused_per_client)] {
            catch_up(&self.connections_refused.with_label_values(&[reason]), count);
        }
        self.mirror_group(&live.main.pool, &live.main.health);
        if let Some(canary) = live.canary {
            // Backend names are unique across the two groups, so the series do not collide.
            self.mirror_group(&canary.pool, &canary.health);
        }
        let stats: PickerStatsSnapshot = slot.lifetime_stats();
        catch_up(&self.picks, stats.picks);
        catch_up(&self.picker_fallbacks, stats.fallbacks);
        catch_up(&self.picker_rebuilds, stats.rebuilds);
        for (kind, count) in [
            ("trap", stats.traps),
            ("deadline", stats.deadlines),
            ("invalid_answer", stats.invalid_answers),
            ("empty_answer", stats.empty_answers),
        ] {
            catch_up(&self.picker_faults.with_label_values(&[kind]), count);
        }
        catch_up(&self.picker_swaps, slot.swaps());
        let picker = slot.current();
        let info = picker.info();
        self.picker_info.reset();
        self.picker_info.with_label_values(&[info.name.as_str(), info.version.as_str(), info.source.as_str()]).set(1);
        catch_up(&self.access_log_written, self.access_log_counts.written.load(Ordering::Relaxed));
        catch_up(&self.access_log_dropped, self.access_log_counts.dropped.load(Ordering::Relaxed));
        let mut text = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

impl Metrics {
    /// Reads a backend group's live gauges and health counters into the metrics.
    fn mirror_group(&self, pool: &Pool, health: &Health) {
        for backend in &health.snapshot() {
            let name = [backend.name.as_str()];
            self.backend_eligible.with_label_values(&name).set(i64::from(backend.eligible));
            self.backend_healthy.with_label_values(&name).set(i64::from(backend.healthy));
            self.backend_effective_weight.with_label_values(&name).set(i64::from(backend.effective_weight));
            self.backend_ejected.with_label_values(&name).set(i64::from(backend.ejected_for_ms.is_some()));
            let current = match backend.breaker {
                BreakerPhase::Closed => "closed",
                BreakerPhase::HalfOpen => "half_open",
                BreakerPhase::Open => "open",
            };
            for state in BREAKER_STATES {
                self.backend_breaker.with_label_values(&[name[0], state]).set(i64::from(state == current));
            }
            catch_up(&self.backend_breaker_opened.with_label_values(&name), backend.breaker_opened_total);
            catch_up(&self.backend_ejections.with_label_values(&name), backend.ejections_total);
            catch_up(&self.backend_checks_failed.with_label_values(&name), backend.checks_failed_total);
            catch_up(&self.backend_refusals.with_label_values(&[name[0], "at_cap"]), backend.refused_at_cap_total);
            catch_up(&self.backend_refusals.with_label_values(&[name[0], "breaker"]), backend.refused_by_breaker_total);
        }
        for backend in pool.all() {
            let name = [backend.spec.name.as_str()];
            self.backend_in_flight.with_label_values(&name).set(i64::from(backend.in_flight.load(Ordering::Relaxed)));
            self.backend_ewma_seconds
                .with_label_values(&name)
                .set(backend.ewma_latency_us.load(Ordering::Relaxed) as f64 / 1e6);
            self.backend_weight.with_label_values(&name).set(i64::from(backend.weight()));
        }
    }

    fn mirror_admission(&self, admission: &AdmissionSnapshot) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.admission_in_flight.set(i64::from(admission.in_flight));
        self.admission_limit.set(i64::from(admission.limit));
        self.admission_adaptive_limit.set(admission.adaptive.as_ref().map_or(0, |a| i64::from(a.limit)));
        self.admission_queue_waiting.set(gauge(admission.queue.waiting as u64));
        self.admission_tracked_clients.set(admission.clients.as_ref().map_or(0, |c| gauge(c.tracked as u64)));
        catch_up(&self.admission_admitted, admission.admitted);
        let refused = &admission.refused;
        for (reason, count) in [
            ("global_limit", refused.global_limit),
            ("adaptive_limit", refused.adaptive_limit),
            ("queue_timeout", refused.queue_timeout),
            ("client_rate", refused.client_rate),
        ] {
            catch_up(&self.admission_refusals.with_label_values(&[reason]), count);
        }
    }
}

/// The pool's backends record their attempts into series of this registry.
impl BackendSeries for Metrics {
    fn backend(&self, name: &str) -> BackendMetrics {
        BackendMetrics {
            attempts: ATTEMPT_RESULTS.map(|r| self.backend_attempts.with_label_values(&[name, r])),
            response_seconds: self.backend_response_seconds.with_label_values(&[name]),
        }
    }

    fn forget(&self, name: &str) {
        self.forget_backend(name);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Makes each metric and registers it in the same step, so that none can be
/// made and forgotten. Names, help and labels are constants of this file: a
/// bad or repeated one is a programming error, caught by every test.
struct Registrar<'r>(&'r Registry);

impl Registrar<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        self.0.register(Box::new(collector.clone())).expect("metric names are valid and unique");
        collector
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("a valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("a valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.register(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("a valid metric"))
    }

    fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.register(HistogramVec::new(opts, labels).expect("a valid metric"))
    }
}

/// Brings a counter that mirrors a monotonic count kept elsewhere up to it.
fn catch_up(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_backend_leaves_no_series() {
        let metrics = Metrics::new();
        metrics.backend("a").record(Some(StatusCode::OK), Duration::from_millis(1));
        metrics.backend("b").record(None, Duration::from_millis(1));
        assert!(metrics.series_of_backend("a") > 0);
        metrics.forget("a");
        assert_eq!(metrics.series_of_backend("a"), 0);
        assert!(metrics.series_of_backend("b") > 0, "only the forgotten one goes");
    }
}
