//! What a simulated backend does with a request: latency, failures, capacity,
//! and how that changes over time (phases).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use veer_core::rng::SplitMix64;

/// The longest latency a model produces; samples beyond it (a wild heavy tail)
/// are clamped so that every sample is a valid, sleepable `Duration`.
pub const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// z-score of the 99th percentile of the standard normal distribution.
const Z_P99: f64 = 2.326_347_874_040_841;

/// How long a simulated backend takes to answer one request (before the
/// capacity model, see [`BackendProfile::capacity`]).
///
/// In scenario files a latency is a map with one key naming the model; every
/// duration is a number of milliseconds (fractions allowed, never negative):
///
/// ```yaml
/// latency: { fixed_ms: 10 }
/// latency: { uniform: { min_ms: 5, max_ms: 15 } }
/// latency: { jitter: { mean_ms: 20, spread_ms: 15 } }
/// latency: { heavy_tail: { median_ms: 10, p99_ms: 250 } }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Always exactly this long.
    #[serde(rename = "fixed_ms")]
    Fixed(#[serde(with = "millis")] Duration),
    /// Uniformly distributed in `[min, max]`.
    Uniform {
        /// The shortest latency.
        #[serde(rename = "min_ms", with = "millis")]
        min: Duration,
        /// The longest latency.
        #[serde(rename = "max_ms", with = "millis")]
        max: Duration,
    },
    /// `mean ± spread`, uniformly distributed, clamped at zero (so a spread
    /// larger than the mean piles some samples up at zero latency).
    Jitter {
        /// The centre.
        #[serde(rename = "mean_ms", with = "millis")]
        mean: Duration,
        /// The largest deviation either side of the centre.
        #[serde(rename = "spread_ms", with = "millis")]
        spread: Duration,
    },
    /// Log-normal, fitted so that half the requests are faster than `median`
    /// and 99% are faster than `p99`: `exp(ln(median) + σ·Z)` with `Z` standard
    /// normal and `σ = ln(p99 / median) / 2.326`.
    HeavyTail {
        /// The 50th percentile. Must be more than zero.
        #[serde(rename = "median_ms", with = "millis")]
        median: Duration,
        /// The 99th percentile. Must be at least the median.
        #[serde(rename = "p99_ms", with = "millis")]
        p99: Duration,
    },
}

impl Default for Latency {
    /// No latency at all.
    fn default() -> Self {
        Latency::Fixed(Duration::ZERO)
    }
}

impl Latency {
    /// Draws one latency.
    ///
    /// Total for any value, even one [`BackendProfile::validate`] would reject:
    /// a reversed uniform range is read as its mirror image, a heavy tail with
    /// `p99 < median` as having no tail, and a zero median as zero latency.
    /// Samples are clamped to [`MAX_LATENCY`].
    pub fn sample(&self, rng: &mut SplitMix64) -> Duration {
        let seconds = match *self {
            Latency::Fixed(latency) => return latency.min(MAX_LATENCY),
            Latency::Uniform { min, max } => {
                let (low, high) = (min.min(max).as_secs_f64(), min.max(max).as_secs_f64());
                low + (high - low) * rng.next_f64()
            }
            Latency::Jitter { mean, spread } => {
                mean.as_secs_f64() + spread.as_secs_f64() * (2.0 * rng.next_f64() - 1.0)
            }
            Latency::HeavyTail { median, p99 } => {
                if median.is_zero() {
                    return Duration::ZERO;
                }
                let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln().max(0.0) / Z_P99;
                (median.as_secs_f64().ln() + sigma * rng.standard_normal()).exp()
            }
        };
        seconds_to_duration(seconds)
    }

