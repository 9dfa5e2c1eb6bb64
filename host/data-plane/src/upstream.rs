//! One upstream group as a unit: its backends ([`Pool`]), their health
//! ([`Health`]) and the picker that chooses among them ([`PickerSlot`]),
//! wired together and run by one task.
//!
//! Requests only read it: pick (the slot), admit and record (health and the
//! pool's atomics). What changes it — membership, eligibility, the picker's
//! control calls — is applied by its owner task ([`Upstream::run`]) or by the
//! control plane (reload, the admin API), never on a request's thread. Every
//! upstream a listener's routes name is one instance of this type.

use std::sync::Arc;

use prometheus::{GaugeVec, Histogram, IntCounterVec, IntGaugeVec};

use crate::health::{Health, HealthConfig};
use crate::pool::{BackendSeries, BackendSpec, Pool};
use crate::series::{Registrar, catch_up};
use crate::tls::{BackendTls, BackendTlsConfig, TlsError};
use crate::transport::TlsSlot;
use veer_plugin_runtime::{PickerSlot, PluginError, PluginRuntime, PluginSource, TrialSpec};

/// What an upstream group is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// Its name, unique among the upstreams; routes refer to it.
    pub name: String,
    /// Its backends.
    pub backends: Vec<BackendSpec>,
    /// Its picker's code.
    pub picker: PluginSource,
    /// The picker's parameters.
    pub params: Vec<(String, String)>,
    /// A candidate picker on trial beside it; `None`: none.
    pub candidate: Option<TrialSpec>,
    /// Health checks, breakers, outlier ejection and slow start.
    pub health: HealthConfig,
    /// Its requests' timeout and retry changes over the proxy's.
    pub policy: UpstreamPolicy,
    /// TLS towards its backends; `None`: plain HTTP.
    pub tls: Option<BackendTlsConfig>,
}

/// An upstream's changes to its requests' timeout and retry policy (each
/// unset one keeps the proxy's; a route's own changes apply over them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamPolicy {
    /// The total timeout of its requests.
    pub timeout: Option<std::time::Duration>,
    /// Changes to the retry policy.
    pub retry: Option<crate::routing::RetryOverride>,
}

/// A running upstream group.
#[derive(Debug)]
pub struct Upstream {
    /// Its name.
    pub name: Arc<str>,
    /// The backends.
    pub pool: Arc<Pool>,
    /// Eligibility and weights; the picker hears of every change.
    pub health: Arc<Health>,
    /// The serving picker.
    pub slot: Arc<PickerSlot>,
    /// Set when a reload removed the group: its owner task ends.
    retired: tokio::sync::watch::Sender<bool>,
    /// Replaced by a reload; read when routes are built.
    policy: arc_swap::ArcSwap<UpstreamPolicy>,
    /// TLS towards the backends, replaced by a reload; the health checks
    /// read the same slot.
    tls: TlsSlot,
}

impl Upstream {
    /// Loads and smoke-tests the picker, registers the backends and tells the
    /// picker about them. Compiles the picker's component on first use: call
    /// it off the async workers (see [`Upstream::start`]).
    pub fn new(
        runtime: Arc<PluginRuntime>,
        spec: UpstreamSpec,
        series: Arc<dyn BackendSeries>,
    ) -> Result<Upstream, UpstreamError> {
        // Files first: a broken certificate must not cost a picker compile.
        let tls = load_tls(&spec.name, spec.tls.as_ref())?;
        let (pool, events) = Pool::new(spec.backends, series);
        let pool = Arc::new(pool);
        let slot = Arc::new(PickerSlot::with_load(runtime, &spec.picker, spec.params, pool.clone())?);
        slot.apply(&events);
        if let Some(candidate) = spec.candidate {
            slot.start_trial(candidate)?;
        }
        let publish = slot.clone();
        let health = Health::new(pool.clone(), spec.health, Box::new(move |events| publish.publish(events)));
        let (retired, _) = tokio::sync::watch::channel(false);
        let policy = arc_swap::ArcSwap::from_pointee(spec.policy);
        let tls = Arc::new(arc_swap::ArcSwapOption::new(tls));
        Ok(Upstream { name: spec.name.into(), pool, health, slot, retired, policy, tls })
    }

