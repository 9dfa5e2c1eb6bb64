//! The backend set as a policy sees it, kept up to date from `backends-changed`.

use std::collections::HashMap;

use crate::{Backend, BackendEvent, BackendId};

/// Every backend the host told the plugin about, and which of them are eligible.
///
/// Lookups are O(1); [`eligible`](Pool::eligible) is a dense slice so that a
/// policy can index it with a random number or a counter. Its order is not
/// meaningful and changes when backends come and go.
#[derive(Debug, Default, Clone)]
pub struct Pool {
    backends: HashMap<BackendId, Backend>,
    eligible: Vec<BackendId>,
    /// Position of each eligible backend in `eligible`.
    position: HashMap<BackendId, usize>,
}

impl Pool {
    /// Applies a batch of events in order. Events about unknown backends, and
    /// eligibility changes that change nothing, are ignored.
    pub fn apply(&mut self, events: &[BackendEvent]) {
        for event in events {
            match event {
                BackendEvent::Added(backend) | BackendEvent::Updated(backend) => {
                    let id = backend.id;
                    let is_new = self.backends.insert(id, backend.clone()).is_none();
                    if is_new {
                        self.set_eligible(id, true);
                    }
                }
                BackendEvent::Removed(id) => {
                    self.set_eligible(*id, false);
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
                self.position.insert(id, self.eligible.len());
                self.eligible.push(id);
            }
            (false, Some(at)) => {
                self.position.remove(&id);
                self.eligible.swap_remove(at);
                if let Some(moved) = self.eligible.get(at) {
                    self.position.insert(*moved, at);
                }
            }
            _ => {}
        }
    }

    /// The eligible backends' ids, densely packed.
    pub fn eligible(&self) -> &[BackendId] {
        &self.eligible
    }

    /// Whether `id` may be picked now.
    pub fn is_eligible(&self, id: BackendId) -> bool {
        self.position.contains_key(&id)
    }

    /// A backend by id, eligible or not.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(&id)
    }

    /// Every known backend, eligible or not, in no particular order.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends.values()
    }

    /// A backend by name.
    pub fn find(&self, name: &str) -> Option<&Backend> {
        self.backends.values().find(|b| b.name == name)
    }

    /// Number of known backends.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether no backend is known.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// A uniformly random eligible backend other than `exclude`, using the host's
    /// randomness. O(1).
    pub fn random_eligible(&self, exclude: Option<BackendId>) -> Option<BackendId> {
        let candidates = self.eligible.len() - usize::from(exclude.is_some_and(|id| self.is_eligible(id)));
        if candidates == 0 {
            return None;
        }
        let mut index = crate::host::random_below(candidates as u64) as usize;
        // The excluded backend is skipped by shifting every index at or past it by one.
        if let Some(at) = exclude.and_then(|id| self.position.get(&id).copied())
            && index >= at
        {
            index += 1;
        }
        Some(self.eligible[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: BackendId) -> Backend {
        Backend { id, name: format!("b{id}"), address: format!("127.0.0.1:{id}"), weight: 1, labels: vec![] }
    }

    #[test]
    fn eligibility_follows_events_and_removal_forgets() {
        let mut pool = Pool::default();
        pool.apply(&[
            BackendEvent::Added(backend(1)),
            BackendEvent::Added(backend(2)),
            BackendEvent::Added(backend(3)),
        ]);
        assert_eq!(pool.eligible().len(), 3);
        pool.apply(&[BackendEvent::Eligibility((1, false))]);
        assert!(!pool.is_eligible(1));
        assert_eq!(pool.len(), 3, "an ineligible backend stays known");
        let mut left = pool.eligible().to_vec();
        left.sort();
        assert_eq!(left, vec![2, 3]);
        pool.apply(&[BackendEvent::Removed(2), BackendEvent::Eligibility((1, true))]);
        let mut left = pool.eligible().to_vec();
        left.sort();
        assert_eq!(left, vec![1, 3]);
        assert!(pool.get(2).is_none());
    }

    #[test]
    fn eligibility_for_unknown_backend_is_ignored() {
        let mut pool = Pool::default();
        pool.apply(&[BackendEvent::Eligibility((9, true))]);
        assert!(pool.eligible().is_empty());
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
