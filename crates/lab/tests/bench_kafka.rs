//! `clickpath-lab bench`, tiny, on the real broker: every phase drains and its report is consistent,
//! in both topologies. No timing is asserted, only that the figures exist and the counts add up.
//!
//! Needs `CLICKPATH_TEST_BROKERS`; skips without it unless `CLICKPATH_REQUIRE_BROKER=1`.

use clickpath_lab::bench::{BenchArgs, run_bench};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::config::TopologyMode;

#[test]
fn a_small_bench_reports_sane_figures() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut cfg = ClickpathConfig::default();
    cfg.runtime.poll_timeout_ms = 50;
    cfg.topology.mode = TopologyMode::PerStage;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut args = BenchArgs::small(&brokers, 2_000);
    args.json = Some(json.clone());
    let trace = dir.path().join("trace.csv");
    args.trace = Some(trace.clone());
    args.hops = true;
    args.fixed_seconds = 1.0;
    let report = run_bench(cfg, &args, false).expect("bench runs");

    let generated = report.generated.events + report.generated.malformed;
    assert_eq!(generated, 2_000);
    assert_eq!(
        report.phases.len(),
        3,
        "pass-through, max rate, one fixed rate"
    );
    for p in &report.phases {
        assert!(p.complete, "{} did not drain: {p:?}", p.kind);
        assert!(
            p.records_sent > 0 && p.throughput > 0.0 && p.seconds > 0.0,
            "{p:?}"
        );
        assert!(p.peak_rss_bytes > 0);
        assert_eq!(p.outputs_read, p.outputs_expected, "{p:?}");
        assert!(p.latency.samples > 0);
        assert!(p.latency.p50_ms <= p.latency.p99_ms && p.latency.p99_ms <= p.latency.p999_ms);
        assert!(p.latency.p999_ms <= p.latency.max_ms);
    }
    let pass = &report.phases[0];
    assert_eq!(pass.kind, "pass-through");
    assert_eq!(pass.records_sent, generated);
    assert_eq!(pass.outputs_read, generated);
    assert_eq!(pass.stage_records_in["pass-through"], generated);
    // Written to the input and the output topic, read by the loop and by the harness.
    assert_eq!(
        (pass.broker_writes, pass.broker_reads),
        (2 * generated, 2 * generated)
    );

    let max = &report.phases[1];
    assert_eq!((max.kind.as_str(), max.target_rate), ("pipeline", None));
    assert_eq!(max.records_sent, generated);
    // Every record reached cleaning; every cleaned event was scored once.
    assert_eq!(max.stage_records_in["cleaning"], generated);
    assert_eq!(max.stage_records_in["scorer"], max.outputs_read);
    assert_eq!(max.stage_records_in["windower"], max.outputs_read);
    assert!(max.outputs_read > generated / 2 && max.outputs_read <= generated);
    // Raw, clean, features and predictions at least, each read at least once, clean by four stages.
    assert!(
        max.broker_writes >= generated + 3 * max.outputs_read,
        "{max:?}"
    );
    assert!(
        max.broker_reads >= generated + 6 * max.outputs_read,
        "{max:?}"
    );
    // Each scored event id measured once (duplicates are dropped by cleaning).
    assert_eq!(max.latency.samples, max.outputs_read);
    // The hops on the way: every scored event was seen on clean and on features first, and the last hop is
    // the output's own latency.
    assert!(pass.hops.is_empty());
    let roles: Vec<&str> = max.hops.iter().map(|h| h.topic.as_str()).collect();
    assert_eq!(roles, ["clean", "features", "predictions"]);
    assert_eq!(max.hops[2].latency, max.latency);
    assert_eq!(max.hops[1].latency.samples, max.outputs_read);
    assert!(max.hops[0].latency.samples >= max.outputs_read);

    let fixed = &report.phases[2];
    assert!(fixed.target_rate.is_some_and(|r| r > 0.0));
    assert!(report.pipeline_to_pass_through > 0.0);
    assert!(report.state.changelog_users > 0 && report.state.bytes_per_user > 0.0);

    let text = report.render();
    println!("{text}");
    assert!(text.contains("pass-through max rate") && text.contains("pipeline max rate"));
    let parsed: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(parsed["phases"].as_array().map(Vec::len), Some(3));
    assert!(text.contains("| pipeline max rate | features |"), "{text}");
    // Per-stage state is restored stage by stage; only a chained run times the whole restore.
    assert!(report.state.restore.is_none() && report.state.restore_compacted.is_none());

    // One trace row per latency sample of every phase and hop.
    let rows = std::fs::read_to_string(&trace).unwrap();
    let mut lines = rows.lines();
    assert_eq!(lines.next(), Some("phase,topic,sent_ms,latency_ms"));
    let samples: u64 = report
        .phases
        .iter()
        .map(|p| {
            if p.hops.is_empty() {
                p.latency.samples
            } else {
                p.hops.iter().map(|h| h.latency.samples).sum()
            }
        })
        .sum();
    assert_eq!(lines.clone().count() as u64, samples);
    assert!(lines.any(|l| l.starts_with("1:pipeline max rate,features,")));
}

