//! An index of backends ordered by a policy-defined key, for policies that must
//! find "the best backend" without scanning the pool on every pick.

use std::collections::{BTreeSet, HashMap};

use crate::BackendId;

/// Backends ordered by a key, smallest first; O(log n) update, O(1) best.
///
/// Ties are broken by the order in which keys were last set (least recently set
/// first), so equally good backends take turns instead of the lowest id winning
/// every time.
///
/// ```
/// let mut ranked = veer_sdk::Ranked::<u32>::default();
/// ranked.set(7, 3);
/// ranked.set(8, 1);
/// assert_eq!(ranked.best(None), Some(8));
/// assert_eq!(ranked.best(Some(8)), Some(7));
/// ```
#[derive(Debug, Clone)]
pub struct Ranked<K: Ord + Copy> {
    order: BTreeSet<(K, u64, BackendId)>,
    current: HashMap<BackendId, (K, u64)>,
    sequence: u64,
}

impl<K: Ord + Copy> Default for Ranked<K> {
    fn default() -> Self {
        Ranked { order: BTreeSet::new(), current: HashMap::new(), sequence: 0 }
    }
}

impl<K: Ord + Copy> Ranked<K> {
    /// Inserts `id` or moves it to `key`.
    pub fn set(&mut self, id: BackendId, key: K) {
        self.remove(id);
        self.sequence += 1;
        self.order.insert((key, self.sequence, id));
        self.current.insert(id, (key, self.sequence));
    }

    /// Removes `id`; does nothing if it is absent.
    pub fn remove(&mut self, id: BackendId) {
        if let Some((key, sequence)) = self.current.remove(&id) {
            self.order.remove(&(key, sequence, id));
        }
    }

    /// The key of `id`, if present.
    pub fn get(&self, id: BackendId) -> Option<K> {
        self.current.get(&id).map(|(key, _)| *key)
    }

    /// The backend with the smallest key other than `exclude`.
    pub fn best(&self, exclude: Option<BackendId>) -> Option<BackendId> {
        self.order.iter().map(|(_, _, id)| *id).find(|id| Some(*id) != exclude)
    }

    /// Number of backends in the index.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_take_turns() {
        let mut ranked = Ranked::<u32>::default();
        for id in 0..3 {
            ranked.set(id, 0);
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            let id = ranked.best(None).expect("non-empty");
            seen.push(id);
            ranked.set(id, 0);
        }
        assert_eq!(seen, vec![0, 1, 2]);
    }

    #[test]
    fn removed_backend_is_never_best() {
        let mut ranked = Ranked::<u32>::default();
        ranked.set(1, 0);
        ranked.set(2, 5);
        ranked.remove(1);
        assert_eq!(ranked.best(None), Some(2));
        assert_eq!(ranked.len(), 1);
    }
}
