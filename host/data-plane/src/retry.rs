//! The retry budget: retries may add at most a fixed share of load on top of the
//! original requests, plus a small floor, so a dying fleet is not stormed.

use std::time::{Duration, Instant};

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
    /// Also retry non-idempotent methods (POST, PATCH).
    pub retry_non_idempotent: bool,
    /// Request bodies up to this size (bytes) are kept in memory so that a
    /// retry can send them again; a larger body is streamed and not retried.
    /// 0 retries only requests without a body.
    pub replay_buffer_bytes: usize,
    /// Wait before the first retry; each further retry waits up to twice as
    /// long (jittered: between half and all of it), never past the request's
    /// deadline.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            retry_on_status: vec![502, 503, 504],
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
            retry_non_idempotent: false,
            replay_buffer_bytes: 64 * 1024,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// What is wrong with the policy: `(key, message)`, each key relative to
    /// the policy (`max_attempts`).
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if self.max_attempts == 0 {
            problems.push(("max_attempts", "must be at least 1 (1 turns retries off)"));
        }
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            problems.push(("budget_ratio", "must be between 0.0 and 1.0"));
        }
        if self.backoff_max < self.backoff_base {
            problems.push(("backoff_max", "must be at least backoff_base"));
        }
        problems
    }

    /// Whether the policy allows another attempt after attempt `attempt`
    /// (0 for the first) of `max_attempts`, which answered `status` (`None`:
    /// failed without a response). The budget and the deadline decide next.
    pub fn allows_another(&self, status: Option<http::StatusCode>, attempt: u32, max_attempts: u32) -> bool {
        let retryable = status.is_none_or(|status| self.retry_on_status.contains(&status.as_u16()));
        retryable && attempt + 1 < max_attempts
    }

    /// The wait before retry number `retry` (1 for the first), given a
    /// uniformly random `random`: exponential from `backoff_base`, capped at
    /// `backoff_max`, drawn from its upper half so retries of many requests
    /// spread out without any of them retrying at once.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let doubling = 1u32 << retry.saturating_sub(1).min(16);
        let ceiling = self.backoff_base.saturating_mul(doubling).min(self.backoff_max);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(if spread == 0 { 0 } else { random % (spread + 1) })
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
                refilled: crate::clock::now(),
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

    #[test]
    fn another_attempt_follows_failures_and_retryable_statuses_while_attempts_remain() {
        let policy = RetryPolicy::default();
        let status = |code| Some(http::StatusCode::from_u16(code).unwrap());
        assert!(policy.allows_another(None, 0, 3), "a failure");
        assert!(policy.allows_another(status(503), 1, 3), "a retryable status");
        assert!(!policy.allows_another(status(500), 0, 3), "500 is not in retry_on_status");
        assert!(!policy.allows_another(status(200), 0, 3));
        assert!(!policy.allows_another(None, 2, 3), "the last attempt was made");
        assert!(!policy.allows_another(None, 0, 1), "retries off");
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        for random in [0, 1, u64::MAX / 3, u64::MAX] {
            let first = policy.backoff(1, random);
            assert!(first >= Duration::from_micros(12_500) && first <= Duration::from_millis(25), "{first:?}");
            let second = policy.backoff(2, random);
            assert!(second >= Duration::from_millis(25) && second <= Duration::from_millis(50), "{second:?}");
            let tenth = policy.backoff(10, random);
            assert!(tenth >= Duration::from_millis(125) && tenth <= Duration::from_millis(250), "{tenth:?}");
        }
        assert_ne!(policy.backoff(1, 0), policy.backoff(1, 12_345_678), "jittered");
        assert_eq!(RetryPolicy { backoff_base: Duration::ZERO, ..policy }.backoff(3, 7), Duration::ZERO);
    }

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
