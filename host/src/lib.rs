//! veer: an HTTP load balancer whose routing policy is a WebAssembly component.
pub mod admin;
pub mod admission;
pub mod clock;
pub mod config;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod health;
pub mod net;
pub mod observe;
pub mod plugin;
pub mod pool;
pub mod proxy;
pub mod rng;
pub mod scenario;
pub mod server;
pub mod sim;
pub mod upstream;
