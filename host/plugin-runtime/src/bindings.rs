//! Host-side bindings generated from `wit/picker.wit`.
//!
//! The generated items carry the WIT's own documentation where it has some;
//! the glue around them (constructors, linker helpers) has none to give, so
//! the missing-docs lint is off for this module only.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "veer:picker/picker",
});
