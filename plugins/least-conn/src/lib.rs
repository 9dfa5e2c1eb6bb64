//! Least connections: the eligible backend with the fewest requests in flight.
//!
//! The plugin counts in-flight requests itself: +1 when `pick` returns a backend,
//! −1 when that attempt's outcome arrives (`observe` with `picked`; the contract
//! guarantees exactly one per pick, and the count never goes below zero).
//! Outcomes of attempts the host routed itself (`picked == false`) were never
//! counted, so they are ignored. A backend that turns ineligible keeps its count
//! (its requests are still running and will report); a removed one is forgotten.
//!
//! A pick or an outcome costs O(1) when all weights are equal (or
//! `weighted=false`) and O(log k) with k distinct weights — never dependent on
//! the number of backends. Equally loaded backends take turns: with instant
//! completions and equal weights this is exact round robin.
//!
//! The load key is `(in_flight + 1) / weight`: the backend's load per unit of
//! weight if it got this request. It is computed exactly in integers as
//! `((in_flight + 1) << 64) / weight` (`u128`); with weights up to 1 000 000
//! two different fractions always get different keys, in the right order. With
//! `weighted=false` every weight counts as 1.
//!
//! How: backends are grouped by weight, and within a class by in-flight count
//! into buckets (intrusive lists, least recently moved first), with a pointer to
//! the lowest non-empty bucket. A pick or an outcome moves one backend to the
//! next bucket up or down, O(1). The classes are ordered by the key of their
//! lowest bucket in a tree of k entries (ties: the class filed least recently).
//! A retry whose excluded backend is alone in the lowest bucket skips up to the
//! next non-empty bucket: at most as many steps as requests are in flight.
//!
//! Weights show in the ratio of *concurrent* requests: at concurrency c, a backend
//! of weight 3 holds about three times the requests of one of weight 1. When
//! requests never overlap (each completes before the next is picked), every
//! backend is idle at each pick, and the heaviest one takes every request; that
//! is what "least loaded relative to capacity" means, and `weighted-rr` is the
//! policy for fixed ratios.
//!
//! # Parameters
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `weighted` | `true` | compare in-flight counts relative to backend weights |

use std::collections::{BTreeSet, HashMap};

use veer_sdk::{BackendEvent, BackendId, Outcome, Params, PickContext, Policy, Pool};

/// No node: the end of a list.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    id: BackendId,
    /// Index of its weight class in `classes`.
    class: usize,
    in_flight: u32,
    /// Whether it is in its class's buckets (it is eligible).
    linked: bool,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    head: u32,
    tail: u32,
}

const EMPTY: Bucket = Bucket { head: NIL, tail: NIL };

/// The eligible backends of one weight, by in-flight count.
#[derive(Debug)]
struct Class {
    weight: u32,
    /// `buckets[n]`: members with `n` requests in flight, least recently moved first.
    buckets: Vec<Bucket>,
    /// The lowest non-empty bucket, when `members > 0`.
    min: usize,
    members: usize,
    /// The (key, sequence) under which the class is filed in `top`, if it is.
    filed: Option<(u128, u64)>,
}

impl Class {
    fn key(&self, bucket: usize) -> u128 {
        ((bucket as u128 + 1) << 64) / u128::from(self.weight)
    }

    /// The lowest non-empty bucket at or above `from`.
    fn lowest_from(&self, from: usize) -> Option<usize> {
        (from..self.buckets.len()).find(|b| self.buckets[*b].head != NIL)
    }
}

/// The least-connections policy.
#[derive(Debug)]
pub struct LeastConn {
    weighted: bool,
    /// Node of every known backend, eligible or not.
    slots: HashMap<BackendId, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Weight classes, never removed (there are few, and they come back).
    classes: Vec<Class>,
    class_of: HashMap<u32, usize>,
    /// Non-empty classes by the key of their lowest bucket.
    top: BTreeSet<(u128, u64, usize)>,
    sequence: u64,
}

impl LeastConn {
    /// Requests this plugin sent to `id` whose outcome has not arrived yet;
    /// `None` for a backend it does not know.
    pub fn in_flight(&self, id: BackendId) -> Option<u32> {
        self.slots.get(&id).map(|slot| self.nodes[*slot as usize].in_flight)
    }

