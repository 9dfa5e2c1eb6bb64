//! A fleet of veer instances: one per-client rate limit shared through a
//! real Redis (Debian's redis-server on 127.0.0.1 at a free port), its
//! failure modes when Redis dies, and its recovery.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use veer::admission::shared::{OnStoreError, SharedRateConfig};
use veer::admission::{AdmissionConfig, ClientRateConfig};
use veer::proxy::ProxyConfig;
use veer_tests::redis_server::RedisServer;
use veer_tests::{get, operator::sim, start_veer_with};

const PER_SECOND: f64 = 5.0;
const BURST: u32 = 10;

async fn instance(backend: SocketAddr, redis: &RedisServer, on_error: OnStoreError) -> veer::server::RunningServer {
    let shared = SharedRateConfig {
        redis: redis.url(),
        key_prefix: format!("veer-test-{}:", std::process::id()),
        timeout: Duration::from_millis(200),
        retry_interval: Duration::from_millis(200),
        on_error,
    };
    let admission = AdmissionConfig {
        client_rate: Some(ClientRateConfig {
            per_second: PER_SECOND,
            burst: Some(BURST),
            shared: Some(shared),
            ..ClientRateConfig::default()
        }),
        ..AdmissionConfig::default()
    };
    start_veer_with(&[("s", backend)], "native:round-robin", ProxyConfig::default(), admission).await
}

async fn status(server: &veer::server::RunningServer) -> serde_json::Value {
    serde_json::from_str(&get(server.admin_addr.unwrap(), "/status").await.body).unwrap()
}

/// One client alternating between two instances gets one limit, not two:
/// the admitted sum is burst + rate × time, whichever instance admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_redis_enforce_one_limit() {
    let redis = RedisServer::start().await;
    let backend = sim("shared").await;
    let a = instance(backend.addr(), &redis, OnStoreError::Local).await;
    let b = instance(backend.addr(), &redis, OnStoreError::Local).await;
    let started = Instant::now();
    let (mut admitted, mut limited) = ([0usize; 2], 0);
    for i in 0..80 {
        let (index, server) = if i % 2 == 0 { (0, &a) } else { (1, &b) };
        match get(server.proxy_addr, "/").await.status {
            StatusCode::OK => admitted[index] += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
        // 80 requests over about two seconds: the burst, then the rate.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = admitted[0] + admitted[1];
    let allowed = f64::from(BURST) + PER_SECOND * elapsed;
    println!(
        "admitted {admitted:?} (sum {total}) and limited {limited} in {elapsed:.2} s; one limit allows {allowed:.1}"
    );
    assert!(total as f64 <= allowed + 1.0, "the sum {total} exceeds one limit's {allowed:.1}");
    assert!(total as f64 >= allowed - 3.0, "the limit admits what it allows: {total} of {allowed:.1}");
    assert!(admitted[0] > 0 && admitted[1] > 0, "both instances admit");
    for server in [&a, &b] {
        let shared = &status(server).await["admission"]["clients"]["shared"];
        assert_eq!(shared["up"], true, "{shared}");
        assert_eq!(shared["checks"]["error"], 0, "{shared}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Redis killed: `local` falls back to the instance's own buckets, `refuse`
/// answers 503; nothing crashes, the metrics say so, and both return to the
/// shared limit when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_dies_each_instance_fails_as_configured_and_recovers() {
    let mut redis = RedisServer::start().await;
    let backend = sim("failover").await;
    let open = instance(backend.addr(), &redis, OnStoreError::Local).await;
    let closed = instance(backend.addr(), &redis, OnStoreError::Refuse).await;
    assert_eq!(get(open.proxy_addr, "/").await.status, StatusCode::OK);
    assert_eq!(get(closed.proxy_addr, "/").await.status, StatusCode::OK);

    redis.kill().await;
    let statuses: Vec<_> = {
        let mut statuses = Vec::new();
        for _ in 0..(BURST + 5) {
            statuses.push(get(open.proxy_addr, "/").await.status);
        }
        statuses
    };
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(ok >= BURST as usize - 1 && ok < statuses.len(), "the local limit decides: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(*s, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS)), "{statuses:?}");
    let refused = get(closed.proxy_addr, "/").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.body);
    assert!(refused.body.contains("store is unavailable"), "{}", refused.body);
    let metrics = get(closed.admin_addr.unwrap(), "/metrics").await.body;
    assert!(metrics.contains("veer_rate_limit_store_up 0"), "{metrics}");
    assert!(metrics.contains("veer_admission_refusals_total{reason=\"rate_store\"} 1"), "{metrics}");
    // A 503 for the store's failure is veer's own: the backend is not blamed.
    let backend_view = status(&closed).await["backends"][0].clone();
    assert_eq!(
        (backend_view["failures"].as_u64(), backend_view["health"]["eligible"].as_bool()),
        (Some(0), Some(true)),
        "{backend_view}"
    );
    let open_status = status(&open).await;
    let checks = &open_status["admission"]["clients"]["shared"]["checks"];
    assert!(checks["error"].as_u64().unwrap() >= 1, "{checks}");

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(closed.proxy_addr, "/").await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "the closed instance never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&closed).await["admission"]["clients"]["shared"]["up"], true);
    open.shutdown().await;
    closed.shutdown().await;
}
