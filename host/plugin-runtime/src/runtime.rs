//! The process-wide Wasm engine: compiles picker components once, links the host
//! imports once, and creates sandboxed stores for instances.

use std::hash::{DefaultHasher, Hash, Hasher};

use sha2::Digest as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::veer::picker::{host, request, types};
use super::bindings::{Picker as PickerWorld, PickerPre};
use super::{BackendId, PluginError, PluginSource, builtin};

/// Limits every plugin call runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deadline for `pick` and `observe`, which run on the request path. It is
    /// CPU time: a call whose thread was merely preempted is given more time, so
    /// a busy machine does not kill healthy plugins (see `StoreState::deadline`).
    pub call_timeout: Duration,
    /// Deadline for control calls: `configure`, `backends-changed`, state export/import.
    pub control_timeout: Duration,
    /// Cap on an instance's linear memory, in bytes; growing past it traps.
    pub memory_bytes: usize,
    /// How often the epoch advances. Deadlines are rounded up to whole ticks.
    pub epoch_tick: Duration,
    /// Consecutive faulty answers (not traps) after which the instance is replaced.
    pub max_consecutive_faults: u32,
    /// Instance replacements allowed within `rebuild_window` before the host stops
    /// trying and leaves its native fallback in charge of that picker.
    pub max_rebuilds: u32,
    /// See `max_rebuilds`.
    pub rebuild_window: Duration,
    /// Seed for plugins' randomness; `None` seeds from the clock. Each instance
    /// gets its own stream derived from it.
    pub seed: Option<u64>,
    /// Lines per second a plugin may log (burst: ten times that); the rest are
    /// dropped and counted.
    pub log_lines_per_second: u32,
    /// Instances of each picker, so that threads picking at once do not wait
    /// for one another: the server makes it its number of data-path workers
    /// (see `picker.rs`). Each costs the plugin's memory once more.
    pub instances: usize,
    /// What `host.now-us` reads: the monotonic clock when `None`; a
    /// [`VirtualClock`] the caller advances in a simulation (the scenario
    /// bench's virtual mode), so identical inputs give identical answers.
    pub clock: Option<VirtualClock>,
    /// An executable that compiles components when run with `__compile`
    /// (veer itself, see [`crate::compiler`]): the serving process then never
    /// runs the compiler and keeps ~16 MB less resident. `None`: compile in
    /// process.
    pub compiler: Option<std::path::PathBuf>,
}

/// A clock in microseconds that only moves when told: the time plugins see
/// in a discrete-event simulation. Clones share one reading.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock(Arc<std::sync::atomic::AtomicU64>);

impl VirtualClock {
    /// The reading, µs.
    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the reading to `us`; never backwards.
    pub fn advance_to(&self, us: u64) {
        self.0.fetch_max(us, Ordering::Relaxed);
    }

    /// Back to zero, for the next simulation on the same runtime.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_millis(5),
            control_timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            epoch_tick: Duration::from_millis(1),
            max_consecutive_faults: 5,
            max_rebuilds: 3,
            rebuild_window: Duration::from_secs(60),
            seed: None,
            log_lines_per_second: 10,
            instances: 1,
            clock: None,
            compiler: None,
        }
    }
}

/// A compiled, linked picker component, ready to instantiate.
pub struct PluginCode {
    /// Where it came from, e.g. `builtin:p2c-ewma` or a file path.
    pub source: String,
    /// Size of the component in bytes.
    pub size_bytes: usize,
    pub(crate) pre: PickerPre<StoreState>,
}

impl std::fmt::Debug for PluginCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginCode").field("source", &self.source).field("size_bytes", &self.size_bytes).finish()
    }
}

/// A SHA-256 digest of a component's bytes: two different components never
/// share compiled code (a 64-bit non-cryptographic hash could be made to).
type Digest = [u8; 32];

/// The engine every component is compiled for: the serving process's and
/// the compiling child's ([`crate::compiler`]) must agree.
pub(crate) fn engine() -> Result<Engine, PluginError> {
    let mut config = Config::new();
    // Nothing here needs async Wasm, and turning concurrency support off
    // makes every call about three times cheaper (~330 ns against ~970 ns
    // per call with scalar arguments, measured with wasmtime 48; the cost
    // model heads wit/picker.wit).
    config.concurrency_support(false);
    config.epoch_interruption(true);
    Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))
}

