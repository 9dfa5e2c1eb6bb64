//! Backends by name: a backend's address may be `NAME:PORT` (A/AAAA
//! records), `_service._proto.NAME` (SRV records), and an upstream's
//! backends may come from a file other tooling writes.
//!
//! Every source is resolved when veer starts and at every reload, and a
//! source that cannot be resolved then refuses the start or the reload with
//! its name: nothing serves from a name that never resolved. While veer
//! runs, one task per group refreshes its sources (a name when its records'
//! TTL runs out, clamped to `min_ttl..=max_ttl`; a file when its content
//! changes) and applies what changed as one membership change, the same
//! diff a reload makes: new addresses join with slow start, vanished ones
//! leave (attempts already sent to them finish), unchanged ones keep all
//! they learned. A failed refresh keeps the last good set, retries after
//! `min_ttl`, and says so in the log, in `veer_discovery_stale` and in
//! `GET /status`.

pub mod dns;
pub mod file;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{IntCounterVec, IntGaugeVec};
use serde::{Deserialize, Serialize};

pub use dns::{Lookups, Target};
use veer_data_plane::observe::Metrics;
use veer_data_plane::pool::BackendSpec;
use veer_data_plane::upstream::Upstream;

use crate::config::reload::{BackendChanges, diff_backends};

/// The `discovery:` section: how names are resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Nameservers to ask, `IP` or `IP:PORT`; empty: the system's
    /// (`/etc/resolv.conf`, with its search domains).
    pub nameservers: Vec<String>,
    /// Shortest time between two lookups of a name whatever its TTL, and
    /// the wait before a failed lookup is tried again.
    #[serde(with = "humantime_serde")]
    pub min_ttl: Duration,
    /// Longest time a name's answer is trusted whatever its TTL.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long one query waits for a nameserver (tried twice).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            nameservers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
        }
    }
}

impl DiscoveryConfig {
    /// The nameservers' addresses (port 53 unless given); the first that
    /// does not parse otherwise, with its index.
    pub fn nameservers(&self) -> Result<Vec<SocketAddr>, (String, usize)> {
        self.nameservers
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| (text.clone(), i))
            })
            .collect()
    }

    /// What is wrong with these settings, as (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Err((text, i)) = self.nameservers() {
            problems.push((format!("nameservers[{i}]"), format!("{text:?} is not IP or IP:PORT")));
        }
        if self.min_ttl.is_zero() {
            problems.push(("min_ttl".into(), "must be longer than 0s".into()));
        }
        if self.max_ttl < self.min_ttl {
            problems.push(("max_ttl".into(), "must not be shorter than min_ttl".into()));
        }
        if self.timeout.is_zero() {
            problems.push(("timeout".into(), "must be longer than 0s".into()));
        }
        problems
    }
}

/// A backend entry of the config whose address is a name: `template` is
/// the entry (its name the prefix of every backend it becomes, its weight,
/// protocol, cap and labels theirs).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedBackend {
    /// The entry as written, with a placeholder address.
    pub template: BackendSpec,
    /// What its address names.
    pub target: Target,
}

/// Where a group's backends come from when not all are fixed addresses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupSources {
    /// The entries with an `IP:PORT` address.
    pub fixed: Vec<BackendSpec>,
    /// The entries with a name.
    pub named: Vec<NamedBackend>,
    /// The upstream's `backends_file`.
    pub file: Option<PathBuf>,
}

/// The discovery part of [`crate::config::ServerOptions`].
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryOptions {
    /// The `discovery:` section.
    pub settings: DiscoveryConfig,
    /// How often backend files are looked at (`reload.poll_interval`).
    pub file_poll: Duration,
    /// The groups with a named entry or a file, by group name.
    pub groups: BTreeMap<String, GroupSources>,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            settings: DiscoveryConfig::default(),
            file_poll: Duration::from_secs(1),
            groups: BTreeMap::new(),
        }
    }
}

