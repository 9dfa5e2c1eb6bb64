#![allow(clippy::unwrap_used)]

use super::*;
use crate::retry::RetryPolicy;

fn route(name: &str) -> RouteSpec {
    RouteSpec { forward: Some(name.into()), ..RouteSpec::new(name) }
}

fn hosts(mut spec: RouteSpec, hosts: &[&str]) -> RouteSpec {
    spec.matches.hosts = hosts.iter().map(|h| h.to_string()).collect();
    spec
}

fn path(mut spec: RouteSpec, path: PathMatchSpec) -> RouteSpec {
    spec.matches.path = Some(path);
    spec
}

/// Every upstream name resolves to itself.
/// A redirect route with `status` that changes nothing else.
fn redirect(mut spec: RouteSpec, status: u16) -> RouteSpec {
    spec.forward = None;
    spec.redirect = Some(RedirectSpec {
        status,
        scheme: None,
        host: None,
        port: None,
        path: None,
        prefix: None,
        strip_query: false,
    });
    spec
}

fn table(specs: &[RouteSpec]) -> RouteTable<String> {
    RouteTable::compile(specs, |name| Some(name.to_string())).unwrap_or_else(|p| panic!("{p:?}"))
}

fn problems(specs: &[RouteSpec]) -> Vec<RouteProblem> {
    RouteTable::compile(specs, |name| (name != "missing").then(|| name.to_string())).unwrap_err()
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

fn found<'t>(table: &'t RouteTable<String>, request: &http::Request<()>) -> Option<&'t str> {
    table.find(&RequestHead::of(request)).map(|route| route.name.as_ref())
}

fn get(table: &RouteTable<String>, host: &str, uri: &str) -> Option<String> {
    found(table, &request("GET", uri, &[("host", host)])).map(str::to_string)
}

#[test]
fn hosts_match_exactly_or_by_wildcard_suffix_ignoring_case_and_port() {
    let t = table(&[
        hosts(route("api"), &["api.example.com"]),
        hosts(route("wild"), &["*.example.com"]),
        hosts(route("two"), &["a.test", "b.test"]),
        route("rest"),
    ]);
    assert_eq!(get(&t, "api.example.com", "/").as_deref(), Some("api"));
    assert_eq!(get(&t, "API.Example.COM:8080", "/").as_deref(), Some("api"));
    assert_eq!(get(&t, "api.example.com.", "/").as_deref(), Some("api"), "a trailing dot is the same name");
    assert_eq!(get(&t, "www.example.com", "/").as_deref(), Some("wild"));
    assert_eq!(get(&t, "a.b.example.com", "/").as_deref(), Some("wild"), "a wildcard covers deeper names");
    assert_eq!(get(&t, "example.com", "/").as_deref(), Some("rest"), "*.example.com needs a label before it");
    assert_eq!(get(&t, "b.test", "/").as_deref(), Some("two"));
    assert_eq!(get(&t, "other.org", "/").as_deref(), Some("rest"));
    // HTTP/2 and absolute-form requests carry the host in the URI.
    let absolute = request("GET", "http://api.example.com/x", &[]);
    assert_eq!(found(&t, &absolute), Some("api"));
    let no_host = request("GET", "/x", &[]);
    assert_eq!(found(&t, &no_host), Some("rest"));
}

#[test]
fn the_first_route_in_file_order_wins_whatever_index_finds_it() {
    let t = table(&[
        path(route("any-host-first"), PathMatchSpec::Prefix("/shared".into())),
        hosts(path(route("exact-host"), PathMatchSpec::Prefix("/".into())), &["x.test"]),
        hosts(route("wildcard"), &["*.test"]),
    ]);
    assert_eq!(get(&t, "x.test", "/shared/a").as_deref(), Some("any-host-first"));
    assert_eq!(get(&t, "x.test", "/other").as_deref(), Some("exact-host"));
    assert_eq!(get(&t, "y.test", "/other").as_deref(), Some("wildcard"));
    assert_eq!(get(&t, "y.org", "/other"), None, "nothing matched");
}

