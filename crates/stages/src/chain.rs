//! The chained topology: every stage in one consumer of the raw topic (`[topology] mode = "chained"`).
//!
//! Kafka Streams and Flink run the operators of one key space in one task per partition; clickpath's
//! topics are all keyed by user id with the raw topic's partition count, so it does the same. The
//! chain reads raw events once and runs, in process and per record,
//!
//! ```text
//! raw -> cleaning -> clean -> sessionizer            -> sessions, late events
//!                          -> windower -> features -> scorer -> predictions -> detector
//!                          -> analytics              -> analytics
//!                          -> detector               -> alerts
//! ```
//!
//! Each stage is the same type that runs alone in per-stage mode, unchanged: what it emits to an
//! internal topic (clean events, features, predictions) is handed to the next stages as the typed
//! record ([`clickpath_runtime::handoff`]), with no Avro encode or decode between them. The final
//! outputs, every stage's changelog records (one changelog, `<group_prefix>.chain-changelog`, each key
//! tagged with its stage) and the raw offsets commit in one transaction under exactly-once. The
//! predictions are always produced (downstream services read them); clean events and features only
//! when `topology.produce_clean` / `produce_features` ask for them.
//!
//! A record that a stage behind cleaning rejects becomes a dead letter naming that stage and the
//! internal topic, holding the record it was handed (encoded), as per-stage mode would write it.

use crate::analytics::Analytics;
use crate::cleaning::Cleaning;
use crate::config::ClickpathConfig;
use crate::detector::Detector;
use crate::scorer::Scorer;
use crate::sessionizer::Sessionizer;
use crate::topology::{StageName, build_scorer};
use crate::windower::Windower;
use clickpath_runtime::deadletter::{Rejection, dead_letter_output};
use clickpath_runtime::handoff::{Handed, Handoff};
use clickpath_runtime::metrics::{Metrics, StageTopic};
use clickpath_runtime::query::QueryStore;
use clickpath_runtime::{Context, RunnerEnv, Stage, StageError, StateChange};
use clickpath_schema::codec::AvroRecord;
use clickpath_schema::{ClickEvent, FeatureVector, Prediction};
use prometheus_client::metrics::counter::Counter;

/// The chain's stage name: its consumer group is `<group_prefix>.chain`, its changelog
/// `<group_prefix>.chain-changelog`, its metrics' `stage` label `chain`.
pub const CHAIN: &str = "chain";

/// Routes of the chain's handoff, in [`Handoff::new`]'s order.
const CLEAN: usize = 0;
const FEATURES: usize = 1;
const PREDICTIONS: usize = 2;

/// First byte of a changelog key in the chain's changelog: which stage's state it is.
mod tag {
    pub const CLEANING: u8 = b'c';
    pub const SESSIONIZER: u8 = b's';
    pub const WINDOWER: u8 = b'w';
    pub const SCORER: u8 = b'p';
    pub const DETECTOR: u8 = b'd';
    pub const ANALYTICS: u8 = b'a';
}

/// Records handed to each chained stage, as `records_in{stage, topic}` (what each would have read
/// from its topic in per-stage mode).
struct HandedCounters {
    sessionizer: Counter,
    windower: Counter,
    analytics: Counter,
    detector_events: Counter,
    scorer: Counter,
    detector_predictions: Counter,
}

impl HandedCounters {
    fn new(metrics: Option<&Metrics>, clean: &str, features: &str, predictions: &str) -> Self {
        let counter = |stage: &str, topic: &str| match metrics {
            Some(m) => m
                .records_in
                .get_or_create(&StageTopic {
                    stage: stage.into(),
                    topic: topic.into(),
                })
                .clone(),
            None => Counter::default(),
        };
        HandedCounters {
            sessionizer: counter("sessionizer", clean),
            windower: counter("windower", clean),
            analytics: counter("analytics", clean),
            detector_events: counter("detector", clean),
            scorer: counter("scorer", features),
            detector_predictions: counter("detector", predictions),
        }
    }
}

/// Every stage chained in one consumer (see the module docs).
pub struct Chain {
    cleaning: Cleaning,
    sessionizer: Sessionizer,
    windower: Windower,
    scorer: Scorer,
    detector: Detector,
    analytics: Analytics,
    handoff: Handoff,
    dead_letters: String,
    metrics: Option<Metrics>,
    handed: HandedCounters,
}

