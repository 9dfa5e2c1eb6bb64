//! The fleet-wide client rate limit: the per-client limit of
//! [`super::client_bucket`] (same rate, burst and client keys) enforced
//! across every veer that shares one Redis.
//!
//! Each request costs one round trip: a Lua script (sent once, then called
//! by its hash) runs GCRA — the token bucket written as one timestamp per
//! client, the "theoretical arrival time" — atomically in Redis, on Redis's
//! clock, so that the instances' clocks never need to agree. A client's key
//! expires once its bucket would be full again, so idle clients cost Redis
//! nothing.
//!
//! When Redis does not answer within `timeout` (down, unreachable, slow),
//! the request is decided by `on_error` — the local buckets (fail open to
//! the per-instance limit) or a 503 (fail closed) — and the store is not
//! asked again for `retry_interval`, so that an outage costs no request a
//! timeout. `veer_rate_limit_store_checks_total` counts every outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `client_rate.shared`: where the fleet's shared limit lives.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedRateConfig {
    /// The Redis every instance shares: `redis://HOST:PORT[/DB]`, with
    /// `redis://:PASSWORD@HOST:PORT` for a password.
    pub redis: String,
    /// Prefix of the keys (one per active client), so that fleets or
    /// listeners can share one Redis without sharing limits.
    pub key_prefix: String,
    /// How long a request waits for Redis before `on_error` decides it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After Redis failed, how long requests are decided by `on_error`
    /// without asking it.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// What decides while Redis cannot: `local` (each instance's own
    /// buckets, the same limit per instance) or `refuse` (503).
    pub on_error: OnStoreError,
}

impl Default for SharedRateConfig {
    fn default() -> Self {
        SharedRateConfig {
            redis: "redis://127.0.0.1:6379".to_string(),
            key_prefix: "veer:rate:".to_string(),
            timeout: Duration::from_millis(25),
            retry_interval: Duration::from_secs(1),
            on_error: OnStoreError::Local,
        }
    }
}

/// What decides a request while the store cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Fail open to this instance's own buckets.
    Local,
    /// Fail closed: 503.
    Refuse,
}

impl SharedRateConfig {
    /// What is wrong with these settings.
    pub fn problems(&self, problems: &mut Vec<String>) {
        if let Err(error) = redis::Client::open(self.redis.as_str()) {
            problems.push(format!("client_rate.shared.redis {:?} is not a Redis URL: {error}", self.redis));
        }
        for (key, value) in [("timeout", self.timeout), ("retry_interval", self.retry_interval)] {
            if value.is_zero() {
                problems.push(format!("client_rate.shared.{key} must be longer than 0s"));
            }
        }
    }
}

/// What the store said of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the client's limit, fleet-wide.
    Allowed,
    /// Over it: a token is back in this long.
    Limited(Duration),
    /// The store could not say; `on_error` decides.
    Unavailable,
}

/// GCRA on Redis's clock. KEYS[1]: the client; ARGV: the emission interval
/// and the burst tolerance (interval × burst), in µs. Returns 0 when
/// allowed, else the µs until a request would be.
const GCRA: &str = r"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - now - tonumber(ARGV[2])
if wait > 0 then return wait end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
";

/// The limit shared through Redis.
pub struct SharedLimit {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    settings: SharedRateConfig,
    interval_us: u64,
    tolerance_us: u64,
    /// µs since `base` before which the store is not asked.
    skip_until: AtomicU64,
    base: Instant,
    up: AtomicBool,
    counts: [AtomicU64; 4],
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimit").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The outcomes counted, as the `result` label names them.
pub const OUTCOMES: [&str; 4] = ["allowed", "limited", "error", "skipped"];

impl SharedLimit {
    /// A limit of `per_second` with bursts of `burst` per client, kept in
    /// the Redis of `settings` (connected on first use, and again after a
    /// failure). Call it within a tokio runtime.
    pub fn new(settings: SharedRateConfig, per_second: f64, burst: u32) -> Result<SharedLimit, String> {
        let client = redis::Client::open(settings.redis.as_str()).map_err(|e| format!("{}: {e}", settings.redis))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("{}: {e}", settings.redis))?;
        let interval_us = (1e6 / per_second).round().max(1.0) as u64;
        Ok(SharedLimit {
            connection,
            script: redis::Script::new(GCRA),
            interval_us,
            tolerance_us: interval_us * u64::from(burst),
            skip_until: AtomicU64::new(0),
            base: Instant::now(),
            up: AtomicBool::new(true),
            counts: Default::default(),
            settings,
        })
    }

    /// What decides while the store cannot.
    pub fn on_error(&self) -> OnStoreError {
        self.settings.on_error
    }

    /// Takes a token for `client` fleet-wide: one round trip, at most `timeout`.
    pub async fn check(&self, client: &str) -> Verdict {
        let now = self.base.elapsed().as_micros() as u64;
        if now < self.skip_until.load(Ordering::Relaxed) {
            self.count(3);
            return Verdict::Unavailable;
        }
        let mut connection = self.connection.clone();
        let mut call = self.script.key(format!("{}{client}", self.settings.key_prefix));
        call.arg(self.interval_us).arg(self.tolerance_us);
        let answer = tokio::time::timeout(self.settings.timeout, call.invoke_async::<i64>(&mut connection)).await;
        let error = match answer {
            Ok(Ok(wait)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(redis = %self.settings.redis, "the shared rate limit's store answers again");
                }
                if wait <= 0 {
                    self.count(0);
                    return Verdict::Allowed;
                }
                self.count(1);
                return Verdict::Limited(Duration::from_micros(wait as u64));
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.timeout),
        };
        self.count(2);
        let retry = self.settings.retry_interval.as_micros() as u64;
        self.skip_until.store(now + retry, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                redis = %self.settings.redis, %error, on_error = ?self.settings.on_error,
                "the shared rate limit's store failed; on_error decides until it answers"
            );
        }
        Verdict::Unavailable
    }

    fn count(&self, outcome: usize) {
        self.counts[outcome].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the last call reached the store.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Checks by outcome, in [`OUTCOMES`] order.
    pub fn counts(&self) -> [u64; 4] {
        self.counts.each_ref().map(|count| count.load(Ordering::Relaxed))
    }
}
