//! Hot reload: a new config is parsed, validated, its picker loaded and
//! smoke-called, and only then applied; an invalid one changes nothing.
//!
//! What a reload changes live, diffed by name:
//! - the upstream groups: a new one starts (its picker loaded, its backends
//!   checked), a removed one stops once no route uses it, and an unchanged one
//!   keeps everything it has learned;
//! - each kept group's backend set (unchanged backends keep their
//!   connections, latency average, breaker and health; a changed weight is
//!   updated in place; a changed address, protocol or cap replaces the
//!   backend) and its picker (swapped, with state handoff, only when its
//!   source or parameters changed);
//! - the routes (and the canary's split), swapped in one step with the groups
//!   they name.
//!
//! Pickers are swapped and new groups started first: they are the only steps
//! that can fail, so a failure leaves everything as it was.
//!
//! What needs a restart (listeners, timeouts and retries, a kept group's
//! health settings, observe, the admin token, file watching, state
//! persistence): a reload that changes them applies the rest and lists each
//! in [`ReloadReport::restart_required`] and the log.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::ServerOptions;
use super::{
    AdminConfig, BackendConfig, CanaryConfig, Config, ConfigErrors, ListenerConfig, PickerConfig, ReloadConfig,
    StateConfig, UpstreamConfig,
};
use crate::discovery::{Discovery, Resolution};
use veer_data_plane::health::Health;
use veer_data_plane::pool::{BackendSpec, Pool};
use veer_data_plane::proxy::{Listener, ListenerTlsSlot, Proxy};
use veer_data_plane::routing::canary::CanarySplit;
use veer_data_plane::routing::{CANARY_UPSTREAM, DEFAULT_LISTENER, DEFAULT_UPSTREAM};
use veer_data_plane::tls::{self, ListenerTls, server::PreparedTls};
use veer_data_plane::upstream::{Upstream, UpstreamError, UpstreamPolicy, load_tls};
use veer_plugin_runtime::{
    BackendId, PickerSlot, PluginError, PluginRuntime, PluginSource, SwapReport, TrialOutcome, TrialSpec,
};

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// What happened to the main group's backends.
    #[serde(flatten)]
    pub backends: BackendChanges,
    /// The picker swap, if the picker or its parameters changed.
    pub picker: Option<SwapReport>,
    /// What happened to the canary group, if there is one.
    pub canary: Option<CanaryReport>,
    /// What happened to every group, by name (the default and the canary
    /// group included).
    pub upstreams: BTreeMap<String, UpstreamReport>,
    /// The default listener's routes in effect, by name, in order.
    pub routes: Vec<String>,
    /// What happened to each further listener, by name: `added`, `kept`,
    /// `moved` (to a new address; the old one drains) or `removed` (drains).
    pub listeners: BTreeMap<String, &'static str>,
    /// Changed settings that only take effect after a restart.
    pub restart_required: Vec<String>,
}

/// What a reload did to one group's backends.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackendChanges {
    /// Backends added.
    pub added: Vec<String>,
    /// Backends removed.
    pub removed: Vec<String>,
    /// Backends whose address, protocol or cap changed: replaced by a new one
    /// (fresh live state).
    pub replaced: Vec<String>,
    /// Backends whose weight changed in place.
    pub reweighted: Vec<String>,
    /// Backends left exactly as they were, live state included.
    pub unchanged: Vec<String>,
}

/// What a reload did to one upstream group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamReport {
    /// `added`, `kept` or `removed`.
    pub status: &'static str,
    /// What happened to its backends (all added for a new group).
    pub backends: BackendChanges,
    /// Its picker swap, if any.
    pub picker: Option<SwapReport>,
    /// Its candidate picker's trial: `none`, `kept`, `started`,
    /// `restarted` (changed), `stopped`, or `promoted` / `retired` (the
    /// file still names a trial that already ended so: it is not run
    /// again, and a promoted candidate keeps serving).
    pub candidate: &'static str,
}

