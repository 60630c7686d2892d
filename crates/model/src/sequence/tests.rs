//! Tests of the sequence models on small generated-like data.

use clickpath_schema::{ClickEvent, EventType};

use super::*;

type B = CpuBackend;

fn event(user: &str, i: i64, t: EventType, item: &str) -> ClickEvent {
    let mut ev = ClickEvent::new(
        format!("{user}-{i}"),
        user,
        t,
        1_700_000_000_000 + i * 1_000 + user.len() as i64,
    );
    ev.session_id = Some(format!("s-{user}"));
    ev.item_id = Some(item.into());
    ev.category = Some("shoes".into());
    ev.price = Some(10.0);
    ev.quantity = Some(1);
    ev
}

/// Buyers view, add to cart, check out and purchase; browsers only view. Users are spread in
/// time so the time split has both kinds in every part.
fn toy_events(users: usize) -> Vec<ClickEvent> {
    let mut out = Vec::new();
    for u in 0..users {
        let user = format!("u{u:04}");
        let base = (u as i64) * 3_600;
        let buyer = u % 3 == 0;
        let path: &[EventType] = if buyer {
            &[
                EventType::ProductView,
                EventType::AddToCart,
                EventType::BeginCheckout,
                EventType::Purchase,
            ]
        } else {
            &[
                EventType::ProductView,
                EventType::ProductView,
                EventType::ProductView,
            ]
        };
        for (i, t) in path.iter().enumerate() {
            out.push(event(&user, base + i as i64, *t, &format!("item{}", u % 7)));
        }
    }
    out.sort_by_key(|e| e.event_time);
    out
}

fn small_config(arch: Architecture) -> SequenceTrainConfig {
    let mut cfg = SequenceTrainConfig::default();
    cfg.net.architecture = arch;
    cfg.net.hidden = 16;
    cfg.net.item_buckets = 64;
    cfg.net.category_buckets = 16;
    cfg.net.window = 8;
    cfg.max_epochs = 25;
    cfg.patience = 25;
    cfg.batch_size = 16;
    cfg.learning_rate = 0.01;
    cfg
}

#[test]
fn gru_learns_the_toy_funnel_and_beats_chance() {
    let events = toy_events(240);
    let report = train_sequence::<CpuTrainBackend>(
        &events,
        &small_config(Architecture::Gru),
        &Default::default(),
        &mut |_| {},
    )
    .expect("trains");
    let auc = report.test.roc_auc.expect("both classes in the test split");
    assert!(auc > 0.9, "test AUC {auc}");
    let top1 = report.test.next_action_top1.expect("next actions");
    assert!(top1 > 0.6, "next-action top-1 {top1}");
    assert!(report.history.len() >= 2);
}

/// Every user views a run of 6 items along a fixed cycle of 24 items, starting at a different
/// point: the next item is a function of the current one, which the item head must learn (the
/// popularity baseline would rank it about 12th).
fn cycle_events(users: usize) -> Vec<ClickEvent> {
    let mut out = Vec::new();
    for u in 0..users {
        let user = format!("u{u:04}");
        for i in 0..6 {
            let item = format!("item{}", (u * 5 + i) % 24);
            out.push(event(
                &user,
                (u as i64) * 3_600 + i as i64,
                EventType::ProductView,
                &item,
            ));
        }
    }
    out.sort_by_key(|e| e.event_time);
    out
}

