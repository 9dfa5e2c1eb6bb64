//! Shadow traffic: a route's `mirror` sends a sampled copy of a forwarded
//! request to another upstream, fire-and-forget. The client never waits for
//! it and never sees its answer; the copy goes through the shadow group's own
//! picker, health and backends like any attempt (so a new picker or release
//! there learns from real traffic), and its outcome is counted
//! (`veer_mirror_requests_total`).
//!
//! Only requests whose body veer holds in memory (the replay buffer) are
//! copied: a streamed body goes to one backend only. At most
//! [`MAX_MIRRORS_IN_FLIGHT`] copies are outstanding at once; past that a copy
//! is skipped rather than queued, so a slow or dead shadow costs the primary
//! path nothing but a counter.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Either, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::OutgoingBody;
use super::forward::observe;
use crate::health::AttemptOutcome;
use crate::observe::Metrics;
use crate::upstream::Upstream;
use veer_plugin_runtime::{ErrorKind, HttpMethod, PickContext, RequestMeta, RouteNames};

/// Copies outstanding at once, across the process; more are skipped.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 1024;

/// Marks a mirrored copy, so a shadow backend can tell it from real traffic.
pub static MIRROR_HEADER: HeaderName = HeaderName::from_static("x-veer-mirror");

/// One copy to send.
pub(super) struct Copy {
    /// The route that mirrored it (a metric label).
    pub route: Arc<str>,
    /// The shadow group.
    pub upstream: Arc<Upstream>,
    /// The request as forwarded (route edits and rewrite applied).
    pub parts: http::request::Parts,
    /// Its whole body.
    pub body: Bytes,
    /// The client's address, for a picker that asks.
    pub client_ip: IpAddr,
    /// The method, as the picker sees it.
    pub method: HttpMethod,
}

/// Sends copies and counts what came of them.
#[derive(Debug, Default)]
pub(super) struct Mirrors {
    in_flight: Arc<AtomicUsize>,
}

impl Mirrors {
    /// Starts sending `copy` on the calling worker's runtime through `clients`
    /// (HTTP/1.1 and HTTP/2 pools), unless too many copies are outstanding.
    pub(super) fn send(
        &self,
        copy: Copy,
        clients: [&Client<HttpConnector, OutgoingBody>; 2],
        timeout: Duration,
        metrics: &Arc<Metrics>,
    ) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_MIRRORS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics.mirror_result(&copy.route, "skipped");
            return;
        }
        let in_flight = self.in_flight.clone();
        let clients = [clients[0].clone(), clients[1].clone()];
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let route = copy.route.clone();
            let result = deliver(copy, clients, timeout).await;
            metrics.mirror_result(&route, result);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Picks a shadow backend, sends the copy, reads and drops the answer, and
/// records the attempt on the shadow group; returns what came of it.
async fn deliver(copy: Copy, clients: [Client<HttpConnector, OutgoingBody>; 2], timeout: Duration) -> &'static str {
    let Copy { route, upstream, mut parts, body, client_ip, method } = copy;
    let names = RouteNames { route, upstream: upstream.name.clone() };
    parts.headers.insert(MIRROR_HEADER.clone(), HeaderValue::from_static("1"));
    let picker = upstream.slot.for_request();
    let ctx = PickContext { attempt: 0, exclude: None, method };
    let (choice, meta) = picker.pick(RequestMeta { parts, client_ip, affinity_hash: None, route: Some(names) }, ctx);
    let Some(choice) = choice else { return "no_backend" };
    let Some(backend) = upstream.pool.get(choice.backend) else {
        observe(&picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
        return "no_backend";
    };
    let Ok(admitted) = upstream.health.admit(&backend) else {
        observe(&picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
        return "no_backend";
    };
    let request = match super::forward::outgoing_request(
        &meta.parts,
        meta.parts.headers.clone(),
        &backend,
        Either::Right(Full::new(body)),
    ) {
        Ok(request) => request,
        Err(_) => {
            drop(admitted);
            observe(&picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
            return "error";
        }
    };
    let client = &clients[usize::from(backend.spec.protocol == crate::pool::BackendProtocol::Http2)];
    let sent = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let response = client.request(request).await?;
        let latency = sent.elapsed();
        let status = response.status();
        // Read to the end (and drop): the pooled connection stays reusable.
        let _ = response.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>((status, latency))
    })
    .await;
    match result {
        Ok(Ok((status, latency))) => {
            admitted.finish(AttemptOutcome::Status(status.as_u16()), latency);
            backend.record(Some(status), latency);
            observe(&picker, &choice, status.as_u16(), latency, None);
            ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from(status.as_u16() / 100).clamp(1, 5) - 1]
        }
        Ok(Err(error)) => {
            let kind = if error.is_connect() { ErrorKind::Connect } else { ErrorKind::Reset };
            let latency = sent.elapsed();
            admitted.finish(AttemptOutcome::Failed(kind), latency);
            backend.record(None, latency);
            observe(&picker, &choice, 0, latency, Some(kind));
            "error"
        }
        Err(_) => {
            let latency = sent.elapsed();
            admitted.finish(AttemptOutcome::Failed(ErrorKind::Timeout), latency);
            backend.record(None, latency);
            observe(&picker, &choice, 0, latency, Some(ErrorKind::Timeout));
            "error"
        }
    }
}

/// The head of a request's copy: the same method, target, version and
/// headers (framing included: the body is the same bytes).
pub(super) fn copy_of(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}
