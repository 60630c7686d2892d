//! Scorer: turns each feature vector into a prediction (purchase probability, next actions, a
//! predicted path, decision factors).
//!
//! Two kinds of model sit behind the same stage:
//! - the baseline (Markov chain + logistic regression), scored per event, with a per-user memory
//!   of the previous event only;
//! - a Burn sequence model (GRU, LSTM or Transformer): each user's memory (recurrent state, or
//!   the Transformer's window of recent steps) lives in the stage's state, is written to the
//!   changelog and restored like all state, and advances by one step per event. Events are
//!   micro-batched across users (`scorer.max_batch`) and scored at the end of each input batch,
//!   before the batch's outputs and offsets are made durable.
//!
//! `scorer.model_dir` is watched: a new artifact there is loaded, checked and swapped in without
//! stopping; a failed load keeps the old model and raises `clickpath_model_reload_failed`.
//! An optional shadow model (`scorer.shadow_model_dir`) is scored beside the live one; its
//! version and probability ride along as Kafka headers.

pub mod sequence;

use clickpath_runtime::trace_context::TraceHeaders;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::ScorerConfig;
use clickpath_model::baseline::BaselineModel;
use clickpath_model::sequence::index::IndexConfig;
use clickpath_model::sequence::{OnlineDevice, UserMemory, is_sequence_artifact, load_online};
use clickpath_runtime::metrics::{Metrics, StageKind, StageLabel};
use clickpath_runtime::query::{QueryStore, View};
use clickpath_runtime::{Context, Stage, StageError, StateChange};
use clickpath_schema::{EventType, FeatureVector, Prediction};
use serde_json::json;

use sequence::{Extras, LoadedSequence, Queued, score_batch, top_actions};

/// Users idle for this long (event time) are forgotten.
const IDLE_EVICT_MS: i64 = 24 * 3_600_000;

/// `UserEntry::last_seen` of a user restored from a changelog value of an older layout (without the
/// time), until a tick sets it.
const RESTORED: i64 = i64::MIN;

/// The model the scorer runs.
pub enum ScoringModel {
    /// Markov chain + logistic regression (boxed: much larger than a sequence model's handle).
    Baseline(Box<BaselineModel>),
    /// A Burn sequence model.
    Sequence(LoadedSequence),
}

impl ScoringModel {
    /// The model's version.
    pub fn version(&self) -> &str {
        match self {
            ScoringModel::Baseline(m) => &m.version,
            ScoringModel::Sequence(m) => &m.version,
        }
    }
}

/// Loads the model artifact in `dir`: a sequence model (on `device`, ranking items through
/// `index` when given) or a baseline.
pub fn load_model(
    dir: &Path,
    spec: &clickpath_core::features::FeatureSpec,
    device: OnlineDevice,
    index: Option<&IndexConfig>,
) -> Result<ScoringModel, String> {
    if is_sequence_artifact(dir) {
        let (model, meta) = load_online(dir, spec, device, index).map_err(|e| e.to_string())?;
        let loaded = LoadedSequence {
            model,
            version: meta.version,
            session: meta.session_config,
        };
        loaded.smoke_test()?;
        if index.is_some() {
            match loaded.model.item_index() {
                Some(how) => {
                    tracing::info!(version = %loaded.version, index = %how, "Items ranked through an index.")
                }
                None => tracing::info!(
                    version = %loaded.version,
                    "Items ranked exactly: no item head, a vocabulary below the index's minimum, or a GPU."
                ),
            }
        }
        Ok(ScoringModel::Sequence(loaded))
    } else {
        clickpath_model::artifact::ModelArtifact::load(dir, spec)
            .map(|a| ScoringModel::Baseline(Box::new(a.model)))
            .map_err(|e| e.to_string())
    }
}

