//! The stall check on the real broker: an upstream transaction left open holds the input partition's last
//! stable offset, so a `read_committed` stage polls and gets nothing while records wait. The stage must say
//! so (`/healthz`'s board fails and names the partition and the cause, `clickpath_stalled_partitions` counts
//! it), and recover by itself once the transaction ends.
//!
//! Needs `CLICKPATH_TEST_BROKERS`; skips without it unless `CLICKPATH_REQUIRE_BROKER=1`.

use clickpath_runtime::config::BusConfig;
use clickpath_runtime::{Context, RunnerEnv, Stage, StageError, run_stage};
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, EventType};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::{Duration, Instant};

fn test_brokers() -> Option<String> {
    match std::env::var("CLICKPATH_TEST_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("CLICKPATH_REQUIRE_BROKER").as_deref() != Ok("1"),
                "CLICKPATH_REQUIRE_BROKER=1 but CLICKPATH_TEST_BROKERS is not set"
            );
            eprintln!("skipping: CLICKPATH_TEST_BROKERS is not set");
            None
        }
    }
}

/// Forwards every event to `out`.
struct Forward {
    out: String,
}

impl Stage for Forward {
    type Input = ClickEvent;
    fn name(&self) -> &'static str {
        "forward"
    }
    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        ctx.emit(&self.out, &ev.user_id, &ev)
    }
}

fn send(producer: &BaseProducer, codec: &Codec, topic: &str, n: usize, tag: &str) {
    for i in 0..n {
        let ev = ClickEvent::new(
            format!("{tag}-{i}"),
            "u1",
            EventType::PageView,
            1_700_000_000_000 + i as i64,
        );
        let bytes = codec.encode(&ev).unwrap();
        producer
            .send(BaseRecord::to(topic).partition(0).key("u1").payload(&bytes))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_input_partition_held_by_an_open_transaction_is_reported_stalled_then_recovers() {
    let Some(brokers) = test_brokers() else {
        return;
    };
    let mut cfg = BusConfig::default();
    let prefix = format!(
        "test-stall-{}-{}.",
        std::process::id(),
        clickpath_runtime::runner::now_ms()
    );
    cfg.kafka.brokers = brokers.clone();
    cfg.kafka.group_prefix = format!("{prefix}group");
    cfg.topics = cfg.topics.with_prefix(&prefix);
    cfg.topics.partitions = 1;
    cfg.runtime.poll_timeout_ms = 50;
    cfg.runtime.stall_after_ms = 1_500;
    // Fetch state and last stable offset come from librdkafka's statistics: report them often.
    cfg.kafka
        .consumer_properties
        .insert("statistics.interval.ms".into(), "500".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))
        .unwrap();
    let input = cfg.topics.raw.clone();
    let codec = Codec::embedded();

    // An upstream producer's transaction, opened and left open: 1 record in it, 5 plain ones after it.
    let txn: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", format!("{prefix}upstream"))
        .set("transaction.timeout.ms", "120000")
        .create()
        .unwrap();
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    txn.begin_transaction().unwrap();
    send(&txn, &codec, &input, 1, "in-txn");
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    send(&plain, &codec, &input, 5, "plain");

    let env = RunnerEnv::new(cfg.clone(), codec.clone());
    let env2 = env.clone();
    let out = cfg.topics.clean.clone();
    let stage = std::thread::spawn(move || run_stage(Forward { out }, &[input], &env2));

    wait_for("the stall to be reported", Duration::from_secs(60), || {
        !env.health.is_live()
    });
    let board = env.health.describe();
    assert!(board.contains("stalled=1"), "{board}");
    assert!(board.contains("/0: "), "names the partition: {board}");
    assert!(board.contains("6 records waiting"), "{board}");
    assert!(
        board.contains("open transaction holds the last stable offset at 0"),
        "names the cause: {board}"
    );
    let metrics = env.metrics.encode();
    assert!(
        metrics.contains("clickpath_stalled_partitions{stage=\"forward\"} 1"),
        "{metrics}"
    );

    // The transaction ends: everything flows and the stage is healthy again.
    txn.commit_transaction(Duration::from_secs(30)).unwrap();
    wait_for(
        "the stage to consume all 6 records",
        Duration::from_secs(60),
        || {
            env.metrics.encode().contains(&format!(
                "clickpath_records_in_total{{stage=\"forward\",topic=\"{}\"}} 6",
                cfg.topics.raw
            ))
        },
    );
    wait_for("the stall to clear", Duration::from_secs(30), || {
        env.health.is_live()
    });
    assert!(
        env.metrics
            .encode()
            .contains("clickpath_stalled_partitions{stage=\"forward\"} 0")
    );
    env.shutdown.trigger();
    let summary = stage.join().unwrap().unwrap();
    assert_eq!(summary.records_in, 6);
}