/// What a reload did to the canary group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryReport {
    /// Its backends.
    pub backends: BackendChanges,
    /// Its picker swap, if any.
    pub picker: Option<SwapReport>,
    /// The split now in effect.
    pub split: CanarySplit,
}

/// Why a reload was refused; the running config stays in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// veer was started without a config file.
    #[error("veer was started without --config, so there is no file to reload")]
    NoConfigFile,
    /// The new file is invalid.
    #[error("the new config is invalid; the running one stays:\n{0}")]
    Invalid(ConfigErrors),
    /// The new picker could not be loaded, configured or smoke-tested.
    #[error("the new picker failed to load; the running config stays: {0}")]
    Picker(#[from] PluginError),
    /// A new or moved listener's address could not be bound.
    #[error("cannot listen on {address} for listener {name}; the running config stays: {reason}")]
    Listen {
        /// The listener.
        name: String,
        /// Its address.
        address: std::net::SocketAddr,
        /// The OS error.
        reason: std::io::Error,
    },
    /// The routes do not compile over the new groups (validation should
    /// have caught it: a bug).
    #[error("the new routes do not compile; the running config stays: {0}")]
    Routes(String),
    /// A certificate, key or CA bundle could not be used.
    #[error("TLS: {0}; the running config stays")]
    Tls(String),
    /// A backend name or file of the new config could not be resolved.
    #[error("discovery: {0}; the running config stays")]
    Discovery(String),
    /// The blocking reload task died.
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl From<UpstreamError> for ReloadError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Picker(error) => ReloadError::Picker(error),
            tls => ReloadError::Tls(tls.to_string()),
        }
    }
}

/// What a reload does to a listener's TLS once nothing can fail any more.
enum TlsChange {
    /// New certificates (or settings) for a listener that keeps its TLS.
    Rotate(Arc<ListenerTls>, PreparedTls),
    /// TLS turned on, off, or replaced whole.
    Set(Option<Arc<ListenerTls>>),
}

/// Applies configs to a running veer. One reload runs at a time.
#[derive(Debug)]
pub struct Reloader {
    proxy: Arc<Proxy>,
    /// Loads the pickers of groups a reload adds.
    runtime: Arc<PluginRuntime>,
    /// Resolves the new config's names and files, and keeps them fresh.
    discovery: Arc<Discovery>,
    /// Where the owner tasks of added groups run, and when they stop.
    tasks: tokio::runtime::Handle,
    stop: tokio::sync::watch::Receiver<bool>,
    /// What the process was started with: the settings that need a restart
    /// are compared against it.
    started: ServerOptions,
    /// The options of the last reload applied (or `started`).
    applied: parking_lot::Mutex<ServerOptions>,
    lock: tokio::sync::Mutex<()>,
    reloads: AtomicU64,
    rejected: AtomicU64,
}

