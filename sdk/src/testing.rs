//! A fake host for testing policies natively, without Wasm.
//!
//! [`Harness`] drives a [`Policy`] through the same glue the component export
//! uses, with a controllable clock, seeded randomness, request attributes and a
//! small discrete-event simulator ([`Harness::run`]) that plays many concurrent
//! requests against modelled backends in virtual time.
//!
//! ```
//! use veer_sdk::testing::{Harness, Load, Reply};
//! # use veer_sdk::{BackendId, Params, PickContext, Policy, Pool};
//! # struct Random;
//! # impl Policy for Random {
//! #     const NAME: &'static str = "random";
//! #     fn configure(_: &Params) -> Result<Self, String> { Ok(Random) }
//! #     fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> { pool.random_eligible(ctx.exclude) }
//! # }
//! let mut h = Harness::<Random>::new(&[]).unwrap();
//! let ids = h.add_backends(4);
//! let report = h.run(Load { requests: 4000, concurrency: 8 }, |_, _, _| Reply::ok(1_000));
//! for id in ids {
//!     assert!((report.share(id) - 0.25).abs() < 0.05);
//! }
//! ```

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::{
    Backend, BackendEvent, BackendId, ErrorKind, HttpMethod, LogLevel, Outcome, PickContext, Policy, Pool, Runtime,
};

/// The request attributes the fake host answers `veer_sdk::request` calls with.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    /// Method as text.
    pub method_name: String,
    /// Path without query.
    pub path: String,
    /// Query without `?`.
    pub query: Option<String>,
    /// Authority.
    pub authority: Option<String>,
    /// Client IP.
    pub client_ip: String,
    /// Affinity hash.
    pub affinity_hash: u64,
    /// Headers, name and value.
    pub headers: Vec<(String, String)>,
    /// The route that took the request.
    pub route: Option<String>,
    /// The upstream group being picked for.
    pub upstream: Option<String>,
}

impl Default for FakeRequest {
    fn default() -> Self {
        FakeRequest {
            method_name: "GET".into(),
            path: "/".into(),
            query: None,
            authority: Some("veer.test".into()),
            client_ip: "127.0.0.1".into(),
            affinity_hash: 0,
            headers: Vec::new(),
            route: Some("default".into()),
            upstream: Some("default".into()),
        }
    }
}

/// State behind the native implementations of `host` and `request`.
#[derive(Debug)]
pub(crate) struct Env {
    rng: u64,
    pub(crate) now_us: u64,
    pub(crate) logs: Vec<(LogLevel, String)>,
    pub(crate) request: FakeRequest,
    /// What `host::in_flight` answers: picks not yet completed, per backend.
    pub(crate) in_flight: HashMap<BackendId, u32>,
}

impl Env {
    fn new(seed: u64) -> Self {
        Env {
            rng: seed,
            now_us: 1_000_000,
            logs: Vec::new(),
            request: FakeRequest::default(),
            in_flight: HashMap::new(),
        }
    }

    /// splitmix64: tiny, fast and good enough for load balancing decisions.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

thread_local! {
    static ENV: RefCell<Env> = RefCell::new(Env::new(1));
}

pub(crate) fn with_env<R>(f: impl FnOnce(&mut Env) -> R) -> R {
    ENV.with_borrow_mut(f)
}

/// A seeded random source for backend models, separate from the policy's.
#[derive(Debug)]
pub struct SimRng(Env);

impl SimRng {
    /// A source with the given seed.
    pub fn new(seed: u64) -> Self {
        SimRng(Env::new(seed))
    }
    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.0.next_random() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A modelled backend's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Time until the answer.
    pub latency_us: u64,
    /// Whether it was a success (2xx) or a failure (500).
    pub ok: bool,
}

impl Reply {
    /// A success after `latency_us`.
    pub fn ok(latency_us: u64) -> Self {
        Reply { latency_us, ok: true }
    }
    /// A failure (HTTP 500) after `latency_us`.
    pub fn fail(latency_us: u64) -> Self {
        Reply { latency_us, ok: false }
    }
}

/// Shape of a simulated load: a closed loop of `concurrency` clients that send
/// `requests` in total.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests in total.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// Per-backend results of a simulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendReport {
    /// Requests the backend received.
    pub requests: usize,
    /// How many of them failed.
    pub failures: usize,
    /// Sum of their latencies.
    pub total_latency_us: u64,
}

