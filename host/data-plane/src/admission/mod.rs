//! Admission control: the first thing a request meets, so that overload
//! degrades into quick, explicit refusals instead of a queue that grows until
//! every request is late.
//!
//! In order, a request must pass:
//!
//! 1. **its client's token bucket** ([`client_bucket`]), if configured: 429
//!    with `Retry-After` set to when the bucket has a token again. First, so a
//!    greedy client's excess is refused before it takes an in-flight slot.
//!    With `client_rate.shared`, the bucket is kept in Redis for the whole
//!    fleet ([`shared`]);
//! 2. **the in-flight gate** ([`inflight`]): at most `min(global cap, adaptive
//!    limit)` requests at once, with an optional short FIFO queue bounded in
//!    length and waiting time; 503 with `Retry-After` when full or after the wait.
//!
//! The adaptive limit is an AIMD controller ([`aimd`]) run every interval by
//! [`Admission::run`], fed with each admitted request's time to response
//! headers and outcome.
//!
//! A pass is a [`Permit`]: it holds the in-flight slot until dropped and
//! records the latency sample when told the response status. `Proxy::handle`
//! holds it until the response headers are ready, not until the body has
//! streamed: in-flight then means "waiting for a backend to answer", the same
//! span the latency samples measure (a limit and its measurement must cover
//! the same thing, or the controller steers on one quantity and caps
//! another), and a slow reader of a large body cannot hold slots the backends
//! are not using.
//!
//! Per-backend concurrency caps are not here: they belong to the backend
//! configuration and are applied when picking.

pub mod aimd;
pub mod client_bucket;
mod config;
pub mod inflight;
mod series;
pub mod shared;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;

use crate::clock;

pub use config::{
    AdaptiveConfig, AdmissionArgs, AdmissionConfig, ClientRateConfig, DEFAULT_MAX_IN_FLIGHT, InvalidAdmissionConfig,
};
pub use series::AdmissionSeries;

use aimd::{AimdController, AimdSamples, Decision, SharedLimit};
use client_bucket::{BucketPolicy, ClientBuckets, KeyRule};
use inflight::{GateRefusal, InflightGate};

/// Why a request was refused; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The global in-flight cap was reached (and the queue, if any, was full).
    GlobalLimit,
    /// The adaptive limit, lower than the global cap, was reached.
    AdaptiveLimit,
    /// The request waited in the queue for the whole queue timeout.
    QueueTimeout,
    /// The client's token bucket was empty.
    ClientRate,
    /// The shared limit's store could not be asked and `on_error: refuse`.
    RateStore,
}

/// A refused request: what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// 429 for a client over its rate, 503 for overload.
    pub status: StatusCode,
    /// A short explanation for the response body.
    pub message: String,
    /// When the client may try again (for `Retry-After`, in whole seconds, rounded up).
    pub retry_after: Duration,
}

impl Refusal {
    /// `Retry-After` in seconds: rounded up, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        let whole = self.retry_after.as_secs();
        let seconds = if self.retry_after.subsec_nanos() > 0 { whole + 1 } else { whole };
        seconds.max(1)
    }
}

/// Requests admitted and refused, by reason.
#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    global_limit: AtomicU64,
    adaptive_limit: AtomicU64,
    queue_timeout: AtomicU64,
    client_rate: AtomicU64,
    rate_store: AtomicU64,
}

