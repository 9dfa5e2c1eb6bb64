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
//! `veer bench scenarios` is the command line; see the README for the
//! reproduce command of the published table.

pub mod oracle;
pub mod report;
pub mod run;
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
/// Returns the per-scenario reports (also in `out/summary.md`).
pub async fn bench(options: &BenchOptions) -> Result<Vec<ScenarioReport>, BenchError> {
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
    for scenario in &scenarios {
        let mut results = Vec::new();
        for strategy in &options.strategies {
            let result = run::run(scenario, strategy, options.scale)
                .await
                .map_err(|source| BenchError::Run { scenario: scenario.name.clone(), source })?;
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
    Ok(reports)
}
