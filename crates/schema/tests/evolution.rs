//! Schema evolution: records written with an older (or differently shaped) writer schema decode
//! into the current type by Avro schema resolution, driven by the writer id in the header.

mod common;

use clickpath_schema::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

fn registry(versions: &[(&str, u32, &str)]) -> Arc<EmbeddedRegistry> {
    let mut r = EmbeddedRegistry::new();
    for (subject, id, json) in versions {
        r.register(subject, *id, json).unwrap();
    }
    Arc::new(r)
}

/// Encodes with `T` under a registry where `json` is the only (so newest) version.
fn write_with<T: AvroRecord>(id: u32, json: &str, value: &T) -> Vec<u8> {
    Codec::new(registry(&[(T::FULL_NAME, id, json)]))
        .encode(value)
        .unwrap()
}

const PROFILE: &str = "test.Profile";

const PROFILE_V1: &str = r#"{"type": "record", "name": "Profile", "namespace": "test", "fields": [
    {"name": "id", "type": "string"},
    {"name": "name", "type": "string"}
]}"#;

/// V1 plus `tier` (default "basic") and an optional `visits` (default null).
const PROFILE_V2_ADDED: &str = r#"{"type": "record", "name": "Profile", "namespace": "test", "fields": [
    {"name": "id", "type": "string"},
    {"name": "name", "type": "string"},
    {"name": "tier", "type": "string", "default": "basic"},
    {"name": "visits", "type": ["null", "int"], "default": null}
]}"#;

/// An old writer that still had `legacy_score` and `tags` between and after V1's fields.
const PROFILE_V0_EXTRA: &str = r#"{"type": "record", "name": "Profile", "namespace": "test", "fields": [
    {"name": "id", "type": "string"},
    {"name": "legacy_score", "type": "double"},
    {"name": "name", "type": "string"},
    {"name": "tags", "type": {"type": "array", "items": "string"}}
]}"#;

/// V1 plus `tier` with no default: old records cannot fill it.
const PROFILE_V2_REQUIRED: &str = r#"{"type": "record", "name": "Profile", "namespace": "test", "fields": [
    {"name": "id", "type": "string"},
    {"name": "name", "type": "string"},
    {"name": "tier", "type": "string"}
]}"#;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ProfileV1 {
    id: String,
    name: String,
}

impl AvroRecord for ProfileV1 {
    const FULL_NAME: &'static str = PROFILE;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ProfileV2 {
    id: String,
    name: String,
    tier: String,
    visits: Option<i32>,
}

impl AvroRecord for ProfileV2 {
    const FULL_NAME: &'static str = PROFILE;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ProfileV0 {
    id: String,
    legacy_score: f64,
    name: String,
    tags: Vec<String>,
}

impl AvroRecord for ProfileV0 {
    const FULL_NAME: &'static str = PROFILE;
}

#[test]
fn a_new_reader_field_is_filled_from_its_default() {
    let old = ProfileV1 {
        id: "p1".into(),
        name: "Ada".into(),
    };
    let bytes = write_with(10, PROFILE_V1, &old);
    let reader = Codec::new(registry(&[
        (PROFILE, 10, PROFILE_V1),
        (PROFILE, 11, PROFILE_V2_ADDED),
    ]));
    let new: ProfileV2 = reader.decode(&bytes).unwrap();
    assert_eq!(
        new,
        ProfileV2 {
            id: "p1".into(),
            name: "Ada".into(),
            tier: "basic".into(),
            visits: None,
        }
    );
    // The reader writes new records with the newest id, and those decode without resolution.
    assert_eq!(reader.schema_id::<ProfileV2>().unwrap(), 11);
    let again: ProfileV2 = reader.decode(&reader.encode(&new).unwrap()).unwrap();
    assert_eq!(again, new);
}

