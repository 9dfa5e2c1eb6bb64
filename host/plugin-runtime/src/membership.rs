//! The host's copy of the backend set a picker was told about.

use std::collections::{BTreeMap, HashMap};

use super::bindings::veer::picker::types::{Backend, BackendEvent, BackendId};

/// Backends and their eligibility, updated from the same events the plugin gets,
/// so that the host can check a plugin's answer, choose a fallback, and replay
/// the set into a fresh instance.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    /// Batches of events applied so far: equal generations of one copy's
    /// history mean equal sets.
    generation: u64,
    backends: BTreeMap<BackendId, Backend>,
    ineligible: Vec<BackendId>,
    eligible: Vec<BackendId>,
    position: HashMap<BackendId, usize>,
}

impl Membership {
    /// Applies events in order, with the semantics `picker.wit` documents.
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

    /// Eligible backends, densely packed, in no meaningful order.
    pub fn eligible(&self) -> &[BackendId] {
        &self.eligible
    }

    /// Whether some eligible backend other than `exclude` exists.
    pub fn has_candidate(&self, exclude: Option<BackendId>) -> bool {
        let excluded = exclude.is_some_and(|id| self.is_eligible(id));
        self.eligible.len() > usize::from(excluded)
    }

    /// A backend by id.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(&id)
    }

    /// Every known backend, ordered by id.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends.values()
    }

    /// The events that bring an empty plugin to this state: every backend added,
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
    fn candidates_account_for_the_excluded_backend() {
        let mut m = Membership::default();
        m.apply(&[BackendEvent::Added(backend(1))]);
        assert!(m.has_candidate(None));
        assert!(!m.has_candidate(Some(1)));
        assert!(m.has_candidate(Some(7)));
        m.apply(&[BackendEvent::Removed(1)]);
        assert!(!m.has_candidate(None));
        assert!(m.replay().is_empty());
    }
}