/// Per-user memory.
#[derive(Default)]
struct UserEntry {
    /// Sequence models: the live model's memory.
    memory: UserMemory,
    /// The shadow model's memory.
    shadow: UserMemory,
    /// Baseline: the previous event type.
    last_type: Option<EventType>,
    /// Event time of the last event (ms), for idle eviction (a restored user's first tick sets it
    /// when the changelog value does not hold the time).
    last_seen: i64,
    /// Event time of the last event when known (not for a user restored from an older layout): a
    /// new session starts from an empty memory.
    last_event: Option<i64>,
    /// The last category seen in the user's current session: not recommended as the next one.
    last_category: Option<String>,
    /// Items the user bought lately, oldest first (at most `recommend_exclude_bought`): never
    /// recommended to them.
    bought: Vec<String>,
}

impl UserEntry {
    /// Records an event: its time, and the session's last category, which `new_session` (the event
    /// opens a session) clears first.
    fn saw(&mut self, fv: &FeatureVector, new_session: bool) {
        self.last_event = Some(
            self.last_event
                .map_or(fv.event_time, |t| t.max(fv.event_time)),
        );
        self.last_seen = self.last_seen.max(fv.event_time);
        if new_session {
            self.last_category = None;
        }
        if let Some(c) = fv.category.as_deref().filter(|c| !c.is_empty())
            && self.last_category.as_deref() != Some(c)
        {
            self.last_category = Some(c.to_owned());
        }
    }

    /// Remembers a purchase of `item`, forgetting the oldest beyond `keep`.
    fn bought(&mut self, item: &str, keep: usize) {
        if keep == 0 {
            return;
        }
        self.bought.retain(|b| b != item);
        self.bought.push(item.to_owned());
        let excess = self.bought.len().saturating_sub(keep);
        self.bought.drain(..excess);
    }
}

/// Watches the model directory for a new artifact.
struct Reloader {
    dir: PathBuf,
    every: Duration,
    last_check: Instant,
    /// `meta.json`'s bytes at the last load attempt, to try each new artifact once.
    last_meta: Option<Vec<u8>>,
}

/// A partition's users, by id: foldhash rather than SipHash on these string keys, as the other
/// stages' per-user maps.
type UserEntries = foldhash::HashMap<String, UserEntry>;

/// `user`'s entry in `users`, created on first sight; the id is copied only then.
fn user_entry<'a>(users: &'a mut UserEntries, user: &str) -> &'a mut UserEntry {
    if !users.contains_key(user) {
        users.insert(user.to_owned(), UserEntry::default());
    }
    users.get_mut(user).expect("inserted above")
}

/// The scorer stage.
pub struct Scorer {
    model: ScoringModel,
    shadow: Option<LoadedSequence>,
    device: OnlineDevice,
    /// The item index models are served through (`scorer.item_index`); `None`: the exact scan.
    item_index: Option<IndexConfig>,
    spec: clickpath_core::features::FeatureSpec,
    top_k: usize,
    factors: usize,
    explain_every: u64,
    path_steps: usize,
    recommend_items: usize,
    recommend_categories: usize,
    recommend_exclude_bought: usize,
    max_batch: usize,
    max_wait: Duration,
    output_topic: String,
    users: HashMap<i32, UserEntries>,
    queue: Vec<(i32, Queued, Instant)>,
    dirty: HashSet<(i32, String)>,
    evicted: Vec<(i32, String)>,
    restoring: HashMap<i32, HashMap<String, Vec<u8>>>,
    scored: u64,
    watermark_ms: i64,
    reloader: Option<Reloader>,
    metrics: Option<Metrics>,
    query: QueryStore,
}

impl Scorer {
    /// A scorer using the baseline `model`, writing predictions to `output_topic`.
    pub fn new(model: BaselineModel, cfg: &ScorerConfig, output_topic: &str) -> Self {
        Self::with_model(
            ScoringModel::Baseline(Box::new(model)),
            cfg,
            output_topic,
            None,
        )
    }

