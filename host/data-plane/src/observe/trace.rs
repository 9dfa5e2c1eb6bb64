//! Distributed tracing: W3C Trace Context continued (or started) for every
//! request and passed to its backends, and spans exported over OTLP.
//!
//! Off by default (`observe.tracing` unset): then nothing here runs, and a
//! client's `traceparent` reaches the backend as the client sent it. On:
//!
//! - a valid `traceparent` from the client is continued (its trace id, its
//!   span as the parent, its sampled flag); otherwise a trace starts here,
//!   sampled at `sample_ratio`. `tracestate` passes through untouched;
//! - every attempt gets a span of its own, and the backend receives
//!   `traceparent: 00-TRACE-ATTEMPTSPAN-FLAGS`, so its spans hang under the
//!   attempt that reached it (and a retry's under the retry);
//! - with `otlp_endpoint`, each sampled request becomes a server span
//!   (route, upstream, picker, request id, status, the side at fault) with
//!   a client span per attempt (backend, address, attempt number, why it was
//!   retried, its status or error). veer builds the spans itself (it already
//!   knows every time and outcome) and a task exports them in batches with
//!   the OpenTelemetry OTLP exporter. A request appends its spans to a
//!   bounded batch under a lock and wakes nobody (the task takes the batch
//!   whole every `export_interval`, as the access log's writer does); a full
//!   batch drops spans and counts them.
//!
//! The trace id is in the access log beside the request id.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prometheus::IntCounterVec;

use crate::series::Registrar;

/// `traceparent` (W3C Trace Context).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C Trace Context).
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `observe.tracing`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Where spans go: an OTLP/HTTP traces endpoint, e.g.
    /// `http://otel-collector:4318/v1/traces` (plain HTTP: a collector
    /// beside veer); `null`: none are exported (trace context is still
    /// continued and passed to backends).
    pub otlp_endpoint: Option<String>,
    /// `protobuf` (the OTLP default) or `json`.
    pub protocol: OtlpProtocol,
    /// Extra headers of every export request (a collector's API key).
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of the traces started here that are recorded, 0 to 1; a
    /// caller's sampled flag is followed as it is.
    pub sample_ratio: f64,
    /// Spans waiting for export at most; past it new ones are dropped.
    pub max_queued_spans: usize,
    /// How often queued spans are sent.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// How long one export may take.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            protocol: OtlpProtocol::Protobuf,
            headers: BTreeMap::new(),
            service_name: "veer".to_string(),
            sample_ratio: 1.0,
            max_queued_spans: 8192,
            export_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// How spans are encoded for the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies.
    Protobuf,
    /// OTLP/HTTP with JSON bodies.
    Json,
}

impl TracingConfig {
    /// What is wrong with these settings, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        // The exporter's client speaks plain HTTP: a collector beside veer.
        if let Some(endpoint) = &self.otlp_endpoint
            && (!endpoint.starts_with("http://") || endpoint.parse::<http::Uri>().is_err())
        {
            problems.push((
                "otlp_endpoint",
                format!("{endpoint:?} is not an http:// URL (spans go over plain HTTP, to a collector beside veer)"),
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(("sample_ratio", "must be between 0.0 and 1.0".to_string()));
        }
        if self.max_queued_spans == 0 {
            problems.push(("max_queued_spans", "must be at least 1".to_string()));
        }
        for (key, value) in [("export_interval", self.export_interval), ("export_timeout", self.export_timeout)] {
            if value.is_zero() {
                problems.push((key, "must be longer than 0s".to_string()));
            }
        }
        problems
    }
}

/// One request's trace: its context, and what its spans need when they
/// are exported.
#[derive(Debug)]
pub struct RequestTrace {
    trace_id: [u8; 16],
    /// The caller's span, when the trace was continued.
    parent: Option<[u8; 8]>,
    span: [u8; 8],
    sampled: bool,
    /// Kept only for a sampled request whose spans are exported: passing
    /// the context on costs no allocation.
    recorded: Option<Box<Recorded>>,
}

/// What a request's spans are made of.
#[derive(Debug)]
struct Recorded {
    state: Option<HeaderValue>,
    start: SystemTime,
    attempts: Vec<AttemptSpan>,
    method: http::Method,
    /// The path (no query: it may carry secrets).
    path: String,
    request_id: HeaderValue,
}

#[derive(Debug)]
struct AttemptSpan {
    span: [u8; 8],
    start: SystemTime,
    end: Option<SystemTime>,
    backend: String,
    address: SocketAddr,
    number: u32,
    retry_reason: Option<String>,
    status: Option<u16>,
    error: Option<&'static str>,
}

/// What a finished request adds to its span.
#[derive(Debug, Default)]
pub struct RequestSummary<'a> {
    /// Status sent to the client.
    pub status: u16,
    /// The route that took it.
    pub route: Option<&'a str>,
    /// The upstream it went to.
    pub upstream: Option<&'a str>,
    /// The picker that routed it.
    pub picker: Option<&'a str>,
    /// The side at fault, when it failed (`backend:connect`).
    pub fault: Option<&'a str>,
}

