//! Forwarding one admitted request, as phases over its [`Exchange`]:
//!
//! 1. **route** ([`Proxy::route`]): the listener's first matching route, and
//!    the upstream group it forwards to (drawn for a split), or veer's own
//!    answer (a redirect, a direct response, 404 when no route matches);
//! 2. **body** ([`Proxy::take_body`]): buffered for replay when it fits,
//!    streamed otherwise; the attempts it allows;
//! 3. **pick and admit** ([`Proxy::pick_and_admit`]): the affinity cookie's
//!    backend, or the picker's choice, admitted by health;
//! 4. **send** ([`Proxy::send`]): one attempt under the request's deadline;
//! 5. **classify** ([`Proxy::record`]): the outcome recorded where it
//!    belongs — the backend, its health, the picker — unless it was the
//!    client's fault;
//! 6. **retry decision** ([`Proxy::retry_wanted`], [`RetryPolicy::allows_another`](super::RetryPolicy::allows_another)).
//!
//! [`Proxy::forward`] only strings them together.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::RetryPolicy;
use super::client_body::{self, BodyLimits, BodyProgress, Payload};
use super::observed::RequestGuard;
use super::{Clients, OutgoingBody, Proxy, ProxyBody, mirror};
use crate::fault::{BackendFault, ClientFault, Fault};
use crate::health::{Admitted, AttemptOutcome, Health, Refusal};
use crate::observe::trace::TRACEPARENT;
use crate::pool::{BackendProtocol, BackendState, Pool};
use crate::routing::{Action, RequestHead, RouteTable, Target};
use crate::transport::{BackendBody, Outgoing};
use crate::upstream::Upstream;
use veer_plugin_runtime::{
    BackendId, Choice, ErrorKind, HttpMethod, Outcome, PickContext, Picker, RequestMeta, RequestPicker, RouteNames,
};

/// Why an attempt on a backend produced no usable response (the backend's
/// fault: a client's fault ends the request instead).
#[derive(Debug, Clone)]
enum AttemptError {
    Connect(String),
    Reset(String),
    Timeout(Duration),
}

impl AttemptError {
    /// As the picker hears of it.
    fn kind(&self) -> ErrorKind {
        match self {
            AttemptError::Connect(_) => ErrorKind::Connect,
            AttemptError::Reset(_) => ErrorKind::Reset,
            AttemptError::Timeout(_) => ErrorKind::Timeout,
        }
    }

    fn fault(&self) -> BackendFault {
        match self {
            AttemptError::Connect(_) => BackendFault::Connect,
            AttemptError::Reset(_) => BackendFault::Reset,
            AttemptError::Timeout(_) => BackendFault::Timeout,
        }
    }
}

/// What came of sending one attempt.
enum Sent {
    Response(Response<BackendBody>),
    /// The client broke its body meanwhile.
    ClientFault(ClientFault),
    /// The backend's fault.
    Failed(AttemptError),
}

/// How a request's forwarding failed, for veer's own answer.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) reason: String,
    /// Set for a client's fault: the connection is not kept (the rest of a
    /// broken body cannot be read past).
    pub(super) close: bool,
}

impl Failure {
    fn new(status: StatusCode, reason: impl Into<String>) -> Failure {
        Failure { status, reason: reason.into(), close: false }
    }

    fn client(fault: ClientFault) -> Failure {
        Failure { status: fault.status(), reason: fault.reason().to_string(), close: true }
    }
}

/// One request as it goes through its attempts: what was read of it, how
/// many attempts it may have, and what the attempts so far left behind.
pub(super) struct Exchange<'r> {
    /// Its route's retry policy (the route's own, or the proxy's).
    retry: &'r RetryPolicy,
    /// The request, lent to the picker for each pick (hence the `Option`:
    /// it is always handed back).
    meta: Option<RequestMeta>,
    method: HttpMethod,
    payload: Payload,
    progress: Arc<BodyProgress>,
    deadline: Instant,
    max_attempts: u32,
    /// The backend the affinity cookie names, if the request carries one.
    sticky_key: Option<u64>,
    /// The previous attempt's backend: never the next one's.
    exclude: Option<BackendId>,
    last: Last,
}

