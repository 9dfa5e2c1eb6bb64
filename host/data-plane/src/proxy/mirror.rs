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

use super::Clients;
use super::forward::{judge, observe, outgoing_request};
use crate::observe::{Metrics, MirrorOutcome};
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Either, Full};
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
    /// Starts sending `copy` on the calling worker's runtime through its
    /// `clients`, unless too many copies are outstanding.
    pub(super) fn send(&self, copy: Copy, clients: Arc<Clients>, timeout: Duration, metrics: &Arc<Metrics>) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_MIRRORS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics.mirror_result(&copy.route, MirrorOutcome::Skipped);
            return;
        }
        let in_flight = self.in_flight.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let route = copy.route.clone();
            let result = deliver(copy, clients, timeout).await;
            metrics.mirror_result(&route, result);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Picks a shadow backend, sends the copy, and judges the shadow by its
/// response headers, as the primary path judges a backend; then reads the
/// body to its end (and drops it) so that the pooled connection stays
/// reusable, within the same time again and judging nothing by it.
async fn deliver(copy: Copy, clients: Arc<Clients>, timeout: Duration) -> MirrorOutcome {
    let Copy { route, upstream, mut parts, body, client_ip, method } = copy;
    let names = RouteNames { route, upstream: upstream.name.clone() };
    parts.headers.insert(MIRROR_HEADER.clone(), HeaderValue::from_static("1"));
    let picker = upstream.slot.for_request();
    let ctx = PickContext { attempt: 0, exclude: None, method };
    let (choice, meta) = picker.pick(RequestMeta { parts, client_ip, affinity_hash: None, route: Some(names) }, ctx);
    let Some(choice) = choice else { return MirrorOutcome::NoBackend };
    let not_sent = |picker| {
        observe(picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
        MirrorOutcome::NoBackend
    };
    let Some(backend) = upstream.pool.get(choice.backend) else { return not_sent(&picker) };
    let Ok(admitted) = upstream.health.admit(&backend) else { return not_sent(&picker) };
    let body = Either::Right(Full::new(body));
    let Ok(request) = outgoing_request(&meta.parts, meta.parts.headers.clone(), &backend, body) else {
        drop(admitted);
        return not_sent(&picker);
    };
    let sent = Instant::now();
    let response = clients.request(backend.spec.protocol, upstream.tls().as_ref(), request);
    let (verdict, response) = match tokio::time::timeout(timeout, response).await {
        Ok(Ok(response)) => (Ok(response.status()), Some(response)),
        Ok(Err(error)) if error.is_connect() => (Err(ErrorKind::Connect), None),
        Ok(Err(_)) => (Err(ErrorKind::Reset), None),
        Err(_) => (Err(ErrorKind::Timeout), None),
    };
    judge(&picker, &choice, &backend, admitted, verdict, sent.elapsed());
    if let Some(response) = response {
        let _ = tokio::time::timeout(timeout, response.into_body().collect()).await;
    }
    match verdict {
        Ok(status) => MirrorOutcome::Answered(status),
        Err(_) => MirrorOutcome::Failed,
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
