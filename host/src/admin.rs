//! The admin API (its own listener, loopback by default): live state of the
//! backends and the picker, and a live picker swap.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /status` | picker (identity, health, counters), admission control, and every backend's live numbers |
//! | `GET /snapshot` | everything an operator reads: request counters, picker, backends, access log |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when a backend can be picked and the picker works, else 503 with reasons |
//! | `GET /health` | per backend: eligibility, checks, breaker, ejection, drain, latency, error rate, in-flight |
//! | `GET /picker` | the picker alone |
//! | `PUT /picker` | swap the picker: `{"source": "builtin:q-learning", "params": {"alpha": "0.3"}}` |
//! | `POST /backends/{name}/drain` | no new attempts to the backend; those in flight finish |
//! | `POST /backends/{name}/undrain` | back in rotation (slow start applies) |
//!
//! Answers are JSON (except `/metrics`); errors are `{"error": "..."}` with a 4xx/5xx status.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::admission::AdmissionSnapshot;
use crate::health::BackendHealth;
use crate::observe::snapshot::snapshot;
use crate::plugin::{PickerHealth, PickerInfo, PickerStatsSnapshot, PluginSource};
use crate::pool::BackendSnapshot;
use crate::proxy::Proxy;

/// Largest admin request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(serde::Serialize)]
struct PickerView {
    info: PickerInfo,
    params: BTreeMap<String, String>,
    health: PickerHealth,
    stats: PickerStatsSnapshot,
    swaps: u64,
}

#[derive(serde::Serialize)]
struct StatusView {
    picker: PickerView,
    admission: AdmissionSnapshot,
    backends: Vec<BackendView>,
}

/// A backend's live numbers and its health, side by side.
#[derive(serde::Serialize)]
struct BackendView {
    #[serde(flatten)]
    live: BackendSnapshot,
    health: Option<BackendHealth>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapRequest {
    source: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(route(&proxy, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn route(proxy: &Proxy, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/status") => json(StatusCode::OK, &status(proxy)),
        (&Method::GET, "/snapshot") => json(StatusCode::OK, &snapshot(proxy)),
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(proxy.metrics().render(proxy))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "alive" })),
        (&Method::GET, "/readyz") => {
            let problems = readiness_problems(proxy);
            if problems.is_empty() {
                json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({ "status": "not ready", "problems": problems }),
                )
            }
        }
        (&Method::GET, "/health") => json(StatusCode::OK, &backend_health(proxy)),
        (&Method::GET, "/picker") => json(StatusCode::OK, &picker_view(proxy)),
        (&Method::PUT, "/picker") => {
            let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
            };
            let swap: SwapRequest = match serde_json::from_slice(&body) {
                Ok(swap) => swap,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"source\": \"...\", \"params\": {{...}}}}: {e}"),
                    );
                }
            };
            let source = PluginSource::parse(&swap.source);
            let slot = proxy.slot().clone();
            // Loading compiles Wasm: keep it off the async workers.
            let result =
                tokio::task::spawn_blocking(move || slot.swap(&source, swap.params.into_iter().collect())).await;
            match result {
                Ok(Ok(report)) => json(StatusCode::OK, &report),
                Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("swap task failed: {e}")),
            }
        }
        (method, path) if path.starts_with("/backends/") => {
            let Some((name, action)) = path["/backends/".len()..].rsplit_once('/') else {
                return error(StatusCode::NOT_FOUND, "expected /backends/{name}/drain or /backends/{name}/undrain");
            };
            let drained = match action {
                "drain" => true,
                "undrain" => false,
                _ => {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("no backend action {action:?}; try drain or undrain"),
                    );
                }
            };
            if method != Method::POST {
                return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed; use POST");
            }
            match proxy.health().set_drained(name, drained) {
                Some(health) => json(StatusCode::OK, &health),
                None => error(StatusCode::NOT_FOUND, &format!("no backend named {name:?}")),
            }
        }
        (_, "/status" | "/snapshot" | "/metrics" | "/healthz" | "/readyz" | "/health" | "/picker") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, path) => error(StatusCode::NOT_FOUND, &format!("no admin endpoint {path}; try GET /status")),
    }
}

fn picker_view(proxy: &Proxy) -> PickerView {
    let picker = proxy.slot().current();
    PickerView {
        info: picker.info().clone(),
        params: picker.params().iter().cloned().collect(),
        health: picker.health(),
        stats: picker.stats(),
        swaps: proxy.slot().swaps(),
    }
}

fn status(proxy: &Proxy) -> StatusView {
    let mut health: BTreeMap<_, _> = proxy.health().snapshot().into_iter().map(|h| (h.id, h)).collect();
    let backends =
        proxy.pool().all().iter().map(|b| BackendView { live: b.snapshot(), health: health.remove(&b.id) }).collect();
    StatusView { picker: picker_view(proxy), admission: proxy.admission().snapshot(), backends }
}

/// Why veer cannot serve traffic right now; empty when it can.
fn readiness_problems(proxy: &Proxy) -> Vec<String> {
    let mut problems = Vec::new();
    if !proxy.health().snapshot().iter().any(|b| b.eligible) {
        problems.push("no backend is eligible".to_string());
    }
    if let PickerHealth::FallbackOnly { reason } = proxy.slot().current().health() {
        problems.push(format!("the picker is faulting and the fallback answers: {reason}"));
    }
    problems
}

/// One backend's health verdicts with the live numbers that explain them.
#[derive(serde::Serialize)]
struct BackendHealthView {
    #[serde(flatten)]
    health: BackendHealth,
    address: String,
    in_flight: u32,
    ewma_latency_ms: f64,
    requests: u64,
    failures: u64,
    /// Failed share of all attempts so far.
    error_rate: f64,
}

fn backend_health(proxy: &Proxy) -> Vec<BackendHealthView> {
    let mut health: BTreeMap<_, _> = proxy.health().snapshot().into_iter().map(|h| (h.id, h)).collect();
    proxy
        .pool()
        .all()
        .iter()
        .filter_map(|b| {
            let s = b.snapshot();
            Some(BackendHealthView {
                health: health.remove(&b.id)?,
                error_rate: if s.requests == 0 { 0.0 } else { s.failures as f64 / s.requests as f64 },
                address: s.address,
                in_flight: s.in_flight,
                ewma_latency_ms: s.ewma_latency_ms,
                requests: s.requests,
                failures: s.failures,
            })
        })
        .collect()
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}
