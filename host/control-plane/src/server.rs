//! Wires a running veer: plugin runtime, pool, picker, proxy listener and admin
//! listener. `veer run`, `veer demo` and the end-to-end tests all start here.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::reload::Reloader;
use crate::discovery::Discovery;
use crate::upgrade::Handover;
use std::os::fd::AsFd;
use veer_data_plane::admission::{Admission, InvalidAdmissionConfig};
// The options are the config's product; `server` is where callers look for them.
pub use crate::config::{CanaryOptions, ServerOptions};
use veer_data_plane::health::InvalidHealthConfig;
use veer_data_plane::observe::access_log::AccessLog;
use veer_data_plane::observe::trace::Tracer;
use veer_data_plane::observe::{Metrics, snapshot};
use veer_data_plane::proxy::Listener;
use veer_data_plane::proxy::Proxy;
use veer_data_plane::routing::{DEFAULT_LISTENER, RouteProblem};
use veer_data_plane::tls::{self, ListenerTls, ListenerTlsConfig};
use veer_data_plane::upstream::{Upstream, UpstreamError};
use veer_plugin_runtime::{HandoffResult, Limits, PluginError, PluginRuntime};

/// Why veer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {reason}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        reason: std::io::Error,
    },
    /// The access log could not be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    /// The data-path worker threads could not be started.
    #[error("cannot start the data-path workers: {0}")]
    Workers(std::io::Error),
    /// The picker could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A TLS certificate, key or CA bundle could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The admission settings are invalid.
    #[error(transparent)]
    Admission(#[from] InvalidAdmissionConfig),
    /// The health settings do not make sense.
    #[error(transparent)]
    Health(#[from] InvalidHealthConfig),
    /// The routes do not compile over the upstream groups.
    #[error("invalid routes: {}", .0.iter().map(|p| format!("routes{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; "))]
    Routes(Vec<RouteProblem>),
    /// The span exporter could not be built.
    #[error("{0}")]
    Tracing(String),
    /// A backend name or file could not be resolved.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The admin API would listen beyond loopback without a token.
    #[error(
        "the admin API on {0} would be reachable from other machines without a token: set admin.token or VEER_ADMIN_TOKEN, or listen on 127.0.0.1"
    )]
    AdminWithoutToken(SocketAddr),
}

