//! Smooth weighted round robin: exact weight ratios without bursts, O(1) per pick
//! when all weights are equal and O(log k) with k distinct weights — never
//! dependent on the number of backends.
//!
//! Implemented as earliest-deadline-first scheduling, as Envoy does. Every
//! eligible backend has a virtual deadline; a pick takes the smallest and moves
//! that backend's deadline on by its step, `STEP / weight` with `STEP = 2^40`.
//! Virtual time is the deadline of the latest pick; all arithmetic is in `u128`
//! integers, so it neither overflows nor drifts (the rounding of `STEP / weight`
//! changes a ratio by less than 10⁻⁶ in the worst case, weight 1 000 000, and by
//! nothing measurable for common weights).
//!
//! Instead of one priority queue over all backends, backends are grouped by
//! weight. Members of a class share a step, so their order by deadline never
//! changes: the class is a ring, and picking its first member moves it to the
//! back in O(1). Only the k classes are ordered, by their first deadline (exact
//! ties go to the class created first), in a tree of k entries. Joining, leaving
//! and weight changes cost O(class size) — rare events.
//!
//! Properties, each proven by a test below:
//!
//! * **Exact ratios.** A backend's deadlines are spaced by its step, so any
//!   stretch of virtual time of length `STEP` holds exactly `weight` of them.
//!   When the backends joined together (start-up, or a fresh pool), the first `W`
//!   picks (`W` the sum of the weights) give every backend exactly its weight,
//!   and so does every following cycle of `W` picks: weights 5:3:1 give exactly
//!   5/3/1 in every aligned window of 9 picks. Over any long stretch of picks
//!   each backend stays within 1% (or one pick) of its exact share.
//! * **No bursts.** A backend joining the schedule starts at `phase × step` past
//!   the current virtual time. The first backend of a given weight gets phase ½
//!   (the classic `step / 2`, which interleaves a heavy backend with light ones);
//!   later backends of the *same* weight get ¼, ¾, ⅛, ⅝, … (the van der Corput
//!   sequence), so equal backends are spread over the cycle instead of all coming
//!   due at once. With weights 5, 1, 1 the heavy backend is never picked more than
//!   3 times in a row, which is the least possible (5 picks between 2 others).
//!   In general a backend of weight `w` is never picked more than
//!   `⌊w / w_max⌋ + 1` times in a row, `w_max` the heaviest *other* eligible
//!   backend: each other backend comes due at least once per its own step.
//! * **Changes take effect at the next pick.** Membership, weight and eligibility
//!   events update the schedule at once, keeping relative progress: a backend
//!   whose weight changes keeps the fraction of its step it still had to wait,
//!   rescaled to the new step; a backend that becomes ineligible remembers how far
//!   it was from its deadline and resumes from there when it comes back, so a
//!   returning backend neither jumps the queue nor "catches up" with a burst.
//! * **Exclude.** A retry that must avoid the due backend takes the next one; the
//!   excluded backend keeps its deadline and is picked next, so the ratios stay
//!   exact.
//!
//! Weight 0 is never sent by the host (weights are 1..=1 000 000) and is treated
//! as 1.
//!
//! # Parameters
//!
//! None.

use std::collections::{BTreeSet, HashMap, VecDeque};

use veer_sdk::{BackendEvent, BackendId, Params, PickContext, Policy, Pool};

/// Virtual time one backend of weight 1 waits between two picks.
const STEP: u128 = 1 << 40;

#[derive(Debug, Clone, Copy)]
struct Entry {
    weight: u32,
    /// Index of its weight class in `classes`.
    class: usize,
    /// `None` while eligible (it is in its class's ring); when ineligible, the
    /// virtual time it still had to wait when it left.
    parked: Option<u128>,
}

/// The eligible backends of one weight. They share a step, so their order by
/// deadline never changes: picking the first moves it to the back.
#[derive(Debug)]
struct Class {
    step: u128,
    /// Backends that ever joined with this weight, for staggering their phases.
    joined: u64,
    /// Eligible members by deadline, earliest first.
    ring: VecDeque<(u128, BackendId)>,
    /// The deadline under which the class is filed in `heads`, if it is.
    filed: Option<u128>,
}

