//! The picker conformance suite: drives any component implementing the
//! `veer:picker/picker` world directly through the runtime (no HTTP) and checks
//! the contract of `wit/picker.wit`, one named check at a time.
//!
//! Every check runs on a fresh instance, under the runtime's [`Limits`]
//! (deadline and memory cap), so one failure (a trap leaves an instance
//! unusable) does not hide the others. The host keeps its own model of the
//! backend set ([`Membership`]) and judges every answer against it: a pick must
//! be an eligible backend other than the excluded one, and "none" only when no
//! such backend exists — exactly what the data path treats as a fault.
//!
//! The rules the suite enforces that the WIT states in prose:
//! - `configure` accepts the operator's parameters and **rejects a key it does
//!   not know**, with a message naming it (an operator's typo must not be
//!   silently ignored);
//! - the first `backends-changed` may be empty, and an empty pool answers `none`;
//! - `observe` must survive outcomes for backends it never picked, removed ones
//!   and unknown ones (late outcomes are normal);
//! - state exported by one instance is accepted by a fresh one, and garbage
//!   state is refused or ignored, never a trap.
//!
//! ```no_run
//! # use veer_plugin_runtime::{conformance, Limits, PluginRuntime, PluginSource};
//! let runtime = PluginRuntime::new(Limits::default()).unwrap();
//! let report = conformance::run(&runtime, &PluginSource::parse("builtin:least-conn"), &[]);
//! print!("{report}");
//! assert!(report.passed());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use super::bindings::Picker as PickerWorld;
use super::bindings::veer::picker::types::Feedback;
use super::conversions;
use super::runtime::{Limits, PluginCode, PluginRuntime, RequestMeta, StoreState};
use super::{PluginError, PluginSource};
use veer_core::{Backend, BackendEvent, BackendId, ErrorKind, HttpMethod, Membership, Outcome, PickContext};

/// A parameter key no plugin knows; `configure` must refuse it.
pub const UNKNOWN_KEY: &str = "veer-conformance-unknown-key";

/// The result of one named check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Short stable name, e.g. `picks-only-eligible`.
    pub name: &'static str,
    /// What the check asks of the plugin, in one line.
    pub rule: &'static str,
    /// Whether the plugin met it.
    pub passed: bool,
    /// Why it failed, or what was measured when it passed.
    pub detail: String,
}

/// What the suite found about one plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Where the plugin came from (`builtin:NAME` or a path).
    pub source: String,
    /// `name version` from `info`, once it could be called.
    pub plugin: Option<String>,
    /// Size of the component in bytes, once it was read.
    pub size_bytes: Option<usize>,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// `true` when every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The check named `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conformance of {}", self.source)?;
        if let Some(plugin) = &self.plugin {
            write!(f, " ({plugin})")?;
        }
        if let Some(size) = self.size_bytes {
            write!(f, ", {:.1} KiB", size as f64 / 1024.0)?;
        }
        writeln!(f)?;
        for check in &self.checks {
            let mark = if check.passed { "pass" } else { "FAIL" };
            writeln!(f, "  {mark}  {:<28} {}", check.name, check.detail)?;
        }
        let failed = self.failures().count();
        if failed == 0 {
            writeln!(f, "all {} checks passed", self.checks.len())
        } else {
            writeln!(f, "{failed} of {} checks failed", self.checks.len())
        }
    }
}

/// Loads `source` and runs every check with `params` as the plugin's
/// parameters. Never panics on plugin behaviour: whatever goes wrong is a
/// failed check in the report.
pub fn run(runtime: &PluginRuntime, source: &PluginSource, params: &[(String, String)]) -> Report {
    // The data path calls plugins on its workers' tokio runtimes, where some
    // WASI calls (writing to stdout or stderr, blocking) cannot run: the
    // suite calls the plugin in the same surroundings, so what faults there
    // fails here. A caller already inside a runtime provides them itself.
    if tokio::runtime::Handle::try_current().is_err()
        && let Ok(surroundings) = tokio::runtime::Builder::new_current_thread().enable_all().build()
    {
        return surroundings.block_on(async { run_suite(runtime, source, params) });
    }
    run_suite(runtime, source, params)
}

