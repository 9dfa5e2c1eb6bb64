//! The `veer` command line: parses the arguments and hands each subcommand to
//! its function in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use cli::bench::Bench;
use cli::plugin::PluginCommand;
use cli::serve::{DemoArgs, RunArgs};

// glibc's allocator showed up at ~10% of the data path's CPU (malloc, free,
// consolidation) under load; mimalloc's thread-local free lists cost far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version and the commit it was built from (see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("VEER_COMMIT"), ")");

/// veer: an HTTP load balancer whose routing policy is a WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "veer", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once at start; boxing buys nothing.
enum Command {
    /// Runs the proxy in front of the given backends, or as a config file says.
    Run(RunArgs),
    /// Starts three simulated backends with different profiles and veer on
    /// 127.0.0.1:8080 in front of them, routing with builtin:p2c-ewma.
    Demo(DemoArgs),
    /// Runs simulated backends until Ctrl-C, e.g.
    /// `--backend "name=a,port=9001,latency=10ms,jitter=5ms,errors=0.1,kind=500,capacity=50"`;
    /// with no `--backend`, the demo's three.
    Sim {
        /// A backend spec; repeat for each.
        #[arg(long = "backend")]
        backends: Vec<veer::sim::SimBackendCli>,
    },
    /// Validates a config file without starting: every problem is reported
    /// with file:line:col, and the picker is loaded and smoke-called.
    Check {
        /// The YAML config file.
        file: std::path::PathBuf,
    },
    /// Lists the built-in pickers with their versions.
    Plugins,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Loads a picker (a path or `builtin:NAME`), configures it with
    /// `key=value` parameters and smoke-tests it, without serving traffic.
    CheckPlugin {
        /// `builtin:NAME` or a path to a component.
        source: String,
        /// Parameters, as `key=value`.
        params: Vec<String>,
    },
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Prints a completion script for SHELL, e.g.
    /// `veer completions bash > /etc/bash_completion.d/veer`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Prints veer's man page (roff), e.g. `veer man > veer.1 && man ./veer.1`.
    Man,
    /// Compiles the component on stdin for a serving veer (which starts
    /// itself with this to keep the compiler out of its own memory).
    #[command(name = "__compile", hide = true)]
    Compile,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before logging is set up: the artifact is the child's only stdout.
    if matches!(cli.command, Command::Compile) {
        return match veer::plugin::serve_compile_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("veer: {error}");
                ExitCode::FAILURE
            }
        };
    }
    // The benchmark starts veer once per run; its "serving" lines would bury the results.
    let default_level = if matches!(cli.command, Command::Bench { .. }) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("veer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One function per subcommand; this only dispatches.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => cli::serve::run(args),
        Command::Demo(args) => cli::serve::demo(args),
        Command::Check { file } => cli::serve::check(&file),
        Command::Sim { backends } => {
            cli::tokio_runtime()?.block_on(veer::sim::run_cli(backends, std::net::IpAddr::from([127, 0, 0, 1])))
        }
        Command::Bench { bench } => cli::bench::run(bench),
        Command::Plugins => cli::plugin::list_builtins(),
        Command::CheckPlugin { source, params } => cli::plugin::check_plugin(&source, &params),
        Command::Plugin(command) => cli::plugin::run(command),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "veer", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Command::Compile => unreachable!("run before logging is set up, in main"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_version_names_the_commit() {
        let version = Cli::command().render_version();
        assert!(version.starts_with(&format!("veer {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    }

    #[test]
    fn completions_cover_every_subcommand_and_bash_parses_them() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "veer", &mut script);
            let script = String::from_utf8(script).unwrap();
            for subcommand in ["run", "check", "demo", "completions", "plugin"] {
                assert!(script.contains(subcommand), "{shell}: {subcommand}");
            }
            if shell == clap_complete::Shell::Bash {
                let file = std::env::temp_dir().join(format!("veer-completion-{}.bash", std::process::id()));
                std::fs::write(&file, &script).unwrap();
                let checked = std::process::Command::new("bash").arg("-n").arg(&file).status().unwrap();
                let _ = std::fs::remove_file(&file);
                assert!(checked.success(), "bash -n rejects the completion script");
            }
        }
    }

    #[test]
    fn the_man_page_has_a_title_and_the_subcommands() {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH veer"), "{page}");
        assert!(page.contains(".TH veer 1"), "{page}");
        for subcommand in ["run", "check", "completions", "man"] {
            assert!(page.contains(subcommand), "{subcommand}");
        }
    }
}
