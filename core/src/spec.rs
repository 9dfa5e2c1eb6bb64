//! What an operator says about a backend, and the one check of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Largest configured weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// Which HTTP version veer speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum BackendProtocol {
    /// HTTP/1.1 with keep-alive connection pooling.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c), multiplexed.
    Http2,
}

/// What the operator says about a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Unique name within the pool.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// Relative weight, 1..=[`MAX_WEIGHT`].
    pub weight: u32,
    /// HTTP version to speak to it.
    pub protocol: BackendProtocol,
    /// Most attempts in flight at once; a pick that lands on a backend at its
    /// cap is refused and the picker asked again. `None`: no cap.
    pub max_concurrent: Option<u32>,
    /// Free-form labels (zone, version...), passed to the picker as they are.
    pub labels: BTreeMap<String, String>,
}

impl BackendSpec {
    /// A backend at `address` with the defaults: weight 1, HTTP/1.1, no
    /// concurrency cap, no labels.
    pub fn new(name: impl Into<String>, address: SocketAddr) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            address,
            weight: 1,
            protocol: BackendProtocol::Http1,
            max_concurrent: None,
            labels: BTreeMap::new(),
        }
    }

    /// What is wrong with this backend's settings, as (field, message)
    /// pairs; empty when it is valid. The one check behind every way of
    /// describing a backend (the config file, `--backend`, `POST /backends`),
    /// each of which adds where the field was given.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push(("name", "must not be empty".to_string()));
        }
        if !(1..=MAX_WEIGHT).contains(&self.weight) {
            problems.push(("weight", format!("must be from 1 to {MAX_WEIGHT}, not {}", self.weight)));
        }
        if self.max_concurrent == Some(0) {
            problems.push(("max_concurrent", "must be at least 1 (leave it out for no cap)".to_string()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_by_its_field() {
        let address = SocketAddr::from(([127, 0, 0, 1], 80));
        assert!(BackendSpec::new("a", address).problems().is_empty());
        let bad = BackendSpec { weight: 0, max_concurrent: Some(0), ..BackendSpec::new(" ", address) };
        let fields: Vec<_> = bad.problems().into_iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["name", "weight", "max_concurrent"]);
    }
}
