//! The data path: accepts client requests, asks the picker for a backend per
//! attempt, forwards with pooled connections, retries within a budget, and
//! streams bodies both ways.

pub mod canary;
mod client_body;
mod conn;
pub mod fault;
pub mod headers;
pub mod limits;
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
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use client_body::{BodyLimits, BodyProgress, ClientBody, Payload};
use conn::{Activity, ConnectionTimeouts, TimedIo};
use fault::{BackendFault, ClientFault, Fault};
pub use headers::{RequestIds, X_REQUEST_ID};
use limits::Connections;
pub use limits::{Http2Limits, RequestLimits};
pub use observed::ObservedBody;
use observed::RequestGuard;
pub use retry::{RetryBudget, RetryPolicy};
use workers::Workers;

use crate::admission::Admission;
use crate::health::{Admitted, AttemptOutcome, Health, Refusal};
use crate::observe::Metrics;
use crate::observe::access_log::AccessLog;
use crate::plugin::{
    BackendId, Choice, ErrorKind, HttpMethod, Outcome, PickContext, Picker, PickerSlot, RequestMeta, RequestPicker,
};
use crate::pool::{BackendProtocol, BackendState, Pool};
use crate::upstream::Upstream;

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
    /// How long a client connection may sit idle between requests before it is closed.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// How long a client may take to send a request head, from its first
    /// byte (or from connecting); the connection is closed after it.
    #[serde(with = "humantime_serde")]
    pub client_header_timeout: Duration,
    /// How long a client's request body may pause between two reads (408).
    #[serde(with = "humantime_serde")]
    pub client_body_timeout: Duration,
    /// How long a write to a client may make no progress (the client stopped
    /// reading) before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub client_send_timeout: Duration,
    /// Limits on requests and client connections.
    pub limits: RequestLimits,
    /// HTTP/2 settings towards clients.
    pub http2: Http2Limits,
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
            client_header_timeout: Duration::from_secs(10),
            client_body_timeout: Duration::from_secs(30),
            client_send_timeout: Duration::from_secs(60),
            limits: RequestLimits::default(),
            http2: Http2Limits::default(),
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

/// What veer sends to a backend: the client's body streamed through, or the
/// whole body from memory (empty, or kept by the replay buffer for retries).
type OutgoingBody = Either<ClientBody, Full<Bytes>>;
/// What veer answers a client with: the backend's body streamed through, or
/// veer's own short error body.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The proxy: shared by every connection and request.
pub struct Proxy {
    canary: Option<Arc<canary::Canary>>,
    main: Arc<Upstream>,
    config: ProxyConfig,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    budget: RetryBudget,
    request_ids: RequestIds,
    admission: Arc<Admission>,
    connections: Arc<Connections>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Why an attempt on a backend produced no usable response (the backend's
/// fault: a client's fault ends the request instead).
#[derive(Debug, Clone)]
enum AttemptError {
    Connect(String),
    Reset(String),
    Timeout(Duration),
}

impl AttemptError {
    fn fault(&self) -> BackendFault {
        match self {
            AttemptError::Connect(_) => BackendFault::Connect,
            AttemptError::Reset(_) => BackendFault::Reset,
            AttemptError::Timeout(_) => BackendFault::Timeout,
        }
    }
}

/// What came of sending one attempt.
enum Sent {
    Response(Response<Incoming>),
    /// The client broke its body meanwhile.
    ClientFault(ClientFault),
    /// The backend's fault.
    Failed(AttemptError),
}

/// How a request's forwarding failed, for veer's own answer.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    reason: String,
    /// Set for a client's fault: the connection is not kept (the rest of a
    /// broken body cannot be read past).
    close: bool,
}

impl Failure {
    fn new(status: StatusCode, reason: impl Into<String>) -> Failure {
        Failure { status, reason: reason.into(), close: false }
    }

    fn client(fault: ClientFault) -> Failure {
        Failure { status: fault.status(), reason: fault.reason().to_string(), close: true }
    }
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
        main: Arc<Upstream>,
        canary: Option<Arc<canary::Canary>>,
        admission: Arc<Admission>,
        config: ProxyConfig,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
    ) -> Arc<Self> {
        Arc::new(Proxy {
            canary,
            metrics,
            access_log: access_log.map(Arc::new),
            budget: RetryBudget::new(&config.retry),
            request_ids: RequestIds::default(),
            admission,
            connections: Arc::default(),
            main,
            config,
        })
    }

