//! The chained topology gives the outputs the stages give one consumer each, on the same input.
//!
//! Per-stage mode is simulated as one of its possible schedules: each stage reads its whole input
//! topic (the encoded records its upstream wrote, decoded again) after its upstream finished, and
//! both sides flush on shutdown. Every final topic must hold the same records per key, in the same
//! order, except the one field that measures time: `Prediction.scoring_latency_us`.
//!
//! The detector is the one stage with two input topics. In the chain it sees each event, then that
//! event's prediction; in per-stage mode the order in which it reads the two topics depends on
//! timing. The model-surprise rule pairs a prediction with the user's next event whichever comes
//! first, but the alert it raises names different evidence (and the forest's score only on the
//! event path) depending on which did. So the first test gives the per-stage detector its inputs in
//! the chain's order, and the second shows that with the opposite order (every event before any
//! prediction) only MODEL_SURPRISE alerts change (docs/topology.md).

use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_runtime::query::partition_for_key;
use clickpath_runtime::{Context, Output, Stage, StageError};
use clickpath_schema::codec::Codec;
use clickpath_schema::{AlertType, ClickEvent, FeatureVector, FraudAlert, Prediction};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::analytics::Analytics;
use clickpath_stages::chain::{Chain, ChainStages};
use clickpath_stages::cleaning::Cleaning;
use clickpath_stages::detector::{Detector, DetectorInput};
use clickpath_stages::scorer::Scorer;
use clickpath_stages::sessionizer::Sessionizer;
use clickpath_stages::topology::builtin_model;
use clickpath_stages::windower::Windower;
use std::collections::BTreeMap;

const PARTITIONS: usize = 4;

fn stages(cfg: &ClickpathConfig) -> ChainStages {
    let t = &cfg.topics;
    ChainStages {
        cleaning: Cleaning::new(&cfg.cleaning, &t.clean),
        sessionizer: Sessionizer::new(&cfg.sessionizer, &t.sessions, &t.late_events, true),
        windower: Windower::new(&cfg.windower, &t.features),
        scorer: Scorer::new(
            builtin_model(&cfg.windower).unwrap(),
            &cfg.scorer,
            &t.predictions,
        ),
        detector: Detector::new(&cfg.detector, &t.alerts),
        analytics: Analytics::from_config(&cfg.analytics, &t.analytics, "test", true).unwrap(),
    }
}

/// Generated events (with the generator's duplicates and disorder), and every 97th made invalid
/// (no user id, or a negative price) for cleaning to reject.
fn events() -> Vec<ClickEvent> {
    let mut events: Vec<ClickEvent> = Generator::new(GeneratorConfig {
        seed: 7,
        sessions: 600,
        ..GeneratorConfig::default()
    })
    .unwrap()
    .filter_map(|g| match g {
        Generated::Event(e) => Some(e),
        Generated::Malformed(_) => None,
    })
    .collect();
    for (i, e) in events.iter_mut().enumerate().filter(|(i, _)| i % 97 == 50) {
        if i % 2 == 0 {
            e.user_id.clear();
        } else {
            e.price = Some(-1.0);
        }
    }
    events
}

fn partition(user: &str) -> i32 {
    partition_for_key(user.as_bytes(), PARTITIONS)
}

/// Feeds `inputs` (partition, record) to `stage`, ending a batch every 64 records, then shuts
/// it down; returns its outputs and how many records it rejected.
fn run<S: Stage>(
    stage: &mut S,
    codec: &Codec,
    now: i64,
    inputs: Vec<(i32, S::Input)>,
) -> (Vec<Output>, usize) {
    let mut out = Vec::new();
    let mut rejected = 0;
    let n = inputs.len();
    for (i, (p, input)) in inputs.into_iter().enumerate() {
        let mut ctx = Context::new(codec, &mut out, now).for_partition(p);
        match stage.process(input, &mut ctx) {
            Ok(()) => {}
            Err(StageError::Rejected { .. }) => rejected += 1,
            Err(StageError::Fatal(e)) => panic!("fatal: {e}"),
        }
        if i % 64 == 63 || i + 1 == n {
            stage
                .end_batch(&mut Context::new(codec, &mut out, now))
                .unwrap();
        }
    }
    stage
        .on_shutdown(&mut Context::new(codec, &mut out, now))
        .unwrap();
    (out, rejected)
}

