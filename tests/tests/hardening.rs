//! Hostile and broken clients against a real veer and real backends: no client
//! may change how veer judges a backend, and every refusal is truthful.
//! Assertions are on statuses and counts; waits poll with generous deadlines.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use veer::health::BreakerPhase;
use veer::proxy::ProxyConfig;
use veer::server::RunningServer;
use veer_tests::echo::EchoBackend;
use veer_tests::{send, veer_options};

async fn echo_backends(n: usize) -> Vec<EchoBackend> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(EchoBackend::start().await);
    }
    all
}

async fn start(backends: &[EchoBackend], edit: impl FnOnce(&mut veer::server::ServerOptions)) -> RunningServer {
    let names: Vec<String> = (0..backends.len()).map(|i| format!("e{i}")).collect();
    let targets: Vec<(&str, SocketAddr)> =
        names.iter().map(String::as_str).zip(backends.iter().map(|b| b.addr)).collect();
    let mut options = veer_options(&targets, "builtin:round-robin", ProxyConfig::default());
    edit(&mut options);
    veer::server::start(options).await.unwrap()
}

/// Sends raw bytes and reads what comes back until the connection closes or
/// `wait` passes; returns the answer's text.
async fn raw(address: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Well-behaved clients: sequential GETs until `stop`, counting failures.
fn polite_clients(address: SocketAddr, clients: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinSet<(u64, u64)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let stop = stop.clone();
        set.spawn(async move {
            let client = veer_tests::http1_client();
            let uri: http::Uri = format!("http://{address}/polite").parse().unwrap();
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let request = Request::get(uri.clone()).body(Full::<Bytes>::default()).unwrap();
                match client.request(request).await {
                    Ok(response) if response.status() == StatusCode::OK => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    set
}

async fn finish_polite(stop: Arc<AtomicBool>, mut set: tokio::task::JoinSet<(u64, u64)>) -> (u64, u64) {
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    while let Some(result) = set.join_next().await {
        let (o, f) = result.unwrap();
        ok += o;
        failed += f;
    }
    (ok, failed)
}

/// Every backend eligible, its breaker closed and never opened, nothing ejected.
fn assert_backends_unharmed(server: &RunningServer) {
    for backend in server.proxy.health().snapshot() {
        assert!(backend.eligible, "{} lost eligibility: {backend:?}", backend.name);
        assert_eq!(backend.breaker, BreakerPhase::Closed, "{backend:?}");
        assert_eq!(backend.breaker_opened_total, 0, "{backend:?}");
        assert_eq!(backend.ejections_total, 0, "{backend:?}");
    }
    assert_eq!(server.proxy.metrics().failures_of("backend"), 0, "no failure is the backends'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_the_clients_fault() {
    let backends = echo_backends(3).await;
    let server = start(&backends, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let polite = polite_clients(server.proxy_addr, 4, stop.clone());
    // POST streams its body to a backend; PUT is read into the replay buffer first.
    for method in ["POST", "PUT"] {
        for _ in 0..20 {
            let request = format!("{method} /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
            let answer = raw(server.proxy_addr, request.as_bytes(), Duration::from_secs(10)).await;
            assert_eq!(status_of(&answer), Some(400), "{method}: {answer}");
            assert!(answer.contains("request body is malformed"), "{answer}");
        }
    }
    let (ok, failed) = finish_polite(stop, polite).await;
    assert!(ok > 0);
    assert_eq!(failed, 0, "well-behaved clients saw failures");
    assert_backends_unharmed(&server);
    assert!(server.proxy.metrics().failures_of("client") >= 40);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_are_the_clients_fault() {
    let backends = echo_backends(3).await;
    let server = start(&backends, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let polite = polite_clients(server.proxy_addr, 4, stop.clone());
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..40 {
        let address = server.proxy_addr;
        uploads.spawn(async move {
            let method = if i % 2 == 0 { "POST" } else { "PUT" };
            let mut stream = TcpStream::connect(address).await.unwrap();
            let head = format!("{method} /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&[b'a'; 100]).await.unwrap();
            // Give veer time to start forwarding, then vanish.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(stream);
        });
    }
    while uploads.join_next().await.is_some() {}
    // The abandoned requests finish inside veer: wait for them to be counted.
    let metrics = server.proxy.metrics().clone();
    for _ in 0..200 {
        if metrics.failures_of("client") >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (ok, failed) = finish_polite(stop, polite).await;
    assert!(ok > 0);
    assert_eq!(failed, 0, "well-behaved clients saw failures");
    assert!(metrics.failures_of("client") >= 40, "client faults counted: {}", metrics.failures_of("client"));
    assert_backends_unharmed(&server);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_a_slow_one_is_served() {
    let backends = echo_backends(2).await;
    let server = start(&backends, |options| {
        options.proxy.client_body_timeout = Duration::from_millis(400);
        // Shorter than the slow upload below: the backend's clock starts when the body is complete.
        options.proxy.response_header_timeout = Duration::from_millis(300);
    })
    .await;
    for method in ["POST", "PUT"] {
        let head = format!("{method} /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
        let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'a'; 10]).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status_of(&answer), Some(408), "{method}: {answer}");
    }
    // 1000 bytes in ten pieces, 100 ms apart: slower than the backend's
    // header timeout in total, each pause within the body timeout.
    for method in ["POST", "PUT"] {
        let head = format!("{method} /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
        let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..10 {
            stream.write_all(&[b'a'; 100]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut answer = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert_eq!(status_of(&answer), Some(200), "{method}: {answer}");
        assert!(answer.contains("received 1000 bytes"), "{answer}");
    }
    assert_backends_unharmed(&server);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_without_harming_the_backend() {
    let backends = echo_backends(1).await;
    let server = start(&backends, |options| options.proxy.client_send_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    stream.write_all(b"GET /big?mib=64 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // Read nothing for a while: veer's writes stall, then it gives up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = 0usize;
    let mut buffer = vec![0; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "veer closed the connection");
    assert!(received < 64 << 20, "the response was cut short ({received} bytes)");
    // Others are served meanwhile and afterwards.
    let answer = veer_tests::get(server.proxy_addr, "/after").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_backends_unharmed(&server);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_are_answered_and_never_forwarded() {
    let backends = echo_backends(1).await;
    let server = start(&backends, |options| {
        options.proxy.limits.max_body_bytes = Some(1000);
        options.proxy.limits.max_uri_bytes = 1024;
    })
    .await;
    let address = server.proxy_addr;
    let wait = Duration::from_secs(5);
    let big_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let many_headers =
        format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..150).map(|i| format!("X-{i}: v\r\n")).collect::<String>());
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a 200 KB header", big_header.into_bytes(), 431),
        ("150 header fields", many_headers.into_bytes(), 431),
        ("a 2 KB target", long_uri.into_bytes(), 414),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(), 405),
        ("a declared 2000-byte body", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n".to_vec(), 413),
        (
            "a chunked body over the limit",
            [
                &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n"[..],
                &[b'a'; 2000],
                b"\r\n0\r\n\r\n",
            ]
            .concat(),
            413,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, bytes, expected) in cases {
        let before = backends[0].requests();
        let answer = raw(address, &bytes, wait).await;
        assert_eq!(status_of(&answer), Some(expected), "{what}: {answer}");
        if expected != 413 || what.contains("declared") {
            assert_eq!(backends[0].requests(), before, "{what} reached the backend");
        }
    }
    let ok = raw(address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait).await;
    assert_eq!(status_of(&ok), Some(200), "{ok}");
    assert_backends_unharmed(&server);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_the_excess_and_serve_the_rest() {
    let backends = echo_backends(1).await;
    let server = start(&backends, |options| options.proxy.limits.max_connections_per_client = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.proxy_addr).await.unwrap());
    }
    // Let the acceptor see the held connections before the fifth.
    for _ in 0..200 {
        if server.proxy.connections().open() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = raw(server.proxy_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)).await;
    assert!(answer.is_empty() || status_of(&answer) == Some(429), "{answer}");
    assert_eq!(server.proxy.connections().refused_per_client.load(Ordering::Relaxed), 1);
    // A held connection still works.
    let stream = &mut held[0];
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&answer)), Some(200));
    drop(held);
    // The slots free up again.
    for _ in 0..200 {
        if server.proxy.connections().open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(veer_tests::get(server.proxy_addr, "/").await.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_is_closed_while_idle_keepalive_is_not() {
    let backends = echo_backends(1).await;
    let server = start(&backends, |options| {
        options.proxy.client_header_timeout = Duration::from_millis(300);
        options.proxy.client_idle_timeout = Duration::from_secs(30);
    })
    .await;
    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(server.proxy_addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow head was cut off");
    // A keep-alive connection idle for longer than the header limit survives.
    let mut idle = TcpStream::connect(server.proxy_addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buffer = vec![0; 4096];
    let n = idle.read(&mut buffer).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buffer[..n])), Some(200));
    tokio::time::sleep(Duration::from_millis(900)).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buffer)).await.unwrap().unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buffer[..n])), Some(200));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_with_a_body_is_retried_from_the_replay_buffer() {
    let live = EchoBackend::start().await;
    // A port with nothing listening: every attempt there is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = veer_options(&[("dead", dead), ("live", live.addr)], "builtin:round-robin", ProxyConfig::default());
    let server = veer::server::start(options).await.unwrap();
    let body = Bytes::from(vec![b'p'; 10_000]);
    let served = AtomicU64::new(0);
    for _ in 0..4 {
        let request = Request::put("/item").body(Full::new(body.clone())).unwrap();
        let answer = send(server.proxy_addr, request).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, "received 10000 bytes");
        served.fetch_add(1, Ordering::Relaxed);
    }
    assert!(server.proxy.metrics().retries.get() >= 1, "the dead backend's attempts were retried");
    // Larger than the replay buffer: streamed once, not retried.
    let big = Bytes::from(vec![b'q'; 100 * 1024]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = send(server.proxy_addr, Request::put("/item").body(Full::new(big.clone())).unwrap()).await;
        statuses.push(answer.status.as_u16());
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 502), "{statuses:?}");
    server.shutdown().await;
}

/// The test process's resident memory in KiB (veer runs inside it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs one attack of `tests/h2/hostile_h2.py` (the `h2` package from PyPI;
/// `scripts/test.sh` installs it) and returns its JSON summary.
async fn h2_attack(address: SocketAddr, attack: &str, count: u32) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/h2/hostile_h2.py");
    let output = tokio::process::Command::new("python3")
        .args([script, &address.port().to_string(), attack, &count.to_string()])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{attack}: {}\n(needs the Python package h2: pip install h2; scripts/test.sh installs it)",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http2_clients_leave_veer_serving_with_bounded_memory() {
    let backends = echo_backends(2).await;
    let server = start(&backends, |options| options.proxy.client_body_timeout = Duration::from_secs(1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let polite = polite_clients(server.proxy_addr, 2, stop.clone());
    let before = rss_kib();
    let reset = h2_attack(server.proxy_addr, "rapid-reset", 20_000).await;
    eprintln!("{reset}");
    assert!(
        reset["goaway"].as_u64().is_some() || reset["closed"] == true,
        "veer closes a rapid-reset connection: {reset}"
    );
    assert!(backends.iter().map(EchoBackend::requests).sum::<u64>() < 20_000, "reset streams are not all forwarded");
    let settings = h2_attack(server.proxy_addr, "settings", 5_000).await;
    eprintln!("{settings}");
    let ping = h2_attack(server.proxy_addr, "ping", 5_000).await;
    eprintln!("{ping}");
    let stalled = h2_attack(server.proxy_addr, "stalled-body", 50).await;
    eprintln!("{stalled}");
    assert_eq!(stalled["responses"], 50, "every stalled stream was answered (408): {stalled}");
    let (ok, failed) = finish_polite(stop, polite).await;
    assert!(ok > 0);
    assert_eq!(failed, 0, "well-behaved clients saw failures");
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "memory grew by {grown_mib} MiB");
    // Still serving afterwards, over HTTP/1.1 and HTTP/2.
    assert_eq!(veer_tests::get(server.proxy_addr, "/after").await.status, StatusCode::OK);
    assert_backends_unharmed(&server);
    server.shutdown().await;
}
