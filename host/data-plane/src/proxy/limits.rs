//! Limits on what a client may send and hold: request size and shape (checked
//! before anything is forwarded), HTTP/2 settings, and connection caps.
//!
//! The HTTP/1 codec enforces the header size and count while it parses (hyper
//! answers 431 itself); [`check_request`] repeats them for HTTP/2, where the
//! codec's limit is the SETTINGS value, and adds what hyper accepts but a
//! front door must not forward.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use http::{HeaderMap, Method, Request, StatusCode, Version, header};
use parking_lot::Mutex;

/// Limits on one request. Every one is answered with its own status and a
/// short body, and nothing is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// Request line and header fields together, in bytes (431 over it).
    pub max_header_bytes: usize,
    /// Header fields in one request (431 over it).
    pub max_headers: usize,
    /// The request target, in bytes (414 over it).
    pub max_uri_bytes: usize,
    /// The request body, in bytes (413 over it); unlimited when unset.
    pub max_body_bytes: Option<u64>,
    /// Client connections open at once (new ones are closed at accept).
    pub max_connections: usize,
    /// Client connections open at once from one IP address (a new one over
    /// it is answered 429 and closed).
    pub max_connections_per_client: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
            max_connections: 10_000,
            max_connections_per_client: 1024,
        }
    }
}

/// HTTP/2 settings veer announces to clients, and the abuse it tolerates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Limits {
    /// Streams one client connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Flow-control window of one stream, in bytes: how much request body a
    /// client may send before veer reads it.
    pub initial_stream_window_bytes: u32,
    /// Flow-control window of one connection, in bytes.
    pub initial_connection_window_bytes: u32,
    /// Largest frame a client may send, in bytes.
    pub max_frame_bytes: u32,
    /// Streams a client may open and reset before veer has read them; past
    /// this the connection is closed (CVE-2023-44487, "rapid reset").
    pub max_pending_accept_reset_streams: usize,
    /// Streams veer may reset because of the client's errors before it closes
    /// the connection.
    pub max_local_error_reset_streams: usize,
    /// Response bytes buffered per stream while the client does not read.
    pub max_send_buffer_bytes: usize,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 100,
            initial_stream_window_bytes: 256 * 1024,
            initial_connection_window_bytes: 1024 * 1024,
            max_frame_bytes: 16 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 64,
            max_send_buffer_bytes: 256 * 1024,
        }
    }
}

/// Why a request was refused before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The status to answer with.
    pub status: StatusCode,
    /// The reason given.
    pub reason: &'static str,
}

/// Checks a request's shape against `limits` and the rules of HTTP/1.1 that a
/// proxy must enforce because the backend may read the message differently.
pub fn check_request<B>(request: &Request<B>, limits: &RequestLimits) -> Result<(), Refused> {
    let refuse = |status, reason| Err(Refused { status, reason });
    if request.method() == Method::CONNECT {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served here");
    }
    let target_bytes = request.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + request.uri().authority().map_or(0, |a| a.as_str().len());
    if target_bytes > limits.max_uri_bytes {
        return refuse(StatusCode::URI_TOO_LONG, "the request target is longer than allowed");
    }
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields");
    }
    if header_bytes(headers) + target_bytes > limits.max_header_bytes {
        return refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the header fields are larger than allowed");
    }
    let hosts = headers.get_all(header::HOST).iter().count();
    if request.version() == Version::HTTP_11 && hosts == 0 && request.uri().authority().is_none() {
        return refuse(StatusCode::BAD_REQUEST, "an HTTP/1.1 request needs a Host header");
    }
    if hosts > 1 {
        return refuse(StatusCode::BAD_REQUEST, "more than one Host header");
    }
    if headers.contains_key(header::TRANSFER_ENCODING) && headers.contains_key(header::CONTENT_LENGTH) {
        // RFC 9112 §6.1: the two framings disagree about where the message
        // ends, and the next hop may believe the other one (smuggling).
        return refuse(StatusCode::BAD_REQUEST, "both Content-Length and Transfer-Encoding");
    }
    if !transfer_coding_is_chunked(headers) {
        return refuse(StatusCode::NOT_IMPLEMENTED, "the only transfer coding accepted is a single 'chunked'");
    }
    if request.version() == Version::HTTP_10 && headers.contains_key(header::TRANSFER_ENCODING) {
        // RFC 9112 §6.1: a 1.0 message with Transfer-Encoding may be framed
        // either way by the next hop; the classic request smuggling vector.
        return refuse(StatusCode::BAD_REQUEST, "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    }
    Ok(())
}

/// Whether `Transfer-Encoding`, if present, is exactly one `chunked` (any
/// other list, `chunked, chunked` included, is read differently by different
/// servers).
fn transfer_coding_is_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(|coding| coding.trim_ascii());
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(only), None) => only.eq_ignore_ascii_case(b"chunked"),
        _ => false,
    }
}

