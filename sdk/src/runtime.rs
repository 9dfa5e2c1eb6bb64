//! The glue between the WIT exports and a [`Policy`]; shared by the Wasm export
//! and the native test harness so that tests exercise exactly what ships.

use crate::{BackendEvent, BackendId, Feedback, Outcome, Params, PickContext, PluginInfo, Policy, Pool};

/// Holds a policy and the pool it picks from. Created by [`crate::export_policy!`]
/// and by [`crate::testing::Harness`]; not meant to be used directly.
#[derive(Debug)]
pub struct Runtime<P> {
    version: &'static str,
    pool: Pool,
    policy: Option<P>,
}

impl<P: Policy> Runtime<P> {
    /// A runtime for a plugin of the given version (the plugin crate's version).
    pub fn new(version: &'static str) -> Self {
        Runtime { version, pool: Pool::default(), policy: None }
    }

    /// Answers `policy.info`.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: P::NAME.to_string(),
            version: self.version.to_string(),
            feedback: if P::WANTS_OUTCOMES { Feedback::OUTCOMES } else { Feedback::empty() },
        }
    }

    /// Answers `policy.configure`. A re-configure builds a fresh policy and carries
    /// the learned state over through export/import, so parameter changes do not
    /// throw away what the policy learned.
    pub fn configure(&mut self, params: Vec<(String, String)>) -> Result<(), String> {
        let mut fresh = P::configure(&Params::new(params))?;
        if let Some(old) = &self.policy {
            let state = old.export_state(&self.pool);
            if !state.is_empty() {
                // State that does not fit the new parameters is dropped, not fatal.
                let _ = fresh.import_state(&self.pool, &state);
            }
        }
        self.policy = Some(fresh);
        Ok(())
    }

    /// Answers `policy.backends-changed`.
    pub fn backends_changed(&mut self, events: Vec<BackendEvent>) {
        self.pool.apply(&events);
        if let Some(policy) = &mut self.policy {
            policy.backends_changed(&self.pool, &events);
        }
    }

    /// Answers `policy.pick`.
    pub fn pick(&mut self, ctx: &PickContext) -> Option<BackendId> {
        self.policy.as_mut()?.pick(&self.pool, ctx)
    }

    /// Answers `policy.observe`.
    pub fn observe(&mut self, outcome: &Outcome) {
        if let Some(policy) = &mut self.policy {
            policy.observe(&self.pool, outcome);
        }
    }

    /// Answers `policy.export-state`.
    pub fn export_state(&self) -> Vec<u8> {
        self.policy.as_ref().map(|p| p.export_state(&self.pool)).unwrap_or_default()
    }

    /// Answers `policy.import-state`.
    pub fn import_state(&mut self, state: &[u8]) -> Result<(), String> {
        match &mut self.policy {
            Some(policy) => policy.import_state(&self.pool, state),
            None => Err("import-state called before configure".to_string()),
        }
    }

    /// The pool as the policy sees it.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The policy, once configured.
    pub fn policy(&self) -> Option<&P> {
        self.policy.as_ref()
    }
}
