//! Turning config text into a [`Loaded`] config, or every problem with it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{
    BackendConfig, Config, ConfigErrors, ControlOptions, Loaded, PickerConfig, Problem, admin_token, is_loopback,
};
use super::{CanaryOptions, ListenerSpec, ServerOptions};
use crate::discovery::{DiscoveryOptions, GroupSources, NamedBackend, Target};
use veer_data_plane::pool::BackendSpec;
use veer_data_plane::routing::canary::CanarySplit;
use veer_data_plane::routing::{CANARY_UPSTREAM, DEFAULT_LISTENER, DEFAULT_UPSTREAM, RouteTable};
use veer_data_plane::tls::{BackendTlsConfig, ListenerTlsConfig};
use veer_data_plane::upstream::{UpstreamPolicy, UpstreamSpec};
use veer_plugin_runtime::{BUILTIN_NAMES, Limits, PluginSource, TrialSpec};

/// Parses the YAML into the schema; the parser stops at the first problem.
pub(super) fn structure(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let deserializer = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = error.into_inner();
        let location = inner.location();
        let (line, column) = match location {
            Some(location) => (Some(location.line()), Some(location.column())),
            None => locate(text, &path).map_or((None, None), |(l, c)| (Some(l), Some(c))),
        };
        // The position is in the problem already; the parser repeats it at the end.
        let mut message = inner.to_string();
        if let (Some(line), Some(column)) = (line, column)
            && let Some(cut) = message.rfind(&format!(" at line {line} column {column}"))
        {
            message.truncate(cut);
        }
        if let Some(rest) = message.strip_prefix(&format!("{path}: ")) {
            message = rest.to_string();
        }
        ConfigErrors { problems: vec![Problem { file: file.to_string(), line, column, path, message }] }
    })
}

/// Collects every semantic problem of a structurally valid config.
struct Collector<'a> {
    text: &'a str,
    file: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        let location = locate(self.text, path);
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: location.map(|l| l.0),
            column: location.map(|l| l.1),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn address(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                self.push(path, format!("'{text}' is not IP:PORT (e.g. 127.0.0.1:9001; host names are not resolved)"));
                None
            }
        }
    }
}

