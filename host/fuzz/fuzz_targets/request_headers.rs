//! Fuzz target: see `veer::fuzzing::request_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veer::fuzzing::request_headers(data));