#[test]
fn a_writer_field_the_reader_lacks_is_skipped() {
    let old = ProfileV0 {
        id: "p2".into(),
        legacy_score: 0.5,
        name: "Grace".into(),
        tags: vec!["a".into(), "b".into()],
    };
    let bytes = write_with(20, PROFILE_V0_EXTRA, &old);
    let reader = Codec::new(registry(&[
        (PROFILE, 20, PROFILE_V0_EXTRA),
        (PROFILE, 21, PROFILE_V1),
    ]));
    let current: ProfileV1 = reader.decode(&bytes).unwrap();
    assert_eq!(
        current,
        ProfileV1 {
            id: "p2".into(),
            name: "Grace".into(),
        }
    );
}

#[test]
fn a_new_field_without_default_cannot_read_old_records() {
    let bytes = write_with(
        30,
        PROFILE_V1,
        &ProfileV1 {
            id: "p3".into(),
            name: "Lin".into(),
        },
    );
    let reader = Codec::new(registry(&[
        (PROFILE, 30, PROFILE_V1),
        (PROFILE, 31, PROFILE_V2_REQUIRED),
    ]));
    let err = reader.decode::<ProfileV2>(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Resolution {
                writer_id: 30,
                reader_id: 31,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), "schema_resolution");
}

#[test]
fn the_writer_id_selects_the_schema_not_the_reader() {
    // Same bytes, two registries: only the one that knows id 10 as V1 can read them.
    let bytes = write_with(
        10,
        PROFILE_V1,
        &ProfileV1 {
            id: "p4".into(),
            name: "Kay".into(),
        },
    );
    let without_old = Codec::new(registry(&[(PROFILE, 11, PROFILE_V2_ADDED)]));
    assert!(matches!(
        without_old.decode::<ProfileV2>(&bytes),
        Err(CodecError::UnknownSchemaId(10))
    ));
}

/// The first ClickEvent version, before the marketing and payment fields existed.
const CLICK_EVENT_V0: &str = r#"{"type": "record", "name": "ClickEvent", "namespace": "io.clickpath", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "user_id", "type": "string"},
    {"name": "event_type", "type": {"type": "enum", "name": "EventType",
        "symbols": ["PAGE_VIEW", "PRODUCT_VIEW", "SEARCH", "ADD_TO_CART", "REMOVE_FROM_CART",
                    "WISHLIST", "BEGIN_CHECKOUT", "PAYMENT_ATTEMPT", "PURCHASE", "LOGIN"]}},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "item_id", "type": ["null", "string"], "default": null},
    {"name": "price", "type": ["null", "double"], "default": null}
]}"#;

#[derive(Debug, Serialize, Deserialize)]
struct ClickEventV0 {
    event_id: String,
    user_id: String,
    event_type: EventType,
    event_time: i64,
    item_id: Option<String>,
    price: Option<f64>,
}

impl AvroRecord for ClickEventV0 {
    const FULL_NAME: &'static str = ClickEvent::FULL_NAME;
}

#[test]
fn old_click_events_decode_into_the_current_type() {
    let shipped = EmbeddedRegistry::shipped();
    let current = shipped
        .schema_text(shipped.latest_id(ClickEvent::FULL_NAME).unwrap())
        .unwrap();
    let bytes = write_with(
        100,
        CLICK_EVENT_V0,
        &ClickEventV0 {
            event_id: "e-old".into(),
            user_id: "u-1".into(),
            event_type: EventType::AddToCart,
            event_time: 1_600_000_000_000,
            item_id: Some("i-1".into()),
            price: Some(9.5),
        },
    );
    let reader = Codec::new(registry(&[
        (ClickEvent::FULL_NAME, 100, CLICK_EVENT_V0),
        (ClickEvent::FULL_NAME, 101, current),
    ]));
    let event: ClickEvent = reader.decode(&bytes).unwrap();
    let mut expected = ClickEvent::new("e-old", "u-1", EventType::AddToCart, 1_600_000_000_000);
    expected.item_id = Some("i-1".into());
    expected.price = Some(9.5);
    assert_eq!(event, expected);
}

