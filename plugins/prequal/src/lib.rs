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
//! * **Latency by load.** Per backend, an EWMA (`alpha`) of response times per
//!   RIF level (1, 2, …, 8, then 9–12, 13–16, 17–24, 25–32, 33+), each filed
//!   under the RIF its attempt was *sent* at (a queue per backend; answers
//!   mostly come back in order): the latency a request sees at that load, as
//!   Prequal's servers report latency by RIF. A backend with capacity for ten
//!   parallel requests shows a flat curve up to ten; a single-threaded one a
//!   line. The estimate at RIF `r` is the level's own, or for a level not
//!   measured yet the nearest one that was (optimistic: one request there
//!   measures it), or for a backend never measured the pool's typical
//!   latency; times the backend's *drift*, an EWMA (0.3) of samples against
//!   their level's estimate, so a backend that got slower or faster at every
//!   load is seen so at every load at once. A sample after a silence weighs
//!   `1 − exp(−silence × 10 / decay_ms)` (at least `alpha`): a re-probe that
//!   finds a backend changed moves its estimate at once. Unmeasured, an
//!   estimate fades towards zero with time constant `decay_ms` (optimism
//!   under uncertainty: a backend that was slow is tried again).
//! * **Failures.** Per backend an EWMA of the failure rate `p` (at 0.3 ×
//!   `alpha`, fading like the latency) and of a failure's time `f` (a hang
//!   costs the whole timeout); a failed attempt's latency does not enter the
//!   curve. Every success in a row since the last failure halves `p`'s
//!   weight, so a recovered backend is trusted again after a few. The cost
//!   of a candidate is the expected time per *successful* request, the
//!   scenario oracle's formula, `((1 − p) × latency + p × (f +
//!   failure_penalty)) / (1 − p)`: a backend that fails fast never looks fast.
//! * **Hot and cold.** Prequal calls a server hot when its RIF is above a
//!   quantile (0.84) of the fleet's RIFs: for servers of equal capacity the
//!   busiest are the ones about to queue. Here a candidate is hot when it
//!   *is* queueing at its next RIF: its expected latency there is more than
//!   `hot_slowdown` times its unloaded (best measured) latency. The two agree
//!   on equal backends; on unequal ones the fleet quantile pushes load off the
//!   one fast backend that could take it all (measured in virtual time with
//!   the quantile rule: 30% of the oracle's goodput in `sloth-invasion`, 26%
//!   in `safe-haven`), while the queueing rule fills each backend to its
//!   capacity and no further, whatever its weight says. An unproven backend
//!   (fewer than 32 outcomes) is also hot beyond `1 + outcomes / 2` in
//!   flight: a slow start, so a fast newcomer that hangs now and then does
//!   not catch every client before its first hang times out.
//! * **Re-probing.** Prequal keeps probing every server; a proxy learns only
//!   from traffic. So a drawn candidate with nothing in flight that has not
//!   answered for `reprobe_ms` (or never) takes the request: a backend that
//!   recovered, or a new one, is measured within seconds, at a cost of at
//!   most one request per backend per interval. The interval stretches with
//!   what a probe costs its client against a typical request, up to
//!   `reprobe_stretch`: a slow backend's latency, an intermittently failing
//!   one's failures too (a backend failing most requests counts as down:
//!   probing it is cheap). Without re-probing a backend whose every attempt
//!   failed has no curve and never looks better than typical (measured: 83%
//!   of the oracle's goodput in `recovery`).
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
//! | `alpha` | `0.1` | weight of the newest sample in a latency level's average (0.001..=1) |
//! | `failure_penalty_ms` | `250` | what a failure costs a client on top of its time, ms (0..=600000) |
//! | `decay_ms` | `5000` | time constant with which unmeasured estimates fade, ms (1..=3600000) |
//! | `reprobe_ms` | `2000` | an idle drawn backend unmeasured for this long (stretched, below) takes the request, ms (1..=3600000) |
//! | `reprobe_stretch` | `16` | the most a slow or failing backend's re-probe interval is stretched (1..=1000) |
//! | `default_rtt_ms` | `30` | latency assumed before anything was measured, ms (0.001..=60000) |

