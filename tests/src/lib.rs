//! Support for veer's end-to-end tests: test-only plugins and helpers.

/// The hostile test plugin's component bytes (see `plugins/hostile`).
pub const HOSTILE_PLUGIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/veer_test_plugin_hostile.wasm"));

/// A round robin built against the released `veer:picker@0.1.0` contract
/// (see `plugins/contract-0.1.0`): proof that newer hosts keep loading it.
pub const CONTRACT_0_1_0_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/veer_test_plugin_contract_0_1_0.wasm"));

/// A picker built against the released `veer:picker@0.1.1` contract, using
/// its addition `host.in-flight` (see `plugins/contract-0.1.1`).
pub const CONTRACT_0_1_1_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/veer_test_plugin_contract_0_1_1.wasm"));

/// The example affinity plugin's component bytes (see `examples/affinity-plugin`).
pub const AFFINITY_EXAMPLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/veer_example_affinity.wasm"));

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use veer::plugin::{
    Backend, BackendEvent, BackendId, HttpMethod, Limits, Outcome, PickContext, Picker, PluginRuntime, RequestMeta,
};

/// A plugin runtime with seeded randomness and the default limits.
pub fn runtime() -> Arc<PluginRuntime> {
    runtime_with(Limits { seed: Some(42), ..Limits::default() })
}

/// A plugin runtime with the given limits.
pub fn runtime_with(limits: Limits) -> Arc<PluginRuntime> {
    PluginRuntime::new(limits).expect("the Wasm engine starts")
}

/// `added` events for backends `1..=n`, each of weight 1, named `b1`…
pub fn backends(n: u32) -> Vec<BackendEvent> {
    (1..=n).map(|id| BackendEvent::Added(backend(id, 1))).collect()
}

/// A backend with id `id`, named `b{id}`.
pub fn backend(id: BackendId, weight: u32) -> Backend {
    Backend { id, name: format!("b{id}"), address: format!("127.0.0.1:{}", 10_000 + id), weight, labels: vec![] }
}

/// A plain first-attempt GET context.
pub fn first_attempt() -> PickContext {
    PickContext { attempt: 0, exclude: None, method: HttpMethod::Get }
}

/// A GET `/` request from 127.0.0.1.
pub fn request() -> RequestMeta {
    RequestMeta::get("/", IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// What a modelled backend answers: latency and success.
pub type Model<'a> = &'a dyn Fn(BackendId) -> (u64, bool);

/// Sends `n` sequential requests through `picker` (pick, then the outcome the
/// model gives), and returns how many each backend received. Between requests
/// it does what a group's control task does: replaces a faulted instance.
pub fn drive(picker: &Picker, n: usize, model: Model<'_>) -> std::collections::BTreeMap<BackendId, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let mut request = request();
    for _ in 0..n {
        let (choice, back) = picker.pick(request, first_attempt());
        request = back;
        let Some(choice) = choice else { continue };
        *counts.entry(choice.backend).or_default() += 1;
        let (latency_us, ok) = model(choice.backend);
        picker.observe(
            &choice,
            Outcome {
                backend: choice.backend,
                picked: choice.by_plugin,
                status: if ok { 200 } else { 500 },
                latency_us,
                error: None,
            },
        );
        picker.repair();
    }
    counts
}

/// Writes the hostile plugin to a file (unique per process and `tag`) and
/// returns its path, for tests that load plugins by path.
pub fn hostile_plugin_file(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("veer-hostile-{}-{tag}.wasm", std::process::id()));
    std::fs::write(&path, HOSTILE_PLUGIN).expect("the temp dir is writable");
    path
}

/// [`start_veer`] with the given admission control.
pub async fn start_veer_with(
    backends: &[(&str, std::net::SocketAddr)],
    picker: &str,
    proxy: veer::proxy::ProxyConfig,
    admission: veer::admission::AdmissionConfig,
) -> veer::server::RunningServer {
    let options = veer::server::ServerOptions { admission, ..veer_options(backends, picker, proxy) };
    veer::server::start(options).await.expect("veer starts")
}

/// A running veer for end-to-end tests: proxy and admin on 127.0.0.1 port 0.
pub async fn start_veer(
    backends: &[(&str, std::net::SocketAddr)],
    picker: &str,
    proxy: veer::proxy::ProxyConfig,
) -> veer::server::RunningServer {
    veer::server::start(veer_options(backends, picker, proxy)).await.expect("veer starts")
}

/// The options [`start_veer`] uses, for tests that change more (health, caps).
pub fn veer_options(
    backends: &[(&str, std::net::SocketAddr)],
    picker: &str,
    proxy: veer::proxy::ProxyConfig,
) -> veer::server::ServerOptions {
    veer::server::ServerOptions {
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        admin: Some("127.0.0.1:0".parse().expect("a valid address")),
        backends: backends.iter().map(|(name, address)| veer::pool::BackendSpec::new(*name, *address)).collect(),
        picker: veer::plugin::PluginSource::parse(picker),
        params: vec![],
        candidate: None,
        proxy,
        limits: Limits { seed: Some(11), ..Limits::default() },
        health: veer::health::HealthConfig::default(),
        admission: veer::admission::AdmissionConfig::default(),
        observe: veer::observe::ObserveConfig::default(),
        control: veer::config::ControlOptions::default(),
        canary: None,
        upstreams: Vec::new(),
        routes: None,
        listeners: Vec::new(),
        listen_tls: None,
        backend_tls: None,
        discovery: Default::default(),
    }
}

/// An HTTP/1.1 client with connection pooling, as a load generator would use.
pub fn http1_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A status, headers and the whole body of a response.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: http::StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body as text (lossy).
    pub body: String,
}