/// Compiled components by digest, the least recently used dropped first
/// beyond [`CodeCache::CAPACITY`], so that loading many files over time
/// (admin swaps, reloads) does not grow memory without bound. Pickers hold
/// their own reference: dropping an entry never affects a running picker.
#[derive(Default)]
struct CodeCache {
    entries: std::collections::VecDeque<(Digest, Arc<PluginCode>)>,
}

impl CodeCache {
    const CAPACITY: usize = 16;

    fn get(&mut self, key: &Digest) -> Option<Arc<PluginCode>> {
        let position = self.entries.iter().position(|(digest, _)| digest == key)?;
        let entry = self.entries.remove(position)?;
        let code = entry.1.clone();
        self.entries.push_back(entry);
        Some(code)
    }

    fn insert(&mut self, key: Digest, code: Arc<PluginCode>) {
        self.entries.retain(|(digest, _)| *digest != key);
        self.entries.push_back((key, code));
        while self.entries.len() > Self::CAPACITY {
            self.entries.pop_front();
        }
    }
}

/// The one engine of the process, with its linker, compile cache and epoch ticker.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<StoreState>,
    limits: Limits,
    origin: Instant,
    next_seed: AtomicU64,
    cache: Mutex<CodeCache>,
    ticker_stop: Arc<AtomicBool>,
    /// Components the child process compiled (see [`Limits::compiler`]).
    compiled_apart: AtomicU64,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginRuntime {
    /// Creates the engine and starts its epoch ticker thread.
    pub fn new(limits: Limits) -> Result<Arc<Self>, PluginError> {
        let engine = engine()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        PickerWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let seed = limits.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let runtime = Arc::new(PluginRuntime {
            engine,
            linker,
            limits,
            origin: Instant::now(),
            next_seed: AtomicU64::new(seed),
            cache: Mutex::new(CodeCache::default()),
            ticker_stop: ticker_stop.clone(),
            compiled_apart: AtomicU64::new(0),
        });
        spawn_epoch_ticker(Arc::downgrade(&runtime), runtime.limits.epoch_tick, ticker_stop)?;
        Ok(runtime)
    }

    /// The limits calls run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Restarts the stream plugins' seeds are drawn from at `seed`, so the
    /// instances started next get the same randomness as after
    /// `Limits::seed = Some(seed)`, whatever ran on this runtime before (the
    /// scenario simulator reuses one runtime, and its compiled code, for every
    /// run).
    pub fn reseed(&self, seed: u64) {
        self.next_seed.store(seed, Ordering::Relaxed);
    }

    /// Loads a plugin: reads it (or takes the embedded built-in), compiles and
    /// links it. Compiled code is cached by content, so loading the same
    /// component again is cheap.
    pub fn load(&self, source: &PluginSource) -> Result<Arc<PluginCode>, PluginError> {
        let bytes = match source {
            PluginSource::Builtin(name) => builtin::bytes(name)
                .ok_or_else(|| PluginError::UnknownBuiltin { name: name.clone(), known: builtin::NAMES.join(", ") })?
                .to_vec(),
            PluginSource::Path(path) => std::fs::read(path)
                .map_err(|error| PluginError::Read { path: path.display().to_string(), reason: error.to_string() })?,
            PluginSource::NativeRoundRobin | PluginSource::Native(_) => {
                return Err(PluginError::Invalid {
                    origin: source.to_string(),
                    reason: "native pickers have no code to load".into(),
                });
            }
        };
        self.load_bytes(&source.to_string(), &bytes)
    }

    /// Compiles and links component bytes; `label` names them in errors.
    pub fn load_bytes(&self, label: &str, bytes: &[u8]) -> Result<Arc<PluginCode>, PluginError> {
        let key: Digest = sha2::Sha256::digest(bytes).into();
        if let Some(code) = self.cache.lock().get(&key) {
            return Ok(code);
        }
        let invalid = |reason: String| PluginError::Invalid { origin: label.to_string(), reason };
        // The engine's parse error quotes the first bytes; for a file that is
        // not Wasm at all, say so without repeating any of it.
        if !bytes.starts_with(b"\0asm") {
            return Err(invalid(format!("not a WebAssembly file ({} bytes without the \\0asm header)", bytes.len())));
        }
        let compiled_apart = self.limits.compiler.as_deref().and_then(|compiler| {
            crate::compiler::compile_in_child(&self.engine, compiler, bytes)
                .inspect_err(
                    |error| tracing::warn!(%label, %error, "compiling in a child process failed; compiling here"),
                )
                .ok()
        });
        let component = match compiled_apart {
            Some(component) => {
                self.compiled_apart.fetch_add(1, Ordering::Relaxed);
                component
            }
            None => Component::new(&self.engine, bytes).map_err(|e| invalid(format!("{e:#}")))?,
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| invalid(format!("{e:#}")))?;
        let pre = PickerPre::new(instance_pre).map_err(|e| invalid(format!("{e:#}")))?;
        let code = Arc::new(PluginCode { source: label.to_string(), size_bytes: bytes.len(), pre });
        self.cache.lock().insert(key, code.clone());
        Ok(code)
    }

    /// Components a child process compiled for this runtime (see
    /// [`Limits::compiler`]); the others were compiled in process.
    pub fn compiled_apart(&self) -> u64 {
        self.compiled_apart.load(Ordering::Relaxed)
    }

    /// Components held by the compile cache.
    pub fn cached_components(&self) -> usize {
        self.cache.lock().entries.len()
    }

    /// A fresh sandboxed store for one instance of `plugin`, whose
    /// `host.in-flight` reads `load`.
    pub(crate) fn new_store(&self, plugin: &str, load: Arc<dyn BackendLoad>) -> Store<StoreState> {
        let seed = self.next_seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        let state = StoreState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(self.limits.memory_bytes).trap_on_grow_failure(true).build(),
            rng: seed,
            origin: self.origin,
            clock: self.limits.clock.clone(),
            request: None,
            plugin: plugin.to_string(),
            log_tokens: f64::from(self.limits.log_lines_per_second) * 10.0,
            log_rate: f64::from(self.limits.log_lines_per_second),
            log_refilled: Instant::now(),
            logs_dropped: 0,
            deadline: Deadline::default(),
            load,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|mut context| Ok(context.data_mut().deadline.on_expiry()));
        store
    }

    /// Sets the deadline for the next call: `timeout` rounded up to ticks, plus
    /// one because the current tick may be about to end.
    /// Makes one call into a plugin (`call`) under `timeout`, the only way
    /// the host enters guest code.
    ///
    /// A panic raised by a host function during the call comes back as an
    /// error, which the callers treat as a trap: the instance is replaced and
    /// the host's fallback answers. The case that needs it: WASI's
    /// synchronous bindings run blocking stream and poll operations (a guest
    /// flushing stdout or stderr, which a Rust plugin's panic message does, a
    /// Python `print`, a sleep) through `block_on` on the calling thread,
    /// which panics inside a tokio runtime — and picks run on the data-path
    /// workers' runtimes. Without this, a plugin that traps took its worker
    /// thread down with it.
    pub(crate) fn guest_call<T>(
        &self,
        store: &mut Store<StoreState>,
        timeout: Duration,
        call: impl FnOnce(&mut Store<StoreState>) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T> {
        self.arm_deadline(store, timeout);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(store))).unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(wasmtime::Error::msg(format!(
                "a host function panicked during the call ({message}); a plugin that writes to stdout or stderr, \
                 or blocks, cannot run on the data path (log through host.log)"
            )))
        })
    }

    fn arm_deadline(&self, store: &mut Store<StoreState>, timeout: Duration) {
        let tick = self.limits.epoch_tick.as_nanos().max(1);
        let ticks = timeout.as_nanos().div_ceil(tick) as u64 + 1;
        store.data_mut().deadline.arm(ticks, timeout);
        store.set_epoch_deadline(ticks);
    }
}

