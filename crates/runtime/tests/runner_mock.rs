//! The run loop against librdkafka's in-process mock cluster: fast, no broker needed.
//! (The same paths run against the real broker in the workspace's end-to-end test.)

use clickpath_runtime::config::BusConfig;
use clickpath_runtime::metrics::Metrics;
use clickpath_runtime::shutdown::Shutdown;
use clickpath_runtime::{Context, RunnerEnv, Stage, StageError, run_stage};
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, DeadLetter, EventType};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Forwards events; rejects negative prices (a stand-in for real validation).
struct Forward {
    out: String,
    seen: u64,
}

impl Stage for Forward {
    type Input = ClickEvent;
    fn name(&self) -> &'static str {
        "forward"
    }
    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.seen += 1;
        if ev.price.is_some_and(|p| p < 0.0) {
            return Err(StageError::Rejected {
                kind: "bad_value",
                reason: format!("price is negative ({:?})", ev.price),
            });
        }
        ctx.emit(&self.out, &ev.user_id, &ev)
    }
}

type Record = (Vec<u8>, Vec<u8>, Vec<(String, String)>);

fn headers_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read_all(brokers: &str, topic: &str, partitions: i32, want: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
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
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                headers_of(&m),
            ));
        }
    }
    // Anything beyond `want` would be a duplicate: give it a moment to show up.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                headers_of(&m),
            ));
        }
    }
    out
}

fn run_until(env: &RunnerEnv, input: &str, out: &str, done: impl Fn(&Metrics) -> bool) -> u64 {
    let shutdown = env.shutdown.clone();
    let env2 = env.clone();
    let input = input.to_string();
    let out = out.to_string();
    let h = std::thread::spawn(move || run_stage(Forward { out, seen: 0 }, &[input], &env2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&env.metrics) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    shutdown.trigger();
    h.join().unwrap().unwrap().records_in
}

/// A mock cluster with topics `in`, `out` and `dlq` (two partitions each), and a configuration for
/// it with a short poll timeout.
fn mock_cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    BusConfig,
) {
    let mock = MockCluster::new(1).unwrap();
    for t in ["in", "out", "dlq"] {
        mock.create_topic(t, 2, 1).unwrap();
    }
    let mut cfg = BusConfig::default();
    cfg.kafka.brokers = mock.bootstrap_servers();
    cfg.topics.dead_letters = "dlq".into();
    cfg.runtime.poll_timeout_ms = 50;
    (mock, cfg)
}

