//! veer's data plane: everything a request touches between the client's
//! socket and the backend's.
//!
//! - [`proxy`]: the listener workers, the client connection and its limits, and
//!   the forward path in phases (route, pick and admit, send, classify, retry).
//! - [`retry`]: when a request may be tried again, and the budget that keeps
//!   retries from storming a failing fleet.
//! - [`routing`]: a listener's routes compiled into a table that finds a
//!   request's route (host by hash, path by radix tree) and says what to do.
//! - [`upstream`]: one backend group as a unit (pool, health, picker slot) with
//!   the single task that applies its membership changes.
//! - [`pool`]: the backends and their live numbers.
//! - [`health`]: active checks, circuit breakers, outlier ejection, slow start.
//! - [`admission`]: concurrency limits, queueing, per-client rate limits.
//! - [`observe`]: the metrics, access log, snapshots and advisories that read
//!   all of the above (and that nothing here reads back).
//! - [`tls`]: certificates by SNI, reloading without a restart, and TLS
//!   towards backends; [`transport`]: pooled backend connections, plain or TLS.
//! - [`fault`], [`clock`], [`net`]: whom a failure is blamed on, the time source
//!   tests can pause, and socket helpers.
//!
//! It depends on `veer-core` and the plugin runtime, never on the control
//! plane that configures it.

pub mod admission;
pub mod clock;
pub mod fault;
pub mod health;
pub mod net;
pub mod observe;
pub mod pool;
pub mod proxy;
pub mod retry;
pub mod routing;
pub mod series;
pub mod tls;
pub mod transport;
pub mod upstream;
