//! Every stage's `process` driven directly, with no broker: outputs decoded and checked.

use clickpath_runtime::{Context, Output, Stage, StageError};
use clickpath_schema::codec::{AvroRecord, Codec};
use clickpath_schema::{
    AlertType, ClickEvent, EventType, FeatureVector, FraudAlert, FunnelStage, Payment,
    PaymentStatus, Prediction, SessionSummary,
};
use clickpath_stages::cleaning::Cleaning;
use clickpath_stages::config::{CleaningConfig, ClickpathConfig, ScorerConfig};
use clickpath_stages::detector::Detector;
use clickpath_stages::scorer::Scorer;
use clickpath_stages::sessionizer::Sessionizer;
use clickpath_stages::topology::builtin_model;
use clickpath_stages::windower::Windower;

const T0: i64 = 1_767_571_200_000; // 2026-01-05
const NOW: i64 = T0 + 86_400_000;

/// Feeds `events` to `stage` (all on `partition`), returns the outputs and per-event results.
fn feed<S: Stage>(
    stage: &mut S,
    codec: &Codec,
    events: Vec<(i32, S::Input)>,
) -> (Vec<Output>, Vec<Result<(), StageError>>) {
    let mut outputs = Vec::new();
    let mut results = Vec::new();
    for (partition, ev) in events {
        let mut ctx = Context::new(codec, &mut outputs, NOW).for_partition(partition);
        results.push(stage.process(ev, &mut ctx));
    }
    (outputs, results)
}

fn shutdown<S: Stage>(stage: &mut S, codec: &Codec) -> Vec<Output> {
    let mut outputs = Vec::new();
    let mut ctx = Context::new(codec, &mut outputs, NOW);
    stage.on_shutdown(&mut ctx).unwrap();
    outputs
}

fn decode_all<T: AvroRecord>(codec: &Codec, outputs: &[Output], topic: &str) -> Vec<T> {
    outputs
        .iter()
        .filter(|o| o.topic == topic)
        .map(|o| codec.decode(&o.payload).unwrap())
        .collect()
}

fn ev(id: &str, user: &str, t: EventType, at: i64) -> ClickEvent {
    ClickEvent::new(id, user, t, at)
}