#[test]
fn forwards_valid_records_and_dead_letters_poison_without_stopping() {
    let (mock, mut cfg) = mock_cluster();
    let brokers = mock.bootstrap_servers();
    cfg.runtime.max_record_bytes = 4096;
    let codec = Codec::embedded();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut expected_ok = Vec::new();
    for i in 0..20 {
        let mut ev = ClickEvent::new(
            format!("e{i}"),
            format!("u{}", i % 4),
            EventType::ProductView,
            1_700_000_000_000 + i,
        );
        let bytes = if i % 5 == 3 {
            b"\x01not avro at all".to_vec() // wrong magic byte
        } else if i % 5 == 4 {
            ev.price = Some(-1.0); // valid Avro, invalid meaning
            codec.encode(&ev).unwrap()
        } else {
            expected_ok.push(ev.event_id.clone());
            codec.encode(&ev).unwrap()
        };
        producer
            .send(
                BaseRecord::to("in")
                    .key(ev.user_id.as_bytes())
                    .payload(&bytes),
            )
            .unwrap();
    }
    // A record larger than runtime.max_record_bytes: dead-lettered without being decoded.
    let mut huge = ClickEvent::new("huge", "u9", EventType::Search, 1_700_000_000_100);
    huge.search_query = Some("x".repeat(8000));
    let huge_bytes = codec.encode(&huge).unwrap();
    // The shop's own header (a binary value) travels with the dead letter.
    let shop_header = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "shop.origin",
        value: Some(&b"web-\x01"[..]),
    });
    producer
        .send(
            BaseRecord::to("in")
                .key("u9".as_bytes())
                .payload(&huge_bytes)
                .headers(shop_header),
        )
        .unwrap();
    producer.flush(Duration::from_secs(5)).unwrap();

    let env = RunnerEnv::new(cfg, codec.clone());
    let read = run_until(&env, "in", "out", |m| {
        m.records_in_total("forward", "in") >= 21
    });
    assert_eq!(read, 21);
    // Every record's poll-to-durable latency was observed.
    let exposition = env.metrics.encode();
    assert!(
        exposition.contains("clickpath_processing_latency_seconds_count{stage=\"forward\"} 21"),
        "{exposition}"
    );

    let outs = read_all(&brokers, "out", 2, expected_ok.len());
    let mut got: Vec<String> = outs
        .iter()
        .map(|(_, v, _)| codec.decode::<ClickEvent>(v).unwrap().event_id)
        .collect();
    got.sort();
    expected_ok.sort();
    assert_eq!(
        got, expected_ok,
        "every valid record forwarded exactly once"
    );

    let dl = read_all(&brokers, "dlq", 2, 9);
    assert_eq!(
        dl.len(),
        9,
        "4 wrong-magic + 4 negative-price + 1 oversized records dead-lettered"
    );
    // Read back with the dead-letter reader: the value is the original record, the context in
    // headers (Kafka Connect's names beside clickpath's).
    let letters: Vec<DeadLetter> = dl
        .iter()
        .map(|(k, v, headers)| {
            clickpath_runtime::deadletter::read(&codec, Some(k), v, |name| {
                headers
                    .iter()
                    .rev()
                    .find(|(hk, _)| hk == name)
                    .map(|(_, v)| v.as_str())
            })
            .unwrap()
        })
        .collect();
    assert!(
        dl.iter()
            .all(|(_, v, _)| codec.decode::<DeadLetter>(v).is_err()),
        "values are not wrapped in an Avro DeadLetter any more"
    );
    // Context headers let operators route dead letters without decoding them.
    for (_, _, headers) in &dl {
        let get = |k: &str| {
            headers
                .iter()
                .find(|(hk, _)| hk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("clickpath.stage"), Some("forward"));
        assert_eq!(get("clickpath.source.topic"), Some("in"));
        assert!(
            matches!(
                get("clickpath.error.kind"),
                Some("wrong_magic" | "bad_value" | "oversized_record")
            ),
            "{headers:?}"
        );
        assert!(get("clickpath.error.reason").is_some_and(|r| !r.is_empty()));
        assert!(get("clickpath.source.offset").is_some_and(|o| o.parse::<i64>().is_ok()));
        assert_eq!(get("__connect.errors.topic"), Some("in"));
        assert_eq!(get("__connect.errors.stage"), Some("forward"));
        assert_eq!(
            get("__connect.errors.exception.class.name"),
            get("clickpath.error.kind")
                .map(|k| format!("clickpath.{k}"))
                .as_deref()
        );
        assert_eq!(
            get("__connect.errors.exception.message"),
            get("clickpath.error.reason")
        );
    }
    let copied: Vec<_> = dl
        .iter()
        .filter(|(_, _, h)| {
            h.iter()
                .any(|(k, v)| k == "shop.origin" && v == "web-\u{1}")
        })
        .collect();
    assert_eq!(
        copied.len(),
        1,
        "the oversized record's own header is copied"
    );
    assert_eq!(
        copied[0].1, huge_bytes,
        "its value is the record as received"
    );
    assert_eq!(
        letters
            .iter()
            .filter(|d| d.error_kind == "wrong_magic")
            .count(),
        4
    );
    let oversized: Vec<_> = letters
        .iter()
        .filter(|d| d.error_kind == "oversized_record")
        .collect();
    assert_eq!(oversized.len(), 1);
    assert!(
        oversized[0].reason.contains("max_record_bytes"),
        "{}",
        oversized[0].reason
    );
    let neg: Vec<_> = letters
        .iter()
        .filter(|d| d.error_kind == "bad_value")
        .collect();
    assert_eq!(neg.len(), 4);
    assert!(
        neg[0].reason.contains("price is negative"),
        "{}",
        neg[0].reason
    );
    assert_eq!(neg[0].source_topic, "in");
    // The original bytes are the dead letter's value, key included.
    assert_eq!(
        letters
            .iter()
            .filter(|d| d.payload == b"\x01not avro at all"
                && d.key.as_deref().is_some_and(|k| k.starts_with(b"u")))
            .count(),
        4
    );

    // A second run in the same group resumes after the committed offsets: nothing is read again.
    let env2 = RunnerEnv {
        shutdown: Shutdown::new(),
        metrics: Metrics::new(),
        ..env
    };
    let started = Instant::now();
    let reread = run_until(&env2, "in", "out", move |_| {
        started.elapsed() > Duration::from_secs(4)
    });
    assert_eq!(reread, 0, "offsets were committed after delivery");
}

