//! Connections to backends, plain or TLS, pooled per protocol: the one
//! place that knows how veer reaches a backend, used by the data path (one
//! [`Transport`] per worker) and by the health checks (one per group).
//!
//! Plain HTTP/1.1, the common case, goes through veer's own pool
//! ([`Http1Pool`]): hyper's connection API under a per-worker map from a
//! backend's address to its idle connections. hyper-util's pooled client,
//! which the other protocols still use, keyed its pool by scheme and
//! authority in a SipHash map and moved each request through several boxed
//! futures and a task: callgrind put ~10% of veer's instructions per
//! proxied request there.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::TokioIo;

use crate::pool::BackendProtocol;
use crate::tls::BackendTls;

/// An upstream's TLS towards its backends, replaced by a reload; `None`:
/// plain HTTP. Shared by the group's data path and its health checks.
pub type TlsSlot = Arc<ArcSwapOption<BackendTls>>;

/// An exchange with a backend under way: its response headers, or why not.
pub type Sending = Pin<Box<dyn Future<Output = Result<Response<Incoming>, SendError>> + Send>>;

/// Why an exchange with a backend failed: connecting, or later.
#[derive(Debug)]
pub struct SendError {
    connect: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl SendError {
    /// Whether no connection could be made (nothing reached the backend).
    pub fn is_connect(&self) -> bool {
        self.connect
    }

    fn connect(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SendError {
        SendError { connect: true, source: source.into() }
    }

    fn exchange(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SendError {
        SendError { connect: false, source: source.into() }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.connect {
            "connecting to the backend failed"
        } else {
            "the exchange with the backend failed"
        })
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// How [`Transport`] connects and keeps connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Time to establish a TCP connection.
    pub connect_timeout: Duration,
    /// How long an unused connection is kept.
    pub idle_timeout: Duration,
    /// Most unused connections kept per backend.
    pub max_idle_per_backend: usize,
}

/// Pooled clients: plain HTTP/1.1 (veer's pool) and h2c, and per loaded TLS
/// settings (made on first use) HTTPS and h2 over TLS.
pub struct Transport<B> {
    builder: Builder,
    connector: HttpConnector,
    http1: Arc<Http1Pool<B>>,
    http2: Client<HttpConnector, B>,
    tls: parking_lot::Mutex<Vec<TlsClients<B>>>,
}

struct TlsClients<B> {
    settings: Weak<BackendTls>,
    id: u64,
    http1: Client<HttpsConnector<HttpConnector>, B>,
    http2: Client<HttpsConnector<HttpConnector>, B>,
}

impl<B> std::fmt::Debug for Transport<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("tls_settings", &self.tls.lock().len()).finish_non_exhaustive()
    }
}

impl<B> Transport<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Clients connecting and keeping connections as `settings` say, the
    /// ones from hyper-util made by `builder` (pool and timer settings) over
    /// `connector` (TCP settings); `http2_only` is set per protocol here.
    pub fn new(builder: Builder, connector: HttpConnector, settings: PoolSettings) -> Transport<B> {
        let http2 = builder.clone().http2_only(true).build(connector.clone());
        let http1 = Arc::new(Http1Pool::new(settings));
        Transport { builder, connector, http1, http2, tls: parking_lot::Mutex::default() }
    }

