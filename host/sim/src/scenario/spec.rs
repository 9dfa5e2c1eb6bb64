//! The scenario file: simulated backends, the load to drive through veer, and
//! the proxy settings that shape what a failure costs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BackendProfile, Phase, SimBackendSpec};

/// One routing scenario, as read from a YAML file.
///
/// ```yaml
/// name: the-trap
/// description: one backend answers in 1 ms but fails half its requests
/// seed: 2
/// load: { duration_ms: 8000, concurrency: 10 }
/// backends:
///   - { name: trap, profile: { latency: { fixed_ms: 1 }, error_rate: 0.5 } }
///   - { name: ok, count: 4, profile: { latency: { fixed_ms: 10 } } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Names the scenario in file names, tables and plots: `[a-z0-9-]+`.
    pub name: String,
    /// One line saying what the scenario tests, shown under its plot.
    pub description: String,
    /// Seeds every backend's randomness (mixed with its position), so that
    /// request `n` of a backend draws the same latency and failure in every run.
    #[serde(default)]
    pub seed: u64,
    /// The load.
    pub load: Load,
    /// How veer treats attempts.
    #[serde(default)]
    pub proxy: ProxySettings,
    /// The backends, in order; a group with `count > 1` expands to several.
    pub backends: Vec<BackendGroup>,
}

/// The load the runner's client drives through veer.
///
/// Exactly one of `duration_ms` and `requests` says when to stop; exactly one of
/// `concurrency` (closed loop: that many clients, each sending its next request
/// when the previous one is answered) and `rate_per_second` (open loop: requests
/// start on a fixed schedule whatever the answers) says how to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Run for this long (scaled by `--scale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Send this many requests in total (scaled by `--scale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Closed loop with this many clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Open loop at this many requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// Closed loop only: after a failed request a client waits this long before
    /// sending its next one. A failure then costs time, as it does a real
    /// caller that backs off and retries; without it, a closed loop rewards a
    /// backend that fails fast (a 1 ms backend failing half its requests would
    /// "serve" more successes per second than a healthy 10 ms one).
    #[serde(default = "default_error_penalty_ms")]
    pub error_penalty_ms: u64,
}

fn default_error_penalty_ms() -> u64 {
    100
}

/// Proxy settings that matter to routing results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Time veer waits for a backend's response headers before the attempt
    /// fails (what a `hang` failure costs).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per request, the first included. The default, 1, shows each
    /// policy's own choices; more lets veer retry resets, timeouts and 502-504.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_max_attempts() -> u32 {
    1
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings { timeout_ms: default_timeout_ms(), max_attempts: default_max_attempts() }
    }
}

/// One backend, or `count` identical ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendGroup {
    /// The backend's name; with `count > 1`, backends are named `NAME-1`, `NAME-2`, ...
    pub name: String,
    /// How many identical backends this entry stands for.
    #[serde(default = "default_count")]
    pub count: u32,
    /// The weight veer is configured with (weighted policies use it; it need
    /// not match the backend's true capacity, which is the point of some scenarios).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The profile from the start.
    #[serde(default)]
    pub profile: BackendProfile,
    /// Profile changes, at offsets from the start of the load (scaled by `--scale`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
}

fn default_count() -> u32 {
    1
}

fn default_weight() -> u32 {
    1
}

/// A simulated backend of a scenario, with the weight veer gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioBackend {
    /// What the simulator serves (phases already scaled).
    pub sim: SimBackendSpec,
    /// veer's weight for it.
    pub weight: u32,
}

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML of the scenario shape (the message has the line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The shape is right but the values are not.
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, each naming its field.
        problems: Vec<String>,
    },
}

