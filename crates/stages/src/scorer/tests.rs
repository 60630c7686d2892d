//! Scorer tests with a sequence model (untrained weights: the tests check the mechanics).

use super::*;
use clickpath_model::sequence::{Architecture, CpuBackend, NetConfig, SequenceModel};
use clickpath_schema::FeatureValues;
use clickpath_schema::codec::Codec;

/// A model with fresh random weights. Tests that compare scorers give each a clone of one
/// network (the backend's seed is global and tests run in parallel, so seeding is not enough).
fn network(arch: Architecture, features: usize) -> SequenceModel<CpuBackend> {
    let cfg = NetConfig {
        architecture: arch,
        hidden: 8,
        item_buckets: 32,
        category_buckets: 8,
        window: 4,
        numeric_features: features,
        ..NetConfig::default()
    };
    SequenceModel::untrained(cfg, Default::default())
}

fn loaded(net: &SequenceModel<CpuBackend>, version: &str) -> LoadedSequence {
    LoadedSequence {
        model: Box::new(net.clone()),
        version: version.into(),
    }
}

fn model(arch: Architecture, features: usize, version: &str) -> LoadedSequence {
    loaded(&network(arch, features), version)
}

fn fv(user: &str, i: i64, t: EventType) -> FeatureVector {
    FeatureVector {
        event_id: format!("{user}-{i}"),
        user_id: user.into(),
        event_type: t,
        event_time: 1_700_000_000_000 + i,
        spec_version: "v1".into(),
        values: FeatureValues::from([("f0".into(), i as f64), ("f1".into(), 1.0)]),
        item_id: Some(format!("item-{i}")),
        category: Some("c".into()),
    }
}

fn scorer(net: &SequenceModel<CpuBackend>, max_batch: usize) -> Scorer {
    let cfg = ScorerConfig {
        max_batch,
        explain_every: 1,
        reload_interval_ms: 0,
        ..ScorerConfig::default()
    };
    Scorer::with_model(
        ScoringModel::Sequence(loaded(net, "gru-test")),
        &cfg,
        "predictions",
        None,
    )
}

fn run(s: &mut Scorer, inputs: &[FeatureVector]) -> Vec<Prediction> {
    let codec = Codec::embedded();
    let mut outputs = Vec::new();
    for f in inputs {
        let mut ctx = Context::new(&codec, &mut outputs, 0).for_partition(0);
        s.process(f.clone(), &mut ctx).unwrap();
    }
    let mut ctx = Context::new(&codec, &mut outputs, 0).for_partition(0);
    s.end_batch(&mut ctx).unwrap();
    outputs
        .iter()
        .map(|o| codec.decode::<Prediction>(&o.payload).unwrap())
        .collect()
}

/// Micro-batching changes nothing: one prediction per event, in input order, equal whatever the
/// batch size, including several events of one user inside one batch.
#[test]
fn batch_size_does_not_change_predictions() {
    for arch in [
        Architecture::Gru,
        Architecture::Lstm,
        Architecture::Transformer,
    ] {
        let types = [
            EventType::ProductView,
            EventType::AddToCart,
            EventType::BeginCheckout,
        ];
        let inputs: Vec<FeatureVector> = (0..30)
            .map(|i| fv(&format!("u{}", i % 4), i, types[(i % 3) as usize]))
            .collect();
        let net = network(arch, 2);
        let one = run(&mut scorer(&net, 1), &inputs);
        let many = run(&mut scorer(&net, 64), &inputs);
        assert_eq!(one.len(), inputs.len());
        for (a, b) in one.iter().zip(&many) {
            assert_eq!(a.event_id, b.event_id);
            assert!(
                (a.purchase_probability - b.purchase_probability).abs() < 1e-6,
                "{arch:?}"
            );
            assert_eq!(a.predicted_path, b.predicted_path);
            assert_eq!(a.predicted_path.len(), 3);
            assert_eq!(a.next_actions.len(), 3);
            assert!(
                a.factors.len() <= 3 && !a.factors.is_empty(),
                "explain_every = 1"
            );
            assert_eq!(a.model_version, "gru-test");
        }
    }
}

/// State survives a changelog round trip: a restored scorer continues exactly where the first
/// one was; memory of another model version is not reused.
#[test]
fn changelog_restore_continues_the_hidden_state() {
    let inputs: Vec<FeatureVector> = (0..12)
        .map(|i| fv(&format!("u{}", i % 3), i, EventType::ProductView))
        .collect();
    let (first, second) = inputs.split_at(6);
    let net = network(Architecture::Gru, 2);
    let mut uninterrupted = scorer(&net, 8);
    let all = run(&mut uninterrupted, &inputs);

    let mut a = scorer(&net, 8);
    run(&mut a, first);
    let changes = a.take_state_changes();
    assert_eq!(changes.len(), 3, "one entry per user");
    let mut b = scorer(&net, 8);
    for c in &changes {
        b.restore(c.partition, &c.key, c.value.as_deref()).unwrap();
    }
    b.on_assign(&[0]);
    let resumed = run(&mut b, second);
    for (r, u) in resumed.iter().zip(&all[6..]) {
        assert!((r.purchase_probability - u.purchase_probability).abs() < 1e-6);
    }

    // A scorer with another model version restores nobody's memory.
    let mut c = scorer(&net, 8);
    c.model = ScoringModel::Sequence(loaded(&net, "gru-other"));
    for ch in &changes {
        c.restore(ch.partition, &ch.key, ch.value.as_deref())
            .unwrap();
    }
    c.on_assign(&[0]);
    assert!(
        c.users[&0]
            .values()
            .all(|e| e.memory == UserMemory::default())
    );
}

/// A broken artifact in the watched directory keeps the running model and raises the failure
/// gauge; a good one is swapped in.
#[test]
fn hot_swap_keeps_the_old_model_when_the_new_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("meta.json"), b"{\"kind\": \"sequence\"}").unwrap();
    let metrics = Metrics::new();
    let cfg = ScorerConfig {
        model_dir: Some(dir.path().to_path_buf()),
        reload_interval_ms: 1,
        ..ScorerConfig::default()
    };
    let mut s = Scorer::with_model(
        ScoringModel::Sequence(model(Architecture::Gru, 2, "gru-live")),
        &cfg,
        "predictions",
        Some(metrics.clone()),
    );
    // A new, broken meta.json appears.
    std::fs::write(
        dir.path().join("meta.json"),
        b"{\"kind\": \"sequence\", \"broken\": true}",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    s.maybe_reload();
    assert_eq!(s.model_version(), "gru-live");
    let text = metrics.encode();
    assert!(
        text.contains("clickpath_model_reload_failed{stage=\"scorer\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("clickpath_model_reloads_total{stage=\"scorer\",kind=\"failed\"} 1"),
        "{text}"
    );
}