/// Turns the wall-clock epoch deadline into a CPU-time one.
///
/// Arming a call costs nothing extra (the epoch deadline is the only per-call
/// work). Only when the wall-clock deadline expires does the host read the
/// thread's CPU clock: the first expiry records it and extends the deadline; a
/// later expiry traps if the call used at least half of the timeout in CPU
/// since, i.e. it is spinning rather than waiting for a core. A starved call is
/// still cut off after `MAX_EXTENSIONS` extensions.
#[derive(Debug, Default)]
struct Deadline {
    call: u64,
    ticks: u64,
    timeout: Duration,
    /// (call, thread CPU time at its first expiry, extensions granted)
    overrun: Option<(u64, Duration, u32)>,
}

impl Deadline {
    const MAX_EXTENSIONS: u32 = 20;

    fn arm(&mut self, ticks: u64, timeout: Duration) {
        self.call = self.call.wrapping_add(1);
        self.ticks = ticks;
        self.timeout = timeout;
    }

    fn on_expiry(&mut self) -> UpdateDeadline {
        let Ok(cpu) = cpu_time::ThreadTime::try_now().map(|t| t.as_duration()) else {
            return UpdateDeadline::Interrupt;
        };
        match &mut self.overrun {
            Some((call, since, extensions)) if *call == self.call => {
                let spinning = cpu.saturating_sub(*since) >= self.timeout / 2;
                if spinning || *extensions >= Self::MAX_EXTENSIONS {
                    return UpdateDeadline::Interrupt;
                }
                *extensions += 1;
            }
            _ => self.overrun = Some((self.call, cpu, 0)),
        }
        UpdateDeadline::Continue(self.ticks)
    }
}