impl Counters {
    fn refused(&self, reason: RefusalReason) {
        let counter = match reason {
            RefusalReason::GlobalLimit => &self.global_limit,
            RefusalReason::AdaptiveLimit => &self.adaptive_limit,
            RefusalReason::QueueTimeout => &self.queue_timeout,
            RefusalReason::ClientRate => &self.client_rate,
            RefusalReason::RateStore => &self.rate_store,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The adaptive limit: controller state (touched by the periodic task only),
/// the published limit, and the samples requests write.
#[derive(Debug)]
struct Adaptive {
    controller: Mutex<AimdController>,
    limit: SharedLimit,
    samples: AimdSamples,
    interval: Duration,
}

#[derive(Debug)]
struct ClientLimit {
    rule: KeyRule,
    buckets: ClientBuckets,
    config: ClientRateConfig,
    /// The fleet-wide limit, when configured.
    shared: Option<shared::SharedLimit>,
}

/// Admission control for one proxy.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    /// The global cap; `u32::MAX` when there is none.
    global_cap: u32,
    gate: InflightGate,
    clients: Option<ClientLimit>,
    adaptive: Option<Adaptive>,
    counters: Counters,
}

impl ClientLimit {
    /// Takes the request's token: from the fleet's bucket in the store when
    /// shared (from this instance's when the store cannot answer and
    /// `on_error: local`), else from this instance's. The token stays spent
    /// even if the gate then refuses: the client did send the request, and a
    /// refund would let a client retry an overloaded proxy faster than its
    /// rate.
    async fn over_rate(&self, headers: &HeaderMap, peer: IpAddr) -> Option<Refusal> {
        let local = || self.buckets.try_take(self.rule.key(headers, peer), clock::now()).err();
        let wait = match &self.shared {
            None => local()?,
            Some(shared) => match shared.check(&self.rule.fleet_key(headers, peer)).await {
                shared::Verdict::Allowed => return None,
                shared::Verdict::Limited(wait) => wait,
                shared::Verdict::Unavailable => match shared.on_error() {
                    shared::OnStoreError::Local => local()?,
                    shared::OnStoreError::Refuse => {
                        return Some(Refusal {
                            reason: RefusalReason::RateStore,
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            message: "the shared rate limit's store is unavailable (on_error: refuse)".to_string(),
                            retry_after: Duration::from_secs(1),
                        });
                    }
                },
            },
        };
        let rate = &self.config;
        Some(Refusal {
            reason: RefusalReason::ClientRate,
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "client rate limit: {} requests/s with bursts of {}; a token is back in {} ms",
                rate.per_second,
                rate.effective_burst(),
                wait.as_millis().max(1)
            ),
            retry_after: wait,
        })
    }
}

/// How often idle client buckets are swept when there is no faster AIMD tick.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Admission {
    /// Admission control as `config` says, or every problem with it. With
    /// a shared limit, call it within a tokio runtime.
    pub fn new(config: AdmissionConfig) -> Result<Arc<Self>, InvalidAdmissionConfig> {
        let client_parts = config.parts()?;
        let clients = match config.client_rate.clone().zip(client_parts) {
            Some((rate, parts)) => {
                let shared = rate
                    .shared
                    .clone()
                    .map(|settings| shared::SharedLimit::new(settings, rate.per_second, rate.effective_burst()))
                    .transpose()
                    .map_err(|problem| InvalidAdmissionConfig {
                        problems: vec![format!("client_rate.shared: {problem}")],
                    })?;
                Some(ClientLimit {
                    rule: KeyRule::new(parts.header, parts.trusted_proxies),
                    buckets: ClientBuckets::new(
                        BucketPolicy::new(rate.effective_burst(), rate.per_second),
                        rate.max_clients,
                    ),
                    config: rate,
                    shared,
                })
            }
            None => None,
        };
        let adaptive = config.adaptive.as_ref().map(|adaptive| {
            let controller = AimdController::new(adaptive.params());
            Adaptive {
                limit: SharedLimit::new(controller.limit()),
                controller: Mutex::new(controller),
                samples: AimdSamples::default(),
                interval: Duration::from_millis(adaptive.interval_ms),
            }
        });
        Ok(Arc::new(Admission {
            global_cap: if config.max_in_flight == 0 { u32::MAX } else { config.max_in_flight },
            gate: InflightGate::new(config.queue_length as usize, Duration::from_millis(config.queue_timeout_ms)),
            clients,
            adaptive,
            counters: Counters::default(),
            config,
        }))
    }

    /// The in-flight limit now: the global cap or the adaptive limit, whichever is lower.
    pub fn limit(&self) -> u32 {
        let adaptive = self.adaptive.as_ref().map_or(u32::MAX, |a| a.limit.get());
        self.global_cap.min(adaptive)
    }

    /// Admits a request from `peer` with `headers`, possibly after a short
    /// wait in the queue, or says why not.
    pub async fn admit(self: &Arc<Self>, headers: &HeaderMap, peer: IpAddr) -> Result<Permit, Refusal> {
        if let Some(clients) = &self.clients
            && let Some(refusal) = clients.over_rate(headers, peer).await
        {
            return Err(self.refuse(refusal));
        }
        match self.gate.acquire(|| self.limit()).await {
            Ok(()) => {
                self.counters.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(Permit { admission: self.clone(), started: clock::now() })
            }
            Err(refusal) => {
                let limit = self.limit();
                let (reason, message) = match refusal {
                    GateRefusal::QueueTimeout => (
                        RefusalReason::QueueTimeout,
                        format!(
                            "overloaded: waited {} ms for one of {limit} in-flight slots",
                            self.config.queue_timeout_ms
                        ),
                    ),
                    GateRefusal::Full if limit < self.global_cap => (
                        RefusalReason::AdaptiveLimit,
                        format!("overloaded: adaptive concurrency limit of {limit} requests reached"),
                    ),
                    GateRefusal::Full => {
                        (RefusalReason::GlobalLimit, format!("overloaded: in-flight cap of {limit} requests reached"))
                    }
                };
                Err(self.refuse(Refusal {
                    reason,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message,
                    retry_after: Duration::from_secs(1),
                }))
            }
        }
    }

