//! Fuzz target `batch`: see `eddy_fuzz::batch` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzz::batch(data));
