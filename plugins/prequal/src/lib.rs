//! A picker after Prequal (Wydrowski et al., "Load is not what you should
//! balance: Introducing Prequal", NSDI 2024), adapted to what a proxy knows
//! without probing its backends.
//!
//! Prequal chooses by requests in flight (RIF) and latency together: of a
//! handful of candidates, the *hot* ones are avoided, and among the *cold*
//! ones the lowest estimated latency wins; when all are hot, the lowest RIF
//! wins (the hot-cold lexicographic rule). Prequal learns both from probes
//! its clients send to servers. Here the host already knows each backend's
//! RIF (`host.in-flight`: every worker's attempts) and the plugin sees every
//! attempt's latency, so nothing is probed out of band:
//!
//! * **Candidates.** `probes` distinct eligible backends drawn uniformly
//!   (O(1) each), plus the winners of the last `memory` picks while they stay
//!   eligible (a good backend found once stays in view, as Prequal's probe
//!   pool keeps recent probes), never `ctx.exclude`.
//! * **Latency by load.** Per backend, a *speed* (its latency with one
//!   request in flight) times a *shape*: the latency per RIF level (1, 2, …,
//!   8, then 9–12, 13–16, 17–24, 25–32, 33+) relative to the speed, each
//!   sample filed under the RIF its attempt was *sent* at (a queue per
//!   backend; answers mostly come back in order), as Prequal's servers
//!   report latency by RIF. A backend with capacity for ten parallel
//!   requests has a flat shape up to ten; a single-threaded one a line. The
//!   shape is what capacity does, the speed what the hardware and the
//!   trouble of the moment do: a sample at any load moves the speed (by
//!   `alpha`, through the shape at its level) and its level's shape (by
//!   `alpha`, against the speed), so a backend that got slower or faster at
//!   every load is seen so at every load at once, while what was learned of
//!   its capacity stays. (Per-level latencies alone, as before, left the
//!   levels a re-found backend had not been sampled at yet with its old
//!   latency: a 200 ms backend that became a 2 ms one, with capacity 4,
//!   took one request at a time for the rest of the run, 59% of the
//!   reference in `late-bloomer`.) A level not measured yet has the nearest
//!   lower level's shape (optimistic: one request there measures it), a
//!   sample faster than the speed is learned as a shape of 1 (noise, or the
//!   speed still moving: learned as below 1 it took many samples to climb
//!   back once the backend queued; `high-jitter` 97% of the reference, now
//!   99%), and a backend never measured has the pool's typical latency. The
//!   shape is the SDK's [`veer_sdk::LoadShape`].
//!   After a silence the whole curve is in doubt: a sample first moves the
//!   speed geometrically by `1 − exp(−silence × 10 / decay_ms)` (a re-probe
//!   after seconds that finds a backend 100× faster is taken as ~100×).
//!   The speed is at least what the oldest attempt still unanswered there
//!   shows: its wait so far divided by the shape at the load it was sent at
//!   (`LoadShape::speed_at_least_us`), so a backend that hangs is seen slow
//!   while its clients wait, not when their timeouts fire (`black-hole`
//!   93.7% → 97.2%, `rotating-best` 94.7% → 96.5%).
//!   Unmeasured, an estimate fades towards zero with time constant
//!   `decay_ms` (optimism under uncertainty).
//! * **Failures.** Per backend, failed and total attempts (the SDK's
//!   [`veer_sdk::FailureRecord`]), counted with a
//!   weight that fades over `decay_ms` and capped at a memory of
//!   1 / (0.3 × `alpha`) attempts, with a 2% prior worth a quarter of an
//!   attempt: three failures of three say ~90%, not the 9% an average
//!   starting from zero would, so a dead backend is told from one that fails
//!   now and then. A failure's time `f` (a hang costs the whole timeout) is
//!   an average; a failed attempt's latency does not enter the curve.
//!   Successes in a row since the last failure are weighed as evidence of a
//!   change: without one they have likelihood `(1 − p)^streak` (`p` the
//!   rate before them), with one about 1, at prior odds of 0.3; the
//!   expected rate mixes the rate before with the streak's own. Two successes
//!   after three failures say "recovered" almost surely; five after a rate
//!   of 20% do not. A run of like outcomes that nothing-changed makes
//!   unlikely enough (below 5%: two failures in a row of a backend that
//!   never fails, two successes of one that was down) ends the record
//!   before it, so a backend that flaps between healthy and down every
//!   second is seen down, then back, each time (a memory of ~30 attempts
//!   kept it "failing now and then": 88% of the reference in `flapping`,
//!   now 96%). The cost of a candidate is the expected time per
//!   *successful* request, the scenario oracle's formula, `((1 − p) ×
//!   latency + p × (f + failure_penalty)) / (1 − p)`: a backend that fails
//!   fast never looks fast. The latency there is the marginal one, what the
//!   request adds to the time all requests at the backend wait together
//!   (`speed × LoadShape::marginal_at(rif)`), not its own wait: among cold
//!   candidates the own wait filled a 4 ms backend with four slots to six
//!   (6 ms each) while 10 ms backends idled (against the oracle that
//!   reckons marginally, `flapping` 92.5% → 94.6%, `recovery` 94.2% →
//!   96.5%).
//! * **Hot and cold.** Prequal calls a server hot when its RIF is above a
//!   quantile (0.84) of the fleet's RIFs: for servers of equal capacity the
//!   busiest are the ones about to queue. Here a candidate is hot when it
//!   *is* queueing at its next RIF: its shape there is above `hot_slowdown`
//!   (slower than with one in flight by that factor). The two agree on equal
//!   backends; on unequal ones the fleet quantile pushes load off the one
//!   fast backend that could take it all (measured in virtual time with the
//!   quantile rule: 30% of the oracle's goodput in `sloth-invasion`, 26% in
//!   `safe-haven`), while the queueing rule fills each backend to its
//!   capacity and no further, whatever its weight says. An unproven backend
//!   (fewer than 32 outcomes) is also hot beyond `1 + outcomes / 2` in
//!   flight: a slow start, so a fast newcomer that hangs now and then does
//!   not catch every client before its first hang times out.
//! * **Re-probing.** Prequal keeps probing every server; a proxy learns only
//!   from traffic. So a drawn candidate with nothing in flight that has not
//!   answered for `reprobe_ms` (or never) takes the request, if it is worth
//!   it and the budget pays:
//!   - *worth it*: a backend that fails is probed only while three more
//!     successes could bring it back (its failures alone then costing less
//!     than a typical request): one that was down, yes; one that fails one
//!     request in five, no (its probes would only hang clients);
//!   - *the budget*: `probe_budget` of all client time spent on attempts
//!     accrues as credit, and a probe spends what it is expected to cost
//!     (its latency if it answers, a failure's time and penalty if not). So
//!     one slow backend among fast ones is probed every `reprobe_ms`, four
//!     are probed in turn at a quarter of that rate each, and a quiet spell
//!     saves at most 5 s of credit. (A fixed stretch of the interval by the
//!     backend's slowness instead, up to 16×, kept a 200 ms backend that
//!     became the fastest unseen for 32 s.)
//!   - A backend answering again after being down is due its next probe at
//!     a fifth of the interval per success in a row, so it is confirmed
//!     within a few requests.
//!
//!   Without re-probing a backend whose every attempt failed has no curve
//!   and never looks better than typical (measured: 83% of the oracle's
//!   goodput in `recovery`).
//!
//! Weights are not used: the latency-by-load curve measures capacity, and a
//! wrong weight cannot mislead it. Per pick the cost is O(probes + memory)
//! imports and arithmetic, independent of the pool's size.
//!
//! # Parameters
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `probes` | `3` | backends drawn uniformly per pick (1..=16) |
//! | `memory` | `8` | recent winners kept as candidates (0..=16) |
//! | `hot_slowdown` | `1.5` | a candidate is hot when its expected latency at its next RIF is this many times its unloaded latency (1..=100) |
//! | `alpha` | `0.1` | weight of the newest sample in the speed and in a level's shape (0.001..=1) |
//! | `failure_penalty_ms` | `250` | what a failure costs a client on top of its time, ms (0..=600000) |
//! | `decay_ms` | `5000` | time constant with which unmeasured estimates fade, ms (1..=3600000) |
//! | `reprobe_ms` | `1000` | an idle drawn backend unmeasured for this long takes the request, if worth it and within budget, ms (1..=3600000) |
//! | `probe_budget` | `0.02` | share of client time re-probes may take (0..=1) |
//! | `default_rtt_ms` | `30` | latency assumed before anything was measured, ms (0.001..=60000) |

