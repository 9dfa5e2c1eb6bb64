//! The built-in pickers, compiled to components by `build.rs` and embedded.

/// Names of the built-in pickers, as used after `builtin:`.
pub const NAMES: &[&str] = &[
    "round-robin",
    "least-conn",
    "weighted-rr",
    "p2c-ewma",
    "q-learning",
    "consistent-hash",
    "least-response-time",
    "prequal",
];

macro_rules! embedded {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// The component bytes of built-in `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "round-robin" => embedded!("veer_plugin_round_robin.wasm"),
        "least-conn" => embedded!("veer_plugin_least_conn.wasm"),
        "weighted-rr" => embedded!("veer_plugin_weighted_rr.wasm"),
        "p2c-ewma" => embedded!("veer_plugin_p2c_ewma.wasm"),
        "q-learning" => embedded!("veer_plugin_q_learning.wasm"),
        "consistent-hash" => embedded!("veer_plugin_consistent_hash.wasm"),
        "least-response-time" => embedded!("veer_plugin_least_response_time.wasm"),
        "prequal" => embedded!("veer_plugin_prequal.wasm"),
        _ => return None,
    })
}
