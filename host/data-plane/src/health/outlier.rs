//! Passive outlier ejection: a backend whose live traffic fails in a row, or
//! whose success rate or latency stands out from the other backends', is taken
//! out for a while — longer each time it happens again.
//!
//! Pure state: every method takes `now`. The share cap needs the whole group,
//! so it is enforced by the caller ([`super::Health`]) before [`Outlier::eject`].

use std::time::{Duration, Instant};

use super::config::OutlierConfig;
use veer_plugin_runtime::BackendId;

/// One backend's outlier state.
#[derive(Debug, Clone, Default)]
pub struct Outlier {
    consecutive_errors: u32,
    ejected_until: Option<Instant>,
    /// Multiplier of the next ejection's length; decays while the backend behaves.
    multiplier: u32,
    ejections_total: u64,
    interval: IntervalStats,
}

/// What one backend did during one analysis interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IntervalStats {
    /// Attempts with an outcome.
    pub requests: u32,
    /// Of those, errors (5xx or no response).
    pub errors: u32,
    /// Sum of latencies, µs.
    pub latency_sum_us: u64,
}

/// Why a backend was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EjectionReason {
    /// Too many errors in a row.
    ConsecutiveErrors,
    /// Success rate far below the other backends'.
    SuccessRate,
    /// Latency far above the other backends'.
    Latency,
}

impl Outlier {
    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Ejections so far.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total
    }

    /// Records an attempt; returns `true` when the error streak calls for an
    /// ejection (the caller decides whether the share cap allows it).
    pub fn record(&mut self, config: &OutlierConfig, error: bool, latency: Duration) -> bool {
        self.interval.requests += 1;
        self.interval.errors += u32::from(error);
        self.interval.latency_sum_us += latency.as_micros() as u64;
        if !error {
            self.consecutive_errors = 0;
            return false;
        }
        self.consecutive_errors += 1;
        self.ejected_until.is_none()
            && config.consecutive_errors > 0
            && self.consecutive_errors >= config.consecutive_errors
    }

    /// Ejects: for `base × n` (n-th ejection without a calm interval between),
    /// at most `max_ejection`.
    pub fn eject(&mut self, config: &OutlierConfig, now: Instant) {
        self.multiplier += 1;
        self.ejections_total += 1;
        self.consecutive_errors = 0;
        let length = config.base_ejection.saturating_mul(self.multiplier).min(config.max_ejection);
        self.ejected_until = Some(now + length);
    }

    /// Ends the current ejection now, whatever its length; returns whether
    /// there was one (for a backend leaving the group).
    pub fn end_ejection(&mut self) -> bool {
        self.ejected_until.take().is_some()
    }

    /// Ends an ejection that is over; returns whether it ended.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.ejected_until.is_some_and(|until| now >= until) {
            self.ejected_until = None;
            return true;
        }
        false
    }

    /// Hands over this interval's numbers and starts a new interval. A calm
    /// interval (not ejected, no streak) lets the multiplier decay by one.
    pub fn take_interval(&mut self) -> IntervalStats {
        if self.ejected_until.is_none() && self.consecutive_errors == 0 {
            self.multiplier = self.multiplier.saturating_sub(1);
        }
        std::mem::take(&mut self.interval)
    }
}