/// `SessionSummary` as version 1 (id 2) wrote it: no `revision`, no `superseded_session_ids`.
#[derive(Debug, Serialize, Deserialize)]
struct SessionSummaryV1 {
    session_id: String,
    user_id: String,
    start_time: i64,
    end_time: i64,
    event_count: i32,
    path: Vec<EventType>,
    furthest_stage: FunnelStage,
    purchased: bool,
    order_value: f64,
    first_event_id: String,
    last_event_id: String,
    close_reason: String,
}

impl AvroRecord for SessionSummaryV1 {
    const FULL_NAME: &'static str = SessionSummary::FULL_NAME;
}

#[test]
fn v1_session_summaries_decode_as_first_publications() {
    let shipped = EmbeddedRegistry::shipped();
    let v1 = shipped.schema_text(2).unwrap();
    let bytes = write_with(
        2,
        v1,
        &SessionSummaryV1 {
            session_id: "u-1:5".into(),
            user_id: "u-1".into(),
            start_time: 5,
            end_time: 9,
            event_count: 2,
            path: vec![EventType::PageView, EventType::Search],
            furthest_stage: FunnelStage::Browse,
            purchased: false,
            order_value: 0.0,
            first_event_id: "a".into(),
            last_event_id: "b".into(),
            close_reason: "gap".into(),
        },
    );
    // The shipped codec writes v3 (id 13) and resolves v1 records (id 2) against it.
    let codec = Codec::embedded();
    assert_eq!(codec.schema_id::<SessionSummary>().unwrap(), 13);
    let s: SessionSummary = codec.decode(&bytes).unwrap();
    assert_eq!((s.revision, s.superseded_session_ids.len()), (0, 0));
    assert_eq!((s.session_id.as_str(), s.event_count), ("u-1:5", 2));
    assert_eq!(s.path, vec![EventType::PageView, EventType::Search]);
}

fn alert(alert_type: AlertType) -> FraudAlert {
    FraudAlert {
        alert_id: "u-1:CARD_TESTING:5".into(),
        user_id: "u-1".into(),
        alert_type,
        severity: Severity::High,
        score: 2.0,
        reasons: vec!["why".into()],
        evidence_event_ids: vec!["a".into()],
        window_start: 5,
        window_end: 9,
        detector_version: "rules@1".into(),
    }
}

#[test]
fn fraud_alerts_v1_still_decode_and_v1_readers_refuse_only_the_new_type() {
    let shipped = EmbeddedRegistry::shipped();
    let v1 = shipped.schema_text(5).unwrap();
    // Alerts written before ANOMALY_SCORE (id 5) decode with the current codec (which writes id 10).
    let old = write_with(5, v1, &alert(AlertType::CardTesting));
    let codec = Codec::embedded();
    assert_eq!(codec.schema_id::<FraudAlert>().unwrap(), 10);
    let a: FraudAlert = codec.decode(&old).unwrap();
    assert_eq!(a, alert(AlertType::CardTesting));
    // A consumer still reading with v1 (its newest schema): every other type decodes, the new
    // symbol cannot, which is why schemas/README.md says to upgrade alert consumers first.
    let v2 = shipped.schema_text(10).unwrap();
    let v1_reader = Codec::new(registry(&[
        (FraudAlert::FULL_NAME, 10, v2),
        (FraudAlert::FULL_NAME, 5, v1),
    ]));
    let known_type = write_with(10, v2, &alert(AlertType::Velocity));
    let a: FraudAlert = v1_reader.decode(&known_type).unwrap();
    assert_eq!(a.alert_type, AlertType::Velocity);
    let new_type = write_with(10, v2, &alert(AlertType::AnomalyScore));
    assert!(v1_reader.decode::<FraudAlert>(&new_type).is_err());
}

