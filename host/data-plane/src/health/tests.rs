//! Health as a whole: eligibility decisions and the events they produce, with
//! explicit instants (no sleeping, no wall clock in assertions).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use super::*;
use crate::pool::WEIGHT_SCALE;

type Log = Arc<Mutex<Vec<BackendEvent>>>;

fn spec(name: &str, max_concurrent: Option<u32>) -> BackendSpec {
    BackendSpec { max_concurrent, ..BackendSpec::new(name, SocketAddr::from(([127, 0, 0, 1], 1))) }
}

fn config() -> HealthConfig {
    let ms = Duration::from_millis;
    let mut config = HealthConfig::default();
    config.check.rise = 2;
    config.check.fall = 3;
    config.breaker.consecutive_failures = 3;
    config.breaker.failure_ratio = 0.0;
    config.breaker.open_for = ms(1000);
    config.outlier.consecutive_errors = 0;
    config.outlier.base_ejection = ms(10_000);
    config.outlier.interval = ms(60_000);
    config.slow_start.window = ms(10_000);
    config
}

fn group(n: usize, config: HealthConfig) -> (Arc<Health>, Log) {
    let specs = (1..=n).map(|i| spec(&format!("b{i}"), None)).collect();
    let (pool, _) = Pool::new(specs, Arc::new(crate::pool::Unrecorded));
    let log: Log = Arc::default();
    let sink = log.clone();
    let health = Health::new(Arc::new(pool), config, Box::new(move |events| sink.lock().extend_from_slice(events)));
    (health, log)
}

fn take(log: &Log) -> Vec<BackendEvent> {
    std::mem::take(&mut *log.lock())
}

fn fail(health: &Health, id: BackendId, now: Instant) {
    let tracked = health.get(id).unwrap();
    health.record(&tracked, false, AttemptOutcome::Failed(ErrorKind::Connect), Duration::ZERO, now);
}

fn status(health: &Health, id: BackendId, status: u16, now: Instant) {
    let tracked = health.get(id).unwrap();
    health.record(&tracked, false, AttemptOutcome::Status(status), Duration::from_millis(1), now);
}

fn eligible(events: &[BackendEvent]) -> Vec<(BackendId, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            BackendEvent::Eligibility(change) => Some(*change),
            _ => None,
        })
        .collect()
}

fn weights(events: &[BackendEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            BackendEvent::Updated(b) => Some(b.weight),
            _ => None,
        })
        .collect()
}

#[test]
fn an_open_breaker_takes_the_backend_out_once_and_a_probe_brings_it_back_ramping() {
    let (health, log) = group(2, config());
    let t = Instant::now();
    fail(&health, 1, t);
    fail(&health, 1, t);
    assert!(take(&log).is_empty(), "nothing changes below the threshold");
    fail(&health, 1, t);
    assert_eq!(eligible(&take(&log)), [(1, false)]);
    fail(&health, 1, t);
    assert!(take(&log).is_empty(), "late failures while open publish nothing");
    health.tick(t + Duration::from_millis(999));
    assert!(take(&log).is_empty());
    // Half-open: eligible again so that probes can reach it, at a tenth of its weight.
    let half_open = t + Duration::from_millis(1000);
    health.tick(half_open);
    let events = take(&log);
    assert_eq!(eligible(&events), [(1, true)]);
    assert_eq!(weights(&events), [WEIGHT_SCALE / 10]);
    assert_eq!(health.backend("b1").unwrap().breaker, BreakerPhase::HalfOpen);
    let tracked = health.get(1).unwrap();
    assert!(tracked.state.lock().breaker.admit(&health.config.breaker, half_open).unwrap(), "a probe");
    health.record(&tracked, true, AttemptOutcome::Status(200), Duration::ZERO, half_open);
    assert_eq!(health.backend("b1").unwrap().breaker, BreakerPhase::Closed);
    // The ramp climbs in steps to the full weight, then stops publishing.
    let mut seen = Vec::new();
    for step in 1..=12 {
        health.tick(half_open + Duration::from_millis(1000 * step));
        seen.extend(weights(&take(&log)));
    }
    assert_eq!(seen, (2..=10).map(|k| WEIGHT_SCALE * k / 10).collect::<Vec<_>>());
    assert_eq!(health.backend("b1").unwrap().eligibility_changes, 2);
}

#[test]
fn outlier_ejection_is_capped_by_the_share_and_ends_by_itself() {
    let mut config = config();
    config.breaker.consecutive_failures = 0;
    config.outlier.consecutive_errors = 2;
    config.outlier.max_ejected_share = 0.5;
    config.slow_start.window = Duration::ZERO;
    let (health, log) = group(4, config);
    let t = Instant::now();
    for id in 1..=3 {
        status(&health, id, 500, t);
        status(&health, id, 503, t);
    }
    assert_eq!(eligible(&take(&log)), [(1, false), (2, false)], "half of four, no more");
    assert!(health.backend("b3").unwrap().ejected_for_ms.is_none());
    assert_eq!(health.backend("b1").unwrap().ejection_reason, Some(EjectionReason::ConsecutiveErrors));
    health.tick(t + Duration::from_secs(10));
    let mut returned = eligible(&take(&log));
    returned.sort();
    assert_eq!(returned, [(1, true), (2, true)]);
    // The slots are free again: b3 can now be ejected.
    status(&health, 3, 500, t);
    status(&health, 3, 500, t);
    assert_eq!(eligible(&take(&log)), [(3, false)]);
}

