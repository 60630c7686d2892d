//! Crash, rebalance and (with a broker of its own) broker-restart scenarios on the real broker, short versions
//! for CI (RELIABILITY.md has the long ones and `scripts/chaos.sh`). Three `clickpath run <stage>` processes
//! share a group; some are SIGKILLed at random points and restarted. Their committed output must equal what
//! the pure core logic gives over the same input: nothing lost, and in exactly-once mode nothing duplicated.
//!
//! Needs `CLICKPATH_TEST_BROKERS`; skips without it unless `CLICKPATH_REQUIRE_BROKER=1`. The broker-restart
//! test also needs `CLICKPATH_CHAOS_BROKER_STOP` and `CLICKPATH_CHAOS_BROKER_START` (shell commands for a
//! broker this test may restart, which `scripts/chaos.sh` sets up) and skips without them.
#![cfg(unix)]

use clickpath_cli::chaos::procs::{BrokerControl, ChaosOptions, ChaosReport, run_chaos};
use clickpath_runtime::config::Guarantee;
use clickpath_stages::StageName;
use std::sync::Mutex;
use std::time::Duration;

/// Three stage processes per test: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn options(stage: StageName, guarantee: Guarantee, sessions: u64, kills: usize) -> ChaosOptions {
    ChaosOptions {
        stage,
        guarantee,
        instances: 3,
        sessions,
        kills,
        broker: None,
        rebalance: false,
        rate: 0.0,
        seed: 7,
        binary: env!("CARGO_BIN_EXE_clickpath").into(),
        work_dir: tempfile::tempdir().unwrap().keep(),
        timeout: Duration::from_secs(180),
    }
}

fn run(brokers: &str, opts: &ChaosOptions) -> ChaosReport {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = clickpath_testkit::test_config(brokers, "chaos");
    let report = run_chaos(&cfg, opts).unwrap();
    eprintln!("{}", report.render(opts.guarantee));
    eprintln!("instance logs: {}", opts.work_dir.display());
    let problems = report.problems(opts.guarantee);
    assert!(problems.is_empty(), "{}", report.render(opts.guarantee));
    assert!(report.expected > 0, "the run produced outputs to compare");
    // The instances' logs stay behind only when the run failed.
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    report
}

#[test]
fn exactly_once_sessionizer_loses_and_duplicates_nothing_under_sigkill() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let opts = options(StageName::Sessionizer, Guarantee::ExactlyOnce, 3_000, 3);
    let r = run(&brokers, &opts);
    assert_eq!(r.kills, 3);
    assert_eq!(r.duplicates, 0);
}

#[test]
fn at_least_once_cleaning_loses_nothing_under_sigkill() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let opts = options(StageName::Cleaning, Guarantee::AtLeastOnce, 3_000, 3);
    let r = run(&brokers, &opts);
    assert_eq!(r.kills, 3);
    assert_eq!(r.lost, 0);
}

#[test]
fn partitions_of_a_killed_instance_resume_on_the_others() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut opts = options(StageName::Sessionizer, Guarantee::ExactlyOnce, 2_000, 0);
    opts.rebalance = true;
    // Paced, so input keeps arriving on every partition while the group rebalances.
    opts.rate = 1_000.0;
    let r = run(&brokers, &opts);
    assert!(r.recovery_s.is_some(), "the rebalance was measured");
}

#[test]
fn stages_reconnect_after_a_broker_restart() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let (Ok(stop), Ok(start)) = (
        std::env::var("CLICKPATH_CHAOS_BROKER_STOP"),
        std::env::var("CLICKPATH_CHAOS_BROKER_START"),
    ) else {
        eprintln!(
            "skipping: CLICKPATH_CHAOS_BROKER_STOP/START are not set (scripts/chaos.sh runs this on its own broker)"
        );
        return;
    };
    // At-least-once: exactly-once stages still exit on the transaction errors a broker restart causes
    // (RELIABILITY.md, finding 2); `scripts/chaos.sh` runs both and fails on that until it is fixed.
    let mut opts = options(StageName::Sessionizer, Guarantee::AtLeastOnce, 3_000, 0);
    opts.broker = Some(BrokerControl {
        stop,
        start,
        down_s: 3.0,
    });
    opts.rate = 2_000.0;
    let r = run(&brokers, &opts);
    assert_eq!(r.broker_restarts.len(), 1);
    assert!(r.unexpected_exits.is_empty(), "{:?}", r.unexpected_exits);
}
