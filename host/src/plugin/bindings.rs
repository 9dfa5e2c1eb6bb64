//! Host-side bindings generated from `wit/picker.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "veer:picker/picker",
});
