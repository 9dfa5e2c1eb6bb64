//! The adaptive concurrency limit: additive increase, multiplicative decrease
//! (AIMD), steered by the latency of admitted requests.
//!
//! Requests record their time to response headers and whether they failed
//! into lock-free counters ([`AimdSamples`]). Every interval the controller
//! takes the window's numbers ([`Window`]) and decides ([`AimdController::decide`]):
//!
//! - too few samples: hold (no evidence either way);
//! - error share above the threshold, or mean latency above the threshold:
//!   cut, `limit × backoff` (at least one less, never below `min_limit`), then
//!   hold for one interval, because the next window still holds requests
//!   admitted under the old limit and would cut again for the same excess;
//! - otherwise, if the limit was in use (the window's peak in-flight reached
//!   at least half of it): raise by `increase`, up to `max_limit`. An unused
//!   limit is not raised, so a quiet period does not bank a huge limit that
//!   the next burst would rush through.
//!
//! The latency threshold is the configured target, or, without one,
//! `tolerance ×` the lowest window mean ever seen. That minimum never creeps
//! upward (a windowed minimum would follow the controller's own queueing up);
//! the price is that a backend which becomes permanently slower needs a target.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// What the controller was configured with (validated by the admission config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdParams {
    /// Limit at start.
    pub initial_limit: u32,
    /// The limit never falls below this.
    pub min_limit: u32,
    /// The limit never rises above this.
    pub max_limit: u32,
    /// Latency threshold; `None`: `tolerance ×` the measured minimum.
    pub target_latency: Option<Duration>,
    /// Multiple of the measured minimum latency accepted without a target.
    pub tolerance: f64,
    /// Added per interval while latency is fine and the limit in use.
    pub increase: u32,
    /// Factor applied on a cut, in `(0, 1)`.
    pub backoff: f64,
    /// Error share of a window above which the limit is cut, in `[0, 1]`.
    pub error_rate_threshold: f64,
    /// Samples a window needs before it is acted upon.
    pub min_samples: u32,
}

/// The numbers of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Requests that completed.
    pub samples: u64,
    /// Sum of their latencies, µs.
    pub latency_sum_us: u64,
    /// How many failed (5xx, or no response).
    pub errors: u64,
    /// The most requests past admission at once during the interval.
    pub peak_in_flight: u32,
}

impl Window {
    /// Mean latency, µs (0 without samples).
    pub fn mean_latency_us(&self) -> u64 {
        self.latency_sum_us.checked_div(self.samples).unwrap_or(0)
    }
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Raised to the new limit.
    Increase(u32),
    /// Cut to the new limit.
    Decrease(u32),
    /// Unchanged.
    Hold,
}

/// Lock-free accumulators written by every completing request.
#[derive(Debug, Default)]
pub struct AimdSamples {
    samples: AtomicU64,
    latency_sum_us: AtomicU64,
    errors: AtomicU64,
}

impl AimdSamples {
    /// Records one completed request.
    pub fn record(&self, latency: Duration, failed: bool) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.errors.fetch_add(u64::from(failed), Ordering::Relaxed);
    }

    /// Takes the numbers accumulated since the last call. The three swaps are
    /// not one atomic step; a sample racing them lands in either window, whole
    /// or split, which an average over an interval does not notice.
    pub fn take(&self, peak_in_flight: u32) -> Window {
        Window {
            samples: self.samples.swap(0, Ordering::Relaxed),
            latency_sum_us: self.latency_sum_us.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
            peak_in_flight,
        }
    }
}

/// The controller's state; only the periodic task touches it.
#[derive(Debug)]
pub struct AimdController {
    params: AimdParams,
    limit: u32,
    min_latency_us: Option<u64>,
    last_latency_us: Option<u64>,
    cooling_down: bool,
    increases: u64,
    decreases: u64,
}

