//! End-to-end: train the baseline on small synthetic click data, check its quality, and check
//! that artifacts round-trip and that damaged artifacts are refused with clear errors.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use EventType::*;
use clickpath_core::FeatureSpec;
use clickpath_model::artifact::{META_FILE, MODEL_FILE};
use clickpath_model::{
    BaselineModel, LogisticConfig, ModelArtifact, ModelError, TrainConfig, TrainReport,
    build_dataset, evaluate, train_baseline,
};
use clickpath_schema::{ClickEvent, EventType};

/// One session per user, a minute apart. Browsers (5 of every `cycle`) look and search; buyers
/// put an item in the cart first and go on to buy; with `abandoners`, the last of every cycle
/// carts and checks out like a buyer but leaves. So carting decides the purchase (exactly, or
/// with probability 3/4 when there are abandoners).
fn synthetic(sessions: usize, abandoners: bool) -> Vec<ClickEvent> {
    let cycle = if abandoners { 9 } else { 8 };
    let mut events = Vec::new();
    for s in 0..sessions {
        let types: &[EventType] = match s % cycle {
            0..=4 => &[PageView, ProductView, Search],
            5..=7 => &[AddToCart, ProductView, BeginCheckout, Purchase, PageView],
            _ => &[AddToCart, ProductView, BeginCheckout],
        };
        let start = 1_700_000_000_000 + s as i64 * 60_000;
        for (j, &t) in types.iter().enumerate() {
            let mut ev = ClickEvent::new(
                format!("e{s}-{j}"),
                format!("u{s}"),
                t,
                start + j as i64 * 5_000,
            );
            ev.item_id = Some(format!("item{}", s % 7));
            if t == AddToCart {
                ev.price = Some(40.0);
                ev.quantity = Some(1);
            }
            events.push(ev);
        }
    }
    // Reverse so training has to sort.
    events.reverse();
    events
}

fn train_config() -> TrainConfig {
    TrainConfig {
        logistic: LogisticConfig {
            epochs: 150,
            batch_size: 64,
            ..LogisticConfig::default()
        },
        ..TrainConfig::default()
    }
}

/// One trained model shared by the tests of this file (training is the slow part).
fn trained() -> &'static (Vec<ClickEvent>, TrainReport) {
    static TRAINED: OnceLock<(Vec<ClickEvent>, TrainReport)> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let events = synthetic(160, false);
        let report = train_baseline(&events, &train_config()).expect("training succeeds");
        (events, report)
    })
}

#[test]
fn purchase_determined_by_a_feature_is_learned_and_calibrated() {
    let (_, report) = trained();
    let m = report.metrics();
    assert!(m.examples > 0 && m.positives > 0, "{m:?}");
    assert!(m.roc_auc.unwrap() > 0.99, "{m:?}");
    assert!(m.pr_auc.unwrap() > 0.98, "{m:?}");
    assert!(m.ece.unwrap() < 0.1, "{m:?}");
    assert!(m.log_loss.unwrap() < 0.2, "{m:?}");
    // Only ProductView is ambiguous (Search 5 times, BeginCheckout 3 times per cycle).
    assert!(m.next_action_top1.unwrap() > 0.75, "{m:?}");
    assert_eq!(m.next_action_top3, Some(1.0), "{m:?}");
    let counts = &report.artifact.meta.counts;
    assert_eq!(counts.sessions, 160);
    // Every event is an example; purchases and what follows serve the next action only.
    assert_eq!(counts.examples, counts.events);
    // The test split's purchase steps are next-action cases, not purchase examples.
    assert!(m.examples < counts.test_examples, "{m:?} {counts:?}");
    // Every buyer's example is within SOON_EVENTS of the purchase; carting ranks them exactly.
    assert_eq!(m.soon_positives, m.positives, "{m:?}");
    assert!(m.soon_roc_auc.unwrap() > 0.99, "{m:?}");
    // Carting is the first event, so the model knows from the first position on.
    let first = &m.by_position[0];
    assert_eq!(first.position, 1);
    assert!(
        first.positives > 0 && first.roc_auc.unwrap() > 0.99,
        "{m:?}"
    );
    assert_eq!(
        counts.train_examples + counts.validation_examples + counts.test_examples,
        counts.examples
    );
    assert!(report.artifact.model.version.starts_with("baseline-"));
    assert_eq!(report.artifact.model.version.len(), "baseline-".len() + 8);
}

