//! The serving side of a simulated backend: listener, connections, the request
//! model, and the control handle.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::profile::{BackendProfile, FailureKind, InvalidProfile, PhasedProfile};
use super::{SimBackendSpec, SimError};
use veer_core::hash::fnv1a;

/// How long [`SimBackend::shutdown`] lets in-flight requests finish before it
/// closes the remaining connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Response header naming the backend that answered (also on injected 500s).
pub const BACKEND_HEADER: &str = "x-sim-backend";
/// Response header: how many request-body bytes the backend read.
pub const REQUEST_BYTES_HEADER: &str = "x-sim-request-bytes";
/// Response header: the request target (path and query) the backend received.
pub const PATH_HEADER: &str = "x-sim-path";
/// Request header: answer with this many body bytes (streamed) instead of the name.
pub const RESPONSE_BYTES_HEADER: &str = "x-sim-response-bytes";
/// Request header: with value `1`, answer with the request's headers as a JSON object.
pub const ECHO_HEADERS_HEADER: &str = "x-sim-echo-headers";

/// Size of the chunks a large response is streamed in.
const CHUNK_SIZE: usize = 64 * 1024;
static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

/// A running simulated backend, and the handle that controls it.
///
/// Cheap to clone; every clone controls the same backend. Dropping the last
/// clone kills the backend (like [`SimBackend::kill`], without waiting), so keep
/// one around for as long as it should serve.
///
/// What it serves, on HTTP/1.1 and HTTP/2 with prior knowledge (h2c):
///
/// - `/healthz`: `200 ok`, or `503` while [`SimBackend::set_healthy`]`(false)`.
/// - `/stats`: the [`SimStats`] as JSON:
///   `{"name", "requests", "failures", "in_flight", "mean_latency_ms", "healthy"}`.
/// - anything else is a *modelled* request: the backend draws a failure and a
///   latency from its [`BackendProfile`], reads (and counts, without keeping) the
///   whole request body, waits out the latency, then answers with one of, in order:
///   - an injected failure ([`FailureKind`]);
///   - HTTP/1.1 `Connection: upgrade` + `Upgrade: x`: `101 Switching Protocols`
///     with the same `Upgrade`, then every byte received is echoed back;
///   - [`ECHO_HEADERS_HEADER`]`: 1`: a JSON object of the request headers as
///     received (repeated headers joined with `", "`);
///   - [`RESPONSE_BYTES_HEADER`]`: N`: `N` bytes of body, streamed in 64 KiB chunks;
///   - otherwise `"{name}\n"`.
///
///   Every modelled answer carries [`BACKEND_HEADER`], [`REQUEST_BYTES_HEADER`]
///   and [`PATH_HEADER`].
///
/// Randomness is seeded per backend and per request (the `n`-th modelled request
/// always draws the same failure and latency), so a run is reproducible apart
/// from timing.
#[derive(Clone)]
pub struct SimBackend {
    inner: Arc<Inner>,
}

/// Counters of a backend since it started, from [`SimBackend::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    /// Modelled requests received (not `/healthz` or `/stats`).
    pub requests: u64,
    /// Modelled requests that were made to fail (any [`FailureKind`]).
    pub failures: u64,
    /// Modelled requests being served now (hanging ones included).
    pub in_flight: u64,
    /// Mean time from a request's arrival to its answer (successes, injected 500s
    /// and resets; not hangs), zero before the first answer.
    pub mean_latency: Duration,
}

struct Inner {
    shared: Arc<Shared>,
    /// Lifecycle changes are rare and may wait (for a bind, for connections to
    /// close); an async mutex serialises them. Never touched by requests.
    life: tokio::sync::Mutex<Life>,
}

enum Life {
    /// Serving; the sender tells every task of this incarnation when to stop.
    Serving(watch::Sender<Run>),
    Killed,
    ShutDown,
}

/// What the tasks of one incarnation (listening until a kill) should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Serving,
    /// Stop accepting, finish what is in flight.
    Draining,
    /// Drop everything now, resetting connections.
    Aborted,
}

