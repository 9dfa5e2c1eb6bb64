//! Least response time: the eligible backend whose responses have been
//! fastest on average, with its load (the host's in-flight count) weighed in.
//!
//! # Algorithm
//!
//! * **Estimate.** Per backend, an exponentially weighted average of its
//!   response times, `ewma ← ewma + alpha × (sample − ewma)`. A failed attempt
//!   (status ≥ 500 or no response) is a sample of
//!   `max(latency, failure_penalty_ms)`, so a backend that fails fast never
//!   looks fast. `not-sent` outcomes are no sample.
//! * **Order.** The measured, eligible backends are kept ordered by estimate
//!   (a `BTreeSet`), and the ones not measured yet in a set of their own, so
//!   a pick looks at the front of the order instead of scanning the pool:
//!   O(log n) per pick and per outcome, O(n) only on membership changes.
//! * **Pick.**
//!   1. A backend never measured is tried first — one at a time (only while
//!      nothing is in flight to it), so a new backend is measured at once
//!      without being flooded before its first answer.
//!   2. Otherwise, the first `candidates` backends of the order (skipping
//!      `ctx.exclude`) are compared by `ewma × (in_flight + 1) / weight`,
//!      `in_flight` being the host's count across every worker: the fastest
//!      backend takes the traffic until its queue makes a slightly slower one
//!      the better wait, and weights scale capacity as in `p2c-ewma`.
//!   3. With probability `explore`, a uniformly drawn eligible backend
//!      instead, so that an estimate that went bad (an outage) is measured
//!      again and a recovered backend wins its traffic back.
//!
//! # Parameters
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `alpha` | `0.2` | weight of the newest sample in the average (0.001..=1) |
//! | `failure_penalty_ms` | `1000` | response time a failed attempt counts as, ms (0..=600000) |
//! | `candidates` | `2` | fastest backends weighed against their load (1..=16) |
//! | `explore` | `0.02` | share of picks drawn uniformly to re-measure (0..=0.5) |

use std::collections::{BTreeSet, HashMap};

use veer_sdk::{BackendEvent, BackendId, LatencySample, Outcome, Params, PickContext, Policy, Pool, host};

/// The least-response-time policy.
#[derive(Debug)]
pub struct LeastResponseTime {
    alpha: f64,
    failure_penalty_us: f64,
    candidates: usize,
    explore: f64,
    /// Estimate (µs) of every backend measured so far.
    ewma_us: HashMap<BackendId, f64>,
    /// The measured, eligible backends by estimate: `(estimate bits, id)`
    /// (non-negative `f64`s order like their bits).
    order: BTreeSet<(u64, BackendId)>,
    /// The eligible backends not measured yet (new ones, briefly).
    unmeasured: BTreeSet<BackendId>,
}

impl LeastResponseTime {
    /// The response time estimate of `id` in microseconds, once measured.
    pub fn estimate_us(&self, id: BackendId) -> Option<f64> {
        self.ewma_us.get(&id).copied()
    }

    /// Re-files `id` in the order: under its estimate if it is eligible and
    /// measured, nowhere otherwise.
    fn refile(&mut self, pool: &Pool, id: BackendId, old: Option<f64>) {
        if let Some(old) = old {
            self.order.remove(&(old.to_bits(), id));
        }
        self.unmeasured.remove(&id);
        if let Some(now) = self.ewma_us.get(&id)
            && pool.is_eligible(id)
        {
            self.order.insert((now.to_bits(), id));
        }
    }

    fn cost(pool: &Pool, id: BackendId, ewma_us: f64) -> f64 {
        let weight = pool.get(id).map_or(1.0, |b| f64::from(b.weight.max(1)));
        ewma_us * f64::from(host::in_flight(id).saturating_add(1)) / weight
    }
}

impl Policy for LeastResponseTime {
    const NAME: &'static str = "least-response-time";
    const WANTS_OUTCOMES: bool = true;

    fn configure(params: &Params) -> Result<Self, String> {
        let reader = params.reader();
        let alpha = reader.number("alpha", 0.2, 0.001..=1.0);
        let failure_penalty_ms = reader.number("failure_penalty_ms", 1_000.0, 0.0..=600_000.0);
        let candidates = reader.number("candidates", 2usize, 1..=16);
        let explore = reader.number("explore", 0.02, 0.0..=0.5);
        reader.finish()?;
        Ok(LeastResponseTime {
            alpha,
            failure_penalty_us: failure_penalty_ms * 1e3,
            candidates,
            explore,
            ewma_us: HashMap::new(),
            order: BTreeSet::new(),
            unmeasured: BTreeSet::new(),
        })
    }

    fn backends_changed(&mut self, pool: &Pool, _events: &[BackendEvent]) {
        // Rare next to picks: rebuild what depends on membership.
        self.ewma_us.retain(|id, _| pool.get(*id).is_some());
        self.order = self
            .ewma_us
            .iter()
            .filter(|(id, _)| pool.is_eligible(**id))
            .map(|(id, ewma)| (ewma.to_bits(), *id))
            .collect();
        self.unmeasured = pool.eligible().iter().copied().filter(|id| !self.ewma_us.contains_key(id)).collect();
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        if self.explore > 0.0 && host::random_unit() < self.explore {
            return pool.random_eligible(ctx.exclude);
        }
        let unmeasured =
            self.unmeasured.iter().copied().find(|id| Some(*id) != ctx.exclude && host::in_flight(*id) == 0);
        if unmeasured.is_some() {
            return unmeasured;
        }
        let best = self
            .order
            .iter()
            .filter(|(_, id)| Some(*id) != ctx.exclude)
            .take(self.candidates)
            .map(|(bits, id)| (Self::cost(pool, *id, f64::from_bits(*bits)), *id))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, id)| id);
        // Nothing measured is free (every new backend busy with its first
        // attempt): any eligible one.
        best.or_else(|| pool.random_eligible(ctx.exclude))
    }

    fn observe(&mut self, pool: &Pool, outcome: &Outcome) {
        let Some(sample) = outcome.latency_sample(self.failure_penalty_us).map(LatencySample::us) else { return };
        if pool.get(outcome.backend).is_none() {
            return;
        }
        let old = self.ewma_us.get(&outcome.backend).copied();
        let new = old.map_or(sample, |ewma| ewma + self.alpha * (sample - ewma));
        self.ewma_us.insert(outcome.backend, new);
        self.refile(pool, outcome.backend, old);
    }
}

