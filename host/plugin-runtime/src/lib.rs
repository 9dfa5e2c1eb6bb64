//! The plugin runtime: loads picker components, calls them safely, and swaps
//! them while traffic flows.
//!
//! - [`PluginRuntime`]: one Wasm engine per process; compiles each component once.
//! - [`Picker`]: an instance per data-path worker, called under a deadline and a memory cap; a
//!   trap, an overrun or a bad answer never fails a request (the host's own
//!   round robin answers instead, and the fault is counted).
//! - [`PickerSlot`]: the serving picker of a backend group, hot-swapped through
//!   `arc-swap` with state handoff.
//! - [`conformance`]: the contract checks every picker component must pass
//!   (`veer plugin test`).
//! - [`scaffold`]: a new Rust plugin crate (`veer plugin new`).

pub mod bindings;
mod builtin;
pub mod compiler;
pub mod conformance;
mod conversions;
mod native;
mod picker;
mod runtime;
pub mod scaffold;
mod slot;
mod trial;

use std::fmt;
use std::path::PathBuf;

pub use builtin::NAMES as BUILTIN_NAMES;
pub use native::{NativePicker, NativePolicy};
pub use picker::{
    Choice, FaultKind, Handoff, HandoffResult, Picker, PickerHealth, PickerInfo, PickerStatsSnapshot, set_worker_index,
};
pub use runtime::{BackendLoad, Limits, NoLoad, PluginCode, PluginRuntime, RequestMeta, RouteNames, VirtualClock};
pub use slot::{PickerSlot, RequestPicker, SwapReport};
pub use trial::{ArmReport, Decider, Role, TrialEnd, TrialOutcome, TrialReport, TrialRule, TrialSpec, Verdict, judge};
pub use veer_core::{Backend, BackendEvent, BackendId, ErrorKind, HttpMethod, Membership, Outcome, PickContext};

/// What `veer __compile` runs: compiles the component on stdin for the
/// serving process that started it (see [`compiler`]).
pub fn serve_compile_child() -> Result<(), String> {
    let engine = runtime::engine().map_err(|e| e.to_string())?;
    compiler::serve_child(&engine)
}

/// Whether two parameter lists configure a picker the same way: the same
/// pairs, in any order.
pub fn same_params(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let sorted = |params: &[(String, String)]| {
        let mut params = params.to_vec();
        params.sort();
        params
    };
    a.len() == b.len() && sorted(a) == sorted(b)
}

/// Where a picker's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A plugin embedded in the binary, e.g. `builtin:p2c-ewma`.
    Builtin(String),
    /// A component file.
    Path(PathBuf),
    /// `native:round-robin`: the host's own round robin, no Wasm at all. For
    /// measuring what the Wasm boundary costs, and as a last-resort picker.
    NativeRoundRobin,
    /// A policy implemented in the host (not reachable from text: it is built
    /// in code, e.g. the scenario runner's oracle).
    Native(NativePicker),
}

impl PluginSource {
    /// Whether the picker runs in the host (no component to load).
    pub fn is_native(&self) -> bool {
        matches!(self, PluginSource::NativeRoundRobin | PluginSource::Native(_))
    }

    /// Parses `native:round-robin`, `builtin:NAME` or a file path.
    pub fn parse(text: &str) -> Self {
        if text == "native:round-robin" {
            return PluginSource::NativeRoundRobin;
        }
        match text.strip_prefix("builtin:") {
            Some(name) => PluginSource::Builtin(name.to_string()),
            None => PluginSource::Path(PathBuf::from(text)),
        }
    }
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Builtin(name) => write!(f, "builtin:{name}"),
            PluginSource::Path(path) => write!(f, "{}", path.display()),
            PluginSource::NativeRoundRobin => write!(f, "native:round-robin"),
            PluginSource::Native(native) => write!(f, "native:{}", native.name()),
        }
    }
}

/// Why a plugin could not be loaded, started or swapped in. In every case the
/// previously serving picker, if any, keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The Wasm engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// `builtin:NAME` names no built-in.
    #[error("unknown built-in picker '{name}' (built-ins: {known})")]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// The component file could not be read.
    #[error("cannot read plugin file {path}: {reason}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The bytes are not a component implementing `veer:picker/picker`.
    #[error("{origin} is not a valid picker component: {reason}")]
    Invalid {
        /// Where the bytes came from.
        origin: String,
        /// What the engine said.
        reason: String,
    },
    /// The component could not be instantiated.
    #[error("{origin} could not be instantiated: {reason}")]
    Instantiate {
        /// Where the code came from.
        origin: String,
        /// What went wrong.
        reason: String,
    },
    /// The plugin refused its parameters.
    #[error("picker '{plugin}' rejected its parameters: {message}")]
    Rejected {
        /// The plugin's name.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// A control call trapped or ran past its deadline.
    #[error("picker '{plugin}' failed in {call}: {reason}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The call.
        call: &'static str,
        /// What happened.
        reason: String,
    },
    /// The first pick did not produce a valid answer.
    #[error("picker '{plugin}' failed its smoke test: {reason}")]
    Smoke {
        /// The plugin's name.
        plugin: String,
        /// What was wrong.
        reason: String,
    },
}
