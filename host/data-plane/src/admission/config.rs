//! Admission settings: the serde shape (for a config file), its validation,
//! and the `veer run` flags that fill it.

use std::time::Duration;

use http::header::HeaderName;

use super::aimd::AimdParams;
use super::client_bucket::IpNet;

/// Admission control settings. Everything is off by default except a generous
/// global in-flight cap (10 000) that refuses at once (no queue).
///
/// ```yaml
/// admission:
///   max_in_flight: 2000        # 0: no cap
///   queue_length: 100          # 0: refuse at once when full
///   queue_timeout_ms: 50
///   client_rate: { per_second: 50, burst: 100, key_header: x-api-key,
///                  trusted_proxies: [10.0.0.0/8], max_clients: 100000 }
///   adaptive: { target_latency_ms: 50, min_limit: 4, max_limit: 1000 }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Requests past admission at once, all clients together; 0: no cap.
    pub max_in_flight: u32,
    /// Requests that may wait for a slot when the in-flight limit is reached;
    /// 0: refuse at once.
    pub queue_length: u32,
    /// How long a queued request waits before it is refused.
    pub queue_timeout_ms: u64,
    /// Per-client token buckets; `None`: no per-client limit.
    pub client_rate: Option<ClientRateConfig>,
    /// AIMD adaptive concurrency limit; `None`: off.
    pub adaptive: Option<AdaptiveConfig>,
}

/// The default global cap: far above what one 2-core box serves at sane
/// latencies, so it only trips when something is already wrong.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10_000;

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            queue_length: 0,
            queue_timeout_ms: 50,
            client_rate: None,
            adaptive: None,
        }
    }
}

