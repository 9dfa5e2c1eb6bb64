//! Power of two choices over peak-EWMA latency with an in-flight penalty, as
//! linkerd2-proxy (tower's `PeakEwma`) does, with the penalty measured
//! instead of assumed.
//!
//! # Algorithm
//!
//! Per backend the plugin keeps a latency estimate `ewma` (µs: what a request
//! takes there with nothing else in flight) and the time of its last sample,
//! and how its latency grows with the requests in flight (its *shape*, the
//! SDK's `LoadShape`); the requests in flight there are the host's count.
//!
//! * **Estimate.** Between samples the estimate decays towards zero:
//!   `value(t) = ewma × exp(−(t − t_last) / τ)`, `τ = decay_ms`, but never below
//!   `min(ewma, 1 ms)`. A sample `r` at time `t` is *peak-sensitive*: if
//!   `r > value(t)` it replaces the estimate at once; otherwise
//!   `ewma ← value(t) + r × (1 − exp(−Δt / τ))`, `Δt = t − t_last` — the
//!   time-weighted EWMA (`ewma × w + r × (1 − w)`, `w = exp(−Δt/τ)`), so a busy
//!   backend's estimate is the recent average of its samples whatever the
//!   request rate (each sample weighing at least 0.1: by time alone a busy
//!   backend that got 6× faster took τ to look it, and meanwhile its stale
//!   estimate times its requests in flight held it to one or two of them,
//!   73% of the reference in `rotating-best`), while an idle backend's
//!   estimate fades and it gets probed
//!   again (this is how a penalised backend comes back). The 1 ms floor keeps a
//!   long-idle backend from looking free (zero cost would defeat the in-flight
//!   penalty and send it every request until its first answer).
//! * **Load.** Each attempt's answer is filed under the requests in flight
//!   it was sent at (RIF). A success teaches the shape at that RIF (its
//!   latency against the backend's unloaded latency, an EWMA of successes
//!   each divided by the shape at its RIF), and divided by the shape there
//!   it is a sample of the unloaded latency for the estimate. A backend with
//!   eight slots has a flat shape up to eight, a single-threaded one a line.
//!   linkerd's cost, `ewma × (in_flight + 1)`, assumes the line for every
//!   backend: one with eight slots was held to a fraction of what it serves
//!   at speed, and dividing by configured weights, as this picker did, made
//!   wrong weights wrong routing (53% of the reference in `wrong-weights`,
//!   now 95.8%; weights now only share ties, below).
//! * **Failures.** An outcome with status ≥ 500 or an `error` is a sample of
//!   `max(latency, failure_penalty_ms)`. `not-sent` errors (the host never sent
//!   the request) are no sample at all; they only end the attempt. Failures
//!   are also counted (the SDK's `FailureRecord`, over ~30 attempts, with
//!   change detection): that record tells a backend that is down from one
//!   failing now and then (an average of the last few attempts forgot a
//!   backend hanging one request in five after three successes), and the
//!   first success once it says the failures are over replaces the penalty
//!   they left in the estimate (which otherwise took τ to fade: `flapping`
//!   92.6% → 100%).
//! * **New backends.** A backend without samples is assumed typical: its
//!   estimate is the pool's typical latency — an EWMA over every successful
//!   sample of every backend — or `default_rtt_ms` before anything was measured.
//!   Assuming typical instead of a fixed 30 ms means a new backend is tried
//!   promptly (as soon as it is drawn against a busier or slower one, or a tie)
//!   without being flooded (the in-flight penalty applies), and that it is not
//!   starved when the pool is much faster than 30 ms; its first sample then
//!   replaces the guess outright.
//! * **Cost.** `cost = value(now) × max(marginal(in_flight + 1), 1 + 0.05 ×
//!   in_flight)`: what one more request adds to the time all requests there
//!   wait together, `r × shape(r) − (r − 1) × shape(r − 1)` at `r` in
//!   flight (`LoadShape::marginal_at`). Its own latency alone,
//!   `shape(r)`, is the selfish choice: a 3 ms backend with two slots looks
//!   better than an idle 10 ms one until six queue there, though past two
//!   it serves no more per second (86% of the reference in
//!   `load-sensitive`, against 100% with the marginal cost). Levels not
//!   measured yet read as the nearest lower one, except more than one
//!   level above the highest measured, where the shape grows as a single
//!   server's: load is taken a level at a time, so a new or hanging backend
//!   is not flooded before its answers come (73% in `black-hole` without
//!   this caution, 87% with it). The 5% per request in flight breaks ties,
//!   scaled by the eligible backends' mean weight over the backend's own
//!   (the effective weight, slow start applied): backends that do not slow
//!   down under load share it in proportion to their weights, and one the
//!   host is slow-starting takes a tenth of a share at a tenth of its
//!   weight. Measured queueing outweighs it, so wrong weights cost little
//!   (`wrong-weights` 95.8% against 99.8% with weights ignored, which also
//!   left the host's slow start without effect on this picker).
//!   `value(now)` is at least what the oldest attempt of this instance still
//!   unanswered there shows: its wait so far divided by the shape at the
//!   load it was sent at (`LoadShape::speed_at_least_us`). So a backend
//!   that hangs one request in five is found out while its clients wait,
//!   not when their timeouts fire (`black-hole` 89% → 95%).
//!   `in_flight` is the host's
//!   count (`host::in_flight`): every attempt to the backend from every
//!   data-path worker. The host runs an instance of this policy per worker, so
//!   a count kept from its own picks would see only one worker's share of the
//!   load; reading the host's costs one import call per candidate.
//! * **Pick.** Two distinct eligible candidates other than `ctx.exclude`: one
//!   drawn uniformly (O(1): a random index into the pool's dense eligible
//!   list), the other the previous pick's winner (*memory*, below) or, when it
//!   cannot be chosen, a second uniform draw. Take the cheaper; with one
//!   candidate, take it.
//! * **Memory.** Plain power of two choices sends a request to the best
//!   backend only when the draw happens to include it: with one fast backend
//!   among five, 60% of requests go to slow ones whatever the estimates say
//!   (measured with `veer bench scenarios`: 4% of the oracle's goodput in
//!   `sloth-invasion`, 18% in `safe-haven`). Keeping the last winner as one
//!   candidate (Mitzenmacher, Prabhakar and Shah, "Load balancing with memory",
//!   2002) lets the best backend take every request while it stays cheapest,
//!   and the in-flight penalty still hands a busy one's excess to the random
//!   candidate, so equal backends still share evenly. The last `memory`
//!   distinct winners are all candidates besides the two: with a single one
//!   remembered, only one good backend was ever in view, and where several
//!   good backends with a few parallel slots each had to share the load the
//!   others were found only by chance (virtual time, 5 seeds: 43% of the
//!   reference in `large-pool`, 5 fast backends among 50, against 98% with
//!   eight remembered; `uneven-weights` 89% against 99%). Outcomes of attempts
//!   the host routed itself (`picked == false`) still update the estimate.
//! * **Re-probing.** An estimate only changes with samples, and a backend
//!   that looked bad gets none: one that failed or was slow and then recovered
//!   came back only after its estimate had faded over several τ (73% of the
//!   reference in `recovery`). So a uniformly drawn candidate with nothing in
//!   flight whose last sample is older than `reprobe_ms` takes the request,
//!   if the probe budget pays for it, and a sample after such a silence
//!   replaces the estimate. The budget: `probe_budget` (2%) of the client
//!   time of every attempt accrues as credit (at most 5 s of it), and a
//!   probe spends what an attempt there takes, plus the failure penalty
//!   times its recent failure rate for a backend failing now and then (one
//!   failing most attempts is down, and probing it costs only its quick
//!   answer). So one slow backend among fast ones is probed every second and
//!   four share that rate. (A fixed stretch of the interval by the
//!   backend's slowness instead, up to 16×, kept a 200 ms backend that
//!   became the fastest unseen for 32 s: 59% in `late-bloomer`.) A backend
//!   failing now and then (5–50% of recent attempts) keeps its average
//!   through a successful probe instead of being replaced by it: one success
//!   of a backend hanging one request in five says little.
//!
//! Per pick and per outcome the cost is O(`memory`) in the number of
//! backends; only `backends-changed` does O(n) work (it re-indexes the
//! eligible list).
//!
//! # Parameters
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `decay_ms` | `10000` | τ, the EWMA's time constant in milliseconds (1..=3600000) |
//! | `default_rtt_ms` | `30` | latency assumed before any backend was measured, ms (0.001..=60000) |
//! | `failure_penalty_ms` | `1000` | latency a failed attempt counts as, ms (0..=600000) |
//! | `memory` | `8` | recent distinct winners kept as candidates (0..=16) |
//! | `reprobe_ms` | `1000` | an idle drawn backend without a sample for this long takes the request, within the budget, ms (1..=3600000) |
//! | `probe_budget` | `0.02` | share of client time re-probes may take (0..=1) |
//!
//! Why a 1 s failure penalty: it is 100× a typical 10 ms request, so one failure
//! dominates the estimate and keeps the backend out of rotation until it is
//! re-probed. A 1 ms backend that fails half its requests, fast, is probed as
//! the budget allows and serves a few requests after each successful probe
//! (tested: under 0.25% of traffic against four healthy 10 ms backends, at an
//! error rate under 0.1%); one that was down and recovered is back within a
//! re-probe interval or two.

