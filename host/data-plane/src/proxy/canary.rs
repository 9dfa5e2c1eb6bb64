//! Canary routing: a share of requests (optionally only those carrying a
//! header value) goes to a second upstream group with its own picker and
//! health; the rest to the main group.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderMap;

use crate::upstream::Upstream;

/// Which requests go to the canary group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySplit {
    /// Share of (matching) requests sent to the canary group, 0 to 100.
    pub percent: f64,
    /// Only requests with this header value are considered; `None`: all.
    #[serde(default)]
    pub header: Option<HeaderMatch>,
}

/// A header and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value.
    pub value: String,
}

impl CanarySplit {
    /// Problems with this split, each naming its field under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !(0.0..=100.0).contains(&self.percent) {
            problems.push((format!("{prefix}percent"), format!("must be from 0 to 100, not {}", self.percent)));
        }
        if let Some(header) = &self.header
            && http::HeaderName::from_bytes(header.name.as_bytes()).is_err()
        {
            problems.push((format!("{prefix}header.name"), format!("{:?} is not a header name", header.name)));
        }
        problems
    }
}

/// The canary group and the live split.
#[derive(Debug)]
pub struct Canary {
    /// The canary backends, picker and health.
    pub upstream: Arc<Upstream>,
    split: ArcSwap<CanarySplit>,
}

impl Canary {
    /// A canary group receiving `split` of the traffic.
    pub fn new(upstream: Arc<Upstream>, split: CanarySplit) -> Self {
        Canary { upstream, split: ArcSwap::from_pointee(split) }
    }

    /// The split now.
    pub fn split(&self) -> CanarySplit {
        CanarySplit::clone(&self.split.load())
    }

    /// Changes the split for requests from now on (validate it first).
    pub fn set_split(&self, split: CanarySplit) {
        self.split.store(Arc::new(split));
    }

    /// Whether the request with `headers` goes to the canary, drawn with
    /// veer's own `random` value. Decided once per request, so its retries
    /// stay in its group. Not from the request id: a client may send its own
    /// `X-Request-Id`, and must not choose its group by it (only the
    /// configured header match, which an operator chooses to expose, selects).
    pub fn takes(&self, headers: &HeaderMap, random: u64) -> bool {
        let split = self.split.load();
        if split.percent <= 0.0 {
            return false;
        }
        if let Some(header) = &split.header
            && headers.get(header.name.as_str()).is_none_or(|v| v.as_bytes() != header.value.as_bytes())
        {
            return false;
        }
        let bucket = random % 10_000;
        (bucket as f64) < split.percent * 100.0
    }
}
