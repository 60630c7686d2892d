//! A stage reading two topics, against librdkafka's in-process mock cluster: records of each topic are decoded
//! into their own variant, dead letters name their source topic, offsets of both topics are committed, the
//! changelog is restored by partition number, and topics with different partition counts are refused.
//! Both guarantees; the exactly-once run also writes its outputs, changelog and offsets in transactions.

use clickpath_runtime::config::{BusConfig, Guarantee};
use clickpath_runtime::metrics::Metrics;
use clickpath_runtime::shutdown::Shutdown;
use clickpath_runtime::{
    Context, RunSummary, RunnerEnv, Stage, StageError, StageInput, StateChange, run_stage,
};
use clickpath_schema::codec::{Codec, CodecError};
use clickpath_schema::{ClickEvent, DeadLetter, EventType, Prediction};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events from the first topic, predictions from the second.
// Each record is moved once, into `process`: boxing the larger variant would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Input {
    Event(ClickEvent),
    Prediction(Prediction),
}

impl StageInput for Input {
    const ROLES: &'static [&'static str] = &["events", "predictions"];

    fn decode(codec: &Codec, input: usize, payload: &[u8]) -> Result<Self, CodecError> {
        match input {
            0 => codec.decode(payload).map(Input::Event),
            _ => codec.decode(payload).map(Input::Prediction),
        }
    }
}

/// What the test observes of the stage.
#[derive(Default)]
struct Seen {
    /// (topic the context names, variant, id).
    records: Vec<(String, &'static str, String)>,
    /// Every `on_assign` call.
    assigned: Vec<Vec<i32>>,
    /// Restored count per partition.
    restored: BTreeMap<i32, u64>,
}

/// Forwards both kinds as events to `out` and counts records per partition in its changelog.
struct Join {
    out: String,
    seen: Arc<Mutex<Seen>>,
    counts: BTreeMap<i32, u64>,
    changes: Vec<StateChange>,
}

impl Stage for Join {
    type Input = Input;

    fn name(&self) -> &'static str {
        "join"
    }

    fn process(&mut self, input: Input, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let partition = ctx.partition().unwrap();
        let topic = ctx.topic().unwrap().to_string();
        let (kind, ev) = match input {
            Input::Event(ev) => ("event", ev),
            Input::Prediction(p) => (
                "prediction",
                ClickEvent::new(
                    format!("pred-{}", p.event_id),
                    p.user_id,
                    EventType::Search,
                    p.event_time,
                ),
            ),
        };
        self.seen
            .lock()
            .unwrap()
            .records
            .push((topic, kind, ev.event_id.clone()));
        let n = self.counts.entry(partition).or_default();
        *n += 1;
        self.changes.push(StateChange {
            partition,
            key: b"count".to_vec(),
            value: Some(n.to_string().into_bytes()),
        });
        ctx.emit(&self.out, &ev.user_id, &ev)
    }

    fn on_assign(&mut self, partitions: &[i32]) {
        self.seen.lock().unwrap().assigned.push(partitions.to_vec());
    }

    fn is_stateful(&self) -> bool {
        true
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        std::mem::take(&mut self.changes)
    }

    fn restore(
        &mut self,
        partition: i32,
        _key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        let n: u64 = std::str::from_utf8(value.unwrap_or_default())
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StageError::Fatal("bad count".into()))?;
        self.seen.lock().unwrap().restored.insert(partition, n);
        self.counts.insert(partition, n);
        Ok(())
    }
}

/// A record read back: key, value and headers (values as text).
struct Read {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
}

fn read_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Read {
    use rdkafka::message::Headers;
    Read {
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().unwrap_or_default().to_vec(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_string(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn read_all(brokers: &str, topic: &str, partitions: i32, want: usize) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(read_of(&m));
        }
    }
    // Anything beyond `want` would be a duplicate: give it a moment to show up.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            out.push(read_of(&m));
        }
    }
    out
}