#[test]
fn paths_methods_headers_and_query_parameters() {
    let mut post = path(route("post-users"), PathMatchSpec::Exact("/users".into()));
    post.matches.methods = vec!["post".into()];
    let mut beta = path(route("beta"), PathMatchSpec::Prefix("/api/".into()));
    beta.matches.headers =
        vec![ValueMatchSpec { name: "X-Env".into(), equals: Some("beta".into()), ..Default::default() }];
    let mut traced = route("traced");
    traced.matches.headers = vec![
        ValueMatchSpec { name: "x-trace".into(), present: Some(true), ..Default::default() },
        ValueMatchSpec { name: "x-debug".into(), present: Some(false), ..Default::default() },
    ];
    let mut queried = path(route("queried"), PathMatchSpec::Regex("/item/[0-9]+".into()));
    queried.matches.query = vec![
        ValueMatchSpec { name: "v".into(), regex: Some("2|3".into()), ..Default::default() },
        ValueMatchSpec { name: "full name".into(), equals: Some("a b".into()), ..Default::default() },
    ];
    let t = table(&[post, beta, traced, queried, route("rest")]);
    let name = |method: &str, uri: &str, headers: &[(&str, &str)]| found(&t, &request(method, uri, headers)).unwrap();
    assert_eq!(name("POST", "/users", &[]), "post-users");
    assert_eq!(name("GET", "/users", &[]), "rest");
    assert_eq!(name("POST", "/users/1", &[]), "rest", "exact means exact");
    assert_eq!(name("GET", "/api/x", &[("x-env", "beta")]), "beta");
    assert_eq!(name("GET", "/api/x", &[("x-env", "Beta")]), "rest", "values are case-sensitive");
    assert_eq!(name("GET", "/x", &[("x-trace", "1")]), "traced");
    assert_eq!(name("GET", "/x", &[("x-trace", "1"), ("x-debug", "1")]), "rest", "present: false excludes");
    assert_eq!(name("GET", "/item/42?v=2&full%20name=a+b", &[]), "queried");
    assert_eq!(name("GET", "/item/42?v=23&full+name=a%20b", &[]), "rest", "a regex matches the whole value");
    assert_eq!(name("GET", "/item/42x?v=2&full+name=a+b", &[]), "rest", "a path regex matches the whole path");
    assert_eq!(name("GET", "/item/42", &[]), "rest");
}

/// The indexes only narrow the candidates: over many random tables and
/// requests, `find` answers what a plain scan in file order answers.
#[test]
fn the_indexes_agree_with_a_scan_in_file_order() {
    let mut rng = veer_core::rng::SplitMix64::new(7);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let host_choices = ["a.test", "b.test", "*.test", "*.b.test", "x.b.test"];
    let path_choices = ["/", "/a", "/a/b", "/ab", "/b"];
    for _ in 0..300 {
        let mut specs = Vec::new();
        for i in 0..pick(12) + 1 {
            let mut spec = route(&format!("r{i}"));
            if pick(2) == 0 {
                spec.matches.hosts = vec![host_choices[pick(host_choices.len())].to_string()];
            }
            spec.matches.path = match pick(4) {
                0 => None,
                1 => Some(PathMatchSpec::Exact(path_choices[pick(path_choices.len())].into())),
                2 => Some(PathMatchSpec::Prefix(path_choices[pick(path_choices.len())].into())),
                _ => Some(PathMatchSpec::Regex("/a.*".into())),
            };
            if pick(4) == 0 {
                spec.matches.methods = vec!["POST".into()];
            }
            specs.push(spec);
        }
        let t = table(&specs);
        for _ in 0..20 {
            let host = ["a.test", "b.test", "x.b.test", "y.x.b.test", "c.org"][pick(5)];
            let uri = ["/", "/a", "/a/b", "/ab", "/b", "/a/bc", "/c"][pick(7)];
            let method = ["GET", "POST"][pick(2)];
            let req = request(method, uri, &[("host", host)]);
            let head = RequestHead::of(&req);
            let scanned = specs.iter().zip(t.routes()).find(|(spec, route)| {
                let host_ok = spec.matches.hosts.is_empty()
                    || spec.matches.hosts.iter().any(|h| match h.strip_prefix('*') {
                        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
                        None => h == host,
                    });
                host_ok && route.holds(&head, true)
            });
            let scanned = scanned.map(|(spec, _)| spec.name.as_str());
            assert_eq!(found(&t, &req), scanned, "{method} {host}{uri} in {specs:#?}");
        }
    }
}

