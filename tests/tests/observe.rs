//! Observability end to end: Prometheus metrics (checked by promtool), access
//! logs, the JSON snapshot, health endpoints and metric dumps, with real
//! traffic through a real veer.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use veer::observe::access_log::{AccessLogConfig, LogFormat};
use veer::observe::snapshot::DumpConfig;
use veer::proxy::ProxyConfig;
use veer::sim::{BackendProfile, FailureKind, Latency, SimBackend, SimBackendSpec};
use veer_tests::{get, veer_options as options};

async fn sim(name: &str, error_rate: f64) -> SimBackend {
    let profile = BackendProfile {
        latency: Latency::Fixed(Duration::from_millis(1)),
        error_rate,
        error_kind: FailureKind::Status500,
        capacity: None,
    };
    let spec = SimBackendSpec { name: name.to_string(), profile, phases: vec![], seed: 3 };
    SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn temp_file(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("veer-observe-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Polls `read` until it returns `Some`, for up to 10 s.
async fn eventually<T>(what: &str, mut read: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = read() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_traffic_and_pass_promtool() {
    let (good, bad) = (sim("good", 0.0).await, sim("bad", 1.0).await);
    let mut proxy = ProxyConfig::default();
    proxy.retry.max_attempts = 1;
    let veer =
        veer::server::start(options(&[("good", good.addr()), ("bad", bad.addr())], "builtin:round-robin", proxy))
            .await
            .unwrap();
    for _ in 0..20 {
        get(veer.proxy_addr, "/").await;
    }
    let admin = veer.admin_addr.unwrap();
    let text = get(admin, "/metrics").await.body;

    // No retries: each request made one attempt, so client and backend counts agree.
    let ok = metric(&text, r#"veer_requests_total{method="GET",status_class="2xx"}"#);
    let failed = metric(&text, r#"veer_requests_total{method="GET",status_class="5xx"}"#);
    assert_eq!(ok + failed, 20.0);
    assert!(failed >= 1.0, "round robin sent some requests to the failing backend");
    assert_eq!(metric(&text, r#"veer_backend_attempts_total{backend="bad",result="5xx"}"#), failed);
    assert_eq!(metric(&text, r#"veer_backend_attempts_total{backend="good",result="2xx"}"#), ok);
    assert_eq!(metric(&text, r#"veer_backend_response_duration_seconds_count{backend="good"}"#), ok);
    assert_eq!(metric(&text, r#"veer_request_duration_seconds_count{status_class="2xx"}"#), ok);
    assert_eq!(metric(&text, "veer_picker_call_duration_seconds_count"), 20.0);
    assert_eq!(metric(&text, r#"veer_picker_picks_total{upstream="default"}"#), 20.0);
    assert_eq!(metric(&text, "veer_requests_in_flight"), 0.0);
    assert!(metric(&text, r#"veer_backend_latency_ewma_seconds{backend="good"}"#) > 0.0);
    assert!(text.contains(r#"veer_picker_info{name="round-robin""#), "{text}");
    assert_eq!(metric(&text, r#"veer_backend_breaker_state{backend="good",state="closed"}"#), 1.0);
    // Its 500s in a row: the outlier detector ejected "bad" and the picker lost it.
    assert_eq!(metric(&text, r#"veer_backend_eligible{backend="good"}"#), 1.0);
    assert_eq!(metric(&text, r#"veer_backend_eligible{backend="bad"}"#), 0.0);
    assert!(metric(&text, r#"veer_backend_ejections_total{backend="bad"}"#) >= 1.0);
    assert!(text.contains("veer_build_info{version="), "{text}");
    assert_eq!(metric(&text, "veer_admission_admitted_total"), 20.0);
    assert_eq!(metric(&text, r#"veer_admission_refusals_total{reason="global_limit"}"#), 0.0);
    assert_eq!(metric(&text, "veer_admission_limit"), 10000.0);
    // Bounded labels: no paths or client addresses.
    assert!(!text.contains("127.0.0.1"), "a label carries an address:\n{text}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package `prometheus`; scripts/setup.sh installs it)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_access_log_line_with_its_request_id() {
    let backend = sim("only", 0.0).await;
    let path = temp_file("access.log");
    let mut options = options(&[("only", backend.addr())], "builtin:round-robin", ProxyConfig::default());
    options.observe.access_log = Some(AccessLogConfig { path: path.clone(), ..AccessLogConfig::default() });
    let veer = veer::server::start(options).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let answer = get(veer.proxy_addr, &format!("/item/{i}?q=1")).await;
        ids.push(answer.headers["x-request-id"].to_str().unwrap().to_string());
    }
    let lines: Vec<serde_json::Value> = eventually("five access log lines", || {
        let text = std::fs::read_to_string(&path).ok()?;
        let lines: Vec<_> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (lines.len() == 5).then_some(lines)
    })
    .await;
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["request_id"], ids[i].as_str());
        assert_eq!(line["path"], format!("/item/{i}?q=1"));
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 200);
        assert_eq!(line["backend"], "only");
        assert_eq!(line["picker"], "round-robin");
        assert_eq!(line["attempts"], 1);
        assert!(line["bytes"].as_u64().unwrap() > 0);
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let text = get(veer.admin_addr.unwrap(), "/metrics").await.body;
    assert_eq!(metric(&text, "veer_access_log_records_total"), 5.0);
    assert_eq!(metric(&text, "veer_access_log_dropped_total"), 0.0);
    veer.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_logs_and_a_failed_request() {
    let path = temp_file("access-text.log");
    // Nothing listens on this port: the only backend is dead.
    let dead: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut options = options(&[("dead", dead)], "builtin:round-robin", ProxyConfig::default());
    options.observe.access_log =
        Some(AccessLogConfig { path: path.clone(), format: LogFormat::Text, ..AccessLogConfig::default() });
    let veer = veer::server::start(options).await.unwrap();
    let answer = get(veer.proxy_addr, "/x").await;
    assert!(answer.status.is_server_error());
    let line = eventually("a text access log line", || {
        std::fs::read_to_string(&path).ok().filter(|t| t.ends_with('\n')).map(|t| t.trim_end().to_string())
    })
    .await;
    assert!(line.contains(&format!(" status={} ", answer.status.as_u16())), "{line}");
    assert!(line.contains(" backend=dead ") && line.contains(r#" path="/x" "#), "{line}");
    veer.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_and_the_snapshot_describe_the_proxy() {
    let backend = sim("only", 0.0).await;
    let veer = veer_tests::start_veer(&[("only", backend.addr())], "builtin:p2c-ewma", ProxyConfig::default()).await;
    let admin = veer.admin_addr.unwrap();
    for _ in 0..3 {
        get(veer.proxy_addr, "/").await;
    }
    assert_eq!(get(admin, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(admin, "/readyz").await.status, StatusCode::OK);
    let snapshot: serde_json::Value = serde_json::from_str(&get(admin, "/snapshot").await.body).unwrap();
    assert_eq!(snapshot["requests"]["total"], 3);
    assert_eq!(snapshot["requests"]["by_class"]["2xx"], 3);
    assert_eq!(snapshot["picker"]["info"]["name"], "p2c-ewma");
    assert_eq!(snapshot["picker"]["lifetime"]["picks"], 3);
    assert_eq!(snapshot["backends"][0]["requests"], 3);
    let health: serde_json::Value = serde_json::from_str(&get(admin, "/health").await.body).unwrap();
    assert_eq!(health[0]["name"], "only");
    assert_eq!(health[0]["error_rate"], 0.0);
    veer.shutdown().await;

    // With no backends, veer is alive but not ready, and says why.
    let empty = veer_tests::start_veer(&[], "builtin:round-robin", ProxyConfig::default()).await;
    let admin = empty.admin_addr.unwrap();
    assert_eq!(get(admin, "/healthz").await.status, StatusCode::OK);
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.body.contains("no backend is eligible"), "{}", ready.body);
    empty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_dumps_are_appended_as_json_lines() {
    let backend = sim("only", 0.0).await;
    let path = temp_file("dump.jsonl");
    let mut options = options(&[("only", backend.addr())], "builtin:round-robin", ProxyConfig::default());
    options.observe.dump = DumpConfig { path: Some(path.clone()), interval: Some(Duration::from_millis(100)) };
    let veer = veer::server::start(options).await.unwrap();
    get(veer.proxy_addr, "/").await;
    let dumps: Vec<serde_json::Value> = eventually("two dumps after the request", || {
        let text = std::fs::read_to_string(&path).ok()?;
        let dumps: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (dumps.iter().filter(|d| d["requests"]["total"] == 1).count() >= 2).then_some(dumps)
    })
    .await;
    assert!(dumps.iter().all(|d| d["time"].is_string() && d["backends"].is_array()));
    veer.shutdown().await;
    let _ = std::fs::remove_file(&path);
}
