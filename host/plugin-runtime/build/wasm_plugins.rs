//! Builds workspace crates as `wasm32-wasip2` components from a build script.
//!
//! Shared by the host's build script (the built-in plugins it embeds) and the
//! end-to-end tests' (plugins that only tests load). It runs a nested `cargo`
//! with its own target directory, so it never waits on the outer build's lock,
//! and with the outer build's environment scrubbed, so host flags (and a
//! `--target` for the host) do not leak into the Wasm build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `packages` (cargo package names) with the workspace's `plugin` profile for `wasm32-wasip2`
/// and copies each `<crate_name>.wasm` into `out_dir`. Panics with cargo's exit
/// status and a hint if the build fails: a build script has no better channel.
pub fn build(workspace: &Path, packages: &[&str], out_dir: &Path) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target_dir = workspace.join("target").join("wasm-plugins");
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for package in packages {
        command.args(["-p", package]);
    }
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let outer_build_only = (key.starts_with("CARGO_") && key != "CARGO_HOME" && !key.starts_with("CARGO_NET"))
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key == "RUSTDOCFLAGS"
            || key == "DEBUG"
            || key == "OPT_LEVEL"
            || key == "PROFILE"
            || key == "TARGET"
            || key == "HOST"
            || key == "OUT_DIR"
            || key == "NUM_JOBS";
        if outer_build_only {
            command.env_remove(key.as_ref());
        }
    }
    let status = command.status().expect("failed to run cargo for the wasm32-wasip2 plugin build");
    assert!(
        status.success(),
        "building Wasm plugins {packages:?} failed ({status}); is the target installed? run `rustup target add wasm32-wasip2`"
    );
    packages
        .iter()
        .map(|package| {
            let file = format!("{}.wasm", package.replace('-', "_"));
            let built = target_dir.join("wasm32-wasip2").join("plugin").join(&file);
            let copy = out_dir.join(&file);
            std::fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
            copy
        })
        .collect()
}

/// Tells cargo to re-run the build script when any source a plugin build reads changes.
pub fn rerun_if_changed(workspace: &Path, dirs: &[&str]) {
    for dir in dirs {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
}
