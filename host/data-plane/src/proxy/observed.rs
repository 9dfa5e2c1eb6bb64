//! Per-request bookkeeping that ends when the response body does: request
//! metrics, the in-flight gauge and the access log record.
//!
//! A [`RequestGuard`] is made when a request arrives and travels inside the
//! response body; whichever comes first, the end of the body or the request
//! being abandoned (client gone before the answer), finishes it exactly once.
//! An abandoned request is counted as 499, nginx's "client closed request".

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::ProxyBody;
use super::conn::InFlight;
use crate::fault::{CLIENT_CLOSED_REQUEST, ClientFault, Fault};
use crate::observe::Metrics;
use crate::observe::access_log::{AccessLog, Record, RouteLabels};
use crate::observe::trace::{RequestSummary, RequestTrace, Tracer};
use crate::pool::BackendState;
use veer_plugin_runtime::Picker;

/// What the access log needs beyond the metrics; only gathered when it is on.
#[derive(Debug)]
struct LogContext {
    log: Arc<AccessLog>,
    time: SystemTime,
    request_id: HeaderValue,
    method: Method,
    target: PathAndQuery,
    client: SocketAddr,
}

/// One request's bookkeeping; finishes on drop.
#[derive(Debug)]
pub struct RequestGuard {
    metrics: Arc<Metrics>,
    method_class: usize,
    started: Instant,
    status: Option<StatusCode>,
    bytes: u64,
    backend: Option<Arc<BackendState>>,
    picker: Option<Arc<Picker>>,
    attempts: u32,
    fault: Option<Fault>,
    route: Option<RouteLabels>,
    log: Option<LogContext>,
    /// Keeps the connection's read limits off while the request is answered.
    in_flight: Option<InFlight>,
    /// The request's trace, when tracing is on.
    trace: Option<(Arc<Tracer>, RequestTrace)>,
}

impl RequestGuard {
    /// Starts the bookkeeping of a request.
    pub(super) fn start(
        metrics: &Arc<Metrics>,
        log: Option<&Arc<AccessLog>>,
        method: &Method,
        target: Option<&PathAndQuery>,
        request_id: &HeaderValue,
        client: SocketAddr,
    ) -> RequestGuard {
        metrics.request_began();
        RequestGuard {
            metrics: metrics.clone(),
            method_class: crate::observe::method_class(method),
            started: Instant::now(),
            status: None,
            bytes: 0,
            backend: None,
            picker: None,
            attempts: 0,
            fault: None,
            route: None,
            in_flight: None,
            trace: None,
            log: log.map(|log| LogContext {
                log: log.clone(),
                time: SystemTime::now(),
                request_id: request_id.clone(),
                method: method.clone(),
                target: target.cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
                client,
            }),
        }
    }

    /// Notes how the request was routed.
    pub(super) fn routed(&mut self, backend: Option<Arc<BackendState>>, picker: Option<Arc<Picker>>, attempts: u32) {
        self.backend = backend;
        self.picker = picker;
        self.attempts = attempts;
    }

    /// Notes the route that took the request and the upstream it goes to.
    pub(super) fn route(&mut self, names: RouteLabels) {
        self.route = Some(names);
    }

    /// Whether an access log or a trace wants the request's names (backend, picker).
    pub(super) fn logging(&self) -> bool {
        self.log.is_some() || self.trace.as_ref().is_some_and(|(_, trace)| trace.is_recorded())
    }

    /// Traces the request with `tracer` from now on.
    pub(super) fn trace(&mut self, tracer: Arc<Tracer>, trace: RequestTrace) {
        self.trace = Some((tracer, trace));
    }

    /// The request's trace, when tracing is on.
    pub(super) fn trace_mut(&mut self) -> Option<&mut RequestTrace> {
        self.trace.as_mut().map(|(_, trace)| trace)
    }

    /// Holds the connection's in-flight mark until the request is finished.
    pub(super) fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    /// Notes the side at fault for a failure (the last one wins).
    pub(super) fn blame(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// Notes the status sent to the client.
    pub(super) fn answered(&mut self, status: StatusCode) {
        self.status = Some(status);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let status = self.status.unwrap_or_else(|| {
            // Dropped unanswered: the client left (the connection closed, or
            // an HTTP/2 stream was reset) before the answer.
            self.fault.get_or_insert(Fault::Client(ClientFault::Gone));
            self.metrics.record_failure(Fault::Client(ClientFault::Gone));
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let duration = self.started.elapsed();
        self.metrics.request_finished(self.method_class, status, duration, self.route.as_ref());
        let trace_id = self.log.as_ref().and(self.trace.as_ref()).map(|(_, trace)| trace.trace_id());
        if let Some((tracer, trace)) = self.trace.take() {
            let summary = RequestSummary {
                status: status.as_u16(),
                route: self.route.as_ref().map(|route| &*route.route),
                upstream: self.route.as_ref().map(|route| &*route.upstream),
                picker: self.picker.as_ref().map(|picker| picker.info().name.as_str()),
                fault: self.fault.map(|fault| fault.label()),
            };
            tracer.finish(trace, summary);
        }
        let Some(context) = self.log.take() else { return };
        if context.log.wants(status) {
            context.log.submit(Record {
                time: context.time,
                request_id: context.request_id,
                method: context.method,
                target: context.target,
                status,
                bytes: self.bytes,
                duration,
                backend: self.backend.take(),
                picker: self.picker.take(),
                attempts: self.attempts,
                fault: self.fault,
                route: self.route.take(),
                client: context.client,
                trace_id,
            });
        }
    }
}

/// The response body sent to the client, with the request's guard inside.
#[derive(Debug)]
pub struct ObservedBody {
    inner: ProxyBody,
    guard: Option<RequestGuard>,
}

impl ObservedBody {
    /// `inner`, finishing `guard` when it ends.
    pub(super) fn new(inner: ProxyBody, guard: RequestGuard) -> ObservedBody {
        let mut body = ObservedBody { inner, guard: Some(guard) };
        if body.inner.is_end_stream() {
            body.guard = None;
        }
        body
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(guard), Some(data)) = (this.guard.as_mut(), frame.data_ref()) {
                    guard.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.guard = None;
                }
            }
            Poll::Ready(_) => this.guard = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
