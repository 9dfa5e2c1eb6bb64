//! The Python, JavaScript and C example pickers serve real traffic: real veer,
//! real simulated backends on 127.0.0.1, assertions on what clients see and on
//! the policy (least connections keeps requests away from a slow backend).

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use veer::proxy::ProxyConfig;
use veer::sim::{BackendProfile, FailureKind, Latency, SimBackend, SimBackendSpec};
use veer_tests::{c_example, get, js_example, python_example, start_veer};

async fn sim(name: &str, latency_ms: u64) -> SimBackend {
    let profile = BackendProfile {
        latency: Latency::Fixed(Duration::from_millis(latency_ms)),
        error_rate: 0.0,
        error_kind: FailureKind::Status500,
        capacity: None,
    };
    let spec = SimBackendSpec { name: name.to_string(), profile, phases: vec![], seed: 7 };
    SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// `clients` concurrent clients each send `each` GETs; every one must be a 200.
/// Returns the count per backend (`x-sim-backend`).
async fn load(proxy: SocketAddr, clients: usize, each: usize) -> BTreeMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut counts = BTreeMap::<String, usize>::new();
            for _ in 0..each {
                let answer = get(proxy, "/").await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
                let backend = answer.headers["x-sim-backend"].to_str().unwrap().to_string();
                *counts.entry(backend).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts = BTreeMap::new();
    for task in tasks {
        for (backend, n) in task.await.unwrap() {
            *counts.entry(backend).or_default() += n;
        }
    }
    counts
}

async fn serves_traffic_and_avoids_the_slow_backend(component: &Path, name: &str) {
    let backends = [sim("fast-1", 1).await, sim("fast-2", 1).await, sim("slow", 40).await];
    let targets: Vec<(&str, SocketAddr)> = backends.iter().map(|b| (b.name(), b.addr())).collect();
    let veer = start_veer(&targets, component.to_str().unwrap(), ProxyConfig::default()).await;
    let picker = veer.proxy.slot().current();
    assert_eq!(picker.info().name, name);

    // One client at a time: nothing is in flight at a pick, so least
    // connections takes turns and every backend serves.
    let sequential = load(veer.proxy_addr, 1, 30).await;
    assert_eq!(sequential.values().sum::<usize>(), 30);
    assert_eq!(sequential.len(), 3, "every backend is used when idle: {sequential:?}");

    // Eight at a time: requests pile up on the slow backend, so it gets few.
    let concurrent = load(veer.proxy_addr, 8, 40).await;
    assert_eq!(concurrent.values().sum::<usize>(), 320);
    let slow_share = concurrent.get("slow").copied().unwrap_or(0) as f64 / 320.0;
    assert!(slow_share < 0.2, "{name} sent {slow_share:.2} of requests to the slow backend: {concurrent:?}");

    // The plugin decided every request itself: no fault, no fallback.
    let stats = picker.stats();
    assert_eq!(stats.fallbacks, 0, "{name}: {stats:?}");
    assert_eq!(stats.picks, 350, "{name}: {stats:?}");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_picker_serves_traffic() {
    serves_traffic_and_avoids_the_slow_backend(&python_example(), "least-conn-py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_picker_serves_traffic() {
    serves_traffic_and_avoids_the_slow_backend(&js_example(), "least-conn-js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_picker_serves_traffic() {
    serves_traffic_and_avoids_the_slow_backend(&c_example(), "least-conn-c").await;
}
