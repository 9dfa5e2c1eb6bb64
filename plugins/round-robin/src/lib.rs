//! Round robin: each eligible backend in turn, ignoring weights and load.
//!
//! O(1) per pick. The rotation is over the pool's dense eligible list, so a
//! backend leaving or joining shifts the order but never stalls it.

use veer_sdk::{BackendId, Params, PickContext, Policy, Pool};

/// The round-robin policy. Takes no parameters.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Policy for RoundRobin {
    const NAME: &'static str = "round-robin";

    fn configure(params: &Params) -> Result<Self, String> {
        params.reader().finish()?;
        Ok(RoundRobin::default())
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        let eligible = pool.eligible();
        for _ in 0..eligible.len().min(2) {
            let id = eligible[self.next % eligible.len()];
            self.next = self.next.wrapping_add(1);
            if Some(id) != ctx.exclude {
                return Some(id);
            }
        }
        None
    }
}

veer_sdk::export_policy!(RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use veer_sdk::testing::Harness;

    #[test]
    fn spreads_requests_evenly() {
        let mut h = Harness::<RoundRobin>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        let counts = h.picks(300);
        for id in ids {
            assert_eq!(counts[&id], 100);
        }
    }

    #[test]
    fn skips_ineligible_and_excluded_backends() {
        let mut h = Harness::<RoundRobin>::new(&[]).unwrap();
        let ids = h.add_backends(3);
        h.set_eligible(ids[0], false);
        let counts = h.picks(100);
        assert!(!counts.contains_key(&ids[0]));
        for _ in 0..10 {
            assert_eq!(h.pick_excluding(ids[1]), Some(ids[2]));
        }
    }

    #[test]
    fn answers_none_when_nothing_is_eligible() {
        let mut h = Harness::<RoundRobin>::new(&[]).unwrap();
        assert_eq!(h.pick(), None);
        let id = h.add_backend("only", 1);
        assert_eq!(h.pick_excluding(id), None);
    }

    #[test]
    fn rejects_parameters() {
        let err = Harness::<RoundRobin>::new(&[("weighted", "true")]).unwrap_err();
        assert!(err.contains("unknown parameter 'weighted'"), "{err}");
    }
}
