//! The config file: a typed YAML schema, validation that reports every
//! problem at once with `file:line:col`, and hot reload.
//!
//! - [`Config`]: the schema. Every struct denies unknown keys; every key but
//!   `backends` has a default, kept beside the struct it belongs to
//!   (`ProxyConfig`, `HealthConfig`, `ObserveConfig` are the data path's own).
//! - [`load`] / [`parse`]: text → [`Loaded`] (the schema plus the
//!   [`ServerOptions`] it describes), or [`ConfigErrors`] listing each problem.
//! - [`reload::Reloader`]: applies a new file to a running veer.
//!
//! Structural errors (YAML syntax, an unknown key, a wrong type) come from the
//! parser, which stops at the first; the problem carries its exact line and
//! column. Once the structure is right, every semantic problem (duplicate
//! names, bad addresses, weights out of range, an unknown picker, health
//! settings that do not make sense) is reported together, each located at
//! the key it concerns by [`locate`].

mod options;
pub mod reload;
pub mod state;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use options::{CanaryOptions, ListenerSpec, ServerOptions};
pub use validate::locate;

use veer_data_plane::health::HealthConfig;
use veer_data_plane::observe::ObserveConfig;
use veer_data_plane::pool::BackendProtocol;
use veer_data_plane::proxy::ProxyConfig;
pub use veer_data_plane::routing::canary::HeaderMatch;
pub use veer_data_plane::routing::{RetryOverride, RouteSpec};
use veer_data_plane::tls::{BackendTlsConfig, ListenerTlsConfig};

/// Environment variable that holds the admin token when the file does not.
pub const ADMIN_TOKEN_ENV: &str = "VEER_ADMIN_TOKEN";

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect, `HOST:PORT`. Changing it needs a restart.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The admin API's listener and access.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The backends of the default group (the upstream named `default`).
    /// Names must be unique across every group. May be left out when
    /// `upstreams` name every group.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// The routing policy.
    #[serde(default)]
    pub picker: PickerConfig,
    /// Timeouts and retries of the data path. Changing them needs a restart.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Active checks, breakers, outlier ejection, slow start. Changing them
    /// needs a restart.
    #[serde(default)]
    pub health: HealthConfig,
    /// Admission control: global in-flight cap and queue, per-client rate,
    /// adaptive (AIMD) limit. Changing it needs a restart.
    #[serde(default)]
    pub admission: veer_data_plane::admission::AdmissionConfig,
    /// Access log (request logging), metric dumps, latency advisory.
    /// Changing them needs a restart.
    #[serde(default)]
    pub observe: ObserveConfig,
    /// Watching this file for changes.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Persisting the picker's learned state across restarts.
    #[serde(default)]
    pub state: StateConfig,
    /// A second backend group receiving a share of the traffic; `null`: none.
    /// Its split, backends and picker reload live; adding or removing the
    /// whole group needs a restart.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Named upstream groups besides the default one, each with its own
    /// backends, picker and health settings; routes forward to them by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamConfig>,
    /// The listener's routes, tried in order (see `docs/routes.md`); unset:
    /// every request to the default group (and the canary's share to the
    /// canary). Replaces `canary`: write a canary as a `split` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteSpec>>,
    /// Further listeners besides `listen`, each on its own address with its
    /// own routes over the same upstreams. Added, moved and removed live.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerConfig>,
    /// TLS on `listen` (HTTPS); unset: plain HTTP. Certificates reload live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_tls: Option<ListenerTlsConfig>,
    /// TLS towards the top-level `backends` (and the canary's); unset:
    /// plain HTTP. Reloads live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<BackendTlsConfig>,
    /// How backend names (`NAME:PORT`, `_service._proto.NAME`) are
    /// resolved. Changing it needs a restart.
    #[serde(default)]
    pub discovery: crate::discovery::DiscoveryConfig,
    /// Handing the listening sockets to a new veer process (`veer run
    /// --upgrade`). Changing it needs a restart.
    #[serde(default)]
    pub upgrade: crate::upgrade::UpgradeConfig,
}

/// A further listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique among the listeners (`default` is `listen`'s); names it in
    /// logs and the admin API.
    pub name: String,
    /// `HOST:PORT` it accepts on.
    pub address: String,
    /// Its routes, tried in order.
    pub routes: Vec<RouteSpec>,
    /// TLS (HTTPS); unset: plain HTTP. Certificates reload live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsConfig>,
}

