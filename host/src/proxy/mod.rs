//! The data path: accepts client requests, asks the picker for a backend per
//! attempt, forwards with pooled connections, retries within a budget, and
//! streams bodies both ways.

pub mod canary;
mod headers;
mod observed;
mod retry;
mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use headers::{RequestIds, X_REQUEST_ID};
pub use observed::ObservedBody;
use observed::RequestGuard;
pub use retry::{RetryBudget, RetryPolicy};
use workers::Workers;

use crate::admission::Admission;
use crate::health::{Admitted, AttemptOutcome, Health, Refusal};
use crate::observe::Metrics;
use crate::observe::access_log::AccessLog;
use crate::plugin::{BackendId, Choice, ErrorKind, HttpMethod, Outcome, PickContext, Picker, PickerSlot, RequestMeta};
use crate::pool::{BackendProtocol, BackendState, Pool};

/// Timeouts and retry rules of the data path. In a config file durations are
/// human-readable (`2s`, `500ms`); unset fields keep their defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Time to establish a TCP connection to a backend.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time from sending an attempt to receiving its response headers.
    #[serde(with = "humantime_serde")]
    pub response_header_timeout: Duration,
    /// Time from receiving a request to sending response headers, all attempts included.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
    /// How long an unused pooled backend connection is kept.
    #[serde(with = "humantime_serde")]
    pub backend_idle_timeout: Duration,
    /// How long a client connection may sit idle (or send headers) before it is closed.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// How long graceful shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Data-path threads; each serves its share of client connections with
    /// its own backend connection pools. Defaults to the number of cores.
    pub workers: usize,
    /// Retries.
    pub retry: RetryPolicy,
    /// Cookie-based session affinity; `None` (the default) turns it off.
    pub sticky: Option<StickyConfig>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2),
            response_header_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(60),
            backend_idle_timeout: Duration::from_secs(90),
            client_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            retry: RetryPolicy::default(),
            sticky: None,
        }
    }
}

/// Cookie-based session affinity, kept by the host whatever the picker: a
/// request carrying the cookie goes to the backend it names while that
/// backend is eligible and admits it; otherwise the picker chooses, and the
/// answer sets the cookie to the backend that served it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StickyConfig {
    /// The cookie's name; its value is a hash of the backend's name (no
    /// address or name is revealed to clients).
    pub cookie: String,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig { cookie: "veer_sticky".to_string() }
    }
}

/// What veer sends to a backend: the client's body streamed through, or an
/// empty body that can be sent again on a retry.
type OutgoingBody = Either<Incoming, Empty<Bytes>>;
/// What veer answers a client with: the backend's body streamed through, or
/// veer's own short error body.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The proxy: shared by every connection and request.
pub struct Proxy {
    canary: Option<Arc<canary::Canary>>,
    pool: Arc<Pool>,
    slot: Arc<PickerSlot>,
    health: Arc<Health>,
    config: ProxyConfig,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    budget: RetryBudget,
    request_ids: RequestIds,
    admission: Arc<Admission>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Why an attempt produced no usable response.
#[derive(Debug, Clone)]
enum AttemptError {
    Connect(String),
    Reset(String),
    Timeout(Duration),
}

/// The client end of one connection, worked out once for all its requests.
#[derive(Debug)]
struct ClientInfo {
    address: SocketAddr,
    /// The address's IP as `X-Forwarded-For` carries it.
    address_value: HeaderValue,
}

/// One data-path worker's pooled connections to backends.
#[derive(Debug)]
struct Clients {
    http1: Client<HttpConnector, OutgoingBody>,
    http2: Client<HttpConnector, OutgoingBody>,
}

impl Clients {
    fn new(config: &ProxyConfig) -> Clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = |http2_only: bool| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(config.backend_idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(http2_only)
                .build(connector.clone())
        };
        Clients { http1: client(false), http2: client(true) }
    }

    fn for_protocol(&self, protocol: BackendProtocol) -> &Client<HttpConnector, OutgoingBody> {
        match protocol {
            BackendProtocol::Http1 => &self.http1,
            BackendProtocol::Http2 => &self.http2,
        }
    }
}