impl AimdController {
    /// A controller at `params.initial_limit` (clamped to the bounds).
    pub fn new(params: AimdParams) -> Self {
        let limit = params.initial_limit.clamp(params.min_limit, params.max_limit);
        AimdController {
            params,
            limit,
            min_latency_us: None,
            last_latency_us: None,
            cooling_down: false,
            increases: 0,
            decreases: 0,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The mean latency of the last window that had samples.
    pub fn last_latency(&self) -> Option<Duration> {
        self.last_latency_us.map(Duration::from_micros)
    }

    /// The lowest window mean latency seen.
    pub fn min_latency(&self) -> Option<Duration> {
        self.min_latency_us.map(Duration::from_micros)
    }

    /// The latency above which the limit is cut (`None` until a minimum was
    /// measured, when there is no target).
    pub fn threshold(&self) -> Option<Duration> {
        self.params.target_latency.or_else(|| {
            self.min_latency_us.map(|min| Duration::from_secs_f64(min as f64 * self.params.tolerance / 1e6))
        })
    }

    /// (increases, decreases) so far.
    pub fn changes(&self) -> (u64, u64) {
        (self.increases, self.decreases)
    }

    /// Acts on one interval's numbers.
    pub fn decide(&mut self, window: Window) -> Decision {
        if window.samples < u64::from(self.params.min_samples.max(1)) {
            return Decision::Hold;
        }
        let mean_us = window.mean_latency_us();
        self.last_latency_us = Some(mean_us);
        self.min_latency_us = Some(self.min_latency_us.map_or(mean_us, |min| min.min(mean_us)));
        if std::mem::take(&mut self.cooling_down) {
            return Decision::Hold;
        }
        let error_rate = window.errors as f64 / window.samples as f64;
        let too_slow = self.threshold().is_some_and(|threshold| mean_us > threshold.as_micros() as u64);
        if error_rate > self.params.error_rate_threshold || too_slow {
            let cut = ((f64::from(self.limit) * self.params.backoff) as u32).min(self.limit.saturating_sub(1));
            let cut = cut.max(self.params.min_limit);
            if cut == self.limit {
                return Decision::Hold;
            }
            self.limit = cut;
            self.cooling_down = true;
            self.decreases += 1;
            return Decision::Decrease(cut);
        }
        let in_use = u64::from(window.peak_in_flight) * 2 >= u64::from(self.limit);
        let raised = self.limit.saturating_add(self.params.increase).min(self.params.max_limit);
        if in_use && raised > self.limit {
            self.limit = raised;
            self.increases += 1;
            return Decision::Increase(raised);
        }
        Decision::Hold
    }
}

/// The limit as the data path reads it: one atomic load per admission.
#[derive(Debug)]
pub struct SharedLimit(AtomicU32);

impl SharedLimit {
    /// Starts at `limit`.
    pub fn new(limit: u32) -> Self {
        SharedLimit(AtomicU32::new(limit))
    }

    /// The limit now.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Publishes a new limit.
    pub fn set(&self, limit: u32) {
        self.0.store(limit, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> AimdParams {
        AimdParams {
            initial_limit: 10,
            min_limit: 2,
            max_limit: 20,
            target_latency: Some(Duration::from_millis(50)),
            tolerance: 2.0,
            increase: 1,
            backoff: 0.5,
            error_rate_threshold: 0.2,
            min_samples: 5,
        }
    }

    fn window(samples: u64, mean_ms: u64, errors: u64, peak: u32) -> Window {
        Window { samples, latency_sum_us: samples * mean_ms * 1000, errors, peak_in_flight: peak }
    }

    #[test]
    fn the_limit_rises_additively_while_latency_is_under_target_and_the_limit_is_used() {
        let mut aimd = AimdController::new(params());
        assert_eq!(aimd.decide(window(100, 20, 0, 10)), Decision::Increase(11));
        assert_eq!(aimd.decide(window(100, 20, 0, 11)), Decision::Increase(12));
        assert_eq!(aimd.last_latency(), Some(Duration::from_millis(20)));
    }

    #[test]
    fn an_unused_limit_is_not_raised() {
        let mut aimd = AimdController::new(params());
        assert_eq!(aimd.decide(window(100, 20, 0, 4)), Decision::Hold);
        assert_eq!(aimd.decide(window(100, 20, 0, 5)), Decision::Increase(11), "half the limit counts as in use");
    }

    #[test]
    fn latency_over_target_cuts_multiplicatively_then_cools_down_one_interval() {
        let mut aimd = AimdController::new(params());
        assert_eq!(aimd.decide(window(100, 80, 0, 10)), Decision::Decrease(5));
        assert_eq!(aimd.decide(window(100, 80, 0, 10)), Decision::Hold, "that window was admitted under 10");
        assert_eq!(aimd.decide(window(100, 80, 0, 5)), Decision::Decrease(2));
        aimd.decide(window(100, 80, 0, 2));
        assert_eq!(aimd.decide(window(100, 80, 0, 2)), Decision::Hold, "never below min_limit");
        assert_eq!(aimd.limit(), 2);
        assert_eq!(aimd.changes(), (0, 2));
    }

    #[test]
    fn errors_cut_the_limit_even_when_latency_is_fine() {
        let mut aimd = AimdController::new(params());
        assert_eq!(aimd.decide(window(100, 1, 20, 10)), Decision::Increase(11), "20% is not above the threshold");
        assert_eq!(aimd.decide(window(100, 1, 21, 11)), Decision::Decrease(5));
    }

    #[test]
    fn a_cut_always_lowers_a_small_limit_by_at_least_one() {
        let mut aimd = AimdController::new(AimdParams { initial_limit: 3, min_limit: 1, backoff: 0.9, ..params() });
        assert_eq!(aimd.decide(window(10, 99, 0, 3)), Decision::Decrease(2));
    }

    #[test]
    fn too_few_samples_hold_the_limit() {
        let mut aimd = AimdController::new(params());
        assert_eq!(aimd.decide(window(4, 500, 4, 10)), Decision::Hold);
        assert_eq!(aimd.last_latency(), None);
    }

    #[test]
    fn limits_stay_within_bounds() {
        let mut aimd = AimdController::new(AimdParams { initial_limit: 99, ..params() });
        assert_eq!(aimd.limit(), 20, "the initial limit is clamped");
        assert_eq!(aimd.decide(window(100, 1, 0, 20)), Decision::Hold, "already at max_limit");
    }

    #[test]
    fn without_a_target_the_threshold_is_a_multiple_of_the_lowest_mean_seen() {
        let mut aimd = AimdController::new(AimdParams { target_latency: None, ..params() });
        assert_eq!(aimd.threshold(), None);
        assert_eq!(aimd.decide(window(100, 10, 0, 10)), Decision::Increase(11));
        assert_eq!(aimd.threshold(), Some(Duration::from_millis(20)));
        assert_eq!(aimd.decide(window(100, 19, 0, 11)), Decision::Increase(12), "within 2× the minimum");
        assert_eq!(aimd.decide(window(100, 21, 0, 12)), Decision::Decrease(6));
        assert_eq!(aimd.min_latency(), Some(Duration::from_millis(10)), "the minimum does not creep up");
    }

    #[test]
    fn samples_accumulate_into_a_window_and_reset() {
        let samples = AimdSamples::default();
        samples.record(Duration::from_millis(10), false);
        samples.record(Duration::from_millis(30), true);
        let window = samples.take(7);
        assert_eq!(window, Window { samples: 2, latency_sum_us: 40_000, errors: 1, peak_in_flight: 7 });
        assert_eq!(window.mean_latency_us(), 20_000);
        assert_eq!(samples.take(0).samples, 0);
    }
}