#[test]
fn cleaning_rejects_bad_events_drops_duplicates_and_keys_by_user() {
    let codec = Codec::embedded();
    let mut stage = Cleaning::new(&CleaningConfig::default(), "clean");
    let mut negative = ev("e3", "u1", EventType::ProductView, T0 + 3);
    negative.price = Some(-5.0);
    let mut spaced = ev(" e4 ", "u2", EventType::ProductView, T0 + 4);
    spaced.country = Some("de".into());
    let (outputs, results) = feed(
        &mut stage,
        &codec,
        vec![
            (0, ev("e1", "u1", EventType::PageView, T0)),
            (0, ev("e1", "u1", EventType::PageView, T0)), // duplicate
            (0, ev("e2", "", EventType::PageView, T0 + 2)), // no user
            (0, negative),
            (1, spaced),
            (0, ev("e5", "u1", EventType::PageView, NOW + 2 * 86_400_000)), // far future
        ],
    );
    let kinds: Vec<Option<&str>> = results
        .iter()
        .map(|r| match r {
            Ok(()) => None,
            Err(StageError::Rejected { kind, .. }) => Some(*kind),
            Err(StageError::Fatal(e)) => panic!("fatal: {e}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            None,
            None,
            Some("missing_field"),
            Some("bad_value"),
            None,
            Some("bad_time")
        ]
    );
    let clean: Vec<ClickEvent> = decode_all(&codec, &outputs, "clean");
    assert_eq!(
        clean
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["e1", "e4"]
    );
    assert_eq!(clean[1].country.as_deref(), Some("DE"), "normalised");
    assert_eq!(outputs[0].key, b"u1");
    assert_eq!(stage.duplicates_dropped(), 1);
}

#[test]
fn sessionizer_keeps_partitions_apart_and_publishes_closed_sessions() {
    let codec = Codec::embedded();
    let cfg = ClickpathConfig::default().sessionizer;
    let mut stage = Sessionizer::new(&cfg, "sessions", "late", true);
    let gap = cfg.gap_ms;
    let mut purchase = ev("a3", "alice", EventType::Purchase, T0 + 120_000);
    purchase.order_value = Some(42.0);
    let (outputs, _) = feed(
        &mut stage,
        &codec,
        vec![
            (0, ev("a1", "alice", EventType::PageView, T0)),
            (0, ev("a2", "alice", EventType::ProductView, T0 + 60_000)),
            (0, purchase),
            // Partition 1 runs hours ahead: it must not close alice's session on partition 0.
            (1, ev("b1", "bob", EventType::PageView, T0 + 10 * gap)),
            (1, ev("b2", "bob", EventType::PageView, T0 + 10 * gap + 1)),
            (0, ev("a4", "alice", EventType::PageView, T0 + 180_000)),
        ],
    );
    assert!(
        decode_all::<SessionSummary>(&codec, &outputs, "sessions").is_empty(),
        "nothing closed yet"
    );
    let closed: Vec<SessionSummary> = decode_all(&codec, &shutdown(&mut stage, &codec), "sessions");
    let alice = closed
        .iter()
        .find(|s| s.user_id == "alice")
        .expect("alice's session");
    assert_eq!(
        alice.event_count, 4,
        "the later partition-0 event joined the open session"
    );
    assert_eq!(alice.furthest_stage, FunnelStage::Purchase);
    assert!(alice.purchased);
    assert_eq!(alice.order_value, 42.0);
    assert_eq!(
        alice.path,
        vec![
            EventType::PageView,
            EventType::ProductView,
            EventType::Purchase,
            EventType::PageView
        ]
    );
    assert_eq!(closed.iter().filter(|s| s.user_id == "bob").count(), 1);
}

/// An outlook model by hand: buyers return (the regression weighs `purchased`), and two segments,
/// buyers and non-buyers.
fn buyer_outlook() -> clickpath_model::outlook::OutlookModel {
    use clickpath_model::logistic::{LogisticModel, LogisticParams};
    use clickpath_model::outlook::{FEATURES, OutlookModel, Segments, describe};
    let mut names: Vec<String> = FEATURES.iter().map(|s| s.to_string()).collect();
    names.sort();
    let weights = names
        .iter()
        .map(|n| if n == "purchased" { 3.0 } else { 0.0 })
        .collect();
    let returns = LogisticModel::try_from(LogisticParams {
        means: vec![0.0; names.len()],
        stds: vec![1.0; names.len()],
        feature_names: names,
        weights,
        bias: -1.5,
    })
    .unwrap();
    let purchased = FEATURES.iter().position(|f| *f == "purchased").unwrap();
    let centroid = |z: f64| {
        let mut c = vec![0.0; FEATURES.len()];
        c[purchased] = z;
        c
    };
    let centroids = vec![centroid(-1.0), centroid(1.0)];
    let segments = Segments {
        means: vec![0.0; FEATURES.len()],
        stds: vec![1.0; FEATURES.len()],
        descriptions: centroids.iter().map(|c| describe(c)).collect(),
        centroids,
    };
    OutlookModel::new("outlook-test".into(), 48, returns, segments)
}

#[test]
fn sessionizer_publishes_each_closed_session_with_the_outlook() {
    let codec = Codec::embedded();
    let cfg = ClickpathConfig::default().sessionizer;
    let mut stage = Sessionizer::new(&cfg, "sessions", "late", true)
        .with_outlook(Some(std::sync::Arc::new(buyer_outlook())));
    let mut purchase = ev("a2", "alice", EventType::Purchase, T0 + 60_000);
    purchase.order_value = Some(20.0);
    let (during, _) = feed(
        &mut stage,
        &codec,
        vec![
            (0, ev("a1", "alice", EventType::ProductView, T0)),
            (0, purchase),
            (0, ev("b1", "bob", EventType::PageView, T0)),
            // Bob comes back two hours later: his second session counts the first.
            (0, ev("b2", "bob", EventType::PageView, T0 + 2 * 3_600_000)),
        ],
    );
    // Bob's return closes the first sessions; the rest close at shutdown.
    let mut closed: Vec<SessionSummary> = decode_all(&codec, &during, "sessions");
    closed.extend(decode_all::<SessionSummary>(
        &codec,
        &shutdown(&mut stage, &codec),
        "sessions",
    ));
    assert_eq!(closed.len(), 3);
    assert!(closed.iter().all(|s| s.outlook.is_some()));
    let outlook = |user: &str| {
        closed
            .iter()
            .find(|s| s.user_id == user)
            .and_then(|s| s.outlook.clone())
            .expect("an outlook on every session")
    };
    let (alice, bob) = (outlook("alice"), outlook("bob"));
    let bobs: Vec<(i64, i64)> = closed
        .iter()
        .filter(|s| s.user_id == "bob")
        .map(|s| (s.start_time, s.user_sessions))
        .collect();
    assert_eq!(bobs, vec![(T0, 1), (T0 + 2 * 3_600_000, 2)]);
    assert_eq!((alice.segment, bob.segment), (1, 0));
    assert_eq!(alice.segment_description, "buyers");
    assert_eq!(bob.segment_description, "non-buyers");
    assert!(alice.return_probability > 0.8 && bob.return_probability < 0.2);
    assert_eq!(
        (alice.model_version.as_str(), alice.return_horizon_hours),
        ("outlook-test", 48)
    );
    assert_eq!(
        closed
            .iter()
            .find(|s| s.user_id == "alice")
            .unwrap()
            .user_sessions,
        1
    );
}

#[test]
fn sessionizer_funnel_stages_are_configurable() {
    let codec = Codec::embedded();
    let mut cfg = ClickpathConfig::default().sessionizer;
    cfg.funnel.wishlist = FunnelStage::Cart;
    let mut stage = Sessionizer::new(&cfg, "sessions", "late", true);
    feed(
        &mut stage,
        &codec,
        vec![
            (0, ev("w1", "wendy", EventType::PageView, T0)),
            (0, ev("w2", "wendy", EventType::Wishlist, T0 + 1000)),
        ],
    );
    let closed: Vec<SessionSummary> = decode_all(&codec, &shutdown(&mut stage, &codec), "sessions");
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0].furthest_stage,
        FunnelStage::Cart,
        "a wishlist counts as cart here"
    );
}

