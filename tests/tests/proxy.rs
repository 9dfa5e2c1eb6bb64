//! The data path end to end: real veer, real simulated backends, real sockets
//! on 127.0.0.1, assertions on what a client sees.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veer::proxy::{ProxyConfig, RetryPolicy};
use veer::sim::{BackendProfile, FailureKind, Latency, SimBackend, SimBackendSpec};
use veer_tests::{get, send, start_veer};

fn profile(latency_ms: u64) -> BackendProfile {
    BackendProfile {
        latency: Latency::Fixed(Duration::from_millis(latency_ms)),
        error_rate: 0.0,
        error_kind: FailureKind::Status500,
        capacity: None,
    }
}

async fn sim(name: &str, profile: BackendProfile) -> SimBackend {
    let spec = SimBackendSpec { name: name.to_string(), profile, phases: vec![], seed: 7 };
    SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn sims(n: usize, latency_ms: u64) -> Vec<SimBackend> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(sim(&format!("s{i}"), profile(latency_ms)).await);
    }
    all
}

fn targets(sims: &[SimBackend]) -> Vec<(String, SocketAddr)> {
    sims.iter().map(|s| (s.name().to_string(), s.addr())).collect()
}

fn named(targets: &[(String, SocketAddr)]) -> Vec<(&str, SocketAddr)> {
    targets.iter().map(|(n, a)| (n.as_str(), *a)).collect()
}

