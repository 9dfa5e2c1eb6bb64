//! The predictive latency advisory: warns when a backend's recent latency
//! rises well above its own long-run baseline, before it starts failing.
//!
//! Each backend's short-term EWMA (kept by the data path) is compared, once
//! per tick, with a slow baseline that this module keeps. The baseline only
//! follows the short-term value while no advisory is raised, so a backend that
//! stays slow keeps its advisory instead of redefining "normal".

use std::collections::HashMap;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec};

use crate::series::Registrar;

/// Advisory settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvisoryConfig {
    /// Raise the advisory when latency exceeds the baseline by this many percent; 0 disables it.
    pub rise_percent: f64,
    /// Time constant of the baseline: how far back "normal" reaches.
    #[serde(with = "humantime_serde")]
    pub baseline_window: Duration,
    /// Latencies below this never raise an advisory (noise on fast backends).
    #[serde(with = "humantime_serde")]
    pub min_latency: Duration,
}

impl Default for AdvisoryConfig {
    fn default() -> Self {
        AdvisoryConfig {
            rise_percent: 50.0,
            baseline_window: Duration::from_secs(300),
            min_latency: Duration::from_millis(1),
        }
    }
}

/// A change of a backend's advisory.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The backend's name.
    pub backend: String,
    /// Whether the advisory is now raised.
    pub raised: bool,
    /// Its current latency, µs.
    pub latency_us: f64,
    /// Its baseline, µs.
    pub baseline_us: f64,
}

#[derive(Debug)]
struct Baseline {
    value_us: f64,
    raised: bool,
}

/// Baselines of every backend.
#[derive(Debug, Default)]
pub struct Advisory {
    baselines: HashMap<String, Baseline>,
}

impl Advisory {
    /// Feeds one tick (`elapsed` since the last) of current latencies (µs; 0
    /// means no sample yet) and returns the advisories that changed.
    pub fn tick(&mut self, config: &AdvisoryConfig, elapsed: Duration, latencies: &[(String, f64)]) -> Vec<Change> {
        let mut changes = Vec::new();
        if config.rise_percent <= 0.0 {
            return changes;
        }
        self.baselines.retain(|name, _| latencies.iter().any(|(n, _)| n == name));
        let weight = (elapsed.as_secs_f64() / config.baseline_window.as_secs_f64().max(1e-3)).min(1.0);
        for (name, latency_us) in latencies {
            let latency_us = *latency_us;
            if latency_us <= 0.0 {
                continue;
            }
            let Some(baseline) = self.baselines.get_mut(name) else {
                self.baselines.insert(name.clone(), Baseline { value_us: latency_us, raised: false });
                continue;
            };
            let limit = baseline.value_us * (1.0 + config.rise_percent / 100.0);
            let raised = latency_us > limit && latency_us >= config.min_latency.as_secs_f64() * 1e6;
            if raised != baseline.raised {
                baseline.raised = raised;
                changes.push(Change { backend: name.clone(), raised, latency_us, baseline_us: baseline.value_us });
            }
            if !raised {
                baseline.value_us += weight * (latency_us - baseline.value_us);
            }
        }
        changes
    }
}

/// The advisory's series: whether each backend's advisory is raised, and
/// how often it was.
#[derive(Debug)]
pub struct AdvisorySeries {
    raised: IntGaugeVec,
    raisings: IntCounterVec,
}

impl AdvisorySeries {
    /// The series, registered.
    pub fn register(r: Registrar<'_>) -> Self {
        AdvisorySeries {
            raised: r.gauge_vec(
                "veer_backend_latency_advisory",
                "1 while a backend's latency is above its baseline by more than the configured share.",
                &["backend"],
            ),
            raisings: r.counter_vec(
                "veer_backend_latency_advisories_total",
                "Times a backend's latency rose above its baseline by more than the configured share.",
                &["backend"],
            ),
        }
    }

    /// Sets or clears a backend's advisory.
    pub fn set(&self, backend: &str, raised: bool) {
        let gauge = self.raised.with_label_values(&[backend]);
        if raised && gauge.get() == 0 {
            self.raisings.with_label_values(&[backend]).inc();
        }
        gauge.set(i64::from(raised));
    }

    /// Drops the series of a backend that left.
    pub fn forget(&self, name: &str) {
        let _ = self.raised.remove_label_values(&[name]);
        let _ = self.raisings.remove_label_values(&[name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);

    fn tick(advisory: &mut Advisory, latency_us: f64) -> Vec<Change> {
        advisory.tick(&AdvisoryConfig::default(), TICK, &[("a".into(), latency_us)])
    }

    #[test]
    fn a_rise_above_the_baseline_raises_once_and_a_return_clears() {
        let mut advisory = Advisory::default();
        for _ in 0..100 {
            assert!(tick(&mut advisory, 10_000.0).is_empty());
        }
        // +40%: within the 50% allowance.
        assert!(tick(&mut advisory, 14_000.0).is_empty());
        let raised = tick(&mut advisory, 20_000.0);
        assert_eq!(raised.len(), 1);
        assert!(raised[0].raised && raised[0].baseline_us < 11_000.0, "{raised:?}");
        // Staying slow does not repeat it, nor teach the baseline that slow is normal.
        for _ in 0..1000 {
            assert!(tick(&mut advisory, 20_000.0).is_empty());
        }
        let cleared = tick(&mut advisory, 10_000.0);
        assert_eq!(cleared.len(), 1);
        assert!(!cleared[0].raised);
    }

    #[test]
    fn slow_drift_moves_the_baseline_instead_of_raising() {
        let mut advisory = Advisory::default();
        let mut latency = 10_000.0;
        for _ in 0..3000 {
            latency *= 1.0005; // +0.05% a second: ~4.5x over 50 minutes
            assert!(tick(&mut advisory, latency).is_empty(), "raised at {latency}");
        }
    }

    #[test]
    fn fast_backends_and_a_disabled_advisory_stay_quiet() {
        let mut advisory = Advisory::default();
        tick(&mut advisory, 100.0);
        assert!(tick(&mut advisory, 900.0).is_empty(), "under min_latency");
        let off = AdvisoryConfig { rise_percent: 0.0, ..AdvisoryConfig::default() };
        let mut advisory = Advisory::default();
        advisory.tick(&off, TICK, &[("a".into(), 10_000.0)]);
        assert!(advisory.tick(&off, TICK, &[("a".into(), 90_000.0)]).is_empty());
    }
}
