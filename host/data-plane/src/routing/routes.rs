//! What a listener routes with: the upstream groups and the compiled route
//! table, replaced whole (one pointer swap) when a reload or the admin API
//! changes either.

use std::sync::Arc;

use super::canary::CanarySplit;
use super::{RouteProblem, RouteSpec, RouteTable};
use crate::upstream::Upstream;

/// The name of the group a config's top-level `backends` make.
pub const DEFAULT_UPSTREAM: &str = "default";
/// The name of the group a config's `canary` makes.
pub const CANARY_UPSTREAM: &str = "canary";

/// The upstream groups and the routes over them.
#[derive(Debug)]
pub struct Routes {
    upstreams: Vec<Arc<Upstream>>,
    specs: Vec<RouteSpec>,
    table: RouteTable<Arc<Upstream>>,
    canary: Option<CanarySplit>,
}

impl Routes {
    /// Compiles `specs` over `upstreams` (at least one; the first is the
    /// default group the single-group admin endpoints act on).
    pub fn new(upstreams: Vec<Arc<Upstream>>, specs: Vec<RouteSpec>) -> Result<Routes, Vec<RouteProblem>> {
        let table = RouteTable::compile(&specs, |name| upstreams.iter().find(|u| &*u.name == name).cloned())?;
        Ok(Routes { upstreams, specs, table, canary: None })
    }

    /// The routes of a config without `routes`: everything to the default
    /// group, or `split` of it to the canary group.
    pub fn derived(upstreams: Vec<Arc<Upstream>>, split: Option<CanarySplit>) -> Result<Routes, Vec<RouteProblem>> {
        let default = upstreams.first().map_or(DEFAULT_UPSTREAM.into(), |u| u.name.to_string());
        let specs = match &split {
            Some(split) => split.routes(&default, CANARY_UPSTREAM),
            None => CanarySplit::catch_all(&default),
        };
        let mut routes = Routes::new(upstreams, specs)?;
        routes.canary = split;
        Ok(routes)
    }

    /// The same groups with the canary's split changed; `None` if these
    /// routes were not derived with a canary.
    pub fn with_canary_split(&self, split: CanarySplit) -> Option<Result<Routes, Vec<RouteProblem>>> {
        self.canary.as_ref()?;
        Some(Routes::derived(self.upstreams.clone(), Some(split)))
    }

    /// Resolves each route's retry changes against the proxy's policy.
    pub fn resolve_retries(&mut self, base: &crate::retry::RetryPolicy) {
        self.table.resolve_retries(base);
    }

    /// The compiled table.
    pub fn table(&self) -> &RouteTable<Arc<Upstream>> {
        &self.table
    }

    /// The routes as configured (or derived).
    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    /// Every group, the default first.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The group named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }

    /// The default group: the one the single-group admin endpoints, state
    /// persistence and the advisory act on.
    pub fn default_upstream(&self) -> &Arc<Upstream> {
        self.upstreams.first().expect("routes are built over at least one upstream")
    }

    /// The canary group and its split, when the routes were derived with one.
    pub fn canary(&self) -> Option<(&Arc<Upstream>, &CanarySplit)> {
        Some((self.upstream(CANARY_UPSTREAM)?, self.canary.as_ref()?))
    }
}
