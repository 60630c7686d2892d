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
        session: clickpath_core::session::SessionConfig::default(),
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

/// A user's memory starts fresh when an event opens a new session (past the model's inactivity gap):
/// training and evaluation start every session from an empty state, so online must too. Within the
/// gap the memory carries on; in one micro-batch as across batches; and across a restore from the
/// changelog (which keeps the last event time) as in a run without it.
#[test]
fn a_new_session_starts_from_an_empty_memory_online_as_in_training() {
    let gap = clickpath_core::session::SessionConfig::default().gap_ms;
    let at = |user: &str, i: i64, t: i64| {
        let mut f = fv(user, i, EventType::ProductView);
        f.event_time = 1_700_000_000_000 + t;
        f
    };
    // u: two events, then one 2 s later (same session) and one a gap later (a new session); its
    // copy in a fresh user v is the reference of an empty memory.
    let inputs = vec![
        at("u", 0, 0),
        at("u", 1, 1_000),
        at("u", 2, 3_000),
        at("u", 3, 3_000 + gap + 1),
    ];
    let fresh = |f: &FeatureVector| FeatureVector {
        user_id: "v".into(),
        ..f.clone()
    };
    let net = network(Architecture::Gru, 2);
    for max_batch in [1, 64] {
        let got = run(&mut scorer(&net, max_batch), &inputs);
        let alone = |i: usize| run(&mut scorer(&net, 1), &[fresh(&inputs[i])]).remove(0);
        let p = |x: &Prediction| x.purchase_probability;
        assert!(
            (p(&got[2]) - p(&alone(2))).abs() > 1e-6,
            "within the gap the memory carries on (batch {max_batch})"
        );
        assert!(
            (p(&got[3]) - p(&alone(3))).abs() < 1e-9,
            "a new session starts empty (batch {max_batch}): {} vs {}",
            p(&got[3]),
            p(&alone(3))
        );
    }
    // Restored before the event that opens a session: the same predictions as without the restore
    // (the changelog keeps the last event time; without it the memory would be kept).
    let all = run(&mut scorer(&net, 8), &inputs);
    let mut a = scorer(&net, 8);
    run(&mut a, &inputs[..3]);
    let changes = a.take_state_changes();
    let mut b = scorer(&net, 8);
    for c in &changes {
        b.restore(c.partition, &c.key, c.value.as_deref()).unwrap();
    }
    b.on_assign(&[0]);
    let resumed = run(&mut b, &inputs[3..]);
    assert_eq!(resumed.len(), 1);
    assert!((resumed[0].purchase_probability - all[3].purchase_probability).abs() < 1e-9);
    // ... which the empty memory gives, not the carried one.
    let carried = {
        let mut c = scorer(&net, 8);
        run(&mut c, &inputs[..3]);
        let mut late = inputs[3].clone();
        late.event_time = inputs[2].event_time + 1_000;
        run(&mut c, &[late]).remove(0)
    };
    assert!((carried.purchase_probability - all[3].purchase_probability).abs() > 1e-6);
}

/// A broken artifact in the watched directory keeps the running model and raises the failure
/// gauge (the good case: `hot_swap_switches_to_a_new_artifact_without_losing_an_event`).
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

/// Feature vectors the windower makes from a few users' events, in time order.
fn windowed(users: usize, per_user: usize) -> Vec<FeatureVector> {
    use clickpath_core::features::{FeatureSpec, FeatureWindower};
    let mut w = FeatureWindower::new(FeatureSpec::default());
    let types = [
        EventType::PageView,
        EventType::ProductView,
        EventType::AddToCart,
        EventType::Search,
    ];
    (0..per_user)
        .flat_map(|i| (0..users).map(move |u| (i, u)))
        .map(|(i, u)| {
            let mut ev = clickpath_schema::ClickEvent::new(
                format!("u{u}-{i}"),
                format!("u{u}"),
                types[(i + u) % types.len()],
                1_700_000_000_000 + (i * users + u) as i64 * 1_000,
            );
            ev.item_id = Some(format!("item-{}", (i * 7 + u) % 13));
            w.update(&ev)
        })
        .collect()
}

