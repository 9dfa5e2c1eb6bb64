//! Failover end to end: real veer, simulated backends that die, flap, fail and
//! recover under load. Assertions are on counts (failed requests, ejections,
//! where requests went), never on wall-clock timings; waits poll with generous
//! deadlines.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use veer::health::{BreakerPhase, HealthConfig};
use veer::proxy::ProxyConfig;
use veer::server::RunningServer;
use veer::sim::{BackendProfile, FailureKind, SimBackend, SimBackendSpec};
use veer_tests::{get, send, veer_options};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Health tuned for tests: checks every 20 ms, short breaker and ejection times.
fn fast_health() -> HealthConfig {
    let mut config = HealthConfig::default();
    config.check.interval = ms(20);
    config.check.timeout = ms(500);
    config.breaker.open_for = ms(300);
    config.outlier.base_ejection = ms(300);
    config.outlier.interval = ms(500);
    config.outlier.min_requests = 10;
    config.slow_start.window = ms(200);
    config
}

async fn sim(name: &str, profile: BackendProfile) -> SimBackend {
    let spec = SimBackendSpec { name: name.to_string(), profile, phases: vec![], seed: 3 };
    SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn sims(n: usize, latency: Duration) -> Vec<SimBackend> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(sim(&format!("s{i}"), BackendProfile::fixed(latency)).await);
    }
    all
}

async fn start(
    backends: &[SimBackend],
    health: HealthConfig,
    edit: impl FnOnce(&mut veer::server::ServerOptions),
) -> RunningServer {
    let targets: Vec<(String, SocketAddr)> = backends.iter().map(|b| (b.name().to_string(), b.addr())).collect();
    let named: Vec<(&str, SocketAddr)> = targets.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let mut options = veer_options(&named, "builtin:round-robin", ProxyConfig::default());
    options.health = health;
    edit(&mut options);
    veer::server::start(options).await.unwrap()
}

/// Closed-loop load: `clients` tasks sending GETs until stopped; the answers
/// by status (with one body per status, to explain a failure).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<u16, (usize, String)>>>,
}

impl Load {
    fn start(proxy: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let client = veer_tests::http1_client();
                    let mut seen = BTreeMap::<u16, (usize, String)>::new();
                    while !stop.load(Ordering::Relaxed) {
                        let request = Request::get(format!("http://{proxy}/")).body(Full::default()).unwrap();
                        let response = client.request(request).await.unwrap();
                        let status = response.status().as_u16();
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        let entry = seen.entry(status).or_default();
                        entry.0 += 1;
                        entry.1 = String::from_utf8_lossy(&body).into_owned();
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> BTreeMap<u16, (usize, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = BTreeMap::<u16, (usize, String)>::new();
        for task in self.tasks {
            for (status, (count, body)) in task.await.unwrap() {
                let entry = all.entry(status).or_default();
                entry.0 += count;
                entry.1 = body;
            }
        }
        all
    }
}

/// Polls `condition` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(ms(10)).await;
    }
    panic!("not within 10 s: {what}");
}

