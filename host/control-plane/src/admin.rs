//! The admin API (its own listener, loopback by default): live state of the
//! backends and the picker, and a live picker swap.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /` | the dashboard: a page (no data without the token) drawn from `GET /events` |
//! | `GET /events` | server-sent events: `stats` every second (every upstream and backend, rates, p50/p99), and `eligibility`, `breaker`, `ejection`, `drain`, `membership`, `swap`, `trial`, `reload` as they happen |
//! | `GET /status` | picker (identity, health, counters), admission control, every backend's live numbers, and each discovered source (DNS, SRV, file: its backends, last success, last error) |
//! | `GET /snapshot` | everything an operator reads: request counters, picker, backends, access log |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when a backend can be picked and the picker works, else 503 with reasons |
//! | `GET /health` | per backend: eligibility, checks, breaker, ejection, drain, latency, error rate, in-flight |
//! | `GET /picker` | the picker alone |
//! | `PUT /picker` | swap the picker: `{"source": "builtin:q-learning", "params": {"alpha": "0.3"}}` |
//! | `GET /candidate` | the candidate picker's trial: both pickers' requests, errors, latency, the rule's verdict; and how the last trial ended |
//! | `PUT /candidate` | start (or replace) a trial: `{"source": "builtin:prequal", "params": {}, "share": 10, "promote": {"min_requests": 1000, "margin": 5}}` (`promote` optional) |
//! | `DELETE /candidate` | stop the trial; the serving picker stays |
//! | `POST /candidate/promote` | make the candidate the serving picker now (the live instance, with what it learned) |
//! | `POST /backends/{name}/drain` | no new attempts to the backend; those in flight finish |
//! | `POST /backends/{name}/undrain` | back in rotation (slow start applies) |
//! | `GET /backends` | every backend's live numbers and health |
//! | `POST /backends` | add: `{"name": "api-4", "address": "127.0.0.1:9004", "weight": 2}` (slow start applies) |
//! | `DELETE /backends/{name}` | remove; attempts in flight finish |
//! | `PUT /backends/{name}/weight` | `{"weight": 5}`; live state kept |
//! | `GET /ejected` | backends ejected by outlier detection now |
//! | `GET /config` | the config in effect (live backends and picker; token redacted) |
//! | `POST /reload` | re-read the config file and apply it; an invalid one is refused with every problem |
//! | `POST /selftest` | smoke-call the picker and check that a backend is eligible |
//! | `GET /canary` | the canary split, picker and backends |
//! | `/upstreams/{name}/…` | `picker`, `candidate`, `backends` as above, for one upstream group |
//! | `PUT /canary` | set the split: `{"percent": 10, "header": {"name": "x-canary", "value": "1"}}` |
//! | `DELETE /canary` | clear: percent 0 (the group stays, idle) |
//!
//! With a token configured, every request needs `Authorization: Bearer TOKEN`
//! (compared in constant time), except the probes: `GET /healthz` and `GET
//! /readyz` answer anyone with their status code and `{"status": ...}` only
//! (the readiness problems need the token); without one, the server refuses to bind the
//! admin API beyond loopback. Answers are JSON (except `/metrics`); errors are
//! `{"error": "..."}` with a 4xx/5xx status.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use std::net::SocketAddr;

use crate::config::reload::{ReloadError, Reloader};
use crate::dashboard::{EventStream, Events, PAGE};
use http_body_util::Either;
use veer_data_plane::admission::AdmissionSnapshot;
use veer_data_plane::health::BackendHealth;
use veer_data_plane::observe::snapshot::{PickerSnapshot, picker_snapshot, snapshot};
use veer_data_plane::pool::{BackendProtocol, BackendSnapshot, BackendSpec, MAX_WEIGHT};
use veer_data_plane::proxy::Proxy;
use veer_data_plane::routing::canary::CanarySplit;
use veer_data_plane::upstream::Upstream;
use veer_plugin_runtime::{PickerHealth, PluginSource, TrialSpec};