/// A new artifact copied into `scorer.model_dir` while the stage runs takes over at the next
/// tick: every event before it is scored by the old model, every event after it by the new
/// one, none is lost or scored twice, and the reload is counted as a success.
#[test]
fn hot_swap_switches_to_a_new_artifact_without_losing_an_event() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gru-example");
    let features = clickpath_core::features::FeatureSpec::default();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let cfg = ScorerConfig {
        model_dir: Some(dir.path().to_path_buf()),
        reload_interval_ms: 1,
        max_batch: 8,
        ..ScorerConfig::default()
    };
    let mut s = Scorer::with_model(
        ScoringModel::Sequence(model(Architecture::Gru, 2, "gru-live")),
        &cfg,
        "predictions",
        Some(metrics.clone()),
    )
    .with_feature_spec(features);
    let inputs = windowed(5, 12);
    let (before, after) = inputs.split_at(30);
    let mut predictions = run(&mut s, before);
    // The new artifact appears (meta.json last, as a deployment tool would finish).
    for file in ["weights.mpk", "model.json", "meta.json"] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    let codec = Codec::embedded();
    let mut outputs = Vec::new();
    s.tick(&mut Context::new(&codec, &mut outputs, 0).for_partition(0))
        .unwrap();
    assert!(outputs.is_empty(), "nothing was pending");
    let new_version = s.model_version().to_string();
    assert!(new_version.starts_with("gru-") && new_version != "gru-live");
    predictions.extend(run(&mut s, after));

    let ids: Vec<&str> = predictions.iter().map(|p| p.event_id.as_str()).collect();
    let want: Vec<&str> = inputs.iter().map(|f| f.event_id.as_str()).collect();
    assert_eq!(ids, want, "one prediction per event, in order");
    assert!(
        predictions[..30]
            .iter()
            .all(|p| p.model_version == "gru-live")
    );
    assert!(
        predictions[30..]
            .iter()
            .all(|p| p.model_version == new_version)
    );
    let text = metrics.encode();
    assert!(
        text.contains("clickpath_model_reloads_total{stage=\"scorer\",kind=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("clickpath_model_reload_failed{stage=\"scorer\"} 0"),
        "{text}"
    );
}

