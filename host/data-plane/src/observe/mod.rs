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
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus::{Encoder, Histogram, IntCounter, IntCounterVec, IntGauge, Registry, TextEncoder};

use crate::admission::{AdmissionSeries, AdmissionSnapshot};
use crate::fault::Fault;
use crate::health::HealthSeries;
use crate::pool::{BackendMetrics, BackendSeries, PoolSeries};
use crate::series::{Registrar, catch_up, duration_buckets};
use crate::upstream::{PickerSeries, Upstream};
use access_log::AccessLogSeries;
use access_log::RouteLabels;
use advisory::AdvisorySeries;

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
    /// W3C Trace Context and OTLP spans; `None` (the default): off, at no cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<trace::TracingConfig>,
}

/// Method classes used as a label: the common methods, everything else as `OTHER`.
const METHOD_CLASSES: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "OTHER"];
/// Status classes used as a label.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

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

/// What came of one mirrored copy (`veer_mirror_requests_total`'s `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorOutcome {
    /// The shadow answered with this status.
    Answered(StatusCode),
    /// The shadow failed it: no connection, a reset, or no answer in time.
    Failed,
    /// No shadow backend could take it.
    NoBackend,
    /// Not sent: a streamed body, or too many copies in flight.
    Skipped,
}

/// What `/metrics` reads from the running veer besides its own counters,
/// handed in by whoever serves it (the proxy builds it: observe depends on
/// nothing above the groups it reports on).
#[derive(Debug)]
pub struct Live {
    /// Every upstream group, the default first.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Admission control now.
    pub admission: AdmissionSnapshot,
    /// Client connections.
    pub connections: ConnectionCounts,
    /// The TLS of every `https` listener, by name.
    pub tls: std::collections::BTreeMap<String, Arc<crate::tls::ListenerTls>>,
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
///
/// Each component declares, registers and mirrors its own series (pool,
/// health, admission, the picker, the access log, the advisory); this struct
/// composes them into one registry and keeps the request-level series
/// itself: those are recorded by the proxy, which sits above every component.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Vec<[IntCounter; 5]>,
    request_seconds: [Histogram; 5],
    in_flight: IntGauge,
    failures: [IntCounter; 7],
    request_refusals: IntCounterVec,
    connections_refused: IntCounterVec,
    client_connections: IntGauge,
    /// Retries made (attempts after the first).
    pub retries: IntCounter,
    /// Retries wanted but refused by the retry budget.
    pub retry_budget_exhausted: IntCounter,
    mirror_requests: IntCounterVec,
    route_requests: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_certificate_expiry: prometheus::GaugeVec,
    /// Each backend's attempts, in-flight count, latency and weight.
    pub pool: PoolSeries,
    /// Each backend's checks, breaker and ejections.
    pub health: HealthSeries,
    /// Admission control.
    pub admission: AdmissionSeries,
    /// The main group's serving picker.
    pub picker: PickerSeries,
    /// The access log.
    pub access_log: AccessLogSeries,
    /// The latency advisory.
    pub advisory: AdvisorySeries,
    /// Scrapes bring mirrored counters up to date; one at a time, so none is counted twice.
    render_lock: parking_lot::Mutex<()>,
}

