//! W3C trace context through the chained pipeline, on librdkafka's in-process mock cluster: a
//! trace started by the shop's producer follows its events from the raw topic to their predictions
//! (scored later, in the sequence model's micro-batch) and to the fraud alert they raise; events
//! produced without one start a trace of their own.

use clickpath_runtime::trace_context::{TRACEPARENT, TraceParent};
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, EventType, FraudAlert, Payment, PaymentStatus, Prediction};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::topology::run_chain;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Values and `traceparent` headers of `topic`, until `want` records (or 30 s).
fn read(
    brokers: &str,
    topic: &str,
    partitions: i32,
    want: usize,
) -> Vec<(Vec<u8>, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "trace-reader")
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let trace = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == TRACEPARENT)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            out.push((m.payload().unwrap_or_default().to_vec(), trace));
        }
    }
    out
}

fn failed_payment(user: &str, i: i64, t: i64) -> ClickEvent {
    let mut e = ClickEvent::new(format!("{user}-{i}"), user, EventType::PaymentAttempt, t);
    e.order_value = Some(20.0);
    e.payment = Some(Payment {
        status: PaymentStatus::Failed,
        method: "card".into(),
        card_fingerprint: Some(format!("card-{i}")),
    });
    e
}

#[test]
fn a_shops_trace_follows_its_events_to_predictions_and_alerts() {
    let mock = MockCluster::new(1).unwrap();
    let mut cfg = ClickpathConfig::default();
    cfg.topics = cfg.topics.with_prefix("trace.");
    cfg.kafka.group_prefix = "clickpath-trace".into();
    cfg.kafka.brokers = mock.bootstrap_servers();
    cfg.runtime.poll_timeout_ms = 50;
    // The shipped GRU: its predictions are scored after their records, in a micro-batch.
    cfg.scorer.model_dir =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gru-example"));
    cfg.scorer.reload_interval_ms = 0;
    // Micro-batches of two: most fill, and are scored, while a later record (often another
    // user's, with another trace) is being processed; each prediction must keep its own event's.
    cfg.scorer.max_batch = 2;
    let partitions = cfg.topics.partitions;
    for (_, topic) in cfg.topics.all() {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    let changelog =
        clickpath_runtime::changelog::changelog_topic(&cfg, clickpath_stages::chain::CHAIN);
    mock.create_topic(&changelog, partitions, 1).unwrap();
    let brokers = mock.bootstrap_servers();

    // A card tester whose requests the shop's own tracing covers (one trace, a span per request),
    // and a shopper produced without trace context.
    let shop_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let codec = Codec::embedded();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut sent_spans = Vec::new();
    let mut traced: BTreeMap<String, ()> = BTreeMap::new();
    for i in 0..5 {
        let ev = failed_payment("carder", i, now - 600_000 + i * 20_000);
        let span = format!("{:016x}", 0xa0 + i);
        let headers = OwnedHeaders::new().insert(Header {
            key: TRACEPARENT,
            value: Some(&format!("00-{shop_trace}-{span}-01")),
        });
        sent_spans.push(span);
        traced.insert(ev.event_id.clone(), ());
        producer
            .send(
                BaseRecord::to(&cfg.topics.raw)
                    .key(ev.user_id.as_bytes())
                    .payload(&codec.encode(&ev).unwrap())
                    .headers(headers),
            )
            .unwrap();
    }
    for i in 0..3 {
        let ev = ClickEvent::new(
            format!("shopper-{i}"),
            "shopper",
            EventType::PageView,
            now - 500_000 + i,
        );
        producer
            .send(
                BaseRecord::to(&cfg.topics.raw)
                    .key(ev.user_id.as_bytes())
                    .payload(&codec.encode(&ev).unwrap()),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(5)).unwrap();

    let env = cfg.runner_env(codec.clone());
    let (shutdown, env2, cfg2) = (env.shutdown.clone(), env.clone(), cfg.clone());
    let pipeline = std::thread::spawn(move || run_chain(&cfg2, &env2, false));

    let alerts = read(&brokers, &cfg.topics.alerts, partitions, 1);
    let predictions = read(&brokers, &cfg.topics.predictions, partitions, 8);
    shutdown.trigger();
    pipeline.join().unwrap().unwrap();

    // The alert continues the shop's trace, as a span of the pipeline's own.
    let (value, trace) = alerts.first().expect("a card-testing alert");
    let alert: FraudAlert = codec.decode(value).unwrap();
    assert_eq!(alert.user_id, "carder");
    let hop = TraceParent::parse(trace.as_deref().expect("a traceparent on the alert")).unwrap();
    assert_eq!(format!("{:032x}", hop.trace_id), shop_trace);
    assert!(!sent_spans.contains(&format!("{:016x}", hop.span_id)));
    assert_eq!(hop.flags, 1, "the shop's sampled flag is kept");

    // Every prediction carries its event's trace: the shop's, or one started for it.
    assert_eq!(predictions.len(), 8);
    let mut started = Vec::new();
    for (value, trace) in &predictions {
        let p: Prediction = codec.decode(value).unwrap();
        let tp = TraceParent::parse(trace.as_deref().expect("a traceparent")).unwrap();
        let in_shop_trace = format!("{:032x}", tp.trace_id) == shop_trace;
        assert_eq!(in_shop_trace, traced.contains_key(&p.event_id), "{p:?}");
        if !in_shop_trace {
            assert_eq!(tp.flags, 0, "a trace the pipeline starts is not sampled");
            started.push(tp.trace_id);
        }
    }
    started.sort_unstable();
    started.dedup();
    assert_eq!(started.len(), 3, "one new trace per untraced event");
}