/// A shadow model is scored on every event beside the live one and reported in headers only:
/// the live predictions are those of a scorer without a shadow, and the shadow's probabilities
/// are those of a scorer running the shadow model live (its own per-user memory included).
#[test]
fn shadow_scoring_reports_the_candidate_without_touching_live_predictions() {
    let live = network(Architecture::Gru, 2);
    let candidate = network(Architecture::Lstm, 2);
    let inputs: Vec<FeatureVector> = (0..24)
        .map(|i| fv(&format!("u{}", i % 3), i, EventType::ALL[i as usize % 6]))
        .collect();
    let codec = Codec::embedded();
    // The candidate was trained with other session rules (a 1 ms gap: every event here opens a
    // session), which the shadow applies to its own memory, as the candidate running live would.
    let candidate_loaded = || {
        let mut l = loaded(&candidate, "lstm-shadow");
        l.session.gap_ms = 1;
        l
    };
    let mut with_shadow = scorer(&live, 4).with_shadow(candidate_loaded());
    let mut outputs = Vec::new();
    for f in &inputs {
        let mut ctx = Context::new(&codec, &mut outputs, 0).for_partition(0);
        with_shadow.process(f.clone(), &mut ctx).unwrap();
    }
    with_shadow
        .end_batch(&mut Context::new(&codec, &mut outputs, 0).for_partition(0))
        .unwrap();
    let alone = run(&mut scorer(&live, 4), &inputs);
    let candidate_cfg = ScorerConfig {
        max_batch: 4,
        explain_every: 1,
        reload_interval_ms: 0,
        ..ScorerConfig::default()
    };
    let candidate_live = run(
        &mut Scorer::with_model(
            ScoringModel::Sequence(candidate_loaded()),
            &candidate_cfg,
            "predictions",
            None,
        ),
        &inputs,
    );
    // The rules matter here: with the live model's, the candidate's memory would carry on.
    let carried = run(&mut scorer(&candidate, 4), &inputs);
    assert!(
        candidate_live
            .iter()
            .zip(&carried)
            .any(|(a, b)| (a.purchase_probability - b.purchase_probability).abs() > 1e-6)
    );

    assert_eq!(outputs.len(), inputs.len());
    for ((out, want), cand) in outputs.iter().zip(&alone).zip(&candidate_live) {
        let got: Prediction = codec.decode(&out.payload).unwrap();
        assert_eq!(got.event_id, want.event_id);
        assert_eq!(got.model_version, "gru-test");
        assert_eq!(got.purchase_probability, want.purchase_probability);
        let header = |name: &str| {
            out.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        assert_eq!(header("clickpath.shadow_version"), "lstm-shadow");
        let shadow_p: f64 = header("clickpath.shadow_purchase_probability")
            .parse()
            .unwrap();
        assert!(
            (shadow_p - cand.purchase_probability).abs() < 1e-5,
            "{shadow_p} vs {}",
            cand.purchase_probability
        );
    }
}

/// A model with an item head (the shipped `models/gru-example`) recommends `recommend_items` items of its
/// vocabulary with every prediction, best first, the same whatever the micro-batch size; 0 turns it off,
/// and a model without an item head recommends nothing.
#[test]
fn predictions_recommend_items_of_the_models_vocabulary() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gru-example");
    let spec = clickpath_core::features::FeatureSpec::default();
    let load = || match load_model(&shipped, &spec, OnlineDevice::Cpu, None).unwrap() {
        ScoringModel::Sequence(m) => m,
        ScoringModel::Baseline(_) => panic!("gru-example is a sequence model"),
    };
    let vocab_len = load().model.item_vocab().expect("an item head").len();
    assert!(vocab_len > 20, "{vocab_len}");
    let scorer_with = |recommend_items: usize, max_batch: usize| {
        let cfg = ScorerConfig {
            recommend_items,
            max_batch,
            reload_interval_ms: 0,
            ..ScorerConfig::default()
        };
        Scorer::with_model(ScoringModel::Sequence(load()), &cfg, "predictions", None)
            .with_feature_spec(spec.clone())
    };
    let inputs = windowed(6, 8);
    let one = run(&mut scorer_with(5, 1), &inputs);
    let many = run(&mut scorer_with(5, 64), &inputs);
    assert_eq!(one.len(), inputs.len());
    let vocab = load();
    let vocab = vocab.model.item_vocab().unwrap();
    let ids = |p: &Prediction| -> Vec<String> {
        p.recommended_items
            .iter()
            .map(|r| r.item_id.clone())
            .collect()
    };
    for (a, b) in one.iter().zip(&many) {
        assert_eq!(a.recommended_items.len(), 5, "{a:?}");
        assert!(
            a.recommended_items
                .iter()
                .all(|r| vocab.get(&r.item_id).is_some() && r.score.is_finite())
        );
        assert!(
            a.recommended_items
                .windows(2)
                .all(|w| w[0].score >= w[1].score),
            "best first"
        );
        assert_eq!(ids(a), ids(b), "batch size changes nothing");
    }
    // The recommendations follow the shopper: not one list for everybody.
    let distinct: std::collections::BTreeSet<Vec<String>> = one
        .iter()
        .map(|p| {
            p.recommended_items
                .iter()
                .map(|r| r.item_id.clone())
                .collect()
        })
        .collect();
    assert!(distinct.len() > 1, "{distinct:?}");

    // The item on screen is never recommended (the next item is another one by definition): asked
    // for the whole vocabulary, a shopper on a vocabulary item gets every other item.
    let mut on_known = inputs.clone();
    for (j, fv) in on_known.iter_mut().enumerate() {
        fv.item_id = Some(vocab.item(j as u32 * 7 % 40).unwrap().to_string());
    }
    let scored = run(&mut scorer_with(vocab_len, 64), &on_known);
    for (p, fv) in scored.iter().zip(&on_known) {
        assert_eq!(p.recommended_items.len(), vocab_len - 1);
        assert!(!ids(p).contains(fv.item_id.as_ref().unwrap()), "{p:?}");
    }

    assert!(
        run(&mut scorer_with(0, 64), &inputs)
            .iter()
            .all(|p| p.recommended_items.is_empty())
    );
    let without_head = network(Architecture::Gru, 2);
    assert!(
        run(&mut scorer(&without_head, 64), &inputs[..6])
            .iter()
            .all(|p| p.recommended_items.is_empty())
    );
}

