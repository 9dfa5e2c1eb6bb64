//! Health's series: what each backend's checks, breaker and outlier detector
//! say, read from [`Health::snapshot`] at scrape time.

use prometheus::{IntCounterVec, IntGaugeVec};

use super::{BreakerPhase, Health};
use crate::series::{Registrar, catch_up};

/// Circuit breaker states used as a label.
const BREAKER_STATES: [&str; 3] = ["closed", "half_open", "open"];
/// Why a pick of a backend was refused at admission.
const REFUSAL_REASONS: [&str; 2] = ["at_cap", "breaker"];

/// Health's per-backend series.
#[derive(Debug)]
pub struct HealthSeries {
    eligible: IntGaugeVec,
    healthy: IntGaugeVec,
    effective_weight: IntGaugeVec,
    breaker: IntGaugeVec,
    breaker_opened: IntCounterVec,
    ejected: IntGaugeVec,
    ejections: IntCounterVec,
    checks_failed: IntCounterVec,
    refusals: IntCounterVec,
}

impl HealthSeries {
    /// The series, registered.
    pub fn register(r: Registrar<'_>) -> Self {
        let backend = ["backend"];
        HealthSeries {
            eligible: r.gauge_vec("veer_backend_eligible", "1 while the picker may choose the backend.", &backend),
            healthy: r.gauge_vec(
                "veer_backend_healthy",
                "Verdict of the active health checks (1 healthy, also when checks are off).",
                &backend,
            ),
            effective_weight: r.gauge_vec(
                "veer_backend_effective_weight",
                "Weight the picker sees, slow start applied (configured weight x 100 at full).",
                &backend,
            ),
            breaker: r.gauge_vec(
                "veer_backend_breaker_state",
                "Circuit breaker state per backend (1 for the current state).",
                &["backend", "state"],
            ),
            breaker_opened: r.counter_vec("veer_backend_breaker_opened_total", "Times the breaker opened.", &backend),
            ejected: r.gauge_vec("veer_backend_ejected", "1 while the backend is ejected as an outlier.", &backend),
            ejections: r.counter_vec("veer_backend_ejections_total", "Outlier ejections of the backend.", &backend),
            checks_failed: r.counter_vec(
                "veer_backend_health_checks_failed_total",
                "Active health checks of the backend that failed.",
                &backend,
            ),
            refusals: r.counter_vec(
                "veer_backend_refusals_total",
                "Picks of the backend refused at admission, by reason (at_cap, breaker).",
                &["backend", "reason"],
            ),
        }
    }

    /// Reads a group's health into the series.
    pub fn mirror(&self, health: &Health) {
        for backend in &health.snapshot() {
            let name = [backend.name.as_str()];
            self.eligible.with_label_values(&name).set(i64::from(backend.eligible));
            self.healthy.with_label_values(&name).set(i64::from(backend.healthy));
            self.effective_weight.with_label_values(&name).set(i64::from(backend.effective_weight));
            self.ejected.with_label_values(&name).set(i64::from(backend.ejected_for_ms.is_some()));
            let current = match backend.breaker {
                BreakerPhase::Closed => "closed",
                BreakerPhase::HalfOpen => "half_open",
                BreakerPhase::Open => "open",
            };
            for state in BREAKER_STATES {
                self.breaker.with_label_values(&[name[0], state]).set(i64::from(state == current));
            }
            catch_up(&self.breaker_opened.with_label_values(&name), backend.breaker_opened_total);
            catch_up(&self.ejections.with_label_values(&name), backend.ejections_total);
            catch_up(&self.checks_failed.with_label_values(&name), backend.checks_failed_total);
            catch_up(&self.refusals.with_label_values(&[name[0], "at_cap"]), backend.refused_at_cap_total);
            catch_up(&self.refusals.with_label_values(&[name[0], "breaker"]), backend.refused_by_breaker_total);
        }
    }

    /// Drops every series of a backend that left.
    pub fn forget(&self, name: &str) {
        for gauge in [&self.eligible, &self.healthy, &self.effective_weight, &self.ejected] {
            let _ = gauge.remove_label_values(&[name]);
        }
        for counter in [&self.breaker_opened, &self.ejections, &self.checks_failed] {
            let _ = counter.remove_label_values(&[name]);
        }
        for state in BREAKER_STATES {
            let _ = self.breaker.remove_label_values(&[name, state]);
        }
        for reason in REFUSAL_REASONS {
            let _ = self.refusals.remove_label_values(&[name, reason]);
        }
    }
}