impl Reloader {
    /// A reloader for the veer started with `started`, serving through
    /// `proxy`, loading new groups' pickers with `runtime`, and running their
    /// owner tasks on the calling runtime until `stop` turns true. Call it
    /// from within a tokio runtime.
    pub fn new(
        proxy: Arc<Proxy>,
        started: ServerOptions,
        runtime: Arc<PluginRuntime>,
        discovery: Arc<Discovery>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Reloader {
            proxy,
            runtime,
            discovery,
            tasks: tokio::runtime::Handle::current(),
            stop,
            applied: parking_lot::Mutex::new(started.clone()),
            started,
            lock: tokio::sync::Mutex::new(()),
            reloads: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// The config file, if veer was started with one.
    pub fn config_file(&self) -> Option<&PathBuf> {
        self.started.control.config_file.as_ref()
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Where discovered backends come from, and how each source is doing.
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// Refused reloads so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Reads the config file again and applies it (see the module docs).
    pub async fn reload_file(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
        let Some(path) = self.config_file().cloned() else { return Err(ReloadError::NoConfigFile) };
        let _one_at_a_time = self.lock.lock().await;
        let result = self.load_and_apply(path).await;
        match &result {
            Ok(report) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    added = ?report.backends.added, removed = ?report.backends.removed, replaced = ?report.backends.replaced,
                    reweighted = ?report.backends.reweighted, picker_swapped = report.picker.is_some(), canary = ?report.canary.as_ref().map(|c| &c.split),
                    "config reloaded"
                );
                for setting in &report.restart_required {
                    tracing::warn!(%setting, "changed in the config file but needs a restart to take effect");
                }
            }
            Err(error) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "config reload refused");
            }
        }
        result
    }

    async fn load_and_apply(self: &Arc<Self>, path: PathBuf) -> Result<ReloadReport, ReloadError> {
        let task = |e: tokio::task::JoinError| ReloadError::Task(e.to_string());
        // Validation may read plugin files and the swap compiles Wasm: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || super::load(&path))
            .await
            .map_err(task)?
            .map_err(ReloadError::Invalid)?;
        let resolved = self.discovery.resolve_all(&loaded.options.discovery).await.map_err(ReloadError::Discovery)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply(&loaded.options, resolved)).await.map_err(task)?
    }

    /// Applies `new`, whose names and files `resolved` holds, to the running
    /// veer. Blocking (may compile a plugin).
    fn apply(
        &self,
        new: &ServerOptions,
        mut resolved: BTreeMap<String, Resolution>,
    ) -> Result<ReloadReport, ReloadError> {
        // New and moved listeners are bound first, and every TLS file loaded:
        // nothing has changed if one cannot be.
        let (to_start, to_stop, listener_report) = self.bind_listeners(new)?;
        let tls_changes = self.prepare_listener_tls(new)?;
        let live = self.proxy.routes();
        let mut wanted = new.upstream_specs();
        for spec in &mut wanted {
            if let Some(resolution) = resolved.get(&spec.name) {
                spec.backends = resolution.backends();
            }
        }
        let mut upstream_tls = Vec::new();
        for spec in &wanted {
            if let Some(group) = live.upstream(&spec.name).filter(|group| group.tls_differs(spec.tls.as_ref())) {
                upstream_tls.push((group.clone(), load_tls(&spec.name, spec.tls.as_ref())?));
            }
        }
        // Pickers first, and new groups started: the only steps that can fail.
        let mut swapped: Vec<(Arc<Upstream>, Arc<veer_plugin_runtime::Picker>)> = Vec::new();
        // Groups whose trial changed, with the trial each ran before.
        let mut trials: Vec<(Arc<Upstream>, Option<TrialSpec>)> = Vec::new();
        let undo = |swapped: &[(Arc<Upstream>, Arc<veer_plugin_runtime::Picker>)],
                    trials: &[(Arc<Upstream>, Option<TrialSpec>)]| {
            for (group, before) in trials {
                let Some(trial) = before else {
                    group.slot.stop_trial();
                    continue;
                };
                if let Err(error) = group.slot.start_trial(trial.clone()) {
                    tracing::error!(upstream = %group.name, %error, "restoring a picker trial after a failed reload failed");
                }
            }
            for (group, before) in swapped {
                if let Err(error) = group.slot.swap(before.source(), before.params().to_vec()) {
                    tracing::error!(upstream = %group.name, %error, "restoring a picker after a failed reload failed");
                }
            }
        };
        let mut groups = Vec::with_capacity(wanted.len());
        let mut reports = BTreeMap::new();
        for spec in &wanted {
            match live.upstream(&spec.name) {
                Some(group) => {
                    let before = group.slot.current();
                    let trial_before = group.slot.trial_spec();
                    let settled = spec.candidate.as_ref().and_then(|candidate| {
                        group.slot.trial_settled(candidate, &spec.picker.to_string(), &spec.params)
                    });
                    // A promotion stands until the file's picker or candidate changes.
                    let swap = match settled {
                        Some(TrialOutcome::Promoted) => Ok(None),
                        _ => swap_if_changed(&group.slot, &spec.picker, &spec.params),
                    };
                    let changed = swap.and_then(|picker| {
                        if picker.is_some() {
                            swapped.push((group.clone(), before));
                        }
                        let candidate = apply_trial(&group.slot, spec.candidate.as_ref(), settled)?;
                        Ok((picker, candidate))
                    });
                    match changed {
                        Ok((picker, candidate)) => {
                            if !matches!(candidate, "kept" | "none" | "promoted" | "retired") {
                                trials.push((group.clone(), trial_before));
                            }
                            let backends = BackendChanges::default();
                            let report = UpstreamReport { status: "kept", backends, picker, candidate };
                            reports.insert(spec.name.clone(), report);
                            groups.push(group.clone());
                        }
                        Err(error) => {
                            undo(&swapped, &trials);
                            return Err(error.into());
                        }
                    }
                }
                None => match Upstream::new(self.runtime.clone(), spec.clone(), self.proxy.metrics().clone()) {
                    Ok(group) => {
                        // What it learned before a reload took it away, or before a restart.
                        if let Some(dir) = &self.started.control.state_dir {
                            super::state::restore(dir, &group);
                        }
                        let backends = BackendChanges {
                            added: spec.backends.iter().map(|b| b.name.clone()).collect(),
                            ..BackendChanges::default()
                        };
                        let candidate = if spec.candidate.is_some() { "started" } else { "none" };
                        let report = UpstreamReport { status: "added", backends, picker: None, candidate };
                        reports.insert(spec.name.clone(), report);
                        groups.push(Arc::new(group));
                    }
                    Err(error) => {
                        undo(&swapped, &trials);
                        return Err(error.into());
                    }
                },
            }
        }
        // The proxy's own policy needs a restart: the running one is the base.
        let base = self.started.request_policy();
        let before: Vec<_> = groups.iter().map(|group| group.policy()).collect();
        for (group, spec) in groups.iter().zip(&wanted) {
            group.set_policy(spec.policy.clone());
        }
        let routes = match new.routes_over(groups.clone(), base) {
            Ok(routes) => routes,
            Err(problems) => {
                undo(&swapped, &trials);
                for (group, policy) in groups.iter().zip(before) {
                    group.set_policy(UpstreamPolicy::clone(&policy));
                }
                let problems: Vec<String> =
                    problems.iter().map(|p| format!("routes{}: {}", p.path, p.message)).collect();
                return Err(ReloadError::Routes(problems.join("; ")));
            }
        };
        // Nothing can fail from here on.
        for (spec, group) in wanted.iter().zip(&groups) {
            let report = reports.get_mut(&spec.name);
            match resolved.remove(&spec.name) {
                Some(resolution) => {
                    let changes = self.discovery.adopt(group, resolution, self.stop.clone());
                    if let (Some(report), Some(_)) = (report, live.upstream(&spec.name)) {
                        report.backends = changes;
                    }
                }
                None => {
                    self.discovery.forget(&spec.name);
                    if let (Some(report), Some(group)) = (report, live.upstream(&spec.name)) {
                        report.backends = diff_backends(&group.health, &spec.backends);
                    }
                }
            }
        }
        for group in groups.iter().filter(|group| live.upstream(&group.name).is_none()) {
            let stop = self.stop.clone();
            self.tasks.spawn(group.clone().run(async move {
                let mut stop = stop;
                let _ = stop.wait_for(|stop| *stop).await;
            }));
        }
        let route_names = routes.specs().iter().map(|route| route.name.clone()).collect();
        for (group, tls) in upstream_tls {
            group.replace_tls(tls);
        }
        for (slot, change) in tls_changes {
            match change {
                TlsChange::Rotate(tls, prepared) => tls.install(prepared),
                TlsChange::Set(tls) => slot.store(tls),
            }
        }
        self.proxy.set_routes(routes);
        for listener in to_start {
            if let Some(interval) = self.started.control.watch {
                let watching = tls::server::watch(listener.name.to_string(), Arc::downgrade(&listener.tls), interval);
                let stop = self.stop.clone();
                self.tasks.spawn(async move {
                    let mut stop = stop;
                    tokio::select! {
                        () = watching => {}
                        _ = stop.wait_for(|stop| *stop) => {}
                    }
                });
            }
            self.proxy.start_listener(listener);
        }
        for name in to_stop {
            self.proxy.stop_listener(&name);
        }
        for group in live.upstreams().iter().filter(|group| !wanted.iter().any(|spec| *spec.name == *group.name)) {
            group.retire();
            self.discovery.forget(&group.name);
            // Kept for a later reload (or restart) that brings the group back.
            if let Some(dir) = &self.started.control.state_dir
                && let Err(error) = super::state::save(dir, &group.name, &group.slot.current())
            {
                tracing::warn!(upstream = %group.name, %error, "saving a removed group's picker state failed");
            }
            let backends = BackendChanges {
                removed: group.pool.all().iter().map(|b| b.spec.name.clone()).collect(),
                ..BackendChanges::default()
            };
            let report = UpstreamReport { status: "removed", backends, picker: None, candidate: "none" };
            reports.insert(group.name.to_string(), report);
        }
        let default = reports.get(DEFAULT_UPSTREAM).or_else(|| reports.values().next());
        let (backends, picker) = default.map(|r| (r.backends.clone(), r.picker.clone())).unwrap_or_default();
        let canary = match (&new.canary, reports.get(CANARY_UPSTREAM)) {
            (Some(wanted), Some(report)) => Some(CanaryReport {
                backends: report.backends.clone(),
                picker: report.picker.clone(),
                split: wanted.split.clone(),
            }),
            _ => None,
        };
        *self.applied.lock() = new.clone();
        Ok(ReloadReport {
            backends,
            picker,
            canary,
            upstreams: reports,
            routes: route_names,
            listeners: listener_report,
            restart_required: self.restart_required(new),
        })
    }

    /// Loads the TLS of every listener `new` keeps (the default one
    /// included), to apply once nothing can fail.
    fn prepare_listener_tls(&self, new: &ServerOptions) -> Result<Vec<(ListenerTlsSlot, TlsChange)>, ReloadError> {
        let wanted = std::iter::once((DEFAULT_LISTENER, new.listen_tls.as_ref()))
            .chain(new.listeners.iter().map(|listener| (listener.name.as_str(), listener.tls.as_ref())));
        let mut changes = Vec::new();
        for (name, settings) in wanted {
            // A listener added or moved gets its TLS with its new socket.
            let Some(slot) = self.proxy.tls_slot(name) else { continue };
            let invalid = |e: tls::TlsError| ReloadError::Tls(format!("listener {name}: {e}"));
            let change = match (slot.load_full(), settings) {
                (None, None) => continue,
                (Some(_), None) => TlsChange::Set(None),
                (None, Some(settings)) => TlsChange::Set(Some(Arc::new(ListenerTls::new(settings).map_err(invalid)?))),
                (Some(running), Some(settings)) => match running.prepare(settings).map_err(invalid)? {
                    Some(prepared) => TlsChange::Rotate(running, prepared),
                    None => continue,
                },
            };
            changes.push((slot, change));
        }
        Ok(changes)
    }

    /// Binds the listeners `new` adds or moves; names the ones it removes.
    #[allow(clippy::type_complexity)]
    fn bind_listeners(
        &self,
        new: &ServerOptions,
    ) -> Result<(Vec<Listener>, Vec<String>, BTreeMap<String, &'static str>), ReloadError> {
        let running = self.applied.lock().listeners.clone();
        let (mut to_start, mut report) = (Vec::new(), BTreeMap::new());
        for listener in &new.listeners {
            let before = running.iter().find(|r| r.name == listener.name);
            if before.is_some_and(|r| r.address == listener.address) {
                report.insert(listener.name.clone(), "kept");
                continue;
            }
            let listen =
                |reason| ReloadError::Listen { name: listener.name.clone(), address: listener.address, reason };
            let socket = std::net::TcpListener::bind(listener.address).map_err(listen)?;
            socket.set_nonblocking(true).map_err(listen)?;
            let _runtime = self.tasks.enter();
            let socket = tokio::net::TcpListener::from_std(socket).map_err(listen)?;
            let started = crate::server::listener_with_tls(&listener.name, socket, listener.tls.as_ref())
                .map_err(|e| ReloadError::Tls(e.to_string()))?;
            to_start.push(started);
            report.insert(listener.name.clone(), if before.is_some() { "moved" } else { "added" });
        }
        let to_stop: Vec<String> = running
            .iter()
            .filter(|r| !new.listeners.iter().any(|l| l.name == r.name))
            .map(|r| r.name.clone())
            .collect();
        for name in &to_stop {
            report.insert(name.clone(), "removed");
        }
        Ok((to_start, to_stop, report))
    }

    fn restart_required(&self, new: &ServerOptions) -> Vec<String> {
        let old = &self.started;
        let mut changed = Vec::new();
        let mut check = |name: &str, differs: bool| {
            if differs {
                changed.push(name.to_string());
            }
        };
        check("listen", old.listen != new.listen);
        check("admin.listen", old.admin != new.admin);
        check("admin.token", old.control.admin_token != new.control.admin_token);
        check("admin.plugin_dirs", old.control.plugin_dirs != new.control.plugin_dirs);
        check("proxy", old.proxy != new.proxy);
        check("health", old.health != new.health);
        check("admission", old.admission != new.admission);
        check("observe", old.observe != new.observe);
        check("reload", old.control.watch != new.control.watch);
        check("discovery", old.discovery.settings != new.discovery.settings);
        check("upgrade", old.control.upgrade != new.control.upgrade);
        // The default and canary groups follow the top-level `health`, checked above.
        for upstream in &new.upstreams {
            let before = old.upstreams.iter().find(|old| old.name == upstream.name);
            check(
                &format!("upstreams.{}.health", upstream.name),
                before.is_some_and(|old| old.health != upstream.health),
            );
        }
        check(
            "state",
            old.control.state_dir != new.control.state_dir || old.control.state_interval != new.control.state_interval,
        );
        changed
    }

    /// The config in effect: the backends and picker as they are now (admin
    /// changes included), the rest as started. The admin token is redacted.
    pub fn effective(&self) -> Config {
        let started = &self.started;
        let applied = self.applied.lock().clone();
        let routes = self.proxy.routes();
        let default = routes.upstream(DEFAULT_UPSTREAM);
        Config {
            listen: started.listen.to_string(),
            admin: AdminConfig {
                listen: started.admin.map(|a| a.to_string()),
                token: started.control.admin_token.as_ref().map(|_| "<redacted>".to_string()),
                plugin_dirs: started.control.plugin_dirs.clone(),
            },
            backends: default.map(|group| group_backends(&applied, group)).unwrap_or_default(),
            picker: default.map(|group| picker_config(&group.slot)).unwrap_or_default(),
            proxy: started.proxy.clone(),
            health: started.health.clone(),
            admission: started.admission.clone(),
            observe: started.observe.clone(),
            reload: ReloadConfig {
                watch: started.control.watch.is_some(),
                poll_interval: started.control.watch.unwrap_or(ReloadConfig::default().poll_interval),
            },
            state: StateConfig { dir: started.control.state_dir.clone(), interval: started.control.state_interval },
            canary: routes.canary().map(|(canary, split)| CanaryConfig {
                percent: split.percent,
                header: split.header.clone(),
                backends: group_backends(&applied, canary),
                picker: picker_config(&canary.slot),
            }),
            upstreams: routes
                .upstreams()
                .iter()
                .filter(|group| !matches!(&*group.name, DEFAULT_UPSTREAM | CANARY_UPSTREAM))
                .map(|group| UpstreamConfig {
                    name: group.name.to_string(),
                    backends: group_backends(&applied, group),
                    backends_file: applied.discovery.groups.get(&*group.name).and_then(|s| s.file.clone()),
                    picker: picker_config(&group.slot),
                    health: applied.upstreams.iter().find(|u| *u.name == *group.name).map(|u| u.health.clone()),
                    timeout: group.policy().timeout,
                    retry: group.policy().retry.clone(),
                    tls: group.tls().as_ref().map(|tls| tls.settings().clone()),
                })
                .collect(),
            routes: applied.routes.clone(),
            listeners: applied
                .listeners
                .iter()
                .map(|listener| ListenerConfig {
                    name: listener.name.clone(),
                    address: listener.address.to_string(),
                    routes: listener.routes.clone(),
                    tls: listener.tls.clone(),
                })
                .collect(),
            listen_tls: applied.listen_tls.clone(),
            backend_tls: applied.backend_tls.clone(),
            discovery: applied.discovery.settings.clone(),
            upgrade: started.control.upgrade.clone(),
        }
    }

    /// Polls the config file every `interval` and reloads when its content
    /// changes, until `stop` completes. The content it compares against is
    /// read now, not when the returned future first runs, so that a change
    /// made right after start is not taken for the original.
    pub fn watch(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> impl std::future::Future<Output = ()> {
        let path = self.config_file().cloned();
        let mut last = path.as_deref().and_then(fingerprint);
        async move {
            let Some(path) = path else { return };
            tokio::pin!(stop);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    _ = ticker.tick() => {}
                }
                let now = fingerprint(&path);
                // A file being rewritten can be briefly missing: wait for it to return.
                if now.is_none() || now == last {
                    continue;
                }
                last = now;
                tracing::info!(path = %path.display(), "config file changed; reloading");
                // The outcome is logged by reload_file.
                let _ = self.reload_file().await;
            }
        }
    }
}

