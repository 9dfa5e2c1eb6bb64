//! The records of `wit/picker.wit`'s `types` interface, as plain Rust.

/// Host-assigned identifier of a backend: stable while the backend is in the
/// pool and never reused by a running host for a different backend.
pub type BackendId = u32;

/// One backend as a policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The backend's identifier; every other call refers to it by this.
    pub id: BackendId,
    /// Operator-given name, unique in the pool (e.g. "api-1").
    pub name: String,
    /// Network address, `host:port`.
    pub address: String,
    /// Effective weight, 1..=1000000 (slow start and operator changes are
    /// already applied).
    pub weight: u32,
    /// Free-form labels from the config (zone, version, ...).
    pub labels: Vec<(String, String)>,
}

/// A change to the set of backends a policy may pick from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendEvent {
    /// A backend joined the pool. It starts eligible unless an `Eligibility`
    /// event for it follows in the same batch.
    Added(Backend),
    /// A backend's weight, labels or address changed.
    Updated(Backend),
    /// A backend left the pool for good.
    Removed(BackendId),
    /// A backend became ineligible (`false`) or eligible again (`true`); it
    /// stays in the pool.
    Eligibility((BackendId, bool)),
}

/// HTTP request method; the common ones as variants, so they cost no string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpMethod {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// PATCH
    Patch,
    /// TRACE
    Trace,
    /// CONNECT
    Connect,
    /// Any other method.
    Other,
}

/// What a policy is told with every pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PickContext {
    /// 0 for a request's first attempt, 1 for its first retry, and so on.
    pub attempt: u32,
    /// The backend the previous attempt used; never to be chosen again.
    pub exclude: Option<BackendId>,
    /// The request's method.
    pub method: HttpMethod,
}

/// Why an attempt failed without an HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The TCP connection could not be established.
    Connect,
    /// The connection was reset or closed before a full response.
    Reset,
    /// No response within the configured timeout.
    Timeout,
    /// The backend answered something that is not valid HTTP.
    Protocol,
    /// The attempt was not sent to this backend, or the client broke it off:
    /// nothing is learned about the backend.
    NotSent,
}

/// The result of one attempt on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// The backend the attempt went to.
    pub backend: BackendId,
    /// Whether the policy's own pick chose the backend (`false`: the host's
    /// fallback did).
    pub picked: bool,
    /// HTTP status of the response; 0 when there was none.
    pub status: u16,
    /// Time from sending the request to the response headers or the failure,
    /// in microseconds.
    pub latency_us: u64,
    /// Set when the attempt failed without a response.
    pub error: Option<ErrorKind>,
}

/// What an outcome says about a backend's latency, for a policy that
/// averages it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencySample {
    /// A response below 500, after this many microseconds.
    Success(f64),
    /// A 5xx or no response: this many microseconds, at least the penalty
    /// given, so a backend that fails fast never looks fast.
    Failure(f64),
}

impl LatencySample {
    /// The sample in microseconds, whichever it is.
    pub fn us(self) -> f64 {
        match self {
            LatencySample::Success(us) | LatencySample::Failure(us) => us,
        }
    }
}

impl Outcome {
    /// The latency sample this outcome is, failures counting as at least
    /// `failure_penalty_us`; `None` for an attempt that was never sent
    /// (`not-sent`), which says nothing about the backend.
    pub fn latency_sample(&self, failure_penalty_us: f64) -> Option<LatencySample> {
        let latency_us = self.latency_us as f64;
        match self.error {
            Some(ErrorKind::NotSent) => None,
            Some(_) => Some(LatencySample::Failure(latency_us.max(failure_penalty_us))),
            None if self.status >= 500 => Some(LatencySample::Failure(latency_us.max(failure_penalty_us))),
            None => Some(LatencySample::Success(latency_us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_a_latency_sample_unless_it_was_never_sent() {
        let outcome = |status, error| Outcome { backend: 1, picked: true, status, latency_us: 2_000, error };
        assert_eq!(outcome(200, None).latency_sample(50_000.0), Some(LatencySample::Success(2_000.0)));
        assert_eq!(outcome(503, None).latency_sample(50_000.0), Some(LatencySample::Failure(50_000.0)));
        assert_eq!(outcome(0, Some(ErrorKind::Reset)).latency_sample(1_000.0), Some(LatencySample::Failure(2_000.0)));
        assert_eq!(outcome(0, Some(ErrorKind::NotSent)).latency_sample(1_000.0), None);
    }
}