fn funnel_row() -> FunnelAggregate {
    FunnelAggregate {
        instance: "pod-0".into(),
        bucket_start: 3_600_000,
        bucket_ms: 3_600_000,
        steps: vec!["PRODUCT_VIEW".into(), "PURCHASE".into()],
        funnel_order: "ordered".into(),
        window_ms: 60_000,
        segment: "all".into(),
        segment_value: String::new(),
        uniques: vec![4, 1],
        totals: vec![5, 1],
        median_step_ms: vec![Some(1_000)],
        p90_step_ms: vec![Some(2_000)],
        median_convert_ms: Some(1_000),
        p90_convert_ms: Some(2_000),
        partition: FunnelAggregate::ALL_PARTITIONS,
    }
}

/// A funnel row as version 1 had it (no `partition`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FunnelRowV1 {
    instance: String,
    bucket_start: i64,
    bucket_ms: i64,
    steps: Vec<String>,
    funnel_order: String,
    window_ms: i64,
    segment: String,
    segment_value: String,
    uniques: Vec<i64>,
    totals: Vec<i64>,
    median_step_ms: Vec<Option<i64>>,
    p90_step_ms: Vec<Option<i64>>,
    median_convert_ms: Option<i64>,
    p90_convert_ms: Option<i64>,
}

impl AvroRecord for FunnelRowV1 {
    const FULL_NAME: &'static str = FunnelAggregate::FULL_NAME;
}

impl From<FunnelAggregate> for FunnelRowV1 {
    fn from(r: FunnelAggregate) -> Self {
        FunnelRowV1 {
            instance: r.instance,
            bucket_start: r.bucket_start,
            bucket_ms: r.bucket_ms,
            steps: r.steps,
            funnel_order: r.funnel_order,
            window_ms: r.window_ms,
            segment: r.segment,
            segment_value: r.segment_value,
            uniques: r.uniques,
            totals: r.totals,
            median_step_ms: r.median_step_ms,
            p90_step_ms: r.p90_step_ms,
            median_convert_ms: r.median_convert_ms,
            p90_convert_ms: r.p90_convert_ms,
        }
    }
}

#[test]
fn funnel_rows_v1_decode_as_counting_every_partition_and_v1_readers_skip_the_partition() {
    let shipped = EmbeddedRegistry::shipped();
    let (v1, v2) = (
        shipped.schema_text(8).unwrap(),
        shipped.schema_text(11).unwrap(),
    );
    let codec = Codec::embedded();
    assert_eq!(codec.schema_id::<FunnelAggregate>().unwrap(), 11);
    // A row written before per-partition rows (id 8) reads as counting every partition.
    let old = write_with(8, v1, &FunnelRowV1::from(funnel_row()));
    assert_eq!(codec.decode::<FunnelAggregate>(&old).unwrap(), funnel_row());
    // A consumer still reading with version 1 decodes a version-2 row, without its partition.
    let mut row = funnel_row();
    row.partition = 3;
    let new = write_with(11, v2, &row);
    assert_eq!(codec.decode::<FunnelAggregate>(&new).unwrap().partition, 3);
    let v1_reader = Codec::new(registry(&[
        (FunnelAggregate::FULL_NAME, 11, v2),
        (FunnelAggregate::FULL_NAME, 8, v1),
    ]));
    assert_eq!(
        v1_reader.decode::<FunnelRowV1>(&new).unwrap(),
        FunnelRowV1::from(funnel_row())
    );
}

/// A prediction as version 1 had it (no `recommended_items`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct PredictionV1 {
    event_id: String,
    user_id: String,
    event_time: i64,
    model_version: String,
    purchase_probability: f64,
    next_actions: Vec<ActionProbability>,
    predicted_path: Vec<EventType>,
    factors: Vec<Factor>,
    scoring_latency_us: i64,
}

impl AvroRecord for PredictionV1 {
    const FULL_NAME: &'static str = Prediction::FULL_NAME;
}