/// The stages a [`Chain`] runs, built as for per-stage mode.
pub struct ChainStages {
    /// Validation and de-duplication.
    pub cleaning: Cleaning,
    /// Event-time sessions.
    pub sessionizer: Sessionizer,
    /// Sliding-window features.
    pub windower: Windower,
    /// Predictions.
    pub scorer: Scorer,
    /// Fraud and bot alerts.
    pub detector: Detector,
    /// Funnel aggregates.
    pub analytics: Analytics,
}

impl Chain {
    /// A chain of `stages`, handing over records emitted to `cfg.topics`' clean, features and
    /// predictions topics (producing them as `cfg.topology` says; predictions always).
    pub fn new(stages: ChainStages, cfg: &ClickpathConfig, metrics: Option<Metrics>) -> Self {
        let t = &cfg.topics;
        let routes = vec![
            (t.clean.clone(), cfg.topology.produce_clean),
            (t.features.clone(), cfg.topology.produce_features),
            (t.predictions.clone(), true),
        ];
        let handed = HandedCounters::new(metrics.as_ref(), &t.clean, &t.features, &t.predictions);
        Chain {
            cleaning: stages.cleaning,
            sessionizer: stages.sessionizer,
            windower: stages.windower,
            scorer: stages.scorer,
            detector: stages.detector,
            analytics: stages.analytics,
            handoff: Handoff::new(routes),
            dead_letters: t.dead_letters.clone(),
            metrics,
            handed,
        }
    }

    /// The chain as configured by `cfg` (each stage as `clickpath run <stage>` builds it).
    /// `flush_on_shutdown` closes open sessions and buckets at the end (the demo).
    pub fn from_config(
        cfg: &ClickpathConfig,
        env: &RunnerEnv,
        flush_on_shutdown: bool,
    ) -> anyhow::Result<Self> {
        let t = &cfg.topics;
        let stages = ChainStages {
            cleaning: Cleaning::new(&cfg.cleaning, &t.clean),
            sessionizer: Sessionizer::new(
                &cfg.sessionizer,
                &t.sessions,
                &t.late_events,
                flush_on_shutdown,
            )
            .with_outlook(crate::topology::load_outlook(cfg)?),
            windower: Windower::new(&cfg.windower, &t.features),
            scorer: build_scorer(cfg, env)?,
            detector: Detector::new(&cfg.detector, &t.alerts),
            analytics: Analytics::from_config(
                &cfg.analytics,
                &t.analytics,
                &crate::analytics::instance_name(&cfg.kafka),
                flush_on_shutdown,
            )
            .map_err(anyhow::Error::msg)?,
        };
        Ok(Chain::new(stages, cfg, Some(env.metrics.clone())))
    }

    /// Hands every queued record to the stages behind the one that emitted it, until none is left
    /// (a record handed on may queue more: clean -> features -> predictions).
    fn route(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        while let Some(handed) = self.handoff.pop() {
            let Handed {
                route,
                key,
                partition,
                trace,
                record,
            } = handed;
            let partition = partition.or(ctx.partition());
            let topic = self.handoff.topic(route).to_owned();
            // The record's own trace: a prediction scored in a micro-batch belongs to its event,
            // not to the record being processed when the batch filled.
            let mut sub = ctx
                .handing_off(&mut self.handoff)
                .with_trace(trace.as_ref());
            if let Some(p) = partition {
                sub = sub.for_partition(p);
            }
            let wrong =
                || StageError::Fatal(format!("chain: a record of the wrong type on {topic}"));
            match route {
                CLEAN => {
                    let ev = *record.downcast::<ClickEvent>().map_err(|_| wrong())?;
                    self.handed.sessionizer.inc();
                    let r = self.sessionizer.process_event(&ev, &mut sub);
                    dead_letter_on_reject(
                        &mut sub,
                        &self.dead_letters,
                        "sessionizer",
                        &topic,
                        &key,
                        &ev,
                        r,
                        &self.metrics,
                    )?;
                    self.handed.windower.inc();
                    let r = self.windower.process_event(&ev, &mut sub);
                    dead_letter_on_reject(
                        &mut sub,
                        &self.dead_letters,
                        "windower",
                        &topic,
                        &key,
                        &ev,
                        r,
                        &self.metrics,
                    )?;
                    self.handed.analytics.inc();
                    let r = self.analytics.process_event(&ev, &mut sub);
                    dead_letter_on_reject(
                        &mut sub,
                        &self.dead_letters,
                        "analytics",
                        &topic,
                        &key,
                        &ev,
                        r,
                        &self.metrics,
                    )?;
                    self.handed.detector_events.inc();
                    let r = self.detector.process_event(&ev, &mut sub);
                    dead_letter_on_reject(
                        &mut sub,
                        &self.dead_letters,
                        "detector",
                        &topic,
                        &key,
                        &ev,
                        r,
                        &self.metrics,
                    )?;
                }
                FEATURES => {
                    let fv = *record.downcast::<FeatureVector>().map_err(|_| wrong())?;
                    self.handed.scorer.inc();
                    let r = self
                        .scorer
                        .process_features(std::borrow::Cow::Borrowed(&fv), &mut sub);
                    dead_letter_on_reject(
                        &mut sub,
                        &self.dead_letters,
                        "scorer",
                        &topic,
                        &key,
                        &fv,
                        r,
                        &self.metrics,
                    )?;
                }
                PREDICTIONS => {
                    let p = *record.downcast::<Prediction>().map_err(|_| wrong())?;
                    self.handed.detector_predictions.inc();
                    let r = self.detector.process_prediction(&p, &mut sub);
                    dead_letter_on_reject(
                        &mut sub,
                        &self.dead_letters,
                        "detector",
                        &topic,
                        &key,
                        &p,
                        r,
                        &self.metrics,
                    )?;
                }
                _ => return Err(wrong()),
            }
        }
        Ok(())
    }
}