/// The next offsets group `group` has committed on `topic`'s partitions (none committed: absent).
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

#[test]
fn at_least_once_sends_outputs_at_once_and_commits_their_offsets_every_commit_interval() {
    let (mock, mut cfg) = mock_cluster();
    let brokers = mock.bootstrap_servers();
    // Longer than the test: only the drain at shutdown commits.
    cfg.runtime.commit_interval_ms = 600_000;
    let group = format!("{}.forward", cfg.kafka.group_prefix);
    let codec = Codec::embedded();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..10 {
        let ev = ClickEvent::new(
            format!("e{i}"),
            format!("u{i}"),
            EventType::Search,
            1_700_000_000_000 + i,
        );
        producer
            .send(
                BaseRecord::to("in")
                    .key(ev.user_id.as_bytes())
                    .payload(&codec.encode(&ev).unwrap()),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(5)).unwrap();

    let env = RunnerEnv::new(cfg, codec.clone());
    let (shutdown, env2) = (env.shutdown.clone(), env.clone());
    let h = std::thread::spawn(move || {
        run_stage(
            Forward {
                out: "out".into(),
                seen: 0,
            },
            &["in"],
            &env2,
        )
    });
    // The outputs reach the topic long before the commit interval ends...
    assert_eq!(read_all(&brokers, "out", 2, 10).len(), 10);
    // ... while their offsets are not stored yet, so auto-commit (every second) has nothing to commit.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(committed(&brokers, &group, "in", 2), Vec::<i64>::new());
    // The drain makes everything sent durable and commits it.
    shutdown.trigger();
    assert_eq!(h.join().unwrap().unwrap().records_in, 10);
    assert_eq!(committed(&brokers, &group, "in", 2).iter().sum::<i64>(), 10);
}

/// `runtime.trace_context`: `continue` gives `traceparent` only to the outputs of records that came
/// with one (same trace, the stage's own span id); `off` gives none; `start` gives every output one.
#[test]
fn trace_context_modes_continue_start_or_write_no_traceparent() {
    use clickpath_runtime::config::TraceContextMode;
    use clickpath_runtime::trace_context::TraceParent;
    use rdkafka::message::{Header, OwnedHeaders};
    const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traces = |mode: TraceContextMode| -> Vec<(String, Option<String>)> {
        let (mock, mut cfg) = mock_cluster();
        let brokers = mock.bootstrap_servers();
        cfg.runtime.trace_context = mode;
        let codec = Codec::embedded();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for (user, traced) in [("traced", true), ("untraced", false)] {
            let ev = ClickEvent::new(user, user, EventType::Search, 1_700_000_000_000);
            let payload = codec.encode(&ev).unwrap();
            let mut record = BaseRecord::to("in").key(user).payload(&payload);
            if traced {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(SENT),
                }));
            }
            producer.send(record).unwrap();
        }
        producer.flush(Duration::from_secs(5)).unwrap();
        let env = RunnerEnv::new(cfg, codec);
        run_until(&env, "in", "out", |m| {
            m.records_in_total("forward", "in") >= 2
        });
        let mut out: Vec<(String, Option<String>)> = read_all(&brokers, "out", 2, 2)
            .into_iter()
            .map(|(key, _, headers)| {
                let trace = headers
                    .into_iter()
                    .find(|(k, _)| k == "traceparent")
                    .map(|(_, v)| v);
                (String::from_utf8(key).unwrap(), trace)
            })
            .collect();
        out.sort();
        out
    };
    let sent = TraceParent::parse(SENT).unwrap();
    let continued = |trace: &Option<String>| {
        let hop = TraceParent::parse(trace.as_deref().expect("a traceparent")).unwrap();
        assert_eq!((hop.trace_id, hop.flags), (sent.trace_id, sent.flags));
        assert_ne!(hop.span_id, sent.span_id);
    };

    let cont = traces(TraceContextMode::Continue);
    assert_eq!(cont[0].0, "traced");
    continued(&cont[0].1);
    assert_eq!(cont[1], ("untraced".to_string(), None));

    let start = traces(TraceContextMode::Start);
    continued(&start[0].1);
    let started = TraceParent::parse(start[1].1.as_deref().expect("a started trace")).unwrap();
    assert_ne!(started.trace_id, sent.trace_id);

    assert!(
        traces(TraceContextMode::Off)
            .iter()
            .all(|(_, trace)| trace.is_none())
    );
}