/// A hash of the file's content, or `None` if it cannot be read.
pub(crate) fn fingerprint(path: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// A group's live backends in the config file's schema.
fn backend_configs(pool: &Pool) -> Vec<BackendConfig> {
    pool.all().iter().map(|b| backend_config(&b.spec, b.weight())).collect()
}

fn backend_config(spec: &BackendSpec, weight: u32) -> BackendConfig {
    BackendConfig {
        name: spec.name.clone(),
        address: spec.address.to_string(),
        weight,
        max_concurrent: spec.max_concurrent,
        protocol: spec.protocol,
        labels: spec.labels.clone(),
    }
}

/// A group's backends as configured: its entries with names as written
/// when discovery finds them, its live backends otherwise.
fn group_backends(applied: &ServerOptions, group: &Upstream) -> Vec<BackendConfig> {
    let Some(sources) = applied.discovery.groups.get(&*group.name) else { return backend_configs(&group.pool) };
    let fixed = backend_configs(&group.pool).into_iter().filter(|b| sources.fixed.iter().any(|f| f.name == b.name));
    let named = sources.named.iter().map(|named| BackendConfig {
        address: named.target.to_string(),
        ..backend_config(&named.template, named.template.weight)
    });
    fixed.chain(named).collect()
}

/// A group's serving picker and running trial in the config file's schema.
fn picker_config(slot: &PickerSlot) -> PickerConfig {
    let picker = slot.current();
    let text = |params: &[(String, String)]| -> BTreeMap<_, _> {
        params.iter().map(|(k, v)| (k.clone(), serde_norway::Value::String(v.clone()))).collect()
    };
    let candidate = slot.trial_spec().map(|trial| super::CandidateConfig {
        source: trial.source.to_string(),
        params: text(&trial.params),
        share: trial.share * 100.0,
        promote: trial
            .rule
            .map(|rule| super::PromoteConfig { min_requests: rule.min_requests, margin: rule.margin * 100.0 }),
    });
    PickerConfig { source: picker.info().source.clone(), params: text(picker.params()), candidate }
}

/// Makes `slot` run the trial of `wanted` (the file's candidate; `None`:
/// no trial), unless a trial of it already ended by a decision (`settled`).
/// Says what it did, as [`UpstreamReport::candidate`] words it.
fn apply_trial(
    slot: &PickerSlot,
    wanted: Option<&TrialSpec>,
    settled: Option<TrialOutcome>,
) -> Result<&'static str, PluginError> {
    if let (Some(_), Some(settled)) = (wanted, settled) {
        return Ok(settled.as_str());
    }
    let running = slot.trial_spec();
    Ok(match (wanted, running) {
        (Some(wanted), Some(running)) if wanted.same_as(&running) => "kept",
        (Some(wanted), running) => {
            slot.start_trial(wanted.clone())?;
            if running.is_some() { "restarted" } else { "started" }
        }
        (None, Some(_)) => {
            slot.stop_trial();
            "stopped"
        }
        (None, None) => "none",
    })
}

