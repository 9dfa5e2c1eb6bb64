//! How a backend's latency grows with the requests in flight there.

use std::collections::VecDeque;

/// RIF levels: 1..=8 each, then 9–12, 13–16, 17–24, 25–32, and 33 and more.
const LEVELS: usize = 13;
/// Attempts remembered per backend for filing their outcomes by RIF.
const MAX_OUTSTANDING: usize = 1024;

/// The RIF level `rif` requests in flight fall in: `0` is one in flight.
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

/// The lowest RIF of each level.
const LEVEL_START: [u32; LEVELS] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 25, 33];

/// One backend's latency at each number of requests in flight (RIF),
/// relative to its latency with one in flight: its *shape*. A backend with
/// ten parallel slots has a flat shape up to ten; a single-threaded one a
/// line through (1, 1), (2, 2), …
///
/// The shape is what capacity does to latency; how fast the backend is at
/// the moment (its *speed*, the latency with one in flight) is the policy's
/// own estimate, kept however it likes. Dividing a sample by the shape at
/// the load it was sent at tells the speed from an attempt at any load, and
/// `speed × shape_at(rif)` is what a request sent at `rif` should take. A
/// cost of `speed × (in_flight + 1)` instead (the single-server queue of
/// linkerd's peak EWMA) buries a backend with ten slots under a load it
/// serves at speed, and one divided by configured weights trusts weights
/// that may be wrong.
///
/// Each sample is filed under the RIF its attempt was *sent* at: the shape
/// keeps the RIF and the time of each attempt not answered yet
/// ([`LoadShape::sent`], [`LoadShape::answered`]: an answer is matched to
/// the attempt sent closest to its latency before it). The oldest of them
/// tells a wait no answer has told yet ([`LoadShape::speed_at_least_us`]): a
/// request still unanswered after 100 ms at a backend that answers in 5 ms
/// is news before its timeout is.
///
/// ```
/// use veer_sdk::LoadShape;
/// // A backend serving two at once at 10 ms, and queueing beyond.
/// let mut shape = LoadShape::default();
/// for rif in [1, 2, 3, 4] {
///     shape.learn(rif, 10_000.0 * f64::from(rif.max(2)) / 2.0, 10_000.0, 1.0);
/// }
/// assert_eq!(shape.at(2), 1.0);
/// assert_eq!(shape.at(4), 2.0);
/// // Not measured at 5 yet: as at 4, until a request there tells.
/// assert_eq!(shape.at(5), 2.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadShape {
    /// Latency per RIF level relative to the speed, once sampled there;
    /// level 0 (one in flight) is 1 by definition and never set.
    levels: [Option<f64>; LEVELS],
    /// The RIF each attempt of the policy's there was sent at, and when
    /// (µs), oldest first.
    sent_at: VecDeque<(u32, u64)>,
    /// What a success takes with one in flight, for a policy that lets the
    /// shape keep it ([`LoadShape::learn_success`]); 0 before the first.
    unloaded: f64,
}

impl LoadShape {
    /// What each other request in flight adds to a cost at the least, as a
    /// share of the latency with one in flight: a tie-break, so backends
    /// that do not slow down under load still share it.
    pub const TIE_BREAK: f64 = 0.05;

    /// The shape at `rif` requests in flight: how many times its latency with
    /// one in flight a request sent there should take (at least 1).
    ///
    /// A level not measured yet has the shape of the nearest lower level
    /// that was (1 if none): optimistic on purpose, since one request there
    /// measures it, while a pessimistic guess (a single server's line, say)
    /// keeps the level from ever being tried and so from being corrected: a
    /// backend with ten slots would be held to one. More in flight never
    /// makes a backend faster: a measured shape below 1 is noise, or was
    /// learned while the speed was still catching up with a change, and is
    /// read as 1.
    pub fn at(&self, rif: u32) -> f64 {
        (1..=level(rif)).rev().find_map(|l| self.levels[l]).unwrap_or(1.0).max(1.0)
    }

    /// [`LoadShape::at`], but cautious where nothing was measured near:
    /// more than one level above the highest level measured, the shape
    /// grows from there as a single server's would. So a backend whose
    /// capacity is unknown (new, or whose answers never came) takes load a
    /// level at a time, each level measured before the next is believed,
    /// rather than everything before its first answer; a backend that
    /// hangs is found out after a request or two, not after the whole load.
    pub fn cautious_at(&self, rif: u32) -> f64 {
        self.cautious_below(rif, self.highest_measured())
    }

