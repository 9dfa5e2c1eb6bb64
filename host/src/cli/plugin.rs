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
    /// Writes a new Rust picker crate, NAME/, against the SDK: a working
    /// policy skeleton with native tests, ready for `cargo test` and
    /// `cargo build --profile plugin --target wasm32-wasip2`.
    New {
        /// Crate and policy name: lowercase letters, digits and '-'.
        name: String,
        /// Directory to create the crate in.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// The veer-sdk to depend on (a veer checkout's sdk/ directory);
        /// defaults to the one this veer was built from.
        #[arg(long)]
        sdk: Option<std::path::PathBuf>,
    },
}

/// `veer plugin SUBCOMMAND`.
pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New { name, dir, sdk } => {
            new_plugin(&name, &dir, &sdk.unwrap_or_else(scaffold::default_sdk_dir))
        }
        PluginCommand::Test { source, params, memory_mib, call_timeout_ms, json } => {
            test_plugin(&source, &params, memory_mib, call_timeout_ms, json)
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

/// `veer plugin new NAME`: a picker crate to start from.
fn new_plugin(name: &str, dir: &std::path::Path, sdk: &std::path::Path) -> anyhow::Result<()> {
    let made = scaffold::new_plugin(name, dir, sdk)?;
    let dir = made.dir.display();
    println!("veer: wrote the picker crate {} in {dir}", made.crate_name);
    println!("  cd {dir}");
    println!("  cargo test                                             # native tests, fake host");
    println!("  cargo build --profile plugin --target wasm32-wasip2    # the component");
    println!("  veer plugin test {}                 # the contract", made.component.display());
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
