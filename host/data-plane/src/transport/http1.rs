//! veer's own HTTP/1.1 client for plain-HTTP backends, the common case of the
//! data path. Per worker, a pool of connections by backend address; each
//! exchange reads and writes its connection from the request's own future (no
//! connection task, no channel between a sender and it). The request head is
//! written from veer's header map with its body in one write; the response
//! head is parsed once into the map the rest of veer reads, its field values
//! sharing the bytes read; a body that arrived with its head is handed over
//! without another read, and a connection goes back to the pool the moment
//! its response's last byte is read.
//!
//! Two kinds of request go to hyper's client instead, over a connection of
//! their own ([`send_with_hyper`]): a protocol switch (after a 101 the socket
//! is handed over), and a body streamed from the client (a backend may answer
//! before reading all of it, which takes reading and writing at once).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{PoolSettings, SendError};

/// Most fields in a backend's response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head (status line and fields), and largest trailer section.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Informational (1xx) responses skipped before the final one at most.
const MAX_INFORMATIONAL: usize = 8;
/// A body up to this size is copied after the head and written with it in
/// one buffer; a larger one is written from where it is, beside the head.
const COALESCE_BODY_BYTES: usize = 16 * 1024;
/// Field names a connection remembers from its last response.
const MAX_REMEMBERED_NAMES: usize = 32;
/// The most of a write buffer an idle connection keeps.
const MAX_IDLE_WRITE_BYTES: usize = 4 * 1024;
/// What a read asks for at least.
const READ_BYTES: usize = 8 * 1024;
/// What a read of a large body asks for at most: a 1 MiB body in 16 reads
/// (and as many writes to the client) rather than 128.
const MAX_READ_BYTES: usize = 64 * 1024;

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

/// One connection to a backend, with what was read of it and not yet used,
/// and the buffer its request heads are written into.
/// Boxed where it is kept or handed around: a response moves through several
/// layers by value, and each move copies what is inline.
struct Conn {
    key: Key,
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
    /// Scratch space of [`parse_head`].
    spans: Vec<[usize; 4]>,
    /// The field names of this backend's last response, in its order: a
    /// backend repeats its names, and a name found here is not parsed and
    /// allocated again (most of the cost of a custom name).
    names: Vec<HeaderName>,
}

impl Conn {
    fn new(key: Key, stream: TcpStream) -> Box<Conn> {
        let (read, write) = (BytesMut::with_capacity(READ_BYTES), Vec::with_capacity(1024));
        Box::new(Conn { key, stream, read, write, spans: Vec::with_capacity(16), names: Vec::new() })
    }

    /// Whether a pooled connection can carry another request: the backend
    /// has neither closed it nor sent anything unasked. No system call
    /// unless the socket became readable since it was last read dry.
    fn is_reusable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// Room for a read of about `want` bytes (within [`READ_BYTES`] and
    /// [`MAX_READ_BYTES`]), reclaiming the buffer when what was handed out
    /// of it is gone.
    fn make_room(&mut self, want: usize) {
        let want = want.clamp(READ_BYTES, MAX_READ_BYTES);
        if self.read.capacity() - self.read.len() < want / 8 {
            self.read.reserve(want);
        }
    }

    /// Reads more of a head; `Ok(0)` when the backend closed.
    async fn fill(&mut self) -> io::Result<usize> {
        self.make_room(READ_BYTES);
        self.stream.read_buf(&mut self.read).await
    }

    /// Reads more of a body, about `want` bytes at most.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        self.make_room(want);
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut self.read) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    /// Writes the head in `self.write` and then `body`. `Err` says how many
    /// bytes went out before the failure.
    async fn write_request(&mut self, body: &[u8]) -> Result<(), (usize, io::Error)> {
        let head = &self.write[..];
        let total = head.len() + body.len();
        let mut written = 0;
        while written < total {
            let result = if written < head.len() {
                let slices = [IoSlice::new(&head[written..]), IoSlice::new(body)];
                self.stream.write_vectored(&slices).await
            } else {
                self.stream.write(&body[written - head.len()..]).await
            };
            match result {
                Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(error) => return Err((written, error)),
            }
        }
        Ok(())
    }
}

/// Idle HTTP/1.1 connections per backend address, for one worker.
pub(super) struct Http1Pool {
    settings: PoolSettings,
    state: parking_lot::Mutex<PoolState>,
}

