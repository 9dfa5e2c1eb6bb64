//! The control plane end to end: config files, hot reload, the admin API and
//! its token, and picker swaps and reloads under concurrent load.
//!
//! Assertions are on what clients and the admin API see (statuses, counts),
//! never on wall-clock timings.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use veer::server::RunningServer;
use veer_tests::operator::{ConfigFile, admin, json, sim, start_from};
use veer_tests::{Answer, get, send};

/// Config text for `backends` (name, address), routed by `picker`. Health
/// checks are off so that only the config decides the backend set.
fn config(backends: &[(&str, SocketAddr)], picker: &str) -> String {
    let mut text = format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\npicker:\n  source: {picker}\nhealth:\n  check:\n    enabled: false\nproxy:\n  workers: 1\nreload:\n  watch: false\nbackends:\n"
    );
    for (name, address) in backends {
        text.push_str(&format!("  - name: {name}\n    address: {address}\n"));
    }
    text
}

fn backend_names(server: &RunningServer) -> Vec<String> {
    server.proxy.pool().all().iter().map(|b| b.spec.name.clone()).collect()
}

#[tokio::test]
async fn a_broken_config_is_refused_with_every_problem_and_the_running_one_keeps_serving() {
    let (a, b) = (sim("a").await, sim("b").await);
    let file = ConfigFile::new("control", "broken");
    file.write(&config(&[("a", a.addr())], "builtin:round-robin"));
    let server = start_from(&file).await;
    assert_eq!(get(server.proxy_addr, "/").await.status, StatusCode::OK);

    // Two problems at once: a duplicate name and a bad weight.
    file.write(&format!(
        "{}  - name: a\n    address: {}\n    weight: 0\n",
        config(&[("a", a.addr())], "builtin:round-robin"),
        b.addr()
    ));
    let refused = admin(&server, "POST", "/reload", "").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    let problems = json(&refused)["problems"].as_array().unwrap().clone();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains("backends[1].name")), "{problems:?}");
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains("backends[1].weight")), "{problems:?}");
    assert_eq!(backend_names(&server), ["a"]);
    assert_eq!(get(server.proxy_addr, "/").await.status, StatusCode::OK);

    // Unparseable YAML, and a picker that does not exist: refused as well.
    file.write("backends: [\n");
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::UNPROCESSABLE_ENTITY);
    file.write(&config(&[("a", a.addr())], "builtin:nope"));
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(get(server.proxy_addr, "/").await.status, StatusCode::OK);
    assert_eq!(server.reloader.rejected(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_unchanged_backends_live_state_and_applies_the_rest() {
    let (a, b, c) = (sim("a").await, sim("b").await, sim("c").await);
    let file = ConfigFile::new("control", "diff");
    file.write(&config(&[("a", a.addr()), ("b", b.addr())], "builtin:round-robin"));
    let server = start_from(&file).await;
    for _ in 0..10 {
        assert_eq!(get(server.proxy_addr, "/").await.status, StatusCode::OK);
    }
    let before = server.proxy.pool().by_name("a").unwrap();
    let requests_before = before.snapshot().requests;
    assert!(requests_before > 0);

    // a stays (weight changes in place), b goes, c arrives, the picker changes.
    let mut text = config(&[("c", c.addr())], "builtin:least-conn");
    text.push_str(&format!("  - name: a\n    address: {}\n    weight: 4\n", a.addr()));
    file.write(&text);
    let answer = admin(&server, "POST", "/reload", "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let report = json(&answer);
    assert_eq!(report["added"], serde_json::json!(["c"]));
    assert_eq!(report["removed"], serde_json::json!(["b"]));
    assert_eq!(report["reweighted"], serde_json::json!(["a"]));
    assert_eq!(report["picker"]["to"]["name"], "least-conn");

    let after = server.proxy.pool().by_name("a").unwrap();
    assert!(Arc::ptr_eq(&before, &after), "backend a is the same live object");
    assert!(after.snapshot().requests >= requests_before);
    assert_eq!(after.weight(), 4);
    let mut names = backend_names(&server);
    names.sort();
    assert_eq!(names, ["a", "c"]);

    // The effective config shows what is live.
    let effective = json(&admin(&server, "GET", "/config", "").await);
    assert_eq!(effective["picker"]["source"], "builtin:least-conn");
    assert_eq!(effective["backends"].as_array().unwrap().len(), 2);

    // A changed listener cannot be applied live: it is reported, not ignored.
    file.write(&text.replace("listen: 127.0.0.1:0\nadmin", "listen: 127.0.0.1:1\nadmin"));
    let answer = admin(&server, "POST", "/reload", "").await;
    assert_eq!(json(&answer)["restart_required"], serde_json::json!(["listen"]), "{}", answer.body);
    server.shutdown().await;
}

#[tokio::test]
async fn backends_are_added_reweighted_and_removed_through_the_admin_api() {
    let (a, b) = (sim("a").await, sim("b").await);
    let server = veer_tests::start_veer(&[("a", a.addr())], "builtin:round-robin", Default::default()).await;
    let added =
        admin(&server, "POST", "/backends", &format!(r#"{{"name": "b", "address": "{}", "weight": 2}}"#, b.addr()))
            .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let again = admin(&server, "POST", "/backends", &format!(r#"{{"name": "b", "address": "{}"}}"#, b.addr())).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let bad = admin(&server, "POST", "/backends", r#"{"name": "x", "address": "nowhere"}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(json(&bad)["error"].as_str().unwrap().contains("IP:PORT"));

    let reweighted = admin(&server, "PUT", "/backends/b/weight", r#"{"weight": 7}"#).await;
    assert_eq!(reweighted.status, StatusCode::OK, "{}", reweighted.body);
    assert_eq!(server.proxy.pool().by_name("b").unwrap().weight(), 7);
    let listed = json(&admin(&server, "GET", "/backends", "").await);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    assert_eq!(admin(&server, "DELETE", "/backends/a", "").await.status, StatusCode::OK);
    assert_eq!(admin(&server, "DELETE", "/backends/a", "").await.status, StatusCode::NOT_FOUND);
    assert_eq!(backend_names(&server), ["b"]);
    // The pickers hear of membership changes from the group's owner task, a
    // moment after the admin call returns (longer on a loaded machine).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while get(server.proxy_addr, "/").await.status != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "b never served after a left");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(get(server.proxy_addr, "/").await.status, StatusCode::OK);
    }
    assert!(server.proxy.pool().by_name("b").unwrap().snapshot().requests >= 5);

    let selftest = admin(&server, "POST", "/selftest", "").await;
    assert_eq!(selftest.status, StatusCode::OK, "{}", selftest.body);
    assert_eq!(json(&admin(&server, "GET", "/ejected", "").await), serde_json::json!([]));
    // No config file: a reload says so.
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::CONFLICT);
    server.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_refuses_non_loopback_without_a_token_and_checks_the_token() {
    let a = sim("a").await;
    let mut options = veer_tests::veer_options(&[("a", a.addr())], "builtin:round-robin", Default::default());
    options.admin = Some("0.0.0.0:0".parse().unwrap());
    let refused = veer::server::start(options.clone()).await.unwrap_err();
    assert!(matches!(refused, veer::server::StartError::AdminWithoutToken(_)), "{refused}");

    options.control.admin_token = Some("s3cret".to_string());
    let server = veer::server::start(options).await.unwrap();
    let port = server.admin_addr.unwrap().port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let request = |token: Option<&str>| {
        let mut builder = Request::get("/status");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Full::new(Bytes::new())).unwrap()
    };
    assert_eq!(send(address, request(None)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(address, request(Some("s3cre"))).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(address, request(Some("s3cret!"))).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(address, request(Some("s3cret"))).await.status, StatusCode::OK);
    // Probes (a kubelet's, a load balancer's) need no token, and learn only the status.
    for path in ["/healthz", "/readyz"] {
        let answer = send(address, Request::get(path).body(Full::new(Bytes::new())).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert!(answer.body.contains("\"status\""), "{path}: {}", answer.body);
    }
    let answer = send(address, Request::post("/readyz").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "only GET is open");
    server.shutdown().await;

    // The same rule in a config file is a validation problem.
    let errors = veer::config::parse(
        "admin:\n  listen: 0.0.0.0:9901\nbackends:\n  - name: a\n    address: 127.0.0.1:1\n",
        "f",
        None,
    )
    .unwrap_err();
    if std::env::var(veer::config::ADMIN_TOKEN_ENV).is_err() {
        assert!(errors.to_string().contains("f:2:3: admin.listen"), "{errors}");
    }
}

#[tokio::test]
async fn the_config_file_is_reloaded_when_it_changes() {
    let (a, b) = (sim("a").await, sim("b").await);
    let file = ConfigFile::new("control", "watch");
    let text =
        config(&[("a", a.addr())], "builtin:round-robin").replace("watch: false", "watch: true\n  poll_interval: 20ms");
    file.write(&text);
    let server = start_from(&file).await;
    assert!(server.reloader.config_file().is_some());
    file.write(&format!("{text}  - name: b\n    address: {}\n", b.addr()));
    for _ in 0..500 {
        if server.reloader.reloads() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!((server.reloader.reloads(), server.reloader.rejected()), (1, 0));
    assert_eq!(backend_names(&server).len(), 2);
    server.shutdown().await;
}

/// The closing claim: 1000 picker swaps and 100 reloads while clients hammer
/// veer, and not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_swaps_and_a_hundred_reloads_under_load_fail_no_request() {
    let (a, b, c) = (sim("a").await, sim("b").await, sim("c").await);
    let file = ConfigFile::new("control", "load");
    let two = config(&[("a", a.addr()), ("b", b.addr())], "builtin:round-robin");
    let three = format!("{two}  - name: c\n    address: {}\n", c.addr());
    file.write(&two);
    let server = Arc::new(start_from(&file).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (server, stop, ok, failed) = (server.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let client = veer_tests::http1_client();
                let uri: http::Uri = format!("http://{}/", server.proxy_addr).parse().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match client.get(uri.clone()).await {
                        Ok(response) if response.status() == StatusCode::OK => {
                            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            eprintln!("failed: {}", response.status());
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            eprintln!("failed: {error}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let pickers = ["builtin:round-robin", "builtin:least-conn", "builtin:p2c-ewma", "builtin:weighted-rr"];
    let (swaps, reloads) = (1000, 100);
    for i in 0..swaps {
        let slot = server.proxy.slot().clone();
        let source = veer::plugin::PluginSource::parse(pickers[i % pickers.len()]);
        tokio::task::spawn_blocking(move || slot.swap(&source, vec![])).await.unwrap().unwrap();
        if i % (swaps / reloads) == 0 {
            // Alternate between two and three backends, so each reload changes membership.
            file.write(if (i / (swaps / reloads)) % 2 == 0 { &three } else { &two });
            server.reloader.reload_file().await.unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "swap-under-load: {swaps} swaps, {} reloads, {ok} requests ok, {failed} failed",
        server.reloader.reloads()
    );
    assert_eq!(failed, 0);
    assert!(ok > 0);
    assert_eq!(server.reloader.reloads(), reloads as u64);
    assert!(server.proxy.slot().swaps() >= swaps as u64);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test]
async fn learned_picker_state_survives_a_restart() {
    let (a, b) = (sim("a").await, sim("b").await);
    let dir = std::env::temp_dir().join(format!("veer-control-{}-state", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = || {
        let mut options =
            veer_tests::veer_options(&[("a", a.addr()), ("b", b.addr())], "builtin:q-learning", Default::default());
        options.control.state_dir = Some(dir.clone());
        options
    };
    let first = veer::server::start(options()).await.unwrap();
    assert_eq!(first.restored_state, None, "nothing saved yet");
    for _ in 0..50 {
        assert_eq!(get(first.proxy_addr, "/").await.status, StatusCode::OK);
    }
    first.shutdown().await;
    let saved = std::fs::read(dir.join("q-learning.state")).unwrap();
    assert!(saved.starts_with(b"veer-picker-state 1 q-learning "), "{:?}", String::from_utf8_lossy(&saved));

    let second = veer::server::start(options()).await.unwrap();
    assert!(
        matches!(second.restored_state, Some(veer::plugin::HandoffResult::Imported { bytes }) if bytes > 0),
        "{:?}",
        second.restored_state
    );
    assert_eq!(get(second.proxy_addr, "/").await.status, StatusCode::OK);
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sticky_sessions_hold_across_picker_swaps_and_fall_back_when_the_backend_leaves() {
    let (a, b, c) = (sim("a").await, sim("b").await, sim("c").await);
    let proxy = veer::proxy::ProxyConfig { sticky: Some(Default::default()), ..Default::default() };
    let server =
        veer_tests::start_veer(&[("a", a.addr()), ("b", b.addr()), ("c", c.addr())], "builtin:round-robin", proxy)
            .await;
    let served_by = |answer: &Answer| answer.headers[veer::sim::BACKEND_HEADER].to_str().unwrap().to_string();
    let with_cookie = |cookie: &str| {
        Request::get("/").header("cookie", format!("other=1; {cookie}")).body(Full::new(Bytes::new())).unwrap()
    };

    let first = get(server.proxy_addr, "/").await;
    let cookie = first.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("veer_sticky="), "{cookie}");
    let home = served_by(&first);
    let pickers = ["builtin:least-conn", "builtin:p2c-ewma", "builtin:round-robin", "builtin:weighted-rr"];
    for i in 0..40 {
        if i % 10 == 0 {
            let slot = server.proxy.slot().clone();
            let source = veer::plugin::PluginSource::parse(pickers[i / 10]);
            tokio::task::spawn_blocking(move || slot.swap(&source, vec![])).await.unwrap().unwrap();
        }
        let answer = send(server.proxy_addr, with_cookie(&cookie)).await;
        assert_eq!(served_by(&answer), home, "request {i} left its backend");
        assert!(!answer.headers.contains_key("set-cookie"), "the cookie is only set when it changes");
    }

    // Its backend is drained: the picker chooses another, and the cookie follows.
    assert!(server.proxy.health().set_drained(&home, true).is_some());
    let moved = send(server.proxy_addr, with_cookie(&cookie)).await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_ne!(served_by(&moved), home);
    let new_cookie = moved.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert_ne!(new_cookie, cookie);
    let new_home = served_by(&moved);
    for _ in 0..10 {
        assert_eq!(served_by(&send(server.proxy_addr, with_cookie(&new_cookie)).await), new_home);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_consistent_hash_builtin_keeps_a_header_on_its_backend_when_another_leaves() {
    let (a, b, c) = (sim("a").await, sim("b").await, sim("c").await);
    let mut options = veer_tests::veer_options(
        &[("a", a.addr()), ("b", b.addr()), ("c", c.addr())],
        "builtin:consistent-hash",
        Default::default(),
    );
    options.params = vec![("header".to_string(), "x-user".to_string())];
    let server = veer::server::start(options).await.unwrap();
    let as_user = |user: &str| Request::get("/").header("x-user", user).body(Full::new(Bytes::new())).unwrap();
    let served_by = |answer: Answer| answer.headers[veer::sim::BACKEND_HEADER].to_str().unwrap().to_string();
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let mut home = std::collections::BTreeMap::new();
    for user in &users {
        home.insert(user.clone(), served_by(send(server.proxy_addr, as_user(user)).await));
    }
    let homes: std::collections::BTreeSet<_> = home.values().cloned().collect();
    assert!(homes.len() > 1, "30 users spread over more than one backend: {home:?}");
    for user in &users {
        assert_eq!(served_by(send(server.proxy_addr, as_user(user)).await), home[user]);
    }
    // One backend leaves: only its users move.
    let gone = home["user-0"].clone();
    assert_eq!(server.proxy.health().remove(&[gone.as_str()]).len(), 1);
    for user in &users {
        let now = served_by(send(server.proxy_addr, as_user(user)).await);
        if home[user] == gone {
            assert_ne!(now, gone);
        } else {
            assert_eq!(now, home[user], "{user} stayed on a backend that did not leave");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_canary_gets_its_share_of_traffic_only_for_matching_requests_and_follows_the_admin_api() {
    let (a, b, next) = (sim("a").await, sim("b").await, sim("next").await);
    let file = ConfigFile::new("control", "canary");
    file.write(&format!(
        "{}canary:\n  percent: 20\n  header:\n    name: x-canary\n    value: \"yes\"\n  backends:\n    - name: next\n      address: {}\n  picker:\n    source: builtin:least-conn\n",
        config(&[("a", a.addr()), ("b", b.addr())], "builtin:round-robin"),
        next.addr()
    ));
    let server = start_from(&file).await;
    let served_by = |answer: &Answer| answer.headers[veer::sim::BACKEND_HEADER].to_str().unwrap().to_string();
    let request = |canary: bool| {
        let mut builder = Request::get("/");
        if canary {
            builder = builder.header("x-canary", "yes");
        }
        builder.body(Full::new(Bytes::new())).unwrap()
    };
    let count = |answers: &[Answer]| answers.iter().filter(|a| served_by(a) == "next").count();

    // Without the header: never the canary.
    let mut plain = Vec::new();
    for _ in 0..100 {
        plain.push(send(server.proxy_addr, request(false)).await);
    }
    assert_eq!(count(&plain), 0);
    // With it: about 20% (veer draws each request's group; 1000 requests, wide tolerance).
    let mut matching = Vec::new();
    for _ in 0..1000 {
        matching.push(send(server.proxy_addr, request(true)).await);
    }
    assert!(matching.iter().all(|a| a.status == StatusCode::OK));
    let share = count(&matching);
    assert!((120..=280).contains(&share), "{share} of 1000 went to the canary");
    // A client cannot pick its group with its own request id.
    let mut same_id = Vec::new();
    for _ in 0..200 {
        let mut chosen = request(true);
        chosen.headers_mut().insert("x-request-id", http::HeaderValue::from_static("pick-the-canary"));
        same_id.push(send(server.proxy_addr, chosen).await);
    }
    let share = count(&same_id);
    assert!((10..=90).contains(&share), "{share} of 200 with one request id went to the canary");

    let status = json(&admin(&server, "GET", "/canary", "").await);
    assert_eq!(status["picker"]["name"], "least-conn");
    assert_eq!(status["split"]["percent"], 20.0);
    // The canary's backends have their live gauges in /metrics like the main group's.
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    assert!(metrics.contains(r#"veer_backend_eligible{backend="next"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"veer_backend_in_flight{backend="next"} 0"#), "{metrics}");

    // The admin API sends everything matching, then nothing.
    let all =
        admin(&server, "PUT", "/canary", r#"{"percent": 100, "header": {"name": "x-canary", "value": "yes"}}"#).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    for _ in 0..20 {
        assert_eq!(served_by(&send(server.proxy_addr, request(true)).await), "next");
    }
    assert_eq!(admin(&server, "PUT", "/canary", r#"{"percent": 140}"#).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(admin(&server, "DELETE", "/canary", "").await.status, StatusCode::OK);
    for _ in 0..20 {
        assert_ne!(served_by(&send(server.proxy_addr, request(true)).await), "next");
    }
    // The effective config shows the canary as it is now.
    let effective = json(&admin(&server, "GET", "/config", "").await);
    assert_eq!(effective["canary"]["percent"], 0.0);
    assert_eq!(effective["canary"]["backends"][0]["name"], "next");

    // A reload sets the split and swaps the canary's picker; the main group is untouched.
    file.write(&format!(
        "{}canary:\n  percent: 100\n  backends:\n    - name: next\n      address: {}\n  picker:\n    source: builtin:p2c-ewma\n",
        config(&[("a", a.addr()), ("b", b.addr())], "builtin:round-robin"),
        next.addr()
    ));
    let reloaded = admin(&server, "POST", "/reload", "").await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.body);
    let report = json(&reloaded);
    assert_eq!(report["canary"]["picker"]["to"]["name"], "p2c-ewma");
    assert_eq!(report["canary"]["backends"]["unchanged"], serde_json::json!(["next"]));
    assert_eq!(report["picker"], serde_json::Value::Null);
    assert_eq!(served_by(&send(server.proxy_addr, request(false)).await), "next", "no header needed now");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_of_one_name_create_one_backend() {
    let (a, b) = (sim("a").await, sim("b").await);
    let server = veer_tests::start_veer(&[("a", a.addr())], "builtin:round-robin", Default::default()).await;
    let admin_addr = server.admin_addr.unwrap();
    for round in 0..10 {
        let name = format!("dup{round}");
        let body = format!(r#"{{"name": "{name}", "address": "{}"}}"#, b.addr());
        let adds: Vec<_> = (0..16)
            .map(|_| {
                let body = body.clone();
                tokio::spawn(async move {
                    let request = Request::post("/backends").body(Full::new(Bytes::from(body))).unwrap();
                    send(admin_addr, request).await.status
                })
            })
            .collect();
        let mut created = 0;
        for add in adds {
            match add.await.unwrap() {
                StatusCode::CREATED => created += 1,
                StatusCode::CONFLICT => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(created, 1, "round {round}: exactly one add wins");
        assert_eq!(backend_names(&server).iter().filter(|n| **n == name).count(), 1, "round {round}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_loads_components_only_from_plugin_directories() {
    let a = sim("a").await;
    let dir = std::env::temp_dir().join(format!("veer-plugin-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("affinity.wasm"), veer_tests::AFFINITY_EXAMPLE).unwrap();
    std::fs::write(dir.join("not-a-component.wasm"), "root:x:0:0:secret\n").unwrap();
    let mut options = veer_tests::veer_options(&[("a", a.addr())], "builtin:round-robin", Default::default());
    options.control.plugin_dirs = vec![dir.clone()];
    let server = veer::server::start(options).await.unwrap();
    for outside in ["/etc/passwd", "/nonexistent/x.wasm", &format!("{}/../../etc/passwd", dir.display())] {
        let answer = admin(&server, "PUT", "/picker", &format!(r#"{{"source": "{outside}"}}"#)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{outside}: {}", answer.body);
        assert!(!answer.body.contains("root:"), "nothing of the file is echoed: {}", answer.body);
    }
    let inside = dir.join("not-a-component.wasm");
    let answer = admin(&server, "PUT", "/picker", &format!(r#"{{"source": "{}"}}"#, inside.display())).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    assert!(!answer.body.contains("secret") && !answer.body.contains("0x72"), "{}", answer.body);
    assert_eq!(server.proxy.slot().current().info().source, "builtin:round-robin", "the old picker serves on");
    let good = dir.join("affinity.wasm");
    let answer = admin(
        &server,
        "PUT",
        "/picker",
        &format!(r#"{{"source": "{}", "params": {{"header": "x-user"}}}}"#, good.display()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let builtin = admin(&server, "PUT", "/picker", r#"{"source": "builtin:least-conn"}"#).await;
    assert_eq!(builtin.status, StatusCode::OK, "{}", builtin.body);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
