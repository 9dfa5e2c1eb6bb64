//! Admission control end to end: real veer, real simulated backends on
//! 127.0.0.1, assertions on what clients see and what the admin API says.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use veer::admission::{AdaptiveConfig, AdmissionConfig, ClientRateConfig};
use veer::proxy::ProxyConfig;
use veer::sim::{BackendProfile, SimBackend, SimBackendSpec};
use veer_tests::load::{open_loop, summarize};
use veer_tests::{get, send, start_veer_with};

/// Held by the tests that load the machine (a hammering client, the overload
/// run) so that they do not run beside each other: the overload test asserts
/// on latency, and two CPU-heavy tests on two cores would measure each other.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn sim(profile: BackendProfile) -> SimBackend {
    SimBackend::start(SimBackendSpec::new("s", profile).with_seed(3), "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn veer(backend: &SimBackend, admission: AdmissionConfig) -> veer::server::RunningServer {
    // Every load client here is 127.0.0.1 with up to ~1500 connections open:
    // this is about admission, not the per-client connection cap.
    let mut proxy = ProxyConfig::default();
    proxy.limits.max_connections_per_client = proxy.limits.max_connections;
    start_veer_with(&[("s", backend.addr())], "builtin:round-robin", proxy, admission).await
}

async fn admin_status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(admin, "/status").await.body).unwrap()
}

async fn concurrently(address: SocketAddr, n: usize) -> Vec<veer_tests::Answer> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(async move { get(address, "/").await })).collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_global_cap_requests_are_refused_at_once_with_503_and_retry_after() {
    // Each admitted request holds its slot for 500 ms, far longer than it
    // takes to send the other requests.
    let backend = sim(BackendProfile::fixed(Duration::from_millis(500))).await;
    let veer = veer(&backend, AdmissionConfig { max_in_flight: 2, ..AdmissionConfig::default() }).await;
    let answers = concurrently(veer.proxy_addr, 6).await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert_eq!((ok, refused.len()), (2, 4), "{answers:#?}");
    for answer in refused {
        assert_eq!(answer.headers["retry-after"], "1");
        assert!(answer.body.contains("in-flight cap of 2 requests reached"), "{}", answer.body);
        assert!(answer.headers.contains_key("x-request-id"));
    }
    let status = admin_status(veer.admin_addr.unwrap()).await;
    let admission = &status["admission"];
    assert_eq!(admission["global_cap"], 2);
    assert_eq!(admission["in_flight"], 0);
    assert_eq!(admission["admitted"], 2);
    assert_eq!(admission["refused"]["global_limit"], 4);
    assert_eq!(admission["adaptive"], serde_json::Value::Null);
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_queue_requests_wait_for_a_slot_instead_of_being_refused() {
    let backend = sim(BackendProfile::fixed(Duration::from_millis(50))).await;
    let config =
        AdmissionConfig { max_in_flight: 1, queue_length: 8, queue_timeout_ms: 5_000, ..AdmissionConfig::default() };
    let veer = veer(&backend, config).await;
    let answers = concurrently(veer.proxy_addr, 4).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK), "{answers:#?}");
    assert_eq!(backend.stats().requests, 4);
    let status = admin_status(veer.admin_addr.unwrap()).await;
    assert_eq!(status["admission"]["queue"]["waiting"], 0);
    assert_eq!(status["admission"]["refused"]["queue_timeout"], 0);
    veer.shutdown().await;
}

/// Closed-loop requests as fast as answers come, as `forwarded_for`, until
/// `until`; returns the answers' statuses and `Retry-After` values.
async fn hammer(address: SocketAddr, forwarded_for: &'static str, until: Instant) -> Vec<(StatusCode, Option<String>)> {
    let mut answers = Vec::new();
    while Instant::now() < until {
        let request = Request::get("/").header("x-forwarded-for", forwarded_for).body(Full::<Bytes>::default());
        let answer = send(address, request.unwrap()).await;
        let retry_after = answer.headers.get("retry-after").map(|v| v.to_str().unwrap().to_string());
        answers.push((answer.status, retry_after));
    }
    answers
}

/// One request every `every` as `forwarded_for` until `until`.
async fn polite(address: SocketAddr, forwarded_for: &'static str, every: Duration, until: Instant) -> Vec<StatusCode> {
    let mut ticks = tokio::time::interval(every);
    let mut statuses = Vec::new();
    loop {
        ticks.tick().await;
        if Instant::now() >= until {
            return statuses;
        }
        let request = Request::get("/").header("x-forwarded-for", forwarded_for).body(Full::<Bytes>::default());
        statuses.push(send(address, request.unwrap()).await.status);
    }
}