/// Results of [`Harness::run`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per backend.
    pub backends: BTreeMap<BackendId, BackendReport>,
    /// Requests for which the policy returned no backend.
    pub unpicked: usize,
    /// Virtual time the run took.
    pub elapsed_us: u64,
}

impl Report {
    /// Requests sent to backends.
    pub fn requests(&self) -> usize {
        self.backends.values().map(|b| b.requests).sum()
    }
    /// Failed requests.
    pub fn failures(&self) -> usize {
        self.backends.values().map(|b| b.failures).sum()
    }
    /// Fraction of all picked requests that went to `id`.
    pub fn share(&self, id: BackendId) -> f64 {
        self.backends.get(&id).map_or(0.0, |b| b.requests as f64 / self.requests().max(1) as f64)
    }
    /// Fraction of requests that failed.
    pub fn error_rate(&self) -> f64 {
        self.failures() as f64 / self.requests().max(1) as f64
    }
    /// Mean latency over all requests.
    pub fn mean_latency_us(&self) -> f64 {
        self.backends.values().map(|b| b.total_latency_us).sum::<u64>() as f64 / self.requests().max(1) as f64
    }
    /// Successful requests per second of virtual time.
    pub fn goodput_per_s(&self) -> f64 {
        (self.requests() - self.failures()) as f64 / (self.elapsed_us.max(1) as f64 / 1e6)
    }
}

/// Drives a policy the way the host does, natively.
#[derive(Debug)]
pub struct Harness<P: Policy> {
    runtime: Runtime<P>,
    next_id: BackendId,
}

impl<P: Policy> Harness<P> {
    /// Configures the policy with `params`; fails with the policy's message if it
    /// rejects them. Randomness is seeded with 1 (see [`Harness::seed`]).
    pub fn new(params: &[(&str, &str)]) -> Result<Self, String> {
        with_env(|env| *env = Env::new(1));
        let mut runtime = Runtime::new("0.0.0-test");
        runtime.configure(to_pairs(params))?;
        Ok(Harness { runtime, next_id: 1 })
    }

    /// Re-seeds the fake host's randomness.
    pub fn seed(&mut self, seed: u64) -> &mut Self {
        with_env(|env| env.rng = seed);
        self
    }

    /// Re-configures the policy, as the host does when parameters change.
    pub fn reconfigure(&mut self, params: &[(&str, &str)]) -> Result<(), String> {
        self.runtime.configure(to_pairs(params))
    }

    /// Adds a backend named `name` with `weight`; returns its id.
    pub fn add_backend(&mut self, name: &str, weight: u32) -> BackendId {
        let id = self.next_id;
        self.next_id += 1;
        let backend =
            Backend { id, name: name.to_string(), address: format!("127.0.0.1:{}", 9000 + id), weight, labels: vec![] };
        self.send(vec![BackendEvent::Added(backend)]);
        id
    }

    /// Adds `n` backends of weight 1 named `b1`, `b2`, …
    pub fn add_backends(&mut self, n: usize) -> Vec<BackendId> {
        (0..n)
            .map(|_| {
                let name = format!("b{}", self.next_id);
                self.add_backend(&name, 1)
            })
            .collect()
    }

    /// Changes a backend's weight.
    pub fn set_weight(&mut self, id: BackendId, weight: u32) {
        if let Some(mut backend) = self.runtime.pool().get(id).cloned() {
            backend.weight = weight;
            self.send(vec![BackendEvent::Updated(backend)]);
        }
    }

