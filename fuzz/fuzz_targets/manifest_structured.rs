//! See `berth_fuzz::manifest_structured` (fuzz/src/lib.rs): the body, its oracle and its corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::manifest_structured(data));
