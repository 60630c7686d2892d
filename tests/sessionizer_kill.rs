//! Proof on the real broker: three sessionizer instances in one group, killed with SIGKILL at random points
//! while events flow, restarted, and their committed output compared with the pure core sessionizer run
//! uninterrupted over the same partitions. Exactly-once: nothing lost, nothing duplicated. At-least-once:
//! nothing lost, duplicates counted.
#![cfg(unix)]

use clickpath_cli::produce::EventProducer;
use clickpath_core::session::Sessionizer;
use clickpath_generator::{DirtyConfig, Generated, Generator, GeneratorConfig};
use clickpath_runtime::config::Guarantee;
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, EventType, SessionSummary};
use clickpath_stages::ClickpathConfig;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Sends signal number `sig` to a child this test spawned (kill(1): the workspace forbids unsafe code).
fn signal(child: &Child, sig: i32) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status();
}

fn write_config(dir: &Path, cfg: &ClickpathConfig) -> PathBuf {
    let t = &cfg.topics;
    let g = match cfg.processing.guarantee {
        Guarantee::ExactlyOnce => "exactly_once",
        Guarantee::AtLeastOnce => "at_least_once",
    };
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_prefix = \"{}\"\n[processing]\nguarantee = \"{g}\"\ntransaction_timeout_ms = 10000\n\
         [topics]\nraw = \"{}\"\nclean = \"{}\"\nsessions = \"{}\"\nfeatures = \"{}\"\npredictions = \"{}\"\nalerts = \"{}\"\n\
         dead_letters = \"{}\"\nlate_events = \"{}\"\n[http]\nbind = \"127.0.0.1:0\"\n[runtime]\npoll_timeout_ms = 50\nmax_batch = 200\n",
        cfg.kafka.brokers,
        cfg.kafka.group_prefix,
        t.raw,
        t.clean,
        t.sessions,
        t.features,
        t.predictions,
        t.alerts,
        t.dead_letters,
        t.late_events
    );
    let path = dir.join("clickpath.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_instance(config: &Path, id: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_clickpath"))
        .arg("--config")
        .arg(config)
        .args(["run", "sessionizer"])
        .env("CLICKPATH__KAFKA__INSTANCE_ID", format!("i{id}"))
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

/// Key and value of every record, per partition, in order.
type Partitions = BTreeMap<i32, Vec<(Vec<u8>, Vec<u8>)>>;

/// Every record of `topic` per partition, in order (committed data only).
fn read_topic(cfg: &ClickpathConfig, topic: &str, idle: Duration) -> Partitions {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", "kill-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.topics.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: Partitions = BTreeMap::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.entry(m.partition()).or_default().push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
            last = Instant::now();
        }
    }
    out
}

fn key(s: &SessionSummary) -> String {
    format!(
        "{}|{}|{}|{}|{:?}|{}|{}",
        s.user_id, s.start_time, s.end_time, s.event_count, s.path, s.purchased, s.order_value
    )
}

fn run(guarantee: Guarantee, kills: usize) {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut cfg = clickpath_testkit::test_config(&brokers, "kill");
    cfg.processing.guarantee = guarantee;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &cfg);
    let codec = Codec::embedded();

    // Clean input (the sessionizer reads the clean topic): no malformed records, but duplicates and disorder.
    let mut gcfg = GeneratorConfig {
        seed: 11,
        sessions: 1500,
        ..GeneratorConfig::default()
    };
    gcfg.dirty = DirtyConfig {
        malformed_rate: 0.0,
        ..gcfg.dirty
    };
    let events: Vec<ClickEvent> = Generator::new(gcfg)
        .unwrap()
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
        .collect();

    let mut instances: Vec<Child> = (0..3).map(|i| spawn_instance(&config, i)).collect();
    let mut producer = EventProducer::new(&cfg, codec.clone(), &cfg.topics.clean, 0.0).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let chunk = events.len().div_ceil(kills + 1);
    for (i, part) in events.chunks(chunk).enumerate() {
        for ev in part {
            producer.send_event(ev).unwrap();
        }
        producer.flush().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1200)));
        if i < kills {
            let victim = rng.random_range(0..instances.len());
            signal(&instances[victim], 9);
            instances[victim].wait().unwrap();
            instances[victim] = spawn_instance(&config, victim);
        }
    }
    // A far-future event on every partition moves each partition's watermark past every session.
    let last_time = events.iter().map(|e| e.event_time).max().unwrap();
    let raw: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for p in 0..cfg.topics.partitions {
        let ev = ClickEvent::new(
            format!("sentinel-{p}"),
            format!("sentinel-{p}"),
            EventType::PageView,
            last_time + 86_400_000,
        );
        let bytes = codec.encode(&ev).unwrap();
        raw.send(
            BaseRecord::to(&cfg.topics.clean)
                .partition(p)
                .key(ev.user_id.as_bytes())
                .payload(&bytes),
        )
        .unwrap();
    }
    raw.flush(Duration::from_secs(10)).unwrap();

    // The reference: the core sessionizer, one per partition, over exactly what each partition holds.
    let input = read_topic(&cfg, &cfg.topics.clean, Duration::from_secs(3));
    let mut expected: Vec<String> = Vec::new();
    for records in input.values() {
        let mut s = Sessionizer::new(cfg.sessionizer.clone());
        for (_, v) in records {
            let ev: ClickEvent = codec.decode(v).unwrap();
            expected.extend(s.on_event(&ev).iter().map(key));
        }
    }
    expected.sort();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got: Vec<String>;
    loop {
        let out = read_topic(&cfg, &cfg.topics.sessions, Duration::from_secs(2));
        got = out
            .values()
            .flatten()
            .map(|(_, v)| key(&codec.decode::<SessionSummary>(v).unwrap()))
            .collect();
        got.sort();
        let mut distinct = got.clone();
        distinct.dedup();
        if distinct.len() >= expected.len() || Instant::now() > deadline {
            break;
        }
    }
    for c in &instances {
        signal(c, 15);
    }
    for mut c in instances {
        c.wait().unwrap();
    }
    let mut distinct = got.clone();
    distinct.dedup();
    let missing: Vec<_> = expected
        .iter()
        .filter(|k| distinct.binary_search(k).is_err())
        .take(5)
        .collect();
    let unexpected: Vec<_> = distinct
        .iter()
        .filter(|k| expected.binary_search(k).is_err())
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "lost sessions ({} expected, {} got): {missing:#?}",
        expected.len(),
        distinct.len()
    );
    assert!(
        unexpected.is_empty(),
        "sessions the reference does not have: {unexpected:#?}"
    );
    let duplicates = got.len() - distinct.len();
    eprintln!(
        "{guarantee:?}: {} sessions, {kills} SIGKILLs, {duplicates} duplicates",
        expected.len()
    );
    if guarantee == Guarantee::ExactlyOnce {
        assert_eq!(duplicates, 0, "exactly-once output has duplicates");
    }
}

#[test]
fn exactly_once_survives_sigkill_without_loss_or_duplicates() {
    run(Guarantee::ExactlyOnce, 5);
}

#[test]
fn at_least_once_survives_sigkill_without_loss() {
    run(Guarantee::AtLeastOnce, 5);
}
