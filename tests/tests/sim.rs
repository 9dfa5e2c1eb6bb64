//! Simulated backends through real sockets on 127.0.0.1: what a client sees of
//! their latency, failures, health, stats, death and revival, upgrades, header
//! echo, streaming, and phases. Timing is only ever asserted as a lower bound.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use veer::sim::{
    BackendProfile, FailureKind, Latency, SimBackend, SimBackendSpec, SimError, demo_specs, run_cli_until, start_many,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

async fn start(name: &str, profile: BackendProfile) -> SimBackend {
    start_spec(SimBackendSpec::new(name, profile).with_seed(7)).await
}

async fn start_spec(spec: SimBackendSpec) -> SimBackend {
    SimBackend::start(spec, SocketAddr::new(LOCALHOST, 0)).await.unwrap()
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

fn get(backend: &SimBackend, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{}{path}", backend.url())).body(Full::default()).unwrap()
}

async fn body_text(response: Response<Incoming>) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Waits for a condition the test cannot await directly; the deadline only
/// turns a hang into a failure.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(ms(2)).await;
    }
}

#[tokio::test]
async fn answers_with_its_name_and_counts_request_bytes() {
    let backend = start("alpha", BackendProfile::default()).await;
    let client = client();
    let response = client.request(get(&backend, "/anything?x=1")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-sim-backend"], "alpha");
    assert_eq!(response.headers()["x-sim-request-bytes"], "0");
    assert_eq!(body_text(response).await, "alpha\n");

    let upload = Bytes::from(vec![7u8; 4 << 20]);
    let request = Request::post(backend.url()).body(Full::new(upload)).unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-sim-request-bytes"], (4u64 << 20).to_string());
    assert_eq!(body_text(response).await, "alpha\n");
    backend.shutdown().await;
}

/// A request body of `remaining` zero bytes, produced 64 KiB at a time, of
/// unknown length (so it is sent chunked).
struct Zeros {
    remaining: u64,
}

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 1 << 16] = [0; 1 << 16];
        let length = self.remaining.min(CHUNK.len() as u64) as usize;
        self.remaining -= length as u64;
        std::task::Poll::Ready((length > 0).then(|| Ok(hyper::body::Frame::data(Bytes::from_static(&CHUNK[..length])))))
    }
}

/// The process's peak resident memory so far.
#[cfg(target_os = "linux")]
fn peak_memory_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn large_uploads_are_streamed_not_buffered() {
    let backend = start("sink", BackendProfile::default()).await;
    let length: u64 = 512 << 20;
    let peak_before = peak_memory_bytes();
    let stream = TcpStream::connect(backend.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::post("/upload").header("host", "sim").body(Zeros { remaining: length }).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-sim-request-bytes"], length.to_string());
    let growth = peak_memory_bytes().saturating_sub(peak_before);
    // Other tests run alongside and allocate a little; buffering would add 512 MiB.
    assert!(growth < 128 << 20, "peak memory grew by {} MiB during a 512 MiB upload", growth >> 20);
    backend.shutdown().await;
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let backend = start("h2", BackendProfile::default()).await;
    let response = h2_client().request(get(&backend, "/")).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.headers()["x-sim-backend"], "h2");
    assert_eq!(body_text(response).await, "h2\n");
    backend.shutdown().await;
}

#[tokio::test]
async fn modelled_latency_is_a_lower_bound_on_response_time() {
    let backend = start("slow", BackendProfile::fixed(ms(40))).await;
    let started = Instant::now();
    let response = client().request(get(&backend, "/")).await.unwrap();
    assert!(started.elapsed() >= ms(40), "answered after {:?}", started.elapsed());
    assert_eq!(response.status(), StatusCode::OK);
    assert!(backend.stats().mean_latency >= ms(40), "{:?}", backend.stats());

    let uniform = Latency::Uniform { min: ms(15), max: ms(25) };
    backend.set_profile(BackendProfile::new(uniform)).unwrap();
    let started = Instant::now();
    client().request(get(&backend, "/")).await.unwrap();
    assert!(started.elapsed() >= ms(15), "answered after {:?}", started.elapsed());
    backend.shutdown().await;
}