/// Sends `n` GETs and counts answers per `x-sim-backend`.
async fn spread(proxy: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let answer = get(proxy, "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let backend = answer.headers["x-sim-backend"].to_str().unwrap().to_string();
        *counts.entry(backend).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_strategy_serves_every_request_and_uses_every_backend() {
    let backends = sims(3, 1).await;
    let targets = targets(&backends);
    for picker in [
        "builtin:round-robin",
        "builtin:least-conn",
        "builtin:weighted-rr",
        "builtin:p2c-ewma",
        "builtin:q-learning",
        "native:round-robin",
    ] {
        let veer = start_veer(&named(&targets), picker, ProxyConfig::default()).await;
        let counts = spread(veer.proxy_addr, 150).await;
        assert_eq!(counts.values().sum::<usize>(), 150, "{picker}: {counts:?}");
        assert_eq!(counts.len(), 3, "{picker} used every backend: {counts:?}");
        if picker.ends_with("round-robin") {
            // Each data-path worker cycles on its own instance (as Envoy's
            // per-worker balancers do): exact per worker, so overall no
            // backend is more than one request per worker off another.
            let workers = ProxyConfig::default().workers;
            let (most, least) = (counts.values().max().unwrap(), counts.values().min().unwrap());
            assert!(most - least <= workers, "{picker} takes turns on each of {workers} workers: {counts:?}");
        }
        let stats = veer.proxy.slot().current().stats();
        assert_eq!(stats.fallbacks, 0, "{picker}: {stats:?}");
        veer.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_strategies_prefer_the_fast_backend() {
    // Kept alive for the whole test: dropping the last handle stops a sim backend.
    let backends = vec![sim("fast", profile(1)).await, sim("slow", profile(40)).await];
    let targets = targets(&backends);
    for picker in ["builtin:p2c-ewma", "builtin:q-learning", "builtin:least-conn"] {
        let veer = start_veer(&named(&targets), picker, ProxyConfig::default()).await;
        // Concurrency makes the difference visible to least-conn too.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let address = veer.proxy_addr;
            tasks.push(tokio::spawn(async move { spread(address, 40).await }));
        }
        let mut counts = BTreeMap::<String, usize>::new();
        for task in tasks {
            for (k, v) in task.await.unwrap() {
                *counts.entry(k).or_default() += v;
            }
        }
        let fast_share = counts.get("fast").copied().unwrap_or(0) as f64 / 320.0;
        assert!(fast_share > 0.6, "{picker} sent {fast_share:.2} to the fast backend: {counts:?}");
        veer.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_rewritten_as_a_proxy_must() {
    let backends = sims(1, 0).await;
    let targets = targets(&backends);
    let veer = start_veer(&named(&targets), "builtin:round-robin", ProxyConfig::default()).await;
    let request = Request::get("/echo")
        .header("x-sim-echo-headers", "1")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "10.1.1.1")
        .header("x-kept", "yes")
        .body(Full::default())
        .unwrap();
    let answer = send(veer.proxy_addr, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen: BTreeMap<String, String> = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(seen["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert!(seen["x-forwarded-host"].starts_with("127.0.0.1:"));
    assert_eq!(seen["via"], "1.1 veer");
    assert_eq!(seen["x-kept"], "yes");
    assert!(!seen.contains_key("x-drop-me"), "{seen:?}");
    assert!(!seen.contains_key("keep-alive"), "{seen:?}");
    let id = answer.headers["x-request-id"].to_str().unwrap();
    assert_eq!(seen["x-request-id"], id, "the backend saw the id the client got");
    assert_eq!(answer.headers["via"], "1.1 veer");

    let request = Request::get("/").header("x-request-id", "client-chosen-id").body(Full::default()).unwrap();
    assert_eq!(send(veer.proxy_addr, request).await.headers["x-request-id"], "client-chosen-id");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served() {
    let backends = sims(1, 0).await;
    let targets = targets(&backends);
    let veer = start_veer(&named(&targets), "builtin:round-robin", ProxyConfig::default()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = client.get(format!("http://{}/h2", veer.proxy_addr).parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["via"], "2 veer");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_through_without_growing_memory() {
    let backends = sims(1, 0).await;
    let targets = targets(&backends);
    let veer = start_veer(&named(&targets), "builtin:round-robin", ProxyConfig::default()).await;
    let rss_before = rss_bytes();
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024; // 1 GiB
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let stream = futures_stream(chunk, CHUNKS);
    let body = http_body_util::StreamBody::new(stream);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = Request::put(format!("http://{}/upload", veer.proxy_addr)).body(body).unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-sim-request-bytes"], (CHUNK * CHUNKS).to_string());
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(growth < 128 << 20, "RSS grew by {} MiB while 1 GiB streamed through", growth >> 20);
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_streams_back() {
    let backends = sims(1, 0).await;
    let targets = targets(&backends);
    let veer = start_veer(&named(&targets), "builtin:round-robin", ProxyConfig::default()).await;
    let request = Request::get("/download")
        .header("x-sim-response-bytes", (64u64 << 20).to_string())
        .body(Full::default())
        .unwrap();
    let mut request = request;
    *request.uri_mut() = format!("http://{}/download", veer.proxy_addr).parse().unwrap();
    let response = veer_tests::http1_client().request(request).await.unwrap();
    let mut body = response.into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(total, 64 << 20);
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_passed_through() {
    let backends = sims(1, 0).await;
    let targets = targets(&backends);
    let veer = start_veer(&named(&targets), "builtin:round-robin", ProxyConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(veer.proxy_addr).await.unwrap();
    stream.write_all(b"GET /ws HTTP/1.1\r\nHost: veer\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"hello through veer").await.unwrap();
    let mut echoed = [0u8; 18];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello through veer");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_retried_on_another_and_no_request_fails() {
    let backends = sims(3, 0).await;
    let targets = targets(&backends);
    let veer = start_veer(&named(&targets), "builtin:round-robin", ProxyConfig::default()).await;
    backends[0].kill().await;
    // 30 requests send 10 first attempts to the dead backend: the retry budget's
    // floor (10 per second) covers them. Taking a dead backend out of rotation,
    // so that no budget is needed at all, is the health checker's job.
    let counts = spread(veer.proxy_addr, 30).await;
    assert!(!counts.contains_key("s0"), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 30);
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_the_budget_is_spent() {
    let failing = BackendProfile { error_rate: 1.0, ..profile(0) };
    let backends = vec![sim("a", failing.clone()).await, sim("b", failing.clone()).await, sim("c", failing).await];
    let targets = targets(&backends);
    let retry = RetryPolicy {
        retry_on_status: vec![500],
        budget_ratio: 0.0,
        budget_min_per_second: 5.0,
        ..RetryPolicy::default()
    };
    let veer =
        start_veer(&named(&targets), "builtin:round-robin", ProxyConfig { retry, ..ProxyConfig::default() }).await;
    for _ in 0..20 {
        // Every request fails; what matters is how many attempts veer made.
        assert_eq!(get(veer.proxy_addr, "/").await.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let attempts: u64 = backends.iter().map(|b| b.stats().requests).sum();
    // 20 first attempts, plus at most the floor's 5 tokens (and what refilled
    // while the test ran, at 5 per second).
    assert!(attempts >= 25, "the floor was used: {attempts}");
    assert!(attempts <= 20 + 5 + 10, "retries were bounded: {attempts}");
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backends_gives_503_with_reasons() {
    let veer = start_veer(&[], "builtin:round-robin", ProxyConfig::default()).await;
    let answer = get(veer.proxy_addr, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("no eligible backend"), "{}", answer.body);
    assert!(answer.body.contains(answer.headers["x-request-id"].to_str().unwrap()));
    assert!(answer.headers.contains_key("retry-after"));
    veer.shutdown().await;
    // All backends dead (502 first, then a quick 503 once health has taken
    // them out, and recovery): tests/resilience.rs.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_hangs_gives_504() {
    let hang = BackendProfile { error_rate: 1.0, error_kind: FailureKind::Hang, ..profile(0) };
    let backends = vec![sim("hang", hang).await];
    let targets = targets(&backends);
    let config = ProxyConfig { response_header_timeout: Duration::from_millis(200), ..ProxyConfig::default() };
    let veer = start_veer(&named(&targets), "builtin:round-robin", config).await;
    let answer = get(veer.proxy_addr, "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.body.contains("within 200ms"), "{}", answer.body);
    veer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let backends = vec![sim("slow", profile(400)).await];
    let targets = targets(&backends);
    let veer = start_veer(&named(&targets), "builtin:round-robin", ProxyConfig::default()).await;
    let address = veer.proxy_addr;
    let in_flight: Vec<_> = (0..5).map(|_| tokio::spawn(async move { get(address, "/").await.status })).collect();
    // Wait until all five are at the backend, then stop veer.
    while backends[0].stats().in_flight < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    veer.shutdown().await;
    for request in in_flight {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "no longer accepting");
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A body stream of `count` copies of `chunk`, produced on demand.
fn futures_stream(
    chunk: Bytes,
    count: usize,
) -> impl futures_core::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>> + Send + 'static {
    struct Chunks(Bytes, usize);
    impl futures_core::Stream for Chunks {
        type Item = Result<hyper::body::Frame<Bytes>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.1 == 0 {
                return std::task::Poll::Ready(None);
            }
            self.1 -= 1;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.0.clone()))))
        }
    }
    Chunks(chunk, count)
}

/// A backend written by hand, answering by path: `/chunked` in chunks with a
/// trailer, `/until-close` with no length (closing after), `/broken` with a
/// length it never delivers (closing), anything else `ok`.
async fn framing_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut read = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&chunk[..n]),
                    }
                    // Requests without bodies: a head ends each.
                    while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&read[..end]).into_owned();
                        read.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let (answer, close): (&[u8], bool) = match path.as_str() {
                            "/chunked" => (
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                                  6\r\nhello \r\n5\r\nworld\r\n0\r\nx-checksum: 42\r\n\r\n",
                                false,
                            ),
                            "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
                            "/broken" => (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this", true),
                            _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
                        };
                        if stream.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answers_pass_through_whatever_their_framing_and_a_broken_one_is_never_passed_off_as_whole() {
    let backend = framing_backend().await;
    let veer = start_veer(&[("raw", backend)], "native:round-robin", ProxyConfig::default()).await;
    for _ in 0..3 {
        let chunked = get(veer.proxy_addr, "/chunked").await;
        assert_eq!((chunked.status, chunked.body.as_str()), (StatusCode::OK, "hello world"));
        let until_close = get(veer.proxy_addr, "/until-close").await;
        assert_eq!((until_close.status, until_close.body.as_str()), (StatusCode::OK, "until the end"));
        // The backend died within the body: the client must see a broken
        // body (veer closes the connection), never a short one as if whole.
        let uri = format!("http://{}/broken", veer.proxy_addr);
        // (hyper may not have flushed the head before the body broke: then
        // the error comes with the head.)
        match veer_tests::http1_client().get(uri.parse().unwrap()).await {
            Ok(response) => {
                let body = response.into_body().collect().await.map(|body| body.to_bytes());
                assert!(body.is_err(), "a truncated body must end in an error, got {body:?}");
            }
            Err(error) => {
                let hyper = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<hyper::Error>());
                assert!(hyper.is_some_and(hyper::Error::is_incomplete_message), "{error}");
            }
        }
        let after = get(veer.proxy_addr, "/").await;
        assert_eq!((after.status, after.body.as_str()), (StatusCode::OK, "ok"), "veer keeps serving");
    }
}
