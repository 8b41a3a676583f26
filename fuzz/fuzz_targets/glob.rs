//! See `berth_fuzz::glob` (fuzz/src/lib.rs): the body, its oracle and its corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::glob(data));
