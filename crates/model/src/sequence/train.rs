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

use super::data::{Sequence, Targets, sequences};
use super::encode::{Buckets, Normalizer};
use super::model::SequenceModel;
use super::net::{Architecture, NetConfig, SequenceNet, StepTensors};
use crate::dataset::{Dataset, SplitConfig, build_dataset};
use crate::error::ModelError;
use crate::metrics::{DatasetCounts, EvalMetrics};
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
    /// Seed of initialisation and shuffling. Default 7.
    pub seed: u64,
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
    /// Validation loss (purchase log loss + weighted next-action cross-entropy).
    pub validation_loss: f64,
    /// Validation ROC AUC of the purchase probability.
    pub validation_auc: Option<f64>,
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
    /// Metrics on the test split.
    pub test: EvalMetrics,
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

fn loss<B: Backend>(
    net: &SequenceNet<B>,
    batch: &[&Sequence<'_>],
    len: usize,
    features: usize,
    next_weight: f32,
    device: &B::Device,
) -> Tensor<B, 1> {
    let steps: Vec<&[super::encode::Step]> = batch.iter().map(|s| s.steps.as_slice()).collect();
    let x = StepTensors::<B>::from_steps(&steps, len, features, device);
    let y = Targets::<B>::of(batch, len, device);
    let (z, next_logits) = net.forward(x);
    // Stable BCE with logits: max(z, 0) - z y + ln(1 + e^-|z|).
    let bce = z.clone().clamp_min(0.0) - z.clone() * y.purchase + z.abs().neg().exp().log1p();
    let mask_sum = y.mask.clone().sum().clamp_min(1.0);
    let purchase_loss = (bce * y.mask).sum() / mask_sum;
    let picked = log_softmax(next_logits, 2)
        .gather(2, y.next)
        .squeeze_dim::<2>(2);
    let next_sum = y.next_mask.clone().sum().clamp_min(1.0);
    let next_loss = (picked * y.next_mask).sum().neg() / next_sum;
    purchase_loss + next_loss * next_weight
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
}

impl<B: AutodiffBackend> EpochPass<'_, B> {
    /// Trains `net` on every batch of `plan`; returns it with the summed loss (weighted by sequences)
    /// and the event-steps seen.
    fn run<O: Optimizer<SequenceNet<B>, B>>(
        &self,
        mut net: SequenceNet<B>,
        optim: &mut O,
        plan: &[Vec<&Sequence<'_>>],
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
            let l = loss(
                &net,
                batch,
                len,
                self.features,
                self.cfg.next_loss_weight,
                self.device,
            );
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
    let (cfg, feature_names, max_steps) = checked_config(cfg)?;
    let started = Instant::now();
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
    let buckets = Buckets {
        categories: cfg.net.category_buckets,
        items: cfg.net.item_buckets,
    };
    let train = sequences(&splits.train, buckets, &normalizer);
    let validation = sequences(&splits.validation, buckets, &normalizer);
    let test = sequences(&splits.test, buckets, &normalizer);

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
        };
        let (trained, loss_sum, steps) = pass.run(net, &mut optim, &plan, progress);
        net = trained;
        let secs = epoch_start.elapsed().as_secs_f64().max(1e-9);
        let valid_net = net.valid();
        let candidate = SequenceModel {
            net: valid_net.clone(),
            config: cfg.net.clone(),
            normalizer: normalizer.clone(),
            device: device.clone(),
        };
        let val_set = if validation.is_empty() {
            &train
        } else {
            &validation
        };
        let val = evaluate_sequences(&candidate, val_set);
        let next_ce = val.next_action_log_loss.unwrap_or(0.0);
        let val_loss =
            val.log_loss.unwrap_or(f64::INFINITY) + f64::from(cfg.next_loss_weight) * next_ce;
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / train.len().max(1) as f64,
            validation_loss: val_loss,
            validation_auc: val.roc_auc,
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
    let model = SequenceModel {
        net: best_net,
        config: cfg.net.clone(),
        normalizer,
        device: device.clone(),
    };
    let test_metrics = evaluate_sequences(&model, &test);
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
        counts,
        fingerprint: dataset.fingerprint.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
