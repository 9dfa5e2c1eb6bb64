//! The data path: accepts client requests on every listener, routes each by
//! its listener's routes, asks the chosen upstream's picker for a backend per
//! attempt, forwards with pooled connections, retries within a budget, and
//! streams bodies both ways.

mod client_body;
mod conn;
mod forward;
pub mod headers;
pub mod limits;
pub mod mirror;
mod observed;
mod workers;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use crate::retry::{RetryBudget, RetryPolicy};
use client_body::ClientBody;
use conn::{Activity, ConnectionTimeouts, TimedIo};
pub use headers::{RequestIds, X_REQUEST_ID};
use limits::Connections;
pub use limits::{Http2Limits, RequestLimits};
pub use observed::ObservedBody;
use observed::RequestGuard;
use workers::Workers;

use crate::admission::Admission;
use crate::health::Health;
use crate::observe::access_log::AccessLog;
use crate::observe::{ConnectionCounts, Live, Metrics};
use crate::pool::Pool;
use crate::routing::Routes;
use crate::routing::canary::CanarySplit;
use crate::tls::ListenerTls;
use crate::tls::server::HandshakeResult;
pub use crate::tls::server::ListenerTlsSlot;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use veer_plugin_runtime::PickerSlot;

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
    /// At shutdown (and when a new process takes over), how long client
    /// connections may still send requests, each answered with
    /// `Connection: close`, before the idle ones are closed: a client that
    /// had just connected, or just reused a kept-alive connection, is
    /// answered instead of cut off.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
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
            shutdown_drain: Duration::from_secs(1),
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
pub type ProxyBody = Either<crate::transport::BackendBody, Full<Bytes>>;

/// The proxy: shared by every connection and request.
pub struct Proxy {
    /// The upstream groups and the routes over them, replaced whole.
    routes: ArcSwap<Routes>,
    config: ProxyConfig,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    /// Continues traces and exports spans; `None`: tracing is off.
    tracer: Option<Arc<crate::observe::trace::Tracer>>,
    budget: RetryBudget,
    request_ids: RequestIds,
    admission: Arc<Admission>,
    connections: Arc<Connections>,
    mirrors: mirror::Mirrors,
    /// Listeners to start or stop while serving (a reload's), and the end
    /// [`Proxy::serve`] takes them from.
    listener_commands: tokio::sync::mpsc::UnboundedSender<ListenerCommand>,
    listener_inbox: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ListenerCommand>>>,
    /// Where each listener accepts now, and its TLS, by name.
    bound: parking_lot::Mutex<std::collections::BTreeMap<String, Bound>>,
    /// Set when serving ends: every HTTP/1 answer from then on closes its
    /// connection.
    draining: std::sync::atomic::AtomicBool,
}

/// A listener accepting now, as the admin API and upgrades see it.
#[derive(Debug)]
struct Bound {
    address: SocketAddr,
    tls: ListenerTlsSlot,
    /// A duplicate of its socket, handed to a new process on upgrade.
    socket: Option<Arc<std::os::fd::OwnedFd>>,
}

impl Bound {
    fn of(listener: &Listener) -> std::io::Result<Bound> {
        use std::os::fd::AsFd;
        Ok(Bound {
            address: listener.socket.local_addr()?,
            tls: listener.tls.clone(),
            socket: listener.socket.as_fd().try_clone_to_owned().ok().map(Arc::new),
        })
    }
}

/// A listening socket to serve clients on.
#[derive(Debug)]
pub struct Listener {
    /// Its name, for its routes.
    pub name: Arc<str>,
    /// The bound socket.
    pub socket: TcpListener,
    /// Its TLS: set, an `https` listener; empty, plain HTTP. Each new
    /// connection reads it, so a reload changes it without a new socket.
    pub tls: ListenerTlsSlot,
}

impl Listener {
    /// A plain-HTTP listener.
    pub fn plain(name: &str, socket: TcpListener) -> Listener {
        Listener { name: name.into(), socket, tls: ListenerTlsSlot::default() }
    }
}