    /// The highest level measured (0 if none).
    fn highest_measured(&self) -> usize {
        (1..LEVELS).rev().find(|l| self.levels[*l].is_some()).unwrap_or(0)
    }

    /// [`LoadShape::cautious_at`] with the highest level measured known.
    fn cautious_below(&self, rif: u32, highest: usize) -> f64 {
        let shape = self.at(rif);
        if level(rif) <= highest + 1 {
            return shape;
        }
        shape * f64::from(rif) / f64::from(LEVEL_START[highest + 1])
    }

    /// What one more request costs all the requests there together, in
    /// units of the latency with one in flight, when it makes `rif`:
    /// `rif × shape(rif) − (rif − 1) × shape(rif − 1)`, from
    /// [`LoadShape::cautious_at`], and at least its own shape.
    ///
    /// Its own latency alone is the selfish choice: a 3 ms backend with two
    /// slots looks better than an idle 10 ms one until six wait there (9 ms),
    /// yet past two it serves no more per second, and clients queueing
    /// there are clients not using the idle slots elsewhere (86% of the
    /// reference in `load-sensitive`). The sum of the latencies of the
    /// requests in flight is what clients wait in all; its growth is what a
    /// request adds to it: the wait it takes plus the wait it adds to the
    /// others by queueing beside them. Where latency does not grow with
    /// load the two are the same.
    pub fn marginal_at(&self, rif: u32) -> f64 {
        let rif = rif.max(1);
        let highest = self.highest_measured();
        let own = self.cautious_below(rif, highest);
        let before = f64::from(rif - 1) * if rif > 1 { self.cautious_below(rif - 1, highest) } else { 0.0 };
        (f64::from(rif) * own - before).max(own)
    }

    /// How many times its latency with one in flight one more request costs
    /// when it makes `rif`: [`LoadShape::marginal_at`], and at least
    /// `1 + (rif − 1) × tie_break` (per request in flight, usually
    /// [`LoadShape::TIE_BREAK`], scaled as the policy likes: by weight, say).
    pub fn cost_factor(&self, rif: u32, tie_break: f64) -> f64 {
        self.marginal_at(rif).max(1.0 + f64::from(rif.saturating_sub(1)) * tie_break)
    }

    /// The shape measured at `rif`'s level, if it was (`Some(1.0)` at one in
    /// flight).
    pub fn measured(&self, rif: u32) -> Option<f64> {
        match level(rif) {
            0 => Some(1.0),
            at => self.levels[at],
        }
    }

    /// Learns from a successful attempt sent at `rif` that took `sample_us`,
    /// for a backend whose speed is `speed_us`: the level's shape moves by
    /// `alpha` towards `sample_us / speed_us` (or takes it, unmeasured).
    pub fn learn(&mut self, rif: u32, sample_us: f64, speed_us: f64, alpha: f64) {
        let at = level(rif);
        let relative = sample_us / speed_us;
        if at == 0 || !relative.is_finite() || relative < 0.0 {
            return;
        }
        // More in flight never makes a backend faster: a relative latency
        // below 1 is noise, or the speed catching up with a change (a
        // backend that got 100× faster looks 100× faster than its shape for
        // a while); learned as such it would take dozens of samples to
        // climb back once the backend queues.
        let relative = relative.max(1.0);
        let slot = &mut self.levels[at];
        *slot = Some(slot.map_or(relative, |old| old + alpha * (relative - old)));
    }

    /// Learns from a success sent at `rif` that took `latency`, for a policy
    /// that lets the shape keep the backend's latency with one in flight
    /// (an EWMA of successes each divided by the shape at its RIF, by
    /// `alpha`): the level's shape moves against it if the backend is in
    /// `steady` use (after a silence it may have changed, and the success
    /// replaces what was known). Returns the success's latency as it would
    /// have been with one in flight, in the unit of `latency`.
    ///
    /// Learned against a latency estimate that also holds failures'
    /// penalties, or that fades between samples, the shape drifts (against
    /// q-learning's fading value, backends with no capacity limit reached a
    /// shape of 1.8 at five in flight).
    pub fn learn_success(&mut self, rif: u32, latency: f64, steady: bool, alpha: f64) -> f64 {
        let steady = steady && self.unloaded > 0.0;
        if steady {
            self.learn(rif, latency, self.unloaded, alpha);
        }
        let unloaded = latency / self.at(rif);
        self.unloaded = if steady { self.unloaded + (unloaded - self.unloaded) * alpha } else { unloaded };
        unloaded
    }