/// The backends that stand out from the others in one interval.
///
/// Each backend with at least `min_requests` attempts is compared with the mean
/// of the *other* such backends (leaving it out, so that one bad backend among
/// three cannot hide by dragging the mean down). Needs at least one peer.
pub fn outliers(config: &OutlierConfig, stats: &[(BackendId, IntervalStats)]) -> Vec<(BackendId, EjectionReason)> {
    let judged: Vec<(BackendId, f64, f64)> = stats
        .iter()
        .filter(|(_, s)| s.requests >= config.min_requests.max(1))
        .map(|(id, s)| {
            let requests = f64::from(s.requests);
            (*id, 1.0 - f64::from(s.errors) / requests, s.latency_sum_us as f64 / requests)
        })
        .collect();
    if judged.len() < 2 {
        return Vec::new();
    }
    let (success_total, latency_total) = judged.iter().fold((0.0, 0.0), |(s, l), (_, rate, lat)| (s + rate, l + lat));
    let peers = (judged.len() - 1) as f64;
    let mut found = Vec::new();
    for (id, success, latency) in &judged {
        let others_success = (success_total - success) / peers;
        let others_latency = (latency_total - latency) / peers;
        if config.success_rate_gap > 0.0 && *success < others_success - config.success_rate_gap {
            found.push((*id, EjectionReason::SuccessRate));
        } else if config.latency_factor > 0.0
            && *latency > others_latency * config.latency_factor
            && *latency > config.latency_floor.as_micros() as f64
        {
            found.push((*id, EjectionReason::Latency));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_errors: 3,
            min_requests: 10,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            ..OutlierConfig::default()
        }
    }

    fn stats(requests: u32, errors: u32, latency_ms: u64) -> IntervalStats {
        IntervalStats { requests, errors, latency_sum_us: u64::from(requests) * latency_ms * 1000 }
    }

    #[test]
    fn an_error_streak_asks_for_ejection() {
        let c = config();
        let mut o = Outlier::default();
        let ms = Duration::from_millis(1);
        assert!(!o.record(&c, true, ms));
        assert!(!o.record(&c, true, ms));
        assert!(!o.record(&c, false, ms));
        assert!(!o.record(&c, true, ms));
        assert!(!o.record(&c, true, ms));
        assert!(o.record(&c, true, ms));
    }

    #[test]
    fn ejection_time_grows_with_repeated_ejections_up_to_the_max() {
        let (c, t) = (config(), Instant::now());
        let mut o = Outlier::default();
        o.eject(&c, t);
        assert_eq!(o.ejected_until(), Some(t + Duration::from_secs(10)));
        assert!(!o.poll(t + Duration::from_secs(9)));
        assert!(o.poll(t + Duration::from_secs(10)));
        o.eject(&c, t);
        assert_eq!(o.ejected_until(), Some(t + Duration::from_secs(20)));
        o.poll(t + Duration::from_secs(20));
        o.eject(&c, t);
        assert_eq!(o.ejected_until(), Some(t + Duration::from_secs(25)), "capped");
        assert_eq!(o.ejections_total(), 3);
    }

    #[test]
    fn calm_intervals_shorten_the_next_ejection_again() {
        let (c, t) = (config(), Instant::now());
        let mut o = Outlier::default();
        o.eject(&c, t);
        o.poll(t + Duration::from_secs(10));
        o.eject(&c, t);
        o.poll(t + Duration::from_secs(20));
        o.take_interval();
        o.take_interval();
        o.eject(&c, t);
        assert_eq!(o.ejected_until(), Some(t + Duration::from_secs(10)));
    }

    #[test]
    fn success_rate_outlier_is_found_against_the_others() {
        let c = config();
        let found = outliers(&c, &[(1, stats(100, 0, 5)), (2, stats(100, 50, 5)), (3, stats(100, 1, 5))]);
        assert_eq!(found, vec![(2, EjectionReason::SuccessRate)]);
        // Too few requests: not judged.
        assert!(outliers(&c, &[(1, stats(100, 0, 5)), (2, stats(5, 5, 5))]).is_empty());
        // Everyone equally bad: nobody stands out.
        assert!(outliers(&c, &[(1, stats(100, 50, 5)), (2, stats(100, 50, 5))]).is_empty());
    }

    #[test]
    fn latency_outlier_needs_the_factor_and_the_floor() {
        let c = config();
        let found = outliers(&c, &[(1, stats(50, 0, 10)), (2, stats(50, 0, 200)), (3, stats(50, 0, 12))]);
        assert_eq!(found, vec![(2, EjectionReason::Latency)]);
        // 5× slower but under the 50 ms floor.
        assert!(outliers(&c, &[(1, stats(50, 0, 1)), (2, stats(50, 0, 5))]).is_empty());
    }
}
