//! Simulated HTTP backends: servers whose latency, errors, capacity and death
//! are modelled, seeded, and controllable while they serve; and the routing
//! [`scenario`]s that run the real proxy against them.
//!
//! They back `veer demo` ([`demo_specs`]), `veer sim` ([`run_cli`]), the
//! end-to-end tests of the proxy, and the routing-scenario runner (whose YAML
//! files describe backends with the serde shape of [`SimBackendSpec`]).
//!
//! A backend is described by a [`SimBackendSpec`]: a name, a [`BackendProfile`]
//! (a [`Latency`] model, an error rate and [`FailureKind`], an optional capacity),
//! [`Phase`]s that change the profile at given times, and a seed. [`SimBackend::start`]
//! serves it on a TCP address; the returned [`SimBackend`] is the control handle.
//! What a backend answers is described on [`SimBackend`].
//!
//! ```no_run
//! use std::time::Duration;
//! use veer_sim::{BackendProfile, FailureKind, SimBackend, SimBackendSpec};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let profile = BackendProfile::fixed(Duration::from_millis(10)).with_errors(0.1, FailureKind::Status500);
//! let backend = SimBackend::start(SimBackendSpec::new("a", profile), "127.0.0.1:0".parse()?).await?;
//! println!("serving on {}", backend.url());
//! backend.kill().await; // connections refused from now on
//! backend.revive().await?; // serving again on the same address
//! backend.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A scenario file describes a backend like this (durations in milliseconds):
//!
//! ```yaml
//! name: slow-then-fast
//! seed: 7
//! profile:
//!   latency: { heavy_tail: { median_ms: 10, p99_ms: 250 } }
//!   error_rate: 0.05
//!   error_kind: reset
//!   capacity: 20
//! phases:
//!   - at_ms: 30000
//!     profile: { latency: { fixed_ms: 2 } }
//! ```

// The crate root may relax this while other modules are written; this one is done.
#![warn(missing_docs)]

mod cli;
mod profile;
pub mod scenario;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cli::{CliSpecError, SimBackendCli, run_cli, run_cli_until};
pub use profile::{BackendProfile, FailureKind, InvalidProfile, Latency, MAX_LATENCY, Phase};
pub use server::{
    BACKEND_HEADER, ECHO_HEADERS_HEADER, PATH_HEADER, REQUEST_BYTES_HEADER, RESPONSE_BYTES_HEADER, SHUTDOWN_GRACE,
    SimBackend, SimStats,
};
pub use veer_core::rng::SplitMix64;

/// Everything that defines a simulated backend.
///
/// Serde shape: `name` is required; `profile` defaults to an instant, healthy
/// backend; `phases` to none; `seed` to 0. Unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimBackendSpec {
    /// Names the backend in responses ([`BACKEND_HEADER`] and the body), stats
    /// and logs. Printable ASCII, not empty.
    pub name: String,
    /// The profile from the start.
    #[serde(default)]
    pub profile: BackendProfile,
    /// Profile changes over time, by offset from the start (any order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// Seeds the backend's randomness. The name is mixed in too, so backends
    /// with equal seeds but different names still draw differently.
    #[serde(default)]
    pub seed: u64,
}

impl SimBackendSpec {
    /// A backend named `name` with `profile`, no phases, seed 0.
    pub fn new(name: impl Into<String>, profile: BackendProfile) -> Self {
        Self { name: name.into(), profile, phases: Vec::new(), seed: 0 }
    }

    /// This spec, with its profile switching to `profile` at `at` after the start.
    #[must_use]
    pub fn with_phase(mut self, at: Duration, profile: BackendProfile) -> Self {
        self.phases.push(Phase { at, profile });
        self
    }

    /// This spec, with the given seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks the name, the profile and every phase, reporting all problems at
    /// once, each naming its field (`phases[1].profile.error_rate ...`).
    pub fn validate(&self) -> Result<(), InvalidProfile> {
        let mut problems = Vec::new();
        if self.name.is_empty() {
            problems.push("name must not be empty".to_string());
        } else if !self.name.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ') {
            problems.push(format!("name {:?} must be printable ASCII", self.name));
        }
        self.profile.problems("profile.", &mut problems);
        for (index, phase) in self.phases.iter().enumerate() {
            phase.profile.problems(&format!("phases[{index}].profile."), &mut problems);
        }
        if problems.is_empty() { Ok(()) } else { Err(InvalidProfile { problems }) }
    }
}

