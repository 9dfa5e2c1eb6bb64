//! veer's core types: what the host and a routing policy both speak of.
//!
//! The WIT interface (`wit/picker.wit`) is the contract between the host and
//! a policy component; each side's generated bindings convert to and from
//! these types at the boundary (`veer-plugin-runtime`'s and `veer-sdk`'s
//! `conversions.rs`), so neither side's code depends on a binding generator.
//! The types mirror the WIT records field for field; the WIT's documentation
//! is the reference for their meaning.
//!
//! - [`Backend`], [`BackendEvent`], [`BackendId`]: the backend set and its changes.
//! - [`PickContext`], [`HttpMethod`]: what a pick is told.
//! - [`Outcome`], [`ErrorKind`]: what an attempt came to.
//! - [`Membership`]: the backend set rebuilt from events, one implementation
//!   for the host (which checks answers against it and replays it into fresh
//!   instances) and the SDK (whose `Pool` is what a policy picks from).
//! - [`BackendSpec`]: what an operator says about a backend, and its validation.
//! - [`hash`], [`rng`]: the stable hash and the seeded generator both sides use.

pub mod hash;
mod membership;
pub mod rng;
mod spec;
mod types;

pub use membership::Membership;
pub use spec::{BackendProtocol, BackendSpec, MAX_WEIGHT};
pub use types::{Backend, BackendEvent, BackendId, ErrorKind, HttpMethod, LatencySample, Outcome, PickContext};
