//! Fully populated sample records shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use clickpath_schema::*;
use std::collections::BTreeMap;

/// A click event with every optional field set, unicode included.
pub fn full_click() -> ClickEvent {
    ClickEvent {
        event_id: "e-1".into(),
        user_id: "u-ß-ユーザー".into(),
        session_id: Some("s-1".into()),
        event_type: EventType::PaymentAttempt,
        event_time: 1_700_000_000_123,
        item_id: Some("item-9".into()),
        category: Some("electronics/phones".into()),
        brand: Some("Brånd 🚀".into()),
        price: Some(199.99),
        currency: Some("EUR".into()),
        quantity: Some(3),
        search_query: Some("téléphone".into()),
        payment: Some(Payment {
            status: PaymentStatus::Failed,
            method: "card".into(),
            card_fingerprint: Some("fp-abc".into()),
        }),
        order_id: Some("o-7".into()),
        order_value: Some(599.97),
        device: Some("mobile".into()),
        ip_prefix_hash: Some("h-42".into()),
        country: Some("DE".into()),
        channel: Some("email".into()),
        referrer: Some("https://example.invalid/".into()),
        extras: BTreeMap::from([("ab".into(), "B".into()), ("k".into(), "v".into())]),
    }
}

/// A session summary with a non-trivial path.
pub fn full_session() -> SessionSummary {
    SessionSummary {
        session_id: "u-1:1700000000000".into(),
        user_id: "u-1".into(),
        start_time: 1_700_000_000_000,
        end_time: 1_700_000_900_000,
        event_count: 12,
        path: vec![
            EventType::PageView,
            EventType::ProductView,
            EventType::AddToCart,
            EventType::Purchase,
        ],
        furthest_stage: FunnelStage::Purchase,
        purchased: true,
        order_value: 42.5,
        first_event_id: "e-1".into(),
        last_event_id: "e-12".into(),
        close_reason: "gap".into(),
        revision: 2,
        superseded_session_ids: vec!["u-1:1700000100000".into()],
        user_sessions: 3,
        outlook: Some(SessionOutlook {
            model_version: "outlook-0a1b2c3d".into(),
            return_probability: 0.42,
            return_horizon_hours: 168,
            segment: 2,
            segment_description: "buyers, deep in the funnel".into(),
        }),
    }
}

/// A feature vector with a few values.
pub fn full_features() -> FeatureVector {
    FeatureVector {
        event_id: "e-3".into(),
        user_id: "u-1".into(),
        event_type: EventType::Search,
        event_time: 1_700_000_000_500,
        spec_version: "v3".into(),
        values: FeatureValues::from([
            ("events_5m".into(), 7.0),
            ("cart_ratio".into(), 0.25),
            ("neg".into(), -1.5),
        ]),
        item_id: Some("i-9".into()),
        category: Some("shoes".into()),
    }
}

/// A prediction that uses `EventType` both inline and by reference.
pub fn full_prediction() -> Prediction {
    Prediction {
        event_id: "e-4".into(),
        user_id: "u-1".into(),
        event_time: 1_700_000_001_000,
        model_version: "baseline@3f2a9c".into(),
        purchase_probability: 0.73,
        next_actions: vec![
            ActionProbability {
                event_type: EventType::BeginCheckout,
                probability: 0.5,
            },
            ActionProbability {
                event_type: EventType::Login,
                probability: 0.1,
            },
        ],
        predicted_path: vec![EventType::BeginCheckout, EventType::Purchase],
        factors: vec![Factor {
            name: "cart_ratio".into(),
            contribution: -0.4,
        }],
        scoring_latency_us: 87,
        recommended_items: vec![
            RecommendedItem {
                item_id: "p-17".into(),
                score: 3.25,
            },
            RecommendedItem {
                item_id: "p-4".into(),
                score: -0.5,
            },
        ],
        recommended_categories: vec![
            RecommendedCategory {
                category: "kitchen".into(),
                probability: 0.5,
            },
            RecommendedCategory {
                category: "garden".into(),
                probability: 0.25,
            },
        ],
    }
}

/// A fraud alert with reasons and evidence.
pub fn full_alert() -> FraudAlert {
    FraudAlert {
        alert_id: "a-1".into(),
        user_id: "u-6".into(),
        alert_type: AlertType::CardTesting,
        severity: Severity::Critical,
        score: 9.5,
        reasons: vec!["6 failed payments".into(), "5 distinct cards".into()],
        evidence_event_ids: vec!["e-1".into(), "e-2".into()],
        window_start: 1_700_000_000_000,
        window_end: 1_700_000_060_000,
        detector_version: "rules@1".into(),
    }
}

/// A dead letter whose key and payload hold arbitrary bytes (not UTF-8).
pub fn full_dead_letter() -> DeadLetter {
    DeadLetter {
        source_topic: "clicks".into(),
        source_partition: 3,
        source_offset: 1_234_567,
        key: Some(vec![0xff, 0x00, 0x80]),
        payload: vec![0x00, 0x00, 0x00, 0x00, 0x01, 0xfe, 0xff],
        error_kind: "wrong_magic".into(),
        reason: "wrong magic byte 0x7b".into(),
        stage: "sessionizer".into(),
        failed_at: 1_700_000_002_000,
    }
}