impl RequestTrace {
    /// The trace id, 32 hex digits (for the access log).
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// Whether its spans will be exported (so its names are wanted).
    pub fn is_recorded(&self) -> bool {
        self.recorded.is_some()
    }

    /// An attempt starts: its `traceparent` for the backend.
    pub fn attempt(&mut self, number: u32, backend: &str, address: SocketAddr, span: u64) -> HeaderValue {
        let span = span.max(1).to_be_bytes();
        if let Some(recorded) = &mut self.recorded {
            let retry_reason = recorded.attempts.last().map(|last| match (last.error, last.status) {
                (Some(error), _) => format!("error: {error}"),
                (None, Some(status)) => format!("status {status}"),
                (None, None) => "no answer".to_string(),
            });
            recorded.attempts.push(AttemptSpan {
                span,
                start: SystemTime::now(),
                end: None,
                backend: backend.to_string(),
                address,
                number,
                retry_reason,
                status: None,
                error: None,
            });
        }
        traceparent(&self.trace_id, &span, self.sampled)
    }

    /// The attempt started last ended with `status`, or `error`.
    pub fn attempt_ended(&mut self, status: Option<u16>, error: Option<&'static str>) {
        if let Some(attempt) = self.recorded.as_mut().and_then(|recorded| recorded.attempts.last_mut()) {
            attempt.end = Some(SystemTime::now());
            attempt.status = status;
            attempt.error = error;
        }
    }
}

/// Continues or starts traces, and exports their spans.
#[derive(Debug)]
pub struct Tracer {
    config: TracingConfig,
    /// Spans waiting for the export task; `None` when none are exported.
    pending: Option<Arc<Pending>>,
    spans: IntCounterVec,
    scope: InstrumentationScope,
}