/// Sends `GET path` to `address` and reads the whole answer.
pub async fn get(address: std::net::SocketAddr, path: &str) -> Answer {
    send(address, http::Request::get(path).body(Default::default()).expect("a valid request")).await
}

/// Sends `request` (its URI's path is used) to `address` and reads the whole answer.
pub async fn send(
    address: std::net::SocketAddr,
    mut request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Answer {
    use http_body_util::BodyExt;
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    *request.uri_mut() = format!("http://{address}{path}").parse().expect("a valid URI");
    let response = http1_client().request(request).await.expect("veer answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body arrives").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Open-loop load: requests sent at a fixed rate whatever the answers, as
/// independent users would; for overload tests and the overload benchmark.
pub mod load {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    /// What happened to one request.
    #[derive(Debug, Clone, Copy)]
    pub struct Sample {
        /// When it was sent, from the start of the run.
        pub sent_at: Duration,
        /// The status, or `None` if no answer came within the timeout (or the connection failed).
        pub status: Option<u16>,
        /// Time to the whole answer (the timeout for requests that got none).
        pub latency: Duration,
    }

    /// Sends `GET /` to `address` at `rate_per_second` for `duration`, each
    /// with the `headers` given, waiting up to `timeout` for each answer;
    /// returns every request's sample once all have finished.
    pub async fn open_loop(
        address: SocketAddr,
        rate_per_second: f64,
        duration: Duration,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Vec<Sample> {
        let client = super::http1_client();
        let uri: http::Uri = format!("http://{address}/").parse().expect("a valid URI");
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_second));
        // Burst: if the generator falls behind it catches up, so the offered
        // rate is what was asked for, not what the proxy let through.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            ticks.tick().await;
            let sent_at = start.elapsed();
            if sent_at >= duration {
                break;
            }
            let mut request = http::Request::get(uri.clone());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(Full::<Bytes>::default()).expect("a valid request");
            let client = client.clone();
            tasks.spawn(async move {
                let sent = Instant::now();
                let answer = tokio::time::timeout(timeout, async {
                    let response = client.request(request).await.ok()?;
                    let status = response.status().as_u16();
                    response.into_body().collect().await.ok()?;
                    Some(status)
                })
                .await;
                match answer {
                    Ok(Some(status)) => Sample { sent_at, status: Some(status), latency: sent.elapsed() },
                    _ => Sample { sent_at, status: None, latency: timeout },
                }
            });
        }
        let mut samples = Vec::with_capacity(tasks.len());
        while let Some(sample) = tasks.join_next().await {
            samples.push(sample.expect("a load task does not panic"));
        }
        samples.sort_by_key(|s| s.sent_at);
        samples
    }

    /// What a run looked like from the clients' side.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Summary {
        /// Requests sent per second.
        pub offered_rps: f64,
        /// Successful (2xx) answers completed per second within the measured
        /// part of the run (a success that arrives after the run ended does
        /// not count: the backlog it came from is the overload).
        pub goodput_rps: f64,
        /// 99th percentile latency of successful answers, ms.
        pub p99_ok_ms: f64,
        /// 99th percentile latency of every request that was not refused
        /// (timeouts count as the timeout), ms: what an admitted user waited.
        pub p99_admitted_ms: f64,
        /// Answers 429 or 503 (refused by admission, or no backend).
        pub refused: usize,
        /// No answer in time, or a connection error.
        pub timed_out: usize,
        /// Any other status.
        pub other: usize,
    }

    /// Summarises samples of a run that lasted `duration`, ignoring requests
    /// sent before `warm_up`.
    pub fn summarize(samples: &[Sample], duration: Duration, warm_up: Duration) -> Summary {
        let measured: Vec<&Sample> = samples.iter().filter(|s| s.sent_at >= warm_up).collect();
        let seconds = duration.saturating_sub(warm_up).as_secs_f64().max(1e-9);
        let ok: Vec<Duration> =
            measured.iter().filter(|s| s.status.is_some_and(|c| (200..300).contains(&c))).map(|s| s.latency).collect();
        let refused = measured.iter().filter(|s| matches!(s.status, Some(429 | 503))).count();
        let timed_out = measured.iter().filter(|s| s.status.is_none()).count();
        let admitted: Vec<Duration> =
            measured.iter().filter(|s| !matches!(s.status, Some(429 | 503))).map(|s| s.latency).collect();
        let ok_count = ok.len();
        let completed_in_window = samples
            .iter()
            .filter(|s| s.status.is_some_and(|c| (200..300).contains(&c)))
            .filter(|s| (warm_up..=duration).contains(&(s.sent_at + s.latency)))
            .count();
        Summary {
            offered_rps: measured.len() as f64 / seconds,
            goodput_rps: completed_in_window as f64 / seconds,
            p99_ok_ms: percentile_ms(ok, 0.99),
            p99_admitted_ms: percentile_ms(admitted, 0.99),
            refused,
            timed_out,
            other: measured.len() - ok_count - refused - timed_out,
        }
    }

    /// The `p` quantile (nearest rank) in ms; 0 when empty.
    pub fn percentile_ms(mut latencies: Vec<Duration>, p: f64) -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies.sort_unstable();
        let rank = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1e3
    }
}