/// What the attempts so far left behind, for veer's answer if none succeeds.
#[derive(Debug, Default)]
struct Last {
    /// The last backend failure, with the backend it was on.
    error: Option<(String, AttemptError)>,
    /// A retryable status (e.g. 503) kept in case no retry can be made: the
    /// backend's own answer is better for the client than a made-up 502.
    response: Option<Response<BackendBody>>,
    /// Why the last pick found nothing admitted.
    refusal: Option<Refusal>,
}

impl Last {
    /// Whether [`Last::into_answer`] is a response below 500.
    fn succeeded(&self) -> bool {
        self.error.is_none() && self.response.as_ref().is_some_and(|r| !r.status().is_server_error())
    }

    /// The kept response if only statuses were retried, or else veer's own
    /// answer for the last failure.
    fn into_answer(self) -> Result<Response<BackendBody>, Failure> {
        if let Some(response) = self.response.filter(|_| self.error.is_none()) {
            return Ok(response);
        }
        Err(match self.error {
            None => Failure::new(StatusCode::SERVICE_UNAVAILABLE, no_backend_reason(self.refusal)),
            Some((backend, AttemptError::Connect(reason))) => {
                Failure::new(StatusCode::BAD_GATEWAY, format!("could not connect to backend {backend}: {reason}"))
            }
            Some((backend, AttemptError::Reset(reason))) => Failure::new(
                StatusCode::BAD_GATEWAY,
                format!("backend {backend} closed the connection without a response: {reason}"),
            ),
            Some((backend, AttemptError::Timeout(after))) => Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("backend {backend} sent no response headers within {after:?}"),
            ),
        })
    }
}

/// One admitted attempt: the choice, its backend and health's admission.
struct Picked<'h> {
    choice: Choice,
    backend: Arc<BackendState>,
    admitted: Admitted<'h>,
}

impl Exchange<'_> {
    fn meta(&mut self) -> &mut RequestMeta {
        self.meta.as_mut().expect("the request is handed back after every pick")
    }

    /// The body if it is in memory (read whole for replay).
    fn replayable(&self) -> Option<Bytes> {
        match &self.payload {
            Payload::Replayable(bytes) => Some(bytes.clone()),
            Payload::Streaming(_) => None,
        }
    }

    /// The request for attempt `attempt` on `backend`. The last attempt can
    /// have the headers; earlier ones keep them for a retry.
    fn outgoing(&mut self, attempt: u32, backend: &BackendState) -> Result<Request<OutgoingBody>, String> {
        let last = attempt + 1 == self.max_attempts;
        let body = match &mut self.payload {
            Payload::Replayable(bytes) => Either::Right(Full::new(bytes.clone())),
            Payload::Streaming(_) => match std::mem::replace(&mut self.payload, Payload::Replayable(Bytes::new())) {
                Payload::Streaming(body) => Either::Left(body),
                Payload::Replayable(_) => unreachable!("matched as streaming just above"),
            },
        };
        let meta = self.meta();
        let headers = if last { std::mem::take(&mut meta.parts.headers) } else { meta.parts.headers.clone() };
        outgoing_request(&meta.parts, headers, backend, body)
    }
}

