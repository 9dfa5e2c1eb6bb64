//! The built-in pickers, compiled to components by `build.rs` and embedded.

/// Names of the built-in pickers, as used after `builtin:`.
pub const NAMES: &[&str] = &["round-robin", "least-conn", "weighted-rr", "p2c-ewma", "q-learning"];

macro_rules! embedded {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// The component bytes of built-in `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "round-robin" => embedded!("veer_plugin_round_robin.wasm"),
        "least-conn" => return None,  // TEMP
        "weighted-rr" => return None, // TEMP
        "p2c-ewma" => return None,    // TEMP
        "q-learning" => return None,  // TEMP
        _ => return None,
    })
}