    fn class_for(&mut self, weight: u32) -> usize {
        *self.class_of.entry(weight).or_insert_with(|| {
            self.classes.push(Class { weight, buckets: Vec::new(), min: 0, members: 0, filed: None });
            self.classes.len() - 1
        })
    }

    /// Files class `c` in `top` under the key of its lowest bucket.
    fn refile(&mut self, c: usize) {
        let class = &mut self.classes[c];
        let key = (class.members > 0).then(|| class.key(class.min));
        if key != class.filed.map(|(key, _)| key) {
            if let Some(old) = class.filed {
                self.top.remove(&(old.0, old.1, c));
            }
            class.filed = key.map(|key| {
                self.sequence += 1;
                self.top.insert((key, self.sequence, c));
                (key, self.sequence)
            });
        }
    }

    /// Takes a node out of its bucket's list (class bookkeeping is the caller's).
    fn detach(&mut self, slot: u32) {
        let Node { class, in_flight, prev, next, .. } = self.nodes[slot as usize];
        let bucket = &mut self.classes[class].buckets[in_flight as usize];
        if prev == NIL {
            bucket.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            bucket.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    /// Appends a node to the bucket of its in-flight count.
    fn attach(&mut self, slot: u32) {
        let Node { class, in_flight, .. } = self.nodes[slot as usize];
        let buckets = &mut self.classes[class].buckets;
        let b = in_flight as usize;
        if buckets.len() <= b {
            buckets.resize(b + 1, EMPTY);
        }
        let tail = buckets[b].tail;
        if tail == NIL {
            buckets[b].head = slot;
        } else {
            self.nodes[tail as usize].next = slot;
        }
        buckets[b].tail = slot;
        let node = &mut self.nodes[slot as usize];
        node.prev = tail;
        node.next = NIL;
    }

    fn link(&mut self, slot: u32) {
        self.attach(slot);
        let node = &mut self.nodes[slot as usize];
        node.linked = true;
        let class = &mut self.classes[node.class];
        class.members += 1;
        if class.members == 1 || (node.in_flight as usize) < class.min {
            class.min = node.in_flight as usize;
        }
        let c = node.class;
        self.refile(c);
    }

    /// O(max in-flight) when it empties the lowest bucket; for events only.
    fn unlink(&mut self, slot: u32) {
        self.detach(slot);
        let node = &mut self.nodes[slot as usize];
        node.linked = false;
        let class = &mut self.classes[node.class];
        class.members -= 1;
        if class.members > 0 {
            class.min = class.lowest_from(class.min).unwrap_or(class.min);
        }
        let c = node.class;
        self.refile(c);
    }

    /// Changes a linked node's in-flight count by one, keeping it in order. O(1).
    fn shift(&mut self, slot: u32, up: bool) {
        self.detach(slot);
        let node = &mut self.nodes[slot as usize];
        node.in_flight = if up { node.in_flight.saturating_add(1) } else { node.in_flight - 1 };
        let (c, b) = (node.class, node.in_flight as usize);
        self.attach(slot);
        let class = &mut self.classes[c];
        if b < class.min {
            class.min = b;
        } else if class.buckets[class.min].head == NIL {
            // Only after moving up out of the lowest bucket: the next one holds the node.
            class.min = class.lowest_from(class.min + 1).unwrap_or(b);
        }
        self.refile(c);
    }

    /// Brings what the policy keeps for `id` in line with the pool.
    fn sync(&mut self, pool: &Pool, id: BackendId) {
        let Some(backend) = pool.get(id) else {
            if let Some(slot) = self.slots.remove(&id) {
                if self.nodes[slot as usize].linked {
                    self.unlink(slot);
                }
                self.free.push(slot);
            }
            return;
        };
        let c = self.class_for(if self.weighted { backend.weight.max(1) } else { 1 });
        let slot = match self.slots.get(&id) {
            Some(slot) => *slot,
            None => {
                let node = Node { id, class: c, in_flight: 0, linked: false, prev: NIL, next: NIL };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.nodes[slot as usize] = node;
                        slot
                    }
                    None => {
                        self.nodes.push(node);
                        (self.nodes.len() - 1) as u32
                    }
                };
                self.slots.insert(id, slot);
                slot
            }
        };
        if self.nodes[slot as usize].class != c {
            if self.nodes[slot as usize].linked {
                self.unlink(slot);
            }
            self.nodes[slot as usize].class = c;
        }
        match (pool.is_eligible(id), self.nodes[slot as usize].linked) {
            (true, false) => self.link(slot),
            (false, true) => self.unlink(slot),
            _ => {}
        }
    }