fn run_until(
    env: &RunnerEnv,
    seen: &Arc<Mutex<Seen>>,
    topics: [&str; 2],
    done: impl Fn(&Metrics) -> bool,
) -> RunSummary {
    let env2 = env.clone();
    let stage = Join {
        out: "out".into(),
        seen: seen.clone(),
        counts: BTreeMap::new(),
        changes: Vec::new(),
    };
    let topics = topics.map(String::from);
    let h = std::thread::spawn(move || run_stage(stage, &topics, &env2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&env.metrics) && Instant::now() < deadline && !h.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    env.shutdown.trigger();
    h.join().unwrap().unwrap()
}

fn prediction(i: usize) -> Prediction {
    Prediction {
        event_id: format!("e{i}"),
        user_id: format!("u{}", i % 4),
        event_time: 1_700_000_000_000 + i as i64,
        model_version: "test".into(),
        purchase_probability: 0.5,
        next_actions: Vec::new(),
        predicted_path: Vec::new(),
        factors: Vec::new(),
        scoring_latency_us: 1,
        recommended_items: Vec::new(),
        recommended_categories: Vec::new(),
    }
}

fn two_topic_stage(guarantee: Guarantee) {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for t in ["events", "preds", "out", "dlq", "mt.join-changelog"] {
        mock.create_topic(t, 2, 1).unwrap();
    }
    let mut cfg = BusConfig::default();
    cfg.kafka.brokers = brokers.clone();
    cfg.kafka.group_prefix = "mt".into();
    cfg.kafka.instance_id = "mt-1".into();
    cfg.topics.dead_letters = "dlq".into();
    cfg.runtime.poll_timeout_ms = 50;
    cfg.processing.guarantee = guarantee;
    // The mock broker waits for a departed member's session to expire before it rebalances the second run
    // (with either assignor, so also for one-topic stages): keep that short.
    cfg.kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    cfg.kafka
        .properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    let codec = Codec::embedded();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let send = |topic: &str, key: &str, bytes: &[u8]| {
        producer
            .send(BaseRecord::to(topic).key(key.as_bytes()).payload(bytes))
            .unwrap();
    };
    for i in 0..10 {
        let ev = ClickEvent::new(
            format!("e{i}"),
            format!("u{}", i % 4),
            EventType::ProductView,
            1_700_000_000_000 + i,
        );
        send("events", &ev.user_id, &codec.encode(&ev).unwrap());
    }
    for i in 0..6 {
        let p = prediction(i);
        send("preds", &p.user_id, &codec.encode(&p).unwrap());
    }
    // Poison on each topic: garbage on the prediction topic, a prediction on the event topic.
    send("preds", "u1", b"\x01not avro");
    send("events", "u2", &codec.encode(&prediction(99)).unwrap());
    producer.flush(Duration::from_secs(5)).unwrap();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let env = RunnerEnv::new(cfg, codec.clone());
    let summary = run_until(&env, &seen, ["events", "preds"], |m| {
        m.records_in_total("join", "events") >= 11 && m.records_in_total("join", "preds") >= 7
    });
    assert_eq!(summary.records_in, 18);
    assert_eq!(summary.dead_letters, 2);
    assert_eq!(env.metrics.records_in_total("join", "events"), 11);
    assert_eq!(env.metrics.records_in_total("join", "preds"), 7);
    {
        let s = seen.lock().unwrap();
        let events = s
            .records
            .iter()
            .filter(|(t, k, _)| t == "events" && *k == "event")
            .count();
        let preds = s
            .records
            .iter()
            .filter(|(t, k, _)| t == "preds" && *k == "prediction")
            .count();
        assert_eq!(
            (events, preds, s.records.len()),
            (10, 6, 16),
            "each topic decoded into its own variant"
        );
        // Both topics' partitions 0 and 1 were assigned, announced to the stage as two partition numbers.
        let mut all: Vec<i32> = s.assigned.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, vec![0, 1], "{:?}", s.assigned);
    }

    let outs = read_all(&brokers, "out", 2, 16);
    assert_eq!(outs.len(), 16, "every good record forwarded once");
    let dl = read_all(&brokers, "dlq", 2, 2);
    let mut letters: Vec<DeadLetter> = dl
        .iter()
        .map(|m| {
            clickpath_runtime::deadletter::read(&codec, m.key.as_deref(), &m.value, |name| {
                m.headers
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            })
            .unwrap()
        })
        .collect();
    letters.sort_by(|a, b| a.source_topic.cmp(&b.source_topic));
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].source_topic, "events");
    assert_eq!(letters[1].source_topic, "preds");
    assert_eq!(letters[1].error_kind, "wrong_magic");
    let changelog = read_all(&brokers, "mt.join-changelog", 2, 16);
    assert_eq!(changelog.len(), 16, "one state change per record");

    // A second run in the same group: offsets of both topics were committed, so nothing is read again, and the
    // changelog restores every partition's count (16 records in all) before the stage sees any input.
    let seen2 = Arc::new(Mutex::new(Seen::default()));
    let env2 = RunnerEnv {
        shutdown: Shutdown::new(),
        metrics: Metrics::new(),
        ..env
    };
    // Done a moment after the group assigned the partitions (the mock broker delays a group's first join).
    let watch = seen2.clone();
    let assigned_at = Mutex::new(None::<Instant>);
    let again = run_until(&env2, &seen2, ["events", "preds"], move |_| {
        let mut at = assigned_at.lock().unwrap();
        if at.is_none() && !watch.lock().unwrap().assigned.is_empty() {
            *at = Some(Instant::now());
        }
        at.is_some_and(|t| t.elapsed() > Duration::from_secs(1))
    });
    if guarantee == Guarantee::AtLeastOnce {
        assert_eq!(again.records_in, 0, "offsets of both topics were committed");
    }
    // (The mock broker acknowledges a transaction's offsets without storing them, so in exactly-once mode the
    // second run reads everything again; `tests/detector_predictions_kafka.rs` checks that on a real broker.)
    let s = seen2.lock().unwrap();
    assert_eq!(
        s.restored.values().sum::<u64>(),
        16,
        "restored {:?}",
        s.restored
    );
    let mut all: Vec<i32> = s.assigned.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, vec![0, 1]);
}

#[test]
fn two_topics_at_least_once() {
    two_topic_stage(Guarantee::AtLeastOnce);
}

#[test]
fn two_topics_exactly_once() {
    two_topic_stage(Guarantee::ExactlyOnce);
}

#[test]
fn input_topics_with_different_partition_counts_are_refused() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("events", 2, 1).unwrap();
    mock.create_topic("preds", 3, 1).unwrap();
    let mut cfg = BusConfig::default();
    cfg.kafka.brokers = mock.bootstrap_servers();
    let env = RunnerEnv::new(cfg, Codec::embedded());
    let stage = Join {
        out: "out".into(),
        seen: Arc::default(),
        counts: BTreeMap::new(),
        changes: Vec::new(),
    };
    let err = run_stage(stage, &["events", "preds"], &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("same number of partitions") && err.contains("events: 2, preds: 3"),
        "{err}"
    );
    // The wrong number of topics is refused too.
    let stage = Join {
        out: "out".into(),
        seen: Arc::default(),
        counts: BTreeMap::new(),
        changes: Vec::new(),
    };
    let err = run_stage(stage, &["events"], &env).unwrap_err().to_string();
    assert!(err.contains("reads 2 input topic(s)"), "{err}");
}
