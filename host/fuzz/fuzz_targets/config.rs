//! Fuzz target: see `veer::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veer::fuzzing::config(data));
