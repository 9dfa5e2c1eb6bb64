//! The conformance suite (`veer::plugin::conformance`, `veer plugin test`) over
//! every built-in, the Rust, Python and JavaScript examples — and proof that it
//! can fail: the hostile plugin's spinning, memory-eating and lying modes.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::sync::{Arc, OnceLock};
use veer::plugin::conformance::{self, Report};

use veer::plugin::{BUILTIN_NAMES, Limits, PluginRuntime, PluginSource};
use veer_tests::{
    AFFINITY_EXAMPLE, CONTRACT_0_1_0_PLUGIN, CONTRACT_0_1_1_PLUGIN, c_example, hostile_plugin_file, js_example,
    python_example, runtime_with,
};

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn run(source: PluginSource, pairs: &[(&str, &str)]) -> Report {
    // One runtime for the file: it caches compiled code by content, and the
    // Python and JavaScript components take seconds each to compile.
    static RUNTIME: OnceLock<Arc<PluginRuntime>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| runtime_with(Limits { seed: Some(5), ..Limits::default() }));
    conformance::run(runtime, &source, &params(pairs))
}

fn assert_conforms(report: &Report) {
    assert!(report.passed(), "{report}");
    // Every check of the suite ran: a plugin cannot pass by skipping.
    for name in [
        "instantiates",
        "configure-accepts",
        "configure-rejects-unknown",
        "empty-pool",
        "picks-only-eligible",
        "follows-membership",
        "respects-exclude",
        "all-ineligible",
        "state-round-trip",
        "import-garbage",
        "pick-deadline",
        "memory-cap",
        "sustained-load",
    ] {
        assert!(report.check(name).is_some(), "{name} did not run:\n{report}");
    }
}

#[test]
fn every_builtin_conforms() {
    for name in BUILTIN_NAMES {
        let source = PluginSource::Builtin(name.to_string());
        let report = run(source.clone(), &[]);
        assert_conforms(&report);
        // Outcomes are only checked on pickers that ask for them.
        let slot = veer::plugin::PickerSlot::new(veer_tests::runtime(), &source, vec![]).unwrap();
        let subscribes = slot.current().info().wants_outcomes;
        assert_eq!(report.check("observe-odd-outcomes").is_some(), subscribes, "{name}:\n{report}");
    }
}

#[test]
fn builtins_conform_with_non_default_parameters_too() {
    assert_conforms(&run(PluginSource::Builtin("least-conn".into()), &[("weighted", "false")]));
    assert_conforms(&run(PluginSource::Builtin("q-learning".into()), &[("epsilon_max", "0.5")]));
}

#[test]
fn the_rust_example_conforms() {
    let path = std::env::temp_dir().join(format!("veer-affinity-{}.wasm", std::process::id()));
    std::fs::write(&path, AFFINITY_EXAMPLE).unwrap();
    assert_conforms(&run(PluginSource::Path(path.clone()), &[]));
    assert_conforms(&run(PluginSource::Path(path), &[("header", "x-user")]));
}

/// Components built against every earlier release of the contract load
/// into this host, which speaks a later 0.1 release, and pass the whole
/// suite: a patch release only adds (`docs/wit-versions.md`). 0.1.0's `host`
/// has no `in-flight`; the 0.1.1 one picks with it.
#[test]
fn components_built_against_every_earlier_contract_still_conform() {
    let current = include_str!("../../wit/picker.wit");
    let earlier = [
        ("0.1.0", include_str!("../plugins/contract-0.1.0/wit/picker.wit"), CONTRACT_0_1_0_PLUGIN),
        ("0.1.1", include_str!("../plugins/contract-0.1.1/wit/picker.wit"), CONTRACT_0_1_1_PLUGIN),
    ];
    for (version, wit, component) in earlier {
        let package = format!("package veer:picker@{version};");
        assert!(wit.contains(&package), "the frozen copy is {version}");
        assert!(!current.contains(&package), "the host speaks a later release than {version}");
        assert_eq!(wit.contains("in-flight: func"), version != "0.1.0", "{version}: in-flight came in 0.1.1");
        let path = std::env::temp_dir().join(format!("veer-contract-{version}-{}.wasm", std::process::id()));
        std::fs::write(&path, component).unwrap();
        let report = run(PluginSource::Path(path), &[]);
        assert_conforms(&report);
        assert_eq!(report.plugin.as_deref(), Some(format!("contract-{version} {version}").as_str()));
    }
}

