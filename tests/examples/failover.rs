//! Failover benchmark: kills one of three simulated backends under steady
//! closed-loop load and prints how long veer took to take it out of rotation,
//! how many client requests failed and how many attempts were retries.
//!
//! ```sh
//! cargo run -p veer-tests --example failover            # 3 rounds per picker
//! cargo run -p veer-tests --example failover -- 10      # 10 rounds per picker
//! ```
//!
//! veer runs with the production health defaults (`HealthConfig::default()`:
//! checks every 2 s, breaker at 5 consecutive failures, ejection at 5
//! consecutive errors), so the figures show the passive path — the attempts
//! themselves — not the check interval.

#![allow(clippy::unwrap_used)] // A benchmark: a panic is the report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::{BodyExt, Full};
use veer::proxy::ProxyConfig;
use veer::sim::{BackendProfile, SimBackend, SimBackendSpec};

const CLIENTS: usize = 16;
const BEFORE_KILL: Duration = Duration::from_millis(700);
const AFTER_KILL: Duration = Duration::from_millis(1500);

struct Round {
    /// `None`: the host did not take it out during the run (the picker
    /// stopped choosing it first; see `dead_attempts`).
    to_ejection: Option<Duration>,
    from_first_failure: Option<Duration>,
    /// From the kill to the last failed attempt on the killed backend: after
    /// it, no request reached the backend any more.
    to_last_failure: Option<Duration>,
    requests: u64,
    failed: u64,
    retried: u64,
    dead_attempts: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(3);
    println!("failover: 3 backends (1 ms), {CLIENTS} closed-loop clients, one backend killed after {BEFORE_KILL:?}");
    println!(
        "{:<20} {:>5} {:>14} {:>21} {:>19} {:>9} {:>7} {:>8} {:>17}",
        "picker",
        "round",
        "kill→ejected",
        "1st failure→ejected",
        "kill→last failure",
        "requests",
        "failed",
        "retried",
        "attempts on dead"
    );
    for picker in ["builtin:round-robin", "builtin:p2c-ewma"] {
        let mut all = Vec::new();
        for round in 1..=rounds {
            let r = run(picker).await;
            println!(
                "{:<20} {:>5} {:>14} {:>21} {:>19} {:>9} {:>7} {:>8} {:>17}",
                picker,
                round,
                millis(r.to_ejection),
                millis(r.from_first_failure),
                millis(r.to_last_failure),
                r.requests,
                r.failed,
                r.retried,
                r.dead_attempts
            );
            all.push(r);
        }
        let mut ejections: Vec<Duration> = all.iter().filter_map(|r| r.to_ejection).collect();
        ejections.sort();
        let last_failure = all.iter().filter_map(|r| r.to_last_failure).max();
        println!(
            "{picker}: ejected by the host in {}/{} rounds (median {}, worst {}); no attempt reached the dead \
             backend later than {} after the kill; failed requests in all rounds: {}",
            ejections.len(),
            all.len(),
            millis(ejections.get(ejections.len() / 2).copied()),
            millis(ejections.last().copied()),
            millis(last_failure),
            all.iter().map(|r| r.failed).sum::<u64>()
        );
    }
}

fn millis(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

async fn run(picker: &str) -> Round {
    let mut backends = Vec::new();
    for i in 0..3 {
        let spec = SimBackendSpec::new(format!("s{i}"), BackendProfile::fixed(Duration::from_millis(1)));
        backends.push(SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap());
    }
    let targets: Vec<(String, SocketAddr)> = backends.iter().map(|b| (b.name().to_string(), b.addr())).collect();
    let named: Vec<(&str, SocketAddr)> = targets.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let options = veer_tests::veer_options(&named, picker, ProxyConfig::default());
    let veer = veer::server::start(options).await.unwrap();
    let proxy = veer.proxy_addr;

    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, requests, failed) = (stop.clone(), requests.clone(), failed.clone());
            tokio::spawn(async move {
                let client = veer_tests::http1_client();
                while !stop.load(Ordering::Relaxed) {
                    let request = Request::get(format!("http://{proxy}/")).body(Full::default()).unwrap();
                    let ok = match client.request(request).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            ok && response.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    failed.fetch_add(u64::from(!ok), Ordering::Relaxed);
                }
            })
        })
        .collect();

    tokio::time::sleep(BEFORE_KILL).await;
    let dead_before = veer.proxy.pool().get(1).unwrap().snapshot().requests;
    let killed = Instant::now();
    backends[0].kill().await;
    tokio::time::sleep(AFTER_KILL).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let times = veer.proxy.health().failover_times("s0").unwrap();
    let ejected = times.ineligible_at;
    let attempts: u64 = veer.proxy.pool().all().iter().map(|b| b.snapshot().requests).sum();
    let requests = requests.load(Ordering::Relaxed);
    let round = Round {
        to_ejection: ejected.map(|at| at.saturating_duration_since(killed)),
        from_first_failure: ejected.zip(times.first_failure).map(|(at, first)| at.saturating_duration_since(first)),
        to_last_failure: times.last_failure.map(|at| at.saturating_duration_since(killed)),
        requests,
        failed: failed.load(Ordering::Relaxed),
        retried: attempts.saturating_sub(requests),
        dead_attempts: veer.proxy.pool().get(1).unwrap().snapshot().requests - dead_before,
    };
    veer.shutdown().await;
    for backend in &backends {
        backend.kill().await;
    }
    round
}