    /// A scorer using any model; `metrics` receives batch sizes, inference time and reloads.
    pub fn with_model(
        model: ScoringModel,
        cfg: &ScorerConfig,
        output_topic: &str,
        metrics: Option<Metrics>,
    ) -> Self {
        let device = cfg.device;
        let reloader = cfg
            .model_dir
            .as_ref()
            .filter(|_| cfg.reload_interval_ms > 0)
            .map(|dir| Reloader {
                dir: dir.clone(),
                every: Duration::from_millis(cfg.reload_interval_ms),
                last_check: Instant::now(),
                last_meta: std::fs::read(dir.join("meta.json")).ok(),
            });
        Scorer {
            model,
            shadow: None,
            device,
            item_index: cfg.item_index.index_config(cfg.item_index_ef),
            spec: Default::default(),
            top_k: cfg.top_k,
            factors: cfg.factors,
            explain_every: cfg.explain_every,
            path_steps: cfg.path_steps,
            recommend_items: cfg.recommend_items,
            recommend_categories: cfg.recommend_categories,
            recommend_exclude_bought: cfg.recommend_exclude_bought,
            max_batch: cfg.max_batch.max(1),
            max_wait: Duration::from_micros(cfg.max_wait_us),
            output_topic: output_topic.to_string(),
            users: HashMap::new(),
            queue: Vec::new(),
            dirty: HashSet::new(),
            evicted: Vec::new(),
            restoring: HashMap::new(),
            scored: 0,
            watermark_ms: i64::MIN,
            reloader,
            metrics,
            query: QueryStore::new(),
        }
    }

    /// The feature spec new artifacts must read (checked on hot-swap).
    pub fn with_feature_spec(mut self, spec: clickpath_core::features::FeatureSpec) -> Self {
        self.spec = spec;
        self
    }

    /// Scores a shadow model beside the live one.
    pub fn with_shadow(mut self, shadow: LoadedSequence) -> Self {
        self.shadow = Some(shadow);
        self
    }

    /// Where the models run (after any `scorer.device_fallback`).
    pub fn device(&self) -> OnlineDevice {
        self.device
    }

    /// Version of the live model.
    pub fn model_version(&self) -> &str {
        self.model.version()
    }

    /// Scores one feature vector now (used by offline tools): the baseline directly, a sequence
    /// model as a batch of one.
    pub fn score(&mut self, fv: &FeatureVector) -> Prediction {
        let partition = 0;
        match &self.model {
            ScoringModel::Baseline(_) => self.score_baseline(partition, fv),
            ScoringModel::Sequence(_) => {
                self.enqueue(partition, fv.clone(), None);
                let mut out = self.flush_predictions();
                out.pop()
                    .map(|(_, p, _, _)| p)
                    .unwrap_or_else(|| empty_prediction(fv))
            }
        }
    }

    fn score_baseline(&mut self, partition: i32, fv: &FeatureVector) -> Prediction {
        let started = Instant::now();
        let ScoringModel::Baseline(model) = &self.model else {
            unreachable!("score_baseline with a sequence model");
        };
        // The Markov chain conditions on the event just seen: it predicts what comes after it.
        let out = model.predict(Some(fv.event_type), fv, self.top_k);
        let entry = self.users.entry(partition).or_default();
        let entry = user_entry(entry, &fv.user_id);
        entry.last_type = Some(fv.event_type);
        // Kept as the sequence path keeps them (the baseline has no session rules of its own: the
        // default ones), for a hot swap to a sequence model.
        let new_session = entry.last_event.is_some_and(|last| {
            !clickpath_core::session::SessionConfig::default().continues(last, last, fv.event_time)
        });
        entry.saw(fv, new_session);
        let mut factors = out.factors;
        factors.truncate(self.factors);
        let elapsed = started.elapsed();
        self.observe_inference(1, elapsed);
        Prediction {
            event_id: fv.event_id.clone(),
            user_id: fv.user_id.clone(),
            event_time: fv.event_time,
            model_version: model.version.clone(),
            purchase_probability: out.purchase_probability,
            next_actions: out.next_actions,
            predicted_path: out.predicted_path,
            factors,
            scoring_latency_us: elapsed.as_micros() as i64,
            recommended_items: Vec::new(),
            recommended_categories: Vec::new(),
        }
    }