use std::collections::HashMap;

use veer_sdk::{
    AttemptRecord, BackendEvent, BackendId, ErrorKind, LatencySample, LoadShape, Outcome, Params, PickContext, Policy,
    Pool, ProbeBudget, host,
};

/// An idle estimate never fades below this (or below the estimate itself).
const IDLE_FLOOR_US: f64 = 1_000.0;
/// Weight of one successful sample in the pool-wide typical latency.
const POOL_RTT_WEIGHT: f64 = 1.0 / 32.0;
/// The least a successful sample weighs in a busy backend's estimate.
const MIN_SAMPLE_WEIGHT: f64 = 0.1;
/// Weight of one sample in its load level's shape.
const SHAPE_WEIGHT: f64 = 0.1;

#[derive(Debug, Clone)]
struct Stats {
    /// Latency estimate with one request in flight at `stamp_us`, µs.
    ewma_us: f64,
    stamp_us: u64,
    /// Whether `ewma_us` comes from a sample (else it is the initial guess).
    sampled: bool,
    /// The weight the host gives it now (the configured one, ramped by slow
    /// start): how it shares ties.
    weight: f64,
    /// Latency by requests in flight, and the latency with one in flight
    /// of successes that it is learned against.
    shape: LoadShape,
    /// What recent attempts took and how often they failed: what a probe
    /// costs its client.
    attempts: AttemptRecord,
    /// Whether failures raised the estimate since the last success that
    /// replaced it.
    penalised: bool,
}

/// The p2c-ewma policy.
#[derive(Debug)]
pub struct P2cEwma {
    decay_us: f64,
    default_rtt_us: f64,
    failure_penalty_us: f64,
    memory: usize,
    reprobe_us: f64,
    /// Client time re-probes may take: each spends what an attempt at its
    /// backend takes.
    probe_budget: ProbeBudget,
    /// Every known backend, eligible or not.
    stats: HashMap<BackendId, Stats>,
    /// Index of each eligible backend in `pool.eligible()`.
    positions: HashMap<BackendId, usize>,
    /// Typical successful latency over the whole pool, µs.
    pool_rtt_us: Option<f64>,
    /// The mean weight of the eligible backends.
    mean_weight: f64,
    /// The last `memory` distinct winners, the newest last: candidates of
    /// the next pick (see "Memory" in the crate docs).
    recent: Vec<BackendId>,
}