/// A listener's TLS as `/listeners` shows it: the settings and each
/// certificate served now, with its seconds to expiry.
fn tls_view(tls: &veer_data_plane::tls::ListenerTls) -> serde_json::Value {
    let now = std::time::SystemTime::now();
    let certificates: Vec<_> = tls
        .certificates()
        .into_iter()
        .map(|c| serde_json::json!({ "expires_in_seconds": c.seconds_to_expiry(now) as i64, "certificate": c }))
        .collect();
    serde_json::json!({ "settings": tls.settings(), "certificates": certificates })
}

/// Largest admin request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(serde::Serialize)]
struct StatusView {
    picker: PickerSnapshot,
    admission: AdmissionSnapshot,
    backends: Vec<BackendView>,
    /// Every discovered source of every group (empty when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    discovery: Vec<crate::discovery::SourceStatus>,
}

/// A backend's live numbers and its health, side by side.
#[derive(serde::Serialize)]
struct BackendView {
    #[serde(flatten)]
    live: BackendSnapshot,
    health: Option<BackendHealth>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapRequest {
    source: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// `PUT /candidate`: the candidate, its share (percent) and optional rule.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialRequest {
    source: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    share: f64,
    #[serde(default)]
    promote: Option<crate::config::PromoteConfig>,
}

/// The admin API: the running proxy, its reloader, and the token requests
/// must carry (if any).
#[derive(Debug)]
pub struct Admin {
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    token: Option<String>,
    /// Where `PUT /picker` may load component files from, canonical.
    plugin_dirs: Vec<PathBuf>,
    /// The live stream of `GET /events`.
    events: Arc<Events>,
}

/// An admin answer: JSON or text at once, or the event stream.
pub type AdminBody = Either<Full<Bytes>, EventStream>;

/// `POST /backends`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBackend {
    name: String,
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    max_concurrent: Option<u32>,
    #[serde(default)]
    protocol: BackendProtocol,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

impl AddBackend {
    /// The backend to add, or what is wrong with the request.
    fn into_spec(self) -> Result<BackendSpec, String> {
        let Ok(address) = self.address.parse::<SocketAddr>() else {
            return Err(format!("address '{}' is not IP:PORT", self.address));
        };
        let spec = BackendSpec {
            name: self.name,
            address,
            weight: self.weight,
            protocol: self.protocol,
            max_concurrent: self.max_concurrent,
            labels: self.labels,
        };
        match spec.problems().into_iter().next() {
            Some((field, message)) => Err(format!("{field} {message}")),
            None => Ok(spec),
        }
    }
}

/// Parses and checks an admin request body as the route `method path` would
/// (without acting on it); for the fuzz targets. `Err` says what is wrong.
#[doc(hidden)]
pub fn check_body(method: &Method, path: &str, bytes: &[u8]) -> Result<(), String> {
    let problem = |e: serde_json::Error| e.to_string();
    match (method, path) {
        (&Method::PUT, "/picker") => {
            let swap: SwapRequest = serde_json::from_slice(bytes).map_err(problem)?;
            let _ = PluginSource::parse(&swap.source);
            Ok(())
        }
        (&Method::POST, "/backends") => {
            serde_json::from_slice::<AddBackend>(bytes).map_err(problem)?.into_spec().map(|_| ())
        }
        (&Method::PUT, "/canary") => {
            let split: CanarySplit = serde_json::from_slice(bytes).map_err(problem)?;
            let problems = split.problems("");
            if problems.is_empty() { Ok(()) } else { Err(format!("{problems:?}")) }
        }
        _ => serde_json::from_slice::<SetWeight>(bytes).map(|_| ()).map_err(problem),
    }
}

/// `PUT /backends/{name}/weight`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetWeight {
    weight: u32,
}

impl Admin {
    /// The admin API of `proxy`; with `token`, every request must carry
    /// `Authorization: Bearer TOKEN`.
    pub fn new(
        proxy: Arc<Proxy>,
        reloader: Arc<Reloader>,
        token: Option<String>,
        plugin_dirs: Vec<PathBuf>,
    ) -> Arc<Admin> {
        let plugin_dirs = plugin_dirs.iter().filter_map(|dir| dir.canonicalize().ok()).collect();
        Arc::new(Admin { proxy, reloader, token, plugin_dirs, events: Events::new() })
    }

