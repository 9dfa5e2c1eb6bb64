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

#[cfg(test)]
mod tests {
    use super::ProbeBudget;

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
