//! `veer sim`: a compact command-line spec for a simulated backend, and the
//! loop that serves a set of them until Ctrl-C.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;

use super::profile::{BackendProfile, FailureKind, InvalidProfile, Latency, Number};
use super::{SimBackend, SimBackendSpec, demo_specs};

/// The keys a command-line backend spec accepts.
const KEYS: &str = "name, port, latency, jitter, p99, errors, kind, capacity, seed";

/// One simulated backend as given on the command line:
/// comma-separated `key=value` pairs, all optional.
///
/// | key | value | meaning |
/// | --- | --- | --- |
/// | `name` | text | the backend's name (default `sim1`, `sim2`... by position) |
/// | `port` | 0..=65535 | where to listen (default: a free port) |
/// | `latency` | duration, or `min..max` | fixed latency, or uniform in a range (default 0) |
/// | `jitter` | duration | with `latency`: `latency ± jitter`, uniform |
/// | `p99` | duration | with `latency`: heavy tail (log-normal) with median `latency` |
/// | `errors` | `0.1` or `10%` | share of requests that fail (default 0) |
/// | `kind` | `500`, `reset`, `hang` | how they fail (default `500`) |
/// | `capacity` | integer > 0 | concurrency before latency stretches (see [`BackendProfile::capacity`]) |
/// | `seed` | integer | seeds the backend's randomness (default 0) |
///
/// Durations are a number with a unit, `us`, `ms` or `s` (`250us`, `10ms`,
/// `1.5s`); a bare number is milliseconds.
///
/// ```
/// use veer_sim::SimBackendCli;
///
/// let cli: SimBackendCli = "name=a,port=9001,latency=10ms,jitter=5ms,errors=0.1,kind=500,capacity=50".parse()?;
/// assert_eq!(cli.port, Some(9001));
/// assert_eq!(cli.profile.to_string(), "latency 10 ms ± 5 ms, 10% errors (HTTP 500), capacity 50");
/// # Ok::<(), veer_sim::CliSpecError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SimBackendCli {
    /// The name, if given.
    pub name: Option<String>,
    /// The port, if given.
    pub port: Option<u16>,
    /// The profile.
    pub profile: BackendProfile,
    /// The seed.
    pub seed: u64,
}

/// Why a command-line backend spec was rejected. Messages name the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CliSpecError {
    /// An item without `=`.
    #[error("`{item}` is not key=value (keys: {KEYS})")]
    NotKeyValue {
        /// The item.
        item: String,
    },
    /// A key that does not exist.
    #[error("unknown field `{field}` (expected one of: {KEYS})")]
    UnknownField {
        /// The key.
        field: String,
    },
    /// A key given twice.
    #[error("field `{field}` is given twice")]
    Duplicate {
        /// The key.
        field: String,
    },
    /// A value that does not parse or is out of range.
    #[error("{field}={value}: expected {expected}")]
    Invalid {
        /// The key.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// Fields that do not go together.
    #[error("{0}")]
    Conflict(String),
    /// The resulting profile is invalid (a safety net; the checks above should
    /// catch everything first).
    #[error(transparent)]
    Profile(#[from] InvalidProfile),
}

impl SimBackendCli {
    /// The spec for this backend; `index` (0-based position on the command line)
    /// names it when no name was given.
    pub fn spec(&self, index: usize) -> SimBackendSpec {
        let name = self.name.clone().unwrap_or_else(|| format!("sim{}", index + 1));
        SimBackendSpec::new(name, self.profile.clone()).with_seed(self.seed)
    }
}

impl FromStr for SimBackendCli {
    type Err = CliSpecError;

    fn from_str(text: &str) -> Result<Self, CliSpecError> {
        let mut seen: Vec<&str> = Vec::new();
        let mut cli = SimBackendCli { name: None, port: None, profile: BackendProfile::default(), seed: 0 };
        let (mut latency, mut jitter, mut p99) = (None, None, None);
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(CliSpecError::NotKeyValue { item: item.to_string() });
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(CliSpecError::Duplicate { field: key.to_string() });
            }
            seen.push(key);
            match key {
                "name" => {
                    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ') {
                        return Err(invalid("name", value, "a non-empty printable ASCII name"));
                    }
                    cli.name = Some(value.to_string());
                }
                "port" => cli.port = Some(value.parse().map_err(|_| invalid("port", value, "a port, 0..=65535"))?),
                "latency" => latency = Some(parse_latency(value)?),
                "jitter" => jitter = Some(parse_duration(value).ok_or_else(|| invalid("jitter", value, DURATION))?),
                "p99" => p99 = Some(parse_duration(value).ok_or_else(|| invalid("p99", value, DURATION))?),
                "errors" => cli.profile.error_rate = parse_rate(value)?,
                "kind" => {
                    cli.profile.error_kind = match value.to_ascii_lowercase().as_str() {
                        "500" | "status500" => FailureKind::Status500,
                        "reset" => FailureKind::Reset,
                        "hang" => FailureKind::Hang,
                        _ => return Err(invalid("kind", value, "500, reset or hang")),
                    }
                }
                "capacity" => {
                    let capacity = value.parse().ok().filter(|&capacity| capacity > 0);
                    cli.profile.capacity =
                        Some(capacity.ok_or_else(|| invalid("capacity", value, "a whole number more than 0"))?);
                }
                "seed" => cli.seed = value.parse().map_err(|_| invalid("seed", value, "a whole number"))?,
                _ => return Err(CliSpecError::UnknownField { field: key.to_string() }),
            }
        }
        cli.profile.latency = combine_latency(latency, jitter, p99)?;
        cli.profile.validate()?;
        Ok(cli)
    }
}