/// A named upstream group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique among the upstreams (`default` and `canary` are taken by the
    /// groups the top-level `backends` and `canary` make).
    pub name: String,
    /// Its backends; names unique across every group. May be left out when
    /// `backends_file` lists them.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// A YAML or JSON file listing more backends (`backends: [...]`, each
    /// entry as here but with an `IP:PORT` address), written by other
    /// tooling; watched and applied like a reload of this upstream.
    /// Relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends_file: Option<PathBuf>,
    /// Its picker.
    #[serde(default)]
    pub picker: PickerConfig,
    /// Its health checks, breakers, outlier ejection and slow start; unset:
    /// the top-level `health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    /// Its requests' total timeout; unset: `proxy.total_timeout`. A route's
    /// `timeout` overrides it.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Changes to `proxy.retry` for its requests, key by key; a route's
    /// `retry` changes apply over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOverride>,
    /// TLS towards its backends; unset: plain HTTP. Reloads live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTlsConfig>,
}

/// The canary group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Share of (matching) requests sent to the canary group, 0 to 100,
    /// decided per request from its request id.
    pub percent: f64,
    /// Only requests with this header value are considered; unset: all.
    #[serde(default)]
    pub header: Option<HeaderMatch>,
    /// Its backends; names must differ from the main group's.
    pub backends: Vec<BackendConfig>,
    /// Its own picker.
    #[serde(default)]
    pub picker: PickerConfig,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

/// The admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `HOST:PORT` of the admin listener; `null` turns the admin API off.
    /// Anything but a loopback address requires a token.
    pub listen: Option<String>,
    /// Bearer token every admin request must carry (`Authorization: Bearer
    /// TOKEN`). Unset: the `VEER_ADMIN_TOKEN` environment variable, if set;
    /// else no token (allowed on loopback only).
    pub token: Option<String>,
    /// Directories `PUT /picker` may load component files from (relative to
    /// this file). Built-ins are always allowed; no other path is.
    pub plugin_dirs: Vec<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: Some("127.0.0.1:9901".to_string()), token: None, plugin_dirs: Vec::new() }
    }
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name; reloads match backends by it.
    pub name: String,
    /// `IP:PORT`; or `NAME:PORT`, one backend per address the name
    /// resolves to (named `NAME@IP:PORT` after this entry); or an SRV name,
    /// `_service._proto.NAME`, one backend per target address with the
    /// target's port and SRV weight. Names are re-resolved on their TTL
    /// (see `discovery`).
    pub address: String,
    /// Relative weight, 1 to 10000.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Most attempts in flight at once; unset: no cap.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// `http1` (pooled keep-alive) or `http2` (h2c, prior knowledge).
    #[serde(default)]
    pub protocol: BackendProtocol,
    /// Free-form labels passed to the picker (`zone: eu-1`, `version: v2`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

/// The picker plugin and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PickerConfig {
    /// `builtin:NAME`, `native:round-robin`, or a path to a component
    /// (relative paths are relative to the config file).
    pub source: String,
    /// Parameters handed to the plugin's `configure`; values are scalars
    /// (strings, numbers, booleans), passed to the plugin as text.
    pub params: BTreeMap<String, serde_norway::Value>,
    /// A candidate picker on trial beside this one, on a share of the
    /// group's requests; unset: none. Reloads live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateConfig>,
}

impl Default for PickerConfig {
    fn default() -> Self {
        PickerConfig { source: "builtin:p2c-ewma".to_string(), params: BTreeMap::new(), candidate: None }
    }
}

/// A candidate picker tried on live traffic beside the serving one: same
/// backends, same health state, its own share of the requests (drawn per
/// request from veer's own random numbers, never from anything a client
/// sends), and its requests' success and latency measured beside the
/// serving picker's (`GET /upstreams/{name}/candidate`, the
/// `veer_picker_trial_*` series).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    /// As the picker's `source`.
    pub source: String,
    /// As the picker's `params`.
    #[serde(default)]
    pub params: BTreeMap<String, serde_norway::Value>,
    /// Percent of the group's requests the candidate routes, above 0 and
    /// below 100.
    pub share: f64,
    /// When the trial decides on its own; unset: never (an operator
    /// promotes or stops it through the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<PromoteConfig>,
}

/// The rule that ends a trial: once both pickers answered `min_requests`,
/// the candidate is promoted (made the serving picker, live, with what it
/// learned) when it is better and retired when it is worse. Better means a
/// lower error rate (5xx answers), or, error rates equal, a mean latency
/// lower by more than `margin`; each difference must also be larger than
/// three standard errors, so that noise decides nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromoteConfig {
    /// Requests each picker must have answered first.
    pub min_requests: u64,
    /// Percent by which the candidate's mean latency must differ.
    pub margin: f64,
}

