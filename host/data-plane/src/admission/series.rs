//! Admission's series, read from an [`AdmissionSnapshot`] at scrape time.

use prometheus::{IntCounter, IntCounterVec, IntGauge};

use super::AdmissionSnapshot;
use crate::series::{Registrar, catch_up, gauge_value};

/// Admission control's series.
#[derive(Debug)]
pub struct AdmissionSeries {
    in_flight: IntGauge,
    limit: IntGauge,
    adaptive_limit: IntGauge,
    queue_waiting: IntGauge,
    tracked_clients: IntGauge,
    admitted: IntCounter,
    refusals: IntCounterVec,
    store_checks: IntCounterVec,
    store_up: IntGauge,
}

impl AdmissionSeries {
    /// The series, registered.
    pub fn register(r: Registrar<'_>) -> Self {
        AdmissionSeries {
            in_flight: r
                .gauge("veer_admission_in_flight", "Requests past admission and not yet answered (response headers)."),
            limit: r.gauge(
                "veer_admission_limit",
                "In-flight limit in force: the global cap or the adaptive limit, whichever is lower (0: none).",
            ),
            adaptive_limit: r.gauge(
                "veer_admission_adaptive_limit",
                "The AIMD controller's current limit (0 while adaptive concurrency is off).",
            ),
            queue_waiting: r.gauge("veer_admission_queue_waiting", "Requests waiting in the admission queue."),
            tracked_clients: r.gauge("veer_admission_tracked_clients", "Clients with a rate-limit bucket in memory."),
            admitted: r.counter("veer_admission_admitted_total", "Requests admitted."),
            refusals: r.counter_vec(
                "veer_admission_refusals_total",
                "Requests refused at admission, by reason (global_limit, adaptive_limit, queue_timeout, client_rate, rate_store).",
                &["reason"],
            ),
            store_checks: r.counter_vec(
                "veer_rate_limit_store_checks_total",
                "Calls to the shared rate limit's Redis by outcome: allowed, limited, error (no answer in time; on_error decided), skipped (not asked after an error; on_error decided).",
                &["result"],
            ),
            store_up: r.gauge(
                "veer_rate_limit_store_up",
                "1 while the shared rate limit's Redis answers, 0 after a failed call (absent without a shared limit: 1).",
            ),
        }
    }

    /// Reads admission's state into the series.
    pub fn mirror(&self, admission: &AdmissionSnapshot) {
        self.in_flight.set(i64::from(admission.in_flight));
        self.limit.set(i64::from(admission.limit));
        self.adaptive_limit.set(admission.adaptive.as_ref().map_or(0, |a| i64::from(a.limit)));
        self.queue_waiting.set(gauge_value(admission.queue.waiting as u64));
        self.tracked_clients.set(admission.clients.as_ref().map_or(0, |c| gauge_value(c.tracked as u64)));
        catch_up(&self.admitted, admission.admitted);
        let refused = &admission.refused;
        for (reason, count) in [
            ("global_limit", refused.global_limit),
            ("adaptive_limit", refused.adaptive_limit),
            ("queue_timeout", refused.queue_timeout),
            ("client_rate", refused.client_rate),
            ("rate_store", refused.rate_store),
        ] {
            catch_up(&self.refusals.with_label_values(&[reason]), count);
        }
        let shared = admission.clients.as_ref().and_then(|clients| clients.shared.as_ref());
        self.store_up.set(i64::from(shared.is_none_or(|shared| shared.up)));
        for (result, count) in shared.iter().flat_map(|shared| &shared.checks) {
            catch_up(&self.store_checks.with_label_values(&[result]), *count);
        }
    }
}
