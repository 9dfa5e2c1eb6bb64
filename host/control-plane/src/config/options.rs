//! What veer is started with: the config file's (or the command line's)
//! product, resolved and checked, and what `server::start` consumes.

use std::net::SocketAddr;

use super::ControlOptions;
use veer_data_plane::admission::AdmissionConfig;
use veer_data_plane::health::HealthConfig;
use veer_data_plane::observe::ObserveConfig;
use veer_data_plane::pool::BackendSpec;
use veer_data_plane::proxy::ProxyConfig;
use veer_data_plane::routing::canary::CanarySplit;
use veer_data_plane::routing::{
    CANARY_UPSTREAM, DEFAULT_LISTENER, DEFAULT_UPSTREAM, RequestPolicy, RouteProblem, RouteSpec, Routes,
};
use veer_data_plane::tls::{BackendTlsConfig, ListenerTlsConfig};
use veer_data_plane::upstream::{Upstream, UpstreamPolicy, UpstreamSpec};
use veer_plugin_runtime::{Limits, PluginSource};

/// Everything needed to start veer.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where the admin API listens; `None` disables it.
    pub admin: Option<SocketAddr>,
    /// The backends.
    pub backends: Vec<BackendSpec>,
    /// The picker plugin.
    pub picker: PluginSource,
    /// Its parameters.
    pub params: Vec<(String, String)>,
    /// A candidate picker on trial beside it; `None`: none.
    pub candidate: Option<veer_plugin_runtime::TrialSpec>,
    /// Timeouts and retries.
    pub proxy: ProxyConfig,
    /// Limits for plugin calls.
    pub limits: Limits,
    /// Admission control: global in-flight cap, per-client rate, adaptive limit.
    pub admission: AdmissionConfig,
    /// Active checks, breakers, outlier ejection and slow start of the backends.
    pub health: HealthConfig,
    /// Access log, metric dumps, latency advisory.
    pub observe: ObserveConfig,
    /// Config file for reloads, its watching, and the admin token.
    pub control: ControlOptions,
    /// A second backend group receiving a share of the traffic.
    pub canary: Option<CanaryOptions>,
    /// Named upstream groups besides the default one.
    pub upstreams: Vec<UpstreamSpec>,
    /// The listener's routes; `None`: every request to the default group
    /// (and the canary's share to the canary).
    pub routes: Option<Vec<RouteSpec>>,
    /// Further listeners, each with its own routes.
    pub listeners: Vec<ListenerSpec>,
    /// TLS on `listen`; `None`: plain HTTP.
    pub listen_tls: Option<ListenerTlsConfig>,
    /// TLS towards the default and canary groups' backends.
    pub backend_tls: Option<BackendTlsConfig>,
    /// Backends found by name or in files, and how names are resolved.
    pub discovery: crate::discovery::DiscoveryOptions,
}

/// A further listener: its name, address and routes.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    /// Its name.
    pub name: String,
    /// Where it accepts.
    pub address: SocketAddr,
    /// Its routes.
    pub routes: Vec<RouteSpec>,
    /// TLS; `None`: plain HTTP.
    pub tls: Option<ListenerTlsConfig>,
}

impl ServerOptions {
    /// Every listener's routes over `upstreams` (the groups of
    /// [`ServerOptions::upstream_specs`], started, in that order), each
    /// request starting from `base` (the running proxy's policy).
    pub fn routes_over(
        &self,
        upstreams: Vec<std::sync::Arc<Upstream>>,
        base: RequestPolicy,
    ) -> Result<Routes, Vec<RouteProblem>> {
        let routes = match &self.routes {
            Some(specs) => Routes::new(upstreams, specs.clone(), base),
            None => Routes::derived(upstreams, self.canary.as_ref().map(|canary| canary.split.clone()), base),
        }?;
        self.listeners
            .iter()
            .try_fold(routes, |routes, listener| routes.with_listener(&listener.name, listener.routes.clone()))
    }

