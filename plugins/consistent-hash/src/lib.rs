//! Built-in picker `consistent-hash`: Maglev consistent hashing (Eisenbud et
//! al., NSDI 2016) for affinity by client IP or by a header.
//!
//! A lookup table of `table_size` slots (a prime) is filled from the eligible
//! backends, each walking its own permutation of the slots derived from its
//! *name*, so the table depends only on which names are eligible, not on ids
//! or on the order they arrived in. A request's key (the header named by the
//! `header` parameter, else the host's affinity hash, the client IP) indexes
//! the table: one multiply and one load per pick, whatever the pool size.
//!
//! When a backend leaves (removed, ineligible), the keys it served spread over
//! the others and nearly all other keys stay where they were; when it
//! returns, it takes back about the same keys. The table is rebuilt on
//! `backends-changed`, off the request path (O(table_size) per change).
//! Every backend gets an equal share: weights are not applied.
//!
//! Parameters: `header` (default: none, the client IP), `table_size` (a prime
//! from 251 to 1000003; default 65537; at least ~100× the number of backends
//! for even shares).

use veer_sdk::{BackendEvent, BackendId, Params, PickContext, Policy, Pool, request};

/// The Maglev policy.
#[derive(Debug)]
pub struct ConsistentHash {
    header: Option<String>,
    table_size: usize,
    /// Slot → backend; empty when no backend is eligible.
    table: Vec<BackendId>,
}

impl Policy for ConsistentHash {
    const NAME: &'static str = "consistent-hash";

    fn configure(params: &Params) -> Result<Self, String> {
        let reader = params.reader();
        let header = reader.text("header", "");
        let table_size = reader.number("table_size", 65_537usize, 251..=1_000_003);
        if !is_prime(table_size) {
            reader.problem(format!("table_size: must be a prime, got {table_size} (e.g. 65537)"));
        }
        reader.finish()?;
        Ok(ConsistentHash { header: (!header.is_empty()).then_some(header), table_size, table: Vec::new() })
    }

    fn backends_changed(&mut self, pool: &Pool, _events: &[BackendEvent]) {
        self.table = populate(pool, self.table_size);
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        if self.table.is_empty() {
            self.table = populate(pool, self.table_size);
            if self.table.is_empty() {
                return None; // nothing eligible
            }
        }
        let key = match self.header.as_deref().and_then(request::header) {
            Some(value) => fnv1a(value.as_bytes()),
            None => request::affinity_hash(),
        };
        let len = self.table.len();
        let start = (mix(key) % len as u64) as usize;
        // A retry walks on to the next slot held by another backend.
        (0..len.min(64))
            .map(|step| self.table[(start + step) % len])
            .find(|id| Some(*id) != ctx.exclude && pool.is_eligible(*id))
    }
}

/// Fills the Maglev lookup table from the eligible backends of `pool`.
fn populate(pool: &Pool, size: usize) -> Vec<BackendId> {
    let mut backends: Vec<(&str, BackendId)> =
        pool.eligible().iter().filter_map(|id| pool.get(*id).map(|b| (b.name.as_str(), *id))).collect();
    if backends.is_empty() {
        return Vec::new();
    }
    // Ties in the fill order are broken by name, so the table is a function of the names alone.
    backends.sort_unstable();
    let permutation: Vec<(usize, usize)> = backends
        .iter()
        .map(|(name, _)| {
            let offset = (fnv1a(name.as_bytes()) % size as u64) as usize;
            let skip = (mix(fnv1a(name.as_bytes()) ^ 0x5bd1_e995) % (size as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; backends.len()];
    let mut table = vec![BackendId::MAX; size];
    let mut filled = 0;
    while filled < size {
        for (i, (offset, skip)) in permutation.iter().enumerate() {
            let mut slot = (offset + next[i] * skip) % size;
            while table[slot] != BackendId::MAX {
                next[i] += 1;
                slot = (offset + next[i] * skip) % size;
            }
            table[slot] = backends[i].1;
            next[i] += 1;
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    table
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3))
}

/// A 64-bit finaliser (splitmix64's), so that nearby keys land far apart.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

veer_sdk::export_policy!(ConsistentHash);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use veer_sdk::testing::{FakeRequest, Harness};

    fn key(h: &mut Harness<ConsistentHash>, key: u64) {
        h.set_request(FakeRequest { affinity_hash: key, ..FakeRequest::default() });
    }

    fn assignment(h: &mut Harness<ConsistentHash>, keys: u64) -> HashMap<u64, BackendId> {
        (0..keys)
            .map(|k| {
                key(h, k);
                (k, h.pick().unwrap())
            })
            .collect()
    }

    #[test]
    fn the_same_key_always_reaches_the_same_backend_and_keys_spread_evenly() {
        let mut h = Harness::<ConsistentHash>::new(&[("table_size", "5003")]).unwrap();
        h.add_backends(5);
        let first = assignment(&mut h, 5000);
        assert_eq!(assignment(&mut h, 5000), first);
        let mut counts: HashMap<BackendId, usize> = HashMap::new();
        for id in first.values() {
            *counts.entry(*id).or_default() += 1;
        }
        assert_eq!(counts.len(), 5);
        assert!(counts.values().all(|n| (700..=1300).contains(n)), "{counts:?}");
    }

    #[test]
    fn a_leaving_backend_moves_only_its_own_keys_and_takes_them_back_on_return() {
        let mut h = Harness::<ConsistentHash>::new(&[]).unwrap();
        let ids = h.add_backends(10);
        let before = assignment(&mut h, 20_000);
        let gone = ids[3];
        h.set_eligible(gone, false);
        let after = assignment(&mut h, 20_000);
        let moved_elsewhere = before.iter().filter(|(k, id)| **id != gone && after[*k] != **id).count();
        // Maglev is near-minimal: a handful of the other keys move, not a reshuffle.
        assert!(moved_elsewhere < 20_000 / 100, "{moved_elsewhere} keys of staying backends moved");
        assert!(after.values().all(|id| *id != gone));
        h.set_eligible(gone, true);
        let back = assignment(&mut h, 20_000);
        let differ = before.iter().filter(|(k, id)| back[*k] != **id).count();
        assert_eq!(differ, 0, "the table is a function of the eligible names");
    }

    #[test]
    fn a_header_keys_the_choice_and_a_retry_moves_on() {
        let mut h = Harness::<ConsistentHash>::new(&[("header", "x-user")]).unwrap();
        h.add_backends(4);
        h.set_request(FakeRequest { headers: vec![("x-user".into(), "ann".into())], ..FakeRequest::default() });
        let first = h.pick().unwrap();
        assert!((0..10).all(|_| h.pick() == Some(first)));
        let retry = h.pick_excluding(first).unwrap();
        assert_ne!(retry, first);
    }

    #[test]
    fn no_eligible_backend_means_no_answer() {
        let mut h = Harness::<ConsistentHash>::new(&[]).unwrap();
        assert_eq!(h.pick(), None);
        let ids = h.add_backends(1);
        h.set_eligible(ids[0], false);
        assert_eq!(h.pick(), None);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Harness::<ConsistentHash>::new(&[("table_size", "1000")]).unwrap_err().contains("prime"));
        assert!(Harness::<ConsistentHash>::new(&[("nope", "1")]).is_err());
    }
}