/// Checks everything the parser cannot, reporting every problem at once.
pub(super) fn semantics(config: Config, text: &str, file: &str, base: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let mut c = Collector { text, file, problems: Vec::new() };
    let listen = c.address("listen", &config.listen);
    let token = admin_token(&config.admin);
    let admin = match &config.admin.listen {
        Some(text) => c.address("admin.listen", text),
        None => None,
    };
    if let Some(admin) = admin
        && !is_loopback(&admin)
        && token.is_none()
    {
        c.push(
            "admin.listen",
            format!(
                "{admin} is not a loopback address, so the admin API needs a token: set admin.token or the {} environment variable, or listen on 127.0.0.1",
                super::ADMIN_TOKEN_ENV
            ),
        );
    }
    let mut names: HashMap<&str, String> = HashMap::new();
    // The default group may be left out when named upstreams stand in for it.
    let default_group = !config.backends.is_empty() || config.upstreams.is_empty();
    let mut discovered = BTreeMap::new();
    let default_backends = backends(&mut c, "backends", &config.backends, default_group, &mut names);
    let mut unparsed = default_backends.unparsed;
    if let Some(sources) = default_backends.sources(None) {
        discovered.insert(DEFAULT_UPSTREAM.to_string(), sources);
    }
    let specs = default_backends.specs;
    let (source, params, candidate) = picker(&mut c, "picker", &config.picker, base);
    let mut canary = None;
    if let Some(canary_config) = &config.canary {
        let canary_backends = backends(&mut c, "canary.backends", &canary_config.backends, true, &mut names);
        unparsed |= canary_backends.unparsed;
        if let Some(sources) = canary_backends.sources(None) {
            discovered.insert(CANARY_UPSTREAM.to_string(), sources);
        }
        let canary_specs = canary_backends.specs;
        let (canary_source, canary_params, canary_candidate) =
            picker(&mut c, "canary.picker", &canary_config.picker, base);
        let split = CanarySplit { percent: canary_config.percent, header: canary_config.header.clone() };
        for (path, problem) in split.problems("canary.") {
            c.push(&path, problem);
        }
        canary = Some(CanaryOptions {
            backends: canary_specs,
            picker: canary_source,
            params: canary_params,
            candidate: canary_candidate,
            split,
        });
    }
    health(&mut c, "health", &config.health);
    let listen_tls = check_listener_tls(&mut c, "listen_tls", config.listen_tls.as_ref(), base);
    let backend_tls = check_backend_tls(&mut c, "backend_tls", DEFAULT_UPSTREAM, config.backend_tls.as_ref(), base);
    let mut upstreams = Vec::new();
    let mut upstream_names: Vec<&str> = Vec::new();
    if default_group {
        upstream_names.push(DEFAULT_UPSTREAM);
    }
    if config.canary.is_some() {
        upstream_names.push(CANARY_UPSTREAM);
    }
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let at = |key: &str| format!("upstreams[{i}].{key}");
        let name = upstream.name.as_str();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            c.push(&at("name"), format!("{name:?} must be a non-empty name of letters, digits, '-', '_' or '.'"));
        } else if upstream_names.contains(&name) {
            let why = match name {
                DEFAULT_UPSTREAM if default_group => "the group the top-level backends make",
                CANARY_UPSTREAM if config.canary.is_some() => "the group `canary` makes",
                _ => "another upstream's",
            };
            c.push(&at("name"), format!("{name:?} is already {why} name"));
        }
        upstream_names.push(name);
        let file = upstream.backends_file.as_ref().map(|file| match base {
            Some(base) if file.is_relative() => base.join(file),
            _ => file.clone(),
        });
        if let Some(file) = &file
            && let Err(problem) = crate::discovery::file::read(file)
        {
            c.push(&at("backends_file"), problem);
        }
        let group = backends(&mut c, &at("backends"), &upstream.backends, file.is_none(), &mut names);
        unparsed |= group.unparsed;
        if let Some(sources) = group.sources(file) {
            discovered.insert(upstream.name.clone(), sources);
        }
        let backend_specs = group.specs;
        let (source, params, candidate) = picker(&mut c, &at("picker"), &upstream.picker, base);
        if let Some(own) = &upstream.health {
            health(&mut c, &at("health"), own);
        }
        if upstream.timeout.is_some_and(|t| t.is_zero()) {
            c.push(&at("timeout"), "must be longer than 0s");
        }
        for (key, message) in upstream.retry.iter().flat_map(|retry| retry.problems()) {
            c.push(&at(&format!("retry.{key}")), message);
        }
        upstreams.push(UpstreamSpec {
            name: upstream.name.clone(),
            backends: backend_specs,
            picker: source,
            params,
            candidate,
            health: upstream.health.clone().unwrap_or_else(|| config.health.clone()),
            policy: UpstreamPolicy { timeout: upstream.timeout, retry: upstream.retry.clone() },
            tls: check_backend_tls(&mut c, &at("tls"), &upstream.name, upstream.tls.as_ref(), base),
        });
    }
    let mut listeners = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let at = |key: &str| format!("listeners[{i}].{key}");
        let name = listener.name.as_str();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            c.push(&at("name"), format!("{name:?} must be a non-empty name of letters, digits, '-', '_' or '.'"));
        } else if name == DEFAULT_LISTENER {
            c.push(&at("name"), format!("{name:?} is the name of the listener at `listen`"));
        } else if config.listeners[..i].iter().any(|other| other.name == name) {
            c.push(&at("name"), format!("{name:?} is already another listener's name"));
        }
        let address = c.address(&at("address"), &listener.address);
        let taken = address.filter(|a| a.port() != 0).and_then(|a| {
            (listen == Some(a)).then(|| "`listen`".to_string()).or_else(|| {
                let earlier = listeners.iter().find(|l: &&ListenerSpec| l.address == a)?;
                Some(format!("listener {:?}", earlier.name))
            })
        });
        if let Some(owner) = taken {
            c.push(&at("address"), format!("{} is already {owner}'s address", listener.address));
        }
        if listener.routes.is_empty() {
            c.push(&at("routes"), "needs at least one route");
        }
        if let Err(problems) =
            RouteTable::compile(&listener.routes, |name| upstream_names.contains(&name).then_some(()))
        {
            for problem in problems {
                c.push(&at(&format!("routes{}", problem.path)), problem.message);
            }
        }
        let tls = check_listener_tls(&mut c, &at("tls"), listener.tls.as_ref(), base);
        if let Some(address) = address {
            listeners.push(ListenerSpec { name: listener.name.clone(), address, routes: listener.routes.clone(), tls });
        }
    }
    if let Some(routes) = &config.routes {
        if config.canary.is_some() {
            c.push("canary", "with routes, write the canary as a split route (see docs/routes.md)");
        }
        if routes.is_empty() {
            c.push("routes", "needs at least one route (leave routes out to send everything to the default group)");
        }
        if let Err(problems) = RouteTable::compile(routes, |name| upstream_names.contains(&name).then_some(())) {
            for problem in problems {
                c.push(&format!("routes{}", problem.path), problem.message);
            }
        }
    }
    if let Err(e) = config.admission.validate() {
        // Each problem starts with the field it concerns, e.g. "client_rate.per_second must be…".
        for problem in e.problems {
            let field = problem.split_whitespace().next().unwrap_or_default().to_string();
            c.push(&format!("admission.{field}"), problem);
        }
    }
    let proxy = &config.proxy;
    for (key, value) in [
        ("connect_timeout", proxy.connect_timeout),
        ("response_header_timeout", proxy.response_header_timeout),
        ("total_timeout", proxy.total_timeout),
        ("client_idle_timeout", proxy.client_idle_timeout),
        ("client_header_timeout", proxy.client_header_timeout),
        ("client_body_timeout", proxy.client_body_timeout),
        ("client_send_timeout", proxy.client_send_timeout),
    ] {
        if value.is_zero() {
            c.push(&format!("proxy.{key}"), "must be longer than 0s");
        }
    }
    if proxy.workers == 0 {
        c.push("proxy.workers", "must be at least 1");
    }
    for (key, message) in proxy.retry.problems() {
        c.push(&format!("proxy.retry.{key}"), message);
    }
    if let Some(sticky) = &proxy.sticky
        && (sticky.cookie.is_empty()
            || !sticky.cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        c.push("proxy.sticky.cookie", "must be a non-empty name of letters, digits, '-', '_' or '.'");
    }
    let limits = &proxy.limits;
    for (key, value, min) in [
        ("max_header_bytes", limits.max_header_bytes, 1024),
        ("max_headers", limits.max_headers, 8),
        ("max_uri_bytes", limits.max_uri_bytes, 64),
        ("max_connections", limits.max_connections, 1),
        ("max_connections_per_client", limits.max_connections_per_client, 1),
    ] {
        if value < min {
            c.push(&format!("proxy.limits.{key}"), format!("must be at least {min}"));
        }
    }
    let http2 = &proxy.http2;
    if http2.max_concurrent_streams == 0 {
        c.push("proxy.http2.max_concurrent_streams", "must be at least 1");
    }
    if !(16_384..=16_777_215).contains(&http2.max_frame_bytes) {
        c.push("proxy.http2.max_frame_bytes", "must be between 16384 and 16777215 (RFC 9113 §6.5.2)");
    }
    for (key, value) in [
        ("initial_stream_window_bytes", http2.initial_stream_window_bytes),
        ("initial_connection_window_bytes", http2.initial_connection_window_bytes),
    ] {
        if value == 0 || value > 2_147_483_647 {
            c.push(&format!("proxy.http2.{key}"), "must be between 1 and 2147483647 (RFC 9113 §6.9.1)");
        }
    }
    if let Some(log) = &config.observe.access_log
        && !(0.0..=1.0).contains(&log.sample)
    {
        c.push("observe.access_log.sample", "must be between 0.0 and 1.0");
    }
    for (key, message) in config.observe.tracing.iter().flat_map(|tracing| tracing.problems()) {
        c.push(&format!("observe.tracing.{key}"), message);
    }
    if config.upgrade.ready_timeout.is_zero() {
        c.push("upgrade.ready_timeout", "must be longer than 0s");
    }
    for (key, message) in config.discovery.problems() {
        c.push(&format!("discovery.{key}"), message);
    }
    if config.reload.watch && config.reload.poll_interval.is_zero() {
        c.push("reload.poll_interval", "must be longer than 0s");
    }
    if config.state.dir.is_some() && config.state.interval.is_zero() {
        c.push("state.interval", "must be longer than 0s");
    }
    let state_dir = config.state.dir.as_ref().map(|dir| match base {
        Some(base) if dir.is_relative() => base.join(dir),
        _ => dir.clone(),
    });
    if let Some(dir) = &state_dir
        && dir.exists()
        && !dir.is_dir()
    {
        c.push("state.dir", format!("{} exists and is not a directory", dir.display()));
    }
    let plugin_dirs: Vec<_> = config
        .admin
        .plugin_dirs
        .iter()
        .map(|dir| match base {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir.clone(),
        })
        .collect();
    for (i, dir) in plugin_dirs.iter().enumerate() {
        if !dir.is_dir() {
            c.push(&format!("admin.plugin_dirs[{i}]"), format!("{} is not a directory", dir.display()));
        }
    }
    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
        return Err(ConfigErrors { problems: c.problems });
    }
    let (Some(listen), false) = (listen, unparsed) else {
        unreachable!("every unparsed address was reported as a problem")
    };
    let options = ServerOptions {
        listen,
        admin,
        backends: specs,
        picker: source,
        params,
        candidate,
        proxy: config.proxy.clone(),
        limits: Limits::default(),
        health: config.health.clone(),
        admission: config.admission.clone(),
        observe: config.observe.clone(),
        control: ControlOptions {
            config_file: None,
            watch: config.reload.watch.then_some(config.reload.poll_interval),
            admin_token: token,
            state_dir,
            state_interval: config.state.interval,
            plugin_dirs,
            upgrade: crate::upgrade::UpgradeConfig {
                socket: config.upgrade.socket.as_ref().map(|path| match base {
                    Some(base) if path.is_relative() => base.join(path),
                    _ => path.clone(),
                }),
                ready_timeout: config.upgrade.ready_timeout,
            },
        },
        canary,
        upstreams,
        routes: config.routes.clone(),
        listeners,
        listen_tls,
        backend_tls,
        discovery: DiscoveryOptions {
            settings: config.discovery.clone(),
            // A zero interval was reported above when watching; files are watched either way.
            file_poll: config.reload.poll_interval.max(std::time::Duration::from_millis(100)),
            groups: discovered,
        },
    };
    Ok(Loaded { config, options })
}