fn client_rate(trusted_proxies: &[&str]) -> AdmissionConfig {
    AdmissionConfig {
        client_rate: Some(ClientRateConfig {
            per_second: 20.0,
            burst: Some(5),
            trusted_proxies: trusted_proxies.iter().map(|p| p.to_string()).collect(),
            ..ClientRateConfig::default()
        }),
        ..AdmissionConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_client_cannot_starve_a_polite_one() {
    let _heavy = HEAVY.lock().await;
    let backend = sim(BackendProfile::fixed(Duration::from_millis(1))).await;
    // The test client connects from 127.0.0.1, which plays a trusted proxy
    // telling veer who the real clients are.
    let veer = veer(&backend, client_rate(&["127.0.0.1"])).await;
    let address = veer.proxy_addr;
    let started = Instant::now();
    let until = started + Duration::from_millis(1500);
    let greedy: Vec<_> = (0..6).map(|_| tokio::spawn(hammer(address, "203.0.113.1", until))).collect();
    let polite = polite(address, "198.51.100.2", Duration::from_millis(100), until).await;
    let mut greedy_answers = Vec::new();
    for task in greedy {
        greedy_answers.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();

    assert!(polite.len() >= 10, "{polite:?}");
    assert!(polite.iter().all(|s| *s == StatusCode::OK), "the polite client was refused: {polite:?}");
    let greedy_ok = greedy_answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let limited: Vec<_> = greedy_answers.iter().filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS).collect();
    assert!(!limited.is_empty(), "the greedy client was never limited ({} answers)", greedy_answers.len());
    assert!(limited.iter().all(|(_, retry_after)| retry_after.as_deref() == Some("1")), "20/s: a token within 1 s");
    // Burst plus refill over the run, with slack for the clock edges.
    let allowed = 5.0 + 20.0 * elapsed + 3.0;
    assert!((greedy_ok as f64) <= allowed, "greedy got {greedy_ok} through, more than {allowed:.0}");
    assert_eq!(greedy_ok + limited.len(), greedy_answers.len(), "nothing but 200 and 429");

    let status = admin_status(veer.admin_addr.unwrap()).await;
    assert_eq!(status["admission"]["clients"]["tracked"], 2, "keyed by the forwarded addresses");
    assert_eq!(status["admission"]["refused"]["client_rate"], limited.len());
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_cannot_split_a_client_into_many() {
    let backend = sim(BackendProfile::fixed(Duration::from_millis(1))).await;
    let veer = veer(&backend, client_rate(&[])).await;
    // Claims to be 25 different clients; veer only believes the socket.
    let mut statuses = Vec::new();
    for i in 0..25 {
        let request =
            Request::get("/").header("x-forwarded-for", format!("192.0.2.{i}")).body(Full::<Bytes>::default());
        statuses.push(send(veer.proxy_addr, request.unwrap()).await.status);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let status = admin_status(veer.admin_addr.unwrap()).await;
    assert_eq!(status["admission"]["clients"]["tracked"], 1);
    veer.shutdown().await;
}

/// The overload scenario: one backend that serves 10 requests at once in
/// 40 ms each (250 requests/s) and slows down in proportion past that,
/// offered twice its capacity. Latencies in tens of milliseconds keep the
/// scheduling noise of a shared 2-core machine small beside them.
const BASE_LATENCY: Duration = Duration::from_millis(40);
const CAPACITY: u32 = 10;
const CAPACITY_RPS: f64 = 250.0;
const TARGET_MS: f64 = 80.0;

async fn overload(admission: AdmissionConfig) -> (veer_tests::load::Summary, serde_json::Value) {
    let backend = sim(BackendProfile::fixed(BASE_LATENCY).with_capacity(CAPACITY)).await;
    let veer = veer(&backend, admission).await;
    let run = Duration::from_secs(4);
    let samples = open_loop(veer.proxy_addr, 2.0 * CAPACITY_RPS, run, Duration::from_secs(3), &[]).await;
    let status = admin_status(veer.admin_addr.unwrap()).await;
    veer.shutdown().await;
    backend.shutdown().await;
    (summarize(&samples, run, Duration::from_millis(500)), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_limit_keeps_latency_near_target_and_throughput_near_capacity_under_overload() {
    let _heavy = HEAVY.lock().await;
    let adaptive = AdmissionConfig {
        adaptive: Some(AdaptiveConfig {
            target_latency_ms: Some(TARGET_MS),
            initial_limit: 10,
            min_limit: 2,
            max_limit: 200,
            ..AdaptiveConfig::default()
        }),
        ..AdmissionConfig::default()
    };
    let (with, status) = overload(adaptive).await;
    let (without, _) = overload(AdmissionConfig::default()).await;
    eprintln!("with AIMD:    {with:?}\nwithout AIMD: {without:?}\nadmission: {:#}", status["admission"]);

    // Admitted requests stay within a small multiple of the target...
    assert!(with.p99_admitted_ms < 3.0 * TARGET_MS, "p99 {} ms with AIMD", with.p99_admitted_ms);
    // ...the backend stays busy...
    assert!(with.goodput_rps > 0.6 * CAPACITY_RPS, "goodput {} req/s with AIMD", with.goodput_rps);
    // ...and the excess is refused quickly instead of queued.
    assert!(with.refused > 0 && with.timed_out == 0, "{with:?}");
    let adaptive = &status["admission"]["adaptive"];
    let limit = adaptive["limit"].as_u64().unwrap();
    assert!((2..=200).contains(&limit), "{adaptive}");
    assert!(adaptive["decreases"].as_u64().unwrap() > 0, "{adaptive}");
    assert!(status["admission"]["refused"]["adaptive_limit"].as_u64().unwrap() > 0);

    // Without it, everyone is admitted and latency runs away.
    assert_eq!(without.refused, 0, "{without:?}");
    assert!(
        without.p99_admitted_ms > 5.0 * with.p99_admitted_ms.max(TARGET_MS),
        "p99 without AIMD {} ms vs with {} ms",
        without.p99_admitted_ms,
        with.p99_admitted_ms
    );
}
