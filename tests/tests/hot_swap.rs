//! Swapping the picker while many threads pick never fails a pick, never loses
//! a membership change, and hands state over to a new version of the same policy.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use veer::plugin::{BackendEvent, HandoffResult, PickerSlot, PluginError, PluginSource};
use veer_tests::{backends, first_attempt, hostile_plugin_file, request, runtime};

fn mode(name: &str) -> Vec<(String, String)> {
    vec![("mode".to_string(), name.to_string())]
}

#[test]
fn swaps_under_concurrent_picking_never_fail_a_pick() {
    let runtime = runtime();
    let hostile = PluginSource::Path(hostile_plugin_file("swap"));
    let round_robin = PluginSource::parse("builtin:round-robin");
    let slot = Arc::new(PickerSlot::new(runtime, &round_robin, vec![]).unwrap());
    slot.apply(&backends(4));
    let stop = Arc::new(AtomicBool::new(false));
    let picks = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (slot, stop, picks) = (slot.clone(), stop.clone(), picks.clone());
            std::thread::spawn(move || {
                let mut request = request();
                let mut fallbacks = 0;
                while !stop.load(Ordering::Relaxed) {
                    let picker = slot.current();
                    let (choice, back) = picker.pick(request, first_attempt());
                    request = back;
                    let choice = choice.expect("four backends are eligible, so every pick is answered");
                    assert!((1..=4).contains(&choice.backend), "{choice:?}");
                    fallbacks += u64::from(!choice.by_plugin);
                    picks.fetch_add(1, Ordering::Relaxed);
                }
                fallbacks
            })
        })
        .collect();
    let swaps = 200;
    for i in 0..swaps {
        let (source, params) = if i % 2 == 0 { (&hostile, mode("ok")) } else { (&round_robin, vec![]) };
        slot.swap(source, params).expect("a valid picker swaps in");
    }
    stop.store(true, Ordering::Relaxed);
    let fallbacks: u64 = threads.into_iter().map(|t| t.join().expect("no picking thread panicked")).sum();
    assert_eq!(slot.swaps(), swaps);
    assert_eq!(fallbacks, 0, "no pick was answered by the fallback");
    assert!(picks.load(Ordering::Relaxed) > 0);
}

#[test]
fn membership_changes_during_swaps_reach_the_serving_picker() {
    let runtime = runtime();
    let hostile = PluginSource::Path(hostile_plugin_file("membership"));
    let slot = Arc::new(PickerSlot::new(runtime, &hostile, mode("ok")).unwrap());
    slot.apply(&backends(3));
    let toggler = {
        let slot = slot.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                slot.apply(&[BackendEvent::Eligibility((2, i % 2 == 1))]);
            }
            // Ends ineligible.
            slot.apply(&[BackendEvent::Eligibility((2, false))]);
        })
    };
    for _ in 0..50 {
        slot.swap(&hostile, mode("ok")).unwrap();
    }
    toggler.join().unwrap();
    let picker = slot.current();
    assert!(!picker.membership().is_eligible(2));
    for _ in 0..20 {
        let choice = picker.pick(request(), first_attempt()).0.unwrap();
        assert_ne!(choice.backend, 2, "the serving picker saw the last eligibility change");
        assert!(choice.by_plugin, "and so did the plugin itself");
    }
}

#[test]
fn a_failed_swap_keeps_the_old_picker_serving() {
    let runtime = runtime();
    let hostile = PluginSource::Path(hostile_plugin_file("failed"));
    let slot = PickerSlot::new(runtime, &PluginSource::parse("builtin:round-robin"), vec![]).unwrap();
    slot.apply(&backends(2));
    for (source, params) in [
        (hostile.clone(), mode("trap")),
        (hostile.clone(), mode("slow-configure")),
        (hostile.clone(), vec![("nope".to_string(), "1".to_string())]),
        (PluginSource::parse("builtin:no-such-picker"), vec![]),
        (PluginSource::parse("/no/such/file.wasm"), vec![]),
    ] {
        let error: PluginError = slot.swap(&source, params).unwrap_err();
        assert!(!error.to_string().is_empty());
        assert_eq!(slot.current().info().name, "round-robin", "after: {error}");
    }
    assert_eq!(slot.swaps(), 0);
    assert!(slot.current().pick(request(), first_attempt()).0.unwrap().by_plugin);
}

#[test]
fn state_is_handed_to_the_same_policy_and_not_to_another() {
    let runtime = runtime();
    let hostile = PluginSource::Path(hostile_plugin_file("handoff"));
    let slot = PickerSlot::new(runtime, &hostile, mode("ok")).unwrap();
    slot.apply(&backends(2));
    for _ in 0..5 {
        slot.current().pick(request(), first_attempt());
    }
    let report = slot.swap(&hostile, mode("ok")).unwrap();
    // The hostile plugin's state is its pick count: 1 smoke pick + 5 picks.
    assert_eq!(report.handoff, HandoffResult::Imported { bytes: 1 });
    assert_eq!(slot.current().export_state().unwrap(), b"7".to_vec(), "6 carried over plus the new smoke pick");
    let report = slot.swap(&PluginSource::parse("builtin:round-robin"), vec![]).unwrap();
    assert_eq!(report.handoff, HandoffResult::NotApplicable);
}

