//! The retry budget: retries may add at most a fixed share of load on top of the
//! original requests, plus a small floor, so a dying fleet is not stormed.

use std::time::Instant;

use parking_lot::Mutex;

/// When and how much to retry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts per request in total, first one included (1 disables retries).
    pub max_attempts: u32,
    /// Response statuses that are retried (for retryable requests).
    pub retry_on_status: Vec<u16>,
    /// Retries allowed as a fraction of recent requests (0.2: one retry per five requests).
    pub budget_ratio: f64,
    /// Retries per second always allowed, whatever the ratio says.
    pub budget_min_per_second: f64,
    /// Also retry non-idempotent methods (POST, PATCH) when their body is empty.
    pub retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            retry_on_status: vec![502, 503, 504],
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
            retry_non_idempotent: false,
        }
    }
}

/// Token buckets behind the retry budget: every request deposits `ratio` of a
/// token (the deposit account holds at most ten seconds' worth of the floor
/// rate or 100 tokens, whichever is more, so an idle period does not bank an
/// unbounded storm); the floor account refills at `min_per_second`. A retry
/// spends one token from either.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token per request (integers: 0.2 × 5 must be exactly 1).
    ratio_milli: u64,
    /// Thousandths of a token per second for the floor.
    min_per_second_milli: u64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    deposits_milli: u64,
    floor_milli: u64,
    refilled: Instant,
}

const TOKEN: u64 = 1000;

fn milli(value: f64) -> u64 {
    (value.max(0.0) * TOKEN as f64).round() as u64
}

impl RetryBudget {
    /// A budget for `policy`.
    pub fn new(policy: &RetryPolicy) -> Self {
        let min_per_second_milli = milli(policy.budget_min_per_second);
        RetryBudget {
            ratio_milli: milli(policy.budget_ratio),
            min_per_second_milli,
            state: Mutex::new(BudgetState {
                deposits_milli: 0,
                floor_milli: min_per_second_milli,
                refilled: Instant::now(),
            }),
        }
    }

    fn deposit_cap(&self) -> u64 {
        (self.min_per_second_milli * 10).max(100 * TOKEN)
    }

    /// Records an original request.
    pub fn deposit(&self) {
        let mut state = self.state.lock();
        state.deposits_milli = (state.deposits_milli + self.ratio_milli).min(self.deposit_cap());
    }

    /// Takes a token for one retry at `now`; `false` when the budget is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        let elapsed = now.saturating_duration_since(state.refilled);
        let refill = (elapsed.as_micros() as u64).saturating_mul(self.min_per_second_milli) / 1_000_000;
        // The refill clock moves only when something was credited, so frequent
        // calls do not round every refill down to nothing.
        if refill > 0 {
            state.refilled = now;
        }
        state.floor_milli = (state.floor_milli + refill).min(self.min_per_second_milli.max(TOKEN));
        if state.deposits_milli >= TOKEN {
            state.deposits_milli -= TOKEN;
            true
        } else if state.floor_milli >= TOKEN {
            state.floor_milli -= TOKEN;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(ratio: f64, floor: f64) -> RetryBudget {
        RetryBudget::new(&RetryPolicy { budget_ratio: ratio, budget_min_per_second: floor, ..RetryPolicy::default() })
    }

    #[test]
    fn retries_are_bounded_by_the_ratio_of_requests() {
        let b = budget(0.2, 0.0);
        let now = Instant::now();
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw(now)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn the_floor_allows_a_few_retries_per_second_without_traffic() {
        let b = budget(0.0, 5.0);
        let start = Instant::now();
        assert_eq!((0..100).filter(|_| b.try_withdraw(start)).count(), 5);
        assert!(!b.try_withdraw(start));
        assert!(b.try_withdraw(start + Duration::from_millis(250)), "1.25 tokens refilled");
        assert!(!b.try_withdraw(start + Duration::from_millis(250)));
    }

    #[test]
    fn deposits_are_capped() {
        let b = budget(1.0, 0.0);
        for _ in 0..10_000 {
            b.deposit();
        }
        assert_eq!((0..10_000).filter(|_| b.try_withdraw(Instant::now())).count(), 100);
    }
}