    /// Problems with this model, each prefixed with `path` (empty when valid).
    fn problems(&self, path: &str, problems: &mut Vec<String>) {
        match *self {
            Latency::Fixed(_) | Latency::Jitter { .. } => {}
            Latency::Uniform { min, max } => {
                if min > max {
                    problems.push(format!(
                        "{path}.uniform: min_ms ({}) must not exceed max_ms ({})",
                        Number(min.as_secs_f64() * 1e3),
                        Number(max.as_secs_f64() * 1e3)
                    ));
                }
            }
            Latency::HeavyTail { median, p99 } => {
                if median.is_zero() {
                    problems.push(format!("{path}.heavy_tail: median_ms must be more than 0"));
                }
                if p99 < median {
                    problems.push(format!(
                        "{path}.heavy_tail: p99_ms ({}) must be at least median_ms ({})",
                        Number(p99.as_secs_f64() * 1e3),
                        Number(median.as_secs_f64() * 1e3)
                    ));
                }
            }
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Latency::Fixed(latency) => write!(f, "{}", Ms(latency)),
            Latency::Uniform { min, max } => write!(f, "{}..{}", Ms(min), Ms(max)),
            Latency::Jitter { mean, spread } => write!(f, "{} ± {}", Ms(mean), Ms(spread)),
            Latency::HeavyTail { median, p99 } => write!(f, "median {}, p99 {}", Ms(median), Ms(p99)),
        }
    }
}

/// What an injected failure looks like to the client.
///
/// In scenario files: `status500`, `reset` or `hang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// After the modelled latency, an HTTP 500 response.
    #[default]
    Status500,
    /// After the modelled latency, the TCP connection is closed abruptly (an RST,
    /// no response). Over HTTP/2 only the request's stream is reset.
    Reset,
    /// No answer at all, ever: the request stays in flight until the client
    /// gives up (or the backend is shut down or killed).
    Hang,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Status500 => "HTTP 500",
            FailureKind::Reset => "connection reset",
            FailureKind::Hang => "hang",
        })
    }
}