#[test]
fn item_head_learns_a_deterministic_item_cycle_and_round_trips() {
    let events = cycle_events(400);
    let mut cfg = small_config(Architecture::Gru);
    cfg.net.item_buckets = 4096;
    cfg.net.item_embedding = 16;
    cfg.net.item_head_width = 16;
    cfg.max_epochs = 12;
    let report = train_sequence::<CpuTrainBackend>(&events, &cfg, &Default::default(), &mut |_| {})
        .expect("trains");
    let vocab = report.model.items.as_ref().expect("an item vocabulary");
    assert_eq!(vocab.len(), 24);
    let items = report.test_items.as_ref().expect("next-item metrics");
    // 60 test sessions of 6 distinct items: 5 cases each.
    assert_eq!(items.cases, 60 * 5);
    assert!(items.mrr > 0.8, "{items:?}");
    assert!(report.history.iter().all(|e| e.validation_recall.is_some()));

    let dir = tempfile::tempdir().unwrap();
    let meta = save_sequence(&report, &cfg, "flex", dir.path()).unwrap();
    assert_eq!(meta.next_item.as_ref(), Some(items));
    let (loaded, _) = load_sequence::<B>(dir.path(), &cfg.features, &Default::default()).unwrap();
    assert_eq!(loaded.items.as_ref(), Some(vocab));
    let steps: Vec<Step> = (0..4)
        .map(|i| Step {
            event_type: 2,
            category: 1,
            item: i,
            numeric: vec![0.0; loaded.normalizer.len()],
        })
        .collect();
    let a = report.model.item_queries(&[&steps]);
    assert_eq!(a, loaded.item_queries(&[&steps]));
    let q: Vec<&[f32]> = a[0].iter().map(Vec::as_slice).collect();
    // A full ranking is a permutation of the vocabulary, and its head is the top 5.
    let full = loaded.top_items(&q, 24);
    let top = loaded.top_items(&q, 5);
    for (f, t) in full.iter().zip(&top) {
        let mut sorted = f.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..24).collect::<Vec<u32>>());
        assert_eq!(&f[..5], t.as_slice());
    }

    // Online, one event at a time from a fresh memory, the queries and recommendations are the
    // offline ones.
    let online: &dyn OnlineModel = &loaded;
    assert_eq!(online.item_vocab(), Some(vocab));
    let mut memory = UserMemory::default();
    for (t, step) in steps.iter().enumerate() {
        let out = online.step_batch(&mut [(step, &mut memory)]).remove(0);
        assert_eq!(out.item_query.len(), 16);
        for (x, y) in out.item_query.iter().zip(&a[0][t]) {
            assert!((x - y).abs() < 1e-5, "step {t}: {x} vs {y}");
        }
        let best = online.top_items(&[&out.item_query], 5).remove(0);
        let ids: Vec<u32> = best.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, top[t], "step {t}");
        assert!(best.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
    }
}

/// Every user views 6 items along a fixed cycle of 8 categories, starting at a different point;
/// every item is seen once (too sparse for an item vocabulary), so only the categories carry the
/// next step.
fn category_cycle_events(users: usize) -> Vec<ClickEvent> {
    let mut out = Vec::new();
    for u in 0..users {
        let user = format!("u{u:04}");
        for i in 0..6 {
            let mut ev = event(
                &user,
                (u as i64) * 3_600 + i as i64,
                EventType::ProductView,
                &format!("item-{u}-{i}"),
            );
            ev.category = Some(format!("cat{}", (u * 3 + i) % 8));
            out.push(ev);
        }
    }
    out.sort_by_key(|e| e.event_time);
    out
}

