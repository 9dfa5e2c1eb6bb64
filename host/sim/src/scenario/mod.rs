//! The routing benchmark: runs scenario files against every strategy and
//! reports goodput, latency and errors, each also as a fraction of an oracle's.
//!
//! A scenario ([`Scenario`], one YAML file) describes simulated backends
//! (latency, errors, capacity, phases over time) and a load. For each strategy
//! the runner starts the backends and veer in this process, drives the load
//! with its own HTTP client through veer, and records every request
//! ([`run::run`]). [`report`] turns the records into per-scenario CSV and SVG
//! and a summary over all scenarios. The `oracle` strategy is a host-side
//! picker told the true profiles ([`Oracle`]).
//!
//! [`simulate`] is the virtual-time mode (`--virtual`): the same files and
//! pickers with the clock, backends and load simulated as discrete events,
//! deterministic and run over several seeds ([`Seeded`]).
//!
//! `veer bench scenarios` is the command line; see the README for the
//! reproduce command of the published table.

pub mod oracle;
pub mod report;
pub mod run;
pub mod simulate;
pub mod spec;

use std::path::{Path, PathBuf};

pub use oracle::Oracle;
pub use report::{ScenarioReport, Summary};
pub use run::{RequestRecord, RunError, RunResult, Strategy};
pub use spec::{Scenario, SpecError};

/// What to run and where to write.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Where the scenario files are.
    pub dir: PathBuf,
    /// Only scenarios with these names (all when empty).
    pub only: Vec<String>,
    /// The strategies, in column order.
    pub strategies: Vec<Strategy>,
    /// Where results go (created if missing).
    pub out: PathBuf,
    /// Multiplies every scenario's duration, request count and phase times.
    pub scale: f64,
    /// Virtual time with this many seeds per cell ([`simulate`]); `None`
    /// runs real sockets, once per cell.
    pub virtual_seeds: Option<u32>,
    /// In virtual time, what every request costs on top of its backend's
    /// latency ([`simulate::DEFAULT_OVERHEAD`] by default).
    pub virtual_overhead: std::time::Duration,
}

/// A strategy's results in one scenario over every seed of a virtual run.
#[derive(Debug, Clone, PartialEq)]
pub struct Seeded {
    /// The strategy's label.
    pub strategy: String,
    /// Per seed: goodput as a fraction of the reference in the same seed (the
    /// better of the oracle and the best strategy; see
    /// [`ScenarioReport::reference_goodput`]).
    pub of_reference: Vec<f64>,
    /// Per seed: successful requests per (virtual) second.
    pub goodput: Vec<f64>,
    /// Per seed: p99 latency, ms.
    pub p99_ms: Vec<f64>,
    /// Per seed: the fraction of requests that failed.
    pub error_rate: Vec<f64>,
}

/// The mean and the spread (half the range) of `values`.
pub fn mean_spread(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let (low, high) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    (mean, (high - low) / 2.0)
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A scenario file is wrong; nothing was run.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `--only` named a scenario that no file defines.
    #[error("no scenario named {0:?} in {1}")]
    Unknown(String, PathBuf),
    /// `--scale` is not a positive number.
    #[error("--scale must be more than 0, got {0}")]
    Scale(f64),
    /// A run failed.
    #[error("scenario {scenario}: {source}")]
    Run {
        /// The scenario.
        scenario: String,
        /// What went wrong.
        #[source]
        source: RunError,
    },
    /// Results could not be written.
    #[error("cannot write results to {path}: {source}")]
    Write {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Reads every scenario file in `dir`, failing on the first bad one with its
/// path and problems; names must be unique.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>, SpecError> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for path in spec::files_in(dir)? {
        let scenario = Scenario::load(&path)?;
        if scenarios.iter().any(|other| other.name == scenario.name) {
            return Err(SpecError::Invalid {
                path,
                problems: vec![format!("name {:?} is used by another file", scenario.name)],
            });
        }
        scenarios.push(scenario);
    }
    Ok(scenarios)
}

