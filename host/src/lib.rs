//! veer: an HTTP load balancer whose routing policy is a WebAssembly component.
//!
//! This crate is the `veer` binary and a façade over the crates it is built
//! from, under the module names the tests, benches and tools use. Each module
//! lives in the crate of its concern (see `docs/ARCHITECTURE.md`):
//!
//! | crate | modules |
//! |---|---|
//! | `veer-core` | [`hash`], [`rng`], the shared types (through [`plugin`] and [`pool`]) |
//! | `veer-plugin-runtime` | [`plugin`] |
//! | `veer-data-plane` | [`admission`], [`clock`], [`fault`], [`health`], [`net`], [`observe`], [`pool`], [`proxy`], [`upstream`] |
//! | `veer-control-plane` | [`admin`], [`config`], [`server`] |
//! | `veer-sim` | [`sim`], [`scenario`] |

pub use veer_control_plane::{admin, config, discovery, server, upgrade};
pub use veer_core::{hash, rng};
pub use veer_data_plane::{
    admission, clock, fault, health, net, observe, pool, proxy, routing, tls, transport, upstream,
};
pub use veer_plugin_runtime as plugin;
pub use veer_sim as sim;
pub use veer_sim::scenario;

#[doc(hidden)]
pub mod fuzzing;