struct PoolState {
    idle: HashMap<Key, Vec<Idle>, veer_core::hash::FnvBuild>,
    last_sweep: Instant,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Http1Pool {
    pub(super) fn new(settings: PoolSettings) -> Http1Pool {
        let state = PoolState { idle: HashMap::default(), last_sweep: Instant::now() };
        Http1Pool { settings, state: parking_lot::Mutex::new(state) }
    }

    /// Sends `request` with its whole `body` over a pooled connection to its
    /// backend, or a new one. The head is written out before this returns
    /// (nothing of `request` is kept or copied into a new request). A pooled
    /// connection that the backend closed before any of the request went out
    /// is replaced and the request sent again: nothing of it reached the
    /// backend.
    pub(super) fn send(self: Arc<Self>, request: &Outgoing<'_>, body: Bytes) -> super::Sending {
        let key = Key(request.authority.clone());
        let head_only = *request.method == Method::HEAD;
        let close = asks_close(request.headers);
        let mut conn = self.checkout(&key);
        // The head goes into the write buffer of the connection it will use
        // (a new connection's is this one).
        let mut head = conn.as_mut().map_or_else(|| Vec::with_capacity(1024), |conn| std::mem::take(&mut conn.write));
        head.clear();
        encode_head(&mut head, request, body.len());
        let coalesced = body.len() <= COALESCE_BODY_BYTES;
        if coalesced {
            head.extend_from_slice(&body);
        }
        Box::pin(async move {
            loop {
                let pooled = conn.is_some();
                let mut conn = match conn.take() {
                    Some(conn) => conn,
                    None => Conn::new(key.clone(), connect(&key.0, self.settings.connect_timeout).await?),
                };
                conn.write = head;
                match conn.write_request(if coalesced { &[] } else { &body[..] }).await {
                    Ok(()) => {}
                    Err((0, _)) if pooled => {
                        head = std::mem::take(&mut conn.write);
                        continue;
                    }
                    Err((_, error)) => return Err(SendError::exchange(error)),
                }
                let head = read_head(&mut conn, head_only).await.map_err(SendError::exchange)?;
                let keep_alive = head.keep_alive && !close;
                let mut response = Response::new(());
                *response.status_mut() = head.status;
                *response.version_mut() = head.version;
                *response.headers_mut() = head.headers;
                let body =
                    Http1Body::new(conn, head.decoding, keep_alive, self.clone()).map_err(SendError::exchange)?;
                return Ok(response.map(|()| super::BackendBody::Http1(body)));
            }
        })
    }

    /// A pooled connection to `key` ready for a request; closed and expired
    /// ones met on the way are dropped.
    fn checkout(&self, key: &Key) -> Option<Box<Conn>> {
        let mut state = self.state.lock();
        let idle = state.idle.get_mut(key)?;
        let now = Instant::now();
        // The most recently used first: the others may time out and close.
        while let Some(entry) = idle.pop() {
            if now - entry.since <= self.settings.idle_timeout && entry.conn.is_reusable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keeps `conn`, its last response read to the end, for its next request.
    fn checkin(&self, mut conn: Box<Conn>) {
        // An idle connection keeps no large body's buffer, nor a large
        // request's (a body up to 16 KiB is written with its head).
        if conn.read.capacity() > 2 * READ_BYTES {
            conn.read = BytesMut::with_capacity(READ_BYTES);
        }
        if conn.write.capacity() > MAX_IDLE_WRITE_BYTES {
            conn.write = Vec::with_capacity(1024);
        }
        let now = Instant::now();
        let mut state = self.state.lock();
        if now - state.last_sweep > Duration::from_secs(1) {
            state.last_sweep = now;
            let timeout = self.settings.idle_timeout;
            for idle in state.idle.values_mut() {
                idle.retain(|entry| now - entry.since <= timeout);
            }
            state.idle.retain(|_, idle| !idle.is_empty());
        }
        let idle = state.idle.entry(conn.key.clone()).or_default();
        if idle.len() < self.settings.max_idle_per_backend {
            idle.push(Idle { conn, since: now });
        }
    }
}

/// A TCP connection to `authority` (an IP address and port), within `timeout`.
async fn connect(authority: &Authority, timeout: Duration) -> Result<TcpStream, SendError> {
    let address: SocketAddr = authority
        .as_str()
        .parse()
        .map_err(|_| SendError::connect(format!("{authority} is not an IP address and port")))?;
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(error)) => Err(SendError::connect(error)),
        Err(_) => Err(SendError::connect(io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))),
    }
}