/// State the serving tasks share with the handle.
struct Shared {
    name: String,
    name_header: HeaderValue,
    address: SocketAddr,
    seed: u64,
    started: Instant,
    profile: Mutex<PhasedProfile>,
    healthy: AtomicBool,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicU64,
    answered: AtomicU64,
    latency_total_ns: AtomicU64,
}

impl SimBackend {
    /// Validates `spec`, binds `address` (port 0 picks a free port; see
    /// [`SimBackend::addr`]) and starts serving.
    ///
    /// Phases are timed from now.
    pub async fn start(spec: SimBackendSpec, address: SocketAddr) -> Result<SimBackend, SimError> {
        spec.validate().map_err(|source| SimError::Invalid { name: spec.name.clone(), source })?;
        let listener = bind(&spec.name, address).await?;
        let address =
            listener.local_addr().map_err(|source| SimError::Bind { name: spec.name.clone(), address, source })?;
        let name_header = HeaderValue::from_str(&spec.name).map_err(|_| SimError::Invalid {
            name: spec.name.clone(),
            source: InvalidProfile { problems: vec!["name must be printable ASCII".to_string()] },
        })?;
        let shared = Arc::new(Shared {
            seed: draw_seed(&spec),
            name: spec.name,
            name_header,
            address,
            started: Instant::now(),
            profile: Mutex::new(PhasedProfile::new(spec.profile, spec.phases)),
            healthy: AtomicBool::new(true),
            counters: Counters::default(),
        });
        let run = spawn_incarnation(shared.clone(), listener);
        tracing::debug!(name = %shared.name, %address, "sim backend serving");
        Ok(SimBackend { inner: Arc::new(Inner { shared, life: tokio::sync::Mutex::new(Life::Serving(run)) }) })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.inner.shared.address
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The profile in force now.
    pub fn profile(&self) -> BackendProfile {
        self.inner.shared.current_profile(Instant::now()).as_ref().clone()
    }

    /// Replaces the profile in force, from the next request on. A phase that
    /// has not begun yet still takes over at its time.
    pub fn set_profile(&self, profile: BackendProfile) -> Result<(), InvalidProfile> {
        profile.validate()?;
        let shared = &self.inner.shared;
        shared.profile.lock().set(shared.started.elapsed(), profile);
        Ok(())
    }

    /// Makes `/healthz` answer 200 (`true`) or 503 (`false`). Modelled requests
    /// are served either way.
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.shared.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Whether `/healthz` answers 200.
    pub fn is_healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::Relaxed)
    }

    /// The counters since the backend started (they survive kill and revive).
    pub fn stats(&self) -> SimStats {
        self.inner.shared.stats()
    }

    /// Makes the backend look dead: stops listening (new connections are
    /// refused) and resets every open connection, including upgraded ones,
    /// without answering what is in flight. Returns once all of that is done.
    /// Does nothing if the backend is not serving.
    pub async fn kill(&self) {
        let mut life = self.inner.life.lock().await;
        if let Life::Serving(run) = std::mem::replace(&mut *life, Life::Killed) {
            stop(run, Run::Aborted).await;
            tracing::debug!(name = %self.name(), "sim backend killed");
        }
    }

    /// Listens again on the same address after a [`SimBackend::kill`] (does
    /// nothing while serving). Fails if the address has been taken meanwhile or
    /// the backend was shut down.
    pub async fn revive(&self) -> Result<(), SimError> {
        let mut life = self.inner.life.lock().await;
        match *life {
            Life::Serving(_) => Ok(()),
            Life::ShutDown => Err(SimError::ShutDown { name: self.name().to_string() }),
            Life::Killed => {
                let listener = bind(self.name(), self.addr()).await?;
                *life = Life::Serving(spawn_incarnation(self.inner.shared.clone(), listener));
                tracing::debug!(name = %self.name(), "sim backend revived");
                Ok(())
            }
        }
    }

    /// Stops for good: stops accepting, lets in-flight requests finish (hanging
    /// ones are released by closing their connection, upgraded connections are
    /// closed), and after [`SHUTDOWN_GRACE`] resets whatever is left. Returns
    /// when every connection is closed.
    pub async fn shutdown(&self) {
        let mut life = self.inner.life.lock().await;
        if let Life::Serving(run) = std::mem::replace(&mut *life, Life::ShutDown) {
            let _ = run.send(Run::Draining);
            if tokio::time::timeout(SHUTDOWN_GRACE, run.closed()).await.is_err() {
                tracing::warn!(name = %self.name(), grace = ?SHUTDOWN_GRACE, "sim backend: grace period over, resetting connections");
                stop(run, Run::Aborted).await;
            }
        }
    }
}

