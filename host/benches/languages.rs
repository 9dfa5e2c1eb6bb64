//! The same policy — least connections — written in Rust (the built-in), Python
//! (componentize-py), JavaScript (jco, QuickJS) and C (clang, wasi-libc): cost
//! of one request (`pick` + `observe`) through the Wasm boundary at 3 and 100
//! backends, and the size of each component. The Python, JavaScript and C
//! components come from the `build.sh` in `examples/python-plugin`,
//! `examples/js-plugin` and `examples/c-plugin`.
//!
//! `cargo bench -p veer --bench languages`; the README quotes its numbers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use veer::plugin::{HttpMethod, Limits, Outcome, PickContext, Picker, PluginRuntime, PluginSource, RequestMeta};

mod common;

fn request(picker: &Picker, request: RequestMeta) -> RequestMeta {
    let ctx = PickContext { attempt: 0, exclude: None, method: HttpMethod::Get };
    let (choice, request) = picker.pick(request, ctx);
    let choice = choice.expect("backends are eligible");
    picker.observe(
        &choice,
        Outcome { backend: choice.backend, picked: true, status: 200, latency_us: 1_000, error: None },
    );
    request
}

fn example(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/example-plugins").join(file);
    assert!(path.is_file(), "{} is missing: run the example's build.sh first", path.display());
    path
}

fn languages(c: &mut Criterion) {
    let runtime: Arc<PluginRuntime> =
        PluginRuntime::new(Limits { seed: Some(1), ..Limits::default() }).expect("the engine starts");
    let plugins = [
        ("rust", PluginSource::Builtin("least-conn".into())),
        ("python", PluginSource::Path(example("least-conn-py.wasm"))),
        ("javascript", PluginSource::Path(example("least-conn-js.wasm"))),
        ("c", PluginSource::Path(example("least-conn-c.wasm"))),
    ];
    let mut group = c.benchmark_group("least-conn");
    for (language, source) in plugins {
        let compiled = Instant::now();
        let code = runtime.load(&source).expect("the plugin loads");
        let compile = compiled.elapsed();
        let started = Instant::now();
        let probe =
            Picker::start(runtime.clone(), code.clone(), vec![], common::membership(3, false), None).expect("starts");
        let start = started.elapsed();
        drop(probe);
        println!(
            "least-conn/{language}: component {} bytes, compile {:.2} s, instantiate+configure {:.1} ms",
            code.size_bytes,
            compile.as_secs_f64(),
            start.as_secs_f64() * 1e3
        );
        for n in [3u32, 100] {
            let (picker, _) = Picker::start(runtime.clone(), code.clone(), vec![], common::membership(n, false), None)
                .expect("starts");
            let mut meta = Some(RequestMeta::get("/", IpAddr::V4(Ipv4Addr::LOCALHOST)));
            group.bench_with_input(BenchmarkId::new(language, n), &n, |b, _| {
                b.iter(|| {
                    // The request is lent to the picker and handed back: no allocation per iteration.
                    let lent = meta.take().expect("handed back by the previous iteration");
                    meta = Some(black_box(request(&picker, lent)));
                })
            });
            // Reported, not asserted: a fault (e.g. a GC pause past the deadline)
            // is served by the host's fallback and is part of what is measured.
            let stats = picker.stats();
            println!("least-conn/{language}/{n}: {stats:?}");
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = languages
}
criterion_main!(benches);
