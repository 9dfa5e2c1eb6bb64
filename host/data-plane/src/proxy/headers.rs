//! Header rules for a forwarding proxy (RFC 9110 §7.6): hop-by-hop fields are
//! removed, `Via` and `X-Forwarded-*` are added, and every request carries a
//! request id.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Version;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use veer_core::hash::mix;

/// The request id header, kept if the client sent one, else generated.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Fields that describe one connection and must not be forwarded (RFC 9110
/// §7.6.1, plus the non-standard `Keep-Alive` and `Proxy-Connection`).
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Whether the message asks to switch protocols (`Connection: upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop fields, including those the `Connection` field names.
/// For an upgrade, `Connection: upgrade` and `Upgrade` are kept: they are the
/// point of the message and must reach the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over their few names costs far less
    // than a hashed removal per hop-by-hop name (callgrind: ~1.5 k of ~58 k
    // instructions per proxied request went to those removals). A field a
    // `Connection` header names comes with `Connection`, itself hop-by-hop.
    if !headers.keys().any(|name| hop_by_hop().contains(&name)) {
        return;
    }
    let upgrade = is_upgrade(headers).then(|| headers.get(header::UPGRADE).cloned()).flatten();
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Rewrites a client request's headers for the backend: hop-by-hop fields
/// go, `X-Forwarded-*` and `Via` are added, and `Host` is set from the
/// request target's authority when it has one (HTTP/2 clients send
/// `:authority` instead of `Host`; HTTP/1.1 backends need `Host`).
pub fn rewrite_for_backend(parts: &mut http::request::Parts, client: &HeaderValue, scheme: &http::uri::Scheme) {
    let host = match parts.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    remove_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, client, scheme, host.as_ref());
    append_via(&mut parts.headers, parts.version);
    if let Some(host) = host.filter(|_| !parts.headers.contains_key(header::HOST)) {
        parts.headers.insert(header::HOST, host);
    }
}

/// Appends this hop to `Via` (`1.1 veer`, `2 veer`, ...).
pub fn append_via(headers: &mut HeaderMap, version: Version) {
    let hop = HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 veer",
        Version::HTTP_10 => "1.0 veer",
        Version::HTTP_2 => "2 veer",
        Version::HTTP_3 => "3 veer",
        _ => "1.1 veer",
    });
    // One lookup (an entry) instead of a look-up and an insert.
    match headers.entry(header::VIA) {
        Entry::Occupied(mut existing) => {
            if let Ok(value) = HeaderValue::from_bytes(&[existing.get().as_bytes(), b", ", hop.as_bytes()].concat()) {
                existing.insert(value);
            }
        }
        Entry::Vacant(vacant) => {
            vacant.insert(hop);
        }
    }
}

/// The client address as a header value; made once per client connection,
/// not per request.
pub fn client_address_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client to `X-Forwarded-For`, sets `X-Forwarded-Proto` to the
/// scheme the client spoke to veer (never what the client claims: a
/// plain-HTTP client must not pass for HTTPS), and `X-Forwarded-Host`
/// unless an earlier proxy already did.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    scheme: &http::uri::Scheme,
    host: Option<&HeaderValue>,
) {
    match headers.entry(X_FORWARDED_FOR.clone()) {
        Entry::Occupied(mut existing) => {
            let appended = [existing.get().as_bytes(), b", ", client.as_bytes()].concat();
            if let Ok(value) = HeaderValue::from_bytes(&appended) {
                existing.insert(value);
            }
        }
        Entry::Vacant(vacant) => {
            vacant.insert(client.clone());
        }
    }
    let proto = if *scheme == http::uri::Scheme::HTTPS { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host
        && let Entry::Vacant(vacant) = headers.entry(X_FORWARDED_HOST.clone())
    {
        vacant.insert(host.clone());
    }
}

/// Generates request ids: unique in the process, unpredictable enough to not
/// collide across processes, and cheap (no syscall, no lock).
#[derive(Debug)]
pub struct RequestIds {
    seed: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()).rotate_left(32);
        RequestIds { seed, counter: AtomicU64::new(0) }
    }
}

impl RequestIds {
    /// The client's `X-Request-Id` if it is usable, else a new one; the header
    /// is set on `headers` either way.
    pub fn ensure(&self, headers: &mut HeaderMap) -> HeaderValue {
        let entry = headers.entry(X_REQUEST_ID.clone());
        if let Entry::Occupied(existing) = &entry
            && !existing.get().is_empty()
            && existing.get().len() <= 200
        {
            return existing.get().clone();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // 16 hex digits of a mixed value, then 8 of the counter.
        let mut id = [0u8; 24];
        let digits = (u128::from(mix(self.seed ^ n)) << 32) | u128::from(n as u32);
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[((digits >> (4 * (23 - i))) & 0xf) as usize];
        }
        let value = HeaderValue::from_bytes(&id).expect("hex digits are a valid header value");
        match entry {
            Entry::Occupied(mut unusable) => {
                unusable.insert(value.clone());
            }
            Entry::Vacant(vacant) => {
                vacant.insert(value.clone());
            }
        }
        value
    }

    /// A value that differs on every call and between processes (for jitter;
    /// not for anything secret).
    pub fn next_random(&self) -> u64 {
        mix(self.seed ^ self.counter.fetch_add(1, Ordering::Relaxed).rotate_left(32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn hop_by_hop_fields_and_those_named_by_connection_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic xyz"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        // Each hop-by-hop field alone is found by the one-pass check.
        for name in hop_by_hop() {
            let mut h = headers(&[(name.as_str(), "x"), ("x-kept", "yes")]);
            remove_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let mut untouched = headers(&[("host", "a"), ("accept", "*/*"), ("x-kept", "yes")]);
        remove_hop_by_hop(&mut untouched);
        assert_eq!(untouched.len(), 3);
    }

    #[test]
    fn upgrade_headers_survive_for_an_upgrade() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("keep-alive", "1")]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn forwarded_for_is_appended_and_via_accumulates() {
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1"), ("via", "1.1 edge")]);
        let client = client_address_value(IpAddr::from([127, 0, 0, 1]));
        add_forwarded(&mut h, &client, &http::uri::Scheme::HTTP, Some(&HeaderValue::from_static("example.com")));
        append_via(&mut h, Version::HTTP_11);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["via"], "1.1 edge, 1.1 veer");
    }

    #[test]
    fn forwarded_proto_is_the_listeners_scheme_whatever_the_client_claims() {
        let client = client_address_value(IpAddr::from([127, 0, 0, 1]));
        let mut spoofed = headers(&[("x-forwarded-proto", "https")]);
        add_forwarded(&mut spoofed, &client, &http::uri::Scheme::HTTP, None);
        assert_eq!(spoofed["x-forwarded-proto"], "http");
        let mut secure = HeaderMap::new();
        add_forwarded(&mut secure, &client, &http::uri::Scheme::HTTPS, None);
        assert_eq!(secure["x-forwarded-proto"], "https");
    }

    #[test]
    fn request_ids_are_kept_or_generated_uniquely() {
        let ids = RequestIds::default();
        let mut kept = headers(&[("x-request-id", "abc")]);
        assert_eq!(ids.ensure(&mut kept), "abc");
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        let (a, b) = (ids.ensure(&mut a), ids.ensure(&mut b));
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a.to_str().unwrap().ends_with("00000000") && b.to_str().unwrap().ends_with("00000001"), "{a:?} {b:?}");
    }
}
