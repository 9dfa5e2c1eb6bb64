//! Routes: which requests go where. A listener's routes, in order, each with
//! conditions (host, path, method, headers, query) and an action (forward to
//! an upstream, split among several, redirect, answer directly), compiled
//! into a [`RouteTable`] that finds a request's route at a cost independent of
//! the table's size where the conditions allow it:
//!
//! - host names by hash: an exact name is one lookup, a `*.suffix` wildcard
//!   one lookup per label of the request's host;
//! - paths by a radix tree: `exact` and `prefix` conditions cost
//!   one walk down the request's path;
//! - everything else (path regexes, methods, headers, query parameters) is
//!   checked only on the routes the two indexes leave.
//!
//! The first route in the file's order whose every condition holds wins: the
//! indexes only narrow the candidates, they never change the answer (a test
//! checks this against a plain scan over thousands of random tables).

pub mod canary;
mod radix;
mod routes;
pub mod spec;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use regex::Regex;

use radix::PathTree;
pub use routes::{CANARY_UPSTREAM, DEFAULT_LISTENER, DEFAULT_UPSTREAM, RequestPolicy, Routes, Target};
pub use spec::{
    HeaderEditsSpec, MatchSpec, MirrorSpec, PathMatchSpec, RedirectSpec, RespondSpec, RetryOverride, RouteSpec,
    SplitTargetSpec, ValueMatchSpec,
};

/// The most a split weight may be.
pub const MAX_SPLIT_WEIGHT: u32 = 10_000;

/// One thing wrong with a route, at the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteProblem {
    /// Dotted path under the route list, e.g. `[2].match.path.regex`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A listener's routes, compiled. `U` is what an upstream name resolves to
/// (the running group, for the proxy).
#[derive(Debug)]
pub struct RouteTable<U> {
    routes: Vec<Route<U>>,
    /// Routes with an exact host, by lower-case host name.
    exact_hosts: HostMap,
    /// Routes with a wildcard host, by suffix (`.example.com` for
    /// `*.example.com`).
    wildcard_hosts: HostMap,
    /// Routes for any host.
    any_host: Candidates,
}

/// Host names to their routes, hashed with FNV-1a: a host name is short, and
/// SipHash's protection against chosen collisions buys nothing here (the keys
/// come from the config; a client only looks up).
type HostMap = HashMap<Box<str>, Candidates, veer_core::hash::FnvBuild>;

/// The routes of one host key, narrowed further by path.
#[derive(Debug, Default)]
struct Candidates {
    paths: PathTree,
    /// Routes the tree cannot index (no path condition, or a regex), ascending.
    unindexed: Vec<u32>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route<U> {
    /// Its name, for metrics, logs and the picker.
    pub name: Arc<str>,
    /// What it does with a request.
    pub action: Action<U>,
    /// Shadow traffic, if any.
    pub mirror: Option<Mirror<U>>,
    /// Changes to the request sent to the backend.
    pub request_headers: HeaderEdits,
    /// Changes to the response sent to the client.
    pub response_headers: HeaderEdits,
    /// The total timeout for its requests, if it overrides the upstream's.
    pub timeout: Option<Duration>,
    /// Its changes to the retry policy of the upstream it forwards to.
    pub retry: Option<RetryOverride>,
    path: Option<PathMatch>,
    rewrite_prefix: Option<Box<str>>,
    methods: Vec<Method>,
    headers: Vec<ValueMatch<HeaderName>>,
    query: Vec<ValueMatch<Box<str>>>,
}

/// What a route does with the requests it takes.
#[derive(Debug)]
pub enum Action<U> {
    /// Forward to this upstream.
    Forward(U),
    /// Forward to one of several upstreams.
    Split(Split<U>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with veer's own response.
    Respond(DirectResponse),
}

/// Upstreams and their cumulative weights.
#[derive(Debug)]
pub struct Split<U> {
    /// `(upstream, cumulative weight)`, ascending; the last holds the total.
    targets: Vec<(U, u64)>,
}

impl<U> Split<U> {
    /// The upstream `random` (veer's own draw, uniform over `u64`) lands on.
    pub fn choose(&self, random: u64) -> &U {
        let total = self.targets.last().map_or(1, |(_, cumulative)| *cumulative).max(1);
        let point = ((u128::from(random) * u128::from(total)) >> 64) as u64;
        let at = self.targets.partition_point(|(_, cumulative)| *cumulative <= point);
        &self.targets[at.min(self.targets.len() - 1)].0
    }