/// Sends `request` (absolute URI) through hyper's HTTP/1.1 client over a new
/// connection of its own, driven by a task (with upgrades: a 101 hands the
/// socket over). For what veer's own client does not take: a protocol switch
/// and a body streamed from the client.
pub(super) async fn send_with_hyper<B>(
    mut request: Request<B>,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, SendError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
    let stream = connect(&authority, connect_timeout).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(SendError::connect)?;
    tokio::spawn(async move {
        // Its failures reach the request it carried; nothing else waits on it.
        let _ = connection.with_upgrades().await;
    });
    sender.send_request(request).await.map_err(SendError::exchange)
}

/// A request to send with veer's own client, borrowed: its head is written
/// straight from where it is.
pub struct Outgoing<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target, in origin form (`/path?query`).
    pub target: &'a str,
    /// The fields.
    pub headers: &'a HeaderMap,
    /// One more field, replacing any of that name in `headers` (a trace's
    /// `traceparent` for this attempt).
    pub extra: Option<(&'a HeaderName, &'a HeaderValue)>,
    /// The backend's address.
    pub authority: &'a Authority,
}

impl<'a> Outgoing<'a> {
    /// `head` as it is (its target in origin form), to `authority`, with
    /// `extra` added.
    pub fn of(
        head: &'a http::request::Parts,
        authority: &'a Authority,
        extra: Option<(&'a HeaderName, &'a HeaderValue)>,
    ) -> Outgoing<'a> {
        let target = head.uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
        Outgoing { method: &head.method, target, headers: &head.headers, extra, authority }
    }
}

/// Writes the request head for an HTTP/1.1 origin server: the target in
/// origin form, `Host` from the authority unless the request has one, the
/// fields as they are but framing, and `Content-Length` for a body of
/// `body_len` bytes (for an empty one, when the method has a body by nature
/// or the request said so).
fn encode_head(out: &mut Vec<u8>, request: &Outgoing<'_>, body_len: usize) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !request.headers.contains_key(header::HOST) {
        field(out, b"host", request.authority.as_str().as_bytes());
    }
    let mut had_length = false;
    for (name, value) in request.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            had_length |= name == header::CONTENT_LENGTH;
            continue;
        }
        if request.extra.is_some_and(|(extra, _)| extra == name) {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some((name, value)) = request.extra {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if body_len > 0 || had_length || matches!(*request.method, Method::POST | Method::PUT | Method::PATCH) {
        let mut digits = [0u8; 20];
        field(out, b"content-length", format_decimal(body_len as u64, &mut digits));
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `buffer`.
fn format_decimal(mut n: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[start..];
        }
    }
}

/// Whether a `Connection` field says `close`.
fn asks_close(headers: &HeaderMap) -> bool {
    connection_has(headers, "close")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A final response head as read, and how its body is framed.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    decoding: Decoding,
    /// Whether the connection may carry another request after this body.
    keep_alive: bool,
}

/// Reads until a final response head (informational ones are skipped).
async fn read_head(conn: &mut Conn, head_only: bool) -> io::Result<Head> {
    let mut informational = 0;
    loop {
        let parsed = if conn.read.is_empty() { None } else { parse_head(conn, head_only)? };
        if let Some(head) = parsed {
            if !head.status.is_informational() {
                return Ok(head);
            }
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(invalid("101 Switching Protocols to a request that asked for no switch"));
            }
            informational += 1;
            if informational > MAX_INFORMATIONAL {
                return Err(invalid(format!("more than {MAX_INFORMATIONAL} informational responses")));
            }
            continue;
        }
        if conn.fill().await? == 0 {
            let message = if conn.read.is_empty() {
                "the backend closed the connection before answering"
            } else {
                "the backend closed the connection within the response head"
            };
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
    }
}

/// Parses a response head at the start of `read` and takes it out;
/// `Ok(None)` while it is incomplete.
fn parse_head(conn: &mut Conn, head_only: bool) -> io::Result<Option<Head>> {
    let Conn { read, spans, names, .. } = conn;
    // Where each field's name and value lie in `read` (kept by the connection
    // so that no parse allocates it): the head's bytes are frozen once
    // parsed, and the values share them.
    spans.clear();
    let (length, code, minor) = {
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, read, &mut fields);
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD_BYTES => length,
            Ok(httparse::Status::Complete(_)) => {
                return Err(invalid(format!("response head larger than {MAX_HEAD_BYTES} bytes")));
            }
            Ok(httparse::Status::Partial) if read.len() > MAX_HEAD_BYTES => {
                return Err(invalid(format!("response head larger than {MAX_HEAD_BYTES} bytes")));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(invalid(format!("malformed response head: {error}"))),
        };
        let base = read.as_ptr() as usize;
        spans.extend(response.headers.iter().map(|field| {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            [name, name + field.name.len(), value, value + field.value.len()]
        }));
        (length, response.code.unwrap_or(0), response.version.unwrap_or(1))
    };
    let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("invalid status code {code}")))?;
    let head = read.split_to(length).freeze();
    // Room for what veer adds to a response (`Via`, the request id, the
    // affinity cookie, `Connection`) without growing the map.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    for (index, &[name_start, name_end, value_start, value_end]) in spans.iter().enumerate() {
        let name = field_name(&head[name_start..name_end], index, names)?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| invalid("invalid field value in the response head"))?;
        headers.append(name, value);
    }
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut keep_alive = if version == Version::HTTP_10 {
        connection_has(&headers, "keep-alive")
    } else {
        !connection_has(&headers, "close")
    };
    // RFC 9112 §6.3, in its order.
    let decoding = if head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Decoding::Done
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        // With both, the length is ignored and the connection not reused.
        keep_alive &= !headers.contains_key(header::CONTENT_LENGTH);
        if last_coding_is_chunked(&headers) {
            Decoding::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            Decoding::UntilClose
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        match content_length(&headers)? {
            0 => Decoding::Done,
            length => Decoding::Length(length),
        }
    } else {
        keep_alive = false;
        Decoding::UntilClose
    };
    Ok(Some(Head { status, version, headers, decoding, keep_alive }))
}