/// How a simulated backend behaves: its latency model, error model and capacity.
///
/// Each modelled request (anything but `/healthz` and `/stats`) first draws
/// whether it fails (probability `error_rate`, failing as `error_kind`), then a
/// latency from `latency`, which the capacity model may stretch. The backend
/// reads the whole request body, waits that long, and answers (or fails).
///
/// Serde shape (every field optional; the defaults are no latency, no errors,
/// `status500`, unlimited capacity; unknown fields are an error):
///
/// ```yaml
/// latency: { jitter: { mean_ms: 20, spread_ms: 15 } }
/// error_rate: 0.2          # 0..=1
/// error_kind: reset        # status500 | reset | hang
/// capacity: 50             # optional, > 0
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendProfile {
    /// The latency model.
    pub latency: Latency,
    /// The share of modelled requests that fail, in `[0, 1]`.
    pub error_rate: f64,
    /// How failing requests fail.
    pub error_kind: FailureKind,
    /// How many requests the backend serves at once without slowing down.
    ///
    /// The model: a request that arrives while `in_flight` modelled requests are
    /// being served (itself included) and finds `in_flight > capacity` has its
    /// sampled latency multiplied by `in_flight / capacity`. So a backend of
    /// capacity 10 serving 20 requests answers the newcomer twice as slowly —
    /// roughly a processor shared by everyone in flight. `None`: never slows down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

impl BackendProfile {
    /// A healthy backend that always answers after `latency`.
    pub fn fixed(latency: Duration) -> Self {
        Self::new(Latency::Fixed(latency))
    }

    /// A healthy backend with the given latency model.
    pub fn new(latency: Latency) -> Self {
        Self { latency, ..Self::default() }
    }

    /// This profile, failing a share `rate` of requests as `kind`.
    #[must_use]
    pub fn with_errors(mut self, rate: f64, kind: FailureKind) -> Self {
        self.error_rate = rate;
        self.error_kind = kind;
        self
    }

    /// This profile, with a capacity (see [`BackendProfile::capacity`]).
    #[must_use]
    pub fn with_capacity(mut self, capacity: u32) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// What request `index` of a backend seeded with `seed` does, with
    /// `in_flight` requests there including it: its failure, if any, and its
    /// latency. Always drawn in the same order (failure, then latency), so
    /// request n sees the same numbers in every run, over real sockets
    /// ([`SimBackend`](crate::SimBackend)) and in the scenario simulator alike.
    pub fn draw(&self, seed: u64, index: u64, in_flight: u64) -> (Option<FailureKind>, Duration) {
        let mut rng = SplitMix64::for_item(seed, index);
        let failure = rng.chance(self.error_rate).then_some(self.error_kind);
        (failure, self.loaded_latency(self.latency.sample(&mut rng), in_flight))
    }

    /// Stretches a sampled latency for a request that arrived while `in_flight`
    /// modelled requests (itself included) were being served; see
    /// [`BackendProfile::capacity`] for the model.
    pub fn loaded_latency(&self, base: Duration, in_flight: u64) -> Duration {
        match self.capacity {
            Some(capacity) if capacity > 0 && in_flight > u64::from(capacity) => {
                seconds_to_duration(base.as_secs_f64() * in_flight as f64 / f64::from(capacity))
            }
            _ => base,
        }
    }

    /// Checks the profile, reporting every problem at once.
    pub fn validate(&self) -> Result<(), InvalidProfile> {
        let mut problems = Vec::new();
        self.problems("", &mut problems);
        if problems.is_empty() { Ok(()) } else { Err(InvalidProfile { problems }) }
    }

    /// Problems with this profile, each prefixed with `path` (`""` or `"phases[1].profile."`).
    pub(crate) fn problems(&self, path: &str, problems: &mut Vec<String>) {
        self.latency.problems(&format!("{path}latency"), problems);
        if !(0.0..=1.0).contains(&self.error_rate) {
            problems.push(format!("{path}error_rate must be within 0..=1, got {}", self.error_rate));
        }
        if self.capacity == Some(0) {
            problems.push(format!("{path}capacity must be more than 0 (leave it out for unlimited)"));
        }
    }
}

impl fmt::Display for BackendProfile {
    /// One line, e.g. `latency 20 ms ± 15 ms, 20% errors (HTTP 500), capacity 50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "latency {}", self.latency)?;
        if self.error_rate > 0.0 {
            write!(f, ", {}% errors ({})", Number(self.error_rate * 100.0), self.error_kind)?;
        }
        if let Some(capacity) = self.capacity {
            write!(f, ", capacity {capacity}")?;
        }
        Ok(())
    }
}

/// A change of profile at a given time into the backend's life.
///
/// ```yaml
/// phases:
///   - at_ms: 30000
///     profile: { latency: { fixed_ms: 300 } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// When the phase begins, counted from [`SimBackend::start`](super::SimBackend::start).
    #[serde(rename = "at_ms", with = "millis")]
    pub at: Duration,
    /// The profile from then on (until the next phase, or a
    /// [`SimBackend::set_profile`](super::SimBackend::set_profile)).
    pub profile: BackendProfile,
}

/// A profile (or spec) that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct InvalidProfile {
    /// Every problem found, each naming its field, e.g.
    /// `phases[1].profile.error_rate must be within 0..=1, got 1.5`.
    pub problems: Vec<String>,
}

/// Where a backend is in its phases: the profile in force and the next phase.
#[derive(Debug)]
pub(crate) struct PhasedProfile {
    current: std::sync::Arc<BackendProfile>,
    /// Sorted by `at`.
    phases: Vec<Phase>,
    next: usize,
}

impl PhasedProfile {
    /// Starts with `initial`; `phases` take over at their offsets.
    pub(crate) fn new(initial: BackendProfile, mut phases: Vec<Phase>) -> Self {
        phases.sort_by_key(|phase| phase.at); // stable: equal offsets keep their order
        Self { current: std::sync::Arc::new(initial), phases, next: 0 }
    }