    fn enqueue(&mut self, partition: i32, fv: FeatureVector, trace: Option<&TraceHeaders>) {
        let ScoringModel::Sequence(model) = &self.model else {
            return;
        };
        let step = model.encode(&fv);
        let entry = self.users.entry(partition).or_default();
        let entry = user_entry(entry, &fv.user_id);
        // A user restored from a layout without the time is not known to open a session.
        let last_event = entry.last_event;
        let new_session = model.starts_session(last_event, fv.event_time);
        entry.saw(&fv, new_session);
        // The category on screen, or the last one before in the session (a search, a checkout).
        let shown_category = entry
            .last_category
            .as_deref()
            .zip(model.model.category_vocab())
            .and_then(|(c, vocab)| vocab.get(c));
        if fv.event_type == EventType::Purchase
            && let Some(item) = fv.item_id.as_deref()
        {
            entry.bought(item, self.recommend_exclude_bought);
        }
        self.scored += 1;
        let explain = self.factors > 0
            && self.explain_every > 0
            && self.scored.is_multiple_of(self.explain_every);
        let memory = if new_session {
            UserMemory::default()
        } else {
            entry.memory.clone()
        };
        // By vocabulary index: bought items the model does not know are never recommended anyway.
        let exclude = match model.model.item_vocab() {
            Some(vocab) if self.recommend_items > 0 && self.recommend_exclude_bought > 0 => entry
                .bought
                .iter()
                .filter_map(|item| vocab.get(item))
                .collect(),
            _ => Vec::new(),
        };
        self.queue.push((
            partition,
            Queued {
                fv,
                step,
                memory,
                new_session,
                last_event,
                shown_category,
                explain,
                exclude,
                trace: trace.cloned(),
            },
            Instant::now(),
        ));
    }

    /// Scores everything queued; returns the predictions with their input partition and Kafka
    /// headers.
    fn flush_predictions(&mut self) -> Vec<Scored> {
        if self.queue.is_empty() {
            return Vec::new();
        }
        let ScoringModel::Sequence(model) = &self.model else {
            self.queue.clear();
            return Vec::new();
        };
        let queue = std::mem::take(&mut self.queue);
        let started = Instant::now();
        let n = queue.len();
        let (meta, items): (Vec<(i32, Instant)>, Vec<Queued>) =
            queue.into_iter().map(|(p, q, t)| ((p, t), q)).unzip();
        let shadow_items: Option<Vec<Queued>> = self.shadow.as_ref().map(|s| {
            items
                .iter()
                .zip(&meta)
                .map(|(q, (p, _))| Queued {
                    step: s.encode(&q.fv),
                    memory: self
                        .users
                        .get(p)
                        .and_then(|u| u.get(&q.fv.user_id))
                        .filter(|_| !s.starts_session(q.last_event, q.fv.event_time))
                        .map(|e| e.shadow.clone())
                        .unwrap_or_default(),
                    // By the shadow's own session rules, as it was trained.
                    new_session: s.starts_session(q.last_event, q.fv.event_time),
                    last_event: q.last_event,
                    shown_category: None,
                    fv: q.fv.clone(),
                    explain: false,
                    exclude: Vec::new(),
                    trace: None,
                })
                .collect()
        });
        let fvs: Vec<FeatureVector> = items.iter().map(|q| q.fv.clone()).collect();
        let traces: Vec<Option<TraceHeaders>> = items.iter().map(|q| q.trace.clone()).collect();
        let extras = Extras {
            path_steps: self.path_steps,
            factors: self.factors,
            items: self.recommend_items,
            categories: self.recommend_categories,
        };
        let scored = score_batch(model, items, extras);
        let shadow_scored = match (&self.shadow, shadow_items) {
            (Some(s), Some(items)) => Some(score_batch(s, items, Extras::default())),
            _ => None,
        };
        let version = model.version.clone();
        let shadow_version = self.shadow.as_ref().map(|s| s.version.clone());
        self.observe_inference(n, started.elapsed());
        let mut out = Vec::with_capacity(n);
        for (i, (((fv, s), (partition, queued_at)), trace)) in fvs
            .into_iter()
            .zip(scored)
            .zip(meta)
            .zip(traces)
            .enumerate()
        {
            let entry = self.users.entry(partition).or_default();
            let entry = user_entry(entry, &fv.user_id);
            entry.memory = s.memory;
            let mut headers = Vec::new();
            if let (Some(ss), Some(v)) = (shadow_scored.as_ref(), shadow_version.as_ref()) {
                entry.shadow = ss[i].memory.clone();
                headers.push(("clickpath.shadow_version", v.clone()));
                headers.push((
                    "clickpath.shadow_purchase_probability",
                    format!("{:.6}", ss[i].output.purchase),
                ));
            }
            self.dirty.insert((partition, fv.user_id.clone()));
            let prediction = Prediction {
                event_id: fv.event_id.clone(),
                user_id: fv.user_id.clone(),
                event_time: fv.event_time,
                model_version: version.clone(),
                purchase_probability: s.output.purchase,
                next_actions: top_actions(&s.output.next, self.top_k),
                predicted_path: s.path,
                factors: s.factors,
                scoring_latency_us: queued_at.elapsed().as_micros() as i64,
                recommended_items: s.items,
                recommended_categories: s.categories,
            };
            out.push((partition, prediction, headers, trace));
        }
        out
    }