impl Metrics {
    /// All metrics, registered in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = Registrar::new(&registry);
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
            route_requests: r.counter_vec(
                "veer_route_requests_total",
                "Client requests a route took, by route, the upstream it forwarded to, and status class.",
                &["route", "upstream", "class"],
            ),
            mirror_requests: r.counter_vec(
                "veer_mirror_requests_total",
                "Mirrored copies by route and result: the shadow's status class, error (no response), no_backend, or skipped (a streamed body, or too many copies in flight).",
                &["route", "result"],
            ),
            tls_handshakes: r.counter_vec(
                "veer_tls_handshakes_total",
                "TLS handshakes with clients by listener and result: full, resumed, or why it failed \
                 (unknown_sni, no_client_certificate, bad_client_certificate, incompatible, client_alert, protocol, timeout, closed).",
                &["listener", "result"],
            ),
            tls_certificate_expiry: r.float_gauge_vec(
                "veer_tls_certificate_expiry_seconds",
                "Seconds until each certificate a listener serves expires (negative once it has).",
                &["listener", "certificate", "file"],
            ),
            pool: PoolSeries::register(r),
            health: HealthSeries::register(r),
            admission: AdmissionSeries::register(r),
            picker: PickerSeries::register(r),
            access_log: AccessLogSeries::register(r),
            advisory: AdvisorySeries::register(r),
            render_lock: parking_lot::Mutex::new(()),
            registry,
        }
    }

    /// Registers series of a component outside the data plane (discovery,
    /// the shared rate limit) in this registry, so that one scrape shows all.
    pub fn registrar(&self) -> Registrar<'_> {
        Registrar::new(&self.registry)
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

    /// Records a finished client request, and under its route if a route took it.
    pub fn request_finished(&self, method: usize, status: StatusCode, duration: Duration, route: Option<&RouteLabels>) {
        self.in_flight.dec();
        let class = status_class(status);
        self.requests[method.min(METHOD_CLASSES.len() - 1)][class].inc();
        self.request_seconds[class].observe(duration.as_secs_f64());
        if let Some(route) = route {
            self.route_requests.with_label_values(&[&*route.route, &*route.upstream, STATUS_CLASSES[class]]).inc();
        }
    }

    /// Counts a client's TLS handshake on `listener`.
    pub fn tls_handshake(&self, listener: &str, result: crate::tls::server::HandshakeResult) {
        self.tls_handshakes.with_label_values(&[listener, result.label()]).inc();
    }

    /// Counts one mirrored copy of `route`'s traffic and what came of it.
    pub fn mirror_result(&self, route: &str, outcome: MirrorOutcome) {
        let result = match outcome {
            MirrorOutcome::Answered(status) => STATUS_CLASSES[status_class(status)],
            MirrorOutcome::Failed => "error",
            MirrorOutcome::NoBackend => "no_backend",
            MirrorOutcome::Skipped => "skipped",
        };
        self.mirror_requests.with_label_values(&[route, result]).inc();
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

    /// Client requests answered so far, all classes.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().map(IntCounter::get).sum()
    }

    /// Every answered request's duration so far, all classes together, as
    /// cumulative bucket counts by upper bound in seconds (the last bound is
    /// infinite): two readings' difference is a window's distribution.
    pub fn request_duration_buckets(&self) -> Vec<(f64, u64)> {
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for histogram in &self.request_seconds {
            let metric = prometheus::core::Metric::metric(histogram);
            let proto = metric.get_histogram();
            for (i, bucket) in proto.get_bucket().iter().enumerate() {
                match buckets.get_mut(i) {
                    Some(entry) => entry.1 += bucket.cumulative_count(),
                    None => buckets.push((bucket.upper_bound(), bucket.cumulative_count())),
                }
            }
            let total = proto.get_sample_count();
            match buckets.iter_mut().find(|(bound, _)| bound.is_infinite()) {
                Some(entry) => entry.1 += total,
                None => buckets.push((f64::INFINITY, total)),
            }
        }
        buckets
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

    /// The Prometheus text exposition of everything, with each component's
    /// live series read from `live` (groups, admission, connections) first.
    pub fn render(&self, live: &Live) -> String {
        let _one_at_a_time = self.render_lock.lock();
        self.admission.mirror(&live.admission);
        let connections = live.connections;
        self.client_connections.set(i64::try_from(connections.open).unwrap_or(i64::MAX));
        for (reason, count) in [("total", connections.refused_total), ("per_client", connections.refused_per_client)] {
            catch_up(&self.connections_refused.with_label_values(&[reason]), count);
        }
        // Backend names are unique across the groups, so their series do not collide.
        for group in &live.upstreams {
            self.pool.mirror(&group.pool);
            self.health.mirror(&group.health);
        }
        self.picker.mirror(&live.upstreams);
        // Certificates come and go with reloads: the gauge holds exactly the ones served now.
        self.tls_certificate_expiry.reset();
        let now = std::time::SystemTime::now();
        for (listener, tls) in &live.tls {
            for certificate in tls.certificates() {
                let file = certificate.path.display().to_string();
                self.tls_certificate_expiry
                    .with_label_values(&[listener.as_str(), &certificate.label(), &file])
                    .set(certificate.seconds_to_expiry(now));
            }
        }
        let mut text = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

/// The pool's backends record their attempts into series of this registry;
/// a backend that leaves takes its series of every component with it, so
/// that `/metrics` does not keep reporting it.
impl BackendSeries for Metrics {
    fn backend(&self, name: &str) -> BackendMetrics {
        self.pool.backend(name)
    }

    fn forget(&self, name: &str) {
        self.pool.forget(name);
        self.health.forget(name);
        self.advisory.forget(name);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
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
