//! Connections to backends, plain or TLS, pooled per protocol: the one
//! place that knows how veer reaches a backend, used by the data path (one
//! [`Transport`] per worker) and by the health checks (one per group).

use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use http::uri::Scheme;
use http::{Request, Uri};
use hyper::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client, ResponseFuture};

use crate::pool::BackendProtocol;
use crate::tls::BackendTls;

/// An upstream's TLS towards its backends, replaced by a reload; `None`:
/// plain HTTP. Shared by the group's data path and its health checks.
pub type TlsSlot = Arc<ArcSwapOption<BackendTls>>;

/// Pooled clients: plain HTTP/1.1 and h2c, and per loaded TLS settings
/// (made on first use) HTTPS and h2 over TLS.
pub struct Transport<B> {
    builder: Builder,
    connector: HttpConnector,
    http1: Client<HttpConnector, B>,
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
    /// Clients made by `builder` (pool and timer settings) over `connector`
    /// (TCP settings); `http2_only` is set per protocol here.
    pub fn new(builder: Builder, connector: HttpConnector) -> Transport<B> {
        let http1 = builder.clone().http2_only(false).build(connector.clone());
        let http2 = builder.clone().http2_only(true).build(connector.clone());
        Transport { builder, connector, http1, http2, tls: parking_lot::Mutex::default() }
    }

    /// Sends `request` (its URI `http://ADDRESS/...`) to a backend speaking
    /// `protocol`, over TLS when `tls` is set (the scheme becomes `https`).
    pub fn request(
        &self,
        protocol: BackendProtocol,
        tls: Option<&Arc<BackendTls>>,
        request: Request<B>,
    ) -> ResponseFuture {
        let Some(tls) = tls else {
            return match protocol {
                BackendProtocol::Http1 => self.http1.request(request),
                BackendProtocol::Http2 => self.http2.request(request),
            };
        };
        let (mut parts, body) = request.into_parts();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTPS);
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        let request = Request::from_parts(parts, body);
        let (http1, http2) = self.tls_clients(tls);
        match protocol {
            BackendProtocol::Http1 => http1.request(request),
            BackendProtocol::Http2 => http2.request(request),
        }
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
