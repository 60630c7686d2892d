//! Back-pressure on the real broker (RELIABILITY.md, scenario 5), short version for CI: a `clickpath run scorer`
//! process made ten times slower for a few seconds while feature vectors arrive faster than it then scores
//! them. Its peak memory must stay under the bound, its lag must grow well past its input buffer, and once the
//! slowdown ends it must catch up with a prediction for every input.
//!
//! Needs `CLICKPATH_TEST_BROKERS`; skips without it unless `CLICKPATH_REQUIRE_BROKER=1`.
#![cfg(unix)]

use clickpath_lab::chaos::backpressure::{BackpressureOptions, run_backpressure};
use std::time::Duration;

#[test]
fn a_slowed_scorer_keeps_its_memory_bounded_lags_and_recovers() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let cfg = clickpath_testkit::test_config(&brokers, "backpressure");
    let opts = BackpressureOptions {
        sessions: 1_500,
        rate: 4_000.0,
        slow_factor: 10.0,
        slow_for_s: 5.0,
        input_buffer_kbytes: 256,
        rss_limit_mib: 256.0,
        seed: 3,
        binary: env!("CARGO_BIN_EXE_clickpath").into(),
        work_dir: tempfile::tempdir().unwrap().keep(),
        timeout: Duration::from_secs(180),
    };
    let report = run_backpressure(&cfg, &opts).unwrap();
    eprintln!("{}", report.render());
    eprintln!("scorer log: {}", opts.work_dir.display());
    assert!(report.problems().is_empty(), "{}", report.render());
    assert!(report.inputs > 10_000, "{}", report.inputs);
    assert_eq!(report.lost, 0);
    // The lag rose while the scorer was slow and fell back to 0 after it.
    let peak = report
        .samples
        .iter()
        .max_by_key(|s| s.lag)
        .expect("samples");
    assert!(peak.t_s <= opts.slow_for_s + 2.0, "lag peaked at {peak:?}");
    assert_eq!(report.samples.last().map(|s| s.lag), Some(0));
    let _ = std::fs::remove_dir_all(&opts.work_dir);
}