    /// The profile in force `elapsed` after the start (never goes back in time).
    pub(crate) fn at(&mut self, elapsed: Duration) -> std::sync::Arc<BackendProfile> {
        while let Some(phase) = self.phases.get(self.next).filter(|phase| phase.at <= elapsed) {
            self.current = std::sync::Arc::new(phase.profile.clone());
            self.next += 1;
        }
        self.current.clone()
    }

    /// Replaces the profile in force now; later phases still take over at their time.
    pub(crate) fn set(&mut self, elapsed: Duration, profile: BackendProfile) {
        self.at(elapsed);
        self.current = std::sync::Arc::new(profile);
    }
}

/// Seconds to a `Duration`, clamped to `[0, MAX_LATENCY]` (NaN reads as 0).
fn seconds_to_duration(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).map_or(MAX_LATENCY, |latency| latency.min(MAX_LATENCY))
}

/// Milliseconds, for `Display`: `15 ms`, `2.5 ms`.
struct Ms(Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", Number(self.0.as_secs_f64() * 1e3))
    }
}

/// A number with at most three decimals and no trailing zeros (`20`, `2.5`),
/// so that float noise (`20.000000000000004`) never reaches a message.
pub(crate) struct Number(pub(crate) f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.3}", self.0);
        let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
        f.write_str(if text == "-0" { "0" } else { text })
    }
}

