//! The WIT bindings' types to and from veer's core types, at the export
//! boundary: policies are written against `veer-core`, the component speaks WIT.
//!
//! The per-pick ones are field copies of `Copy` records; only
//! `backends-changed` moves strings, and it moves them rather than cloning.

use crate::bindings::veer::picker::types as wit;

/// A batch of `backends-changed` events.
pub fn events(events: Vec<wit::BackendEvent>) -> Vec<veer_core::BackendEvent> {
    events.into_iter().map(event).collect()
}

fn event(event: wit::BackendEvent) -> veer_core::BackendEvent {
    match event {
        wit::BackendEvent::Added(backend) => veer_core::BackendEvent::Added(self::backend(backend)),
        wit::BackendEvent::Updated(backend) => veer_core::BackendEvent::Updated(self::backend(backend)),
        wit::BackendEvent::Removed(id) => veer_core::BackendEvent::Removed(id),
        wit::BackendEvent::Eligibility(change) => veer_core::BackendEvent::Eligibility(change),
    }
}

fn backend(b: wit::Backend) -> veer_core::Backend {
    veer_core::Backend { id: b.id, name: b.name, address: b.address, weight: b.weight, labels: b.labels }
}

/// A pick's context.
pub fn pick_context(ctx: wit::PickContext) -> veer_core::PickContext {
    veer_core::PickContext { attempt: ctx.attempt, exclude: ctx.exclude, method: method(ctx.method) }
}

fn method(method: wit::HttpMethod) -> veer_core::HttpMethod {
    use veer_core::HttpMethod as M;
    match method {
        wit::HttpMethod::Get => M::Get,
        wit::HttpMethod::Head => M::Head,
        wit::HttpMethod::Post => M::Post,
        wit::HttpMethod::Put => M::Put,
        wit::HttpMethod::Delete => M::Delete,
        wit::HttpMethod::Options => M::Options,
        wit::HttpMethod::Patch => M::Patch,
        wit::HttpMethod::Trace => M::Trace,
        wit::HttpMethod::Connect => M::Connect,
        wit::HttpMethod::Other => M::Other,
    }
}

/// An attempt's outcome.
pub fn outcome(outcome: wit::Outcome) -> veer_core::Outcome {
    veer_core::Outcome {
        backend: outcome.backend,
        picked: outcome.picked,
        status: outcome.status,
        latency_us: outcome.latency_us,
        error: outcome.error.map(error_kind),
    }
}

fn error_kind(kind: wit::ErrorKind) -> veer_core::ErrorKind {
    use veer_core::ErrorKind as E;
    match kind {
        wit::ErrorKind::Connect => E::Connect,
        wit::ErrorKind::Reset => E::Reset,
        wit::ErrorKind::Timeout => E::Timeout,
        wit::ErrorKind::Protocol => E::Protocol,
        wit::ErrorKind::NotSent => E::NotSent,
    }
}