use std::collections::HashMap;

use veer_sdk::{
    BackendEvent, BackendId, FailureRecord, LatencySample, LoadShape, Outcome, Params, PickContext, Policy, Pool,
    ProbeBudget, host,
};

/// Weight of one successful sample in the pool-wide typical latency.
const TYPICAL_ALPHA: f64 = 0.05;
/// How much faster than the estimates fade a silence makes the next sample count:
/// after `decay_ms / SILENCE_WEIGHT` without a sample, a new one weighs ~63%.
const SILENCE_WEIGHT: f64 = 10.0;
/// Outcomes after which a backend's load is no longer slow-started.
const PROVEN: u32 = 32;
/// Successes in a row a re-probe may assume when asking whether probing a
/// failing backend could bring it back.
const PROBE_LOOKAHEAD: u32 = 3;
/// The failure rate's memory, in attempts, is this share of `alpha`'s.
const FAILURE_ALPHA_SHARE: f64 = 0.3;
/// Failure rates are capped below 1 so a cost stays finite (and comparable).
const MAX_FAILURE_RATE: f64 = 0.99;

#[derive(Debug, Clone)]
struct Stats {
    /// The backend's speed: its latency with one request in flight, µs,
    /// once sampled. A sample at any load tells it, through the shape.
    speed_us: Option<f64>,
    /// Latency by RIF relative to `speed_us`, and the RIF each of our
    /// attempts there was sent at. The shape is what the backend's capacity
    /// does to its latency, the speed what its hardware and its trouble of
    /// the moment do: a backend that got faster or slower at every load
    /// changes speed, which every level sees at once, while what was
    /// learned of its capacity stays.
    shape: LoadShape,
    /// Failed and all attempts, counted so that a change shows, with a
    /// longer memory than the latency's: failures are rarer than latency
    /// samples and matter longer.
    failures: FailureRecord,
    /// EWMA of failed attempts' time (a hang costs the whole timeout), µs.
    failure_latency_us: f64,
    /// Outcomes heard, up to [`PROVEN`].
    samples: u32,
    /// When the last sample arrived, µs.
    stamp_us: u64,
}