#[test]
fn the_chained_pipeline_reads_the_broker_once_per_input_record() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut cfg = ClickpathConfig::default();
    cfg.runtime.poll_timeout_ms = 50;
    cfg.processing.guarantee = clickpath_runtime::config::Guarantee::ExactlyOnce;
    let mut args = BenchArgs::small(&brokers, 2_000);
    args.no_fixed = true;
    let report = run_bench(cfg, &args, false).expect("bench runs");
    let generated = report.generated.events + report.generated.malformed;
    let max = &report.phases[1];
    assert_eq!((max.kind.as_str(), max.target_rate), ("chain", None));
    assert!(max.complete, "{max:?}");
    assert_eq!(max.outputs_read, max.outputs_expected, "{max:?}");
    // Every record reached cleaning; every cleaned event was handed to the windower and scored once.
    assert_eq!(max.stage_records_in["cleaning"], generated);
    assert_eq!(max.stage_records_in["windower"], max.outputs_read);
    assert_eq!(max.stage_records_in["scorer"], max.outputs_read);
    assert!(max.outputs_read > generated / 2 && max.outputs_read <= generated);
    // The chain reads the raw topic once and the harness the predictions: nothing else is read.
    assert_eq!(max.broker_reads, generated + max.outputs_read, "{max:?}");
    // Raw and predictions, changelog records and the other outputs, but no clean or feature topic.
    assert!(max.broker_writes >= generated + max.outputs_read, "{max:?}");
    assert!(
        max.broker_writes < generated + 3 * max.outputs_read,
        "{max:?}"
    );
    // The state report splits the chain's changelog by stage.
    for stage in [
        "cleaning",
        "sessionizer",
        "windower",
        "detector",
        "analytics",
    ] {
        assert!(
            report
                .state
                .changelogs
                .get(stage)
                .is_some_and(|c| c.keys > 0),
            "{stage}: {:?}",
            report.state.changelogs
        );
    }
    assert!(report.state.changelog_users > 0);
    // A fresh chain took every stage's state back from the changelog: at least one record per
    // live key of every stage, and the sessionizer's users counted.
    let restore = report.state.restore.expect("the chain's restore is timed");
    let live: u64 = report.state.changelogs.values().map(|c| c.keys).sum();
    assert_eq!(restore.users, report.state.changelog_users);
    assert!(restore.records >= live, "{restore:?} < {live} live keys");
    assert!(restore.bytes > 0 && restore.seconds > 0.0 && restore.users_per_second > 0.0);
    // After compaction: one record per live key (the partitions' own records besides), never more
    // than the log as the run left it.
    let compacted = report
        .state
        .restore_compacted
        .expect("the compacted restore is timed");
    assert_eq!(compacted.users, restore.users);
    assert!(
        compacted.records >= live && compacted.records <= restore.records,
        "{compacted:?} against {live} live keys and {restore:?}"
    );
    assert!(compacted.bytes <= restore.bytes);
    let text = report.render();
    assert!(text.contains("chain max rate"));
    assert!(text.contains("restore of every stage's state"), "{text}");
    assert!(report.kafka_streams.is_none());
}

/// The Kafka Streams peer (`scripts/streams-peer.sh`: Maven fetches kafka-streams beside the broker)
/// runs on the same records as the chain, commits every input offset, writes its changelogs, and is
/// compared per CPU second.
#[test]
fn the_kafka_streams_peer_processes_the_same_records_as_the_chain() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let launcher =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/streams-peer.sh");
    let mut cfg = ClickpathConfig::default();
    cfg.runtime.poll_timeout_ms = 50;
    cfg.processing.guarantee = clickpath_runtime::config::Guarantee::ExactlyOnce;
    let mut args = BenchArgs::small(&brokers, 2_000);
    args.no_fixed = true;
    args.kafka_streams = Some(launcher);
    args.kafka_streams_store = "memory".into();
    let report = run_bench(cfg, &args, false).expect("bench runs with the peer");
    let generated = report.generated.events + report.generated.malformed;
    assert_eq!(report.phases.len(), 3, "pass-through, chain, peer");
    let peer = &report.phases[2];
    assert_eq!(peer.kind, "kafka-streams");
    assert!(peer.complete, "{peer:?}");
    assert_eq!(peer.records_sent, generated);
    // Done means every input offset committed (with exactly-once: with its outputs and changelogs).
    assert_eq!(peer.stage_records_in["kafka-streams"], generated);
    // The input, closed sessions and window counts, and its stores' changelogs.
    assert!(
        peer.broker_writes > 2 * generated,
        "input + window counts + changelogs: {peer:?}"
    );
    assert!(peer.outputs_read > 0, "no session closed: {peer:?}");
    assert!(
        peer.external_cpu_seconds.is_some_and(|c| c > 0.0),
        "{peer:?}"
    );
    assert!(peer.peak_rss_bytes > 0);
    let k = report.kafka_streams.expect("a comparison");
    assert!(k.throughput_ratio > 0.0 && k.per_cpu_second_ratio > 0.0);
    assert!(!k.peer_sessions_only);
    let text = report.render();
    assert!(text.contains("| kafka-streams max rate |"), "{text}");
    assert!(text.contains("against Kafka Streams"), "{text}");
}
