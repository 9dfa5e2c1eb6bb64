//! Entry points for the fuzz targets (`host/fuzz`) and their regression test:
//! each takes arbitrary bytes to one parser of outside input and must return,
//! never panic. Not an API.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};

/// A config file: parse and validate.
pub fn config(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = crate::config::parse(text, "fuzz.yaml", None);
    }
}

/// A scenario file: parse and validate.
pub fn scenario(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = crate::scenario::Scenario::parse(std::path::Path::new("fuzz.yaml"), text);
    }
}

/// An admin API body: the first byte picks the route, the rest is the body.
pub fn admin_body(bytes: &[u8]) {
    let Some((route, body)) = bytes.split_first() else { return };
    let (method, path) = match route % 4 {
        0 => (Method::PUT, "/picker"),
        1 => (Method::POST, "/backends"),
        2 => (Method::PUT, "/canary"),
        _ => (Method::PUT, "/backends/x/weight"),
    };
    let _ = crate::admin::check_body(&method, path, body);
}

/// A request head as lines `name: value` after a first line that is the
/// target: checked against the default limits, then rewritten for a backend.
pub fn request_headers(bytes: &[u8]) {
    let mut lines = bytes.split(|b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let mut request = Request::new(());
    if let Ok(uri) = http::Uri::try_from(target) {
        *request.uri_mut() = uri;
    }
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    *request.headers_mut() = headers;
    let _ = crate::proxy::limits::check_request(&request, &crate::proxy::RequestLimits::default());
    let (mut parts, ()) = request.into_parts();
    crate::proxy::headers::rewrite_for_backend(
        &mut parts,
        &HeaderValue::from_static("192.0.2.1"),
        &http::uri::Scheme::HTTP,
    );
}

#[cfg(test)]
mod tests {
    /// Every committed corpus input (seeds, and crashes once found) still
    /// runs through its target: the fuzzers' findings stay fixed.
    #[test]
    fn the_fuzz_corpora_replay_without_panics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 4] = [
            ("config", super::config),
            ("scenario", super::scenario),
            ("admin_body", super::admin_body),
            ("request_headers", super::request_headers),
        ];
        let mut replayed = 0;
        for (name, target) in targets {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("a readable directory entry").path();
                target(&std::fs::read(&path).expect("a readable corpus file"));
                replayed += 1;
            }
        }
        assert!(replayed >= 8, "only {replayed} corpus inputs");
    }
}
