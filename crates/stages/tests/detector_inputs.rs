//! The detector stage's two inputs driven directly (no broker): predictions reach the model-surprise rule, and
//! each user's open alerts are published to the query store and dropped when their cooldown passes.

use clickpath_core::rules::RulesConfig;
use clickpath_runtime::query::{Lookup, QueryStore};
use clickpath_runtime::{Context, Output, Stage, StageInput};
use clickpath_schema::codec::Codec;
use clickpath_schema::{
    ActionProbability, AlertType, ClickEvent, EventType, FraudAlert, Prediction,
};
use clickpath_stages::detector::{Detector, DetectorInput};
use std::collections::BTreeSet;

const T0: i64 = 1_767_571_200_000; // 2026-01-05
const NOW: i64 = T0 + 86_400_000;

/// The model says "add to cart" (0.9), "purchase" or "checkout"; the user only ever views products, so each
/// view costs `-ln(0.01 / (EventType::COUNT - 3))` nats (about 6.3), far above the default 4.0.
fn prediction(user: &str, i: i64) -> Prediction {
    Prediction {
        event_id: format!("e{i}"),
        user_id: user.into(),
        event_time: T0 + i * 5_000,
        model_version: "test".into(),
        purchase_probability: 0.2,
        next_actions: [
            (EventType::AddToCart, 0.9),
            (EventType::Purchase, 0.05),
            (EventType::BeginCheckout, 0.04),
        ]
        .into_iter()
        .map(|(event_type, probability)| ActionProbability {
            event_type,
            probability,
        })
        .collect(),
        predicted_path: vec![],
        factors: vec![],
        scoring_latency_us: 1,
        recommended_items: Vec::new(),
        recommended_categories: Vec::new(),
    }
}

fn view(user: &str, i: i64) -> ClickEvent {
    let mut e = ClickEvent::new(
        format!("e{i}"),
        user,
        EventType::ProductView,
        T0 + i * 5_000,
    );
    e.item_id = Some(format!("item-{i}"));
    e
}

fn feed(stage: &mut Detector, codec: &Codec, inputs: Vec<DetectorInput>) -> Vec<FraudAlert> {
    let mut outputs: Vec<Output> = Vec::new();
    for input in inputs {
        let mut ctx = Context::new(codec, &mut outputs, NOW).for_partition(0);
        stage.process(input, &mut ctx).unwrap();
    }
    outputs
        .iter()
        .map(|o| {
            assert_eq!(o.topic, "alerts");
            codec.decode(&o.payload).unwrap()
        })
        .collect()
}

/// Nine product views with a prediction after each.
fn stream(user: &str, with_predictions: bool) -> Vec<DetectorInput> {
    let mut inputs = Vec::new();
    for i in 0..9 {
        inputs.push(view(user, i).into());
        if with_predictions {
            inputs.push(prediction(user, i).into());
        }
    }
    inputs
}

#[test]
fn inputs_decode_by_topic_position() {
    let codec = Codec::embedded();
    assert_eq!(DetectorInput::ROLES.len(), 2);
    let ev = codec.encode(&view("u", 1)).unwrap();
    let p = codec.encode(&prediction("u", 1)).unwrap();
    assert_eq!(
        DetectorInput::decode(&codec, 0, &ev).unwrap(),
        DetectorInput::Event(view("u", 1))
    );
    assert_eq!(
        DetectorInput::decode(&codec, 1, &p).unwrap(),
        DetectorInput::Prediction(prediction("u", 1))
    );
    assert!(DetectorInput::decode(&codec, 1, &ev).is_err());
}

#[test]
fn predictions_drive_model_surprise_alerts() {
    let codec = Codec::embedded();
    let cfg = RulesConfig::default();
    let mut stage = Detector::new(&cfg, "alerts");
    let alerts = feed(&mut stage, &codec, stream("mallory", true));
    let surprise: Vec<&FraudAlert> = alerts
        .iter()
        .filter(|a| a.alert_type == AlertType::ModelSurprise)
        .collect();
    assert_eq!(surprise.len(), 1, "{alerts:#?}");
    assert_eq!(surprise[0].user_id, "mallory");
    // The 8 scored actions are views 1..=8 (view 0 has no prediction before it).
    let evidence: BTreeSet<&str> = surprise[0]
        .evidence_event_ids
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(evidence.len(), 8, "{evidence:?}");
    assert!(!evidence.contains("e0"));

    // Near miss: the same events without predictions raise no model-surprise alert.
    let mut stage = Detector::new(&cfg, "alerts");
    let alerts = feed(&mut stage, &codec, stream("mallory", false));
    assert!(
        alerts
            .iter()
            .all(|a| a.alert_type != AlertType::ModelSurprise),
        "{alerts:#?}"
    );
}