/// Swaps `slot`'s picker if the source or parameters differ from the serving one.
fn swap_if_changed(
    slot: &PickerSlot,
    source: &PluginSource,
    params: &[(String, String)],
) -> Result<Option<SwapReport>, PluginError> {
    let current = slot.current();
    if current.info().source == source.to_string() && veer_plugin_runtime::same_params(current.params(), params) {
        return Ok(None);
    }
    slot.swap(source, params.to_vec()).map(Some)
}

/// Makes the group of `health` hold exactly `wanted`, matching by name; the
/// diff is made and applied as one membership change.
pub(crate) fn diff_backends(health: &Health, wanted: &[BackendSpec]) -> BackendChanges {
    health.change(|pool| decide_backends(pool, health, wanted))
}

fn decide_backends(
    pool: &Pool,
    health: &Health,
    wanted: &[BackendSpec],
) -> (Vec<BackendSpec>, Vec<BackendId>, BackendChanges) {
    let mut report = BackendChanges::default();
    let live: HashMap<String, _> = pool.all().into_iter().map(|b| (b.spec.name.clone(), b)).collect();
    let mut to_add: Vec<BackendSpec> = Vec::new();
    let mut to_remove = Vec::new();
    for spec in wanted {
        match live.get(&spec.name) {
            None => {
                report.added.push(spec.name.clone());
                to_add.push(spec.clone());
            }
            Some(backend) if !same_identity(&backend.spec, spec) => {
                report.replaced.push(spec.name.clone());
                to_remove.push(backend.id);
                to_add.push(spec.clone());
            }
            Some(backend) if backend.weight() != spec.weight => {
                report.reweighted.push(spec.name.clone());
                health.set_weight(&spec.name, spec.weight);
            }
            Some(_) => report.unchanged.push(spec.name.clone()),
        }
    }
    for (name, backend) in &live {
        if !wanted.iter().any(|spec| &spec.name == name) {
            report.removed.push(name.clone());
            to_remove.push(backend.id);
        }
    }
    report.removed.sort();
    // New backends first, then the old ones go: a replaced backend's
    // successor is in the pool before it leaves, so the group never empties.
    (to_add, to_remove, report)
}

/// Whether a live backend can stay as it is when the config now says `new`
/// (everything but the weight, which changes in place).
fn same_identity(old: &BackendSpec, new: &BackendSpec) -> bool {
    old.address == new.address
        && old.protocol == new.protocol
        && old.max_concurrent == new.max_concurrent
        && old.labels == new.labels
}
