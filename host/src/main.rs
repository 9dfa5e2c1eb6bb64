//! The `veer` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use veer::plugin::{BUILTIN_NAMES, Limits, PickerSlot, PluginRuntime, PluginSource};

/// veer: an HTTP load balancer whose routing policy is a WebAssembly component.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists the built-in pickers with their versions.
    Plugins,
    /// Loads a picker (a path or `builtin:NAME`), configures it with
    /// `key=value` parameters and smoke-tests it, without serving traffic.
    CheckPlugin {
        /// `builtin:NAME` or a path to a component.
        source: String,
        /// Parameters, as `key=value`.
        params: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("veer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = PluginRuntime::new(Limits::default())?;
    match cli.command {
        Command::Plugins => {
            for name in BUILTIN_NAMES {
                let slot = PickerSlot::new(runtime.clone(), &PluginSource::Builtin(name.to_string()), vec![])?;
                let picker = slot.current();
                let info = picker.info();
                let feedback = if info.wants_outcomes { "outcomes" } else { "-" };
                println!("builtin:{:<12} version {:<8} feedback {feedback}", info.name, info.version);
            }
        }
        Command::CheckPlugin { source, params } => {
            let params = params
                .iter()
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("parameter '{pair}' is not key=value"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let slot = PickerSlot::new(runtime, &PluginSource::parse(&source), params)?;
            let info = slot.current().info().clone();
            println!("ok: {} {} from {} (outcomes: {})", info.name, info.version, info.source, info.wants_outcomes);
        }
    }
    Ok(())
}