    fn observe_inference(&self, batch: usize, took: Duration) {
        if let Some(m) = &self.metrics {
            let label = StageLabel {
                stage: "scorer".into(),
            };
            m.model_inference
                .get_or_create(&label)
                .observe(took.as_secs_f64());
            m.model_batch_size
                .get_or_create(&label)
                .observe(batch as f64);
        }
    }

    /// [`Stage::process`] for a feature vector that may be borrowed (the chained topology keeps it to
    /// dead-letter it on a rejection); only the sequence model's queue takes a copy.
    pub fn process_features(
        &mut self,
        fv: std::borrow::Cow<'_, FeatureVector>,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        self.watermark_ms = self.watermark_ms.max(fv.event_time);
        let partition = ctx.partition().unwrap_or(0);
        match self.model {
            ScoringModel::Baseline(_) => {
                let prediction = self.score_baseline(partition, &fv);
                ctx.emit(&self.output_topic, &prediction.user_id, &prediction)?;
                self.publish(prediction);
                Ok(())
            }
            ScoringModel::Sequence(_) => {
                self.enqueue(partition, fv.into_owned(), ctx.trace());
                if self.queue.len() >= self.max_batch {
                    let out = self.flush_predictions();
                    self.emit_all(ctx, out)?;
                }
                Ok(())
            }
        }
    }

    /// Hands the prediction to the query store, which renders it to JSON only if it is asked for
    /// (building the JSON for every prediction was a fifth of the in-process chain's time).
    fn publish(&self, p: Prediction) {
        self.query.publish(p.user_id.clone(), PredictionView(p));
    }

    /// Emits predictions scored together, each under its input partition (hooks at the end of a
    /// batch have none of their own; a chained detector keeps its state by partition).
    fn emit_all(
        &mut self,
        ctx: &mut Context<'_>,
        predictions: Vec<Scored>,
    ) -> Result<(), StageError> {
        for (partition, p, headers, trace) in predictions {
            // Its own event's trace, whichever record is being processed when the batch is scored.
            ctx.with_partition(partition, |ctx| {
                ctx.emit_with_trace(&self.output_topic, &p.user_id, &p, headers, trace.as_ref())
            })?;
            self.publish(p);
        }
        Ok(())
    }

