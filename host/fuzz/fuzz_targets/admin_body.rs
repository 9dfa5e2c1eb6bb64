//! Fuzz target: see `veer::fuzzing::admin_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veer::fuzzing::admin_body(data));