impl P2cEwma {
    /// The current latency estimate of `id` in microseconds.
    pub fn estimate_us(&self, id: BackendId) -> Option<f64> {
        let now = host::now_us();
        self.stats.get(&id).map(|s| self.value(s, now))
    }

    /// Attempts in flight to `id` as the cost counts them (the host's count,
    /// across every worker); `None` for a backend the policy does not know.
    pub fn in_flight(&self, id: BackendId) -> Option<u32> {
        self.stats.get(&id).map(|_| host::in_flight(id))
    }

    fn value(&self, stats: &Stats, now: u64) -> f64 {
        if !stats.sampled {
            return self.pool_rtt_us.unwrap_or(self.default_rtt_us);
        }
        let elapsed = now.saturating_sub(stats.stamp_us) as f64;
        let faded = stats.ewma_us * (-elapsed / self.decay_us).exp();
        faded.max(stats.ewma_us.min(IDLE_FLOOR_US))
    }

    /// `id`'s cost and the requests it would then have in flight, if the
    /// cost may be below `bound`: the host's in-flight count (an import
    /// call) is read only when the cost with nothing in flight is.
    fn cost_below(&self, id: BackendId, now: u64, bound: f64) -> Option<(f64, u32)> {
        let stats = self.stats.get(&id)?;
        let idle = self.value(stats, now);
        if idle >= bound {
            return None;
        }
        let rif = host::in_flight(id).saturating_add(1);
        // An attempt unanswered for longer than the estimate says is news
        // before its answer is.
        let idle = idle.max(stats.shape.speed_at_least_us(now, rif - 1));
        let tie_break = LoadShape::TIE_BREAK * self.mean_weight / stats.weight;
        Some((idle * stats.shape.cost_factor(rif, tie_break), rif))
    }

    fn sync(&mut self, pool: &Pool, id: BackendId, now: u64) {
        match pool.get(id) {
            None => {
                self.stats.remove(&id);
            }
            Some(backend) => {
                let decay_us = self.decay_us;
                let weight = f64::from(backend.weight.max(1));
                let stats = self.stats.entry(id).or_insert_with(|| Stats {
                    ewma_us: 0.0,
                    stamp_us: now,
                    sampled: false,
                    weight,
                    shape: LoadShape::default(),
                    attempts: AttemptRecord::new(decay_us),
                    penalised: false,
                });
                stats.weight = weight;
            }
        }
    }

    fn index(&mut self, pool: &Pool) {
        self.positions.clear();
        self.positions.extend(pool.eligible().iter().enumerate().map(|(at, id)| (*id, at)));
        let (sum, count) = pool
            .eligible()
            .iter()
            .filter_map(|id| self.stats.get(id))
            .fold((0.0, 0u32), |(sum, count), stats| (sum + stats.weight, count + 1));
        self.mean_weight = if count == 0 { 1.0 } else { sum / f64::from(count) };
    }

    /// Rebuilds from the pool, keeping what is known. Only needed when the policy
    /// missed events (the SDK re-configures by building a fresh policy without
    /// replaying the backend set); O(n).
    fn resync(&mut self, pool: &Pool) {
        let now = host::now_us();
        self.stats.retain(|id, _| pool.get(*id).is_some());
        let ids: Vec<BackendId> = pool.backends().map(|b| b.id).collect();
        for id in ids {
            self.sync(pool, id, now);
        }
        self.index(pool);
    }

    /// Learns from a sample of `latency_us`: a success sent with `rif` in
    /// flight, or a failure (`rif` `None`: its penalty is no latency by load).
    fn sample(&mut self, id: BackendId, latency_us: f64, rif: Option<u32>, now: u64) {
        let (reprobe_us, decay_us) = (self.reprobe_us, self.decay_us);
        let Some(current) = self.stats.get(&id).map(|stats| self.value(stats, now)) else { return };
        let Some(stats) = self.stats.get_mut(&id) else { return };
        let silence = now.saturating_sub(stats.stamp_us) as f64;
        // A success tells the shape at its load, against the estimate of a
        // backend in steady use (after a silence the estimate has faded, and
        // the backend may have changed); then, divided by the shape, what it
        // says of the latency with one in flight.
        let latency_us = match rif {
            Some(rif) => stats.shape.learn_success(rif, latency_us, silence <= reprobe_us, SHAPE_WEIGHT),
            None => latency_us,
        };
        // After a silence a sample replaces the estimate (the backend may
        // have changed), unless the backend fails now and then: one success
        // of a backend hanging one request in five says little. So does a
        // success once the failure record says the failures that raised the
        // estimate are over (a backend that was down answers again): their
        // penalty took τ to fade, and kept it out for that long.
        let failing = stats.attempts.is_intermittent(now) || stats.attempts.is_down(now);
        let recovered = rif.is_some() && stats.penalised && !failing;
        stats.penalised = if rif.is_some() { stats.penalised && !recovered } else { true };
        stats.ewma_us = if !stats.sampled || latency_us > current || recovered || (silence > reprobe_us && !failing) {
            latency_us
        } else {
            // The time-weighted average, with each sample weighing at least
            // `MIN_SAMPLE_WEIGHT`: over time alone a busy backend that got
            // 6× faster took τ (10 s) to look it, and meanwhile its stale
            // estimate times its requests in flight kept it at one or two
            // of them (73% of the reference in `rotating-best`).
            let weight = 1.0 - (-silence / decay_us).exp();
            let averaged = current + latency_us * weight;
            averaged + (latency_us - averaged) * (MIN_SAMPLE_WEIGHT - weight).max(0.0)
        };
        stats.stamp_us = now;
        stats.sampled = true;
    }

