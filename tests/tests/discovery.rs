//! Backends by name, against a real DNS server: dnsmasq on 127.0.0.1 at a
//! free port, its records rewritten while a load runs; and backends listed
//! in a file that the test rewrites.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use veer_tests::dnsmasq::Dnsmasq;
use veer_tests::echo::EchoBackend;
use veer_tests::operator::{ConfigFile, admin, json, sim, start_from};
use veer_tests::{get, load};

/// Echo backends on each of `ips`, all on one port (A records carry no port).
async fn on_one_port(ips: &[[u8; 4]]) -> Vec<EchoBackend> {
    'again: for _ in 0..20 {
        let first = EchoBackend::start_on(SocketAddr::from((ips[0], 0))).await.unwrap();
        let port = first.addr.port();
        let mut backends = vec![first];
        for ip in &ips[1..] {
            match EchoBackend::start_on(SocketAddr::from((*ip, port))).await {
                Ok(backend) => backends.push(backend),
                Err(_) => continue 'again,
            }
        }
        return backends;
    }
    panic!("no port free on every address");
}

fn discovery_config(dns: &Dnsmasq) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nreload: {{watch: false}}\n\
         discovery: {{nameservers: [\"127.0.0.1:{}\"], min_ttl: 1s, max_ttl: 2s, timeout: 500ms}}\n\
         health: {{check: {{enabled: false}}}}\npicker: {{source: \"native:round-robin\"}}\n",
        dns.port
    )
}

async fn status(server: &veer::server::RunningServer) -> serde_json::Value {
    json(&admin(server, "GET", "/status", "").await)
}

/// The backend names the source `source` gives now, and whether it is stale.
async fn source(server: &veer::server::RunningServer, source: &str) -> (Vec<String>, bool) {
    let status = status(server).await;
    let entry = status["discovery"].as_array().unwrap().iter().find(|s| s["source"] == source).cloned();
    let entry = entry.unwrap_or_else(|| panic!("no source {source} in {status}"));
    let names = entry["backends"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    (names, entry["stale"].as_bool().unwrap())
}

/// Polls `check` every 50 ms for up to 15 s; returns how long it took.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(15), "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// A–records added and removed under load: no request fails, the new
/// address takes traffic within a TTL or so, the removed one none after its
/// in-flight attempts; the DNS server gone, the last good set stays and
/// says so; back, it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_follow_the_dns_server_under_load_and_survive_its_loss() {
    let backends = on_one_port(&[[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]]).await;
    let port = backends[0].addr.port();
    let mut dns = Dnsmasq::start("a", "127.0.0.2 api.test\n127.0.0.3 api.test\n", &[]).await;
    let file = ConfigFile::new("discovery", "a");
    file.write(&format!("{}backends: [{{name: api, address: \"api.test:{port}\"}}]\n", discovery_config(&dns)));
    let server = start_from(&file).await;
    let mut names = source(&server, "api").await.0;
    names.sort();
    assert_eq!(names, [format!("api@127.0.0.2:{port}"), format!("api@127.0.0.3:{port}")]);

    let load =
        tokio::spawn(load::open_loop(server.proxy_addr, 200.0, Duration::from_secs(6), Duration::from_secs(5), &[]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    dns.write_hosts("127.0.0.3 api.test\n127.0.0.4 api.test\n");
    dns.reread().await;
    let took = eventually("the new address takes traffic", || async { backends[2].requests() > 0 }).await;
    println!("the new address took its first request {took:?} after the records changed (TTL 1 s)");
    let gone = format!("api@127.0.0.2:{port}");
    eventually("the removed address leaves", || async { !source(&server, "api").await.0.contains(&gone) }).await;
    // Attempts already sent to it may finish; none may start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = backends[0].requests();
    let samples = load.await.unwrap();
    assert_eq!(backends[0].requests(), after, "the removed address got requests after it left");
    let failed: Vec<_> = samples.iter().filter(|s| s.status != Some(200)).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), samples.len(), &failed[..1]);
    assert!(backends[2].requests() > 50, "the new address shares the load");

    // The server gone: the last good set keeps serving, and says it is stale.
    dns.stop().await;
    eventually("the source turns stale", || async { source(&server, "api").await.1 }).await;
    let (mut kept, _) = source(&server, "api").await;
    kept.sort();
    assert_eq!(kept, [format!("api@127.0.0.3:{port}"), format!("api@127.0.0.4:{port}")]);
    assert_eq!(get(server.proxy_addr, "/").await.status, 200);
    let entry = status(&server).await["discovery"][0].clone();
    assert!(entry["error"].as_str().unwrap().contains("api.test"), "{entry}");
    let metrics = admin(&server, "GET", "/metrics", "").await.body;
    assert!(metrics.contains("veer_discovery_stale{source=\"api\",upstream=\"default\"} 1"), "{metrics}");
    assert!(metrics.contains("result=\"error\""), "failed refreshes are counted");

    dns.restart(&[]).await;
    eventually("the source recovers", || async { !source(&server, "api").await.1 }).await;
    server.shutdown().await;
}

/// SRV records: each lowest-priority target's port and weight become a
/// backend's; a standby priority is left out; a changed record set is
/// followed.
#[tokio::test]
async fn srv_records_give_ports_and_weights_and_changes_are_followed() {
    let (one, two, three, four) = (sim("one").await, sim("two").await, sim("three").await, sim("four").await);
    let port = |backend: &veer::sim::SimBackend| backend.addr().port();
    let record = |target: &str, port: u16, priority: u8, weight: u16| {
        format!("_http._tcp.svc.test,{target}.test,{port},{priority},{weight}")
    };
    let hosts = "127.0.0.1 one.test\n127.0.0.1 two.test\n127.0.0.1 three.test\n127.0.0.1 four.test\n";
    let records =
        [record("one", port(&one), 0, 1), record("two", port(&two), 0, 3), record("three", port(&three), 1, 1)];
    let mut dns = Dnsmasq::start("srv", hosts, &records.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let file = ConfigFile::new("discovery", "srv");
    file.write(&format!("{}backends: [{{name: svc, address: _http._tcp.svc.test}}]\n", discovery_config(&dns)));
    let server = start_from(&file).await;

    let weights = || async {
        let view = json(&admin(&server, "GET", "/upstreams/default", "").await);
        let mut weights: Vec<(String, u64)> = view["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["name"].as_str().unwrap().to_string(), b["weight"].as_u64().unwrap()))
            .collect();
        weights.sort();
        weights
    };
    let name = |backend: &veer::sim::SimBackend| format!("svc@127.0.0.1:{}", port(backend));
    let mut expected = vec![(name(&one), 1), (name(&two), 3)];
    expected.sort();
    assert_eq!(weights().await, expected, "priority 1 stands by, left out");
    assert_eq!(get(server.proxy_addr, "/").await.status, 200);

    let records = [record("one", port(&one), 0, 1), record("four", port(&four), 0, 2)];
    dns.restart(&records.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut expected = vec![(name(&one), 1), (name(&four), 2)];
    expected.sort();
    eventually("the new SRV set is applied", || async { weights().await == expected }).await;
    server.shutdown().await;
}

/// A name that never resolved refuses a start and a reload, naming the
/// entry; the running config keeps serving.
#[tokio::test]
async fn a_name_that_never_resolved_refuses_start_and_reload() {
    let dns = Dnsmasq::start("never", "127.0.0.1 known.test\n", &[]).await;
    let backend = sim("fixed").await;
    let file = ConfigFile::new("discovery", "never");
    file.write(&format!("{}backends: [{{name: ghost, address: \"ghost.test:80\"}}]\n", discovery_config(&dns)));
    let options = veer::config::load(&file.0).unwrap().options;
    let error = veer::server::start(options).await.unwrap_err().to_string();
    assert!(error.contains("backend ghost (ghost.test:80)") && error.contains("ghost.test"), "{error}");

    let fixed = format!("{}backends:\n  - {{name: fixed, address: \"{}\"}}\n", discovery_config(&dns), backend.addr());
    file.write(&fixed);
    let server = start_from(&file).await;
    file.write(&format!("{fixed}  - {{name: ghost, address: \"ghost.test:80\"}}\n"));
    let answer = admin(&server, "POST", "/reload", "").await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(answer.body.contains("ghost.test"), "{}", answer.body);
    assert_eq!(get(server.proxy_addr, "/").await.status, 200, "the running config keeps serving");
    server.shutdown().await;
}

/// An upstream's backends from a file: a rewrite is applied like a reload
/// of that upstream; a broken rewrite keeps the last good set.
#[tokio::test]
async fn a_backends_file_is_watched_and_a_broken_one_keeps_the_last_good_set() {
    let (a, b) = (sim("file-a").await, sim("file-b").await);
    let listing = ConfigFile::new("discovery", "listing");
    listing.write(&format!("backends:\n  - {{name: a, address: \"{}\"}}\n", a.addr()));
    let file = ConfigFile::new("discovery", "file");
    file.write(&format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nreload: {{watch: false, poll_interval: 100ms}}\n\
         health: {{check: {{enabled: false}}}}\n\
         upstreams: [{{name: app, backends_file: \"{}\", picker: {{source: \"native:round-robin\"}}}}]\n\
         routes: [{{name: all, forward: app}}]\n",
        listing.0.display()
    ));
    let server = start_from(&file).await;
    let label = listing.0.display().to_string();
    assert_eq!(source(&server, &label).await, (vec!["a".to_string()], false));

    listing.write(&format!(
        "[{{\"name\": \"a\", \"address\": \"{}\"}}, {{\"name\": \"b\", \"address\": \"{}\", \"weight\": 2}}]",
        a.addr(),
        b.addr()
    ));
    eventually("the rewrite is applied", || async { source(&server, &label).await.0.len() == 2 }).await;
    let view = json(&admin(&server, "GET", "/upstreams/app", "").await);
    assert_eq!(view["backends"].as_array().unwrap().len(), 2, "{view}");

    listing.write("backends: [{name: c, address: nowhere}]");
    eventually("the broken file is noticed", || async { source(&server, &label).await.1 }).await;
    assert_eq!(source(&server, &label).await.0, ["a", "b"], "the last good set stays");
    let error = status(&server).await["discovery"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("not IP:PORT"), "{error}");
    for _ in 0..4 {
        assert_eq!(get(server.proxy_addr, "/").await.status, 200);
    }
    server.shutdown().await;
}
