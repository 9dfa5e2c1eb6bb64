//! `veer plugin new NAME --lang rust|python|js|c` writes a project that tests,
//! builds and loads with the commands it prints: each language's scaffold is
//! generated under target/, its own tests run against the language's fake host,
//! its component is built and held to the conformance suite, and it loads in a
//! real picker slot with its parameter.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::{Path, PathBuf};
use std::process::Command;

use veer::plugin::scaffold::{self, Lang};
use veer::plugin::{PickerSlot, PluginSource, conformance};
use veer_tests::runtime;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs `program args` in `dir` with `env`; fails the test with its output.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &Path)]) {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed in {}:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn generate(name: &str, lang: Lang) -> scaffold::Scaffold {
    let parent = root().join("target/scaffold-test");
    let _ = std::fs::remove_dir_all(parent.join(name));
    scaffold::new_plugin(name, lang, &parent, &scaffold::default_veer_dir()).unwrap()
}

/// The component passes conformance and loads in a slot with `start=2`.
fn conforms_and_loads(component: PathBuf, name: &str) {
    let runtime = runtime();
    let report = conformance::run(&runtime, &PluginSource::Path(component.clone()), &[]);
    assert!(report.passed(), "{report}");
    assert_eq!(report.plugin.as_deref(), Some(format!("{name} 0.1.0").as_str()));
    let slot = PickerSlot::new(runtime, &PluginSource::Path(component), vec![("start".into(), "2".into())]).unwrap();
    assert_eq!(slot.current().info().name, name);
}

#[test]
fn a_generated_rust_plugin_tests_builds_and_loads() {
    let made = generate("header-canary", Lang::Rust);
    // The workspace's lock file pins the same dependency versions the SDK is
    // built with here, so nothing new is resolved or downloaded.
    std::fs::copy(root().join("Cargo.lock"), made.dir.join("Cargo.lock")).unwrap();
    // Its own target dir: this test runs inside `cargo test`, which holds the
    // workspace's build lock. It persists, so reruns are incremental.
    let target_dir = root().join("target/scaffold-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let env = [("CARGO_TARGET_DIR", target_dir.as_path())];
    run(&made.dir, &cargo, &["test", "--quiet"], &env);
    run(&made.dir, &cargo, &["build", "--quiet", "--profile", "plugin", "--target", "wasm32-wasip2"], &env);
    conforms_and_loads(target_dir.join(made.component.strip_prefix("target").unwrap()), "header-canary");
}

#[test]
fn a_generated_python_plugin_tests_builds_and_loads() {
    let made = generate("py-canary", Lang::Python);
    // The example's venv (scripts/test.sh built it) has the same pinned toolchain.
    let venv = root().join("target/example-toolchains/python");
    let env = [("VEER_PYTHON_VENV", venv.as_path())];
    run(&made.dir, "bash", &["build.sh", "test"], &env);
    run(&made.dir, "bash", &["build.sh"], &env);
    conforms_and_loads(made.dir.join(&made.component), "py-canary");
}

#[test]
fn a_generated_javascript_plugin_tests_builds_and_loads() {
    let made = generate("js-canary", Lang::Js);
    // The example's jco (scripts/test.sh installed it) is the same pinned version.
    std::os::unix::fs::symlink(root().join("examples/js-plugin/node_modules"), made.dir.join("node_modules")).unwrap();
    run(&made.dir, "bash", &["build.sh", "test"], &[]);
    run(&made.dir, "bash", &["build.sh"], &[]);
    conforms_and_loads(made.dir.join(&made.component), "js-canary");
}

#[test]
fn a_generated_c_plugin_builds_and_loads() {
    let made = generate("c-canary", Lang::C);
    // Built by `cargo test` itself (a workspace member); building it again
    // from build.sh would wait on the build lock this test runs under.
    let tool = root().join("target/debug/veer-c-component");
    assert!(tool.is_file(), "{} is missing: run bash examples/c-plugin/build.sh", tool.display());
    run(&made.dir, "bash", &["build.sh"], &[("VEER_C_COMPONENT", tool.as_path())]);
    conforms_and_loads(made.dir.join(&made.component), "c-canary");
}