    /// What probing `id`, a uniformly drawn candidate, costs if it is due a
    /// probe: idle, without a sample for `reprobe_ms`, and the budget has
    /// the credit for an attempt there.
    fn probe_cost(&self, id: BackendId, now: u64) -> Option<f64> {
        let stats = self.stats.get(&id).filter(|stats| stats.sampled)?;
        let cost = stats.attempts.probe_cost_us(self.failure_penalty_us, now);
        let due = now.saturating_sub(stats.stamp_us) as f64 > stats.attempts.reprobe_after_us(self.reprobe_us, now)
            && self.probe_budget.affords(cost)
            && host::in_flight(id) == 0;
        due.then_some(cost)
    }

    /// `id` takes the request at `now` with `rif` in flight there: the load
    /// its answer is filed under.
    fn sent(&mut self, id: BackendId, rif: u32, now: u64) {
        if let Some(stats) = self.stats.get_mut(&id) {
            stats.shape.sent(rif, now);
        }
    }

    /// Remembers `chosen` as the newest winner.
    fn remember(&mut self, chosen: BackendId) {
        self.recent.retain(|id| *id != chosen);
        if self.memory == 0 {
            return;
        }
        if self.recent.len() == self.memory {
            self.recent.remove(0);
        }
        self.recent.push(chosen);
    }
}

/// A uniform index in `0..n` that is not in `taken` (ascending, all `< n`,
/// fewer than `n` of them), from 32 random bits.
fn draw(n: usize, taken: &[usize], random: u32) -> usize {
    let mut at = ((u64::from(random) * (n - taken.len()) as u64) >> 32) as usize;
    for t in taken {
        if at >= *t {
            at += 1;
        }
    }
    at
}

impl Policy for P2cEwma {
    const NAME: &'static str = "p2c-ewma";
    const WANTS_OUTCOMES: bool = true;

    fn configure(params: &Params) -> Result<Self, String> {
        let reader = params.reader();
        let decay_ms = reader.number("decay_ms", 10_000.0, 1.0..=3_600_000.0);
        let default_rtt_ms = reader.number("default_rtt_ms", 30.0, 0.001..=60_000.0);
        let failure_penalty_ms = reader.number("failure_penalty_ms", 1_000.0, 0.0..=600_000.0);
        let memory = reader.number("memory", 8usize, 0..=16);
        let reprobe_ms = reader.number("reprobe_ms", 1_000.0, 1.0..=3_600_000.0);
        let probe_budget = reader.number("probe_budget", 0.02, 0.0..=1.0);
        reader.finish()?;
        Ok(P2cEwma {
            decay_us: decay_ms * 1e3,
            default_rtt_us: default_rtt_ms * 1e3,
            failure_penalty_us: failure_penalty_ms * 1e3,
            memory,
            reprobe_us: reprobe_ms * 1e3,
            probe_budget: ProbeBudget::new(probe_budget),
            stats: HashMap::new(),
            positions: HashMap::new(),
            pool_rtt_us: None,
            mean_weight: 1.0,
            recent: Vec::new(),
        })
    }

    fn backends_changed(&mut self, pool: &Pool, events: &[BackendEvent]) {
        let now = host::now_us();
        for event in events {
            let id = match event {
                BackendEvent::Added(b) | BackendEvent::Updated(b) => b.id,
                BackendEvent::Removed(id) => *id,
                BackendEvent::Eligibility((id, _)) => *id,
            };
            self.sync(pool, id, now);
        }
        // Every event may change an eligible backend's weight, and so the mean.
        if !events.is_empty() {
            self.index(pool);
        }
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        let now = host::now_us();
        let eligible = pool.eligible();
        if self.stats.len() != pool.len() || self.positions.len() != eligible.len() {
            self.resync(pool);
        }
        let skip = ctx.exclude.and_then(|id| self.positions.get(&id).copied());
        let taken: &[usize] = match &skip {
            Some(at) => std::slice::from_ref(at),
            None => &[],
        };
        if eligible.len() <= taken.len() {
            return None;
        }
        // One host call gives the randomness for both draws.
        let random = host::random_u64();
        let a = draw(eligible.len(), taken, random as u32);
        let (chosen, rif) = if eligible.len() - taken.len() == 1 {
            (eligible[a], host::in_flight(eligible[a]).saturating_add(1))
        } else {
            // The second candidate is the last pick's winner (memory) when it
            // can still be chosen and is not already the first; else a second draw.
            let remembered = self
                .recent
                .last()
                .and_then(|id| self.positions.get(id).copied())
                .filter(|at| *at != a && Some(*at) != skip && eligible.get(*at).is_some());
            let b = remembered.unwrap_or_else(|| {
                let mut taken = [a, skip.unwrap_or(usize::MAX)];
                taken.sort_unstable();
                draw(eligible.len(), &taken[..1 + usize::from(skip.is_some())], (random >> 32) as u32)
            });
            let (a, b) = (eligible[a], eligible[b]);
            if let Some(cost) = self.probe_cost(a, now) {
                self.probe_budget.try_spend(cost);
                self.sent(a, 1, now);
                return Some(a);
            }
            let remembered =
                self.recent.iter().copied().filter(|id| Some(*id) != ctx.exclude && self.positions.contains_key(id));
            let (cost, rif) = self.cost_below(a, now, f64::INFINITY).unwrap_or((f64::INFINITY, 1));
            let mut best = (a, cost, rif);
            for id in std::iter::once(b).chain(remembered) {
                if let Some((cost, rif)) = self.cost_below(id, now, best.1)
                    && cost < best.1
                {
                    best = (id, cost, rif);
                }
            }
            (best.0, best.2)
        };
        self.sent(chosen, rif, now);
        self.remember(chosen);
        Some(chosen)
    }