    fn refuse(&self, refusal: Refusal) -> Refusal {
        self.counters.refused(refusal.reason);
        refusal
    }

    /// One controller step: the AIMD decision on the last interval's samples
    /// (waking queued requests if the limit rose).
    pub fn tick(&self) -> Option<Decision> {
        let adaptive = self.adaptive.as_ref()?;
        let window = adaptive.samples.take(self.gate.take_peak());
        let decision = adaptive.controller.lock().decide(window);
        match decision {
            Decision::Increase(limit) => {
                adaptive.limit.set(limit);
                self.gate.wake(self.limit());
            }
            Decision::Decrease(limit) => adaptive.limit.set(limit),
            Decision::Hold => {}
        }
        Some(decision)
    }

    /// Forgets idle client buckets.
    pub fn sweep(&self, now: Instant) {
        if let Some(clients) = &self.clients {
            clients.buckets.sweep(now);
        }
    }

    /// Runs the periodic work (AIMD steps, bucket sweeps) until `shutdown` completes.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        if self.adaptive.is_none() && self.clients.is_none() {
            return;
        }
        let period = self.adaptive.as_ref().map_or(SWEEP_INTERVAL, |a| a.interval.min(SWEEP_INTERVAL));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = clock::now();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = &mut shutdown => return,
            }
            if let Some(decision) = self.tick()
                && decision != Decision::Hold
            {
                tracing::debug!(?decision, limit = self.limit(), "adaptive concurrency limit moved");
            }
            let now = clock::now();
            if now.duration_since(last_sweep) >= SWEEP_INTERVAL {
                self.sweep(now);
                last_sweep = now;
            }
        }
    }

    /// Live numbers for the admin API.
    pub fn snapshot(&self) -> AdmissionSnapshot {
        let counters = &self.counters;
        AdmissionSnapshot {
            in_flight: self.gate.in_flight(),
            limit: self.limit(),
            global_cap: (self.global_cap != u32::MAX).then_some(self.global_cap),
            queue: QueueSnapshot {
                waiting: self.gate.queued(),
                capacity: self.config.queue_length,
                timeout_ms: self.config.queue_timeout_ms,
            },
            adaptive: self.adaptive.as_ref().map(|adaptive| {
                let controller = adaptive.controller.lock();
                let (increases, decreases) = controller.changes();
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                AdaptiveSnapshot {
                    limit: adaptive.limit.get(),
                    last_latency_ms: controller.last_latency().map(ms),
                    min_latency_ms: controller.min_latency().map(ms),
                    threshold_ms: controller.threshold().map(ms),
                    increases,
                    decreases,
                }
            }),
            clients: self.clients.as_ref().map(|clients| ClientsSnapshot {
                tracked: clients.buckets.tracked(),
                max: clients.config.max_clients,
                per_second: clients.config.per_second,
                burst: clients.config.effective_burst(),
                shared: clients.shared.as_ref().map(|shared| SharedSnapshot {
                    up: shared.is_up(),
                    on_error: shared.on_error(),
                    checks: shared::OUTCOMES.into_iter().zip(shared.counts()).collect(),
                }),
            }),
            admitted: counters.admitted.load(Ordering::Relaxed),
            refused: RefusedSnapshot {
                global_limit: counters.global_limit.load(Ordering::Relaxed),
                adaptive_limit: counters.adaptive_limit.load(Ordering::Relaxed),
                queue_timeout: counters.queue_timeout.load(Ordering::Relaxed),
                client_rate: counters.client_rate.load(Ordering::Relaxed),
                rate_store: counters.rate_store.load(Ordering::Relaxed),
            },
        }
    }
}

/// An admitted request's in-flight slot; released on drop.
#[derive(Debug)]
#[must_use = "dropping the permit ends the request's admission at once"]
pub struct Permit {
    admission: Arc<Admission>,
    started: Instant,
}

