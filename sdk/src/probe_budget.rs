//! A budget of client time for re-probing backends that look bad, and what
//! a probe of one costs.

use crate::FailureRecord;

/// How much client time a policy may spend re-probing backends it believes
/// are worse than others (to find out whether they changed): a share of
/// the time every attempt took, earned as credit and spent per probe.
///
/// A budget shared by all backends, rather than an interval per backend,
/// makes the price of exploring the fleet's, not each backend's: one slow
/// backend among fast ones is probed often, and many slow ones share that
/// rate. Credit piles up to at most [`ProbeBudget::MAX_CREDIT_US`], so a
/// quiet spell does not pay for a burst of probes later.
///
/// ```
/// let mut budget = veer_sdk::ProbeBudget::new(0.02);
/// for _ in 0..100 {
///     budget.earn(10_000.0); // 100 attempts of 10 ms: 1 s of client time
/// }
/// assert!(budget.try_spend(20_000.0)); // 2% of it: one 20 ms probe
/// assert!(!budget.try_spend(1_000.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeBudget {
    share: f64,
    credit_us: f64,
}

impl ProbeBudget {
    /// The most credit that piles up, µs of client time.
    pub const MAX_CREDIT_US: f64 = 5e6;

    /// A budget of `share` (0..=1) of client time, with no credit yet.
    pub fn new(share: f64) -> ProbeBudget {
        ProbeBudget { share, credit_us: 0.0 }
    }

    /// An attempt took `latency_us` of a client's time: its share accrues.
    pub fn earn(&mut self, latency_us: f64) {
        self.credit_us = (self.credit_us + self.share * latency_us.max(0.0)).min(Self::MAX_CREDIT_US);
    }

    /// Whether a probe expected to take `cost_us` is affordable now.
    pub fn affords(&self, cost_us: f64) -> bool {
        cost_us <= self.credit_us
    }

    /// Spends `cost_us` on a probe if affordable; whether it was.
    pub fn try_spend(&mut self, cost_us: f64) -> bool {
        let affordable = self.affords(cost_us);
        if affordable {
            self.credit_us -= cost_us.max(0.0);
        }
        affordable
    }

    /// The credit left, µs.
    pub fn credit_us(&self) -> f64 {
        self.credit_us
    }
}

/// What a backend's recent attempts took and how often they failed: what
/// re-probing it would cost a client, and whether it is down or failing
/// now and then.
///
/// ```
/// let mut record = veer_sdk::AttemptRecord::new(10e6);
/// for _ in 0..3 {
///     record.record(2_000.0, true, 0); // fails fast, every time
/// }
/// assert!(record.is_down(0));
/// // Asking "back yet?" of a down backend costs its quick answer only.
/// assert!((record.probe_cost_us(1e6, 0) - 2_000.0).abs() < 1.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptRecord {
    /// What an attempt took, failures included (an EWMA, µs).
    time_us: f64,
    /// Which attempts failed, counted so that a change shows.
    failures: FailureRecord,
    seen: bool,
}

impl AttemptRecord {
    /// Weight of one attempt in the time an attempt takes.
    const TIME_WEIGHT: f64 = 0.3;
    /// Attempts the failure record keeps at most.
    const MEMORY: f64 = 1.0 / 0.03;
    /// Failing at least this share (and less than [`FailureRecord::DOWN`]) is failing
    /// now and then.
    const INTERMITTENT: f64 = 0.05;

    /// An empty record whose failure counts fade with time constant `decay_us`.
    pub fn new(decay_us: f64) -> AttemptRecord {
        AttemptRecord { time_us: 0.0, failures: FailureRecord::new(decay_us, Self::MEMORY), seen: false }
    }

    /// An attempt took `latency_us` and failed or not, at `now` (`not-sent`
    /// attempts, which the backend never saw, are no record of it).
    pub fn record(&mut self, latency_us: f64, failed: bool, now: u64) {
        self.time_us =
            if self.seen { self.time_us + (latency_us - self.time_us) * Self::TIME_WEIGHT } else { latency_us };
        self.seen = true;
        self.failures.count(failed, now, latency_us as u64);
    }

    /// The failure rate to expect of the next attempt
    /// ([`FailureRecord::expected_rate`]).
    pub fn failing(&self, now: u64) -> f64 {
        self.failures.expected_rate(now)
    }

    /// Whether it fails most attempts.
    pub fn is_down(&self, now: u64) -> bool {
        self.failing(now) >= FailureRecord::DOWN
    }

    /// When it is due a re-probe after its last attempt
    /// ([`FailureRecord::reprobe_after_us`]).
    pub fn reprobe_after_us(&self, reprobe_us: f64, now: u64) -> f64 {
        self.failures.reprobe_after_us(reprobe_us, now)
    }

    /// Whether it fails now and then (5–50% of attempts): one success of
    /// such a backend says little about the next attempt. Counted over ~30
    /// attempts, with successes in a row weighed as evidence of a change:
    /// an average over the last few attempts forgot a backend hanging one
    /// request in five after three successes, and a re-probe's success then
    /// brought it back to hang again.
    pub fn is_intermittent(&self, now: u64) -> bool {
        (Self::INTERMITTENT..FailureRecord::DOWN).contains(&self.failing(now))
    }

    /// What a probe is expected to cost its client, µs: an attempt's time,
    /// plus `failure_penalty_us` times its expected failure rate for a
    /// backend failing now and then. One that is down costs only its
    /// answer: the probe asks "back yet?", and its failure is expected.
    pub fn probe_cost_us(&self, failure_penalty_us: f64, now: u64) -> f64 {
        let failing = self.failing(now);
        let failures = if failing >= FailureRecord::DOWN { 0.0 } else { failing * failure_penalty_us };
        self.time_us + failures
    }
}

#[cfg(test)]
mod tests {
    use super::{AttemptRecord, ProbeBudget};

    #[test]
    fn an_attempt_record_tells_down_from_failing_now_and_then() {
        let mut record = AttemptRecord::new(10e6);
        for _ in 0..20 {
            record.record(10_000.0, false, 0);
        }
        // The prior (2%) is all that is left of failure: a few ms of penalty.
        assert!(record.probe_cost_us(1e6, 0) < 10_000.0 + 0.02 * 1e6, "{}", record.probe_cost_us(1e6, 0));
        assert!(!record.is_intermittent(0) && !record.is_down(0));
        // One in five fails: failing now and then, and a few successes in a
        // row do not clear it.
        for i in 0..30 {
            record.record(10_000.0, i % 5 == 0, 0);
        }
        assert!(record.is_intermittent(0), "{}", record.failing(0));
        assert!(record.probe_cost_us(1e6, 0) > 100_000.0, "a probe risks a failure");
        for _ in 0..3 {
            record.record(10_000.0, true, 0);
        }
        assert!(record.is_down(0), "{}", record.failing(0));
        assert!(record.probe_cost_us(1e6, 0) < 20_000.0);
    }

    #[test]
    fn credit_is_capped_and_spent_only_when_affordable() {
        let mut budget = ProbeBudget::new(0.5);
        budget.earn(1e9);
        assert_eq!(budget.credit_us(), ProbeBudget::MAX_CREDIT_US);
        assert!(!budget.try_spend(6e6));
        assert!(budget.try_spend(4e6));
        assert_eq!(budget.credit_us(), 1e6);
        let mut none = ProbeBudget::new(0.0);
        none.earn(1e6);
        assert!(!none.affords(1.0) && none.affords(0.0));
    }
}