/// The Prequal-style policy.
#[derive(Debug)]
pub struct Prequal {
    probes: usize,
    memory: usize,
    hot_slowdown: f64,
    alpha: f64,
    failure_penalty_us: f64,
    decay_us: f64,
    reprobe_us: f64,
    /// Client time re-probes may take: each spends what it is expected to.
    probe_budget: ProbeBudget,
    stats: HashMap<BackendId, Stats>,
    /// Pool-wide typical latency of successful attempts, µs.
    typical_us: f64,
    /// Winners of the last picks, newest last.
    winners: Vec<BackendId>,
    /// The candidates of the pick being made (kept for its allocation).
    candidates: Vec<Candidate>,
}

/// One candidate of a pick.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: BackendId,
    rif: u32,
    cost: f64,
    hot: bool,
    /// What re-probing it would cost, when it is due a probe and the
    /// budget has the credit.
    probe_cost_us: Option<f64>,
}

impl Stats {
    /// What is left, at `now`, of what was learned at the last outcome:
    /// `exp(−silence / decay_us)`.
    fn fade(&self, now: u64, decay_us: f64) -> f64 {
        (-(now.saturating_sub(self.stamp_us) as f64) / decay_us).exp()
    }

    /// Learns from a successful attempt sent at `rif` that took
    /// `sample_us`, after the backend went unmeasured long enough that its
    /// curve is `stale` (0..1).
    fn learn(&mut self, rif: u32, sample_us: f64, stale: f64, alpha: f64) {
        let implied = sample_us / self.shape.at(rif);
        let speed = match self.speed_us {
            // After a silence the whole curve is in doubt, not one level of
            // it: a backend re-probed after seconds that answers 100× faster
            // (or slower) changed at every load. So the speed first moves as
            // far as the silence makes it stale (geometrically: 100× is taken
            // as ~100×, not 3×), nothing for a backend in steady use and
            // nearly all after seconds unmeasured; then by `alpha`.
            Some(old) if old > 0.0 && implied > 0.0 => {
                let moved = old * (implied / old).powf(stale);
                moved + alpha * (implied - moved)
            }
            _ => implied,
        };
        if speed.is_nan() || speed <= 0.0 {
            return;
        }
        self.speed_us = Some(speed);
        self.shape.learn(rif, sample_us, speed, alpha);
    }
}

