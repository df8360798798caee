//! Fuzz target `request`: see `eddy_fuzz::request` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzz::request(data));