    /// Checks `scorer.model_dir` for a new artifact and swaps it in if it loads and passes the
    /// smoke test; otherwise keeps the running model and flags the failure in metrics.
    fn maybe_reload(&mut self) {
        let Some(r) = self.reloader.as_mut() else {
            return;
        };
        if r.last_check.elapsed() < r.every {
            return;
        }
        r.last_check = Instant::now();
        let Ok(meta) = std::fs::read(r.dir.join("meta.json")) else {
            return;
        };
        if r.last_meta.as_ref() == Some(&meta) {
            return;
        }
        r.last_meta = Some(meta);
        let dir = r.dir.clone();
        let outcome = load_model(&dir, &self.spec, self.device, self.item_index.as_ref());
        let (kind, failed) = match outcome {
            Ok(model) if model.version() == self.model.version() => return,
            Ok(model) => {
                tracing::info!(
                    from = self.model.version(),
                    to = model.version(),
                    "Model swapped."
                );
                self.model = model;
                // Memories of the old weights mean nothing to the new ones: users start fresh.
                for users in self.users.values_mut() {
                    for e in users.values_mut() {
                        e.memory = UserMemory::default();
                    }
                }
                ("ok", 0)
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "New model rejected; the running model stays.");
                ("failed", 1)
            }
        };
        if let Some(m) = &self.metrics {
            m.model_reloads
                .get_or_create(&StageKind {
                    stage: "scorer".into(),
                    kind: kind.into(),
                })
                .inc();
            m.model_reload_failed
                .get_or_create(&StageLabel {
                    stage: "scorer".into(),
                })
                .set(failed);
        }
    }
}

fn empty_prediction(fv: &FeatureVector) -> Prediction {
    Prediction {
        event_id: fv.event_id.clone(),
        user_id: fv.user_id.clone(),
        event_time: fv.event_time,
        model_version: String::new(),
        purchase_probability: 0.0,
        next_actions: Vec::new(),
        predicted_path: Vec::new(),
        factors: Vec::new(),
        scoring_latency_us: 0,
        recommended_items: Vec::new(),
        recommended_categories: Vec::new(),
    }
}

/// First byte of a changelog value in the layout with the user's bought items (written until
/// 2026-12-05). The first layout began with the version's length, never 0 or 1 (a sequence model's
/// version is `gru-…` and the like).
const STATE_WITH_BOUGHT: u8 = 0;

/// First byte of a changelog value in the layout with the last event time (written by one commit of
/// 2026-12-05 only, da9a083): [`STATE_WITH_BOUGHT`]'s after the time. Still read.
const STATE_WITH_LAST_SEEN: u8 = 1;

/// First byte of a changelog value in the current layout: [`STATE_WITH_BOUGHT`]'s, after the event
/// time of the user's last event and the last category of their session (so that a restored user's
/// next event opens a session or not, and leaves the same category out, as in a run without the
/// restore).
const STATE_WITH_SESSION: u8 = 2;

/// Changelog value: `STATE_WITH_SESSION`, the last event time (8 bytes, little-endian; `i64::MIN`:
/// not known), the session's last category (length byte, then UTF-8; none when empty or longer than
/// 255 bytes), the model version (so another model's memory is not misread), the items the user
/// bought lately (kept across models: they are item ids) and the memory.
fn state_bytes(version: &str, e: &UserEntry) -> Vec<u8> {
    let v = &version.as_bytes()[..version.len().min(255)];
    let category = e
        .last_category
        .as_deref()
        .map(str::as_bytes)
        .filter(|c| c.len() <= 255)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(12 + category.len() + v.len() + 16);
    out.push(STATE_WITH_SESSION);
    out.extend_from_slice(&e.last_event.unwrap_or(i64::MIN).to_le_bytes());
    out.push(category.len() as u8);
    out.extend_from_slice(category);
    out.push(v.len() as u8);
    out.extend_from_slice(v);
    // The most recent 255 with ids of at most 255 bytes (a longer id is not remembered: cut, it
    // would name another item, or none).
    let kept: Vec<&[u8]> = e
        .bought
        .iter()
        .map(|item| item.as_bytes())
        .filter(|b| b.len() <= 255)
        .collect();
    let kept = &kept[kept.len().saturating_sub(255)..];
    out.push(kept.len() as u8);
    for b in kept {
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&e.memory.to_bytes());
    out
}

