//! What an uninterrupted run gives: the pure `core` logic over exactly what each input partition holds,
//! and the comparison of the committed output with it.

use super::{ChaosOptions, ChaosReport};
use crate::chaos::ReadRecord;
use clickpath_core::dedupe::Deduper;
use clickpath_core::session::Sessionizer;
use clickpath_core::validate::validate_and_normalise;
use clickpath_generator::{DirtyConfig, Generated, Generator, GeneratorConfig};
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::codec::Codec;
use clickpath_schema::{
    AlertType, ClickEvent, EventType, FeatureVector, FraudAlert, FunnelAggregate, Prediction,
    SessionSummary,
};
use clickpath_stages::analytics::Analytics;
use clickpath_stages::chain::{Chain, ChainStages};
use clickpath_stages::cleaning::Cleaning;
use clickpath_stages::detector::Detector;
use clickpath_stages::scorer::Scorer;
use clickpath_stages::sessionizer::Sessionizer as StageSessionizer;
use clickpath_stages::topology::builtin_model;
use clickpath_stages::windower::Windower;
use clickpath_stages::{ClickpathConfig, StageName};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::collections::BTreeMap;
use std::time::Duration;

/// The input: generated events (the cleaning stage also gets the generator's malformed records).
pub(super) fn input_items(opts: &ChaosOptions) -> anyhow::Result<Vec<Generated>> {
    let mut gcfg = GeneratorConfig {
        seed: opts.seed,
        sessions: opts.sessions,
        ..GeneratorConfig::default()
    };
    if !matches!(
        opts.target,
        super::Target::Stage(StageName::Cleaning) | super::Target::Chain | super::Target::Pipeline
    ) {
        gcfg.dirty = DirtyConfig {
            malformed_rate: 0.0,
            ..gcfg.dirty
        };
    }
    Ok(Generator::new(gcfg)?.collect())
}

/// What identifies one output record of the stage under test: a clean event or a feature vector by its
/// event id (the windower's values depend on in-memory window state, which a rewind or a SIGKILL resets, so
/// only their presence is compared), a session by everything it summarises.
pub(super) fn output_key(stage: StageName, codec: &Codec, payload: &[u8]) -> String {
    let key = match stage {
        StageName::Cleaning => codec.decode::<ClickEvent>(payload).map(|e| e.event_id),
        StageName::Windower => codec.decode::<FeatureVector>(payload).map(|f| f.event_id),
        _ => codec
            .decode::<SessionSummary>(payload)
            .map(|s| session_key(&s)),
    };
    key.unwrap_or_else(|e| format!("undecodable output: {e}"))
}

/// One far-future event on every partition of `topic`, which closes every open session.
pub(super) fn send_sentinels(
    cfg: &ClickpathConfig,
    codec: &Codec,
    topic: &str,
    time: i64,
) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        clickpath_runtime::kafka::producer_config(cfg).create()?;
    for p in 0..cfg.topics.partitions {
        let ev = ClickEvent::new(
            format!("sentinel-{p}"),
            format!("sentinel-{p}"),
            EventType::PageView,
            time,
        );
        let bytes = codec.encode(&ev)?;
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(p)
                    .key(ev.user_id.as_bytes())
                    .payload(&bytes),
            )
            .map_err(|(e, _)| anyhow::anyhow!("cannot send a sentinel: {e}"))?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// The parts of a session that must match.
fn session_key(s: &SessionSummary) -> String {
    format!(
        "{}|{}|{}|{}|{:?}|{}|{}",
        s.user_id, s.start_time, s.end_time, s.event_count, s.path, s.purchased, s.order_value
    )
}

