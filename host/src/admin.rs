//! The admin API (its own listener, loopback by default): live state of the
//! backends and the picker, and a live picker swap.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /status` | picker (identity, health, counters), admission control, and every backend's live numbers |
//! | `GET /picker` | the picker alone |
//! | `PUT /picker` | swap the picker: `{"source": "builtin:q-learning", "params": {"alpha": "0.3"}}` |
//!
//! Answers are JSON; errors are `{"error": "..."}` with a 4xx/5xx status.

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
    backends: Vec<BackendSnapshot>,
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
        (_, "/status" | "/picker") => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
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
    StatusView {
        picker: picker_view(proxy),
        admission: proxy.admission().snapshot(),
        backends: proxy.pool().all().iter().map(|b| b.snapshot()).collect(),
    }
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