    /// Marks a backend eligible or not.
    pub fn set_eligible(&mut self, id: BackendId, eligible: bool) {
        self.send(vec![BackendEvent::Eligibility((id, eligible))]);
    }

    /// Removes a backend for good.
    pub fn remove_backend(&mut self, id: BackendId) {
        self.send(vec![BackendEvent::Removed(id)]);
    }

    /// Delivers raw events.
    pub fn send(&mut self, events: Vec<BackendEvent>) {
        self.runtime.backends_changed(events);
    }

    /// A first-attempt GET pick.
    pub fn pick(&mut self) -> Option<BackendId> {
        self.pick_with(PickContext { attempt: 0, exclude: None, method: HttpMethod::Get })
    }

    /// A retry pick that must avoid `exclude`.
    pub fn pick_excluding(&mut self, exclude: BackendId) -> Option<BackendId> {
        self.pick_with(PickContext { attempt: 1, exclude: Some(exclude), method: HttpMethod::Get })
    }

    /// A pick with an explicit context. Panics if the policy breaks the contract
    /// (answers an ineligible or excluded backend), as the host would count a fault.
    pub fn pick_with(&mut self, ctx: PickContext) -> Option<BackendId> {
        let choice = self.runtime.pick(&ctx);
        if let Some(id) = choice {
            assert!(self.runtime.pool().is_eligible(id), "{} picked ineligible backend {id}", P::NAME);
            assert_ne!(Some(id), ctx.exclude, "{} picked the excluded backend", P::NAME);
            with_env(|env| *env.in_flight.entry(id).or_default() += 1);
        }
        choice
    }

    /// Delivers an outcome, if the policy subscribes (as the host does). The
    /// fake host's in-flight count of a picked backend drops first, whether
    /// the policy subscribes or not, as the real host's does.
    pub fn observe(&mut self, outcome: Outcome) {
        if outcome.picked {
            with_env(|env| {
                if let Some(count) = env.in_flight.get_mut(&outcome.backend) {
                    *count = count.saturating_sub(1);
                }
            });
        }
        if P::WANTS_OUTCOMES {
            self.runtime.observe(&outcome);
        }
    }

    /// Reports the end of an attempt this policy picked: a 200 or a 500.
    pub fn complete(&mut self, backend: BackendId, latency_us: u64, ok: bool) {
        self.observe(Outcome { backend, picked: true, status: if ok { 200 } else { 500 }, latency_us, error: None });
    }

    /// Reports an attempt that failed without a response.
    pub fn complete_with_error(&mut self, backend: BackendId, latency_us: u64, error: ErrorKind) {
        self.observe(Outcome { backend, picked: true, status: 0, latency_us, error: Some(error) });
    }