    /// Open client connections and refusals at accept.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// The canary group, if one is configured.
    pub fn canary(&self) -> Option<&Arc<canary::Canary>> {
        self.canary.as_ref()
    }

    /// The main upstream group.
    pub fn main(&self) -> &Arc<Upstream> {
        &self.main
    }

    /// The main group's backends' health.
    pub fn health(&self) -> &Arc<Health> {
        &self.main.health
    }

    /// The main group's backend pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.main.pool
    }

    /// The main group's picker slot.
    pub fn slot(&self) -> &Arc<PickerSlot> {
        &self.main.slot
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
        let builder = Arc::new(self.connection_builder());
        let timeouts = ConnectionTimeouts {
            header: self.config.client_header_timeout,
            idle: self.config.client_idle_timeout,
            send: self.config.client_send_timeout,
        };
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, client) = tokio::select! {
                accepted = crate::net::accept(&listener, "proxy") => accepted,
                () = &mut shutdown => break,
            };
            let slot = match self.connections.admit(client.ip(), &self.config.limits) {
                Ok(slot) => slot,
                Err(refusal) => {
                    refuse_connection(stream, refusal);
                    continue;
                }
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
                let activity = Arc::new(Activity::default());
                let io = TimedIo::new(stream, activity.clone(), timeouts);
                let service = hyper::service::service_fn(move |request| {
                    let (proxy, clients, info) = (proxy.clone(), clients.clone(), info.clone());
                    let in_flight = activity.begin();
                    async move { Ok::<_, Infallible>(proxy.handle(&clients, request, &info, in_flight).await) }
                });
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%client, error = %error, "client connection ended with an error");
                }
                drop(slot);
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

    /// The client connections' codec: HTTP/1.1 and HTTP/2 (prior knowledge),
    /// with the limits of the config.
    fn connection_builder(&self) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
        let (limits, http2) = (&self.config.limits, &self.config.http2);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Header reads are timed by `TimedIo`, which tells a slow head from an idle connection.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_headers(limits.max_headers)
            // The read buffer caps the request head: hyper answers 431 past it.
            .max_buf_size(limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .max_concurrent_streams(http2.max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .initial_stream_window_size(http2.initial_stream_window_bytes)
            .initial_connection_window_size(http2.initial_connection_window_bytes)
            .max_frame_size(http2.max_frame_bytes)
            .max_pending_accept_reset_streams(http2.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(http2.max_local_error_reset_streams)
            .max_send_buf_size(http2.max_send_buffer_bytes);
        builder
    }

    /// Handles one client request; never fails (errors become 4xx/5xx responses).
    async fn handle(
        &self,
        clients: &Clients,
        mut request: Request<Incoming>,
        client: &ClientInfo,
        in_flight: conn::InFlight,
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
        guard.hold(in_flight);
        if let Err(refused) = limits::check_request(&request, &self.config.limits) {
            self.metrics.request_refused(refused.status);
            let mut response = error_response(refused.status, refused.reason, &request_id);
            // What follows a refused head (a body, a smuggled request) is never read.
            close_after(&mut response, request.version());
            if refused.status == StatusCode::METHOD_NOT_ALLOWED {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            }
            response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
            guard.answered(refused.status);
            return response.map(|body| ObservedBody::new(body, guard));
        }
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
        headers::rewrite_for_backend(&mut parts, &client.address_value);
        let mut close = false;
        let mut response =
            match self.forward(clients, parts, body, client.address.ip(), client_upgrade, &mut guard).await {
                Ok(response) => response,
                Err(failure) => {
                    close = failure.close;
                    error_response(failure.status, &failure.reason, &request_id)
                }
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
        if close {
            close_after(&mut response, version);
        }
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        guard.answered(status);
        response.map(|body| ObservedBody::new(body, guard))
    }

    /// The attempt loop. `Err` says what veer answers itself, and why.
    async fn forward(
        &self,
        clients: &Clients,
        parts: http::request::Parts,
        body: Incoming,
        client_ip: IpAddr,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        guard: &mut RequestGuard,
    ) -> Result<Response<ProxyBody>, Failure> {
        let started = Instant::now();
        let deadline = started + self.config.total_timeout;
        let retry = &self.config.retry;
        let idempotent = is_idempotent(&parts.method) || retry.retry_non_idempotent;
        // A body that fits the replay buffer is read first, whatever the
        // method (as nginx buffers request bodies): one the client breaks
        // never reaches a backend, and an idempotent request can send it
        // again. A larger one is streamed to one backend only. An upgrade is
        // never buffered nor retried.
        let progress = Arc::new(BodyProgress::default());
        let body_limits =
            BodyLimits { max_bytes: self.config.limits.max_body_bytes, idle_timeout: self.config.client_body_timeout };
        let buffer = client_upgrade.is_none();
        let replay = idempotent && buffer;
        let mut payload =
            match client_body::take(body, buffer, retry.replay_buffer_bytes, body_limits, deadline, &progress).await {
                Ok(payload) => payload,
                Err(fault) => return Err(self.client_failed(guard, fault)),
            };
        let max_attempts = match payload {
            Payload::Replayable(_) if replay => retry.max_attempts.max(1),
            _ => 1,
        };
        self.budget.deposit();
        let method = wit_method(&parts.method);
        // The picker that routes the first attempt routes them all and hears every outcome.
        let upstream = match self.canary.as_deref().filter(|c| c.takes(&parts.headers, self.request_ids.next_random()))
        {
            Some(canary) => &canary.upstream,
            None => &self.main,
        };
        let (pool, health) = (&upstream.pool, &upstream.health);
        let picker = upstream.slot.for_request();
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
            if attempt > 0 {
                // Jittered exponential backoff, never past the deadline.
                let wait = retry.backoff(attempt, self.request_ids.next_random());
                let now = Instant::now();
                if now + wait >= deadline {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            // The first attempt honours the affinity cookie when its backend can take it.
            let held = sticky.take().and_then(|backend| {
                let admitted = health.is_eligible(backend.id).then(|| health.admit(&backend).ok())??;
                Some((Choice::by_host(backend.id), backend, admitted))
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
            let body = match &mut payload {
                Payload::Replayable(bytes) => Either::Right(Full::new(bytes.clone())),
                Payload::Streaming(_) => match std::mem::replace(&mut payload, Payload::Replayable(Bytes::new())) {
                    Payload::Streaming(body) => Either::Left(body),
                    Payload::Replayable(_) => unreachable!("matched as streaming just above"),
                },
            };
            let outgoing = outgoing_request(&meta.parts, headers, &backend, body)
                .map_err(|reason| Failure::new(StatusCode::BAD_REQUEST, reason))?;
            let client = clients.for_protocol(backend.spec.protocol);
            let sent = Instant::now();
            let result = self.send(client, outgoing, &progress, deadline).await;
            let latency = sent.elapsed();
            let failure = match result {
                Sent::Response(response) => {
                    let status = response.status();
                    admitted.finish(AttemptOutcome::Status(status.as_u16()), latency);
                    backend.record(Some(status), latency);
                    observe(&picker, &choice, status.as_u16(), latency, None);
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
                Sent::ClientFault(fault) => {
                    // Nothing is known of the backend: the attempt is forgotten
                    // (its slot freed unrecorded), and a picker counting
                    // in-flight attempts hears it was not completed.
                    drop(admitted);
                    observe(&picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
                    tracing::debug!(backend = %backend.spec.name, ?fault, "attempt abandoned: the client's fault");
                    drop(route);
                    return Err(self.client_failed(guard, fault));
                }
                Sent::Failed(failure) => failure,
            };
            backend.record(None, latency);
            let kind = match failure {
                AttemptError::Connect(_) => ErrorKind::Connect,
                AttemptError::Reset(_) => ErrorKind::Reset,
                AttemptError::Timeout(_) => ErrorKind::Timeout,
            };
            admitted.finish(AttemptOutcome::Failed(kind), latency);
            observe(&picker, &choice, 0, latency, Some(kind));
            self.metrics.record_failure(Fault::Backend(failure.fault()));
            route.guard.blame(Fault::Backend(failure.fault()));
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
            None => Failure::new(StatusCode::SERVICE_UNAVAILABLE, no_backend_reason(last_refusal)),
            Some((backend, AttemptError::Connect(reason))) => {
                Failure::new(StatusCode::BAD_GATEWAY, format!("could not connect to backend {backend}: {reason}"))
            }
            Some((backend, AttemptError::Reset(reason))) => Failure::new(
                StatusCode::BAD_GATEWAY,
                format!("backend {backend} closed the connection without a response: {reason}"),
            ),
            Some((backend, AttemptError::Timeout(after))) => Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("backend {backend} sent no response headers within {after:?}"),
            ),
        })
    }

    /// Sends one attempt and waits for its response headers. The backend's
    /// `response_header_timeout` runs from the end of the request body: while
    /// the client is still uploading, the body's own stall timeout applies,
    /// and a body still arriving at the request's deadline is the client's
    /// fault. Whatever the backend connection reports, a fault recorded by
    /// the body is the client's.
    async fn send(
        &self,
        client: &Client<HttpConnector, OutgoingBody>,
        outgoing: Request<OutgoingBody>,
        progress: &BodyProgress,
        deadline: Instant,
    ) -> Sent {
        let per_try = self.config.response_header_timeout;
        let sent = Instant::now();
        // The backend's clock starts when the body is complete.
        let backend_deadline = |done: Instant| (done.max(sent) + per_try).min(deadline);
        // While the body is still arriving, look again at least every second.
        let recheck = per_try.min(Duration::from_secs(1));
        let mut response = std::pin::pin!(client.request(outgoing));
        loop {
            let limit = match progress.finished_at() {
                Some(done) => backend_deadline(done),
                None => (Instant::now() + recheck).min(deadline),
            };
            match tokio::time::timeout_at(limit.into(), &mut response).await {
                Ok(Ok(response)) => return Sent::Response(response),
                Ok(Err(error)) => {
                    return match progress.fault() {
                        Some(fault) => Sent::ClientFault(fault),
                        None if error.is_connect() => Sent::Failed(AttemptError::Connect(root_cause(&error))),
                        None => Sent::Failed(AttemptError::Reset(root_cause(&error))),
                    };
                }
                Err(_) => {
                    let now = Instant::now();
                    match (progress.fault(), progress.finished_at()) {
                        (Some(fault), _) => return Sent::ClientFault(fault),
                        (None, None) if now >= deadline => return Sent::ClientFault(ClientFault::BodyTimeout),
                        (None, None) => {}
                        (None, Some(done)) if now < backend_deadline(done) => {}
                        (None, Some(done)) => {
                            return Sent::Failed(AttemptError::Timeout(backend_deadline(done) - done.max(sent)));
                        }
                    }
                }
            }
        }
    }

    /// Answers a client's fault: counted and logged as the client's, never the backend's.
    fn client_failed(&self, guard: &mut RequestGuard, fault: ClientFault) -> Failure {
        self.metrics.record_failure(Fault::Client(fault));
        guard.blame(Fault::Client(fault));
        Failure::client(fault)
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
                observe(picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
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
            observe(picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
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
        let allowed = self.budget.try_withdraw(crate::clock::now());
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
    picker: &'a RequestPicker,
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
            let (backend, picker) = (self.backend.take(), Some(self.picker.shared()));
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

fn observe(picker: &Picker, choice: &Choice, status: u16, latency: Duration, error: Option<ErrorKind>) {
    if picker.wants_outcomes() {
        let (backend, picked) = (choice.backend, choice.by_plugin);
        picker.observe(choice, Outcome { backend, picked, status, latency_us: latency.as_micros() as u64, error });
    }
}

/// The request for one attempt on `backend`: same method, headers and path,
/// absolute URI for the client, version for the backend's protocol.
fn outgoing_request(
    parts: &http::request::Parts,
    headers: HeaderMap,
    backend: &BackendState,
    body: OutgoingBody,
) -> Result<Request<OutgoingBody>, String> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(backend.authority.clone());
    uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    let uri = Uri::from_parts(uri).map_err(|e| format!("request target cannot be forwarded: {e}"))?;
    let mut request = Request::new(body);
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

/// Closes a connection refused by a connection cap, first writing a short
/// HTTP/1.1 answer if the socket takes it at once (never waiting on the
/// client: a refused connection costs one accept and one write).
fn refuse_connection(stream: tokio::net::TcpStream, refusal: limits::ConnectionRefusal) {
    let answer: &[u8] = match refusal {
        limits::ConnectionRefusal::Total => {
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 40\r\nretry-after: 1\r\n\r\nveer: 503: too many client connections\r\n"
        }
        limits::ConnectionRefusal::PerClient => {
            b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\ncontent-length: 50\r\nretry-after: 1\r\n\r\nveer: 429: too many connections from this client\r\n"
        }
    };
    let _ = stream.try_write(answer);
    tracing::debug!(?refusal, "client connection refused at accept");
}

/// Methods veer forwards (the `Allow` of a 405).
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE";

/// Marks an HTTP/1 response as the connection's last (HTTP/2 has no such
/// header: a stream ends alone).
fn close_after<B>(response: &mut Response<B>, version: Version) {
    if version < Version::HTTP_2 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
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
