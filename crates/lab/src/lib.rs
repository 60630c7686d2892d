//! `clickpath-lab`: the harnesses that measure clickpath and try to break it, on a real broker.
//! They are developer and operator tools, not part of what runs beside the bus, so they live in
//! their own binary: the `clickpath` binary stays the deployable one, and the chaos harness
//! starts, kills and restarts a given `clickpath` binary by path, the way it is deployed.
//!
//! - [`bench`]: end-to-end load test (pass-through baseline, pipeline at maximum and fixed rates);
//! - [`bench_restore`]: the sessionizer's state restore from its changelog;
//! - [`bench_scorer`]: the sequence model's online step per batch size, CPU or CUDA;
//! - [`chaos`]: hostile input, SIGKILLs, broker restarts, rebalance, back-pressure;
//! - [`evaluate_detector`]: the detector's precision, recall and latency on labelled scenarios.

pub mod bench;
pub mod bench_restore;
pub mod bench_scorer;
pub mod chaos;
pub mod evaluate_detector;

use std::path::PathBuf;

/// The `clickpath` binary the chaos harness runs: `explicit` when given, else the one beside
/// this executable (`target/<profile>/clickpath` next to `clickpath-lab`).
pub fn clickpath_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(
            path.is_file(),
            "--clickpath {}: no such file",
            path.display()
        );
        return Ok(path);
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name(format!("clickpath{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        beside.is_file(),
        "no clickpath binary beside {} (build it with `cargo build --bin clickpath`, or pass --clickpath PATH)",
        me.display()
    );
    Ok(beside)
}
