//! Health configuration of one backend group: active checks, breaker, outlier
//! ejection, slow start. Defaults live here and only here.
//!
//! Every struct deserialises with `deny_unknown_fields` and per-field defaults,
//! so a config file can set only what it changes. Durations are whole
//! milliseconds in the serialised form (`interval_ms: 2000`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Health settings of one backend group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Active HTTP checks.
    pub check: CheckConfig,
    /// Per-backend circuit breaker.
    pub breaker: BreakerConfig,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Weight ramp after recovery or joining.
    pub slow_start: SlowStartConfig,
}

impl HealthConfig {
    /// Every health mechanism off: all backends always eligible at their
    /// configured weight. For measuring a picker's own choices.
    pub fn off() -> HealthConfig {
        let mut config = HealthConfig::default();
        config.check.enabled = false;
        config.breaker.consecutive_failures = 0;
        config.breaker.failure_ratio = 0.0;
        config.outlier.consecutive_errors = 0;
        config.outlier.success_rate_gap = 0.0;
        config.outlier.latency_factor = 0.0;
        config.slow_start.window = Duration::ZERO;
        config
    }
}

/// Active HTTP health checks, run per backend off the request path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    /// Whether checks run at all. Without them, backends are taken out only
    /// by the breaker, outlier ejection or a drain.
    pub enabled: bool,
    /// Request method.
    pub method: String,
    /// Request path (with query, if any).
    pub path: String,
    /// `Host` header; the backend's address when unset.
    pub host: Option<String>,
    /// Lowest status that passes.
    pub expect_status_min: u16,
    /// Highest status that passes.
    pub expect_status_max: u16,
    /// Text the response body must contain (the first 64 KiB are read).
    pub expect_body: Option<String>,
    /// Time between the end of one check and the start of the next.
    #[serde(rename = "interval_ms", with = "millis")]
    pub interval: Duration,
    /// Each interval is stretched or shrunk by a random share up to this (0.1:
    /// ±10%), so that checks of many veer instances do not synchronise.
    pub jitter: f64,
    /// Time allowed for the whole check, body included.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy backend healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub fall: u32,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            enabled: true,
            method: "GET".to_string(),
            path: "/healthz".to_string(),
            host: None,
            expect_status_min: 200,
            expect_status_max: 399,
            expect_body: None,
            interval: Duration::from_secs(2),
            jitter: 0.1,
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// The per-backend circuit breaker. A failure here is an attempt without a
/// response (connect, reset, timeout) or a 502/503/504: the backend or its
/// path is not working. Plain 500s are the outlier detector's business.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0: never by streak).
    pub consecutive_failures: u32,
    /// Share of failed attempts within `ratio_window` that opens it (0: never by ratio).
    pub failure_ratio: f64,
    /// The window the ratio is measured over.
    #[serde(rename = "ratio_window_ms", with = "millis")]
    pub ratio_window: Duration,
    /// Attempts the window must hold before the ratio counts.
    pub ratio_min_requests: u32,
    /// How long the breaker stays open before probing.
    #[serde(rename = "open_ms", with = "millis")]
    pub open_for: Duration,
    /// Probe attempts allowed at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            ratio_window: Duration::from_secs(10),
            ratio_min_requests: 20,
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

/// Passive outlier ejection from live traffic. An error here is any 5xx or an
/// attempt without a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Consecutive errors that eject a backend (0: never by streak).
    pub consecutive_errors: u32,
    /// How often success rates and latencies are compared across backends.
    #[serde(rename = "interval_ms", with = "millis")]
    pub interval: Duration,
    /// Attempts a backend needs within an interval to be judged (and to count
    /// as a peer for the others).
    pub min_requests: u32,
    /// Eject a backend whose success rate is this much below the mean of the
    /// others (0.3: 65% against the others' 95%; 0: off).
    pub success_rate_gap: f64,
    /// Eject a backend whose mean latency is this many times the mean of the
    /// others (0: off)...
    pub latency_factor: f64,
    /// ...and above this, so that 1 ms against 0.2 ms is not an outlier.
    #[serde(rename = "latency_floor_ms", with = "millis")]
    pub latency_floor: Duration,
    /// First ejection lasts this long; the n-th one n times as long.
    #[serde(rename = "base_ejection_ms", with = "millis")]
    pub base_ejection: Duration,
    /// Ejections never last longer than this.
    #[serde(rename = "max_ejection_ms", with = "millis")]
    pub max_ejection: Duration,
    /// At most this share of the group's backends is ejected at once (rounded
    /// down; 0.5 of 3 is 1). Breakers and active checks are not capped.
    pub max_ejected_share: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_errors: 5,
            interval: Duration::from_secs(10),
            min_requests: 20,
            success_rate_gap: 0.3,
            latency_factor: 3.0,
            latency_floor: Duration::from_millis(50),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

