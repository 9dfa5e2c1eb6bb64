//! A candidate picker on trial beside the serving one, end to end: real
//! veer from a config file, real backends on 127.0.0.1 (one fast, one slow),
//! real requests. The rule promotes a clearly better candidate and retires a
//! clearly worse one; the admin API runs a trial by hand; bad input is
//! refused and changes nothing.
//!
//! Assertions are on what clients, the admin API and the metrics see;
//! loops that wait for the rule are bounded by a request count, never by a
//! timing assertion.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use veer::server::RunningServer;
use veer::sim::{BackendProfile, SimBackend, SimBackendSpec};
use veer_tests::operator::{ConfigFile, admin, json, start_from};
use veer_tests::{get, send};

/// A simulated backend named `name` that answers after `latency`.
async fn backend(name: &str, latency: Duration) -> SimBackend {
    let spec = SimBackendSpec { name: name.into(), profile: BackendProfile::fixed(latency), phases: vec![], seed: 1 };
    SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// Config text: `fast` and `slow`, served by `picker`, with `candidate`
/// (YAML under `picker:`, indented by four) appended.
fn config(fast: SocketAddr, slow: SocketAddr, picker: &str, candidate: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\npicker:\n  source: {picker}\n{candidate}health:\n  check:\n    enabled: false\nproxy:\n  workers: 2\nreload:\n  watch: false\nbackends:\n  - name: fast\n    address: {fast}\n  - name: slow\n    address: {slow}\n"
    )
}

/// Sends requests from four clients until the trial has ended (or
/// `budget` requests went out); every one must succeed. Returns how many
/// were sent.
async fn drive_until_decided(server: &RunningServer, budget: usize) -> usize {
    let proxy = server.proxy_addr;
    let mut sent = 0;
    while sent < budget {
        let batch: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..25 {
                        assert_eq!(get(proxy, "/").await.status, StatusCode::OK, "a request failed during the trial");
                    }
                })
            })
            .collect();
        for task in batch {
            task.await.unwrap();
        }
        sent += 100;
        if json(&admin(server, "GET", "/candidate", "").await)["running"].is_null() {
            return sent;
        }
    }
    panic!("the trial was not decided within {budget} requests");
}

fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Round robin sends half the traffic to a backend 25 ms slower; least
/// response time learns to avoid it. On half the requests, the rule sees
/// the candidate's mean latency far below the serving picker's and promotes
/// it; the promotion survives a reload of the unchanged file, and a changed
/// candidate starts a new trial from the file's picker.
#[tokio::test]
async fn a_better_candidate_is_promoted_by_the_rule_and_stays_promoted_across_a_reload() {
    let (fast, slow) = (backend("fast", Duration::ZERO).await, backend("slow", Duration::from_millis(25)).await);
    let candidate = "  candidate:\n    source: builtin:least-response-time\n    share: 50\n    promote:\n      min_requests: 100\n      margin: 10\n";
    let file = ConfigFile::new("trial", "promote");
    file.write(&config(fast.addr(), slow.addr(), "builtin:round-robin", candidate));
    let server = start_from(&file).await;

    let running = json(&admin(&server, "GET", "/candidate", "").await);
    assert_eq!(running["running"]["candidate"]["source"], "builtin:least-response-time", "{running}");
    drive_until_decided(&server, 5000).await;

    let trial = json(&admin(&server, "GET", "/candidate", "").await);
    let last = &trial["last"];
    assert_eq!((last["outcome"].as_str(), last["by"].as_str()), (Some("promoted"), Some("rule")), "{trial}");
    let (serving_arm, candidate_arm) = (&last["report"]["serving_requests"], &last["report"]["candidate_requests"]);
    assert!(serving_arm["requests"].as_u64().unwrap() >= 100 && candidate_arm["requests"].as_u64().unwrap() >= 100);
    assert!(candidate_arm["mean_ms"].as_f64() < serving_arm["mean_ms"].as_f64(), "{trial}");
    assert_eq!(json(&admin(&server, "GET", "/picker", "").await)["info"]["source"], "builtin:least-response-time");
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    assert_eq!(metric(&metrics, "veer_picker_promotions_total{upstream=\"default\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "veer_picker_swaps_total{upstream=\"default\"}"), Some(1.0));

    // The file still names round robin and the same candidate: the decision stands.
    let reloaded = json(&admin(&server, "POST", "/reload", "").await);
    assert_eq!(reloaded["upstreams"]["default"]["candidate"], "promoted", "{reloaded}");
    assert_eq!(json(&admin(&server, "GET", "/picker", "").await)["info"]["source"], "builtin:least-response-time");
    assert!(json(&admin(&server, "GET", "/candidate", "").await)["running"].is_null());

    // A changed candidate is a new trial, beside the file's picker.
    file.write(&config(fast.addr(), slow.addr(), "builtin:round-robin", &candidate.replace("share: 50", "share: 30")));
    let reloaded = json(&admin(&server, "POST", "/reload", "").await);
    assert_eq!(reloaded["upstreams"]["default"]["candidate"], "started", "{reloaded}");
    let running = json(&admin(&server, "GET", "/candidate", "").await)["running"].clone();
    assert_eq!(
        (running["serving"]["source"].as_str(), running["share_percent"].as_f64()),
        (Some("builtin:round-robin"), Some(30.0))
    );
    server.shutdown().await;
}

/// The mirror image: a candidate that spreads evenly beside a serving
/// picker that avoids the slow backend is retired, and the serving picker
/// never changes.
#[tokio::test]
async fn a_worse_candidate_is_retired_and_the_serving_picker_stays() {
    let (fast, slow) = (backend("fast", Duration::ZERO).await, backend("slow", Duration::from_millis(25)).await);
    let candidate = "  candidate:\n    source: builtin:round-robin\n    share: 50\n    promote:\n      min_requests: 100\n      margin: 10\n";
    let file = ConfigFile::new("trial", "retire");
    file.write(&config(fast.addr(), slow.addr(), "builtin:least-response-time", candidate));
    let server = start_from(&file).await;
    drive_until_decided(&server, 5000).await;

    let trial = json(&admin(&server, "GET", "/candidate", "").await);
    assert_eq!(
        (trial["last"]["outcome"].as_str(), trial["last"]["by"].as_str()),
        (Some("retired"), Some("rule")),
        "{trial}"
    );
    assert_eq!(json(&admin(&server, "GET", "/picker", "").await)["info"]["source"], "builtin:least-response-time");
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    assert_eq!(metric(&metrics, "veer_picker_trial_retirements_total{upstream=\"default\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "veer_picker_promotions_total{upstream=\"default\"}"), Some(0.0));
    // Not started again by a reload of the same file.
    let reloaded = json(&admin(&server, "POST", "/reload", "").await);
    assert_eq!(reloaded["upstreams"]["default"]["candidate"], "retired", "{reloaded}");
    assert!(json(&admin(&server, "GET", "/candidate", "").await)["running"].is_null());
    server.shutdown().await;
}

/// A trial started through the admin API routes its share (drawn by veer:
/// a request id the client chooses does not steer it), shows both pickers'
/// numbers in the API and the metrics, and is promoted by hand. Bad
/// requests are refused with the reason and leave the running trial alone.
#[tokio::test]
async fn the_admin_api_runs_a_trial_and_refuses_bad_ones() {
    let (fast, slow) = (backend("fast", Duration::ZERO).await, backend("slow", Duration::ZERO).await);
    let file = ConfigFile::new("trial", "admin");
    file.write(&config(fast.addr(), slow.addr(), "builtin:round-robin", ""));
    let server = start_from(&file).await;
    assert_eq!(admin(&server, "DELETE", "/candidate", "").await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin(&server, "POST", "/candidate/promote", "").await.status, StatusCode::NOT_FOUND);

    let started = admin(&server, "PUT", "/candidate", r#"{"source": "builtin:least-conn", "share": 25}"#).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    for _ in 0..400 {
        assert_eq!(get(server.proxy_addr, "/").await.status, StatusCode::OK);
    }
    let trial = json(&admin(&server, "GET", "/upstreams/default/candidate", "").await)["running"].clone();
    let (serving, candidate) = (
        trial["serving_requests"]["requests"].as_u64().unwrap(),
        trial["candidate_requests"]["requests"].as_u64().unwrap(),
    );
    assert_eq!(serving + candidate, 400, "{trial}");
    assert!((60..=140).contains(&candidate), "{candidate} of 400 at a 25% share");
    assert_eq!(trial["verdict"]["decision"], "undecided", "no rule: an operator decides");
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    let series = "veer_picker_trial_requests{role=\"candidate\",upstream=\"default\"}";
    assert!(metric(&metrics, series).is_some_and(|n| n >= candidate as f64), "{metrics}");
    assert!(metrics.contains("veer_picker_trial_share{name=\"least-conn\""), "{metrics}");

    // The client's own request id does not choose the picker.
    for _ in 0..200 {
        let mut request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        request.headers_mut().insert("x-request-id", http::HeaderValue::from_static("always-the-same"));
        assert_eq!(send(server.proxy_addr, request).await.status, StatusCode::OK);
    }
    let after = json(&admin(&server, "GET", "/candidate", "").await)["running"]["candidate_requests"]["requests"]
        .as_u64()
        .unwrap();
    assert!((10..=90).contains(&(after - candidate)), "{} of 200 with one request id", after - candidate);

    // Refused, with the reason; the running trial stays.
    for (body, status) in [
        (r#"{"source": "builtin:least-conn", "share": 0}"#, StatusCode::BAD_REQUEST),
        (r#"{"source": "builtin:least-conn", "share": 100}"#, StatusCode::BAD_REQUEST),
        (r#"{"source": "builtin:least-conn", "share": 10, "promote": {"margin": 120}}"#, StatusCode::BAD_REQUEST),
        (r#"{"source": "builtin:least-conn", "share": 10, "promote": {"min_requests": 0}}"#, StatusCode::BAD_REQUEST),
        (r#"{"source": "builtin:least-conn"}"#, StatusCode::BAD_REQUEST),
        (r#"{"source": "builtin:least-conn", "share": 10, "extra": 1}"#, StatusCode::BAD_REQUEST),
        (r#"{"source": "builtin:nope", "share": 10}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (
            r#"{"source": "builtin:q-learning", "share": 10, "params": {"alpha": "x"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (r#"{"source": "/tmp/anything.wasm", "share": 10}"#, StatusCode::FORBIDDEN),
    ] {
        let answer = admin(&server, "PUT", "/candidate", body).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(json(&answer)["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}: {}", answer.body);
    }
    let still = json(&admin(&server, "GET", "/candidate", "").await)["running"].clone();
    assert_eq!(still["candidate"]["source"], "builtin:least-conn", "{still}");
    assert_eq!(admin(&server, "GET", "/upstreams/nope/candidate", "").await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin(&server, "PATCH", "/candidate", "").await.status, StatusCode::METHOD_NOT_ALLOWED);

    // A reload whose candidate refuses its parameters is refused as a whole.
    let bad = "  candidate:\n    source: builtin:q-learning\n    share: 10\n    params:\n      alpha: x\n";
    file.write(&config(fast.addr(), slow.addr(), "builtin:weighted-rr", bad));
    let refused = admin(&server, "POST", "/reload", "").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(
        json(&admin(&server, "GET", "/picker", "").await)["info"]["source"],
        "builtin:round-robin",
        "swap undone"
    );
    let still = json(&admin(&server, "GET", "/candidate", "").await)["running"].clone();
    assert_eq!(still["candidate"]["source"], "builtin:least-conn", "{still}");

    // Promoted by hand: the live candidate serves, every request still answered.
    let promoted = admin(&server, "POST", "/candidate/promote", "").await;
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.body);
    assert_eq!(json(&promoted)["to"]["source"], "builtin:least-conn");
    for _ in 0..50 {
        assert_eq!(get(server.proxy_addr, "/").await.status, StatusCode::OK);
    }
    let trial = json(&admin(&server, "GET", "/candidate", "").await);
    assert_eq!((trial["last"]["outcome"].as_str(), trial["last"]["by"].as_str()), (Some("promoted"), Some("operator")));
    assert_eq!(json(&admin(&server, "GET", "/config", "").await)["picker"]["source"], "builtin:least-conn");
    server.shutdown().await;
}

/// A client that leaves before its answer is no one's failure: neither
/// picker's numbers count it.
#[tokio::test]
async fn requests_the_client_broke_off_count_for_neither_picker() {
    let (a, b) = (backend("a", Duration::from_millis(400)).await, backend("b", Duration::from_millis(400)).await);
    let candidate = "  candidate:\n    source: builtin:least-conn\n    share: 50\n";
    let file = ConfigFile::new("trial", "gone");
    file.write(&config(a.addr(), b.addr(), "builtin:round-robin", candidate));
    let server = start_from(&file).await;
    for _ in 0..20 {
        let gone = tokio::time::timeout(Duration::from_millis(50), get(server.proxy_addr, "/")).await;
        assert!(gone.is_err(), "the client gave up first");
    }
    // The abandoned attempts end at the backends' 400 ms; then nothing may have been counted.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let trial = json(&admin(&server, "GET", "/candidate", "").await)["running"].clone();
    assert_eq!(trial["serving_requests"]["requests"], 0, "{trial}");
    assert_eq!(trial["candidate_requests"]["requests"], 0, "{trial}");
    server.shutdown().await;
}

/// A candidate in the config file is checked like the picker, every
/// problem reported at once, with its place in the file.
#[test]
fn a_bad_candidate_in_the_config_file_is_refused_with_every_problem() {
    let text = "backends:\n  - name: a\n    address: 127.0.0.1:1\npicker:\n  source: builtin:round-robin\n  candidate:\n    source: builtin:nope\n    share: 0\n    promote:\n      min_requests: 0\n      margin: 150\n";
    let errors = veer::config::parse(text, "f", None).unwrap_err().to_string();
    for expected in [
        "f:7:5: picker.candidate.source",
        "f:8:5: picker.candidate.share",
        "f:10:7: picker.candidate.promote.min_requests",
        "f:11:7: picker.candidate.promote.margin",
    ] {
        assert!(errors.contains(expected), "{expected} missing from: {errors}");
    }
    let unknown = "backends:\n  - name: a\n    address: 127.0.0.1:1\npicker:\n  candidate:\n    source: builtin:least-conn\n    share: 5\n    sahre: 5\n";
    assert!(veer::config::parse(unknown, "f", None).is_err(), "an unknown key is refused");
}