    /// Whether the admin API may load `source`: a built-in, the host's round
    /// robin, or a file inside a plugin directory (symbolic links resolved).
    /// The refusal does not say whether a file outside exists.
    fn may_load(&self, source: &PluginSource) -> Result<(), String> {
        let PluginSource::Path(path) = source else { return Ok(()) };
        let inside = path.canonicalize().is_ok_and(|path| self.plugin_dirs.iter().any(|dir| path.starts_with(dir)));
        if inside {
            return Ok(());
        }
        let dirs: Vec<_> = self.plugin_dirs.iter().map(|d| d.display().to_string()).collect();
        Err(format!(
            "{path:?} is not a component file in a plugin directory; the admin API loads builtin:NAME, \
             native:round-robin, or files under admin.plugin_dirs (--plugin-dir): {dirs:?}",
            path = path.display().to_string()
        ))
    }

    /// Serves the admin API on `listener` until `shutdown` completes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let events = self.events.clone().run(self.proxy.clone(), self.reloader.clone(), std::future::pending());
        tokio::pin!(events);
        loop {
            let (stream, _) = tokio::select! {
                accepted = veer_data_plane::net::accept(&listener, "admin") => accepted,
                () = &mut events => return,
                () = &mut shutdown => return,
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(request).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<AdminBody> {
        // The page holds no data: it asks for the token before it reads any.
        if request.method() == Method::GET && matches!(request.uri().path(), "/" | "/index.html") {
            let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(PAGE.as_bytes()))));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                ),
            );
            return response;
        }
        if request.method() == Method::GET && request.uri().path() == "/favicon.ico" {
            let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
            *response.status_mut() = StatusCode::NO_CONTENT;
            return response;
        }
        self.handle_data(request).await
    }

    async fn handle_data(&self, request: Request<Incoming>) -> Response<AdminBody> {
        if let Some(token) = &self.token {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                // Orchestrators' probes carry no secrets: they get the status, never the details.
                if request.method() == Method::GET {
                    match request.uri().path() {
                        "/healthz" => {
                            return json(StatusCode::OK, &serde_json::json!({ "status": "alive" })).map(Either::Left);
                        }
                        "/readyz" => {
                            let status = readyz(&self.proxy).status();
                            let word = if status.is_success() { "ready" } else { "not ready" };
                            return json(status, &serde_json::json!({ "status": word })).map(Either::Left);
                        }
                        _ => {}
                    }
                }
                let mut response =
                    error(StatusCode::UNAUTHORIZED, "missing or wrong token; send Authorization: Bearer TOKEN");
                response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                return response.map(Either::Left);
            }
        }
        if request.method() == Method::GET && request.uri().path() == "/events" {
            let mut response = Response::new(Either::Right(self.events.subscribe()));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
            headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
            return response;
        }
        route(self, request).await.map(Either::Left)
    }
}

/// Compares two byte strings in time that depends only on their lengths, so
/// that timing does not reveal how much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    shape: &str,
) -> Result<T, Response<Full<Bytes>>> {
    let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("expected {shape}: {e}")))
}

