//! The operator's JSON view of a running veer, served by the admin API and
//! appended periodically to a JSON-lines file for offline analysis; and the
//! periodic task that writes those dumps and drives the latency advisory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::Metrics;
use super::advisory::{Advisory, AdvisoryConfig};
use crate::health::BackendHealth;
use crate::pool::BackendSnapshot;
use crate::upstream::Upstream;
use veer_plugin_runtime::{PickerHealth, PickerInfo, PickerSlot, PickerStatsSnapshot};

/// Periodic dump settings.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DumpConfig {
    /// JSON-lines file appended to; `None` disables dumps.
    pub path: Option<PathBuf>,
    /// Time between dumps (default 10s).
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
}

/// The picker as the snapshot shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PickerSnapshot {
    /// Identity.
    pub info: PickerInfo,
    /// Parameters it was configured with.
    pub params: BTreeMap<String, String>,
    /// Whether the plugin answers or the fallback does.
    pub health: PickerHealth,
    /// Counters of the serving picker.
    pub stats: PickerStatsSnapshot,
    /// Counters of every picker since start, swaps included.
    pub lifetime: PickerStatsSnapshot,
    /// Successful swaps.
    pub swaps: u64,
    /// The candidate picker on trial beside it, if any.
    pub candidate: Option<veer_plugin_runtime::TrialReport>,
}

/// Client-facing counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestCounts {
    /// Requests answered.
    pub total: u64,
    /// By status class.
    pub by_class: BTreeMap<&'static str, u64>,
    /// Being answered now.
    pub in_flight: i64,
    /// Retries made.
    pub retries: u64,
    /// Retries refused by the budget.
    pub retry_budget_exhausted: u64,
}

/// Everything an operator reads, in one document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Client-facing counters.
    pub requests: RequestCounts,
    /// The serving picker.
    pub picker: PickerSnapshot,
    /// Every backend's live numbers.
    pub backends: Vec<BackendSnapshot>,
    /// Every backend's health verdicts (checks, breaker, ejection, drain, weight).
    pub health: Vec<BackendHealth>,
    /// Access log records written and dropped.
    pub access_log: BTreeMap<&'static str, u64>,
}

/// The serving picker of `slot`, as the snapshot and the admin API show it.
pub fn picker_snapshot(slot: &PickerSlot) -> PickerSnapshot {
    let picker = slot.current();
    PickerSnapshot {
        info: picker.info().clone(),
        params: picker.params().iter().cloned().collect(),
        health: picker.health(),
        stats: picker.stats(),
        lifetime: slot.lifetime_stats(),
        swaps: slot.swaps(),
        candidate: slot.trial(),
    }
}

/// Takes a snapshot of the counters in `metrics` and of the `main` group.
pub fn snapshot(metrics: &Metrics, main: &Upstream) -> Snapshot {
    let slot = &main.slot;
    Snapshot {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        requests: RequestCounts {
            total: metrics.requests_total(),
            by_class: metrics.requests_by_class().into_iter().collect(),
            in_flight: metrics.in_flight(),
            retries: metrics.retries.get(),
            retry_budget_exhausted: metrics.retry_budget_exhausted.get(),
        },
        picker: picker_snapshot(slot),
        backends: main.pool.all().iter().map(|b| b.snapshot()).collect(),
        health: main.health.snapshot(),
        access_log: BTreeMap::from([
            ("written", metrics.access_log.written.get()),
            ("dropped", metrics.access_log.dropped.get()),
        ]),
    }
}

/// How often the advisory looks at latencies.
const ADVISORY_TICK: Duration = Duration::from_secs(1);

/// Writes dumps and drives the latency advisory until `stop` completes.
pub async fn periodic(
    metrics: std::sync::Arc<Metrics>,
    main: std::sync::Arc<Upstream>,
    dump: DumpConfig,
    advisory_config: AdvisoryConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    let dump_every = dump.interval.unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100));
    let mut next_dump = Instant::now() + dump_every;
    let mut advisory = Advisory::default();
    let mut ticker = tokio::time::interval(ADVISORY_TICK.min(dump_every));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => break,
        }
        let now = Instant::now();
        let latencies: Vec<(String, f64)> = main
            .pool
            .all()
            .iter()
            .map(|b| (b.spec.name.clone(), b.ewma_latency_us.load(Ordering::Relaxed) as f64))
            .collect();
        for change in advisory.tick(&advisory_config, now - last, &latencies) {
            metrics.advisory.set(&change.backend, change.raised);
            if change.raised {
                tracing::warn!(
                    backend = %change.backend,
                    latency_ms = change.latency_us / 1000.0,
                    baseline_ms = change.baseline_us / 1000.0,
                    "backend latency is rising above its baseline"
                );
            } else {
                tracing::info!(backend = %change.backend, latency_ms = change.latency_us / 1000.0, "backend latency is back to its baseline");
            }
        }
        last = now;
        if let Some(path) = dump.path.as_ref().filter(|_| now >= next_dump) {
            next_dump = now + dump_every;
            if let Err(error) = append_line(path, &snapshot(&metrics, &main)) {
                tracing::warn!(path = %path.display(), %error, "metric dump failed");
            }
        }
    }
}

fn append_line(path: &PathBuf, snapshot: &Snapshot) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(snapshot)?;
    line.push(b'\n');
    // Dumps are small and rare; opening per dump lets operators rotate the file.
    std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(&line)
}
