//! The `veer` command line.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use veer::plugin::{BUILTIN_NAMES, Limits, PickerSlot, PluginRuntime, PluginSource, conformance, scaffold};
use veer::pool::{BackendProtocol, BackendSpec};
use veer::proxy::ProxyConfig;
use veer::server::{self, ServerOptions};

// glibc's allocator showed up at ~10% of the data path's CPU (malloc, free,
// consolidation) under load; mimalloc's thread-local free lists cost far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// veer: an HTTP load balancer whose routing policy is a WebAssembly component.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the proxy in front of the given backends.
    Run {
        /// Address clients connect to.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin API (loopback only for now).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// A backend: `[NAME=]HOST:PORT[,weight=N][,h2]`; repeat for each.
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// The picker: `builtin:NAME` or a path to a component.
        #[arg(long, default_value = "builtin:p2c-ewma")]
        picker: String,
        /// A picker parameter, `key=value`; repeat for each.
        #[arg(long = "param")]
        params: Vec<String>,
    },
    /// Starts three simulated backends with different profiles and veer on
    /// 127.0.0.1:8080 in front of them, routing with builtin:p2c-ewma.
    Demo {
        /// Address clients connect to.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin API.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// The picker.
        #[arg(long, default_value = "builtin:p2c-ewma")]
        picker: String,
    },
    /// Runs simulated backends until Ctrl-C, e.g.
    /// `--backend "name=a,port=9001,latency=10ms,jitter=5ms,errors=0.1,kind=500,capacity=50"`;
    /// with no `--backend`, the demo's three.
    Sim {
        /// A backend spec; repeat for each.
        #[arg(long = "backend")]
        backends: Vec<veer::sim::SimBackendCli>,
    },
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
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("veer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { listen, admin, backends, picker, params } => {
            let backends = backends
                .iter()
                .enumerate()
                .map(|(i, text)| parse_backend(i, text))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let options = ServerOptions {
                listen,
                admin: Some(admin),
                backends,
                picker: PluginSource::parse(&picker),
                params: parse_params(&params)?,
                proxy: ProxyConfig::default(),
                limits: Limits::default(),
            };
            tokio_runtime()?.block_on(serve_until_signal(options))
        }
        Command::Demo { listen, admin, picker } => tokio_runtime()?.block_on(demo(listen, admin, picker)),
        Command::Sim { backends } => {
            tokio_runtime()?.block_on(veer::sim::run_cli(backends, std::net::IpAddr::from([127, 0, 0, 1])))
        }
        Command::Plugins => {
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
        Command::CheckPlugin { source, params } => {
            let runtime = PluginRuntime::new(Limits::default())?;
            let slot = PickerSlot::new(runtime, &PluginSource::parse(&source), parse_params(&params)?)?;
            let info = slot.current().info().clone();
            println!("ok: {} {} from {} (outcomes: {})", info.name, info.version, info.source, info.wants_outcomes);
            Ok(())
        }
        Command::Plugin(PluginCommand::New { name, dir, sdk }) => {
            let made = scaffold::new_plugin(&name, &dir, &sdk.unwrap_or_else(scaffold::default_sdk_dir))?;
            let dir = made.dir.display();
            println!("veer: wrote the picker crate {} in {dir}", made.crate_name);
            println!("  cd {dir}");
            println!("  cargo test                                             # native tests, fake host");
            println!("  cargo build --profile plugin --target wasm32-wasip2    # the component");
            println!("  veer plugin test {}                 # the contract", made.component.display());
            Ok(())
        }
        Command::Plugin(PluginCommand::Test { source, params, memory_mib, call_timeout_ms, json }) => {
            let mut limits = Limits::default();
            if let Some(mib) = memory_mib {
                limits.memory_bytes = mib << 20;
            }
            if let Some(ms) = call_timeout_ms {
                limits.call_timeout = std::time::Duration::from_millis(ms);
            }
            let runtime = PluginRuntime::new(limits)?;
            let report = conformance::run(&runtime, &PluginSource::parse(&source), &parse_params(&params)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if !report.passed() {
                bail!(
                    "{source} does not conform to the picker contract ({} failed check(s))",
                    report.failures().count()
                );
            }
            Ok(())
        }
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully.
async fn serve_until_signal(options: ServerOptions) -> anyhow::Result<()> {
    let running = server::start(options).await?;
    println!("veer: proxy on http://{}", running.proxy_addr);
    if let Some(admin) = running.admin_addr {
        println!("veer: admin API on http://{admin}/status");
    }
    wait_for_signal().await?;
    println!("veer: shutting down (in-flight requests get up to the grace period)");
    running.shutdown().await;
    Ok(())
}

/// The demo: simulated backends plus veer, no config file.
async fn demo(listen: SocketAddr, admin: SocketAddr, picker: String) -> anyhow::Result<()> {
    // Kept alive for the whole demo: dropping the handles stops the backends.
    let backends = veer::sim::start_many(veer::sim::demo_specs(), std::net::IpAddr::from([127, 0, 0, 1]), None).await?;
    for backend in &backends {
        println!("veer demo: backend {:<8} {}  {}", backend.name(), backend.url(), backend.profile());
    }
    let specs = backends
        .iter()
        .map(|b| BackendSpec {
            name: b.name().to_string(),
            address: b.addr(),
            weight: 1,
            protocol: BackendProtocol::Http1,
        })
        .collect();
    let options = ServerOptions {
        listen,
        admin: Some(admin),
        backends: specs,
        picker: PluginSource::parse(&picker),
        params: Vec::new(),
        proxy: ProxyConfig::default(),
        limits: Limits::default(),
    };
    println!("veer demo: try  curl -i http://{listen}/   and   curl http://{admin}/status");
    println!(
        "veer demo: swap the picker live:  curl -X PUT http://{admin}/picker -d '{{\"source\": \"builtin:q-learning\"}}'"
    );
    serve_until_signal(options).await?;
    for backend in &backends {
        backend.shutdown().await;
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Parses `[NAME=]HOST:PORT[,weight=N][,h2]`.
fn parse_backend(index: usize, text: &str) -> anyhow::Result<BackendSpec> {
    let mut fields = text.split(',');
    let target = fields.next().unwrap_or_default();
    let (name, address) = match target.split_once('=') {
        Some((name, address)) => (name.to_string(), address),
        None => (format!("backend-{}", index + 1), target),
    };
    let address: SocketAddr =
        address.parse().with_context(|| format!("--backend '{text}': '{address}' is not HOST:PORT"))?;
    let mut spec = BackendSpec { name, address, weight: 1, protocol: BackendProtocol::Http1 };
    for field in fields {
        match field.split_once('=') {
            Some(("weight", w)) => {
                spec.weight = w.parse().ok().filter(|w| (1..=1_000_000).contains(w)).with_context(|| {
                    format!("--backend '{text}': weight must be a whole number from 1 to 1000000, got '{w}'")
                })?
            }
            None if field == "h2" => spec.protocol = BackendProtocol::Http2,
            _ => bail!("--backend '{text}': unknown option '{field}' (expected weight=N or h2)"),
        }
    }
    Ok(spec)
}

fn parse_params(params: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    params
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("parameter '{pair}' is not key=value"))
        })
        .collect()
}