/// A model with a category head recommends `recommend_categories` categories of its category
/// vocabulary, most probable first, never the event's own, with probabilities of one softmax (their
/// sum over the whole vocabulary less the own category stays below 1); 0 turns it off, and a model
/// without the head (every older artifact) recommends none.
#[test]
fn predictions_recommend_categories_other_than_the_event_s_own() {
    let names: Vec<String> = (0..6).map(|i| format!("cat{i}")).collect();
    let mut net = network(Architecture::Gru, 2);
    net.config.category_vocab = names.len();
    net.net = net.config.init(&Default::default());
    net.categories = Some(clickpath_model::recommend::ItemVocab::from_parts(
        names.clone(),
        vec![10; names.len()],
    ));
    let scorer_with = |recommend_categories: usize, max_batch: usize| {
        let cfg = ScorerConfig {
            recommend_categories,
            max_batch,
            reload_interval_ms: 0,
            ..ScorerConfig::default()
        };
        Scorer::with_model(
            ScoringModel::Sequence(loaded(&net, "gru-categories")),
            &cfg,
            "predictions",
            None,
        )
    };
    let mut inputs = windowed(4, 6);
    for (j, fv) in inputs.iter_mut().enumerate() {
        fv.category = Some(names[j % names.len()].clone());
    }
    let one = run(&mut scorer_with(3, 1), &inputs);
    let many = run(&mut scorer_with(3, 64), &inputs);
    for (a, b) in one.iter().zip(&many) {
        assert_eq!(
            a.recommended_categories, b.recommended_categories,
            "batch size changes nothing"
        );
    }
    for (p, fv) in one.iter().zip(&inputs) {
        assert_eq!(p.recommended_categories.len(), 3, "{p:?}");
        let own = fv.category.as_deref().unwrap();
        assert!(p.recommended_categories.iter().all(|c| c.category != own));
        assert!(
            p.recommended_categories
                .iter()
                .all(|c| names.contains(&c.category) && c.probability > 0.0)
        );
        assert!(
            p.recommended_categories
                .windows(2)
                .all(|w| w[0].probability >= w[1].probability),
            "most probable first"
        );
    }
    // Asked for every category: all but the own one, probabilities of one softmax.
    for p in run(&mut scorer_with(names.len(), 64), &inputs) {
        assert_eq!(p.recommended_categories.len(), names.len() - 1);
        let total: f64 = p.recommended_categories.iter().map(|c| c.probability).sum();
        assert!(total > 0.0 && total < 1.0, "{total}");
    }
    // An event without a category (a search) leaves out the session's last one; a new session
    // forgets it.
    let mut browse = windowed(1, 3);
    browse[0].category = Some("cat2".into());
    browse[1].category = None;
    browse[2].category = None;
    browse[2].event_time =
        browse[1].event_time + clickpath_core::session::SessionConfig::default().gap_ms + 1;
    let listed = run(&mut scorer_with(names.len(), 64), &browse);
    let has = |p: &Prediction, c: &str| p.recommended_categories.iter().any(|r| r.category == c);
    assert!(!has(&listed[1], "cat2"), "{:?}", listed[1]);
    assert_eq!(listed[1].recommended_categories.len(), names.len() - 1);
    assert!(has(&listed[2], "cat2"), "{:?}", listed[2]);
    assert_eq!(listed[2].recommended_categories.len(), names.len());
    // Across a restore from the changelog the session's last category is still left out.
    let mut before = scorer_with(names.len(), 64);
    run(&mut before, &browse[..1]);
    let mut after = scorer_with(names.len(), 64);
    for c in before.take_state_changes() {
        after
            .restore(c.partition, &c.key, c.value.as_deref())
            .unwrap();
    }
    after.on_assign(&[0]);
    let resumed = run(&mut after, &browse[1..2]);
    assert!(!has(&resumed[0], "cat2"), "{:?}", resumed[0]);
    assert_eq!(
        resumed[0].recommended_categories,
        listed[1].recommended_categories
    );
    assert!(
        run(&mut scorer_with(0, 64), &inputs)
            .iter()
            .all(|p| p.recommended_categories.is_empty())
    );
    let without_head = network(Architecture::Gru, 2);
    assert!(
        run(&mut scorer(&without_head, 64), &inputs)
            .iter()
            .all(|p| p.recommended_categories.is_empty())
    );
}