    /// Sends `request` (its URI `http://ADDRESS/...`) to a backend speaking
    /// `protocol`, over TLS when `tls` is set (the scheme becomes `https`).
    pub fn request(&self, protocol: BackendProtocol, tls: Option<&Arc<BackendTls>>, request: Request<B>) -> Sending {
        let Some(tls) = tls else {
            return match protocol {
                BackendProtocol::Http1 => self.http1.clone().send(request),
                BackendProtocol::Http2 => legacy(self.http2.request(request)),
            };
        };
        let (mut parts, body) = request.into_parts();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTPS);
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        let request = Request::from_parts(parts, body);
        let (http1, http2) = self.tls_clients(tls);
        legacy(match protocol {
            BackendProtocol::Http1 => http1.request(request),
            BackendProtocol::Http2 => http2.request(request),
        })
    }

    /// The HTTPS clients for `tls`, made on first use; clients of settings
    /// no longer loaded (replaced by a reload) are dropped with their pools.
    #[allow(clippy::type_complexity)]
    fn tls_clients(
        &self,
        tls: &Arc<BackendTls>,
    ) -> (Client<HttpsConnector<HttpConnector>, B>, Client<HttpsConnector<HttpConnector>, B>) {
        let mut clients = self.tls.lock();
        if let Some(found) = clients.iter().find(|c| c.id == tls.id()) {
            return (found.http1.clone(), found.http2.clone());
        }
        clients.retain(|c| c.settings.strong_count() > 0);
        // The TLS connector hands `https` URIs to the TCP one.
        let mut connector = self.connector.clone();
        connector.enforce_http(false);
        let http1 =
            self.builder.clone().http2_only(false).build(tls.connector(BackendProtocol::Http1, connector.clone()));
        let http2 = self.builder.clone().http2_only(true).build(tls.connector(BackendProtocol::Http2, connector));
        clients.push(TlsClients {
            settings: Arc::downgrade(tls),
            id: tls.id(),
            http1: http1.clone(),
            http2: http2.clone(),
        });
        (http1, http2)
    }
}

/// hyper-util's exchange, with its error as a [`SendError`].
fn legacy(response: hyper_util::client::legacy::ResponseFuture) -> Sending {
    Box::pin(async move {
        response
            .await
            .map_err(|error| if error.is_connect() { SendError::connect(error) } else { SendError::exchange(error) })
    })
}

/// A backend's address as the pool's key: hashed with FNV (a few bytes, no
/// attacker-chosen keys: backends come from the config).
#[derive(Clone)]
struct Key(Authority);

// Byte equality: the addresses are veer's own, already lower case
// (`Authority`'s own comparison ignores case, byte by byte).
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_str().as_bytes());
    }
}

/// Idle (or finishing) HTTP/1.1 connections per backend address.
pub struct Http1Pool<B> {
    settings: PoolSettings,
    state: parking_lot::Mutex<PoolState<B>>,
}

struct PoolState<B> {
    idle: HashMap<Key, Vec<Idle<B>>, veer_core::hash::FnvBuild>,
    last_sweep: Instant,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Idle<B> {
    /// Closed, or unused for longer than `timeout`: to drop.
    fn spent(&self, now: Instant, timeout: Duration) -> bool {
        self.sender.is_closed() || (self.sender.is_ready() && now - self.since > timeout)
    }
}

impl<B> Http1Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(settings: PoolSettings) -> Http1Pool<B> {
        let state = PoolState { idle: HashMap::default(), last_sweep: Instant::now() };
        Http1Pool { settings, state: parking_lot::Mutex::new(state) }
    }

    /// Sends `request` (absolute URI) over a pooled connection to its
    /// authority, or a new one. A pooled connection that closed before the
    /// request went out (the backend timed it out, say) is replaced and the
    /// request sent again: nothing of it reached the backend.
    fn send(self: Arc<Self>, mut request: Request<B>) -> Sending {
        Box::pin(async move {
            let Some(authority) = request.uri().authority().cloned() else {
                return Err(SendError::exchange("the request has no backend address"));
            };
            if !request.headers().contains_key(header::HOST)
                && let Ok(host) = HeaderValue::from_str(authority.as_str())
            {
                request.headers_mut().insert(header::HOST, host);
            }
            // HTTP/1.1 to an origin server: the request target in origin form.
            let path = request.uri().path_and_query().cloned();
            *request.uri_mut() = path.map_or_else(|| Uri::from_static("/"), Uri::from);
            let key = Key(authority);
            loop {
                let (mut sender, pooled) = match self.checkout(&key) {
                    Some(sender) => (sender, true),
                    None => (self.connect(&key.0).await?, false),
                };
                match sender.try_send_request(request).await {
                    Ok(response) => {
                        self.checkin(key, sender);
                        return Ok(response);
                    }
                    Err(mut error) => match error.take_message() {
                        Some(unsent) if pooled => request = unsent,
                        _ => return Err(SendError::exchange(error.into_error())),
                    },
                }
            }
        })
    }