/// Records of `topic` in `outputs`, decoded as `T`, with their partition by key.
fn read<T: clickpath_schema::codec::AvroRecord>(
    codec: &Codec,
    outputs: &[Output],
    topic: &str,
) -> Vec<(i32, T)> {
    outputs
        .iter()
        .filter(|o| o.topic == topic)
        .map(|o| {
            let key = String::from_utf8(o.key.clone()).unwrap();
            (partition(&key), codec.decode(&o.payload).unwrap())
        })
        .collect()
}

/// Every record per (topic, key) in output order, predictions' latency zeroed.
fn by_topic_and_key(
    codec: &Codec,
    outputs: &[Output],
    cfg: &ClickpathConfig,
) -> BTreeMap<(String, Vec<u8>), Vec<Vec<u8>>> {
    let mut out: BTreeMap<(String, Vec<u8>), Vec<Vec<u8>>> = BTreeMap::new();
    for o in outputs {
        let payload = if o.topic == cfg.topics.predictions {
            let mut p: Prediction = codec.decode(&o.payload).unwrap();
            p.scoring_latency_us = 0;
            codec.encode(&p).unwrap()
        } else {
            o.payload.clone()
        };
        out.entry((o.topic.clone(), o.key.clone()))
            .or_default()
            .push(payload);
    }
    out
}

/// How the per-stage detector interleaves its two input topics.
#[derive(Clone, Copy)]
enum DetectorOrder {
    /// Each event, then its prediction (the chain's order).
    EventThenItsPrediction,
    /// Every clean event before any prediction.
    EventsFirst,
}

/// Per-stage mode's outputs (final topics only) and the raw records cleaning rejected.
fn per_stage(
    codec: &Codec,
    cfg: &ClickpathConfig,
    now: i64,
    raw_in: Vec<(i32, ClickEvent)>,
    order: DetectorOrder,
) -> (Vec<Output>, usize) {
    let t = &cfg.topics;
    let mut s = stages(cfg);
    let (cleaned, rejected_raw) = run(&mut s.cleaning, codec, now, raw_in);
    let clean: Vec<(i32, ClickEvent)> = read(codec, &cleaned, &t.clean);
    let (sessions, _) = run(&mut s.sessionizer, codec, now, clean.clone());
    let (windowed, _) = run(&mut s.windower, codec, now, clean.clone());
    let (analytics, _) = run(&mut s.analytics, codec, now, clean.clone());
    let features: Vec<(i32, FeatureVector)> = read(codec, &windowed, &t.features);
    let (scored, _) = run(&mut s.scorer, codec, now, features);
    let mut predictions: BTreeMap<String, (i32, Prediction)> = read(codec, &scored, &t.predictions)
        .into_iter()
        .map(|(p, pr): (i32, Prediction)| (pr.event_id.clone(), (p, pr)))
        .collect();
    let events = clean.into_iter().map(|(p, e)| (p, DetectorInput::Event(e)));
    let detector_in: Vec<(i32, DetectorInput)> = match order {
        DetectorOrder::EventThenItsPrediction => events
            .flat_map(|(p, e)| {
                let DetectorInput::Event(ev) = &e else {
                    unreachable!()
                };
                let pr = predictions.remove(&ev.event_id);
                std::iter::once((p, e)).chain(pr.map(|(p, pr)| (p, DetectorInput::Prediction(pr))))
            })
            .collect(),
        DetectorOrder::EventsFirst => {
            let mut all: Vec<(i32, Prediction)> =
                std::mem::take(&mut predictions).into_values().collect();
            all.sort_by_key(|(_, pr)| pr.event_time);
            events
                .chain(
                    all.into_iter()
                        .map(|(p, pr)| (p, DetectorInput::Prediction(pr))),
                )
                .collect()
        }
    };
    assert!(
        predictions.is_empty(),
        "every prediction is for a clean event"
    );
    let (alerts, _) = run(&mut s.detector, codec, now, detector_in);
    let outputs = [cleaned, sessions, windowed, analytics, scored, alerts]
        .into_iter()
        .flatten()
        .filter(|o| o.topic != t.clean && o.topic != t.features)
        .collect();
    (outputs, rejected_raw)
}