/// A listener to start or stop while serving.
#[derive(Debug)]
enum ListenerCommand {
    /// Accept on this listener (replacing one of the same name, which stops
    /// and drains).
    Start(Listener),
    /// Stop accepting for this listener and drain its connections.
    Stop(Arc<str>),
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The client end of one connection, worked out once for all its requests.
#[derive(Debug)]
struct ClientInfo {
    address: SocketAddr,
    /// The address's IP as `X-Forwarded-For` carries it.
    address_value: HeaderValue,
    /// The listener it connected to, whose routes it is served by.
    listener: Arc<str>,
    /// `https` over TLS, else `http`: what `X-Forwarded-Proto` and
    /// redirects say.
    scheme: http::uri::Scheme,
}

/// One data-path worker's pooled connections to backends.
type Clients = crate::transport::Transport<OutgoingBody>;

/// A worker's clients, with the data path's connect and idle timeouts.
fn worker_clients(config: &ProxyConfig) -> Clients {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.enforce_http(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(config.backend_idle_timeout).pool_timer(TokioTimer::new()).timer(TokioTimer::new());
    let settings = crate::transport::PoolSettings {
        connect_timeout: config.connect_timeout,
        idle_timeout: config.backend_idle_timeout,
        max_idle_per_backend: usize::MAX,
    };
    Clients::new(builder, connector, settings)
}

impl Proxy {
    /// A proxy routing with `routes`, behind `admission`, recording into
    /// `metrics` and, if given, `access_log`.
    pub fn new(
        routes: Routes,
        admission: Arc<Admission>,
        config: ProxyConfig,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        tracer: Option<Arc<crate::observe::trace::Tracer>>,
    ) -> Arc<Self> {
        let (listener_commands, inbox) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Proxy {
            listener_commands,
            listener_inbox: parking_lot::Mutex::new(Some(inbox)),
            bound: parking_lot::Mutex::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            routes: ArcSwap::from_pointee(routes),
            metrics,
            access_log: access_log.map(Arc::new),
            tracer,
            budget: RetryBudget::new(&config.retry),
            request_ids: RequestIds::default(),
            admission,
            connections: Arc::default(),
            mirrors: mirror::Mirrors::default(),
            config,
        })
    }

    /// The upstream groups and routes now.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Serves requests from now on with `routes`; requests already routed
    /// finish on the groups they were given.
    pub fn set_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// Open client connections and refusals at accept.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// The canary group and its split, for a single-group config with a canary.
    pub fn canary(&self) -> Option<(Arc<Upstream>, CanarySplit)> {
        let routes = self.routes.load();
        routes.canary().map(|(upstream, split)| (upstream.clone(), split.clone()))
    }

    /// Changes the canary's split for requests from now on (validate it
    /// first); `None` when the routes were not derived with a canary.
    pub fn set_canary_split(&self, split: CanarySplit) -> Option<CanarySplit> {
        // The routes keep the proxy's policy they were built with.
        let routes = self.routes.load().with_canary_split(split.clone())?;
        match routes {
            Ok(routes) => {
                self.set_routes(routes);
                Some(split)
            }
            Err(problems) => {
                // The split of a valid canary always compiles: a bug if not.
                tracing::error!(?problems, "the canary's split routes do not compile; the split is unchanged");
                None
            }
        }
    }

    /// The default upstream group (see [`Routes::default_upstream`]).
    pub fn main(&self) -> Arc<Upstream> {
        self.routes.load().default_upstream().clone()
    }

    /// The default group's backends' health.
    pub fn health(&self) -> Arc<Health> {
        self.main().health.clone()
    }

    /// The default group's backend pool.
    pub fn pool(&self) -> Arc<Pool> {
        self.main().pool.clone()
    }

    /// The default group's picker slot.
    pub fn slot(&self) -> Arc<PickerSlot> {
        self.main().slot.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Admission control.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// What `/metrics` reads of the running proxy.
    pub fn live(&self) -> Live {
        let connections = &self.connections;
        Live {
            upstreams: self.routes().upstreams().to_vec(),
            admission: self.admission.snapshot(),
            connections: ConnectionCounts {
                open: connections.open(),
                refused_total: connections.refused_total.load(std::sync::atomic::Ordering::Relaxed),
                refused_per_client: connections.refused_per_client.load(std::sync::atomic::Ordering::Relaxed),
            },
            tls: self.listener_tls(),
        }
    }

    /// Starts the data-path workers and returns the future that serves
    /// clients on `listeners` (each named, for its routes; HTTP/1.1, and
    /// HTTP/2 with prior knowledge) until `shutdown` completes, starting and
    /// stopping listeners as [`Proxy::start_listener`] and
    /// [`Proxy::stop_listener`] ask meanwhile. Then it stops accepting, lets
    /// in-flight requests finish for up to `shutdown_grace`, stops the
    /// workers and returns. Call it once.
    pub fn serve(
        self: Arc<Self>,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<impl Future<Output = ()>> {
        let workers = Arc::new(Workers::start(self.config.workers, || worker_clients(&self.config))?);
        for listener in &listeners {
            self.bound.lock().insert(listener.name.to_string(), Bound::of(listener)?);
        }
        let mut inbox = self.listener_inbox.lock().take().expect("a proxy serves once");
        Ok(async move {
            tokio::pin!(shutdown);
            let mut running: HashMap<Arc<str>, (tokio::sync::watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
            let mut draining = Vec::new();
            let start = |listener: Listener| {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let accepting = self.clone().accept_loop(listener, stopped, workers.clone());
                (stop, tokio::spawn(accepting))
            };
            for listener in listeners {
                running.insert(listener.name.clone(), start(listener));
            }
            loop {
                let command = tokio::select! {
                    () = &mut shutdown => break,
                    command = inbox.recv() => command,
                };
                let name = match &command {
                    Some(ListenerCommand::Start(Listener { name, .. }) | ListenerCommand::Stop(name)) => name.clone(),
                    None => continue,
                };
                if let Some((stop, accepting)) = running.remove(&name) {
                    let _ = stop.send(true);
                    draining.push(accepting);
                }
                if let Some(ListenerCommand::Start(listener)) = command {
                    running.insert(name, start(listener));
                }
            }
            // The duplicates kept for upgrades go too: a socket still open
            // would queue connections nobody accepts until the process exits.
            self.bound.lock().clear();
            self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
            for (stop, accepting) in running.into_values() {
                let _ = stop.send(true);
                draining.push(accepting);
            }
            for accepting in draining {
                let _ = accepting.await;
            }
            if let Some(workers) = Arc::into_inner(workers) {
                workers.stop().await;
            }
            if let Some(log) = self.access_log.clone() {
                // Joining the writer blocks for up to one write interval.
                let _ = tokio::task::spawn_blocking(move || log.finish()).await;
            }
        })
    }

    /// Starts accepting on `listener` (its routes must be in the routes by
    /// then); one already running under its name stops and drains. A no-op
    /// once serving has ended.
    pub fn start_listener(&self, listener: Listener) {
        if let Ok(bound) = Bound::of(&listener) {
            self.bound.lock().insert(listener.name.to_string(), bound);
        }
        let _ = self.listener_commands.send(ListenerCommand::Start(listener));
    }

    /// Stops accepting for the listener `name` and drains its connections.
    pub fn stop_listener(&self, name: &str) {
        self.bound.lock().remove(name);
        let _ = self.listener_commands.send(ListenerCommand::Stop(name.into()));
    }

    /// Every listener accepting now and its bound address, by name.
    pub fn listeners(&self) -> std::collections::BTreeMap<String, SocketAddr> {
        self.bound.lock().iter().map(|(name, bound)| (name.clone(), bound.address)).collect()
    }

    /// The TLS of every `https` listener accepting now, by name.
    pub fn listener_tls(&self) -> std::collections::BTreeMap<String, Arc<ListenerTls>> {
        self.bound.lock().iter().filter_map(|(name, bound)| Some((name.clone(), bound.tls.load_full()?))).collect()
    }

    /// The TLS slot of the listener `name` accepting now (to change its TLS
    /// in place).
    pub fn tls_slot(&self, name: &str) -> Option<ListenerTlsSlot> {
        self.bound.lock().get(name).map(|bound| bound.tls.clone())
    }

    /// Every listener accepting now with its address and a duplicate of its
    /// socket, by name: what an upgrade hands to the new process.
    pub fn listening_sockets(&self) -> Vec<(String, SocketAddr, Arc<std::os::fd::OwnedFd>)> {
        let bound = self.bound.lock();
        bound.iter().filter_map(|(name, b)| Some((name.clone(), b.address, b.socket.clone()?))).collect()
    }

    /// Accepts clients for `listener` until `stop` turns true, then lets
    /// its connections finish for up to `shutdown_grace`.
    async fn accept_loop(
        self: Arc<Self>,
        listener: Listener,
        mut stop: tokio::sync::watch::Receiver<bool>,
        workers: Arc<Workers>,
    ) {
        let Listener { name, socket, tls } = listener;
        let builder = Arc::new(self.connection_builder());
        let timeouts = ConnectionTimeouts {
            header: self.config.client_header_timeout,
            idle: self.config.client_idle_timeout,
            send: self.config.client_send_timeout,
        };
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, client) = tokio::select! {
                accepted = crate::net::accept(&socket, "proxy") => accepted,
                _ = stop.wait_for(|stop| *stop) => break,
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
            let (proxy, builder, tls) = (self.clone(), builder.clone(), tls.load_full());
            let scheme = if tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
            let info = ClientInfo {
                address: client,
                address_value: headers::client_address_value(client.ip()),
                listener: name.clone(),
                scheme,
            };
            workers.spawn_connection(move |clients| async move {
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(error) => return tracing::warn!(%client, %error, "could not register the connection"),
                };
                let activity = Arc::new(Activity::default());
                // Under TLS the limits time the encrypted bytes: a stalled handshake is a slow head.
                let io = TimedIo::new(stream, activity.clone(), timeouts);
                let served = match tls {
                    None => proxy.serve_client(io, info, activity, clients, &builder, watcher).await,
                    Some(tls) => match tls.accept(io).await {
                        Ok((stream, session)) => {
                            let result = if session.resumed { HandshakeResult::Resumed } else { HandshakeResult::Full };
                            proxy.metrics.tls_handshake(&info.listener, result);
                            proxy.serve_client(stream, info, activity, clients, &builder, watcher).await
                        }
                        Err(failure) => {
                            proxy.metrics.tls_handshake(&info.listener, HandshakeResult::Failed(failure));
                            tracing::debug!(%client, ?failure, "TLS handshake failed");
                            Ok(())
                        }
                    },
                };
                if let Err(error) = served {
                    tracing::debug!(%client, %error, "client connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(socket);
        tracing::info!(listener = %name, "no longer accepting; waiting for in-flight requests");
        // Connections accepted a moment ago have requests on the way: they
        // get answers (closing their connections) before the idle ones close.
        let drain = self.config.shutdown_drain.min(self.config.shutdown_grace);
        let deadline = tokio::time::Instant::now() + drain;
        while graceful.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::select! {
            () = graceful.shutdown() => tracing::info!(listener = %name, "all connections closed"),
            () = tokio::time::sleep(self.config.shutdown_grace) => {
                tracing::warn!(listener = %name, grace = ?self.config.shutdown_grace, "shutdown grace period over; closing the remaining connections");
            }
        }
    }

    /// Serves one client connection's requests on `io` (a TCP stream, or
    /// TLS over one) until it closes.
    async fn serve_client<I>(
        self: Arc<Self>,
        io: I,
        info: ClientInfo,
        activity: Arc<Activity>,
        clients: Arc<Clients>,
        builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
        watcher: hyper_util::server::graceful::Watcher,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = Arc::new(info);
        let service = hyper::service::service_fn(move |request| {
            let (proxy, clients, info) = (self.clone(), clients.clone(), info.clone());
            let in_flight = activity.begin();
            async move { Ok::<_, Infallible>(proxy.handle(&clients, request, &info, in_flight).await) }
        });
        watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service)).await
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
        clients: &Arc<Clients>,
        mut request: Request<Incoming>,
        client: &ClientInfo,
        in_flight: conn::InFlight,
    ) -> Response<ObservedBody> {
        // Room for what veer adds (request id, forwarding fields, `Via`,
        // `Host`) at once, instead of a map grown and rehashed on the way.
        request.headers_mut().reserve(REQUEST_FIELDS_ADDED);
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
        if let Some(tracer) = &self.tracer {
            let trace = tracer.begin(&request, &request_id, || self.request_ids.next_random());
            guard.trace(tracer.clone(), trace);
        }
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
        headers::rewrite_for_backend(&mut parts, &client.address_value, &client.scheme);
        let mut close = false;
        let mut response = match self.forward(clients, parts, body, client, client_upgrade, &mut guard).await {
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
        if close || self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            close_after(&mut response, version);
        }
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        guard.answered(status);
        response.map(|body| ObservedBody::new(body, guard))
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

/// Fields veer may add to a request on its way to a backend.
const REQUEST_FIELDS_ADDED: usize = 6;

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