impl From<Prediction> for PredictionV1 {
    fn from(p: Prediction) -> Self {
        PredictionV1 {
            event_id: p.event_id,
            user_id: p.user_id,
            event_time: p.event_time,
            model_version: p.model_version,
            purchase_probability: p.purchase_probability,
            next_actions: p.next_actions,
            predicted_path: p.predicted_path,
            factors: p.factors,
            scoring_latency_us: p.scoring_latency_us,
        }
    }
}

fn prediction_with_items() -> Prediction {
    Prediction {
        event_id: "e-9".into(),
        user_id: "u-3".into(),
        event_time: 1_700_000_002_000,
        model_version: "gru-14e28605".into(),
        purchase_probability: 0.25,
        next_actions: vec![ActionProbability {
            event_type: EventType::AddToCart,
            probability: 0.4,
        }],
        predicted_path: vec![EventType::AddToCart],
        factors: Vec::new(),
        scoring_latency_us: 120,
        recommended_items: vec![
            RecommendedItem {
                item_id: "p-81".into(),
                score: 4.5,
            },
            RecommendedItem {
                item_id: "p-2".into(),
                score: 1.0,
            },
        ],
        recommended_categories: vec![RecommendedCategory {
            category: "shoes".into(),
            probability: 0.375,
        }],
    }
}

#[test]
fn predictions_v1_decode_without_items_and_v1_readers_skip_them() {
    let shipped = EmbeddedRegistry::shipped();
    let (v1, v3) = (
        shipped.schema_text(4).unwrap(),
        shipped.schema_text(14).unwrap(),
    );
    let codec = Codec::embedded();
    assert_eq!(codec.schema_id::<Prediction>().unwrap(), 14);
    // A prediction written before recommendations (id 4) reads with empty lists.
    let mut plain = prediction_with_items();
    plain.recommended_items.clear();
    plain.recommended_categories.clear();
    let old = write_with(4, v1, &PredictionV1::from(plain.clone()));
    assert_eq!(codec.decode::<Prediction>(&old).unwrap(), plain);
    // A downstream service still reading with version 1 decodes a version-3 prediction, without its
    // recommendations.
    let new = codec.encode(&prediction_with_items()).unwrap();
    assert_eq!(
        codec.decode::<Prediction>(&new).unwrap(),
        prediction_with_items()
    );
    let v1_reader = Codec::new(registry(&[
        (Prediction::FULL_NAME, 14, v3),
        (Prediction::FULL_NAME, 4, v1),
    ]));
    assert_eq!(
        v1_reader.decode::<PredictionV1>(&new).unwrap(),
        PredictionV1::from(prediction_with_items())
    );
}

/// A prediction as version 2 had it (items, no `recommended_categories`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct PredictionV2 {
    event_id: String,
    user_id: String,
    event_time: i64,
    model_version: String,
    purchase_probability: f64,
    next_actions: Vec<ActionProbability>,
    predicted_path: Vec<EventType>,
    factors: Vec<Factor>,
    scoring_latency_us: i64,
    recommended_items: Vec<RecommendedItem>,
}

impl AvroRecord for PredictionV2 {
    const FULL_NAME: &'static str = Prediction::FULL_NAME;
}

impl From<Prediction> for PredictionV2 {
    fn from(p: Prediction) -> Self {
        PredictionV2 {
            event_id: p.event_id,
            user_id: p.user_id,
            event_time: p.event_time,
            model_version: p.model_version,
            purchase_probability: p.purchase_probability,
            next_actions: p.next_actions,
            predicted_path: p.predicted_path,
            factors: p.factors,
            scoring_latency_us: p.scoring_latency_us,
            recommended_items: p.recommended_items,
        }
    }
}

