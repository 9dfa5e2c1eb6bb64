//! What the benches share: a pool of backends as a picker hears of it.
// Each bench is its own crate and uses only some of this.
#![allow(dead_code)]

use veer::plugin::{Backend, BackendEvent, Membership};

/// `n` backends, ids 1 to `n`, joining the pool: weighted `1 + id % 5` when
/// `weighted`, all 1 otherwise.
pub fn added(n: u32, weighted: bool) -> Vec<BackendEvent> {
    (1..=n)
        .map(|id| {
            BackendEvent::Added(Backend {
                id,
                name: format!("b{id}"),
                address: format!("10.0.0.1:{}", 1000 + id),
                weight: if weighted { 1 + id % 5 } else { 1 },
                labels: vec![],
            })
        })
        .collect()
}

/// The backend set of [`added`].
pub fn membership(n: u32, weighted: bool) -> Membership {
    let mut membership = Membership::default();
    membership.apply(&added(n, weighted));
    membership
}