/// The Python example's component (`examples/python-plugin`), built by its
/// `build.sh`. Panics with what to run when it is missing: the tests that use
/// it must fail, not skip (`scripts/test.sh`, and so `.ci/run`, builds it first).
pub fn python_example() -> std::path::PathBuf {
    example_component("least-conn-py.wasm", "examples/python-plugin/build.sh")
}

/// The JavaScript example's component (`examples/js-plugin`), built by its
/// `build.sh`; see [`python_example`].
pub fn js_example() -> std::path::PathBuf {
    example_component("least-conn-js.wasm", "examples/js-plugin/build.sh")
}

/// The C example's component (`examples/c-plugin`), built by its `build.sh`;
/// see [`python_example`].
pub fn c_example() -> std::path::PathBuf {
    example_component("least-conn-c.wasm", "examples/c-plugin/build.sh")
}

fn example_component(file: &str, script: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root");
    let path = root.join("target/example-plugins").join(file);
    assert!(
        path.is_file(),
        "{} is missing: build it with `bash {script}` (scripts/test.sh does this before the tests)",
        path.display()
    );
    path
}

/// A real HTTP/1.1 backend for hardening tests: it reads every request body
/// to the end before answering `200` with `received N bytes`, counts what
/// reached it, and serves `/big` as a large response (`/big?mib=N`).
pub mod echo {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    /// What reached the backend.
    #[derive(Debug, Default)]
    pub struct Seen {
        /// Request heads received.
        pub requests: AtomicU64,
        /// Bodies read to the end.
        pub complete_bodies: AtomicU64,
        /// Body bytes received in total.
        pub body_bytes: AtomicU64,
    }

    /// A running echo backend; stops when dropped.
    #[derive(Debug)]
    pub struct EchoBackend {
        /// Where it listens.
        pub addr: SocketAddr,
        /// What reached it.
        pub seen: Arc<Seen>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for EchoBackend {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl EchoBackend {
        /// Starts one on 127.0.0.1, port 0.
        pub async fn start() -> EchoBackend {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds on loopback");
            EchoBackend::serve(listener)
        }

        /// Starts one on `addr`, or says why it cannot bind there.
        pub async fn start_on(addr: SocketAddr) -> std::io::Result<EchoBackend> {
            Ok(EchoBackend::serve(tokio::net::TcpListener::bind(addr).await?))
        }

        fn serve(listener: tokio::net::TcpListener) -> EchoBackend {
            let addr = listener.local_addr().expect("has an address");
            let seen = Arc::new(Seen::default());
            let counters = seen.clone();
            let task = tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let seen = counters.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| serve(seen.clone(), request));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            EchoBackend { addr, seen, task }
        }

        /// Request heads received so far.
        pub fn requests(&self) -> u64 {
            self.seen.requests.load(Ordering::SeqCst)
        }
    }