#[test]
fn published_events_wait_for_the_control_task() {
    let slot = PickerSlot::new(runtime(), &PluginSource::parse("builtin:round-robin"), vec![]).unwrap();
    slot.apply(&backends(2));
    // What a request thread does when an outcome opens a breaker: no plugin call.
    slot.publish(&[BackendEvent::Eligibility((2, false))]);
    assert!(slot.current().membership().is_eligible(2), "not applied on the publishing thread");
    slot.maintain();
    assert!(!slot.current().membership().is_eligible(2), "applied by the control path");
    // A swap starts from everything published, applied or not.
    slot.publish(&[BackendEvent::Eligibility((2, true))]);
    slot.swap(&PluginSource::parse("builtin:least-conn"), vec![]).unwrap();
    assert!(slot.current().membership().is_eligible(2));
}

/// A candidate on trial hears every membership change the serving picker
/// hears, routes only requests whose draw falls in its share, and a
/// promotion makes that very instance (its picks counted, its state kept)
/// the serving one.
#[test]
fn a_trial_candidate_follows_membership_and_is_promoted_as_it_runs() {
    use veer::plugin::{TrialOutcome, TrialRule, TrialSpec};
    let slot = PickerSlot::new(runtime(), &PluginSource::parse("builtin:round-robin"), vec![]).unwrap();
    slot.apply(&backends(3));
    let rule = Some(TrialRule { min_requests: 10, margin: 0.05 });
    let spec = TrialSpec { source: PluginSource::parse("builtin:least-conn"), params: vec![], share: 0.5, rule };
    slot.start_trial(spec.clone()).unwrap();

    slot.publish(&[BackendEvent::Eligibility((3, false))]);
    slot.maintain();
    // A draw of 0 is in any share; u64::MAX in none.
    let candidate = slot.for_request_drawn(|| 0);
    let serving = slot.for_request_drawn(|| u64::MAX);
    assert_eq!(candidate.info().name, "least-conn");
    assert_eq!(serving.info().name, "round-robin");
    assert!(!candidate.membership().is_eligible(3), "the candidate heard the change");
    assert_eq!(slot.for_request().info().name, "round-robin", "control paths never get the candidate");
    for _ in 0..20 {
        let (choice, _) = candidate.pick(request(), first_attempt());
        assert_ne!(choice.unwrap().backend, 3);
    }
    // Both sides tallied as the proxy does at the end of a request.
    for _ in 0..12 {
        candidate.finished(true, std::time::Duration::from_millis(1));
        serving.finished(true, std::time::Duration::from_millis(2));
    }
    let report = slot.trial().unwrap();
    assert_eq!((report.serving_requests.requests, report.candidate_requests.requests), (12, 12));
    assert!(slot.lifetime_stats().picks >= 20, "the candidate's picks are the group's");
    // A swap of the serving picker restarts the comparison, not the candidate.
    slot.swap(&PluginSource::parse("builtin:weighted-rr"), vec![]).unwrap();
    let report = slot.trial().unwrap();
    assert_eq!((report.serving_requests.requests, report.candidate_requests.requests), (0, 0));
    assert_eq!(report.serving.name, "weighted-rr");

    let picks_before = slot.trial().unwrap().candidate.name;
    let promoted = slot.promote().unwrap();
    assert_eq!((promoted.from.name.as_str(), promoted.to.name.as_str()), ("weighted-rr", picks_before.as_str()));
    assert!(slot.current().stats().picks >= 20, "the promoted instance is the one that picked during the trial");
    assert!(slot.trial().is_none() && slot.promote().is_none() && slot.stop_trial().is_none());
    assert_eq!(slot.last_trial().unwrap().outcome, TrialOutcome::Promoted);
    assert_eq!(slot.trial_settled(&spec, "builtin:weighted-rr", &[]), Some(TrialOutcome::Promoted));
    assert_eq!(slot.trial_settled(&spec, "builtin:round-robin", &[]), None, "compared with another picker");
    assert_eq!(slot.for_request_drawn(|| 0).info().name, "least-conn");
}

/// A candidate that fails to load, configure or smoke-test never starts
/// and leaves the running trial as it was.
#[test]
fn a_failed_trial_start_changes_nothing() {
    use veer::plugin::TrialSpec;
    let slot = PickerSlot::new(runtime(), &PluginSource::parse("builtin:round-robin"), vec![]).unwrap();
    slot.apply(&backends(2));
    let spec = |source: &str, params: Vec<(String, String)>| TrialSpec {
        source: PluginSource::parse(source),
        params,
        share: 0.1,
        rule: None,
    };
    slot.start_trial(spec("builtin:least-conn", vec![])).unwrap();
    assert!(slot.start_trial(spec("builtin:nope", vec![])).is_err());
    assert!(slot.start_trial(spec("builtin:q-learning", mode("no-such-param"))).is_err());
    assert!(slot.start_trial(spec("/nonexistent/picker.wasm", vec![])).is_err());
    assert_eq!(slot.trial().unwrap().candidate.name, "least-conn");
    // A stopped candidate's picks stay in the group's totals.
    for _ in 0..5 {
        let _ = slot.for_request_drawn(|| 0).pick(request(), first_attempt());
    }
    let before = slot.lifetime_stats().picks;
    slot.stop_trial().unwrap();
    assert_eq!(slot.lifetime_stats().picks, before);
}
