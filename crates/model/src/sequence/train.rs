//! Training of the sequence models: time-based split (as the baseline), length-bucketed
//! mini-batches, Adam, early stopping on the validation loss, and evaluation on the test split.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use clickpath_core::{FeatureSpec, FeatureWindower, SessionConfig};
use clickpath_schema::ClickEvent;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::blend::{BlendRows, PurchaseBlend};
use super::data::ItemTargets;
use super::data::{Sequence, Targets, Vocabs, sequences};
use super::encode::{Buckets, Normalizer};
use super::model::ItemEval;
use super::model::SequenceModel;
use super::net::{Architecture, ItemInput, NetConfig, SequenceNet, StepTensors};
use crate::dataset::{Dataset, SplitConfig, build_dataset};
use crate::error::ModelError;
use crate::metrics::{DatasetCounts, EvalMetrics};
use crate::recommend::{ItemVocab, RecMetrics, Recommend, split_sessions};
use crate::train::metrics_of;

/// Everything [`train_sequence`] needs besides the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequenceTrainConfig {
    /// Network shape (its `numeric_features` is set from the feature spec).
    pub net: NetConfig,
    /// Session rules (must match the sessionizer stage's).
    pub session: SessionConfig,
    /// Feature spec (must match the windower stage's).
    pub features: FeatureSpec,
    /// Time-based split.
    pub split: SplitConfig,
    /// Sequences per mini-batch. Default 64.
    pub batch_size: usize,
    /// Adam learning rate. Default 0.001.
    pub learning_rate: f64,
    /// Most epochs. Default 30.
    pub max_epochs: usize,
    /// Epochs without a better validation loss before stopping. Default 3.
    pub patience: usize,
    /// Steps of a session used in training (the rest are scored, not trained on). Default 64.
    pub max_steps: usize,
    /// Weight of the next-action loss beside the purchase loss. Default 0.5.
    pub next_loss_weight: f32,
    /// Train the item head (next-item recommendations). Default true; without any item seen
    /// `min_item_count` times in training the model has no item head.
    pub item_head: bool,
    /// Least training occurrences for an item to be recommendable. Default 5 (SR-GNN).
    pub min_item_count: u64,
    /// Most items in the vocabulary (the most popular are kept). Default 50 000.
    pub max_items: usize,
    /// Negatives per batch for the item head's sampled softmax, drawn from the training items
    /// with probability proportional to count^0.75 and shared by the batch. Default 1 024.
    pub item_negatives: usize,
    /// Weight of the item loss. Default 1.0.
    pub item_loss_weight: f32,
    /// Train the category head (next-category recommendations, for catalogues whose items are too
    /// sparse to learn). Default true; without two categories seen `min_category_count` times in
    /// training (events without categories, or all of one) the model has no category head.
    /// The three category settings are left out of `meta.json` at their defaults, so that builds
    /// from before them still read an artifact without the head.
    #[serde(skip_serializing_if = "is_true")]
    pub category_head: bool,
    /// Least training occurrences (runs of one category in a session count once) for a category to
    /// be recommendable. Default 5.
    #[serde(skip_serializing_if = "is_five")]
    pub min_category_count: u64,
    /// Weight of the category loss (a full softmax, like the next action's). Default 0.5.
    #[serde(skip_serializing_if = "is_half")]
    pub category_loss_weight: f32,
    /// Stack the network's purchase logit with a logistic regression on the step's numeric inputs,
    /// fitted after the network (`super::blend`). Default true.
    pub purchase_blend: bool,
    /// Seed of initialisation and shuffling. Default 7.
    pub seed: u64,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_five(n: &u64) -> bool {
    *n == 5
}

fn is_half(w: &f32) -> bool {
    *w == 0.5
}