    /// Rebuilds everything from the pool, keeping known counts. Only needed when
    /// the policy missed events (the SDK re-configures by building a fresh policy
    /// without replaying the backend set); O(n).
    fn resync(&mut self, pool: &Pool) {
        let gone: Vec<BackendId> = self.slots.keys().copied().filter(|id| pool.get(*id).is_none()).collect();
        let mut ids: Vec<BackendId> = pool.backends().map(|b| b.id).collect();
        ids.sort_unstable();
        for id in gone.into_iter().chain(ids) {
            self.sync(pool, id);
        }
    }

    /// The least loaded eligible node other than `exclude`.
    fn best(&self, exclude: Option<BackendId>) -> Option<u32> {
        let mut top = self.top.iter();
        let &(_, _, c) = top.next()?;
        let class = &self.classes[c];
        let first = class.buckets[class.min].head;
        let node = self.nodes[first as usize];
        if Some(node.id) != exclude {
            return Some(first);
        }
        if node.next != NIL {
            return Some(node.next); // just as loaded
        }
        // The next bucket up in this class, or the best of the next class.
        let same = class.lowest_from(class.min + 1).map(|b| (class.key(b), class.buckets[b].head));
        let other = top.next().map(|&(key, _, c)| {
            let class = &self.classes[c];
            (key, class.buckets[class.min].head)
        });
        match (same, other) {
            (Some(same), Some(other)) => Some(if other.0 < same.0 { other.1 } else { same.1 }),
            (same, other) => same.or(other).map(|(_, slot)| slot),
        }
    }
}

impl Policy for LeastConn {
    const NAME: &'static str = "least-conn";
    const WANTS_OUTCOMES: bool = true;

    fn configure(params: &Params) -> Result<Self, String> {
        let reader = params.reader();
        let weighted = reader.flag("weighted", true);
        reader.finish()?;
        Ok(LeastConn {
            weighted,
            slots: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            classes: Vec::new(),
            class_of: HashMap::new(),
            top: BTreeSet::new(),
            sequence: 0,
        })
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
        if self.slots.len() != pool.len() {
            self.resync(pool);
        }
        let slot = self.best(ctx.exclude)?;
        self.shift(slot, true);
        Some(self.nodes[slot as usize].id)
    }

    fn observe(&mut self, _pool: &Pool, outcome: &Outcome) {
        if !outcome.picked {
            return;
        }
        let Some(&slot) = self.slots.get(&outcome.backend) else { return };
        let node = &mut self.nodes[slot as usize];
        if node.in_flight == 0 {
            return;
        }
        if node.linked {
            self.shift(slot, false);
        } else {
            node.in_flight -= 1;
        }
    }
}

veer_sdk::export_policy!(LeastConn);

#[cfg(test)]
mod tests {
    use super::*;
    use veer_sdk::testing::{Harness, Load, Reply};

    fn both_modes() -> [Harness<LeastConn>; 2] {
        [Harness::new(&[]).unwrap(), Harness::new(&[("weighted", "false")]).unwrap()]
    }

    #[test]
    fn spreads_requests_evenly_with_instant_completions() {
        for mut h in both_modes() {
            let ids = h.add_backends(3);
            let counts = h.picks(300);
            for id in ids {
                assert_eq!(counts[&id], 100);
            }
        }
    }