    /// `n` sequential picks, each completed at once with a 1 ms success; returns
    /// how many each backend got.
    pub fn picks(&mut self, n: usize) -> HashMap<BackendId, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            if let Some(id) = self.pick() {
                *counts.entry(id).or_default() += 1;
                self.complete(id, 1_000, true);
            }
        }
        counts
    }

    /// Sets what `host::in_flight` answers for `backend`, as if other
    /// workers had that many attempts outstanding there; later picks and
    /// outcomes count from it.
    pub fn set_in_flight(&mut self, backend: BackendId, count: u32) {
        with_env(|env| env.in_flight.insert(backend, count));
    }

    /// Moves the fake clock forward.
    pub fn advance_us(&mut self, us: u64) {
        with_env(|env| env.now_us += us);
    }

    /// The fake clock.
    pub fn now_us(&self) -> u64 {
        with_env(|env| env.now_us)
    }

    /// Sets the attributes `veer_sdk::request` answers with.
    pub fn set_request(&mut self, request: FakeRequest) {
        with_env(|env| env.request = request);
    }

    /// Log lines the policy wrote so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        with_env(|env| env.logs.clone())
    }

    /// The policy's exported state.
    pub fn export_state(&self) -> Vec<u8> {
        self.runtime.export_state()
    }

    /// Imports state into the policy.
    pub fn import_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.runtime.import_state(state)
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        self.runtime.policy().expect("the harness configures the policy in new()")
    }

    /// The pool as the policy sees it.
    pub fn pool(&self) -> &Pool {
        self.runtime.pool()
    }

    /// Plays `load` against backends modelled by `model`, in virtual time.
    ///
    /// `model(backend, in_flight, rng)` answers one request: `in_flight` counts the
    /// requests the backend is serving including this one (for capacity models);
    /// `rng` is seeded and separate from the policy's randomness. Outcomes are
    /// delivered to the policy as the host would, and the clock advances to each
    /// completion.
    pub fn run(&mut self, load: Load, mut model: impl FnMut(BackendId, u32, &mut SimRng) -> Reply) -> Report {
        let mut rng = SimRng::new(0xC0FFEE);
        let mut report = Report::default();
        let mut in_flight: HashMap<BackendId, u32> = HashMap::new();
        let mut pending: BinaryHeap<Reverse<Completion>> = BinaryHeap::new();
        let start = self.now_us();
        let mut sent = 0;
        let mut sequence = 0;
        let mut issue = |h: &mut Self,
                         pending: &mut BinaryHeap<_>,
                         report: &mut Report,
                         in_flight: &mut HashMap<BackendId, u32>| {
            let now = h.now_us();
            match h.pick() {
                Some(id) => {
                    let load = in_flight.entry(id).or_default();
                    *load += 1;
                    let reply = model(id, *load, &mut rng);
                    sequence += 1;
                    pending.push(Reverse((now + reply.latency_us, sequence, id, reply.latency_us, reply.ok)));
                }
                None => {
                    report.unpicked += 1;
                    // Nothing to wait for: let virtual time pass as a client's back-off.
                    h.advance_us(1_000);
                }
            }
        };
        while sent < load.requests.min(load.concurrency) {
            issue(self, &mut pending, &mut report, &mut in_flight);
            sent += 1;
        }
        while let Some(Reverse((at, _, id, latency_us, ok))) = pending.pop() {
            with_env(|env| env.now_us = env.now_us.max(at));
            if let Some(load) = in_flight.get_mut(&id) {
                *load -= 1;
            }
            let entry = report.backends.entry(id).or_default();
            entry.requests += 1;
            entry.total_latency_us += latency_us;
            entry.failures += usize::from(!ok);
            self.complete(id, latency_us, ok);
            if sent < load.requests {
                issue(self, &mut pending, &mut report, &mut in_flight);
                sent += 1;
            }
        }
        report.elapsed_us = self.now_us() - start;
        report
    }
}

/// The `black-hole` scenario in virtual time: a 5 ms backend that hangs one
/// request in five until a 500 ms timeout, beside four at 10 ms, ten
/// clients, `windows` runs of 4000 requests (~4 s each). Returns the hangs
/// of each window: a policy that finds the hanging backend out, and does not
/// probe it back into use, keeps them low; blind rotation hangs ~160 a
/// window.
pub fn black_hole_hangs<P: Policy>(params: &[(&str, &str)], windows: usize) -> Result<Vec<usize>, String> {
    let mut h = Harness::<P>::new(params)?;
    let hole = h.add_backend("hole", 1);
    h.add_backends(4);
    let hangs = (0..windows)
        .map(|_| {
            let report = h.run(Load { requests: 4_000, concurrency: 10 }, |id, _, rng| {
                if id == hole && rng.unit() < 0.2 {
                    Reply::fail(500_000)
                } else {
                    Reply::ok(if id == hole { 5_000 } else { 10_000 })
                }
            });
            report.backends.get(&hole).map_or(0, |b| b.failures)
        })
        .collect();
    Ok(hangs)
}

/// A simulated request's end: (completion time, sequence, backend, latency, ok).
/// The sequence number keeps the order of simultaneous completions deterministic.
type Completion = (u64, u64, BackendId, u64, bool);

fn to_pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