impl Proxy {
    /// A proxy for the `main` group (and the `canary` group, if any), behind
    /// `admission`, recording into `metrics` and, if given, `access_log`.
    pub fn new(
        main: canary::Group,
        canary: Option<Arc<canary::Canary>>,
        admission: Arc<Admission>,
        config: ProxyConfig,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
    ) -> Arc<Self> {
        let canary::Group { pool, slot, health } = main;
        Arc::new(Proxy {
            canary,
            metrics,
            access_log: access_log.map(Arc::new),
            budget: RetryBudget::new(&config.retry),
            request_ids: RequestIds::default(),
            admission,
            pool,
            slot,
            health,
            config,
        })
    }

    /// The canary group, if one is configured.
    pub fn canary(&self) -> Option<&Arc<canary::Canary>> {
        self.canary.as_ref()
    }

    /// The backends' health.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The backend pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The picker slot.
    pub fn slot(&self) -> &Arc<PickerSlot> {
        &self.slot
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Admission control.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Starts the data-path workers and returns the future that serves
    /// clients on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge) until
    /// `shutdown` completes; then it stops accepting, lets in-flight requests
    /// finish for up to `shutdown_grace`, stops the workers and returns.
    pub fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<impl Future<Output = ()>> {
        let workers = Workers::start(self.config.workers, || Clients::new(&self.config))?;
        Ok(self.accept_loop(listener, shutdown, workers))
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>, workers: Workers) {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.config.client_idle_timeout);
        builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(20)));
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, client) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            // The stream moves to a worker's runtime, which must register it there.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%client, %error, "could not hand the connection to a worker");
                    continue;
                }
            };
            let watcher = graceful.watcher();
            let (proxy, builder) = (self.clone(), builder.clone());
            workers.spawn_connection(move |clients| async move {
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(error) => return tracing::warn!(%client, %error, "could not register the connection"),
                };
                let info =
                    Arc::new(ClientInfo { address: client, address_value: headers::client_address_value(client.ip()) });
                let service = hyper::service::service_fn(move |request| {
                    let (proxy, clients, info) = (proxy.clone(), clients.clone(), info.clone());
                    async move { Ok::<_, Infallible>(proxy.handle(&clients, request, &info).await) }
                });
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%client, error = %error, "client connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: no longer accepting, waiting for in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(self.config.shutdown_grace) => {
                tracing::warn!(grace = ?self.config.shutdown_grace, "shutdown grace period over; closing the remaining connections");
            }
        }
        workers.stop().await;
        if let Some(log) = self.access_log.clone() {
            // Joining the writer blocks for up to one write interval.
            let _ = tokio::task::spawn_blocking(move || log.finish()).await;
        }
    }

    /// Handles one client request; never fails (errors become 5xx responses).
    async fn handle(
        &self,
        clients: &Clients,
        mut request: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<ObservedBody> {
        let request_id = self.request_ids.ensure(request.headers_mut());
        let mut guard = RequestGuard::start(
            &self.metrics,
            self.access_log.as_ref(),
            request.method(),
            request.uri().path_and_query(),
            &request_id,
            client.address,
        );
        // Before anything else: a refused request must cost as little as possible.
        let permit = match self.admission.admit(request.headers(), client.address.ip()).await {
            Ok(permit) => permit,
            Err(refusal) => {
                let mut response = error_response(refusal.status, &refusal.message, &request_id);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(refusal.retry_after_seconds()));
                headers::append_via(response.headers_mut(), request.version());
                response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
                guard.answered(refusal.status);
                return response.map(|body| ObservedBody::new(body, guard));
            }
        };
        let client_upgrade = headers::is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let version = parts.version;
        let host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        headers::remove_hop_by_hop(&mut parts.headers);
        headers::add_forwarded(&mut parts.headers, &client.address_value, host.as_ref());
        headers::append_via(&mut parts.headers, version);
        if let Some(host) = host.filter(|_| !parts.headers.contains_key(header::HOST)) {
            // HTTP/2 clients send :authority instead of Host; HTTP/1.1 backends need Host.
            parts.headers.insert(header::HOST, host);
        }
        let mut response =
            match self.forward(clients, parts, body, client.address.ip(), client_upgrade, &mut guard).await {
                Ok(response) => response,
                Err((status, reason)) => error_response(status, &reason, &request_id),
            };
        // Held until the response headers (see the admission module for why not the body).
        permit.complete(response.status());
        // The backend's HTTP version is a property of veer's connection to it, not the client's.
        *response.version_mut() = version;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            headers::remove_hop_by_hop(response.headers_mut());
        }
        headers::append_via(response.headers_mut(), version);
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        guard.answered(status);
        response.map(|body| ObservedBody::new(body, guard))
    }

    /// The attempt loop. `Err` carries the status and reason of veer's own answer.
    async fn forward(
        &self,
        clients: &Clients,
        parts: http::request::Parts,
        body: Incoming,
        client_ip: IpAddr,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        guard: &mut RequestGuard,
    ) -> Result<Response<ProxyBody>, (StatusCode, String)> {
        let started = Instant::now();
        let deadline = started + self.config.total_timeout;
        let retry = &self.config.retry;
        let idempotent = is_idempotent(&parts.method) || retry.retry_non_idempotent;
        // A body that was streamed to one backend cannot be sent again, so only
        // requests without one are retried; an upgrade is never retried.
        let replayable = idempotent && body.is_end_stream() && client_upgrade.is_none();
        let mut body = (!body.is_end_stream()).then_some(body);
        let max_attempts = if replayable { retry.max_attempts.max(1) } else { 1 };
        self.budget.deposit();
        let method = wit_method(&parts.method);
        // The picker that routes the first attempt routes them all and hears every outcome.
        let (pool, slot, health) = match self.canary.as_deref().filter(|c| c.takes(&parts.headers)) {
            Some(canary) => (&canary.group.pool, &canary.group.slot, &canary.group.health),
            None => (&self.pool, &self.slot, &self.health),
        };
        let picker = slot.current();
        let mut meta = RequestMeta { parts, client_ip, affinity_hash: None };
        let mut exclude: Option<BackendId> = None;
        let mut last_error: Option<(String, AttemptError)> = None;
        // A retryable status (e.g. 503) kept in case no retry can be made: the
        // backend's own answer is better for the client than a made-up 502.
        let mut last_response: Option<Response<Incoming>> = None;
        let mut last_refusal: Option<Refusal> = None;
        let mut route = Route { guard, picker: &picker, backend: None, attempts: 0 };
        let sticky_key =
            self.config.sticky.as_ref().and_then(|sticky| sticky_cookie(&meta.parts.headers, &sticky.cookie));
        let mut sticky = sticky_key.and_then(|key| pool.by_sticky_key(key));
        for attempt in 0..max_attempts {
            // The first attempt honours the affinity cookie when its backend can take it.
            let held = sticky.take().and_then(|backend| {
                let admitted = health.is_eligible(backend.id).then(|| health.admit(&backend).ok())??;
                Some((Choice { backend: backend.id, by_plugin: false }, backend, admitted))
            });
            let picked = match held {
                Some(held) => Ok(held),
                None => {
                    let (picked, returned) =
                        self.pick_admitted(pool, health, &picker, meta, PickContext { attempt, exclude, method });
                    meta = returned;
                    picked
                }
            };
            let (choice, backend, admitted) = match picked {
                Ok(picked) => picked,
                Err(refusal) => {
                    last_refusal = refusal;
                    break;
                }
            };
            if attempt > 0 {
                self.metrics.retries.inc();
            }
            route.attempt(&backend);
            // The last attempt can have the headers; earlier ones need them kept for a retry.
            let headers = if attempt + 1 == max_attempts {
                std::mem::take(&mut meta.parts.headers)
            } else {
                meta.parts.headers.clone()
            };
            let outgoing = outgoing_request(&meta.parts, headers, &backend, body.take())?;
            let per_try = self.config.response_header_timeout.min(deadline.saturating_duration_since(Instant::now()));
            let client = clients.for_protocol(backend.spec.protocol);
            let sent = Instant::now();
            let result = tokio::time::timeout(per_try, client.request(outgoing)).await;
            let latency = sent.elapsed();
            let failure = match result {
                Ok(Ok(response)) => {
                    let status = response.status();
                    admitted.finish(AttemptOutcome::Status(status.as_u16()), latency);
                    backend.record(Some(status), latency);
                    observe(&picker, choice.backend, choice.by_plugin, status.as_u16(), latency, None);
                    let retryable_status = retry.retry_on_status.contains(&status.as_u16());
                    if retryable_status && attempt + 1 < max_attempts && self.may_retry(deadline) {
                        last_response = Some(response);
                        exclude = Some(choice.backend);
                        continue;
                    }
                    let mut response = response;
                    if let Some(sticky) = &self.config.sticky
                        && sticky_key != Some(backend.sticky_key)
                    {
                        set_sticky_cookie(&mut response, &sticky.cookie, backend.sticky_key);
                    }
                    return Ok(self.finish(response, client_upgrade));
                }
                Ok(Err(error)) if error.is_connect() => AttemptError::Connect(root_cause(&error)),
                Ok(Err(error)) => AttemptError::Reset(root_cause(&error)),
                Err(_) => AttemptError::Timeout(per_try),
            };
            backend.record(None, latency);
            let kind = match failure {
                AttemptError::Connect(_) => ErrorKind::Connect,
                AttemptError::Reset(_) => ErrorKind::Reset,
                AttemptError::Timeout(_) => ErrorKind::Timeout,
            };
            admitted.finish(AttemptOutcome::Failed(kind), latency);
            observe(&picker, choice.backend, choice.by_plugin, 0, latency, Some(kind));
            tracing::debug!(backend = %backend.spec.name, attempt, ?failure, "attempt failed");
            last_error = Some((describe_backend(&backend), failure));
            last_response = None;
            exclude = Some(choice.backend);
            if attempt + 1 >= max_attempts || !self.may_retry(deadline) {
                break;
            }
        }
        if let Some(response) = last_response.filter(|_| last_error.is_none()) {
            return Ok(self.finish(response, None));
        }
        Err(match last_error {
            None => (StatusCode::SERVICE_UNAVAILABLE, no_backend_reason(last_refusal).to_string()),
            Some((backend, AttemptError::Connect(reason))) => {
                (StatusCode::BAD_GATEWAY, format!("could not connect to backend {backend}: {reason}"))
            }
            Some((backend, AttemptError::Reset(reason))) => (
                StatusCode::BAD_GATEWAY,
                format!("backend {backend} closed the connection without a response: {reason}"),
            ),
            Some((backend, AttemptError::Timeout(after))) => {
                (StatusCode::GATEWAY_TIMEOUT, format!("backend {backend} sent no response headers within {after:?}"))
            }
        })
    }

    /// Asks the picker for a backend and health for admission. A refused pick
    /// (backend at its cap, breaker not admitting, or the backend the previous
    /// attempt used) is reported to the picker as not sent and excluded from
    /// the next pick, at most [`MAX_PICKS_PER_ATTEMPT`] picks in all. `Err`
    /// when nothing was admitted, with the last refusal if there was one.
    #[allow(clippy::type_complexity)]
    fn pick_admitted<'h>(
        &self,
        pool: &Pool,
        health: &'h Health,
        picker: &Picker,
        mut meta: RequestMeta,
        mut ctx: PickContext,
    ) -> (Result<(Choice, Arc<BackendState>, Admitted<'h>), Option<Refusal>>, RequestMeta) {
        let previous = ctx.exclude;
        let mut refused = None;
        for _ in 0..MAX_PICKS_PER_ATTEMPT {
            let picking = Instant::now();
            let (choice, returned) = picker.pick(meta, ctx);
            self.metrics.pick_seconds.observe(picking.elapsed().as_secs_f64());
            meta = returned;
            let Some(choice) = choice else { break };
            let Some(backend) = pool.get(choice.backend) else {
                // Removed since this picker last heard (a reload or an admin
                // removal racing the pick, or a picker swapped out meanwhile
                // that no longer hears events): ask again without it.
                observe(picker, choice.backend, choice.by_plugin, 0, Duration::ZERO, Some(ErrorKind::NotSent));
                ctx.exclude = Some(choice.backend);
                continue;
            };
            // After a refusal the exclusion names the refused backend, so the
            // previous attempt's backend could come back: never twice in a row.
            if Some(choice.backend) != previous {
                match health.admit(&backend) {
                    Ok(admitted) => return (Ok((choice, backend, admitted)), meta),
                    Err(refusal) => refused = Some(refusal),
                }
            }
            observe(picker, choice.backend, choice.by_plugin, 0, Duration::ZERO, Some(ErrorKind::NotSent));
            ctx.exclude = Some(choice.backend);
        }
        (Err(refused), meta)
    }

    /// Whether one more attempt fits the deadline and the retry budget.
    fn may_retry(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let allowed = self.budget.try_withdraw(now);
        if !allowed {
            self.metrics.retry_budget_exhausted.inc();
        }
        allowed
    }

    /// Turns the backend's response into the client's, wiring up a protocol
    /// switch when both sides agreed to one.
    fn finish(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) = (response.status(), client_upgrade) {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, backend_upgrade) {
                    Ok((client, backend)) => {
                        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                            tracing::debug!(%error, "upgraded connection ended with an error");
                        }
                    }
                    Err(error) => tracing::debug!(%error, "protocol switch failed"),
                }
            });
        }
        response.map(Either::Left)
    }
}