    async fn serve(
        seen: Arc<Seen>,
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        if request.uri().path() == "/healthz" {
            seen.requests.fetch_sub(1, Ordering::SeqCst);
            return Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))));
        }
        if request.uri().path() == "/big" {
            let mib: usize =
                request.uri().query().and_then(|q| q.strip_prefix("mib=")).and_then(|n| n.parse().ok()).unwrap_or(64);
            return Ok(http::Response::new(Full::new(Bytes::from(vec![b'x'; mib << 20]))));
        }
        let mut body = request.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                received += data.len() as u64;
                seen.body_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
            }
        }
        seen.complete_bodies.fetch_add(1, Ordering::SeqCst);
        Ok(http::Response::new(Full::new(Bytes::from(format!("received {received} bytes")))))
    }
}

/// Config files, running servers and the admin API, for the tests that
/// drive veer the way an operator does.
pub mod operator {
    use std::path::PathBuf;

    use bytes::Bytes;
    use http_body_util::Full;
    use veer::server::RunningServer;
    use veer::sim::{BackendProfile, SimBackend, SimBackendSpec};

    use super::{Answer, send};

    /// A simulated backend named `name` that answers at once, on 127.0.0.1.
    pub async fn sim(name: &str) -> SimBackend {
        let spec = SimBackendSpec {
            name: name.to_string(),
            profile: BackendProfile::fixed(std::time::Duration::ZERO),
            phases: vec![],
            seed: 1,
        };
        SimBackend::start(spec, "127.0.0.1:0".parse().expect("a valid address")).await.expect("the backend starts")
    }

    /// A config file in the temp dir, unique per test file, process and tag;
    /// removed when dropped.
    #[derive(Debug)]
    pub struct ConfigFile(pub PathBuf);

    impl ConfigFile {
        /// A file for the test tagged `tag` of the test file `suite`.
        pub fn new(suite: &str, tag: &str) -> Self {
            ConfigFile(std::env::temp_dir().join(format!("veer-{suite}-{}-{tag}.yaml", std::process::id())))
        }

        /// Writes `text` into it.
        pub fn write(&self, text: &str) {
            std::fs::write(&self.0, text).expect("the temp dir is writable");
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// veer started from `file`, which reloads read.
    pub async fn start_from(file: &ConfigFile) -> RunningServer {
        let mut options = veer::config::load(&file.0).unwrap_or_else(|e| panic!("{e}")).options;
        options.control.config_file = Some(file.0.clone());
        veer::server::start(options).await.expect("veer starts")
    }

    /// Sends `method path` with `body` to the admin API.
    pub async fn admin(server: &RunningServer, method: &str, path: &str, body: &str) -> Answer {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request");
        send(server.admin_addr.expect("the admin API is on"), request).await
    }

    /// The answer's body as JSON.
    pub fn json(answer: &Answer) -> serde_json::Value {
        serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.body))
    }
}

/// A real DNS server for discovery tests: dnsmasq (Debian's `dnsmasq-base`)
/// on 127.0.0.1 at a free port, serving A records from a hosts file the
/// test rewrites (re-read on SIGHUP) and SRV records given at start.
pub mod dnsmasq {
    use std::path::PathBuf;

    /// A running dnsmasq; killed when dropped.
    #[derive(Debug)]
    pub struct Dnsmasq {
        /// Its UDP and TCP port on 127.0.0.1.
        pub port: u16,
        dir: PathBuf,
        srv: Vec<String>,
        child: Option<tokio::process::Child>,
    }