#[test]
fn category_head_learns_categories_where_items_are_too_sparse_and_round_trips() {
    let events = category_cycle_events(400);
    let mut cfg = small_config(Architecture::Gru);
    cfg.net.category_buckets = 512;
    cfg.max_epochs = 12;
    let report = train_sequence::<CpuTrainBackend>(&events, &cfg, &Default::default(), &mut |_| {})
        .expect("trains");
    assert!(report.model.items.is_none(), "every item is seen once");
    let categories = report
        .model
        .categories
        .as_ref()
        .expect("a category vocabulary");
    assert_eq!(categories.len(), 8);
    let metrics = report
        .test_categories
        .as_ref()
        .expect("next-category metrics");
    // 60 test sessions of 6 steps, each to a new category: 5 cases each.
    assert_eq!((metrics.cases, metrics.k), (60 * 5, 5));
    assert!(metrics.mrr > 0.8, "{metrics:?}");
    assert!(
        report
            .history
            .iter()
            .all(|e| e.validation_category_recall.is_some())
    );
    // The baselines on the same protocol: popularity cannot know the cycle, the Markov chain can.
    let cfg_rec = crate::recommend::RecommendConfig::default();
    let baselines = crate::recommend::compare_baselines_of(
        crate::recommend::Recommend::Categories,
        &events,
        &cfg_rec,
        Some(categories),
    )
    .unwrap();
    let popularity = baselines
        .iter()
        .find(|r| r.model.starts_with("popularity"))
        .unwrap();
    assert_eq!(popularity.cases, metrics.cases, "the same test cases");
    assert!(
        metrics.mrr > popularity.mrr + 0.3,
        "{metrics:?} vs {popularity:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let meta = save_sequence(&report, &cfg, "flex", dir.path()).unwrap();
    assert_eq!(meta.format_version, 4, "a category head needs format 4");
    assert_eq!(meta.next_category.as_ref(), Some(metrics));
    let (loaded, _) = load_sequence::<B>(dir.path(), &cfg.features, &Default::default()).unwrap();
    assert_eq!(loaded.categories.as_ref(), Some(categories));
    // Weights without the head that model.json promises (a writer's bug; the hashes agree) are refused
    // at load rather than served without recommendations.
    let mut headless = report.clone();
    let shape = NetConfig {
        category_vocab: 0,
        ..report.model.config.clone()
    };
    headless.model.net = shape.init(&Default::default());
    let broken = tempfile::tempdir().unwrap();
    save_sequence(&headless, &cfg, "flex", broken.path()).unwrap();
    let err = load_sequence::<B>(broken.path(), &cfg.features, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("lack a head"), "{err}");
    // Online, one event at a time, the logits are the offline ones, and the probabilities of the
    // top categories are a softmax's.
    let dataset = crate::dataset::build_dataset(&events, &cfg.session, &cfg.features);
    let splits = dataset.split(&cfg.split).unwrap();
    let seqs = data::sequences(
        &splits.test,
        loaded.buckets(),
        &loaded.normalizer,
        loaded.vocabs(),
    );
    let offline = loaded.category_logits(&[seqs[0].steps.as_slice()]);
    let online: &dyn OnlineModel = &loaded;
    assert_eq!(online.category_vocab(), Some(categories));
    let mut memory = UserMemory::default();
    for (t, step) in seqs[0].steps.iter().enumerate() {
        let out = online.step_batch(&mut [(step, &mut memory)]).remove(0);
        assert_eq!(out.categories.len(), 8);
        for (x, y) in out.categories.iter().zip(&offline[0][t]) {
            assert!((x - y).abs() < 1e-4, "step {t}: {x} vs {y}");
        }
        let all = top_k_probabilities(&out.categories, 8);
        let total: f64 = all.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert!(all.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
    }
}

#[test]
fn events_without_categories_train_no_category_head() {
    let mut events = cycle_events(120);
    for e in &mut events {
        e.category = None;
    }
    let mut cfg = small_config(Architecture::Gru);
    cfg.max_epochs = 1;
    let report = train_sequence::<CpuTrainBackend>(&events, &cfg, &Default::default(), &mut |_| {})
        .expect("trains");
    assert!(report.model.categories.is_none());
    assert_eq!(report.model.config.category_vocab, 0);
    assert!(report.test_categories.is_none());
    let dir = tempfile::tempdir().unwrap();
    let meta = save_sequence(&report, &cfg, "flex", dir.path()).unwrap();
    assert!(
        meta.format_version < 4,
        "readable by builds before the category head"
    );
    let json = std::fs::read_to_string(dir.path().join(artifact::MODEL_FILE)).unwrap();
    assert!(!json.contains("category_vocab"), "{json}");
    // Nor does meta.json name the category settings at their defaults (a strict older reader of
    // the training configuration would refuse them).
    let meta = std::fs::read_to_string(dir.path().join(artifact::META_FILE)).unwrap();
    for key in [
        "category_head",
        "min_category_count",
        "category_loss_weight",
        "category_vocab",
        "next_category",
        "validation_category_recall",
    ] {
        assert!(!meta.contains(key), "{key} in {meta}");
    }
}

#[test]
fn vocabulary_item_input_carries_the_item_where_hashing_cannot() {
    // Two hash buckets: hashed, every item on screen looks the same, so only the item's vocabulary
    // row can tell the network where in the cycle the user is.
    let events = cycle_events(400);
    let mut cfg = small_config(Architecture::Gru);
    cfg.net.item_buckets = 2;
    cfg.net.item_embedding = 16;
    cfg.net.item_head_width = 16;
    cfg.net.item_input = ItemInput::Vocabulary;
    cfg.max_epochs = 12;
    let report = train_sequence::<CpuTrainBackend>(&events, &cfg, &Default::default(), &mut |_| {})
        .expect("trains");
    let vocab = report.model.items.as_ref().expect("an item vocabulary");
    assert_eq!(report.model.config.item_input_rows(), vocab.len() + 1);
    let items = report.test_items.as_ref().expect("next-item metrics");
    assert!(items.mrr > 0.8, "{items:?}");
    // The same network hashing the item into its two buckets cannot tell where the user is.
    let mut hashed = cfg.clone();
    hashed.net.item_input = ItemInput::Hashed;
    let blind =
        train_sequence::<CpuTrainBackend>(&events, &hashed, &Default::default(), &mut |_| {})
            .expect("trains");
    let blind = blind.test_items.expect("next-item metrics");
    assert!(blind.mrr < 0.5, "{blind:?}");
    // The steps are encoded by vocabulary row, online as offline.
    let buckets = report.model.buckets();
    assert_eq!(buckets.item(Some(&vocab.items[0])), 1);
    assert_eq!(buckets.item(Some("never-seen")), 0);

    let dir = tempfile::tempdir().unwrap();
    let meta = save_sequence(&report, &cfg, "flex", dir.path()).unwrap();
    assert_eq!(meta.format_version, 3, "older readers must refuse it");
    let (loaded, _) = load_sequence::<B>(dir.path(), &cfg.features, &Default::default()).unwrap();
    assert_eq!(loaded.config.item_input, ItemInput::Vocabulary);
    let online: &dyn OnlineModel = &loaded;
    assert_eq!(
        Buckets::of(online.config(), online.item_vocab()).item(Some(&vocab.items[3])),
        4
    );
}

/// The block-wise ranking a GPU backend uses gives exactly the full scan's items and scores, on the CPU
/// too: a vocabulary that is not a multiple of the block, ties, k larger than the number of blocks.
#[test]
fn ranking_by_blocks_equals_the_full_scan() {
    let device = Default::default();
    for (vocab, width) in [(1_000usize, 8usize), (130, 4), (64, 4)] {
        let mut cfg = small_config(Architecture::Gru).net;
        cfg.item_vocab = vocab;
        cfg.item_head_width = width;
        let model = SequenceModel::<B>::untrained(cfg, device);
        let queries: Vec<Vec<f32>> = (0..37)
            .map(|r| {
                (0..width)
                    .map(|j| {
                        if r % 5 == 0 {
                            0.0
                        } else {
                            ((r * 7 + j * 3) % 11) as f32 - 5.0
                        }
                    })
                    .collect()
            })
            .collect();
        let q: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        assert!(!model.ranks_on_device(), "flex ranks on the host");
        for k in [1, 20, 70] {
            let full = model.top_scored_items(&q, k);
            let blocks = model.top_scored_items_by_blocks(&q, k);
            assert_eq!(full.len(), blocks.len());
            for (r, (a, b)) in full.iter().zip(&blocks).enumerate() {
                let ids = |v: &[(u32, f32)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
                assert_eq!(ids(a), ids(b), "vocab {vocab} k {k} row {r}");
                for (x, y) in a.iter().zip(b) {
                    assert!((x.1 - y.1).abs() < 1e-5);
                }
            }
        }
    }
}

#[test]
fn top_k_ranks_by_score_then_index() {
    assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9, -1.0], 3), [1, 3, 2]);
    assert_eq!(top_k(&[0.2, 0.1], 5), [0, 1]);
    assert!(top_k(&[], 3).is_empty());
    assert!(top_k(&[1.0], 0).is_empty());
    // Against a full sort, with many ties: 5 000 scores of 50 distinct values.
    let scores: Vec<f32> = (0..5_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) % 50) as f32 - 25.0)
        .collect();
    let mut all: Vec<u32> = (0..scores.len() as u32).collect();
    all.sort_by(|a, b| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    });
    for k in [1, 20, 137] {
        let got = top_k_scored(&scores, k);
        let want: Vec<(u32, f32)> = all[..k].iter().map(|&i| (i, scores[i as usize])).collect();
        assert_eq!(got, want, "k = {k}");
    }
}

