//! What a listener routes with: the upstream groups and the compiled route
//! table, replaced whole (one pointer swap) when a reload or the admin API
//! changes either.

use std::sync::Arc;
use std::time::Duration;

use super::canary::CanarySplit;
use super::{RouteProblem, RouteSpec, RouteTable};
use crate::retry::RetryPolicy;
use crate::upstream::Upstream;

/// The name of the group a config's top-level `backends` make.
pub const DEFAULT_UPSTREAM: &str = "default";
/// The name of the group a config's `canary` makes.
pub const CANARY_UPSTREAM: &str = "canary";

/// A request's timeout and retry policy before a route or an upstream
/// changes them: the proxy's (`proxy.total_timeout`, `proxy.retry`).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPolicy {
    /// Time from receiving a request to sending response headers.
    pub timeout: Duration,
    /// When and how much to retry.
    pub retry: RetryPolicy,
}

/// An upstream as a route forwards to it: the group, and the timeout and
/// retry policy its requests get there (the route's changes over the
/// upstream's over the proxy's), resolved once when the routes are built.
#[derive(Debug, Clone)]
pub struct Target {
    /// The group.
    pub upstream: Arc<Upstream>,
    /// The request's total timeout.
    pub timeout: Duration,
    /// The request's retry policy.
    pub retry: Arc<RetryPolicy>,
}

/// The name of the listener at the config's top-level `listen`.
pub const DEFAULT_LISTENER: &str = "default";

/// The upstream groups and the routes over them: the default listener's, and
/// each further listener's.
#[derive(Debug)]
pub struct Routes {
    upstreams: Vec<Arc<Upstream>>,
    specs: Vec<RouteSpec>,
    table: RouteTable<Target>,
    /// Further listeners: name, routes as configured, compiled.
    listeners: Vec<(Arc<str>, Vec<RouteSpec>, RouteTable<Target>)>,
    base: RequestPolicy,
    canary: Option<CanarySplit>,
}

/// `specs` compiled over `upstreams`, each target's policy resolved.
fn compile(
    upstreams: &[Arc<Upstream>],
    specs: &[RouteSpec],
    base: &RequestPolicy,
) -> Result<RouteTable<Target>, Vec<RouteProblem>> {
    let shared = Arc::new(base.retry.clone());
    let mut table = RouteTable::compile(specs, |name| {
        let upstream = upstreams.iter().find(|u| &*u.name == name)?.clone();
        Some(Target { upstream, timeout: base.timeout, retry: shared.clone() })
    })?;
    table.for_each_target(|target, route_timeout, route_retry| {
        let own = target.upstream.policy();
        target.timeout = route_timeout.or(own.timeout).unwrap_or(base.timeout);
        if own.retry.is_some() || route_retry.is_some() {
            let upstream_retry = own.retry.as_ref().map_or_else(|| base.retry.clone(), |c| c.apply(&base.retry));
            target.retry = Arc::new(route_retry.map_or(upstream_retry.clone(), |c| c.apply(&upstream_retry)));
        }
    });
    Ok(table)
}