    impl Dnsmasq {
        /// Starts one serving `hosts` (hosts-file lines) and `srv`
        /// (`--srv-host` values: `_service._proto.name,target,port,priority,weight`),
        /// each record with a TTL of 1 s.
        pub async fn start(tag: &str, hosts: &str, srv: &[&str]) -> Dnsmasq {
            let dir = std::env::temp_dir().join(format!("veer-dnsmasq-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("the temp dir is writable");
            // dnsmasq re-reads the file as whatever user it runs as.
            set_mode(&dir, 0o755);
            let mut server = Dnsmasq { port: 0, dir, srv: srv.iter().map(|s| s.to_string()).collect(), child: None };
            server.write_hosts(hosts);
            // A port free for UDP may be taken for TCP (dnsmasq binds both):
            // another one is tried when dnsmasq cannot bind.
            for _ in 0..10 {
                server.port = free_udp_and_tcp_port();
                if server.run().await.is_ok() {
                    return server;
                }
            }
            panic!("dnsmasq did not start: {}", server.log());
        }

        /// Starts dnsmasq on `self.port`; `Err` when it exits at once (the
        /// port taken) or never answers.
        async fn run(&mut self) -> Result<(), ()> {
            let log = std::fs::File::create(self.dir.join("log")).expect("the temp dir is writable");
            let mut command = tokio::process::Command::new("dnsmasq");
            command
                .args(["--keep-in-foreground", "--conf-file=/dev/null", "--listen-address=127.0.0.1"])
                .args(["--bind-interfaces", "--no-resolv", "--no-hosts", "--local-ttl=1", "--log-facility=-"])
                .arg(format!("--port={}", self.port))
                .arg(format!("--addn-hosts={}", self.hosts().display()))
                .arg(format!("--pid-file={}", self.dir.join("pid").display()))
                .args(self.srv.iter().map(|srv| format!("--srv-host={srv}")))
                .stdout(log.try_clone().expect("a log file"))
                .stderr(log)
                .kill_on_drop(true);
            if is_root() {
                // Else it changes to a user Debian's dnsmasq-base does not create.
                command.arg("--user=root");
            }
            let mut child = command.spawn().expect("dnsmasq runs (apt-get install dnsmasq-base)");
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket");
            // A query for `.` NS: any answer means dnsmasq is up.
            let query = [0u8, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    return Err(());
                }
                let _ = socket.send_to(&query, ("127.0.0.1", self.port)).await;
                let mut answer = [0u8; 512];
                let wait = std::time::Duration::from_millis(100);
                if let Ok(Ok(_)) = tokio::time::timeout(wait, socket.recv_from(&mut answer)).await {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            Err(())
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        }

        fn hosts(&self) -> PathBuf {
            self.dir.join("hosts")
        }

        /// Replaces the hosts file; call [`Dnsmasq::reread`] to serve it.
        pub fn write_hosts(&self, text: &str) {
            std::fs::write(self.hosts(), text).expect("the temp dir is writable");
            set_mode(&self.hosts(), 0o644);
        }

        /// SIGHUP: dnsmasq re-reads the hosts file and clears its cache.
        pub async fn reread(&self) {
            let pid = self.child.as_ref().and_then(|child| child.id()).expect("dnsmasq is running");
            let status = tokio::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .await
                .expect("kill runs");
            assert!(status.success());
        }

        /// Stops it (the port stays reserved for [`Dnsmasq::restart`]).
        pub async fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill().await;
            }
        }

        /// Starts it again on the same port, serving `srv` now (dnsmasq reads
        /// SRV records only at start).
        pub async fn restart(&mut self, srv: &[&str]) {
            self.stop().await;
            self.srv = srv.iter().map(|s| s.to_string()).collect();
            for _ in 0..20 {
                if self.run().await.is_ok() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("dnsmasq did not restart on port {}: {}", self.port, self.log());
        }
    }

    impl Drop for Dnsmasq {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A port free on 127.0.0.1 for both UDP and TCP right now.
    fn free_udp_and_tcp_port() -> u16 {
        loop {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
            let port = tcp.local_addr().expect("bound").port();
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    fn set_mode(path: &std::path::Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("permissions can be set");
    }

    fn is_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
    }
}

/// A real Redis for the fleet-wide rate limit tests: Debian's `redis-server`
/// on 127.0.0.1 at a free port, without persistence.
pub mod redis_server {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A running redis-server; killed when dropped.
    #[derive(Debug)]
    pub struct RedisServer {
        /// Its port on 127.0.0.1.
        pub port: u16,
        child: Option<tokio::process::Child>,
    }

    impl RedisServer {
        /// Starts one at a free port.
        pub async fn start() -> RedisServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|socket| socket.local_addr())
                .expect("a free port")
                .port();
            let mut server = RedisServer { port, child: None };
            server.run().await;
            server
        }

        /// `redis://127.0.0.1:PORT`.
        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        async fn run(&mut self) {
            let child = tokio::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--port"])
                .arg(self.port.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server runs (apt-get install redis-server)");
            self.child = Some(child);
            for _ in 0..100 {
                if self.ping().await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("redis-server did not answer on port {}", self.port);
        }

        async fn ping(&self) -> bool {
            let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
            let mut answer = [0u8; 7];
            stream.write_all(b"PING\r\n").await.is_ok()
                && stream.read_exact(&mut answer).await.is_ok()
                && &answer == b"+PONG\r\n"
        }

        /// Kills it (the port stays reserved for [`RedisServer::restart`]).
        pub async fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill().await;
            }
        }

        /// Starts it again on the same port, empty.
        pub async fn restart(&mut self) {
            self.kill().await;
            self.run().await;
        }
    }
}