veer_sdk::export_policy!(LeastResponseTime);

#[cfg(test)]
mod tests {
    use super::*;
    use veer_sdk::testing::{Harness, Load, Reply};

    const MS: u64 = 1_000;

    #[test]
    fn the_fastest_backend_gets_most_of_the_traffic() {
        let mut h = Harness::<LeastResponseTime>::new(&[]).unwrap();
        let fast = h.add_backend("fast", 1);
        let slow = h.add_backend("slow", 1);
        let report = h.run(Load { requests: 10_000, concurrency: 4 }, |id, _, _| {
            Reply::ok(if id == fast { 5 * MS } else { 50 * MS })
        });
        assert!(report.share(fast) > 0.9, "fast {:.3}", report.share(fast));
        assert!(report.share(slow) > 0.0, "the slow one is still measured now and then");
    }

    #[test]
    fn a_backend_that_fails_fast_never_looks_fast() {
        let mut h = Harness::<LeastResponseTime>::new(&[]).unwrap();
        let trap = h.add_backend("trap", 1);
        h.add_backends(2);
        let report = h.run(Load { requests: 5_000, concurrency: 4 }, |id, _, _| {
            if id == trap { Reply::fail(MS) } else { Reply::ok(10 * MS) }
        });
        assert!(report.share(trap) < 0.03, "trap {:.3}", report.share(trap));
        assert!(report.error_rate() < 0.03, "{:.3}", report.error_rate());
    }

    #[test]
    fn load_spreads_over_equal_backends_by_their_queues() {
        let mut h = Harness::<LeastResponseTime>::new(&[("explore", "0")]).unwrap();
        let ids = h.add_backends(2);
        // Capacity one: latency grows with the backend's own queue.
        let report =
            h.run(Load { requests: 4_000, concurrency: 8 }, |_, in_flight, _| Reply::ok(u64::from(in_flight) * 5 * MS));
        for id in ids {
            assert!((report.share(id) - 0.5).abs() < 0.1, "{id}: {:.3}", report.share(id));
        }
    }

    #[test]
    fn a_recovered_backend_wins_its_traffic_back() {
        let mut h = Harness::<LeastResponseTime>::new(&[]).unwrap();
        let flaky = h.add_backend("flaky", 1);
        let steady = h.add_backend("steady", 1);
        h.run(Load { requests: 2_000, concurrency: 4 }, |id, _, _| {
            if id == flaky { Reply::fail(30 * MS) } else { Reply::ok(20 * MS) }
        });
        let report = h.run(Load { requests: 10_000, concurrency: 4 }, |id, _, _| {
            Reply::ok(if id == flaky { 2 * MS } else { 20 * MS })
        });
        assert!(report.share(flaky) > 0.5, "flaky {:.3}, steady {:.3}", report.share(flaky), report.share(steady));
    }

    #[test]
    fn a_new_backend_is_measured_at_once_and_gets_its_share() {
        let mut h = Harness::<LeastResponseTime>::new(&[]).unwrap();
        h.add_backends(2);
        h.run(Load { requests: 1_000, concurrency: 4 }, |_, in_flight, _| Reply::ok(u64::from(in_flight) * 5 * MS));
        let new = h.add_backend("new", 1);
        let report =
            h.run(Load { requests: 3_000, concurrency: 6 }, |_, in_flight, _| Reply::ok(u64::from(in_flight) * 5 * MS));
        assert!(h.policy().estimate_us(new).is_some(), "measured");
        assert!(report.share(new) > 0.2, "new {:.3}", report.share(new));
    }

    #[test]
    fn never_picks_ineligible_or_excluded_backends_and_forgets_removed_ones() {
        let mut h = Harness::<LeastResponseTime>::new(&[]).unwrap();
        assert_eq!(h.pick(), None);
        let ids = h.add_backends(3);
        h.run(Load { requests: 300, concurrency: 2 }, |_, _, _| Reply::ok(MS));
        h.set_eligible(ids[0], false);
        assert!(!h.picks(200).contains_key(&ids[0]));
        for _ in 0..50 {
            assert_ne!(h.pick_excluding(ids[1]), Some(ids[1]));
        }
        h.remove_backend(ids[2]);
        assert_eq!(h.policy().estimate_us(ids[2]), None);
        h.set_eligible(ids[1], false);
        assert_eq!(h.pick(), None, "nothing eligible");
    }

    #[test]
    fn unknown_or_out_of_range_parameters_are_refused() {
        assert!(Harness::<LeastResponseTime>::new(&[("alpah", "0.3")]).unwrap_err().contains("alpah"));
        assert!(Harness::<LeastResponseTime>::new(&[("candidates", "0")]).unwrap_err().contains("candidates"));
        assert!(Harness::<LeastResponseTime>::new(&[("alpha", "0.5"), ("explore", "0.1")]).is_ok());
    }
}
