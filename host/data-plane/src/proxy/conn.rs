//! Time limits on a client connection, kept by wrapping its socket.
//!
//! Three different waits, each with its own limit (nginx has the same three):
//! - *headers*: from a connection's first byte (or its opening) until a
//!   request's head is complete (`client_header_timeout`, against slowloris);
//! - *idle*: between requests, with none in flight (`client_idle_timeout`);
//! - *send*: a write that makes no progress, because the client stopped
//!   reading (`client_send_timeout`).
//!
//! hyper's own `header_read_timeout` also runs between keep-alive requests,
//! so it cannot tell a slow head from an idle connection; this wrapper can,
//! because the service tells it when requests begin and end ([`Activity`]).
//! Over a limit the socket reports `TimedOut` and hyper closes the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The three limits of [`TimedIo`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// Until a request head is complete.
    pub header: Duration,
    /// Between requests.
    pub idle: Duration,
    /// For a write to make progress.
    pub send: Duration,
}

/// Requests of one connection, as its service sees them.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
}

impl Activity {
    /// A request's head arrived; it is in flight until the guard drops (at
    /// the end of its response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// No request in flight, no byte of the next one yet.
    Idle,
    /// A request is in flight: no read limit (the body has its own).
    Busy,
}

/// A client socket with the limits of [`ConnectionTimeouts`].
#[derive(Debug)]
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    timeouts: ConnectionTimeouts,
    phase: Phase,
    seen_started: u64,
    read_deadline: Pin<Box<Sleep>>,
    /// The deadline of the phase entered last, moved into `read_deadline`
    /// only when a read has to wait: most requests arrive before their
    /// connection waits at all, and re-arming a timer costs more than
    /// checking one.
    read_by: Option<Instant>,
    write_deadline: Pin<Box<Sleep>>,
    write_armed: bool,
}

impl<T> TimedIo<T> {
    /// Wraps `inner`; the header limit runs from now.
    pub fn new(inner: T, activity: Arc<Activity>, timeouts: ConnectionTimeouts) -> TimedIo<T> {
        let now = Instant::now();
        TimedIo {
            inner,
            activity,
            timeouts,
            phase: Phase::Head,
            seen_started: 0,
            read_deadline: Box::pin(tokio::time::sleep_until(now + timeouts.header)),
            read_by: None,
            write_deadline: Box::pin(tokio::time::sleep_until(now + timeouts.send)),
            write_armed: false,
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let limit = match phase {
            Phase::Head => self.timeouts.header,
            Phase::Idle => self.timeouts.idle,
            Phase::Busy => return,
        };
        self.read_by = Some(Instant::now() + limit);
    }

    /// Brings the phase up to date with the service's requests.
    fn observe_requests(&mut self) {
        let started = self.activity.started.load(Ordering::Acquire);
        if self.activity.in_flight.load(Ordering::Acquire) > 0 {
            self.phase = Phase::Busy;
        } else if self.phase == Phase::Busy || started != self.seen_started {
            self.enter(Phase::Idle);
        }
        self.seen_started = started;
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("client connection {what}"))
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.observe_requests();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase == Phase::Idle {
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.phase == Phase::Busy {
                    return Poll::Pending;
                }
                if let Some(by) = this.read_by.take()
                    && this.read_deadline.deadline() != by
                {
                    this.read_deadline.as_mut().reset(by);
                }
                if this.read_deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out(match this.phase {
                        Phase::Head => "sent no complete request head in time",
                        _ => "was idle too long",
                    })));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    fn write_progress<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match polled {
            Poll::Pending => {
                if !self.write_armed {
                    self.write_deadline.as_mut().reset(Instant::now() + self.timeouts.send);
                    self.write_armed = true;
                }
                if self.write_deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out("stopped reading its response")));
                }
                Poll::Pending
            }
            ready => {
                self.write_armed = false;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUTS: ConnectionTimeouts = ConnectionTimeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_gets_the_header_limit() {
        let (server, _client) = tokio::io::duplex(64);
        let mut io = TimedIo::new(server, Arc::default(), TIMEOUTS);
        let started = Instant::now();
        let error = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUTS.header);
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_limit_applies_then_the_header_limit_from_the_first_byte() {
        let (server, mut client) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = TimedIo::new(server, activity.clone(), TIMEOUTS);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut [0; 8]).await.unwrap(), 3);
        drop(activity.begin());
        // The request came and went: now idle, with the longer limit.
        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(59), io.read(&mut [0; 8])).await;
        assert!(read.is_err(), "still open within the idle limit");
        client.write_all(b"G").await.unwrap();
        assert_eq!(io.read(&mut [0; 8]).await.unwrap(), 1);
        let error = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(59) + TIMEOUTS.header);
    }

    #[tokio::test(start_paused = true)]
    async fn no_read_limit_while_a_request_is_in_flight() {
        let (server, _client) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = TimedIo::new(server, activity.clone(), TIMEOUTS);
        let _request = activity.begin();
        let read = tokio::time::timeout(Duration::from_secs(600), io.read(&mut [0; 8])).await;
        assert!(read.is_err(), "the read is still waiting: no limit applied");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_does_not_read_times_out() {
        let (server, _client) = tokio::io::duplex(16);
        let mut io = TimedIo::new(server, Arc::default(), TIMEOUTS);
        let started = Instant::now();
        let error = io.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUTS.send);
    }
}