    /// [`Upstream::new`] on a blocking thread.
    pub async fn start(
        runtime: Arc<PluginRuntime>,
        spec: UpstreamSpec,
        series: Arc<dyn BackendSeries>,
    ) -> Result<Arc<Upstream>, UpstreamError> {
        tokio::task::spawn_blocking(move || Upstream::new(runtime, spec, series))
            .await
            .map_err(|e| PluginError::Engine(format!("picker loading task failed: {e}")))?
            .map(Arc::new)
    }

    /// The group's owner task: health checks and timers, and the picker's
    /// control calls (events published by health, repairs after a fault),
    /// until `stop` or [`Upstream::retire`].
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let never = std::future::pending::<()>;
        let mut retired = self.retired.subscribe();
        tokio::select! {
            () = stop => {}
            _ = retired.wait_for(|retired| *retired) => {}
            () = self.health.clone().run(self.tls.clone(), never()) => {}
            () = self.slot.clone().run(never()) => {}
        }
    }

    /// Its requests' timeout and retry changes now.
    pub fn policy(&self) -> Arc<UpstreamPolicy> {
        self.policy.load_full()
    }

    /// Changes them for routes built from now on (a reload builds its
    /// routes after setting them).
    pub fn set_policy(&self, policy: UpstreamPolicy) {
        self.policy.store(Arc::new(policy));
    }

    /// TLS towards its backends now; `None`: plain HTTP. A guard, not a
    /// clone: read on every attempt, it costs no reference count.
    pub fn tls(&self) -> arc_swap::Guard<Option<Arc<BackendTls>>> {
        self.tls.load()
    }

    /// Whether `settings` differ from the TLS settings in use.
    pub fn tls_differs(&self, settings: Option<&BackendTlsConfig>) -> bool {
        self.tls.load().as_ref().map(|tls| tls.settings()) != settings
    }

    /// Connections and checks from now on use `tls` (loaded with
    /// [`load_tls`]); pooled connections made under the old settings are no
    /// longer used.
    pub fn replace_tls(&self, tls: Option<Arc<BackendTls>>) {
        self.tls.store(tls);
    }

    /// Ends the owner task of a group no route uses any more. Requests that
    /// already hold the group finish on it; its backends are no longer
    /// checked.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }
}

/// Why an upstream group could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Its picker.
    #[error(transparent)]
    Picker(#[from] PluginError),
    /// Its TLS settings.
    #[error("upstream {upstream}: {error}")]
    Tls {
        /// The group.
        upstream: String,
        /// What is wrong.
        error: TlsError,
    },
}

/// Loads an upstream's TLS settings (`None`: plain HTTP).
pub fn load_tls(upstream: &str, settings: Option<&BackendTlsConfig>) -> Result<Option<Arc<BackendTls>>, UpstreamError> {
    settings
        .map(|settings| BackendTls::new(upstream, settings).map(Arc::new))
        .transpose()
        .map_err(|error| UpstreamError::Tls { upstream: upstream.to_string(), error })
}

/// Each group's serving picker's series, labelled by `upstream`: picks,
/// faults, fallbacks, rebuilds and swaps (counted by the slot, across swaps,
/// and mirrored at scrape time) and which picker serves; and how long picks
/// take, all groups together (recorded by the proxy on every pick, so kept
/// free of a label lookup).
#[derive(Debug)]
pub struct PickerSeries {
    /// Duration of `pick` calls, plugin and fallback alike.
    pub pick_seconds: Histogram,
    picks: IntCounterVec,
    faults: IntCounterVec,
    fallbacks: IntCounterVec,
    rebuilds: IntCounterVec,
    swaps: IntCounterVec,
    info: IntGaugeVec,
    promotions: IntCounterVec,
    trial_retirements: IntCounterVec,
    trial_info: GaugeVec,
    trial_requests: IntGaugeVec,
    trial_errors: IntGaugeVec,
    trial_latency: GaugeVec,
    /// The groups mirrored last time, whose series go when they do.
    mirrored: parking_lot::Mutex<Vec<Arc<str>>>,
}

/// The kinds of picker fault, as the `kind` label names them.
const FAULT_KINDS: [&str; 4] = ["trap", "deadline", "invalid_answer", "empty_answer"];

