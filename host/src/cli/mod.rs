//! The subcommands, a module per family; `main.rs` parses and dispatches.

pub mod bench;
pub mod plugin;
pub mod serve;

use anyhow::Context;

/// The multi-threaded runtime the control side runs on (the data-path
/// workers start their own).
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// `key=value` pairs, for picker parameters.
pub fn parse_params(params: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    params
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("parameter '{pair}' is not key=value"))
        })
        .collect()
}
