//! How often a backend fails, counted so that a change shows.

/// The failure rate's prior: 2%, worth a quarter of an attempt.
const PRIOR_FAILURES: f64 = 0.005;
const PRIOR_ATTEMPTS: f64 = 0.25;
/// The shortest run of like outcomes that can show a change.
const MIN_RUN_FOR_CHANGE: u32 = 2;
/// Below this chance that nothing changed, the record before a run is forgotten.
const CHANGE_BELIEVED: f64 = 0.05;
/// Prior odds that a backend's failure rate changed, against the streak.
const CHANGE_ODDS: f64 = 0.3;
/// What each success in a row leaves of a recovering backend's re-probe interval.
const PROBE_INTERVAL_PER_SUCCESS: f64 = 0.2;

/// One backend's failed and total attempts, counted with a weight that fades
/// over `decay_us` and capped at `memory` attempts, with a 2% prior worth a
/// quarter of an attempt.
///
/// Counted, not averaged: three failures of three say ~90%, not the 9% an
/// average starting from zero would, so a dead backend is told from one that
/// fails now and then. Successes in a row since the last failure are weighed
/// as evidence of a change ([`FailureRecord::expected_rate`]): two after
/// three failures say "recovered", five after a rate of 20% do not. A run
/// of like outcomes that nothing-changed makes unlikely (two failures in a
/// row of a backend that never fails, two successes of one that was down)
/// ends the record before it, so a backend that flaps between healthy and
/// down every second is seen down, then back, each time.
///
/// ```
/// let mut record = veer_sdk::FailureRecord::new(5e6, 30.0);
/// for at in 1..=3 {
///     record.count(true, at * 1_000, 500); // each sent after the last failure
/// }
/// assert!(record.rate(4_000) > 0.85);
/// record.count(false, 5_000, 500);
/// record.count(false, 6_000, 500);
/// assert!(record.expected_rate(6_000) < 0.05, "back, almost surely");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRecord {
    /// Failed attempts and all attempts, faded to `stamp_us`.
    failures: f64,
    attempts: f64,
    /// Successes since the last failure.
    streak: u32,
    /// Failures since the last success, of attempts sent after the last
    /// success's.
    failed_in_a_row: u32,
    /// When the attempt of the last success was sent, µs.
    last_success_sent_us: u64,
    /// When the last outcome was counted, µs.
    stamp_us: u64,
    decay_us: f64,
    memory: f64,
}

impl FailureRecord {
    /// A backend failing at least this share of its attempts is down.
    pub const DOWN: f64 = 0.5;

    /// An empty record whose counts fade with time constant `decay_us` and
    /// keep at most `memory` attempts' worth.
    pub fn new(decay_us: f64, memory: f64) -> FailureRecord {
        FailureRecord {
            failures: 0.0,
            attempts: 0.0,
            streak: 0,
            failed_in_a_row: 0,
            last_success_sent_us: 0,
            stamp_us: 0,
            decay_us,
            memory,
        }
    }

    /// What is left at `now` of what was counted at the last outcome.
    fn fade(&self, now: u64) -> f64 {
        (-(now.saturating_sub(self.stamp_us) as f64) / self.decay_us).exp()
    }

    /// Counts an attempt that ended at `now`, `latency_us` after it was
    /// sent, and failed or not.
    ///
    /// Runs are in the order attempts were sent, not answered: a failure of
    /// an attempt sent before one that already succeeded does not make a
    /// run of failures longer (the backend served after it was sent).
    /// Requests hung together at a backend that hangs one in five time out
    /// together, long after the successes sent between them; read in the
    /// order they arrived they said "went down" of a backend that had not
    /// changed, and its recovery was then probed, into more hangs.
    pub fn count(&mut self, failed: bool, now: u64, latency_us: u64) {
        let fade = self.fade(now);
        let keep = fade * (self.memory / (self.attempts * fade + 1.0)).min(1.0);
        self.failures = self.failures * keep + f64::from(u8::from(failed));
        self.attempts = self.attempts * keep + 1.0;
        let sent = now.saturating_sub(latency_us);
        if failed {
            self.streak = 0;
            if sent >= self.last_success_sent_us || self.failed_in_a_row == 0 {
                self.failed_in_a_row = self.failed_in_a_row.saturating_add(1);
            }
        } else {
            self.last_success_sent_us = self.last_success_sent_us.max(sent);
            self.streak = self.streak.saturating_add(1);
            self.failed_in_a_row = 0;
        }
        self.stamp_us = now;
        self.forget_before_a_change();
    }

