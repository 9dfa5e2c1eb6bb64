//! Routes and upstreams end to end: one veer in front of several services,
//! chosen by host, path, header and method; splits, redirects, direct
//! responses, header edits and rewrites; and reloads that add a route and an
//! upstream under load, or swap one upstream's picker, without touching the
//! rest. Real sockets: veer and simulated backends on 127.0.0.1.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use veer::server::RunningServer;
use veer::sim::{BACKEND_HEADER, PATH_HEADER, SimBackend};
use veer_tests::operator::{ConfigFile, admin, json, sim, start_from};
use veer_tests::{Answer, send};

/// The config's head, then one upstream per `(name, backend)`, each with one
/// backend named after it, then `routes` (YAML, indented as a list under
/// `routes:`). Health checks are off: only the config decides.
fn config(upstreams: &[(&str, &SimBackend)], routes: &str) -> String {
    let mut text = String::from(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nhealth:\n  check:\n    enabled: false\nproxy:\n  workers: 2\nreload:\n  watch: false\nupstreams:\n",
    );
    for (name, backend) in upstreams {
        text.push_str(&format!(
            "  - name: {name}\n    picker:\n      source: builtin:round-robin\n    backends:\n      - name: {name}-1\n        address: {}\n",
            backend.addr()
        ));
    }
    text.push_str("routes:\n");
    text.push_str(routes);
    text
}

async fn request(server: &RunningServer, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut builder = Request::builder().method(method).uri(path).header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(server.proxy_addr, builder.body(Full::new(Bytes::new())).unwrap()).await
}

/// The backend that answered.
fn served_by(answer: &Answer) -> &str {
    answer.headers.get(BACKEND_HEADER).map_or("(veer)", |v| v.to_str().unwrap())
}

const ROUTES: &str = r#"  - name: api-v1
    match:
      hosts: [api.example.com]
      path: { prefix: /v1/ }
    forward: api
    rewrite_prefix: /
    request_headers:
      set: { x-route: api-v1 }
      remove: [x-internal]
    response_headers:
      add: { x-served-by-route: api-v1 }
  - name: api-writes
    match:
      hosts: [api.example.com]
      methods: [POST, PUT]
    forward: writes
  - name: beta
    match:
      headers:
        - { name: x-env, equals: beta }
    forward: beta
  - name: static
    match:
      hosts: ["*.cdn.example.com"]
    forward: static
  - name: old-docs
    match:
      path: { prefix: /old-docs/ }
    redirect: { status: 301, host: docs.example.com, prefix: /docs/ }
  - name: ping
    match:
      path: { exact: /ping }
    respond: { status: 200, body: "pong\n" }
  - name: www
    match:
      hosts: [www.example.com]
    forward: static
"#;