/// Expected outputs (with multiplicity) of an uninterrupted run over `input`.
pub(super) fn reference(
    cfg: &ClickpathConfig,
    stage: StageName,
    codec: &Codec,
    input: &[ReadRecord],
) -> BTreeMap<String, usize> {
    let mut by_partition: BTreeMap<i32, Vec<&ReadRecord>> = BTreeMap::new();
    for r in input {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let now = clickpath_runtime::runner::now_ms();
    for records in by_partition.values_mut() {
        records.sort_by_key(|r| r.offset);
        match stage {
            StageName::Cleaning => {
                let c = &cfg.cleaning;
                let mut dedupe = Deduper::new(c.dedupe_window_ms, c.dedupe_max_ids);
                for r in records.iter() {
                    if r.payload.len() > cfg.runtime.max_record_bytes {
                        continue;
                    }
                    let Ok(mut ev) = codec.decode::<ClickEvent>(&r.payload) else {
                        continue;
                    };
                    if validate_and_normalise(&mut ev, &c.validation, now).is_err()
                        || dedupe.is_duplicate(&ev.event_id, ev.event_time)
                    {
                        continue;
                    }
                    *out.entry(ev.event_id).or_default() += 1;
                }
            }
            StageName::Windower => {
                for r in records.iter() {
                    if let Ok(ev) = codec.decode::<ClickEvent>(&r.payload) {
                        *out.entry(ev.event_id).or_default() += 1;
                    }
                }
            }
            _ => {
                let mut s = Sessionizer::new(cfg.sessionizer.clone());
                for r in records.iter() {
                    if let Ok(ev) = codec.decode::<ClickEvent>(&r.payload) {
                        for summary in s.on_event(&ev) {
                            *out.entry(session_key(&summary)).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    out
}

/// What identifies one output record of the whole pipeline: its topic, key and whole value, with the
/// fields that legitimately differ between two runs blanked: `Prediction.scoring_latency_us` (time
/// measured) and `FunnelAggregate.instance` (which process published it). `None` for a record not
/// compared: per stage, MODEL_SURPRISE alerts, since that detector reads an event and its prediction
/// from two topics in an order that depends on timing (docs/topology.md).
pub(super) fn chain_output_key(
    cfg: &ClickpathConfig,
    target: super::Target,
    codec: &Codec,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) -> Option<String> {
    let t = &cfg.topics;
    let value = if topic == t.predictions {
        codec.decode::<Prediction>(payload).map(|mut p| {
            p.scoring_latency_us = 0;
            format!("{p:?}")
        })
    } else if topic == t.analytics {
        codec.decode::<FunnelAggregate>(payload).map(|mut a| {
            a.instance.clear();
            format!("{a:?}")
        })
    } else if topic == t.alerts {
        let alert = codec.decode::<FraudAlert>(payload);
        if target == super::Target::Pipeline
            && alert
                .as_ref()
                .is_ok_and(|a| a.alert_type == AlertType::ModelSurprise)
        {
            return None;
        }
        alert.map(|a| format!("{a:?}"))
    } else {
        codec
            .decode::<SessionSummary>(payload)
            .map(|s| format!("{s:?}"))
    };
    let value = value.unwrap_or_else(|e| format!("undecodable output: {e}"));
    Some(format!("{topic}|{}|{value}", String::from_utf8_lossy(key)))
}

/// Expected outputs (with multiplicity) of an uninterrupted chained run over `input` (the raw
/// topic): the chain that `clickpath run all` builds, fed each partition's records in offset order,
/// then one tick (the sentinels have moved every watermark past everything).
pub(super) fn chain_reference(
    cfg: &ClickpathConfig,
    target: super::Target,
    codec: &Codec,
    input: &[ReadRecord],
) -> anyhow::Result<BTreeMap<String, usize>> {
    let t = &cfg.topics;
    let stages = ChainStages {
        cleaning: Cleaning::new(&cfg.cleaning, &t.clean),
        sessionizer: StageSessionizer::new(&cfg.sessionizer, &t.sessions, &t.late_events, false),
        windower: Windower::new(&cfg.windower, &t.features),
        scorer: Scorer::new(builtin_model(&cfg.windower)?, &cfg.scorer, &t.predictions),
        detector: Detector::new(&cfg.detector, &t.alerts),
        analytics: Analytics::from_config(&cfg.analytics, &t.analytics, "reference", false)
            .map_err(anyhow::Error::msg)?,
    };
    let mut chain = Chain::new(stages, cfg, None);
    let mut by_partition: BTreeMap<i32, Vec<&ReadRecord>> = BTreeMap::new();
    for r in input {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let partitions: Vec<i32> = by_partition.keys().copied().collect();
    chain.on_assign(&partitions);
    let now = clickpath_runtime::runner::now_ms();
    let mut outputs = Vec::new();
    for (p, records) in by_partition.iter_mut() {
        records.sort_by_key(|r| r.offset);
        for r in records.iter() {
            if r.payload.len() > cfg.runtime.max_record_bytes {
                continue;
            }
            let Ok(ev) = codec.decode::<ClickEvent>(&r.payload) else {
                continue;
            };
            let mut ctx = Context::new(codec, &mut outputs, now)
                .for_partition(*p)
                .at_offset(r.offset);
            match chain.process(ev, &mut ctx) {
                Ok(()) | Err(StageError::Rejected { .. }) => {}
                Err(StageError::Fatal(e)) => anyhow::bail!("reference chain: {e}"),
            }
        }
        chain
            .end_batch(&mut Context::new(codec, &mut outputs, now))
            .map_err(|e| anyhow::anyhow!("reference chain: {e}"))?;
    }
    chain
        .tick(&mut Context::new(codec, &mut outputs, now))
        .map_err(|e| anyhow::anyhow!("reference chain: {e}"))?;
    let compared = [&t.sessions, &t.predictions, &t.alerts, &t.analytics];
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for o in outputs.iter().filter(|o| compared.contains(&&o.topic)) {
        if let Some(key) = chain_output_key(cfg, target, codec, &o.topic, &o.key, &o.payload) {
            *out.entry(key).or_default() += 1;
        }
    }
    Ok(out)
}

pub(super) fn compare(
    expected: &BTreeMap<String, usize>,
    got: &BTreeMap<String, usize>,
    report: &mut ChaosReport,
) {
    report.distinct = got.len();
    // Which outputs are lost, repeated or new tells a transaction bug from a state bug: a few of each kind
    // per topic (keys start with their topic).
    let mut sampled: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut sample = |kind: &'static str, key: &str, report: &mut ChaosReport| {
        let topic = key.split('|').next().unwrap_or_default().to_string();
        let n = sampled.entry((kind, topic)).or_default();
        if *n < SAMPLES_PER_TOPIC {
            *n += 1;
            report.samples.push(format!("{kind}: {key}"));
        }
    };
    for (k, &n) in expected {
        let have = got.get(k).copied().unwrap_or(0);
        if have < n {
            report.lost += n - have;
            sample("lost", k, report);
        } else if have > n {
            report.duplicates += have - n;
            sample("duplicated", k, report);
        }
    }
    for (k, &n) in got {
        if !expected.contains_key(k) {
            report.unexpected += n;
            sample("unexpected", k, report);
        }
    }
}

/// How many outputs of each kind (lost, duplicated, unexpected) and topic a failed run shows.
const SAMPLES_PER_TOPIC: usize = 2;