#[test]
fn active_checks_need_fall_failures_to_remove_and_rise_passes_to_restore() {
    let (health, log) = group(1, config());
    let t = Instant::now();
    health.record_check(1, Err("refused".into()), t);
    health.record_check(1, Err("refused".into()), t);
    health.record_check(1, Ok(()), t);
    health.record_check(1, Err("refused".into()), t);
    health.record_check(1, Err("refused".into()), t);
    assert!(take(&log).is_empty(), "a pass in between resets the count");
    health.record_check(1, Err("status 503".into()), t);
    assert_eq!(eligible(&take(&log)), [(1, false)]);
    let b1 = health.backend("b1").unwrap();
    assert_eq!((b1.healthy, b1.checks_failed_total), (false, 5));
    assert_eq!(b1.last_check_error.as_deref(), Some("status 503"));
    health.record_check(1, Ok(()), t);
    assert!(take(&log).is_empty());
    health.record_check(1, Ok(()), t);
    assert_eq!(eligible(&take(&log)), [(1, true)]);
}

#[test]
fn a_drained_backend_is_refused_and_undrain_brings_it_back() {
    let (health, log) = group(2, config());
    let b1 = health.pool.get(1).unwrap();
    assert!(health.set_drained("b1", true).unwrap().drained);
    assert_eq!(eligible(&take(&log)), [(1, false)]);
    assert_eq!(health.admit(&b1).unwrap_err(), Refusal::Drained);
    assert_eq!(b1.in_flight.load(Ordering::Relaxed), 0, "a refusal holds no slot");
    assert!(health.set_drained("nope", true).is_none());
    assert!(!health.set_drained("b1", false).unwrap().drained);
    assert_eq!(eligible(&take(&log)), [(1, true)]);
    assert!(health.admit(&b1).is_ok());
}

#[test]
fn a_backend_at_its_cap_is_refused_until_a_slot_frees() {
    let (pool, _) = Pool::new(vec![spec("capped", Some(2))], Arc::new(crate::pool::Unrecorded));
    let health = Health::new(Arc::new(pool), config(), Box::new(|_| {}));
    let backend = health.pool.get(1).unwrap();
    let first = health.admit(&backend).unwrap();
    let second = health.admit(&backend).unwrap();
    assert_eq!(health.admit(&backend).unwrap_err(), Refusal::AtCapacity);
    assert_eq!(backend.in_flight.load(Ordering::Relaxed), 2);
    assert_eq!(health.backend("capped").unwrap().refused_at_cap_total, 1);
    first.finish(AttemptOutcome::Status(200), Duration::ZERO);
    let third = health.admit(&backend).unwrap();
    drop((second, third));
    assert_eq!(backend.in_flight.load(Ordering::Relaxed), 0);
}

#[test]
fn half_open_admits_bounded_probes_and_a_cancelled_probe_frees_its_slot() {
    let mut config = config();
    config.breaker.half_open_probes = 1;
    config.breaker.open_for = Duration::from_millis(1);
    let (health, _log) = group(2, config);
    let t = Instant::now();
    for _ in 0..3 {
        fail(&health, 1, t);
    }
    health.tick(t + Duration::from_millis(2));
    let backend = health.pool.get(1).unwrap();
    let probe = health.admit(&backend).unwrap();
    assert_eq!(health.admit(&backend).unwrap_err(), Refusal::Breaker(BreakerRefusal::ProbesBusy));
    assert_eq!(health.backend("b1").unwrap().refused_by_breaker_total, 1);
    drop(probe);
    let probe = health.admit(&backend).unwrap();
    probe.finish(AttemptOutcome::Status(200), Duration::ZERO);
    assert_eq!(health.backend("b1").unwrap().breaker, BreakerPhase::Closed);
}

#[test]
fn success_rate_outliers_are_ejected_at_the_analysis() {
    let mut config = config();
    config.outlier.min_requests = 10;
    config.outlier.interval = Duration::from_secs(1);
    let (health, log) = group(3, config);
    let t = Instant::now();
    for i in 0..20 {
        status(&health, 1, 200, t);
        status(&health, 2, 200, t);
        status(&health, 3, if i % 2 == 0 { 500 } else { 200 }, t);
    }
    assert!(take(&log).is_empty());
    health.tick(t + Duration::from_secs(1));
    assert_eq!(eligible(&take(&log)), [(3, false)]);
    assert_eq!(health.backend("b3").unwrap().ejection_reason, Some(EjectionReason::SuccessRate));
}

