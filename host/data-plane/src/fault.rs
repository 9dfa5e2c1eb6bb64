//! Whose fault is a failed request: the client's or the backend's.
//!
//! Only a [`Fault::Backend`] may feed what veer believes about a backend
//! (breaker, outlier ejection, latency averages, AIMD, the plugin's outcomes).
//! A [`Fault::Client`] is answered truthfully (400, 408, 413, 499) and counted,
//! and the backend attempt it interrupted is forgotten as if never made.

use http::StatusCode;

/// What the client did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The request body broke the protocol (bad chunk size, stream error).
    MalformedBody,
    /// The client went away before its request was complete.
    Gone,
    /// The request body stalled longer than `client_body_timeout`, or was
    /// still arriving when the request's total time ran out.
    BodyTimeout,
    /// The request body is larger than `limits.max_body_bytes`.
    BodyTooLarge,
}

/// What the backend did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendFault {
    /// No connection could be made.
    Connect,
    /// The connection broke or the response was invalid.
    Reset,
    /// No response headers in time.
    Timeout,
}

/// Which side a failed attempt is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client's.
    Client(ClientFault),
    /// The backend's.
    Backend(BackendFault),
}

/// Status recorded for a request whose client left before the answer
/// (nginx's "client closed request").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl ClientFault {
    /// The status the client is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ClientFault::MalformedBody => StatusCode::BAD_REQUEST,
            ClientFault::Gone => StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST),
            ClientFault::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ClientFault::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The reason given in veer's answer.
    pub fn reason(self) -> &'static str {
        match self {
            ClientFault::MalformedBody => "the request body is malformed",
            ClientFault::Gone => "the client closed the connection before the request was complete",
            ClientFault::BodyTimeout => "the request body did not arrive in time",
            ClientFault::BodyTooLarge => "the request body is larger than allowed",
        }
    }
}

impl Fault {
    /// Every fault, in label order (see [`Fault::index`]).
    pub const ALL: [Fault; 7] = [
        Fault::Client(ClientFault::MalformedBody),
        Fault::Client(ClientFault::Gone),
        Fault::Client(ClientFault::BodyTimeout),
        Fault::Client(ClientFault::BodyTooLarge),
        Fault::Backend(BackendFault::Connect),
        Fault::Backend(BackendFault::Reset),
        Fault::Backend(BackendFault::Timeout),
    ];

    /// Position in [`Fault::ALL`], for pre-resolved metric labels.
    pub fn index(self) -> usize {
        match self {
            Fault::Client(ClientFault::MalformedBody) => 0,
            Fault::Client(ClientFault::Gone) => 1,
            Fault::Client(ClientFault::BodyTimeout) => 2,
            Fault::Client(ClientFault::BodyTooLarge) => 3,
            Fault::Backend(BackendFault::Connect) => 4,
            Fault::Backend(BackendFault::Reset) => 5,
            Fault::Backend(BackendFault::Timeout) => 6,
        }
    }

    /// `client` or `backend`.
    pub fn side(self) -> &'static str {
        match self {
            Fault::Client(_) => "client",
            Fault::Backend(_) => "backend",
        }
    }

    /// A short label: `malformed_body`, `gone`, `body_timeout`,
    /// `body_too_large`, `connect`, `reset`, `timeout`.
    pub fn reason(self) -> &'static str {
        match self {
            Fault::Client(ClientFault::MalformedBody) => "malformed_body",
            Fault::Client(ClientFault::Gone) => "gone",
            Fault::Client(ClientFault::BodyTimeout) => "body_timeout",
            Fault::Client(ClientFault::BodyTooLarge) => "body_too_large",
            Fault::Backend(BackendFault::Connect) => "connect",
            Fault::Backend(BackendFault::Reset) => "reset",
            Fault::Backend(BackendFault::Timeout) => "timeout",
        }
    }

    /// `side:reason`, as the access log writes it.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Client(ClientFault::MalformedBody) => "client:malformed_body",
            Fault::Client(ClientFault::Gone) => "client:gone",
            Fault::Client(ClientFault::BodyTimeout) => "client:body_timeout",
            Fault::Client(ClientFault::BodyTooLarge) => "client:body_too_large",
            Fault::Backend(BackendFault::Connect) => "backend:connect",
            Fault::Backend(BackendFault::Reset) => "backend:reset",
            Fault::Backend(BackendFault::Timeout) => "backend:timeout",
        }
    }
}

/// Classifies an error read from a client's request body (hyper's, from the
/// HTTP/1 decoder or an HTTP/2 stream): the client left, or it sent bytes
/// that break the protocol.
pub fn classify_body_error(error: &(dyn std::error::Error + 'static)) -> ClientFault {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected => ClientFault::Gone,
                TimedOut => ClientFault::BodyTimeout,
                _ => ClientFault::MalformedBody,
            };
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            // A client that cancels its stream (or whose connection broke) left;
            // anything else it did is a protocol error.
            return match h2.reason() {
                Some(h2::Reason::CANCEL | h2::Reason::NO_ERROR) => ClientFault::Gone,
                _ if h2.is_io() || h2.is_go_away() => ClientFault::Gone,
                _ => ClientFault::MalformedBody,
            };
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed())
        {
            return ClientFault::Gone;
        }
        cause = error.source();
    }
    ClientFault::MalformedBody
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_index_order() {
        for (index, fault) in Fault::ALL.iter().enumerate() {
            assert_eq!(fault.index(), index);
            assert_eq!(fault.label(), format!("{}:{}", fault.side(), fault.reason()));
        }
    }

    #[test]
    fn an_early_end_of_file_means_the_client_left() {
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "end of file before message length reached");
        assert_eq!(classify_body_error(&eof), ClientFault::Gone);
        let bad = std::io::Error::new(std::io::ErrorKind::InvalidInput, "Invalid chunk size line");
        assert_eq!(classify_body_error(&bad), ClientFault::MalformedBody);
    }

    #[test]
    fn a_cancelled_h2_stream_means_the_client_left() {
        assert_eq!(classify_body_error(&h2::Error::from(h2::Reason::CANCEL)), ClientFault::Gone);
        assert_eq!(classify_body_error(&h2::Error::from(h2::Reason::PROTOCOL_ERROR)), ClientFault::MalformedBody);
    }

    #[test]
    fn client_faults_get_truthful_statuses() {
        assert_eq!(ClientFault::MalformedBody.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ClientFault::Gone.status().as_u16(), 499);
        assert_eq!(ClientFault::BodyTimeout.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(ClientFault::BodyTooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