    /// An attempt of the policy's was sent at `now` with `rif` in flight
    /// (itself included).
    pub fn sent(&mut self, rif: u32, now: u64) {
        // Bounded: outcomes lost to a replaced instance must not grow it forever.
        if self.sent_at.len() >= MAX_OUTSTANDING {
            self.sent_at.pop_front();
        }
        self.sent_at.push_back((rif, now));
    }

    /// An attempt of the policy's there ended at `now` after `latency_us`:
    /// the RIF it was sent at, if one is outstanding. The attempt is the one
    /// sent closest to `now − latency_us` (the oldest of equals), so one
    /// that hangs while later ones are answered stays outstanding. Call it
    /// for every outcome of a pick of the policy's, `not-sent` ones too.
    pub fn answered(&mut self, now: u64, latency_us: u64) -> Option<u32> {
        let started = now.saturating_sub(latency_us);
        let (at, _) = self.sent_at.iter().enumerate().min_by_key(|(_, (_, sent))| sent.abs_diff(started))?;
        self.sent_at.remove(at).map(|(rif, _)| rif)
    }

    /// The least the backend's latency with one in flight can be, µs, given
    /// that the oldest attempt not answered yet has waited this long at the
    /// load it was sent at (0 with none). A backend that hangs shows it
    /// here while its clients wait, not at its timeout.
    ///
    /// `in_flight` is what the host counts in flight there now: attempts
    /// older than the newest `in_flight` cannot still be waiting, so an
    /// outcome the policy never heard of (a broken contract, a lost
    /// instance) does not make the backend look slower for ever.
    pub fn speed_at_least_us(&self, now: u64, in_flight: u32) -> f64 {
        let stale = self.sent_at.len().saturating_sub(in_flight as usize);
        self.sent_at.get(stale).map_or(0.0, |(rif, sent)| now.saturating_sub(*sent) as f64 / self.at(*rif))
    }

    /// Attempts sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.sent_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_cover_every_rif_in_order() {
        assert_eq!(level(0), 0);
        assert_eq!(level(1), 0);
        assert_eq!(level(8), 7);
        assert_eq!(level(9), 8);
        assert_eq!(level(32), 11);
        assert_eq!(level(u32::MAX), 12);
        let levels: Vec<usize> = (1..=40).map(level).collect();
        assert!(levels.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
    }

    #[test]
    fn an_unmeasured_level_is_read_as_the_nearest_lower_measured_one() {
        let mut shape = LoadShape::default();
        assert_eq!(shape.at(4), 1.0, "nothing measured");
        assert_eq!(shape.at(0), 1.0);
        shape.learn(2, 20_000.0, 10_000.0, 0.1);
        assert_eq!(shape.at(2), 2.0);
        assert_eq!(shape.at(7), 2.0);
        assert_eq!(shape.measured(7), None);
        // A measured level is the measurement.
        shape.learn(3, 12_000.0, 10_000.0, 0.1);
        assert_eq!(shape.at(3), 1.2);
        assert_eq!(shape.at(100), 1.2);
    }

    #[test]
    fn caution_takes_unknown_load_a_level_at_a_time() {
        let mut shape = LoadShape::default();
        // Nothing measured: one more level is believed flat, the next grows.
        assert_eq!(shape.cautious_at(2), 1.0);
        assert_eq!(shape.cautious_at(3), 1.5);
        assert_eq!(shape.cautious_at(8), 4.0);
        // Measured flat up to 2: 3 is believed, 4 grows from there.
        shape.learn(2, 10_000.0, 10_000.0, 0.1);
        assert_eq!(shape.cautious_at(3), 1.0);
        assert_eq!(shape.cautious_at(6), 2.0);
        assert_eq!(shape.at(6), 1.0, "the plain reading stays optimistic");
    }

    #[test]
    fn the_marginal_cost_counts_the_wait_added_to_the_others() {
        let mut single = LoadShape::default();
        let mut two_slots = LoadShape::default();
        for rif in 2..=4u32 {
            single.learn(rif, f64::from(rif), 1.0, 1.0);
            two_slots.learn(rif, f64::from(rif.max(2)) / 2.0, 1.0, 1.0);
        }
        assert_eq!(single.marginal_at(1), 1.0);
        // 3 × 3 − 2 × 2: the third waits 3, and the two before wait as long.
        assert_eq!(single.marginal_at(3), 5.0);
        assert_eq!(two_slots.marginal_at(2), 1.0, "a free slot costs its own latency");
        assert_eq!(two_slots.marginal_at(3), 2.5);
        assert_eq!(two_slots.marginal_at(4), 4.0 * 2.0 - 3.0 * 1.5);
        // Never below the request's own latency, whatever noise says.
        let mut noisy = LoadShape::default();
        noisy.learn(2, 3.0, 1.0, 1.0);
        noisy.learn(3, 1.0, 1.0, 1.0);
        assert_eq!(noisy.marginal_at(3), 1.0, "3 × 1 − 2 × 3 is no cost");
        assert!(noisy.marginal_at(3) >= noisy.at(3));
    }

