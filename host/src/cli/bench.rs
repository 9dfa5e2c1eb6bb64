//! `veer bench …`: the routing scenarios.

/// `veer bench …`.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Runs routing scenarios (YAML files) against each strategy and writes
    /// CSV, SVG plots and a summary table (see the README's "Routing scenarios").
    Scenarios {
        /// Directory of scenario files.
        #[arg(long, default_value = "scenarios")]
        dir: std::path::PathBuf,
        /// Run only this scenario; repeat for several.
        #[arg(long)]
        only: Vec<String>,
        /// Strategies to compare: `oracle`, or `SOURCE[,key=value...]` with SOURCE
        /// `builtin:NAME`, `native:round-robin` or a component path. Default: every
        /// built-in and the oracle.
        #[arg(long, num_args = 1..)]
        strategies: Vec<veer::scenario::Strategy>,
        /// Where results go.
        #[arg(long, default_value = "target/scenarios")]
        out: std::path::PathBuf,
        /// Multiplies each scenario's length and phase times (0.1 for a quick look).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Virtual time: the backends, the load and the clock simulated as
        /// discrete events, the pickers called through the real Wasm boundary.
        /// Identical output for identical inputs, in seconds.
        #[arg(long = "virtual")]
        virtual_time: bool,
        /// Seeds per cell in virtual mode (mean and spread are reported).
        #[arg(long, default_value_t = 5, requires = "virtual_time")]
        seeds: u32,
        /// In virtual mode, what every request costs on top of its backend's
        /// latency (the proxy, the network), in ms; bench/virtual_vs_real.sh
        /// checks the default against real sockets.
        #[arg(long, default_value_t = 1.3, requires = "virtual_time")]
        overhead_ms: f64,
    },
}

/// `veer bench SUBCOMMAND`.
pub fn run(bench: Bench) -> anyhow::Result<()> {
    let Bench::Scenarios { dir, only, strategies, out, scale, virtual_time, seeds, overhead_ms } = bench;
    let strategies = if strategies.is_empty() { veer::scenario::Strategy::defaults() } else { strategies };
    let virtual_seeds = virtual_time.then_some(seeds);
    let virtual_overhead = std::time::Duration::try_from_secs_f64(overhead_ms / 1e3)
        .map_err(|_| anyhow::anyhow!("--overhead-ms must be a number of milliseconds, got {overhead_ms}"))?;
    let options = veer::scenario::BenchOptions {
        dir,
        only,
        strategies,
        out: out.clone(),
        scale,
        virtual_seeds,
        virtual_overhead,
    };
    let (reports, seeded) = super::tokio_runtime()?.block_on(veer::scenario::bench(&options))?;
    if virtual_time {
        println!("\n{}", veer::scenario::report::seeded_markdown(&seeded));
    } else {
        println!("\n{}", veer::scenario::report::markdown(&reports));
    }
    println!("results in {}", out.display());
    Ok(())
}
