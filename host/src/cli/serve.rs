//! `veer run`, `veer demo` and `veer check`: serving, from flags or from a
//! config file, and checking a config file without serving.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use veer::admission::{AdmissionArgs, AdmissionConfig};
use veer::config::ControlOptions;
use veer::discovery::{DiscoveryOptions, GroupSources, NamedBackend, Target};
use veer::health::HealthConfig;
use veer::observe::ObserveConfig;
use veer::observe::access_log::{AccessLogConfig, LogFormat, LogLevel};
use veer::observe::advisory::AdvisoryConfig;
use veer::observe::snapshot::DumpConfig;
use veer::plugin::{Limits, PickerSlot, PluginRuntime, PluginSource};
use veer::pool::{BackendProtocol, BackendSpec, MAX_WEIGHT};
use veer::proxy::ProxyConfig;
use veer::routing::{CANARY_UPSTREAM, DEFAULT_UPSTREAM};
use veer::server::{self, ServerOptions};

use super::{parse_params, tokio_runtime};

/// `veer run`: the proxy in front of the given backends, or as a config file says.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A YAML config file (see examples/veer.yaml): the whole config, reloaded
    /// on SIGHUP, on change and by `POST /reload`. The other flags are refused with it.
    #[arg(long, conflicts_with_all = ["listen", "admin", "backends", "picker", "params", "plugin_dirs"])]
    config: Option<std::path::PathBuf>,
    /// Take over the listening sockets of the veer running with this config
    /// (through its `upgrade.socket`): it stops accepting once this one
    /// serves, finishes its in-flight requests and exits; nothing is
    /// refused. If this one fails to start, the running one keeps serving.
    #[arg(long, requires = "config")]
    upgrade: bool,
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin API; beyond loopback it needs VEER_ADMIN_TOKEN.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// A backend: `[NAME=]HOST:PORT[,weight=N][,max_concurrent=N][,h2]`; repeat for each.
    #[arg(long = "backend", required_unless_present = "config")]
    backends: Vec<String>,
    /// The picker: `builtin:NAME` or a path to a component.
    #[arg(long, default_value = "builtin:p2c-ewma")]
    picker: String,
    /// A picker parameter, `key=value`; repeat for each.
    #[arg(long = "param")]
    params: Vec<String>,
    /// A directory `PUT /picker` may load components from (besides the
    /// built-ins); repeat for each. None: built-ins only.
    #[arg(long = "plugin-dir")]
    plugin_dirs: Vec<std::path::PathBuf>,
    /// Data-path threads, each serving its share of client connections
    /// with its own backend connection pools (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    observe: ObserveArgs,
    #[command(flatten)]
    health: Box<HealthArgs>,
    /// Admission control.
    #[command(flatten)]
    admission: AdmissionArgs,
}

/// `veer demo`: three simulated backends and veer in front of them.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin API.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// The picker.
    #[arg(long, default_value = "builtin:p2c-ewma")]
    picker: String,
    #[command(flatten)]
    observe: ObserveArgs,
}

/// Access log, metric dumps and the latency advisory.
#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    /// Write an access log line per request to this file (`-`: standard output).
    #[arg(long)]
    access_log: Option<std::path::PathBuf>,
    /// Access log line format.
    #[arg(long, value_enum, default_value = "json")]
    access_log_format: AccessLogFormatArg,
    /// Log only 5xx answers.
    #[arg(long)]
    access_log_errors_only: bool,
    /// Share of non-5xx requests logged, 0.0 to 1.0.
    #[arg(long, default_value_t = 1.0)]
    access_log_sample: f64,
    /// Append a JSON snapshot of every metric to this file periodically.
    #[arg(long)]
    metrics_dump: Option<std::path::PathBuf>,
    /// Time between metric dumps.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    metrics_dump_interval: std::time::Duration,
    /// Warn when a backend's latency exceeds its baseline by this many percent (0: off).
    #[arg(long, default_value_t = 50.0)]
    latency_advisory_percent: f64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AccessLogFormatArg {
    Json,
    Text,
}

impl ObserveArgs {
    /// Whether no observability flag was given.
    fn is_default(&self) -> bool {
        self.access_log.is_none()
            && !self.access_log_errors_only
            && self.access_log_sample == 1.0
            && self.metrics_dump.is_none()
            && self.metrics_dump_interval == std::time::Duration::from_secs(10)
            && self.latency_advisory_percent == 50.0
    }

