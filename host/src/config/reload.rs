//! Hot reload: a new config is parsed, validated, its picker loaded and
//! smoke-called, and only then applied; an invalid one changes nothing.
//!
//! What a reload changes live: the backend set (matched by name: unchanged
//! backends keep their connections, latency average, breaker and health; a
//! changed weight is updated in place; a changed address, protocol or cap
//! replaces the backend) and the picker (swapped, with state handoff, only
//! when its source or parameters changed). The picker is swapped first: it is
//! the only step that can fail, so a failure leaves everything as it was.
//!
//! What needs a restart (listeners, timeouts and retries, health, observe,
//! the admin token, file watching, state persistence): a reload that changes them applies the rest and lists
//! each in [`ReloadReport::restart_required`] and the log.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{AdminConfig, BackendConfig, Config, ConfigErrors, PickerConfig, ReloadConfig, StateConfig};
use crate::plugin::{PluginError, SwapReport};
use crate::pool::BackendSpec;
use crate::proxy::Proxy;
use crate::server::ServerOptions;

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
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
    /// The picker swap, if the picker or its parameters changed.
    pub picker: Option<SwapReport>,
    /// Changed settings that only take effect after a restart.
    pub restart_required: Vec<String>,
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
    /// The blocking reload task died.
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// Applies configs to a running veer. One reload runs at a time.
#[derive(Debug)]
pub struct Reloader {
    proxy: Arc<Proxy>,
    /// What the process was started with: the settings that need a restart
    /// are compared against it.
    started: ServerOptions,
    lock: tokio::sync::Mutex<()>,
    reloads: AtomicU64,
    rejected: AtomicU64,
}

impl Reloader {
    /// A reloader for the veer started with `started`, serving through `proxy`.
    pub fn new(proxy: Arc<Proxy>, started: ServerOptions) -> Self {
        Reloader {
            proxy,
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

    /// Refused reloads so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Reads the config file again and applies it (see the module docs).
    pub async fn reload_file(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
        let Some(path) = self.config_file().cloned() else { return Err(ReloadError::NoConfigFile) };
        let _one_at_a_time = self.lock.lock().await;
        let this = self.clone();
        // Validation may read plugin files and the swap compiles Wasm: off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            let loaded = super::load(&path).map_err(ReloadError::Invalid)?;
            this.apply(&loaded.options)
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))
        .and_then(|result| result);
        match &result {
            Ok(report) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    added = ?report.added, removed = ?report.removed, replaced = ?report.replaced,
                    reweighted = ?report.reweighted, picker_swapped = report.picker.is_some(),
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

    /// Applies `new` to the running veer. Blocking (may compile a plugin).
    pub fn apply(&self, new: &ServerOptions) -> Result<ReloadReport, ReloadError> {
        let (slot, health) = (self.proxy.slot(), self.proxy.health());
        let current = slot.current();
        let mut new_params = new.params.clone();
        new_params.sort();
        let mut old_params = current.params().to_vec();
        old_params.sort();
        let picker = if current.info().source != new.picker.to_string() || old_params != new_params {
            Some(slot.swap(&new.picker, new.params.clone())?)
        } else {
            None
        };
        let mut report = ReloadReport {
            added: Vec::new(),
            removed: Vec::new(),
            replaced: Vec::new(),
            reweighted: Vec::new(),
            unchanged: Vec::new(),
            picker,
            restart_required: self.restart_required(new),
        };
        let live: HashMap<String, _> = self.proxy.pool().all().into_iter().map(|b| (b.spec.name.clone(), b)).collect();
        let mut to_add: Vec<BackendSpec> = Vec::new();
        let mut to_remove = Vec::new();
        for spec in &new.backends {
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
            if !new.backends.iter().any(|spec| &spec.name == name) {
                report.removed.push(name.clone());
                to_remove.push(backend.id);
            }
        }
        report.removed.sort();
        // New backends first, then the old ones go: a replaced backend's
        // successor is in the pool before it leaves, so the group never empties.
        if !to_add.is_empty() {
            health.add(to_add);
        }
        if !to_remove.is_empty() {
            health.remove_ids(&to_remove);
        }
        Ok(report)
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
        check("proxy", old.proxy != new.proxy);
        check("health", old.health != new.health);
        check("observe", old.observe != new.observe);
        check("reload", old.control.watch != new.control.watch);
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
        let picker = self.proxy.slot().current();
        let params: BTreeMap<_, _> =
            picker.params().iter().map(|(k, v)| (k.clone(), serde_norway::Value::String(v.clone()))).collect();
        Config {
            listen: started.listen.to_string(),
            admin: AdminConfig {
                listen: started.admin.map(|a| a.to_string()),
                token: started.control.admin_token.as_ref().map(|_| "<redacted>".to_string()),
            },
            backends: self
                .proxy
                .pool()
                .all()
                .iter()
                .map(|b| BackendConfig {
                    name: b.spec.name.clone(),
                    address: b.spec.address.to_string(),
                    weight: b.weight(),
                    max_concurrent: b.spec.max_concurrent,
                    protocol: b.spec.protocol,
                })
                .collect(),
            picker: PickerConfig { source: picker.info().source.clone(), params },
            proxy: started.proxy.clone(),
            health: started.health.clone(),
            observe: started.observe.clone(),
            reload: ReloadConfig {
                watch: started.control.watch.is_some(),
                poll_interval: started.control.watch.unwrap_or(ReloadConfig::default().poll_interval),
            },
            state: StateConfig { dir: started.control.state_dir.clone(), interval: started.control.state_interval },
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
        let mut last = path.as_ref().and_then(fingerprint);
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
fn fingerprint(path: &PathBuf) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// Whether a live backend can stay as it is when the config now says `new`
/// (everything but the weight, which changes in place).
fn same_identity(old: &BackendSpec, new: &BackendSpec) -> bool {
    old.address == new.address && old.protocol == new.protocol && old.max_concurrent == new.max_concurrent
}
