//! Cost per request of each built-in picker: through the Wasm boundary (pick,
//! plus observe for plugins that subscribe) and, beside it, the same policy
//! compiled natively and called directly — at 3, 100 and 1000 backends.
//!
//! `cargo bench -p veer --bench picker`; the README quotes its table.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use veer::plugin::{HttpMethod, Limits, Outcome, PickContext, Picker, PluginRuntime, PluginSource, RequestMeta};
use veer_sdk::Policy;

mod common;

const POOL_SIZES: [u32; 3] = [3, 100, 1000];

/// One request through a Wasm picker: pick, then the outcome if subscribed.
fn wasm_request(picker: &Picker, request: RequestMeta, tick: u64) -> RequestMeta {
    let ctx = PickContext { attempt: 0, exclude: None, method: HttpMethod::Get };
    let (choice, request) = picker.pick(request, ctx);
    let choice = choice.expect("backends are eligible");
    if picker.wants_outcomes() {
        let latency_us = 1_000 + (tick % 7) * 100 + u64::from(choice.backend % 3) * 500;
        picker
            .observe(&choice, Outcome { backend: choice.backend, picked: true, status: 200, latency_us, error: None });
    }
    request
}

/// The same request through the policy compiled natively, called through the
/// SDK's glue exactly as the component export calls it.
fn native_request<P: Policy>(runtime: &mut veer_sdk::Runtime<P>, tick: u64) {
    let ctx = veer_sdk::PickContext { attempt: 0, exclude: None, method: veer_sdk::HttpMethod::Get };
    let backend = runtime.pick(&ctx).expect("backends are eligible");
    if P::WANTS_OUTCOMES {
        let latency_us = 1_000 + (tick % 7) * 100 + u64::from(backend % 3) * 500;
        runtime.observe(&veer_sdk::Outcome { backend, picked: true, status: 200, latency_us, error: None });
    }
}

fn native_runtime<P: Policy>(n: u32) -> veer_sdk::Runtime<P> {
    let mut runtime = veer_sdk::Runtime::<P>::new("bench");
    runtime.configure(vec![]).expect("default parameters are valid");
    let events = (1..=n)
        .map(|id| {
            veer_sdk::BackendEvent::Added(veer_sdk::Backend {
                id,
                name: format!("b{id}"),
                address: format!("10.0.0.1:{}", 1000 + id),
                weight: 1 + id % 5,
                labels: vec![],
            })
        })
        .collect();
    runtime.backends_changed(events);
    runtime
}

fn bench_policy<P: Policy>(c: &mut Criterion, runtime: &Arc<PluginRuntime>, name: &str) {
    let mut group = c.benchmark_group(name);
    let code = runtime.load(&PluginSource::Builtin(name.to_string())).expect("built-ins load");
    for n in POOL_SIZES {
        let (picker, _) = Picker::start(runtime.clone(), code.clone(), vec![], common::membership(n, true), None)
            .expect("built-ins start");
        let mut request = Some(RequestMeta::get("/", IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mut tick = 0u64;
        group.bench_with_input(BenchmarkId::new("wasm", n), &n, |b, _| {
            b.iter(|| {
                tick += 1;
                let r = request.take().expect("the request is always handed back");
                request = Some(black_box(wasm_request(&picker, r, tick)));
            })
        });
        let mut native = native_runtime::<P>(n);
        group.bench_with_input(BenchmarkId::new("native", n), &n, |b, _| {
            b.iter(|| {
                tick += 1;
                native_request(black_box(&mut native), tick);
            })
        });
    }
    group.finish();
}

fn pickers(c: &mut Criterion) {
    let runtime = PluginRuntime::new(Limits { seed: Some(7), ..Limits::default() }).expect("engine starts");
    bench_policy::<veer_plugin_round_robin::RoundRobin>(c, &runtime, "round-robin");
    bench_policy::<veer_plugin_least_conn::LeastConn>(c, &runtime, "least-conn");
    bench_policy::<veer_plugin_weighted_rr::WeightedRoundRobin>(c, &runtime, "weighted-rr");
    bench_policy::<veer_plugin_p2c_ewma::P2cEwma>(c, &runtime, "p2c-ewma");
    bench_policy::<veer_plugin_q_learning::QLearning>(c, &runtime, "q-learning");
    bench_policy::<veer_plugin_least_response_time::LeastResponseTime>(c, &runtime, "least-response-time");
    bench_policy::<veer_plugin_prequal::Prequal>(c, &runtime, "prequal");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = pickers
}
criterion_main!(benches);