impl Routes {
    /// Compiles `specs` over `upstreams` (at least one; the first is the
    /// default group the single-group admin endpoints act on), each request
    /// starting from the proxy's `base` policy.
    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        specs: Vec<RouteSpec>,
        base: RequestPolicy,
    ) -> Result<Routes, Vec<RouteProblem>> {
        let table = compile(&upstreams, &specs, &base)?;
        Ok(Routes { upstreams, specs, table, listeners: Vec::new(), base, canary: None })
    }

    /// These routes with a further listener named `name` routing by `specs`
    /// over the same groups.
    pub fn with_listener(mut self, name: &str, specs: Vec<RouteSpec>) -> Result<Routes, Vec<RouteProblem>> {
        let table = compile(&self.upstreams, &specs, &self.base)?;
        self.listeners.push((name.into(), specs, table));
        Ok(self)
    }

    /// The routes of a config without `routes`: everything to the default
    /// group, or `split` of it to the canary group.
    pub fn derived(
        upstreams: Vec<Arc<Upstream>>,
        split: Option<CanarySplit>,
        base: RequestPolicy,
    ) -> Result<Routes, Vec<RouteProblem>> {
        let default = upstreams.first().map_or(DEFAULT_UPSTREAM.into(), |u| u.name.to_string());
        let specs = match &split {
            Some(split) => split.routes(&default, CANARY_UPSTREAM),
            None => CanarySplit::catch_all(&default),
        };
        let mut routes = Routes::new(upstreams, specs, base)?;
        routes.canary = split;
        Ok(routes)
    }

    /// The same groups with the canary's split changed; `None` if these
    /// routes were not derived with a canary.
    pub fn with_canary_split(&self, split: CanarySplit) -> Option<Result<Routes, Vec<RouteProblem>>> {
        self.canary.as_ref()?;
        let derived = Routes::derived(self.upstreams.clone(), Some(split), self.base.clone());
        Some(derived.and_then(|routes| {
            self.listeners.iter().try_fold(routes, |routes, (name, specs, _)| routes.with_listener(name, specs.clone()))
        }))
    }

    /// The default listener's compiled table.
    pub fn table(&self) -> &RouteTable<Target> {
        &self.table
    }

    /// The compiled table of the listener named `listener`, if there is one.
    pub fn table_of(&self, listener: &str) -> Option<&RouteTable<Target>> {
        if listener == DEFAULT_LISTENER {
            return Some(&self.table);
        }
        self.listeners.iter().find(|(name, _, _)| &**name == listener).map(|(_, _, table)| table)
    }

    /// The default listener's routes as configured (or derived).
    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    /// Every listener's name and routes as configured, the default first.
    pub fn listener_specs(&self) -> impl Iterator<Item = (&str, &[RouteSpec])> {
        std::iter::once((DEFAULT_LISTENER, self.specs.as_slice()))
            .chain(self.listeners.iter().map(|(name, specs, _)| (&**name, specs.as_slice())))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::health::HealthConfig;
    use crate::routing::{Action, RetryOverride, RouteSpec, SplitTargetSpec};
    use crate::upstream::{UpstreamPolicy, UpstreamSpec};
    use veer_plugin_runtime::{Limits, PluginRuntime, PluginSource};

    fn group(name: &str, policy: UpstreamPolicy) -> Arc<Upstream> {
        let runtime = PluginRuntime::new(Limits::default()).unwrap();
        let (backends, params, health) = (vec![], vec![], HealthConfig::default());
        let spec = UpstreamSpec {
            name: name.into(),
            backends,
            picker: PluginSource::NativeRoundRobin,
            params,
            candidate: None,
            health,
            policy,
            tls: None,
        };
        Arc::new(Upstream::new(runtime, spec, Arc::new(crate::pool::Unrecorded)).unwrap())
    }

    /// Each key of a request's policy comes from the route if it sets it,
    /// else from the upstream the request goes to, else from the proxy.
    #[test]
    fn a_targets_policy_is_the_routes_over_the_upstreams_over_the_proxys() {
        let own = UpstreamPolicy {
            timeout: Some(Duration::from_secs(5)),
            retry: Some(RetryOverride {
                max_attempts: Some(5),
                retry_on_status: Some(vec![500]),
                ..Default::default()
            }),
        };
        let (strict, plain) = (group("strict", own), group("plain", UpstreamPolicy::default()));
        let mut split = RouteSpec::new("split");
        split.split = vec![
            SplitTargetSpec { upstream: "strict".into(), weight: 1 },
            SplitTargetSpec { upstream: "plain".into(), weight: 1 },
        ];
        split.retry = Some(RetryOverride { max_attempts: Some(2), ..Default::default() });
        let base = RequestPolicy { timeout: Duration::from_secs(60), retry: RetryPolicy::default() };
        let routes = Routes::new(vec![strict, plain], vec![split], base).unwrap();
        let Action::Split(split) = &routes.table().routes()[0].action else { panic!("a split") };
        let targets: Vec<_> = split.targets().map(|(target, _)| target).collect();
        let (strict, plain) = (targets[0], targets[1]);
        assert_eq!((strict.timeout, plain.timeout), (Duration::from_secs(5), Duration::from_secs(60)));
        assert_eq!((strict.retry.max_attempts, plain.retry.max_attempts), (2, 2), "the route's own change wins");
        assert_eq!(strict.retry.retry_on_status, vec![500], "the upstream's, where the route is silent");
        assert_eq!(plain.retry.retry_on_status, RetryPolicy::default().retry_on_status, "the proxy's otherwise");
    }
}
