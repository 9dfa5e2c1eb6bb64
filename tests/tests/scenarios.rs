//! The routing benchmark, end to end: every shipped scenario file parses and
//! validates, and a very short run of two scenarios (one closed loop with
//! phases, one open loop) with a Wasm picker and the oracle writes every
//! report. Nothing here asserts on timing: the machine is shared and noisy.
//! The virtual-time mode runs the whole suite at a small scale, twice, and
//! must print the same figures both times.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::PathBuf;

use veer::scenario::{BenchOptions, Strategy, bench, load_all};

fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[test]
fn every_shipped_scenario_parses_and_the_seed_eight_are_there() {
    let scenarios = load_all(&scenario_dir()).unwrap();
    assert!(scenarios.len() >= 15, "{} scenarios", scenarios.len());
    for seed in
        ["baseline", "the-trap", "high-jitter", "one-dead", "sloth-invasion", "minefield", "safe-haven", "fast-error"]
    {
        assert!(scenarios.iter().any(|s| s.name == seed), "missing seed scenario {seed}");
    }
    for scenario in &scenarios {
        assert!(!scenario.backends(1.0).is_empty(), "{}", scenario.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_writes_csv_plots_and_a_summary_with_the_oracle() {
    let out = std::env::temp_dir().join(format!("veer-scenarios-{}", std::process::id()));
    let options = BenchOptions {
        dir: scenario_dir(),
        only: vec!["the-trap".into(), "open-loop".into()],
        strategies: vec!["builtin:p2c-ewma".parse().unwrap(), Strategy::ORACLE.parse().unwrap()],
        out: out.clone(),
        // 6 s scenarios → 0.3 s runs.
        scale: 0.05,
        virtual_seeds: None,
        virtual_overhead: Default::default(),
    };
    let (reports, seeded) = bench(&options).await.unwrap();
    assert!(seeded.is_empty(), "real sockets: one run per cell");
    assert_eq!(reports.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["the-trap", "open-loop"]);
    for report in &reports {
        assert_eq!(report.summaries.len(), 2);
        for summary in &report.summaries {
            assert!(summary.requests > 0 && summary.successes > 0, "{}: {summary:?}", report.name);
            assert!(summary.p99_ms > 0.0 && summary.goodput() > 0.0, "{}: {summary:?}", report.name);
        }
        assert!(report.fraction_of_reference(&report.summaries[1]).is_some_and(|f| f > 0.0 && f <= 1.0));
        let csv = std::fs::read_to_string(out.join(format!("{}.csv", report.name))).unwrap();
        assert!(csv.starts_with("strategy,t_ms,") && csv.contains("\noracle,"), "{csv}");
        let backends = std::fs::read_to_string(out.join(format!("{}.backends.csv", report.name))).unwrap();
        assert!(backends.lines().count() > 5, "{backends}");
        let svg = std::fs::read_to_string(out.join(format!("{}.svg", report.name))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.trim_end().ends_with("</svg>"));
    }
    // The oracle never routes to the backend that fails half its requests.
    let backends = std::fs::read_to_string(out.join("the-trap.backends.csv")).unwrap();
    assert!(backends.lines().any(|line| line == "oracle,trap,0,0"), "{backends}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("| the-trap |") && summary.contains("| open-loop |"), "{summary}");
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 2, "{csv}");
    assert!(std::fs::read_to_string(out.join("summary.svg")).unwrap().contains("<rect"));
    std::fs::remove_dir_all(&out).unwrap();
}

/// The whole suite in virtual time at a tenth of its length, every built-in
/// through the Wasm boundary, two seeds.
async fn virtual_suite(out: PathBuf) -> Vec<(String, Vec<veer::scenario::Seeded>)> {
    let options = BenchOptions {
        dir: scenario_dir(),
        only: vec![],
        strategies: Strategy::defaults(),
        out,
        scale: 0.1,
        virtual_seeds: Some(2),
        virtual_overhead: veer::scenario::simulate::DEFAULT_OVERHEAD,
    };
    bench(&options).await.unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_virtual_suite_is_deterministic_and_the_oracle_leads_where_it_must() {
    let base = std::env::temp_dir().join(format!("veer-virtual-{}", std::process::id()));
    let first = virtual_suite(base.join("a")).await;
    let second = virtual_suite(base.join("b")).await;
    assert_eq!(first, second, "identical inputs, identical output");
    assert_eq!(first.len(), load_all(&scenario_dir()).unwrap().len(), "every shipped scenario ran");
    for file in ["one-dead.csv", "the-trap.backends.csv", "summary.md"] {
        let a = std::fs::read_to_string(base.join("a").join(file)).unwrap();
        assert_eq!(a, std::fs::read_to_string(base.join("b").join(file)).unwrap(), "{file}");
    }
    let cell = |scenario: &str, strategy: &str| {
        let (_, cells) = first.iter().find(|(name, _)| name == scenario).unwrap();
        cells.iter().find(|c| c.strategy == strategy).unwrap().clone()
    };
    for (scenario, _) in &first {
        let oracle = cell(scenario, Strategy::ORACLE);
        assert!(oracle.goodput.iter().all(|g| *g > 0.0), "{scenario}: {oracle:?}");
        assert!(oracle.of_reference.iter().all(|f| *f > 0.0 && *f <= 1.0), "{scenario}: {oracle:?}");
        let best = first
            .iter()
            .find(|(name, _)| name == scenario)
            .unwrap()
            .1
            .iter()
            .map(|c| c.of_reference[0])
            .fold(0.0, f64::max);
        assert_eq!(best, 1.0, "{scenario}: the reference is the best of the run");
        assert_eq!(cell(scenario, "builtin:round-robin").goodput.len(), 2, "{scenario}: a figure per seed");
    }
    // One backend of five always fails: blind rotation loses a fifth of the
    // requests, the oracle none, and a learning picker stops using it.
    let round_robin = cell("one-dead", "builtin:round-robin");
    assert!(round_robin.error_rate.iter().all(|e| (0.15..0.25).contains(e)), "{round_robin:?}");
    assert!(cell("one-dead", Strategy::ORACLE).error_rate.iter().all(|e| *e == 0.0));
    assert!(cell("one-dead", "builtin:p2c-ewma").error_rate.iter().all(|e| *e < 0.05));
    let table = veer::scenario::report::seeded_markdown(&first);
    assert!(table.contains("| one-dead |") && table.contains("virtual time, 2 seeds"), "{table}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_picker_in_the_virtual_bench_is_covered_or_refused() {
    // What `veer plugin bench` does with an author's broken component. One
    // that faults now and then once started still has every request routed
    // (the host's fallback answers for it), and the run ends with figures.
    // One that fails the host's start at load (a spin, an unknown backend,
    // a configure that never returns) is refused, as veer would
    // refuse to serve with it, naming the strategy and the reason.
    let hostile = veer_tests::hostile_plugin_file("virtual-bench");
    let path = hostile.display();
    let strategy = |mode: &str| -> Strategy { format!("{path},mode={mode}").parse().unwrap() };
    let out = std::env::temp_dir().join(format!("veer-virtual-hostile-{}", std::process::id()));
    let options = BenchOptions {
        dir: scenario_dir(),
        only: vec!["baseline".into()],
        strategies: vec![
            strategy("trap-every,every=3"),
            strategy("trap-observe"),
            strategy("none"),
            Strategy::ORACLE.parse().unwrap(),
        ],
        out: out.clone(),
        scale: 0.05,
        virtual_seeds: Some(1),
        virtual_overhead: veer::scenario::simulate::DEFAULT_OVERHEAD,
    };
    let (_, seeded) = bench(&options).await.unwrap();
    let (_, cells) = &seeded[0];
    assert_eq!(cells.len(), 4);
    for cell in cells {
        assert!(cell.goodput[0] > 0.0, "{}: {cell:?}", cell.strategy);
        assert_eq!(cell.error_rate[0], 0.0, "{}: the fallback routes every request", cell.strategy);
    }

    for (mode, reason) in [("bad-id", "not eligible"), ("loop", "deadline"), ("slow-configure", "deadline")] {
        let refused = BenchOptions { strategies: vec![strategy(mode)], ..options.clone() };
        let error = bench(&refused).await.unwrap_err().to_string();
        assert!(error.contains("baseline") && error.contains(&format!("mode={mode}")), "{mode}: {error}");
        assert!(error.contains(reason), "{mode}: {error}");
    }
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_file(hostile);
}