impl Permit {
    /// Records the request's outcome for the adaptive limit (time since
    /// admission; failed if `status` is a 5xx) and releases the slot.
    ///
    /// A permit dropped without this (the client went away first) releases
    /// its slot without a sample: nothing is known about how the backend did.
    pub fn complete(self, status: StatusCode) {
        if let Some(adaptive) = &self.admission.adaptive {
            adaptive.samples.record(clock::now().saturating_duration_since(self.started), status.is_server_error());
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.gate.release(self.admission.limit());
    }
}

/// Admission's live numbers (admin API, `GET /status` → `admission`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdmissionSnapshot {
    /// Requests admitted and not yet answered (headers).
    pub in_flight: u32,
    /// The in-flight limit in force: the global cap or the adaptive limit, whichever is lower.
    pub limit: u32,
    /// The global cap (`null`: none).
    pub global_cap: Option<u32>,
    /// The wait queue.
    pub queue: QueueSnapshot,
    /// The adaptive limit (`null`: off).
    pub adaptive: Option<AdaptiveSnapshot>,
    /// Per-client rate limiting (`null`: off).
    pub clients: Option<ClientsSnapshot>,
    /// Requests admitted since start.
    pub admitted: u64,
    /// Requests refused since start, by reason.
    pub refused: RefusedSnapshot,
}

/// The wait queue's numbers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueSnapshot {
    /// Requests waiting now.
    pub waiting: usize,
    /// Most that may wait (0: no queue).
    pub capacity: u32,
    /// Longest wait.
    pub timeout_ms: u64,
}

/// The adaptive limit's numbers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdaptiveSnapshot {
    /// The limit now.
    pub limit: u32,
    /// Mean time to response headers in the last interval with enough samples.
    pub last_latency_ms: Option<f64>,
    /// Lowest interval mean seen.
    pub min_latency_ms: Option<f64>,
    /// Latency above which the limit is cut.
    pub threshold_ms: Option<f64>,
    /// Times the limit was raised.
    pub increases: u64,
    /// Times the limit was cut.
    pub decreases: u64,
}

/// Per-client rate limiting's numbers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientsSnapshot {
    /// Clients with a bucket now.
    pub tracked: usize,
    /// Most clients tracked.
    pub max: usize,
    /// Sustained rate per client.
    pub per_second: f64,
    /// Burst per client.
    pub burst: u32,
    /// The fleet-wide limit's store, when shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedSnapshot>,
}

/// The shared limit's store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SharedSnapshot {
    /// Whether its last call answered.
    pub up: bool,
    /// What decides while it cannot.
    pub on_error: shared::OnStoreError,
    /// Checks by outcome: allowed, limited, error (no answer; `on_error`
    /// decided), skipped (not asked after an error; `on_error` decided).
    pub checks: std::collections::BTreeMap<&'static str, u64>,
}

