//! A candidate picker on trial beside the serving one: it routes a share of
//! the group's requests (same backends, same health state), both pickers'
//! requests are tallied the same way, and an optional rule promotes the
//! candidate when it is better by a margin over a minimum sample, or retires
//! it when it is worse. The slot ([`PickerSlot`](crate::PickerSlot)) owns the
//! trial; this module holds what is compared and how.
//!
//! Which picker routes a request is decided by a number the proxy draws
//! from its own generator ([`PickerSlot::for_request_drawn`](crate::PickerSlot::for_request_drawn)),
//! never from anything the client sends: a client cannot choose its picker,
//! so it cannot make one of them look better or worse.
//!
//! A request counts once, for the picker that routed it (its retries
//! included): an error when veer answered 5xx (the backends' or its own), a
//! success otherwise, with its latency from the first pick to the response
//! head. Requests the client broke off count for neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::PluginSource;
use super::picker::{Picker, PickerInfo};

/// What a trial runs and how it is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSpec {
    /// The candidate's code.
    pub source: PluginSource,
    /// Its parameters.
    pub params: Vec<(String, String)>,
    /// Share of the group's requests the candidate routes, as a fraction in
    /// `(0, 1)`.
    pub share: f64,
    /// When to promote or retire the candidate; `None`: never on its own (an
    /// operator compares the numbers and decides).
    pub rule: Option<TrialRule>,
}

impl TrialSpec {
    /// Whether `other` runs the same candidate the same way (parameters in
    /// any order).
    pub fn same_as(&self, other: &TrialSpec) -> bool {
        self.source == other.source
            && crate::same_params(&self.params, &other.params)
            && self.share == other.share
            && self.rule == other.rule
    }
}

/// When a trial decides on its own.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TrialRule {
    /// Requests each picker must have answered before anything is decided.
    pub min_requests: u64,
    /// How much better (or worse) the candidate's mean latency must be, as a
    /// fraction of the serving picker's (0.05: 5%).
    pub margin: f64,
}

/// Which of the two pickers routed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The serving picker.
    Serving,
    /// The candidate on trial.
    Candidate,
}

impl Role {
    /// The name metrics and the admin API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Candidate => "candidate",
        }
    }
}

/// A running trial: the candidate and both pickers' tallies since it began.
pub struct Trial {
    spec: TrialSpec,
    candidate: Arc<Picker>,
    /// A draw below it routes the request with the candidate.
    threshold: u64,
    started: Instant,
    tallies: [Tally; 2],
}

impl std::fmt::Debug for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trial").field("candidate", self.candidate.info()).field("share", &self.spec.share).finish()
    }
}

impl Trial {
    /// A trial of `candidate` run as `spec` says, its tallies empty.
    pub(crate) fn new(spec: TrialSpec, candidate: Arc<Picker>) -> Trial {
        // `share` is in (0, 1): the product fits, and 0 and u64::MAX are never reached.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let threshold = (spec.share.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
        Trial { spec, candidate, threshold, started: Instant::now(), tallies: [Tally::default(), Tally::default()] }
    }

    /// The same candidate, its tallies started afresh (the serving picker
    /// changed: the old numbers compared another pair).
    pub(crate) fn restarted(&self) -> Trial {
        Trial::new(self.spec.clone(), self.candidate.clone())
    }

    /// What it runs.
    pub fn spec(&self) -> &TrialSpec {
        &self.spec
    }

    /// The candidate picker.
    pub fn candidate(&self) -> &Arc<Picker> {
        &self.candidate
    }

    /// Which picker routes a request that drew `draw`.
    pub(crate) fn role_of(&self, draw: u64) -> Role {
        if draw < self.threshold { Role::Candidate } else { Role::Serving }
    }

    /// Counts a request `role` routed.
    pub(crate) fn record(&self, role: Role, ok: bool, latency: Duration) {
        self.tallies[role as usize].record(ok, latency);
    }