fn spawn_epoch_ticker(runtime: Weak<PluginRuntime>, tick: Duration, stop: Arc<AtomicBool>) -> Result<(), PluginError> {
    let engine =
        runtime.upgrade().map(|r| r.engine.clone()).ok_or_else(|| PluginError::Engine("runtime dropped".into()))?;
    std::thread::Builder::new()
        .name("veer-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))
}

/// What the host knows about the request being picked for, lent to the store for
/// the duration of one `pick`.
#[derive(Debug)]
pub struct RequestMeta {
    /// Method, URI and headers of the client's request.
    pub parts: http::request::Parts,
    /// The client's address.
    pub client_ip: IpAddr,
    /// Hash of the configured affinity key; `None` hashes the client IP.
    pub affinity_hash: Option<u64>,
    /// The route that took the request, and the upstream group picked for.
    pub route: Option<RouteNames>,
}

/// The names `request.route` and `request.upstream` answer with.
#[derive(Debug, Clone)]
pub struct RouteNames {
    /// The route's name.
    pub route: Arc<str>,
    /// The upstream group's name.
    pub upstream: Arc<str>,
}

impl RequestMeta {
    /// A `GET path` request from `client_ip`, for tests and benchmarks.
    pub fn get(path: &str, client_ip: IpAddr) -> Self {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.uri = path.parse().unwrap_or_default();
        RequestMeta { parts, client_ip, affinity_hash: None, route: None }
    }

    /// The affinity hash `request.affinity-hash` answers with.
    pub fn affinity_hash(&self) -> u64 {
        self.affinity_hash.unwrap_or_else(|| {
            let mut hasher = DefaultHasher::new();
            self.client_ip.hash(&mut hasher);
            hasher.finish()
        })
    }
}

/// Per-instance host state: the WASI sandbox (nothing granted), limits, and
/// what the `host` and `request` imports answer.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    rng: u64,
    origin: Instant,
    clock: Option<VirtualClock>,
    pub(crate) request: Option<RequestMeta>,
    plugin: String,
    log_tokens: f64,
    log_rate: f64,
    log_refilled: Instant,
    pub(crate) logs_dropped: u64,
    deadline: Deadline,
    load: Arc<dyn BackendLoad>,
}

/// The host's live load on each backend of a group, which plugins read
/// through `host.in-flight`. A picker runs one instance per data-path worker,
/// so numbers that must be global (how many attempts a backend is serving)
/// are kept by the host, not by each instance. The data plane's pool
/// implements it; [`NoLoad`] stands in where no pool is behind the picker.
pub trait BackendLoad: std::fmt::Debug + Send + Sync {
    /// Attempts in flight to `backend` across every worker; 0 if unknown.
    fn in_flight(&self, backend: BackendId) -> u32;
}

/// No pool behind the picker (tests, benches, `veer plugin test`): every
/// backend has nothing in flight.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLoad;

