//! Compiles the built-in picker plugins to Wasm components so that `cargo build`
//! alone produces a `veer` binary with all of them embedded (see `src/builtin.rs`).

#[path = "build/wasm_plugins.rs"]
mod wasm_plugins;

use std::path::PathBuf;

/// Cargo packages of the built-in plugins, in the order `veer` lists them.
const BUILTIN_PACKAGES: &[&str] = &[
    "veer-plugin-round-robin",
    "veer-plugin-least-conn",
    "veer-plugin-weighted-rr",
    "veer-plugin-p2c-ewma",
    "veer-plugin-q-learning",
    "veer-plugin-consistent-hash",
    "veer-plugin-least-response-time",
    "veer-plugin-prequal",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.ancestors().nth(2).expect("host/plugin-runtime/ lives in the workspace").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    wasm_plugins::rerun_if_changed(&workspace, &["wit", "core", "sdk", "plugins", "Cargo.lock"]);
    wasm_plugins::build(&workspace, BUILTIN_PACKAGES, &out_dir);
}
