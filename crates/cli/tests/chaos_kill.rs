//! Crash, rebalance and (with a broker of its own) broker-restart scenarios on the real broker, short versions
//! for CI (RELIABILITY.md has the long ones and `scripts/chaos.sh`). Three `clickpath run <stage>` processes
//! share a group; some are SIGKILLed at random points and restarted. Their committed output must equal what
//! the pure core logic gives over the same input: nothing lost, and in exactly-once mode nothing duplicated.
//!
//! Needs `CLICKPATH_TEST_BROKERS`; skips without it unless `CLICKPATH_REQUIRE_BROKER=1`. The broker-restart
//! tests also need `CLICKPATH_CHAOS_BROKER_STOP` and `CLICKPATH_CHAOS_BROKER_START`: shell commands that
//! stop and start that broker (`scripts/test.sh` sets them for the broker it runs; every test here holds
//! one lock, so nothing else of this binary uses the broker while it restarts).
#![cfg(unix)]

use clickpath_lab::chaos::procs::{BrokerControl, ChaosOptions, ChaosReport, Target, run_chaos};
use clickpath_runtime::config::Guarantee;
use clickpath_stages::StageName;
use std::sync::Mutex;
use std::time::Duration;

/// Three stage processes per test: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn options(stage: StageName, guarantee: Guarantee, sessions: u64, kills: usize) -> ChaosOptions {
    target_options(Target::Stage(stage), guarantee, sessions, kills)
}

fn target_options(
    target: Target,
    guarantee: Guarantee,
    sessions: u64,
    kills: usize,
) -> ChaosOptions {
    ChaosOptions {
        target,
        guarantee,
        instances: 3,
        sessions,
        kills,
        broker: None,
        rebalance: false,
        add_instance: false,
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

/// The chained pipeline (`run all`): every output topic equal, record by record, to an uninterrupted
/// in-process chain over the same raw input, with instances SIGKILLed and restarted.
#[test]
fn exactly_once_chain_outputs_equal_an_uninterrupted_run_under_sigkill() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let opts = target_options(Target::Chain, Guarantee::ExactlyOnce, 2_000, 3);
    let r = run(&brokers, &opts);
    assert_eq!(r.kills, 3);
    assert_eq!((r.lost, r.unexpected, r.duplicates), (0, 0, 0));
    assert_eq!(
        r.per_topic.len(),
        4,
        "sessions, predictions, alerts, analytics"
    );
    assert!(
        r.per_topic.values().all(|[expected, ..]| *expected > 0),
        "{:?}",
        r.per_topic
    );
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

/// The chained pipeline while the group changes: one instance leaves for good after a third of the
/// input and a new one joins after two thirds; every output equal, record by record, to an
/// uninterrupted run (state handed over through the changelog both times).
#[test]
fn exactly_once_chain_outputs_equal_an_uninterrupted_run_when_instances_leave_and_join() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut opts = target_options(Target::Chain, Guarantee::ExactlyOnce, 2_000, 0);
    opts.rebalance = true;
    opts.add_instance = true;
    opts.rate = 1_000.0;
    let r = run(&brokers, &opts);
    assert!(r.recovery_s.is_some(), "the rebalance was measured");
    assert_eq!(r.instances_added, 1);
    assert_eq!((r.lost, r.unexpected, r.duplicates), (0, 0, 0));
    assert_eq!(r.per_topic.len(), 4, "{:?}", r.per_topic);
}

/// The broker's stop and start commands, from `CLICKPATH_CHAOS_BROKER_STOP/START` (`scripts/test.sh` points
/// them at the test broker, `scripts/chaos.sh` at a broker of its own); `None` (skip) without them, unless
/// `CLICKPATH_REQUIRE_BROKER=1`.
fn broker_control(at: Vec<f64>, kill_one: bool) -> Option<BrokerControl> {
    match (
        std::env::var("CLICKPATH_CHAOS_BROKER_STOP"),
        std::env::var("CLICKPATH_CHAOS_BROKER_START"),
    ) {
        (Ok(stop), Ok(start)) => Some(BrokerControl {
            stop,
            start,
            down_s: 3.0,
            at,
            kill_one,
        }),
        _ => {
            assert!(
                std::env::var("CLICKPATH_REQUIRE_BROKER").as_deref() != Ok("1"),
                "CLICKPATH_REQUIRE_BROKER=1 but CLICKPATH_CHAOS_BROKER_STOP/START are not set (scripts/test.sh sets them)"
            );
            eprintln!("skipping: CLICKPATH_CHAOS_BROKER_STOP/START are not set");
            None
        }
    }
}

/// A sessionizer run with the broker restarted half-way (`kill_one`: an instance SIGKILLed just before the stop
/// and started again while the broker is down, so it joins and restores its state as the broker comes back).
/// Every instance must carry on by itself: no exit, nothing lost.
fn broker_restart(guarantee: Guarantee, kill_one: bool) -> Option<ChaosReport> {
    broker_restart_of(Target::Stage(StageName::Sessionizer), guarantee, kill_one)
}

/// [`broker_restart`] for any target.
fn broker_restart_of(target: Target, guarantee: Guarantee, kill_one: bool) -> Option<ChaosReport> {
    let brokers = clickpath_testkit::test_brokers()?;
    let broker = broker_control(vec![0.5], kill_one)?;
    let mut opts = target_options(target, guarantee, 2_000, 0);
    opts.broker = Some(broker);
    opts.rate = 2_000.0;
    let r = run(&brokers, &opts);
    assert_eq!(r.broker_restarts.len(), 1);
    assert!(r.unexpected_exits.is_empty(), "{:?}", r.unexpected_exits);
    assert_eq!(r.lost, 0);
    Some(r)
}

#[test]
fn exactly_once_stages_carry_on_after_a_broker_restart() {
    if let Some(r) = broker_restart(Guarantee::ExactlyOnce, true) {
        assert_eq!(r.duplicates, 0);
    }
}

#[test]
fn at_least_once_stages_carry_on_after_a_broker_restart() {
    broker_restart(Guarantee::AtLeastOnce, false);
}

/// The chained pipeline through a broker restart, with an instance SIGKILLed just before it: every
/// output topic still equal, record by record, to an uninterrupted run.
#[test]
fn exactly_once_chain_outputs_equal_an_uninterrupted_run_across_a_broker_restart() {
    if let Some(r) = broker_restart_of(Target::Chain, Guarantee::ExactlyOnce, true) {
        assert_eq!((r.lost, r.unexpected, r.duplicates), (0, 0, 0));
        assert_eq!(r.per_topic.len(), 4, "{:?}", r.per_topic);
    }
}