fn only_200s(answers: &BTreeMap<u16, (usize, String)>) -> usize {
    assert_eq!(answers.keys().copied().collect::<Vec<_>>(), [200], "every request succeeded: {answers:?}");
    answers[&200].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_request_and_takes_it_out() {
    let backends = sims(3, ms(1)).await;
    let veer = start(&backends, fast_health(), |_| {}).await;
    let health = veer.proxy.health().clone();
    let load = Load::start(veer.proxy_addr, 8);
    let served_before = backends[0].stats().requests;
    eventually("load reaches s0", || backends[0].stats().requests > served_before + 20).await;
    backends[0].kill().await;
    eventually("s0 out of rotation", || !health.backend("s0").unwrap().eligible).await;
    let attempts_at_ejection = veer.proxy.pool().get(1).unwrap().snapshot().requests;
    // Keep the load on for a while with s0 out: nothing more should reach it
    // beyond breaker probes.
    let others = backends[1].stats().requests;
    eventually("load continues on the others", || backends[1].stats().requests > others + 200).await;
    let answers = load.finish().await;
    let served = only_200s(&answers);
    let s0 = veer.proxy.pool().get(1).unwrap().snapshot();
    let probes = s0.requests - attempts_at_ejection;
    let state = health.backend("s0").unwrap();
    assert!(state.breaker_opened_total >= 1 || state.ejections_total >= 1, "{state:?}");
    // Probes are bounded: at most `half_open_probes` per open period.
    assert!(probes <= 3 * (1 + state.breaker_opened_total), "{probes} attempts after ejection: {state:?}");
    let status: serde_json::Value = serde_json::from_str(&get(veer.admin_addr.unwrap(), "/status").await.body).unwrap();
    let s0_view = &status["backends"][0];
    assert_eq!(s0_view["name"], "s0");
    assert_eq!(s0_view["health"]["eligible"], false, "{s0_view}");
    assert!(served > 200, "{answers:?}");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_gives_503_quickly_and_recovers_when_one_returns() {
    let backends = sims(2, ms(0)).await;
    let veer = start(&backends, fast_health(), |_| {}).await;
    for backend in &backends {
        backend.kill().await;
    }
    // The first requests meet the dead backends (502); once breakers and
    // checks have taken both out, veer answers 503 itself without trying.
    let mut answer = get(veer.proxy_addr, "/").await;
    for _ in 0..100 {
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
        tokio::time::sleep(ms(10)).await;
        answer = get(veer.proxy_addr, "/").await;
    }
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert!(answer.body.contains("no eligible backend"), "{}", answer.body);
    assert!(answer.headers.contains_key("retry-after"));
    // The picker was told: it sees no eligible backend at all.
    assert!(veer.proxy.slot().current().membership().eligible().is_empty());
    let attempts: u64 = veer.proxy.pool().all().iter().map(|b| b.snapshot().requests).sum();
    // A 503 now costs no backend attempt at all.
    for _ in 0..20 {
        assert_eq!(get(veer.proxy_addr, "/").await.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let after: u64 = veer.proxy.pool().all().iter().map(|b| b.snapshot().requests).sum();
    assert!(after - attempts <= 6, "at most breaker probes went out: {attempts} -> {after}");

    backends[1].revive().await.unwrap();
    let health = veer.proxy.health().clone();
    eventually("s1 back in rotation", || health.backend("s1").unwrap().eligible).await;
    let mut ok = false;
    for _ in 0..100 {
        let answer = get(veer.proxy_addr, "/").await;
        if answer.status == StatusCode::OK {
            assert_eq!(answer.headers["x-sim-backend"], "s1");
            ok = true;
            break;
        }
        tokio::time::sleep(ms(10)).await;
    }
    assert!(ok, "served again after recovery");
    // The picker sees s1 again, and after the slow-start ramp at its full weight.
    eventually("s1 at full weight", || {
        let membership = veer.proxy.slot().current().membership();
        membership.is_eligible(2) && membership.get(2).unwrap().weight == veer::pool::WEIGHT_SCALE
    })
    .await;
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_half_the_time_is_ejected_and_returns_after_recovery() {
    let mut backends = sims(2, ms(1)).await;
    backends.push(sim("flaky", BackendProfile::fixed(ms(1)).with_errors(0.5, FailureKind::Status500)).await);
    let veer = start(&backends, fast_health(), |_| {}).await;
    let health = veer.proxy.health().clone();
    let load = Load::start(veer.proxy_addr, 4);
    eventually("flaky ejected", || health.backend("flaky").unwrap().ejections_total >= 1).await;
    // The others are never ejected with it: at most half of three (one) may be out.
    assert_eq!(health.backend("s0").unwrap().ejections_total, 0);
    assert_eq!(health.backend("s1").unwrap().ejections_total, 0);
    backends[2].set_profile(BackendProfile::fixed(ms(1))).unwrap();
    eventually("flaky back in rotation", || {
        let b = health.backend("flaky").unwrap();
        b.eligible && b.ejected_for_ms.is_none()
    })
    .await;
    let served = backends[2].stats().requests;
    eventually("flaky serves again", || backends[2].stats().requests > served + 50).await;
    let answers = load.finish().await;
    assert!(answers[&200].0 > 0, "{answers:?}");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_backend_does_not_oscillate_the_pool() {
    let backends = sims(2, ms(0)).await;
    let mut health = fast_health();
    // Six checks in a row must agree; the backend flips every 30 ms, so at most
    // two checks ever agree.
    health.check.rise = 6;
    health.check.fall = 6;
    let veer = start(&backends, health, |_| {}).await;
    let flapper = {
        let backend = backends[0].clone();
        tokio::spawn(async move {
            for flip in 0..40 {
                backend.set_healthy(flip % 2 == 1);
                tokio::time::sleep(ms(30)).await;
            }
            backend.set_healthy(true);
        })
    };
    flapper.await.unwrap();
    let state = veer.proxy.health().backend("s0").unwrap();
    assert!(state.checks_failed_total >= 10, "the checks saw the flapping: {state:?}");
    // On a very busy machine a flip can be delayed past six checks; even then
    // the pool changed a couple of times, not on every one of 40 flips.
    assert!(state.eligibility_changes <= 2, "{state:?}");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_load_loses_nothing_and_undrain_restores_traffic() {
    let backends = sims(2, ms(20)).await;
    let veer = start(&backends, fast_health(), |_| {}).await;
    let admin = veer.admin_addr.unwrap();
    let load = Load::start(veer.proxy_addr, 8);
    eventually("load reaches s0", || backends[0].stats().requests > 20).await;
    let answer = send(admin, Request::post("/backends/s0/drain").body(Full::default()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.contains("\"drained\": true"), "{}", answer.body);
    // What was in flight may still arrive; nothing new is sent after that.
    let at_drain = backends[0].stats().requests + 8;
    let others = backends[1].stats().requests;
    eventually("load continues on s1", || backends[1].stats().requests > others + 100).await;
    assert!(backends[0].stats().requests <= at_drain, "no new requests to a drained backend");
    assert_eq!(backends[0].stats().in_flight, 0, "in-flight requests finished");
    let answer = send(admin, Request::post("/backends/s0/undrain").body(Full::default()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let drained_count = backends[0].stats().requests;
    eventually("s0 serves again", || backends[0].stats().requests > drained_count + 20).await;
    only_200s(&load.finish().await);
    let missing = send(admin, Request::post("/backends/nope/drain").body(Full::default()).unwrap()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_its_cap_is_skipped_and_a_full_pool_answers_503() {
    let backends = sims(2, ms(600)).await;
    let veer = start(&backends, fast_health(), |options| options.backends[0].max_concurrent = Some(1)).await;
    // Six at once: round robin would send three to s0; its cap admits one.
    let answers: Vec<_> = (0..6).map(|_| tokio::spawn(get(veer.proxy_addr, "/"))).collect();
    for answer in answers {
        let answer = answer.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    assert_eq!(backends[0].stats().requests, 1);
    assert_eq!(backends[1].stats().requests, 5);
    veer.shutdown().await;

    let veer = start(&backends[..1], fast_health(), |options| options.backends[0].max_concurrent = Some(1)).await;
    let first = tokio::spawn(get(veer.proxy_addr, "/"));
    eventually("the first request holds the only slot", || veer.proxy.pool().get(1).unwrap().snapshot().in_flight == 1)
        .await;
    let second = get(veer.proxy_addr, "/").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE, "{}", second.body);
    assert!(second.body.contains("concurrency cap"), "{}", second.body);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(veer.proxy.health().backend("s0").unwrap().breaker, BreakerPhase::Closed);
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_takes_a_backend_out_and_passing_checks_bring_it_back() {
    let backends = sims(2, ms(0)).await;
    let veer = start(&backends, fast_health(), |_| {}).await;
    let health = veer.proxy.health().clone();
    // Traffic to it still succeeds: only the active check says it is sick.
    backends[0].set_healthy(false);
    eventually("s0 unhealthy", || !health.backend("s0").unwrap().eligible).await;
    let state = health.backend("s0").unwrap();
    assert!(!state.healthy && state.breaker == BreakerPhase::Closed, "{state:?}");
    assert!(state.last_check_error.as_deref().unwrap().contains("503"), "{state:?}");
    let before = backends[0].stats().requests;
    for _ in 0..20 {
        let answer = get(veer.proxy_addr, "/").await;
        assert_eq!(answer.headers["x-sim-backend"], "s1");
    }
    assert_eq!(backends[0].stats().requests, before);
    backends[0].set_healthy(true);
    eventually("s0 healthy again", || health.backend("s0").unwrap().eligible).await;
    veer.shutdown().await;
}