#[test]
fn probabilities_match_the_purchase_rate_when_it_is_uncertain() {
    let events = synthetic(270, true);
    let report = train_baseline(&events, &train_config()).unwrap();
    let dataset = build_dataset(
        &events,
        &TrainConfig::default().session,
        &FeatureSpec::default(),
    );
    // Cart events before the purchase decision: buyers 3 of 4 times.
    let carted: Vec<f64> = dataset
        .examples
        .iter()
        .filter(|ex| ex.features.values["cart_value"] > 0.0)
        .map(|ex| report.model().logistic.predict(&ex.features.values))
        .collect();
    let mean = carted.iter().sum::<f64>() / carted.len() as f64;
    assert!(
        (mean - 0.75).abs() < 0.08,
        "mean {mean} over {}",
        carted.len()
    );
    let all: Vec<_> = dataset.examples.iter().collect();
    let m = evaluate(report.model(), &all);
    // Ties between buyers' and abandoners' cart events cap the AUC near 0.94.
    assert!(
        m.roc_auc.unwrap() > 0.85 && m.roc_auc.unwrap() < 0.99,
        "{m:?}"
    );
    assert!(m.ece.unwrap() < 0.08, "{m:?}");
}

#[test]
fn predict_lists_actions_path_and_factors() {
    let (events, report) = trained();
    let model = report.model();
    let dataset = build_dataset(
        events,
        &TrainConfig::default().session,
        &FeatureSpec::default(),
    );
    let cart = dataset
        .examples
        .iter()
        .find(|ex| ex.event_type() == AddToCart)
        .unwrap();
    let out = model.predict(Some(AddToCart), &cart.features, 3);
    assert_eq!(out.next_actions.len(), 3);
    assert_eq!(out.next_actions[0].event_type, ProductView);
    assert!(
        out.next_actions
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability)
    );
    assert_eq!(out.predicted_path.len(), 3);
    assert_eq!(out.predicted_path[0], ProductView);
    assert!(out.purchase_probability > 0.9, "{out:?}");
    assert!(!out.factors.is_empty() && out.factors.len() <= 3);
    assert!(
        out.factors
            .windows(2)
            .all(|w| w[0].contribution.abs() >= w[1].contribution.abs())
    );
    let browse = dataset
        .examples
        .iter()
        .find(|ex| ex.event_type() == Search)
        .unwrap();
    let out = model.predict(Some(Search), &browse.features, 10);
    assert_eq!(out.next_actions.len(), EventType::COUNT);
    assert!(out.purchase_probability < 0.1, "{out:?}");
    let pred = out.into_prediction(&browse.features, &model.version, 7);
    assert_eq!(pred.event_id, browse.features.event_id);
    assert_eq!(pred.model_version, model.version);
}

#[test]
fn artifact_round_trip_gives_equal_predictions_and_bytes() {
    let (events, report) = trained();
    let dir = tempfile::tempdir().unwrap();
    report.artifact.save(dir.path()).unwrap();
    let loaded = ModelArtifact::load(dir.path(), &FeatureSpec::default()).unwrap();
    assert_eq!(loaded, report.artifact);
    let dataset = build_dataset(
        events,
        &TrainConfig::default().session,
        &FeatureSpec::default(),
    );
    for ex in &dataset.examples {
        let prev = Some(ex.event_type());
        assert_eq!(
            loaded.model.predict(prev, &ex.features, 3),
            report.model().predict(prev, &ex.features, 3)
        );
    }
    // Saving what was loaded reproduces the files byte for byte.
    let again = tempfile::tempdir().unwrap();
    loaded.save(again.path()).unwrap();
    for file in [MODEL_FILE, META_FILE] {
        assert_eq!(
            fs::read(dir.path().join(file)).unwrap(),
            fs::read(again.path().join(file)).unwrap()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(META_FILE)).unwrap()).unwrap();
    assert_eq!(meta["kind"], "baseline");
    assert_eq!(meta["version"], report.model().version.as_str());
    assert_eq!(meta["feature_spec_version"], "v1");
    assert_eq!(
        meta["training_data_fingerprint"].as_str().unwrap().len(),
        64
    );
    assert!(meta["metrics"]["roc_auc"].is_number());
}

/// Saves the shared model into a fresh directory.
fn saved() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    trained().1.artifact.save(dir.path()).unwrap();
    dir
}

fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = fs::read_to_string(path).unwrap();
    fs::write(path, f(text)).unwrap();
}

fn load_err(dir: &Path, spec: &FeatureSpec) -> String {
    let err = ModelArtifact::load(dir, spec).unwrap_err();
    err.to_string()
}

#[test]
fn modified_weights_are_refused_as_corrupted() {
    let dir = saved();
    edit(&dir.path().join(MODEL_FILE), |t| {
        t.replacen("\"bias\": ", "\"bias\": 1", 1)
    });
    let err = load_err(dir.path(), &FeatureSpec::default());
    assert!(
        err.contains(MODEL_FILE) && err.contains("corrupted"),
        "{err}"
    );
    // Truncated file: same check.
    edit(&dir.path().join(MODEL_FILE), |t| {
        t[..t.len() / 2].to_string()
    });
    let err = load_err(dir.path(), &FeatureSpec::default());
    assert!(
        err.contains(MODEL_FILE) && err.contains("corrupted"),
        "{err}"
    );
}

#[test]
fn non_finite_weights_are_refused_even_with_a_matching_version() {
    let dir = saved();
    let model_path = dir.path().join(MODEL_FILE);
    // Overflowing bias, then meta.json re-stamped with the new hash so only the value is wrong.
    edit(&model_path, |t| {
        let start = t.find("\"bias\": ").unwrap() + "\"bias\": ".len();
        let end = start + t[start..].find([',', '\n']).unwrap();
        format!("{}1e999{}", &t[..start], &t[end..])
    });
    let bytes = fs::read(&model_path).unwrap();
    let version = format!("baseline-{}", sha256_prefix(&bytes));
    edit(&dir.path().join(META_FILE), |t| {
        let old = &trained().1.artifact.meta.version;
        t.replace(old.as_str(), &version)
    });
    let err = ModelArtifact::load(dir.path(), &FeatureSpec::default()).unwrap_err();
    assert!(matches!(err, ModelError::Json { .. }), "{err:?}");
    assert!(err.to_string().contains(MODEL_FILE), "{err}");
}

fn sha256_prefix(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn wrong_kind_missing_files_and_garbage_are_refused_clearly() {
    let dir = saved();
    let meta_path = dir.path().join(META_FILE);
    edit(&meta_path, |t| {
        t.replacen("\"kind\": \"baseline\"", "\"kind\": \"lstm\"", 1)
    });
    let err = load_err(dir.path(), &FeatureSpec::default());
    assert!(err.contains(META_FILE) && err.contains("\"lstm\""), "{err}");

    fs::write(&meta_path, "{ not json").unwrap();
    let err = load_err(dir.path(), &FeatureSpec::default());
    assert!(err.contains(META_FILE) && err.contains("parse"), "{err}");

    fs::remove_file(&meta_path).unwrap();
    let err = ModelArtifact::load(dir.path(), &FeatureSpec::default()).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(META_FILE), "{err}");
}

#[test]
fn a_different_feature_spec_is_refused_with_the_names() {
    let dir = saved();
    let spec = FeatureSpec {
        windows_ms: vec![60_000],
        ..FeatureSpec::default()
    };
    let err = load_err(dir.path(), &spec);
    assert!(
        err.contains("events_1m") && err.contains("events_5m"),
        "{err}"
    );
    let spec = FeatureSpec {
        version: "v2".into(),
        ..FeatureSpec::default()
    };
    let err = load_err(dir.path(), &spec);
    assert!(err.contains("\"v2\"") && err.contains(META_FILE), "{err}");
}

#[test]
fn save_refuses_a_model_whose_version_does_not_match_its_weights() {
    let mut artifact = trained().1.artifact.clone();
    artifact.model = BaselineModel {
        version: "baseline-00000000".into(),
        ..artifact.model
    };
    let dir = tempfile::tempdir().unwrap();
    let err = artifact.save(dir.path()).unwrap_err();
    assert!(err.to_string().contains("baseline-00000000"), "{err}");
    assert!(!dir.path().join(MODEL_FILE).exists());
}

#[test]
fn too_little_data_is_an_error_not_a_panic() {
    let events = synthetic(2, false);
    let err = train_baseline(&events, &train_config()).unwrap_err();
    assert!(matches!(err, ModelError::InsufficientData(_)), "{err:?}");
    assert!(train_baseline(&[], &train_config()).is_err());
}