    fn config(&self) -> anyhow::Result<ObserveConfig> {
        if !(0.0..=1.0).contains(&self.access_log_sample) {
            bail!("--access-log-sample must be between 0.0 and 1.0, not {}", self.access_log_sample);
        }
        Ok(ObserveConfig {
            access_log: self.access_log.as_ref().map(|path| AccessLogConfig {
                path: path.clone(),
                format: match self.access_log_format {
                    AccessLogFormatArg::Json => LogFormat::Json,
                    AccessLogFormatArg::Text => LogFormat::Text,
                },
                level: if self.access_log_errors_only { LogLevel::Errors } else { LogLevel::All },
                sample: self.access_log_sample,
                ..AccessLogConfig::default()
            }),
            dump: DumpConfig { path: self.metrics_dump.clone(), interval: Some(self.metrics_dump_interval) },
            advisory: AdvisoryConfig { rise_percent: self.latency_advisory_percent, ..AdvisoryConfig::default() },
            tracing: None,
        })
    }
}

/// Health flags of `veer run`; each overrides one field of the defaults in
/// `veer::health::HealthConfig` (documented there and in the README).
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Turn active health checks off.
    #[arg(long)]
    no_health_check: bool,
    /// Health check path.
    #[arg(long)]
    health_path: Option<String>,
    /// Health check method.
    #[arg(long)]
    health_method: Option<String>,
    /// Host header of health checks (default: the backend's address).
    #[arg(long)]
    health_host: Option<String>,
    /// Passing statuses, `MIN-MAX` (default 200-399).
    #[arg(long)]
    health_status: Option<String>,
    /// Text the check's response body must contain.
    #[arg(long)]
    health_body: Option<String>,
    /// Milliseconds between checks (±jitter).
    #[arg(long)]
    health_interval_ms: Option<u64>,
    /// Jitter of the interval, as a share (0.1: ±10%).
    #[arg(long)]
    health_jitter: Option<f64>,
    /// Milliseconds a check may take.
    #[arg(long)]
    health_timeout_ms: Option<u64>,
    /// Consecutive passes that make a backend healthy.
    #[arg(long)]
    health_rise: Option<u32>,
    /// Consecutive failures that make a backend unhealthy.
    #[arg(long)]
    health_fall: Option<u32>,
    /// Consecutive failed attempts that open a backend's breaker (0: off).
    #[arg(long)]
    breaker_failures: Option<u32>,
    /// Share of failed attempts in the breaker window that opens it (0: off).
    #[arg(long)]
    breaker_failure_ratio: Option<f64>,
    /// Milliseconds a breaker stays open.
    #[arg(long)]
    breaker_open_ms: Option<u64>,
    /// Probe attempts a half-open breaker admits at once.
    #[arg(long)]
    breaker_probes: Option<u32>,
    /// Consecutive errors (5xx or no response) that eject a backend (0: off).
    #[arg(long)]
    eject_consecutive: Option<u32>,
    /// Milliseconds between success-rate and latency outlier analyses.
    #[arg(long)]
    eject_interval_ms: Option<u64>,
    /// Milliseconds of the first ejection; the n-th lasts n times as long.
    #[arg(long)]
    eject_base_ms: Option<u64>,
    /// Longest ejection, milliseconds.
    #[arg(long)]
    eject_max_ms: Option<u64>,
    /// Largest share of backends ejected at once.
    #[arg(long)]
    eject_max_share: Option<f64>,
    /// Milliseconds of the weight ramp after recovery (0: off).
    #[arg(long)]
    slow_start_ms: Option<u64>,
}

