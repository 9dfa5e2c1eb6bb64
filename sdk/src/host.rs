//! Services the host provides: randomness, a monotonic clock, logging and the
//! host's in-flight counts.
//!
//! In a component these call the `veer:picker/host` imports; in a native build
//! (tests, benchmarks) they use the fake host of [`crate::testing`].

use crate::LogLevel;

/// A uniformly distributed random 64-bit number.
pub fn random_u64() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::veer::picker::host::random_u64()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_env(|env| env.next_random())
    }
}

/// A uniformly distributed number in `0..bound` (`bound` > 0), without modulo bias
/// worth speaking of (Lemire's multiply-shift).
pub fn random_below(bound: u64) -> u64 {
    ((u128::from(random_u64()) * u128::from(bound)) >> 64) as u64
}

/// A uniformly distributed number in `[0, 1)`.
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Monotonic time in microseconds; only differences are meaningful.
pub fn now_us() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::veer::picker::host::now_us()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_env(|env| env.now_us)
    }
}

/// Attempts in flight to `backend` across all of the host's workers (0 for an
/// unknown id). The host runs an instance of the policy per worker, so a count
/// kept from the policy's own picks sees only its worker's share; this one
/// sees every attempt. An import call each (~130 ns): read it for the few
/// candidates a pick compares, not for the whole pool.
///
/// In a native build the fake host counts the harness's picks whose outcome
/// has not been reported, plus what [`crate::testing::Harness::set_in_flight`]
/// sets (another worker's load).
pub fn in_flight(backend: crate::BackendId) -> u32 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::veer::picker::host::in_flight(backend)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_env(|env| env.in_flight.get(&backend).copied().unwrap_or(0))
    }
}

/// Writes a line to the host's log (rate-limited by the host).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::veer::picker::host::log(level, message)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_env(|env| env.logs.push((level, message.to_string())))
    }
}
