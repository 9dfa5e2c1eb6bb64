//! The backend set as a policy sees it, kept up to date from `backends-changed`.

use std::ops::Deref;

use veer_core::Membership;

use crate::BackendId;

/// Every backend the host told the plugin about, and which of them are eligible.
///
/// The very [`Membership`] the host keeps of the same events (so the two can
/// never disagree about what an event means), plus what needs the host's
/// randomness. Everything [`Membership`] offers is available through `Deref`:
/// [`eligible`](Membership::eligible) (a dense slice to index with a random
/// number or a counter), [`get`](Membership::get), [`find`](Membership::find),
/// [`is_eligible`](Membership::is_eligible) and the rest.
#[derive(Debug, Default, Clone)]
pub struct Pool {
    membership: Membership,
}

impl Pool {
    /// Applies a batch of events in order (see [`Membership::apply`]).
    pub fn apply(&mut self, events: &[crate::BackendEvent]) {
        self.membership.apply(events);
    }

    /// A uniformly random eligible backend other than `exclude`, using the host's
    /// randomness. O(1).
    pub fn random_eligible(&self, exclude: Option<BackendId>) -> Option<BackendId> {
        let candidates = self.membership.candidates(exclude);
        if candidates == 0 {
            return None;
        }
        let index = crate::host::random_below(candidates as u64) as usize;
        self.membership.candidate(index, exclude)
    }
}

impl Deref for Pool {
    type Target = Membership;

    fn deref(&self) -> &Membership {
        &self.membership
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, BackendEvent};

    fn backend(id: BackendId) -> Backend {
        Backend { id, name: format!("b{id}"), address: format!("127.0.0.1:{id}"), weight: 1, labels: vec![] }
    }

    #[test]
    fn random_eligible_never_returns_the_excluded_backend() {
        let mut pool = Pool::default();
        pool.apply(&[BackendEvent::Added(backend(1)), BackendEvent::Added(backend(2))]);
        for _ in 0..200 {
            assert_eq!(pool.random_eligible(Some(1)), Some(2));
        }
        pool.apply(&[BackendEvent::Eligibility((2, false))]);
        assert_eq!(pool.random_eligible(Some(1)), None);
        assert_eq!(pool.random_eligible(None), Some(1));
    }
}
