//! OTLP trace export (feature `otlp`): a stage run on librdkafka's mock cluster exports its batch spans (`process <topic>`) to an
//! OTLP/HTTP endpoint, here a minimal collector in the test that decodes what it receives with the
//! OpenTelemetry protocol's own message types.
//!
//! `cargo test -p clickpath-runtime --features otlp --test otlp_export`
#![cfg(feature = "otlp")]

use clickpath_runtime::config::BusConfig;
use clickpath_runtime::telemetry::{OtlpSettings, otlp_layer};
use clickpath_runtime::{Context, RunnerEnv, Stage, StageError, run_stage};
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, EventType};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The trace of the records' producer.
const PRODUCER_TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;

struct Forward;

impl Stage for Forward {
    type Input = ClickEvent;
    fn name(&self) -> &'static str {
        "forward"
    }
    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        ctx.emit("out", &ev.user_id, &ev)
    }
}

/// A collector that accepts OTLP/HTTP requests and sends each (path, content type, body) to the test.
fn collector() -> (u16, mpsc::Receiver<(String, String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                // Keep-alive: several requests per connection.
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    let (mut length, mut content_type) = (0usize, String::new());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap_or((line, ""));
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap_or(0),
                            "content-type" => content_type = value.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = tx.send((path, content_type, body));
                    let _ = writer.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (port, rx)
}

#[test]
fn batch_spans_of_a_running_stage_reach_an_otlp_collector() {
    let (port, requests) = collector();
    let settings = OtlpSettings::from_vars(|name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(format!("http://127.0.0.1:{port}")),
        "OTEL_SERVICE_NAME" => Some("clickpath-otlp-test".into()),
        _ => None,
    })
    .unwrap();
    let (layer, guard) = otlp_layer(&settings).unwrap();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(layer)
        .init();

    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for t in ["in", "out", "clickpath.dead-letters"] {
        mock.create_topic(t, 1, 1).unwrap();
    }
    let codec = Codec::embedded();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..25 {
        let ev = ClickEvent::new(
            format!("e{i}"),
            format!("u{}", i % 3),
            EventType::ProductView,
            1_700_000_000_000 + i,
        );
        let bytes = codec.encode(&ev).unwrap();
        // The first ten come from a traced producer: one trace, a span each.
        let traceparent = format!("00-{PRODUCER_TRACE:032x}-{:016x}-01", 0x100 + i);
        let mut record = BaseRecord::to("in").key("k").payload(&bytes);
        if i < 10 {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(&traceparent),
            }));
        }
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(5)).unwrap();

    let mut cfg = BusConfig::default();
    cfg.kafka.brokers = brokers;
    cfg.runtime.poll_timeout_ms = 50;
    let env = RunnerEnv::new(cfg, codec);
    let runner = {
        let env = env.clone();
        std::thread::spawn(move || run_stage(Forward, &["in".to_string()], &env))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.metrics.records_in_total("forward", "in") < 25 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    env.shutdown.trigger();
    runner.join().unwrap().unwrap();
    // Flushes the spans still batched in the exporter.
    drop(guard);

    let mut batches = Vec::new();
    let mut linked = Vec::new();
    let mut service = None;
    while let Ok((path, content_type, body)) = requests.recv_timeout(Duration::from_secs(2)) {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for rs in request.resource_spans {
            for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
                if kv.key == "service.name" {
                    service = kv.value.as_ref().and_then(|v| v.value.clone());
                }
            }
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                if span.name != "process in" {
                    continue;
                }
                // OpenTelemetry messaging conventions: a consumer span, `messaging.*` attributes,
                // links to the spans that produced the records.
                assert_eq!(span.kind, SpanKind::Consumer as i32);
                let attr = |key: &str| {
                    span.attributes
                        .iter()
                        .find(|kv| kv.key == key)
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(|v| v.value.clone())
                };
                assert_eq!(attr("stage"), Some(Value::StringValue("forward".into())));
                let records = match attr("records") {
                    Some(Value::IntValue(n)) => n,
                    other => panic!("records attribute: {other:?}"),
                };
                let outputs = match attr("outputs") {
                    Some(Value::IntValue(n)) => n,
                    other => panic!("outputs attribute: {other:?}"),
                };
                assert_eq!(
                    attr("messaging.system"),
                    Some(Value::StringValue("kafka".into()))
                );
                assert_eq!(
                    attr("messaging.destination.name"),
                    Some(Value::StringValue("in".into()))
                );
                assert_eq!(
                    attr("messaging.consumer.group.name"),
                    Some(Value::StringValue("clickpath.forward".into()))
                );
                assert_eq!(
                    attr("messaging.batch.message_count"),
                    Some(Value::IntValue(records))
                );
                for link in &span.links {
                    assert_eq!(link.trace_id, PRODUCER_TRACE.to_be_bytes().to_vec());
                    linked.push(u64::from_be_bytes(
                        link.span_id.as_slice().try_into().unwrap(),
                    ));
                }
                assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
                batches.push((records, outputs));
            }
        }
    }
    assert_eq!(
        service,
        Some(Value::StringValue("clickpath-otlp-test".into()))
    );
    // Every record was in one exported batch span, and each batch forwarded all of its records.
    let records: i64 = batches.iter().map(|b| b.0).sum();
    assert_eq!(records, 25, "{batches:?}");
    assert!(batches.iter().all(|(r, o)| r == o), "{batches:?}");
    // Each traced record's producer span is linked once; untraced records add no link.
    linked.sort_unstable();
    assert_eq!(linked, (0x100..0x10a).collect::<Vec<u64>>());
}