/// One source of a group and what it last gave.
#[derive(Debug, Clone)]
struct SourceState {
    source: Source,
    backends: Vec<BackendSpec>,
    /// When it is looked at next.
    due: tokio::time::Instant,
    last_success: SystemTime,
    /// Why the last refresh failed; `None` after a success.
    error: Option<String>,
    /// The file's content hash when last read.
    fingerprint: Option<u64>,
}

#[derive(Debug, Clone)]
enum Source {
    Named(NamedBackend),
    File(PathBuf),
}

impl Source {
    /// The `source` label: the entry's name, or the file's path.
    fn label(&self) -> String {
        match self {
            Source::Named(named) => named.template.name.clone(),
            Source::File(path) => path.display().to_string(),
        }
    }
}

/// Every source of a group, resolved.
#[derive(Debug, Clone)]
pub struct Resolution {
    fixed: Vec<BackendSpec>,
    sources: Vec<SourceState>,
}

impl Resolution {
    /// The group's backends: the fixed ones, then each source's.
    pub fn backends(&self) -> Vec<BackendSpec> {
        let found = self.sources.iter().flat_map(|source| source.backends.iter().cloned());
        self.fixed.iter().cloned().chain(found).collect()
    }
}

/// One source as `GET /status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The group.
    pub upstream: String,
    /// `dns`, `srv` or `file`.
    pub kind: &'static str,
    /// The entry's name, or the file's path.
    pub source: String,
    /// The name looked up or the file read.
    pub target: String,
    /// The backends it gives now (the last good set when `stale`).
    pub backends: Vec<String>,
    /// The last refresh failed: the set is the last good one.
    pub stale: bool,
    /// Why the last refresh failed.
    pub error: Option<String>,
    /// Seconds since the last successful refresh.
    pub last_success_seconds_ago: f64,
    /// Seconds until the next refresh.
    pub next_refresh_in_seconds: f64,
}

/// The series of discovery, labelled by upstream and source.
#[derive(Debug)]
struct DiscoverySeries {
    lookups: IntCounterVec,
    stale: IntGaugeVec,
    backends: IntGaugeVec,
}

/// A group's refresh task and what it found.
#[derive(Debug)]
struct Running {
    generation: u64,
    task: tokio::task::JoinHandle<()>,
    status: Arc<parking_lot::Mutex<Resolution>>,
}

/// Resolves sources and keeps every group with one up to date.
#[derive(Debug)]
pub struct Discovery {
    lookups: Result<Lookups, String>,
    settings: DiscoveryConfig,
    file_poll: Duration,
    series: DiscoverySeries,
    /// Held while a membership change from discovery or a reload is made,
    /// so that a refresh of an old generation never overwrites a reload.
    groups: parking_lot::Mutex<HashMap<String, Running>>,
    tasks: tokio::runtime::Handle,
    next_generation: std::sync::atomic::AtomicU64,
}

