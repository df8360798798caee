//! Fuzz target `frame`: see `eddy_fuzz::frame` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzz::frame(data));