/// A user restored into an instance that is already running (a rebalance) is evicted by its last
/// event time, which the changelog keeps: kept while seen within the idle limit of the instance's
/// clock, evicted past it, as without the restore. A value of the older layout (no time) is not
/// taken for "never seen": its idle time starts at the first tick (that tick used to evict it,
/// writing a tombstone over its state).
#[test]
fn users_restored_into_a_running_scorer_are_evicted_by_their_last_event_time() {
    let net = network(Architecture::Gru, 2);
    let mut a = scorer(&net, 8);
    run(&mut a, &[fv("moved", 0, EventType::ProductView)]);
    let changes = a.take_state_changes();
    let codec = Codec::embedded();
    let mut outputs = Vec::new();
    let tombstones = |s: &mut Scorer| {
        s.take_state_changes()
            .into_iter()
            .filter(|c| c.value.is_none())
            .count()
    };
    // Restored into a scorer whose clock is at `local_time`, from `value`.
    let restored_at = |local_time: i64, value: &[u8]| {
        let mut b = scorer(&net, 8);
        run(&mut b, &[fv("local", local_time, EventType::Search)]);
        b.take_state_changes();
        b.restore(0, b"moved", Some(value)).unwrap();
        b.on_assign(&[0]);
        b
    };
    let value = changes[0].value.clone().unwrap();
    let mut recent = restored_at(IDLE_EVICT_MS / 2, &value);
    recent
        .tick(&mut Context::new(&codec, &mut outputs, 0))
        .unwrap();
    assert_eq!(tombstones(&mut recent), 0, "seen within the limit");
    assert!(recent.users[&0].contains_key("moved"));
    let mut idle = restored_at(3 * IDLE_EVICT_MS, &value);
    idle.tick(&mut Context::new(&codec, &mut outputs, 0))
        .unwrap();
    assert_eq!(
        tombstones(&mut idle),
        1,
        "idle for three days by its own time"
    );

    // The older layout: bought items, no time.
    let parsed = parse_state(&value).unwrap();
    let mut old = vec![STATE_WITH_BOUGHT, parsed.version.len() as u8];
    old.extend_from_slice(parsed.version.as_bytes());
    old.push(0);
    old.extend_from_slice(&parsed.memory.unwrap().to_bytes());
    let mut b = restored_at(3 * IDLE_EVICT_MS, &old);
    b.tick(&mut Context::new(&codec, &mut outputs, 0)).unwrap();
    assert_eq!(tombstones(&mut b), 0, "evicted at once");
    assert!(b.users[&0].contains_key("moved"));
    // It is still evicted once idle for the full horizon after that.
    run(
        &mut b,
        &[fv(
            "local",
            3 * IDLE_EVICT_MS + IDLE_EVICT_MS + 1,
            EventType::Search,
        )],
    );
    b.tick(&mut Context::new(&codec, &mut outputs, 0)).unwrap();
    assert!(!b.users[&0].contains_key("moved"));
}