impl Proxy {
    /// Forwards one admitted request: the phases in order, attempt after
    /// attempt. `Err` says what veer answers itself, and why.
    pub(super) async fn forward(
        &self,
        clients: &Arc<Clients>,
        mut parts: http::request::Parts,
        body: Incoming,
        client: &super::ClientInfo,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        guard: &mut RequestGuard,
    ) -> Result<Response<ProxyBody>, Failure> {
        let client_ip = client.address.ip();
        let routes = self.routes.load_full();
        let Some(table) = routes.table_of(&client.listener) else {
            // Its connection outlived the listener a reload removed.
            let reason = format!("listener {} is no longer configured", client.listener);
            return Err(Failure { status: StatusCode::SERVICE_UNAVAILABLE, reason, close: true });
        };
        let (route, target) = match self.route(table, &parts, &client.scheme)? {
            Routed::Forward(route, target) => (route, target),
            Routed::Answer(route, response) => {
                guard.route(RouteNames { route: route.name.clone(), upstream: ANSWERED_BY_VEER.clone() });
                return Ok(response);
            }
        };
        let upstream = &target.upstream;
        let names = RouteNames { route: route.name.clone(), upstream: upstream.name.clone() };
        guard.route(names.clone());
        edit_request(route, &mut parts)?;
        let retry = &*target.retry;
        let deadline = Instant::now() + target.timeout;
        let upgrade = client_upgrade.is_some();
        let meta = RequestMeta { parts, client_ip, affinity_hash: None, route: Some(names) };
        let mut exchange = match self.take_body(meta, body, upgrade, retry, deadline).await {
            Ok(exchange) => exchange,
            Err(fault) => return Err(self.client_failed(guard, fault)),
        };
        self.budget.deposit();
        if !upgrade {
            self.mirror(route, &exchange, clients, client_ip);
        }
        // The picker that routes the first attempt routes them all and hears
        // every outcome; during a trial, the candidate for its share, drawn
        // from veer's own random numbers.
        let picker = upstream.slot.for_request_drawn(|| self.request_ids.next_random());
        let trial_since = picker.on_trial().then(Instant::now);
        let mut log = AttemptLog { guard, picker: &picker, backend: None, attempts: 0, trial_since, ok: None };
        let mut sticky = exchange.sticky_key.and_then(|key| upstream.pool.by_sticky_key(key));
        for attempt in 0..exchange.max_attempts {
            if attempt > 0 && !self.back_off(retry, attempt, deadline).await {
                break;
            }
            let picked = match self.pick_and_admit(upstream, &picker, &mut exchange, attempt, sticky.take()) {
                Ok(picked) => picked,
                Err(refusal) => {
                    exchange.last.refusal = refusal;
                    break;
                }
            };
            if attempt > 0 {
                self.metrics.retries.inc();
            }
            log.attempt(&picked.backend);
            let traceparent = log.guard.trace_mut().map(|trace| {
                let spec = &picked.backend.spec;
                trace.attempt(attempt, &spec.name, spec.address, self.request_ids.next_random())
            });
            let tls = upstream.tls();
            let sent_at = Instant::now();
            // The common case, plain HTTP/1.1 with the body in memory, is
            // written from the request's own head; any other makes a request
            // of its own for the attempt.
            let plain = picked.backend.spec.protocol == BackendProtocol::Http1 && tls.is_none() && !upgrade;
            let response = match exchange.replayable().filter(|_| plain) {
                Some(body) => {
                    let extra = traceparent.as_ref().map(|value| (&TRACEPARENT, value));
                    let outgoing = Outgoing::of(&exchange.meta().parts, &picked.backend.authority, extra);
                    clients.send_http1(&outgoing, body)
                }
                None => {
                    let mut outgoing = exchange
                        .outgoing(attempt, &picked.backend)
                        .map_err(|reason| Failure::new(StatusCode::BAD_REQUEST, reason))?;
                    if let Some(traceparent) = traceparent {
                        outgoing.headers_mut().insert(TRACEPARENT.clone(), traceparent);
                    }
                    clients.request(picked.backend.spec.protocol, tls.as_ref(), outgoing)
                }
            };
            let sent = self.send(response, &exchange.progress, deadline).await;
            if let Some(trace) = log.guard.trace_mut() {
                match &sent {
                    Sent::Response(response) => trace.attempt_ended(Some(response.status().as_u16()), None),
                    Sent::Failed(error) => trace.attempt_ended(None, Some(Fault::Backend(error.fault()).reason())),
                    Sent::ClientFault(_) => trace.attempt_ended(None, Some("the client left")),
                }
            }
            let (choice, backend) = self.record(&picker, picked, &sent, sent_at.elapsed(), log.guard);
            exchange.exclude = Some(choice.backend);
            match sent {
                Sent::Response(response) => {
                    if self.retry_wanted(&exchange, attempt, Some(response.status())) {
                        exchange.last.response = Some(response);
                        continue;
                    }
                    let mut response = self.answer(response, &backend, exchange.sticky_key, client_upgrade);
                    route.response_headers.apply(response.headers_mut());
                    log.ok = Some(!response.status().is_server_error());
                    return Ok(response);
                }
                Sent::ClientFault(fault) => {
                    drop(log);
                    return Err(self.client_failed(guard, fault));
                }
                Sent::Failed(error) => {
                    exchange.last.error = Some((describe_backend(&backend), error));
                    exchange.last.response = None;
                    if !self.retry_wanted(&exchange, attempt, None) {
                        break;
                    }
                }
            }
        }
        log.ok = Some(exchange.last.succeeded());
        drop(log);
        exchange.last.into_answer().map(|response| {
            let mut response = self.finish(response, None);
            route.response_headers.apply(response.headers_mut());
            response
        })
    }

