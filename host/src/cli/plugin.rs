//! `veer plugins`, `veer check-plugin` and `veer plugin …`: tools for
//! picker authors.

use anyhow::bail;
use veer::plugin::{BUILTIN_NAMES, Limits, PickerSlot, PluginRuntime, PluginSource, conformance, scaffold};

use super::parse_params;

/// `veer plugin …`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Runs the conformance suite on a picker (a path or `builtin:NAME`): the
    /// contract of wit/picker.wit, checked call by call under the runtime's
    /// deadline and memory cap. Exits non-zero if any check fails.
    Test {
        /// `builtin:NAME` or a path to a component.
        source: String,
        /// A parameter for `configure`, `key=value`; repeat for each.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Linear-memory cap per instance, in MiB (the proxy's default: 64).
        #[arg(long)]
        memory_mib: Option<usize>,
        /// Deadline for `pick` and `observe`, in milliseconds (default: 5).
        #[arg(long)]
        call_timeout_ms: Option<u64>,
        /// Prints the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs a picker (a path or `builtin:NAME`) through the routing scenarios
    /// in virtual time, beside every built-in and the oracle, and prints the
    /// goodput table (% of the reference: the better of the oracle and the best strategy), p99 and error rates: deterministic,
    /// seconds long.
    Bench {
        /// `builtin:NAME` or a path to a component.
        source: String,
        /// A parameter for `configure`, `key=value`; repeat for each.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Directory of scenario files.
        #[arg(long, default_value = "scenarios")]
        dir: std::path::PathBuf,
        /// Run only this scenario; repeat for several.
        #[arg(long)]
        only: Vec<String>,
        /// Seeds per cell (mean and spread are reported).
        #[arg(long, default_value_t = 1)]
        seeds: u32,
        /// Multiplies each scenario's length and phase times.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Where the per-scenario CSV and SVG files go.
        #[arg(long, default_value = "target/plugin-bench")]
        out: std::path::PathBuf,
    },
    /// Writes a new picker project, NAME/, in Rust, Python, JavaScript or C:
    /// a working policy (round robin with a parameter), its tests against the
    /// language's fake host, and its build. Prints the commands to run.
    New {
        /// Policy name: lowercase letters, digits and '-'.
        name: String,
        /// The language: rust, python, js or c.
        #[arg(long, default_value = "rust")]
        lang: scaffold::Lang,
        /// Directory to create the project in.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// The veer checkout whose SDK, WIT and C toolchain the project uses;
        /// defaults to the one this veer was built from.
        #[arg(long)]
        veer_dir: Option<std::path::PathBuf>,
    },
}

/// `veer plugin SUBCOMMAND`.
pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New { name, lang, dir, veer_dir } => {
            new_plugin(&name, lang, &dir, &veer_dir.unwrap_or_else(scaffold::default_veer_dir))
        }
        PluginCommand::Test { source, params, memory_mib, call_timeout_ms, json } => {
            test_plugin(&source, &params, memory_mib, call_timeout_ms, json)
        }
        PluginCommand::Bench { source, params, dir, only, seeds, scale, out } => {
            bench_plugin(&source, &params, dir, only, seeds, scale, out)
        }
    }
}

/// `veer plugins`: the built-in pickers.
pub fn list_builtins() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new(Limits::default())?;
    for name in BUILTIN_NAMES {
        let slot = PickerSlot::new(runtime.clone(), &PluginSource::Builtin(name.to_string()), vec![])?;
        let picker = slot.current();
        let info = picker.info();
        let feedback = if info.wants_outcomes { "outcomes" } else { "-" };
        println!("builtin:{:<12} version {:<8} feedback {feedback}", info.name, info.version);
    }
    Ok(())
}

/// `veer check-plugin SOURCE`: it loads, configures and passes its smoke test.
pub fn check_plugin(source: &str, params: &[String]) -> anyhow::Result<()> {
    let runtime = PluginRuntime::new(Limits::default())?;
    let slot = PickerSlot::new(runtime, &PluginSource::parse(source), parse_params(params)?)?;
    let info = slot.current().info().clone();
    println!("ok: {} {} from {} (outcomes: {})", info.name, info.version, info.source, info.wants_outcomes);
    Ok(())
}

/// `veer plugin new NAME --lang LANG`: a picker project to start from.
fn new_plugin(
    name: &str,
    lang: scaffold::Lang,
    dir: &std::path::Path,
    veer_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let made = scaffold::new_plugin(name, lang, dir, veer_dir)?;
    println!("veer: wrote the {} picker {} in {}", made.lang.name(), made.name, made.dir.display());
    println!("  cd {}", made.dir.display());
    let test = format!("veer plugin test {}", made.component.display());
    let bench = format!("veer plugin bench {}", made.component.display());
    let steps = made.steps.iter().map(|(command, what)| (command.as_str(), *what));
    for (command, what) in steps.chain([(test.as_str(), "the contract"), (bench.as_str(), "how it routes")]) {
        println!("  {command:<56} # {what}");
    }
    Ok(())
}

/// `veer plugin test SOURCE`: the conformance suite, as text or JSON.
fn test_plugin(
    source: &str,
    params: &[String],
    memory_mib: Option<usize>,
    call_timeout_ms: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let mut limits = Limits::default();
    if let Some(mib) = memory_mib {
        limits.memory_bytes = mib << 20;
    }
    if let Some(ms) = call_timeout_ms {
        limits.call_timeout = std::time::Duration::from_millis(ms);
    }
    let runtime = PluginRuntime::new(limits)?;
    let report = conformance::run(&runtime, &PluginSource::parse(source), &parse_params(params)?);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if !report.passed() {
        bail!("{source} does not conform to the picker contract ({} failed check(s))", report.failures().count());
    }
    Ok(())
}

/// `veer plugin bench SOURCE`: the scenarios in virtual time, the picker beside
/// the built-ins and the oracle.
fn bench_plugin(
    source: &str,
    params: &[String],
    dir: std::path::PathBuf,
    only: Vec<String>,
    seeds: u32,
    scale: f64,
    out: std::path::PathBuf,
) -> anyhow::Result<()> {
    use veer::scenario::{BenchOptions, Strategy};
    let params = parse_params(params)?;
    let label = std::iter::once(source.to_string())
        .chain(params.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",");
    let candidate: Strategy = label.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let mut strategies = vec![candidate];
    strategies.extend(Strategy::defaults().into_iter().filter(|s| s.label != source));
    let options = BenchOptions {
        dir,
        only,
        strategies,
        out: out.clone(),
        scale,
        virtual_seeds: Some(seeds.max(1)),
        virtual_overhead: veer::scenario::simulate::DEFAULT_OVERHEAD,
    };
    let (_, seeded) = super::tokio_runtime()?.block_on(veer::scenario::bench(&options))?;
    println!("\n{}", veer::scenario::report::seeded_markdown(&seeded));
    println!("per-scenario CSV and SVG in {}", out.display());
    Ok(())
}