    /// Both pickers' numbers and what the rule makes of them.
    pub fn report(&self, serving: &PickerInfo) -> TrialReport {
        let arms = [self.tallies[0].report(), self.tallies[1].report()];
        let verdict = match &self.spec.rule {
            Some(rule) => judge(rule, &arms[0], &arms[1]),
            None => Verdict::Undecided { reason: "no rule: an operator promotes or stops the trial".into() },
        };
        let [serving_arm, candidate_arm] = arms;
        TrialReport {
            serving: serving.clone(),
            candidate: self.candidate.info().clone(),
            share_percent: self.spec.share * 100.0,
            rule: self.spec.rule,
            running_seconds: self.started.elapsed().as_secs_f64(),
            serving_requests: serving_arm,
            candidate_requests: candidate_arm,
            verdict,
        }
    }
}

/// A trial as the admin API and metrics show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialReport {
    /// The serving picker.
    pub serving: PickerInfo,
    /// The candidate.
    pub candidate: PickerInfo,
    /// Share of requests the candidate routes, in percent.
    pub share_percent: f64,
    /// The rule, if the trial decides on its own.
    pub rule: Option<TrialRule>,
    /// Since the trial (or its current comparison) began.
    pub running_seconds: f64,
    /// The serving picker's requests during the trial.
    pub serving_requests: ArmReport,
    /// The candidate's.
    pub candidate_requests: ArmReport,
    /// What the rule says now (with no rule: undecided).
    pub verdict: Verdict,
}

/// One picker's requests during a trial.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ArmReport {
    /// Requests it routed that ended (success or error).
    pub requests: u64,
    /// Of them, answered 5xx.
    pub errors: u64,
    /// `errors / requests` (0 with no requests).
    pub error_rate: f64,
    /// Mean latency of the successful ones, in milliseconds.
    pub mean_ms: f64,
    /// Their median, from a histogram (within 10%).
    pub p50_ms: f64,
    /// Their 99th percentile, likewise.
    pub p99_ms: f64,
    /// The standard deviation of their latency, from the histogram.
    pub stddev_ms: f64,
}

/// What a trial's rule says.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Verdict {
    /// Keep comparing.
    Undecided {
        /// Why not yet.
        reason: String,
    },
    /// The candidate is better: make it the serving picker.
    Promote {
        /// By how much.
        reason: String,
    },
    /// The candidate is worse: stop it.
    Retire {
        /// By how much.
        reason: String,
    },
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialOutcome {
    /// The candidate became the serving picker.
    Promoted,
    /// The rule found the candidate worse and stopped it.
    Retired,
    /// An operator (the admin API, a reload) stopped it, or started another.
    Stopped,
}

impl TrialOutcome {
    /// The word the admin API and reload reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialOutcome::Promoted => "promoted",
            TrialOutcome::Retired => "retired",
            TrialOutcome::Stopped => "stopped",
        }
    }
}

/// Who ended a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decider {
    /// The trial's own rule.
    Rule,
    /// The admin API or a reload.
    Operator,
}

/// How a trial ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialEnd {
    /// Promoted, retired or stopped.
    pub outcome: TrialOutcome,
    /// Who decided.
    pub by: Decider,
    /// The numbers it ended on.
    pub report: TrialReport,
    /// The trial, so that a reload does not start it again (see
    /// [`PickerSlot::trial_settled`](crate::PickerSlot::trial_settled)).
    #[serde(skip)]
    pub spec: TrialSpec,
    /// The serving picker it was compared with: (source, parameters).
    #[serde(skip)]
    pub against: (String, Vec<(String, String)>),
}

/// Standard errors a difference must exceed to count: a fluke this large
/// comes once in about 370 comparisons of two equal pickers.
const SIGNIFICANCE: f64 = 3.0;

/// Error rates closer than this (absolute) are treated as equal however
/// many requests there were: a 0.1% difference does not decide a picker.
const ERROR_RATE_FLOOR: f64 = 0.001;