/// The field name `bytes`, the `index`th of its head: from `names` (the
/// previous head's names) when it is there, at `index` first.
fn field_name(bytes: &[u8], index: usize, names: &mut Vec<HeaderName>) -> io::Result<HeaderName> {
    let same = |name: &&HeaderName| name.as_str().as_bytes() == bytes;
    if let Some(known) = names.get(index).filter(same).or_else(|| names.iter().find(same)) {
        return Ok(known.clone());
    }
    let name = HeaderName::from_bytes(bytes).map_err(|_| invalid("invalid field name in the response head"))?;
    if index < MAX_REMEMBERED_NAMES {
        names.truncate(index);
        names.push(name.clone());
    }
    Ok(name)
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    let last = headers.get_all(header::TRANSFER_ENCODING).iter().next_back();
    last.and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// The one length all `Content-Length` values agree on (a list of equal
/// values is one length, RFC 9110 §8.6); anything else is an error.
fn content_length(headers: &HeaderMap) -> io::Result<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(invalid("invalid Content-Length in the response"));
            }
            let n = item.iter().fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0'));
            if length.is_some_and(|seen| seen != n) {
                return Err(invalid("conflicting Content-Length values in the response"));
            }
            length = Some(n);
        }
    }
    length.ok_or_else(|| invalid("empty Content-Length in the response"))
}

/// Where a body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the backend closes.
    UntilClose,
    Done,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data remain.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// A response body read by veer's own client. Its connection goes back to
/// the pool when the last byte is read (at once if it came with the head);
/// dropped before that, the connection is closed.
pub struct Http1Body {
    decoding: Decoding,
    /// The body that came with the head, decoded at once (a length-framed
    /// one, the common case) so that its connection is back in the pool
    /// before the response goes on.
    ready: Option<Bytes>,
    conn: Option<Box<Conn>>,
    keep_alive: bool,
    pool: Option<Arc<Http1Pool>>,
}

impl std::fmt::Debug for Http1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Body").field("decoding", &self.decoding).finish_non_exhaustive()
    }
}