#[test]
fn step_by_step_equals_the_full_forward_pass() {
    for arch in [Architecture::Gru, Architecture::Lstm] {
        let device = Default::default();
        let mut cfg = small_config(arch).net;
        cfg.numeric_features = 3;
        cfg.item_vocab = 20;
        cfg.item_head_width = 8;
        let net: SequenceNet<B> = cfg.init(&device);
        let steps: Vec<Step> = (0..6)
            .map(|i| Step {
                event_type: (i % 4) as u32,
                category: (i % 3) as u32,
                item: (i * 5 % 60) as u32,
                numeric: vec![i as f32 * 0.1, -0.5, 1.0],
            })
            .collect();
        let full = net.forward_heads(StepTensors::from_steps(&[&steps], steps.len(), 3, &device));
        let full_p: Vec<f32> = full.purchase.into_data().into_vec().unwrap();
        let full_n: Vec<f32> = full.next.into_data().into_vec().unwrap();
        let full_q: Vec<f32> = full.item_query.unwrap().into_data().into_vec().unwrap();
        let mut state = None;
        for (t, step) in steps.iter().enumerate() {
            let x = StepTensors::from_steps(&[std::slice::from_ref(step)], 1, 3, &device);
            let out = net.step(x, state);
            state = Some(out.state);
            let p: Vec<f32> = out.purchase.into_data().into_vec().unwrap();
            let n: Vec<f32> = out.next.into_data().into_vec().unwrap();
            let query = out.item_query.unwrap();
            // The whole-vocabulary scores read straight from the weights equal those gathered by index.
            let direct: Vec<f32> = net
                .all_item_scores(query.clone())
                .into_data()
                .into_vec()
                .unwrap();
            let all = burn::tensor::Tensor::<B, 1, burn::tensor::Int>::arange(0..20, &device);
            let gathered: Vec<f32> = net
                .item_scores(query.clone(), all)
                .into_data()
                .into_vec()
                .unwrap();
            assert_eq!(direct.len(), 20);
            for (x, y) in direct.iter().zip(&gathered) {
                assert!((x - y).abs() < 1e-5, "{arch:?} step {t}: {x} vs {y}");
            }
            let q: Vec<f32> = query.into_data().into_vec().unwrap();
            for k in 0..8 {
                assert!(
                    (q[k] - full_q[t * 8 + k]).abs() < 1e-5,
                    "{arch:?} step {t} item query {k}"
                );
            }
            assert!(
                (p[0] - full_p[t]).abs() < 1e-5,
                "{arch:?} step {t}: {} vs {}",
                p[0],
                full_p[t]
            );
            for k in 0..n.len() {
                let f = full_n[t * n.len() + k];
                assert!((n[k] - f).abs() < 1e-5, "{arch:?} step {t} next {k}");
            }
        }
    }
}

