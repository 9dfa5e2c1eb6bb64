//! Connections to backends, plain or TLS, pooled per protocol: the one
//! place that knows how veer reaches a backend, used by the data path (one
//! [`Transport`] per worker) and by the health checks (one per group).
//!
//! Plain HTTP/1.1, the common case, goes through veer's own client and pool
//! (module `http1`: [`Outgoing`], [`Http1Body`]) when the body is in memory;
//! a protocol switch or a streamed body through hyper's client on a
//! connection of its own; TLS and HTTP/2 backends through hyper-util's
//! pooled client, which keys its pool by scheme and authority in a SipHash
//! map and moves each request through several boxed futures and a
//! connection task.

mod http1;

pub use http1::{Http1Body, Outgoing};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response, Uri, header};
use http_body::{Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};

use crate::pool::BackendProtocol;
use crate::tls::BackendTls;

/// An upstream's TLS towards its backends, replaced by a reload; `None`:
/// plain HTTP. Shared by the group's data path and its health checks.
pub type TlsSlot = Arc<ArcSwapOption<BackendTls>>;

/// An exchange with a backend under way: its response headers, or why not.
pub type Sending = Pin<Box<dyn Future<Output = Result<Response<BackendBody>, SendError>> + Send>>;

/// A backend's response body: read by veer's own HTTP/1.1 client, or by
/// hyper's (TLS, HTTP/2, protocol switches, streamed request bodies).
#[derive(Debug)]
pub enum BackendBody {
    /// From veer's own client (plain HTTP/1.1, body in memory).
    Http1(Http1Body),
    /// From hyper's client.
    Hyper(Incoming),
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            BackendBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            BackendBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BackendBody::Http1(body) => body.is_end_stream(),
            BackendBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            BackendBody::Http1(body) => body.size_hint(),
            BackendBody::Hyper(body) => body.size_hint(),
        }
    }
}

/// A request body as the transport sends it: whole in memory, which veer's
/// own HTTP/1.1 client writes with the head, or streamed through hyper's.
pub trait RequestBody: Body<Data = Bytes> + Send + Unpin + Sized + 'static {
    /// The whole body if it is in memory; else the body itself, to stream.
    fn into_bytes(self) -> Result<Bytes, Self>;
}

impl RequestBody for Empty<Bytes> {
    fn into_bytes(self) -> Result<Bytes, Self> {
        Ok(Bytes::new())
    }
}

impl<L> RequestBody for Either<L, Full<Bytes>>
where
    L: Body<Data = Bytes> + Send + Unpin + 'static,
    L::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn into_bytes(self) -> Result<Bytes, Self> {
        match self {
            Either::Right(mut full) => {
                // `Full` holds its bytes and hands them over on its first poll,
                // ready at once: no waker is ever kept.
                let polled = Pin::new(&mut full).poll_frame(&mut Context::from_waker(Waker::noop()));
                match polled {
                    Poll::Ready(Some(Ok(frame))) => Ok(frame.into_data().unwrap_or_default()),
                    _ => Ok(Bytes::new()),
                }
            }
            streamed => Err(streamed),
        }
    }
}

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

/// Pooled clients: plain HTTP/1.1 (veer's own) and h2c, and per loaded TLS
/// settings (made on first use) HTTPS and h2 over TLS.
pub struct Transport<B> {
    builder: Builder,
    connector: HttpConnector,
    settings: PoolSettings,
    http1: Arc<http1::Http1Pool>,
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
    B: RequestBody,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Clients connecting and keeping connections as `settings` say, the
    /// ones from hyper-util made by `builder` (pool and timer settings) over
    /// `connector` (TCP settings); `http2_only` is set per protocol here.
    pub fn new(builder: Builder, connector: HttpConnector, settings: PoolSettings) -> Transport<B> {
        let http2 = builder.clone().http2_only(true).build(connector.clone());
        let http1 = Arc::new(http1::Http1Pool::new(settings));
        Transport { builder, connector, settings, http1, http2, tls: parking_lot::Mutex::default() }
    }

    /// Sends `request` (its URI `http://ADDRESS/...`) to a backend speaking
    /// `protocol`, over TLS when `tls` is set (the scheme becomes `https`).
    pub fn request(&self, protocol: BackendProtocol, tls: Option<&Arc<BackendTls>>, request: Request<B>) -> Sending {
        let Some(tls) = tls else {
            return match protocol {
                BackendProtocol::Http1 => self.plain_http1(request),
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

    /// Plain HTTP/1.1: veer's own client for a body in memory, hyper's over
    /// a connection of its own for a protocol switch or a streamed body.
    fn plain_http1(&self, request: Request<B>) -> Sending {
        let (parts, body) = request.into_parts();
        // `Upgrade` survives the hop-by-hop removal only on a protocol switch.
        let body = if parts.headers.contains_key(header::UPGRADE) { Err(body) } else { body.into_bytes() };
        match (body, parts.uri.authority()) {
            (Ok(bytes), Some(authority)) => self.http1.clone().send(&Outgoing::of(&parts, authority, None), bytes),
            (Ok(_), None) => Box::pin(async { Err(SendError::exchange("the request has no backend address")) }),
            (Err(body), _) => self.with_hyper(Request::from_parts(parts, body)),
        }
    }

    /// Sends a request to a plain HTTP/1.1 backend at `authority` with its
    /// whole body in memory, straight from the head as it is: veer's own
    /// client writes it out at once, so no copy of it is made for the
    /// attempt. Not for a protocol switch.
    pub fn send_http1(&self, request: &Outgoing<'_>, body: Bytes) -> Sending {
        self.http1.clone().send(request, body)
    }

    fn with_hyper(&self, request: Request<B>) -> Sending {
        let connect_timeout = self.settings.connect_timeout;
        Box::pin(async move {
            let response = http1::send_with_hyper(request, connect_timeout).await?;
            Ok(response.map(BackendBody::Hyper))
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
        match response.await {
            Ok(response) => Ok(response.map(BackendBody::Hyper)),
            Err(error) if error.is_connect() => Err(SendError::connect(error)),
            Err(error) => Err(SendError::exchange(error)),
        }
    })
}