impl Http1Body {
    fn new(conn: Box<Conn>, decoding: Decoding, keep_alive: bool, pool: Arc<Http1Pool>) -> io::Result<Http1Body> {
        let mut body = Http1Body { decoding, ready: None, conn: Some(conn), keep_alive, pool: Some(pool) };
        if let Decoding::Length(_) = body.decoding {
            body.ready = body.decode()?.and_then(|frame| frame.into_data().ok());
        }
        if body.decoding == Decoding::Done {
            body.release();
        }
        Ok(body)
    }

    /// The next frame from the bytes already read; `Ok(None)` when more must
    /// be read first, or when the body is done.
    fn decode(&mut self) -> io::Result<Option<Frame<Bytes>>> {
        let Some(conn) = self.conn.as_mut() else { return Ok(None) };
        let read = &mut conn.read;
        loop {
            match self.decoding {
                Decoding::Done => return Ok(None),
                Decoding::Length(remaining) | Decoding::Chunked(Chunk::Data(remaining)) => {
                    if read.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(read.len());
                    let left = remaining - take as u64;
                    self.decoding = match self.decoding {
                        Decoding::Length(_) if left == 0 => Decoding::Done,
                        Decoding::Length(_) => Decoding::Length(left),
                        _ if left == 0 => Decoding::Chunked(Chunk::DataEnd),
                        _ => Decoding::Chunked(Chunk::Data(left)),
                    };
                    return Ok(Some(Frame::data(read.split_to(take).freeze())));
                }
                Decoding::UntilClose => {
                    return Ok((!read.is_empty()).then(|| Frame::data(read.split().freeze())));
                }
                Decoding::Chunked(Chunk::Size) => {
                    let Some(end) = read.iter().position(|&b| b == b'\n') else {
                        if read.len() > MAX_CHUNK_LINE_BYTES {
                            return Err(invalid("chunk-size line too long"));
                        }
                        return Ok(None);
                    };
                    let size = chunk_size(&read[..end])?;
                    let _ = read.split_to(end + 1);
                    self.decoding = Decoding::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Decoding::Chunked(Chunk::DataEnd) => {
                    if read.len() < 2 {
                        return Ok(None);
                    }
                    if &read[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    let _ = read.split_to(2);
                    self.decoding = Decoding::Chunked(Chunk::Size);
                }
                Decoding::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (length, trailers) = match httparse::parse_headers(read, &mut fields) {
                        Ok(httparse::Status::Complete((length, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for field in fields.iter() {
                                let name = HeaderName::from_bytes(field.name.as_bytes());
                                let value = HeaderValue::from_bytes(field.value);
                                if let (Ok(name), Ok(value)) = (name, value) {
                                    trailers.append(name, value);
                                }
                            }
                            (length, trailers)
                        }
                        Ok(httparse::Status::Partial) if read.len() > MAX_HEAD_BYTES => {
                            return Err(invalid("trailer section too large"));
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(error) => return Err(invalid(format!("malformed trailer section: {error}"))),
                    };
                    let _ = read.split_to(length);
                    self.decoding = Decoding::Done;
                    return Ok((!trailers.is_empty()).then(|| Frame::trailers(trailers)));
                }
            }
        }
    }

    /// The body is read to its end: its connection goes back to the pool if
    /// it can carry another request (nothing unasked was read past the body).
    fn release(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take())
            && self.keep_alive
            && conn.read.is_empty()
        {
            pool.checkin(conn);
        }
    }
}

/// A chunk-size line's size (RFC 9112 §7.1: hex digits, then extensions,
/// which are ignored); the line ends in CRLF.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let line = line.strip_suffix(b"\r").ok_or_else(|| invalid("chunk-size line not ended by CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
        return Err(invalid("invalid chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &digit| n * 16 + u64::from((digit as char).to_digit(16).unwrap_or(0))))
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            match this.decode() {
                Ok(Some(frame)) => {
                    if this.decoding == Decoding::Done {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if this.decoding == Decoding::Done => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            let want = match this.decoding {
                Decoding::Length(left) | Decoding::Chunked(Chunk::Data(left)) => {
                    usize::try_from(left).unwrap_or(usize::MAX)
                }
                _ => MAX_READ_BYTES,
            };
            match ready!(conn.poll_fill(cx, want)) {
                Ok(0) if this.decoding == Decoding::UntilClose => {
                    this.decoding = Decoding::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    let closed = "the backend closed the connection within the response body";
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, closed))));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.decoding == Decoding::Done
    }

    fn size_hint(&self) -> SizeHint {
        let ready = self.ready.as_ref().map_or(0, |data| data.len() as u64);
        match self.decoding {
            Decoding::Length(remaining) => SizeHint::with_exact(ready + remaining),
            Decoding::Done => SizeHint::with_exact(ready),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};

    use super::super::BackendBody;
    use super::*;

    /// What a raw backend answers to one request, and whether it closes after.
    type Script = fn(usize) -> (Vec<u8>, bool);

    /// A backend speaking HTTP/1.1 by hand, as `script` says, on 127.0.0.1:
    /// counts its connections and keeps every request it read (head and body).
    struct RawBackend {
        address: SocketAddr,
        accepted: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    async fn raw_backend(script: Script) -> RawBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (counter, seen) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut stream, &mut buffer).await else { return };
                        let index = {
                            let mut seen = seen.lock().unwrap();
                            seen.push(request);
                            seen.len() - 1
                        };
                        let (answer, close) = script(index);
                        if stream.write_all(&answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        RawBackend { address, accepted, requests }
    }

    /// One request's head and `Content-Length` body off `stream`.
    async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                if buffer.len() >= end + 4 + length {
                    return Some(buffer.drain(..end + 4 + length).collect());
                }
            }
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn pool() -> Arc<Http1Pool> {
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_backend: 8,
        };
        Arc::new(Http1Pool::new(settings))
    }

    fn request(method: Method, address: SocketAddr, path: &str) -> http::request::Parts {
        Request::builder().method(method).uri(format!("http://{address}{path}")).body(()).unwrap().into_parts().0
    }

    /// Sends `parts` (absolute URI) as the transport does.
    fn start(pool: &Arc<Http1Pool>, parts: &http::request::Parts, body: &[u8]) -> super::super::Sending {
        let outgoing = Outgoing::of(parts, parts.uri.authority().unwrap(), None);
        pool.clone().send(&outgoing, Bytes::copy_from_slice(body))
    }

    async fn send(pool: &Arc<Http1Pool>, parts: http::request::Parts, body: &[u8]) -> Response<BackendBody> {
        start(pool, &parts, body).await.unwrap()
    }

    /// The body's bytes and trailers, or the error that ended it.
    async fn read_body(response: Response<BackendBody>) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let collected = response.into_body().collect().await.map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes().to_vec(), trailers))
    }

