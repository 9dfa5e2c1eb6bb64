//! The client's request body on its way to a backend: size limit, stall
//! timeout, the replay buffer that makes a retry possible, and the record of
//! whose fault it is when the body breaks.
//!
//! When an attempt fails, the attempt loop asks the [`BodyProgress`] it shares
//! with the body: a client fault recorded there means the backend did nothing
//! wrong, whatever error the backend connection reported.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::fault::{ClientFault, classify_body_error};

/// What the body and the attempt loop share.
#[derive(Debug, Default)]
pub struct BodyProgress {
    fault: OnceLock<ClientFault>,
    finished: OnceLock<Instant>,
}

impl BodyProgress {
    /// The client's fault, if the body broke because of it.
    pub fn fault(&self) -> Option<ClientFault> {
        self.fault.get().copied()
    }

    /// When the whole body had been handed to the backend connection.
    pub fn finished_at(&self) -> Option<Instant> {
        self.finished.get().copied()
    }

    fn finish(&self) {
        let _ = self.finished.set(Instant::now());
    }

    fn fail(&self, fault: ClientFault) -> ClientBodyError {
        let _ = self.fault.set(fault);
        ClientBodyError(self.fault().unwrap_or(fault))
    }
}

/// The error a [`ClientBody`] ends with; the backend connection reports it
/// as its own failure, so the attempt loop looks at [`BodyProgress`] instead.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("client request body: {}", .0.reason())]
pub struct ClientBodyError(pub ClientFault);

/// Limits on reading a client's body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: Option<u64>,
    /// Longest wait for the next piece of the body.
    pub idle_timeout: Duration,
}

/// A request body streamed from the client (after whatever part of it the
/// replay buffer read first).
#[derive(Debug)]
pub struct ClientBody {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    received: u64,
    limits: BodyLimits,
    stall: Option<Pin<Box<Sleep>>>,
    stall_armed: bool,
    progress: Arc<BodyProgress>,
}

impl ClientBody {
    /// Streams `prefix` (already read and counted: `received` bytes), then `rest`.
    fn new(
        prefix: VecDeque<Frame<Bytes>>,
        rest: Option<Incoming>,
        received: u64,
        limits: BodyLimits,
        progress: Arc<BodyProgress>,
    ) -> ClientBody {
        ClientBody { prefix, rest, received, limits, stall: None, stall_armed: false, progress }
    }

    fn finish(&mut self) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.rest = None;
        self.progress.finish();
        Poll::Ready(None)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.prefix.pop_front() {
            if this.is_end_stream() {
                this.progress.finish();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = this.rest.as_mut() else { return this.finish() };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall_armed = false;
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.limits.max_bytes.is_some_and(|max| this.received > max) {
                        this.rest = None;
                        return Poll::Ready(Some(Err(this.progress.fail(ClientFault::BodyTooLarge))));
                    }
                }
                // hyper stops polling once the body says it has ended.
                if this.is_end_stream() {
                    this.progress.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.rest = None;
                Poll::Ready(Some(Err(this.progress.fail(classify_body_error(&error)))))
            }
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.limits.idle_timeout;
                let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.stall_armed {
                    stall.as_mut().reset(deadline);
                    this.stall_armed = true;
                }
                if stall.as_mut().poll(cx).is_ready() {
                    this.rest = None;
                    return Poll::Ready(Some(Err(this.progress.fail(ClientFault::BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
        let Some(rest) = &self.rest else { return SizeHint::with_exact(buffered) };
        let rest = rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

/// A request body ready to be sent.
#[derive(Debug)]
pub enum Payload {
    /// The whole body, in memory: every attempt can send it again.
    Replayable(Bytes),
    /// A body streamed from the client: one attempt only.
    Streaming(ClientBody),
}

/// Takes the client's body for forwarding. A body of at most `buffer_bytes`
/// (when `buffer` is wanted) is read into memory first: a body the client
/// breaks never reaches a backend, and a retry can send it again. A larger
/// one is streamed, led by what was read. `Err` when the client broke the
/// body while it was being read; `deadline` bounds the whole read.
pub async fn take(
    body: Incoming,
    buffer: bool,
    buffer_bytes: usize,
    limits: BodyLimits,
    deadline: Instant,
    progress: &Arc<BodyProgress>,
) -> Result<Payload, ClientFault> {
    if body.is_end_stream() {
        progress.finish();
        return Ok(Payload::Replayable(Bytes::new()));
    }
    let exact = body.size_hint().exact();
    if let (Some(max), Some(length)) = (limits.max_bytes, exact)
        && length > max
    {
        return Err(progress.fail(ClientFault::BodyTooLarge).0);
    }
    let fits = exact.is_none_or(|length| length <= buffer_bytes as u64);
    if !buffer || buffer_bytes == 0 || !fits {
        return Ok(Payload::Streaming(ClientBody::new(VecDeque::new(), Some(body), 0, limits, progress.clone())));
    }
    let mut body = body;
    let mut read = BytesMut::new();
    let mut frames = VecDeque::new();
    let mut received = 0u64;
    loop {
        let wait = limits.idle_timeout.min(deadline.saturating_duration_since(Instant::now()));
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(progress.fail(ClientFault::BodyTimeout).0),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(progress.fail(classify_body_error(&error)).0),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                received += data.len() as u64;
                if limits.max_bytes.is_some_and(|max| received > max) {
                    return Err(progress.fail(ClientFault::BodyTooLarge).0);
                }
                read.extend_from_slice(&data);
                frames.push_back(Frame::data(data));
                if read.len() > buffer_bytes {
                    // Too large to keep: stream it, led by what was read.
                    return Ok(Payload::Streaming(ClientBody::new(
                        frames,
                        Some(body),
                        received,
                        limits,
                        progress.clone(),
                    )));
                }
            }
            Err(trailers) => {
                // Trailers end the body; a body with trailers is sent as read, once.
                frames.push_back(trailers);
                return Ok(Payload::Streaming(ClientBody::new(frames, None, received, limits, progress.clone())));
            }
        }
        if body.is_end_stream() {
            break;
        }
    }
    progress.finish();
    Ok(Payload::Replayable(read.freeze()))
}