#[tokio::test]
async fn each_request_reaches_the_upstream_its_route_names() {
    let (api, writes, beta, stat) = (sim("api").await, sim("writes").await, sim("beta").await, sim("static").await);
    let file = ConfigFile::new("routes", "match");
    file.write(&config(&[("api", &api), ("writes", &writes), ("beta", &beta), ("static", &stat)], ROUTES));
    let server = start_from(&file).await;

    // Host and path prefix, with the prefix rewritten and headers edited both ways.
    let answer = request(&server, "GET", "api.example.com", "/v1/users?page=2", &[("x-sim-echo-headers", "1")]).await;
    assert_eq!((answer.status, served_by(&answer)), (StatusCode::OK, "api"), "{}", answer.body);
    assert_eq!(answer.headers[PATH_HEADER], "/users?page=2", "the /v1/ prefix is rewritten to /");
    assert_eq!(answer.headers["x-served-by-route"], "api-v1");
    let seen = json(&answer);
    assert_eq!(seen["x-route"], "api-v1", "{seen}");
    let internal =
        request(&server, "GET", "api.example.com", "/v1/", &[("x-sim-echo-headers", "1"), ("x-internal", "1")]);
    assert!(json(&internal.await).get("x-internal").is_none(), "removed before forwarding");

    // Method: writes to the same host go elsewhere; other reads match nothing.
    let answer = request(&server, "POST", "api.example.com", "/orders", &[]).await;
    assert_eq!(served_by(&answer), "writes");
    let answer = request(&server, "GET", "API.EXAMPLE.COM:8443", "/orders", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "no route for a read outside /v1/");
    assert!(answer.body.contains("no route matches GET API.EXAMPLE.COM/orders"), "{}", answer.body);

    // A header, whatever the host; a wildcard host; an exact host.
    assert_eq!(served_by(&request(&server, "GET", "anything.test", "/", &[("x-env", "beta")]).await), "beta");
    assert_eq!(served_by(&request(&server, "GET", "img.cdn.example.com", "/a.png", &[]).await), "static");
    assert_eq!(served_by(&request(&server, "GET", "eu.img.cdn.example.com", "/", &[]).await), "static");
    assert_eq!(request(&server, "GET", "cdn.example.com", "/", &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(served_by(&request(&server, "GET", "www.example.com", "/", &[]).await), "static");

    // veer's own answers: a redirect and a direct response.
    let answer = request(&server, "GET", "www.example.com", "/old-docs/intro?x=1", &[]).await;
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(answer.headers["location"], "http://docs.example.com/docs/intro?x=1");
    let answer = request(&server, "GET", "any.test", "/ping", &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "pong\n"));
    assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(api.stats().requests + writes.stats().requests + beta.stats().requests + stat.stats().requests, 7);
    // Counted by route and upstream; a route's own answers under upstream "-"; a 404 under no route.
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    for series in [
        r#"veer_route_requests_total{class="2xx",route="api-v1",upstream="api"} 2"#,
        r#"veer_route_requests_total{class="2xx",route="static",upstream="static"} 2"#,
        r#"veer_route_requests_total{class="3xx",route="old-docs",upstream="-"} 1"#,
        r#"veer_route_requests_total{class="2xx",route="ping",upstream="-"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_split_gives_each_upstream_its_share() {
    let (stable, canary) = (sim("stable").await, sim("canary").await);
    let file = ConfigFile::new("routes", "split");
    let routes = "  - name: all\n    split:\n      - { upstream: stable, weight: 80 }\n      - { upstream: canary, weight: 20 }\n";
    file.write(&config(&[("stable", &stable), ("canary", &canary)], routes));
    let server = start_from(&file).await;
    let mut served = BTreeMap::new();
    for _ in 0..2000 {
        let answer = request(&server, "GET", "x.test", "/", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        *served.entry(served_by(&answer).to_string()).or_insert(0u32) += 1;
    }
    let canary_share = f64::from(served["canary"]) / 2000.0;
    // 2000 draws of p = 0.2: the standard deviation is 0.009; 0.04 is over four of them.
    assert!((canary_share - 0.2).abs() < 0.04, "{served:?}");
    server.shutdown().await;
}

/// Load on one route while reloads add an upstream and a route to it, then
/// take them away again: no request fails, the new route serves at once, and
/// the untouched upstream keeps its backends' live state.
#[tokio::test]
async fn a_reload_adds_and_removes_an_upstream_and_its_route_under_load_without_failing_a_request() {
    let (api, extra) = (sim("api").await, sim("extra").await);
    let file = ConfigFile::new("routes", "reload");
    let one = config(&[("api", &api)], "  - name: api\n    forward: api\n");
    let two = config(
        &[("api", &api), ("extra", &extra)],
        "  - name: extra\n    match:\n      hosts: [extra.test]\n    forward: extra\n  - name: api\n    forward: api\n",
    );
    file.write(&one);
    let server = Arc::new(start_from(&file).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop, ok, failed) = (server.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = request(&server, "GET", "api.test", "/", &[]).await;
                    let counter = if answer.status == StatusCode::OK { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let api_backend = server.proxy.routes().upstream("api").unwrap().pool.by_name("api-1").unwrap();
    for round in 0..10 {
        file.write(&two);
        let report = json(&admin(&server, "POST", "/reload", "").await);
        assert_eq!(report["upstreams"]["extra"]["status"], "added", "{report}");
        assert_eq!(report["upstreams"]["api"]["status"], "kept", "{report}");
        assert_eq!(report["routes"], serde_json::json!(["extra", "api"]));
        let answer = request(&server, "GET", "extra.test", "/", &[]).await;
        assert_eq!((answer.status, served_by(&answer)), (StatusCode::OK, "extra"), "round {round}");
        file.write(&one);
        let report = json(&admin(&server, "POST", "/reload", "").await);
        assert_eq!(report["upstreams"]["extra"]["status"], "removed", "{report}");
        assert_eq!(served_by(&request(&server, "GET", "extra.test", "/", &[]).await), "api", "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{} ok", ok.load(Ordering::Relaxed));
    assert!(ok.load(Ordering::Relaxed) > 0);
    let still = server.proxy.routes().upstream("api").unwrap().pool.by_name("api-1").unwrap();
    assert!(Arc::ptr_eq(&api_backend, &still), "the kept upstream's backend kept its live state");
    Arc::into_inner(server).unwrap().shutdown().await;
}

/// Changing one upstream's picker swaps that one only: the other keeps its
/// picker instance, and with it what it learned.
#[tokio::test]
async fn a_picker_change_on_one_upstream_leaves_the_others_untouched() {
    let (api, web) = (sim("api").await, sim("web").await);
    let file = ConfigFile::new("routes", "swap");
    let routes =
        "  - name: web\n    match:\n      hosts: [web.test]\n    forward: web\n  - name: api\n    forward: api\n";
    let text = config(&[("api", &api), ("web", &web)], routes);
    file.write(&text);
    let server = start_from(&file).await;
    let web_picker = server.proxy.routes().upstream("web").unwrap().slot.current();
    file.write(&text.replacen("builtin:round-robin", "builtin:least-conn", 1));
    let report = json(&admin(&server, "POST", "/reload", "").await);
    assert_eq!(report["upstreams"]["api"]["picker"]["to"]["name"], "least-conn", "{report}");
    assert!(report["upstreams"]["web"]["picker"].is_null(), "{report}");
    let routes = server.proxy.routes();
    assert_eq!(routes.upstream("api").unwrap().slot.current().info().name, "least-conn");
    assert!(Arc::ptr_eq(&routes.upstream("web").unwrap().slot.current(), &web_picker), "web's picker is untouched");
    assert_eq!(served_by(&request(&server, "GET", "web.test", "/", &[]).await), "web");
    assert_eq!(served_by(&request(&server, "GET", "api.test", "/", &[]).await), "api");
    server.shutdown().await;
}

#[test]
fn routes_that_name_no_upstream_are_refused_at_their_line() {
    let text = "upstreams:\n  - name: api\n    backends:\n      - { name: a, address: 127.0.0.1:1 }\nroutes:\n  - name: r\n    forward: nope\n  - name: r\n    match:\n      path: { regex: \"(\" }\n    respond: { status: 200 }\n";
    let errors = veer::config::parse(text, "veer.yaml", None).unwrap_err().to_string();
    assert!(errors.contains("veer.yaml:7:5: routes[0].forward: no upstream is named \"nope\""), "{errors}");
    assert!(errors.contains("routes[1].name: \"r\" is already the name of route [0]"), "{errors}");
    assert!(errors.contains("routes[1].match.path.regex:"), "{errors}");
    let canary = "backends:\n  - { name: a, address: 127.0.0.1:1 }\ncanary:\n  percent: 5\n  backends:\n    - { name: c, address: 127.0.0.1:2 }\nroutes:\n  - { name: all, forward: default }\n";
    let errors = veer::config::parse(canary, "veer.yaml", None).unwrap_err().to_string();
    assert!(errors.contains("canary: with routes, write the canary as a split route"), "{errors}");
}

/// Waits until `done` holds (checking every 10 ms), at most 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A mirror copies its share of a route's requests to the shadow group, the
/// client sees only the primary's answer, and a dead shadow costs the client
/// nothing: its failures are counted, not returned.
#[tokio::test]
async fn a_mirror_copies_its_share_and_a_dead_one_costs_the_client_nothing() {
    let (api, shadow) = (sim("api").await, sim("shadow").await);
    let dead = sim("dead").await;
    let dead_addr = dead.addr();
    dead.kill().await;
    let file = ConfigFile::new("routes", "mirror");
    let routes = "  - name: all-copied\n    match:\n      hosts: [all.test]\n    forward: api\n    mirror: { upstream: shadow, percent: 100 }\n  - name: half-copied\n    match:\n      hosts: [half.test]\n    forward: api\n    mirror: { upstream: shadow, percent: 50 }\n  - name: to-the-dead\n    forward: api\n    mirror: { upstream: gone, percent: 100 }\n";
    let mut text = config(&[("api", &api), ("shadow", &shadow)], routes);
    text = text.replace(
        "routes:\n",
        &format!("  - name: gone\n    backends:\n      - name: gone-1\n        address: {dead_addr}\nroutes:\n"),
    );
    file.write(&text);
    let server = start_from(&file).await;

    for _ in 0..100 {
        let answer = request(&server, "POST", "all.test", "/orders", &[]).await;
        assert_eq!((answer.status, served_by(&answer)), (StatusCode::OK, "api"), "only the primary answers");
    }
    eventually("100 copies reach the shadow", || shadow.stats().requests == 100).await;
    for _ in 0..400 {
        assert_eq!(request(&server, "GET", "half.test", "/", &[]).await.status, StatusCode::OK);
    }
    eventually("the sampled copies arrive", || {
        let copied = shadow.stats().requests - 100;
        (140..=260).contains(&copied) && shadow.stats().in_flight == 0
    })
    .await;
    for _ in 0..50 {
        let answer = request(&server, "GET", "other.test", "/", &[]).await;
        assert_eq!((answer.status, served_by(&answer)), (StatusCode::OK, "api"), "a dead shadow fails no request");
    }
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    assert!(metrics.contains("veer_mirror_requests_total{result=\"2xx\",route=\"all-copied\"} 100"), "{metrics}");
    let dead_copies = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("veer_mirror_requests_total") && l.contains("route=\"to-the-dead\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert!(dead_copies(&metrics) > 0, "the dead shadow's copies are counted: {metrics}");
    assert_eq!(api.stats().requests, 550);
    server.shutdown().await;
}

/// The admin API lists the upstreams and routes, and swaps, drains and adds
/// on one upstream at a time.
#[tokio::test]
async fn the_admin_api_acts_on_one_upstream_at_a_time() {
    let (api, web, web2) = (sim("api").await, sim("web").await, sim("web2").await);
    let file = ConfigFile::new("routes", "admin");
    let routes =
        "  - name: web\n    match:\n      hosts: [web.test]\n    forward: web\n  - name: api\n    forward: api\n";
    file.write(&config(&[("api", &api), ("web", &web)], routes));
    let server = start_from(&file).await;

    let list = json(&admin(&server, "GET", "/upstreams", "").await);
    let names: Vec<_> = list.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "web"]);
    let routes = json(&admin(&server, "GET", "/routes", "").await);
    assert_eq!(routes[0]["name"], "web");
    assert_eq!(routes[0]["match"]["hosts"][0], "web.test");

    let swap = admin(&server, "PUT", "/upstreams/web/picker", r#"{"source": "builtin:least-conn"}"#).await;
    assert_eq!(swap.status, StatusCode::OK, "{}", swap.body);
    let groups = server.proxy.routes();
    assert_eq!(groups.upstream("web").unwrap().slot.current().info().name, "least-conn");
    assert_eq!(groups.upstream("api").unwrap().slot.current().info().name, "round-robin", "only web swapped");

    let add = format!(r#"{{"name": "web-2", "address": "{}"}}"#, web2.addr());
    assert_eq!(admin(&server, "POST", "/upstreams/web/backends", &add).await.status, StatusCode::CREATED);
    let taken = format!(r#"{{"name": "api-1", "address": "{}"}}"#, web2.addr());
    let conflict = admin(&server, "POST", "/upstreams/web/backends", &taken).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "backend names are unique across upstreams");
    let drained = admin(&server, "POST", "/upstreams/web/backends/web-1/drain", "").await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.body);
    let view = json(&admin(&server, "GET", "/upstreams/web", "").await);
    let drained_flag = |name: &str| {
        view["backends"].as_array().unwrap().iter().find(|b| b["name"] == name).unwrap()["health"]["drained"].clone()
    };
    assert_eq!((drained_flag("web-1"), drained_flag("web-2")), (serde_json::json!(true), serde_json::json!(false)));
    eventually("the drain reaches web's picker", || {
        server.proxy.routes().upstream("web").unwrap().slot.current().membership().eligible().len() == 1
    })
    .await;
    for _ in 0..10 {
        assert_eq!(served_by(&request(&server, "GET", "web.test", "/", &[]).await), "web2");
    }
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    for series in [r#"veer_picker_swaps_total{upstream="web"} 1"#, r#"veer_picker_swaps_total{upstream="api"} 0"#] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    assert!(metrics.contains(r#"veer_picker_info{name="least-conn",source="builtin:least-conn",upstream="web""#));
    let missing = admin(&server, "GET", "/upstreams/nope", "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&missing)["error"], "no upstream named \"nope\"; try GET /upstreams");
    assert_eq!(admin(&server, "POST", "/upstreams/api/backends/nope/drain", "").await.status, StatusCode::NOT_FOUND);

    // One service down keeps veer ready for the others (and says so); all down does not.
    assert_eq!(admin(&server, "POST", "/upstreams/api/backends/api-1/drain", "").await.status, StatusCode::OK);
    let ready = admin(&server, "GET", "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(json(&ready)["degraded"], serde_json::json!(["upstream api: no backend is eligible"]));
    assert_eq!(admin(&server, "POST", "/upstreams/web/backends/web-2/drain", "").await.status, StatusCode::OK);
    let ready = admin(&server, "GET", "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.body);
    server.shutdown().await;
}

/// A picker learns the route and the upstream it picks for (contract 0.1.2):
/// one policy, serving two routes over the same upstream, routes each to the
/// backend named after it.
#[tokio::test]
async fn a_picker_knows_the_route_and_the_upstream() {
    let (first, second, third) = (sim("first").await, sim("second").await, sim("third").await);
    let plugin = veer_tests::hostile_plugin_file("by-route");
    let file = ConfigFile::new("routes", "by-route");
    let text = format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nhealth:\n  check:\n    enabled: false\nreload:\n  watch: false\nupstreams:\n  - name: shared\n    picker:\n      source: {}\n      params: {{ mode: by-route }}\n    backends:\n      - {{ name: one, address: {} }}\n      - {{ name: two, address: {} }}\n      - {{ name: shared, address: {} }}\nroutes:\n  - name: one\n    match: {{ path: {{ prefix: /1 }} }}\n    forward: shared\n  - name: two\n    match: {{ path: {{ prefix: /2 }} }}\n    forward: shared\n  - name: other\n    forward: shared\n",
        plugin.display(),
        first.addr(),
        second.addr(),
        third.addr()
    );
    file.write(&text);
    let server = start_from(&file).await;
    for _ in 0..5 {
        assert_eq!(served_by(&request(&server, "GET", "x.test", "/1", &[]).await), "first");
        assert_eq!(served_by(&request(&server, "GET", "x.test", "/2", &[]).await), "second");
        assert_eq!(served_by(&request(&server, "GET", "x.test", "/3", &[]).await), "third", "by the upstream's name");
    }
    server.shutdown().await;
}

/// A request's timeout comes from its route, else its upstream, else the
/// proxy: a slow backend answers a patient route and times out elsewhere.
#[tokio::test]
async fn timeouts_come_from_the_route_then_the_upstream_then_the_proxy() {
    let spec = veer::sim::SimBackendSpec {
        name: "slow".to_string(),
        profile: veer::sim::BackendProfile::fixed(std::time::Duration::from_millis(400)),
        phases: vec![],
        seed: 1,
    };
    let slow = SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let file = ConfigFile::new("routes", "timeouts");
    let routes = "  - name: patient\n    match: { path: { prefix: /patient } }\n    forward: slow\n    timeout: 5s\n  - name: hasty\n    forward: slow\n";
    let text = config(&[("slow", &slow)], routes).replace(
        "    picker:\n      source: builtin:round-robin\n",
        "    timeout: 100ms\n    retry: { max_attempts: 1 }\n    picker:\n      source: builtin:round-robin\n",
    );
    file.write(&text);
    let server = start_from(&file).await;
    let hasty = request(&server, "GET", "x.test", "/", &[]).await;
    assert_eq!(hasty.status, StatusCode::GATEWAY_TIMEOUT, "the upstream's 100ms: {}", hasty.body);
    let patient = request(&server, "GET", "x.test", "/patient", &[]).await;
    assert_eq!((patient.status, served_by(&patient)), (StatusCode::OK, "slow"), "the route's 5s");
    assert_eq!(slow.stats().requests, 2, "one attempt each: the upstream's retry change");
    server.shutdown().await;
}

/// Each listener routes by its own routes over the same upstreams; a reload
/// adds a listener, and stops one it removes (which then accepts nothing).
#[tokio::test]
async fn listeners_route_on_their_own_and_reloads_add_and_stop_them() {
    let (public, internal) = (sim("public").await, sim("internal").await);
    let file = ConfigFile::new("routes", "listeners");
    let head = config(&[("public", &public), ("internal", &internal)], "  - name: all\n    forward: public\n");
    let with = |names: &[&str]| {
        let mut text = format!("{head}listeners:\n");
        for name in names {
            text.push_str(&format!(
                "  - name: {name}\n    address: 127.0.0.1:0\n    routes:\n      - {{ name: {name}-all, forward: internal }}\n"
            ));
        }
        text
    };
    file.write(&with(&["ops"]));
    let server = start_from(&file).await;
    let on = |address: std::net::SocketAddr, path: &'static str| async move {
        let request = Request::get(path).header("host", "x.test").body(Full::new(Bytes::new())).unwrap();
        send(address, request).await
    };
    let ops = server.proxy.listeners()["ops"];
    assert_eq!(served_by(&on(server.proxy_addr, "/").await), "public");
    assert_eq!(served_by(&on(ops, "/").await), "internal", "the ops listener's own routes");
    let listed = json(&admin(&server, "GET", "/listeners", "").await);
    assert_eq!((&listed[1]["name"], &listed[1]["routes"][0]["name"]), (&"ops".into(), &"ops-all".into()));

    file.write(&with(&["ops", "debug"]));
    let report = json(&admin(&server, "POST", "/reload", "").await);
    assert_eq!(report["listeners"], serde_json::json!({"ops": "kept", "debug": "added"}), "{report}");
    let debug = server.proxy.listeners()["debug"];
    assert_eq!(served_by(&on(debug, "/").await), "internal");
    assert_eq!(server.proxy.listeners()["ops"], ops, "a kept listener keeps its socket");

    file.write(&with(&["debug"]));
    let report = json(&admin(&server, "POST", "/reload", "").await);
    assert_eq!(report["listeners"], serde_json::json!({"debug": "kept", "ops": "removed"}), "{report}");
    eventually("the removed listener stops accepting", || std::net::TcpStream::connect(ops).is_err()).await;
    assert_eq!(served_by(&on(debug, "/").await), "internal");
    assert_eq!(served_by(&on(server.proxy_addr, "/").await), "public");
    server.shutdown().await;
}

#[test]
fn listeners_need_their_own_name_address_and_routes() {
    let text = "listen: 127.0.0.1:8080\nbackends:\n  - { name: a, address: 127.0.0.1:1 }\nlisteners:\n  - name: default\n    address: 127.0.0.1:8080\n    routes: []\n  - name: x\n    address: nowhere\n    routes:\n      - { name: r, forward: nope }\n";
    let errors = veer::config::parse(text, "veer.yaml", None).unwrap_err().to_string();
    for expected in [
        "listeners[0].name: \"default\" is the name of the listener at `listen`",
        "listeners[0].address: 127.0.0.1:8080 is already `listen`'s address",
        "listeners[0].routes: needs at least one route",
        "listeners[1].address: 'nowhere' is not IP:PORT",
        "listeners[1].routes[0].forward: no upstream is named \"nope\"",
    ] {
        assert!(errors.contains(expected), "{expected} in\n{errors}");
    }
}

/// Every upstream's learned picker state survives a restart, each group's in
/// its own file, and a group a reload removes and brings back gets its own.
#[tokio::test]
async fn every_upstreams_learned_state_survives_a_restart_and_a_reload() {
    let (a, b) = (sim("a").await, sim("b").await);
    let dir = std::env::temp_dir().join(format!("veer-routes-{}-state", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plugin = veer_tests::hostile_plugin_file("state");
    let file = ConfigFile::new("routes", "state");
    // The hostile plugin in mode ok exports its pick count as its state (one
    // worker: state is exported from the first worker's instance).
    let upstream = |name: &str, backend: &SimBackend| {
        format!(
            "  - name: {name}\n    picker: {{ source: {}, params: {{ mode: ok }} }}\n    backends:\n      - {{ name: {name}-1, address: {} }}\n",
            plugin.display(),
            backend.addr()
        )
    };
    let head = format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nhealth:\n  check:\n    enabled: false\nproxy:\n  workers: 1\nreload:\n  watch: false\nstate:\n  dir: {}\nupstreams:\n{}",
        dir.display(),
        upstream("one", &a)
    );
    let both = format!(
        "{head}{}routes:\n  - {{ name: b, match: {{ hosts: [b.test] }}, forward: two }}\n  - {{ name: a, forward: one }}\n",
        upstream("two", &b)
    );
    let only_one = format!("{head}routes:\n  - {{ name: a, forward: one }}\n");
    file.write(&both);
    let server = start_from(&file).await;
    for _ in 0..3 {
        request(&server, "GET", "a.test", "/", &[]).await;
    }
    for _ in 0..7 {
        request(&server, "GET", "b.test", "/", &[]).await;
    }
    server.shutdown().await;
    let saved = |group: &str| {
        let text = std::fs::read_to_string(dir.join(group).join("hostile.state")).unwrap();
        text.lines().nth(1).unwrap().parse::<u64>().unwrap()
    };
    // The smoke test at start picks once per group and instance: at least the requests.
    let (one, two) = (saved("one"), saved("two"));
    assert!(one >= 3 && two >= 7 && two > one, "one {one}, two {two}");

    let server = start_from(&file).await;
    let picks = |server: &veer::server::RunningServer, group: &str| {
        let state = server.proxy.routes().upstream(group).unwrap().slot.current().export_state().unwrap();
        String::from_utf8(state).unwrap().parse::<u64>().unwrap()
    };
    assert!(picks(&server, "one") >= one && picks(&server, "two") >= two, "each group imported its own");
    // A reload removes `two` (its state is saved) and brings it back (offered again).
    file.write(&only_one);
    assert_eq!(json(&admin(&server, "POST", "/reload", "").await)["upstreams"]["two"]["status"], "removed");
    let before_removal = saved("two");
    file.write(&both);
    assert_eq!(json(&admin(&server, "POST", "/reload", "").await)["upstreams"]["two"]["status"], "added");
    assert!(picks(&server, "two") >= before_removal, "the re-added group got its state back");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad and hostile input on the new surfaces gets a clear answer and moves
/// nothing: a junk `Host` is echoed nowhere, a client cannot steer a split,
/// a body veer does not hold is never mirrored (so a client's broken upload
/// can never be judged against the shadow), and the per-upstream admin API
/// refuses bad bodies and files outside the plugin directories.
#[tokio::test]
async fn hostile_input_on_routes_mirrors_and_the_upstream_admin_api_is_refused_cleanly() {
    let (api, canary, shadow) = (sim("api").await, sim("canary").await, sim("shadow").await);
    let file = ConfigFile::new("routes", "hostile");
    let routes = "  - name: to-https\n    match: { path: { prefix: /secure } }\n    redirect: { status: 308, scheme: https }\n  - name: uploads\n    match: { path: { prefix: /upload } }\n    forward: api\n    retry: { replay_buffer_bytes: 1024 }\n    mirror: { upstream: shadow, percent: 100 }\n  - name: split\n    split:\n      - { upstream: api, weight: 50 }\n      - { upstream: canary, weight: 50 }\n";
    file.write(&config(&[("api", &api), ("canary", &canary), ("shadow", &shadow)], routes));
    let server = start_from(&file).await;

    // A junk Host: the redirect refuses rather than echo it.
    let answer = request(&server, "GET", "evil.test/x", "/secure", &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(answer.headers.get("location").is_none() && !answer.body.contains("evil"), "{}", answer.body);
    let answer = request(&server, "GET", "shop.test", "/secure", &[]).await;
    assert_eq!(answer.headers["location"], "https://shop.test/secure");

    // The same request id every time: the split is veer's draw, not the client's.
    let mut served = BTreeMap::new();
    for _ in 0..400 {
        let answer = request(&server, "GET", "x.test", "/", &[("x-request-id", "always-the-same")]).await;
        *served.entry(served_by(&answer).to_string()).or_insert(0u32) += 1;
    }
    assert!(served.get("canary").is_some_and(|n| (120..=280).contains(n)), "{served:?}");

    // A body larger than the replay buffer is streamed to one backend: no copy.
    let big = Request::post("/upload").header("host", "x.test").body(Full::new(Bytes::from(vec![b'x'; 64 * 1024])));
    assert_eq!(send(server.proxy_addr, big.unwrap()).await.status, StatusCode::OK);
    let small = Request::post("/upload").header("host", "x.test").body(Full::new(Bytes::from_static(b"ok")));
    assert_eq!(send(server.proxy_addr, small.unwrap()).await.status, StatusCode::OK);
    eventually("the small upload's copy arrives", || shadow.stats().requests == 1).await;
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    assert!(metrics.contains(r#"veer_mirror_requests_total{result="skipped",route="uploads"} 1"#), "{metrics}");

    // The per-upstream admin API: bad bodies, unknown backends, files it may not load.
    for (method, path, body) in [
        ("PUT", "/upstreams/api/picker", "{\"source\": 7}"),
        ("PUT", "/upstreams/api/picker", "not json"),
        ("POST", "/upstreams/api/backends", "{\"name\": \"x\", \"address\": \"nowhere\"}"),
        ("POST", "/upstreams/api/backends", "{\"name\": \"x\", \"address\": \"127.0.0.1:1\", \"weight\": 0}"),
        ("PUT", "/upstreams/api/backends/api-1/weight", "{\"weight\": -1}"),
    ] {
        let answer = admin(&server, method, path, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {path} {body}: {}", answer.body);
    }
    let outside = admin(&server, "PUT", "/upstreams/api/picker", r#"{"source": "/etc/passwd"}"#).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN, "{}", outside.body);
    assert_eq!(server.proxy.routes().upstream("api").unwrap().slot.current().info().name, "round-robin");
    server.shutdown().await;
}

/// A reload whose new listener's address is taken is refused whole: the
/// running listeners, upstreams and routes stay as they were.
#[tokio::test]
async fn a_reload_with_a_listener_on_a_taken_address_changes_nothing() {
    let (api, other) = (sim("api").await, sim("other").await);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file = ConfigFile::new("routes", "taken");
    file.write(&config(&[("api", &api)], "  - name: all\n    forward: api\n"));
    let server = start_from(&file).await;
    let text = config(&[("api", &api), ("other", &other)], "  - name: all\n    forward: other\n");
    let listener = format!(
        "listeners:\n  - name: extra\n    address: {}\n    routes:\n      - {{ name: x, forward: api }}\n",
        taken.local_addr().unwrap()
    );
    file.write(&format!("{text}{listener}"));
    let answer = admin(&server, "POST", "/reload", "").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    assert!(json(&answer)["error"].as_str().unwrap().contains("cannot listen on"), "{}", answer.body);
    assert!(server.proxy.routes().upstream("other").is_none(), "no group was added");
    assert!(!server.proxy.listeners().contains_key("extra"));
    assert_eq!(served_by(&request(&server, "GET", "x.test", "/", &[]).await), "api", "the old routes serve");
    server.shutdown().await;
}