impl HealthArgs {
    fn config(&self) -> anyhow::Result<HealthConfig> {
        let ms = std::time::Duration::from_millis;
        let mut config = HealthConfig::default();
        let check = &mut config.check;
        check.enabled = !self.no_health_check;
        if let Some(path) = &self.health_path {
            check.path = path.clone();
        }
        if let Some(method) = &self.health_method {
            check.method = method.clone();
        }
        check.host = self.health_host.clone().or(check.host.take());
        if let Some(range) = &self.health_status {
            let (min, max) = range
                .split_once('-')
                .and_then(|(min, max)| Some((min.parse().ok()?, max.parse().ok()?)))
                .with_context(|| format!("--health-status '{range}' is not MIN-MAX, e.g. 200-399"))?;
            (check.expect_status_min, check.expect_status_max) = (min, max);
        }
        check.expect_body = self.health_body.clone().or(check.expect_body.take());
        set(&mut check.interval, self.health_interval_ms.map(ms));
        set(&mut check.jitter, self.health_jitter);
        set(&mut check.timeout, self.health_timeout_ms.map(ms));
        set(&mut check.rise, self.health_rise);
        set(&mut check.fall, self.health_fall);
        let breaker = &mut config.breaker;
        set(&mut breaker.consecutive_failures, self.breaker_failures);
        set(&mut breaker.failure_ratio, self.breaker_failure_ratio);
        set(&mut breaker.open_for, self.breaker_open_ms.map(ms));
        set(&mut breaker.half_open_probes, self.breaker_probes);
        let outlier = &mut config.outlier;
        set(&mut outlier.consecutive_errors, self.eject_consecutive);
        set(&mut outlier.interval, self.eject_interval_ms.map(ms));
        set(&mut outlier.base_ejection, self.eject_base_ms.map(ms));
        set(&mut outlier.max_ejection, self.eject_max_ms.map(ms));
        set(&mut outlier.max_ejected_share, self.eject_max_share);
        set(&mut config.slow_start.window, self.slow_start_ms.map(ms));
        config.validate()?;
        Ok(config)
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// `veer run`: from the config file, or else from the flags.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let upgrade = args.upgrade;
    let options = match args.config.clone() {
        Some(path) => options_from_file(path, &args)?,
        None => options_from_flags(args)?,
    };
    let handover = match (upgrade, &options.control.upgrade.socket) {
        (false, _) => None,
        (true, Some(path)) => Some(veer::upgrade::Handover::take(path).map_err(anyhow::Error::msg)?),
        (true, None) => {
            bail!("--upgrade needs upgrade.socket in the config file: where the running veer offers its sockets")
        }
    };
    tokio_runtime()?.block_on(serve_until_signal(options, handover))
}

/// With `--config`, everything comes from the file (clap refuses the
/// listener, backend and picker flags; this refuses the rest).
fn options_from_file(path: std::path::PathBuf, args: &RunArgs) -> anyhow::Result<ServerOptions> {
    if args.health.config()? != HealthConfig::default()
        || !args.observe.is_default()
        || args.admission.config() != AdmissionConfig::default()
        || args.workers.is_some()
    {
        bail!("with --config, set health, admission, workers and observability in the file, not with flags");
    }
    let mut options = load_config(&path)?.options;
    options.control.config_file = Some(path);
    Ok(options)
}

fn options_from_flags(args: RunArgs) -> anyhow::Result<ServerOptions> {
    let (mut backends, mut named) = (Vec::new(), Vec::new());
    for (i, text) in args.backends.iter().enumerate() {
        match parse_backend(i, text)? {
            (spec, None) => backends.push(spec),
            (template, Some(target)) => named.push(NamedBackend { template, target }),
        }
    }
    let mut discovery = DiscoveryOptions::default();
    if !named.is_empty() {
        let sources = GroupSources { fixed: backends.clone(), named, file: None };
        discovery.groups.insert(DEFAULT_UPSTREAM.to_string(), sources);
    }
    Ok(ServerOptions {
        listen: args.listen,
        admin: Some(args.admin),
        backends,
        picker: PluginSource::parse(&args.picker),
        params: parse_params(&args.params)?,
        candidate: None,
        proxy: ProxyConfig {
            workers: args.workers.unwrap_or(ProxyConfig::default().workers).max(1),
            ..ProxyConfig::default()
        },
        limits: Limits::default(),
        observe: args.observe.config()?,
        health: args.health.config()?,
        admission: args.admission.config(),
        control: ControlOptions {
            admin_token: std::env::var(veer::config::ADMIN_TOKEN_ENV).ok().filter(|t| !t.is_empty()),
            plugin_dirs: args.plugin_dirs,
            ..ControlOptions::default()
        },
        canary: None,
        upstreams: Vec::new(),
        routes: None,
        listeners: Vec::new(),
        listen_tls: None,
        backend_tls: None,
        discovery,
    })
}

/// `veer check FILE`: the config is valid and its picker loads.
pub fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let options = load_config(file)?.options;
    let runtime = PluginRuntime::new(Limits::default())?;
    let mut groups = Vec::new();
    for spec in options.upstream_specs() {
        let key = match spec.name.as_str() {
            DEFAULT_UPSTREAM if options.upstreams.iter().all(|u| u.name != DEFAULT_UPSTREAM) => "picker".to_string(),
            CANARY_UPSTREAM if options.canary.is_some() => "canary.picker".to_string(),
            name => format!("upstreams.{name}.picker"),
        };
        let slot = PickerSlot::new(runtime.clone(), &spec.picker, spec.params.clone())
            .with_context(|| format!("{}: {key}.source: the picker failed to load", file.display()))?;
        groups.push((spec, slot.current().info().clone()));
    }
    // Fourteen days: time to notice and rotate before clients see an expired certificate.
    for warning in options.expiring_certificates(std::time::Duration::from_secs(14 * 24 * 3600)) {
        eprintln!("warning: {warning}");
    }
    if let [(spec, info)] = groups.as_slice() {
        println!(
            "ok: {}: listen {}, {}, picker {} {} ({})",
            file.display(),
            options.listen,
            backends_of(&options, spec),
            info.name,
            info.version,
            info.source
        );
        return Ok(());
    }
    let routes = options.routes.as_ref().map_or("derived".to_string(), |routes| routes.len().to_string());
    println!("ok: {}: listen {}, {} upstreams, routes: {routes}", file.display(), options.listen, groups.len());
    for (spec, info) in groups {
        let backends = backends_of(&options, &spec);
        println!("  upstream {}: {backends}, picker {} {} ({})", spec.name, info.name, info.version, info.source);
    }
    Ok(())
}