use std::collections::HashMap;

use veer_sdk::{BackendEvent, BackendId, LatencySample, Outcome, Params, PickContext, Policy, Pool, host};

/// RIF levels: 1..=8 each, then ranges up to 32, then everything above.
const LEVELS: usize = 13;
/// Weight of one successful sample in the pool-wide typical latency.
const TYPICAL_ALPHA: f64 = 0.05;
/// Weight of one sample in a backend's drift.
const DRIFT_ALPHA: f64 = 0.3;
/// How much faster than the estimates fade a silence makes the next sample count:
/// after `decay_ms / SILENCE_WEIGHT` without a sample, a new one weighs ~63%.
const SILENCE_WEIGHT: f64 = 10.0;
/// Outcomes after which a backend's load is no longer slow-started.
const PROVEN: u32 = 32;
/// Attempts remembered per backend for filing their outcomes by RIF.
const MAX_OUTSTANDING: usize = 1024;
/// What each success in a row since the last failure leaves of the failure rate's weight.
const TRUST_PER_SUCCESS: f64 = 0.5;
/// The failure rate's average moves at this share of `alpha`.
const FAILURE_ALPHA_SHARE: f64 = 0.3;
/// Failure rates are capped below 1 so a cost stays finite (and comparable).
const MAX_FAILURE_RATE: f64 = 0.99;

fn level(rif: u32) -> usize {
    match rif {
        0..=8 => rif.saturating_sub(1) as usize,
        9..=12 => 8,
        13..=16 => 9,
        17..=24 => 10,
        25..=32 => 11,
        _ => 12,
    }
}

#[derive(Debug, Clone, Default)]
struct Stats {
    /// Latency estimate (µs) per RIF level, once sampled.
    latency_us: [Option<f64>; LEVELS],
    /// EWMA of failures (0 or 1 per attempt).
    failure_rate: f64,
    /// EWMA of failed attempts' time (a hang costs the whole timeout), µs.
    failure_latency_us: f64,
    /// Successes since the last failure.
    streak: u32,
    /// Recent samples against their level's estimate (EWMA, 1 when the
    /// curve is right): a backend that got slower or faster at every load
    /// shows it here at once, before each level has been re-measured.
    drift: f64,
    /// Outcomes heard, up to [`PROVEN`].
    samples: u32,
    /// The RIF each of our attempts there was sent at, oldest first: an
    /// outcome is filed under its attempt's RIF (answers mostly come back in
    /// order; when they do not, a neighbour's RIF is close).
    sent_at_rif: std::collections::VecDeque<u32>,
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
    reprobe_stretch: f64,
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
    stale: bool,
}