impl Prequal {
    /// What is known of a backend before its first outcome.
    fn fresh_stats(&self) -> Stats {
        let memory = 1.0 / (self.alpha * FAILURE_ALPHA_SHARE);
        Stats {
            speed_us: None,
            shape: LoadShape::default(),
            failures: FailureRecord::new(self.decay_us, memory),
            failure_latency_us: 0.0,
            samples: 0,
            stamp_us: 0,
        }
    }

    /// Sizes up sending one more request to `id`, which then has `rif` in
    /// flight: its cost (µs per successful request) and whether it is hot.
    fn assess(&self, id: BackendId, rif: u32, now: u64) -> (f64, bool) {
        let Some(stats) = self.stats.get(&id) else { return (self.typical_us, false) };
        let fade = stats.fade(now, self.decay_us);
        // Unmeasured for long, an estimate fades towards zero: optimism under
        // uncertainty, so a backend that was slow is tried again once it has
        // been silent for a few `decay_ms` (a 300 ms one among 5 ms ones after
        // ~4 τ, one request), and its answer then replaces the old estimate.
        let shape = stats.shape.at(rif);
        // An attempt unanswered for longer than the speed says is news
        // before its answer is (a hang shows while its client waits).
        let speed = (stats.speed_us.unwrap_or(self.typical_us) * fade).max(stats.shape.speed_at_least_us(now, rif - 1));
        let latency = speed * stats.shape.marginal_at(rif);
        let p = stats.failures.expected_rate(now).min(MAX_FAILURE_RATE);
        // Hot: queueing, that is slower at this load than unloaded by more
        // than `hot_slowdown`.
        // An unproven backend is also hot past 1 + samples / 2 in flight: a
        // slow start, so a fast newcomer that hangs every fifth request does
        // not catch every client before its first hang times out.
        let unproven = stats.samples < PROVEN && rif > 1 + stats.samples / 2;
        let hot = unproven || shape > self.hot_slowdown;
        // Expected time per successful request, as the scenario oracle reckons it.
        let time = (1.0 - p) * latency + p * stats.failure_latency_us;
        ((time + p * self.failure_penalty_us) / (1.0 - p), hot)
    }

    /// What a re-probe of a backend is expected to cost its client, µs: its
    /// latency if it answers, a failure's time and penalty if not.
    fn probe_cost_us(&self, stats: &Stats, now: u64) -> f64 {
        let latency = stats.speed_us.unwrap_or(self.typical_us);
        let p = stats.failures.expected_rate(now);
        (1.0 - p) * latency + p * (stats.failure_latency_us + self.failure_penalty_us)
    }

    /// Whether probing could bring a backend back into use: whether a few
    /// more successes ([`PROBE_LOOKAHEAD`]) would make its failures alone
    /// cost less than a typical request. A backend failing one request in
    /// five stays out after three successes (half of such backends manage
    /// that by luck), so probing it only costs its clients hangs; one that
    /// was down is back after one or two.
    fn probe_could_change_its_fate(&self, stats: &Stats, now: u64) -> bool {
        let p = stats.failures.rate_after(PROBE_LOOKAHEAD, now).min(MAX_FAILURE_RATE);
        p * (stats.failure_latency_us + self.failure_penalty_us) / (1.0 - p) < self.typical_us
    }

    fn candidate(&self, id: BackendId, now: u64) -> Candidate {
        let rif = host::in_flight(id).saturating_add(1);
        let (cost, hot) = self.assess(id, rif, now);
        // Nothing learned of it lately and nothing on the way there: a probe,
        // if the budget pays for it (a backend never heard from always is).
        let probe_cost_us = match self.stats.get(&id) {
            _ if rif != 1 => None,
            None => Some(0.0),
            Some(stats) if stats.samples == 0 => Some(0.0),
            Some(stats)
                if (now.saturating_sub(stats.stamp_us) as f64)
                    < stats.failures.reprobe_after_us(self.reprobe_us, now) =>
            {
                None
            }
            Some(stats) if !self.probe_could_change_its_fate(stats, now) => None,
            Some(stats) => Some(self.probe_cost_us(stats, now)).filter(|cost| self.probe_budget.affords(*cost)),
        };
        Candidate { id, rif, cost, hot, probe_cost_us }
    }

