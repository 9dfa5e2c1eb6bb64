//! Data-path worker threads: one single-threaded tokio runtime per core, each
//! with its own backend connection pools.
//!
//! Why not the work-stealing runtime: there a request's client connection
//! task, its backend connection task and the idle workers being unparked to
//! steal them all live on different threads, so every request pays several
//! cross-thread wakeups. Profiling veer under `wrk` on 2 cores put a quarter of
//! its CPU in the kernel's wakeup and context-switch paths. Here a client
//! connection, its requests and the backend connections they use stay on one
//! thread (nginx's model); the acceptor hands each new connection to the
//! worker with the fewest open ones.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot;

use super::Clients;

/// The running workers.
#[derive(Debug)]
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    runtime: tokio::runtime::Handle,
    clients: Arc<Clients>,
    open_connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts `count` worker threads (at least one), each with clients made by `clients`.
    pub(crate) fn start(count: usize, clients: impl Fn() -> Clients) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stop_rx) = oneshot::channel::<()>();
            let (stopped_tx, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new().name(format!("veer-worker-{index}")).spawn(move || {
                // Its own instance of every picker: workers never wait for one another to pick.
                veer_plugin_runtime::set_worker_index(index);
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                // Cancels what is left: pooled backend connections, and client
                // connections still open after the shutdown grace period.
                drop(runtime);
                let _ = stopped_tx.send(());
            })?;
            workers.push(Worker {
                runtime: handle,
                clients: Arc::new(clients()),
                open_connections: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                stopped: Some(stopped),
            });
        }
        Ok(Workers { workers })
    }

    /// Runs the connection made by `serve` (given that worker's clients) on
    /// the least busy worker.
    pub(crate) fn spawn_connection<F, Fut>(&self, serve: F)
    where
        F: FnOnce(Arc<Clients>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.open_connections.load(Ordering::Relaxed))
            .expect("there is always at least one worker");
        let open = worker.open_connections.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let connection = serve(worker.clients.clone());
        worker.runtime.spawn(async move {
            connection.await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Stops every worker thread and waits until they have exited.
    pub(crate) async fn stop(mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(stopped) = worker.stopped.take() {
                let _ = stopped.await;
            }
        }
    }
}