    /// A pooled connection to `key` ready for a request; closed and expired
    /// ones met on the way are dropped.
    fn checkout(&self, key: &Key) -> Option<SendRequest<B>> {
        let mut state = self.state.lock();
        let idle = state.idle.get_mut(key)?;
        let now = Instant::now();
        // The most recently used first: the others may time out and close.
        let mut index = idle.len();
        while index > 0 {
            index -= 1;
            let entry = &idle[index];
            if entry.spent(now, self.settings.idle_timeout) {
                idle.swap_remove(index);
            } else if entry.sender.is_ready() {
                return Some(idle.swap_remove(index).sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request to `key` (it is ready again once
    /// this response's body has arrived).
    fn checkin(&self, key: Key, sender: SendRequest<B>) {
        let now = Instant::now();
        let mut state = self.state.lock();
        if now - state.last_sweep > Duration::from_secs(1) {
            state.last_sweep = now;
            let timeout = self.settings.idle_timeout;
            for idle in state.idle.values_mut() {
                idle.retain(|entry| !entry.spent(now, timeout));
            }
            state.idle.retain(|_, idle| !idle.is_empty());
        }
        let idle = state.idle.entry(key).or_default();
        if idle.len() < self.settings.max_idle_per_backend {
            idle.push(Idle { sender, since: now });
        }
    }

    /// A new connection to `authority`, its reading and writing driven by a
    /// task of its own (with upgrades: a 101 hands the socket over).
    async fn connect(&self, authority: &Authority) -> Result<SendRequest<B>, SendError> {
        let address: SocketAddr = authority
            .as_str()
            .parse()
            .map_err(|_| SendError::connect(format!("{authority} is not an IP address and port")))?;
        let stream =
            match tokio::time::timeout(self.settings.connect_timeout, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(SendError::connect(error)),
                Err(_) => {
                    let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout");
                    return Err(SendError::connect(timeout));
                }
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(SendError::connect)?;
        tokio::spawn(async move {
            // Its failures reach the request it carried; nothing else waits on it.
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};

    use super::*;

    /// A backend answering `hello`, closing after each answer when `close`;
    /// counts the connections it accepted.
    async fn backend(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| async move {
                        let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
                        if close {
                            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address, accepted)
    }

    fn pool() -> Arc<Http1Pool<Empty<Bytes>>> {
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_backend: 8,
        };
        Arc::new(Http1Pool::new(settings))
    }

    async fn get(pool: &Arc<Http1Pool<Empty<Bytes>>>, address: SocketAddr) -> String {
        let request = Request::get(format!("http://{address}/x")).body(Empty::new()).unwrap();
        let response = pool.clone().send(request).await.unwrap();
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (address, accepted) = backend(false).await;
        let pool = pool();
        for _ in 0..20 {
            assert_eq!(get(&pool, address).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_backend_that_closes_each_connection_costs_no_request() {
        let (address, accepted) = backend(true).await;
        let pool = pool();
        for _ in 0..20 {
            assert_eq!(get(&pool, address).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20, "a new connection each time, never a failed request");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = unused.local_addr().unwrap();
        drop(unused);
        let request = Request::get(format!("http://{address}/")).body(Empty::<Bytes>::new()).unwrap();
        let error = pool().send(request).await.unwrap_err();
        assert!(error.is_connect(), "{error}");
    }
}
