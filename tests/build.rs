//! Builds the Wasm plugins that only the tests load: the hostile plugin
//! (`plugins/hostile`), plugins built against the released 0.1.0 and 0.1.1
//! contracts (`plugins/contract-0.1.*`) and the example plugin (`examples/affinity-plugin`).

#[path = "../host/plugin-runtime/build/wasm_plugins.rs"]
mod wasm_plugins;

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("tests/ lives in the workspace root").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Only the Rust example: the Python and JavaScript ones are built by their own
    // scripts, and cargo would otherwise rescan (and rebuild on) their node_modules.
    wasm_plugins::rerun_if_changed(
        &workspace,
        &["wit", "core", "sdk", "tests/plugins", "examples/affinity-plugin", "Cargo.lock"],
    );
    wasm_plugins::build(
        &workspace,
        &[
            "veer-test-plugin-hostile",
            "veer-test-plugin-contract-0-1-0",
            "veer-test-plugin-contract-0-1-1",
            "veer-example-affinity",
        ],
        &out_dir,
    );
}
