//! veer: an HTTP load balancer whose routing policy is a WebAssembly component.
pub use veer_core::{hash, rng};

pub mod admin;
pub mod admission;
pub mod clock;
pub mod config;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod net;
pub mod observe;
/// The plugin runtime, its own crate (`host/plugin-runtime`); here under the
/// name the rest of the host has always used.
pub use veer_plugin_runtime as plugin;
pub mod pool;
pub mod proxy;
pub mod scenario;
pub mod server;
pub mod sim;
pub mod upstream;