    /// Draws the candidates into `candidates` and applies the rules above.
    fn choose(
        &self,
        pool: &Pool,
        ctx: &PickContext,
        now: u64,
        candidates: &mut Vec<Candidate>,
    ) -> Option<(Candidate, bool)> {
        for _ in 0..self.probes.min(pool.candidates(ctx.exclude)) {
            // Distinct draws: a few retries are enough at these sizes.
            for _ in 0..4 {
                let id = pool.random_eligible(ctx.exclude)?;
                if candidates.iter().all(|c| c.id != id) {
                    candidates.push(self.candidate(id, now));
                    break;
                }
            }
        }
        for &id in self.winners.iter().rev() {
            if Some(id) != ctx.exclude && pool.is_eligible(id) && candidates.iter().all(|c| c.id != id) {
                candidates.push(self.candidate(id, now));
            }
        }
        // A drawn candidate due a probe takes this request: what a probe
        // would tell Prequal (it recovered, it got slower).
        if let Some(probe) = candidates.iter().take(self.probes).find(|c| c.probe_cost_us.is_some()) {
            return Some((*probe, true));
        }
        candidates
            .iter()
            .filter(|c| !c.hot)
            .min_by(|a, b| a.cost.total_cmp(&b.cost))
            .or_else(|| candidates.iter().min_by(|a, b| a.rif.cmp(&b.rif).then(a.cost.total_cmp(&b.cost))))
            .map(|c| (*c, false))
    }

    /// The latency estimate of `id` at `rif` requests in flight, µs, if
    /// the backend was sampled and its curve at that load (`rif` 1 always is).
    pub fn latency_at_us(&self, id: BackendId, rif: u32) -> Option<f64> {
        let stats = self.stats.get(&id)?;
        Some(stats.speed_us? * stats.shape.measured(rif)?)
    }
}

impl Policy for Prequal {
    const NAME: &'static str = "prequal";
    const WANTS_OUTCOMES: bool = true;

    fn configure(params: &Params) -> Result<Self, String> {
        let reader = params.reader();
        let probes = reader.number("probes", 3usize, 1..=16);
        let memory = reader.number("memory", 8usize, 0..=16);
        let hot_slowdown = reader.number("hot_slowdown", 1.5, 1.0..=100.0);
        let alpha = reader.number("alpha", 0.1, 0.001..=1.0);
        let failure_penalty_ms = reader.number("failure_penalty_ms", 250.0, 0.0..=600_000.0);
        let decay_ms = reader.number("decay_ms", 5_000.0, 1.0..=3_600_000.0);
        let default_rtt_ms = reader.number("default_rtt_ms", 30.0, 0.001..=60_000.0);
        let reprobe_ms = reader.number("reprobe_ms", 1_000.0, 1.0..=3_600_000.0);
        let probe_budget = reader.number("probe_budget", 0.02, 0.0..=1.0);
        reader.finish()?;
        Ok(Prequal {
            probes,
            memory,
            hot_slowdown,
            alpha,
            failure_penalty_us: failure_penalty_ms * 1e3,
            decay_us: decay_ms * 1e3,
            reprobe_us: reprobe_ms * 1e3,
            probe_budget: ProbeBudget::new(probe_budget),
            stats: HashMap::new(),
            typical_us: default_rtt_ms * 1e3,
            winners: Vec::new(),
            candidates: Vec::new(),
        })
    }

    fn backends_changed(&mut self, pool: &Pool, _events: &[BackendEvent]) {
        self.stats.retain(|id, _| pool.get(*id).is_some());
        self.winners.retain(|id| pool.get(*id).is_some());
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        // One buffer for every pick: nothing is allocated on the request path.
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        let now = host::now_us();
        let chosen = self.choose(pool, ctx, now, &mut candidates);
        self.candidates = candidates;
        let (chosen, probe) = chosen?;
        if probe {
            self.probe_budget.try_spend(chosen.probe_cost_us.unwrap_or(0.0));
        }
        let fresh = self.fresh_stats();
        self.stats.entry(chosen.id).or_insert(fresh).shape.sent(chosen.rif, now);
        if self.memory > 0 {
            self.winners.retain(|id| *id != chosen.id);
            self.winners.push(chosen.id);
            if self.winners.len() > self.memory {
                self.winners.remove(0);
            }
        }
        Some(chosen.id)
    }