impl std::fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBackend").field("name", &self.name()).field("addr", &self.addr()).finish_non_exhaustive()
    }
}

impl Shared {
    fn current_profile(&self, now: Instant) -> Arc<BackendProfile> {
        self.profile.lock().at(now.saturating_duration_since(self.started))
    }

    fn stats(&self) -> SimStats {
        let counters = &self.counters;
        let answered = counters.answered.load(Ordering::Relaxed);
        let total = counters.latency_total_ns.load(Ordering::Relaxed);
        SimStats {
            requests: counters.requests.load(Ordering::Relaxed),
            failures: counters.failures.load(Ordering::Relaxed),
            in_flight: counters.in_flight.load(Ordering::Relaxed),
            mean_latency: Duration::from_nanos(total.checked_div(answered).unwrap_or(0)),
        }
    }
}

/// Sends `run` to every task of an incarnation and waits until all are gone
/// (each holds a receiver, so `closed` means the listener and every connection
/// have been dropped).
async fn stop(sender: watch::Sender<Run>, run: Run) {
    let _ = sender.send(run);
    sender.closed().await;
}

async fn bind(name: &str, address: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(address).await.map_err(|source| SimError::Bind { name: name.to_string(), address, source })
}

/// Starts serving `listener`; the returned sender stops it.
fn spawn_incarnation(shared: Arc<Shared>, listener: TcpListener) -> watch::Sender<Run> {
    let (sender, receiver) = watch::channel(Run::Serving);
    tokio::spawn(serve(shared, listener, receiver));
    sender
}

/// The state to act on; a dropped handle means abort.
fn current(run: &watch::Receiver<Run>) -> Run {
    if run.has_changed().is_err() { Run::Aborted } else { *run.borrow() }
}

/// Resolves when the incarnation stops serving (drain, abort, or handle dropped).
async fn stopping(run: &mut watch::Receiver<Run>) {
    let _ = run.wait_for(|run| *run != Run::Serving).await;
}

/// Resolves when the incarnation is aborted (or the handle dropped).
async fn aborted(run: &mut watch::Receiver<Run>) {
    let _ = run.wait_for(|run| *run == Run::Aborted).await;
}

/// Accepts and serves connections until told to stop.
async fn serve(shared: Arc<Shared>, listener: TcpListener, mut run: watch::Receiver<Run>) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(name = %shared.name, %error, "sim backend: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping(&mut run) => break,
        };
        let _ = stream.set_nodelay(true);
        let reset = Arc::new(AtomicBool::new(false));
        let service = {
            let (shared, run, reset) = (shared.clone(), run.clone(), reset.clone());
            hyper::service::service_fn(move |request| handle(shared.clone(), request, run.clone(), reset.clone()))
        };
        let io = TokioIo::new(ResettableStream { stream, reset: reset.clone() });
        let connection = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        let mut run = run.clone();
        let name = shared.name.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::trace!(%name, %client, %error, "sim backend: connection ended with an error");
                    }
                }
                // Dropping the connection with the flag set resets it.
                () = aborted(&mut run) => reset.store(true, Ordering::Relaxed),
            }
        });
    }
    // Closing the listener now is what makes new connections be refused.
    drop(listener);
    if current(&run) == Run::Draining {
        tokio::select! {
            () = graceful.shutdown() => {}
            () = aborted(&mut run) => {}
        }
    }
}