/// A user's state read back: model version, bought items, memory (`None` when the memory does
/// not decode), last event time and the session's last category (`None` in the older layouts).
struct ParsedState<'a> {
    version: &'a str,
    bought: Vec<String>,
    memory: Option<UserMemory>,
    last_event: Option<i64>,
    last_category: Option<&'a str>,
}

/// Reads [`state_bytes`], the layouts before it (time without the category; bought items without
/// the time) and the first layout (version length, version, memory; no bought items).
fn parse_state(bytes: &[u8]) -> Option<ParsedState<'_>> {
    fn short(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
        let (&n, rest) = bytes.split_first()?;
        rest.split_at_checked(n as usize)
    }
    let known = |time: &[u8; 8]| Some(i64::from_le_bytes(*time)).filter(|&t| t != i64::MIN);
    let (with_bought, last_event, last_category, bytes) = match bytes.split_first()? {
        (&STATE_WITH_SESSION, rest) => {
            let (time, rest) = rest.split_first_chunk::<8>()?;
            let (category, rest) = short(rest)?;
            let category = std::str::from_utf8(category).ok().filter(|c| !c.is_empty());
            (true, known(time), category, rest)
        }
        (&STATE_WITH_LAST_SEEN, rest) => {
            let (time, rest) = rest.split_first_chunk::<8>()?;
            (true, known(time), None, rest)
        }
        (&STATE_WITH_BOUGHT, rest) => (true, None, None, rest),
        _ => (false, None, None, bytes),
    };
    let (version, mut rest) = short(bytes)?;
    let version = std::str::from_utf8(version).ok()?;
    let mut bought = Vec::new();
    if with_bought {
        let (&n, after) = rest.split_first()?;
        rest = after;
        for _ in 0..n {
            let (item, after) = short(rest)?;
            // An id that is not UTF-8 cannot be one clickpath wrote; skipped, not fatal.
            if let Ok(item) = std::str::from_utf8(item) {
                bought.push(item.to_owned());
            }
            rest = after;
        }
    }
    Some(ParsedState {
        version,
        bought,
        memory: UserMemory::from_bytes(rest),
        last_event,
        last_category,
    })
}

/// A user's latest prediction as `GET /v1/users/{id}` shows it.
struct PredictionView(Prediction);

impl View for PredictionView {
    fn to_json(&self) -> serde_json::Value {
        let p = &self.0;
        json!({
            "event_id": p.event_id,
            "event_time": p.event_time,
            "model_version": p.model_version,
            "purchase_probability": p.purchase_probability,
            "next_actions": p.next_actions.iter().map(|a| json!({"event_type": a.event_type.as_str(), "probability": a.probability})).collect::<Vec<_>>(),
            "predicted_path": p.predicted_path.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "factors": p.factors.iter().map(|f| json!({"name": f.name, "contribution": f.contribution})).collect::<Vec<_>>(),
            "recommended_items": p.recommended_items.iter().map(|r| json!({"item_id": r.item_id, "score": r.score})).collect::<Vec<_>>(),
            "recommended_categories": p.recommended_categories.iter().map(|c| json!({"category": c.category, "probability": c.probability})).collect::<Vec<_>>(),
        })
    }
}