/// Name and value bytes of every header field, with the `: ` and CRLF that
/// HTTP/1 adds (what the client sent, near enough for a limit).
fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_client` are open from this address.
    PerClient,
}

/// Open client connections, in total and per client address.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Connections refused because of the total cap.
    pub refused_total: AtomicU64,
    /// Connections refused because of the per-client cap.
    pub refused_per_client: AtomicU64,
}

impl Connections {
    /// Admits a new connection from `client`, or says why not. The slot is
    /// held until the returned guard is dropped.
    pub fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        limits: &RequestLimits,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(ConnectionRefusal::Total);
        }
        let mut per_client = self.per_client.lock();
        let count = per_client.entry(client).or_insert(0);
        if *count >= limits.max_connections_per_client {
            drop(per_client);
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused_per_client.fetch_add(1, Ordering::Relaxed);
            return Err(ConnectionRefusal::PerClient);
        }
        *count += 1;
        Ok(ConnectionSlot { connections: self.clone(), client })
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client addresses with at least one connection open.
    pub fn clients(&self) -> usize {
        self.per_client.lock().len()
    }
}

/// One admitted connection; frees its place when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    client: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_client = self.connections.per_client.lock();
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Memory stays bounded by the clients connected now.
                per_client.remove(&self.client);
            }
        }
        drop(per_client);
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(builder: http::request::Builder) -> Request<()> {
        builder.body(()).expect("a valid request")
    }

    #[test]
    fn connect_is_refused() {
        let r = request(Request::builder().method(Method::CONNECT).uri("example.com:443").header("host", "x"));
        assert_eq!(check_request(&r, &RequestLimits::default()).unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn http11_without_host_is_refused_and_http10_is_not() {
        let limits = RequestLimits::default();
        let r = request(Request::builder().uri("/"));
        assert_eq!(check_request(&r, &limits).unwrap_err().status, StatusCode::BAD_REQUEST);
        let r = request(Request::builder().uri("/").version(Version::HTTP_10));
        assert!(check_request(&r, &limits).is_ok());
        let r = request(Request::builder().uri("/").header("host", "a"));
        assert!(check_request(&r, &limits).is_ok());
    }

    #[test]
    fn two_host_headers_are_refused() {
        let r = request(Request::builder().uri("/").header("host", "a").header("host", "b"));
        assert_eq!(check_request(&r, &RequestLimits::default()).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_long_target_gets_414_and_large_headers_431() {
        let limits = RequestLimits { max_uri_bytes: 10, max_header_bytes: 64, max_headers: 2, ..Default::default() };
        let r = request(Request::builder().uri("/0123456789").header("host", "a"));
        assert_eq!(check_request(&r, &limits).unwrap_err().status, StatusCode::URI_TOO_LONG);
        let r = request(Request::builder().uri("/").header("host", "a").header("x", "y".repeat(100)));
        assert_eq!(check_request(&r, &limits).unwrap_err().status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let r = request(Request::builder().uri("/").header("host", "a").header("x", "1").header("y", "2"));
        assert_eq!(check_request(&r, &limits).unwrap_err().status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let limits = RequestLimits::default();
        let both = request(
            Request::builder()
                .uri("/")
                .header("host", "a")
                .header("content-length", "6")
                .header("transfer-encoding", "chunked"),
        );
        assert_eq!(check_request(&both, &limits).unwrap_err().status, StatusCode::BAD_REQUEST);
        for coding in ["chunked, chunked", "gzip, chunked", "identity"] {
            let r = request(Request::builder().uri("/").header("host", "a").header("transfer-encoding", coding));
            assert_eq!(check_request(&r, &limits).unwrap_err().status, StatusCode::NOT_IMPLEMENTED, "{coding}");
        }
        let r = request(Request::builder().uri("/").header("host", "a").header("transfer-encoding", "Chunked"));
        assert!(check_request(&r, &limits).is_ok());
    }

    #[test]
    fn transfer_encoding_on_http10_is_refused() {
        let r = request(Request::builder().uri("/").version(Version::HTTP_10).header("transfer-encoding", "chunked"));
        assert_eq!(check_request(&r, &RequestLimits::default()).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn connection_caps_count_per_client_and_free_on_drop() {
        let limits = RequestLimits { max_connections: 3, max_connections_per_client: 2, ..Default::default() };
        let connections = Arc::new(Connections::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = connections.admit(a, &limits).unwrap();
        let _second = connections.admit(a, &limits).unwrap();
        assert_eq!(connections.admit(a, &limits).unwrap_err(), ConnectionRefusal::PerClient);
        let _third = connections.admit(b, &limits).unwrap();
        assert_eq!(connections.admit(b, &limits).unwrap_err(), ConnectionRefusal::Total);
        assert_eq!(connections.open(), 3);
        drop(first);
        assert!(connections.admit(b, &limits).is_ok(), "a freed slot is reusable");
        assert_eq!(connections.refused_total.load(Ordering::Relaxed), 1);
        assert_eq!(connections.refused_per_client.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn per_client_entries_are_forgotten_when_the_last_connection_closes() {
        let connections = Arc::new(Connections::default());
        let slot = connections.admit("10.0.0.1".parse().unwrap(), &RequestLimits::default()).unwrap();
        assert_eq!(connections.clients(), 1);
        drop(slot);
        assert_eq!(connections.clients(), 0);
        assert_eq!(connections.open(), 0);
    }
}
