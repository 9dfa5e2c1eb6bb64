//! veer's core types to the WIT bindings' types, at the call boundary: the
//! host is written against `veer-core`, the component speaks WIT.
//!
//! The per-pick ones are field copies of `Copy` records; `backends-changed`
//! clones the backends' strings, off the request path, as lowering them into
//! the guest's memory would copy them anyway.

use crate::bindings::veer::picker::types as wit;

/// A batch of `backends-changed` events.
pub(crate) fn events(events: &[veer_core::BackendEvent]) -> Vec<wit::BackendEvent> {
    events.iter().map(event).collect()
}

fn event(event: &veer_core::BackendEvent) -> wit::BackendEvent {
    use veer_core::BackendEvent as E;
    match event {
        E::Added(backend) => wit::BackendEvent::Added(self::backend(backend)),
        E::Updated(backend) => wit::BackendEvent::Updated(self::backend(backend)),
        E::Removed(id) => wit::BackendEvent::Removed(*id),
        E::Eligibility(change) => wit::BackendEvent::Eligibility(*change),
    }
}

fn backend(b: &veer_core::Backend) -> wit::Backend {
    wit::Backend {
        id: b.id,
        name: b.name.clone(),
        address: b.address.clone(),
        weight: b.weight,
        labels: b.labels.clone(),
    }
}

/// A pick's context.
pub(crate) fn pick_context(ctx: veer_core::PickContext) -> wit::PickContext {
    wit::PickContext { attempt: ctx.attempt, exclude: ctx.exclude, method: method(ctx.method) }
}

fn method(method: veer_core::HttpMethod) -> wit::HttpMethod {
    use veer_core::HttpMethod as M;
    match method {
        M::Get => wit::HttpMethod::Get,
        M::Head => wit::HttpMethod::Head,
        M::Post => wit::HttpMethod::Post,
        M::Put => wit::HttpMethod::Put,
        M::Delete => wit::HttpMethod::Delete,
        M::Options => wit::HttpMethod::Options,
        M::Patch => wit::HttpMethod::Patch,
        M::Trace => wit::HttpMethod::Trace,
        M::Connect => wit::HttpMethod::Connect,
        M::Other => wit::HttpMethod::Other,
    }
}

/// An attempt's outcome.
pub(crate) fn outcome(outcome: veer_core::Outcome) -> wit::Outcome {
    wit::Outcome {
        backend: outcome.backend,
        picked: outcome.picked,
        status: outcome.status,
        latency_us: outcome.latency_us,
        error: outcome.error.map(error_kind),
    }
}

fn error_kind(kind: veer_core::ErrorKind) -> wit::ErrorKind {
    use veer_core::ErrorKind as E;
    match kind {
        E::Connect => wit::ErrorKind::Connect,
        E::Reset => wit::ErrorKind::Reset,
        E::Timeout => wit::ErrorKind::Timeout,
        E::Protocol => wit::ErrorKind::Protocol,
        E::NotSent => wit::ErrorKind::NotSent,
    }
}