#[test]
fn predictions_v2_decode_without_categories_and_v2_readers_skip_them() {
    let shipped = EmbeddedRegistry::shipped();
    let (v2, v3) = (
        shipped.schema_text(12).unwrap(),
        shipped.schema_text(14).unwrap(),
    );
    assert!(!v2.contains("recommended_categories") && v3.contains("recommended_categories"));
    let codec = Codec::embedded();
    // A version-2 prediction (items, no categories) reads with an empty category list.
    let mut items_only = prediction_with_items();
    items_only.recommended_categories.clear();
    let old = write_with(12, v2, &PredictionV2::from(items_only.clone()));
    assert_eq!(codec.decode::<Prediction>(&old).unwrap(), items_only);
    // A version-2 reader decodes a version-3 prediction with its items, without its categories.
    let new = codec.encode(&prediction_with_items()).unwrap();
    let v2_reader = Codec::new(registry(&[
        (Prediction::FULL_NAME, 14, v3),
        (Prediction::FULL_NAME, 12, v2),
    ]));
    let read = v2_reader.decode::<PredictionV2>(&new).unwrap();
    assert_eq!(read, PredictionV2::from(prediction_with_items()));
    assert_eq!(read.recommended_items.len(), 2);
}

/// A session summary as version 2 had it (no `user_sessions`, no `outlook`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SessionSummaryV2 {
    session_id: String,
    user_id: String,
    start_time: i64,
    end_time: i64,
    event_count: i32,
    path: Vec<EventType>,
    furthest_stage: FunnelStage,
    purchased: bool,
    order_value: f64,
    first_event_id: String,
    last_event_id: String,
    close_reason: String,
    revision: i32,
    superseded_session_ids: Vec<String>,
}

impl AvroRecord for SessionSummaryV2 {
    const FULL_NAME: &'static str = SessionSummary::FULL_NAME;
}

impl From<SessionSummary> for SessionSummaryV2 {
    fn from(s: SessionSummary) -> Self {
        SessionSummaryV2 {
            session_id: s.session_id,
            user_id: s.user_id,
            start_time: s.start_time,
            end_time: s.end_time,
            event_count: s.event_count,
            path: s.path,
            furthest_stage: s.furthest_stage,
            purchased: s.purchased,
            order_value: s.order_value,
            first_event_id: s.first_event_id,
            last_event_id: s.last_event_id,
            close_reason: s.close_reason,
            revision: s.revision,
            superseded_session_ids: s.superseded_session_ids,
        }
    }
}

#[test]
fn session_summaries_v2_decode_without_an_outlook_and_v2_readers_skip_it() {
    let shipped = EmbeddedRegistry::shipped();
    let (v2, v3) = (
        shipped.schema_text(7).unwrap(),
        shipped.schema_text(13).unwrap(),
    );
    let codec = Codec::embedded();
    let with_outlook = common::full_session();
    assert!(with_outlook.outlook.is_some() && with_outlook.user_sessions > 0);
    // A summary written before version 3 (id 7) reads with no count and no outlook.
    let old = write_with(7, v2, &SessionSummaryV2::from(with_outlook.clone()));
    let read = codec.decode::<SessionSummary>(&old).unwrap();
    assert_eq!((read.user_sessions, read.outlook.as_ref()), (0, None));
    assert_eq!(
        SessionSummaryV2::from(read),
        SessionSummaryV2::from(with_outlook.clone())
    );
    // Version 3 round-trips; a consumer still on version 2 decodes it without the new fields.
    let new = codec.encode(&with_outlook).unwrap();
    assert_eq!(codec.decode::<SessionSummary>(&new).unwrap(), with_outlook);
    let v2_reader = Codec::new(registry(&[
        (SessionSummary::FULL_NAME, 13, v3),
        (SessionSummary::FULL_NAME, 7, v2),
    ]));
    assert_eq!(
        v2_reader.decode::<SessionSummaryV2>(&new).unwrap(),
        SessionSummaryV2::from(with_outlook)
    );
}