    /// Phase 1, the route: the first route of the listener that the request
    /// matches, and the upstream it goes to (drawn with veer's own random
    /// number for a split, once per request so that its retries stay in its
    /// group); or veer's own answer: a redirect, a direct response, or 404
    /// when no route matches.
    fn route<'r>(
        &self,
        table: &'r RouteTable<Target>,
        parts: &http::request::Parts,
        scheme: &Scheme,
    ) -> Result<Routed<'r>, Failure> {
        let head = RequestHead { method: &parts.method, uri: &parts.uri, headers: &parts.headers };
        let Some(route) = table.find(&head) else {
            let host = head.host().unwrap_or("");
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                format!("no route matches {} {host}{}", parts.method, parts.uri.path()),
            ));
        };
        let upstream = match &route.action {
            Action::Forward(upstream) => upstream,
            Action::Split(split) => split.choose(self.request_ids.next_random()),
            Action::Redirect(redirect) => {
                let Some(location) = redirect.location(&head, scheme, route) else {
                    return Err(Failure::new(StatusCode::BAD_REQUEST, "the request has no valid host to redirect to"));
                };
                return Ok(Routed::Answer(
                    route,
                    own_answer(redirect.status, route, |response| {
                        if let Ok(location) = HeaderValue::try_from(location) {
                            response.headers_mut().insert(header::LOCATION, location);
                        }
                    }),
                ));
            }
            Action::Respond(direct) => {
                let mut response = own_answer(direct.status, route, |response| {
                    response.headers_mut().insert(header::CONTENT_TYPE, direct.content_type.clone());
                });
                *response.body_mut() = Either::Right(Full::new(direct.body.clone()));
                return Ok(Routed::Answer(route, response));
            }
        };
        Ok(Routed::Forward(route, upstream))
    }

    /// After the body, for a mirroring route: a copy of the request to its
    /// shadow upstream for its sampled share, fire-and-forget.
    fn mirror(&self, route: &RouteOf, exchange: &Exchange<'_>, clients: &Arc<Clients>, client_ip: IpAddr) {
        let Some(mirror) = route.mirror.as_ref().filter(|m| m.samples(self.request_ids.next_random())) else {
            return;
        };
        match &exchange.payload {
            Payload::Replayable(body) => {
                let copy = mirror::Copy {
                    route: route.name.clone(),
                    upstream: mirror.upstream.upstream.clone(),
                    parts: mirror::copy_of(&exchange.meta.as_ref().expect("lent only during a pick").parts),
                    body: body.clone(),
                    client_ip,
                    method: exchange.method,
                };
                let timeout = self.config.response_header_timeout.min(exchange.deadline - Instant::now());
                self.mirrors.send(copy, clients.clone(), timeout, &self.metrics);
            }
            // A streamed body goes to one backend only.
            Payload::Streaming(_) => self.metrics.mirror_result(&route.name, crate::observe::MirrorOutcome::Skipped),
        }
    }

    /// Phase 2, the body. One that fits the replay buffer is read first,
    /// whatever the method (as nginx buffers request bodies): one the client
    /// breaks never reaches a backend, and an idempotent request can send it
    /// again. A larger one is streamed to one backend only. An upgrade is
    /// never buffered nor retried.
    async fn take_body<'r>(
        &self,
        meta: RequestMeta,
        body: Incoming,
        upgrade: bool,
        retry: &'r RetryPolicy,
        deadline: Instant,
    ) -> Result<Exchange<'r>, ClientFault> {
        let parts = &meta.parts;
        let idempotent = is_idempotent(&parts.method) || retry.retry_non_idempotent;
        let progress = Arc::new(BodyProgress::default());
        let limits =
            BodyLimits { max_bytes: self.config.limits.max_body_bytes, idle_timeout: self.config.client_body_timeout };
        let payload = client_body::take(body, !upgrade, retry.replay_buffer_bytes, limits, deadline, &progress).await?;
        let max_attempts = match payload {
            Payload::Replayable(_) if idempotent && !upgrade => retry.max_attempts.max(1),
            _ => 1,
        };
        let sticky_key = self.config.sticky.as_ref().and_then(|sticky| sticky_cookie(&parts.headers, &sticky.cookie));
        Ok(Exchange {
            retry,
            method: wit_method(&parts.method),
            meta: Some(meta),
            payload,
            progress,
            deadline,
            max_attempts,
            sticky_key,
            exclude: None,
            last: Last::default(),
        })
    }

    /// Phase 3, pick and admit: the first attempt honours the affinity
    /// cookie's backend when it is eligible and admitted; otherwise the
    /// picker chooses ([`Proxy::pick_admitted`]).
    fn pick_and_admit<'h>(
        &self,
        upstream: &'h Upstream,
        picker: &Picker,
        exchange: &mut Exchange<'_>,
        attempt: u32,
        sticky: Option<Arc<BackendState>>,
    ) -> Result<Picked<'h>, Option<Refusal>> {
        let health = &upstream.health;
        let held = sticky.and_then(|backend| {
            let admitted = health.is_eligible(backend.id).then(|| health.admit(&backend).ok())??;
            Some(Picked { choice: Choice::by_host(backend.id), backend, admitted })
        });
        if let Some(held) = held {
            return Ok(held);
        }
        let ctx = PickContext { attempt, exclude: exchange.exclude, method: exchange.method };
        let meta = exchange.meta.take().expect("the request is handed back after every pick");
        let (picked, meta) = self.pick_admitted(&upstream.pool, health, picker, meta, ctx);
        exchange.meta = Some(meta);
        picked.map(|(choice, backend, admitted)| Picked { choice, backend, admitted })
    }

    /// Phase 5, classify: records the attempt's outcome on the backend, its
    /// health and the picker. A client's fault records nothing about the
    /// backend: its admission slot is freed unrecorded, and a picker counting
    /// in-flight attempts hears it was not sent.
    /// Hands the choice and the backend back: the retry decision and the
    /// answer need them, and the backend's `Arc` is not cloned per attempt.
    fn record(
        &self,
        picker: &Picker,
        picked: Picked<'_>,
        sent: &Sent,
        latency: Duration,
        guard: &mut RequestGuard,
    ) -> (Choice, Arc<BackendState>) {
        let Picked { choice, backend, admitted } = picked;
        match sent {
            Sent::Response(response) => judge(picker, &choice, &backend, admitted, Ok(response.status()), latency),
            Sent::ClientFault(fault) => {
                drop(admitted);
                observe(picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
                tracing::debug!(backend = %backend.spec.name, ?fault, "attempt abandoned: the client's fault");
            }
            Sent::Failed(failure) => {
                judge(picker, &choice, &backend, admitted, Err(failure.kind()), latency);
                self.metrics.record_failure(Fault::Backend(failure.fault()));
                guard.blame(Fault::Backend(failure.fault()));
                tracing::debug!(backend = %backend.spec.name, ?failure, "attempt failed");
            }
        }
        (choice, backend)
    }

    /// Phase 6, the retry decision after an attempt that answered `status`
    /// (`None`: failed): the policy allows another attempt, and it fits the
    /// deadline and the retry budget (only then is the budget drawn on).
    fn retry_wanted(&self, exchange: &Exchange<'_>, attempt: u32, status: Option<StatusCode>) -> bool {
        exchange.retry.allows_another(status, attempt, exchange.max_attempts) && self.may_retry(exchange.deadline)
    }

    /// Waits the jittered exponential backoff before attempt `attempt`;
    /// `false` if that would pass the deadline.
    async fn back_off(&self, retry: &RetryPolicy, attempt: u32, deadline: Instant) -> bool {
        let wait = retry.backoff(attempt, self.request_ids.next_random());
        if Instant::now() + wait >= deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// The backend's response as the client's, with the affinity cookie set
    /// when it names another backend.
    fn answer(
        &self,
        mut response: Response<BackendBody>,
        backend: &BackendState,
        sticky_key: Option<u64>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        if let Some(sticky) = &self.config.sticky
            && sticky_key != Some(backend.sticky_key)
        {
            set_sticky_cookie(&mut response, &sticky.cookie, backend.sticky_key);
        }
        self.finish(response, client_upgrade)
    }

    /// Sends one attempt and waits for its response headers. The backend's
    /// `response_header_timeout` runs from the end of the request body: while
    /// the client is still uploading, the body's own stall timeout applies,
    /// and a body still arriving at the request's deadline is the client's
    /// fault. Whatever the backend connection reports, a fault recorded by
    /// the body is the client's.
    async fn send(&self, response: crate::transport::Sending, progress: &BodyProgress, deadline: Instant) -> Sent {
        let per_try = self.config.response_header_timeout;
        let sent = Instant::now();
        // The backend's clock starts when the body is complete.
        let backend_deadline = |done: Instant| (done.max(sent) + per_try).min(deadline);
        // While the body is still arriving, look again at least every second.
        let recheck = per_try.min(Duration::from_secs(1));
        let mut response = std::pin::pin!(response);
        loop {
            let limit = match progress.finished_at() {
                Some(done) => backend_deadline(done),
                None => (Instant::now() + recheck).min(deadline),
            };
            match tokio::time::timeout_at(limit.into(), &mut response).await {
                Ok(Ok(response)) => return Sent::Response(response),
                Ok(Err(error)) => {
                    return match progress.fault() {
                        Some(fault) => Sent::ClientFault(fault),
                        None if error.is_connect() => Sent::Failed(AttemptError::Connect(root_cause(&error))),
                        None => Sent::Failed(AttemptError::Reset(root_cause(&error))),
                    };
                }
                Err(_) => {
                    let now = Instant::now();
                    match (progress.fault(), progress.finished_at()) {
                        (Some(fault), _) => return Sent::ClientFault(fault),
                        (None, None) if now >= deadline => return Sent::ClientFault(ClientFault::BodyTimeout),
                        (None, None) => {}
                        (None, Some(done)) if now < backend_deadline(done) => {}
                        (None, Some(done)) => {
                            return Sent::Failed(AttemptError::Timeout(backend_deadline(done) - done.max(sent)));
                        }
                    }
                }
            }
        }
    }

    /// Answers a client's fault: counted and logged as the client's, never the backend's.
    fn client_failed(&self, guard: &mut RequestGuard, fault: ClientFault) -> Failure {
        self.metrics.record_failure(Fault::Client(fault));
        guard.blame(Fault::Client(fault));
        Failure::client(fault)
    }

    /// Asks the picker for a backend and health for admission. A refused pick
    /// (backend at its cap, breaker not admitting, or the backend the previous
    /// attempt used) is reported to the picker as not sent and excluded from
    /// the next pick, at most [`MAX_PICKS_PER_ATTEMPT`] picks in all. `Err`
    /// when nothing was admitted, with the last refusal if there was one.
    #[allow(clippy::type_complexity)]
    fn pick_admitted<'h>(
        &self,
        pool: &Pool,
        health: &'h Health,
        picker: &Picker,
        mut meta: RequestMeta,
        mut ctx: PickContext,
    ) -> (Result<(Choice, Arc<BackendState>, Admitted<'h>), Option<Refusal>>, RequestMeta) {
        let previous = ctx.exclude;
        let mut refused = None;
        for _ in 0..MAX_PICKS_PER_ATTEMPT {
            let picking = Instant::now();
            let (choice, returned) = picker.pick(meta, ctx);
            self.metrics.picker.pick_seconds.observe(picking.elapsed().as_secs_f64());
            meta = returned;
            let Some(choice) = choice else { break };
            let Some(backend) = pool.get(choice.backend) else {
                // Removed since this picker last heard (a reload or an admin
                // removal racing the pick, or a picker swapped out meanwhile
                // that no longer hears events): ask again without it.
                observe(picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
                ctx.exclude = Some(choice.backend);
                continue;
            };
            // After a refusal the exclusion names the refused backend, so the
            // previous attempt's backend could come back: never twice in a row.
            if Some(choice.backend) != previous {
                match health.admit(&backend) {
                    Ok(admitted) => return (Ok((choice, backend, admitted)), meta),
                    Err(refusal) => refused = Some(refusal),
                }
            }
            observe(picker, &choice, 0, Duration::ZERO, Some(ErrorKind::NotSent));
            ctx.exclude = Some(choice.backend);
        }
        (Err(refused), meta)
    }

    /// Whether one more attempt fits the deadline and the retry budget.
    fn may_retry(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let allowed = self.budget.try_withdraw(crate::clock::now());
        if !allowed {
            self.metrics.retry_budget_exhausted.inc();
        }
        allowed
    }

    /// Turns the backend's response into the client's, wiring up a protocol
    /// switch when both sides agreed to one.
    fn finish(
        &self,
        mut response: Response<BackendBody>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) = (response.status(), client_upgrade) {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, backend_upgrade) {
                    Ok((client, backend)) => {
                        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                            tracing::debug!(%error, "upgraded connection ended with an error");
                        }
                    }
                    Err(error) => tracing::debug!(%error, "protocol switch failed"),
                }
            });
        }
        response.map(Either::Left)
    }
}