#[test]
fn windower_emits_one_feature_vector_per_event() {
    let codec = Codec::embedded();
    let mut stage = Windower::new(&ClickpathConfig::default().windower, "features");
    let (outputs, _) = feed(
        &mut stage,
        &codec,
        vec![
            (0, ev("e1", "u1", EventType::ProductView, T0)),
            (0, ev("e2", "u1", EventType::ProductView, T0 + 1000)),
            (0, ev("e3", "u2", EventType::PageView, T0 + 2000)),
        ],
    );
    let fvs: Vec<FeatureVector> = decode_all(&codec, &outputs, "features");
    assert_eq!(fvs.len(), 3);
    assert_eq!(fvs[1].values["product_views_5m"], 2.0);
    assert_eq!(
        fvs[2].values["product_views_5m"], 0.0,
        "u2 has its own window"
    );
    assert_eq!(stage.state_entries(), 2);
}

#[test]
fn shipped_baseline_model_loads_and_scores() {
    let cfg = ClickpathConfig::default();
    let model =
        builtin_model(&cfg.windower).expect("models/baseline still loads into the current code");
    assert!(model.version.starts_with("baseline-"));
    let codec = Codec::embedded();
    let mut windower = Windower::new(&cfg.windower, "features");
    let mut scorer = Scorer::new(model, &ScorerConfig::default(), "predictions");
    let mut checkout = ev("e3", "u1", EventType::BeginCheckout, T0 + 60_000);
    checkout.order_value = Some(80.0);
    let (features, _) = feed(
        &mut windower,
        &codec,
        vec![
            (0, ev("e1", "u1", EventType::ProductView, T0)),
            (0, ev("e2", "u1", EventType::AddToCart, T0 + 30_000)),
            (0, checkout),
            (0, ev("f1", "u2", EventType::PageView, T0)),
        ],
    );
    let fvs: Vec<FeatureVector> = decode_all(&codec, &features, "features");
    let (outputs, _) = feed(
        &mut scorer,
        &codec,
        fvs.into_iter().map(|f| (0, f)).collect(),
    );
    let preds: Vec<Prediction> = decode_all(&codec, &outputs, "predictions");
    assert_eq!(preds.len(), 4);
    for p in &preds {
        assert!((0.0..=1.0).contains(&p.purchase_probability));
        assert_eq!(p.next_actions.len(), 3);
        let total: f64 = p.next_actions.iter().map(|a| a.probability).sum();
        assert!(total <= 1.0 + 1e-9);
    }
    let checkout_p = preds[2].purchase_probability;
    let browse_p = preds[3].purchase_probability;
    assert!(
        checkout_p > browse_p,
        "a shopper in checkout is likelier to buy than one on a landing page ({checkout_p} vs {browse_p})"
    );
    assert_eq!(preds[2].event_id, "e3");
}

