//! The deploy files under `deploy/` checked by the tools that consume them:
//! systemd's, Prometheus's and Kubernetes's own validators, veer's config
//! loader for every veer config they carry, and the metric names the alerts
//! and the Grafana dashboard query against the metrics veer documents.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

/// Runs `program` with `args`; panics with its output unless it succeeds.
fn run(program: &str, args: &[&str], installed_by: &str) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs ({installed_by}; scripts/test.sh installs it): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {args:?} failed:\n{text}");
}

#[test]
fn the_systemd_unit_verifies() {
    // systemd-analyze checks that executables exist: the unit's veer path is
    // where `cargo install --root /usr/local` puts it, not on this machine.
    let unit = std::fs::read_to_string(deploy("systemd/veer.service")).unwrap();
    let dir = std::env::temp_dir().join(format!("veer-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("veer.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/veer", "/bin/true")).unwrap();
    run("systemd-analyze", &["verify", file.to_str().unwrap()], "Debian package systemd");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_alert_rules_pass_promtool() {
    run(
        "promtool",
        &["check", "rules", deploy("prometheus/alerts.yaml").to_str().unwrap()],
        "Debian package prometheus",
    );
}

#[test]
fn the_kubernetes_manifests_validate_and_carry_a_valid_veer_config() {
    let files: Vec<String> = ["configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"]
        .iter()
        .map(|f| deploy(&format!("kubernetes/{f}")).display().to_string())
        .collect();
    let mut args = vec!["-m", "kubernetes_validate", "--strict"];
    args.extend(files.iter().map(String::as_str));
    run("python3", &args, "with the PyPI package kubernetes-validate");
    let text = std::fs::read_to_string(deploy("kubernetes/configmap.yaml")).unwrap();
    let configmap: serde_json::Value = serde_norway::from_str(text.split("\n---\n").next().unwrap()).unwrap();
    let loaded = load_with_token(configmap["data"]["veer.yaml"].as_str().unwrap(), "configmap veer.yaml");
    // The backends are a headless Service's pods, found by SRV.
    let named = &loaded.options.discovery.groups["default"].named;
    assert!(
        matches!(&named[0].target, veer::discovery::Target::Srv(name) if name.ends_with(".svc.cluster.local")),
        "{named:?}"
    );
}

#[test]
fn the_compose_example_carries_a_valid_veer_config() {
    let compose: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(deploy("compose/docker-compose.yaml")).unwrap()).unwrap();
    assert_eq!(compose["services"]["veer"]["volumes"][0], "./veer.yaml:/etc/veer/veer.yaml:ro");
    let loaded = load_with_token(&std::fs::read_to_string(deploy("compose/veer.yaml")).unwrap(), "compose veer.yaml");
    // The backends are the compose service, found by its name through Docker's DNS.
    let named = &loaded.options.discovery.groups["default"].named;
    let veer::discovery::Target::Host { host, port } = &named[0].target else { panic!("{named:?}") };
    assert!(compose["services"][host.as_str()].is_object(), "{host} is a service of the compose file");
    assert_eq!(*port, 8000);
}

/// Loads a config whose admin API listens beyond loopback, as its deployment
/// does: with the token its environment provides.
fn load_with_token(text: &str, name: &str) -> veer::config::Loaded {
    let text = text.replacen("admin:\n", "admin:\n  token: from-the-environment\n", 1);
    veer::config::parse(&text, name, None).unwrap_or_else(|errors| panic!("{errors}"))
}

#[test]
fn alerts_and_the_dashboard_query_only_metrics_veer_exports() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme.find("### Prometheus metrics").unwrap();
    let end = start + readme[start..].find("\n### ").unwrap();
    let documented = metric_names(&readme[start..end]);
    assert!(documented.len() > 30, "{documented:?}");
    for file in ["prometheus/alerts.yaml", "grafana/veer.json"] {
        let used = metric_names(&std::fs::read_to_string(deploy(file)).unwrap());
        let unknown: Vec<_> = used.difference(&documented).collect();
        assert!(unknown.is_empty(), "{file} queries metrics veer does not export: {unknown:?}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/veer.json")).unwrap()).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

/// Every `veer_*` metric name in `text`, a histogram's series folded into its name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("veer_") {
        let begin = at + found;
        let mut end = begin;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_' || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        let name = &text[begin..end];
        let name = ["_bucket", "_sum", "_count"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        // `veer_backend_latency_advisory / _advisories_total` in the README names two.
        if name.len() > "veer_".len() {
            names.insert(name.to_string());
        }
        at = end.max(begin + 1);
    }
    names
}