    /// Successes since the last failure.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// The failure rate counted, at `now`: the counts fade towards the prior.
    pub fn rate(&self, now: u64) -> f64 {
        let fade = self.fade(now);
        (self.failures * fade + PRIOR_FAILURES) / (self.attempts * fade + PRIOR_ATTEMPTS)
    }

    /// Forgets the record from before the current run of like outcomes when
    /// the run is too unlikely under it: the backend changed. (A memory of
    /// ~30 attempts would otherwise keep a backend that flaps every second
    /// between healthy and down looking "fails now and then", never down,
    /// never back.)
    fn forget_before_a_change(&mut self) {
        let (run, failing) = if self.failed_in_a_row > 0 { (self.failed_in_a_row, true) } else { (self.streak, false) };
        if run < MIN_RUN_FOR_CHANGE {
            return;
        }
        let run = f64::from(run.min(64));
        let failures_before = if failing { (self.failures - run).max(0.0) } else { self.failures };
        let attempts_before = (self.attempts - run).max(failures_before);
        if attempts_before < 1.0 {
            return;
        }
        let before = (failures_before + PRIOR_FAILURES) / (attempts_before + PRIOR_ATTEMPTS);
        let unchanged = if failing { before.powf(run) } else { (1.0 - before).powf(run) };
        if unchanged / (unchanged + CHANGE_ODDS) < CHANGE_BELIEVED {
            self.failures = if failing { run } else { 0.0 };
            self.attempts = run;
        }
    }

    /// The failure rate before the successes in a row since the last failure.
    pub fn rate_before_streak(&self, now: u64) -> f64 {
        let fade = self.fade(now);
        let before = (self.attempts - f64::from(self.streak)).max(self.failures);
        (self.failures * fade + PRIOR_FAILURES) / (before * fade + PRIOR_ATTEMPTS)
    }

    /// The failure rate to expect of the next attempt, given the successes
    /// in a row since the last failure: either nothing changed and they
    /// were luck, or the backend changed when they began (it recovered). The
    /// streak's likelihood without a change, `(1 − p)^streak` with `p` the
    /// rate before it, against a change's (about 1) and the prior odds of
    /// one (0.3), weighs the two. Two successes after three failures say
    /// "recovered" almost surely; five after a rate of 20% do not (a third
    /// of such backends manage that by luck).
    pub fn expected_rate(&self, now: u64) -> f64 {
        self.rate_after(0, now)
    }

    /// How long after its last outcome a backend is due a re-probe, µs:
    /// `reprobe_us`, cut to a fifth by each success in a row of a backend
    /// that was down, so one that answers again is confirmed within a few
    /// requests rather than one per interval. (Not one failing now and
    /// then: its success says little, and each probe risks a failure.)
    pub fn reprobe_after_us(&self, reprobe_us: f64, now: u64) -> f64 {
        if self.streak > 0 && self.rate_before_streak(now) >= Self::DOWN {
            reprobe_us * PROBE_INTERVAL_PER_SUCCESS.powi(self.streak.min(16) as i32)
        } else {
            reprobe_us
        }
    }

