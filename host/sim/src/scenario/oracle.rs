//! The oracle: a host-side picker that is told every backend's true profile
//! (phases included), as a reference for what routing could achieve.
//!
//! It knows the models, not the draws: it cannot tell which request of a
//! 50%-failing backend will fail, or which heavy-tail sample will be slow. Per
//! pick it computes, for each eligible backend and the profile in force now,
//! the expected client time per *successful* request,
//!
//! ```text
//! cost = (E[time] + p × error_cost) / (1 − p)
//! E[time] = (1 − p) × latency + p × failure_time
//! latency = mean(latency model) × (r × load(r) − (r − 1) × load(r − 1))
//! load(r) = max(1, r / capacity), r = in_flight + 1
//! ```
//!
//! where `p` is the error rate, `failure_time` is the latency for a 500 or a
//! reset and the proxy timeout for a hang, and `error_cost` is the client's
//! pause after a failure (the scenario's `error_penalty_ms`). A backend that
//! always fails has infinite cost. The cheapest wins; ties go to the backend
//! with fewer requests in flight, then take turns.
//!
//! The latency is the *marginal* one: what one more request adds to the time
//! all requests at the backend wait together, not its own wait alone. Its
//! own wait is the selfish choice: a 3 ms backend with two slots looks
//! better than an idle 10 ms one until six queue there, though past two it
//! serves no more per second (the learners that used the marginal cost beat
//! this oracle by 14% in `load-sensitive` while it used the own wait).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{BackendProfile, FailureKind, Latency, Phase};
use veer_plugin_runtime::{BackendId, ErrorKind, Membership, NativePolicy, Outcome, VirtualClock};

/// The oracle policy for one run. Create it, hand it to veer as a
/// [`NativePicker`](veer_plugin_runtime::NativePicker), then call [`Oracle::started`]
/// when the simulated backends' clocks start.
#[derive(Debug)]
pub struct Oracle {
    start: OnceLock<Instant>,
    /// In a simulation, the virtual clock the phases run on (from 0).
    clock: Option<VirtualClock>,
    error_cost: Duration,
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// By backend name: the profile now and the phases to come.
    truth: HashMap<String, Truth>,
    /// Requests in flight per backend, as routed by this oracle (+1 per pick,
    /// −1 per outcome), the way a plugin counts them.
    in_flight: HashMap<BackendId, u32>,
    /// Rotates the tie-break so that equal backends take turns.
    turn: usize,
}

#[derive(Debug)]
struct Truth {
    profile: BackendProfile,
    /// Sorted by time; consumed from the front.
    phases: Vec<Phase>,
}

/// Costs within this factor of each other count as equal, so that float noise
/// does not break ties between identical backends.
const TIE: f64 = 1.0 + 1e-9;

impl Oracle {
    /// An oracle for backends `(name, profile, phases)`; phases are offsets from
    /// [`Oracle::started`]. `error_cost` is what a failure costs the client on
    /// top of its time; `timeout` what a hang costs.
    pub fn new(
        backends: impl IntoIterator<Item = (String, BackendProfile, Vec<Phase>)>,
        error_cost: Duration,
        timeout: Duration,
    ) -> Oracle {
        let truth = backends
            .into_iter()
            .map(|(name, profile, mut phases)| {
                phases.sort_by_key(|phase| phase.at);
                (name, Truth { profile, phases })
            })
            .collect();
        Oracle {
            start: OnceLock::new(),
            clock: None,
            error_cost,
            timeout,
            state: Mutex::new(State { truth, in_flight: HashMap::new(), turn: 0 }),
        }
    }

    /// The oracle of a simulation: phases run on `clock`, from its zero.
    #[must_use]
    pub fn in_virtual_time(mut self, clock: VirtualClock) -> Oracle {
        self.clock = Some(clock);
        self
    }

    /// Marks the moment the backends' phase clocks started. Before it, the
    /// initial profiles are in force.
    pub fn started(&self, at: Instant) {
        let _ = self.start.set(at);
    }