impl PickerSeries {
    /// The series, registered.
    pub fn register(r: Registrar<'_>) -> Self {
        let upstream = ["upstream"];
        PickerSeries {
            pick_seconds: r.histogram(
                "veer_picker_call_duration_seconds",
                "Duration of pick calls, including fallbacks, of every upstream's picker.",
                vec![1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3, 1e-2],
            ),
            picks: r.counter_vec("veer_picker_picks_total", "Picks answered by the picker or its fallback.", &upstream),
            faults: r.counter_vec(
                "veer_picker_faults_total",
                "Picker faults by kind (trap, deadline, invalid answer, empty answer).",
                &["upstream", "kind"],
            ),
            fallbacks: r.counter_vec(
                "veer_picker_fallbacks_total",
                "Picks the host's round robin answered because the plugin could not.",
                &upstream,
            ),
            rebuilds: r.counter_vec(
                "veer_picker_rebuilds_total",
                "Times a trapped plugin instance was replaced by a fresh one.",
                &upstream,
            ),
            swaps: r.counter_vec("veer_picker_swaps_total", "Successful live picker swaps.", &upstream),
            info: r.gauge_vec(
                "veer_picker_info",
                "The serving picker (value 1).",
                &["upstream", "name", "version", "source"],
            ),
            promotions: r.counter_vec(
                "veer_picker_promotions_total",
                "Candidate pickers made the serving one (by the trial's rule or an operator).",
                &upstream,
            ),
            trial_retirements: r.counter_vec(
                "veer_picker_trial_retirements_total",
                "Candidate pickers the trial's rule retired as worse than the serving one.",
                &upstream,
            ),
            trial_info: r.float_gauge_vec(
                "veer_picker_trial_share",
                "The candidate picker on trial and the share of requests it routes (0 to 1).",
                &["upstream", "name", "version", "source"],
            ),
            trial_requests: r.gauge_vec(
                "veer_picker_trial_requests",
                "Requests each picker of the running trial routed that ended, since the trial began.",
                &["upstream", "role"],
            ),
            trial_errors: r.gauge_vec("veer_picker_trial_errors", "Of them, answered 5xx.", &["upstream", "role"]),
            trial_latency: r.float_gauge_vec(
                "veer_picker_trial_latency_seconds",
                "Latency of each trial picker's successful requests (first pick to response head): mean, p50, p99.",
                &["upstream", "role", "stat"],
            ),
            mirrored: parking_lot::Mutex::default(),
        }
    }

    /// Reads every group's picker counts and serving picker into the series,
    /// and drops the series of groups that are gone.
    pub fn mirror(&self, groups: &[Arc<Upstream>]) {
        // A trial's series exist while it runs.
        self.info.reset();
        self.trial_info.reset();
        self.trial_latency.reset();
        self.trial_requests.reset();
        self.trial_errors.reset();
        for group in groups {
            let (name, slot) = (&*group.name, &group.slot);
            let stats = slot.lifetime_stats();
            catch_up(&self.picks.with_label_values(&[name]), stats.picks);
            catch_up(&self.fallbacks.with_label_values(&[name]), stats.fallbacks);
            catch_up(&self.rebuilds.with_label_values(&[name]), stats.rebuilds);
            let counts = [stats.traps, stats.deadlines, stats.invalid_answers, stats.empty_answers];
            for (kind, count) in FAULT_KINDS.into_iter().zip(counts) {
                catch_up(&self.faults.with_label_values(&[name, kind]), count);
            }
            catch_up(&self.swaps.with_label_values(&[name]), slot.swaps());
            let picker = slot.current();
            let info = picker.info();
            self.info
                .with_label_values(&[name, info.name.as_str(), info.version.as_str(), info.source.as_str()])
                .set(1);
            catch_up(&self.promotions.with_label_values(&[name]), slot.promotions());
            catch_up(&self.trial_retirements.with_label_values(&[name]), slot.trial_retirements());
            if let Some(trial) = slot.trial() {
                self.mirror_trial(name, &trial);
            }
        }
        let mut mirrored = self.mirrored.lock();
        for gone in mirrored.iter().filter(|gone| !groups.iter().any(|g| g.name == **gone)) {
            let counters = [&self.picks, &self.fallbacks, &self.rebuilds, &self.swaps];
            for counter in counters.into_iter().chain([&self.promotions, &self.trial_retirements]) {
                let _ = counter.remove_label_values(&[gone]);
            }
            for kind in FAULT_KINDS {
                let _ = self.faults.remove_label_values(&[gone, kind]);
            }
        }
        *mirrored = groups.iter().map(|group| group.name.clone()).collect();
    }