#[test]
fn artifacts_round_trip_and_refuse_tampering() {
    let events = toy_events(60);
    for arch in [Architecture::Lstm, Architecture::Transformer] {
        let mut cfg = small_config(arch);
        cfg.max_epochs = 2;
        let report =
            train_sequence::<CpuTrainBackend>(&events, &cfg, &Default::default(), &mut |_| {})
                .expect("trains");
        let dir = tempfile::tempdir().unwrap();
        let meta = save_sequence(&report, &cfg, "flex", dir.path()).unwrap();
        assert!(is_sequence_artifact(dir.path()));
        assert!(meta.version.starts_with(arch.as_str()));
        let (loaded, meta2) =
            load_sequence::<B>(dir.path(), &cfg.features, &Default::default()).unwrap();
        assert_eq!(meta2.version, meta.version);
        // The purchase blend is fitted by default and travels with the artifact, beside the network's
        // own test metrics.
        assert!(report.model.blend.is_some(), "{arch:?}: no blend fitted");
        assert_eq!(loaded.blend, report.model.blend);
        assert!(meta2.network_only_metrics.is_some());
        let steps: Vec<Step> = (0..10)
            .map(|i| Step {
                event_type: (i % 4) as u32,
                category: 1,
                item: 2,
                numeric: vec![0.0; loaded.normalizer.len()],
            })
            .collect();
        let a = report.model.score_steps(&[&steps]);
        let b = loaded.score_steps(&[&steps]);
        assert_eq!(a, b, "{arch:?}: loaded model scores differently");
        assert_eq!(b[0].len(), 10);
        // A flipped byte in the weights is refused.
        let path = dir.path().join(artifact::WEIGHTS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        let err = load_sequence::<B>(dir.path(), &cfg.features, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("modified or truncated"), "{err}");
    }
}

fn random_steps(n: usize, features: usize, seed: u32) -> Vec<Step> {
    (0..n)
        .map(|i| {
            let k = i as u32 * 7 + seed * 13;
            Step {
                event_type: k % 10,
                category: k % 15,
                item: (k * 3) % 60,
                numeric: (0..features)
                    .map(|f| ((k + f as u32) % 5) as f32 * 0.3 - 0.6)
                    .collect(),
            }
        })
        .collect()
}

/// Online scoring of interleaved users, one event at a time in batches, equals scoring each
/// user's whole sequence at once (the Transformer with its sliding window).
#[test]
fn online_batches_of_interleaved_users_equal_offline_scoring() {
    for arch in [
        Architecture::Gru,
        Architecture::Lstm,
        Architecture::Transformer,
    ] {
        let mut net_cfg = small_config(arch).net;
        net_cfg.numeric_features = 4;
        let mut model = SequenceModel::<B>::untrained(net_cfg.clone(), Default::default());
        // With a purchase blend, so that its per-step inputs are checked on both paths too.
        model.blend = Some(blend::PurchaseBlend {
            numeric: vec![0.9, -0.6, 0.4, 0.2],
            numeric_range: vec![[-0.5, 0.5]; 4],
            linear_bias: 0.1,
            linear: 1.2,
            linear_range: [-3.0, 3.0],
            network: 0.7,
            network_range: [-5.0, 5.0],
            bias: -0.3,
            validation: Default::default(),
        });
        let users: Vec<Vec<Step>> = (0..3)
            .map(|u| random_steps(5 + 4 * u as usize, 4, u))
            .collect();
        let slices: Vec<&[Step]> = users.iter().map(Vec::as_slice).collect();
        let offline = model.score_steps(&slices);
        let alone = SequenceModel {
            blend: None,
            ..model.clone()
        };
        let network_only = alone.score_steps(&slices);
        assert!(
            (offline[0][1].purchase - network_only[0][1].purchase).abs() > 1e-3,
            "{arch:?}: the blend changed nothing"
        );
        let mut memories = vec![UserMemory::default(); users.len()];
        let longest = users.iter().map(Vec::len).max().unwrap();
        for t in 0..longest {
            // Everyone with a t-th event steps together; memory survives a byte round trip.
            let active: Vec<usize> = (0..users.len()).filter(|&u| t < users[u].len()).collect();
            let mut taken: Vec<UserMemory> = active
                .iter()
                .map(|&u| UserMemory::from_bytes(&memories[u].to_bytes()).expect("decodes"))
                .collect();
            let mut items: Vec<(&Step, &mut UserMemory)> = active
                .iter()
                .zip(taken.iter_mut())
                .map(|(&u, m)| (&users[u][t], m))
                .collect();
            let outs = model.step_batch(&mut items);
            for ((&u, out), mem) in active.iter().zip(outs).zip(taken) {
                let want = &offline[u][t];
                assert!(
                    (out.purchase - want.purchase).abs() < 1e-5,
                    "{arch:?} user {u} step {t}: {} vs {}",
                    out.purchase,
                    want.purchase
                );
                for (a, b) in out.next.iter().zip(&want.next) {
                    assert!((a - b).abs() < 1e-5, "{arch:?} user {u} step {t} next");
                }
                memories[u] = mem;
            }
        }
        if arch == Architecture::Transformer {
            assert!(memories.iter().all(|m| m.window.len() <= net_cfg.window));
        } else {
            assert!(
                memories
                    .iter()
                    .all(|m| m.state.len() == net_cfg.state_width())
            );
        }
    }
}

#[test]
fn memory_bytes_reject_garbage() {
    assert_eq!(UserMemory::from_bytes(&[]), None);
    assert_eq!(UserMemory::from_bytes(&[9, 0, 0, 0, 0]), None);
    let m = UserMemory {
        state: vec![1.5, -2.0],
        window: Vec::new(),
    };
    let mut bytes = m.to_bytes();
    assert_eq!(UserMemory::from_bytes(&bytes), Some(m));
    bytes.push(0);
    assert_eq!(UserMemory::from_bytes(&bytes), None, "trailing bytes");
}

/// The example artifact shipped in `models/gru-example` still loads with today's code and
/// feature spec, and scores.
#[test]
fn shipped_example_artifact_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gru-example");
    let (model, meta) = load_sequence::<B>(
        &dir,
        &clickpath_core::FeatureSpec::default(),
        &Default::default(),
    )
    .expect("models/gru-example loads");
    assert!(meta.version.starts_with("gru-"));
    let steps = random_steps(4, model.normalizer.len(), 1);
    let out = model.score_steps(&[&steps]);
    assert_eq!(out[0].len(), 4);
    assert!(out[0].iter().all(|o| (0.0..=1.0).contains(&o.purchase)));
}