/// A group's backends as `veer check` tells them: the fixed ones counted,
/// the names and files listed (they are resolved when veer starts).
fn backends_of(options: &ServerOptions, spec: &veer::upstream::UpstreamSpec) -> String {
    let fixed = format!("{} backends", spec.backends.len());
    let Some(sources) = options.discovery.groups.get(&spec.name) else { return fixed };
    let mut found: Vec<String> = sources.named.iter().map(|n| format!("{} ({})", n.template.name, n.target)).collect();
    found.extend(sources.file.iter().map(|file| format!("the file {}", file.display())));
    format!("{fixed} and those of {}, resolved when veer starts", found.join(", "))
}

/// Reads and validates a config file; the error lists every problem.
fn load_config(path: &std::path::Path) -> anyhow::Result<veer::config::Loaded> {
    veer::config::load(path).map_err(|errors| {
        let count = errors.problems.len();
        anyhow::anyhow!("{errors}\n{count} problem{} in {}", if count == 1 { "" } else { "s" }, path.display())
    })
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully; SIGHUP reloads
/// the config file.
async fn serve_until_signal(
    mut options: ServerOptions,
    mut handover: Option<veer::upgrade::Handover>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Components are compiled by a child veer: the compiler never enters this process's memory.
    options.limits.compiler = std::env::current_exe().ok();
    // A failure here drops the handover unanswered: the running veer keeps serving.
    let running = server::start_with(options, handover.as_mut()).await?;
    if let Some(handover) = handover {
        let unused: Vec<_> = handover.remaining().map(|s| format!("{}={}", s.name, s.address)).collect();
        if !unused.is_empty() {
            println!("veer: upgrade: sockets no longer in the config are closed: {}", unused.join(", "));
        }
        handover.ready().map_err(anyhow::Error::msg)?;
        println!("veer: upgrade: serving on the sockets of the previous veer, which now drains and exits");
    }
    println!("veer: proxy on http://{}", running.proxy_addr);
    if let Some(admin) = running.admin_addr {
        println!("veer: admin API on http://{admin}/status, dashboard on http://{admin}/");
    }
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let reloader = running.reloader.clone();
    let stop = wait_for_signal();
    tokio::pin!(stop);
    // An upgrade stops the server from within: a new veer took over.
    let mut stopped = running.stop_handle().subscribe();
    loop {
        tokio::select! {
            result = &mut stop => { result?; break; }
            _ = stopped.wait_for(|stopped| *stopped) => {
                println!("veer: a new veer took over the sockets; finishing in-flight requests");
                running.wait().await;
                return Ok(());
            }
            _ = hangup.recv() => match reloader.reload_file().await {
                // reload_file logs the details.
                Ok(_) => println!("veer: SIGHUP: config reloaded"),
                Err(error) => eprintln!("veer: SIGHUP: {error}"),
            },
        }
    }
    println!("veer: shutting down (in-flight requests get up to the grace period)");
    running.shutdown().await;
    Ok(())
}

/// `veer demo`.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let observe = args.observe.config()?;
    tokio_runtime()?.block_on(serve_demo(args.listen, args.admin, args.picker, observe))
}