/// Weight ramp for a backend that recovers or joins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowStartConfig {
    /// How long the ramp from a tenth to the full weight takes (0: off).
    #[serde(rename = "window_ms", with = "millis")]
    pub window: Duration,
}

impl Default for SlowStartConfig {
    fn default() -> Self {
        SlowStartConfig { window: Duration::from_secs(10) }
    }
}

/// The health configuration does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid health config: {}", problems.join("; "))]
pub struct InvalidHealthConfig {
    /// Every problem, each naming its field.
    pub problems: Vec<String>,
}

impl HealthConfig {
    /// Checks every field, reporting all problems at once.
    pub fn validate(&self) -> Result<(), InvalidHealthConfig> {
        let mut problems = Vec::new();
        let c = &self.check;
        if c.enabled {
            if http::Method::from_bytes(c.method.as_bytes()).is_err() {
                problems.push(format!("check.method {:?} is not an HTTP method", c.method));
            }
            if !c.path.starts_with('/') || c.path.parse::<http::uri::PathAndQuery>().is_err() {
                problems.push(format!("check.path {:?} must be a path starting with '/'", c.path));
            }
            if let Some(host) = &c.host
                && http::HeaderValue::from_str(host).is_err()
            {
                problems.push(format!("check.host {host:?} is not a valid header value"));
            }
            if !(100..=599).contains(&c.expect_status_min)
                || !(c.expect_status_min..=599).contains(&c.expect_status_max)
            {
                problems.push(format!(
                    "check.expect_status_min..=expect_status_max must be a range within 100..=599, got {}..={}",
                    c.expect_status_min, c.expect_status_max
                ));
            }
            if c.interval.is_zero() {
                problems.push("check.interval_ms must be more than 0".to_string());
            }
            if c.timeout.is_zero() {
                problems.push("check.timeout_ms must be more than 0".to_string());
            }
            if c.rise == 0 || c.fall == 0 {
                problems.push("check.rise and check.fall must be at least 1".to_string());
            }
        }
        if !(0.0..=0.5).contains(&c.jitter) {
            problems.push(format!("check.jitter must be within 0..=0.5, got {}", c.jitter));
        }
        let b = &self.breaker;
        if !(0.0..=1.0).contains(&b.failure_ratio) {
            problems.push(format!("breaker.failure_ratio must be within 0..=1, got {}", b.failure_ratio));
        }
        if b.failure_ratio > 0.0 && b.ratio_window.is_zero() {
            problems.push("breaker.ratio_window_ms must be more than 0".to_string());
        }
        if b.open_for.is_zero() {
            problems.push("breaker.open_ms must be more than 0".to_string());
        }
        if b.half_open_probes == 0 {
            problems.push("breaker.half_open_probes must be at least 1".to_string());
        }
        let o = &self.outlier;
        if o.interval.is_zero() {
            problems.push("outlier.interval_ms must be more than 0".to_string());
        }
        if !(0.0..=1.0).contains(&o.success_rate_gap) {
            problems.push(format!("outlier.success_rate_gap must be within 0..=1, got {}", o.success_rate_gap));
        }
        if o.latency_factor != 0.0 && o.latency_factor < 1.0 {
            problems.push(format!("outlier.latency_factor must be 0 (off) or at least 1, got {}", o.latency_factor));
        }
        if o.base_ejection.is_zero() || o.max_ejection < o.base_ejection {
            problems.push("outlier.base_ejection_ms must be more than 0 and at most max_ejection_ms".to_string());
        }
        if !(0.0..=1.0).contains(&o.max_ejected_share) {
            problems.push(format!("outlier.max_ejected_share must be within 0..=1, got {}", o.max_ejected_share));
        }
        if problems.is_empty() { Ok(()) } else { Err(InvalidHealthConfig { problems }) }
    }
}

/// `Duration` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_deserialises_partially_and_rejects_unknown_fields() {
        let config: HealthConfig =
            serde_json::from_str(r#"{"check": {"path": "/ready", "interval_ms": 500}, "breaker": {"open_ms": 100}}"#)
                .unwrap();
        assert_eq!(config.check.path, "/ready");
        assert_eq!(config.check.interval, Duration::from_millis(500));
        assert_eq!(config.check.rise, 2, "the rest keeps its default");
        assert_eq!(config.breaker.open_for, Duration::from_millis(100));
        assert_eq!(config.outlier, OutlierConfig::default());
        let error = serde_json::from_str::<HealthConfig>(r#"{"check": {"paht": "/"}}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field `paht`"), "{error}");
        HealthConfig::default().validate().unwrap();
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut config = HealthConfig::default();
        config.check.path = "healthz".into();
        config.check.rise = 0;
        config.breaker.failure_ratio = 2.0;
        config.outlier.max_ejected_share = -1.0;
        let problems = config.validate().unwrap_err().problems;
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("check.path"));
    }
}
