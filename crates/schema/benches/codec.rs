//! Encode/decode throughput of a typical `ClickEvent`, the hot path of every stage.

use apache_avro::types::Value;
use clickpath_schema::{
    AvroRecord, ClickEvent, Codec, EmbeddedRegistry, EventType, Payment, PaymentStatus,
    SchemaRegistry,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

fn typical_event() -> ClickEvent {
    let mut e = ClickEvent::new(
        "0b7e6a5c-4f1e-4a3b-9d2c-6f1e2d3c4b5a",
        "user-000123456",
        EventType::PaymentAttempt,
        1_700_000_000_123,
    );
    e.session_id = Some("s-98765".into());
    e.item_id = Some("item-4242".into());
    e.category = Some("electronics/phones".into());
    e.price = Some(199.99);
    e.currency = Some("EUR".into());
    e.payment = Some(Payment {
        status: PaymentStatus::Failed,
        method: "card".into(),
        card_fingerprint: Some("fp-1a2b3c".into()),
    });
    e.device = Some("mobile".into());
    e.country = Some("DE".into());
    e.channel = Some("email".into());
    e.extras.insert("ab_test".into(), "B".into());
    e
}

fn click_event_codec(c: &mut Criterion) {
    let codec = Codec::embedded();
    let event = typical_event();
    let bytes = codec.encode(&event).unwrap();
    let mut group = c.benchmark_group("click_event_codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        let mut buf = Vec::with_capacity(256);
        b.iter(|| {
            buf.clear();
            codec.encode_into(black_box(&event), &mut buf).unwrap();
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| codec.decode::<ClickEvent>(black_box(&bytes)).unwrap())
    });
    let (old_codec, old_bytes) = older_writer(&event);
    assert_eq!(
        old_codec.decode::<ClickEvent>(&old_bytes).unwrap().referrer,
        None
    );
    group.bench_function("decode_resolved_from_older_schema", |b| {
        b.iter(|| {
            old_codec
                .decode::<ClickEvent>(black_box(&old_bytes))
                .unwrap()
        })
    });
    group.finish();
}

/// A codec that knows an older ClickEvent schema (without `referrer`) as id 100 and the shipped one
/// as id 101, and `event` framed with id 100: decoding it needs full schema resolution.
fn older_writer(event: &ClickEvent) -> (Codec, Vec<u8>) {
    let shipped = EmbeddedRegistry::shipped();
    let current = shipped
        .schema_text(shipped.latest_id(ClickEvent::FULL_NAME).unwrap())
        .unwrap();
    let mut json: serde_json::Value = serde_json::from_str(current).unwrap();
    let fields = json["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "referrer");
    let old = json.to_string();
    let mut registry = EmbeddedRegistry::new();
    registry.register(ClickEvent::FULL_NAME, 100, &old).unwrap();
    registry
        .register(ClickEvent::FULL_NAME, 101, current)
        .unwrap();
    let old_schema = registry.schema(100).unwrap();

    let Value::Record(mut fields) = apache_avro::to_value(event).unwrap() else {
        unreachable!("a struct serializes to a record")
    };
    fields.retain(|(name, _)| name != "referrer");
    let value = Value::Record(fields).resolve(&old_schema).unwrap();
    let mut bytes = vec![0, 0, 0, 0, 100];
    bytes.extend(apache_avro::to_avro_datum(&old_schema, value).unwrap());
    (Codec::new(Arc::new(registry)), bytes)
}

criterion_group!(benches, click_event_codec);
criterion_main!(benches);
