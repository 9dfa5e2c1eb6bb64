//! A budget of client time for re-probing backends that look bad.

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
/// let mut record = veer_sdk::AttemptRecord::default();
/// for _ in 0..20 {
///     record.record(2_000.0, true); // fails fast, every time
/// }
/// assert!(record.is_down());
/// // Asking "back yet?" of a down backend costs its quick answer only.
/// assert!((record.probe_cost_us(1e6) - 2_000.0).abs() < 1.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttemptRecord {
    /// What an attempt took, failures included (an EWMA, µs).
    time_us: f64,
    /// Recent attempts that failed (an EWMA of 0 or 1 per attempt).
    failing: f64,
    seen: bool,
}

impl AttemptRecord {
    /// Weight of one attempt in both averages: the last few attempts.
    const WEIGHT: f64 = 0.3;
    /// Failing at least this share of recent attempts is down.
    const DOWN: f64 = 0.5;
    /// Failing at least this share (and less than [`Self::DOWN`]) is failing
    /// now and then.
    const INTERMITTENT: f64 = 0.05;

    /// An attempt took `latency_us` and failed or not (`not-sent` attempts,
    /// which the backend never saw, are no record of it).
    pub fn record(&mut self, latency_us: f64, failed: bool) {
        let failed = f64::from(u8::from(failed));
        if self.seen {
            self.time_us += (latency_us - self.time_us) * Self::WEIGHT;
            self.failing += (failed - self.failing) * Self::WEIGHT;
        } else {
            *self = AttemptRecord { time_us: latency_us, failing: failed * Self::WEIGHT, seen: true };
        }
    }

    /// The share of recent attempts that failed.
    pub fn failing(&self) -> f64 {
        self.failing
    }

    /// Whether it fails most attempts.
    pub fn is_down(&self) -> bool {
        self.failing >= Self::DOWN
    }

    /// Whether it fails now and then (5–50% of recent attempts): one
    /// success of such a backend says little about the next attempt.
    pub fn is_intermittent(&self) -> bool {
        (Self::INTERMITTENT..Self::DOWN).contains(&self.failing)
    }

    /// What a probe is expected to cost its client, µs: an attempt's time,
    /// plus `failure_penalty_us` times its recent failure rate for a
    /// backend failing now and then. One that is down costs only its
    /// answer: the probe asks "back yet?", and its failure is expected.
    pub fn probe_cost_us(&self, failure_penalty_us: f64) -> f64 {
        let failures = if self.is_down() { 0.0 } else { self.failing * failure_penalty_us };
        self.time_us + failures
    }
}

#[cfg(test)]
mod tests {
    use super::{AttemptRecord, ProbeBudget};

    #[test]
    fn an_attempt_record_tells_down_from_failing_now_and_then() {
        let mut record = AttemptRecord::default();
        record.record(10_000.0, false);
        assert_eq!(record.probe_cost_us(1e6), 10_000.0);
        assert!(!record.is_intermittent() && !record.is_down());
        record.record(10_000.0, true);
        assert!(record.is_intermittent(), "{}", record.failing());
        assert!((record.probe_cost_us(1e6) - (10_000.0 + 0.3 * 1e6)).abs() < 1e-6);
        for _ in 0..3 {
            record.record(10_000.0, true);
        }
        assert!(record.is_down());
        assert_eq!(record.probe_cost_us(1e6), 10_000.0);
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