    fn observe(&mut self, _pool: &Pool, outcome: &Outcome) {
        let id = outcome.backend;
        let now = host::now_us();
        // Every outcome of a pick of ours ends that attempt, `not-sent` ones
        // too; the host's own choices have left its count: the others plus
        // themselves.
        let sent_at = if outcome.picked {
            self.stats.get_mut(&id).and_then(|s| s.shape.answered(now, outcome.latency_us))
        } else {
            None
        };
        if let Some(stats) = self.stats.get_mut(&id)
            && outcome.error != Some(ErrorKind::NotSent)
        {
            let us = outcome.latency_us as f64;
            self.probe_budget.earn(us);
            stats.attempts.record(us, outcome.error.is_some() || outcome.status >= 500, now);
        }
        match outcome.latency_sample(self.failure_penalty_us) {
            None => {}
            Some(LatencySample::Failure(us)) => self.sample(id, us, None, now),
            Some(LatencySample::Success(us)) => {
                let rif = sent_at.unwrap_or_else(|| host::in_flight(id).saturating_add(1));
                self.sample(id, us, Some(rif), now);
                let pool = self.pool_rtt_us.get_or_insert(us);
                *pool += (us - *pool) * POOL_RTT_WEIGHT;
            }
        }
    }
}

veer_sdk::export_policy!(P2cEwma);

#[cfg(test)]
mod tests {
    use super::*;
    use veer_sdk::testing::{Harness, Load, Reply};

    const MS: u64 = 1_000;