/// The rule: below `min_requests` on either side, nothing. Then errors
/// first: a difference in error rate that is significant (more than three
/// standard errors of the two-proportion test) and above 0.1% decides.
/// Otherwise the mean latency of successful requests: the candidate is
/// promoted when its mean is lower by more than `margin` of the serving
/// picker's, retired when higher by more than `margin`, in both cases only
/// if the difference is also significant (more than three standard errors,
/// Welch).
pub fn judge(rule: &TrialRule, serving: &ArmReport, candidate: &ArmReport) -> Verdict {
    let (s, c) = (serving, candidate);
    if s.requests < rule.min_requests || c.requests < rule.min_requests {
        return Verdict::Undecided {
            reason: format!(
                "{} serving and {} candidate requests of the {} each needs",
                s.requests, c.requests, rule.min_requests
            ),
        };
    }
    #[allow(clippy::cast_precision_loss)]
    let (ns, nc) = (s.requests as f64, c.requests as f64);
    #[allow(clippy::cast_precision_loss)]
    let pooled = (s.errors + c.errors) as f64 / (ns + nc);
    let error_se = (pooled * (1.0 - pooled) * (1.0 / ns + 1.0 / nc)).sqrt();
    let error_gap = c.error_rate - s.error_rate;
    if error_gap.abs() > ERROR_RATE_FLOOR && error_gap.abs() > SIGNIFICANCE * error_se {
        let reason = format!(
            "error rate {:.2}% against the serving picker's {:.2}%",
            c.error_rate * 100.0,
            s.error_rate * 100.0
        );
        return if error_gap > 0.0 { Verdict::Retire { reason } } else { Verdict::Promote { reason } };
    }
    let (oks, okc) = ((ns - s.errors as f64).max(1.0), (nc - c.errors as f64).max(1.0));
    let latency_se = (s.stddev_ms.powi(2) / oks + c.stddev_ms.powi(2) / okc).sqrt();
    let gap = c.mean_ms - s.mean_ms;
    let significant = gap.abs() > SIGNIFICANCE * latency_se;
    let reason = |word: &str| {
        format!(
            "mean latency {:.2} ms against {:.2} ms ({:+.1}%, {word})",
            c.mean_ms,
            s.mean_ms,
            if s.mean_ms > 0.0 { gap / s.mean_ms * 100.0 } else { 0.0 }
        )
    };
    if significant && gap < -rule.margin * s.mean_ms {
        Verdict::Promote { reason: reason("better by more than the margin") }
    } else if significant && gap > rule.margin * s.mean_ms {
        Verdict::Retire { reason: reason("worse by more than the margin") }
    } else {
        Verdict::Undecided { reason: reason("within the margin or not significant yet") }
    }
}

/// Histogram buckets: bucket `i` holds latencies below `BASE_US * 2^((i+1)/4)`
/// (a 19% step: quantiles within 10%), from 25 µs to about 26 s.
const BUCKETS: usize = 80;
const BASE_US: f64 = 25.0;

