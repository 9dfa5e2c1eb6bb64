//! The dashboard (`GET /` on the admin listener) and its event stream
//! (`GET /events`): the stream as a script reads it, and the page in Debian's
//! headless chromium driven by playwright-core (`tests/browser/`;
//! `bash scripts/test.sh` installs both).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use veer_tests::operator::sim;
use veer_tests::{load, veer_options};

const TOKEN: &str = "dashboard-test-token";

async fn started(names: &[&str]) -> (veer::server::RunningServer, Vec<veer::sim::SimBackend>) {
    let mut backends = Vec::new();
    for name in names {
        backends.push(sim(name).await);
    }
    let specs: Vec<(&str, std::net::SocketAddr)> =
        names.iter().copied().zip(backends.iter().map(|b| b.addr())).collect();
    let mut options = veer_options(&specs, "builtin:p2c-ewma", veer::proxy::ProxyConfig::default());
    options.control.admin_token = Some(TOKEN.to_string());
    (veer::server::start(options).await.unwrap(), backends)
}

/// Sends `method path` to the admin API with the token.
async fn admin(server: &veer::server::RunningServer, method: &str, path: &str) -> veer_tests::Answer {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Default::default())
        .unwrap();
    veer_tests::send(server.admin_addr.unwrap(), request).await
}

/// Reads `GET /events` for `duration`: every event's name and data.
async fn events(server: &veer::server::RunningServer, duration: Duration) -> Vec<(String, serde_json::Value)> {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(format!("http://{}/events", server.admin_addr.unwrap()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

/// A script's view: `stats` every second with each backend's share and
/// rates, the drain and the swap as events of their own; the token is
/// required for the stream but not for the page (which holds no data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_stats_and_changes() {
    let (server, _backends) = started(&["a", "b"]).await;
    let page = veer_tests::get(server.admin_addr.unwrap(), "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<title>veer</title>") && !page.body.contains("http://") && !page.body.contains("https://"),
        "embedded, no CDN"
    );
    assert!(page.body.len() < 32 * 1024, "small: {} bytes", page.body.len());
    assert_eq!(veer_tests::get(server.admin_addr.unwrap(), "/events").await.status, 401);

    let traffic =
        tokio::spawn(load::open_loop(server.proxy_addr, 100.0, Duration::from_secs(4), Duration::from_secs(2), &[]));
    let stream = {
        let server = &server;
        async move { events(server, Duration::from_millis(3500)).await }
    };
    let actions = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(admin(&server, "POST", "/upstreams/default/backends/b/drain").await.status, 200);
        let swap = http::Request::put("/upstreams/default/picker")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Full::new(Bytes::from(r#"{"source": "builtin:round-robin"}"#)))
            .unwrap();
        assert_eq!(veer_tests::send(server.admin_addr.unwrap(), swap).await.status, 200);
    };
    let (seen, ()) = tokio::join!(stream, actions);
    traffic.await.unwrap();
    let stats: Vec<_> = seen.iter().filter(|(name, _)| name == "stats").map(|(_, data)| data).collect();
    assert!(stats.len() >= 3, "a stats event a second: {seen:?}");
    let last = stats.last().unwrap();
    let backends = last["upstreams"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert!(last["requests_per_second"].as_f64().unwrap() > 0.0, "{last}");
    assert!(last["p99_ms"].as_f64().is_some(), "{last}");
    for field in ["ewma_ms", "in_flight", "requests_per_second", "error_rate", "share", "breaker", "state"] {
        assert!(!backends[0][field].is_null(), "{field} in {last}");
    }
    let b = backends.iter().find(|b| b["name"] == "b").unwrap();
    assert_eq!(b["state"], "drained", "{last}");
    let event = |name: &str| seen.iter().find(|(n, _)| n == name).map(|(_, data)| data.clone());
    let drain = event("drain").unwrap_or_else(|| panic!("no drain event in {seen:?}"));
    assert_eq!((drain["backend"].as_str(), drain["change"].as_str()), (Some("b"), Some("drained")));
    let swap = event("swap").unwrap_or_else(|| panic!("no swap event in {seen:?}"));
    assert!(swap["to"].as_str().unwrap().contains("round-robin"), "{swap}");
    server.shutdown().await;
}

/// The page in a real browser: it asks for the token, shows every backend,
/// and a click on "Drain" drains the backend (as `/status` then says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_page_shows_the_backends_and_a_drain_click_drains() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.mjs");
    assert!(
        script.with_file_name("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run bash scripts/test.sh (npm ci --prefix tests/browser)"
    );
    let (server, _backends) = started(&["a", "b", "c"]).await;
    // `VEER_DASHBOARD_SCREENSHOT=docs/dashboard.png` makes the README's
    // picture, after a minute of traffic.
    let readme = std::env::var("VEER_DASHBOARD_SCREENSHOT").ok();
    let (wait, screenshot) = match &readme {
        Some(path) => (Duration::from_secs(60), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)),
        None => (Duration::from_secs(4), PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")),
    };
    let traffic = tokio::spawn(load::open_loop(
        server.proxy_addr,
        60.0,
        wait * 2 + Duration::from_secs(10),
        Duration::from_secs(2),
        &[],
    ));
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{}", server.admin_addr.unwrap()))
        .arg(&screenshot)
        .arg(TOKEN)
        .env("VEER_DASHBOARD_WAIT_MS", wait.as_millis().to_string())
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["backends"], serde_json::json!(["a", "b", "c"]), "{report}");
    let status: serde_json::Value = serde_json::from_str(&admin(&server, "GET", "/status").await.body).unwrap();
    let b = status["backends"].as_array().unwrap().iter().find(|b| b["name"] == "b").unwrap().clone();
    assert_eq!(b["health"]["drained"], true, "the click drained b: {b}");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of the page");
    traffic.abort();
    server.shutdown().await;
}
