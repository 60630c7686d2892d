//! The `.avsc` files and the Rust types must agree field for field: every type round-trips
//! through its shipped schema, field names and order match, enum symbols match the Rust order.

mod common;

use apache_avro::Schema;
use apache_avro::types::Value;
use clickpath_schema::codec::HEADER_LEN;
use clickpath_schema::*;
use common::*;
use proptest::prelude::*;
use std::fmt::Debug;

fn round_trip<T: AvroRecord + PartialEq + Debug>(value: &T) {
    let codec = Codec::embedded();
    let bytes = codec.encode(value).expect("encode");
    assert_eq!(&read_by_apache_avro::<T>(&bytes[HEADER_LEN..]), value);
    let back: T = codec.decode(&bytes).expect("decode");
    assert_eq!(&back, value);
}

/// apache-avro's own reading of a body the codec wrote (the codec reads with its direct decoder).
fn read_by_apache_avro<T: AvroRecord>(mut body: &[u8]) -> T {
    let value = apache_avro::from_avro_datum(&shipped_schema::<T>(), &mut body, None).unwrap();
    assert!(body.is_empty(), "{} bytes left", body.len());
    apache_avro::from_value(&value).unwrap()
}

fn shipped_schema<T: AvroRecord>() -> std::sync::Arc<Schema> {
    let registry = EmbeddedRegistry::shipped();
    registry
        .schema(registry.latest_id(T::FULL_NAME).unwrap())
        .unwrap()
}

/// Record field paths in declaration order, following unions and arrays (`payment.status`).
fn schema_fields(schema: &Schema, prefix: &str, out: &mut Vec<String>) {
    match schema {
        Schema::Record(r) => {
            for f in &r.fields {
                let path = format!("{prefix}{}", f.name);
                out.push(path.clone());
                schema_fields(&f.schema, &format!("{path}."), out);
            }
        }
        Schema::Union(u) => u
            .variants()
            .iter()
            .for_each(|v| schema_fields(v, prefix, out)),
        Schema::Array(a) => schema_fields(&a.items, prefix, out),
        _ => {}
    }
}

/// The same paths as serde writes them for a fully populated value (first array item only).
fn value_fields(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Record(fields) => {
            for (name, v) in fields {
                let path = format!("{prefix}{name}");
                out.push(path.clone());
                value_fields(v, &format!("{path}."), out);
            }
        }
        Value::Union(_, v) => value_fields(v, prefix, out),
        Value::Array(items) => {
            if let Some(first) = items.first() {
                value_fields(first, prefix, out)
            }
        }
        _ => {}
    }
}

fn assert_same_fields<T: AvroRecord>(value: &T) {
    let mut expected = Vec::new();
    schema_fields(&shipped_schema::<T>(), "", &mut expected);
    let mut actual = Vec::new();
    value_fields(&apache_avro::to_value(value).unwrap(), "", &mut actual);
    assert_eq!(actual, expected, "{} fields differ", T::FULL_NAME);
}

#[test]
fn every_type_round_trips_fully_populated() {
    round_trip(&full_click());
    round_trip(&full_session());
    round_trip(&full_features());
    round_trip(&full_prediction());
    round_trip(&full_alert());
    round_trip(&full_dead_letter());
}

#[test]
fn empty_optionals_collections_and_bytes_round_trip() {
    round_trip(&ClickEvent::new("e", "", EventType::Login, -5));
    round_trip(&DeadLetter {
        key: None,
        payload: Vec::new(),
        ..full_dead_letter()
    });
    round_trip(&FeatureVector {
        values: FeatureValues::default(),
        item_id: None,
        category: None,
        ..full_features()
    });
    round_trip(&Prediction {
        next_actions: vec![],
        predicted_path: vec![],
        factors: vec![],
        ..full_prediction()
    });
}

#[test]
fn rust_fields_match_schema_fields_in_order() {
    assert_same_fields(&full_click());
    assert_same_fields(&full_session());
    assert_same_fields(&full_features());
    assert_same_fields(&full_prediction());
    assert_same_fields(&full_alert());
    assert_same_fields(&full_dead_letter());
}

fn enum_symbols(schema: &Schema, name: &str) -> Vec<String> {
    let mut found = None;
    find_enum(schema, name, &mut found);
    found.unwrap_or_else(|| panic!("enum {name} not found"))
}

fn find_enum(schema: &Schema, name: &str, found: &mut Option<Vec<String>>) {
    match schema {
        Schema::Enum(e) if e.name.name == name => *found = Some(e.symbols.clone()),
        Schema::Record(r) => r
            .fields
            .iter()
            .for_each(|f| find_enum(&f.schema, name, found)),
        Schema::Union(u) => u.variants().iter().for_each(|v| find_enum(v, name, found)),
        Schema::Array(a) => find_enum(&a.items, name, found),
        _ => {}
    }
}

