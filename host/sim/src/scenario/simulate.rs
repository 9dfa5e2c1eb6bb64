//! The virtual-time mode of the routing benchmark: the same scenario files and
//! the same pickers, called through the real Wasm boundary, with the clock,
//! the backends and the load simulated as discrete events.
//!
//! What is simulated is what the real-socket mode's simulated backends and
//! client do: a closed loop of `concurrency` clients (pausing
//! `error_penalty_ms` after a failure) or an open loop at `rate_per_second`;
//! each backend draws failure then latency per request with the same seeds as
//! [`SimBackend`](crate::SimBackend), stretches the latency past its capacity
//! the same way, and hangs until the proxy's timeout when told to; the proxy
//! times an attempt out after `timeout_ms`, retries errors and 502/503/504 up
//! to `max_attempts` on another backend after a jittered 25 ms back-off, and
//! answers 503 when the picker offers nothing. Pickers see time through
//! `host.now-us` on the virtual clock and `host.in-flight` from the simulated
//! backends, and get seeded randomness: identical inputs give identical output,
//! at any machine load, in a fraction of the scenario's length.
//!
//! What the real mode adds besides, both modelled: a simulated backend sleeps
//! with tokio's timer, which fires on the first millisecond tick at or after
//! the deadline (a 3 ms answer takes 3–4 ms), and the proxy, the loopback
//! network and three processes sharing two cores add a little to every
//! request. The simulator rounds each answer up to the next millisecond of
//! virtual time, and adds one fixed `overhead` per request between the
//! proxy's answer and the client's next request (default
//! [`DEFAULT_OVERHEAD`], 1.3 ms: with it the oracle's goodput in every
//! shipped scenario was within 0.95–1.03× of the real mode's on the
//! development machine, `bench/virtual_vs_real.sh`; without either model it
//! came out 2–31% above).
//! Both shift every strategy alike.
//!
//! Left out on purpose (they are the host's, not the picker's, and the
//! real-socket mode turns them off too): health checks, breakers, outlier
//! ejection, the retry budget.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use veer_core::rng::SplitMix64;
use veer_plugin_runtime::{
    Backend, BackendEvent, BackendId, BackendLoad, Choice, ErrorKind, HttpMethod, Limits, NativePicker, Outcome,
    PickContext, Picker, PickerSlot, PluginRuntime, PluginSource, RequestMeta, VirtualClock,
};

use veer_data_plane::proxy::RetryPolicy;

use super::oracle::Oracle;
use super::run::{RequestRecord, RunError, RunResult, Strategy, StrategyKind};
use super::spec::{Scenario, Stop};
use crate::FailureKind;
use crate::profile::PhasedProfile;

/// What a request costs on top of its backend's latency (see the module docs).
pub const DEFAULT_OVERHEAD: Duration = Duration::from_micros(1_300);
/// tokio's timer resolution, which the simulated backends' sleeps round up to.
const TIMER_TICK_US: u64 = 1_000;

/// Runs scenarios in virtual time, one after another, on one plugin runtime:
/// a component is compiled once (a Python one takes seconds) however many
/// scenarios and seeds it runs in.
#[derive(Debug)]
pub struct Simulator {
    runtime: Arc<PluginRuntime>,
    clock: VirtualClock,
    overhead: Duration,
}

impl Simulator {
    /// A simulator with its own plugin runtime on a virtual clock; `overhead`
    /// is added to every request (see the module docs).
    pub fn new(overhead: Duration) -> Result<Simulator, RunError> {
        let clock = VirtualClock::default();
        let limits = Limits { clock: Some(clock.clone()), seed: Some(0), ..Limits::default() };
        let runtime =
            PluginRuntime::new(limits).map_err(|e| RunError::Picker { strategy: "-".into(), reason: e.to_string() })?;
        Ok(Simulator { runtime, clock, overhead })
    }