fn run_suite(runtime: &PluginRuntime, source: &PluginSource, params: &[(String, String)]) -> Report {
    let mut report = Report { source: source.to_string(), plugin: None, size_bytes: None, checks: Vec::new() };
    let code = match runtime.load(source) {
        Ok(code) => code,
        Err(error) => {
            report.checks.push(fail("loads", "the file is a component implementing veer:picker/picker", error));
            return report;
        }
    };
    report.size_bytes = Some(code.size_bytes);
    let suite = Suite { runtime, code: &code, params };
    // Instantiation and `info` first: nothing else can run without them.
    let mut identity = None;
    report.checks.push(suite.check(
        "instantiates",
        "instantiates and answers `info` (name, MAJOR.MINOR.PATCH) within the control deadline",
        |s| {
            let (instance, elapsed) = s.instance()?;
            let (name, version, wants_outcomes) = instance.info.clone();
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(format!("name '{name}' must be non-empty, without spaces"));
            }
            let core = version.split(['-', '+']).next().unwrap_or_default();
            let parts: Vec<&str> = core.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
                return Err(format!("version '{version}' is not MAJOR.MINOR.PATCH"));
            }
            let detail = format!("{name} {version} in {}", millis(elapsed));
            identity = Some((name, version, wants_outcomes));
            Ok(detail)
        },
    ));
    let Some((name, version, wants_outcomes)) = identity else { return report };
    report.plugin = Some(format!("{name} {version}"));
    let checks: Vec<CheckFn> = vec![
        configure_accepts,
        configure_rejects_unknown_key,
        empty_pool,
        picks_only_eligible,
        follows_membership,
        respects_exclude,
        all_ineligible,
        observe_survives_odd_outcomes,
        state_round_trip,
        import_refuses_garbage_safely,
        pick_deadline,
        memory_cap,
        sustained_load,
    ];
    for check in checks {
        if let Some(result) = check(&suite, wants_outcomes) {
            report.checks.push(result);
        }
    }
    report
}

type CheckFn = fn(&Suite<'_>, bool) -> Option<Check>;

/// What every check needs: the runtime (limits), the code and the parameters.
struct Suite<'a> {
    runtime: &'a PluginRuntime,
    code: &'a PluginCode,
    params: &'a [(String, String)],
}

impl Suite<'_> {
    /// Runs `body`; `Ok(detail)` passes, `Err(reason)` fails.
    fn check(
        &self,
        name: &'static str,
        rule: &'static str,
        body: impl FnOnce(&Self) -> Result<String, String>,
    ) -> Check {
        match body(self) {
            Ok(detail) => Check { name, rule, passed: true, detail },
            Err(reason) => Check { name, rule, passed: false, detail: reason },
        }
    }

    /// A fresh instance after `info`, and how long instantiation took.
    fn instance(&self) -> Result<(Instance<'_>, Duration), String> {
        let started = Instant::now();
        let instance = Instance::new(self.runtime, self.code)?;
        Ok((instance, started.elapsed()))
    }

    /// A fresh instance configured with the suite's parameters.
    fn configured(&self) -> Result<Instance<'_>, String> {
        let (mut instance, _) = self.instance()?;
        instance.configure(self.params)?.map_err(|message| format!("configure rejected the parameters: {message}"))?;
        Ok(instance)
    }

    /// A configured instance told about `n` backends (ids 1..=n).
    fn with_backends(&self, n: u32) -> Result<Instance<'_>, String> {
        let mut instance = self.configured()?;
        instance.events(&added(1..=n))?;
        Ok(instance)
    }
}

fn fail(name: &'static str, rule: &'static str, error: PluginError) -> Check {
    Check { name, rule, passed: false, detail: error.to_string() }
}

fn configure_accepts(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("configure-accepts", "`configure` accepts the given parameters", |s| {
        let mut instance = s.instance()?.0;
        let started = Instant::now();
        instance.configure(s.params)?.map_err(|message| format!("rejected {:?}: {message}", s.params))?;
        Ok(format!("{} parameter(s) in {}", s.params.len(), millis(started.elapsed())))
    }))
}