    /// Each upstream with its weight, in the configured order.
    pub fn targets(&self) -> impl Iterator<Item = (&U, u64)> {
        let mut previous = 0;
        self.targets.iter().map(move |(upstream, cumulative)| {
            let weight = cumulative - previous;
            previous = *cumulative;
            (upstream, weight)
        })
    }
}

/// Shadow traffic: a share of a route's forwarded requests copied to another
/// upstream.
#[derive(Debug)]
pub struct Mirror<U> {
    /// The upstream that receives the copies.
    pub upstream: U,
    /// Share of requests copied, in hundredths of a percent (0..=10000).
    basis_points: u64,
}

impl<U> Mirror<U> {
    /// Whether the request drawn `random` (veer's, uniform) is copied.
    pub fn samples(&self, random: u64) -> bool {
        ((u128::from(random) * 10_000) >> 64) < u128::from(self.basis_points)
    }
}

/// A redirect, resolved against the request's URL.
#[derive(Debug)]
pub struct Redirect {
    /// The status.
    pub status: StatusCode,
    scheme: Option<Scheme>,
    host: Option<Box<str>>,
    port: Option<u16>,
    path: Option<Box<str>>,
    prefix: Option<Box<str>>,
    strip_query: bool,
}

/// veer's own answer.
#[derive(Debug)]
pub struct DirectResponse {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// Its content type.
    pub content_type: HeaderValue,
}

/// Header changes: remove, then set, then add.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[derive(Debug)]
enum PathMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
struct ValueMatch<N> {
    name: N,
    test: ValueTest,
}

#[derive(Debug)]
enum ValueTest {
    Present(bool),
    Equals(Box<str>),
    Regex(Regex),
}

impl ValueTest {
    fn holds(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueTest::Present(wanted), value) => value.is_some() == *wanted,
            (_, None) => false,
            (ValueTest::Equals(expected), Some(value)) => expected.as_bytes() == value,
            (ValueTest::Regex(regex), Some(value)) => std::str::from_utf8(value).is_ok_and(|v| regex.is_match(v)),
        }
    }
}

/// What the table looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// The parts of an `http` request.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        RequestHead { method: request.method(), uri: request.uri(), headers: request.headers() }
    }

    /// The host the request is for: the URI's authority (HTTP/2, absolute
    /// form) or the `Host` header, without the port or a trailing dot; `None`
    /// when there is none or it is not a host name or IP literal (a client
    /// may send anything there, and a redirect must not echo it).
    pub fn host(&self) -> Option<&'a str> {
        let host = match self.uri.authority() {
            // Parsed by `http`: no userinfo, no port.
            Some(authority) => authority.host(),
            // `Host` is a host and a port, nothing more (RFC 9110 §7.2).
            None => {
                let value = self.headers.get(header::HOST)?.to_str().ok()?;
                match value.find(']') {
                    Some(end) if value.starts_with('[') => &value[..=end],
                    _ => value.split(':').next().unwrap_or(value),
                }
            }
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let name = |b: u8| b.is_ascii_alphanumeric() || b"-._".contains(&b);
        let literal = |b: u8| b.is_ascii_hexdigit() || b":.".contains(&b);
        let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(ip) => !ip.is_empty() && ip.bytes().all(literal),
            None => !host.is_empty() && host.len() <= 253 && host.bytes().all(name),
        };
        valid.then_some(host)
    }
}

/// `rest` (what follows a matched prefix) under `replacement`, without
/// doubling the slash between them (`/` over `/users` is `/users`).
fn replace_prefix(replacement: &str, rest: &str) -> String {
    let mut path = String::with_capacity(replacement.len() + rest.len() + 1);
    path.push_str(replacement);
    if path.ends_with('/') && rest.starts_with('/') {
        path.pop();
    }
    path.push_str(rest);
    path
}