const DURATION: &str = "a duration like 250us, 10ms or 1.5s";

fn invalid(field: &'static str, value: &str, expected: &'static str) -> CliSpecError {
    CliSpecError::Invalid { field, value: value.to_string(), expected }
}

/// `latency=` is a duration or a `min..max` range.
enum LatencyArg {
    Fixed(Duration),
    Range(Duration, Duration),
}

fn parse_latency(value: &str) -> Result<LatencyArg, CliSpecError> {
    let range = "a duration like 10ms, or a range like 5ms..15ms";
    match value.split_once("..") {
        None => parse_duration(value).map(LatencyArg::Fixed).ok_or_else(|| invalid("latency", value, range)),
        Some((min, max)) => match (parse_duration(min), parse_duration(max)) {
            (Some(min), Some(max)) if min <= max => Ok(LatencyArg::Range(min, max)),
            (Some(_), Some(_)) => Err(invalid("latency", value, "a range whose minimum does not exceed its maximum")),
            _ => Err(invalid("latency", value, range)),
        },
    }
}

fn combine_latency(
    latency: Option<LatencyArg>,
    jitter: Option<Duration>,
    p99: Option<Duration>,
) -> Result<Latency, CliSpecError> {
    let ms = |duration: Duration| Number(duration.as_secs_f64() * 1e3);
    match (latency, jitter, p99) {
        (_, Some(_), Some(_)) => Err(CliSpecError::Conflict("jitter and p99 cannot both be given".to_string())),
        (None, Some(_), None) | (None, None, Some(_)) => {
            Err(CliSpecError::Conflict("jitter and p99 need a latency (the mean or median)".to_string()))
        }
        (Some(LatencyArg::Range(..)), Some(_), None) | (Some(LatencyArg::Range(..)), None, Some(_)) => {
            Err(CliSpecError::Conflict("a latency range cannot be combined with jitter or p99".to_string()))
        }
        (None, None, None) => Ok(Latency::default()),
        (Some(LatencyArg::Fixed(latency)), None, None) => Ok(Latency::Fixed(latency)),
        (Some(LatencyArg::Range(min, max)), None, None) => Ok(Latency::Uniform { min, max }),
        (Some(LatencyArg::Fixed(mean)), Some(spread), None) => Ok(Latency::Jitter { mean, spread }),
        (Some(LatencyArg::Fixed(median)), None, Some(p99)) => {
            if median.is_zero() {
                Err(CliSpecError::Conflict("p99 needs a latency (the median) more than 0".to_string()))
            } else if p99 < median {
                Err(CliSpecError::Conflict(format!(
                    "p99 ({} ms) must be at least the latency, which is the median ({} ms)",
                    ms(p99),
                    ms(median)
                )))
            } else {
                Ok(Latency::HeavyTail { median, p99 })
            }
        }
    }
}

/// `250us`, `10ms`, `1.5s`, or a bare number of milliseconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 1e-6)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else {
        (text, 1e-3)
    };
    let number: f64 = number.trim().parse().ok()?;
    Duration::try_from_secs_f64(number * scale).ok()
}

/// `0.1` or `10%`, within 0..=1.
fn parse_rate(value: &str) -> Result<f64, CliSpecError> {
    let rate = match value.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|percent| percent / 100.0),
        None => value.parse::<f64>(),
    };
    rate.ok()
        .filter(|rate| (0.0..=1.0).contains(rate))
        .ok_or_else(|| invalid("errors", value, "a share within 0..=1 (like 0.1) or a percentage (like 10%)"))
}

/// `veer sim`: starts the given backends on `host` (the three [`demo_specs`]
/// on free ports when `backends` is empty), prints one line per backend with its
/// URL and profile, serves until Ctrl-C, then shuts them down gracefully.
pub async fn run_cli(backends: Vec<SimBackendCli>, host: IpAddr) -> anyhow::Result<()> {
    run_cli_until(backends, host, async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C; stopping");
        }
    })
    .await
}