    fn observe(&mut self, pool: &Pool, outcome: &Outcome) {
        // Every outcome of a pick of ours ends that attempt, `not-sent` ones
        // too: its RIF leaves the queue, or later outcomes would be filed
        // under their neighbours' RIF.
        let now = host::now_us();
        let from_us = if outcome.picked {
            self.stats.get_mut(&outcome.backend).and_then(|s| s.shape.answered(now, outcome.latency_us))
        } else {
            None
        };
        let Some(sample) = outcome.latency_sample(self.failure_penalty_us) else { return };
        if pool.get(outcome.backend).is_none() {
            return;
        }
        // A failure counts in the failure rate (the cost adds its penalty),
        // not in the latency curve: a fast reset must not look fast.
        let failed = matches!(sample, LatencySample::Failure(_));
        let sample_us = outcome.latency_us as f64;
        // The host's own choices: it has left the count, so the others' RIF plus itself.
        let rif = from_us.unwrap_or_else(|| host::in_flight(outcome.backend).saturating_add(1));
        let alpha = self.alpha;
        if !failed {
            self.typical_us += TYPICAL_ALPHA * (sample_us - self.typical_us);
        }
        // Every attempt's time is client time; a share of it pays for re-probes.
        self.probe_budget.earn(sample_us);
        let decay_us = self.decay_us;
        let fresh = self.fresh_stats();
        let stats = self.stats.entry(outcome.backend).or_insert(fresh);
        if failed {
            stats.failure_latency_us += alpha * (sample_us - stats.failure_latency_us);
        } else {
            // A silence SILENCE_WEIGHT times shorter than `decay_ms` already
            // makes the curve ~63% stale.
            let stale = 1.0 - stats.fade(now, decay_us / SILENCE_WEIGHT);
            stats.learn(rif, sample_us, stale, alpha);
        }
        // Failures are rarer than latency samples and matter longer: a
        // longer memory than the latency's.
        stats.failures.count(failed, now, outcome.latency_us);
        stats.stamp_us = now;
        stats.samples = (stats.samples + 1).min(PROVEN);
    }
}

veer_sdk::export_policy!(Prequal);

#[cfg(test)]
mod tests {
    use super::*;
    use veer_sdk::testing::{Harness, Load, Reply};

    const MS: u64 = 1_000;

    #[test]
    fn the_fastest_backend_gets_most_of_the_traffic() {
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let fast = h.add_backend("fast", 1);
        h.add_backends(3);
        let report = h.run(Load { requests: 10_000, concurrency: 4 }, |id, _, _| {
            Reply::ok(if id == fast { 5 * MS } else { 50 * MS })
        });
        assert!(report.share(fast) > 0.8, "fast {:.3}", report.share(fast));
    }

    #[test]
    fn a_parallel_backend_takes_the_load_it_serves_at_speed() {
        // One backend serves 8 at once at 5 ms; the others 20 ms each, capacity 1.
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let wide = h.add_backend("wide", 1);
        h.add_backends(5);
        let report = h.run(Load { requests: 20_000, concurrency: 12 }, |id, in_flight, _| {
            if id == wide {
                Reply::ok(5 * MS * u64::from(in_flight.max(8)) / 8)
            } else {
                Reply::ok(20 * MS * u64::from(in_flight))
            }
        });
        assert!(report.share(wide) > 0.75, "wide {:.3}", report.share(wide));
        assert!(h.policy().latency_at_us(wide, 6).is_some(), "it learned the curve at several loads");
    }

    #[test]
    fn a_fast_newcomer_that_hangs_now_and_then_is_slow_started() {
        // 5 ms, but every fifth request hangs until a 500 ms timeout; eight
        // clients. Without a slow start every client lands on it at once.
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let hole = h.add_backend("hole", 1);
        h.add_backends(4);
        let report = h.run(Load { requests: 4_000, concurrency: 8 }, |id, _, rng| {
            if id == hole && rng.unit() < 0.2 {
                Reply::fail(500 * MS)
            } else {
                Reply::ok(if id == hole { 5 * MS } else { 10 * MS })
            }
        });
        let hole_failures = report.backends.get(&hole).map_or(0, |b| b.failures);
        // Blind rotation would send it 800 requests, 160 of them hanging.
        assert!(hole_failures <= 10, "{hole_failures} hangs");
        assert!(report.share(hole) < 0.05, "hole {:.3}", report.share(hole));
    }