#[test]
fn the_python_example_conforms() {
    let report = run(PluginSource::Path(python_example()), &[]);
    assert_conforms(&report);
    assert_eq!(report.plugin.as_deref(), Some("least-conn-py 0.2.0"));
    assert_conforms(&run(PluginSource::Path(python_example()), &[("weighted", "false")]));
}

#[test]
fn the_javascript_example_conforms() {
    let report = run(PluginSource::Path(js_example()), &[]);
    assert_conforms(&report);
    assert_eq!(report.plugin.as_deref(), Some("least-conn-js 0.2.0"));
    let rejected = run(PluginSource::Path(js_example()), &[("weighted", "maybe")]);
    let check = rejected.check("configure-accepts").unwrap();
    assert!(!check.passed && check.detail.contains("weighted: expected true or false"), "{rejected}");
}

#[test]
fn the_c_example_conforms() {
    let report = run(PluginSource::Path(c_example()), &[]);
    assert_conforms(&report);
    assert_eq!(report.plugin.as_deref(), Some("least-conn-c 0.1.0"));
    assert_conforms(&run(PluginSource::Path(c_example()), &[("weighted", "false")]));
    let rejected = run(PluginSource::Path(c_example()), &[("weighted", "maybe"), ("wieghted", "true")]);
    let check = rejected.check("configure-accepts").unwrap();
    assert!(
        !check.passed
            && check.detail.contains("weighted: expected true or false, got 'maybe'")
            && check.detail.contains("unknown parameter 'wieghted'"),
        "every problem is reported at once: {rejected}"
    );
}

#[test]
fn a_well_behaved_stateful_plugin_round_trips_its_state() {
    let report = run(PluginSource::Path(hostile_plugin_file("conformance-ok")), &[("mode", "ok")]);
    assert_conforms(&report);
    let detail = &report.check("state-round-trip").unwrap().detail;
    assert!(detail.contains("bytes exported, imported"), "the hostile plugin exports its pick count: {detail}");
}

#[test]
fn the_suite_fails_a_plugin_that_spins() {
    let report = run(PluginSource::Path(hostile_plugin_file("conformance-loop")), &[("mode", "loop")]);
    assert!(!report.passed(), "{report}");
    let check = report.check("pick-deadline").unwrap();
    assert!(!check.passed && check.detail.contains("deadline"), "{report}");
}

#[test]
fn the_suite_fails_a_plugin_that_eats_memory() {
    let report = run(PluginSource::Path(hostile_plugin_file("conformance-alloc")), &[("mode", "alloc")]);
    assert!(!report.passed(), "{report}");
    let check = report.check("memory-cap").unwrap();
    assert!(!check.passed, "{report}");
    // Growing past the cap traps; it never gets the memory.
    assert!(check.detail.contains("pick"), "{report}");
}

#[test]
fn the_suite_fails_a_plugin_that_answers_unknown_or_excluded_backends() {
    let report = run(PluginSource::Path(hostile_plugin_file("conformance-bad-id")), &[("mode", "bad-id")]);
    let check = report.check("picks-only-eligible").unwrap();
    assert!(!check.passed && check.detail.contains("999999"), "{report}");

    let report = run(PluginSource::Path(hostile_plugin_file("conformance-excluded")), &[("mode", "excluded")]);
    let check = report.check("respects-exclude").unwrap();
    assert!(!check.passed && check.detail.contains("excluded"), "{report}");
    assert!(report.check("picks-only-eligible").unwrap().passed, "first attempts are fine:\n{report}");

    let report = run(PluginSource::Path(hostile_plugin_file("conformance-none")), &[("mode", "none")]);
    assert!(!report.check("picks-only-eligible").unwrap().passed, "{report}");
    assert!(report.check("empty-pool").unwrap().passed, "none is right for an empty pool:\n{report}");
}

#[test]
fn a_file_that_is_not_a_component_fails_to_load() {
    let path = std::env::temp_dir().join(format!("veer-not-a-component-{}.wasm", std::process::id()));
    std::fs::write(&path, b"\0asm not really").unwrap();
    let report = run(PluginSource::Path(path), &[]);
    assert!(!report.passed());
    assert_eq!(report.checks.len(), 1, "{report}");
    assert_eq!(report.checks[0].name, "loads");
}