/// The largest `count` of one backend group, and of a whole scenario: each
/// backend is a listening socket in this process.
const MAX_BACKENDS: u32 = 500;

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.into(), source })?;
        Scenario::parse(path, &text)
    }

    /// Parses and validates scenario text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, SpecError> {
        let parse = |message: String| SpecError::Parse { path: path.into(), message };
        // Through a JSON value: the simulator's types use serde's externally
        // tagged enums (`latency: { fixed_ms: 10 }`), which serde_norway would
        // only accept as YAML tags (`!fixed_ms 10`); as JSON they read as
        // documented. YAML syntax errors keep their line and column; shape
        // errors get the path of the field at fault instead.
        let value: serde_json::Value = serde_norway::from_str(text).map_err(|error| parse(error.to_string()))?;
        let scenario: Scenario = serde_path_to_error::deserialize(value).map_err(|error| {
            let at = error.path().to_string();
            parse(if at == "." { error.inner().to_string() } else { format!("{at}: {}", error.inner()) })
        })?;
        let problems = scenario.problems();
        if problems.is_empty() { Ok(scenario) } else { Err(SpecError::Invalid { path: path.into(), problems }) }
    }

    /// Every problem with the values, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            problems.push(format!("name {:?} must be lowercase letters, digits and '-'", self.name));
        }
        let load = &self.load;
        match (load.duration_ms, load.requests) {
            (None, None) | (Some(_), Some(_)) => {
                problems.push("load: give exactly one of duration_ms and requests".into());
            }
            (Some(0), _) | (_, Some(0)) => problems.push("load: duration_ms / requests must be more than 0".into()),
            _ => {}
        }
        match (load.concurrency, load.rate_per_second) {
            (None, None) | (Some(_), Some(_)) => {
                problems.push("load: give exactly one of concurrency and rate_per_second".into());
            }
            (Some(0), _) => problems.push("load.concurrency must be more than 0".into()),
            (_, Some(rate)) if !(rate > 0.0 && rate <= 100_000.0) => {
                problems.push(format!("load.rate_per_second must be within (0, 100000], got {rate}"));
            }
            _ => {}
        }
        if load.rate_per_second.is_some() && load.error_penalty_ms != default_error_penalty_ms() {
            problems.push("load.error_penalty_ms only applies to a closed loop (concurrency)".into());
        }
        if self.proxy.timeout_ms == 0 {
            problems.push("proxy.timeout_ms must be more than 0".into());
        }
        if !(1..=10).contains(&self.proxy.max_attempts) {
            problems.push(format!("proxy.max_attempts must be within 1..=10, got {}", self.proxy.max_attempts));
        }
        if self.backends.is_empty() {
            problems.push("backends: at least one is needed".into());
        }
        let mut total = 0u32;
        let mut names = std::collections::HashSet::new();
        for (index, group) in self.backends.iter().enumerate() {
            let at = format!("backends[{index}]");
            if !(1..=MAX_BACKENDS).contains(&group.count) {
                problems.push(format!("{at}.count must be within 1..={MAX_BACKENDS}, got {}", group.count));
            }
            total = total.saturating_add(group.count);
            if !(1..=1_000_000).contains(&group.weight) {
                problems.push(format!("{at}.weight must be within 1..=1000000, got {}", group.weight));
            }
            if !names.insert(group.name.clone()) {
                problems.push(format!("{at}.name {:?} is used twice", group.name));
            }
            let sim = SimBackendSpec {
                name: group.name.clone(),
                profile: group.profile.clone(),
                phases: group.phases.clone(),
                seed: 0,
            };
            if let Err(invalid) = sim.validate() {
                problems.extend(invalid.problems.into_iter().map(|problem| format!("{at}.{problem}")));
            }
        }
        if total > MAX_BACKENDS {
            problems.push(format!("backends: {total} in all, at most {MAX_BACKENDS}"));
        }
        problems
    }

    /// The backends to simulate, with phases scaled by `scale` (so that a
    /// shortened run still goes through every phase) and seeds derived from
    /// the scenario's seed and each backend's position.
    pub fn backends(&self, scale: f64) -> Vec<ScenarioBackend> {
        let mut backends = Vec::new();
        for group in &self.backends {
            for copy in 1..=group.count {
                let name = if group.count == 1 { group.name.clone() } else { format!("{}-{copy}", group.name) };
                let phases = group
                    .phases
                    .iter()
                    .map(|phase| Phase { at: phase.at.mul_f64(scale), profile: phase.profile.clone() })
                    .collect();
                let seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(backends.len() as u64);
                let sim = SimBackendSpec { name, profile: group.profile.clone(), phases, seed };
                backends.push(ScenarioBackend { sim, weight: group.weight });
            }
        }
        backends
    }

    /// The run's length or request count after scaling (at least 1 ms / 1 request).
    pub fn stop(&self, scale: f64) -> Stop {
        match (self.load.duration_ms, self.load.requests) {
            (Some(ms), _) => Stop::After(Duration::from_millis(ms).mul_f64(scale).max(Duration::from_millis(1))),
            (None, Some(requests)) => Stop::Requests(((requests as f64 * scale).round() as u64).max(1)),
            (None, None) => Stop::Requests(1),
        }
    }
}

