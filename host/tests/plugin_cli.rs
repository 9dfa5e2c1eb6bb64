//! `veer plugin test` and `veer plugin new` as a user runs them: the binary,
//! its output and its exit code.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::process::{Command, Output};

fn veer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veer")).args(args).env("RUST_LOG", "error").output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn plugin_test_passes_a_builtin_and_exits_zero() {
    let output = veer(&["plugin", "test", "builtin:round-robin"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("pass  respects-exclude"), "{text}");
    assert!(text.contains("checks passed"), "{text}");
}

#[test]
fn plugin_test_reports_a_failure_and_exits_non_zero() {
    // round-robin takes no parameters, so `configure-accepts` must fail.
    let output = veer(&["plugin", "test", "builtin:round-robin", "--param", "weighted=true"]);
    let text = stdout(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("FAIL  configure-accepts"), "{text}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not conform"));
}

#[test]
fn plugin_test_json_is_machine_readable() {
    let output = veer(&["plugin", "test", "builtin:least-conn", "--param", "weighted=false", "--json"]);
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["plugin"], "least-conn 0.1.0");
    assert!(report["checks"].as_array().unwrap().iter().all(|c| c["passed"] == true), "{report}");
}

#[test]
fn plugin_new_writes_a_crate_and_refuses_to_overwrite() {
    let dir = std::env::temp_dir().join(format!("veer-plugin-new-cli-{}", std::process::id()));
    let dir_text = dir.to_str().unwrap();
    let output = veer(&["plugin", "new", "my-policy", "--dir", dir_text]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).contains("cargo build --profile plugin --target wasm32-wasip2"));
    assert!(dir.join("my-policy/Cargo.toml").is_file());
    assert!(dir.join("my-policy/src/lib.rs").is_file());
    for (lang, file) in [("python", "policy.py"), ("js", "policy.js"), ("c", "c_policy.c")] {
        let name = if lang == "c" { "c-policy" } else { lang };
        let output = veer(&["plugin", "new", name, "--lang", lang, "--dir", dir_text]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout(&output).contains("bash build.sh"), "{}", stdout(&output));
        assert!(dir.join(name).join(file).is_file(), "{lang}: {file}");
    }
    let unknown = veer(&["plugin", "new", "x", "--lang", "go", "--dir", dir_text]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("known: rust, python, js, c"));
    let again = veer(&["plugin", "new", "my-policy", "--dir", dir_text]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plugin_bench_runs_a_picker_beside_the_builtins_in_virtual_time() {
    let out = std::env::temp_dir().join(format!("veer-plugin-bench-{}", std::process::id()));
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
    let args = ["plugin", "bench", "builtin:least-conn", "--dir", scenarios, "--only", "one-dead", "--scale", "0.1"];
    let output = veer(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = stdout(&output);
    assert!(text.contains("Goodput, % of the reference"), "{text}");
    assert!(text.contains("| scenario | least-conn | round-robin |"), "the candidate first, no duplicate: {text}");
    assert!(text.contains("| one-dead |") && text.contains("| oracle |"), "{text}");
    let missing = veer(&["plugin", "bench", "/nonexistent.wasm", "--dir", scenarios, "--only", "one-dead"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.wasm"), "names what failed");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bench_scenarios_refuses_a_nonsense_overhead_and_seeds_without_virtual_time() {
    for bad in ["--overhead-ms=-1", "--overhead-ms=nan", "--overhead-ms=inf"] {
        let output = veer(&["bench", "scenarios", "--virtual", bad]);
        assert!(!output.status.success(), "{bad}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("--overhead-ms must be"), "{bad}");
    }
    let output = veer(&["bench", "scenarios", "--seeds", "3"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--virtual"));
}