/// A prediction scored in a batch: its input partition, the prediction, its Kafka headers and its
/// event's trace headers.
type Scored = (
    i32,
    Prediction,
    Vec<(&'static str, String)>,
    Option<TraceHeaders>,
);

impl Stage for Scorer {
    type Input = FeatureVector;

    fn name(&self) -> &'static str {
        "scorer"
    }

    fn process(&mut self, fv: FeatureVector, ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.process_features(std::borrow::Cow::Owned(fv), ctx)
    }

    fn poll_linger(&self) -> Duration {
        match self.model {
            ScoringModel::Sequence(_) => self.max_wait,
            ScoringModel::Baseline(_) => Duration::ZERO,
        }
    }

    fn end_batch(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let out = self.flush_predictions();
        self.emit_all(ctx, out)
    }

    fn tick(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let out = self.flush_predictions();
        self.emit_all(ctx, out)?;
        self.maybe_reload();
        let now = self.watermark_ms;
        let horizon = now.saturating_sub(IDLE_EVICT_MS);
        let mut gone = Vec::new();
        for (p, users) in self.users.iter_mut() {
            users.retain(|user, e| {
                if e.last_seen == RESTORED && now > i64::MIN {
                    // Older changelog values do not keep when a user was last seen: such a
                    // restored user's idle time starts at the first tick that knows the time.
                    e.last_seen = now;
                }
                let keep = e.last_seen >= horizon;
                if !keep {
                    gone.push((*p, user.clone()));
                }
                keep
            });
        }
        for (_, user) in &gone {
            self.query.remove(user);
        }
        if self.is_stateful() {
            // Tombstones for the changelog.
            self.evicted.extend(gone);
        }
        Ok(())
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(users) = self.users.remove(p) {
                for user in users.keys() {
                    self.query.remove(user);
                }
            }
            self.dirty.retain(|(q, _)| q != p);
        }
    }

    fn on_assign(&mut self, partitions: &[i32]) {
        let version = self.model.version().to_string();
        for p in partitions {
            let Some(rows) = self.restoring.remove(p) else {
                continue;
            };
            let users = self.users.entry(*p).or_default();
            for (user, bytes) in rows {
                // Another model's memory (or a damaged value) restarts the user fresh; what they
                // bought does not depend on the model.
                let parsed = parse_state(&bytes);
                // At most what this configuration remembers (none when it is 0).
                let mut bought = parsed
                    .as_ref()
                    .map(|p| p.bought.clone())
                    .unwrap_or_default();
                let excess = bought.len().saturating_sub(self.recommend_exclude_bought);
                bought.drain(..excess);
                let last_event = parsed.as_ref().and_then(|p| p.last_event);
                let last_category = parsed
                    .as_ref()
                    .and_then(|p| p.last_category)
                    .map(str::to_owned);
                let memory = match parsed {
                    Some(ParsedState {
                        version: v,
                        memory: Some(m),
                        ..
                    }) if v == version => m,
                    _ => UserMemory::default(),
                };
                users.insert(
                    user,
                    UserEntry {
                        memory,
                        last_seen: last_event.unwrap_or(RESTORED),
                        last_event,
                        last_category,
                        bought,
                        ..Default::default()
                    },
                );
            }
        }
    }

    fn is_stateful(&self) -> bool {
        matches!(self.model, ScoringModel::Sequence(_))
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        let version = self.model.version().to_string();
        let mut changes: Vec<StateChange> = std::mem::take(&mut self.evicted)
            .into_iter()
            .map(|(partition, user)| StateChange {
                partition,
                key: user.into_bytes(),
                value: None,
            })
            .collect();
        for (partition, user) in std::mem::take(&mut self.dirty) {
            if let Some(e) = self.users.get(&partition).and_then(|u| u.get(&user)) {
                changes.push(StateChange {
                    partition,
                    value: Some(state_bytes(&version, e)),
                    key: user.into_bytes(),
                });
            }
        }
        changes
    }

    fn restore(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        let user = String::from_utf8_lossy(key).into_owned();
        let rows = self.restoring.entry(partition).or_default();
        match value {
            Some(v) => rows.insert(user, v.to_vec()),
            None => rows.remove(&user),
        };
        Ok(())
    }

    fn query_store(&self) -> Option<QueryStore> {
        Some(self.query.clone())
    }

    fn state_entries(&self) -> usize {
        self.users.values().map(UserEntries::len).sum()
    }
}

#[cfg(test)]
mod tests;