#[test]
fn detector_alerts_on_card_testing_and_escalates_instead_of_repeating() {
    let codec = Codec::embedded();
    let mut stage = Detector::new(&ClickpathConfig::default().detector, "alerts");
    let events = (0..6)
        .map(|i| {
            let mut e = ev(
                &format!("p{i}"),
                "mallory",
                EventType::PaymentAttempt,
                T0 + i * 10_000,
            );
            e.payment = Some(Payment {
                status: PaymentStatus::Failed,
                method: "card".into(),
                card_fingerprint: Some(format!("card-{i}")),
            });
            (0, e.into())
        })
        .collect();
    let (outputs, _) = feed(&mut stage, &codec, events);
    let alerts: Vec<FraudAlert> = decode_all(&codec, &outputs, "alerts");
    assert!(!alerts.is_empty());
    // One alert per user and type per cooldown: later evidence re-publishes the same alert, escalated.
    assert!(
        alerts.iter().all(|a| a.alert_id == alerts[0].alert_id),
        "no second alert inside the cooldown"
    );
    let (first, last) = (&alerts[0], alerts.last().unwrap());
    assert!(last.severity >= first.severity);
    assert!(last.evidence_event_ids.len() >= first.evidence_event_ids.len());
    assert_eq!(alerts[0].alert_type, AlertType::CardTesting);
    assert_eq!(alerts[0].user_id, "mallory");
    assert!(
        alerts[0]
            .evidence_event_ids
            .iter()
            .all(|id| id.starts_with('p'))
    );
}

/// `scorer.device = "cuda"` where no CUDA device can be used (a build without the `cuda`
/// feature, or no GPU): by default the scorer refuses to start and says why; with
/// `scorer.device_fallback = "cpu"` it scores the shipped GRU on the CPU and raises
/// `clickpath_model_device_fallback`.
#[test]
fn cuda_without_a_usable_gpu_fails_at_start_or_falls_back_to_cpu_as_configured() {
    use clickpath_model::sequence::{DeviceFallback, OnlineDevice, check_device};
    if check_device(OnlineDevice::Cuda).is_ok() {
        eprintln!("a usable CUDA device is present: nothing to fall back from");
        return;
    }
    let mut cfg = ClickpathConfig::default();
    cfg.scorer.model_dir =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gru-example"));
    cfg.scorer.device = OnlineDevice::Cuda;
    let env = cfg.runner_env(Codec::embedded());
    let err = match clickpath_stages::topology::build_scorer(&cfg, &env) {
        Ok(_) => panic!("started on a device that does not work"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("scorer.device = Cuda") && err.contains("device_fallback"),
        "{err}"
    );

    cfg.scorer.device_fallback = DeviceFallback::Cpu;
    let env = cfg.runner_env(Codec::embedded());
    let mut scorer = clickpath_stages::topology::build_scorer(&cfg, &env).expect("falls back");
    assert_eq!(scorer.device(), OnlineDevice::Cpu);
    assert!(scorer.model_version().starts_with("gru-"));
    let text = env.metrics.encode();
    assert!(
        text.contains("clickpath_model_device_fallback{stage=\"scorer\"} 1"),
        "{text}"
    );
    let features = clickpath_core::FeatureWindower::new(cfg.windower.clone()).update(&ev(
        "e1",
        "u1",
        EventType::PageView,
        T0,
    ));
    let p = scorer.score(&features);
    assert!((0.0..=1.0).contains(&p.purchase_probability));
    assert_eq!(p.model_version, scorer.model_version());
}