    /// Runs `scenario` once with `strategy`. `seed` varies the backends' draws
    /// and the picker's randomness (`0` is the scenario's own). The result
    /// depends on nothing else: not on the runs before it, nor the machine.
    pub fn run(
        &mut self,
        scenario: &Scenario,
        strategy: &Strategy,
        scale: f64,
        seed: u64,
    ) -> Result<RunResult, RunError> {
        self.clock.reset();
        let mut scenario = scenario.clone();
        scenario.seed = scenario.seed.wrapping_add(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        self.runtime.reseed(scenario.seed ^ 0x5EED);
        run(&self.runtime, &self.clock, self.overhead, &scenario, strategy, scale)
    }
}

fn run(
    runtime: &Arc<PluginRuntime>,
    clock: &VirtualClock,
    overhead: Duration,
    scenario: &Scenario,
    strategy: &Strategy,
    scale: f64,
) -> Result<RunResult, RunError> {
    let clock = clock.clone();
    let backends = scenario.backends(scale);
    let load = Arc::new(SimLoad { in_flight: backends.iter().map(|_| AtomicU32::new(0)).collect() });
    let runtime = runtime.clone();
    let timeout = Duration::from_millis(scenario.proxy.timeout_ms);
    let (source, params) = match &strategy.kind {
        StrategyKind::Oracle => {
            let truth = backends.iter().map(|b| (b.sim.name.clone(), b.sim.profile.clone(), b.sim.phases.clone()));
            let oracle = Oracle::new(truth, Duration::from_millis(scenario.load.error_penalty_ms), timeout)
                .in_virtual_time(clock.clone());
            (PluginSource::Native(NativePicker::new(Strategy::ORACLE, Arc::new(oracle))), Vec::new())
        }
        StrategyKind::Picker { source, params } => (source.clone(), params.clone()),
    };
    let slot = PickerSlot::with_load(runtime, &source, params, load.clone()).map_err(|e| start_error(strategy, e))?;
    let events: Vec<BackendEvent> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            BackendEvent::Added(Backend {
                id: i as BackendId,
                name: b.sim.name.clone(),
                address: format!("127.0.0.1:{}", 20_000 + i),
                weight: b.weight,
                labels: vec![],
            })
        })
        .collect();
    slot.apply(&events);
    let picker = slot.current();
    let sims = backends
        .iter()
        .map(|b| SimState {
            profile: PhasedProfile::new(b.sim.profile.clone(), b.sim.phases.clone()),
            seed: crate::server::draw_seed(&b.sim),
            requests: 0,
        })
        .collect();
    let mut world = World {
        clock,
        picker,
        load,
        sims,
        timeout,
        // The proxy's own retry settings, as the real-socket mode configures them.
        retry: RetryPolicy { max_attempts: scenario.proxy.max_attempts.max(1), ..RetryPolicy::default() },
        penalty: Duration::from_millis(scenario.load.error_penalty_ms),
        overhead_us: overhead.as_micros() as u64,
        queue: BinaryHeap::new(),
        sequence: 0,
        retry_rng: SplitMix64::new(scenario.seed ^ 0xBAC0FF),
        records: Vec::new(),
        meta: Some(RequestMeta::get("/", IpAddr::V4(Ipv4Addr::LOCALHOST))),
    };
    world.drive(scenario, scale);
    let elapsed = Duration::from_micros(world.clock.now_us());
    let names = backends.iter().map(|b| b.sim.name.clone()).collect();
    Ok(RunResult { strategy: strategy.label.clone(), backends: names, records: world.records, elapsed })
}

fn start_error(strategy: &Strategy, error: veer_plugin_runtime::PluginError) -> RunError {
    RunError::Picker { strategy: strategy.label.clone(), reason: error.to_string() }
}

/// Requests in flight per simulated backend, as `host.in-flight` reports them.
#[derive(Debug)]
struct SimLoad {
    in_flight: Vec<AtomicU32>,
}

