//! Write routing policies for [veer](https://example.invalid/veer) in Rust.
//!
//! A policy is a type that implements [`Policy`]; [`export_policy!`] turns it into
//! a WebAssembly component implementing the `veer:picker` world, and
//! [`testing::Harness`] runs the very same code natively, with a fake host, so a
//! policy is unit-tested with plain `cargo test`.
//!
//! ```
//! use veer_sdk::{BackendId, Params, PickContext, Policy, Pool};
//!
//! /// Sends every request to the eligible backend with the lowest id.
//! #[derive(Debug)]
//! pub struct First;
//!
//! impl Policy for First {
//!     const NAME: &'static str = "first";
//!
//!     fn configure(params: &Params) -> Result<Self, String> {
//!         params.reader().finish()?; // rejects any parameter: this policy takes none
//!         Ok(First)
//!     }
//!
//!     fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
//!         pool.eligible().iter().copied().filter(|id| Some(*id) != ctx.exclude).min()
//!     }
//! }
//!
//! veer_sdk::export_policy!(First);
//!
//! let mut h = veer_sdk::testing::Harness::<First>::new(&[]).unwrap();
//! let a = h.add_backend("a", 1);
//! h.add_backend("b", 1);
//! assert_eq!(h.pick(), Some(a));
//! ```
//!
//! Build the component with `cargo build --release --target wasm32-wasip2` and load
//! the `.wasm` file from `target/wasm32-wasip2/release/` with veer.

#[doc(hidden)]
pub mod conversions;
mod failure_record;
mod load_shape;
mod params;
mod pool;
mod probe_budget;
mod ranked;
mod runtime;

pub mod host;
pub mod request;
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    //! Bindings generated from `wit/picker.wit`. Use the re-exports at the crate root.
    wit_bindgen::generate!({
        path: "../wit",
        world: "veer:picker/picker",
        pub_export_macro: true,
        export_macro_name: "__export_picker",
        default_bindings_module: "::veer_sdk::bindings",
    });
}

pub use bindings::veer::picker::types::{Feedback, LogLevel, PluginInfo};
pub use failure_record::FailureRecord;
pub use load_shape::LoadShape;
pub use params::{ParamReader, Params};
pub use pool::Pool;
pub use probe_budget::{AttemptRecord, ProbeBudget};
pub use ranked::Ranked;
#[doc(hidden)]
pub use runtime::Runtime;
pub use veer_core::{
    Backend, BackendEvent, BackendId, ErrorKind, HttpMethod, LatencySample, Membership, Outcome, PickContext,
};

/// A routing policy: decides which backend serves each request attempt.
///
/// The host calls [`configure`](Policy::configure) to build the policy from the
/// operator's parameters, keeps the SDK's [`Pool`] up to date with backend events,
/// and calls [`pick`](Policy::pick) once per request attempt. Everything else has a
/// default.
///
/// Invariants the host relies on: `pick` returns an id from
/// [`Membership::eligible`] (the pool's eligible backends) that is not `ctx.exclude`, or `None` when there is none.
/// Any other answer, a panic, or running past the host's deadline is a fault: the
/// host serves the request with its own fallback choice and counts the fault.
pub trait Policy: Sized + 'static {
    /// Short stable name of the policy, e.g. `"p2c-ewma"`. Versions of one policy
    /// share it so that the host can hand learned state from one to the next.
    const NAME: &'static str;

    /// Set to `true` to receive [`observe`](Policy::observe) after every attempt.
    /// Costs one extra boundary crossing per attempt, so only learning or
    /// load-aware policies should ask for it.
    const WANTS_OUTCOMES: bool = false;

    /// Builds the policy from the operator's parameters; an `Err` message should
    /// name the parameter and say what is wrong. Use [`Params::reader`] to get
    /// every problem reported at once.
    fn configure(params: &Params) -> Result<Self, String>;

    /// Chooses a backend for one attempt (see the trait's invariants).
    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId>;

    /// Called after the pool applied a batch of backend events.
    fn backends_changed(&mut self, pool: &Pool, events: &[BackendEvent]) {
        let _ = (pool, events);
    }

    /// Called after every attempt if [`WANTS_OUTCOMES`](Policy::WANTS_OUTCOMES).
    fn observe(&mut self, pool: &Pool, outcome: &Outcome) {
        let _ = (pool, outcome);
    }

    /// Serializes learned state; empty (the default) when the policy keeps none.
    fn export_state(&self, pool: &Pool) -> Vec<u8> {
        let _ = pool;
        Vec::new()
    }

    /// Restores state written by `export_state` of this or an older version.
    fn import_state(&mut self, pool: &Pool, state: &[u8]) -> Result<(), String> {
        let _ = (pool, state);
        Ok(())
    }
}

/// Exports a [`Policy`] as the `veer:picker/policy` interface of a component.
///
/// Use it once, at the root of a `cdylib` crate built for `wasm32-wasip2`. On
/// other targets it expands to nothing, so the same crate builds natively for
/// tests and benchmarks.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::exports::veer::picker::policy::Guest;

            ::std::thread_local! {
                static RUNTIME: ::core::cell::RefCell<$crate::Runtime<$policy>> =
                    ::core::cell::RefCell::new($crate::Runtime::new(env!("CARGO_PKG_VERSION")));
            }

            struct Export;

            impl Guest for Export {
                fn info() -> $crate::PluginInfo {
                    RUNTIME.with_borrow(|rt| rt.info())
                }
                fn configure(
                    params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.configure(params))
                }
                fn backends_changed(events: ::std::vec::Vec<$crate::bindings::veer::picker::types::BackendEvent>) {
                    RUNTIME.with_borrow_mut(|rt| rt.backends_changed($crate::conversions::events(events)))
                }
                fn pick(
                    ctx: $crate::bindings::veer::picker::types::PickContext,
                ) -> ::core::option::Option<$crate::BackendId> {
                    RUNTIME.with_borrow_mut(|rt| rt.pick(&$crate::conversions::pick_context(ctx)))
                }
                fn observe(outcome: $crate::bindings::veer::picker::types::Outcome) {
                    RUNTIME.with_borrow_mut(|rt| rt.observe(&$crate::conversions::outcome(outcome)))
                }
                fn export_state() -> ::std::vec::Vec<u8> {
                    RUNTIME.with_borrow(|rt| rt.export_state())
                }
                fn import_state(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.import_state(&state))
                }
            }

    $crate::bindings::__export_picker!(Export with_types_in $crate::bindings);
        };
    };
}
