//! Route matching cost against the table's size: 1, 100 and 10 000 routes.
//!
//! Three kinds of table, each the size under test:
//! - `host`: every route has its own exact host (`svc17.example.com`) — the
//!   virtual-host layout of a proxy in front of many services;
//! - `wildcard`: every route a `*.svcN.example.com` wildcard;
//! - `path-prefix`: one host, every route its own path prefix (`/svc17/`).
//!
//! Each iteration looks up one request, cycling through 1 024 requests that
//! hit routes spread over the whole table (and, for every eighth, no route:
//! the 404 path walks every index too). The figure is ns per lookup.
//!
//!   cargo bench -p veer --bench routing

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use veer::routing::{MatchSpec, PathMatchSpec, RequestHead, RouteSpec, RouteTable};

fn route(name: String, hosts: Vec<String>, path: Option<PathMatchSpec>) -> RouteSpec {
    let matches = MatchSpec { hosts, path, ..MatchSpec::default() };
    RouteSpec { matches, forward: Some("app".into()), ..RouteSpec::new(name) }
}

/// The table of `kind` with `n` routes, and requests (host, path) for it.
fn layout(kind: &str, n: usize) -> (Vec<RouteSpec>, Vec<(String, String)>) {
    let specs = (0..n)
        .map(|i| match kind {
            "host" => route(format!("r{i}"), vec![format!("svc{i}.example.com")], None),
            "wildcard" => route(format!("r{i}"), vec![format!("*.svc{i}.example.com")], None),
            _ => {
                route(format!("r{i}"), vec!["api.example.com".into()], Some(PathMatchSpec::Prefix(format!("/svc{i}/"))))
            }
        })
        .collect();
    let requests = (0..1024)
        .map(|k| {
            // Spread over the table; every eighth request matches nothing.
            let i = if k % 8 == 7 { n + k } else { (k * 7919) % n };
            match kind {
                "host" => (format!("svc{i}.example.com"), "/orders/42".to_string()),
                "wildcard" => (format!("eu.web.svc{i}.example.com"), "/orders/42".to_string()),
                _ => ("api.example.com".to_string(), format!("/svc{i}/orders/42")),
            }
        })
        .collect();
    (specs, requests)
}

fn bench(c: &mut Criterion) {
    for kind in ["host", "wildcard", "path-prefix"] {
        let mut group = c.benchmark_group(format!("routing/{kind}"));
        for n in [1usize, 100, 10_000] {
            let (specs, requests) = layout(kind, n);
            let table = RouteTable::compile(&specs, |name| Some(name.to_string())).expect("a valid table");
            let requests: Vec<http::Request<()>> = requests
                .into_iter()
                .map(|(host, path)| http::Request::builder().uri(path).header("host", host).body(()).expect("valid"))
                .collect();
            let mut at = 0;
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    at = (at + 1) % requests.len();
                    black_box(table.find(&RequestHead::of(&requests[at])).map(|route| route.name.len()))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