    /// The error of an exchange expected to fail, as its cause says it.
    async fn refused(address: SocketAddr) -> (bool, String) {
        match start(&pool(), &request(Method::GET, address, "/"), b"").await {
            Ok(response) => panic!("expected an error, got {}", response.status()),
            Err(error) => (error.is_connect(), std::error::Error::source(&error).unwrap().to_string()),
        }
    }

    async fn get(pool: &Arc<Http1Pool>, address: SocketAddr) -> Vec<u8> {
        read_body(send(pool, request(Method::GET, address, "/x"), b"").await).await.unwrap().0
    }

    fn hello(_: usize) -> (Vec<u8>, bool) {
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec(), false)
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let backend = raw_backend(hello).await;
        let pool = pool();
        for _ in 0..20 {
            assert_eq!(get(&pool, backend.address).await, b"hello");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_backend_that_closes_each_connection_costs_no_request() {
        let backend =
            raw_backend(|_| (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(), true))
                .await;
        let pool = pool();
        for _ in 0..20 {
            assert_eq!(get(&pool, backend.address).await, b"ok");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 20, "a new connection each time, never a failed request");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_backend_closed_while_idle_is_replaced() {
        // Closes without saying so, as a backend's idle timeout does.
        let backend = raw_backend(|_| (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)).await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(get(&pool, backend.address).await, b"ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = unused.local_addr().unwrap();
        drop(unused);
        let (connect, cause) = refused(address).await;
        assert!(connect, "{cause}");
    }

    #[tokio::test]
    async fn the_request_head_is_origin_form_with_host_and_its_own_framing() {
        let backend = raw_backend(hello).await;
        let pool = pool();
        let mut parts = request(Method::POST, backend.address, "/a/b?c=d");
        parts.headers.insert("x-custom", HeaderValue::from_static("1"));
        // Framing of the client's side is veer's to set.
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        read_body(send(&pool, parts, b"abc").await).await.unwrap();
        read_body(send(&pool, request(Method::PUT, backend.address, "/"), b"").await).await.unwrap();
        let mut with_host = request(Method::GET, backend.address, "/");
        with_host.headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        read_body(send(&pool, with_host, b"").await).await.unwrap();
        let seen = backend.requests.lock().unwrap().clone();
        let text: Vec<String> = seen.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
        assert_eq!(
            text[0],
            format!(
                "POST /a/b?c=d HTTP/1.1\r\nhost: {}\r\nx-custom: 1\r\ncontent-length: 3\r\n\r\nabc",
                backend.address
            )
        );
        assert_eq!(text[1], format!("PUT / HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n\r\n", backend.address));
        assert_eq!(text[2], "GET / HTTP/1.1\r\nhost: example.com\r\n\r\n");
    }

    #[tokio::test]
    async fn a_large_body_goes_out_whole_beside_its_head() {
        let backend = raw_backend(hello).await;
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        read_body(send(&pool(), request(Method::PUT, backend.address, "/"), &body).await).await.unwrap();
        let seen = backend.requests.lock().unwrap()[0].clone();
        assert!(seen.ends_with(&body), "the body arrived intact");
        assert!(String::from_utf8_lossy(&seen[..200]).contains("content-length: 200000\r\n"));
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_with_its_trailers_and_the_connection_kept() {
        let backend = raw_backend(|_| {
            let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-checksum: 42\r\n\r\n";
            (answer.to_vec(), false)
        })
        .await;
        let pool = pool();
        for _ in 0..3 {
            let (body, trailers) =
                read_body(send(&pool, request(Method::GET, backend.address, "/"), b"").await).await.unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(trailers.unwrap()["x-checksum"], "42");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_until_close_is_read_whole_and_its_connection_not_reused() {
        let backend = raw_backend(|_| (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true)).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(get(&pool, backend.address).await, b"until the end");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_http_1_0_answer_without_keep_alive_closes_its_connection() {
        let backend = raw_backend(|_| (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false)).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(get(&pool, backend.address).await, b"ok");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
        let response = send(&pool, request(Method::GET, backend.address, "/"), b"").await;
        assert_eq!(response.version(), Version::HTTP_10);
    }

    #[tokio::test]
    async fn informational_answers_are_skipped() {
        let backend = raw_backend(|_| {
            let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
                HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone";
            (answer.to_vec(), false)
        })
        .await;
        let response = send(&pool(), request(Method::GET, backend.address, "/"), b"").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(!response.headers().contains_key("link"));
        assert_eq!(read_body(response).await.unwrap().0, b"done");
    }

    #[tokio::test]
    async fn bodiless_answers_read_no_body_and_keep_the_connection() {
        let backend = raw_backend(|index| {
            let answer: &[u8] = match index % 3 {
                // A HEAD's answer states the length it would have had.
                0 => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
                1 => b"HTTP/1.1 204 No Content\r\n\r\n",
                _ => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
            };
            (answer.to_vec(), false)
        })
        .await;
        let pool = pool();
        for round in 0..6 {
            let method = if round % 3 == 0 { Method::HEAD } else { Method::GET };
            let response = send(&pool, request(method, backend.address, "/"), b"").await;
            assert!(response.body().is_end_stream());
            assert_eq!(read_body(response).await.unwrap().0, b"");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_spread_over_many_reads_arrives_whole() {
        let backend = raw_backend(|_| {
            let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
            answer.extend((0..1_048_576u32).map(|i| (i % 253) as u8));
            (answer, false)
        })
        .await;
        let pool = pool();
        for _ in 0..2 {
            let response = send(&pool, request(Method::GET, backend.address, "/"), b"").await;
            assert_eq!(response.body().size_hint().exact(), Some(1_048_576));
            let body = read_body(response).await.unwrap().0;
            assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bytes_past_the_answer_end_its_connection() {
        let backend = raw_backend(|_| (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokGARBAGE".to_vec(), false)).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(get(&pool, backend.address).await, b"ok");
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 3, "never a connection with stray bytes on it");
    }

    #[tokio::test]
    async fn broken_answers_are_errors_of_the_exchange() {
        let cases: [(Script, &str); 6] = [
            (
                |_| (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_vec(), true),
                "conflicting",
            ),
            (|_| (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n".to_vec(), true), "invalid Content-Length"),
            (|_| (b"HTTP/1.1 2000 OK\r\n\r\n".to_vec(), true), "malformed"),
            (|_| (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), true), "malformed"),
            (|_| (b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(), true), "101"),
            (|_| (b"HTTP/1.1 200 OK\r\ncontent-le".to_vec(), true), "within the response head"),
        ];
        for (script, expected) in cases {
            let (connect, cause) = refused(raw_backend(script).await.address).await;
            assert!(!connect);
            assert!(cause.contains(expected), "{cause:?} should say {expected:?}");
        }
    }

    #[tokio::test]
    async fn endless_informational_answers_are_refused() {
        let backend = raw_backend(|_| (b"HTTP/1.1 100 Continue\r\n\r\n".repeat(20), true)).await;
        let (_, cause) = refused(backend.address).await;
        assert!(cause.contains("informational"), "{cause}");
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let backend = raw_backend(|_| {
            let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..90 {
                answer.extend(format!("x-filler-{i}: {}\r\n", "a".repeat(1000)).bytes());
            }
            answer.extend(b"\r\n");
            (answer, true)
        })
        .await;
        let (_, cause) = refused(backend.address).await;
        assert!(cause.contains("larger than"), "{cause}");
    }

    #[tokio::test]
    async fn a_backend_that_dies_within_the_body_ends_it_with_an_error() {
        let length = raw_backend(|_| (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".to_vec(), true)).await;
        let chunked =
            raw_backend(|_| (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel".to_vec(), true)).await;
        let bad_chunk =
            raw_backend(|_| (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(), true)).await;
        for (backend, expected) in [(length, "closed"), (chunked, "closed"), (bad_chunk, "invalid chunk size")] {
            let result = start(&pool(), &request(Method::GET, backend.address, "/"), b"").await;
            let error = match result {
                Ok(response) => read_body(response).await.unwrap_err(),
                Err(error) => std::error::Error::source(&error).unwrap().to_string(),
            };
            assert!(error.contains(expected), "{error:?} should say {expected:?}");
        }
    }

    #[tokio::test]
    async fn a_streamed_body_goes_through_hyper() {
        let backend = raw_backend(hello).await;
        let body = Full::new(Bytes::from_static(b"streamed"));
        let request = Request::post(format!("http://{}/s", backend.address)).body(body).unwrap();
        let response = send_with_hyper(request, Duration::from_secs(2)).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hello");
        let seen = String::from_utf8(backend.requests.lock().unwrap()[0].clone()).unwrap();
        assert!(seen.starts_with("POST /s HTTP/1.1\r\n"), "{seen}");
        assert!(seen.ends_with("streamed"), "{seen}");
    }

    #[test]
    fn chunk_sizes_are_hex_with_extensions_ignored() {
        assert_eq!(chunk_size(b"1a\r").unwrap(), 26);
        assert_eq!(chunk_size(b"FF ; ext=1\r").unwrap(), 255);
        assert_eq!(chunk_size(b"0\r").unwrap(), 0);
        for bad in [&b"\r"[..], b"g\r", b"12", b"1 2\r", b"1000000000000000\r", b"-1\r"] {
            assert!(chunk_size(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn remembered_field_names_are_found_in_any_order() {
        let mut names = Vec::new();
        for head in [&["x-a", "content-length", "X-Mixed"][..], &["content-length", "x-b", "x-a", "X-Mixed"]] {
            for (index, name) in head.iter().enumerate() {
                let parsed = field_name(name.as_bytes(), index, &mut names).unwrap();
                assert_eq!(parsed.as_str(), name.to_ascii_lowercase());
            }
        }
        assert!(names.len() <= 4);
        assert!(field_name(b"bad name", 0, &mut names).is_err());
    }

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut digits = [0u8; 20];
        assert_eq!(format_decimal(0, &mut digits), b"0");
        assert_eq!(format_decimal(1_048_576, &mut digits), b"1048576");
        assert_eq!(format_decimal(u64::MAX, &mut digits), b"18446744073709551615");
    }
}