/// A listener's TLS settings with their paths resolved, its files loaded
/// and checked (certificates, keys, CA bundle) now, so that a broken pair
/// is refused before anything starts or changes.
fn check_listener_tls(
    c: &mut Collector<'_>,
    path: &str,
    tls: Option<&ListenerTlsConfig>,
    base: Option<&Path>,
) -> Option<ListenerTlsConfig> {
    let resolved = tls?.clone().resolved(base.unwrap_or(Path::new("")));
    if let Err(error) = resolved.load() {
        c.push(path, error.to_string());
    }
    Some(resolved)
}

/// An upstream's TLS settings towards its backends, resolved and loaded.
fn check_backend_tls(
    c: &mut Collector<'_>,
    path: &str,
    upstream: &str,
    tls: Option<&BackendTlsConfig>,
    base: Option<&Path>,
) -> Option<BackendTlsConfig> {
    let resolved = tls?.clone().resolved(base.unwrap_or(Path::new("")));
    if let Err(error) = veer_data_plane::tls::BackendTls::new(upstream, &resolved) {
        c.push(path, error.to_string());
    }
    Some(resolved)
}

/// A group's backend entries, checked: the fixed ones as specs, the named
/// ones for discovery.
struct GroupBackends {
    specs: Vec<BackendSpec>,
    named: Vec<NamedBackend>,
    /// Whether an address was neither `IP:PORT` nor a name.
    unparsed: bool,
}