/// Why a request gets no HTTP answer; hyper then drops the connection (HTTP/1)
/// or resets the stream (HTTP/2).
#[derive(Debug, thiserror::Error)]
enum NoAnswer {
    #[error("simulated connection reset")]
    Reset,
    #[error("the sim backend is stopping")]
    Stopping,
    #[error("reading the request body failed: {0}")]
    Body(#[source] hyper::Error),
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    mut run: watch::Receiver<Run>,
    reset: Arc<AtomicBool>,
) -> Result<Response<SimBody>, NoAnswer> {
    match request.uri().path() {
        "/healthz" => Ok(health(&shared)),
        "/stats" => Ok(stats(&shared)),
        _ => tokio::select! {
            answer = modelled(&shared, request, run.clone(), reset) => answer,
            () = aborted(&mut run) => Err(NoAnswer::Stopping),
        },
    }
}

fn health(shared: &Shared) -> Response<SimBody> {
    if shared.healthy.load(Ordering::Relaxed) {
        text(StatusCode::OK, "ok\n".to_string())
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n".to_string())
    }
}

fn stats(shared: &Shared) -> Response<SimBody> {
    let stats = shared.stats();
    let json = serde_json::json!({
        "name": shared.name,
        "requests": stats.requests,
        "failures": stats.failures,
        "in_flight": stats.in_flight,
        "mean_latency_ms": stats.mean_latency.as_secs_f64() * 1e3,
        "healthy": shared.healthy.load(Ordering::Relaxed),
    });
    json_response(StatusCode::OK, &json)
}

/// What a successful modelled request is answered with.
enum Shape {
    Name,
    Bytes(u64),
    EchoHeaders,
    Upgrade(HeaderValue),
}

impl Shape {
    /// Reads the request's `x-sim-*` and upgrade headers; `Err` is a message for a 400.
    fn of(request: &Request<Incoming>) -> Result<Shape, String> {
        let headers = request.headers();
        if request.version() < Version::HTTP_2
            && has_token(headers, header::CONNECTION, "upgrade")
            && let Some(protocol) = headers.get(header::UPGRADE)
        {
            return Ok(Shape::Upgrade(protocol.clone()));
        }
        if headers.get(ECHO_HEADERS_HEADER).is_some_and(|value| value == "1" || value == "true") {
            return Ok(Shape::EchoHeaders);
        }
        match headers.get(RESPONSE_BYTES_HEADER) {
            None => Ok(Shape::Name),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|value| value.trim().parse().ok())
                .map(Shape::Bytes)
                .ok_or_else(|| format!("{RESPONSE_BYTES_HEADER} must be a number of bytes, got {value:?}\n")),
        }
    }
}

/// Whether a comma-separated header (possibly repeated) holds `token`.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Counts a modelled request as in flight while it lives.
struct InFlight<'a> {
    counters: &'a Counters,
    /// How many were in flight when this one arrived, itself included.
    count: u64,
}