/// The endpoint table; each endpoint with more than a line to it has a
/// handler of its own below.
async fn route(admin: &Admin, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let proxy = &*admin.proxy;
    // Owned, so that a handler can consume the request for its body.
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    match (&method, path.as_str()) {
        (&Method::GET, "/status") => {
            let status = StatusView { discovery: admin.reloader.discovery().status(), ..status(proxy) };
            json(StatusCode::OK, &status)
        }
        (&Method::GET, "/snapshot") => json(StatusCode::OK, &snapshot(proxy.metrics(), &proxy.main())),
        (&Method::GET, "/metrics") => metrics(proxy),
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "alive" })),
        (&Method::GET, "/readyz") => readyz(proxy),
        (&Method::GET, "/health") => json(StatusCode::OK, &backend_health(proxy)),
        (&Method::GET, "/ejected") => {
            let ejected: Vec<_> =
                proxy.health().snapshot().into_iter().filter(|b| b.ejected_for_ms.is_some()).collect();
            json(StatusCode::OK, &ejected)
        }
        (&Method::GET, "/config") => json(StatusCode::OK, &admin.reloader.effective()),
        (&Method::POST, "/reload") => reload(admin).await,
        (&Method::POST, "/selftest") => self_test(proxy).await,
        (&Method::GET, "/picker") => json(StatusCode::OK, &picker_snapshot(&proxy.slot())),
        (&Method::PUT, "/picker") => swap_picker(admin, proxy.main(), request).await,
        (method, "/candidate" | "/candidate/promote") => {
            candidate(admin, proxy.main(), method, &path[1..], request).await
        }
        (&Method::GET, "/upstreams") => {
            let routes = proxy.routes();
            json(StatusCode::OK, &routes.upstreams().iter().map(|group| group_view(group)).collect::<Vec<_>>())
        }
        (&Method::GET, "/routes") => json(StatusCode::OK, &proxy.routes().specs()),
        (&Method::GET, "/listeners") => {
            let (routes, bound, tls) = (proxy.routes(), proxy.listeners(), proxy.listener_tls());
            let listeners: Vec<_> = routes
                .listener_specs()
                .map(|(name, specs)| {
                    let tls = tls.get(name).map(|tls| tls_view(tls));
                    serde_json::json!({ "name": name, "address": bound.get(name), "tls": tls, "routes": specs })
                })
                .collect();
            json(StatusCode::OK, &listeners)
        }
        (method, path) if path.starts_with("/upstreams/") => {
            let rest = &path["/upstreams/".len()..];
            let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
            match proxy.routes().upstream(name).cloned() {
                Some(group) => upstream(admin, group, method, action, request).await,
                None => error(StatusCode::NOT_FOUND, &format!("no upstream named {name:?}; try GET /upstreams")),
            }
        }
        (&Method::GET, "/canary") => match proxy.canary() {
            Some((group, split)) => canary_view(&group, &split),
            None => no_canary(),
        },
        (&Method::PUT, "/canary") => match proxy.canary() {
            Some(_) => set_canary_split(proxy, request).await,
            None => no_canary(),
        },
        (&Method::DELETE, "/canary") => match proxy.canary() {
            Some((_, split)) => match proxy.set_canary_split(CanarySplit { percent: 0.0, ..split }) {
                Some(split) => json(StatusCode::OK, &split),
                None => no_canary(),
            },
            None => no_canary(),
        },
        (&Method::GET, "/backends") => json(StatusCode::OK, &status(proxy).backends),
        (&Method::POST, "/backends") => add_backend(proxy, &proxy.main(), request).await,
        (method, path) if path.starts_with("/backends/") => {
            let rest = &path["/backends/".len()..];
            let (name, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
            change_backend(&proxy.main(), method, name, action, request).await
        }
        (
            _,
            "/status" | "/snapshot" | "/metrics" | "/healthz" | "/readyz" | "/health" | "/picker" | "/backends"
            | "/events" | "/ejected" | "/config" | "/reload" | "/selftest" | "/canary" | "/upstreams" | "/routes"
            | "/listeners",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, path) => error(StatusCode::NOT_FOUND, &format!("no admin endpoint {path}; try GET /status")),
    }
}

/// `GET /metrics`: the Prometheus text format.
fn metrics(proxy: &Proxy) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(proxy.metrics().render(&proxy.live()))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// `GET /readyz`: 200 when veer can serve, 503 with the problems otherwise.
fn readyz(proxy: &Proxy) -> Response<Full<Bytes>> {
    let (problems, degraded) = readiness(proxy);
    if problems.is_empty() && degraded.is_empty() {
        json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
    } else if problems.is_empty() {
        json(StatusCode::OK, &serde_json::json!({ "status": "ready", "degraded": degraded }))
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "status": "not ready", "problems": problems }))
    }
}

