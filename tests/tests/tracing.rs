//! Tracing end to end: W3C `traceparent` continued through veer to real
//! backends, and the spans veer exports over OTLP/HTTP (JSON) to a
//! collector stand-in that records what it receives.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use veer::observe::trace::{OtlpProtocol, TracingConfig};

/// Answers every request with `status` and keeps the `traceparent` of each.
async fn server(status: u16, seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let traceparent = request.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string());
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        seen.lock().unwrap().push(traceparent.unwrap_or_else(|| String::from_utf8_lossy(&body).into()));
                        let mut response = http::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    address
}

/// Every span the collector received, flattened from the OTLP JSON.
fn spans(bodies: &[String]) -> Vec<serde_json::Value> {
    let mut spans = Vec::new();
    for body in bodies {
        let export: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"].to_string();
            assert!(service.contains("veer-under-test"), "service.name: {service}");
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    spans
}

/// An attribute's value as text (OTLP JSON writes integers as strings or numbers).
fn attribute(span: &serde_json::Value, key: &str) -> Option<String> {
    let attributes = span["attributes"].as_array()?;
    let found = attributes.iter().find(|a| a["key"] == key)?;
    let value = found["value"].as_object()?.values().next()?;
    Some(value.as_str().map_or_else(|| value.to_string(), str::to_string))
}

/// A client's trace is continued: each attempt reaches its backend with the
/// client's trace id and a span of its own; the collector receives a server
/// span for the request under the client's span, and a client span per
/// attempt, the retry saying why; the access log has the trace id beside
/// the request id. A request without `traceparent` starts a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_continued_to_backends_and_exported_over_otlp() {
    let (failing_seen, ok_seen, collected) = (Arc::default(), Arc::default(), Arc::new(Mutex::new(Vec::new())));
    let failing = server(503, Arc::clone(&failing_seen)).await;
    let ok = server(200, Arc::clone(&ok_seen)).await;
    let collector = server(200, collected.clone()).await;
    let log = std::env::temp_dir().join(format!("veer-tracing-{}.log", std::process::id()));
    let mut proxy = veer::proxy::ProxyConfig::default();
    proxy.retry.retry_on_status = vec![503];
    proxy.retry.max_attempts = 2;
    let mut options = veer_tests::veer_options(&[("failing", failing), ("ok", ok)], "native:round-robin", proxy);
    options.health.check.enabled = false;
    options.health.outlier.consecutive_errors = 0;
    options.observe.access_log =
        Some(veer::observe::access_log::AccessLogConfig { path: log.clone(), ..Default::default() });
    options.observe.tracing = Some(TracingConfig {
        otlp_endpoint: Some(format!("http://{collector}/v1/traces")),
        protocol: OtlpProtocol::Json,
        service_name: "veer-under-test".to_string(),
        export_interval: Duration::from_millis(100),
        ..TracingConfig::default()
    });
    let server_ = veer::server::start(options).await.unwrap();

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    for _ in 0..4 {
        let request = http::Request::get("/orders?secret=1")
            .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
            .header("tracestate", "vendor=opaque")
            .body(Full::default())
            .unwrap();
        assert_eq!(veer_tests::send(server_.proxy_addr, request).await.status, 200);
    }
    assert_eq!(veer_tests::get(server_.proxy_addr, "/fresh").await.status, 200);

    // Backends: the client's trace, a span per attempt (not the client's).
    let received: Vec<String> =
        ok_seen.lock().unwrap().iter().chain(failing_seen.lock().unwrap().iter()).cloned().collect();
    let continued: Vec<_> = received.iter().filter(|t| t.contains(TRACE)).collect();
    assert!(continued.len() >= 6, "4 requests, 2 of them retried: {received:?}");
    for traceparent in &continued {
        let fields: Vec<_> = traceparent.split('-').collect();
        assert_eq!((fields[0], fields[1], fields[3]), ("00", TRACE, "01"), "{traceparent}");
        assert_ne!(fields[2], CALLER, "each attempt has its own span");
    }
    assert!(received.iter().any(|t| !t.contains(TRACE) && t.starts_with("00-")), "the fresh request started a trace");

    // The collector: spans arrive in batches.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let all = loop {
        let all = spans(&collected.lock().unwrap());
        if all.iter().filter(|s| s["kind"] == 2).count() >= 5 || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let servers: Vec<_> = all.iter().filter(|s| s["kind"] == 2 && s["traceId"] == TRACE).collect();
    assert_eq!(servers.len(), 4, "a server span per continued request: {all:#?}");
    for span in &servers {
        assert_eq!(span["parentSpanId"], CALLER, "under the client's span");
        assert_eq!(attribute(span, "veer.route").as_deref(), Some("default"));
        assert_eq!(attribute(span, "veer.upstream").as_deref(), Some("default"));
        assert_eq!(attribute(span, "url.path").as_deref(), Some("/orders"), "no query string");
        assert!(attribute(span, "veer.request_id").is_some());
    }
    let retried = servers
        .iter()
        .find(|s| attribute(s, "veer.attempts").as_deref() == Some("2"))
        .unwrap_or_else(|| panic!("a retried request: {servers:#?}"));
    let request_span = retried["spanId"].as_str().unwrap();
    let attempts: Vec<_> = all.iter().filter(|s| s["kind"] == 3 && s["parentSpanId"] == request_span).collect();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let first = attempts.iter().find(|s| attribute(s, "veer.backend").as_deref() == Some("failing")).unwrap();
    let second = attempts.iter().find(|s| attribute(s, "veer.backend").as_deref() == Some("ok")).unwrap();
    assert_eq!(first["status"]["code"], 2, "the 503 attempt is an error");
    assert_eq!(attribute(second, "veer.retry_reason").as_deref(), Some("status 503"));
    assert!(
        continued.iter().any(|t| t.contains(second["spanId"].as_str().unwrap())),
        "the backend saw the attempt's span"
    );

    // The access log: the trace id beside the request id.
    server_.shutdown().await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let line: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(line["trace_id"], TRACE, "{line}");
    assert!(line["request_id"].is_string());
}