    #[test]
    fn attempts_a_client_broke_off_change_nothing_about_the_backend() {
        // `not-sent`: the client left or sent a broken body; the backend did
        // nothing wrong and must not look worse (or better) for it.
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let ids = h.add_backends(2);
        h.run(Load { requests: 500, concurrency: 2 }, |_, _, _| Reply::ok(10 * MS));
        let before = h.policy().stats.get(&ids[0]).map(|s| (s.failures, s.speed_us, s.shape.clone(), s.samples));
        for _ in 0..200 {
            h.complete_with_error(ids[0], 0, veer_sdk::ErrorKind::NotSent);
        }
        let after = h.policy().stats.get(&ids[0]).map(|s| (s.failures, s.speed_us, s.shape.clone(), s.samples));
        assert_eq!(before, after);
        // And a broken-off attempt of its own still ends that attempt.
        let picked = h.pick().unwrap();
        h.complete_with_error(picked, 0, veer_sdk::ErrorKind::NotSent);
        assert_eq!(h.policy().stats[&picked].shape.outstanding(), 0);
    }

    #[test]
    fn a_backend_that_fails_fast_never_looks_fast() {
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let trap = h.add_backend("trap", 1);
        h.add_backends(3);
        let report = h.run(Load { requests: 5_000, concurrency: 4 }, |id, _, rng| {
            if id == trap && rng.unit() < 0.5 { Reply::fail(MS) } else { Reply::ok(10 * MS) }
        });
        assert!(report.share(trap) < 0.1, "trap {:.3}", report.share(trap));
        assert!(report.error_rate() < 0.05, "{:.3}", report.error_rate());
    }

    #[test]
    fn a_recovered_backend_wins_its_traffic_back() {
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let flaky = h.add_backend("flaky", 1);
        h.add_backend("steady", 1);
        h.run(Load { requests: 2_000, concurrency: 4 }, |id, _, _| {
            if id == flaky { Reply::fail(30 * MS) } else { Reply::ok(20 * MS) }
        });
        let report = h.run(Load { requests: 20_000, concurrency: 4 }, |id, _, _| {
            Reply::ok(if id == flaky { 2 * MS } else { 20 * MS })
        });
        assert!(report.share(flaky) > 0.5, "flaky {:.3}", report.share(flaky));
    }

    #[test]
    fn a_slow_backend_that_becomes_the_fastest_takes_load_at_every_level_it_can_serve() {
        // `late-bloomer`: 200 ms with capacity 4, then 2 ms with capacity 4.
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let bloomer = h.add_backend("bloomer", 1);
        h.add_backends(4);
        let capacity_4 = |base: u64, in_flight: u32| base * u64::from(in_flight.max(4)) / 4;
        h.run(Load { requests: 2_500, concurrency: 10 }, |id, in_flight, _| {
            Reply::ok(if id == bloomer { capacity_4(200 * MS, in_flight) } else { 10 * MS })
        });
        let report = h.run(Load { requests: 5_000, concurrency: 10 }, |id, in_flight, _| {
            Reply::ok(if id == bloomer { capacity_4(2 * MS, in_flight) } else { 10 * MS })
        });
        // Found by a re-probe within a second and then filled to its capacity:
        // four of the ten clients at 2 ms take ~3/4 of the requests.
        assert!(report.share(bloomer) > 0.6, "bloomer {:.3}", report.share(bloomer));
        let speed = h.policy().latency_at_us(bloomer, 1).unwrap();
        assert!(speed < 3.0 * MS as f64, "{speed}");
    }

    #[test]
    fn slow_backends_share_one_probe_budget() {
        // `sloth-invasion`: four 300 ms backends and one 5 ms one. Each
        // sloth is re-probed in turn, and all of them together take about
        // `probe_budget` (2%) of the client time.
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let fast = h.add_backend("fast", 1);
        h.add_backends(4);
        h.run(Load { requests: 2_000, concurrency: 10 }, |id, _, _| {
            Reply::ok(if id == fast { 5 * MS } else { 300 * MS })
        });
        let report = h.run(Load { requests: 40_000, concurrency: 10 }, |id, _, _| {
            Reply::ok(if id == fast { 5 * MS } else { 300 * MS })
        });
        let slow_requests = report.requests() as f64 * (1.0 - report.share(fast));
        let slow_time = slow_requests * 300.0;
        let all_time = slow_time + report.requests() as f64 * report.share(fast) * 5.0;
        assert!(slow_requests >= 4.0, "each sloth was re-probed: {slow_requests}");
        assert!(slow_time / all_time < 0.03, "{:.4} of client time on probes", slow_time / all_time);
    }