/// What a user bought lately is never recommended to them again (the last `recommend_exclude_bought`
/// purchases), other users still get those items, and the list survives a restore from the
/// changelog, including into another model version.
#[test]
fn items_a_user_bought_are_not_recommended_to_them_again() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gru-example");
    let spec = clickpath_core::features::FeatureSpec::default();
    let load = || match load_model(&shipped, &spec, OnlineDevice::Cpu, None).unwrap() {
        ScoringModel::Sequence(m) => m,
        ScoringModel::Baseline(_) => panic!("gru-example is a sequence model"),
    };
    let probe = load();
    let vocab = probe.model.item_vocab().expect("an item head");
    let n = vocab.len();
    let item = |i: u32| vocab.item(i).unwrap().to_string();
    // Every item of the vocabulary is asked for, so only the exclusions are missing.
    let scorer_keeping = |keep: usize| {
        let cfg = ScorerConfig {
            recommend_items: n,
            recommend_exclude_bought: keep,
            reload_interval_ms: 0,
            ..ScorerConfig::default()
        };
        Scorer::with_model(ScoringModel::Sequence(load()), &cfg, "predictions", None)
            .with_feature_spec(spec.clone())
    };
    let event = |user: &str, i: i64, t: EventType, on: u32| FeatureVector {
        item_id: Some(item(on)),
        ..fv(user, i, t)
    };
    let (a, b, browsing) = (3, 5, 9);
    let inputs = [
        event("buyer", 0, EventType::ProductView, a),
        event("buyer", 1, EventType::Purchase, a),
        event("buyer", 2, EventType::Purchase, b),
        event("buyer", 3, EventType::ProductView, browsing),
        event("other", 4, EventType::ProductView, browsing),
    ];
    let ids = |p: &Prediction| -> Vec<String> {
        p.recommended_items
            .iter()
            .map(|r| r.item_id.clone())
            .collect()
    };
    let out = run(&mut scorer_keeping(16), &inputs);
    let (buyer, other) = (ids(&out[3]), ids(&out[4]));
    assert_eq!(buyer.len(), n - 3, "the item on screen and the two bought");
    assert!(!buyer.contains(&item(a)) && !buyer.contains(&item(b)));
    assert!(other.contains(&item(a)) && other.contains(&item(b)));
    assert_eq!(other.len(), n - 1);
    // Only the most recent purchase with a memory of one; none with 0.
    let one = ids(&run(&mut scorer_keeping(1), &inputs)[3]);
    assert!(one.contains(&item(a)) && !one.contains(&item(b)));
    assert_eq!(ids(&run(&mut scorer_keeping(0), &inputs)[3]).len(), n - 1);

    // Restored from the changelog, even by a scorer of another model version: still excluded.
    let mut before = scorer_keeping(16);
    run(&mut before, &inputs);
    let changes = before.take_state_changes();
    let mut after = scorer_keeping(16);
    if let ScoringModel::Sequence(m) = &mut after.model {
        m.version = "gru-retrained".into();
    }
    for c in &changes {
        after
            .restore(c.partition, &c.key, c.value.as_deref())
            .unwrap();
    }
    after.on_assign(&[0]);
    let next = run(
        &mut after,
        &[event("buyer", 5, EventType::ProductView, browsing)],
    );
    let restored = ids(&next[0]);
    assert!(!restored.contains(&item(a)) && !restored.contains(&item(b)));
    assert_eq!(restored.len(), n - 3);
    // Restored by a scorer that remembers none: nothing is excluded, and nothing is kept.
    let mut forgetful = scorer_keeping(0);
    for c in &changes {
        forgetful
            .restore(c.partition, &c.key, c.value.as_deref())
            .unwrap();
    }
    forgetful.on_assign(&[0]);
    let next = run(
        &mut forgetful,
        &[event("buyer", 5, EventType::ProductView, browsing)],
    );
    assert_eq!(ids(&next[0]).len(), n - 1);
    assert!(forgetful.users[&0]["buyer"].bought.is_empty());
}

/// The changelog value of the first layout (version length, version, memory) is still read, with
/// no bought items; the current layout round-trips.
#[test]
fn scorer_state_layouts_are_read() {
    let memory = UserMemory::default();
    let mut first = vec![8u8];
    first.extend_from_slice(b"gru-test");
    first.extend_from_slice(&memory.to_bytes());
    let old = parse_state(&first).expect("the first layout");
    assert_eq!((old.version, old.bought.len()), ("gru-test", 0));
    assert!(old.memory.is_some());

    let bought = vec!["item-1".to_string(), "é".to_string()];
    // The layout before the last event time: bought items, no time.
    let mut with_bought = vec![STATE_WITH_BOUGHT, 8];
    with_bought.extend_from_slice(b"gru-test");
    with_bought.extend_from_slice(&[2, 6]);
    with_bought.extend_from_slice(b"item-1");
    with_bought.push(2);
    with_bought.extend_from_slice("é".as_bytes());
    with_bought.extend_from_slice(&memory.to_bytes());
    let before = parse_state(&with_bought).expect("the layout with bought items");
    assert_eq!((before.version, &before.bought), ("gru-test", &bought));
    assert_eq!((before.last_event, before.last_category), (None, None));
    assert!(before.memory.is_some());

    // The layout with the time but no category (one commit of 2026-12-05).
    let mut with_time = vec![STATE_WITH_LAST_SEEN];
    with_time.extend_from_slice(&42i64.to_le_bytes());
    with_time.extend_from_slice(&with_bought[1..]);
    let timed = parse_state(&with_time).expect("the layout with the time");
    assert_eq!((timed.version, &timed.bought), ("gru-test", &bought));
    assert_eq!((timed.last_event, timed.last_category), (Some(42), None));
    assert!(timed.memory.is_some());

    let entry = |bought: Vec<String>, last_event, last_category: Option<&str>| UserEntry {
        bought,
        last_event,
        last_category: last_category.map(str::to_owned),
        ..UserEntry::default()
    };
    let bytes = state_bytes(
        "gru-test",
        &entry(bought.clone(), Some(-1_700_000_000_123), Some("shoes")),
    );
    let new = parse_state(&bytes).expect("the current layout");
    assert_eq!((new.version, &new.bought), ("gru-test", &bought));
    assert_eq!(
        (new.last_event, new.last_category),
        (Some(-1_700_000_000_123), Some("shoes"))
    );
    assert!(new.memory.is_some());
    let unknown_bytes = state_bytes("gru-test", &entry(Vec::new(), None, None));
    let unknown = parse_state(&unknown_bytes).unwrap();
    assert_eq!((unknown.last_event, unknown.last_category), (None, None));
    // An id too long for the layout is not remembered (cut, it would name another item); nor a
    // category too long.
    let long = vec!["x".repeat(256), "item-2".to_string()];
    let long_bytes = state_bytes("gru-test", &entry(long, Some(0), Some(&"c".repeat(256))));
    let kept = parse_state(&long_bytes).unwrap();
    assert_eq!(kept.bought, vec!["item-2".to_string()]);
    assert_eq!(kept.last_category, None);
    // Cut short: no panic, no state.
    for len in 0..bytes.len() {
        let _ = parse_state(&bytes[..len]);
    }
    assert!(parse_state(&bytes[..3]).is_none());
    assert!(parse_state(&bytes[..12]).is_none());
}