/// The demo: simulated backends plus veer, no config file.
async fn serve_demo(
    listen: SocketAddr,
    admin: SocketAddr,
    picker: String,
    observe: ObserveConfig,
) -> anyhow::Result<()> {
    // Kept alive for the whole demo: dropping the handles stops the backends.
    let backends = veer::sim::start_many(veer::sim::demo_specs(), std::net::IpAddr::from([127, 0, 0, 1]), None).await?;
    for backend in &backends {
        println!("veer demo: backend {:<8} {}  {}", backend.name(), backend.url(), backend.profile());
    }
    let specs = backends.iter().map(|b| BackendSpec::new(b.name(), b.addr())).collect();
    let options = ServerOptions {
        listen,
        admin: Some(admin),
        backends: specs,
        picker: PluginSource::parse(&picker),
        params: Vec::new(),
        candidate: None,
        proxy: ProxyConfig::default(),
        limits: Limits::default(),
        observe,
        health: HealthConfig::default(),
        admission: AdmissionConfig::default(),
        control: ControlOptions::default(),
        canary: None,
        upstreams: Vec::new(),
        routes: None,
        listeners: Vec::new(),
        listen_tls: None,
        backend_tls: None,
        discovery: Default::default(),
    };
    println!("veer demo: dashboard on http://{admin}/  (open it in a browser)");
    println!("veer demo: try  curl -i http://{listen}/   and   curl http://{admin}/status");
    println!("veer demo: metrics  curl http://{admin}/metrics   snapshot  curl http://{admin}/snapshot");
    println!(
        "veer demo: swap the picker live:  curl -X PUT http://{admin}/picker -d '{{\"source\": \"builtin:q-learning\"}}'"
    );
    serve_until_signal(options, None).await?;
    for backend in &backends {
        backend.shutdown().await;
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Parses `[NAME=]HOST:PORT[,weight=N][,max_concurrent=N][,h2]`.
/// A `--backend`: its spec, and what its address names when it is a name
/// (resolved at start, like a config file's).
fn parse_backend(index: usize, text: &str) -> anyhow::Result<(BackendSpec, Option<Target>)> {
    let mut fields = text.split(',');
    let target = fields.next().unwrap_or_default();
    let (name, address) = match target.split_once('=') {
        Some((name, address)) => (name.to_string(), address),
        None => (format!("backend-{}", index + 1), target),
    };
    let (address, named) = match address.parse::<SocketAddr>() {
        Ok(address) => (address, None),
        Err(_) => match Target::parse(address) {
            Some(target) => (SocketAddr::from(([0, 0, 0, 0], 0)), Some(target)),
            None => bail!("--backend '{text}': '{address}' is not IP:PORT, NAME:PORT or an SRV name"),
        },
    };
    let mut spec = BackendSpec::new(name, address);
    for field in fields {
        match field.split_once('=') {
            Some(("weight", w)) => {
                spec.weight = w.parse().with_context(|| {
                    format!("--backend '{text}': weight must be a whole number from 1 to {MAX_WEIGHT}, got '{w}'")
                })?
            }
            Some(("max_concurrent", n)) => {
                spec.max_concurrent = Some(n.parse().with_context(|| {
                    format!("--backend '{text}': max_concurrent must be a whole number of at least 1, got '{n}'")
                })?)
            }
            None if field == "h2" => spec.protocol = BackendProtocol::Http2,
            _ => bail!("--backend '{text}': unknown option '{field}' (expected weight=N, max_concurrent=N or h2)"),
        }
    }
    if let Some((field, message)) = spec.problems().into_iter().next() {
        bail!("--backend '{text}': {field} {message}");
    }
    Ok((spec, named))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    /// `veer run`'s flags alone.
    #[derive(Debug, Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    /// `veer check` loads every upstream's picker, not just the default one.
    #[test]
    fn check_loads_the_picker_of_every_upstream() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        check(&examples.join("veer.yaml")).unwrap();
        check(&examples.join("multi-service.yaml")).unwrap();
        let broken = std::env::temp_dir().join(format!("veer-check-{}.yaml", std::process::id()));
        let component = std::env::temp_dir().join(format!("veer-check-{}.wasm", std::process::id()));
        std::fs::write(&component, b"not a component").unwrap();
        let text = format!(
            "upstreams:\n  - name: api\n    backends: [{{name: a, address: 127.0.0.1:1}}]\n  - name: odd\n    picker: {{source: {}}}\n    backends: [{{name: b, address: 127.0.0.1:2}}]\n",
            component.display()
        );
        std::fs::write(&broken, text).unwrap();
        let error = format!("{:#}", check(&broken).unwrap_err());
        assert!(error.contains("upstreams.odd.picker.source: the picker failed to load"), "{error}");
        let _ = std::fs::remove_file(broken);
        let _ = std::fs::remove_file(component);
    }

    fn health_of(args: &[&str]) -> anyhow::Result<HealthConfig> {
        let mut argv = vec!["run", "--backend", "127.0.0.1:1"];
        argv.extend_from_slice(args);
        Run::try_parse_from(argv).unwrap().args.health.config()
    }

    #[test]
    fn health_flags_override_only_what_they_name() {
        let config = health_of(&[
            "--health-path",
            "/ready",
            "--health-status",
            "200-204",
            "--health-interval-ms",
            "500",
            "--breaker-failures",
            "2",
            "--eject-max-share",
            "0.25",
            "--slow-start-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(config.check.path, "/ready");
        assert_eq!((config.check.expect_status_min, config.check.expect_status_max), (200, 204));
        assert_eq!(config.check.interval, Duration::from_millis(500));
        assert_eq!(config.breaker.consecutive_failures, 2);
        assert_eq!(config.outlier.max_ejected_share, 0.25);
        assert_eq!(config.slow_start.window, Duration::ZERO);
        assert_eq!(config.check.rise, HealthConfig::default().check.rise);
        assert_eq!(health_of(&[]).unwrap(), HealthConfig::default());
        assert!(!health_of(&["--no-health-check"]).unwrap().check.enabled);
        assert!(health_of(&["--health-status", "200"]).unwrap_err().to_string().contains("MIN-MAX"));
        assert!(health_of(&["--health-rise", "0"]).unwrap_err().to_string().contains("check.rise"));
    }

    #[test]
    fn a_config_file_replaces_the_run_flags_instead_of_mixing_with_them() {
        assert!(Run::try_parse_from(["run", "--config", "veer.yaml"]).is_ok());
        assert!(Run::try_parse_from(["run", "--config", "veer.yaml", "--backend", "127.0.0.1:1"]).is_err());
        assert!(Run::try_parse_from(["run", "--config", "veer.yaml", "--picker", "builtin:least-conn"]).is_err());
        assert!(Run::try_parse_from(["run"]).is_err(), "without a file, backends are required");
        assert!(Run::try_parse_from(["run", "--config", "f"]).unwrap().args.observe.is_default());
        let error = run(Run::try_parse_from(["run", "--config", "f", "--health-path", "/x"]).unwrap().args);
        assert!(error.unwrap_err().to_string().contains("in the file"));
    }

    #[test]
    fn backends_take_a_concurrency_cap_and_a_bounded_weight() {
        let (spec, named) = parse_backend(0, "api=127.0.0.1:9001,weight=3,max_concurrent=50,h2").unwrap();
        assert_eq!((spec.name.as_str(), spec.weight, spec.max_concurrent), ("api", 3, Some(50)));
        assert_eq!((spec.protocol, named), (BackendProtocol::Http2, None));
        assert!(parse_backend(0, "127.0.0.1:9001,max_concurrent=0").is_err());
        assert!(parse_backend(0, "127.0.0.1:9001,weight=10001").unwrap_err().to_string().contains("10000"));
    }

    #[test]
    fn a_backend_flag_may_name_a_host_or_an_srv_record_for_discovery() {
        let args =
            Run::try_parse_from(["run", "--backend", "a=127.0.0.1:1", "--backend", "api=api.internal:80,weight=2"]);
        let options = options_from_flags(args.unwrap().args).unwrap();
        assert_eq!(options.backends.len(), 1, "the name is resolved at start, not here");
        let sources = &options.discovery.groups[DEFAULT_UPSTREAM];
        assert_eq!(sources.named[0].target, Target::Host { host: "api.internal".into(), port: 80 });
        assert_eq!((sources.named[0].template.weight, sources.fixed.len()), (2, 1));
        let error = parse_backend(0, "web=nowhere").unwrap_err().to_string();
        assert!(error.contains("not IP:PORT, NAME:PORT or an SRV name"), "{error}");
    }
}
