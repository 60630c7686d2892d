//! The detector stage on the real broker, reading its two input topics: clean events and predictions are
//! produced to their own topics, and the model-surprise alert can only come from the prediction path. Run in
//! both delivery modes; a second run in the same group then reads nothing again (offsets of both topics were
//! committed, in exactly-once mode through the transaction).
//!
//! Needs `CLICKPATH_TEST_BROKERS` (set by `make test`); skips without it unless `CLICKPATH_REQUIRE_BROKER=1`.

use clickpath_cli::collect::Collector;
use clickpath_cli::pipeline::{join_stages, spawn_stages};
use clickpath_runtime::config::Guarantee;
use clickpath_runtime::metrics::Metrics;
use clickpath_runtime::query::Lookup;
use clickpath_runtime::shutdown::Shutdown;
use clickpath_runtime::{Output, RunnerEnv};
use clickpath_schema::codec::{AvroRecord, Codec};
use clickpath_schema::{ActionProbability, AlertType, ClickEvent, EventType, Prediction};
use clickpath_stages::StageName;
use std::time::{Duration, Instant};

const T0: i64 = 1_767_571_200_000; // 2026-01-05

/// The model's view of a user's next action: for `bob`, almost surely a product view; for `mallory`, an
/// add-to-cart.
fn prediction(user: &str, i: i64) -> Prediction {
    let likely = if user == "bob" {
        EventType::ProductView
    } else {
        EventType::AddToCart
    };
    Prediction {
        event_id: format!("{user}-e{i}"),
        user_id: user.into(),
        event_time: T0 + i * 5_000,
        model_version: "test".into(),
        purchase_probability: 0.2,
        next_actions: [
            (likely, 0.9),
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

/// Both users only view products: about 6.3 nats of surprise each for `mallory`, 0.1 for `bob`.
fn event(user: &str, i: i64) -> ClickEvent {
    let mut e = ClickEvent::new(
        format!("{user}-e{i}"),
        user,
        EventType::ProductView,
        T0 + i * 5_000,
    );
    e.item_id = Some(format!("item-{i}"));
    e
}

fn output<T: AvroRecord>(codec: &Codec, topic: &str, key: &str, record: &T) -> Output {
    Output {
        topic: topic.to_string(),
        key: key.as_bytes().to_vec(),
        payload: codec.encode(record).unwrap(),
        ..Output::default()
    }
}

#[test]
fn detector_alerts_on_model_surprise_from_the_prediction_topic() {
    run(Guarantee::AtLeastOnce);
}

#[test]
fn exactly_once_detector_reads_both_topics() {
    run(Guarantee::ExactlyOnce);
}

fn run(guarantee: Guarantee) {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut cfg = clickpath_testkit::test_config(&brokers, "detector-predictions");
    cfg.processing.guarantee = guarantee;
    cfg.kafka.instance_id = "detector-predictions-1".into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))
        .unwrap();
    let codec = Codec::embedded();
    let t = cfg.topics.clone();

    // Each user's events and predictions, keyed by user on both topics (so co-partitioned); a prediction is
    // produced after the event it scores, as the scorer would.
    let mut outputs = Vec::new();
    for user in ["mallory", "bob"] {
        for i in 0..9 {
            outputs.push(output(&codec, &t.clean, user, &event(user, i)));
            outputs.push(output(&codec, &t.predictions, user, &prediction(user, i)));
        }
    }
    // Poison on the prediction topic: dead-lettered with its source topic, the stage goes on.
    let mut poison = output(&codec, &t.predictions, "bob", &event("bob", 99));
    poison.payload = b"\x01not avro".to_vec();
    outputs.push(poison);
    let producer = clickpath_runtime::kafka::create_producer(&cfg).unwrap();
    clickpath_runtime::runner::deliver(&producer, outputs, "test", &Metrics::new()).unwrap();

    let env = cfg.runner_env(codec.clone());
    let stages = spawn_stages(&[StageName::Detector], &cfg, &env, false).unwrap();
    let m = env.metrics.clone();
    let caught_up = || {
        m.records_in_total("detector", &t.clean) >= 18
            && m.records_in_total("detector", &t.predictions) >= 19
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !caught_up() && Instant::now() < deadline && !env.shutdown.is_triggered() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if env.shutdown.is_triggered() {
        join_stages(stages).unwrap();
        panic!("the detector stopped without an error");
    }
    assert!(
        caught_up(),
        "detector did not drain:\n{}",
        env.metrics.encode()
    );
    assert_eq!(m.records_in_total("detector", &t.clean), 18);
    assert_eq!(m.records_in_total("detector", &t.predictions), 19);

    // The open alert is in the detector's query view (for `GET /v1/users/{id}`).
    let store = env
        .queries
        .get("detector")
        .expect("detector registers its view");
    let Lookup::Local(view) = store.lookup("mallory") else {
        panic!("no view of mallory: {:?}", store.lookup("mallory"));
    };
    assert!(
        view.as_array()
            .unwrap()
            .iter()
            .any(|a| a["alert_type"] == "MODEL_SURPRISE"),
        "{view}"
    );
    env.shutdown.trigger();
    join_stages(stages).unwrap();

    let mut collector = Collector::new(&cfg, codec.clone()).unwrap();
    collector.poll_until(Duration::from_secs(30), |c| {
        !c.alerts.is_empty() && !c.dead_letters.is_empty()
    });
    collector.poll_for(Duration::from_millis(500));
    let got = &collector.collected;
    let surprise: Vec<_> = got
        .alerts
        .iter()
        .filter(|a| a.alert_type == AlertType::ModelSurprise)
        .collect();
    assert_eq!(surprise.len(), 1, "{:#?}", got.alerts);
    assert_eq!(surprise[0].user_id, "mallory");
    assert_eq!(surprise[0].evidence_event_ids.len(), 8);
    assert!(
        surprise[0].reasons.iter().any(|r| r.contains("surprise")),
        "{:?}",
        surprise[0].reasons
    );
    assert!(
        got.alerts.iter().all(|a| a.user_id != "bob"),
        "{:#?}",
        got.alerts
    );
    assert_eq!(got.dead_letters.len(), 1, "{:#?}", got.dead_letters);
    assert_eq!(got.dead_letters[0].source_topic, t.predictions);
    assert_eq!(got.dead_letters[0].stage, "detector");

    // A second run in the same group: once the partitions of both topics are assigned, nothing is read again.
    let env2 = RunnerEnv {
        shutdown: Shutdown::new(),
        metrics: Metrics::new(),
        queries: clickpath_runtime::query::Queries::new(),
        ..env
    };
    let stages = spawn_stages(&[StageName::Detector], &cfg, &env2, false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let assigned = || {
        env2.queries
            .get("detector")
            .is_some_and(|s| s.lookup("mallory") != Lookup::NotReady)
    };
    while !assigned() && Instant::now() < deadline && !env2.shutdown.is_triggered() {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(assigned(), "the second run was never assigned partitions");
    std::thread::sleep(Duration::from_secs(2));
    env2.shutdown.trigger();
    join_stages(stages).unwrap();
    assert_eq!(env2.metrics.records_in_total("detector", &t.clean), 0);
    assert_eq!(env2.metrics.records_in_total("detector", &t.predictions), 0);
}