/// `POST /reload`: the config file again; an invalid one changes nothing.
async fn reload(admin: &Admin) -> Response<Full<Bytes>> {
    match admin.reloader.reload_file().await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(ReloadError::Invalid(errors)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({ "error": "the new config is invalid; the running one stays", "problems": errors.problems.iter().map(ToString::to_string).collect::<Vec<_>>() }),
        ),
        Err(e @ ReloadError::NoConfigFile) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

/// `POST /selftest`: an eligible backend exists and the picker passes its smoke test.
async fn self_test(proxy: &Proxy) -> Response<Full<Bytes>> {
    let mut problems: Vec<String> = no_eligible_backend(proxy).into_iter().collect();
    let picker = proxy.slot().current();
    match tokio::task::spawn_blocking(move || picker.self_test()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(e.to_string()),
        Err(e) => problems.push(format!("self-test task failed: {e}")),
    }
    let status = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(status, &serde_json::json!({ "ok": problems.is_empty(), "problems": problems }))
}

/// `/upstreams/{name}/…`: one group's view, picker and backends.
async fn upstream(
    admin: &Admin,
    group: Arc<Upstream>,
    method: &Method,
    action: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (method, action) {
        (&Method::GET, "") => json(StatusCode::OK, &group_view(&group)),
        (&Method::GET, "picker") => json(StatusCode::OK, &picker_snapshot(&group.slot)),
        (&Method::PUT, "picker") => swap_picker(admin, group, request).await,
        (method, "candidate" | "candidate/promote") => candidate(admin, group, method, action, request).await,
        (&Method::GET, "backends") => json(StatusCode::OK, &group_view(&group).backends),
        (&Method::POST, "backends") => add_backend(&admin.proxy, &group, request).await,
        (method, action) if action.starts_with("backends/") => {
            let rest = &action["backends/".len()..];
            let (name, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
            change_backend(&group, method, name, action, request).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "expected GET /upstreams/{name}, GET or PUT /upstreams/{name}/picker, GET, PUT or DELETE /upstreams/{name}/candidate, POST /upstreams/{name}/candidate/promote, GET or POST /upstreams/{name}/backends, or /upstreams/{name}/backends/{backend}[/weight|/drain|/undrain]",
        ),
    }
}

/// One upstream group: its name, picker and backends.
#[derive(serde::Serialize)]
struct GroupView {
    name: String,
    picker: PickerSnapshot,
    backends: Vec<BackendView>,
}

fn group_view(group: &Upstream) -> GroupView {
    let mut health: BTreeMap<_, _> = group.health.snapshot().into_iter().map(|h| (h.id, h)).collect();
    let backends =
        group.pool.all().iter().map(|b| BackendView { live: b.snapshot(), health: health.remove(&b.id) }).collect();
    GroupView { name: group.name.to_string(), picker: picker_snapshot(&group.slot), backends }
}

/// `PUT /picker` (the default group) and `PUT /upstreams/{name}/picker`: a
/// live swap of that group's picker only, to a built-in or a component in a
/// plugin directory.
async fn swap_picker(admin: &Admin, group: Arc<Upstream>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let swap: SwapRequest = match body(request, "{\"source\": \"...\", \"params\": {...}}").await {
        Ok(swap) => swap,
        Err(response) => return response,
    };
    let source = PluginSource::parse(&swap.source);
    if let Err(reason) = admin.may_load(&source) {
        return error(StatusCode::FORBIDDEN, &reason);
    }
    let slot = group.slot.clone();
    loading("swap", move || slot.swap(&source, swap.params.into_iter().collect())).await
}

/// Runs `load` (which compiles Wasm) off the async workers: 200 with its
/// report, 422 with the reason it failed (nothing changed), 500 if the
/// `task` itself failed.
async fn loading<T: serde::Serialize + Send + 'static>(
    task: &str,
    load: impl FnOnce() -> Result<T, veer_plugin_runtime::PluginError> + Send + 'static,
) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(load).await {
        Ok(Ok(report)) => json(StatusCode::OK, &report),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{task} task failed: {e}")),
    }
}