fn configure_rejects_unknown_key(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("configure-rejects-unknown", "`configure` rejects an unknown key with a message naming it", |s| {
        let mut instance = s.instance()?.0;
        let mut params = s.params.to_vec();
        params.push((UNKNOWN_KEY.to_string(), "1".to_string()));
        match instance.configure(&params)? {
            Ok(()) => Err(format!("accepted the unknown key '{UNKNOWN_KEY}'")),
            Err(message) if !message.contains(UNKNOWN_KEY) => {
                Err(format!("rejected it, but the message does not name the key: '{message}'"))
            }
            Err(message) => Ok(format!("\"{message}\"")),
        }
    }))
}

fn empty_pool(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("empty-pool", "with no backends, `pick` answers none without trapping", |s| {
        let mut instance = s.configured()?;
        instance.events(&[])?;
        instance.picks(10, None)?;
        instance.picks(10, Some(1))?;
        // Backends that come and all go again leave an empty pool too.
        instance.events(&added(1..=3))?;
        instance.events(&(1..=3).map(BackendEvent::Removed).collect::<Vec<_>>())?;
        instance.picks(10, None)?;
        Ok("none, as required".into())
    }))
}

fn picks_only_eligible(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("picks-only-eligible", "every pick is an eligible backend; none only when there is none", |s| {
        let mut instance = s.with_backends(8)?;
        let counts = instance.picks(400, None)?;
        instance.events(&[3, 5, 8].map(|id| BackendEvent::Eligibility((id, false))))?;
        let after = instance.picks(400, None)?;
        // Eligible again: still only valid answers.
        instance.events(&[BackendEvent::Eligibility((5, true))])?;
        instance.picks(200, None)?;
        Ok(format!("{} distinct of 8 backends picked, {} of 5 after 3 went ineligible", counts, after))
    }))
}

fn follows_membership(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("follows-membership", "added, updated and removed backends are reflected in the next pick", |s| {
        let mut instance = s.with_backends(4)?;
        instance.picks(40, None)?;
        // One new backend, all the old ones removed: it is the only answer.
        let mut events = added(100..=100);
        events.extend((1..=4).map(BackendEvent::Removed));
        instance.events(&events)?;
        instance.expect_only(100, 50)?;
        instance.events(&[BackendEvent::Updated(backend(100, 7))])?;
        instance.expect_only(100, 20)?;
        // Two more, and the one we had ineligible: only the new two.
        let mut events = added(101..=102);
        events.push(BackendEvent::Eligibility((100, false)));
        instance.events(&events)?;
        let seen = instance.picks(100, None)?;
        // Ids are never reused by a host, but removed ones must be forgotten.
        instance.events(&[BackendEvent::Removed(101)])?;
        instance.expect_only(102, 30)?;
        Ok(format!("sole survivor picked every time; {seen} of 2 new backends used"))
    }))
}

fn respects_exclude(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("respects-exclude", "a retry never goes to `ctx.exclude`", |s| {
        let mut instance = s.with_backends(3)?;
        for excluded in 1..=3 {
            instance.picks(50, Some(excluded))?;
        }
        instance.events(&[BackendEvent::Removed(2), BackendEvent::Removed(3)])?;
        // The only backend is excluded: none is the only right answer.
        instance.picks(10, Some(1))?;
        Ok("never the excluded backend".into())
    }))
}

fn all_ineligible(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("all-ineligible", "with every backend ineligible, none; eligible again, a backend", |s| {
        let mut instance = s.with_backends(3)?;
        instance.events(&(1..=3).map(|id| BackendEvent::Eligibility((id, false))).collect::<Vec<_>>())?;
        instance.picks(20, None)?;
        instance.events(&[BackendEvent::Eligibility((2, true))])?;
        instance.expect_only(2, 20)?;
        Ok("none while nothing is eligible".into())
    }))
}