impl GroupBackends {
    /// Where the group's backends come from, when discovery has a part in it.
    fn sources(&self, file: Option<PathBuf>) -> Option<GroupSources> {
        (!self.named.is_empty() || file.is_some()).then(|| GroupSources {
            fixed: self.specs.clone(),
            named: self.named.clone(),
            file,
        })
    }
}

/// Checks a group's backends (names unique across `names`, which maps each
/// name to where it was first given).
fn backends<'a>(
    c: &mut Collector<'_>,
    prefix: &str,
    list: &'a [BackendConfig],
    required: bool,
    names: &mut HashMap<&'a str, String>,
) -> GroupBackends {
    if list.is_empty() && required {
        c.push(prefix, "needs at least one backend");
    }
    let mut group = GroupBackends { specs: Vec::new(), named: Vec::new(), unparsed: false };
    for (i, backend) in list.iter().enumerate() {
        let at = |key: &str| format!("{prefix}[{i}].{key}");
        if !backend.name.trim().is_empty()
            && let Some(first) = names.insert(backend.name.as_str(), format!("{prefix}[{i}]"))
        {
            c.push(&at("name"), format!("'{}' is already the name of {first}; names must be unique", backend.name));
        }
        if backend.name.contains('@') {
            c.push(&at("name"), "must not contain '@' (discovered backends are named ENTRY@IP:PORT)");
        }
        let address = backend.address.parse::<SocketAddr>().ok();
        let target = address.is_none().then(|| Target::parse(&backend.address)).flatten();
        if address.is_none() && target.is_none() {
            c.push(
                &at("address"),
                format!(
                    "'{}' is not IP:PORT, NAME:PORT or an SRV name (e.g. 127.0.0.1:9001, api.internal:9001, _http._tcp.api.internal)",
                    backend.address
                ),
            );
        }
        let spec = BackendSpec {
            name: backend.name.clone(),
            // Names are resolved at start; unparsable addresses were reported just above.
            address: address.unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            weight: backend.weight,
            protocol: backend.protocol,
            max_concurrent: backend.max_concurrent,
            labels: backend.labels.clone(),
        };
        for (field, message) in spec.problems() {
            c.push(&at(field), message);
        }
        match (address, target) {
            (Some(_), _) => group.specs.push(spec),
            (None, Some(target)) => group.named.push(NamedBackend { template: spec, target }),
            (None, None) => group.unparsed = true,
        }
    }
    group
}