/// The device probe answers instead of unwinding, with or without a GPU; where a GPU is promised
/// (`CLICKPATH_REQUIRE_GPU=1`, as on the GPU machine) it must pass.
#[cfg(feature = "cuda")]
#[test]
fn cuda_probe_answers_without_panicking() {
    let probe = super::probe_cuda();
    if std::env::var("CLICKPATH_REQUIRE_GPU").as_deref() == Ok("1") {
        probe.expect("a usable CUDA device");
    } else if let Err(e) = probe {
        assert!(e.to_string().contains("no usable CUDA device"), "{e}");
    }
}

/// The CUDA backend computes what the CPU backend computes, for the same weights (run on a machine
/// with an NVIDIA GPU: `cargo test --release -p clickpath-model --features cuda cuda_`).
#[cfg(feature = "cuda")]
#[test]
fn cuda_step_matches_cpu() {
    use burn::module::Module;
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    for arch in [
        Architecture::Gru,
        Architecture::Lstm,
        Architecture::Transformer,
    ] {
        let mut cfg = small_config(arch).net;
        cfg.numeric_features = 4;
        let cpu_dev = Default::default();
        let cpu_net: SequenceNet<B> = cfg.init(&cpu_dev);
        let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .record(cpu_net.clone().into_record(), ())
            .unwrap();
        let gpu_dev = Default::default();
        let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(bytes, &gpu_dev)
            .unwrap();
        let gpu_net: SequenceNet<CudaBackend> = cfg.init(&gpu_dev).load_record(record);
        let norm = Normalizer {
            names: (0..4).map(|i| format!("f{i}")).collect(),
            mean: vec![0.0; 4],
            std: vec![1.0; 4],
        };
        let cpu = SequenceModel::<B> {
            net: cpu_net,
            config: cfg.clone(),
            normalizer: norm.clone(),
            device: cpu_dev,
        };
        let gpu = SequenceModel::<CudaBackend> {
            net: gpu_net,
            config: cfg.clone(),
            normalizer: norm,
            device: gpu_dev,
        };
        let steps = random_steps(12, 4, 3);
        let a = cpu.score_steps(&[&steps]);
        let b = gpu.score_steps(&[&steps]);
        for (x, y) in a[0].iter().zip(&b[0]) {
            assert!(
                (x.purchase - y.purchase).abs() < 1e-3,
                "{arch:?}: {} vs {}",
                x.purchase,
                y.purchase
            );
        }
    }
}