/// A compiled route of the proxy's tables.
type RouteOf = crate::routing::Route<Target>;

/// What a route decided.
enum Routed<'r> {
    /// Forward to this upstream, under this route's settings.
    Forward(&'r RouteOf, &'r Target),
    /// veer answers itself, for this route.
    Answer(&'r RouteOf, Response<ProxyBody>),
}

/// The route's changes to the request: its header edits, then its path
/// prefix rewrite.
fn edit_request(route: &RouteOf, parts: &mut http::request::Parts) -> Result<(), Failure> {
    route.request_headers.apply(&mut parts.headers);
    if let Some(rewritten) = parts.uri.path_and_query().and_then(|original| route.rewrite(original)) {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(rewritten);
        parts.uri = Uri::from_parts(uri).map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    Ok(())
}

/// The `upstream` label of a request a route answered itself (a redirect, a
/// direct response).
static ANSWERED_BY_VEER: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// veer's own answer for `route` (a redirect, a direct response) with
/// `status`, an empty body, the route's response header edits, and what
/// `fill` adds.
fn own_answer(status: StatusCode, route: &RouteOf, fill: impl FnOnce(&mut Response<ProxyBody>)) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = status;
    fill(&mut response);
    route.response_headers.apply(response.headers_mut());
    response
}

/// How a request was routed, for its access log record (only kept when an
/// access log is on; the writer thread looks the names up), and for a
/// picker trial's tally.
struct AttemptLog<'a> {
    guard: &'a mut RequestGuard,
    picker: &'a RequestPicker,
    backend: Option<Arc<BackendState>>,
    attempts: u32,
    /// When the first pick was made, if a trial runs.
    trial_since: Option<Instant>,
    /// Whether the request ended well; `None` when the client broke it
    /// off or sent something unforwardable: no picker is blamed for that.
    ok: Option<bool>,
}