/// [`run_cli`], stopping when `stop` completes instead of at Ctrl-C.
pub async fn run_cli_until(
    backends: Vec<SimBackendCli>,
    host: IpAddr,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let specs: Vec<(SimBackendSpec, u16)> = if backends.is_empty() {
        demo_specs().into_iter().map(|spec| (spec, 0)).collect()
    } else {
        backends.iter().enumerate().map(|(index, cli)| (cli.spec(index), cli.port.unwrap_or(0))).collect()
    };
    let mut started: Vec<SimBackend> = Vec::with_capacity(specs.len());
    for (spec, port) in specs {
        let name = spec.name.clone();
        match SimBackend::start(spec, SocketAddr::new(host, port)).await {
            Ok(backend) => started.push(backend),
            Err(error) => {
                for backend in &started {
                    backend.shutdown().await;
                }
                return Err(error).with_context(|| format!("starting sim backend `{name}`"));
            }
        }
    }
    let width = started.iter().map(|backend| backend.name().len()).max().unwrap_or(0);
    for backend in &started {
        println!("{:width$}  {}  {}", backend.name(), backend.url(), backend.profile());
    }
    println!("serving {} sim backend(s); Ctrl-C to stop", started.len());
    stop.await;
    for backend in &started {
        backend.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SimBackendCli, CliSpecError> {
        text.parse()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn parses_the_full_example() {
        let cli = parse("name=a,port=9001,latency=10ms,jitter=5ms,errors=0.1,kind=500,capacity=50,seed=3").unwrap();
        assert_eq!(
            cli,
            SimBackendCli {
                name: Some("a".to_string()),
                port: Some(9001),
                profile: BackendProfile::new(Latency::Jitter { mean: ms(10), spread: ms(5) })
                    .with_errors(0.1, FailureKind::Status500)
                    .with_capacity(50),
                seed: 3,
            }
        );
        assert_eq!(cli.spec(4).name, "a");
        assert_eq!(cli.spec(4).seed, 3);
    }

    #[test]
    fn every_field_is_optional() {
        let cli = parse("").unwrap();
        assert_eq!(cli.profile, BackendProfile::default());
        assert_eq!((cli.name.as_deref(), cli.port), (None, None));
        assert_eq!(cli.spec(1).name, "sim2");
    }

    #[test]
    fn parses_each_latency_model_and_unit() {
        assert_eq!(parse("latency=250us").unwrap().profile.latency, Latency::Fixed(Duration::from_micros(250)));
        assert_eq!(parse("latency=1.5s").unwrap().profile.latency, Latency::Fixed(ms(1500)));
        assert_eq!(parse("latency=7").unwrap().profile.latency, Latency::Fixed(ms(7)));
        assert_eq!(parse("latency=5ms..15ms").unwrap().profile.latency, Latency::Uniform { min: ms(5), max: ms(15) });
        assert_eq!(
            parse("latency=10ms, p99=200ms").unwrap().profile.latency,
            Latency::HeavyTail { median: ms(10), p99: ms(200) }
        );
    }

    #[test]
    fn parses_failure_kinds_and_percentages() {
        let cli = parse("errors=20%,kind=reset").unwrap();
        assert_eq!((cli.profile.error_rate, cli.profile.error_kind), (0.2, FailureKind::Reset));
        assert_eq!(parse("errors=1,kind=HANG").unwrap().profile.error_kind, FailureKind::Hang);
    }

    #[test]
    fn errors_name_the_bad_field() {
        let message = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(message("laten=10ms"), format!("unknown field `laten` (expected one of: {KEYS})"));
        assert_eq!(message("latency=fast"), "latency=fast: expected a duration like 10ms, or a range like 5ms..15ms");
        assert_eq!(message("latency=-3ms"), "latency=-3ms: expected a duration like 10ms, or a range like 5ms..15ms");
        assert_eq!(message("jitter=1h,latency=1"), "jitter=1h: expected a duration like 250us, 10ms or 1.5s");
        assert_eq!(
            message("errors=1.5"),
            "errors=1.5: expected a share within 0..=1 (like 0.1) or a percentage (like 10%)"
        );
        assert_eq!(message("kind=404"), "kind=404: expected 500, reset or hang");
        assert_eq!(message("capacity=0"), "capacity=0: expected a whole number more than 0");
        assert_eq!(message("port=70000"), "port=70000: expected a port, 0..=65535");
        assert_eq!(message("seed=x"), "seed=x: expected a whole number");
        assert_eq!(message("name=a,name=b"), "field `name` is given twice");
        assert!(message("latency").starts_with("`latency` is not key=value"));
        assert_eq!(
            message("latency=15ms..5ms"),
            "latency=15ms..5ms: expected a range whose minimum does not exceed its maximum"
        );
    }

    #[test]
    fn conflicting_latency_fields_are_rejected() {
        let message = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(message("latency=10ms,jitter=1ms,p99=50ms"), "jitter and p99 cannot both be given");
        assert_eq!(message("jitter=1ms"), "jitter and p99 need a latency (the mean or median)");
        assert_eq!(message("latency=1ms..2ms,jitter=1ms"), "a latency range cannot be combined with jitter or p99");
        assert_eq!(
            message("latency=10ms,p99=5ms"),
            "p99 (5 ms) must be at least the latency, which is the median (10 ms)"
        );
    }
}