#[test]
fn chained_and_per_stage_modes_give_the_same_outputs() {
    let codec = Codec::embedded();
    let cfg = ClickpathConfig::default();
    let t = &cfg.topics;
    let raw = events();
    let now = raw.iter().map(|e| e.event_time).max().unwrap() + 3_600_000;
    let raw_in: Vec<(i32, ClickEvent)> = raw
        .iter()
        .map(|e| (partition(&e.user_id), e.clone()))
        .collect();
    let (per_stage, rejected_raw) = per_stage(
        &codec,
        &cfg,
        now,
        raw_in.clone(),
        DetectorOrder::EventThenItsPrediction,
    );
    // Chained mode: one stage reads the raw events.
    let mut chain = Chain::new(stages(&cfg), &cfg, None);
    let (chained, rejected_chained) = run(&mut chain, &codec, now, raw_in);
    assert!(rejected_raw > 0, "the input has records cleaning rejects");

    assert_eq!(
        rejected_chained, rejected_raw,
        "the same raw records rejected"
    );
    assert!(
        chained
            .iter()
            .all(|o| o.topic != t.clean && o.topic != t.features),
        "intermediate topics are not produced unless configured"
    );
    let (a, b) = (
        by_topic_and_key(&codec, &per_stage, &cfg),
        by_topic_and_key(&codec, &chained, &cfg),
    );
    let count = |m: &BTreeMap<(String, Vec<u8>), Vec<Vec<u8>>>, topic: &str| -> usize {
        m.iter()
            .filter(|((tp, _), _)| tp == topic)
            .map(|(_, v)| v.len())
            .sum()
    };
    for topic in [&t.sessions, &t.predictions, &t.alerts, &t.analytics] {
        assert!(count(&a, topic) > 0, "the input exercises {topic}");
        assert_eq!(count(&a, topic), count(&b, topic), "{topic}: record counts");
    }
    let differing: Vec<&(String, Vec<u8>)> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    assert!(
        differing.is_empty(),
        "{} (topic, key) pairs differ, first {:?}",
        differing.len(),
        differing
            .first()
            .map(|(tp, k)| (tp, String::from_utf8_lossy(k)))
    );
}

#[test]
fn the_chain_produces_the_intermediate_topics_when_asked() {
    let codec = Codec::embedded();
    let mut cfg = ClickpathConfig::default();
    cfg.topology.produce_clean = true;
    cfg.topology.produce_features = true;
    let raw: Vec<(i32, ClickEvent)> = events()
        .into_iter()
        .take(500)
        .map(|e| (partition(&e.user_id), e))
        .collect();
    let now = raw.iter().map(|(_, e)| e.event_time).max().unwrap() + 3_600_000;
    let mut alone = Cleaning::new(&cfg.cleaning, &cfg.topics.clean);
    let (cleaned, _) = run(&mut alone, &codec, now, raw.clone());
    let mut chain = Chain::new(stages(&cfg), &cfg, None);
    let (chained, _) = run(&mut chain, &codec, now, raw);
    let payloads = |outs: &[Output], topic: &str| -> Vec<Vec<u8>> {
        outs.iter()
            .filter(|o| o.topic == topic)
            .map(|o| o.payload.clone())
            .collect()
    };
    assert_eq!(
        payloads(&chained, &cfg.topics.clean),
        payloads(&cleaned, &cfg.topics.clean),
        "the clean topic holds what cleaning alone writes"
    );
    let features = payloads(&chained, &cfg.topics.features);
    assert_eq!(
        features.len(),
        payloads(&chained, &cfg.topics.predictions).len(),
        "one feature vector per prediction"
    );
}

#[test]
fn only_model_surprise_alerts_depend_on_the_detectors_input_order() {
    let codec = Codec::embedded();
    let cfg = ClickpathConfig::default();
    let raw = events();
    let now = raw.iter().map(|e| e.event_time).max().unwrap() + 3_600_000;
    let raw_in: Vec<(i32, ClickEvent)> = raw
        .iter()
        .map(|e| (partition(&e.user_id), e.clone()))
        .collect();
    let alerts = |outputs: &[Output]| -> Vec<(AlertType, Vec<u8>)> {
        let mut v: Vec<(AlertType, Vec<u8>)> = outputs
            .iter()
            .filter(|o| o.topic == cfg.topics.alerts)
            .map(|o| {
                let a: FraudAlert = codec.decode(&o.payload).unwrap();
                (a.alert_type, o.payload.clone())
            })
            .collect();
        v.sort();
        v
    };
    let (events_first, _) = per_stage(
        &codec,
        &cfg,
        now,
        raw_in.clone(),
        DetectorOrder::EventsFirst,
    );
    let mut chain = Chain::new(stages(&cfg), &cfg, None);
    let (chained, _) = run(&mut chain, &codec, now, raw_in);
    let (a, b) = (alerts(&events_first), alerts(&chained));
    let others = |v: &[(AlertType, Vec<u8>)]| -> Vec<Vec<u8>> {
        v.iter()
            .filter(|(t, _)| *t != AlertType::ModelSurprise)
            .map(|(_, p)| p.clone())
            .collect()
    };
    assert!(!others(&a).is_empty(), "the input raises other alerts");
    assert_eq!(others(&a), others(&b), "every other alert is the same");
    assert!(
        b.iter().any(|(t, _)| *t == AlertType::ModelSurprise),
        "the chain raises model-surprise alerts"
    );
}