#[test]
fn added_backends_ramp_up_and_existing_ones_do_not() {
    let (health, log) = group(1, config());
    assert!(take(&log).is_empty(), "the starting set is published by the server, at full weight");
    health.add(vec![spec("late", None)]);
    let events = take(&log);
    assert!(matches!(&events[0], BackendEvent::Added(b) if b.name == "late" && b.weight == WEIGHT_SCALE));
    assert_eq!(weights(&events), [WEIGHT_SCALE / 10]);
    assert_eq!(health.backend("late").unwrap().effective_weight, WEIGHT_SCALE / 10);
    assert_eq!(health.backend("b1").unwrap().effective_weight, WEIGHT_SCALE);
}

/// Breakers off; three errors in a row eject, half the group at most.
fn ejecting_after_three_errors() -> HealthConfig {
    let mut config = config();
    config.breaker.consecutive_failures = 0;
    config.outlier.consecutive_errors = 3;
    config.outlier.max_ejected_share = 0.5;
    config
}

#[test]
fn attempts_finishing_on_a_removed_backend_do_not_leak_ejection_places() {
    let (health, log) = group(4, ejecting_after_three_errors());
    let now = Instant::now();
    // Attempts in flight on b3 and b4 when they are removed, then failing.
    for id in [3, 4] {
        let backend = health.pool.get(id).unwrap();
        let in_flight: Vec<_> = (0..3).map(|_| health.admit(&backend).unwrap()).collect();
        health.remove_ids(&[id]);
        for admitted in in_flight {
            admitted.finish(AttemptOutcome::Failed(ErrorKind::Connect), Duration::ZERO);
        }
    }
    assert_eq!(health.ejected.load(Ordering::Relaxed), 0, "no place is held for a removed backend");
    take(&log);
    // b1 now fails: with two backends left, one may be ejected.
    for _ in 0..3 {
        fail(&health, 1, now);
    }
    assert_eq!(eligible(&take(&log)), vec![(1, false)], "b1 is ejected");
}

#[test]
fn removing_an_ejected_backend_frees_its_place_once() {
    let (health, log) = group(4, ejecting_after_three_errors());
    let now = Instant::now();
    for _ in 0..3 {
        fail(&health, 4, now);
    }
    assert_eq!(health.ejected.load(Ordering::Relaxed), 1);
    // A tick that loaded the map before the removal still sees b4.
    let stale = health.backends.load_full();
    health.remove_ids(&[4]);
    assert_eq!(health.ejected.load(Ordering::Relaxed), 0);
    let tracked = stale.get(&4).unwrap();
    let mut state = tracked.state.lock();
    assert!(state.outlier.ejected_until().is_none(), "the removal ended the ejection");
    assert!(!health.try_eject(&mut state, now), "a removed backend is never ejected again");
    drop(state);
    health.tick(now + Duration::from_secs(60));
    assert_eq!(health.ejected.load(Ordering::Relaxed), 0, "the count did not wrap");
    take(&log);
    for id in [1, 2] {
        for _ in 0..3 {
            fail(&health, id, now);
        }
    }
    assert_eq!(eligible(&take(&log)), vec![(1, false)], "one of three may be ejected, and is");
}

#[test]
fn a_membership_change_is_decided_and_applied_under_one_lock() {
    let (health, _log) = group(1, config());
    let health_in_threads = health.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let health = health_in_threads.clone();
            std::thread::spawn(move || {
                health.change(|pool| {
                    if pool.by_name("same").is_some() {
                        (vec![], vec![], false)
                    } else {
                        // Widen the window between deciding and applying.
                        std::thread::sleep(Duration::from_millis(5));
                        (vec![spec("same", None)], vec![], true)
                    }
                })
            })
        })
        .collect();
    let added = threads.into_iter().map(|t| t.join().unwrap()).filter(|added| *added).count();
    assert_eq!(added, 1);
    assert_eq!(health.pool.all().iter().filter(|b| b.spec.name == "same").count(), 1);
}

/// The run loop reads the clock itself: in paused time, a breaker's
/// cool-down passes by advancing the clock, not by sleeping through it.
#[tokio::test(start_paused = true)]
async fn the_run_loop_ends_a_breakers_cool_down_on_the_paused_clock() {
    let mut config = config();
    // No probes: they would connect for real while the clock is paused.
    config.check.enabled = false;
    let (health, log) = group(2, config);
    let run = tokio::spawn(health.clone().run(Default::default(), std::future::pending()));
    let opened = clock::now();
    for _ in 0..3 {
        fail(&health, 1, opened);
    }
    assert_eq!(eligible(&take(&log)), [(1, false)]);
    tokio::time::advance(Duration::from_millis(999)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(take(&log).is_empty(), "still cooling down");
    // Past `open_for` and the run loop's next tick: half-open, eligible for probes.
    tokio::time::advance(Duration::from_millis(1) + TICK).await;
    for _ in 0..10 {
        if !log.lock().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(eligible(&take(&log)), [(1, true)]);
    assert_eq!(health.backend("b1").unwrap().breaker, BreakerPhase::HalfOpen);
    run.abort();
}