    #[test]
    fn a_success_teaches_the_shape_against_the_unloaded_latency_it_keeps() {
        let mut shape = LoadShape::default();
        // The first success sets the unloaded latency; steady or not, there
        // is nothing yet to learn the shape against.
        assert_eq!(shape.learn_success(1, 10.0, true, 0.5), 10.0);
        assert_eq!(shape.measured(3), None);
        // At three in flight it took 30: the shape there is 3, and divided
        // by it the success says 10 with one in flight.
        assert_eq!(shape.learn_success(3, 30.0, true, 0.5), 10.0);
        assert_eq!(shape.measured(3), Some(3.0));
        // After a silence the backend may have changed: the shape is left
        // alone and the success replaces the unloaded latency.
        assert_eq!(shape.learn_success(1, 2.0, false, 0.5), 2.0);
        assert_eq!(shape.measured(3), Some(3.0));
        assert_eq!(shape.learn_success(1, 4.0, true, 0.5), 4.0);
        assert_eq!(shape.unloaded, 3.0, "moved by alpha from 2 towards 4");
    }

    #[test]
    fn the_cost_factor_is_the_marginal_cost_with_a_tie_break_floor() {
        let mut shape = LoadShape::default();
        for rif in 2..=5u32 {
            shape.learn(rif, 1.0, 1.0, 1.0);
        }
        assert_eq!(shape.cost_factor(1, LoadShape::TIE_BREAK), 1.0);
        assert_eq!(shape.cost_factor(5, LoadShape::TIE_BREAK), 1.2, "flat: the tie-break");
        assert_eq!(shape.cost_factor(5, 0.0), 1.0);
        let mut queueing = LoadShape::default();
        queueing.learn(2, 2.0, 1.0, 1.0);
        assert_eq!(queueing.cost_factor(2, LoadShape::TIE_BREAK), 3.0, "queueing: the marginal cost");
    }

    #[test]
    fn a_shape_moves_by_alpha_and_never_below_one() {
        let mut shape = LoadShape::default();
        shape.learn(5, 30_000.0, 10_000.0, 0.5);
        shape.learn(5, 10_000.0, 10_000.0, 0.5);
        assert_eq!(shape.measured(5), Some(2.0));
        shape.learn(6, 5_000.0, 10_000.0, 0.5);
        assert_eq!(shape.at(6), 1.0);
        // Nonsense is ignored.
        shape.learn(7, 1.0, 0.0, 0.5);
        shape.learn(7, f64::NAN, 1.0, 0.5);
        assert_eq!(shape.measured(7), None);
        assert_eq!(shape.measured(1), Some(1.0));
    }

    #[test]
    fn answers_are_filed_under_the_rif_of_the_attempt_they_answer() {
        let mut shape = LoadShape::default();
        shape.sent(1, 1_000);
        shape.sent(2, 2_000);
        shape.sent(3, 3_000);
        assert_eq!(shape.outstanding(), 3);
        assert_eq!(shape.speed_at_least_us(10_000, 3), 9_000.0);
        // The second one is answered first, after 8 ms; the first hangs.
        assert_eq!(shape.answered(10_000, 8_000), Some(2));
        assert_eq!(shape.answered(11_000, 8_000), Some(3));
        assert_eq!(shape.speed_at_least_us(50_000, 1), 49_000.0, "the hanging one is still waiting");
        assert_eq!(shape.speed_at_least_us(50_000, 0), 0.0, "the host has nothing in flight there");
        assert_eq!(shape.answered(60_000, 59_000), Some(1));
        assert_eq!(shape.answered(60_000, 0), None);
        assert_eq!(shape.speed_at_least_us(60_000, 1), 0.0);
        for rif in 0..(MAX_OUTSTANDING as u32 + 10) {
            shape.sent(rif, u64::from(rif));
        }
        assert_eq!(shape.outstanding(), MAX_OUTSTANDING);
        assert_eq!(shape.speed_at_least_us(2_000, u32::MAX), 2_000.0 - 10.0, "the oldest are dropped");
    }
}