impl AttemptLog<'_> {
    fn attempt(&mut self, backend: &Arc<BackendState>) {
        self.attempts += 1;
        if self.guard.logging() {
            self.backend = Some(backend.clone());
        }
    }
}

impl Drop for AttemptLog<'_> {
    fn drop(&mut self) {
        if let (Some(since), Some(ok)) = (self.trial_since, self.ok) {
            self.picker.finished(ok, since.elapsed());
        }
        if self.guard.logging() {
            let (backend, picker) = (self.backend.take(), Some(self.picker.shared()));
            self.guard.routed(backend, picker, self.attempts);
        } else {
            self.guard.routed(None, None, self.attempts);
        }
    }
}

/// The affinity key in the request's `name` cookie, if there is a valid one.
fn sticky_cookie(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| u64::from_str_radix(value, 16).ok())
}

fn set_sticky_cookie(response: &mut Response<BackendBody>, name: &str, key: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("{name}={key:016x}; Path=/; HttpOnly; SameSite=Lax")) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Picks per attempt when picks are refused at admission (each refused
/// backend is excluded from the next pick, so a few suffice to get past a
/// busy backend without spinning when all are busy).
const MAX_PICKS_PER_ATTEMPT: usize = 4;

/// Why veer found no backend for an attempt.
fn no_backend_reason(refusal: Option<Refusal>) -> &'static str {
    match refusal {
        None => "no eligible backend",
        Some(Refusal::AtCapacity) => "no eligible backend: those picked are at their concurrency cap",
        Some(Refusal::Breaker(_)) => "no eligible backend: those picked have their circuit breaker open",
        Some(Refusal::Drained) => "no eligible backend: those picked are drained",
    }
}