/// Why a simulated backend could not start or revive.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The spec does not make sense.
    #[error("sim backend `{name}`: {source}")]
    Invalid {
        /// The backend's name.
        name: String,
        /// What is wrong.
        #[source]
        source: InvalidProfile,
    },
    /// The address could not be bound (in use, not local, no permission...).
    #[error("sim backend `{name}` cannot listen on {address}: {source}")]
    Bind {
        /// The backend's name.
        name: String,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// [`SimBackend::revive`] after [`SimBackend::shutdown`]: start a new backend instead.
    #[error("sim backend `{name}` has been shut down; start a new one")]
    ShutDown {
        /// The backend's name.
        name: String,
    },
}

/// Starts one backend per spec on `host`: on consecutive ports from
/// `first_port`, or on free ports (port 0) when it is `None`.
///
/// All or nothing: if one fails to start, those already started are killed
/// and the error is returned.
pub async fn start_many(
    specs: Vec<SimBackendSpec>,
    host: IpAddr,
    first_port: Option<u16>,
) -> Result<Vec<SimBackend>, SimError> {
    let mut started: Vec<SimBackend> = Vec::with_capacity(specs.len());
    for (index, spec) in specs.into_iter().enumerate() {
        let port = match first_port {
            None => Ok(0),
            Some(first) => {
                u16::try_from(index).ok().and_then(|index| first.checked_add(index)).ok_or_else(|| SimError::Bind {
                    name: spec.name.clone(),
                    address: SocketAddr::new(host, first),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("backend #{} would need a port past 65535", index + 1),
                    ),
                })
            }
        };
        let result = match port {
            Ok(port) => SimBackend::start(spec, SocketAddr::new(host, port)).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(backend) => started.push(backend),
            Err(error) => {
                for backend in &started {
                    backend.kill().await;
                }
                return Err(error);
            }
        }
    }
    Ok(started)
}

/// The three backends of `veer demo`, with clearly different behaviour so that
/// the routing policy's choices show:
///
/// | name | profile |
/// | --- | --- |
/// | `fast` | always 5 ms, never fails |
/// | `jittery` | 20 ms ± 15 ms (uniform in 5..35 ms), never fails |
/// | `flaky` | 10 ms, 20% of requests answered with HTTP 500 |
pub fn demo_specs() -> Vec<SimBackendSpec> {
    let ms = Duration::from_millis;
    vec![
        SimBackendSpec::new("fast", BackendProfile::fixed(ms(5))).with_seed(1),
        SimBackendSpec::new("jittery", BackendProfile::new(Latency::Jitter { mean: ms(20), spread: ms(15) }))
            .with_seed(2),
        SimBackendSpec::new("flaky", BackendProfile::fixed(ms(10)).with_errors(0.2, FailureKind::Status500))
            .with_seed(3),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_deserialize_with_defaults_and_reject_unknown_fields() {
        let spec: SimBackendSpec = serde_json::from_str(
            r#"{"name": "a", "seed": 7, "profile": {"latency": {"fixed_ms": 10}},
                "phases": [{"at_ms": 30000, "profile": {"latency": {"fixed_ms": 2}}}]}"#,
        )
        .unwrap();
        assert_eq!(
            spec,
            SimBackendSpec::new("a", BackendProfile::fixed(Duration::from_millis(10)))
                .with_seed(7)
                .with_phase(Duration::from_secs(30), BackendProfile::fixed(Duration::from_millis(2)))
        );
        let minimal: SimBackendSpec = serde_json::from_str(r#"{"name": "b"}"#).unwrap();
        assert_eq!(minimal, SimBackendSpec::new("b", BackendProfile::default()));
        let unknown = serde_json::from_str::<SimBackendSpec>(r#"{"name": "c", "port": 1}"#).unwrap_err();
        assert!(unknown.to_string().contains("unknown field `port`"), "{unknown}");
        assert!(serde_json::from_str::<SimBackendSpec>("{}").unwrap_err().to_string().contains("missing field `name`"));
    }

    #[test]
    fn spec_validation_names_the_phase_at_fault() {
        let spec = SimBackendSpec::new("", BackendProfile::default().with_errors(2.0, FailureKind::Reset))
            .with_phase(Duration::ZERO, BackendProfile::default())
            .with_phase(Duration::from_secs(1), BackendProfile::default().with_capacity(0));
        let problems = spec.validate().unwrap_err().problems;
        assert_eq!(
            problems,
            [
                "name must not be empty",
                "profile.error_rate must be within 0..=1, got 2",
                "phases[1].profile.capacity must be more than 0 (leave it out for unlimited)",
            ]
        );
        assert!(SimBackendSpec::new("new\nline", BackendProfile::default()).validate().is_err());
    }

    #[test]
    fn demo_specs_are_valid_and_distinct() {
        let specs = demo_specs();
        assert_eq!(specs.iter().map(|spec| spec.name.as_str()).collect::<Vec<_>>(), ["fast", "jittery", "flaky"]);
        for spec in &specs {
            spec.validate().unwrap();
        }
        assert!(specs[2].profile.error_rate > 0.0);
    }
}