/// Lower-cases `host` only when it has upper-case letters (rare: clients send
/// what the user typed, usually lower-case already).
fn lower(host: &str) -> std::borrow::Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

impl<U> RouteTable<U> {
    /// Compiles `specs`, resolving each upstream name with `upstream`. Every
    /// problem is reported, each at its key.
    pub fn compile(specs: &[RouteSpec], upstream: impl Fn(&str) -> Option<U>) -> Result<Self, Vec<RouteProblem>> {
        let mut problems = Vec::new();
        let mut routes = Vec::with_capacity(specs.len());
        let mut names = HashMap::new();
        for (at, spec) in specs.iter().enumerate() {
            let mut problem = |key: &str, message: String| {
                problems.push(RouteProblem { path: format!("[{at}]{key}"), message });
            };
            if spec.name.is_empty() {
                problem(".name", "must not be empty".into());
            } else if let Some(first) = names.insert(spec.name.as_str(), at) {
                problem(".name", format!("{:?} is already the name of route [{first}]", spec.name));
            }
            if let Some(route) = compile_route(spec, &upstream, &mut problem) {
                routes.push(route);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut table = RouteTable {
            routes,
            exact_hosts: HostMap::default(),
            wildcard_hosts: HostMap::default(),
            any_host: Candidates::default(),
        };
        for (at, spec) in specs.iter().enumerate() {
            let at = at as u32;
            let path = &table.routes[at as usize].path;
            let index = |candidates: &mut Candidates| match path {
                Some(PathMatch::Exact(p)) => candidates.paths.insert(p.as_bytes(), at, true),
                Some(PathMatch::Prefix(p)) => candidates.paths.insert(p.as_bytes(), at, false),
                Some(PathMatch::Regex(_)) | None => candidates.unindexed.push(at),
            };
            if spec.matches.hosts.is_empty() {
                index(&mut table.any_host);
            }
            let mut seen = Vec::new();
            for host in &spec.matches.hosts {
                let host = host.to_ascii_lowercase();
                if seen.contains(&host) {
                    continue;
                }
                match host.strip_prefix('*') {
                    Some(suffix) => index(table.wildcard_hosts.entry(suffix.into()).or_default()),
                    None => index(table.exact_hosts.entry(host.as_str().into()).or_default()),
                }
                seen.push(host);
            }
        }
        Ok(table)
    }

    /// Calls `visit` with each upstream a route forwards to (its `forward`,
    /// or each of its `split`; not its mirror) and that route's timeout and
    /// retry changes, to resolve what depends on both.
    pub fn for_each_target(&mut self, mut visit: impl FnMut(&mut U, Option<Duration>, Option<&RetryOverride>)) {
        for route in &mut self.routes {
            let (timeout, retry) = (route.timeout, route.retry.as_ref());
            match &mut route.action {
                Action::Forward(target) => visit(target, timeout, retry),
                Action::Split(split) => split.targets.iter_mut().for_each(|(target, _)| visit(target, timeout, retry)),
                Action::Redirect(_) | Action::Respond(_) => {}
            }
        }
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route<U>] {
        &self.routes
    }

    /// The first route whose every condition `request` meets.
    pub fn find(&self, request: &RequestHead<'_>) -> Option<&Route<U>> {
        let path = request.uri.path().as_bytes();
        let mut best = u32::MAX;
        // Only a table with host conditions reads the host (validated byte by byte).
        if (!self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty())
            && let Some(host) = request.host()
        {
            let host = lower(host);
            if let Some(candidates) = self.exact_hosts.get(host.as_ref()) {
                self.narrow(candidates, path, request, &mut best);
            }
            if !self.wildcard_hosts.is_empty() {
                // Every suffix that starts at a dot, with a label before it.
                for (at, _) in host.match_indices('.').filter(|(at, _)| *at > 0) {
                    if let Some(candidates) = self.wildcard_hosts.get(&host[at..]) {
                        self.narrow(candidates, path, request, &mut best);
                    }
                }
            }
        }
        self.narrow(&self.any_host, path, request, &mut best);
        self.routes.get(best as usize)
    }

    /// Lowers `best` to the first of `candidates` that `request` matches.
    fn narrow(&self, candidates: &Candidates, path: &[u8], request: &RequestHead<'_>, best: &mut u32) {
        candidates.paths.matches(path, |routes| self.first_match(routes, request, false, best));
        self.first_match(&candidates.unindexed, request, true, best);
    }

    /// Lowers `best` to the first route of `routes` (ascending) that `request`
    /// matches, looking only at routes before `best`.
    fn first_match(&self, routes: &[u32], request: &RequestHead<'_>, check_path: bool, best: &mut u32) {
        for &at in routes.iter().take_while(|at| **at < *best) {
            if self.routes[at as usize].holds(request, check_path) {
                *best = at;
                return;
            }
        }
    }
}

impl<U> Route<U> {
    /// Whether `request` meets the conditions the indexes did not check
    /// (and the path too, with `check_path`).
    fn holds(&self, request: &RequestHead<'_>, check_path: bool) -> bool {
        if check_path && let Some(path) = &self.path {
            let actual = request.uri.path();
            let ok = match path {
                PathMatch::Exact(p) => actual == p.as_ref(),
                PathMatch::Prefix(p) => actual.starts_with(p.as_ref()),
                PathMatch::Regex(regex) => regex.is_match(actual),
            };
            if !ok {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(request.method) {
            return false;
        }
        for condition in &self.headers {
            let value = request.headers.get(&condition.name).map(HeaderValue::as_bytes);
            if !condition.test.holds(value) {
                return false;
            }
        }
        if !self.query.is_empty() {
            let query = request.uri.query().unwrap_or("");
            for condition in &self.query {
                let value = query_value(query, &condition.name);
                if !condition.test.holds(value.as_deref().map(str::as_bytes)) {
                    return false;
                }
            }
        }
        true
    }

    /// The path and query to forward: the route's prefix rewrite applied to
    /// `original`, or `None` when the route does not rewrite.
    pub fn rewrite(&self, original: &PathAndQuery) -> Option<PathAndQuery> {
        let replacement = self.rewrite_prefix.as_deref()?;
        let rest = match &self.path {
            Some(PathMatch::Prefix(prefix)) => original.path().strip_prefix(prefix.as_ref())?,
            Some(PathMatch::Exact(_)) => "",
            _ => return None,
        };
        let mut path = replace_prefix(replacement, rest);
        if path.is_empty() {
            path.push('/');
        }
        if let Some(query) = original.query() {
            path.push('?');
            path.push_str(query);
        }
        PathAndQuery::try_from(path).ok()
    }

    /// The matched path prefix, if the route matches by prefix.
    fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatch::Prefix(prefix)) => Some(prefix),
            _ => None,
        }
    }
}

impl Redirect {
    /// The `Location` for `request`, reached on a listener speaking `scheme`,
    /// redirected by `route`; `None` when the redirect keeps the request's
    /// host and the request has no valid one.
    pub fn location<U>(&self, request: &RequestHead<'_>, scheme: &Scheme, route: &Route<U>) -> Option<String> {
        let scheme = self.scheme.as_ref().unwrap_or(scheme);
        let host = self.host.as_deref().or(request.host())?;
        let port = self.port.or_else(|| {
            // The request's own port, unless the scheme changes (its default then).
            let authority = request
                .uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| request.headers.get(header::HOST).and_then(|h| h.to_str().ok()))?;
            let port = authority.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok())?;
            (self.scheme.is_none() && self.host.is_none()).then_some(port)
        });
        let original = request.uri.path();
        let path = match (&self.path, &self.prefix, route.matched_prefix()) {
            (Some(path), _, _) => path.to_string(),
            (None, Some(replacement), Some(prefix)) => {
                replace_prefix(replacement, original.strip_prefix(prefix).unwrap_or(original))
            }
            _ => original.to_string(),
        };
        let default_port = if scheme == &Scheme::HTTPS { 443 } else { 80 };
        let mut location = format!("{scheme}://{host}");
        if let Some(port) = port.filter(|port| *port != default_port) {
            location.push_str(&format!(":{port}"));
        }
        location.push_str(&path);
        if !self.strip_query
            && let Some(query) = request.uri.query()
        {
            location.push('?');
            location.push_str(query);
        }
        Some(location)
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// Percent-decoding (and `+` as a space, as forms send it); invalid escapes
/// are kept as they are.
fn decode(text: &str) -> String {
    if !text.contains(['%', '+']) {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' if at + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[at + 1..at + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        at += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compiles one route, reporting its problems (keys relative to the route).
fn compile_route<U>(
    spec: &RouteSpec,
    upstream: &impl Fn(&str) -> Option<U>,
    problem: &mut impl FnMut(&str, String),
) -> Option<Route<U>> {
    let issues = std::cell::RefCell::new(Vec::new());
    let fail = |key: &str, message: String| issues.borrow_mut().push((key.to_string(), message));
    let ok = || issues.borrow().is_empty();
    let resolve = |key: &str, name: &str| {
        let found = upstream(name);
        if found.is_none() {
            fail(key, format!("no upstream is named {name:?}"));
        }
        found
    };

    let conditions = &spec.matches;
    for (i, host) in conditions.hosts.iter().enumerate() {
        if let Some(message) = host_problem(host) {
            fail(&format!(".match.hosts[{i}]"), message);
        }
    }
    let path = match &conditions.path {
        None => None,
        Some(PathMatchSpec::Exact(p)) | Some(PathMatchSpec::Prefix(p)) if !p.starts_with('/') => {
            fail(".match.path", format!("{p:?} must start with '/'"));
            None
        }
        Some(PathMatchSpec::Exact(p)) => Some(PathMatch::Exact(p.as_str().into())),
        Some(PathMatchSpec::Prefix(p)) => Some(PathMatch::Prefix(p.as_str().into())),
        Some(PathMatchSpec::Regex(r)) => match anchored(r) {
            Ok(regex) => Some(PathMatch::Regex(regex)),
            Err(e) => {
                fail(".match.path.regex", e);
                None
            }
        },
    };
    let mut methods = Vec::new();
    for (i, method) in conditions.methods.iter().enumerate() {
        match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => fail(&format!(".match.methods[{i}]"), format!("{method:?} is not an HTTP method")),
        }
    }
    let mut headers = Vec::new();
    for (i, condition) in conditions.headers.iter().enumerate() {
        let key = format!(".match.headers[{i}]");
        let name = HeaderName::from_bytes(condition.name.as_bytes());
        if name.is_err() {
            fail(&format!("{key}.name"), format!("{:?} is not a header name", condition.name));
        }
        if let (Ok(name), Some(test)) = (name, value_test(condition, &key, &fail)) {
            headers.push(ValueMatch { name, test });
        }
    }
    let mut query = Vec::new();
    for (i, condition) in conditions.query.iter().enumerate() {
        let key = format!(".match.query[{i}]");
        if condition.name.is_empty() {
            fail(&format!("{key}.name"), "must not be empty".into());
        }
        if let Some(test) = value_test(condition, &key, &fail) {
            query.push(ValueMatch { name: condition.name.as_str().into(), test });
        }
    }

    let actions = usize::from(spec.forward.is_some())
        + usize::from(!spec.split.is_empty())
        + usize::from(spec.redirect.is_some())
        + usize::from(spec.respond.is_some());
    if actions != 1 {
        fail("", format!("needs exactly one of forward, split, redirect, respond ({actions} given)"));
    }
    let mut action = None;
    if let Some(name) = &spec.forward {
        action = resolve(".forward", name).map(Action::Forward);
    }
    if !spec.split.is_empty() {
        let mut targets = Vec::new();
        let mut total = 0u64;
        for (i, target) in spec.split.iter().enumerate() {
            if target.weight > MAX_SPLIT_WEIGHT {
                fail(
                    &format!(".split[{i}].weight"),
                    format!("must be from 0 to {MAX_SPLIT_WEIGHT}, not {}", target.weight),
                );
            }
            if spec.split[..i].iter().any(|t| t.upstream == target.upstream) {
                fail(&format!(".split[{i}].upstream"), format!("{:?} is in the split twice", target.upstream));
            }
            if let Some(u) = resolve(&format!(".split[{i}].upstream"), &target.upstream) {
                total += u64::from(target.weight);
                targets.push((u, total));
            }
        }
        if total == 0 && ok() {
            fail(".split", "the weights add up to 0: no upstream would get a request".into());
        }
        // A zero-weight target keeps its place (the admin API shows it) but is never chosen.
        action = Some(Action::Split(Split { targets }));
    }
    if let Some(redirect) = &spec.redirect {
        action = compile_redirect(redirect, &fail).map(Action::Redirect);
        if redirect.prefix.is_some() && !matches!(path, Some(PathMatch::Prefix(_))) {
            fail(".redirect.prefix", "needs a route that matches by path prefix".into());
        }
    }
    if let Some(respond) = &spec.respond {
        let status = StatusCode::from_u16(respond.status).ok().filter(|s| (200..600).contains(&s.as_u16()));
        if status.is_none() {
            fail(".respond.status", format!("must be from 200 to 599, not {}", respond.status));
        }
        let content_type = HeaderValue::from_str(&respond.content_type);
        if content_type.is_err() {
            fail(".respond.content_type", format!("{:?} is not a valid header value", respond.content_type));
        }
        if let (Some(status), Ok(content_type)) = (status, content_type) {
            action =
                Some(Action::Respond(DirectResponse { status, body: Bytes::from(respond.body.clone()), content_type }));
        }
    }
    let mirror = match &spec.mirror {
        None => None,
        Some(mirror) => {
            if !(0.0..=100.0).contains(&mirror.percent) {
                fail(".mirror.percent", format!("must be from 0 to 100, not {}", mirror.percent));
            }
            if spec.forward.is_none() && spec.split.is_empty() {
                fail(".mirror", "only a route that forwards (forward or split) can mirror".into());
            }
            resolve(".mirror.upstream", &mirror.upstream)
                .map(|upstream| Mirror { upstream, basis_points: (mirror.percent * 100.0).round() as u64 })
        }
    };
    let request_headers = header_edits(&spec.request_headers, ".request_headers", &fail);
    let response_headers = header_edits(&spec.response_headers, ".response_headers", &fail);
    if let Some(prefix) = &spec.rewrite_prefix {
        if !matches!(path, Some(PathMatch::Prefix(_)) | Some(PathMatch::Exact(_))) {
            fail(".rewrite_prefix", "needs a route that matches by path prefix or exact path".into());
        }
        if !prefix.starts_with('/') || PathAndQuery::try_from(prefix.as_str()).is_err() {
            fail(".rewrite_prefix", format!("{prefix:?} must be a path starting with '/'"));
        }
        if spec.forward.is_none() && spec.split.is_empty() {
            fail(".rewrite_prefix", "only a route that forwards (forward or split) rewrites".into());
        }
    }
    if let Some(retry) = &spec.retry {
        for (key, message) in retry.problems() {
            fail(&format!(".retry.{key}"), message.to_string());
        }
    }
    if spec.timeout.is_some_and(|t| t.is_zero()) {
        fail(".timeout", "must be more than 0".into());
    }
    let issues = issues.into_inner();
    if !issues.is_empty() {
        for (key, message) in issues {
            problem(&key, message);
        }
        return None;
    }
    Some(Route {
        name: spec.name.as_str().into(),
        action: action?,
        mirror,
        request_headers,
        response_headers,
        timeout: spec.timeout,
        retry: spec.retry.clone(),
        path,
        rewrite_prefix: spec.rewrite_prefix.as_deref().map(Into::into),
        methods,
        headers,
        query,
    })
}

/// Why `host` is not a host pattern, if it is not.
fn host_problem(host: &str) -> Option<String> {
    let name = match host.strip_prefix("*.") {
        Some(rest) => rest,
        None if host.contains('*') => {
            return Some(format!("{host:?}: a wildcard must be a whole first label, as in *.example.com"));
        }
        None => host,
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let ip_literal = name.starts_with('[') && name.ends_with(']');
    (!valid && !ip_literal).then(|| format!("{host:?} is not a host name (no port, no scheme)"))
}

/// `pattern` compiled to match a whole value.
fn anchored(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("{pattern:?} is not a valid regular expression: {e}"))
}

fn value_test(condition: &ValueMatchSpec, key: &str, fail: &impl Fn(&str, String)) -> Option<ValueTest> {
    let given = usize::from(condition.present.is_some())
        + usize::from(condition.equals.is_some())
        + usize::from(condition.regex.is_some());
    if given != 1 {
        fail(key, format!("needs exactly one of present, equals, regex ({given} given)"));
        return None;
    }
    if let Some(present) = condition.present {
        return Some(ValueTest::Present(present));
    }
    if let Some(value) = &condition.equals {
        return Some(ValueTest::Equals(value.as_str().into()));
    }
    let pattern = condition.regex.as_deref()?;
    match anchored(pattern) {
        Ok(regex) => Some(ValueTest::Regex(regex)),
        Err(e) => {
            fail(&format!("{key}.regex"), e);
            None
        }
    }
}

fn compile_redirect(spec: &RedirectSpec, fail: &impl Fn(&str, String)) -> Option<Redirect> {
    let status = match spec.status {
        301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(spec.status).ok(),
        other => {
            fail(".redirect.status", format!("must be 301, 302, 303, 307 or 308, not {other}"));
            None
        }
    };
    let scheme = match spec.scheme.as_deref() {
        None => Some(None),
        Some("http") => Some(Some(Scheme::HTTP)),
        Some("https") => Some(Some(Scheme::HTTPS)),
        Some(other) => {
            fail(".redirect.scheme", format!("must be http or https, not {other:?}"));
            None
        }
    };
    if let Some(host) = &spec.host
        && (host.starts_with("*.") || host_problem(host).is_some())
    {
        fail(".redirect.host", format!("{host:?} is not a host name (no port, no scheme)"));
    }
    for (key, path) in [(".redirect.path", &spec.path), (".redirect.prefix", &spec.prefix)] {
        if let Some(path) = path
            && (!path.starts_with('/') || PathAndQuery::try_from(path.as_str()).is_err())
        {
            fail(key, format!("{path:?} must be a path starting with '/'"));
        }
    }
    if spec.path.is_some() && spec.prefix.is_some() {
        fail(".redirect", "path and prefix cannot both be set".into());
    }
    Some(Redirect {
        status: status?,
        scheme: scheme?,
        host: spec.host.as_deref().map(Into::into),
        port: spec.port,
        path: spec.path.as_deref().map(Into::into),
        prefix: spec.prefix.as_deref().map(Into::into),
        strip_query: spec.strip_query,
    })
}

fn header_edits(spec: &HeaderEditsSpec, key: &str, fail: &impl Fn(&str, String)) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    let name = |which: &str, name: &str| {
        let parsed = HeaderName::from_bytes(name.as_bytes());
        if parsed.is_err() {
            fail(&format!("{key}.{which}"), format!("{name:?} is not a header name"));
        }
        parsed.ok()
    };
    for header in &spec.remove {
        edits.remove.extend(name("remove", header));
    }
    for (which, pairs, into) in [("set", &spec.set, &mut edits.set), ("add", &spec.add, &mut edits.add)] {
        for (header, value) in pairs {
            let parsed = HeaderValue::from_str(value);
            if parsed.is_err() {
                fail(&format!("{key}.{which}.{header}"), format!("{value:?} is not a valid header value"));
            }
            if let (Some(header), Ok(value)) = (name(which, header), parsed) {
                into.push((header, value));
            }
        }
    }
    edits
}

#[cfg(test)]
mod tests;