impl Default for SequenceTrainConfig {
    fn default() -> Self {
        SequenceTrainConfig {
            net: NetConfig::default(),
            session: SessionConfig::default(),
            features: FeatureSpec::default(),
            split: SplitConfig::default(),
            batch_size: 64,
            learning_rate: 1e-3,
            max_epochs: 30,
            patience: 3,
            max_steps: 64,
            next_loss_weight: 0.5,
            item_head: true,
            min_item_count: 5,
            max_items: 50_000,
            item_negatives: 1_024,
            item_loss_weight: 1.0,
            category_head: true,
            min_category_count: 5,
            category_loss_weight: 0.5,
            purchase_blend: true,
            seed: 7,
        }
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss (purchase log loss + weighted next-action cross-entropy + weighted
    /// full-softmax next-item cross-entropy).
    pub validation_loss: f64,
    /// Validation ROC AUC of the purchase probability.
    pub validation_auc: Option<f64>,
    /// Validation Recall@20 of the next item (models with an item head).
    #[serde(default)]
    pub validation_recall: Option<f64>,
    /// Validation Recall@5 of the next category (models with a category head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_category_recall: Option<f64>,
    /// Training sequences per second in this epoch.
    pub sequences_per_second: f64,
    /// Training steps (events) per second in this epoch.
    pub steps_per_second: f64,
}

/// Progress of a training run, for a progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainProgress {
    /// A batch finished: `done` of `total` batches of epoch `epoch`.
    Batch {
        /// Epoch number, from 1.
        epoch: usize,
        /// Batches done in this epoch.
        done: usize,
        /// Batches per epoch.
        total: usize,
    },
    /// An epoch finished.
    Epoch(EpochReport),
}

/// Result of [`train_sequence`].
#[derive(Debug, Clone)]
pub struct SequenceTrainReport<B: Backend> {
    /// The best model (by validation loss), on the inference backend.
    pub model: SequenceModel<B>,
    /// Epoch by epoch.
    pub history: Vec<EpochReport>,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Metrics on the test split (with the purchase blend, when fitted).
    pub test: EvalMetrics,
    /// Metrics on the test split of the network alone, when a purchase blend was fitted.
    pub network_test: Option<EvalMetrics>,
    /// Next-item metrics on the test split (models with an item head).
    pub test_items: Option<RecMetrics>,
    /// Next-category metrics on the test split (models with a category head).
    pub test_categories: Option<RecMetrics>,
    /// Sizes of the data.
    pub counts: DatasetCounts,
    /// Fingerprint of the training data.
    pub fingerprint: String,
    /// Wall-clock training time (s).
    pub seconds: f64,
}

/// Metrics of `model` on `sequences` (every step scored from the session's start).
pub fn evaluate_sequences<B: Backend>(
    model: &SequenceModel<B>,
    seqs: &[Sequence<'_>],
) -> EvalMetrics {
    let scored = model.score_sequences(seqs);
    let mut probabilities = Vec::new();
    let mut examples = Vec::new();
    let mut distributions = Vec::new();
    let mut targets = Vec::new();
    for (seq, outs) in seqs.iter().zip(&scored) {
        for (ex, out) in seq.examples.iter().zip(outs) {
            probabilities.push(out.purchase);
            examples.push(*ex);
            if let Some(next) = ex.next_action {
                distributions.push(out.next.clone());
                targets.push(next.index());
            }
        }
    }
    metrics_of(&probabilities, &examples, &distributions, &targets)
}

/// The purchase rows of `seqs` for the blend: every step scored for purchase, with the network's logit
/// when `model` is given (the validation rows need it, the training rows do not).
fn blend_rows<'s, B: Backend>(
    model: Option<&SequenceModel<B>>,
    seqs: &'s [Sequence<'_>],
) -> BlendRows<'s> {
    let scored = model.map(|m| m.score_sequences(seqs));
    let mut rows = BlendRows::default();
    for (i, seq) in seqs.iter().enumerate() {
        for (t, (ex, step)) in seq.examples.iter().zip(&seq.steps).enumerate() {
            if !ex.scored_for_purchase() {
                continue;
            }
            if let Some(scored) = &scored {
                let p = scored[i][t].purchase.clamp(1e-12, 1.0 - 1e-12);
                rows.network.push((p / (1.0 - p)).ln());
            }
            rows.numeric.push(&step.numeric);
            rows.labels.push(ex.purchase);
        }
    }
    rows
}