    fn cost(&self, profile: &BackendProfile, in_flight: u32) -> f64 {
        let p = profile.error_rate.clamp(0.0, 1.0);
        if p >= 1.0 {
            return f64::INFINITY;
        }
        let load = |r: u32| match profile.capacity {
            Some(capacity) if capacity > 0 => (f64::from(r) / f64::from(capacity)).max(1.0),
            _ => 1.0,
        };
        let r = in_flight + 1;
        let marginal = f64::from(r) * load(r) - f64::from(in_flight) * load(in_flight);
        let latency = mean_seconds(&profile.latency) * marginal;
        let failure_time = match profile.error_kind {
            FailureKind::Hang => self.timeout.as_secs_f64(),
            FailureKind::Status500 | FailureKind::Reset => latency,
        };
        let time = (1.0 - p) * latency + p * failure_time;
        (time + p * self.error_cost.as_secs_f64()) / (1.0 - p)
    }
}

impl NativePolicy for Oracle {
    fn pick(&self, membership: &Membership, exclude: Option<BackendId>) -> Option<BackendId> {
        let elapsed = match &self.clock {
            Some(clock) => Duration::from_micros(clock.now_us()),
            None => self.start.get().map_or(Duration::ZERO, Instant::elapsed),
        };
        let mut state = self.state.lock();
        let State { truth, in_flight, turn } = &mut *state;
        let eligible = membership.eligible();
        let mut best: Option<(f64, u32, BackendId)> = None;
        for offset in 0..eligible.len() {
            let id = eligible[(*turn + offset) % eligible.len()];
            if Some(id) == exclude {
                continue;
            }
            let Some(backend) = membership.get(id).and_then(|backend| truth.get_mut(&backend.name)) else {
                continue;
            };
            while backend.phases.first().is_some_and(|phase| phase.at <= elapsed) {
                backend.profile = backend.phases.remove(0).profile;
            }
            let busy = in_flight.get(&id).copied().unwrap_or(0);
            let cost = self.cost(&backend.profile, busy);
            let better = match best {
                None => true,
                Some((best_cost, best_busy, _)) => {
                    cost * TIE < best_cost || (cost <= best_cost * TIE && busy < best_busy)
                }
            };
            if better {
                best = Some((cost, busy, id));
            }
        }
        *turn = turn.wrapping_add(1);
        let (_, _, id) = best?;
        *in_flight.entry(id).or_default() += 1;
        Some(id)
    }

    fn observe(&self, outcome: &Outcome) {
        // Outcomes of the host's fallback picks were never counted in.
        if !outcome.picked && outcome.error != Some(ErrorKind::NotSent) {
            return;
        }
        if let Some(count) = self.state.lock().in_flight.get_mut(&outcome.backend) {
            *count = count.saturating_sub(1);
        }
    }
}

