//! Routes as an operator writes them (the config file's `routes`), checked
//! and compiled into a [`RouteTable`](super::RouteTable).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;

/// One route: what requests it takes (`match`) and what it does with them
/// (exactly one of `forward`, `split`, `redirect`, `respond`). Routes are
/// tried in order; the first whose every condition holds takes the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique within the listener; names the route in metrics, logs and to
    /// the picker.
    pub name: String,
    /// Conditions, all of which must hold; none: every request.
    #[serde(default, rename = "match")]
    pub matches: MatchSpec,
    /// Forward to this upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
    /// Forward to one of these upstreams, chosen per request by veer's own
    /// random draw in proportion to the weights (a client cannot choose).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitTargetSpec>,
    /// Answer with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectSpec>,
    /// Answer directly with this status and body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<RespondSpec>,
    /// Also send a sampled share of the forwarded requests to another
    /// upstream, fire-and-forget (its answers are discarded and counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
    /// Header changes on the request sent to the backend.
    #[serde(default, skip_serializing_if = "HeaderEditsSpec::is_empty")]
    pub request_headers: HeaderEditsSpec,
    /// Header changes on the response sent to the client.
    #[serde(default, skip_serializing_if = "HeaderEditsSpec::is_empty")]
    pub response_headers: HeaderEditsSpec,
    /// Replaces the matched path prefix (or the whole path of an `exact`
    /// match) before forwarding, e.g. `/` to strip `/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_prefix: Option<String>,
    /// Overrides the upstream's total timeout for this route's requests.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Overrides `proxy.retry` for this route's requests, key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOverride>,
}

/// A route's changes to the retry policy: each key left out keeps
/// `proxy.retry`'s value. The retry budget is the proxy's, shared by every
/// route, so it has no key here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryOverride {
    /// Attempts per request in total, first one included (1: no retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Response statuses that are retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on_status: Option<Vec<u16>>,
    /// Also retry non-idempotent methods (POST, PATCH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_non_idempotent: Option<bool>,
    /// Bodies up to this size (bytes) are kept in memory for a retry (and a
    /// mirror); larger ones are streamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_buffer_bytes: Option<usize>,
    /// Wait before the first retry.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub backoff_base: Option<Duration>,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<Duration>,
}

impl RetryOverride {
    /// `base` with these changes.
    pub fn apply(&self, base: &RetryPolicy) -> RetryPolicy {
        let mut policy = base.clone();
        if let Some(value) = self.max_attempts {
            policy.max_attempts = value;
        }
        if let Some(value) = &self.retry_on_status {
            policy.retry_on_status = value.clone();
        }
        if let Some(value) = self.retry_non_idempotent {
            policy.retry_non_idempotent = value;
        }
        if let Some(value) = self.replay_buffer_bytes {
            policy.replay_buffer_bytes = value;
        }
        if let Some(value) = self.backoff_base {
            policy.backoff_base = value;
        }
        if let Some(value) = self.backoff_max {
            policy.backoff_max = value;
        }
        // A route's base alone may not undercut the proxy's cap, or the reverse.
        policy.backoff_max = policy.backoff_max.max(policy.backoff_base);
        policy
    }

    /// What is wrong with it on its own: `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if self.max_attempts == Some(0) {
            problems.push(("max_attempts", "must be at least 1 (1 turns retries off)"));
        }
        if let (Some(base), Some(max)) = (self.backoff_base, self.backoff_max)
            && max < base
        {
            problems.push(("backoff_max", "must be at least backoff_base"));
        }
        problems
    }
}

impl RouteSpec {
    /// A route named `name` that takes every request and has no action yet
    /// (set one of `forward`, `split`, `redirect`, `respond`).
    pub fn new(name: impl Into<String>) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            matches: MatchSpec::default(),
            forward: None,
            split: Vec::new(),
            redirect: None,
            respond: None,
            mirror: None,
            request_headers: HeaderEditsSpec::default(),
            response_headers: HeaderEditsSpec::default(),
            rewrite_prefix: None,
            timeout: None,
            retry: None,
        }
    }
}

/// A route's conditions. Every list condition is an AND of its items, except
/// `hosts` and `methods`, which take any one of theirs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSpec {
    /// Host names (`api.example.com`) or suffix wildcards (`*.example.com`,
    /// which matches any name ending in `.example.com`); case-insensitive,
    /// port ignored. Empty: any host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The path (without the query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSpec>,
    /// Methods (`GET`, `POST`, ...); empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Request headers that must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    /// Query parameters that must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatchSpec>,
}

/// How a path must look. Written as a map with one key: `{ prefix: /api/ }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PathMatchFields", into = "PathMatchFields")]
pub enum PathMatchSpec {
    /// Exactly this path.
    Exact(String),
    /// Any path that starts with this string (a plain prefix: `/api` also
    /// takes `/apiary`; write `/api/` to require the slash).
    Prefix(String),
    /// A regular expression (Rust `regex` syntax) the whole path must match.
    Regex(String),
}

/// [`PathMatchSpec`] as written: exactly one key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathMatchFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<PathMatchFields> for PathMatchSpec {
    type Error = String;

    fn try_from(fields: PathMatchFields) -> Result<Self, String> {
        match fields {
            PathMatchFields { exact: Some(path), prefix: None, regex: None } => Ok(PathMatchSpec::Exact(path)),
            PathMatchFields { exact: None, prefix: Some(path), regex: None } => Ok(PathMatchSpec::Prefix(path)),
            PathMatchFields { exact: None, prefix: None, regex: Some(path) } => Ok(PathMatchSpec::Regex(path)),
            _ => Err("needs exactly one of exact, prefix, regex".to_string()),
        }
    }
}

impl From<PathMatchSpec> for PathMatchFields {
    fn from(spec: PathMatchSpec) -> Self {
        match spec {
            PathMatchSpec::Exact(path) => PathMatchFields { exact: Some(path), ..Default::default() },
            PathMatchSpec::Prefix(path) => PathMatchFields { prefix: Some(path), ..Default::default() },
            PathMatchSpec::Regex(path) => PathMatchFields { regex: Some(path), ..Default::default() },
        }
    }
}

/// A header or query parameter condition: exactly one of `present`,
/// `equals`, `regex`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// The header (case-insensitive) or parameter (exact) name.
    pub name: String,
    /// `true`: it must be there (any value); `false`: it must not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Its value must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// Its whole value must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// One upstream of a split and its share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTargetSpec {
    /// The upstream's name.
    pub upstream: String,
    /// Its relative share, 0 to 10000 (0: none, e.g. a canary held back).
    pub weight: u32,
}

/// A redirect: the request's own URL with the given parts replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSpec {
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
    /// `http` or `https`; unset: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name; unset: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port; unset: the request's (none for the scheme's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The whole new path; unset: the request's (after `prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replaces the route's matched path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Drop the query string.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_query: bool,
}

fn default_redirect_status() -> u16 {
    302
}

/// veer's own answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondSpec {
    /// 200 to 599.
    pub status: u16,
    /// The body, sent as is.
    #[serde(default)]
    pub body: String,
    /// Its `Content-Type`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".to_string()
}

/// Shadow traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    /// The upstream that receives the copies.
    pub upstream: String,
    /// Share of the route's forwarded requests copied, 0 to 100.
    pub percent: f64,
}

/// Header changes, applied in this order: remove, set (replacing any
/// value), add (appending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderEditsSpec {
    /// Headers to remove.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Headers to set, replacing any values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers to append.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
}

impl HeaderEditsSpec {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}