/// Checks a group's health settings, each problem at its field under `prefix`.
fn health(c: &mut Collector<'_>, prefix: &str, config: &veer_data_plane::health::HealthConfig) {
    if let Err(e) = config.validate() {
        // Each problem starts with the field it concerns, e.g. "check.rise must be…".
        for problem in e.problems {
            let field = problem.split_whitespace().next().unwrap_or_default().to_string();
            c.push(&format!("{prefix}.{field}"), problem);
        }
    }
}

/// Checks a picker reference, its parameters and its candidate.
fn picker(
    c: &mut Collector<'_>,
    prefix: &str,
    config: &PickerConfig,
    base: Option<&Path>,
) -> (PluginSource, Vec<(String, String)>, Option<TrialSpec>) {
    let (source, params) = plugin(c, prefix, &config.source, &config.params, base);
    let candidate = config.candidate.as_ref().map(|candidate| {
        let at = |key: &str| format!("{prefix}.candidate.{key}");
        let (source, params) = plugin(c, &format!("{prefix}.candidate"), &candidate.source, &candidate.params, base);
        for (key, problem) in super::trial_problems(candidate.share, candidate.promote.as_ref()) {
            c.push(&at(key), problem);
        }
        let rule = candidate.promote.as_ref().map(super::PromoteConfig::rule);
        TrialSpec { source, params, share: candidate.share / 100.0, rule }
    });
    (source, params, candidate)
}

