//! Runs one scenario with one strategy: simulated backends, veer in-process in
//! front of them, and the runner's own HTTP client driving the load.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use super::oracle::Oracle;
use super::spec::{Scenario, Stop};
use crate::{BACKEND_HEADER, SimBackend, SimError};
use veer_control_plane::server::{self, ServerOptions, StartError};
use veer_data_plane::pool::BackendSpec;
use veer_data_plane::proxy::{ProxyConfig, RetryPolicy};
use veer_plugin_runtime::{Limits, NativePicker, PluginSource};

/// A routing strategy to benchmark: `oracle`, or a picker source with
/// parameters, `SOURCE[,key=value...]` (e.g. `builtin:q-learning,alpha=0.5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    /// How it is written on the command line; names it in results.
    pub label: String,
    pub(crate) kind: StrategyKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrategyKind {
    Oracle,
    Picker { source: PluginSource, params: Vec<(String, String)> },
}

impl Strategy {
    /// The label of the oracle reference.
    pub const ORACLE: &'static str = "oracle";

    /// Whether this is the oracle.
    pub fn is_oracle(&self) -> bool {
        self.kind == StrategyKind::Oracle
    }

    /// The strategies compared by default: every built-in and the oracle.
    pub fn defaults() -> Vec<Strategy> {
        [
            "builtin:round-robin",
            "builtin:weighted-rr",
            "builtin:least-conn",
            "builtin:least-response-time",
            "builtin:p2c-ewma",
            "builtin:q-learning",
            "builtin:prequal",
        ]
        .into_iter()
        .chain([Self::ORACLE])
        .map(|text| text.parse().expect("the default strategies parse"))
        .collect()
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == Self::ORACLE {
            return Ok(Strategy { label: text.into(), kind: StrategyKind::Oracle });
        }
        let mut parts = text.split(',');
        let source = parts.next().filter(|source| !source.is_empty()).ok_or("a strategy needs a picker source")?;
        let params = parts
            .map(|pair| {
                pair.split_once('=')
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .ok_or_else(|| format!("strategy '{text}': parameter '{pair}' is not key=value"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Strategy { label: text.into(), kind: StrategyKind::Picker { source: PluginSource::parse(source), params } })
    }
}

/// One request as the runner's client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// When it was sent, from the start of the load, µs.
    pub start_us: u64,
    /// Time until its whole response was read (or it failed), µs.
    pub latency_us: u64,
    /// The HTTP status veer answered with; 0 if the client got no response.
    pub status: u16,
    /// Which backend answered (index into [`RunResult::backends`]), when one did.
    pub backend: Option<u16>,
}

impl RequestRecord {
    /// A 2xx answer.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The strategy's label.
    pub strategy: String,
    /// Backend names, in scenario order.
    pub backends: Vec<String>,
    /// Every request, in the order they finished.
    pub records: Vec<RequestRecord>,
    /// From the start of the load to the end of its last request.
    pub elapsed: Duration,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No free port for a simulated backend.
    #[error("cannot reserve a port for a simulated backend: {0}")]
    Reserve(std::io::Error),
    /// A simulated backend did not start.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// veer did not start (e.g. the picker would not load).
    #[error("veer with strategy '{strategy}': {source}")]
    Start {
        /// The strategy.
        strategy: String,
        /// What went wrong.
        #[source]
        source: StartError,
    },
    /// A load task panicked.
    #[error("a load task failed: {0}")]
    Load(String),
    /// The picker would not load or start (virtual mode).
    #[error("strategy '{strategy}': {reason}")]
    Picker {
        /// The strategy.
        strategy: String,
        /// What went wrong.
        reason: String,
    },
}

/// Runs `scenario` once with `strategy`, its length and phases multiplied by `scale`.
pub async fn run(scenario: &Scenario, strategy: &Strategy, scale: f64) -> Result<RunResult, RunError> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let backends = scenario.backends(scale);
    // veer must know the backends' addresses before it starts, but the backends'
    // phase clocks must start with the load, after veer (which compiles the
    // picker first). So reserve free ports now and start the backends on them later.
    let addresses = {
        let listeners = backends
            .iter()
            .map(|_| std::net::TcpListener::bind((localhost, 0)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RunError::Reserve)?;
        listeners.iter().map(|l| l.local_addr()).collect::<Result<Vec<_>, _>>().map_err(RunError::Reserve)?
    };
    let timeout = Duration::from_millis(scenario.proxy.timeout_ms);
    let mut oracle = None;
    let (picker, params) = match &strategy.kind {
        StrategyKind::Oracle => {
            let truth = backends.iter().map(|b| (b.sim.name.clone(), b.sim.profile.clone(), b.sim.phases.clone()));
            let policy = Arc::new(Oracle::new(truth, Duration::from_millis(scenario.load.error_penalty_ms), timeout));
            oracle = Some(policy.clone());
            (PluginSource::Native(NativePicker::new(Strategy::ORACLE, policy)), Vec::new())
        }
        StrategyKind::Picker { source, params } => (source.clone(), params.clone()),
    };
    let specs = backends
        .iter()
        .zip(&addresses)
        .map(|(backend, address)| BackendSpec {
            weight: backend.weight,
            ..BackendSpec::new(backend.sim.name.clone(), *address)
        })
        .collect();
    let proxy = ProxyConfig {
        response_header_timeout: timeout,
        total_timeout: timeout * scenario.proxy.max_attempts + Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
        // One data-path thread: the client, the backends and veer share this machine.
        workers: 1,
        retry: RetryPolicy { max_attempts: scenario.proxy.max_attempts, ..RetryPolicy::default() },
        ..ProxyConfig::default()
    };
    let options = ServerOptions {
        listen: SocketAddr::new(localhost, 0),
        admin: None,
        backends: specs,
        picker,
        params,
        candidate: None,
        proxy,
        limits: Limits::default(),
        // The host's checks, breakers and ejection would hide the policies'
        // differences (every strategy would dodge a dead backend): off, so
        // that each picker's own choices are what the scenario measures.
        health: veer_data_plane::health::HealthConfig::off(),
        admission: veer_data_plane::admission::AdmissionConfig::default(),
        observe: veer_data_plane::observe::ObserveConfig::default(),
        control: veer_control_plane::config::ControlOptions::default(),
        canary: None,
        upstreams: Vec::new(),
        routes: None,
        listeners: Vec::new(),
        listen_tls: None,
        backend_tls: None,
        discovery: Default::default(),
    };
    let veer =
        server::start(options).await.map_err(|source| RunError::Start { strategy: strategy.label.clone(), source })?;
    let mut sims = Vec::with_capacity(backends.len());
    for (backend, address) in backends.iter().zip(&addresses) {
        match SimBackend::start(backend.sim.clone(), *address).await {
            Ok(sim) => sims.push(sim),
            Err(error) => {
                stop(veer, &sims).await;
                return Err(error.into());
            }
        }
    }
    if let Some(oracle) = &oracle {
        oracle.started(Instant::now());
    }
    let names: Vec<String> = backends.iter().map(|b| b.sim.name.clone()).collect();
    let load = drive(scenario, scale, veer.proxy_addr, &names).await;
    stop(veer, &sims).await;
    let (records, elapsed) = load?;
    Ok(RunResult { strategy: strategy.label.clone(), backends: names, records, elapsed })
}

async fn stop(veer: server::RunningServer, sims: &[SimBackend]) {
    veer.shutdown().await;
    for sim in sims {
        sim.shutdown().await;
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Sends the scenario's load to `proxy` and returns every request's record.
async fn drive(
    scenario: &Scenario,
    scale: f64,
    proxy: SocketAddr,
    backends: &[String],
) -> Result<(Vec<RequestRecord>, Duration), RunError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(usize::MAX).build(connector);
    let uri: http::Uri = format!("http://{proxy}/").parse().expect("a socket address makes a valid URI");
    let index: Arc<HashMap<String, u16>> =
        Arc::new(backends.iter().enumerate().map(|(i, name)| (name.clone(), i as u16)).collect());
    let stop = scenario.stop(scale);
    let started = Instant::now();
    let deadline = match stop {
        Stop::After(duration) => Some(started + duration),
        Stop::Requests(_) => None,
    };
    let limit = match stop {
        Stop::Requests(requests) => requests,
        Stop::After(_) => u64::MAX,
    };
    let sent = Arc::new(AtomicU64::new(0));
    let request = move |client: HttpClient, uri: http::Uri, index: Arc<HashMap<String, u16>>| async move {
        let start = Instant::now();
        let start_us = start.duration_since(started).as_micros() as u64;
        let request = http::Request::get(uri).body(Empty::new()).expect("a GET with a valid URI is a valid request");
        let (status, backend) = match client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let backend = response
                    .headers()
                    .get(BACKEND_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|n| index.get(n))
                    .copied();
                // A body cut short is a failed request, whatever the status said.
                match response.into_body().collect().await {
                    Ok(_) => (status, backend),
                    Err(_) => (0, backend),
                }
            }
            Err(_) => (0, None),
        };
        RequestRecord { start_us, latency_us: start.elapsed().as_micros() as u64, status, backend }
    };
    let mut tasks: JoinSet<Vec<RequestRecord>> = JoinSet::new();
    let mut records = Vec::new();
    match (scenario.load.concurrency, scenario.load.rate_per_second) {
        (Some(concurrency), _) => {
            let penalty = Duration::from_millis(scenario.load.error_penalty_ms);
            for _ in 0..concurrency {
                let (client, uri, index, sent) = (client.clone(), uri.clone(), index.clone(), sent.clone());
                tasks.spawn(async move {
                    let mut records = Vec::new();
                    while deadline.is_none_or(|deadline| Instant::now() < deadline)
                        && sent.fetch_add(1, Ordering::Relaxed) < limit
                    {
                        let record = request(client.clone(), uri.clone(), index.clone()).await;
                        records.push(record);
                        if !record.succeeded() && !penalty.is_zero() {
                            tokio::time::sleep(penalty).await;
                        }
                    }
                    records
                });
            }
        }
        (None, rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.unwrap_or(1.0));
            let mut next = started;
            let mut count = 0u64;
            while count < limit && deadline.is_none_or(|deadline| next < deadline) {
                tokio::time::sleep_until(next.into()).await;
                let (client, uri, index) = (client.clone(), uri.clone(), index.clone());
                tasks.spawn(async move { vec![request(client, uri, index).await] });
                count += 1;
                // On schedule from the start, so a late wake-up does not slow the rate.
                next = started + interval.mul_f64(count as f64);
                // Collect finished requests as we go, so the set stays small.
                while let Some(done) = tasks.try_join_next() {
                    records.extend(done.map_err(|e| RunError::Load(e.to_string()))?);
                }
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        records.extend(done.map_err(|e| RunError::Load(e.to_string()))?);
    }
    Ok((records, started.elapsed()))
}
