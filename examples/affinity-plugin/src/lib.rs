//! Example policy: requests with the same key go to the same backend.
//!
//! The key is the value of the header named by the `header` parameter, or, when
//! that is unset or the request lacks the header, the host's affinity hash (the
//! client IP). Keys are spread with jump consistent hashing (Lamping & Veach),
//! O(log n) per pick. A retry moves to the next backend.
//!
//! This is an example of reading request attributes lazily: a request pays for
//! the one `header` import only when the parameter is set. The ordering of the
//! eligible set changes when backends leave, so some keys move then; the
//! consistent-hashing built-in (ring) is the production answer to that.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p veer-example-affinity`

use veer_sdk::{BackendId, Params, PickContext, Policy, Pool, request};

/// The affinity policy.
#[derive(Debug)]
pub struct Affinity {
    header: Option<String>,
}

impl Policy for Affinity {
    const NAME: &'static str = "affinity-example";

    fn configure(params: &Params) -> Result<Self, String> {
        let reader = params.reader();
        let header = reader.text("header", "");
        reader.finish()?;
        Ok(Affinity { header: (!header.is_empty()).then_some(header) })
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        let eligible = pool.eligible();
        let key = match self.header.as_deref().and_then(request::header) {
            Some(value) => fnv1a(value.as_bytes()),
            None => request::affinity_hash(),
        };
        let first = jump_hash(key, eligible.len())?;
        let at = (first + usize::from(ctx.exclude == Some(eligible[first]))) % eligible.len();
        Some(eligible[at]).filter(|id| Some(*id) != ctx.exclude)
    }
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`.
fn jump_hash(mut key: u64, buckets: usize) -> Option<usize> {
    let (mut bucket, mut next) = (-1i64, 0i64);
    while next < buckets as i64 {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    usize::try_from(bucket).ok()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3))
}

veer_sdk::export_policy!(Affinity);

#[cfg(test)]
mod tests {
    use super::*;
    use veer_sdk::testing::{FakeRequest, Harness};

    fn with_header(h: &mut Harness<Affinity>, user: &str) {
        h.set_request(FakeRequest { headers: vec![("x-user".into(), user.into())], ..FakeRequest::default() });
    }

    #[test]
    fn the_same_header_value_always_reaches_the_same_backend() {
        let mut h = Harness::<Affinity>::new(&[("header", "x-user")]).unwrap();
        h.add_backends(5);
        for user in ["ann", "bob", "cid"] {
            with_header(&mut h, user);
            let first = h.pick();
            assert!((0..20).all(|_| h.pick() == first), "{user}");
        }
    }

    #[test]
    fn different_keys_spread_over_the_backends() {
        let mut h = Harness::<Affinity>::new(&[]).unwrap();
        h.add_backends(4);
        let mut seen = std::collections::HashSet::new();
        for key in 0..200u64 {
            h.set_request(FakeRequest {
                affinity_hash: key.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ..FakeRequest::default()
            });
            seen.insert(h.pick());
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn a_retry_moves_to_another_backend() {
        let mut h = Harness::<Affinity>::new(&[("header", "x-user")]).unwrap();
        h.add_backends(3);
        with_header(&mut h, "ann");
        let first = h.pick().unwrap();
        let retry = h.pick_excluding(first).unwrap();
        assert_ne!(first, retry);
    }
}