/// `scorer.item_index = "graph"` serves the item head through a graph index: searched wide enough it
/// recommends exactly what the exact scan does, searched narrowly it still recommends full lists of
/// vocabulary items; a vocabulary below the index's minimum is scanned exactly.
#[test]
fn a_graph_item_index_serves_the_recommendations() {
    use clickpath_model::sequence::ItemRanking;
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gru-example");
    let spec = clickpath_core::features::FeatureSpec::default();
    let load =
        |index: Option<&IndexConfig>| match load_model(&shipped, &spec, OnlineDevice::Cpu, index)
            .unwrap()
        {
            ScoringModel::Sequence(m) => m,
            ScoringModel::Baseline(_) => panic!("gru-example is a sequence model"),
        };
    let vocab_len = load(None).model.item_vocab().expect("an item head").len();
    let graph = |ef: usize| IndexConfig {
        min_items: 1,
        ..ItemRanking::Graph.index_config(ef).unwrap()
    };
    let served = load(Some(&graph(vocab_len)));
    let how = served.model.item_index().expect("an index");
    assert!(how.contains("graph, degree 16"), "{how}");
    assert_eq!(
        load(Some(&ItemRanking::Graph.index_config(64).unwrap()))
            .model
            .item_index(),
        None,
        "{vocab_len} items are below the default minimum: scanned exactly"
    );
    let cfg = ScorerConfig {
        recommend_items: 10,
        reload_interval_ms: 0,
        ..ScorerConfig::default()
    };
    let scorer = |m| {
        Scorer::with_model(ScoringModel::Sequence(m), &cfg, "predictions", None)
            .with_feature_spec(spec.clone())
    };
    let inputs = windowed(6, 8);
    let ids = |ps: &[Prediction]| -> Vec<Vec<String>> {
        ps.iter()
            .map(|p| {
                p.recommended_items
                    .iter()
                    .map(|r| r.item_id.clone())
                    .collect()
            })
            .collect()
    };
    let exact = run(&mut scorer(load(None)), &inputs);
    let wide = run(&mut scorer(served), &inputs);
    assert_eq!(
        ids(&wide),
        ids(&exact),
        "a search as wide as the vocabulary is exact"
    );
    let narrow = run(&mut scorer(load(Some(&graph(1)))), &inputs);
    let vocab = load(None);
    let vocab = vocab.model.item_vocab().unwrap();
    for p in &narrow {
        assert_eq!(p.recommended_items.len(), 10, "{p:?}");
        assert!(
            p.recommended_items
                .iter()
                .all(|r| vocab.get(&r.item_id).is_some())
        );
    }
}