fn serde_names<T: serde::Serialize>(variants: &[T]) -> Vec<String> {
    variants
        .iter()
        .map(|v| {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn enum_symbols_follow_the_rust_order() {
    let click = shipped_schema::<ClickEvent>();
    let event_types: Vec<String> = EventType::ALL.iter().map(|t| t.as_str().into()).collect();
    assert_eq!(enum_symbols(&click, "EventType"), event_types);
    assert_eq!(serde_names(&EventType::ALL), event_types);
    for schema in [
        shipped_schema::<SessionSummary>(),
        shipped_schema::<FeatureVector>(),
        shipped_schema::<Prediction>(),
    ] {
        assert_eq!(enum_symbols(&schema, "EventType"), event_types);
    }
    use PaymentStatus::*;
    assert_eq!(
        enum_symbols(&click, "PaymentStatus"),
        serde_names(&[Succeeded, Failed, Pending])
    );
    use FunnelStage::*;
    assert_eq!(
        enum_symbols(&shipped_schema::<SessionSummary>(), "FunnelStage"),
        serde_names(&[
            Browse,
            FunnelStage::ProductView,
            Cart,
            Checkout,
            FunnelStage::Purchase
        ])
    );
    use AlertType::*;
    let alert = shipped_schema::<FraudAlert>();
    assert_eq!(
        enum_symbols(&alert, "AlertType"),
        serde_names(&[
            Velocity,
            BotCadence,
            CardTesting,
            AccountTakeover,
            CartStuffing,
            ImpossibleSequence,
            PriceAnomaly,
            ModelSurprise,
            AnomalyScore
        ])
    );
    use Severity::*;
    assert_eq!(
        enum_symbols(&alert, "Severity"),
        serde_names(&[Low, Medium, High, Critical])
    );
}

#[test]
fn every_enum_variant_round_trips() {
    for t in EventType::ALL {
        round_trip(&ClickEvent::new("e", "u", t, 1));
    }
    for status in [
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Pending,
    ] {
        let mut e = full_click();
        e.payment.as_mut().unwrap().status = status;
        round_trip(&e);
    }
    for alert_type in [
        AlertType::Velocity,
        AlertType::ModelSurprise,
        AlertType::AnomalyScore,
    ] {
        for severity in [Severity::Low, Severity::Critical] {
            round_trip(&FraudAlert {
                alert_type,
                severity,
                ..full_alert()
            });
        }
    }
}

/// Every field of every shipped schema carries a `doc`, copied from the Rust doc comment.
#[test]
fn every_schema_field_is_documented() {
    fn check(json: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        match json {
            serde_json::Value::Object(o) => {
                if let Some(serde_json::Value::Array(fields)) = o.get("fields") {
                    for f in fields {
                        let name = f["name"].as_str().unwrap_or("?");
                        if f.get("doc")
                            .and_then(|d| d.as_str())
                            .is_none_or(str::is_empty)
                        {
                            missing.push(format!("{path}.{name}"));
                        }
                        check(&f["type"], &format!("{path}.{name}"), missing);
                    }
                }
                for key in ["items", "values"] {
                    if let Some(inner) = o.get(key) {
                        check(inner, path, missing);
                    }
                }
            }
            serde_json::Value::Array(variants) => {
                variants.iter().for_each(|v| check(v, path, missing))
            }
            _ => {}
        }
    }
    let registry = EmbeddedRegistry::shipped();
    let mut missing = Vec::new();
    for subject in registry.subjects() {
        let id = registry.latest_id(subject).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(registry.schema_text(id).unwrap()).unwrap();
        check(&json, subject, &mut missing);
    }
    assert!(missing.is_empty(), "fields without doc: {missing:?}");
}

fn opt<T: Debug + Clone + 'static>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

/// Doubles without NaN (NaN != NaN would fail equality, not the codec).
fn double() -> impl Strategy<Value = f64> {
    use proptest::num::f64::*;
    NORMAL | SUBNORMAL | ZERO | INFINITE | NEGATIVE | POSITIVE
}

fn click_event() -> impl Strategy<Value = ClickEvent> {
    let ids = (any::<String>(), any::<String>(), opt(any::<String>()));
    let what = (
        proptest::sample::select(EventType::ALL.to_vec()),
        any::<i64>(),
        opt(any::<String>()),
        opt(any::<String>()),
        opt(any::<String>()),
        opt(double()),
        opt(any::<String>()),
        opt(any::<i32>()),
        opt(any::<String>()),
    );
    let payment = opt((
        proptest::sample::select(vec![
            PaymentStatus::Succeeded,
            PaymentStatus::Failed,
            PaymentStatus::Pending,
        ]),
        any::<String>(),
        opt(any::<String>()),
    ));
    let rest = (
        opt(any::<String>()),
        opt(double()),
        opt(any::<String>()),
        opt(any::<String>()),
        opt(any::<String>()),
        opt(any::<String>()),
        opt(any::<String>()),
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
    );
    (ids, what, payment, rest).prop_map(
        |(
            (event_id, user_id, session_id),
            (event_type, event_time, item_id, category, brand, price, currency, quantity, q),
            payment,
            (order_id, order_value, device, ip_prefix_hash, country, channel, referrer, extras),
        )| ClickEvent {
            event_id,
            user_id,
            session_id,
            event_type,
            event_time,
            item_id,
            category,
            brand,
            price,
            currency,
            quantity,
            search_query: q,
            payment: payment.map(|(status, method, card_fingerprint)| Payment {
                status,
                method,
                card_fingerprint,
            }),
            order_id,
            order_value,
            device,
            ip_prefix_hash,
            country,
            channel,
            referrer,
            extras,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_click_event_round_trips(event in click_event()) {
        let codec = Codec::embedded();
        let bytes = codec.encode(&event).unwrap();
        let id = codec.schema_id::<ClickEvent>().unwrap();
        let (written_id, body) = clickpath_schema::codec::split_header(&bytes).unwrap();
        prop_assert_eq!(written_id, id);
        prop_assert_eq!(&read_by_apache_avro::<ClickEvent>(body), &event);
        let back: ClickEvent = codec.decode(&bytes).unwrap();
        prop_assert_eq!(back, event);
    }
}
