//! Wires a running veer: plugin runtime, pool, picker, proxy listener and admin
//! listener. `veer run`, `veer demo` and the end-to-end tests all start here.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admission::{Admission, AdmissionConfig, InvalidAdmissionConfig};
use crate::plugin::{Limits, PickerSlot, PluginError, PluginRuntime, PluginSource};
use crate::pool::{BackendSpec, Pool};
use crate::proxy::{Proxy, ProxyConfig};

/// Everything needed to start veer.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where the admin API listens; `None` disables it.
    pub admin: Option<SocketAddr>,
    /// The backends.
    pub backends: Vec<BackendSpec>,
    /// The picker plugin.
    pub picker: PluginSource,
    /// Its parameters.
    pub params: Vec<(String, String)>,
    /// Timeouts and retries.
    pub proxy: ProxyConfig,
    /// Limits for plugin calls.
    pub limits: Limits,
    /// Admission control: global in-flight cap, per-client rate, adaptive limit.
    pub admission: AdmissionConfig,
}

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
    /// The picker could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The admission settings are invalid.
    #[error(transparent)]
    Admission(#[from] InvalidAdmissionConfig),
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

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address).await.map_err(|reason| StartError::Bind { address, reason })
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Starts veer: loads and smoke-tests the picker, binds the listeners, and
/// serves until shut down.
pub async fn start(options: ServerOptions) -> Result<RunningServer, StartError> {
    let admission = Admission::new(options.admission.clone())?;
    let runtime = PluginRuntime::new(options.limits.clone())?;
    let slot = {
        let (source, params) = (options.picker.clone(), options.params.clone());
        // Compiling a component takes a while: keep it off the async workers.
        tokio::task::spawn_blocking(move || PickerSlot::new(runtime, &source, params))
            .await
            .map_err(|e| PluginError::Engine(format!("picker loading task failed: {e}")))??
    };
    let (pool, events) = Pool::new(options.backends.clone());
    slot.apply(&events);
    let proxy = Proxy::with_admission(Arc::new(pool), Arc::new(slot), options.proxy.clone(), admission.clone());
    let listener = bind(options.listen).await?;
    let proxy_addr = listener.local_addr().map_err(|reason| StartError::Bind { address: options.listen, reason })?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(proxy.clone().serve(listener, stopped(stop_rx.clone()))),
        tokio::spawn(admission.run(stopped(stop_rx.clone()))),
    ];
    let admin_addr = match options.admin {
        Some(address) => {
            let listener = bind(address).await?;
            let bound = listener.local_addr().map_err(|reason| StartError::Bind { address, reason })?;
            tasks.push(tokio::spawn(crate::admin::serve(proxy.clone(), listener, stopped(stop_rx))));
            Some(bound)
        }
        None => None,
    };
    let picker = proxy.slot().current();
    tracing::info!(%proxy_addr, ?admin_addr, picker = %picker.info().source, backends = options.backends.len(), "veer is serving");
    Ok(RunningServer { proxy_addr, admin_addr, proxy, stop, tasks })
}