#[test]
fn open_alerts_are_published_per_user_and_expire_after_the_cooldown() {
    let codec = Codec::embedded();
    let cfg = RulesConfig::default();
    let mut stage = Detector::new(&cfg, "alerts");
    let store: QueryStore = stage.query_store().expect("the detector publishes views");
    store.set_assignment(&BTreeSet::from([0]), 1);
    let alerts = feed(&mut stage, &codec, stream("mallory", true));
    let surprise = alerts
        .iter()
        .find(|a| a.alert_type == AlertType::ModelSurprise)
        .unwrap();

    let Lookup::Local(v) = store.lookup("mallory") else {
        panic!("no view: {:?}", store.lookup("mallory"));
    };
    let open = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
    let s = open
        .iter()
        .find(|a| a["alert_type"] == "MODEL_SURPRISE")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(s["alert_id"], surprise.alert_id.as_str());
    assert_eq!(s["score"].as_f64().unwrap(), surprise.score);
    assert_eq!(s["opened_at"], surprise.window_end);
    assert!(s["severity"].is_string());
    // Small: only the summary fields, no reasons or evidence.
    let keys: BTreeSet<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "alert_id",
            "alert_type",
            "severity",
            "score",
            "opened_at",
            "updated_at"
        ])
    );
    assert_eq!(store.lookup("nobody"), Lookup::Unknown { partition: 0 });

    // Another user's event after the cooldown moves the watermark: the tick closes mallory's alerts.
    let later = ClickEvent::new(
        "late",
        "alice",
        EventType::PageView,
        T0 + cfg.cooldown_ms * 2,
    );
    feed(&mut stage, &codec, vec![later.into()]);
    assert!(matches!(store.lookup("mallory"), Lookup::Local(_)));
    let mut outputs = Vec::new();
    stage
        .tick(&mut Context::new(&codec, &mut outputs, NOW))
        .unwrap();
    assert_eq!(stage.open_alerts("mallory"), None);
    assert_eq!(store.lookup("mallory"), Lookup::Unknown { partition: 0 });
}

#[test]
fn views_come_back_when_a_partition_is_assigned_again() {
    let codec = Codec::embedded();
    let mut stage = Detector::new(&RulesConfig::default(), "alerts");
    let store = stage.query_store().unwrap();
    store.set_assignment(&BTreeSet::from([0]), 1);
    feed(&mut stage, &codec, stream("mallory", true));
    assert!(matches!(store.lookup("mallory"), Lookup::Local(_)));
    // An eager rebalance: everything revoked (the store drops the views, the stage its state),
    // then assigned again and restored from the changelog, as the run loop does.
    let changelog = stage.take_state_changes();
    stage.on_revoke(&[0]);
    assert_eq!(stage.open_alerts("mallory"), None);
    store.set_assignment(&BTreeSet::new(), 1);
    assert_eq!(store.lookup("mallory"), Lookup::Remote { partition: 0 });
    for c in &changelog {
        stage
            .restore(c.partition, &c.key, c.value.as_deref())
            .unwrap();
    }
    stage.on_assign(&[0]);
    assert_eq!(stage.open_alerts("mallory").map(<[_]>::len), Some(1));
    store.set_assignment(&BTreeSet::from([0]), 1);
    let Lookup::Local(v) = store.lookup("mallory") else {
        panic!("{:?}", store.lookup("mallory"));
    };
    assert_eq!(
        v,
        serde_json::to_value(stage.open_alerts("mallory").unwrap()).unwrap()
    );
}

/// A new owner of the partition, restored from the changelog records the first owner wrote, raises
/// the alert the first owner would have: the surprise window of the first half survives the move.
#[test]
fn a_new_owner_continues_the_rules_windows_from_the_changelog() {
    let codec = Codec::embedded();
    let cfg = RulesConfig::default();
    let inputs = stream("mallory", true);
    let cut = inputs.len() / 2;
    let mut uninterrupted = Detector::new(&cfg, "alerts");
    let reference = feed(&mut uninterrupted, &codec, inputs.clone());
    assert!(
        reference
            .iter()
            .any(|a| a.alert_type == AlertType::ModelSurprise)
    );

    let mut first = Detector::new(&cfg, "alerts");
    let mut got = feed(&mut first, &codec, inputs[..cut].to_vec());
    let mut log: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
    for c in first.take_state_changes() {
        assert_eq!(c.partition, 0);
        log.insert(c.key, c.value);
    }
    assert!(log.contains_key(&b""[..]), "the partition's statistics");
    assert!(log.contains_key(&b"mallory"[..]));
    first.on_revoke(&[0]);
    assert_eq!(first.state_entries(), 0);

    let mut second = Detector::new(&cfg, "alerts");
    for (k, v) in &log {
        second.restore(0, k, v.as_deref()).unwrap();
    }
    second.on_assign(&[0]);
    assert_eq!(second.state_entries(), 1);
    assert!(
        second.take_state_changes().is_empty(),
        "restoring is no change"
    );
    got.extend(feed(&mut second, &codec, inputs[cut..].to_vec()));
    assert_eq!(got, reference);

    // Without the changelog, the second half alone is too short a window to alert.
    let mut amnesiac = Detector::new(&cfg, "alerts");
    let alone = feed(&mut amnesiac, &codec, inputs[cut..].to_vec());
    assert!(
        alone
            .iter()
            .all(|a| a.alert_type != AlertType::ModelSurprise),
        "{alone:#?}"
    );
}