/// A rejection by a stage behind cleaning: the record it was handed goes to the dead-letter topic,
/// named as per-stage mode would name it (that stage, the internal topic, the raw record's
/// partition and offset). Fatal errors stop the chain.
#[allow(clippy::too_many_arguments)]
fn dead_letter_on_reject<T: AvroRecord>(
    ctx: &mut Context<'_>,
    dead_letters: &str,
    stage: &str,
    topic: &str,
    key: &str,
    record: &T,
    result: Result<(), StageError>,
    metrics: &Option<Metrics>,
) -> Result<(), StageError> {
    let (kind, reason) = match result {
        Ok(()) => return Ok(()),
        Err(StageError::Fatal(e)) => return Err(StageError::Fatal(format!("{stage}: {e}"))),
        Err(StageError::Rejected { kind, reason }) => (kind, reason),
    };
    let payload = ctx
        .codec()
        .encode(record)
        .map_err(|e| StageError::Fatal(format!("cannot encode a dead letter for {stage}: {e}")))?;
    let why = Rejection {
        stage,
        topic,
        partition: ctx.partition().unwrap_or(-1),
        offset: ctx.offset().unwrap_or(-1),
        kind,
        reason: &reason,
        now_ms: ctx.now_ms(),
    };
    // Handed in process, the record has no headers of its own; `push_output` adds its trace.
    let output = dead_letter_output(
        dead_letters,
        &why,
        Some(key.as_bytes()),
        Some(&payload),
        [],
        true,
    );
    if let Some(m) = metrics {
        m.dead_letter(stage, kind);
    }
    ctx.push_output(output);
    Ok(())
}

/// Runs hook `$hook` of every stage in topological order, handing over what each emits before the
/// next runs (so a stage's hook output reaches the stages behind it in the same batch).
macro_rules! each_stage {
    ($chain:ident, $ctx:ident, $hook:ident) => {{
        $chain
            .cleaning
            .$hook(&mut $ctx.handing_off(&mut $chain.handoff))?;
        $chain.route($ctx)?;
        $chain
            .sessionizer
            .$hook(&mut $ctx.handing_off(&mut $chain.handoff))?;
        $chain.route($ctx)?;
        $chain
            .windower
            .$hook(&mut $ctx.handing_off(&mut $chain.handoff))?;
        $chain.route($ctx)?;
        $chain
            .scorer
            .$hook(&mut $ctx.handing_off(&mut $chain.handoff))?;
        $chain.route($ctx)?;
        $chain
            .detector
            .$hook(&mut $ctx.handing_off(&mut $chain.handoff))?;
        $chain.route($ctx)?;
        $chain
            .analytics
            .$hook(&mut $ctx.handing_off(&mut $chain.handoff))?;
        $chain.route($ctx)
    }};
}

/// Calls `$call` on every stage that keeps durable state, with `$tag` its changelog tag.
macro_rules! each_durable {
    ($chain:ident, |$stage:ident, $tag:ident| $call:expr) => {{
        {
            let $stage = &mut $chain.cleaning;
            let $tag = tag::CLEANING;
            if $stage.is_stateful() {
                $call;
            }
        }
        {
            let $stage = &mut $chain.sessionizer;
            let $tag = tag::SESSIONIZER;
            if $stage.is_stateful() {
                $call;
            }
        }
        {
            let $stage = &mut $chain.windower;
            let $tag = tag::WINDOWER;
            if $stage.is_stateful() {
                $call;
            }
        }
        {
            let $stage = &mut $chain.scorer;
            let $tag = tag::SCORER;
            if $stage.is_stateful() {
                $call;
            }
        }
        {
            let $stage = &mut $chain.detector;
            let $tag = tag::DETECTOR;
            if $stage.is_stateful() {
                $call;
            }
        }
        {
            let $stage = &mut $chain.analytics;
            let $tag = tag::ANALYTICS;
            if $stage.is_stateful() {
                $call;
            }
        }
    }};
}