/// The mean of a latency model, in seconds (what [`Latency::sample`] averages to).
fn mean_seconds(latency: &Latency) -> f64 {
    match *latency {
        Latency::Fixed(latency) => latency.as_secs_f64(),
        Latency::Uniform { min, max } => (min.as_secs_f64() + max.as_secs_f64()) / 2.0,
        Latency::Jitter { mean, spread } => {
            let (mean, spread) = (mean.as_secs_f64(), spread.as_secs_f64());
            if spread <= mean {
                mean
            } else {
                // mean + spread·u, u uniform in [−1, 1], clamped at zero:
                // ½ ∫_{a}^{1} (mean + spread·u) du with a = −mean / spread.
                let a = -mean / spread;
                (mean * (1.0 - a) + spread * (1.0 - a * a) / 2.0) / 2.0
            }
        }
        Latency::HeavyTail { median, p99 } => {
            let median = median.as_secs_f64();
            if median <= 0.0 {
                return 0.0;
            }
            // Log-normal: mean = median × exp(σ² / 2), σ = ln(p99 / median) / z99.
            let sigma = (p99.as_secs_f64() / median).ln().max(0.0) / 2.326_347_874_040_841;
            median * (sigma * sigma / 2.0).exp()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veer_plugin_runtime::{Backend, BackendEvent};

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn membership(names: &[&str]) -> Membership {
        let mut membership = Membership::default();
        let events: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                BackendEvent::Added(Backend {
                    id: i as u32 + 1,
                    name: (*name).into(),
                    address: String::new(),
                    weight: 1,
                    labels: Vec::new(),
                })
            })
            .collect();
        membership.apply(&events);
        membership
    }

    fn oracle(backends: Vec<(&str, BackendProfile, Vec<Phase>)>) -> Oracle {
        Oracle::new(backends.into_iter().map(|(n, p, ph)| (n.to_string(), p, ph)), ms(100), ms(1000))
    }

    fn done(oracle: &Oracle, id: BackendId) {
        oracle.observe(&Outcome { backend: id, picked: true, status: 200, latency_us: 1, error: None });
    }

    #[test]
    fn a_fast_backend_that_fails_half_the_time_loses_to_a_healthy_one() {
        let trap = BackendProfile::fixed(ms(1)).with_errors(0.5, FailureKind::Status500);
        let oracle = oracle(vec![("trap", trap, vec![]), ("ok", BackendProfile::fixed(ms(10)), vec![])]);
        let members = membership(&["trap", "ok"]);
        for _ in 0..10 {
            let id = oracle.pick(&members, None).unwrap();
            assert_eq!(id, 2);
            done(&oracle, id);
        }
        assert_eq!(oracle.pick(&members, Some(2)), Some(1), "honours exclude");
    }

    #[test]
    fn capacity_spreads_load_and_phases_change_the_answer() {
        let fast = BackendProfile::fixed(ms(5)).with_capacity(2);
        let later =
            vec![Phase { at: ms(0), profile: BackendProfile::fixed(ms(5)).with_errors(1.0, FailureKind::Reset) }];
        let oracle = oracle(vec![("fast", fast.clone(), vec![]), ("slow", BackendProfile::fixed(ms(12)), vec![])]);
        let members = membership(&["fast", "slow"]);
        // 5 ms while a slot is free; a third would wait 7.5 ms and add 2.5 to
        // the two before it, 12.5 ms of waiting in all, more than slow's 12.
        let picks: Vec<_> = (0..5).map(|_| oracle.pick(&members, None).unwrap()).collect();
        assert_eq!(picks, [1, 1, 2, 2, 2]);
        let dying = self::oracle(vec![("fast", fast, later), ("slow", BackendProfile::fixed(ms(12)), vec![])]);
        dying.started(Instant::now());
        assert_eq!(dying.pick(&members, None), Some(2));
    }

    #[test]
    fn equal_backends_take_turns() {
        let oracle = oracle(vec![
            ("a", BackendProfile::fixed(ms(10)), vec![]),
            ("b", BackendProfile::fixed(ms(10)), vec![]),
            ("c", BackendProfile::fixed(ms(10)), vec![]),
        ]);
        let members = membership(&["a", "b", "c"]);
        let mut picks: Vec<_> = (0..3)
            .map(|_| {
                let id = oracle.pick(&members, None).unwrap();
                done(&oracle, id);
                id
            })
            .collect();
        picks.sort_unstable();
        assert_eq!(picks, [1, 2, 3]);
    }

    #[test]
    fn model_means_match_their_definitions() {
        assert!((mean_seconds(&Latency::Jitter { mean: ms(20), spread: ms(10) }) - 0.020).abs() < 1e-12);
        // 10 ± 30 clamped at 0: ½ ∫_{-1/3}^{1} (10 + 30u) du = 40/3 ms.
        assert!((mean_seconds(&Latency::Jitter { mean: ms(10), spread: ms(30) }) - 0.040 / 3.0).abs() < 1e-9);
        assert!((mean_seconds(&Latency::Uniform { min: ms(2), max: ms(4) }) - 0.003).abs() < 1e-12);
        assert!(mean_seconds(&Latency::HeavyTail { median: ms(10), p99: ms(100) }) > 0.010);
    }
}