/// Checks a plugin reference (`source`) and its parameters.
fn plugin(
    c: &mut Collector<'_>,
    prefix: &str,
    source: &str,
    params: &BTreeMap<String, serde_norway::Value>,
    base: Option<&Path>,
) -> (PluginSource, Vec<(String, String)>) {
    let source = picker_source(source, base);
    match &source {
        PluginSource::Builtin(name) if !BUILTIN_NAMES.contains(&name.as_str()) => c.push(
            &format!("{prefix}.source"),
            format!("unknown built-in picker '{name}' (built-ins: {})", BUILTIN_NAMES.join(", ")),
        ),
        PluginSource::Path(path) if !path.is_file() => {
            c.push(&format!("{prefix}.source"), format!("no plugin file at {}", path.display()))
        }
        _ => {}
    }
    let mut checked = Vec::new();
    for (key, value) in params {
        match scalar(value) {
            Some(text) => checked.push((key.clone(), text)),
            None => c.push(&format!("{prefix}.params.{key}"), "must be a string, number or boolean"),
        }
    }
    (source, checked)
}

/// `source` as a plugin source; a relative path is taken relative to `base`.
fn picker_source(source: &str, base: Option<&Path>) -> PluginSource {
    match PluginSource::parse(source) {
        PluginSource::Path(path) if path.is_relative() => {
            PluginSource::Path(base.map_or_else(|| path.clone(), |base| base.join(&path)))
        }
        other => other,
    }
}

