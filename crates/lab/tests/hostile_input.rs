//! Hostile input on the real broker (RELIABILITY.md, "Hostile input"): 10 000 records built to break a
//! consumer, interleaved with valid ones, through the cleaning stage. Nothing crashes, every hostile
//! record is dead-lettered with the reason its case expects, every valid record is cleaned.
//! `clickpath-lab chaos hostile --records 100000` runs the long version.
//!
//! Needs `CLICKPATH_TEST_BROKERS`; skips without it unless `CLICKPATH_REQUIRE_BROKER=1`.

use clickpath_lab::chaos::hostile::{CASES, HostileOptions, generate, run_hostile};
use clickpath_schema::codec::Codec;
use std::time::Duration;

#[test]
fn hostile_records_are_dead_lettered_and_valid_ones_cleaned() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut cfg = clickpath_testkit::test_config(&brokers, "hostile");
    // Small enough that an `oversized_record` case still fits the broker's message size limit.
    cfg.runtime.max_record_bytes = 64 * 1024;
    let opts = HostileOptions::for_config(&cfg, 10_000, 17);
    let records = generate(&opts, &Codec::embedded());
    let report = run_hostile(&cfg, &records, Duration::from_secs(120)).unwrap();
    eprintln!("{}", report.render());
    assert!(report.problems().is_empty(), "{}", report.render());
    assert_eq!(report.stage_error, None);
    assert_eq!(report.valid, 2_500);
    assert_eq!(report.produced, 12_500);
    assert_eq!(
        report.cases.len(),
        CASES.len(),
        "every hostile case was sent"
    );
    for (case, (n, ok)) in &report.cases {
        assert_eq!(
            n, ok,
            "{case}: {ok} of {n} dead-lettered with the expected kind"
        );
    }
}
