//! The backend set rebuilt from the events a policy is sent.

use std::collections::{BTreeMap, HashMap};

use crate::{Backend, BackendEvent, BackendId};

/// Every backend a policy was told about, and which of them are eligible,
/// updated from `backends-changed` events with the semantics `picker.wit`
/// documents.
///
/// The host keeps one per picker instance, to check a plugin's answer, choose
/// a fallback and replay the set into a fresh instance; the SDK keeps one
/// inside each policy (its `Pool`). Lookups are O(1);
/// [`eligible`](Membership::eligible) is a dense slice that a policy can index
/// with a random number or a counter. Its order is not meaningful and changes
/// when backends come and go.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    /// Batches of events applied so far: equal generations of one copy's
    /// history mean equal sets.
    generation: u64,
    backends: BTreeMap<BackendId, Backend>,
    ineligible: Vec<BackendId>,
    eligible: Vec<BackendId>,
    /// Position of each eligible backend in `eligible`.
    position: HashMap<BackendId, usize>,
}

impl Membership {
    /// Applies a batch of events in order. Events about unknown backends, and
    /// eligibility changes that change nothing, are ignored.
    pub fn apply(&mut self, events: &[BackendEvent]) {
        self.generation += 1;
        for event in events {
            match event {
                BackendEvent::Added(backend) | BackendEvent::Updated(backend) => {
                    if self.backends.insert(backend.id, backend.clone()).is_none() {
                        self.set_eligible(backend.id, true);
                    }
                }
                BackendEvent::Removed(id) => {
                    self.set_eligible(*id, false);
                    self.ineligible.retain(|other| other != id);
                    self.backends.remove(id);
                }
                BackendEvent::Eligibility((id, eligible)) => {
                    if self.backends.contains_key(id) {
                        self.set_eligible(*id, *eligible);
                    }
                }
            }
        }
    }

    fn set_eligible(&mut self, id: BackendId, eligible: bool) {
        match (eligible, self.position.get(&id).copied()) {
            (true, None) => {
                self.ineligible.retain(|other| *other != id);
                self.position.insert(id, self.eligible.len());
                self.eligible.push(id);
            }
            (false, Some(at)) => {
                self.position.remove(&id);
                self.eligible.swap_remove(at);
                if let Some(moved) = self.eligible.get(at) {
                    self.position.insert(*moved, at);
                }
                self.ineligible.push(id);
            }
            _ => {}
        }
    }

    /// How many batches of events this copy has applied (it changes with every
    /// [`Membership::apply`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `id` is known and eligible.
    pub fn is_eligible(&self, id: BackendId) -> bool {
        self.position.contains_key(&id)
    }

    /// The eligible backends' ids, densely packed, in no meaningful order.
    pub fn eligible(&self) -> &[BackendId] {
        &self.eligible
    }

    /// How many eligible backends there are other than `exclude`.
    pub fn candidates(&self, exclude: Option<BackendId>) -> usize {
        self.eligible.len() - usize::from(exclude.is_some_and(|id| self.is_eligible(id)))
    }

    /// Whether some eligible backend other than `exclude` exists.
    pub fn has_candidate(&self, exclude: Option<BackendId>) -> bool {
        self.candidates(exclude) > 0
    }

    /// The `index`-th of the [`candidates`](Membership::candidates) (the
    /// eligible backends without `exclude`), for `index` below their count. O(1):
    /// with a uniform `index` it is a uniform random candidate.
    pub fn candidate(&self, index: usize, exclude: Option<BackendId>) -> Option<BackendId> {
        // The excluded backend is skipped by shifting every index at or past it by one.
        let shift = exclude.and_then(|id| self.position.get(&id)).is_some_and(|at| index >= *at);
        self.eligible.get(index + usize::from(shift)).copied()
    }

    /// A backend by id, eligible or not.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(&id)
    }

    /// A backend by name.
    pub fn find(&self, name: &str) -> Option<&Backend> {
        self.backends.values().find(|b| b.name == name)
    }

    /// Every known backend, eligible or not, ordered by id.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends.values()
    }

    /// Number of known backends, eligible or not.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether no backend is known.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The events that bring an empty copy to this state: every backend added,
    /// then the ineligible ones marked so.
    pub fn replay(&self) -> Vec<BackendEvent> {
        let added = self.backends.values().cloned().map(BackendEvent::Added);
        let ineligible = self.ineligible.iter().map(|id| BackendEvent::Eligibility((*id, false)));
        added.chain(ineligible).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: BackendId) -> Backend {
        Backend { id, name: format!("b{id}"), address: format!("127.0.0.1:{id}"), weight: 1, labels: vec![] }
    }

    fn sorted(ids: &[BackendId]) -> Vec<BackendId> {
        let mut ids = ids.to_vec();
        ids.sort();
        ids
    }

    #[test]
    fn eligibility_follows_events_and_removal_forgets() {
        let mut m = Membership::default();
        m.apply(&(1..=3).map(|id| BackendEvent::Added(backend(id))).collect::<Vec<_>>());
        assert_eq!(m.eligible().len(), 3);
        m.apply(&[BackendEvent::Eligibility((1, false))]);
        assert!(!m.is_eligible(1));
        assert_eq!(m.len(), 3, "an ineligible backend stays known");
        assert_eq!(sorted(m.eligible()), [2, 3]);
        m.apply(&[BackendEvent::Removed(2), BackendEvent::Eligibility((1, true))]);
        assert_eq!(sorted(m.eligible()), [1, 3]);
        assert!(m.get(2).is_none());
        assert_eq!(m.find("b3").map(|b| b.id), Some(3));
        assert_eq!(m.generation(), 3);
    }

    #[test]
    fn eligibility_for_unknown_backend_is_ignored() {
        let mut m = Membership::default();
        m.apply(&[BackendEvent::Eligibility((9, true))]);
        assert!(m.eligible().is_empty() && m.is_empty());
    }

    #[test]
    fn replay_reproduces_eligibility() {
        let mut m = Membership::default();
        m.apply(&[
            BackendEvent::Added(backend(1)),
            BackendEvent::Added(backend(2)),
            BackendEvent::Eligibility((1, false)),
        ]);
        let mut copy = Membership::default();
        copy.apply(&m.replay());
        assert!(!copy.is_eligible(1));
        assert!(copy.is_eligible(2));
        assert_eq!(copy.backends().count(), 2);
    }

    #[test]
    fn candidates_skip_the_excluded_backend() {
        let mut m = Membership::default();
        m.apply(&[BackendEvent::Added(backend(1))]);
        assert!(m.has_candidate(None));
        assert!(!m.has_candidate(Some(1)));
        assert!(m.has_candidate(Some(7)));
        m.apply(&[BackendEvent::Added(backend(2)), BackendEvent::Added(backend(3))]);
        for exclude in [None, Some(1), Some(2), Some(3), Some(9)] {
            let all: Vec<_> = (0..m.candidates(exclude)).filter_map(|i| m.candidate(i, exclude)).collect();
            let expected: Vec<_> = m.eligible().iter().copied().filter(|id| Some(*id) != exclude).collect();
            assert_eq!(all, expected, "exclude {exclude:?}");
        }
        assert_eq!(m.candidate(2, Some(1)), None, "past the candidates there is none");
        m.apply(&[BackendEvent::Removed(1), BackendEvent::Removed(2), BackendEvent::Removed(3)]);
        assert!(!m.has_candidate(None));
        assert!(m.replay().is_empty());
    }
}