    #[test]
    fn the_fast_backend_gets_most_traffic() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let fast = h.add_backend("fast", 1);
        let slow = h.add_backend("slow", 1);
        let report = h.run(Load { requests: 10_000, concurrency: 8 }, |id, _, _| {
            Reply::ok(if id == fast { 5 * MS } else { 50 * MS })
        });
        let share = report.share(fast);
        assert!(share > 0.99, "fast share {share:.4}");
        assert!(report.share(slow) > 0.0, "the slow one is still probed");
        assert!(report.mean_latency_us() < 8.0 * MS as f64, "{}", report.mean_latency_us());
    }

    #[test]
    fn in_flight_penalty_spreads_load_when_all_are_equal() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(4);
        let report = h.run(Load { requests: 20_000, concurrency: 16 }, |_, _, _| Reply::ok(10 * MS));
        for id in &ids {
            assert!((report.share(*id) - 0.25).abs() < 0.02, "{id}: {:.3}", report.share(*id));
        }
        // With nothing completing, every pick goes to the less loaded of two.
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(4);
        for _ in 0..400 {
            h.pick();
        }
        let loads: Vec<u32> = ids.iter().map(|id| h.policy().in_flight(*id).unwrap()).collect();
        let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
        assert!(spread <= 4, "{loads:?}");
    }

    #[test]
    fn a_backend_that_always_fails_gets_almost_nothing() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(4);
        let broken = ids[0];
        let report = h.run(Load { requests: 20_000, concurrency: 8 }, |id, _, _| {
            if id == broken { Reply::fail(MS) } else { Reply::ok(10 * MS) }
        });
        // ~25 s of traffic: the first attempts, then one re-probe a second
        // (`reprobe_ms`); it is down, so a probe costs only its fast answer.
        let seconds = h.now_us() / 1_000_000;
        let failures = report.backends.get(&broken).map_or(0, |b| b.failures) as u64;
        assert!(failures <= seconds + 5, "{failures} failures in {seconds} s");
        assert!(report.error_rate() < 0.002, "error rate {:.4}", report.error_rate());
    }

    #[test]
    fn the_fast_but_flaky_trap_is_avoided() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let trap = h.add_backend("trap", 1);
        let healthy = h.add_backends(4);
        let report = h.run(Load { requests: 100_000, concurrency: 8 }, |id, _, rng| {
            if id == trap { if rng.unit() < 0.5 { Reply::fail(MS) } else { Reply::ok(MS) } } else { Reply::ok(10 * MS) }
        });
        // Over 125 s of virtual time: a re-probe when the budget pays for
        // one (each costs its client half a failure penalty on average), and
        // after a successful one a few requests until the next failure sends
        // its estimate back up.
        assert!(report.share(trap) < 0.0025, "trap share {:.4}", report.share(trap));
        assert!(report.error_rate() < 0.001, "error rate {:.4}", report.error_rate());
        for id in healthy {
            assert!((report.share(id) - 0.25).abs() < 0.01, "{:.3}", report.share(id));
        }
    }

    #[test]
    fn a_recovered_backend_gets_its_share_back() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(4);
        let sick = ids[0];
        let report = h.run(Load { requests: 5_000, concurrency: 8 }, |id, _, _| {
            if id == sick { Reply::fail(2 * MS) } else { Reply::ok(10 * MS) }
        });
        assert!(report.share(sick) < 0.02, "while failing: {:.4}", report.share(sick));
        // It recovers; a minute passes (the penalty fades), then traffic resumes.
        h.advance_us(60_000 * MS);
        let report = h.run(Load { requests: 20_000, concurrency: 8 }, |_, _, _| Reply::ok(10 * MS));
        assert!(report.share(sick) > 0.22, "after recovery: {:.3}", report.share(sick));
        assert_eq!(report.failures(), 0);
    }

    #[test]
    fn a_recovered_backend_comes_back_under_steady_traffic() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(4);
        let sick = ids[0];
        h.run(Load { requests: 5_000, concurrency: 8 }, |id, _, _| {
            if id == sick { Reply::fail(2 * MS) } else { Reply::ok(10 * MS) }
        });
        // Healthy again, with no pause in traffic: 75 s of it lets the penalty fade.
        let settle = h.run(Load { requests: 60_000, concurrency: 8 }, |_, _, _| Reply::ok(10 * MS));
        assert!(settle.elapsed_us > 70_000 * MS);
        let report = h.run(Load { requests: 20_000, concurrency: 8 }, |_, _, _| Reply::ok(10 * MS));
        // Fair is 0.25; the last of the penalty fades out over one more τ.
        assert!(report.share(sick) > 0.2, "after recovery: {:.3}", report.share(sick));
    }

    /// The model's second argument is the backend's attempts in flight.
    /// Four fast backends with two parallel slots each among twenty slow
    /// ones, eight clients: the fast slots can take every request, and only
    /// remembering more than the last winner keeps them all in view.
    #[test]
    fn several_good_backends_are_all_kept_in_view() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let fast: Vec<_> = (0..4).map(|i| h.add_backend(&format!("fast{i}"), 1)).collect();
        h.add_backends(20);
        let report = h.run(Load { requests: 20_000, concurrency: 8 }, |id, in_flight, _| {
            if fast.contains(&id) { Reply::ok(2 * MS * u64::from(in_flight.max(2)) / 2) } else { Reply::ok(20 * MS) }
        });
        for id in &fast {
            assert!(report.share(*id) > 0.15, "{id}: {:.3}", report.share(*id));
        }
        let mut h = Harness::<P2cEwma>::new(&[("memory", "1")]).unwrap();
        let fast: Vec<_> = (0..4).map(|i| h.add_backend(&format!("fast{i}"), 1)).collect();
        h.add_backends(20);
        let one = h.run(Load { requests: 20_000, concurrency: 8 }, |id, in_flight, _| {
            if fast.contains(&id) { Reply::ok(2 * MS * u64::from(in_flight.max(2)) / 2) } else { Reply::ok(20 * MS) }
        });
        assert!(
            one.mean_latency_us() > report.mean_latency_us() * 1.5,
            "{} against {}",
            one.mean_latency_us(),
            report.mean_latency_us()
        );
    }

    /// A backend that was slow, and so got no traffic, is re-probed within
    /// its (stretched) interval and taken back at once when it turned fast.
    #[test]
    fn a_backend_that_turned_fast_is_reprobed_and_taken_back() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let bloomer = h.add_backend("bloomer", 1);
        h.add_backends(3);
        h.run(Load { requests: 2_000, concurrency: 4 }, |id, _, _| {
            Reply::ok(if id == bloomer { 30 * MS } else { 10 * MS })
        });
        // Fast now: a probe within a second finds it.
        let report = h.run(Load { requests: 8_000, concurrency: 4 }, |id, _, _| {
            Reply::ok(if id == bloomer { MS } else { 10 * MS })
        });
        assert!(report.elapsed_us < 15_000 * MS, "{} µs", report.elapsed_us);
        assert!(report.share(bloomer) > 0.5, "bloomer share {:.3}", report.share(bloomer));
    }

    #[test]
    fn a_much_slower_backend_that_turned_fast_is_found_within_seconds() {
        // `late-bloomer`: 200 ms, 20× the others, then the fastest. The probe
        // budget pays for a 200 ms probe about every second.
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let bloomer = h.add_backend("bloomer", 1);
        h.add_backends(4);
        h.run(Load { requests: 3_000, concurrency: 10 }, |id, _, _| {
            Reply::ok(if id == bloomer { 200 * MS } else { 10 * MS })
        });
        let started = h.now_us();
        let report = h.run(Load { requests: 3_000, concurrency: 10 }, |id, _, _| {
            Reply::ok(if id == bloomer { 2 * MS } else { 10 * MS })
        });
        assert!(
            report.share(bloomer) > 0.3,
            "bloomer share {:.3} over {} ms",
            report.share(bloomer),
            (h.now_us() - started) / MS
        );
    }

    #[test]
    fn a_backend_failing_now_and_then_is_not_rehabilitated_by_one_success() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let hole = h.add_backend("hole", 1);
        h.add_backends(4);
        // One attempt in four fails (a hang until a 500 ms timeout).
        for i in 0..12 {
            h.advance_us(10 * MS);
            h.complete(hole, if i % 4 == 0 { 500 * MS } else { 5 * MS }, i % 4 != 0);
        }
        let before = h.policy().estimate_us(hole).unwrap();
        // A probe after a silence succeeds: the average stays, not replaced by 5 ms.
        h.advance_us(3_000 * MS);
        h.complete(hole, 5 * MS, true);
        let after = h.policy().estimate_us(hole).unwrap();
        assert!(after > 100.0 * MS as f64, "{before} -> {after}");
    }

    #[test]
    fn estimates_are_peak_sensitive_and_decay() {
        let mut h = Harness::<P2cEwma>::new(&[("decay_ms", "1000")]).unwrap();
        let id = h.add_backend("a", 1);
        assert_eq!(h.policy().estimate_us(id), Some(30_000.0), "default_rtt_ms before any sample");
        h.complete(id, 5 * MS, true);
        assert_eq!(h.policy().estimate_us(id), Some(5_000.0), "the first sample replaces the guess");
        h.advance_us(10 * MS);
        h.complete(id, 100 * MS, true);
        assert_eq!(h.policy().estimate_us(id), Some(100_000.0), "a peak replaces the estimate at once");
        // Samples at the old level pull it down at the rate of τ = 1 s when
        // they are far apart: after 1 s of one every 200 ms, by 1 − 1/e...
        for _ in 0..5 {
            h.advance_us(200 * MS);
            h.complete(id, 5 * MS, true);
        }
        let estimate = h.policy().estimate_us(id).unwrap();
        let expected = 5_000.0 + 95_000.0 * (-1.0f64).exp();
        assert!((estimate - expected).abs() < 1_000.0, "{estimate} against {expected}");
        // ...and by at least a tenth per sample when they come fast: a busy
        // backend that got faster is seen so within a few dozen requests.
        h.complete(id, 100 * MS, true);
        for _ in 0..30 {
            h.advance_us(MS);
            h.complete(id, 5 * MS, true);
        }
        let estimate = h.policy().estimate_us(id).unwrap();
        let expected = 5_000.0 + 95_000.0 * 0.9f64.powi(30);
        assert!((estimate - expected).abs() < 1_000.0, "{estimate} against {expected}");
        // A failure counts as the penalty, and fades while the backend is idle.
        h.complete(id, MS, false);
        assert_eq!(h.policy().estimate_us(id), Some(1_000_000.0));
        h.advance_us(3_000 * MS);
        let faded = h.policy().estimate_us(id).unwrap();
        assert!((faded - 1_000_000.0 * (-3.0f64).exp()).abs() < 1.0, "{faded}");
        h.advance_us(60_000 * MS);
        assert_eq!(h.policy().estimate_us(id), Some(1_000.0), "never below 1 ms when idle");
    }

    #[test]
    fn not_sent_is_no_sample_and_host_routed_outcomes_are() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let id = h.add_backend("a", 1);
        assert_eq!(h.pick(), Some(id));
        h.complete_with_error(id, 0, ErrorKind::NotSent);
        assert_eq!(h.policy().in_flight(id), Some(0));
        assert_eq!(h.policy().estimate_us(id), Some(30_000.0));
        h.observe(Outcome { backend: id, picked: false, status: 200, latency_us: 7 * MS, error: None });
        assert_eq!(h.policy().estimate_us(id), Some(7_000.0));
        assert_eq!(h.policy().in_flight(id), Some(0), "not counted, so not uncounted");
        h.complete_with_error(id, 2 * MS, ErrorKind::Reset);
        assert_eq!(h.policy().estimate_us(id), Some(1_000_000.0));
    }

    #[test]
    fn a_new_backend_is_tried_promptly() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        h.add_backends(3);
        h.run(Load { requests: 3_000, concurrency: 8 }, |_, _, _| Reply::ok(5 * MS));
        let new = h.add_backend("new", 1);
        assert_eq!(h.policy().estimate_us(new).map(f64::round), Some(5_000.0), "starts at the pool's typical latency");
        let report = h.run(Load { requests: 8_000, concurrency: 8 }, |_, _, _| Reply::ok(5 * MS));
        assert!((report.share(new) - 0.25).abs() < 0.03, "{:.3}", report.share(new));
    }

    /// 10 ms at up to `capacity` in flight, queueing beyond.
    fn with_capacity(capacity: u32, in_flight: u32) -> Reply {
        Reply::ok(10 * MS * u64::from(in_flight.max(capacity)) / u64::from(capacity))
    }

    #[test]
    fn measured_capacity_overrides_wrong_weights() {
        // The weights say the opposite of the capacities: the backend
        // weighing 8 serves one at a time, the one weighing 1 eight.
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let narrow = h.add_backend("narrow", 8);
        let wide = h.add_backend("wide", 1);
        let report = h.run(Load { requests: 20_000, concurrency: 8 }, |id, in_flight, _| {
            with_capacity(if id == wide { 8 } else { 1 }, in_flight)
        });
        // Dividing the cost by the weights sent the narrow one ~4 at a time.
        assert!(report.share(wide) > 0.8, "wide {:.3}", report.share(wide));
        assert!(report.mean_latency_us() < 11.0 * MS as f64, "{}", report.mean_latency_us());
        let shape = &h.policy().stats[&wide].shape;
        assert_eq!(shape.measured(6).map(|s| s.round()), Some(1.0), "flat up to its capacity");
        assert!(h.policy().stats[&narrow].shape.measured(2).is_some_and(|s| s > 1.5));
    }

    #[test]
    fn a_fast_backend_with_few_slots_is_not_flooded_while_slots_idle_elsewhere() {
        // 3 ms with two slots, and four 10 ms backends with four each; 20
        // clients. Each request choosing the lowest latency for itself
        // queues six at the fast one (9 ms each) and leaves solid slots idle;
        // past three there it adds more waiting than it saves.
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let quick = h.add_backend("quick", 1);
        h.add_backends(4);
        let report = h.run(Load { requests: 40_000, concurrency: 20 }, |id, in_flight, _| {
            if id == quick { Reply::ok(3 * MS * u64::from(in_flight.max(2)) / 2) } else { with_capacity(4, in_flight) }
        });
        // At best 2/3 of a request per ms at the quick one and 1.6 at the others.
        let per_second = report.requests() as f64 * 1e6 / report.elapsed_us as f64;
        assert!(per_second > 0.97 * 2_267.0, "{per_second:.0}/s");
    }

    #[test]
    fn never_picks_ineligible_or_excluded_backends() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        h.set_eligible(ids[0], false);
        let counts = h.picks(200);
        assert!(!counts.contains_key(&ids[0]));
        for _ in 0..50 {
            assert_eq!(h.pick_excluding(ids[1]), Some(ids[2]));
        }
        h.set_eligible(ids[0], true);
        for _ in 0..50 {
            assert_ne!(h.pick_excluding(ids[1]), Some(ids[1]));
        }
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        assert_eq!(h.pick(), None);
        let only = h.add_backend("only", 1);
        assert_eq!(h.pick_excluding(only), None);
        assert_eq!(h.pick(), Some(only));
        h.set_eligible(only, false);
        assert_eq!(h.pick(), None);
    }

    /// The host runs an instance per worker: load another worker put on a
    /// backend (the host's count) steers this instance's picks away from it.
    #[test]
    fn other_workers_load_counts_in_the_cost() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(2);
        h.set_in_flight(ids[0], 50);
        let counts = h.picks(200);
        assert_eq!(counts.get(&ids[0]), None, "a backend 50 deep elsewhere is never cheaper: {counts:?}");
        h.set_in_flight(ids[0], 0);
        let counts = h.picks(200);
        assert!(counts.get(&ids[0]).copied().unwrap_or(0) > 50, "shared again once it drains: {counts:?}");
    }

    #[test]
    fn in_flight_returns_to_zero_and_removal_forgets() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        h.run(Load { requests: 2_000, concurrency: 8 }, |_, _, _| Reply::ok(3 * MS));
        for id in &ids {
            assert_eq!(h.policy().in_flight(*id), Some(0));
        }
        h.pick();
        h.remove_backend(ids[0]);
        assert_eq!(h.policy().in_flight(ids[0]), None);
        h.complete(ids[0], MS, true);
        assert_eq!(h.policy().estimate_us(ids[0]), None);
        assert!(h.picks(100).keys().all(|id| *id != ids[0]));
    }

    #[test]
    fn a_thousand_backends_work() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(1000);
        let slow: Vec<_> = ids.iter().copied().step_by(10).collect(); // 100 of them
        let report = h.run(Load { requests: 50_000, concurrency: 64 }, |id, _, _| {
            Reply::ok(if id % 10 == ids[0] % 10 { 100 * MS } else { 5 * MS })
        });
        assert_eq!(report.unpicked, 0);
        let slow_share: f64 = slow.iter().map(|id| report.share(*id)).sum();
        assert!(slow_share < 0.03, "100 slow of 1000 got {slow_share:.3}");
        assert_eq!(report.backends.len(), 1000, "every backend was tried");
        h.set_eligible(ids[5], false);
        assert!(h.picks(2_000).keys().all(|id| *id != ids[5]));
    }

    #[test]
    fn keeps_working_after_a_reconfigure() {
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        h.reconfigure(&[("decay_ms", "5000")]).unwrap();
        let counts = h.picks(300);
        assert!(ids.iter().all(|id| counts.get(id).copied().unwrap_or(0) > 50), "{counts:?}");
    }

    #[test]
    fn rejects_bad_parameters_all_at_once() {
        let err =
            Harness::<P2cEwma>::new(&[("decay_ms", "0"), ("failure_penalty_ms", "soon"), ("tau", "1")]).unwrap_err();
        assert!(err.contains("decay_ms: must be between 1 and 3600000, got 0"), "{err}");
        assert!(err.contains("failure_penalty_ms: expected a number, got 'soon'"), "{err}");
        assert!(err.contains("unknown parameter 'tau'"), "{err}");
        assert!(Harness::<P2cEwma>::new(&[("default_rtt_ms", "5"), ("failure_penalty_ms", "250")]).is_ok());
        let err = Harness::<P2cEwma>::new(&[("memory", "17"), ("reprobe_ms", "0")]).unwrap_err();
        assert!(err.contains("memory") && err.contains("reprobe_ms"), "{err}");
        assert!(Harness::<P2cEwma>::new(&[("memory", "2.5")]).is_err(), "a whole number of winners");
        assert!(Harness::<P2cEwma>::new(&[("memory", "0"), ("reprobe_ms", "500")]).is_ok());
        for bad in ["-0.1", "1.5", "NaN", "lots"] {
            let err = Harness::<P2cEwma>::new(&[("probe_budget", bad)]).unwrap_err();
            assert!(err.contains("probe_budget"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_backend_hanging_one_request_in_five_is_found_out_while_its_clients_wait() {
        // The wait of its unanswered requests shows it before their
        // timeouts do (without that, ~10 hangs every 4 s window).
        let hangs = veer_sdk::testing::black_hole_hangs::<P2cEwma>(&[], 5).unwrap();
        assert!(hangs.iter().all(|h| *h <= 4), "{hangs:?}");
    }

    #[test]
    fn an_attempt_whose_outcome_never_came_does_not_make_its_backend_look_slow_for_ever() {
        // The contract says every pick gets one outcome; if one is lost
        // anyway, the host's count says nothing is waiting there.
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(2);
        h.run(Load { requests: 1_000, concurrency: 2 }, |_, _, _| Reply::ok(10 * MS));
        let lost = h.pick().unwrap();
        h.set_in_flight(lost, 0);
        h.advance_us(30_000 * MS);
        let report = h.run(Load { requests: 4_000, concurrency: 4 }, |_, _, _| Reply::ok(10 * MS));
        assert!(report.share(lost) > 0.4, "{:.3}", report.share(lost));
        assert!(ids.contains(&lost));
    }

    #[test]
    fn weights_share_the_load_among_backends_that_do_not_slow_down() {
        // Equal latency, no capacity limit: ties are shared by weight, and a
        // backend the host is slow-starting (a tenth of its weight) takes a
        // small share until its weight is back.
        let jitter = |_: BackendId, _: u32, rng: &mut veer_sdk::testing::SimRng| {
            Reply::ok(10 * MS + (rng.unit() * MS as f64) as u64)
        };
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let heavy = h.add_backend("heavy", 300);
        h.add_backend("light", 100);
        let report = h.run(Load { requests: 20_000, concurrency: 16 }, jitter);
        assert!((report.share(heavy) - 0.75).abs() < 0.05, "{:.3}", report.share(heavy));
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        h.run(Load { requests: 2_000, concurrency: 12 }, jitter);
        for id in &ids {
            h.set_weight(*id, 100);
        }
        h.set_weight(ids[0], 10);
        let ramping = h.run(Load { requests: 6_000, concurrency: 12 }, jitter);
        assert!(ramping.share(ids[0]) < 0.15, "{:.3}", ramping.share(ids[0]));
        h.set_weight(ids[0], 100);
        let ramped = h.run(Load { requests: 6_000, concurrency: 12 }, jitter);
        assert!((ramped.share(ids[0]) - 1.0 / 3.0).abs() < 0.05, "{:.3}", ramped.share(ids[0]));
    }

    #[test]
    fn a_client_that_holds_a_request_and_breaks_off_leaves_no_wait_against_the_backend() {
        // While a request is open its wait counts against the backend (a
        // hang shows early); once the client breaks it off (`not-sent`),
        // nothing of it is left to judge the backend by.
        let mut h = Harness::<P2cEwma>::new(&[]).unwrap();
        let ids = h.add_backends(2);
        h.run(Load { requests: 1_000, concurrency: 2 }, |_, _, _| Reply::ok(10 * MS));
        let held = h.pick().unwrap();
        h.advance_us(2_000 * MS);
        h.complete_with_error(held, 2_000 * MS, ErrorKind::NotSent);
        let report = h.run(Load { requests: 2_000, concurrency: 4 }, |_, _, _| Reply::ok(10 * MS));
        assert!(report.share(held) > 0.4, "{:.3}", report.share(held));
        assert!(ids.contains(&held));
    }
}