    /// A line for each certificate an `https` listener serves that expires
    /// within `window` (what `veer check` warns about).
    pub fn expiring_certificates(&self, window: std::time::Duration) -> Vec<String> {
        let now = std::time::SystemTime::now();
        let listeners = std::iter::once((DEFAULT_LISTENER, self.listen_tls.as_ref()))
            .chain(self.listeners.iter().map(|listener| (listener.name.as_str(), listener.tls.as_ref())));
        let mut warnings = Vec::new();
        for (name, tls) in listeners {
            for certificate in tls.and_then(|tls| tls.load().ok()).unwrap_or_default() {
                if certificate.expires_within(window, now) {
                    let left = std::time::Duration::from_secs(certificate.seconds_to_expiry(now).max(0.0) as u64);
                    warnings.push(format!(
                        "listener {name}: certificate {} ({}) expires in {} (at {})",
                        certificate.label(),
                        certificate.path.display(),
                        humantime::format_duration(std::time::Duration::from_secs(left.as_secs() / 3600 * 3600)),
                        humantime::format_rfc3339_seconds(certificate.not_after),
                    ));
                }
            }
        }
        warnings
    }

    /// A request's timeout and retry policy before routes and upstreams
    /// change them.
    pub fn request_policy(&self) -> RequestPolicy {
        RequestPolicy { timeout: self.proxy.total_timeout, retry: self.proxy.retry.clone() }
    }

    /// Every upstream group these options describe, in order: the default
    /// group (from `backends`, unless they are empty and named upstreams
    /// stand in for it), the canary, then the named ones.
    pub fn upstream_specs(&self) -> Vec<UpstreamSpec> {
        let mut specs = Vec::new();
        if !self.backends.is_empty() || self.upstreams.is_empty() {
            specs.push(UpstreamSpec {
                name: DEFAULT_UPSTREAM.to_string(),
                backends: self.backends.clone(),
                picker: self.picker.clone(),
                params: self.params.clone(),
                candidate: self.candidate.clone(),
                health: self.health.clone(),
                policy: UpstreamPolicy::default(),
                tls: self.backend_tls.clone(),
            });
        }
        if let Some(canary) = &self.canary {
            specs.push(UpstreamSpec {
                name: CANARY_UPSTREAM.to_string(),
                backends: canary.backends.clone(),
                picker: canary.picker.clone(),
                params: canary.params.clone(),
                candidate: canary.candidate.clone(),
                health: self.health.clone(),
                policy: UpstreamPolicy::default(),
                tls: self.backend_tls.clone(),
            });
        }
        specs.extend(self.upstreams.iter().cloned());
        specs
    }
}

/// The canary group: its backends, picker and traffic split. It shares the
/// main group's health settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryOptions {
    /// The canary backends (names distinct from the main group's).
    pub backends: Vec<BackendSpec>,
    /// Its picker.
    pub picker: PluginSource,
    /// The picker's parameters.
    pub params: Vec<(String, String)>,
    /// A candidate picker on trial beside it.
    pub candidate: Option<veer_plugin_runtime::TrialSpec>,
    /// Which requests go to it.
    pub split: CanarySplit,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use veer_data_plane::tls::testing::TestPki;

    #[test]
    fn certificates_expiring_within_the_window_are_named() {
        let pki = TestPki::new("expiring");
        let soon = pki.server("soon", &["soon.test"], 3);
        let later = pki.server("later", &["later.test"], 90);
        let tls = |pair: &(std::path::PathBuf, std::path::PathBuf)| {
            let text = format!("certificates:\n  - {{ cert: {}, key: {} }}\n", pair.0.display(), pair.1.display());
            serde_norway::from_str::<ListenerTlsConfig>(&text).unwrap()
        };
        let loaded =
            crate::config::parse("listen: 127.0.0.1:0\nbackends: [{name: a, address: 127.0.0.1:1}]\n", "t.yaml", None);
        let mut options = loaded.unwrap().options;
        options.listen_tls = Some(tls(&later));
        options.listeners.push(ListenerSpec {
            name: "edge".to_string(),
            address: "127.0.0.1:0".parse().unwrap(),
            routes: Vec::new(),
            tls: Some(tls(&soon)),
        });
        let fortnight = std::time::Duration::from_secs(14 * 86_400);
        let warnings = options.expiring_certificates(fortnight);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("listener edge: certificate soon.test") && warnings[0].contains("soon.pem"),
            "{warnings:?}"
        );
        assert_eq!(options.expiring_certificates(std::time::Duration::from_secs(100 * 86_400)).len(), 2);
    }
}