/// A started veer. Dropping it does not stop it; call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    /// The bound client address (useful with port 0).
    pub proxy_addr: SocketAddr,
    /// The bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// The proxy, for in-process inspection.
    pub proxy: Arc<Proxy>,
    /// Applies config reloads (SIGHUP, file changes, the admin API).
    pub reloader: Arc<Reloader>,
    /// What became of the default group's picker state saved by an earlier
    /// process, if any was found (every group's is offered; see `config::state`).
    pub restored_state: Option<HandoffResult>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period), and returns when everything has stopped.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// A handle that asks the server to stop (send `true`), e.g. from a signal handler.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Waits until the server has stopped (after a stop was requested).
    pub async fn wait(mut self) {
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

/// The socket for `address`: the one an upgrade handed over, else a new one.
async fn bind(address: SocketAddr, handover: &mut Option<&mut Handover>) -> Result<TcpListener, StartError> {
    let error = |reason| StartError::Bind { address, reason };
    if let Some(socket) = handover.as_mut().and_then(|handover| handover.socket_at(address)) {
        socket.set_nonblocking(true).map_err(error)?;
        return TcpListener::from_std(socket).map_err(error);
    }
    TcpListener::bind(address).await.map_err(error)
}

/// A listener on `socket`, with TLS when `tls` is set.
pub(crate) fn listener_with_tls(
    name: &str,
    socket: TcpListener,
    tls: Option<&ListenerTlsConfig>,
) -> Result<Listener, StartError> {
    let listener = Listener::plain(name, socket);
    if let Some(config) = tls {
        let loaded = ListenerTls::new(config).map_err(|e| StartError::Tls(format!("listener {name}: {e}")))?;
        listener.tls.store(Some(Arc::new(loaded)));
    }
    Ok(listener)
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Starts veer: loads and smoke-tests the picker, binds the listeners, and
/// serves until shut down.
pub async fn start(options: ServerOptions) -> Result<RunningServer, StartError> {
    start_with(options, None).await
}

/// [`start`], serving on the sockets `handover` took from a running veer
/// wherever their addresses match (see [`crate::upgrade`]). Call
/// [`Handover::ready`] once it returns.
pub async fn start_with(
    options: ServerOptions,
    mut handover: Option<&mut Handover>,
) -> Result<RunningServer, StartError> {
    options.health.validate()?;
    let admission = Admission::new(options.admission.clone())?;
    if let Some(admin) = options.admin
        && !crate::config::is_loopback(&admin)
        && options.control.admin_token.is_none()
    {
        return Err(StartError::AdminWithoutToken(admin));
    }
    // A picker instance per data-path worker (see `plugin::Picker`).
    let limits = Limits { instances: options.proxy.workers.max(1), ..options.limits.clone() };
    let runtime = PluginRuntime::new(limits)?;
    let metrics = Arc::new(Metrics::new());
    let access_log = match &options.observe.access_log {
        Some(config) => Some(AccessLog::start(config, metrics.clone()).map_err(StartError::AccessLog)?),
        None => None,
    };
    // Names resolve before anything starts: none may serve from a name that never resolved.
    let discovery = Discovery::new(&options.discovery, &metrics);
    let mut resolved = discovery.resolve_all(&options.discovery).await.map_err(StartError::Discovery)?;
    let mut upstreams = Vec::new();
    for mut spec in options.upstream_specs() {
        if let Some(resolution) = resolved.get(&spec.name) {
            spec.backends = resolution.backends();
        }
        let group = Upstream::start(runtime.clone(), spec, metrics.clone()).await.map_err(|error| match error {
            UpstreamError::Picker(error) => StartError::Plugin(error),
            tls => StartError::Tls(tls.to_string()),
        })?;
        upstreams.push(group);
    }
    let routes = options.routes_over(upstreams, options.request_policy()).map_err(StartError::Routes)?;
    let main = routes.default_upstream().clone();
    let restored_state = match options.control.state_dir.clone() {
        // Offered once the pickers know the backends: state may refer to them.
        Some(dir) => {
            let groups = routes.upstreams().to_vec();
            tokio::task::spawn_blocking(move || {
                let restored: Vec<_> = groups.iter().map(|group| crate::config::state::restore(&dir, group)).collect();
                restored.into_iter().next().flatten()
            })
            .await
            .map_err(|e| PluginError::Engine(format!("state restoring task failed: {e}")))?
        }
        None => None,
    };
    let groups = routes.upstreams().to_vec();
    let tracer = match options.observe.tracing.clone() {
        Some(config) => Some(Tracer::start(config, metrics.registrar()).map_err(StartError::Tracing)?),
        None => None,
    };
    let proxy = Proxy::new(routes, admission.clone(), options.proxy.clone(), metrics, access_log, tracer);
    let listener = bind(options.listen, &mut handover).await?;
    let proxy_addr = listener.local_addr().map_err(|reason| StartError::Bind { address: options.listen, reason })?;
    let mut listeners = vec![listener_with_tls(DEFAULT_LISTENER, listener, options.listen_tls.as_ref())?];
    for further in &options.listeners {
        let socket = bind(further.address, &mut handover).await?;
        listeners.push(listener_with_tls(&further.name, socket, further.tls.as_ref())?);
    }
    // Certificate files are watched like the config file (and reloaded with it).
    let watchers: Vec<_> = match options.control.watch {
        Some(interval) => listeners
            .iter()
            .map(|listener| tls::server::watch(listener.name.to_string(), Arc::downgrade(&listener.tls), interval))
            .collect(),
        None => Vec::new(),
    };
    let (stop, stop_rx) = watch::channel(false);
    for group in &groups {
        if let Some(resolution) = resolved.remove(&*group.name) {
            discovery.adopt(group, resolution, stop_rx.clone());
        }
    }
    let serving = proxy.clone().serve(listeners, stopped(stop_rx.clone())).map_err(StartError::Workers)?;
    let mut tasks = vec![tokio::spawn(serving), tokio::spawn(admission.run(stopped(stop_rx.clone())))];
    for watching in watchers {
        let stop = stopped(stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = watching => {}
                () = stop => {}
            }
        }));
    }
    for group in groups {
        tasks.push(tokio::spawn(group.run(stopped(stop_rx.clone()))));
    }
    tasks.push(tokio::spawn(snapshot::periodic(
        proxy.metrics().clone(),
        main.clone(),
        options.observe.dump.clone(),
        options.observe.advisory.clone(),
        stopped(stop_rx.clone()),
    )));
    if let Some(dir) = options.control.state_dir.clone() {
        let persist =
            crate::config::state::run(proxy.clone(), dir, options.control.state_interval, stopped(stop_rx.clone()));
        tasks.push(tokio::spawn(persist));
    }
    let reloader = Arc::new(Reloader::new(proxy.clone(), options.clone(), runtime.clone(), discovery, stop_rx.clone()));
    if let (Some(_), Some(interval)) = (&options.control.config_file, options.control.watch) {
        tasks.push(tokio::spawn(reloader.clone().watch(interval, stopped(stop_rx.clone()))));
    }
    let mut admin_socket = None;
    let admin_addr = match options.admin {
        Some(address) => {
            let listener = bind(address, &mut handover).await?;
            let bound = listener.local_addr().map_err(|reason| StartError::Bind { address, reason })?;
            admin_socket = listener.as_fd().try_clone_to_owned().ok().map(|fd| (bound, Arc::new(fd)));
            let admin = crate::admin::Admin::new(
                proxy.clone(),
                reloader.clone(),
                options.control.admin_token.clone(),
                options.control.plugin_dirs.clone(),
            );
            tasks.push(tokio::spawn(admin.serve(listener, stopped(stop_rx))));
            Some(bound)
        }
        None => None,
    };
    if let Some(path) = options.control.upgrade.socket.clone() {
        let (state, ready) = (options.control.state_dir.clone(), options.control.upgrade.ready_timeout);
        tasks.push(tokio::spawn(crate::upgrade::offer(path, proxy.clone(), admin_socket, state, ready, stop.clone())));
    }
    let picker = proxy.slot().current();
    tracing::info!(%proxy_addr, ?admin_addr, picker = %picker.info().source, backends = options.backends.len(), "veer is serving");
    Ok(RunningServer { proxy_addr, admin_addr, proxy, reloader, restored_state, stop, tasks })
}
