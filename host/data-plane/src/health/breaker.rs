//! The per-backend circuit breaker: closed → open → half-open → closed.
//!
//! A pure state machine: every method takes `now`, nothing sleeps or reads a
//! clock, so the tests below are exact.

use std::time::{Duration, Instant};

use super::config::BreakerConfig;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerPhase {
    /// Traffic flows; failures are counted.
    Closed,
    /// No traffic until the open period ends (the backend is ineligible).
    Open,
    /// A bounded number of probe attempts may go through; the first success
    /// closes the breaker, a failure opens it again.
    HalfOpen,
}

/// Why the breaker refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerRefusal {
    /// Open: the backend is resting.
    Open,
    /// Half-open and every probe slot is taken.
    ProbesBusy,
}

/// Failure counts over a sliding window, in ten buckets.
#[derive(Debug, Clone)]
struct Window {
    origin: Instant,
    /// `(bucket number, attempts, failures)`; a slot is stale when its number is old.
    buckets: [(u64, u32, u32); WINDOW_BUCKETS],
}

const WINDOW_BUCKETS: usize = 10;

impl Window {
    fn new(now: Instant) -> Self {
        Window { origin: now, buckets: [(u64::MAX, 0, 0); WINDOW_BUCKETS] }
    }

    fn bucket_len(window: Duration) -> Duration {
        (window / WINDOW_BUCKETS as u32).max(Duration::from_millis(1))
    }