/// Records a backend's verdict on an attempt it was sent — its status, or how
/// it failed — on the backend's numbers, its health and the picker that chose
/// it. Only for the backend's own doing: a client's fault judges nothing.
pub(super) fn judge(
    picker: &Picker,
    choice: &Choice,
    backend: &BackendState,
    admitted: Admitted<'_>,
    verdict: Result<StatusCode, ErrorKind>,
    latency: Duration,
) {
    match verdict {
        Ok(status) => {
            admitted.finish(AttemptOutcome::Status(status.as_u16()), latency);
            backend.record(Some(status), latency);
            observe(picker, choice, status.as_u16(), latency, None);
        }
        Err(kind) => {
            admitted.finish(AttemptOutcome::Failed(kind), latency);
            backend.record(None, latency);
            observe(picker, choice, 0, latency, Some(kind));
        }
    }
}

pub(super) fn observe(picker: &Picker, choice: &Choice, status: u16, latency: Duration, error: Option<ErrorKind>) {
    if picker.wants_outcomes() {
        let (backend, picked) = (choice.backend, choice.by_plugin);
        picker.observe(choice, Outcome { backend, picked, status, latency_us: latency.as_micros() as u64, error });
    }
}

/// The request for one attempt on `backend`: same method, headers and path,
/// absolute URI for the client, version for the backend's protocol.
pub(super) fn outgoing_request(
    parts: &http::request::Parts,
    headers: HeaderMap,
    backend: &BackendState,
    body: OutgoingBody,
) -> Result<Request<OutgoingBody>, String> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(backend.authority.clone());
    uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    let uri = Uri::from_parts(uri).map_err(|e| format!("request target cannot be forwarded: {e}"))?;
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    *request.version_mut() = match backend.spec.protocol {
        BackendProtocol::Http1 => Version::HTTP_11,
        BackendProtocol::Http2 => Version::HTTP_2,
    };
    if backend.spec.protocol == BackendProtocol::Http2 {
        // HTTP/2 carries the authority in the URI; a Host header would be a duplicate.
        request.headers_mut().remove(header::HOST);
    }
    Ok(request)
}