/// How a request was routed, for its access log record (only kept when an
/// access log is on; the writer thread looks the names up).
struct Route<'a> {
    guard: &'a mut RequestGuard,
    picker: &'a Arc<Picker>,
    backend: Option<Arc<BackendState>>,
    attempts: u32,
}

impl Route<'_> {
    fn attempt(&mut self, backend: &Arc<BackendState>) {
        self.attempts += 1;
        if self.guard.logging() {
            self.backend = Some(backend.clone());
        }
    }
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        if self.guard.logging() {
            let (backend, picker) = (self.backend.take(), Some(self.picker.clone()));
            self.guard.routed(backend, picker, self.attempts);
        } else {
            self.guard.routed(None, None, self.attempts);
        }
    }
}

/// The affinity key in the request's `name` cookie, if there is a valid one.
fn sticky_cookie(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| u64::from_str_radix(value, 16).ok())
}

fn set_sticky_cookie(response: &mut Response<Incoming>, name: &str, key: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("{name}={key:016x}; Path=/; HttpOnly; SameSite=Lax")) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Picks per attempt when picks are refused at admission (each refused
/// backend is excluded from the next pick, so a few suffice to get past a
/// busy backend without spinning when all are busy).
const MAX_PICKS_PER_ATTEMPT: usize = 4;

/// Why veer found no backend for an attempt.
fn no_backend_reason(refusal: Option<Refusal>) -> &'static str {
    match refusal {
        None => "no eligible backend",
        Some(Refusal::AtCapacity) => "no eligible backend: those picked are at their concurrency cap",
        Some(Refusal::Breaker(_)) => "no eligible backend: those picked have their circuit breaker open",
        Some(Refusal::Drained) => "no eligible backend: those picked are drained",
    }
}

