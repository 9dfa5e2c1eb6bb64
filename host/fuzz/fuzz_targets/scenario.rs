//! Fuzz target: see `veer::fuzzing::scenario`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veer::fuzzing::scenario(data));
