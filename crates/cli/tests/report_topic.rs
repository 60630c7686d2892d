//! `clickpath report --topic` on the real broker: a topic of click events gives the same analysis
//! as the file it was produced from; `--max-records` limits the read; the analytics topic's rows
//! are merged over instances, with replays replacing instead of adding.

use clickpath_cli::pipeline::{join_stages, spawn_stages};
use clickpath_cli::produce::EventProducer;
use clickpath_core::analytics::RollingFunnel;
use clickpath_schema::FunnelAggregate;
use clickpath_schema::codec::Codec;
use clickpath_stages::ClickpathConfig;
use clickpath_stages::StageName;
use clickpath_testkit::{test_brokers, test_config};
use std::path::Path;

/// Every event of a generated `events.jsonl` (the generator writes no bad lines).
fn read_jsonl(path: &Path) -> Vec<clickpath_schema::ClickEvent> {
    clickpath_adapters::read(clickpath_adapters::Format::Jsonl, path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
use std::process::Command;

fn clickpath(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clickpath"))
        .args(args)
        .env_remove("CLICKPATH_CONFIG")
        .output()
        .expect("clickpath runs")
}

/// A config file naming the test's brokers and topics, for the binary.
fn write_config(cfg: &ClickpathConfig, dir: &Path) -> String {
    let t = &cfg.topics;
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_prefix = \"{}\"\n[topics]\nraw = \"{}\"\nclean = \"{}\"\nsessions = \"{}\"\n\
         features = \"{}\"\npredictions = \"{}\"\nalerts = \"{}\"\ndead_letters = \"{}\"\nlate_events = \"{}\"\n\
         analytics = \"{}\"\n",
        cfg.kafka.brokers,
        cfg.kafka.group_prefix,
        t.raw,
        t.clean,
        t.sessions,
        t.features,
        t.predictions,
        t.alerts,
        t.dead_letters,
        t.late_events,
        t.analytics
    );
    let path = dir.join("clickpath.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn create_topics(cfg: &ClickpathConfig) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(clickpath_runtime::kafka::create_topics(cfg, &cfg.topics))
        .unwrap();
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn report_from_the_clean_topic_equals_report_from_the_file() {
    let Some(brokers) = test_brokers() else {
        return;
    };
    let cfg = test_config(&brokers, "report-topic");
    create_topics(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(&cfg, d);
    let gen_out = clickpath(&[
        "generate",
        "--out",
        d.to_str().unwrap(),
        "--sessions",
        "200",
        "--seed",
        "11",
    ]);
    assert!(gen_out.status.success(), "{gen_out:?}");
    let events_file = d.join("events.jsonl");
    let events = read_jsonl(&events_file);
    let mut producer = EventProducer::new(&cfg, Codec::embedded(), &cfg.topics.clean, 0.0).unwrap();
    for e in &events {
        producer.send_event(e).unwrap();
    }
    producer.flush().unwrap();

    let from_file = d.join("file.json");
    let out = clickpath(&[
        "report",
        "--input",
        events_file.to_str().unwrap(),
        "--out",
        d.join("file.html").to_str().unwrap(),
        "--json",
        from_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let from_topic = d.join("topic.json");
    let out = clickpath(&[
        "--config",
        &config,
        "report",
        "--topic",
        "clean",
        "--out",
        d.join("topic.html").to_str().unwrap(),
        "--json",
        from_topic.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("report written"), "{stdout}");
    let (a, b) = (json(&from_file), json(&from_topic));
    assert_eq!(b["events"], events.len() as u64);
    // The topic holds the same events in another order (three partitions): the analysis sorts
    // each unit's events by time, so everything agrees.
    assert_eq!(a["funnel"], b["funnel"]);
    assert_eq!(a["units"], b["units"]);
    assert_eq!(a["paths"]["units"], b["paths"]["units"]);
    assert_eq!(a["paths"]["converted"], b["paths"]["converted"]);

    let limited = d.join("limited.json");
    let out = clickpath(&[
        "--config",
        &config,
        "report",
        "--topic",
        &cfg.topics.clean,
        "--max-records",
        "25",
        "--out",
        d.join("limited.html").to_str().unwrap(),
        "--json",
        limited.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&limited)["events"], 25);

    // Records written before --since are skipped: nothing is newer than a time far ahead.
    let out = clickpath(&[
        "--config",
        &config,
        "report",
        "--topic",
        "clean",
        "--since",
        "2999-01-01T00:00:00Z",
        "--out",
        d.join("none.html").to_str().unwrap(),
        "--json",
        d.join("none.json").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&d.join("none.json"))["events"], 0);

    let out = clickpath(&[
        "--config",
        &config,
        "report",
        "--topic",
        "no-such-topic-here",
        "--out",
        d.join("x.html").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );
}

fn row(
    instance: &str,
    bucket: i64,
    segment: &str,
    value: &str,
    uniques: [i64; 3],
) -> FunnelAggregate {
    FunnelAggregate {
        instance: instance.into(),
        bucket_start: bucket,
        bucket_ms: 3_600_000,
        steps: vec![
            "PRODUCT_VIEW".into(),
            "ADD_TO_CART".into(),
            "PURCHASE".into(),
        ],
        funnel_order: "ordered".into(),
        window_ms: 3_600_000,
        segment: segment.into(),
        segment_value: value.into(),
        uniques: uniques.to_vec(),
        totals: uniques.iter().map(|u| u + 1).collect(),
        median_step_ms: vec![Some(60_000), None],
        p90_step_ms: vec![Some(90_000), None],
        median_convert_ms: None,
        p90_convert_ms: None,
        // Rows as version 1 wrote them: merged by instance.
        partition: FunnelAggregate::ALL_PARTITIONS,
    }
}

#[test]
fn report_from_the_analytics_topic_merges_instances() {
    let Some(brokers) = test_brokers() else {
        return;
    };
    let cfg = test_config(&brokers, "report-analytics");
    create_topics(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(&cfg, d);
    let codec = Codec::embedded();
    let mut producer = EventProducer::new(&cfg, codec.clone(), &cfg.topics.analytics, 0.0).unwrap();
    let rows = [
        row("pod-0", 0, "all", "", [10, 4, 2]),
        row("pod-1", 0, "all", "", [6, 3, 1]),
        row("pod-0", 0, "channel", "email", [4, 2, 1]),
        row("pod-1", 0, "channel", "email", [1, 1, 1]),
        row("pod-0", 3_600_000, "all", "", [5, 1, 0]),
        // A replay after a restart: replaces pod-1's first row.
        row("pod-1", 0, "all", "", [6, 3, 1]),
    ];
    for r in &rows {
        producer
            .send_raw(r.key().as_bytes(), &codec.encode(r).unwrap())
            .unwrap();
    }
    producer.flush().unwrap();
    let out_json = d.join("agg.json");
    let html = d.join("agg.html");
    let out = clickpath(&[
        "--config",
        &config,
        "report",
        "--topic",
        "analytics",
        "--out",
        html.to_str().unwrap(),
        "--json",
        out_json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("1 replayed rows replaced"), "{stdout}");
    let j = json(&out_json);
    assert_eq!(j["overall"]["uniques"], serde_json::json!([21, 8, 3]));
    let first = &j["rows"][0];
    assert_eq!(first["parts"], 2);
    assert_eq!(first["counts"]["uniques"], serde_json::json!([16, 7, 3]));
    let email = j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["segment_value"] == "email")
        .unwrap();
    assert_eq!(email["counts"]["uniques"], serde_json::json!([5, 3, 2]));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("chart-funnel") && page.contains("<svg"));
}

/// The analytics stage on the real broker, read back with `report --topic analytics`, counts what
/// the in-process rolling funnel counts on the same events, the partitions' rows added (a lateness longer than the data keeps
/// every bucket open until the drain publishes them, so arrival order cannot matter).
#[test]
fn analytics_stage_rows_equal_the_reference_funnel() {
    let Some(brokers) = test_brokers() else {
        return;
    };
    let mut cfg = test_config(&brokers, "analytics-stage");
    cfg.analytics.lateness_ms = 365 * 86_400_000;
    cfg.analytics.publish_interval_ms = 100;
    cfg.kafka.instance_id = "only".into();
    create_topics(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(&cfg, d);
    let gen_out = clickpath(&[
        "generate",
        "--out",
        d.to_str().unwrap(),
        "--sessions",
        "300",
        "--seed",
        "5",
    ]);
    assert!(gen_out.status.success(), "{gen_out:?}");
    let events = read_jsonl(&d.join("events.jsonl"));
    let mut producer = EventProducer::new(&cfg, Codec::embedded(), &cfg.topics.clean, 0.0).unwrap();
    for e in &events {
        producer.send_event(e).unwrap();
    }
    producer.flush().unwrap();

    let env = cfg.runner_env(Codec::embedded());
    let running = spawn_stages(&[StageName::Analytics], &cfg, &env, true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.metrics.records_in_total("analytics", &cfg.topics.clean) < events.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stage did not read every event"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    env.shutdown.trigger();
    join_stages(running).unwrap();

    let out_json = d.join("stage.json");
    let out = clickpath(&[
        "--config",
        &config,
        "report",
        "--topic",
        "analytics",
        "--out",
        d.join("stage.html").to_str().unwrap(),
        "--json",
        out_json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let got = json(&out_json);

    let mut reference = RollingFunnel::new(
        cfg.analytics.funnel_spec().unwrap(),
        cfg.analytics.max_events_per_unit,
    );
    for e in &events {
        reference.push(e);
    }
    let buckets = reference.flush();
    assert!(
        buckets.len() > 1,
        "the generated data spans several buckets"
    );
    // The stage counts each input partition apart: per bucket, the partitions with an attempt in it.
    let partitions = cfg.topics.partitions as usize;
    let mut parts_per_bucket: std::collections::BTreeMap<i64, usize> = Default::default();
    for p in 0..partitions {
        let mut part = RollingFunnel::new(
            cfg.analytics.funnel_spec().unwrap(),
            cfg.analytics.max_events_per_unit,
        );
        for e in events.iter().filter(|e| {
            clickpath_runtime::query::partition_for_key(e.user_id.as_bytes(), partitions)
                == p as i32
        }) {
            part.push(e);
        }
        for b in part.flush() {
            *parts_per_bucket.entry(b.start_ms).or_default() += 1;
        }
    }
    let rows: Vec<&serde_json::Value> = got["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["segment"] == "all")
        .collect();
    assert_eq!(rows.len(), buckets.len());
    for (row, b) in rows.iter().zip(&buckets) {
        assert_eq!(row["bucket_start"], b.start_ms);
        let parts = parts_per_bucket[&b.start_ms];
        assert_eq!(row["parts"], parts);
        assert_eq!(
            row["counts"]["uniques"],
            serde_json::json!(b.counts.uniques),
            "bucket {}",
            b.start_ms
        );
        assert_eq!(
            row["counts"]["totals"],
            serde_json::json!(b.counts.totals),
            "bucket {}",
            b.start_ms
        );
        // Medians of several partitions do not merge; one partition's is the bucket's.
        if parts == 1 {
            assert_eq!(
                row["counts"]["time_to_convert"]["median_ms"],
                serde_json::json!(b.counts.time_to_convert.median_ms)
            );
        }
    }
    // Segments too: every channel value of every bucket.
    let channels = got["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["segment"] == "channel")
        .count();
    let want: usize = buckets
        .iter()
        .map(|b| {
            b.segments
                .iter()
                .filter(|s| s.segment.name() == "channel")
                .map(|s| s.values.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(channels, want);
}