impl Tracer {
    /// A tracer as `config` says, its export task running on the calling
    /// runtime when it has an endpoint; its series registered with `r`.
    pub fn start(config: TracingConfig, r: Registrar<'_>) -> Result<Arc<Tracer>, String> {
        let spans = r.counter_vec(
            "veer_tracing_spans_total",
            "Spans by what became of them: exported, failed (the collector refused or did not answer), dropped (the queue was full).",
            &["result"],
        );
        let pending = match &config.otlp_endpoint {
            Some(endpoint) => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint.clone())
                    .with_protocol(match config.protocol {
                        OtlpProtocol::Protobuf => opentelemetry_otlp::Protocol::HttpBinary,
                        OtlpProtocol::Json => opentelemetry_otlp::Protocol::HttpJson,
                    })
                    .with_timeout(config.export_timeout)
                    .with_headers(config.headers.clone().into_iter().collect())
                    .build()
                    .map_err(|e| format!("observe.tracing: the OTLP exporter: {e}"))?;
                let pending = Arc::new(Pending::default());
                tokio::spawn(export(exporter, pending.clone(), config.clone(), spans.clone()));
                Some(pending)
            }
            None => None,
        };
        let scope = InstrumentationScope::builder("veer").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Arc::new(Tracer { config, pending, spans, scope }))
    }

    /// A request's trace: the caller's continued when its `traceparent` is
    /// valid, else a new one. `random` draws the ids.
    pub fn begin<B>(
        &self,
        request: &http::Request<B>,
        request_id: &HeaderValue,
        mut random: impl FnMut() -> u64,
    ) -> RequestTrace {
        let headers = request.headers();
        let (trace_id, parent, sampled) = match headers.get(&TRACEPARENT).and_then(parse_traceparent) {
            Some((trace_id, parent, sampled)) => (trace_id, Some(parent), sampled),
            None => {
                let id = (u128::from(random()) << 64 | u128::from(random())).max(1).to_be_bytes();
                let draw = (random() >> 11) as f64 / (1u64 << 53) as f64;
                (id, None, draw < self.config.sample_ratio)
            }
        };
        let recorded = (sampled && self.pending.is_some()).then(|| {
            Box::new(Recorded {
                state: if parent.is_some() { headers.get(&TRACESTATE).cloned() } else { None },
                start: SystemTime::now(),
                attempts: Vec::new(),
                method: request.method().clone(),
                path: request.uri().path().to_string(),
                request_id: request_id.clone(),
            })
        });
        RequestTrace { trace_id, parent, span: random().max(1).to_be_bytes(), sampled, recorded }
    }

    /// The request is answered: its spans go to the export queue, when it
    /// is sampled and spans are exported.
    pub fn finish(&self, trace: RequestTrace, summary: RequestSummary<'_>) {
        let (Some(pending), Some(recorded)) = (&self.pending, trace.recorded) else { return };
        let end = SystemTime::now();
        let state = recorded
            .state
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|text| text.parse::<TraceState>().ok())
            .unwrap_or_default();
        let trace_id = TraceId::from_bytes(trace.trace_id);
        let context = |span: [u8; 8]| {
            SpanContext::new(trace_id, SpanId::from_bytes(span), TraceFlags::SAMPLED, false, state.clone())
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", recorded.method.to_string()),
            KeyValue::new("url.path", recorded.path.clone()),
            KeyValue::new("http.response.status_code", i64::from(summary.status)),
            KeyValue::new("veer.request_id", recorded.request_id.to_str().unwrap_or("").to_string()),
            KeyValue::new("veer.attempts", recorded.attempts.len() as i64),
        ];
        let optional =
            [("veer.route", summary.route), ("veer.upstream", summary.upstream), ("veer.picker", summary.picker)];
        attributes.extend(optional.into_iter().filter_map(|(key, value)| Some(KeyValue::new(key, value?.to_string()))));
        let failed = summary.fault.is_some() || summary.status >= 500;
        if let Some(fault) = &summary.fault {
            attributes.push(KeyValue::new("veer.fault", fault.to_string()));
        }
        let name = match summary.route {
            Some(route) => format!("{} {route}", recorded.method),
            None => recorded.method.to_string(),
        };
        let request = self.span(
            context(trace.span),
            trace.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            trace.parent.is_some(),
            SpanKind::Server,
            name,
            (recorded.start, end),
            attributes,
            if failed { Status::error(format!("answered {}", summary.status)) } else { Status::Unset },
        );
        let mut spans = vec![request];
        for attempt in &recorded.attempts {
            let mut attributes = vec![
                KeyValue::new("veer.backend", attempt.backend.clone()),
                KeyValue::new("server.address", attempt.address.ip().to_string()),
                KeyValue::new("server.port", i64::from(attempt.address.port())),
                KeyValue::new("veer.attempt", i64::from(attempt.number)),
            ];
            if let Some(picker) = summary.picker {
                attributes.push(KeyValue::new("veer.picker", picker.to_string()));
            }
            if let Some(reason) = &attempt.retry_reason {
                attributes.push(KeyValue::new("veer.retry_reason", reason.clone()));
            }
            if let Some(status) = attempt.status {
                attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
            }
            let status = match (attempt.error, attempt.status) {
                (Some(error), _) => {
                    attributes.push(KeyValue::new("error.type", error));
                    Status::error(error)
                }
                (None, Some(status)) if status >= 500 => Status::error(format!("status {status}")),
                _ => Status::Unset,
            };
            spans.push(self.span(
                context(attempt.span),
                SpanId::from_bytes(trace.span),
                false,
                SpanKind::Client,
                format!("attempt {}", attempt.number),
                (attempt.start, attempt.end.unwrap_or(end)),
                attributes,
                status,
            ));
        }
        let mut batch = pending.spans.lock();
        let room = self.config.max_queued_spans.saturating_sub(batch.len());
        if spans.len() > room {
            self.spans.with_label_values(&["dropped"]).inc_by((spans.len() - room) as u64);
            spans.truncate(room);
        }
        batch.append(&mut spans);
    }

    #[allow(clippy::too_many_arguments, reason = "a span's fields, each named at the call")]
    fn span(
        &self,
        span_context: SpanContext,
        parent_span_id: SpanId,
        parent_span_is_remote: bool,
        span_kind: SpanKind,
        name: String,
        (start_time, end_time): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context,
            parent_span_id,
            parent_span_is_remote,
            span_kind,
            name: Cow::Owned(name),
            start_time,
            end_time,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

/// Spans waiting for export.
#[derive(Debug, Default)]
struct Pending {
    spans: parking_lot::Mutex<Vec<SpanData>>,
}

/// Takes the pending spans every `export_interval` and sends them, 512 to a
/// request, until the tracer is gone (then once more).
async fn export(
    mut exporter: opentelemetry_otlp::SpanExporter,
    pending: Arc<Pending>,
    config: TracingConfig,
    spans: IntCounterVec,
) {
    const BATCH: usize = 512;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
    exporter.set_resource(&resource);
    let mut ticker = tokio::time::interval(config.export_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // The tracer gone, this is the last round.
        let open = Arc::strong_count(&pending) > 1;
        let taken = std::mem::take(&mut *pending.spans.lock());
        let mut taken = taken.into_iter().peekable();
        while taken.peek().is_some() {
            let batch: Vec<SpanData> = taken.by_ref().take(BATCH).collect();
            let count = batch.len() as u64;
            match exporter.export(batch).await {
                Ok(()) => spans.with_label_values(&["exported"]).inc_by(count),
                Err(error) => {
                    spans.with_label_values(&["failed"]).inc_by(count);
                    tracing::warn!(%error, spans = count, "exporting spans failed");
                }
            }
        }
        if !open {
            return;
        }
    }
}

/// `00-TRACE-SPAN-FLAGS` for the backend, written in place.
fn traceparent(trace_id: &[u8; 16], span: &[u8; 8], sampled: bool) -> HeaderValue {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for (i, byte) in trace_id.iter().chain(span).enumerate() {
        // The span's digits start after the second dash.
        let at = 3 + i * 2 + usize::from(i >= 16);
        text[at] = DIGITS[usize::from(byte >> 4)];
        text[at + 1] = DIGITS[usize::from(byte & 15)];
    }
    if sampled {
        text[54] = b'1';
    }
    HeaderValue::from_bytes(&text).expect("hex digits and dashes are a valid header value")
}

/// A `traceparent` header: its trace id, parent span and sampled flag, or
/// `None` when it is not valid (W3C Trace Context §3.2: version `ff` and
/// all-zero ids are invalid; a future version's extra fields are ignored).
fn parse_traceparent(value: &HeaderValue) -> Option<([u8; 16], [u8; 8], bool)> {
    let text = value.to_str().ok()?;
    let mut fields = text.split('-');
    let (version, trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && fields.next().is_some()) {
        return None;
    }
    let version = u8::from_str_radix(version, 16).ok()?;
    if version == 0 && text.len() != 55 {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace)?;
    let span: [u8; 8] = unhex(span)?;
    let flags: [u8; 1] = unhex(flags)?;
    if trace_id == [0; 16] || span == [0; 8] {
        return None;
    }
    Some((trace_id, span, flags[0] & 1 == 1))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 15)] as char);
    }
    text
}

