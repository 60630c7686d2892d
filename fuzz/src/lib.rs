//! The fuzz targets as plain functions, so the libFuzzer binaries and the stable-toolchain smoke test
//! (`crates/lab/tests/fuzz_smoke.rs`) run the same checks.

pub mod targets;