    fn add(&mut self, window: Duration, failed: bool, now: Instant) {
        let number =
            (now.saturating_duration_since(self.origin).as_nanos() / Self::bucket_len(window).as_nanos()) as u64;
        let slot = &mut self.buckets[(number % WINDOW_BUCKETS as u64) as usize];
        if slot.0 != number {
            *slot = (number, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u32::from(failed);
    }

    /// `(attempts, failures)` in the buckets that still fall inside the window.
    fn totals(&self, window: Duration, now: Instant) -> (u32, u32) {
        let current =
            (now.saturating_duration_since(self.origin).as_nanos() / Self::bucket_len(window).as_nanos()) as u64;
        self.buckets
            .iter()
            .filter(|(number, _, _)| *number != u64::MAX && current.saturating_sub(*number) < WINDOW_BUCKETS as u64)
            .fold((0, 0), |(a, f), (_, attempts, failures)| (a + attempts, f + failures))
    }
}

/// One backend's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    phase: BreakerPhase,
    open_until: Option<Instant>,
    probes_in_flight: u32,
    consecutive_failures: u32,
    window: Window,
    opened_total: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(now: Instant) -> Self {
        Breaker {
            phase: BreakerPhase::Closed,
            open_until: None,
            probes_in_flight: 0,
            consecutive_failures: 0,
            window: Window::new(now),
            opened_total: 0,
        }
    }

    /// The phase now (call [`Breaker::poll`] first to let an open period end).
    pub fn phase(&self) -> BreakerPhase {
        self.phase
    }

    /// When an open breaker turns half-open.
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// How many times it has opened.
    pub fn opened_total(&self) -> u64 {
        self.opened_total
    }

    /// Ends an open period that is over. Returns whether the phase changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.open_until {
            Some(until) if self.phase == BreakerPhase::Open && now >= until => {
                self.phase = BreakerPhase::HalfOpen;
                self.open_until = None;
                self.probes_in_flight = 0;
                true
            }
            _ => false,
        }
    }

    /// Whether an attempt may be sent now; `Ok(true)` means it is a probe, and
    /// its outcome must be reported with `probe = true` (or the slot released
    /// with [`Breaker::release_probe`] if it never completes).
    pub fn admit(&mut self, config: &BreakerConfig, now: Instant) -> Result<bool, BreakerRefusal> {
        self.poll(now);
        match self.phase {
            BreakerPhase::Closed => Ok(false),
            BreakerPhase::Open => Err(BreakerRefusal::Open),
            BreakerPhase::HalfOpen if self.probes_in_flight < config.half_open_probes.max(1) => {
                self.probes_in_flight += 1;
                Ok(true)
            }
            BreakerPhase::HalfOpen => Err(BreakerRefusal::ProbesBusy),
        }
    }

    /// Frees a probe slot whose attempt ended without an outcome (cancelled).
    pub fn release_probe(&mut self) {
        self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
    }

    /// Records an attempt's outcome. Returns whether the phase changed.
    pub fn record(&mut self, config: &BreakerConfig, probe: bool, failed: bool, now: Instant) -> bool {
        match self.phase {
            BreakerPhase::Closed => {
                self.window.add(config.ratio_window, failed, now);
                if !failed {
                    self.consecutive_failures = 0;
                    return false;
                }
                self.consecutive_failures += 1;
                let by_streak =
                    config.consecutive_failures > 0 && self.consecutive_failures >= config.consecutive_failures;
                let (attempts, failures) = self.window.totals(config.ratio_window, now);
                let by_ratio = config.failure_ratio > 0.0
                    && attempts >= config.ratio_min_requests.max(1)
                    && f64::from(failures) >= config.failure_ratio * f64::from(attempts);
                if by_streak || by_ratio {
                    self.open(config, now);
                    return true;
                }
                false
            }
            // Only probes decide a half-open breaker; attempts sent before it
            // opened may still be finishing and say nothing about the present.
            BreakerPhase::HalfOpen if probe => {
                self.release_probe();
                if failed {
                    self.open(config, now);
                } else {
                    self.phase = BreakerPhase::Closed;
                    self.consecutive_failures = 0;
                    self.window = Window::new(now);
                }
                true
            }
            BreakerPhase::HalfOpen | BreakerPhase::Open => false,
        }
    }

    fn open(&mut self, config: &BreakerConfig, now: Instant) {
        self.phase = BreakerPhase::Open;
        self.open_until = Some(now + config.open_for);
        self.probes_in_flight = 0;
        self.consecutive_failures = 0;
        self.opened_total += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.0,
            ratio_window: Duration::from_secs(10),
            ratio_min_requests: 10,
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    #[test]
    fn breaker_opens_after_threshold_consecutive_failures() {
        let (c, t) = (config(), Instant::now());
        let mut b = Breaker::new(t);
        assert!(!b.record(&c, false, true, t));
        assert!(!b.record(&c, false, true, t));
        assert!(!b.record(&c, false, false, t), "a success resets the streak");
        assert!(!b.record(&c, false, true, t));
        assert!(!b.record(&c, false, true, t));
        assert!(b.record(&c, false, true, t));
        assert_eq!(b.phase(), BreakerPhase::Open);
        assert_eq!(b.admit(&c, t), Err(BreakerRefusal::Open));
        assert_eq!(b.opened_total(), 1);
    }

    #[test]
    fn breaker_opens_on_failure_ratio_over_the_window() {
        let c = BreakerConfig { consecutive_failures: 0, failure_ratio: 0.5, ..config() };
        let t = Instant::now();
        let mut b = Breaker::new(t);
        // Alternating: never two failures in a row, but half of them fail.
        for i in 0..9 {
            assert!(!b.record(&c, false, i % 2 == 1, t), "below the minimum volume at {i}");
        }
        assert!(b.record(&c, false, true, t), "ten attempts, five failed");
        assert_eq!(b.phase(), BreakerPhase::Open);
    }

    #[test]
    fn old_failures_fall_out_of_the_ratio_window() {
        let c = BreakerConfig { consecutive_failures: 0, failure_ratio: 0.5, ..config() };
        let t = Instant::now();
        let mut b = Breaker::new(t);
        for _ in 0..9 {
            b.record(&c, false, true, t);
        }
        // Eleven seconds later those nine are gone; nine successes and one failure stay closed.
        let later = t + Duration::from_secs(11);
        for _ in 0..9 {
            b.record(&c, false, false, later);
        }
        b.record(&c, false, true, later);
        assert_eq!(b.phase(), BreakerPhase::Closed);
    }

    #[test]
    fn half_open_admits_bounded_probes_and_closes_on_success() {
        let (c, t) = (config(), Instant::now());
        let mut b = Breaker::new(t);
        for _ in 0..3 {
            b.record(&c, false, true, t);
        }
        let later = t + Duration::from_secs(5);
        assert!(b.poll(later));
        assert_eq!(b.phase(), BreakerPhase::HalfOpen);
        assert_eq!(b.admit(&c, later), Ok(true));
        assert_eq!(b.admit(&c, later), Ok(true));
        assert_eq!(b.admit(&c, later), Err(BreakerRefusal::ProbesBusy));
        // A late non-probe failure from before the opening changes nothing.
        assert!(!b.record(&c, false, true, later));
        assert!(b.record(&c, true, false, later));
        assert_eq!(b.phase(), BreakerPhase::Closed);
        assert_eq!(b.admit(&c, later), Ok(false));
    }

    #[test]
    fn a_failed_probe_opens_the_breaker_again() {
        let (c, t) = (config(), Instant::now());
        let mut b = Breaker::new(t);
        for _ in 0..3 {
            b.record(&c, false, true, t);
        }
        let later = t + Duration::from_secs(6);
        assert_eq!(b.admit(&c, later), Ok(true));
        assert!(b.record(&c, true, true, later));
        assert_eq!(b.phase(), BreakerPhase::Open);
        assert_eq!(b.open_until(), Some(later + c.open_for));
        assert_eq!(b.opened_total(), 2);
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let (c, t) = (config(), Instant::now());
        let mut b = Breaker::new(t);
        for _ in 0..3 {
            b.record(&c, false, true, t);
        }
        let later = t + Duration::from_secs(5);
        assert_eq!(b.admit(&c, later), Ok(true));
        assert_eq!(b.admit(&c, later), Ok(true));
        b.release_probe();
        assert_eq!(b.admit(&c, later), Ok(true));
    }
}