#[tokio::test]
async fn error_rate_is_honoured_and_reproducible_for_a_seed() {
    let profile = BackendProfile::default().with_errors(0.25, FailureKind::Status500);
    // Same name and seed: the same draws, request by request.
    let (first, second) = (start("errors", profile.clone()).await, start("errors", profile).await);
    let client = client();
    let mut runs = Vec::new();
    for backend in [&first, &second] {
        let mut statuses = Vec::new();
        for _ in 0..300 {
            let response = client.request(get(backend, "/")).await.unwrap();
            assert_eq!(response.headers()["x-sim-backend"], "errors");
            statuses.push(response.status());
            response.into_body().collect().await.unwrap();
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "a seeded backend fails the same requests every run");
    let failures = runs[0].iter().filter(|&&status| status == StatusCode::INTERNAL_SERVER_ERROR).count();
    assert!((50..=100).contains(&failures), "{failures} of 300 failed, expected about 75");
    assert!(runs[0].iter().all(|&status| status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR));
    let stats = first.stats();
    assert_eq!((stats.requests, stats.failures, stats.in_flight), (300, failures as u64, 0));

    let other_seed = start_spec(SimBackendSpec::new("errors", first.profile()).with_seed(8)).await;
    let mut statuses = Vec::new();
    for _ in 0..300 {
        let response = client.request(get(&other_seed, "/")).await.unwrap();
        statuses.push(response.status());
        response.into_body().collect().await.unwrap();
    }
    assert_ne!(statuses, runs[0], "another seed draws differently");
    for backend in [first, second, other_seed] {
        backend.shutdown().await;
    }
}

#[tokio::test]
async fn reset_failures_drop_the_connection_without_an_answer() {
    let backend = start("resets", BackendProfile::default().with_errors(1.0, FailureKind::Reset)).await;
    let mut stream = TcpStream::connect(backend.addr()).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: sim\r\n\r\n").await.unwrap();
    let mut buffer = Vec::new();
    let error = stream.read_to_end(&mut buffer).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert!(buffer.is_empty(), "no answer before the reset: {:?}", String::from_utf8_lossy(&buffer));

    assert!(client().request(get(&backend, "/")).await.is_err());
    assert!(h2_client().request(get(&backend, "/")).await.is_err(), "over HTTP/2 the stream is reset");
    assert_eq!(backend.stats().failures, 3);
    backend.shutdown().await;
}

#[tokio::test]
async fn hanging_requests_stay_in_flight_and_capacity_stretches_latency() {
    let backend = start("hangs", BackendProfile::default().with_errors(1.0, FailureKind::Hang)).await;
    let hanging: Vec<_> = (0..3)
        .map(|_| {
            let request = get(&backend, "/");
            tokio::spawn(async move { client().request(request).await })
        })
        .collect();
    until("three requests hang", || backend.stats().in_flight == 3).await;

    // A newcomer finds 4 in flight (itself included) at capacity 1: 4 × 10 ms.
    backend.set_profile(BackendProfile::fixed(ms(10)).with_capacity(1)).unwrap();
    let started = Instant::now();
    let response = client().request(get(&backend, "/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= ms(40), "answered after {:?}", started.elapsed());

    // The clients give up: their requests stop being in flight.
    for request in &hanging {
        request.abort();
    }
    until("the abandoned requests are gone", || backend.stats().in_flight == 0).await;
    let stats = backend.stats();
    assert_eq!((stats.requests, stats.failures), (4, 3));
    backend.shutdown().await;
}

#[tokio::test]
async fn health_endpoint_follows_set_healthy_and_is_not_modelled() {
    let backend = start("health", BackendProfile::fixed(ms(5)).with_errors(1.0, FailureKind::Status500)).await;
    let client = client();
    let response = client.request(get(&backend, "/healthz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "ok\n");
    backend.set_healthy(false);
    assert!(!backend.is_healthy());
    assert_eq!(client.request(get(&backend, "/healthz")).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    backend.set_healthy(true);
    assert_eq!(client.request(get(&backend, "/healthz")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(backend.stats().requests, 0, "health checks are not counted as requests");
    backend.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_failures_and_latency() {
    let backend = start("counted", BackendProfile::fixed(ms(2)).with_errors(0.5, FailureKind::Status500)).await;
    let client = client();
    let mut failures = 0;
    for _ in 0..20 {
        let response = client.request(get(&backend, "/work")).await.unwrap();
        failures += u64::from(response.status() == StatusCode::INTERNAL_SERVER_ERROR);
        response.into_body().collect().await.unwrap();
    }
    let stats = backend.stats();
    assert_eq!((stats.requests, stats.failures, stats.in_flight), (20, failures, 0));
    assert!(stats.mean_latency >= ms(2), "{stats:?}");

    let response = client.request(get(&backend, "/stats")).await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(json["name"], "counted");
    assert_eq!(json["requests"], 20);
    assert_eq!(json["failures"], failures);
    assert_eq!(json["in_flight"], 0);
    assert!(json["mean_latency_ms"].as_f64().unwrap() >= 2.0, "{json}");
    assert_eq!(backend.stats().requests, 20, "/stats is not counted either");
    backend.shutdown().await;
}

#[tokio::test]
async fn kill_refuses_and_resets_connections_and_revive_serves_again() {
    let backend = start("mortal", BackendProfile::default()).await;
    let stream = TcpStream::connect(backend.addr()).await.unwrap();
    let (mut open, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let response = open.send_request(Request::get("/").body(Full::<Bytes>::default()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();

    // A request in flight is cut off, not answered.
    backend.set_profile(BackendProfile::fixed(Duration::from_secs(60))).unwrap();
    let in_flight = tokio::spawn(client().request(get(&backend, "/")));
    until("the slow request is in flight", || backend.stats().in_flight == 1).await;

    backend.kill().await;
    assert!(in_flight.await.unwrap().is_err(), "the in-flight request failed");
    let refused = TcpStream::connect(backend.addr()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert!(connection.await.unwrap().is_err() || open.is_closed(), "the open connection was reset");
    backend.kill().await; // killing the dead is harmless

    backend.set_profile(BackendProfile::default()).unwrap();
    backend.revive().await.unwrap();
    backend.revive().await.unwrap(); // so is reviving the living
    let response = client().request(get(&backend, "/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "mortal\n");
    assert_eq!(backend.stats().requests, 3, "stats survive a kill");
    backend.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_stays_down() {
    let backend = start("graceful", BackendProfile::fixed(ms(100))).await;
    let in_flight = tokio::spawn(client().request(get(&backend, "/")));
    until("the request is in flight", || backend.stats().in_flight == 1).await;
    backend.shutdown().await;
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "graceful\n");
    let refused = TcpStream::connect(backend.addr()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert!(matches!(backend.revive().await, Err(SimError::ShutDown { .. })));
}

#[tokio::test]
async fn upgraded_connections_echo_every_byte() {
    let backend = start("tunnel", BackendProfile::default()).await;
    let stream = TcpStream::connect(backend.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection.with_upgrades());
    let request = Request::get("/ws")
        .header("host", "sim")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert_eq!(response.headers()["x-sim-backend"], "tunnel");
    let mut upgraded = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    for message in [&b"hello, sim"[..], &[0u8, 255, 1, 2][..], &vec![42u8; 200_000][..]] {
        upgraded.write_all(message).await.unwrap();
        let mut echoed = vec![0; message.len()];
        upgraded.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message);
    }
    backend.kill().await;
    let mut rest = Vec::new();
    assert!(upgraded.read_to_end(&mut rest).await.is_err(), "a kill resets upgraded connections too");
}

#[tokio::test]
async fn echo_headers_returns_the_request_headers_as_json() {
    let backend = start("mirror", BackendProfile::default()).await;
    let request = Request::get(format!("{}/echo", backend.url()))
        .header("x-sim-echo-headers", "1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-twice", "a")
        .header("x-twice", "b")
        .body(Full::default())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-sim-backend"], "mirror");
    let seen: std::collections::BTreeMap<String, String> = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(seen["x-forwarded-for"], "10.0.0.1");
    assert_eq!(seen["x-twice"], "a, b");
    assert_eq!(seen["x-sim-echo-headers"], "1");
    assert_eq!(seen["host"], backend.addr().to_string());
    backend.shutdown().await;
}

#[tokio::test]
async fn response_bytes_are_streamed_in_chunks() {
    let backend = start("bulk", BackendProfile::default()).await;
    let length: u64 = 24 << 20;
    for client in [client(), h2_client()] {
        let request = Request::get(backend.url())
            .header("x-sim-response-bytes", length.to_string())
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        if response.version() == Version::HTTP_11 {
            assert_eq!(response.headers()["content-length"], length.to_string());
        }
        let mut body = response.into_body();
        let (mut received, mut frames) = (0u64, 0u64);
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.unwrap().data_ref() {
                received += data.len() as u64;
                frames += 1;
            }
        }
        assert_eq!(received, length);
        assert!(frames > 1, "streamed, not sent whole");
    }
    let request = Request::get(backend.url()).header("x-sim-response-bytes", "lots").body(Full::default()).unwrap();
    assert_eq!(client().request(request).await.unwrap().status(), StatusCode::BAD_REQUEST);
    backend.shutdown().await;
}

#[tokio::test]
async fn phases_switch_the_profile_at_their_offsets() {
    let switch_at = ms(300);
    let before_start = Instant::now();
    let spec = SimBackendSpec::new("phased", BackendProfile::default())
        .with_phase(Duration::ZERO, BackendProfile::default().with_errors(1.0, FailureKind::Status500))
        .with_phase(switch_at, BackendProfile::fixed(ms(1)));
    let backend = start_spec(spec).await;
    let client = client();
    let first = client.request(get(&backend, "/")).await.unwrap().status();
    // Only conclusive if the answer came before the switch (the machine may be slow).
    if before_start.elapsed() < switch_at {
        assert_eq!(first, StatusCode::INTERNAL_SERVER_ERROR, "the phase at 0 ms applies from the start");
    }
    tokio::time::sleep_until(before_start + switch_at).await;
    let response = client.request(get(&backend, "/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the phase at {switch_at:?} has taken over");
    assert_eq!(backend.profile(), BackendProfile::fixed(ms(1)));
    backend.shutdown().await;
}

#[tokio::test]
async fn invalid_specs_and_profiles_are_refused() {
    let spec = SimBackendSpec::new("bad", BackendProfile::default().with_errors(2.0, FailureKind::Reset));
    let error = SimBackend::start(spec, SocketAddr::new(LOCALHOST, 0)).await.unwrap_err();
    assert!(matches!(error, SimError::Invalid { .. }), "{error}");
    assert_eq!(error.to_string(), "sim backend `bad`: profile.error_rate must be within 0..=1, got 2");

    let backend = start("good", BackendProfile::fixed(ms(1))).await;
    let bad = BackendProfile::new(Latency::HeavyTail { median: ms(10), p99: ms(1) });
    assert!(backend.set_profile(bad).is_err());
    assert_eq!(backend.profile(), BackendProfile::fixed(ms(1)), "a refused profile changes nothing");

    let taken = SimBackend::start(SimBackendSpec::new("second", BackendProfile::default()), backend.addr()).await;
    assert!(matches!(taken, Err(SimError::Bind { .. })));
    backend.shutdown().await;
}

#[tokio::test]
async fn start_many_starts_the_demo_backends() {
    let backends = start_many(demo_specs(), LOCALHOST, None).await.unwrap();
    let names: Vec<&str> = backends.iter().map(SimBackend::name).collect();
    assert_eq!(names, ["fast", "jittery", "flaky"]);
    let client = client();
    for backend in &backends {
        let response = client.request(get(backend, "/")).await.unwrap();
        assert_eq!(response.headers()["x-sim-backend"], backend.name());
    }
    for backend in &backends {
        backend.shutdown().await;
    }
}

#[tokio::test]
async fn run_cli_until_serves_the_given_backends_and_stops() {
    // Ports known in advance, as an operator gives them on the command line.
    let ports: Vec<u16> =
        (0..2).map(|_| std::net::TcpListener::bind((LOCALHOST, 0)).unwrap().local_addr().unwrap().port()).collect();
    let backends = vec![
        format!("name=cli,latency=1ms,port={}", ports[0]).parse().unwrap(),
        format!("errors=100%,port={}", ports[1]).parse().unwrap(),
    ];
    let url = |port: u16| format!("http://{LOCALHOST}:{port}/");
    let served = run_cli_until(backends, LOCALHOST, async {
        let client = client();
        let named = client.request(Request::get(url(ports[0])).body(Full::default()).unwrap()).await.unwrap();
        assert_eq!(named.status(), StatusCode::OK);
        assert_eq!(named.headers()["x-sim-backend"], "cli");
        let failing = client.request(Request::get(url(ports[1])).body(Full::default()).unwrap()).await.unwrap();
        assert_eq!(failing.status(), StatusCode::INTERNAL_SERVER_ERROR, "errors=100% fails every request");
        assert_eq!(failing.headers()["x-sim-backend"], "sim2", "unnamed backends are numbered");
    });
    served.await.unwrap();
    for port in ports {
        let refused = TcpStream::connect((LOCALHOST, port)).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "stopped: {refused}");
    }
}