impl Prequal {
    /// Sizes up sending one more request to `id`, which then has `rif` in
    /// flight: its cost (µs per successful request) and whether it is hot.
    fn assess(&self, id: BackendId, rif: u32, now: u64) -> (f64, bool) {
        let Some(stats) = self.stats.get(&id) else { return (self.typical_us, false) };
        let fade = (-(now.saturating_sub(stats.stamp_us) as f64) / self.decay_us).exp();
        let at = level(rif);
        let latency = match stats.latency_us[at] {
            Some(latency) => latency,
            // Not measured at this load yet: as at the nearest load that was.
            // Optimistic on purpose: the next request there measures it, and a
            // backend that queues shows it at once.
            None => (0..at)
                .rev()
                .find_map(|l| stats.latency_us[l])
                .or_else(|| (at..LEVELS).find_map(|l| stats.latency_us[l]))
                .unwrap_or(self.typical_us),
        };
        // Unmeasured for long, an estimate fades towards zero: optimism under
        // uncertainty, so a backend that was slow is tried again once it has
        // been silent for a few `decay_ms` (a 300 ms one among 5 ms ones after
        // ~4 τ, one request), and its answer then replaces the old estimate.
        let latency = latency * if stats.drift > 0.0 { stats.drift } else { 1.0 } * fade;
        // Each success in a row since the last failure halves the failure
        // rate's weight: the average alone would take ~100 samples to forget
        // a dead phase, and a recovered backend gets few samples.
        let trust = TRUST_PER_SUCCESS.powi(stats.streak.min(16) as i32);
        let p = (stats.failure_rate * fade * trust).min(MAX_FAILURE_RATE);
        // Hot: queueing, that is slower at this load than unloaded by more than `hot_slowdown`.
        let unloaded = stats.latency_us.iter().flatten().copied().fold(f64::INFINITY, f64::min);
        // An unproven backend is also hot past 1 + samples / 2 in flight: a
        // slow start, so a fast newcomer that hangs every fifth request does
        // not catch every client before its first hang times out.
        let unproven = stats.samples < PROVEN && rif > 1 + stats.samples / 2;
        let hot = unproven || (unloaded.is_finite() && latency > self.hot_slowdown * unloaded);
        // Expected time per successful request, as the scenario oracle reckons it.
        let time = (1.0 - p) * latency + p * stats.failure_latency_us;
        ((time + p * self.failure_penalty_us) / (1.0 - p), hot)
    }

    /// How much longer than `reprobe_ms` to wait before probing a backend
    /// (1..=16): what a probe costs its client against a typical request. A
    /// backend failing most of its requests is taken for down, and a probe of
    /// it costs what its answer takes (it asks "back yet?"); one failing now
    /// and then costs its failures too, so it is not probed into every
    /// tenth request hanging.
    fn probe_slowness(&self, stats: &Stats, now: u64) -> f64 {
        let unloaded = stats.latency_us.iter().flatten().copied().fold(f64::INFINITY, f64::min);
        let latency = if unloaded.is_finite() { unloaded } else { self.typical_us };
        let fade = (-(now.saturating_sub(stats.stamp_us) as f64) / self.decay_us).exp();
        let p = stats.failure_rate * fade;
        let cost = if p < 0.5 {
            ((1.0 - p) * latency + p * (stats.failure_latency_us + self.failure_penalty_us)) / (1.0 - p)
        } else {
            latency
        };
        (cost / self.typical_us).clamp(1.0, self.reprobe_stretch)
    }

    fn candidate(&self, id: BackendId, now: u64) -> Candidate {
        let rif = host::in_flight(id).saturating_add(1);
        let (cost, hot) = self.assess(id, rif, now);
        // Nothing learned of it lately, and nothing on the way there. A slow
        // backend is probed less often (a probe holds a client for its latency).
        let stale = rif == 1
            && self
                .stats
                .get(&id)
                .is_none_or(|s| now.saturating_sub(s.stamp_us) as f64 >= self.reprobe_us * self.probe_slowness(s, now));
        Candidate { id, rif, cost, hot, stale }
    }

    /// Draws the candidates into `candidates` and applies the rules above.
    fn choose(&self, pool: &Pool, ctx: &PickContext, candidates: &mut Vec<Candidate>) -> Option<Candidate> {
        let now = host::now_us();
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
        // A drawn candidate not heard from in `reprobe_ms` takes this request:
        // what a probe would tell Prequal (it recovered, it got slower), at
        // most one request per backend per interval.
        let reprobe = candidates.iter().take(self.probes).find(|c| c.stale);
        reprobe
            .or_else(|| candidates.iter().filter(|c| !c.hot).min_by(|a, b| a.cost.total_cmp(&b.cost)))
            .or_else(|| candidates.iter().min_by(|a, b| a.rif.cmp(&b.rif).then(a.cost.total_cmp(&b.cost))))
            .copied()
    }

