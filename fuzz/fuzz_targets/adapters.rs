//! libFuzzer entry point; the checks live in `clickpath_fuzz::targets::adapters` (shared with the stable smoke test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clickpath_fuzz::targets::adapters(data));