/// Refusals by reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefusedSnapshot {
    /// Global in-flight cap reached (503).
    pub global_limit: u64,
    /// Adaptive limit reached (503).
    pub adaptive_limit: u64,
    /// Queue wait ran out (503).
    pub queue_timeout: u64,
    /// Client over its rate (429).
    pub client_rate: u64,
    /// The shared limit's store unavailable with `on_error: refuse` (503).
    pub rate_store: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(config: AdmissionConfig) -> Arc<Admission> {
        Admission::new(config).unwrap()
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[tokio::test]
    async fn the_global_cap_refuses_with_503_and_permits_release_on_drop() {
        let admission = admission(AdmissionConfig { max_in_flight: 2, ..AdmissionConfig::default() });
        let a = admission.admit(&HeaderMap::new(), PEER).await.unwrap();
        let _b = admission.admit(&HeaderMap::new(), PEER).await.unwrap();
        let refusal = admission.admit(&HeaderMap::new(), PEER).await.unwrap_err();
        assert_eq!((refusal.status, refusal.reason), (StatusCode::SERVICE_UNAVAILABLE, RefusalReason::GlobalLimit));
        assert!(refusal.message.contains("in-flight cap of 2"), "{}", refusal.message);
        assert_eq!(refusal.retry_after_seconds(), 1);
        a.complete(StatusCode::OK);
        assert!(admission.admit(&HeaderMap::new(), PEER).await.is_ok());
        let snapshot = admission.snapshot();
        assert_eq!((snapshot.admitted, snapshot.refused.global_limit, snapshot.in_flight), (3, 1, 1));
    }

    #[tokio::test]
    async fn a_client_over_its_rate_gets_429_with_the_wait_rounded_up() {
        let admission = admission(AdmissionConfig {
            client_rate: Some(ClientRateConfig { per_second: 0.4, burst: Some(1), ..ClientRateConfig::default() }),
            ..AdmissionConfig::default()
        });
        drop(admission.admit(&HeaderMap::new(), PEER).await.unwrap());
        let refusal = admission.admit(&HeaderMap::new(), PEER).await.unwrap_err();
        assert_eq!((refusal.status, refusal.reason), (StatusCode::TOO_MANY_REQUESTS, RefusalReason::ClientRate));
        // 0.4 tokens/s: the next one is ~2.5 s away, so Retry-After says 3.
        assert_eq!(refusal.retry_after_seconds(), 3);
        assert!(admission.admit(&HeaderMap::new(), IpAddr::from([192, 0, 2, 2])).await.is_ok());
        assert_eq!(admission.snapshot().refused.client_rate, 1);
        assert_eq!(admission.snapshot().clients.unwrap().tracked, 2);
    }

    #[tokio::test]
    async fn the_adaptive_limit_caps_admissions_and_follows_latency() {
        let admission = admission(AdmissionConfig {
            adaptive: Some(AdaptiveConfig {
                target_latency_ms: Some(1000.0),
                initial_limit: 2,
                min_limit: 1,
                min_samples: 1,
                ..AdaptiveConfig::default()
            }),
            ..AdmissionConfig::default()
        });
        let permits = [
            admission.admit(&HeaderMap::new(), PEER).await.unwrap(),
            admission.admit(&HeaderMap::new(), PEER).await.unwrap(),
        ];
        let refusal = admission.admit(&HeaderMap::new(), PEER).await.unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::AdaptiveLimit);
        // Fast, successful and using the whole limit: it rises.
        for permit in permits {
            permit.complete(StatusCode::OK);
        }
        assert_eq!(admission.tick(), Some(Decision::Increase(3)));
        assert_eq!(admission.limit(), 3);
        // Failures cut it.
        admission.admit(&HeaderMap::new(), PEER).await.unwrap().complete(StatusCode::BAD_GATEWAY);
        assert_eq!(admission.tick(), Some(Decision::Decrease(2)));
        let snapshot = admission.snapshot();
        let adaptive = snapshot.adaptive.unwrap();
        assert_eq!((adaptive.limit, adaptive.increases, adaptive.decreases), (2, 1, 1));
        assert_eq!(snapshot.refused.adaptive_limit, 1);
    }

    /// In paused time: the refill is waited for by moving the clock.
    #[tokio::test(start_paused = true)]
    async fn a_limited_client_is_admitted_again_once_its_bucket_refills() {
        let admission = admission(AdmissionConfig {
            client_rate: Some(ClientRateConfig { per_second: 0.4, burst: Some(1), ..ClientRateConfig::default() }),
            ..AdmissionConfig::default()
        });
        drop(admission.admit(&HeaderMap::new(), PEER).await.unwrap());
        assert!(admission.admit(&HeaderMap::new(), PEER).await.is_err(), "the burst of one is spent");
        tokio::time::advance(Duration::from_millis(2400)).await;
        assert!(admission.admit(&HeaderMap::new(), PEER).await.is_err(), "0.96 of a token after 2.4 s");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(admission.admit(&HeaderMap::new(), PEER).await.is_ok(), "a whole token after 2.5 s");
        assert_eq!(admission.snapshot().refused.client_rate, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_is_refused_after_the_queue_timeout() {
        let admission = admission(AdmissionConfig {
            max_in_flight: 1,
            queue_length: 1,
            queue_timeout_ms: 20,
            ..AdmissionConfig::default()
        });
        let _held = admission.admit(&HeaderMap::new(), PEER).await.unwrap();
        let refusal = admission.admit(&HeaderMap::new(), PEER).await.unwrap_err();
        assert_eq!((refusal.status, refusal.reason), (StatusCode::SERVICE_UNAVAILABLE, RefusalReason::QueueTimeout));
        assert_eq!(admission.snapshot().queue.waiting, 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let refusal = |retry_after| Refusal {
            reason: RefusalReason::ClientRate,
            status: StatusCode::TOO_MANY_REQUESTS,
            message: String::new(),
            retry_after,
        };
        assert_eq!(refusal(Duration::from_millis(1)).retry_after_seconds(), 1);
        assert_eq!(refusal(Duration::from_secs(2)).retry_after_seconds(), 2);
        assert_eq!(refusal(Duration::from_millis(2001)).retry_after_seconds(), 3);
    }

    #[test]
    fn an_invalid_config_is_refused_with_every_problem() {
        let config = AdmissionConfig {
            queue_length: 1,
            queue_timeout_ms: 0,
            adaptive: Some(AdaptiveConfig { interval_ms: 0, ..AdaptiveConfig::default() }),
            ..AdmissionConfig::default()
        };
        assert_eq!(Admission::new(config).unwrap_err().problems.len(), 2);
    }
}
