//! Whether the pick scales with cores: 1, 2, 4 and 8 threads picking at once
//! on one picker (each built-in, and the native round robin).
//!
//! Two layouts: `per-worker` is what the server runs (an instance per
//! data-path worker, each thread on its own, `Limits::instances` = threads);
//! `shared` is one instance behind one mutex for every thread, the layout
//! before per-worker instances. Each iteration is one request's worth of
//! picker work: load the serving picker from its slot, pick, and report the
//! outcome when the policy subscribes.
//!
//! Two measures, both "per pick per thread" and equal to the one-thread
//! figure when picking scales perfectly:
//! - `wall`: elapsed time × the threads that can run at once (the cores, at
//!   most the threads) ÷ picks made. Waiting for a lock shows here: on this
//!   2-core machine a fully serialised pick reads 2× at 2 threads and more.
//! - `cpu`: each thread's own CPU time ÷ its picks. A contended cache line
//!   (a shared counter, a reference count) shows here even where nothing
//!   waits; a parked waiter costs no CPU, so a lock shows only partly.
//!
//! `cargo bench -p veer --bench pick_scaling`; `bench/pick_scaling.sh`
//! prints the table the README quotes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use veer::plugin::{
    HttpMethod, Limits, Outcome, PickContext, PickerSlot, PluginRuntime, PluginSource, RequestMeta, set_worker_index,
};

mod common;

const THREADS: [usize; 4] = [1, 2, 4, 8];
const BACKENDS: u32 = 10;

fn slot(source: &str, instances: usize) -> Arc<PickerSlot> {
    let limits = Limits { seed: Some(7), instances, ..Limits::default() };
    let runtime = PluginRuntime::new(limits).expect("engine starts");
    let slot = PickerSlot::new(runtime, &PluginSource::parse(source), vec![]).expect("built-ins start");
    slot.apply(&common::added(BACKENDS, true));
    Arc::new(slot)
}

/// How a run is measured (see the module's documentation).
#[derive(Clone, Copy)]
enum Measure {
    Wall,
    Cpu,
}

/// `iterations` picks on each of `threads` threads started together, as
/// `measure` counts them.
fn run(slot: &Arc<PickerSlot>, threads: usize, iterations: u64, measure: Measure) -> Duration {
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|index| {
            let (slot, start) = (slot.clone(), start.clone());
            std::thread::spawn(move || {
                set_worker_index(index);
                let mut request = RequestMeta::get("/", IpAddr::V4(Ipv4Addr::LOCALHOST));
                start.wait();
                let began = cpu_time::ThreadTime::now();
                for tick in 0..iterations {
                    let picker = slot.for_request();
                    let ctx = PickContext { attempt: 0, exclude: None, method: HttpMethod::Get };
                    let (choice, returned) = picker.pick(request, ctx);
                    request = returned;
                    let choice = choice.expect("backends are eligible");
                    if picker.wants_outcomes() {
                        let latency_us = 1_000 + (tick % 7) * 100 + u64::from(choice.backend % 3) * 500;
                        let (backend, picked) = (choice.backend, choice.by_plugin);
                        picker.observe(&choice, Outcome { backend, picked, status: 200, latency_us, error: None });
                    }
                }
                began.elapsed()
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let cpu: Duration = workers.into_iter().map(|w| w.join().expect("a picking thread")).sum();
    let wall = began.elapsed();
    match measure {
        Measure::Cpu => cpu / threads as u32,
        Measure::Wall => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(threads);
            wall * cores as u32 / threads as u32
        }
    }
}

fn scaling(c: &mut Criterion) {
    let sources = veer::plugin::BUILTIN_NAMES
        .iter()
        .map(|name| format!("builtin:{name}"))
        .chain(std::iter::once("native:round-robin".to_string()));
    for source in sources {
        let mut group = c.benchmark_group(format!("pick-scaling/{source}"));
        for layout in ["per-worker", "shared"] {
            for threads in THREADS {
                let slot = slot(&source, if layout == "shared" { 1 } else { threads });
                for (name, measure) in [("wall", Measure::Wall), ("cpu", Measure::Cpu)] {
                    let id = BenchmarkId::new(format!("{layout}/{name}"), threads);
                    group.bench_with_input(id, &threads, |b, &threads| {
                        b.iter_custom(|iterations| run(&slot, threads, iterations, measure));
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(15);
    targets = scaling
}
criterion_main!(benches);