/// Fits the purchase blend of the network `model` (which must have none yet): the regression on the
/// training split, the stacking on validation. `None` without a validation split or with one class.
fn fit_blend<B: Backend>(
    model: &SequenceModel<B>,
    train: &[Sequence<'_>],
    validation: &[Sequence<'_>],
) -> Result<Option<PurchaseBlend>, ModelError> {
    if validation.is_empty() {
        return Ok(None);
    }
    PurchaseBlend::fit(
        &model.normalizer.names,
        &blend_rows::<B>(None, train),
        &blend_rows(Some(model), validation),
    )
}

/// Item-head negatives: vocabulary indices drawn with probability proportional to
/// count^0.75 (GRU4Rec's popularity sampling, flattened a little towards the tail).
struct NegativeSampler {
    cumulative: Vec<f64>,
}

impl NegativeSampler {
    fn new(vocab: &ItemVocab) -> Self {
        let mut total = 0.0;
        let cumulative = vocab
            .counts
            .iter()
            .map(|&c| {
                total += (c as f64).powf(0.75);
                total
            })
            .collect();
        NegativeSampler { cumulative }
    }

    /// Per vocabulary item, the log of how many times `n` draws pick it on average: the
    /// sampled softmax's correction (Jean et al. 2015; Yi et al. 2019). Without it a popular item,
    /// drawn as a negative many times per batch, is pushed down once per draw, and the learned
    /// scores rank popular items too low for the full ranking they are served with.
    fn log_expected_counts(&self, n: usize) -> Vec<f32> {
        let total = self
            .cumulative
            .last()
            .copied()
            .unwrap_or(0.0)
            .max(f64::MIN_POSITIVE);
        let mut previous = 0.0;
        self.cumulative
            .iter()
            .map(|&c| {
                let p = (c - previous) / total;
                previous = c;
                (n as f64 * p).max(f64::MIN_POSITIVE).ln() as f32
            })
            .collect()
    }

    fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Vec<i32> {
        use rand::Rng as _;
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        (0..n)
            .map(|_| {
                let x = rng.random::<f64>() * total;
                self.cumulative
                    .partition_point(|&c| c <= x)
                    .min(self.cumulative.len() - 1) as i32
            })
            .collect()
    }
}

/// What one batch's loss needs besides the network and the batch.
struct LossInputs<'a> {
    len: usize,
    features: usize,
    next_weight: f32,
    item_weight: f32,
    category_weight: f32,
    /// Shared negatives of this batch (empty: no item loss).
    negatives: &'a [i32],
    /// Per vocabulary item, the log of its expected count among the negatives
    /// ([`NegativeSampler::log_expected_counts`]).
    log_expected: &'a [f32],
}

/// List length of the next-item metrics recorded in training (Recall@20, MRR@20).
pub const RECOMMENDATIONS: usize = 20;

/// List length of the next-category metrics recorded in training (Recall@5, MRR@5).
pub const CATEGORY_RECOMMENDATIONS: usize = crate::recommend::CATEGORY_K;

/// The item or category vocabulary of the training sessions (the same split as the purchase
/// data); `None` when nothing is frequent enough.
fn vocabulary(
    what: Recommend,
    events: &[ClickEvent],
    cfg: &SequenceTrainConfig,
) -> Result<Option<ItemVocab>, ModelError> {
    let sessions = what.sessions(events, &cfg.session);
    let [train, _, _] = split_sessions(&sessions, &cfg.split)?;
    let vocab = match what {
        Recommend::Items => ItemVocab::fit(train, cfg.min_item_count).truncated(cfg.max_items),
        Recommend::Categories => ItemVocab::fit(train, cfg.min_category_count),
    };
    // A category head recommends categories other than the one on screen: one category alone (a
    // stream whose events all carry the same) has nothing to recommend.
    let least = match what {
        Recommend::Items => 1,
        Recommend::Categories => 2,
    };
    Ok((vocab.len() >= least).then_some(vocab))
}

/// The next-item test cases of `seqs` for `model`: per step with a target in its vocabulary, the
/// item query after it, the target and the item on screen; `None` without an item head.
type ItemCases = (Vec<Vec<f32>>, Vec<u32>, Vec<Option<u32>>);

fn item_cases<B: Backend>(model: &SequenceModel<B>, seqs: &[Sequence<'_>]) -> Option<ItemCases> {
    if !model.net.has_item_head() {
        return None;
    }
    let vocab = model.items.as_ref()?;
    let steps: Vec<&[super::encode::Step]> = seqs.iter().map(|s| s.steps.as_slice()).collect();
    let queries = model.item_queries(&steps);
    let (mut q, mut targets, mut current) = (Vec::new(), Vec::new(), Vec::new());
    for (seq, qs) in seqs.iter().zip(queries) {
        for ((target, query), ex) in seq.next_items.iter().zip(qs).zip(&seq.examples) {
            if let Some(t) = target {
                q.push(query);
                targets.push(*t);
                current.push(ex.item_id.as_deref().and_then(|i| vocab.get(i)));
            }
        }
    }
    Some((q, targets, current))
}

/// Next-item quality of `model` on every step of `seqs` with a target in its vocabulary;
/// `None` for a model without an item head.
pub fn evaluate_items<B: Backend>(
    model: &SequenceModel<B>,
    seqs: &[Sequence<'_>],
    k: usize,
) -> Option<ItemEval> {
    let (q, targets, current) = item_cases(model, seqs)?;
    let q: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
    Some(model.item_eval(&q, &targets, &current, k))
}

/// [`evaluate_items`] with the lists `served` ranks (for example through an item index, as the
/// scorer serves them) instead of the exact scan: hits and reciprocal ranks on the same cases (no
/// cross-entropy), and the share of the exact top `k` the served lists contain.
pub fn evaluate_items_served<B: Backend>(
    model: &SequenceModel<B>,
    served: &dyn super::OnlineModel,
    seqs: &[Sequence<'_>],
    k: usize,
) -> Option<(ItemEval, f64)> {
    use crate::recommend::without_current;
    let (q, targets, current) = item_cases(model, seqs)?;
    let q: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
    let (mut eval, mut overlap, mut exact_total) = (ItemEval::default(), 0usize, 0usize);
    let exact = model.top_scored_items(&q, k + 1);
    let got = served.top_items(&q, k + 1);
    for (((g, e), &t), &c) in got.into_iter().zip(exact).zip(&targets).zip(&current) {
        let by_id = |x: &(u32, f32)| x.0;
        let (g, e) = (
            without_current(g, by_id, c, k),
            without_current(e, by_id, c, k),
        );
        eval.cases += 1;
        if let Some(rank) = g.iter().position(|x| x.0 == t) {
            eval.hits += 1;
            eval.reciprocal_ranks += 1.0 / (rank + 1) as f64;
        }
        exact_total += e.len();
        overlap += e.iter().filter(|x| g.iter().any(|y| y.0 == x.0)).count();
    }
    let recall = if exact_total == 0 {
        1.0
    } else {
        overlap as f64 / exact_total as f64
    };
    Some((eval, recall))
}

/// The table row of an [`ItemEval`].
pub fn rec_metrics(model: &str, k: usize, e: ItemEval) -> RecMetrics {
    let share = |x: f64| {
        if e.cases == 0 {
            0.0
        } else {
            x / e.cases as f64
        }
    };
    RecMetrics {
        model: model.to_string(),
        k,
        cases: e.cases,
        recall: share(e.hits as f64),
        mrr: share(e.reciprocal_ranks),
    }
}

/// The table row name of `net`'s `head` ("item", "category").
fn model_name(net: &NetConfig, head: Recommend) -> String {
    format!("{} {} head", net.architecture.as_str(), head.noun())
}

fn loss<B: Backend>(
    net: &SequenceNet<B>,
    batch: &[&Sequence<'_>],
    inputs: &LossInputs<'_>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let len = inputs.len;
    let steps: Vec<&[super::encode::Step]> = batch.iter().map(|s| s.steps.as_slice()).collect();
    let x = StepTensors::<B>::from_steps(&steps, len, inputs.features, device);
    let y = Targets::<B>::of(batch, len, device);
    let out = net.forward_heads(x);
    let z = out.purchase;
    // Stable BCE with logits: max(z, 0) - z y + ln(1 + e^-|z|).
    let bce = z.clone().clamp_min(0.0) - z.clone() * y.purchase + z.abs().neg().exp().log1p();
    let mask_sum = y.mask.clone().sum().clamp_min(1.0);
    let purchase_loss = (bce * y.mask).sum() / mask_sum;
    let picked = log_softmax(out.next, 2)
        .gather(2, y.next)
        .squeeze_dim::<2>(2);
    let next_sum = y.next_mask.clone().sum().clamp_min(1.0);
    let next_loss = (picked * y.next_mask).sum().neg() / next_sum;
    let mut total = purchase_loss + next_loss * inputs.next_weight;
    if let Some(logits) = out.category {
        let targets = ItemTargets::categories_of(batch, len);
        if !targets.positions.is_empty() {
            total = total + category_loss(logits, &targets, device) * inputs.category_weight;
        }
    }
    match out.item_query {
        Some(q) if !inputs.negatives.is_empty() => {
            let targets = ItemTargets::of(batch, len);
            if targets.positions.is_empty() {
                return total;
            }
            total + item_loss(net, q, &targets, inputs, device) * inputs.item_weight
        }
        _ => total,
    }
}

/// Cross-entropy of the category head's full softmax on the steps with a next-category target.
fn category_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: &ItemTargets,
    device: &B::Device,
) -> Tensor<B, 1> {
    let [b, t, c] = logits.dims();
    let n = targets.positions.len();
    let int =
        |v: &[i32]| Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
    let rows = logits
        .reshape([b * t, c])
        .select(0, int(&targets.positions));
    log_softmax(rows, 1)
        .gather(1, int(&targets.items).reshape([n, 1]))
        .mean()
        .neg()
}

/// Sampled softmax of the item head: each target against the batch's shared negatives, with
/// negatives that happen to be the target masked out, and every logit less the log of its item's
/// expected count among the negatives (so the loss estimates the full softmax's).
fn item_loss<B: Backend>(
    net: &SequenceNet<B>,
    queries: Tensor<B, 3>,
    targets: &ItemTargets,
    inputs: &LossInputs<'_>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let (negatives, log_expected) = (inputs.negatives, inputs.log_expected);
    let [b, t, w] = queries.dims();
    let n = targets.positions.len();
    let k = negatives.len();
    let int =
        |v: &[i32]| Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
    let q = queries
        .reshape([b * t, w])
        .select(0, int(&targets.positions));
    let correction = |item: i32| log_expected.get(item as usize).copied().unwrap_or(0.0);
    let positive_shift: Vec<f32> = targets.items.iter().map(|&t| -correction(t)).collect();
    let positive = net.item_target_scores(q.clone(), int(&targets.items))
        + Tensor::<B, 2>::from_data(TensorData::new(positive_shift, [n, 1]), device);
    let mut shift = vec![0f32; n * k];
    for (i, &target) in targets.items.iter().enumerate() {
        for (j, &neg) in negatives.iter().enumerate() {
            shift[i * k + j] = if neg == target {
                -1e9
            } else {
                -correction(neg)
            };
        }
    }
    let negative = net.item_scores(q, int(negatives))
        + Tensor::<B, 2>::from_data(TensorData::new(shift, [n, k]), device);
    let logits = Tensor::cat(vec![positive, negative], 1);
    log_softmax(logits, 1).narrow(1, 0, 1).mean().neg()
}

/// Batches of sequences of similar length (less padding), in shuffled order.
fn batches<'s, 'a>(
    seqs: &'s [Sequence<'a>],
    size: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<&'s Sequence<'a>>> {
    let mut order: Vec<&Sequence<'a>> = seqs.iter().collect();
    order.shuffle(rng);
    order.sort_by_key(|s| s.len());
    let mut out: Vec<Vec<&Sequence<'a>>> = order.chunks(size.max(1)).map(<[_]>::to_vec).collect();
    out.shuffle(rng);
    out
}

/// `cfg` with the windower's feature count filled in, checked; the feature names; and the longest
/// sequence a batch is cut to.
fn checked_config(
    cfg: &SequenceTrainConfig,
) -> Result<(SequenceTrainConfig, Vec<String>, usize), ModelError> {
    let mut cfg = cfg.clone();
    let feature_names = FeatureWindower::new(cfg.features.clone()).feature_names();
    cfg.net.numeric_features = feature_names.len();
    let problems = cfg.net.problems();
    if !problems.is_empty() {
        return Err(ModelError::InvalidConfig(problems.join("; ")));
    }
    if cfg.net.item_input == ItemInput::Vocabulary && !cfg.item_head {
        return Err(ModelError::InvalidConfig(
            "item_input = \"vocabulary\" embeds items by the item head's vocabulary: set item_head = true"
                .into(),
        ));
    }
    if cfg.item_head && cfg.item_negatives == 0 {
        return Err(ModelError::InvalidConfig(
            "item_negatives must be > 0 with the item head (or set item_head = false)".into(),
        ));
    }
    if cfg.batch_size == 0 || cfg.max_epochs == 0 || cfg.max_steps == 0 {
        return Err(ModelError::InvalidConfig(
            "batch_size, max_epochs and max_steps must be > 0".into(),
        ));
    }
    let max_steps = if cfg.net.architecture == Architecture::Transformer {
        cfg.max_steps.min(cfg.net.window)
    } else {
        cfg.max_steps
    };
    Ok((cfg, feature_names, max_steps))
}

/// One pass over the training batches of an epoch.
struct EpochPass<'c, B: AutodiffBackend> {
    cfg: &'c SequenceTrainConfig,
    max_steps: usize,
    features: usize,
    device: &'c B::Device,
    epoch: usize,
    /// Item-head negatives (none without an item head).
    sampler: Option<&'c NegativeSampler>,
    /// The sampler's log expected counts for `cfg.item_negatives` draws.
    log_expected: &'c [f32],
}

impl<B: AutodiffBackend> EpochPass<'_, B> {
    /// Trains `net` on every batch of `plan`; returns it with the summed loss (weighted by sequences)
    /// and the event-steps seen.
    fn run<O: Optimizer<SequenceNet<B>, B>>(
        &self,
        mut net: SequenceNet<B>,
        optim: &mut O,
        plan: &[Vec<&Sequence<'_>>],
        rng: &mut ChaCha8Rng,
        progress: &mut dyn FnMut(TrainProgress),
    ) -> (SequenceNet<B>, f64, usize) {
        let (mut loss_sum, mut steps) = (0.0f64, 0usize);
        for (done, batch) in plan.iter().enumerate() {
            let len = batch
                .iter()
                .map(|s| s.len())
                .max()
                .unwrap_or(1)
                .min(self.max_steps);
            let negatives = self
                .sampler
                .map(|s| s.sample(self.cfg.item_negatives, rng))
                .unwrap_or_default();
            let inputs = LossInputs {
                len,
                features: self.features,
                next_weight: self.cfg.next_loss_weight,
                item_weight: self.cfg.item_loss_weight,
                category_weight: self.cfg.category_loss_weight,
                negatives: &negatives,
                log_expected: self.log_expected,
            };
            let l = loss(&net, batch, &inputs, self.device);
            loss_sum += f64::from(l.clone().into_scalar().elem::<f32>()) * batch.len() as f64;
            steps += batch.iter().map(|s| s.len().min(len)).sum::<usize>();
            let grads = GradientsParams::from_grads(l.backward(), &net);
            net = optim.step(self.cfg.learning_rate, net, grads);
            progress(TrainProgress::Batch {
                epoch: self.epoch,
                done: done + 1,
                total: plan.len(),
            });
        }
        (net, loss_sum, steps)
    }
}

/// Builds the dataset from `events`, splits it by time, trains the configured network on the
/// training split with early stopping on validation, and evaluates the best epoch on the test
/// split. `progress` is called after every batch and epoch.
pub fn train_sequence<B: AutodiffBackend>(
    events: &[ClickEvent],
    cfg: &SequenceTrainConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<SequenceTrainReport<B::InnerBackend>, ModelError> {
    let (mut cfg, feature_names, max_steps) = checked_config(cfg)?;
    let started = Instant::now();
    let vocab = cfg
        .item_head
        .then(|| vocabulary(Recommend::Items, events, &cfg))
        .transpose()?
        .flatten();
    cfg.net.item_vocab = vocab.as_ref().map_or(0, ItemVocab::len);
    let categories = cfg
        .category_head
        .then(|| vocabulary(Recommend::Categories, events, &cfg))
        .transpose()?
        .flatten();
    cfg.net.category_vocab = categories.as_ref().map_or(0, ItemVocab::len);
    let vocabs = Vocabs {
        items: vocab.as_ref(),
        categories: categories.as_ref(),
    };
    if cfg.net.item_input == ItemInput::Vocabulary && vocab.is_none() {
        return Err(ModelError::InsufficientData(format!(
            "no item occurs {} times in the training sessions, so there is no vocabulary to embed \
             items by (item_input = \"vocabulary\"); lower min_item_count or use item_input = \"hashed\"",
            cfg.min_item_count
        )));
    }
    let dataset: Dataset = build_dataset(events, &cfg.session, &cfg.features);
    let splits = dataset.split(&cfg.split)?;
    if splits.train.is_empty() || splits.test.is_empty() {
        return Err(ModelError::InsufficientData(format!(
            "need training and test sessions; got {} sessions",
            dataset.sessions
        )));
    }
    let normalizer = Normalizer::fit(
        &feature_names,
        splits.train.iter().map(|ex| &ex.features.values),
    );
    let buckets = Buckets::of(&cfg.net, vocab.as_ref());
    let train = sequences(&splits.train, buckets, &normalizer, vocabs);
    let validation = sequences(&splits.validation, buckets, &normalizer, vocabs);
    let test = sequences(&splits.test, buckets, &normalizer, vocabs);
    let sampler = vocab.as_ref().map(NegativeSampler::new);
    let log_expected = sampler
        .as_ref()
        .map(|s| s.log_expected_counts(cfg.item_negatives))
        .unwrap_or_default();

    B::seed(device, cfg.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut net: SequenceNet<B> = cfg.net.init(device);
    let mut optim = AdamConfig::new().init::<B, SequenceNet<B>>();
    let features = normalizer.len();
    let mut best: Option<(f64, usize, SequenceNet<B::InnerBackend>)> = None;
    let mut history = Vec::new();
    let mut since_best = 0;
    for epoch in 1..=cfg.max_epochs {
        let epoch_start = Instant::now();
        let plan = batches(&train, cfg.batch_size, &mut rng);
        let pass = EpochPass {
            cfg: &cfg,
            max_steps,
            features,
            device,
            epoch,
            sampler: sampler.as_ref(),
            log_expected: &log_expected,
        };
        let (trained, loss_sum, steps) = pass.run(net, &mut optim, &plan, &mut rng, progress);
        net = trained;
        let secs = epoch_start.elapsed().as_secs_f64().max(1e-9);
        let valid_net = net.valid();
        let candidate = SequenceModel {
            net: valid_net.clone(),
            config: cfg.net.clone(),
            normalizer: normalizer.clone(),
            items: vocab.clone(),
            categories: categories.clone(),
            blend: None,
            device: device.clone(),
        };
        let val_set = if validation.is_empty() {
            &train
        } else {
            &validation
        };
        let val = evaluate_sequences(&candidate, val_set);
        let next_ce = val.next_action_log_loss.unwrap_or(0.0);
        let val_items = evaluate_items(&candidate, val_set, RECOMMENDATIONS);
        let item_ce = val_items.map_or(0.0, |e| e.cross_entropy / e.cases.max(1) as f64);
        let val_categories = candidate.category_eval(val_set, CATEGORY_RECOMMENDATIONS);
        let category_ce = val_categories.map_or(0.0, |e| e.cross_entropy / e.cases.max(1) as f64);
        let val_loss = val.log_loss.unwrap_or(f64::INFINITY)
            + f64::from(cfg.next_loss_weight) * next_ce
            + f64::from(cfg.item_loss_weight) * item_ce
            + f64::from(cfg.category_loss_weight) * category_ce;
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / train.len().max(1) as f64,
            validation_loss: val_loss,
            validation_auc: val.roc_auc,
            validation_recall: val_items
                .filter(|e| e.cases > 0)
                .map(|e| e.hits as f64 / e.cases as f64),
            validation_category_recall: val_categories
                .filter(|e| e.cases > 0)
                .map(|e| e.hits as f64 / e.cases as f64),
            sequences_per_second: train.len() as f64 / secs,
            steps_per_second: steps as f64 / secs,
        };
        progress(TrainProgress::Epoch(report.clone()));
        history.push(report);
        if best.as_ref().is_none_or(|(l, _, _)| val_loss < *l) {
            best = Some((val_loss, epoch, valid_net));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    let Some((_, best_epoch, best_net)) = best else {
        return Err(ModelError::InsufficientData("no epoch ran".into()));
    };
    let mut model = SequenceModel {
        net: best_net,
        config: cfg.net.clone(),
        normalizer,
        items: vocab,
        categories,
        blend: None,
        device: device.clone(),
    };
    let mut network_test = None;
    if cfg.purchase_blend {
        model.blend = fit_blend(&model, &train, &validation)?;
        if model.blend.is_some() {
            let alone = SequenceModel {
                blend: None,
                ..model.clone()
            };
            network_test = Some(evaluate_sequences(&alone, &test));
        }
    }
    let test_metrics = evaluate_sequences(&model, &test);
    let test_items = evaluate_items(&model, &test, RECOMMENDATIONS)
        .map(|e| rec_metrics(&model_name(&cfg.net, Recommend::Items), RECOMMENDATIONS, e));
    let test_categories = model
        .category_eval(&test, CATEGORY_RECOMMENDATIONS)
        .map(|e| {
            rec_metrics(
                &model_name(&cfg.net, Recommend::Categories),
                CATEGORY_RECOMMENDATIONS,
                e,
            )
        });
    let train_positive_rate = crate::dataset::positive_rate(&splits.train);
    let counts = DatasetCounts {
        events: dataset.events,
        sessions: dataset.sessions,
        examples: dataset.examples.len(),
        train_examples: splits.train.len(),
        validation_examples: splits.validation.len(),
        test_examples: splits.test.len(),
        train_positive_rate,
    };
    Ok(SequenceTrainReport {
        model,
        history,
        best_epoch,
        test: test_metrics,
        network_test,
        test_items,
        test_categories,
        counts,
        fingerprint: dataset.fingerprint.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod sampler_tests {
    use super::*;

    #[test]
    fn expected_counts_follow_the_sampling_weights_and_sum_to_the_draws() {
        let vocab =
            ItemVocab::from_parts(vec!["a".into(), "b".into(), "c".into()], vec![81, 16, 1]);
        let sampler = NegativeSampler::new(&vocab);
        let expected: Vec<f64> = sampler
            .log_expected_counts(100)
            .iter()
            .map(|&l| f64::from(l).exp())
            .collect();
        // Weights count^0.75: 27, 8 and 1 of 36.
        for (e, w) in expected.iter().zip([27.0, 8.0, 1.0]) {
            assert!((e - 100.0 * w / 36.0).abs() < 1e-3, "{expected:?}");
        }
        // The draws follow the same weights.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let drawn = sampler.sample(36_000, &mut rng);
        let a = drawn.iter().filter(|&&i| i == 0).count() as f64 / 36_000.0;
        assert!((a - 0.75).abs() < 0.01, "{a}");
    }
}
