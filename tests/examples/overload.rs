//! The overload curve: offered load against goodput and p99 latency, with and
//! without admission control, for one simulated backend that serves 10
//! requests at once in 20 ms each (500 requests/s) and slows down in
//! proportion past that. Everything runs in this process on 127.0.0.1.
//!
//! ```sh
//! cargo run -p veer-tests --example overload -- [--seconds 4] [--rates 250,500,750,1000,1500] [--svg overload.svg]
//! ```
//!
//! Each step starts a fresh backend and veer (so no backlog carries over),
//! offers the rate open-loop (requests are sent on schedule whatever the
//! answers), skips the first second, and waits up to 5 s for each answer.

#![allow(clippy::unwrap_used)] // A benchmark: a panic is the error report.

use std::fmt::Write as _;
use std::time::Duration;

use veer::admission::{AdaptiveConfig, AdmissionConfig};
use veer::proxy::ProxyConfig;
use veer::sim::{BackendProfile, SimBackend, SimBackendSpec};
use veer_tests::load::{Summary, open_loop, summarize};

const BASE_LATENCY: Duration = Duration::from_millis(20);
const CAPACITY: u32 = 10;
const TARGET_MS: f64 = 40.0;
const TIMEOUT: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);

struct Options {
    seconds: u64,
    rates: Vec<f64>,
    svg: Option<String>,
}

fn options() -> Options {
    let mut options = Options { seconds: 4, rates: vec![250.0, 500.0, 750.0, 1000.0, 1500.0], svg: None };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => options.seconds = value.parse().expect("--seconds: a whole number"),
            "--rates" => options.rates = value.split(',').map(|r| r.parse().expect("--rates: numbers")).collect(),
            "--svg" => options.svg = Some(value),
            _ => panic!("unknown flag {flag}; expected --seconds, --rates or --svg"),
        }
    }
    assert!(options.seconds > WARM_UP.as_secs(), "--seconds must be more than the 1 s warm-up");
    options
}

fn modes() -> Vec<(&'static str, AdmissionConfig)> {
    vec![
        ("none", AdmissionConfig::default()),
        (
            "aimd",
            AdmissionConfig {
                adaptive: Some(AdaptiveConfig {
                    target_latency_ms: Some(TARGET_MS),
                    initial_limit: 10,
                    min_limit: 2,
                    max_limit: 200,
                    ..AdaptiveConfig::default()
                }),
                ..AdmissionConfig::default()
            },
        ),
    ]
}

async fn step(rate: f64, run: Duration, admission: AdmissionConfig) -> (Summary, Option<u64>) {
    let spec = SimBackendSpec::new("s", BackendProfile::fixed(BASE_LATENCY).with_capacity(CAPACITY)).with_seed(3);
    let backend = SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let veer =
        veer_tests::start_veer_with(&[("s", backend.addr())], "builtin:round-robin", ProxyConfig::default(), admission)
            .await;
    let samples = open_loop(veer.proxy_addr, rate, run, TIMEOUT, &[]).await;
    let limit = veer.proxy.admission().snapshot().adaptive.map(|a| u64::from(a.limit));
    veer.shutdown().await;
    backend.shutdown().await;
    (summarize(&samples, run, WARM_UP), limit)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let run = Duration::from_secs(options.seconds);
    println!(
        "backend: {} ms per request, capacity {CAPACITY} at once (~{:.0} req/s); AIMD target {TARGET_MS} ms; \
         {} s per step, first {} s skipped; timeout {} s",
        BASE_LATENCY.as_millis(),
        f64::from(CAPACITY) / BASE_LATENCY.as_secs_f64(),
        options.seconds,
        WARM_UP.as_secs(),
        TIMEOUT.as_secs()
    );
    println!();
    println!(
        "| offered req/s | admission | goodput req/s | p99 ok ms | p99 admitted ms | refused | timed out | AIMD limit |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut results = Vec::new();
    for &rate in &options.rates {
        for (name, admission) in modes() {
            let (summary, limit) = step(rate, run, admission).await;
            println!(
                "| {:.0} | {name} | {:.0} | {:.1} | {:.1} | {} | {} | {} |",
                summary.offered_rps,
                summary.goodput_rps,
                summary.p99_ok_ms,
                summary.p99_admitted_ms,
                summary.refused,
                summary.timed_out,
                limit.map_or("-".to_string(), |l| l.to_string()),
            );
            results.push((rate, name, summary));
        }
    }
    if let Some(path) = options.svg {
        std::fs::write(&path, svg(&results)).unwrap();
        println!("\nplot written to {path}");
    }
}

/// Two panels side by side: goodput and p99 (admitted, log scale) against offered load.
fn svg(results: &[(f64, &str, Summary)]) -> String {
    let (width, height, margin) = (360.0, 260.0, 50.0);
    let max_rate = results.iter().map(|r| r.0).fold(1.0, f64::max);
    let max_goodput = results.iter().map(|r| r.2.goodput_rps).fold(1.0, f64::max).max(max_rate * 0.5);
    let max_p99 = results.iter().map(|r| r.2.p99_admitted_ms).fold(10.0, f64::max);
    let colour = |mode: &str| if mode == "aimd" { "#1b7837" } else { "#b2182b" };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        2.0 * width + margin,
        height + 40.0
    );
    type Metric = fn(&Summary) -> f64;
    let panels: [(&str, f64, Metric, bool); 2] = [
        ("goodput (req/s)", max_goodput, |s| s.goodput_rps, false),
        ("p99 of admitted requests (ms, log)", max_p99, |s| s.p99_admitted_ms, true),
    ];
    for (index, (title, max, value, log)) in panels.iter().enumerate() {
        let left = margin + index as f64 * (width + margin / 2.0);
        let (plot_w, plot_h) = (width - margin, height - margin);
        let x = |rate: f64| left + rate / max_rate * plot_w;
        let y = |v: f64| {
            let share = if *log { (v.max(1.0)).ln() / max.max(2.0).ln() } else { v / max };
            20.0 + plot_h * (1.0 - share.clamp(0.0, 1.0))
        };
        let _ = write!(
            out,
            r##"<text x="{left}" y="12">{title}</text><line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/><line x1="{left}" y1="20" x2="{left}" y2="{b}" stroke="#444"/><text x="{left}" y="{t}">offered req/s →  max {max_rate:.0}; y max {max:.0}</text>"##,
            b = 20.0 + plot_h,
            r = left + plot_w,
            t = 20.0 + plot_h + 28.0,
        );
        for mode in ["none", "aimd"] {
            let points: Vec<String> = results
                .iter()
                .filter(|r| r.1 == mode)
                .map(|r| format!("{:.1},{:.1}", x(r.0), y(value(&r.2))))
                .collect();
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                colour(mode),
                points.join(" ")
            );
        }
    }
    let _ = write!(
        out,
        r#"<text x="{margin}" y="{}" fill="{}">— no admission</text><text x="{}" y="{}" fill="{}">— AIMD (target {TARGET_MS} ms)</text></svg>"#,
        height + 34.0,
        colour("none"),
        margin + 120.0,
        height + 34.0,
        colour("aimd"),
    );
    out.push('\n');
    out
}