/// Per-client token bucket settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientRateConfig {
    /// Sustained requests per second per client (> 0; fractions allowed).
    pub per_second: f64,
    /// Requests a client may send at once after being quiet (≥ 1);
    /// `None`: twice `per_second`, at least 1.
    pub burst: Option<u32>,
    /// Key clients by this request header (an API key) when present and sent
    /// by one of `trusted_proxies` (which must set or check it); otherwise,
    /// and always from any other peer, by address.
    pub key_header: Option<String>,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-For` is believed: behind them
    /// the client is the right-most address that is not a trusted proxy.
    pub trusted_proxies: Vec<String>,
    /// Clients tracked at most (memory bound); idle ones are forgotten first.
    pub max_clients: usize,
    /// Enforce the limit across every veer sharing this Redis (see
    /// `admission::shared`); `None`: per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<super::shared::SharedRateConfig>,
}

impl ClientRateConfig {
    /// The bucket size: `burst`, or twice the rate (at least 1).
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| ((self.per_second * 2.0).ceil() as u32).max(1))
    }
}

impl Default for ClientRateConfig {
    fn default() -> Self {
        ClientRateConfig {
            per_second: 50.0,
            burst: None,
            key_header: None,
            trusted_proxies: Vec::new(),
            max_clients: 100_000,
            shared: None,
        }
    }
}

/// AIMD adaptive concurrency settings (see [`super::aimd`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Mean time to response headers the limit steers to; `None`:
    /// `tolerance ×` the lowest mean measured.
    pub target_latency_ms: Option<f64>,
    /// Without a target: how many times the measured minimum is acceptable (> 1).
    pub tolerance: f64,
    /// Limit at start.
    pub initial_limit: u32,
    /// Lowest limit (≥ 1).
    pub min_limit: u32,
    /// Highest limit.
    pub max_limit: u32,
    /// How often the controller decides.
    pub interval_ms: u64,
    /// Added per interval while latency is fine.
    pub increase: u32,
    /// Factor applied on a cut, in (0, 1).
    pub backoff: f64,
    /// Error share (5xx or no response) of an interval that cuts the limit, in [0, 1].
    pub error_rate_threshold: f64,
    /// Completed requests an interval needs before it counts.
    pub min_samples: u32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            target_latency_ms: None,
            tolerance: 2.0,
            initial_limit: 20,
            min_limit: 4,
            max_limit: 1000,
            interval_ms: 100,
            increase: 1,
            backoff: 0.9,
            error_rate_threshold: 0.2,
            min_samples: 5,
        }
    }
}

/// Settings that make no sense; every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("admission: {}", .problems.join("; "))]
pub struct InvalidAdmissionConfig {
    /// Each names its field, e.g. `client_rate.per_second must be more than 0, got 0`.
    pub problems: Vec<String>,
}

/// A validated [`ClientRateConfig`], ready for use.
#[derive(Debug)]
pub(crate) struct ClientRateParts {
    pub(crate) header: Option<HeaderName>,
    pub(crate) trusted_proxies: Vec<IpNet>,
}

impl AdmissionConfig {
    /// Checks every field, reporting all problems at once.
    pub fn validate(&self) -> Result<(), InvalidAdmissionConfig> {
        self.parts().map(|_| ())
    }

    /// Validates and parses what needs parsing.
    pub(crate) fn parts(&self) -> Result<Option<ClientRateParts>, InvalidAdmissionConfig> {
        let mut problems = Vec::new();
        if self.queue_length > 0 && self.queue_timeout_ms == 0 {
            problems.push("queue_timeout_ms must be more than 0 when queue_length is set".to_string());
        }
        let client = self.client_rate.as_ref().map(|rate| {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
                problems.push(format!("client_rate.per_second must be more than 0, got {}", rate.per_second));
            }
            if rate.burst == Some(0) {
                problems.push("client_rate.burst must be at least 1".to_string());
            }
            if rate.max_clients == 0 {
                problems.push("client_rate.max_clients must be at least 1".to_string());
            }
            let header = rate.key_header.as_deref().and_then(|name| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    problems.push(format!("client_rate.key_header '{name}' is not a valid header name"));
                    None
                }
            });
            if header.is_some() && rate.trusted_proxies.is_empty() {
                problems.push(
                    "client_rate.key_header is believed only from client_rate.trusted_proxies (a client could \
                     send a new value with every request); list the proxies that set it"
                        .to_string(),
                );
            }
            if let Some(shared) = &rate.shared {
                shared.problems(&mut problems);
            }
            let mut trusted_proxies = Vec::new();
            for (index, text) in rate.trusted_proxies.iter().enumerate() {
                match text.parse::<IpNet>() {
                    Ok(net) => trusted_proxies.push(net),
                    Err(e) => problems.push(format!("client_rate.trusted_proxies[{index}]: {e}")),
                }
            }
            ClientRateParts { header, trusted_proxies }
        });
        if let Some(adaptive) = &self.adaptive {
            adaptive.problems(&mut problems);
        }
        if problems.is_empty() { Ok(client) } else { Err(InvalidAdmissionConfig { problems }) }
    }
}

impl AdaptiveConfig {
    fn problems(&self, problems: &mut Vec<String>) {
        if let Some(target) = self.target_latency_ms
            && !(target.is_finite() && target > 0.0)
        {
            problems.push(format!("adaptive.target_latency_ms must be more than 0, got {target}"));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 1.0) {
            problems.push(format!("adaptive.tolerance must be more than 1, got {}", self.tolerance));
        }
        if self.min_limit == 0 {
            problems.push("adaptive.min_limit must be at least 1".to_string());
        }
        if self.max_limit < self.min_limit {
            problems.push(format!(
                "adaptive.max_limit ({}) must be at least min_limit ({})",
                self.max_limit, self.min_limit
            ));
        }
        if self.interval_ms == 0 {
            problems.push("adaptive.interval_ms must be more than 0".to_string());
        }
        if self.increase == 0 {
            problems.push("adaptive.increase must be at least 1".to_string());
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            problems.push(format!("adaptive.backoff must be within (0, 1), got {}", self.backoff));
        }
        if !(0.0..=1.0).contains(&self.error_rate_threshold) {
            problems
                .push(format!("adaptive.error_rate_threshold must be within 0..=1, got {}", self.error_rate_threshold));
        }
    }

    /// The controller's parameters (call on a validated config).
    pub(crate) fn params(&self) -> AimdParams {
        AimdParams {
            initial_limit: self.initial_limit,
            min_limit: self.min_limit.max(1),
            max_limit: self.max_limit.max(self.min_limit.max(1)),
            target_latency: self.target_latency_ms.and_then(|ms| Duration::try_from_secs_f64(ms / 1e3).ok()),
            tolerance: self.tolerance,
            increase: self.increase,
            backoff: self.backoff,
            error_rate_threshold: self.error_rate_threshold,
            min_samples: self.min_samples,
        }
    }
}

/// The `veer run` flags for admission control (flattened into its arguments).
///
/// Flags left out take the defaults of [`AdmissionConfig`] (one place for
/// defaults); a flag of a feature that is off turns it on (`--adaptive-min 4`
/// implies `--adaptive`) or is refused (`--client-burst` without
/// `--client-rate`), so nothing given on the command line is silently ignored.
#[derive(Debug, Clone, clap::Args)]
pub struct AdmissionArgs {
    /// Requests in flight at once, all clients together; 0: no cap [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Requests that may wait (FIFO) for an in-flight slot [default: 0: refuse at once with 503].
    #[arg(long, value_name = "N")]
    pub queue_length: Option<u32>,
    /// How long a queued request waits before a 503 [default: 50].
    #[arg(long, value_name = "MS", requires = "queue_length")]
    pub queue_timeout_ms: Option<u64>,
    /// Per-client rate limit, requests per second: turns per-client token buckets on (429 past it).
    #[arg(long, value_name = "PER_SECOND")]
    pub client_rate: Option<f64>,
    /// Per-client burst (bucket size) [default: twice the rate, at least 1].
    #[arg(long, value_name = "N", requires = "client_rate")]
    pub client_burst: Option<u32>,
    /// Key clients by this header (e.g. x-api-key) when a --trusted-proxy sends it, else by address.
    #[arg(long, value_name = "HEADER", requires = "client_rate")]
    pub client_key_header: Option<String>,
    /// A proxy whose X-Forwarded-For is trusted; repeat for each.
    #[arg(long = "trusted-proxy", value_name = "IP_OR_CIDR", requires = "client_rate")]
    pub trusted_proxies: Vec<String>,
    /// Clients tracked at most [default: 100000].
    #[arg(long, value_name = "N", requires = "client_rate")]
    pub max_clients: Option<usize>,
    /// Turns the AIMD adaptive concurrency limit on (so does any --adaptive-* flag).
    #[arg(long)]
    pub adaptive: bool,
    /// Latency target for the adaptive limit [default: none: tolerance × the measured minimum].
    #[arg(long, value_name = "MS")]
    pub adaptive_target_ms: Option<f64>,
    /// Without a target: acceptable multiple of the minimum latency [default: 2].
    #[arg(long, value_name = "X")]
    pub adaptive_tolerance: Option<f64>,
    /// Adaptive limit at start [default: 20].
    #[arg(long, value_name = "N")]
    pub adaptive_initial: Option<u32>,
    /// Lowest adaptive limit [default: 4].
    #[arg(long, value_name = "N")]
    pub adaptive_min: Option<u32>,
    /// Highest adaptive limit [default: 1000].
    #[arg(long, value_name = "N")]
    pub adaptive_max: Option<u32>,
    /// How often the adaptive limit is adjusted [default: 100].
    #[arg(long, value_name = "MS")]
    pub adaptive_interval_ms: Option<u64>,
}

impl AdmissionArgs {
    /// The config these flags describe (validated when veer starts).
    pub fn config(&self) -> AdmissionConfig {
        let defaults = AdmissionConfig::default();
        let client_rate = self.client_rate.map(|per_second| {
            let defaults = ClientRateConfig::default();
            ClientRateConfig {
                per_second,
                burst: self.client_burst,
                key_header: self.client_key_header.clone(),
                trusted_proxies: self.trusted_proxies.clone(),
                max_clients: self.max_clients.unwrap_or(defaults.max_clients),
                shared: None,
            }
        });
        let any_adaptive_flag = self.adaptive
            || self.adaptive_target_ms.is_some()
            || self.adaptive_tolerance.is_some()
            || self.adaptive_initial.is_some()
            || self.adaptive_min.is_some()
            || self.adaptive_max.is_some()
            || self.adaptive_interval_ms.is_some();
        let adaptive = any_adaptive_flag.then(|| {
            let defaults = AdaptiveConfig::default();
            AdaptiveConfig {
                target_latency_ms: self.adaptive_target_ms,
                tolerance: self.adaptive_tolerance.unwrap_or(defaults.tolerance),
                initial_limit: self.adaptive_initial.unwrap_or(defaults.initial_limit),
                min_limit: self.adaptive_min.unwrap_or(defaults.min_limit),
                max_limit: self.adaptive_max.unwrap_or(defaults.max_limit),
                interval_ms: self.adaptive_interval_ms.unwrap_or(defaults.interval_ms),
                ..defaults
            }
        });
        AdmissionConfig {
            max_in_flight: self.max_in_flight.unwrap_or(defaults.max_in_flight),
            queue_length: self.queue_length.unwrap_or(defaults.queue_length),
            queue_timeout_ms: self.queue_timeout_ms.unwrap_or(defaults.queue_timeout_ms),
            client_rate,
            adaptive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
        let config: AdmissionConfig =
            serde_json::from_str(r#"{"client_rate": {"per_second": 5}, "adaptive": {"target_latency_ms": 40}}"#)
                .unwrap();
        assert_eq!(config.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(config.client_rate.as_ref().unwrap().effective_burst(), 10, "twice the rate");
        assert_eq!(config.adaptive.as_ref().unwrap().target_latency_ms, Some(40.0));
        assert_eq!(serde_json::from_str::<AdmissionConfig>("{}").unwrap(), AdmissionConfig::default());
        let unknown = serde_json::from_str::<AdmissionConfig>(r#"{"adaptive": {"target_ms": 1}}"#).unwrap_err();
        assert!(unknown.to_string().contains("unknown field `target_ms`"), "{unknown}");
        config.validate().unwrap();
    }

    #[test]
    fn validation_reports_every_problem() {
        let config = AdmissionConfig {
            queue_length: 4,
            queue_timeout_ms: 0,
            client_rate: Some(ClientRateConfig {
                per_second: 0.0,
                key_header: Some("bad header".into()),
                trusted_proxies: vec!["10.0.0.0/8".into(), "nope".into()],
                ..ClientRateConfig::default()
            }),
            adaptive: Some(AdaptiveConfig { min_limit: 10, max_limit: 5, backoff: 1.5, ..AdaptiveConfig::default() }),
            ..AdmissionConfig::default()
        };
        let problems = config.validate().unwrap_err().problems;
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].starts_with("queue_timeout_ms"));
        assert!(problems[1].starts_with("client_rate.per_second must be more than 0"));
        assert!(problems[2].contains("'bad header' is not a valid header name"));
        assert!(problems[3].starts_with("client_rate.trusted_proxies[1]: 'nope'"));
        assert!(problems[4].starts_with("adaptive.max_limit (5) must be at least min_limit (10)"));
        assert!(problems[5].starts_with("adaptive.backoff"));
    }

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        admission: AdmissionArgs,
    }

    #[test]
    fn flags_fill_the_config_and_default_to_off() {
        let none = Flags::try_parse_from(["veer"]).unwrap().admission.config();
        assert_eq!(none, AdmissionConfig::default());
        let all = Flags::try_parse_from([
            "veer",
            "--max-in-flight",
            "100",
            "--queue-length",
            "10",
            "--client-rate",
            "2.5",
            "--trusted-proxy",
            "127.0.0.1",
            "--adaptive-target-ms",
            "30",
        ])
        .unwrap()
        .admission
        .config();
        assert_eq!((all.max_in_flight, all.queue_length), (100, 10));
        let rate = all.client_rate.as_ref().unwrap();
        assert_eq!((rate.per_second, rate.effective_burst(), rate.trusted_proxies.len()), (2.5, 5, 1));
        assert_eq!(all.adaptive.as_ref().unwrap().target_latency_ms, Some(30.0));
        all.validate().unwrap();
        assert!(Flags::try_parse_from(["veer", "--client-burst", "3"]).is_err(), "needs --client-rate");
        assert!(Flags::try_parse_from(["veer", "--queue-timeout-ms", "3"]).is_err(), "needs --queue-length");
        let implied = Flags::try_parse_from(["veer", "--adaptive-min", "0"]).unwrap().admission.config();
        assert_eq!(implied.adaptive.as_ref().map(|a| a.min_limit), Some(0), "any --adaptive-* flag turns it on");
        assert!(implied.validate().is_err(), "and is validated");
    }
}