/// Runs the benchmark, printing one line per run, and writes every report.
/// Returns the per-scenario reports (also in `out/summary.md`; in virtual
/// mode those of the first seed) and, in virtual mode, every strategy's
/// results over all seeds, by scenario.
pub async fn bench(options: &BenchOptions) -> Result<(Vec<ScenarioReport>, Vec<(String, Vec<Seeded>)>), BenchError> {
    if !(options.scale > 0.0 && options.scale.is_finite()) {
        return Err(BenchError::Scale(options.scale));
    }
    let mut scenarios = load_all(&options.dir)?;
    for name in &options.only {
        if !scenarios.iter().any(|s| &s.name == name) {
            return Err(BenchError::Unknown(name.clone(), options.dir.clone()));
        }
    }
    if !options.only.is_empty() {
        scenarios.retain(|s| options.only.contains(&s.name));
    }
    let write = |source| BenchError::Write { path: options.out.clone(), source };
    std::fs::create_dir_all(&options.out).map_err(write)?;
    let mut reports = Vec::new();
    let mut seeded = Vec::new();
    let mut simulator = match options.virtual_seeds {
        Some(_) => Some(
            simulate::Simulator::new(options.virtual_overhead)
                .map_err(|source| BenchError::Run { scenario: "-".into(), source })?,
        ),
        None => None,
    };
    for scenario in &scenarios {
        let failed = |source| BenchError::Run { scenario: scenario.name.clone(), source };
        if let (Some(seeds), Some(simulator)) = (options.virtual_seeds, simulator.as_mut()) {
            let (first, cells) = run_seeds(simulator, scenario, options, seeds.max(1)).map_err(failed)?;
            reports.push(report::write_scenario(&options.out, scenario, &first).map_err(write)?);
            seeded.push((scenario.name.clone(), cells));
            continue;
        }
        let mut results = Vec::new();
        for strategy in &options.strategies {
            let result = run::run(scenario, strategy, options.scale).await.map_err(failed)?;
            let summary = Summary::of(&result);
            println!(
                "{:<18} {:<24} {:>7} req  {:>8.1} ok/s  p99 {:>8.1} ms  errors {:>6.2}%",
                scenario.name,
                strategy.label,
                summary.requests,
                summary.goodput(),
                summary.p99_ms,
                summary.error_rate() * 100.0
            );
            results.push(result);
        }
        reports.push(report::write_scenario(&options.out, scenario, &results).map_err(write)?);
    }
    report::write_summary(&options.out, &reports).map_err(write)?;
    Ok((reports, seeded))
}

/// Every strategy of `options` in `scenario`, virtual, over `seeds` seeds:
/// the first seed's results (for the per-scenario files) and each strategy's
/// figures over all seeds.
fn run_seeds(
    simulator: &mut simulate::Simulator,
    scenario: &Scenario,
    options: &BenchOptions,
    seeds: u32,
) -> Result<(Vec<RunResult>, Vec<Seeded>), RunError> {
    let mut cells: Vec<Seeded> = options
        .strategies
        .iter()
        .map(|s| Seeded {
            strategy: s.label.clone(),
            of_reference: vec![],
            goodput: vec![],
            p99_ms: vec![],
            error_rate: vec![],
        })
        .collect();
    let mut first = Vec::new();
    for seed in 0..seeds {
        let results = options
            .strategies
            .iter()
            .map(|strategy| simulator.run(scenario, strategy, options.scale, u64::from(seed)))
            .collect::<Result<Vec<_>, _>>()?;
        let summaries: Vec<Summary> = results.iter().map(Summary::of).collect();
        let reference = report::reference_goodput(&summaries);
        for (cell, summary) in cells.iter_mut().zip(&summaries) {
            cell.goodput.push(summary.goodput());
            cell.p99_ms.push(summary.p99_ms);
            cell.error_rate.push(summary.error_rate());
            if let Some(reference) = reference.filter(|g| *g > 0.0) {
                cell.of_reference.push(summary.goodput() / reference);
            }
        }
        if seed == 0 {
            first = results;
        }
    }
    for cell in &cells {
        let (goodput, spread) = mean_spread(&cell.goodput);
        let (of_reference, _) = mean_spread(&cell.of_reference);
        let (p99, _) = mean_spread(&cell.p99_ms);
        let (errors, _) = mean_spread(&cell.error_rate);
        println!(
            "{:<18} {:<24} {seeds} seeds  {goodput:>8.1} ± {spread:<6.1} ok/s  {:>5.1}% of reference  p99 {p99:>8.1} ms  errors {:>6.2}%",
            scenario.name,
            cell.strategy,
            of_reference * 100.0,
            errors * 100.0
        );
    }
    Ok((first, cells))
}