#[test]
fn every_problem_is_reported_at_its_key() {
    let mut no_action = route("no-action");
    no_action.forward = None;
    let mut two_actions = route("two-actions");
    two_actions.respond = Some(RespondSpec { status: 700, body: String::new(), content_type: "text/plain".into() });
    let mut bad = path(route("bad"), PathMatchSpec::Regex("(".into()));
    bad.matches.hosts = vec!["api.*.com".into(), "ok.test".into(), "has:port".into()];
    bad.matches.methods = vec!["G T".into()];
    bad.matches.headers = vec![ValueMatchSpec { name: "x".into(), ..Default::default() }];
    bad.rewrite_prefix = Some("/x".into());
    let mut unknown = route("unknown");
    unknown.forward = Some("missing".into());
    unknown.mirror = Some(MirrorSpec { upstream: "missing".into(), percent: 150.0 });
    let mut redirect = redirect(route("redirect"), 200);
    let target = redirect.redirect.as_mut().unwrap();
    target.scheme = Some("ftp".into());
    target.prefix = Some("/p".into());
    redirect.mirror = Some(MirrorSpec { upstream: "m".into(), percent: 5.0 });
    let mut split = route("split");
    split.forward = None;
    split.split = vec![
        SplitTargetSpec { upstream: "a".into(), weight: 0 },
        SplitTargetSpec { upstream: "a".into(), weight: 20_000 },
    ];
    let found = problems(&[no_action, two_actions, bad, unknown, redirect, split, route("split")]);
    let keys: Vec<(&str, &str)> = found.iter().map(|p| (p.path.as_str(), p.message.as_str())).collect();
    let expect = [
        ("[0]", "exactly one of forward, split, redirect, respond (0 given)"),
        ("[1]", "(2 given)"),
        ("[1].respond.status", "must be from 200 to 599, not 700"),
        ("[2].match.hosts[0]", "a wildcard must be a whole first label"),
        ("[2].match.hosts[2]", "is not a host name"),
        ("[2].match.path.regex", "not a valid regular expression"),
        ("[2].match.methods[0]", "is not an HTTP method"),
        ("[2].match.headers[0]", "exactly one of present, equals, regex (0 given)"),
        ("[2].rewrite_prefix", "needs a route that matches by path prefix"),
        ("[3].forward", "no upstream is named \"missing\""),
        ("[3].mirror.percent", "must be from 0 to 100"),
        ("[3].mirror.upstream", "no upstream is named \"missing\""),
        ("[4].redirect.status", "must be 301, 302, 303, 307 or 308"),
        ("[4].redirect.scheme", "must be http or https"),
        ("[4].redirect.prefix", "needs a route that matches by path prefix"),
        ("[4].mirror", "only a route that forwards"),
        ("[5].split[1].weight", "must be from 0 to 10000"),
        ("[5].split[1].upstream", "is in the split twice"),
        ("[6].name", "already the name of route [5]"),
    ];
    for (key, message) in expect {
        assert!(keys.iter().any(|(k, m)| *k == key && m.contains(message)), "{key}: {message} not in {keys:#?}");
    }
    assert_eq!(keys.len(), expect.len(), "{keys:#?}");
}

