//! Pickers written in Rust inside the host, behind the same [`Picker`](super::Picker)
//! interface as Wasm components: for references that need knowledge no plugin
//! may have (the scenario runner's oracle knows every backend's true profile).

use std::fmt;
use std::sync::Arc;

use veer_core::Membership;
use veer_core::{BackendId, Outcome};

/// A routing policy implemented in the host.
///
/// Called under the picker's mutex, like a Wasm instance, so an implementation
/// sees picks and outcomes one at a time; it still takes `&self` because it is
/// shared through an `Arc`.
pub trait NativePolicy: Send + Sync + 'static {
    /// Chooses an eligible backend other than `exclude`; `None` (or an invalid
    /// answer) makes the host's fallback answer, as for a plugin.
    fn pick(&self, membership: &Membership, exclude: Option<BackendId>) -> Option<BackendId>;
    /// The outcome of an attempt this policy (or the fallback) routed, including
    /// `not-sent` for an answer the host did not use.
    fn observe(&self, outcome: &Outcome);
}

/// A named [`NativePolicy`], usable as a [`PluginSource::Native`](super::PluginSource::Native).
///
/// Two are equal only if they share the same policy object: a policy has
/// state, so equal names do not make equal pickers.
#[derive(Clone)]
pub struct NativePicker {
    name: String,
    policy: Arc<dyn NativePolicy>,
}

impl NativePicker {
    /// `policy` under `name` (shown as `native:NAME`).
    pub fn new(name: impl Into<String>, policy: Arc<dyn NativePolicy>) -> Self {
        Self { name: name.into(), policy }
    }

    /// The name, without the `native:` prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<dyn NativePolicy> {
        &self.policy
    }
}

impl PartialEq for NativePicker {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.policy, &other.policy)
    }
}

impl Eq for NativePicker {}

impl fmt::Debug for NativePicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativePicker").field("name", &self.name).finish_non_exhaustive()
    }
}