/// The changelog a chain leaves, folded to the last value per (partition, key), when its state
/// changes are taken after every `take_every`-th batch of 64 records (and at the end).
fn changelog_taken_every(take_every: usize) -> BTreeMap<(i32, Vec<u8>), Vec<u8>> {
    let codec = Codec::embedded();
    let cfg = ClickpathConfig::default();
    let raw = events();
    let now = raw.iter().map(|e| e.event_time).max().unwrap() + 3_600_000;
    let mut chain = Chain::new(stages(&cfg), &cfg, None);
    chain.on_assign(&(0..PARTITIONS as i32).collect::<Vec<_>>());
    let mut folded = BTreeMap::new();
    let mut fold = |chain: &mut Chain| {
        for c in chain.take_state_changes() {
            match c.value {
                Some(v) => folded.insert((c.partition, c.key), v),
                None => folded.remove(&(c.partition, c.key)),
            };
        }
    };
    let mut out = Vec::new();
    for (i, batch) in raw.chunks(64).enumerate() {
        for e in batch {
            let mut ctx = Context::new(&codec, &mut out, now).for_partition(partition(&e.user_id));
            let _ = chain.process(e.clone(), &mut ctx);
        }
        chain
            .end_batch(&mut Context::new(&codec, &mut out, now))
            .unwrap();
        if i % take_every == take_every - 1 {
            fold(&mut chain);
        }
    }
    fold(&mut chain);
    folded
}

/// Cleaning's de-duplication ids in a folded changelog, (partition, id, first time), and the other
/// keys. Cleaning writes the ids a batch adds as a new chunk (key: bucket and sequence), so its keys
/// depend on how often changes are taken; the ids they hold must not.
type Split = (
    std::collections::BTreeSet<(i32, String, i64)>,
    BTreeMap<(i32, Vec<u8>), Vec<u8>>,
);

fn split_dedupe_chunks(folded: BTreeMap<(i32, Vec<u8>), Vec<u8>>) -> Split {
    let mut ids = std::collections::BTreeSet::new();
    let mut rest = BTreeMap::new();
    for ((p, key), value) in folded {
        if key.starts_with(b"cd") {
            let chunk = clickpath_core::dedupe::DedupeChunk::from_bytes(&value).unwrap();
            ids.extend(chunk.ids.into_iter().map(|(id, t)| (p, id, t)));
        } else {
            rest.insert((p, key), value);
        }
    }
    (ids, rest)
}

/// At-least-once takes state changes once per commit interval, exactly-once once per batch: the
/// changelog must hold the same state either way, or a restore would depend on the commit schedule
/// (a value changed without being journalled would be written late, or never).
#[test]
fn the_changelog_does_not_depend_on_how_often_state_changes_are_taken() {
    let (ids_every_batch, every_batch) = split_dedupe_chunks(changelog_taken_every(1));
    let (ids_every_tenth, every_tenth) = split_dedupe_chunks(changelog_taken_every(10));
    assert!(every_batch.len() > 500, "{}", every_batch.len());
    assert!(ids_every_batch.len() > 300, "{}", ids_every_batch.len());
    assert!(
        ids_every_batch == ids_every_tenth,
        "de-duplication ids differ"
    );
    let differing: Vec<_> = every_batch
        .iter()
        .filter(|(k, v)| every_tenth.get(*k) != Some(*v))
        .map(|((p, k), _)| (*p, String::from_utf8_lossy(k).into_owned()))
        .chain(
            every_tenth
                .keys()
                .filter(|k| !every_batch.contains_key(*k))
                .map(|(p, k)| (*p, String::from_utf8_lossy(k).into_owned())),
        )
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} keys differ (partition, stage tag and key): {:?}",
        differing.len(),
        every_batch.len(),
        &differing[..differing.len().min(20)]
    );
}
