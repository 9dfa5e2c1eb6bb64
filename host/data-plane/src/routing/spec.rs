//! Routes as an operator writes them (the config file's `routes`), checked
//! and compiled into a [`RouteTable`](super::RouteTable).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proxy::RetryPolicy;

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
    /// Overrides the upstream's retry policy for this route's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
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

/// How a path must look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum PathMatchSpec {
    /// Exactly this path.
    Exact(String),
    /// Any path that starts with this string (a plain prefix: `/api` also
    /// takes `/apiary`; write `/api/` to require the slash).
    Prefix(String),
    /// A regular expression (Rust `regex` syntax) the whole path must match.
    Regex(String),
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
