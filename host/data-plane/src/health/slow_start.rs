//! Slow start: a backend that recovers or joins gets a growing share of
//! traffic instead of all of it at once, by ramping the weight the picker sees.
//!
//! The ramp goes in [`RAMP_STEPS`] steps (a tenth, two tenths, ... of the full
//! weight) so that a ramp costs ten `updated` events, not one per tick.

use std::time::{Duration, Instant};

/// Steps of a ramp.
pub const RAMP_STEPS: u32 = 10;

/// The weight to publish for a backend of `full` weight whose ramp began at
/// `started` (`None`: no ramp), and whether the ramp is over.
pub fn effective_weight(full: u32, started: Option<Instant>, window: Duration, now: Instant) -> (u32, bool) {
    let Some(started) = started else { return (full, true) };
    let elapsed = now.saturating_duration_since(started);
    if window.is_zero() || elapsed >= window {
        return (full, true);
    }
    // Step k (1-based) covers [(k-1)/N, k/N) of the window and publishes k/N.
    let step = (elapsed.as_nanos() * u128::from(RAMP_STEPS) / window.as_nanos()) as u32 + 1;
    let weight = (u64::from(full) * u64::from(step) / u64::from(RAMP_STEPS)).max(1) as u32;
    (weight, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_ramps_in_steps_over_the_window() {
        let (t, w) = (Instant::now(), Duration::from_secs(10));
        assert_eq!(effective_weight(100, Some(t), w, t), (10, false));
        assert_eq!(effective_weight(100, Some(t), w, t + Duration::from_millis(4_999)), (50, false));
        assert_eq!(effective_weight(100, Some(t), w, t + Duration::from_millis(9_999)), (100, false));
        assert_eq!(effective_weight(100, Some(t), w, t + w), (100, true));
        assert_eq!(effective_weight(100, None, w, t), (100, true));
        assert_eq!(effective_weight(100, Some(t), Duration::ZERO, t), (100, true), "0 disables");
        assert_eq!(effective_weight(3, Some(t), w, t), (1, false), "never below 1");
    }
}