#[test]
fn a_split_follows_its_weights_and_never_picks_a_zero() {
    let mut spec = route("split");
    spec.forward = None;
    spec.split = vec![
        SplitTargetSpec { upstream: "stable".into(), weight: 90 },
        SplitTargetSpec { upstream: "held".into(), weight: 0 },
        SplitTargetSpec { upstream: "canary".into(), weight: 10 },
    ];
    let t = table(&[spec]);
    let Action::Split(split) = &t.routes()[0].action else { panic!("a split") };
    let mut rng = veer_core::rng::SplitMix64::new(1);
    let mut counts = HashMap::new();
    for _ in 0..100_000 {
        *counts.entry(split.choose(rng.next_u64()).as_str()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("held"), None);
    let canary = f64::from(counts["canary"]) / 100_000.0;
    assert!((canary - 0.10).abs() < 0.005, "{canary}");
    assert_eq!(split.choose(0), "stable");
    assert_eq!(split.choose(u64::MAX), "canary");
    let weights: Vec<(&str, u64)> = split.targets().map(|(u, w)| (u.as_str(), w)).collect();
    assert_eq!(weights, vec![("stable", 90), ("held", 0), ("canary", 10)]);
}

#[test]
fn a_mirror_samples_its_share() {
    let mut spec = route("mirrored");
    spec.mirror = Some(MirrorSpec { upstream: "shadow".into(), percent: 25.0 });
    let t = table(&[spec]);
    let mirror = t.routes()[0].mirror.as_ref().unwrap();
    assert_eq!(mirror.upstream, "shadow");
    let mut rng = veer_core::rng::SplitMix64::new(3);
    let copied = (0..100_000).filter(|_| mirror.samples(rng.next_u64())).count();
    assert!((copied as f64 / 100_000.0 - 0.25).abs() < 0.005, "{copied}");
}

#[test]
fn prefix_rewrites_keep_the_rest_and_the_query() {
    let mut strip = path(route("strip"), PathMatchSpec::Prefix("/api".into()));
    strip.rewrite_prefix = Some("/".into());
    let mut swap = path(route("swap"), PathMatchSpec::Prefix("/old/".into()));
    swap.rewrite_prefix = Some("/new/".into());
    let mut exact = path(route("exact"), PathMatchSpec::Exact("/health".into()));
    exact.rewrite_prefix = Some("/internal/health".into());
    let t = table(&[strip, swap, exact, route("plain")]);
    let rewrite = |at: usize, original: &str| {
        t.routes()[at].rewrite(&PathAndQuery::try_from(original).unwrap()).map(|p| p.to_string())
    };
    assert_eq!(rewrite(0, "/api/users?page=2").as_deref(), Some("/users?page=2"));
    assert_eq!(rewrite(0, "/api").as_deref(), Some("/"));
    assert_eq!(rewrite(1, "/old/a/b").as_deref(), Some("/new/a/b"));
    assert_eq!(rewrite(2, "/health?x").as_deref(), Some("/internal/health?x"));
    assert_eq!(rewrite(3, "/anything"), None);
}

#[test]
fn redirects_build_the_location_from_the_request() {
    let mut to_https = redirect(route("to-https"), 308);
    to_https.redirect.as_mut().unwrap().scheme = Some("https".into());
    let mut moved = redirect(path(route("moved"), PathMatchSpec::Prefix("/old".into())), 301);
    let target = moved.redirect.as_mut().unwrap();
    target.host = Some("new.example.com".into());
    target.prefix = Some("/new".into());
    target.strip_query = true;
    let t = table(&[moved, to_https]);
    let location = |uri: &str, host: &str| {
        let req = request("GET", uri, &[("host", host)]);
        let head = RequestHead::of(&req);
        let route = t.find(&head).unwrap();
        let Action::Redirect(redirect) = &route.action else { panic!("a redirect") };
        (redirect.status.as_u16(), redirect.location(&head, &Scheme::HTTP, route).unwrap())
    };
    assert_eq!(location("/a?b=1", "shop.test:8080"), (308, "https://shop.test/a?b=1".to_string()));
    assert_eq!(location("/old/page?x=1", "shop.test:8080"), (301, "http://new.example.com/new/page".to_string()));
}

#[test]
fn header_edits_remove_then_set_then_add() {
    let mut spec = route("edits");
    spec.request_headers.remove = vec!["x-internal".into()];
    spec.request_headers.set.insert("x-env".into(), "prod".into());
    spec.request_headers.add.insert("x-via".into(), "veer".into());
    let t = table(&[spec]);
    let mut headers = HeaderMap::new();
    headers.insert("x-internal", HeaderValue::from_static("secret"));
    headers.append("x-env", HeaderValue::from_static("a"));
    headers.append("x-env", HeaderValue::from_static("b"));
    headers.insert("x-via", HeaderValue::from_static("edge"));
    t.routes()[0].request_headers.apply(&mut headers);
    assert!(headers.get("x-internal").is_none());
    assert_eq!(headers.get_all("x-env").iter().collect::<Vec<_>>(), vec!["prod"]);
    assert_eq!(headers.get_all("x-via").iter().collect::<Vec<_>>(), vec!["edge", "veer"]);
}

#[test]
fn retry_changes_keep_every_key_left_out() {
    let base = RetryPolicy { retry_on_status: vec![503], backoff_base: Duration::from_millis(5), ..Default::default() };
    let retry = RetryOverride { max_attempts: Some(1), ..RetryOverride::default() }.apply(&base);
    assert_eq!(retry.max_attempts, 1);
    assert_eq!(retry.retry_on_status, vec![503], "inherited");
    assert_eq!(retry.backoff_base, Duration::from_millis(5), "inherited");
    let mut spec = route("bad");
    spec.retry = Some(RetryOverride { max_attempts: Some(0), ..RetryOverride::default() });
    assert_eq!(problems(&[spec])[0].path, "[0].retry.max_attempts");
}

/// A client may put anything in `Host`: only a host name or IP literal is
/// taken for one, so nothing else is matched against routes or echoed into
/// a redirect.
#[test]
fn hostile_hosts_are_no_host() {
    let host = |value: &str| {
        let req = http::Request::builder().uri("/").header("host", value).body(()).unwrap();
        RequestHead::of(&req).host().map(str::to_string)
    };
    assert_eq!(host("api.example.com:8080").as_deref(), Some("api.example.com"));
    assert_eq!(host("[::1]:8080").as_deref(), Some("[::1]"));
    assert_eq!(host("under_score.test").as_deref(), Some("under_score.test"));
    for hostile in ["evil.com/x", "a b", "", ":80", "[zz]", "x\"><script>", "a@b@c", "é.test", &"a".repeat(300)] {
        assert_eq!(host(hostile), None, "{hostile:?}");
    }
    let mut spec = redirect(route("to-https"), 308);
    spec.redirect.as_mut().unwrap().scheme = Some("https".into());
    let t = table(&[spec]);
    let req = http::Request::builder().uri("/a").header("host", "evil.com/x").body(()).unwrap();
    let head = RequestHead::of(&req);
    let route = t.find(&head).unwrap();
    let Action::Redirect(redirect) = &route.action else { panic!("a redirect") };
    assert_eq!(redirect.location(&head, &Scheme::HTTP, route), None, "no Location from a hostile host");
}

#[test]
fn query_values_with_broken_escapes_are_read_safely() {
    assert_eq!(query_value("a=%zz&b=1", "a").as_deref(), Some("%zz"));
    assert_eq!(query_value("a=%", "a").as_deref(), Some("%"));
    assert_eq!(query_value("a=%4", "a").as_deref(), Some("%4"));
    assert_eq!(query_value("a=%E2%82", "a").as_deref(), Some("\u{fffd}"), "invalid UTF-8 is replaced");
    assert_eq!(query_value("a&a=2", "a").as_deref(), Some(""), "the first one, empty when it has no value");
    assert_eq!(query_value("%61=x", "a").as_deref(), Some("x"), "names are decoded too");
    assert_eq!(query_value("", "a"), None);
}