/// `/candidate` and `/candidate/promote` (the default group), and the same
/// under `/upstreams/{name}/`: the group's picker trial.
async fn candidate(
    admin: &Admin,
    group: Arc<Upstream>,
    method: &Method,
    action: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let slot = group.slot.clone();
    let none = || error(StatusCode::NOT_FOUND, "no candidate picker is on trial in this group");
    match (method, action) {
        (&Method::GET, "candidate") => {
            json(StatusCode::OK, &serde_json::json!({ "running": slot.trial(), "last": slot.last_trial() }))
        }
        (&Method::PUT, "candidate") => {
            let example = r#"{"source": "builtin:prequal", "params": {}, "share": 10, "promote": {"min_requests": 1000, "margin": 5}}"#;
            let wanted: TrialRequest = match body(request, example).await {
                Ok(wanted) => wanted,
                Err(response) => return response,
            };
            let problems = crate::config::trial_problems(wanted.share, wanted.promote.as_ref());
            if !problems.is_empty() {
                let problems: Vec<String> =
                    problems.into_iter().map(|(key, problem)| format!("{key}: {problem}")).collect();
                return error(StatusCode::BAD_REQUEST, &problems.join("; "));
            }
            let source = PluginSource::parse(&wanted.source);
            if let Err(reason) = admin.may_load(&source) {
                return error(StatusCode::FORBIDDEN, &reason);
            }
            let spec = TrialSpec {
                source,
                params: wanted.params.into_iter().collect(),
                share: wanted.share / 100.0,
                rule: wanted.promote.as_ref().map(crate::config::PromoteConfig::rule),
            };
            loading("trial", move || slot.start_trial(spec)).await
        }
        (&Method::DELETE, "candidate") => slot.stop_trial().map_or_else(none, |end| json(StatusCode::OK, &end)),
        (&Method::POST, "candidate/promote") => {
            slot.promote().map_or_else(none, |report| json(StatusCode::OK, &report))
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "expected GET, PUT or DELETE on candidate, or POST on candidate/promote",
        ),
    }
}

fn no_canary() -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, "no canary group is configured (canary: in the config file)")
}

/// `GET /canary`: the split, the canary's picker and its backends.
fn canary_view(group: &Upstream, split: &CanarySplit) -> Response<Full<Bytes>> {
    let mut health: BTreeMap<_, _> = group.health.snapshot().into_iter().map(|h| (h.id, h)).collect();
    let backends: Vec<_> =
        group.pool.all().iter().map(|b| BackendView { live: b.snapshot(), health: health.remove(&b.id) }).collect();
    let picker = group.slot.current();
    json(StatusCode::OK, &serde_json::json!({ "split": split, "picker": picker.info(), "backends": backends }))
}

/// `PUT /canary`: a new split, checked first.
async fn set_canary_split(proxy: &Proxy, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let shape = "{\"percent\": 10, \"header\": {\"name\": \"...\", \"value\": \"...\"}}";
    let split: CanarySplit = match body(request, shape).await {
        Ok(split) => split,
        Err(response) => return response,
    };
    let problems = split.problems("");
    if !problems.is_empty() {
        let text: Vec<_> = problems.iter().map(|(path, problem)| format!("{path}: {problem}")).collect();
        return error(StatusCode::BAD_REQUEST, &text.join("; "));
    }
    match proxy.set_canary_split(split) {
        Some(split) => json(StatusCode::OK, &split),
        None => no_canary(),
    }
}

/// `POST /backends` (the default group) and `POST /upstreams/{name}/backends`:
/// a new backend of that group (slow start applies).
async fn add_backend(proxy: &Proxy, group: &Upstream, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let add: AddBackend = match body(request, "{\"name\": \"...\", \"address\": \"IP:PORT\", \"weight\": N}").await {
        Ok(add) => add,
        Err(response) => return response,
    };
    let spec = match add.into_spec() {
        Ok(spec) => spec,
        Err(problem) => return error(StatusCode::BAD_REQUEST, &problem),
    };
    let name = spec.name.clone();
    // Checked and added as one change: two adds of one name cannot both pass.
    let added = group.health.change(|pool| {
        // Backend names are unique across every group (metrics and the admin API name them).
        let elsewhere = proxy.routes().upstreams().iter().any(|group| group.pool.by_name(&spec.name).is_some());
        if pool.by_name(&spec.name).is_some() || elsewhere {
            (vec![], vec![], false)
        } else {
            (vec![spec], vec![], true)
        }
    });
    if !added {
        return error(StatusCode::CONFLICT, &format!("a backend named {name:?} exists already"));
    }
    match group.health.backend(&name) {
        Some(health) => json(StatusCode::CREATED, &health),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "the backend was added and is gone already"),
    }
}