impl BackendLoad for SimLoad {
    fn in_flight(&self, backend: BackendId) -> u32 {
        self.in_flight.get(backend as usize).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct SimState {
    profile: PhasedProfile,
    seed: u64,
    /// Requests it received: the index of the next one's draws.
    requests: u64,
}

/// One request on its way through the simulated proxy.
#[derive(Debug)]
struct Request {
    /// The client that sent it, for a closed loop.
    client: Option<u32>,
    start_us: u64,
    attempt: u32,
    previous: Option<BackendId>,
}

#[derive(Debug)]
enum Event {
    /// A client (closed loop) or the schedule (open loop) sends a request.
    Send { client: Option<u32> },
    /// An attempt is made (first, or a retry after its back-off).
    Attempt(Request),
    /// The proxy has the attempt's answer (or gave up on it).
    Answer { request: Request, choice: Choice, status: u16, error: Option<ErrorKind>, latency_us: u64 },
    /// The backend is done with a request (it may outlive the proxy's wait).
    Free { backend: BackendId },
}

struct World {
    clock: VirtualClock,
    picker: Arc<Picker>,
    load: Arc<SimLoad>,
    sims: Vec<SimState>,
    timeout: Duration,
    retry: RetryPolicy,
    penalty: Duration,
    overhead_us: u64,
    /// By (time µs, sequence): simultaneous events in the order they were made.
    queue: BinaryHeap<Reverse<(u64, u64, EventSlot)>>,
    sequence: u64,
    retry_rng: SplitMix64,
    records: Vec<RequestRecord>,
    /// Lent to the picker for each pick and handed back.
    meta: Option<RequestMeta>,
}

/// An event in the heap, ordered by its key only.
struct EventSlot(Event);

impl PartialEq for EventSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for EventSlot {}
impl PartialOrd for EventSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EventSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl World {
    fn now(&self) -> u64 {
        self.clock.now_us()
    }

    fn at(&mut self, us: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((us, self.sequence, EventSlot(event))));
    }

    fn drive(&mut self, scenario: &Scenario, scale: f64) {
        let (deadline, limit) = match scenario.stop(scale) {
            Stop::After(duration) => (Some(duration.as_micros() as u64), u64::MAX),
            Stop::Requests(requests) => (None, requests),
        };
        let mut sent = 0u64;
        let interval_us = match (scenario.load.concurrency, scenario.load.rate_per_second) {
            (Some(concurrency), _) => {
                for client in 0..concurrency {
                    self.at(0, Event::Send { client: Some(client) });
                }
                None
            }
            (None, rate) => {
                self.at(0, Event::Send { client: None });
                Some(1e6 / rate.unwrap_or(1.0))
            }
        };
        while let Some(Reverse((at, _, EventSlot(event)))) = self.queue.pop() {
            self.clock.advance_to(at);
            match event {
                Event::Send { client } => {
                    if sent >= limit || deadline.is_some_and(|d| at >= d) {
                        continue;
                    }
                    sent += 1;
                    if let (None, Some(interval)) = (client, interval_us) {
                        // On schedule from the start, as the real client keeps it.
                        self.at((sent as f64 * interval).round() as u64, Event::Send { client: None });
                    }
                    let request = Request { client, start_us: at, attempt: 0, previous: None };
                    self.attempt(request);
                }
                Event::Attempt(request) => self.attempt(request),
                Event::Answer { request, choice, status, error, latency_us } => {
                    self.answer(request, choice, status, error, latency_us)
                }
                Event::Free { backend } => {
                    self.load.in_flight[backend as usize].fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn attempt(&mut self, request: Request) {
        let now = self.now();
        let ctx = PickContext { attempt: request.attempt, exclude: request.previous, method: HttpMethod::Get };
        let meta = self.meta.take().expect("handed back after every pick");
        let (choice, meta) = self.picker.pick(meta, ctx);
        self.meta = Some(meta);
        let Some(choice) = choice else {
            // Nothing eligible: the proxy answers 503 at once.
            self.finish(request, 503, None, now);
            return;
        };
        let backend = choice.backend;
        let in_flight = self.load.in_flight[backend as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let sim = &mut self.sims[backend as usize];
        let profile = sim.profile.at(Duration::from_micros(now));
        // The same draws as the real simulated backend's n-th request.
        let (failure, latency) = profile.draw(sim.seed, sim.requests, u64::from(in_flight));
        sim.requests += 1;
        // The real backend sleeps with tokio's timer, which fires on the first
        // millisecond tick at or after the deadline: so does this one.
        let latency_us = (now + latency.as_micros() as u64).div_ceil(TIMER_TICK_US) * TIMER_TICK_US - now;
        let timeout_us = self.timeout.as_micros() as u64;
        let (busy_us, status, error) = match failure {
            Some(FailureKind::Hang) => (timeout_us, 0, Some(ErrorKind::Timeout)),
            Some(FailureKind::Reset) => (latency_us, 0, Some(ErrorKind::Reset)),
            Some(FailureKind::Status500) => (latency_us, 500, None),
            None => (latency_us, 200, None),
        };
        let (answer_us, status, error) =
            if busy_us >= timeout_us { (timeout_us, 0, Some(ErrorKind::Timeout)) } else { (busy_us, status, error) };
        self.at(now + busy_us, Event::Free { backend });
        self.at(now + answer_us, Event::Answer { request, choice, status, error, latency_us: answer_us });
    }

    fn answer(&mut self, mut request: Request, choice: Choice, status: u16, error: Option<ErrorKind>, latency_us: u64) {
        let outcome = Outcome { backend: choice.backend, picked: choice.by_plugin, status, latency_us, error };
        self.picker.observe(&choice, outcome);
        let retryable = error.is_some() || self.retry.retry_on_status.contains(&status);
        if retryable && request.attempt + 1 < self.retry.max_attempts {
            request.attempt += 1;
            request.previous = Some(choice.backend);
            // The first retry's back-off, jittered between half and all of it.
            let backoff = self.retry.backoff_base.mul_f64(0.5 + 0.5 * self.retry_rng.next_f64()).as_micros() as u64;
            self.at(self.now() + backoff, Event::Attempt(request));
            return;
        }
        let status = if error.is_some() { 502 } else { status };
        self.finish(request, status, Some(choice.backend), self.now());
    }

    fn finish(&mut self, request: Request, status: u16, backend: Option<BackendId>, now: u64) {
        // The client has its answer after the overhead; it is not the backend's.
        let now = now + self.overhead_us;
        let record = RequestRecord {
            start_us: request.start_us,
            latency_us: now - request.start_us,
            status,
            backend: backend.map(|b| b as u16),
        };
        self.records.push(record);
        if let Some(client) = request.client {
            let pause = if record.succeeded() { 0 } else { self.penalty.as_micros() as u64 };
            self.at(now + pause, Event::Send { client: Some(client) });
        }
    }
}