impl Default for PromoteConfig {
    fn default() -> Self {
        PromoteConfig { min_requests: 1000, margin: 5.0 }
    }
}

impl PromoteConfig {
    /// The rule as the trial applies it (the margin as a fraction).
    pub fn rule(&self) -> veer_plugin_runtime::TrialRule {
        veer_plugin_runtime::TrialRule { min_requests: self.min_requests, margin: self.margin / 100.0 }
    }
}

/// What is wrong with a trial's `share` (percent) and `promote` rule, as
/// (key, message) pairs: the config file and the admin API check the same.
pub fn trial_problems(share: f64, promote: Option<&PromoteConfig>) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if !(share > 0.0 && share < 100.0) {
        problems.push(("share", format!("{share} must be above 0 and below 100 (percent of the requests)")));
    }
    if let Some(promote) = promote {
        if promote.min_requests == 0 {
            problems.push(("promote.min_requests", "must be at least 1".to_string()));
        }
        if !(promote.margin >= 0.0 && promote.margin < 100.0) {
            problems.push(("promote.margin", format!("{} must be at least 0 and below 100 (percent)", promote.margin)));
        }
    }
    problems
}

/// Watching the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload when the file's content changes (polled; SIGHUP and
    /// `POST /reload` work either way).
    pub watch: bool,
    /// How often the file is looked at.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig { watch: true, poll_interval: Duration::from_secs(1) }
    }
}

/// Persisting the picker's learned state (see [`state`]). Changing it needs a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory for `<policy-name>.state` files (relative to the config
    /// file); `null`: state is not persisted.
    pub dir: Option<PathBuf>,
    /// Time between saves; the state is also saved at shutdown.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig { dir: None, interval: Duration::from_secs(300) }
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The file (or `<inline>`).
    pub file: String,
    /// 1-based line and column of the key, when known.
    pub line: Option<usize>,
    /// See `line`.
    pub column: Option<usize>,
    /// Dotted path of the key, e.g. `backends[2].weight`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{}", self.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

/// A valid config: the schema as written, and what it means for the server.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed file.
    pub config: Config,
    /// The server it describes (addresses parsed, defaults applied).
    pub options: ServerOptions,
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        problems: vec![Problem {
            file: file.clone(),
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&text, &file, path.parent())
}

/// Parses and validates config `text` named `file` (for messages); relative
/// plugin paths are resolved against `base`.
pub fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let config = validate::structure(text, file)?;
    validate::semantics(config, text, file, base)
}

/// Where a reloadable config comes from, and how the running server treats it.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlOptions {
    /// The config file `veer run --config` was given; reloads read it.
    pub config_file: Option<PathBuf>,
    /// Poll the file this often and reload on a change; `None`: no watching.
    pub watch: Option<Duration>,
    /// Bearer token the admin API requires; `None`: none (loopback only).
    pub admin_token: Option<String>,
    /// Where the picker's state is saved and restored from; `None`: nowhere.
    pub state_dir: Option<PathBuf>,
    /// Time between state saves (also saved at shutdown).
    pub state_interval: Duration,
    /// Directories the admin API may load picker components from.
    pub plugin_dirs: Vec<PathBuf>,
    /// Handing the listening sockets to a new process (path resolved).
    pub upgrade: crate::upgrade::UpgradeConfig,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            config_file: None,
            watch: None,
            admin_token: None,
            state_dir: None,
            state_interval: StateConfig::default().interval,
            plugin_dirs: Vec::new(),
            upgrade: crate::upgrade::UpgradeConfig::default(),
        }
    }
}

/// Whether `address` may serve the admin API without a token.
pub fn is_loopback(address: &std::net::SocketAddr) -> bool {
    address.ip().is_loopback()
}