/// The smooth weighted round-robin policy. Takes no parameters.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Virtual time: the deadline of the latest pick.
    now: u128,
    /// Every known backend, eligible or not.
    entries: HashMap<BackendId, Entry>,
    /// Weight classes, never removed (there are few, and they come back).
    classes: Vec<Class>,
    class_of: HashMap<u32, usize>,
    /// Non-empty classes by their first deadline, then index.
    heads: BTreeSet<(u128, usize)>,
}

/// The `n`-th (from 1) point of the base-2 van der Corput sequence (½, ¼, ¾, ⅛,
/// …) as a fraction of `step`.
fn phase(step: u128, n: u64) -> u128 {
    (step * u128::from(n.reverse_bits())) >> 64
}

impl WeightedRoundRobin {
    fn class_for(&mut self, weight: u32) -> usize {
        *self.class_of.entry(weight).or_insert_with(|| {
            let step = STEP / u128::from(weight);
            self.classes.push(Class { step, joined: 0, ring: VecDeque::new(), filed: None });
            self.classes.len() - 1
        })
    }

    /// Files class `c` in `heads` under its current first deadline.
    fn refile(&mut self, c: usize) {
        let class = &mut self.classes[c];
        let first = class.ring.front().map(|(deadline, _)| *deadline);
        if first != class.filed {
            if let Some(old) = class.filed {
                self.heads.remove(&(old, c));
            }
            if let Some(new) = first {
                self.heads.insert((new, c));
            }
            class.filed = first;
        }
    }

    /// Puts `id` in class `c`'s ring at `deadline`: O(1) at the back (the usual
    /// case), else O(class size).
    fn schedule(&mut self, c: usize, id: BackendId, deadline: u128) {
        let ring = &mut self.classes[c].ring;
        if ring.back().is_none_or(|(last, _)| *last <= deadline) {
            ring.push_back((deadline, id));
        } else {
            let at = ring.partition_point(|(d, _)| *d <= deadline);
            ring.insert(at, (deadline, id));
        }
        self.refile(c);
    }

    /// Takes `id` out of class `c`'s ring; its deadline. O(class size), for events.
    fn unschedule(&mut self, c: usize, id: BackendId) -> Option<u128> {
        let ring = &mut self.classes[c].ring;
        let at = ring.iter().position(|(_, member)| *member == id)?;
        let (deadline, _) = ring.remove(at)?;
        self.refile(c);
        Some(deadline)
    }

    /// Brings the schedule for `id` in line with the pool.
    fn sync(&mut self, pool: &Pool, id: BackendId) {
        let Some(backend) = pool.get(id) else {
            if let Some(Entry { class, parked: None, .. }) = self.entries.remove(&id) {
                self.unschedule(class, id);
            }
            return;
        };
        let weight = backend.weight.max(1);
        let mut entry = match self.entries.get(&id) {
            Some(entry) => *entry,
            None => {
                let c = self.class_for(weight);
                let class = &mut self.classes[c];
                class.joined += 1;
                Entry { weight, class: c, parked: Some(phase(class.step, class.joined)) }
            }
        };
        if entry.weight != weight {
            // Keep the fraction of the step it still had to wait, on the new step.
            let old_step = self.classes[entry.class].step;
            let remaining = match entry.parked {
                Some(remaining) => remaining,
                None => self.unschedule(entry.class, id).map_or(0, |deadline| deadline.saturating_sub(self.now)),
            };
            let c = self.class_for(weight);
            let step = self.classes[c].step;
            entry = Entry { weight, class: c, parked: Some((remaining * step / old_step).min(step)) };
        }
        match (pool.is_eligible(id), entry.parked) {
            (true, Some(remaining)) => {
                self.schedule(entry.class, id, self.now + remaining);
                entry.parked = None;
            }
            (false, None) => {
                let deadline = self.unschedule(entry.class, id).unwrap_or(self.now);
                entry.parked = Some(deadline.saturating_sub(self.now).min(self.classes[entry.class].step));
            }
            _ => {}
        }
        self.entries.insert(id, entry);
    }