/// The stage a key of the chain's changelog belongs to, and the stage's own key (for tools that
/// read the changelog, such as the bench's state report).
pub fn changelog_stage(key: &[u8]) -> Option<(StageName, &[u8])> {
    let (&t, rest) = key.split_first()?;
    let stage = match t {
        tag::CLEANING => StageName::Cleaning,
        tag::SESSIONIZER => StageName::Sessionizer,
        tag::WINDOWER => StageName::Windower,
        tag::SCORER => StageName::Scorer,
        tag::DETECTOR => StageName::Detector,
        tag::ANALYTICS => StageName::Analytics,
        _ => return None,
    };
    Some((stage, rest))
}

/// Prefixes a stage's changelog key with its tag.
fn tagged(tag: u8, mut change: StateChange) -> StateChange {
    change.key.insert(0, tag);
    change
}

impl Stage for Chain {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        CHAIN
    }

    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        // A raw record cleaning rejects is dead-lettered by the run loop, like per-stage mode's.
        self.cleaning
            .process(ev, &mut ctx.handing_off(&mut self.handoff))?;
        self.route(ctx)
    }

    fn end_batch(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let chain = self;
        each_stage!(chain, ctx, end_batch)
    }

    fn poll_linger(&self) -> std::time::Duration {
        self.scorer.poll_linger()
    }

    fn tick(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let chain = self;
        each_stage!(chain, ctx, tick)
    }

    fn on_assign(&mut self, partitions: &[i32]) {
        self.cleaning.on_assign(partitions);
        self.sessionizer.on_assign(partitions);
        self.windower.on_assign(partitions);
        self.scorer.on_assign(partitions);
        self.detector.on_assign(partitions);
        self.analytics.on_assign(partitions);
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        self.cleaning.on_revoke(partitions);
        self.sessionizer.on_revoke(partitions);
        self.windower.on_revoke(partitions);
        self.scorer.on_revoke(partitions);
        self.detector.on_revoke(partitions);
        self.analytics.on_revoke(partitions);
    }

    fn on_shutdown(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let chain = self;
        each_stage!(chain, ctx, on_shutdown)
    }

    fn is_stateful(&self) -> bool {
        self.cleaning.is_stateful()
            || self.sessionizer.is_stateful()
            || self.windower.is_stateful()
            || self.scorer.is_stateful()
            || self.detector.is_stateful()
            || self.analytics.is_stateful()
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        let mut out = Vec::new();
        let chain = self;
        each_durable!(chain, |stage, t| out
            .extend(stage.take_state_changes().into_iter().map(|c| tagged(t, c))));
        out
    }

    fn restore(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        let Some((&t, key)) = key.split_first() else {
            tracing::warn!(
                partition,
                "Chain changelog record with an empty key; skipped."
            );
            return Ok(());
        };
        match t {
            tag::CLEANING => self.cleaning.restore(partition, key, value),
            tag::SESSIONIZER => self.sessionizer.restore(partition, key, value),
            tag::WINDOWER => self.windower.restore(partition, key, value),
            tag::SCORER => self.scorer.restore(partition, key, value),
            tag::DETECTOR => self.detector.restore(partition, key, value),
            tag::ANALYTICS => self.analytics.restore(partition, key, value),
            other => {
                // As a value a stage cannot read: that state starts afresh, the rest is restored.
                tracing::warn!(
                    partition,
                    tag = other,
                    "Chain changelog key with a tag of no stage (written by a newer version?); skipped."
                );
                Ok(())
            }
        }
    }

    fn query_stores(&self) -> Vec<(&'static str, QueryStore)> {
        let mut stores = self.cleaning.query_stores();
        stores.extend(self.sessionizer.query_stores());
        stores.extend(self.windower.query_stores());
        stores.extend(self.scorer.query_stores());
        stores.extend(self.detector.query_stores());
        stores.extend(self.analytics.query_stores());
        stores
    }

    fn state_entries(&self) -> usize {
        self.cleaning.state_entries()
            + self.sessionizer.state_entries()
            + self.windower.state_entries()
            + self.scorer.state_entries()
            + self.detector.state_entries()
            + self.analytics.state_entries()
    }
}