/// Lowercase hex digits only, as W3C Trace Context requires.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn traceparent_is_parsed_as_w3c_says() {
        let (trace, span, sampled) =
            parse_traceparent(&value("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).unwrap();
        assert_eq!(
            (hex(&trace).as_str(), hex(&span).as_str(), sampled),
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true)
        );
        assert!(!parse_traceparent(&value("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")).unwrap().2);
        // A later version may add fields; version 00 may not.
        assert!(parse_traceparent(&value("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")).is_some());
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
            "",
        ] {
            assert!(parse_traceparent(&value(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let config = TracingConfig {
            otlp_endpoint: Some("https://collector:4318/v1/traces".into()),
            sample_ratio: 1.5,
            ..TracingConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].1.contains("plain HTTP"), "{problems:?}");
        assert_eq!(problems[1].0, "sample_ratio");
        assert!(TracingConfig::default().problems().is_empty());
    }

    #[tokio::test]
    async fn a_valid_caller_is_continued_and_anything_else_starts_a_trace() {
        let registry = prometheus::Registry::new();
        // An endpoint nobody listens on: spans are recorded (and fail to export, unseen here).
        let config =
            TracingConfig { otlp_endpoint: Some("http://127.0.0.1:9/v1/traces".into()), ..TracingConfig::default() };
        let tracer = Tracer::start(config, Registrar::new(&registry)).unwrap();
        let mut counter = 0u64;
        let mut random = || {
            counter += 1;
            counter
        };
        let mut request = http::Request::get("/x").body(()).unwrap();
        let headers = request.headers_mut();
        headers.insert(&TRACEPARENT, value("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        headers.insert(&TRACESTATE, value("vendor=1"));
        let id = value("id-1");
        let mut trace = tracer.begin(&request, &id, &mut random);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let outgoing = trace.attempt(0, "a", "127.0.0.1:1".parse().unwrap(), 0xabc);
        assert_eq!(outgoing, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01");
        trace.attempt_ended(Some(503), None);
        let untraced = Tracer::start(TracingConfig::default(), Registrar::new(&prometheus::Registry::new())).unwrap();
        let mut passed_on = untraced.begin(&request, &id, &mut random);
        assert!(!passed_on.is_recorded(), "without an endpoint nothing is kept for spans");
        let header = passed_on.attempt(0, "a", "127.0.0.1:1".parse().unwrap(), 0xabc);
        assert_eq!(header, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01", "but the context passes on");
        trace.attempt(1, "b", "127.0.0.1:2".parse().unwrap(), 0xdef);
        let recorded = trace.recorded.as_ref().unwrap();
        assert_eq!(recorded.attempts[1].retry_reason.as_deref(), Some("status 503"));

        request.headers_mut().insert(&TRACEPARENT, value("00-garbage"));
        let fresh = tracer.begin(&request, &id, &mut random);
        assert_ne!(fresh.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(fresh.parent.is_none(), "a new trace has no parent");
        assert!(fresh.recorded.as_ref().unwrap().state.is_none(), "nor the caller's state");
        assert!(fresh.sampled, "sample_ratio 1");
    }
}