/// A scalar YAML value as the text a plugin parameter carries.
fn scalar(value: &serde_norway::Value) -> Option<String> {
    match value {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Finds the 1-based line and column of the key at `path` (`a.b[2].c`) in
/// block-style YAML text, by indentation. Flow-style collections (`[a, b]`,
/// `{a: 1}`) are not entered: the deepest block-style key found is returned.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // The current node: the range of lines it spans, the column its content
    // starts after, and the position found so far.
    let (mut start, mut end, mut parent_column) = (0usize, lines.len(), None::<usize>);
    let mut found = None;
    for segment in segments(path) {
        match segment {
            Segment::Key(key) => {
                // Only the node's direct children: keys at its first key's column.
                let Some(child_column) = (start..end)
                    .filter_map(|n| key_start(lines[n]))
                    .map(|(column, _)| column)
                    .find(|column| parent_column.is_none_or(|p| *column > p))
                else {
                    return found;
                };
                let hit = (start..end).find(|&n| {
                    key_start(lines[n]).is_some_and(|(column, content)| {
                        column == child_column
                            && content.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with(':'))
                    })
                });
                let Some(n) = hit else { return found };
                let column = child_column;
                found = Some((n + 1, column + 1));
                start = n + 1;
                end = block_end(&lines, start, end, column);
                parent_column = Some(column);
            }
            Segment::Index(index) => {
                let mut items = lines.iter().enumerate().take(end).skip(start).filter_map(|(n, line)| {
                    let column = line.len() - line.trim_start().len();
                    let dash = line.trim_start().starts_with("- ") || line.trim() == "-";
                    (dash && parent_column.is_none_or(|p| column >= p)).then_some((n, column))
                });
                let Some((_, item_column)) = items.next() else { return found };
                let mut same = lines.iter().enumerate().take(end).skip(start).filter(|(_, line)| {
                    let column = line.len() - line.trim_start().len();
                    column == item_column && line.trim_start().starts_with('-')
                });
                let Some((n, line)) = same.nth(index) else { return found };
                let column = line.len() - line.trim_start().len();
                found = Some((n + 1, column + 3));
                // Keys of the item sit after "- ", so its block is everything
                // indented past the dash until the next dash at this column.
                let next = lines
                    .iter()
                    .enumerate()
                    .take(end)
                    .skip(n + 1)
                    .find(|(_, l)| {
                        let c = l.len() - l.trim_start().len();
                        !is_blank(l) && c <= column
                    })
                    .map_or(end, |(k, _)| k);
                start = n;
                end = next;
                parent_column = Some(column);
            }
        }
    }
    found
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Where a key starts on `line`: its column (after any `- ` prefixes) and the
/// text from there.
fn key_start(line: &str) -> Option<(usize, &str)> {
    if is_blank(line) {
        return None;
    }
    let mut column = line.len() - line.trim_start().len();
    let mut rest = line.trim_start();
    while let Some(after) = rest.strip_prefix("- ") {
        let trimmed = after.trim_start();
        column += rest.len() - trimmed.len();
        rest = trimmed;
    }
    Some((column, rest))
}

/// The end (exclusive) of the block of the key at `column` that starts at `start`.
fn block_end(lines: &[&str], start: usize, end: usize, column: usize) -> usize {
    (start..end).find(|&n| key_start(lines[n]).is_some_and(|(c, _)| c <= column)).unwrap_or(end)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(index) = rest[1..close].parse() {
                out.push(Segment::Index(index));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TEXT: &str = "\
listen: 127.0.0.1:8080
# a comment
backends:
  - name: a
    address: 127.0.0.1:1
  - name: b
    address: nowhere
    weight: 0
picker:
  source: builtin:round-robin
  params:
    alpha: 0.5
";

    #[test]
    fn keys_are_located_through_lists_and_maps() {
        assert_eq!(locate(TEXT, "listen"), Some((1, 1)));
        assert_eq!(locate(TEXT, "backends"), Some((3, 1)));
        assert_eq!(locate(TEXT, "backends[0].name"), Some((4, 5)));
        assert_eq!(locate(TEXT, "backends[1].address"), Some((7, 5)));
        assert_eq!(locate(TEXT, "backends[1].weight"), Some((8, 5)));
        assert_eq!(locate(TEXT, "backends[1]"), Some((6, 5)));
        assert_eq!(locate(TEXT, "picker.params.alpha"), Some((12, 5)));
        assert_eq!(locate(TEXT, "picker.nope"), Some((9, 1)));
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once_with_its_line() {
        let errors = super::super::parse(TEXT, "veer.yaml", None).unwrap_err();
        let text = errors.to_string();
        assert!(text.contains("veer.yaml:7:5: backends[1].address: 'nowhere' is not IP:PORT"), "{text}");
        assert!(text.contains("veer.yaml:8:5: backends[1].weight: must be from 1 to 10000"), "{text}");
        assert_eq!(errors.problems.len(), 2, "{text}");
    }

    #[test]
    fn names_and_files_are_recorded_for_discovery_and_their_mistakes_reported() {
        let text = "backends:\n  - {name: a, address: 127.0.0.1:1}\n  - {name: b, address: api.internal:80}\n\
                    upstreams:\n  - {name: srv, backends: [{name: s, address: _http._tcp.s.internal}]}\n";
        let options = super::super::parse(text, "f.yaml", None).unwrap().options;
        assert_eq!(options.backends.len(), 1, "only the fixed entry is a backend before resolution");
        let default = &options.discovery.groups[DEFAULT_UPSTREAM];
        assert_eq!((default.fixed.len(), default.named[0].template.name.as_str()), (1, "b"));
        assert_eq!(options.discovery.groups["srv"].named[0].target, Target::Srv("_http._tcp.s.internal".into()));

        let text = "backends: [{name: a@b, address: 127.0.0.1:1}]\n\
                    upstreams: [{name: f, backends_file: /nonexistent/veer-backends.yaml}]\n\
                    discovery: {nameservers: [dns.internal], min_ttl: 0s}\n";
        let errors = super::super::parse(text, "f.yaml", None).unwrap_err().to_string();
        for expected in [
            "backends[0].name: must not contain '@'",
            "upstreams[0].backends_file: cannot read /nonexistent/veer-backends.yaml",
            "discovery.nameservers[0]: \"dns.internal\" is not IP or IP:PORT",
            "discovery.min_ttl: must be longer than 0s",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_position() {
        let errors = super::super::parse("backends: []\nlisten: 127.0.0.1:1\nlisen: x\n", "f.yaml", None).unwrap_err();
        let problem = &errors.problems[0];
        assert_eq!(problem.line, Some(3), "{problem}");
        assert!(problem.message.contains("unknown field `lisen`"), "{problem}");
    }
}
