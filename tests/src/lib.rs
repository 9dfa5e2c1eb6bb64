//! Support for veer's end-to-end tests: test-only plugins and helpers.

/// The hostile test plugin's component bytes (see `plugins/hostile`).
pub const HOSTILE_PLUGIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/veer_test_plugin_hostile.wasm"));

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
/// model gives), and returns how many each backend received.
pub fn drive(picker: &Picker, n: usize, model: Model<'_>) -> std::collections::BTreeMap<BackendId, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let mut request = request();
    for _ in 0..n {
        let (choice, back) = picker.pick(request, first_attempt());
        request = back;
        let Some(choice) = choice else { continue };
        *counts.entry(choice.backend).or_default() += 1;
        let (latency_us, ok) = model(choice.backend);
        picker.observe(Outcome {
            backend: choice.backend,
            picked: choice.by_plugin,
            status: if ok { 200 } else { 500 },
            latency_us,
            error: None,
        });
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
        backends: backends
            .iter()
            .map(|(name, address)| veer::pool::BackendSpec {
                name: name.to_string(),
                address: *address,
                weight: 1,
                protocol: veer::pool::BackendProtocol::Http1,
                max_concurrent: None,
            })
            .collect(),
        picker: veer::plugin::PluginSource::parse(picker),
        params: vec![],
        proxy,
        limits: Limits { seed: Some(11), ..Limits::default() },
        health: veer::health::HealthConfig::default(),
        observe: veer::observe::ObserveConfig::default(),
        control: veer::config::ControlOptions::default(),
        canary: None,
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