    /// Rebuilds the schedule from the pool, keeping what is known. Only needed
    /// when the policy missed events (the SDK re-configures by building a fresh
    /// policy without replaying the backend set); O(n log n).
    fn resync(&mut self, pool: &Pool) {
        let gone: Vec<BackendId> = self.entries.keys().copied().filter(|id| pool.get(*id).is_none()).collect();
        let mut ids: Vec<BackendId> = pool.backends().map(|b| b.id).collect();
        ids.sort_unstable();
        for id in gone.into_iter().chain(ids) {
            self.sync(pool, id);
        }
    }
}

impl Policy for WeightedRoundRobin {
    const NAME: &'static str = "weighted-rr";

    fn configure(params: &Params) -> Result<Self, String> {
        params.reader().finish()?;
        Ok(WeightedRoundRobin::default())
    }

    fn backends_changed(&mut self, pool: &Pool, events: &[BackendEvent]) {
        for event in events {
            let id = match event {
                BackendEvent::Added(b) | BackendEvent::Updated(b) => b.id,
                BackendEvent::Removed(id) => *id,
                BackendEvent::Eligibility((id, _)) => *id,
            };
            self.sync(pool, id);
        }
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        if self.entries.len() != pool.len() {
            self.resync(pool);
        }
        let mut heads = self.heads.iter();
        let &(_, c) = heads.next()?;
        let (c, at) = if Some(self.classes[c].ring.front()?.1) != ctx.exclude {
            (c, 0)
        } else {
            // The due backend is excluded: the next in its class, or the first of
            // the next class, whichever is due first.
            let same = self.classes[c].ring.get(1).map(|(deadline, _)| (*deadline, c, 1));
            let other = heads.next().map(|(deadline, c)| (*deadline, *c, 0));
            let (_, c, at) = match (same, other) {
                (Some(same), Some(other)) => same.min(other),
                (same, other) => same.or(other)?,
            };
            (c, at)
        };
        let class = &mut self.classes[c];
        let (deadline, id) = class.ring.remove(at)?;
        self.now = self.now.max(deadline);
        let next = deadline + class.step;
        self.schedule(c, id, next);
        Some(id)
    }
}