impl BackendLoad for NoLoad {
    fn in_flight(&self, _backend: BackendId) -> u32 {
        0
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for StoreState {}

impl host::Host for StoreState {
    fn random_u64(&mut self) -> u64 {
        // SplitMix64 (as the SDK's fake host uses): the golden-ratio step, then its finaliser.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn now_us(&mut self) -> u64 {
        match &self.clock {
            Some(clock) => clock.now_us(),
            None => self.origin.elapsed().as_micros() as u64,
        }
    }

    fn in_flight(&mut self, backend: BackendId) -> u32 {
        self.load.in_flight(backend)
    }

    fn log(&mut self, level: types::LogLevel, message: String) {
        let now = Instant::now();
        let burst = self.log_rate * 10.0;
        self.log_tokens =
            (self.log_tokens + now.duration_since(self.log_refilled).as_secs_f64() * self.log_rate).min(burst);
        self.log_refilled = now;
        if self.log_tokens < 1.0 {
            self.logs_dropped += 1;
            return;
        }
        self.log_tokens -= 1.0;
        let message: String = message.chars().take(1024).collect();
        let plugin = self.plugin.as_str();
        match level {
            types::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            types::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            types::LogLevel::Info => tracing::info!(plugin, "{message}"),
            types::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            types::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl request::Host for StoreState {
    fn method_name(&mut self) -> String {
        self.request.as_ref().map(|r| r.parts.method.to_string()).unwrap_or_default()
    }

    fn path(&mut self) -> String {
        self.request.as_ref().map(|r| r.parts.uri.path().to_string()).unwrap_or_default()
    }

    fn query(&mut self) -> Option<String> {
        self.request.as_ref()?.parts.uri.query().map(str::to_string)
    }

    fn authority(&mut self) -> Option<String> {
        let parts = &self.request.as_ref()?.parts;
        match parts.uri.authority() {
            Some(authority) => Some(authority.to_string()),
            None => parts.headers.get(http::header::HOST)?.to_str().ok().map(str::to_string),
        }
    }

    fn client_ip(&mut self) -> String {
        self.request.as_ref().map(|r| r.client_ip.to_string()).unwrap_or_default()
    }

    fn header(&mut self, name: String) -> Option<String> {
        self.request.as_ref()?.parts.headers.get(name.as_str())?.to_str().ok().map(str::to_string)
    }

    fn affinity_hash(&mut self) -> u64 {
        self.request.as_ref().map_or(0, RequestMeta::affinity_hash)
    }

    fn route(&mut self) -> Option<String> {
        Some(self.request.as_ref()?.route.as_ref()?.route.to_string())
    }

    fn upstream(&mut self) -> Option<String> {
        Some(self.request.as_ref()?.route.as_ref()?.upstream.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `component` with a custom section appended: the same code, other bytes.
    fn variant(component: &[u8], tag: u8) -> Vec<u8> {
        let name = b"veer-test";
        let payload_len = 1 + name.len() + 1;
        let mut bytes = component.to_vec();
        bytes.extend_from_slice(&[0, payload_len as u8, name.len() as u8]);
        bytes.extend_from_slice(name);
        bytes.push(tag);
        bytes
    }

    #[test]
    fn the_compile_cache_is_keyed_by_content_and_bounded() {
        let runtime = PluginRuntime::new(Limits::default()).unwrap();
        let round_robin = builtin::bytes("round-robin").unwrap();
        let first = runtime.load_bytes("v0", &variant(round_robin, 0)).unwrap();
        let again = runtime.load_bytes("v0 again", &variant(round_robin, 0)).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same bytes are compiled once");
        let other = runtime.load_bytes("v1", &variant(round_robin, 1)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other), "other bytes are other code");
        for tag in 2..(CodeCache::CAPACITY as u8 + 4) {
            runtime.load_bytes("vn", &variant(round_robin, tag)).unwrap();
        }
        assert_eq!(runtime.cached_components(), CodeCache::CAPACITY);
        let reloaded = runtime.load_bytes("v0 later", &variant(round_robin, 0)).unwrap();
        assert!(!Arc::ptr_eq(&first, &reloaded), "the oldest entry was dropped and compiled anew");
    }
}
