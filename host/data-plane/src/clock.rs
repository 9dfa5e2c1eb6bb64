//! The time health, admission and the retry budget run on.
//!
//! It is tokio's clock: real monotonic time in a running veer, and virtual
//! time in a test that pauses it (`#[tokio::test(start_paused = true)]`,
//! `tokio::time::advance`), so that a test of a breaker's cool-down, a token
//! bucket's refill or an ejection's expiry moves time forward instead of
//! sleeping through it. Their state machines take `now` as an argument; this
//! is where the code that drives them reads it. A function rather than a
//! trait object handed to each component: tokio already lets a test own the
//! clock, and the data path pays no indirect call for it.
//!
//! Outside a tokio runtime (a plain thread) it is `std::time::Instant::now()`.

use std::time::Instant;

/// Now, on tokio's clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