    #[test]
    fn equally_loaded_backends_take_turns() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        let picked: Vec<_> = (0..6).map(|_| h.pick().unwrap()).collect();
        assert_eq!(picked, [ids[0], ids[1], ids[2], ids[0], ids[1], ids[2]]);
    }

    #[test]
    fn picks_the_backend_with_fewest_in_flight() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        let held: Vec<_> = (0..6).map(|_| h.pick().unwrap()).collect(); // two each
        h.complete(held[1], 1_000, true);
        h.complete(held[4], 1_000, true); // ids[1] is down to zero
        assert_eq!(h.pick(), Some(ids[1]));
        assert_eq!(h.pick(), Some(ids[1]), "still fewer than the others (1 against 2)");
        assert_eq!(h.policy().in_flight(ids[1]), Some(2));
    }

    #[test]
    fn a_slow_backend_receives_far_fewer_requests() {
        for mut h in both_modes() {
            let ids = h.add_backends(4);
            let slow = ids[3];
            let report = h.run(Load { requests: 20_000, concurrency: 8 }, |id, _, _| {
                Reply::ok(if id == slow { 50_000 } else { 5_000 })
            });
            // In-flight evens out, so throughput follows speed: 3 × 1/5 ms against 1/50 ms.
            let slow_share = report.share(slow);
            assert!(slow_share > 0.01 && slow_share < 0.06, "slow share {slow_share:.3}");
            for &fast in &ids[..3] {
                assert!((report.share(fast) - 0.33).abs() < 0.03, "fast share {:.3}", report.share(fast));
            }
            for id in ids {
                assert_eq!(h.policy().in_flight(id), Some(0), "every outcome arrived");
            }
        }
    }

    #[test]
    fn weights_scale_the_concurrent_share() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let heavy = h.add_backend("heavy", 3);
        h.add_backend("light", 1);
        let report = h.run(Load { requests: 20_000, concurrency: 16 }, |_, _, _| Reply::ok(10_000));
        assert!((report.share(heavy) - 0.75).abs() < 0.02, "heavy share {:.3}", report.share(heavy));

        let mut h = Harness::<LeastConn>::new(&[("weighted", "false")]).unwrap();
        let heavy = h.add_backend("heavy", 3);
        h.add_backend("light", 1);
        let report = h.run(Load { requests: 20_000, concurrency: 16 }, |_, _, _| Reply::ok(10_000));
        assert!((report.share(heavy) - 0.5).abs() < 0.02, "unweighted share {:.3}", report.share(heavy));
    }

    #[test]
    fn weighted_in_flight_follows_weights_exactly() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let heavy = h.add_backend("heavy", 2);
        let light = h.add_backend("light", 1);
        // Nothing completes: every pick goes to the lowest (in_flight + 1) / weight.
        for _ in 0..30 {
            h.pick();
        }
        assert_eq!(h.policy().in_flight(heavy), Some(20));
        assert_eq!(h.policy().in_flight(light), Some(10));
    }

    #[test]
    fn many_distinct_weights_share_in_flight_requests_exactly() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let backends: Vec<_> = (0..100u32).map(|i| (h.add_backend(&format!("b{i}"), 1 + i % 10), 1 + i % 10)).collect();
        // W = 550; 3 × W picks without completions leave each with 3 × its weight.
        for _ in 0..1_650 {
            h.pick();
        }
        for (id, weight) in backends {
            assert_eq!(h.policy().in_flight(id), Some(3 * weight));
        }
    }

    #[test]
    fn a_retry_avoids_the_least_loaded_backend_across_weights() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let heavy = h.add_backend("heavy", 2);
        let light = h.add_backend("light", 1);
        assert_eq!(h.pick_excluding(heavy), Some(light));
        assert_eq!(h.pick_excluding(light), Some(heavy));
        // Alone in the lowest bucket, far below the only alternative.
        let mut h = Harness::<LeastConn>::new(&[("weighted", "false")]).unwrap();
        let ids = h.add_backends(2);
        for _ in 0..10 {
            assert_eq!(h.pick_excluding(ids[0]), Some(ids[1]));
        }
        assert_eq!(h.pick(), Some(ids[0]));
        assert_eq!(h.pick_excluding(ids[0]), Some(ids[1]));
        assert_eq!(h.policy().in_flight(ids[1]), Some(11));
    }

    #[test]
    fn weighted_idle_picks_go_to_the_heaviest_backend() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let heavy = h.add_backend("heavy", 2);
        h.add_backend("light", 1);
        let counts = h.picks(50);
        assert_eq!(counts[&heavy], 50, "an idle heavy backend is the least loaded per unit of weight");
    }

    #[test]
    fn weight_changes_take_effect() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let a = h.add_backend("a", 1);
        let b = h.add_backend("b", 1);
        h.set_weight(b, 4);
        for _ in 0..50 {
            h.pick();
        }
        assert_eq!(h.policy().in_flight(a), Some(10));
        assert_eq!(h.policy().in_flight(b), Some(40));
    }

    #[test]
    fn never_picks_ineligible_or_excluded_backends() {
        for mut h in both_modes() {
            let ids = h.add_backends(3);
            h.set_eligible(ids[0], false);
            let counts = h.picks(100);
            assert!(!counts.contains_key(&ids[0]));
            for _ in 0..20 {
                // ids[2] collects in-flight requests and would be "worse", yet is the only choice.
                assert_eq!(h.pick_excluding(ids[1]), Some(ids[2]));
            }
            h.set_eligible(ids[0], true);
            assert_eq!(h.pick_excluding(ids[1]), Some(ids[0]));
        }
    }

    #[test]
    fn answers_none_when_nothing_is_eligible() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        assert_eq!(h.pick(), None);
        let id = h.add_backend("only", 1);
        assert_eq!(h.pick_excluding(id), None);
        h.set_eligible(id, false);
        assert_eq!(h.pick(), None);
    }

    #[test]
    fn in_flight_counts_return_to_zero_and_never_underflow() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let ids = h.add_backends(2);
        let picked: Vec<_> = (0..10).map(|_| h.pick().unwrap()).collect();
        assert_eq!(h.policy().in_flight(ids[0]), Some(5));
        for id in &picked {
            h.complete(*id, 1_000, true);
        }
        assert_eq!(h.policy().in_flight(ids[0]), Some(0));
        // An extra outcome, or one for an attempt the host routed itself, changes nothing.
        h.complete(ids[0], 1_000, false);
        h.observe(Outcome { backend: ids[1], picked: false, status: 200, latency_us: 1, error: None });
        assert_eq!(h.policy().in_flight(ids[0]), Some(0));
        assert_eq!(h.policy().in_flight(ids[1]), Some(0));
        h.complete_with_error(ids[0], 1_000, veer_sdk::ErrorKind::NotSent);
        assert_eq!(h.policy().in_flight(ids[0]), Some(0));
    }

    #[test]
    fn an_ineligible_backend_keeps_its_count() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let ids = h.add_backends(2);
        for _ in 0..6 {
            h.pick();
        }
        h.set_eligible(ids[0], false);
        for _ in 0..3 {
            assert_eq!(h.pick(), Some(ids[1]));
        }
        h.complete(ids[0], 1_000, true); // an outcome arriving while it is out
        assert_eq!(h.policy().in_flight(ids[0]), Some(2));
        h.set_eligible(ids[0], true);
        // ids[0] has 2 in flight, ids[1] has 6: ids[0] gets the next four.
        let next: Vec<_> = (0..4).map(|_| h.pick().unwrap()).collect();
        assert_eq!(next, vec![ids[0]; 4]);
    }

    #[test]
    fn removal_forgets_a_backend() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let ids = h.add_backends(2);
        for _ in 0..4 {
            h.pick();
        }
        h.remove_backend(ids[0]);
        assert_eq!(h.policy().in_flight(ids[0]), None);
        h.complete(ids[0], 1_000, true); // a late outcome for it is ignored
        assert_eq!(h.policy().in_flight(ids[0]), None);
        assert!(h.picks(10).keys().all(|id| *id == ids[1]));
        let fresh = h.add_backend("fresh", 1);
        assert_eq!(h.policy().in_flight(fresh), Some(0));
        assert_eq!(h.pick(), Some(fresh), "a new backend starts idle");
    }

    #[test]
    fn a_thousand_backends_are_each_picked_once_per_round() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let ids = h.add_backends(1000);
        let counts = h.picks(3000);
        assert!(ids.iter().all(|id| counts[id] == 3));
    }

    #[test]
    fn keeps_working_after_a_reconfigure() {
        let mut h = Harness::<LeastConn>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        h.reconfigure(&[("weighted", "false")]).unwrap();
        let counts = h.picks(30);
        assert!(ids.iter().all(|id| counts[id] == 10), "{counts:?}");
    }

    #[test]
    fn rejects_bad_parameters_all_at_once() {
        let err = Harness::<LeastConn>::new(&[("weighted", "maybe"), ("bias", "1")]).unwrap_err();
        assert!(err.contains("weighted: expected true or false, got 'maybe'"), "{err}");
        assert!(err.contains("unknown parameter 'bias'"), "{err}");
    }
}