impl Discovery {
    /// Discovery with `options`' settings, registering its series in
    /// `metrics`; its tasks run on the calling runtime. Call it from within
    /// a tokio runtime.
    pub fn new(options: &DiscoveryOptions, metrics: &Metrics) -> Arc<Discovery> {
        let r = metrics.registrar();
        let labels = ["upstream", "source"];
        let series = DiscoverySeries {
            lookups: r.counter_vec(
                "veer_discovery_refreshes_total",
                "Refreshes of a discovered source (DNS name, SRV name, backends file), by result: ok or error.",
                &["upstream", "source", "result"],
            ),
            stale: r.gauge_vec(
                "veer_discovery_stale",
                "1 while a source's last refresh failed and its last good set of backends is kept.",
                &labels,
            ),
            backends: r.gauge_vec("veer_discovery_backends", "Backends a discovered source gives now.", &labels),
        };
        Arc::new(Discovery {
            lookups: Lookups::new(&options.settings),
            settings: options.settings.clone(),
            file_poll: options.file_poll,
            series,
            groups: parking_lot::Mutex::default(),
            tasks: tokio::runtime::Handle::current(),
            next_generation: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Resolves every source of every group in `options`, each required to
    /// answer: the first that does not is the error.
    pub async fn resolve_all(&self, options: &DiscoveryOptions) -> Result<BTreeMap<String, Resolution>, String> {
        let mut resolved = BTreeMap::new();
        for (group, sources) in &options.groups {
            let resolution = self.resolve(sources).await.map_err(|e| format!("upstream {group}: {e}"))?;
            resolved.insert(group.clone(), resolution);
        }
        Ok(resolved)
    }

    async fn resolve(&self, sources: &GroupSources) -> Result<Resolution, String> {
        let now = tokio::time::Instant::now();
        let mut states = Vec::new();
        let all = sources.named.iter().cloned().map(Source::Named).chain(sources.file.clone().map(Source::File));
        for source in all {
            let mut state = SourceState {
                source,
                backends: Vec::new(),
                due: now,
                last_success: SystemTime::now(),
                error: None,
                fingerprint: None,
            };
            let taken = taken_names(&sources.fixed, states.iter());
            self.look(&mut state, &taken).await.map_err(|e| match &state.source {
                Source::Named(named) => format!("backend {} ({}): {e}", named.template.name, named.target),
                Source::File(_) => format!("backends_file: {e}"),
            })?;
            states.push(state);
        }
        Ok(Resolution { fixed: sources.fixed.clone(), sources: states })
    }

    /// Looks at one source now: on success its backends and next refresh
    /// are set (and whether they changed returned); on failure nothing
    /// but the retry time changes.
    async fn look(&self, state: &mut SourceState, taken: &[String]) -> Result<bool, String> {
        let now = tokio::time::Instant::now();
        let found = match &state.source {
            Source::Named(named) => {
                let lookups = self.lookups.as_ref().map_err(Clone::clone)?;
                lookups.find(&named.template, &named.target).await.map(|found| (found.backends, found.ttl, None))
            }
            Source::File(path) => {
                state.due = now + self.file_poll;
                let fingerprint = crate::config::reload::fingerprint(path);
                if fingerprint.is_some() && fingerprint == state.fingerprint && state.error.is_none() {
                    return Ok(false);
                }
                file::read(path)
                    .and_then(|specs| match specs.iter().find(|spec| taken.contains(&spec.name)) {
                        Some(spec) => {
                            Err(format!("{}: {:?} is already a backend of the group", path.display(), spec.name))
                        }
                        None => Ok(specs),
                    })
                    .map(|specs| (specs, self.file_poll, fingerprint))
            }
        };
        match found {
            Ok((backends, refresh, fingerprint)) => {
                let changed = backends != state.backends;
                state.backends = backends;
                state.due = now + refresh;
                state.last_success = SystemTime::now();
                state.error = None;
                state.fingerprint = fingerprint;
                Ok(changed)
            }
            Err(error) => {
                state.due = now
                    + match state.source {
                        Source::Named(_) => self.settings.min_ttl,
                        Source::File(_) => self.file_poll,
                    };
                state.error = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Makes `group` hold what `resolution` found (one membership change)
    /// and keeps it up to date from now on, replacing any earlier task.
    pub fn adopt(
        self: &Arc<Self>,
        group: &Arc<Upstream>,
        resolution: Resolution,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> BackendChanges {
        let mut groups = self.groups.lock();
        let changes = diff_backends(&group.health, &resolution.backends());
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for source in &resolution.sources {
            self.record(&group.name, source, true);
        }
        let status = Arc::new(parking_lot::Mutex::new(resolution));
        let task = self.tasks.spawn(self.clone().refresh(group.clone(), generation, status.clone(), stop));
        if let Some(old) = groups.insert(group.name.to_string(), Running { generation, task, status }) {
            old.task.abort();
        }
        changes
    }

    /// Stops refreshing the group `name` (removed, or its backends all
    /// fixed now); its backends stay as they are.
    pub fn forget(&self, name: &str) {
        if let Some(old) = self.groups.lock().remove(name) {
            old.task.abort();
            for source in &old.status.lock().sources {
                let labels = [name, &source.source.label()];
                let _ = self.series.stale.remove_label_values(&labels);
                let _ = self.series.backends.remove_label_values(&labels);
            }
        }
    }

    /// Every discovered source, by group, for `GET /status`.
    pub fn status(&self) -> Vec<SourceStatus> {
        let now = tokio::time::Instant::now();
        let groups = self.groups.lock();
        let mut status: Vec<SourceStatus> = groups
            .iter()
            .flat_map(|(upstream, running)| {
                let resolution = running.status.lock();
                resolution
                    .sources
                    .iter()
                    .map(|state| SourceStatus {
                        upstream: upstream.clone(),
                        kind: match &state.source {
                            Source::Named(named) => named.target.kind(),
                            Source::File(_) => "file",
                        },
                        source: state.source.label(),
                        target: match &state.source {
                            Source::Named(named) => named.target.to_string(),
                            Source::File(path) => path.display().to_string(),
                        },
                        backends: state.backends.iter().map(|b| b.name.clone()).collect(),
                        stale: state.error.is_some(),
                        error: state.error.clone(),
                        last_success_seconds_ago: state.last_success.elapsed().unwrap_or_default().as_secs_f64(),
                        next_refresh_in_seconds: state.due.saturating_duration_since(now).as_secs_f64(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        status.sort_by(|a, b| (&a.upstream, &a.source).cmp(&(&b.upstream, &b.source)));
        status
    }

    /// The refresh task of one group.
    async fn refresh(
        self: Arc<Self>,
        group: Arc<Upstream>,
        generation: u64,
        status: Arc<parking_lot::Mutex<Resolution>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut resolution = status.lock().clone();
        loop {
            let Some(due) = resolution.sources.iter().map(|s| s.due).min() else { return };
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let mut changed = false;
            let now = tokio::time::Instant::now();
            for i in 0..resolution.sources.len() {
                if resolution.sources[i].due > now {
                    continue;
                }
                let others = resolution.sources.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, s)| s);
                let taken = taken_names(&resolution.fixed, others);
                let was_stale = resolution.sources[i].error.is_some();
                let mut state = resolution.sources[i].clone();
                let result = self.look(&mut state, &taken).await;
                let label = state.source.label();
                match &result {
                    Ok(_) if was_stale => {
                        tracing::info!(upstream = %group.name, source = %label, "discovery recovered")
                    }
                    Err(error) if !was_stale => tracing::warn!(
                        upstream = %group.name, source = %label, %error,
                        "discovery refresh failed; the last good backends stay"
                    ),
                    _ => {}
                }
                self.record(&group.name, &state, result.is_ok());
                changed |= result.unwrap_or(false);
                resolution.sources[i] = state;
            }
            *status.lock() = resolution.clone();
            if changed {
                let groups = self.groups.lock();
                // A reload replaced this task while it looked: its answer is not wanted.
                if groups.get(&*group.name).is_none_or(|running| running.generation != generation) {
                    return;
                }
                let changes = diff_backends(&group.health, &resolution.backends());
                tracing::info!(
                    upstream = %group.name, added = ?changes.added, removed = ?changes.removed,
                    replaced = ?changes.replaced, reweighted = ?changes.reweighted, "discovered backends changed"
                );
            }
        }
    }

    fn record(&self, upstream: &str, state: &SourceState, ok: bool) {
        let label = state.source.label();
        let labels = [upstream, label.as_str()];
        self.series.lookups.with_label_values(&[upstream, &label, if ok { "ok" } else { "error" }]).inc();
        self.series.stale.with_label_values(&labels).set(i64::from(state.error.is_some()));
        self.series.backends.with_label_values(&labels).set(state.backends.len() as i64);
    }
}

/// The names a file of the group may not use: the fixed entries', and the
/// backends the group's other sources give.
fn taken_names<'a>(fixed: &[BackendSpec], others: impl Iterator<Item = &'a SourceState>) -> Vec<String> {
    let found: Vec<String> = others.flat_map(|s| s.backends.iter().map(|b| b.name.clone())).collect();
    fixed.iter().map(|spec| spec.name.clone()).chain(found).collect()
}