/// One picker's requests: atomics every worker adds to.
struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Sum of the successful requests' latencies, in microseconds.
    ok_micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ok_micros: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Tally {
    fn record(&self, ok: bool, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.ok_micros.fetch_add(micros, Ordering::Relaxed);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    #[allow(clippy::cast_precision_loss)]
    fn report(&self) -> ArmReport {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let oks: u64 = buckets.iter().sum();
        let errors = self.errors.load(Ordering::Relaxed);
        // Read after the buckets: a request recorded in between is counted, never a bucket without its request.
        let requests = self.requests.load(Ordering::Relaxed).max(oks + errors);
        let mean_ms = if oks == 0 { 0.0 } else { self.ok_micros.load(Ordering::Relaxed) as f64 / oks as f64 / 1000.0 };
        let variance = if oks < 2 {
            0.0
        } else {
            buckets.iter().enumerate().map(|(i, &n)| n as f64 * (bucket_mid_ms(i) - mean_ms).powi(2)).sum::<f64>()
                / (oks - 1) as f64
        };
        ArmReport {
            requests,
            errors,
            error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
            mean_ms,
            p50_ms: quantile(&buckets, oks, 0.5),
            p99_ms: quantile(&buckets, oks, 0.99),
            stddev_ms: variance.sqrt(),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    #[allow(clippy::cast_precision_loss)]
    let steps = ((micros as f64 / BASE_US).log2() * 4.0).floor();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = steps.max(0.0) as usize;
    index.min(BUCKETS - 1)
}

/// The geometric middle of bucket `i`, in milliseconds.
#[allow(clippy::cast_precision_loss)]
fn bucket_mid_ms(i: usize) -> f64 {
    BASE_US * 2f64.powf((i as f64 + 0.5) / 4.0) / 1000.0
}

#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn quantile(buckets: &[u64], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return bucket_mid_ms(i);
        }
    }
    bucket_mid_ms(buckets.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(requests: u64, errors: u64, mean_ms: f64, stddev_ms: f64) -> ArmReport {
        #[allow(clippy::cast_precision_loss)]
        let error_rate = errors as f64 / requests as f64;
        ArmReport { requests, errors, error_rate, mean_ms, p50_ms: mean_ms, p99_ms: mean_ms * 3.0, stddev_ms }
    }

    const RULE: TrialRule = TrialRule { min_requests: 500, margin: 0.05 };

    fn decision(verdict: &Verdict) -> &'static str {
        match verdict {
            Verdict::Undecided { .. } => "undecided",
            Verdict::Promote { .. } => "promote",
            Verdict::Retire { .. } => "retire",
        }
    }

    #[test]
    fn nothing_is_decided_below_the_minimum_sample() {
        let verdict = judge(&RULE, &arm(499, 0, 50.0, 5.0), &arm(5000, 0, 5.0, 1.0));
        assert_eq!(decision(&verdict), "undecided", "{verdict:?}");
    }

    #[test]
    fn a_clearly_faster_candidate_is_promoted_and_a_slower_one_retired() {
        assert_eq!(decision(&judge(&RULE, &arm(1000, 0, 20.0, 10.0), &arm(1000, 0, 12.0, 8.0))), "promote");
        assert_eq!(decision(&judge(&RULE, &arm(1000, 0, 12.0, 8.0), &arm(1000, 0, 20.0, 10.0))), "retire");
    }

    #[test]
    fn a_difference_inside_the_margin_or_the_noise_decides_nothing() {
        // 3% better: inside the 5% margin however many requests.
        assert_eq!(decision(&judge(&RULE, &arm(100_000, 0, 10.0, 1.0), &arm(100_000, 0, 9.7, 1.0))), "undecided");
        // 20% better on average but with a spread that makes it a fluke at this size.
        assert_eq!(decision(&judge(&RULE, &arm(500, 0, 10.0, 40.0), &arm(500, 0, 8.0, 40.0))), "undecided");
    }

    #[test]
    fn errors_decide_before_latency() {
        // Faster, but 5% errors against none: retired.
        let verdict = judge(&RULE, &arm(2000, 0, 20.0, 5.0), &arm(2000, 100, 10.0, 5.0));
        assert_eq!(decision(&verdict), "retire", "{verdict:?}");
        // Slower, but it avoids the errors the serving picker walks into: promoted.
        assert_eq!(decision(&judge(&RULE, &arm(2000, 100, 10.0, 5.0), &arm(2000, 0, 20.0, 5.0))), "promote");
        // 0.05% against none: below the floor, latency decides (equal here).
        assert_eq!(decision(&judge(&RULE, &arm(20_000, 0, 10.0, 1.0), &arm(20_000, 10, 10.0, 1.0))), "undecided");
    }

    #[test]
    fn tallies_give_the_mean_exactly_and_quantiles_within_ten_percent() {
        let tally = Tally::default();
        for ms in 1..=100 {
            tally.record(true, Duration::from_millis(ms));
        }
        tally.record(false, Duration::from_millis(1));
        let report = tally.report();
        assert_eq!((report.requests, report.errors), (101, 1));
        assert!((report.mean_ms - 50.5).abs() < 1e-9, "{report:?}");
        assert!((report.p50_ms / 50.0 - 1.0).abs() < 0.1, "{report:?}");
        assert!((report.p99_ms / 99.0 - 1.0).abs() < 0.1, "{report:?}");
        // The true standard deviation of 1..=100 is 29.0.
        assert!((report.stddev_ms / 29.0 - 1.0).abs() < 0.1, "{report:?}");
    }

    #[test]
    fn the_share_is_the_fraction_of_draws_that_go_to_the_candidate() {
        let spec = |share| TrialSpec { source: PluginSource::NativeRoundRobin, params: vec![], share, rule: None };
        let runtime = crate::PluginRuntime::new(crate::Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        let picker = Arc::new(Picker::native_round_robin(runtime, veer_core::Membership::default()));
        let trial = Trial::new(spec(0.25), picker);
        let draws = (0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let candidate = draws.filter(|&d| trial.role_of(d) == Role::Candidate).count();
        assert!((2300..2700).contains(&candidate), "{candidate} of 10000 at a 25% share");
    }
}