/// A vocabulary past `IndexConfig::min_items` gets an item index ranking its lists: lists of
/// the asked length, best first, every score the item's exact score; a small one is scanned
/// exactly, as before.
#[test]
fn large_vocabularies_get_an_item_index_with_exact_scores() {
    use super::index::IndexConfig;
    let cfg = NetConfig {
        numeric_features: 3,
        item_vocab: 5_000,
        item_head_width: 16,
        ..NetConfig::default()
    };
    let model = SequenceModel::<B>::untrained(cfg.clone(), Default::default());
    let indexed = IndexedModel::new(model.clone(), &IndexConfig::default());
    let index = indexed.index().expect("5 000 items get an index");
    assert!(
        matches!(index, super::index::ItemSearch::Lists(l) if l.lists() == 71),
        "{}",
        index.describe()
    );
    let steps = random_steps(6, 3, 9);
    let queries = model.item_queries(&[&steps]).remove(0);
    let q: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
    let exact = model.top_scored_items(&q, 5_000);
    for (got, all) in OnlineModel::top_items(&indexed, &q, 20).iter().zip(&exact) {
        assert_eq!(got.len(), 20);
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        for (item, score) in got {
            let (_, want) = all.iter().find(|(i, _)| i == item).unwrap();
            assert!((score - want).abs() < 1e-3, "{item}: {score} vs {want}");
        }
    }
    let small = SequenceModel::<B>::untrained(
        NetConfig {
            item_vocab: 300,
            ..cfg
        },
        Default::default(),
    );
    assert!(
        IndexedModel::new(small, &IndexConfig::default())
            .index()
            .is_none()
    );
}