    #[test]
    fn a_backend_that_flaps_between_healthy_and_down_is_followed_both_ways() {
        // As `flapping`: 4 ms, down (fast 500s) every other phase, here of 2 s.
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let flapper = h.add_backend("flapper", 1);
        h.add_backends(4);
        let mut healthy_shares = Vec::new();
        for phase in 0..8 {
            let down = phase % 2 == 1;
            let started = h.now_us();
            let mut served = 0;
            let mut requests = 0;
            while h.now_us() < started + 2_000 * MS {
                let report = h.run(Load { requests: 100, concurrency: 10 }, |id, _, _| {
                    if id == flapper && down {
                        Reply::fail(MS)
                    } else {
                        Reply::ok(if id == flapper { 4 * MS } else { 10 * MS })
                    }
                });
                served += report.backends.get(&flapper).map_or(0, |b| b.requests);
                requests += report.requests();
            }
            if !down && phase > 0 {
                healthy_shares.push(served as f64 / requests as f64);
            }
        }
        // Back within a second of each healthy phase (the next re-probe),
        // then taking most requests: four of ten clients at 4 ms against 10 ms.
        for share in &healthy_shares {
            assert!(*share > 0.3, "{healthy_shares:?}");
        }
    }

    #[test]
    fn a_backend_hanging_one_request_in_five_is_not_reprobed_into_more_hangs() {
        // Probing it again could not bring it back (three successes in a
        // row are luck at that rate), so it is left alone. After it was
        // found out (the slow start and the wait of its unanswered requests
        // bound that), ~16 s of traffic: one probe a second would hang ~4
        // times a window.
        let hangs = veer_sdk::testing::black_hole_hangs::<Prequal>(&[], 5).unwrap();
        assert!(hangs[0] <= 12, "{hangs:?}");
        assert!(hangs[1..5].iter().sum::<usize>() <= 1, "{hangs:?}");
    }

    #[test]
    fn equal_backends_share_the_load() {
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        let ids = h.add_backends(4);
        let report =
            h.run(Load { requests: 8_000, concurrency: 8 }, |_, in_flight, _| Reply::ok(u64::from(in_flight) * 5 * MS));
        for id in ids {
            assert!((report.share(id) - 0.25).abs() < 0.08, "{id}: {:.3}", report.share(id));
        }
    }

    #[test]
    fn never_picks_ineligible_or_excluded_backends_and_forgets_removed_ones() {
        let mut h = Harness::<Prequal>::new(&[]).unwrap();
        assert_eq!(h.pick(), None);
        let ids = h.add_backends(3);
        h.run(Load { requests: 300, concurrency: 2 }, |_, _, _| Reply::ok(MS));
        h.set_eligible(ids[0], false);
        assert!(!h.picks(200).contains_key(&ids[0]));
        for _ in 0..50 {
            assert_ne!(h.pick_excluding(ids[1]), Some(ids[1]));
        }
        h.remove_backend(ids[2]);
        assert_eq!(h.policy().latency_at_us(ids[2], 1), None);
        h.set_eligible(ids[1], false);
        assert_eq!(h.pick(), None, "nothing eligible");
    }

    #[test]
    fn unknown_or_out_of_range_parameters_are_refused() {
        assert!(Harness::<Prequal>::new(&[("probs", "3")]).unwrap_err().contains("probs"));
        assert!(Harness::<Prequal>::new(&[("hot_slowdown", "0.5")]).unwrap_err().contains("hot_slowdown"));
        assert!(Harness::<Prequal>::new(&[("probes", "4"), ("memory", "0")]).is_ok());
        for bad in ["-0.1", "1.5", "NaN", "lots"] {
            let err = Harness::<Prequal>::new(&[("probe_budget", bad)]).unwrap_err();
            assert!(err.contains("probe_budget"), "{bad}: {err}");
        }
        assert!(Harness::<Prequal>::new(&[("probe_budget", "0")]).is_ok(), "no re-probes at all is a choice");
    }
}