fn observe(
    picker: &Picker,
    backend: BackendId,
    picked: bool,
    status: u16,
    latency: Duration,
    error: Option<ErrorKind>,
) {
    if picker.wants_outcomes() {
        picker.observe(Outcome { backend, picked, status, latency_us: latency.as_micros() as u64, error });
    }
}

/// The request for one attempt on `backend`: same method, headers and path,
/// absolute URI for the client, version for the backend's protocol.
fn outgoing_request(
    parts: &http::request::Parts,
    headers: HeaderMap,
    backend: &BackendState,
    body: Option<Incoming>,
) -> Result<Request<OutgoingBody>, (StatusCode, String)> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(backend.authority.clone());
    uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    let uri = Uri::from_parts(uri)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("request target cannot be forwarded: {e}")))?;
    let mut request = Request::new(match body {
        Some(body) => Either::Left(body),
        None => Either::Right(Empty::new()),
    });
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    *request.version_mut() = match backend.spec.protocol {
        BackendProtocol::Http1 => Version::HTTP_11,
        BackendProtocol::Http2 => Version::HTTP_2,
    };
    if backend.spec.protocol == BackendProtocol::Http2 {
        // HTTP/2 carries the authority in the URI; a Host header would be a duplicate.
        request.headers_mut().remove(header::HOST);
    }
    Ok(request)
}

fn describe_backend(backend: &BackendState) -> String {
    format!("{} ({})", backend.spec.name, backend.spec.address)
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE)
}

fn wit_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::HEAD => HttpMethod::Head,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::OPTIONS => HttpMethod::Options,
        Method::PATCH => HttpMethod::Patch,
        Method::TRACE => HttpMethod::Trace,
        Method::CONNECT => HttpMethod::Connect,
        _ => HttpMethod::Other,
    }
}

/// veer's own answer: a short text body that says why, with the request id.
pub fn error_response(status: StatusCode, reason: &str, request_id: &HeaderValue) -> Response<ProxyBody> {
    let id = request_id.to_str().unwrap_or("-");
    let text =
        format!("veer: {} {}: {reason} (request id {id})\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Collects a body into bytes; for tests and the admin API, never the data path.
pub async fn collect_body<B: Body>(body: B) -> Result<Bytes, B::Error> {
    Ok(body.collect().await?.to_bytes())
}