fn observe_survives_odd_outcomes(suite: &Suite<'_>, wants_outcomes: bool) -> Option<Check> {
    if !wants_outcomes {
        return None;
    }
    Some(suite.check("observe-odd-outcomes", "`observe` survives late, foreign and unknown outcomes", |s| {
        let mut instance = s.with_backends(3)?;
        instance.picks(30, None)?;
        let kinds = [
            Some(ErrorKind::Connect),
            Some(ErrorKind::Reset),
            Some(ErrorKind::Timeout),
            Some(ErrorKind::Protocol),
            Some(ErrorKind::NotSent),
            None,
        ];
        for (i, error) in kinds.into_iter().enumerate() {
            for (backend, picked) in [(1, false), (2, true), (999_999, true), (999_999, false)] {
                let status = if error.is_some() { 0 } else { 200 + i as u16 };
                instance.observe(Outcome { backend, picked, status, latency_us: 1_000 * i as u64, error })?;
            }
        }
        // More outcomes than picks, and outcomes for a removed backend.
        instance.events(&[BackendEvent::Removed(1)])?;
        for _ in 0..20 {
            instance.observe(Outcome { backend: 1, picked: true, status: 200, latency_us: 10, error: None })?;
            instance.observe(Outcome { backend: 3, picked: true, status: 503, latency_us: 10, error: None })?;
        }
        instance.picks(100, None)?;
        Ok("no trap, answers still valid".into())
    }))
}

fn state_round_trip(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check(
        "state-round-trip",
        "state exported by one instance is imported by a fresh one, which keeps picking validly",
        |s| {
            let mut old = s.with_backends(5)?;
            old.picks(300, None)?;
            let state = old.export_state()?;
            let mut new = s.with_backends(5)?;
            if state.is_empty() {
                new.picks(50, None)?;
                return Ok("exports no state (allowed)".into());
            }
            new.import_state(&state)?.map_err(|message| {
                format!("refused the {} bytes its own predecessor exported: {message}", state.len())
            })?;
            new.picks(300, None)?;
            // Exporting again must work too (state carried over twice).
            let again = new.export_state()?;
            Ok(format!("{} bytes exported, imported, re-exported as {} bytes", state.len(), again.len()))
        },
    ))
}

fn import_refuses_garbage_safely(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check("import-garbage", "garbage state is refused (or ignored) without a trap", |s| {
        let mut instance = s.with_backends(3)?;
        let mut refused = 0;
        let garbage: [&[u8]; 3] = [&[0xff; 64], b"not the state you are looking for", &[0; 4096]];
        for bytes in garbage {
            if instance.import_state(bytes)?.is_err() {
                refused += 1;
            }
            instance.picks(20, None)?;
        }
        Ok(format!("{refused} of 3 refused, answers still valid"))
    }))
}

fn pick_deadline(suite: &Suite<'_>, wants_outcomes: bool) -> Option<Check> {
    Some(suite.check("pick-deadline", "`pick` (and `observe`) stay within the call deadline at 64 backends", |s| {
        let mut instance = s.with_backends(64)?;
        let mut slowest = Duration::ZERO;
        let started = Instant::now();
        let n: u32 = 1_000;
        for i in 0..n {
            let call = Instant::now();
            let picked = instance.pick(ctx(0, None), i)?;
            if let (true, Some(backend)) = (wants_outcomes, picked) {
                instance.observe(Outcome { backend, picked: true, status: 200, latency_us: 1_000, error: None })?;
            }
            slowest = slowest.max(call.elapsed());
        }
        let mean = started.elapsed() / n;
        Ok(format!(
            "mean {:.1} µs, slowest {:.1} µs (deadline {} ms, CPU time)",
            mean.as_secs_f64() * 1e6,
            slowest.as_secs_f64() * 1e6,
            s.runtime.limits().call_timeout.as_millis()
        ))
    }))
}

fn memory_cap(suite: &Suite<'_>, wants_outcomes: bool) -> Option<Check> {
    Some(suite.check("memory-cap", "a churn of 1000 backends and 6000 picks stays within the memory cap", |s| {
        let mut instance = s.configured()?;
        instance.events(&[])?;
        for round in 0..3u32 {
            let base = 1 + round * 1_000;
            instance.events(&added(base..=base + 999))?;
            for i in 0..2_000 {
                let picked = instance.pick(ctx(0, None), i)?;
                if let (true, Some(backend)) = (wants_outcomes, picked) {
                    instance.observe(Outcome { backend, picked: true, status: 200, latency_us: 500, error: None })?;
                }
            }
            instance.events(&(base..=base + 999).map(BackendEvent::Removed).collect::<Vec<_>>())?;
        }
        instance.picks(10, None)?;
        Ok(format!("cap {} MiB", s.runtime.limits().memory_bytes >> 20))
    }))
}