/// The admin token from the file, else from [`ADMIN_TOKEN_ENV`].
pub fn admin_token(config: &AdminConfig) -> Option<String> {
    config.token.clone().or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use super::*;

    #[test]
    fn the_commented_example_parses_and_sets_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/veer.yaml");
        let loaded = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let options = &loaded.options;
        assert_eq!(options.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(options.admin, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(options.backends.len(), 3);
        assert_eq!(options.backends[0].max_concurrent, Some(100));
        assert_eq!(options.backends[1].weight, 3);
        assert_eq!(options.backends[0].labels.get("zone").map(String::as_str), Some("eu-1"));
        assert_eq!(options.proxy.limits.max_header_bytes, 64 * 1024);
        assert_eq!(options.proxy.retry.replay_buffer_bytes, 65536);
        assert_eq!(options.picker.to_string(), "builtin:p2c-ewma");
        assert_eq!(options.proxy.workers, 2);
        assert_eq!(options.proxy.total_timeout, Duration::from_secs(60));
        assert!(options.observe.access_log.is_some());
        assert_eq!(options.control.watch, Some(Duration::from_secs(1)));
        // Every key the example sets is the default, except where it says otherwise.
        assert_eq!(options.health, HealthConfig::default());
    }

    #[test]
    fn every_key_of_the_schema_appears_in_the_example() {
        let example =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/veer.yaml")).unwrap();
        let loaded = parse(&example, "veer.yaml", None).unwrap();
        // Serialising the parsed config lists every key the schema has; each must be in the example.
        let value = serde_json::to_value(&loaded.config).unwrap();
        let mut missing = Vec::new();
        collect_keys(&value, "", &mut |path, key| {
            let line = validate::locate(&example, path).and_then(|(line, _)| example.lines().nth(line - 1));
            if !line.is_some_and(|line| line.contains(&format!("{key}:"))) {
                missing.push(path.to_string());
            }
        });
        assert!(missing.is_empty(), "keys missing from examples/veer.yaml: {missing:?}");
    }

    #[test]
    fn the_https_example_parses_and_shows_every_tls_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/https.yaml");
        let example = std::fs::read_to_string(&path).unwrap();
        // Loading reads every certificate, key and CA bundle it names.
        let loaded = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let listener = loaded.options.listeners[0].tls.as_ref().unwrap();
        assert!(listener.certificates[0].cert.is_absolute(), "paths are relative to the file");
        let upstream = loaded.options.upstreams[1].tls.as_ref().unwrap();
        let mut missing = Vec::new();
        for value in [serde_json::to_value(listener).unwrap(), serde_json::to_value(upstream).unwrap()] {
            collect_keys(&value, "", &mut |_, key| {
                if !example.contains(&format!("{key}:")) {
                    missing.push(key.to_string());
                }
            });
        }
        assert!(missing.is_empty(), "TLS keys missing from examples/https.yaml: {missing:?}");
        assert!(example.contains("insecure_skip_verify:"));
    }

    #[test]
    fn the_multi_service_example_parses_and_shows_every_route_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/multi-service.yaml");
        let example = std::fs::read_to_string(&path).unwrap();
        let loaded = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<_> = loaded.options.upstream_specs().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["api", "api-next", "static", "shadow"], "no default group without top-level backends");
        let routes = loaded.options.routes.as_ref().unwrap();
        assert_eq!(routes.len(), 5);
        let static_health = &loaded.options.upstreams[2].health;
        assert_eq!(static_health.check.interval, Duration::from_secs(5), "an upstream's own health settings");
        assert_eq!(loaded.options.upstreams[0].health, loaded.config.health, "the top-level ones otherwise");
        // Every key a route can have is shown somewhere in the example.
        let value = serde_json::to_value(routes).unwrap();
        let mut missing = Vec::new();
        for route in value.as_array().unwrap() {
            collect_keys(route, "", &mut |_, key| {
                if !example.contains(&format!("{key}:")) {
                    missing.push(key.to_string());
                }
            });
        }
        assert!(missing.is_empty(), "route keys missing from examples/multi-service.yaml: {missing:?}");
        for key in ["hosts", "path", "methods", "headers", "query", "forward", "split", "mirror", "redirect", "respond"]
        {
            assert!(example.contains(&format!("{key}:")), "{key}");
        }
    }

    fn collect_keys(value: &serde_json::Value, prefix: &str, visit: &mut dyn FnMut(&str, &str)) {
        if let serde_json::Value::Object(map) = value {
            for (key, child) in map {
                // Plugin parameters are free-form.
                if prefix == "picker" && key == "params" {
                    continue;
                }
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                visit(&path, key);
                collect_keys(child, &path, visit);
            }
        }
        if let serde_json::Value::Array(items) = value
            && let Some(first) = items.first()
        {
            collect_keys(first, &format!("{prefix}[0]"), visit);
        }
    }

    #[test]
    fn problems_print_as_file_line_column_path_message() {
        let problem = Problem {
            file: "veer.yaml".into(),
            line: Some(14),
            column: Some(7),
            path: "backends[2].weight".into(),
            message: "must be from 1 to 10000, not 0".into(),
        };
        assert_eq!(problem.to_string(), "veer.yaml:14:7: backends[2].weight: must be from 1 to 10000, not 0");
    }
}
