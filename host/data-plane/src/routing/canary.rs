//! The canary of a single-group config: a share of requests (optionally only
//! those carrying a header value) goes to a second upstream group with its
//! own picker and health. It is a weighted split route like any other
//! ([`CanarySplit::routes`]); only its config and admin shape are its own.

use super::{RouteSpec, SplitTargetSpec, ValueMatchSpec};

/// Which requests go to the canary group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySplit {
    /// Share of (matching) requests sent to the canary group, 0 to 100.
    pub percent: f64,
    /// Only requests with this header value are considered; `None`: all.
    #[serde(default)]
    pub header: Option<HeaderMatch>,
}

/// A header and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value.
    pub value: String,
}

impl CanarySplit {
    /// Problems with this split, each naming its field under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !(0.0..=100.0).contains(&self.percent) {
            problems.push((format!("{prefix}percent"), format!("must be from 0 to 100, not {}", self.percent)));
        }
        if let Some(header) = &self.header
            && http::HeaderName::from_bytes(header.name.as_bytes()).is_err()
        {
            problems.push((format!("{prefix}header.name"), format!("{:?} is not a header name", header.name)));
        }
        problems
    }

    /// The routes it stands for: a split of the matching requests between
    /// `main` and `canary` in hundredths of a percent, drawn by veer (a
    /// client cannot choose its group: only the header an operator exposes
    /// selects), then everything else to `main`.
    pub fn routes(&self, main: &str, canary: &str) -> Vec<RouteSpec> {
        let share = (self.percent.clamp(0.0, 100.0) * 100.0).round() as u32;
        let mut split = RouteSpec::new("canary");
        split.split = vec![
            SplitTargetSpec { upstream: main.to_string(), weight: 10_000 - share },
            SplitTargetSpec { upstream: canary.to_string(), weight: share },
        ];
        let Some(header) = &self.header else { return vec![split] };
        split.matches.headers = vec![ValueMatchSpec {
            name: header.name.clone(),
            equals: Some(header.value.clone()),
            ..Default::default()
        }];
        let mut routes = vec![split];
        routes.extend(CanarySplit::catch_all(main));
        routes
    }

    /// One route that sends everything to `main`.
    pub fn catch_all(main: &str) -> Vec<RouteSpec> {
        let mut all = RouteSpec::new("default");
        all.forward = Some(main.to_string());
        vec![all]
    }
}