/// When the load stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests have been sent.
    Requests(u64),
}

/// The scenario files (`*.yaml`, `*.yml`) in `dir`, sorted by file name.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let read = |source| SpecError::Read { path: dir.into(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, SpecError> {
        Scenario::parse(Path::new("test.yaml"), text)
    }

    #[test]
    fn a_minimal_scenario_gets_defaults_and_expands_groups() {
        let scenario = parse(
            "name: x\ndescription: d\nseed: 3\nload: { requests: 100, concurrency: 4 }\n\
             backends:\n  - { name: a, count: 2, weight: 3, profile: { latency: { fixed_ms: 5 } } }\n  - { name: b }\n",
        )
        .unwrap();
        assert_eq!(scenario.proxy, ProxySettings::default());
        assert_eq!(scenario.load.error_penalty_ms, 100);
        let backends = scenario.backends(1.0);
        let names: Vec<_> = backends.iter().map(|b| b.sim.name.as_str()).collect();
        assert_eq!(names, ["a-1", "a-2", "b"]);
        assert_eq!(backends[0].weight, 3);
        assert_ne!(backends[0].sim.seed, backends[1].sim.seed);
        assert_eq!(scenario.stop(0.5), Stop::Requests(50));
    }

    #[test]
    fn scaling_shortens_the_run_and_its_phases_alike() {
        let scenario = parse(
            "name: x\ndescription: d\nload: { duration_ms: 10000, rate_per_second: 100 }\n\
             backends:\n  - name: a\n    phases: [{ at_ms: 4000, profile: { error_rate: 1 } }]\n",
        )
        .unwrap();
        assert_eq!(scenario.stop(0.1), Stop::After(Duration::from_secs(1)));
        assert_eq!(scenario.backends(0.1)[0].sim.phases[0].at, Duration::from_millis(400));
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_place() {
        let error =
            parse("name: x\ndescription: d\nload: { requests: 1, concurrency: 1, think_ms: 3 }\nbackends: []\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("load.think_ms: unknown field `think_ms`"), "{error}");
        let error = parse("name: x\ndescription: d\nload: { requests: 1, concurrency: 1 }\nbackends:\n  - { name: a, profile: { latency: { fixed_ms: -1 } } }\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("backends[0].profile.latency.fixed_ms: expected a non-negative"), "{error}");
        let error = parse("name: [x\n").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let error = parse(
            "name: Bad Name\ndescription: d\nload: { concurrency: 1, rate_per_second: 5 }\nproxy: { max_attempts: 0 }\n\
             backends:\n  - { name: a, count: 0, profile: { error_rate: 2 } }\n  - { name: a }\n",
        )
        .unwrap_err();
        let SpecError::Invalid { problems, .. } = error else { panic!("{error}") };
        assert_eq!(
            problems,
            [
                "name \"Bad Name\" must be lowercase letters, digits and '-'",
                "load: give exactly one of duration_ms and requests",
                "load: give exactly one of concurrency and rate_per_second",
                "proxy.max_attempts must be within 1..=10, got 0",
                "backends[0].count must be within 1..=500, got 0",
                "backends[0].profile.error_rate must be within 0..=1, got 2",
                "backends[1].name \"a\" is used twice",
            ]
        );
    }
}