    /// [`FailureRecord::expected_rate`] after `more` successes in a row:
    /// whether a few more could bring a failing backend back.
    pub fn rate_after(&self, more: u32, now: u64) -> f64 {
        let streak = self.streak.saturating_add(more);
        if streak == 0 {
            return self.rate(now);
        }
        let streak = f64::from(streak.min(64));
        let before = self.rate_before_streak(now);
        let unchanged = (1.0 - before.min(1.0)).powf(streak);
        let unchanged = unchanged / (unchanged + CHANGE_ODDS);
        let after = PRIOR_FAILURES / (streak + PRIOR_ATTEMPTS);
        unchanged * before + (1.0 - unchanged) * after
    }
}

#[cfg(test)]
mod tests {
    use super::FailureRecord;

    /// Each outcome 1 ms after the one before, answered 0.5 ms after it was sent.
    fn counted(outcomes: &[bool]) -> FailureRecord {
        let mut record = FailureRecord::new(5e6, 1.0 / 0.03);
        for (at, failed) in (1..).zip(outcomes) {
            record.count(*failed, at * 1_000, 500);
        }
        record
    }

    #[test]
    fn a_dead_backend_is_told_from_one_failing_now_and_then() {
        let dead = counted(&[true; 3]);
        assert!(dead.rate(0) > 0.85, "{}", dead.rate(0));
        // Two successes after it was down: recovered, almost surely.
        let back = counted(&[true, true, true, false, false]);
        assert!(back.expected_rate(0) < 0.05, "{}", back.expected_rate(0));
        // Five in a row at a rate of 20% are luck, not a recovery.
        let mut flaky: Vec<bool> = (0..30).map(|i| i % 5 == 0).collect();
        flaky.extend([true, false, false, false, false, false]);
        let flaky = counted(&flaky);
        assert_eq!(flaky.streak(), 5);
        assert!(flaky.expected_rate(0) > 0.1, "{}", flaky.expected_rate(0));
        assert!(flaky.rate_after(3, 0) > 0.05, "three more do not clear it: {}", flaky.rate_after(3, 0));
    }

    #[test]
    fn a_change_ends_the_record_before_it() {
        // Healthy for long, then two failures in a row: down, not 6%.
        let mut outcomes = vec![false; 30];
        outcomes.extend([true, true]);
        let record = counted(&outcomes);
        assert!(record.rate(0) > 0.8, "{}", record.rate(0));
    }

    #[test]
    fn failures_in_a_row_are_counted_in_the_order_attempts_were_sent() {
        // Healthy; the last success was sent at 29.5 ms.
        let healthy = || counted(&[false; 30]);
        // Three hangs of attempts sent before it, timing out together.
        let mut hung = healthy();
        for at in [520_000, 521_000, 522_000] {
            hung.count(true, at, 500_000);
        }
        assert!(hung.rate(522_000) < 0.15, "not down: {}", hung.rate(522_000));
        // Three failures of attempts sent after it: the backend went down.
        let mut down = healthy();
        for at in [40_000, 41_000, 42_000] {
            down.count(true, at, 1_000);
        }
        assert!(down.rate(42_000) > 0.8, "down: {}", down.rate(42_000));
    }

    #[test]
    fn a_backend_answering_again_after_being_down_is_probed_sooner() {
        let mut record = counted(&[true; 3]);
        assert_eq!(record.reprobe_after_us(1e6, 0), 1e6);
        record.count(false, 1_000, 500);
        assert!((record.reprobe_after_us(1e6, 0) - 2e5).abs() < 1e-6);
        // One failing now and then is not hurried.
        let flaky: Vec<bool> = (0..31).map(|i| i % 5 == 0).collect();
        assert_eq!(counted(&flaky).reprobe_after_us(1e6, 0), 1e6);
    }

    #[test]
    fn counts_fade_towards_the_prior() {
        let mut record = FailureRecord::new(1e6, 30.0);
        for _ in 0..3 {
            record.count(true, 0, 0);
        }
        assert!(record.rate(0) > 0.85);
        assert!((record.rate(60_000_000) - 0.02).abs() < 0.001, "{}", record.rate(60_000_000));
    }
}
