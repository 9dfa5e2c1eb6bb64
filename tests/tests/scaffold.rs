//! `veer plugin new` writes a crate that tests, builds and loads with the
//! README's commands: generated into target/, tested natively, built for
//! wasm32-wasip2, and run through the conformance suite and a real picker slot.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::Path;
use std::process::Command;

use veer::plugin::scaffold;
use veer::plugin::{PickerSlot, PluginSource, conformance};
use veer_tests::runtime;

fn cargo(dir: &Path, args: &[&str], target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        // Its own target dir: this test runs inside `cargo test`, which holds
        // the workspace's build lock. It persists, so reruns are incremental.
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .unwrap();
    assert!(status.success(), "cargo {args:?} failed in {}", dir.display());
}

#[test]
fn a_generated_plugin_tests_builds_and_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let parent = root.join("target/scaffold-test");
    let _ = std::fs::remove_dir_all(parent.join("header-canary"));
    let made = scaffold::new_plugin("header-canary", &parent, &scaffold::default_sdk_dir()).unwrap();
    // The workspace's lock file pins the same dependency versions the SDK is
    // built with here, so nothing new is resolved or downloaded.
    std::fs::copy(root.join("Cargo.lock"), made.dir.join("Cargo.lock")).unwrap();
    let target_dir = root.join("target/scaffold-target");

    cargo(&made.dir, &["test", "--quiet"], &target_dir);
    cargo(&made.dir, &["build", "--quiet", "--profile", "plugin", "--target", "wasm32-wasip2"], &target_dir);

    let component = target_dir.join(made.component.strip_prefix("target").unwrap());
    let runtime = runtime();
    let report = conformance::run(&runtime, &PluginSource::Path(component.clone()), &[]);
    assert!(report.passed(), "{report}");
    assert_eq!(report.plugin.as_deref(), Some("header-canary 0.1.0"));

    // And it loads as the proxy would load it, with its parameter.
    let slot = PickerSlot::new(runtime, &PluginSource::Path(component), vec![("start".into(), "2".into())]).unwrap();
    assert_eq!(slot.current().info().name, "header-canary");
}