veer_sdk::export_policy!(WeightedRoundRobin);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use veer_sdk::testing::{Harness, SimRng};

    fn harness(weights: &[u32]) -> (Harness<WeightedRoundRobin>, Vec<BackendId>) {
        let mut h = Harness::<WeightedRoundRobin>::new(&[]).unwrap();
        let ids = weights.iter().enumerate().map(|(i, w)| h.add_backend(&format!("b{i}"), *w)).collect();
        (h, ids)
    }

    fn sequence(h: &mut Harness<WeightedRoundRobin>, n: usize) -> Vec<BackendId> {
        (0..n).map(|_| h.pick().unwrap()).collect()
    }

    fn count(picks: &[BackendId]) -> HashMap<BackendId, usize> {
        let mut counts = HashMap::new();
        for id in picks {
            *counts.entry(*id).or_default() += 1;
        }
        counts
    }

    /// Longest run of consecutive picks of `id`.
    fn longest_run(picks: &[BackendId], id: BackendId) -> usize {
        picks.split(|p| *p != id).map(<[BackendId]>::len).max().unwrap_or(0)
    }

    #[test]
    fn ratios_are_exact_over_every_cycle() {
        let (mut h, ids) = harness(&[5, 3, 1]);
        let picks = sequence(&mut h, 900);
        let counts = count(&picks);
        assert_eq!((counts[&ids[0]], counts[&ids[1]], counts[&ids[2]]), (500, 300, 100));
        for window in picks.chunks(9) {
            let counts = count(window);
            assert_eq!((counts[&ids[0]], counts[&ids[1]], counts[&ids[2]]), (5, 3, 1), "{window:?}");
        }
    }

    #[test]
    fn a_heavy_backend_is_interleaved_with_light_ones() {
        // Every order of joining, one by one or in one batch: never more than 3 in a row.
        for order in [[0, 1, 2], [1, 2, 0], [1, 0, 2]] {
            let weights = [5, 1, 1];
            let mut h = Harness::<WeightedRoundRobin>::new(&[]).unwrap();
            let mut ids = [0; 3];
            for i in order {
                ids[i] = h.add_backend(&format!("b{i}"), weights[i]);
            }
            let picks = sequence(&mut h, 700);
            assert_eq!(longest_run(&picks, ids[0]), 3, "order {order:?}: {:?}", &picks[..14]);
            assert_eq!(count(&picks)[&ids[0]], 500);
        }
        let mut h = Harness::<WeightedRoundRobin>::new(&[]).unwrap();
        let backends: Vec<_> = [5, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, w)| veer_sdk::Backend {
                id: 10 + i as u32,
                name: format!("b{i}"),
                address: format!("127.0.0.1:{}", 9000 + i),
                weight: *w,
                labels: vec![],
            })
            .collect();
        h.send(backends.into_iter().map(BackendEvent::Added).collect());
        let picks = sequence(&mut h, 700);
        assert_eq!(longest_run(&picks, 10), 3);
        // The light ones are spread too: never back to back.
        assert!(picks.windows(2).all(|w| w[0] == 10 || w[1] == 10), "{:?}", &picks[..14]);
    }

    #[test]
    fn no_backend_ever_bursts_past_its_bound() {
        let mut rng = SimRng::new(7);
        for _ in 0..20 {
            let weights: Vec<u32> = (0..6).map(|_| 1 + (rng.unit() * 20.0) as u32).collect();
            let (mut h, ids) = harness(&weights);
            let picks = sequence(&mut h, 2_000);
            for (i, id) in ids.iter().enumerate() {
                let heaviest_other = weights.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, w)| *w).max();
                let bound = (weights[i] / heaviest_other.unwrap()) as usize + 1;
                assert!(longest_run(&picks, *id) <= bound, "weights {weights:?}: backend {i} ran past {bound}");
            }
        }
    }

    #[test]
    fn equal_weights_behave_like_round_robin() {
        let (mut h, ids) = harness(&[4, 4, 4, 4, 4]);
        let picks = sequence(&mut h, 500);
        for window in picks.chunks(5) {
            let mut seen = window.to_vec();
            seen.sort_unstable();
            assert_eq!(seen, ids, "every backend once per round");
        }
        // And the rotation order stays the same from one round to the next.
        assert!(picks.windows(6).all(|w| w[0] == w[5]));
    }

    #[test]
    fn a_weight_change_takes_effect_at_the_next_pick() {
        let (mut h, ids) = harness(&[1, 1]);
        sequence(&mut h, 101);
        h.set_weight(ids[1], 3);
        let counts = count(&sequence(&mut h, 400));
        assert!(counts[&ids[0]].abs_diff(100) <= 1, "{counts:?}");
        assert!(counts[&ids[1]].abs_diff(300) <= 1, "{counts:?}");
        // And back down.
        h.set_weight(ids[1], 1);
        let counts = count(&sequence(&mut h, 200));
        assert!(counts[&ids[0]].abs_diff(100) <= 1, "{counts:?}");
    }

    #[test]
    fn eligibility_changes_neither_stall_nor_burst() {
        let (mut h, ids) = harness(&[1, 1, 1]);
        sequence(&mut h, 10);
        h.set_eligible(ids[0], false);
        let picks = sequence(&mut h, 100);
        assert!(!picks.contains(&ids[0]));
        assert_eq!(count(&picks)[&ids[1]], 50);
        h.set_eligible(ids[0], true);
        let picks = sequence(&mut h, 30);
        assert!(picks.chunks(3).all(|round| round.contains(&ids[0])), "{picks:?}: no catch-up burst, no starvation");
    }

    #[test]
    fn excluded_backends_are_skipped_without_upsetting_the_ratio() {
        let (mut h, ids) = harness(&[2, 1]);
        let mut picks = Vec::new();
        for i in 0..300 {
            // Every third request is a retry that must avoid the previous backend.
            let id = match picks.last() {
                Some(last) if i % 3 == 2 => h.pick_excluding(*last).unwrap(),
                _ => h.pick().unwrap(),
            };
            if i % 3 == 2 {
                assert_ne!(Some(&id), picks.last());
            }
            picks.push(id);
        }
        let counts = count(&picks);
        assert!(counts[&ids[0]].abs_diff(200) <= 1, "{counts:?}");
        // The due backend, when excluded, is the next one picked, and the rotation resumes.
        let (mut h, _) = harness(&[1, 1, 1]);
        let round = sequence(&mut h, 3);
        let due = round[0];
        assert_eq!(h.pick_excluding(due), Some(round[1]));
        assert_eq!(h.pick(), Some(due));
        assert_eq!(h.pick(), Some(round[2]));
        assert_eq!(sequence(&mut h, 6), [round.clone(), round].concat());
    }

    #[test]
    fn answers_none_when_nothing_is_eligible() {
        let mut h = Harness::<WeightedRoundRobin>::new(&[]).unwrap();
        assert_eq!(h.pick(), None);
        let id = h.add_backend("only", 1);
        assert_eq!(h.pick_excluding(id), None);
        assert_eq!(h.pick(), Some(id));
        h.set_eligible(id, false);
        assert_eq!(h.pick(), None);
        h.remove_backend(id);
        assert_eq!(h.pick(), None);
    }

    #[test]
    fn removed_backends_are_forgotten() {
        let (mut h, ids) = harness(&[3, 1, 1]);
        sequence(&mut h, 7);
        h.remove_backend(ids[0]);
        let counts = count(&sequence(&mut h, 100));
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&ids[1]], 50);
        assert_eq!(h.policy().entries.len(), 2);
        assert!(h.policy().classes.iter().all(|class| class.ring.len() <= 2));
    }

    #[test]
    fn a_thousand_backends_with_random_weights_keep_their_ratios() {
        let mut rng = SimRng::new(42);
        let weights: Vec<u32> = (0..1000).map(|_| 1 + (rng.unit() * 100.0) as u32).collect();
        let (mut h, ids) = harness(&weights);
        let total: usize = weights.iter().map(|w| *w as usize).sum();
        // A full cycle of W picks gives every backend exactly its weight, and so does the next.
        for _ in 0..2 {
            let counts = count(&sequence(&mut h, total));
            for (id, w) in ids.iter().zip(&weights) {
                assert_eq!(counts[id], *w as usize);
            }
        }
        // Any long stretch keeps every backend within 1% of its share (or one pick).
        let n = total * 13 / 2;
        let counts = count(&sequence(&mut h, n));
        for (id, w) in ids.iter().zip(&weights) {
            let expected = n as f64 * f64::from(*w) / total as f64;
            let error = (counts[id] as f64 - expected).abs();
            assert!(error <= (expected * 0.01).max(1.0), "weight {w}: {} against {expected:.1}", counts[id]);
        }
    }

    #[test]
    fn keeps_working_after_a_reconfigure() {
        let (mut h, ids) = harness(&[2, 1]);
        h.reconfigure(&[]).unwrap();
        let counts = count(&sequence(&mut h, 300));
        assert_eq!((counts[&ids[0]], counts[&ids[1]]), (200, 100));
    }

    #[test]
    fn rejects_parameters() {
        let err = Harness::<WeightedRoundRobin>::new(&[("smooth", "true")]).unwrap_err();
        assert!(err.contains("unknown parameter 'smooth'"), "{err}");
    }
}