    /// The running trial's numbers into the series.
    fn mirror_trial(&self, upstream: &str, trial: &veer_plugin_runtime::TrialReport) {
        let candidate = &trial.candidate;
        self.trial_info
            .with_label_values(&[upstream, &candidate.name, &candidate.version, &candidate.source])
            .set(trial.share_percent / 100.0);
        for (role, arm) in [("serving", &trial.serving_requests), ("candidate", &trial.candidate_requests)] {
            self.trial_requests.with_label_values(&[upstream, role]).set(crate::series::gauge_value(arm.requests));
            self.trial_errors.with_label_values(&[upstream, role]).set(crate::series::gauge_value(arm.errors));
            for (stat, ms) in [("mean", arm.mean_ms), ("p50", arm.p50_ms), ("p99", arm.p99_ms)] {
                self.trial_latency.with_label_values(&[upstream, role, stat]).set(ms / 1000.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use veer_plugin_runtime::{HttpMethod, Limits, PickContext, RequestMeta};

    /// A started group of `backends` (on unused ports, never checked) picked by `picker`.
    async fn started(picker: PluginSource, backends: &[&str]) -> Arc<Upstream> {
        let mut health = HealthConfig::default();
        health.check.enabled = false;
        let backends = (1..)
            .zip(backends)
            .map(|(port, name)| BackendSpec::new(*name, SocketAddr::from(([127, 0, 0, 1], port))))
            .collect();
        let policy = UpstreamPolicy::default();
        let spec = UpstreamSpec {
            name: "test".into(),
            backends,
            picker,
            params: vec![],
            candidate: None,
            health,
            policy,
            tls: None,
        };
        let runtime = PluginRuntime::new(Limits::default()).unwrap();
        Upstream::start(runtime, spec, Arc::new(crate::pool::Unrecorded)).await.unwrap()
    }

    /// A change health decides (a drain) reaches the picker through the
    /// group's owner task, not through the thread that made it.
    #[tokio::test]
    async fn the_owner_task_tells_the_picker_what_health_decided() {
        let upstream = started(PluginSource::NativeRoundRobin, &["a", "b"]).await;
        assert_eq!(upstream.slot.current().membership().eligible().len(), 2, "the picker starts with both");
        let a = upstream.pool.by_name("a").unwrap().id;

        upstream.health.set_drained("a", true).unwrap();
        assert!(upstream.slot.current().membership().is_eligible(a), "published, not yet applied");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(upstream.clone().run(async move {
            let _ = stopped.await;
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while upstream.slot.current().membership().is_eligible(a) {
            assert!(tokio::time::Instant::now() < deadline, "the owner task never applied the drain");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(upstream.slot.current().membership().eligible().len(), 1);
        stop.send(()).unwrap();
        run.await.unwrap();
    }

    /// A Wasm picker reads the pool's in-flight counts (`host.in-flight`),
    /// which every worker's attempts raise: p2c-ewma, the real component,
    /// steers away from a backend whose load it did not put there.
    #[tokio::test]
    async fn a_wasm_picker_reads_the_pools_in_flight_counts() {
        let upstream = started(PluginSource::Builtin("p2c-ewma".into()), &["busy", "idle"]).await;
        let busy = upstream.pool.by_name("busy").unwrap();
        let idle = upstream.pool.by_name("idle").unwrap().id;
        let pick = || {
            let ctx = PickContext { attempt: 0, exclude: None, method: HttpMethod::Get };
            let request = RequestMeta::get("/", std::net::Ipv4Addr::LOCALHOST.into());
            upstream.slot.for_request().pick(request, ctx).0.unwrap()
        };

        busy.in_flight.store(50, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..50 {
            let choice = pick();
            assert!(choice.by_plugin, "the plugin answered");
            assert_eq!(choice.backend, idle, "50 attempts in flight elsewhere make `busy` the dearer one");
        }
        busy.in_flight.store(0, std::sync::atomic::Ordering::Relaxed);
        assert!((0..50).any(|_| pick().backend == busy.id), "once drained, `busy` is picked again");
    }
}