/// Requests in the `sustained-load` check: enough for garbage that a plugin's
/// runtime never collects (or collects in one long pause) to show up.
pub const SUSTAINED_REQUESTS: u32 = 100_000;

fn sustained_load(suite: &Suite<'_>, _: bool) -> Option<Check> {
    Some(suite.check(
        "sustained-load",
        "100 000 requests in a row: no trap, no overrun, no growth past the memory cap",
        |s| {
            let mut instance = s.with_backends(3)?;
            let started = Instant::now();
            instance.picks(SUSTAINED_REQUESTS, None)?;
            let elapsed = started.elapsed();
            Ok(format!(
                "{SUSTAINED_REQUESTS} requests in {:.1} s ({:.1} µs each)",
                elapsed.as_secs_f64(),
                elapsed.as_secs_f64() * 1e6 / f64::from(SUSTAINED_REQUESTS)
            ))
        },
    ))
}

/// One instance under test, with the host's model of what it was told.
struct Instance<'a> {
    runtime: &'a PluginRuntime,
    store: Store<StoreState>,
    world: PickerWorld,
    model: Membership,
    info: (String, String, bool),
    /// Picks made so far; numbers the requests so their client addresses vary.
    requests: u32,
}

impl<'a> Instance<'a> {
    fn new(runtime: &'a PluginRuntime, code: &PluginCode) -> Result<Self, String> {
        let limits: &Limits = runtime.limits();
        let mut store = runtime.new_store(&code.source, std::sync::Arc::new(crate::NoLoad));
        // Instantiation runs guest initialisers, so it gets the control deadline.
        let world = runtime
            .guest_call(&mut store, limits.control_timeout, |store| code.pre.instantiate(store))
            .map_err(|e| format!("instantiation {}", describe(&e)))?;
        let info = runtime
            .guest_call(&mut store, limits.control_timeout, |store| world.veer_picker_policy().call_info(store))
            .map_err(|e| format!("info {}", describe(&e)))?;
        let info = (info.name, info.version, info.feedback.contains(Feedback::OUTCOMES));
        Ok(Instance { runtime, store, world, model: Membership::default(), info, requests: 0 })
    }

