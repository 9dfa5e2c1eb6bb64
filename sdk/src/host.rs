//! Services the host provides: randomness, a monotonic clock and logging.
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