impl<'a> InFlight<'a> {
    fn enter(counters: &'a Counters) -> Self {
        let count = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        InFlight { counters, count }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The seed of a backend's per-request draws (failure, then latency): the
/// spec's seed with its name mixed in. The simulator draws the same way.
pub(crate) fn draw_seed(spec: &SimBackendSpec) -> u64 {
    spec.seed ^ fnv1a(spec.name.as_bytes())
}

async fn modelled(
    shared: &Shared,
    request: Request<Incoming>,
    mut run: watch::Receiver<Run>,
    reset: Arc<AtomicBool>,
) -> Result<Response<SimBody>, NoAnswer> {
    let arrived = Instant::now();
    let shape = match Shape::of(&request) {
        Ok(shape) => shape,
        Err(message) => return Ok(text(StatusCode::BAD_REQUEST, message)),
    };
    let index = shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let in_flight = InFlight::enter(&shared.counters);
    let profile = shared.current_profile(arrived);
    let (failure, latency) = profile.draw(shared.seed, index, in_flight.count);
    if failure.is_some() {
        shared.counters.failures.fetch_add(1, Ordering::Relaxed);
    }
    if failure == Some(FailureKind::Hang) {
        // Until the client gives up (hyper drops this future) or the backend stops.
        stopping(&mut run).await;
        return Err(NoAnswer::Stopping);
    }
    let (mut parts, body) = request.into_parts();
    let request_bytes = drain(body).await?;
    tokio::time::sleep(latency).await;
    shared.counters.answered.fetch_add(1, Ordering::Relaxed);
    let elapsed_ns = u64::try_from(arrived.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.counters.latency_total_ns.fetch_add(elapsed_ns, Ordering::Relaxed);
    let mut response = match (failure, shape) {
        (Some(FailureKind::Reset), _) => {
            if parts.version < Version::HTTP_2 {
                // Dropping the connection will now reset it instead of closing it.
                reset.store(true, Ordering::Relaxed);
            }
            return Err(NoAnswer::Reset);
        }
        (Some(_), _) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{} failed (simulated)\n", shared.name)),
        (None, Shape::Name) => text(StatusCode::OK, format!("{}\n", shared.name)),
        (None, Shape::Bytes(length)) => {
            let mut response = Response::new(SimBody::Repeat { remaining: length });
            let octets = HeaderValue::from_static("application/octet-stream");
            response.headers_mut().insert(header::CONTENT_TYPE, octets);
            response
        }
        (None, Shape::EchoHeaders) => json_response(StatusCode::OK, &headers_json(&parts.headers)),
        (None, Shape::Upgrade(protocol)) => match parts.extensions.remove::<OnUpgrade>() {
            Some(on_upgrade) => {
                tokio::spawn(echo(on_upgrade, run, reset));
                let mut response = Response::new(SimBody::empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                response.headers_mut().insert(header::UPGRADE, protocol);
                response
            }
            None => text(StatusCode::BAD_REQUEST, "this connection cannot be upgraded\n".to_string()),
        },
    };
    let headers = response.headers_mut();
    headers.insert(BACKEND_HEADER, shared.name_header.clone());
    headers.insert(REQUEST_BYTES_HEADER, HeaderValue::from(request_bytes));
    if let Some(target) = parts.uri.path_and_query().and_then(|target| HeaderValue::from_str(target.as_str()).ok()) {
        headers.insert(PATH_HEADER, target);
    }
    drop(in_flight);
    Ok(response)
}

/// Reads a request body to its end, frame by frame, keeping nothing; returns its length.
async fn drain(mut body: Incoming) -> Result<u64, NoAnswer> {
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(NoAnswer::Body)?.data_ref() {
            length += data.len() as u64;
        }
    }
    Ok(length)
}

/// Echoes an upgraded connection's bytes back until the client closes it or
/// the backend stops.
async fn echo(on_upgrade: OnUpgrade, mut run: watch::Receiver<Run>, reset: Arc<AtomicBool>) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "sim backend: upgrade failed");
            return;
        }
    };
    let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
    tokio::select! {
        _ = tokio::io::copy(&mut reader, &mut writer) => {}
        () = stopping(&mut run) => {
            if current(&run) == Run::Aborted {
                reset.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The request headers as a JSON object; repeated headers are joined with `", "`.
fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()).collect();
        object.insert(name.as_str().to_string(), serde_json::Value::String(values.join(", ")));
    }
    serde_json::Value::Object(object)
}

fn text(status: StatusCode, body: String) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json_response(status: StatusCode, json: &serde_json::Value) -> Response<SimBody> {
    let mut body = json.to_string();
    body.push('\n');
    let mut response = Response::new(SimBody::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A simulated backend's response body: small and whole, or a long run of
/// bytes produced chunk by chunk (nothing is buffered).
#[derive(Debug)]
enum SimBody {
    Full(Option<Bytes>),
    Repeat { remaining: u64 },
}

impl SimBody {
    fn empty() -> Self {
        SimBody::Full(None)
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            SimBody::Full(bytes) => bytes.take().filter(|bytes| !bytes.is_empty()),
            SimBody::Repeat { remaining } => {
                let length = usize::try_from(*remaining).map_or(CHUNK_SIZE, |remaining| remaining.min(CHUNK_SIZE));
                *remaining -= length as u64;
                (length > 0).then(|| Bytes::from_static(&CHUNK[..length]))
            }
        };
        Poll::Ready(frame.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            SimBody::Repeat { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
            SimBody::Repeat { remaining } => SizeHint::with_exact(*remaining),
        }
    }
}

/// A TCP stream that, once `reset` is set, is reset (RST) rather than closed
/// (FIN) when dropped: how an injected [`FailureKind::Reset`] and a kill look
/// to the client.
struct ResettableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // SO_LINGER 0: close() sends an RST and discards unsent data.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reset.load(Ordering::Relaxed) {
            // No FIN before the RST: the client must see a reset, not an end of stream.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}