    /// A control call (`configure`, `backends-changed`, state) under the control deadline.
    fn control<T>(
        &mut self,
        call: impl FnOnce(&PickerWorld, &mut Store<StoreState>) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T> {
        let world = &self.world;
        self.runtime.guest_call(&mut self.store, self.runtime.limits().control_timeout, |store| call(world, store))
    }

    /// Outer error: the call trapped; inner: the plugin's own rejection.
    fn configure(&mut self, params: &[(String, String)]) -> Result<Result<(), String>, String> {
        self.control(|world, store| world.veer_picker_policy().call_configure(store, params))
            .map_err(|e| format!("configure {}", describe(&e)))
    }

    fn events(&mut self, events: &[BackendEvent]) -> Result<(), String> {
        self.model.apply(events);
        self.control(|world, store| {
            world.veer_picker_policy().call_backends_changed(store, &conversions::events(events))
        })
        .map_err(|e| format!("backends-changed {}", describe(&e)))
    }

    /// One pick for request number `i` (client addresses vary, so affinity
    /// policies spread), judged against the model.
    fn pick(&mut self, ctx: PickContext, i: u32) -> Result<Option<BackendId>, String> {
        let [_, _, c, d] = i.to_be_bytes();
        let mut request = RequestMeta::get("/conformance", IpAddr::V4(Ipv4Addr::new(10, 7, c, d)));
        if let Ok(value) = http::HeaderValue::from_str(&format!("user-{i}")) {
            request.parts.headers.insert("x-user", value);
        }
        self.store.data_mut().request = Some(request);
        let world = &self.world;
        let answer = self.runtime.guest_call(&mut self.store, self.runtime.limits().call_timeout, |store| {
            world.veer_picker_policy().call_pick(store, conversions::pick_context(ctx))
        });
        self.store.data_mut().request = None;
        let answer = answer.map_err(|e| format!("pick {}", describe(&e)))?;
        self.requests = self.requests.wrapping_add(1);
        let exclude = ctx.exclude;
        match answer {
            Some(id) if Some(id) == exclude => Err(format!("pick answered the excluded backend {id}")),
            Some(id) if self.model.get(id).is_none() => {
                Err(format!("pick answered backend {id}, which is not in the pool"))
            }
            Some(id) if !self.model.is_eligible(id) => Err(format!("pick answered backend {id}, which is ineligible")),
            None if self.model.has_candidate(exclude) => Err(format!(
                "pick answered none although {} eligible backend(s) exist",
                self.model.eligible().iter().filter(|id| Some(**id) != exclude).count()
            )),
            answer => Ok(answer),
        }
    }

    /// `n` valid picks (each followed by a success outcome for plugins that
    /// subscribe, as the host would send); returns how many distinct backends
    /// were picked.
    fn picks(&mut self, n: u32, exclude: Option<BackendId>) -> Result<usize, String> {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..n {
            let attempt = u32::from(exclude.is_some());
            // Which request failed tells a leak (late) from a plain bug (first).
            let failed = |error: String| format!("request {} of {n}: {error}", i + 1);
            if let Some(backend) = self.pick(ctx(attempt, exclude), self.requests).map_err(failed)? {
                seen.insert(backend);
                if self.info.2 {
                    self.observe(Outcome { backend, picked: true, status: 200, latency_us: 800, error: None })
                        .map_err(failed)?;
                }
            }
        }
        Ok(seen.len())
    }

    /// `n` picks that must all answer `only`.
    fn expect_only(&mut self, only: BackendId, n: u32) -> Result<(), String> {
        for i in 0..n {
            match self.pick(ctx(0, None), i)? {
                Some(id) if id == only => {
                    if self.info.2 {
                        self.observe(Outcome { backend: id, picked: true, status: 200, latency_us: 800, error: None })?;
                    }
                }
                other => return Err(format!("expected backend {only}, the only eligible one, got {other:?}")),
            }
        }
        Ok(())
    }

    fn observe(&mut self, outcome: Outcome) -> Result<(), String> {
        let world = &self.world;
        self.runtime
            .guest_call(&mut self.store, self.runtime.limits().call_timeout, |store| {
                world.veer_picker_policy().call_observe(store, conversions::outcome(outcome))
            })
            .map_err(|e| format!("observe {}", describe(&e)))
    }

    fn export_state(&mut self) -> Result<Vec<u8>, String> {
        self.control(|world, store| world.veer_picker_policy().call_export_state(store))
            .map_err(|e| format!("export-state {}", describe(&e)))
    }

    fn import_state(&mut self, state: &[u8]) -> Result<Result<(), String>, String> {
        self.control(|world, store| world.veer_picker_policy().call_import_state(store, state))
            .map_err(|e| format!("import-state {}", describe(&e)))
    }
}

fn ctx(attempt: u32, exclude: Option<BackendId>) -> PickContext {
    PickContext { attempt, exclude, method: HttpMethod::Get }
}

fn backend(id: BackendId, weight: u32) -> Backend {
    Backend {
        id,
        name: format!("conformance-{id}"),
        address: format!("127.0.0.1:{}", 20_000 + id % 40_000),
        weight,
        labels: vec![("zone".into(), format!("z{}", id % 3))],
    }
}

/// `added` events for `ids`, with weights 1..=5 so weighted policies see variety.
fn added(ids: std::ops::RangeInclusive<BackendId>) -> Vec<BackendEvent> {
    ids.map(|id| BackendEvent::Added(backend(id, 1 + id % 5))).collect()
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// A one-line description of a call failure: a deadline, a trap (the memory
/// cap shows as a failed grow), or another error.
fn describe(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "ran past its deadline".to_string(),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("failed: {}", error.root_cause()),
    }
}