/// `DELETE /backends/{name}`, `PUT /backends/{name}/weight`,
/// `POST /backends/{name}/drain` and `/undrain`, on the default group or (under
/// `/upstreams/{upstream}/`) on the named one.
async fn change_backend(
    group: &Upstream,
    method: &Method,
    name: &str,
    action: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let unknown = || error(StatusCode::NOT_FOUND, &format!("no backend named {name:?}"));
    match (method, action) {
        (&Method::DELETE, "") => match group.health.remove(&[name]).as_slice() {
            [] => unknown(),
            _ => json(StatusCode::OK, &serde_json::json!({ "removed": name })),
        },
        (&Method::PUT, "weight") => {
            let set: SetWeight = match body(request, "{\"weight\": N}").await {
                Ok(set) => set,
                Err(response) => return response,
            };
            if !(1..=MAX_WEIGHT).contains(&set.weight) {
                return error(StatusCode::BAD_REQUEST, &format!("weight must be from 1 to {MAX_WEIGHT}"));
            }
            match group.health.set_weight(name, set.weight) {
                Some(health) => json(StatusCode::OK, &health),
                None => unknown(),
            }
        }
        (&Method::POST, "drain" | "undrain") => match group.health.set_drained(name, action == "drain") {
            Some(health) => json(StatusCode::OK, &health),
            None => unknown(),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "expected DELETE /backends/{name}, PUT /backends/{name}/weight, POST /backends/{name}/drain or /undrain",
        ),
    }
}

fn status(proxy: &Proxy) -> StatusView {
    let GroupView { picker, backends, .. } = group_view(&proxy.main());
    StatusView { picker, admission: proxy.admission().snapshot(), backends, discovery: Vec::new() }
}

/// The problem when no backend of the main group can be picked.
fn no_eligible_backend(proxy: &Proxy) -> Option<String> {
    let any = proxy.health().snapshot().iter().any(|b| b.eligible);
    (!any).then(|| "no backend is eligible".to_string())
}

/// What keeps `group` from serving well: no eligible backend, or a picker
/// whose fallback answers for it.
fn group_problems(group: &Upstream) -> Vec<String> {
    let mut problems = Vec::new();
    if !group.health.snapshot().iter().any(|b| b.eligible) {
        problems.push("no backend is eligible".to_string());
    }
    if let PickerHealth::FallbackOnly { reason } = group.slot.current().health() {
        problems.push(format!("the picker is faulting and the fallback answers: {reason}"));
    }
    problems
}

/// Why veer cannot serve traffic right now (empty when it can), and what
/// is wrong with some groups while others serve. With one group, any problem
/// makes veer unready. With several, veer stays ready while any group is
/// without problems: one service down must not take every other one out of
/// a load balancer's rotation.
fn readiness(proxy: &Proxy) -> (Vec<String>, Vec<String>) {
    let routes = proxy.routes();
    if let [group] = routes.upstreams() {
        return (group_problems(group), Vec::new());
    }
    let mut problems = Vec::new();
    let mut healthy = false;
    for group in routes.upstreams() {
        let found = group_problems(group);
        healthy |= found.is_empty();
        problems.extend(found.into_iter().map(|problem| format!("upstream {}: {problem}", group.name)));
    }
    if healthy { (Vec::new(), problems) } else { (problems, Vec::new()) }
}

/// One backend's health verdicts with the live numbers that explain them.
#[derive(serde::Serialize)]
struct BackendHealthView {
    #[serde(flatten)]
    health: BackendHealth,
    address: String,
    in_flight: u32,
    ewma_latency_ms: f64,
    requests: u64,
    failures: u64,
    /// Failed share of all attempts so far.
    error_rate: f64,
}

fn backend_health(proxy: &Proxy) -> Vec<BackendHealthView> {
    let mut health: BTreeMap<_, _> = proxy.health().snapshot().into_iter().map(|h| (h.id, h)).collect();
    proxy
        .pool()
        .all()
        .iter()
        .filter_map(|b| {
            let s = b.snapshot();
            Some(BackendHealthView {
                health: health.remove(&b.id)?,
                error_rate: if s.requests == 0 { 0.0 } else { s.failures as f64 / s.requests as f64 },
                address: s.address,
                in_flight: s.in_flight,
                ewma_latency_ms: s.ewma_latency_ms,
                requests: s.requests,
                failures: s.failures,
            })
        })
        .collect()
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}