    /// The latency estimate of `id` at `rif` requests in flight, µs, if sampled there.
    pub fn latency_at_us(&self, id: BackendId, rif: u32) -> Option<f64> {
        self.stats.get(&id).and_then(|s| s.latency_us[level(rif)])
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
        let reprobe_ms = reader.number("reprobe_ms", 2_000.0, 1.0..=3_600_000.0);
        let reprobe_stretch = reader.number("reprobe_stretch", 16.0, 1.0..=1_000.0);
        reader.finish()?;
        Ok(Prequal {
            probes,
            memory,
            hot_slowdown,
            alpha,
            failure_penalty_us: failure_penalty_ms * 1e3,
            decay_us: decay_ms * 1e3,
            reprobe_us: reprobe_ms * 1e3,
            reprobe_stretch,
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
        let chosen = self.choose(pool, ctx, &mut candidates);
        self.candidates = candidates;
        let chosen = chosen?;
        let sent = &mut self.stats.entry(chosen.id).or_default().sent_at_rif;
        // Bounded: outcomes lost to a replaced instance must not grow it forever.
        if sent.len() >= MAX_OUTSTANDING {
            sent.pop_front();
        }
        sent.push_back(chosen.rif);
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
        let from_us = if outcome.picked {
            self.stats.get_mut(&outcome.backend).and_then(|s| s.sent_at_rif.pop_front())
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
        let now = host::now_us();
        // The host's own choices: it has left the count, so the others' RIF plus itself.
        let rif = from_us.unwrap_or_else(|| host::in_flight(outcome.backend).saturating_add(1));
        let alpha = self.alpha;
        if !failed {
            self.typical_us += TYPICAL_ALPHA * (sample_us - self.typical_us);
        }
        let decay_us = self.decay_us;
        let stats = self.stats.entry(outcome.backend).or_default();
        if !failed {
            // Time-weighted: a sample after a long silence (a re-probe) says
            // more about now than the old average does, so it weighs in by
            // how long the backend went unmeasured.
            let silence = now.saturating_sub(stats.stamp_us) as f64;
            let weight = alpha.max(1.0 - (-silence * SILENCE_WEIGHT / decay_us).exp());
            let slot = &mut stats.latency_us[level(rif)];
            let ratio = slot.map_or(1.0, |old| if old > 0.0 { sample_us / old } else { 1.0 });
            *slot = Some(slot.map_or(sample_us, |old| old + weight * (sample_us - old)));
            let drift = if stats.drift > 0.0 { stats.drift } else { 1.0 };
            stats.drift = drift + DRIFT_ALPHA * (ratio - drift);
        }
        // Failures are rarer than latency samples and matter longer: a slower average.
        stats.failure_rate += alpha * FAILURE_ALPHA_SHARE * (f64::from(u8::from(failed)) - stats.failure_rate);
        if failed {
            stats.failure_latency_us += alpha * (sample_us - stats.failure_latency_us);
            stats.streak = 0;
        } else {
            stats.streak = stats.streak.saturating_add(1);
        }
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
        let before = h.policy().stats.get(&ids[0]).map(|s| (s.failure_rate, s.latency_us, s.samples));
        for _ in 0..200 {
            h.complete_with_error(ids[0], 0, veer_sdk::ErrorKind::NotSent);
        }
        let after = h.policy().stats.get(&ids[0]).map(|s| (s.failure_rate, s.latency_us, s.samples));
        assert_eq!(before, after);
        // And a broken-off attempt of its own still ends that attempt.
        let picked = h.pick().unwrap();
        h.complete_with_error(picked, 0, veer_sdk::ErrorKind::NotSent);
        assert!(h.policy().stats[&picked].sent_at_rif.is_empty());
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
    }

    #[test]
    fn levels_cover_every_rif() {
        assert_eq!(level(0), 0);
        assert_eq!(level(1), 0);
        assert_eq!(level(8), 7);
        assert_eq!(level(9), 8);
        assert_eq!(level(32), 11);
        assert_eq!(level(u32::MAX), 12);
    }
}