/// Served through an index that probes every cluster, the next-item figures are the exact scan's
/// and the lists hold all of the exact top k; probing one cluster of many loses some of it.
#[test]
fn served_item_evaluation_matches_the_exact_one_when_every_list_is_probed() {
    use super::index::IndexConfig;
    let events = cycle_events(200);
    let mut cfg = small_config(Architecture::Gru);
    cfg.net.item_head_width = 8;
    cfg.max_epochs = 3;
    let report = train_sequence::<CpuTrainBackend>(&events, &cfg, &Default::default(), &mut |_| {})
        .expect("trains");
    let model = report.model;
    let dataset = crate::dataset::build_dataset(&events, &cfg.session, &cfg.features);
    let splits = dataset.split(&cfg.split).unwrap();
    let seqs = data::sequences(
        &splits.test,
        model.buckets(),
        &model.normalizer,
        model.vocabs(),
    );
    let exact = evaluate_items(&model, &seqs, 5).unwrap();
    let every = IndexConfig {
        min_items: 1,
        lists: 6,
        probe: 6,
        ..IndexConfig::default()
    };
    let served = IndexedModel::new(model.clone(), &every);
    let (eval, recall) = evaluate_items_served(&model, &served, &seqs, 5).unwrap();
    assert!(exact.cases > 20);
    assert_eq!(
        (eval.cases, eval.hits, eval.reciprocal_ranks),
        (exact.cases, exact.hits, exact.reciprocal_ranks)
    );
    assert_eq!(recall, 1.0);
    let one = IndexConfig { probe: 1, ..every };
    let served = IndexedModel::new(model.clone(), &one);
    let (_, recall) = evaluate_items_served(&model, &served, &seqs, 5).unwrap();
    assert!(recall < 1.0, "{recall}");
}