fn describe_backend(backend: &BackendState) -> String {
    format!("{} ({})", backend.spec.name, backend.spec.address)
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE)
}

fn wit_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::HEAD => HttpMethod::Head,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::OPTIONS => HttpMethod::Options,
        Method::PATCH => HttpMethod::Patch,
        Method::TRACE => HttpMethod::Trace,
        Method::CONNECT => HttpMethod::Connect,
        _ => HttpMethod::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: AttemptError) -> Last {
        Last { error: Some(("api-1 (127.0.0.1:9001)".into(), error)), ..Last::default() }
    }

    #[test]
    fn the_answer_after_the_last_attempt_says_what_failed_and_where() {
        let answer = |last: Last| last.into_answer().map(|_| ()).unwrap_err();
        let refused = answer(Last { refusal: Some(Refusal::AtCapacity), ..Last::default() });
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.reason.contains("concurrency cap"), "{}", refused.reason);
        let connect = answer(failed(AttemptError::Connect("connection refused".into())));
        assert_eq!(connect.status, StatusCode::BAD_GATEWAY);
        assert_eq!(connect.reason, "could not connect to backend api-1 (127.0.0.1:9001): connection refused");
        let timeout = answer(failed(AttemptError::Timeout(Duration::from_secs(2))));
        assert_eq!(timeout.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(timeout.reason.ends_with("within 2s"), "{}", timeout.reason);
        assert!(!timeout.close, "a backend's failure keeps the client's connection");
    }
}