/// Serde for a `Duration` as a number of milliseconds (fractions allowed).
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Writes `duration` as milliseconds.
    pub(crate) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64() * 1e3)
    }

    /// Reads a non-negative, finite number of milliseconds.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(ms / 1e3)
            .map_err(|_| D::Error::custom(format!("expected a non-negative, finite number of milliseconds, got {ms}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn samples(latency: Latency, n: usize) -> Vec<Duration> {
        let mut rng = SplitMix64::new(42);
        let mut samples: Vec<Duration> = (0..n).map(|_| latency.sample(&mut rng)).collect();
        samples.sort_unstable();
        samples
    }

    fn percentile(sorted: &[Duration], p: f64) -> f64 {
        sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
    }

    #[test]
    fn fixed_latency_is_exact() {
        assert!(samples(Latency::Fixed(ms(7)), 100).iter().all(|&s| s == ms(7)));
    }

    #[test]
    fn uniform_latency_covers_its_range_evenly() {
        let sorted = samples(Latency::Uniform { min: ms(5), max: ms(15) }, 20_000);
        assert!(sorted[0] >= ms(5) && sorted[sorted.len() - 1] <= ms(15));
        assert!((percentile(&sorted, 0.5) - 10.0).abs() < 0.3);
        assert!((percentile(&sorted, 0.1) - 6.0).abs() < 0.3);
    }

    #[test]
    fn reversed_uniform_range_is_read_as_its_mirror() {
        let sorted = samples(Latency::Uniform { min: ms(15), max: ms(5) }, 1000);
        assert!(sorted[0] >= ms(5) && sorted[sorted.len() - 1] <= ms(15));
    }

    #[test]
    fn jitter_stays_within_the_spread_and_is_centred() {
        let sorted = samples(Latency::Jitter { mean: ms(20), spread: ms(15) }, 20_000);
        assert!(sorted[0] >= ms(5) && sorted[sorted.len() - 1] <= ms(35));
        let mean = sorted.iter().map(Duration::as_secs_f64).sum::<f64>() / sorted.len() as f64 * 1e3;
        assert!((mean - 20.0).abs() < 0.3, "mean {mean}");
    }

    #[test]
    fn jitter_wider_than_the_mean_is_clamped_at_zero() {
        let sorted = samples(Latency::Jitter { mean: ms(10), spread: ms(30) }, 10_000);
        let zeros = sorted.iter().filter(|s| s.is_zero()).count();
        // P(10 + 30·u < 0) for u uniform in [-1, 1] is 1/3.
        assert!((zeros as f64 / 10_000.0 - 1.0 / 3.0).abs() < 0.03, "{zeros} zeros");
        assert!(sorted[sorted.len() - 1] <= ms(40));
    }

    #[test]
    fn heavy_tail_fit_gives_the_requested_median_and_p99() {
        let sorted = samples(Latency::HeavyTail { median: ms(10), p99: ms(200) }, 200_000);
        let (median, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
        assert!((median - 10.0).abs() < 0.3, "median {median} ms");
        assert!((p99 - 200.0).abs() < 12.0, "p99 {p99} ms");
    }

    #[test]
    fn heavy_tail_with_p99_equal_to_the_median_is_fixed() {
        assert!(samples(Latency::HeavyTail { median: ms(4), p99: ms(4) }, 100).iter().all(|&s| s == ms(4)));
    }

    #[test]
    fn latency_samples_are_reproducible_for_a_seed() {
        let model = Latency::HeavyTail { median: ms(10), p99: ms(100) };
        assert_eq!(samples(model, 50), samples(model, 50));
    }

    #[test]
    fn capacity_scales_latency_only_beyond_capacity() {
        let profile = BackendProfile::fixed(ms(10)).with_capacity(4);
        assert_eq!(profile.loaded_latency(ms(10), 1), ms(10));
        assert_eq!(profile.loaded_latency(ms(10), 4), ms(10));
        assert_eq!(profile.loaded_latency(ms(10), 6), ms(15));
        assert_eq!(profile.loaded_latency(ms(10), 8), ms(20));
        assert_eq!(BackendProfile::fixed(ms(10)).loaded_latency(ms(10), 1000), ms(10));
    }

    #[test]
    fn huge_latencies_are_clamped() {
        let profile = BackendProfile::fixed(MAX_LATENCY).with_capacity(1);
        assert_eq!(profile.loaded_latency(MAX_LATENCY, u64::MAX), MAX_LATENCY);
        assert_eq!(seconds_to_duration(f64::NAN), Duration::ZERO);
        assert_eq!(seconds_to_duration(f64::INFINITY), MAX_LATENCY);
    }

    #[test]
    fn profiles_deserialize_from_the_documented_shape() {
        let profile: BackendProfile = serde_json::from_str(
            r#"{"latency": {"jitter": {"mean_ms": 20, "spread_ms": 2.5}}, "error_rate": 0.2,
                "error_kind": "reset", "capacity": 50}"#,
        )
        .unwrap();
        assert_eq!(
            profile,
            BackendProfile::new(Latency::Jitter { mean: ms(20), spread: Duration::from_micros(2500) })
                .with_errors(0.2, FailureKind::Reset)
                .with_capacity(50)
        );
        let fixed: BackendProfile = serde_json::from_str(r#"{"latency": {"fixed_ms": 10}}"#).unwrap();
        assert_eq!(fixed, BackendProfile::fixed(ms(10)));
        let tail: Latency = serde_json::from_str(r#"{"heavy_tail": {"median_ms": 10, "p99_ms": 250}}"#).unwrap();
        assert_eq!(tail, Latency::HeavyTail { median: ms(10), p99: ms(250) });
        let uniform: Latency = serde_json::from_str(r#"{"uniform": {"min_ms": 1, "max_ms": 3}}"#).unwrap();
        assert_eq!(uniform, Latency::Uniform { min: ms(1), max: ms(3) });
        assert_eq!(serde_json::from_str::<BackendProfile>("{}").unwrap(), BackendProfile::default());
        let hang: FailureKind = serde_json::from_str(r#""hang""#).unwrap();
        assert_eq!(hang, FailureKind::Hang);
        assert_eq!(serde_json::from_str::<FailureKind>(r#""status500""#).unwrap(), FailureKind::Status500);
    }

    #[test]
    fn profiles_round_trip_through_serde() {
        let profile = BackendProfile::new(Latency::HeavyTail { median: ms(3), p99: ms(90) })
            .with_errors(0.5, FailureKind::Hang)
            .with_capacity(8);
        let json = serde_json::to_string(&profile).unwrap();
        assert_eq!(serde_json::from_str::<BackendProfile>(&json).unwrap(), profile);
        let phase = Phase { at: ms(1500), profile };
        let json = serde_json::to_value(&phase).unwrap();
        assert_eq!(json["at_ms"], 1500.0);
        assert_eq!(serde_json::from_value::<Phase>(json).unwrap(), phase);
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_rejected() {
        let unknown = serde_json::from_str::<BackendProfile>(r#"{"latency": {"fixed_ms": 1}, "errors": 0.1}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown field `errors`"));
        let in_variant = serde_json::from_str::<Latency>(r#"{"uniform": {"min_ms": 1, "max_ms": 2, "avg_ms": 1}}"#);
        assert!(in_variant.unwrap_err().to_string().contains("unknown field `avg_ms`"));
        let model = serde_json::from_str::<Latency>(r#"{"gaussian_ms": 1}"#);
        assert!(model.unwrap_err().to_string().contains("unknown variant `gaussian_ms`"));
        let negative = serde_json::from_str::<Latency>(r#"{"fixed_ms": -1}"#);
        assert!(negative.unwrap_err().to_string().contains("non-negative"));
        let phase = serde_json::from_str::<Phase>(r#"{"at": 1, "profile": {}}"#);
        assert!(phase.unwrap_err().to_string().contains("unknown field `at`"));
    }

    #[test]
    fn validation_reports_every_problem_with_its_field() {
        let profile = BackendProfile {
            latency: Latency::HeavyTail { median: ms(10), p99: ms(5) },
            error_rate: 1.5,
            error_kind: FailureKind::Status500,
            capacity: Some(0),
        };
        let problems = profile.validate().unwrap_err().problems;
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("latency.heavy_tail: p99_ms (5)"), "{problems:?}");
        assert!(problems[1].starts_with("error_rate must be within 0..=1, got 1.5"));
        assert!(problems[2].starts_with("capacity must be more than 0"));
        assert!(BackendProfile::new(Latency::Uniform { min: ms(2), max: ms(1) }).validate().is_err());
        assert!(BackendProfile::new(Latency::HeavyTail { median: ms(0), p99: ms(1) }).validate().is_err());
        assert!(BackendProfile::fixed(ms(1)).with_errors(f64::NAN, FailureKind::Reset).validate().is_err());
        assert!(BackendProfile::fixed(ms(1)).with_errors(1.0, FailureKind::Hang).with_capacity(1).validate().is_ok());
    }

    #[test]
    fn phases_take_over_at_their_offsets_in_order() {
        let phase = |at, latency| Phase { at: ms(at), profile: BackendProfile::fixed(ms(latency)) };
        let mut phased = PhasedProfile::new(BackendProfile::fixed(ms(1)), vec![phase(200, 3), phase(100, 2)]);
        assert_eq!(phased.at(ms(0)).latency, Latency::Fixed(ms(1)));
        assert_eq!(phased.at(ms(99)).latency, Latency::Fixed(ms(1)));
        assert_eq!(phased.at(ms(100)).latency, Latency::Fixed(ms(2)));
        phased.set(ms(150), BackendProfile::fixed(ms(9)));
        assert_eq!(phased.at(ms(199)).latency, Latency::Fixed(ms(9)));
        assert_eq!(phased.at(ms(250)).latency, Latency::Fixed(ms(3)));
        assert_eq!(phased.at(ms(100)).latency, Latency::Fixed(ms(3)), "never goes back in time");
    }

    #[test]
    fn profiles_display_on_one_line() {
        let profile = BackendProfile::new(Latency::Jitter { mean: ms(20), spread: ms(15) })
            .with_errors(0.2, FailureKind::Status500)
            .with_capacity(50);
        assert_eq!(profile.to_string(), "latency 20 ms ± 15 ms, 20% errors (HTTP 500), capacity 50");
        assert_eq!(BackendProfile::fixed(ms(5)).to_string(), "latency 5 ms");
    }
}
