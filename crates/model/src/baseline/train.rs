//! Training and evaluation of the baseline model from raw click events.

use clickpath_core::{FeatureSpec, FeatureWindower, SessionConfig};
use clickpath_schema::{ClickEvent, EventType};
use serde::{Deserialize, Serialize};

use crate::artifact::{ArtifactMeta, ModelArtifact, TrainingInfo};
use crate::baseline::{BASELINE_KIND, BaselineModel};
use crate::dataset::{Dataset, Example, SplitConfig, build_dataset};
use crate::error::ModelError;
use crate::logistic::{FitHistory, LabeledValues, LogisticConfig, LogisticModel};
use crate::markov::{DEFAULT_SMOOTHING, MarkovChain};
use crate::metrics;
// Defined beside the metric functions; re-exported here, where they were first defined.
pub use crate::metrics::{DatasetCounts, EvalMetrics};

/// Everything [`train_baseline`] needs besides the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Session rules (must match the sessionizer stage's). Default: core's defaults.
    pub session: SessionConfig,
    /// Feature spec (must match the windower stage's). Default: core's defaults.
    pub features: FeatureSpec,
    /// Time-based split. Default 70 / 15 / 15 by session start.
    pub split: SplitConfig,
    /// Logistic regression hyper-parameters.
    pub logistic: LogisticConfig,
    /// Additive smoothing of the Markov chain. Default 1.0 (Laplace).
    pub markov_smoothing: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            session: SessionConfig::default(),
            features: FeatureSpec::default(),
            split: SplitConfig::default(),
            logistic: LogisticConfig::default(),
            markov_smoothing: DEFAULT_SMOOTHING,
        }
    }
}

/// A trained model with its metadata (metrics on the test split included) and fit history.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Model and metadata, ready to [`ModelArtifact::save`].
    pub artifact: ModelArtifact,
    /// How the logistic regression's fit went.
    pub history: FitHistory,
}

impl TrainReport {
    /// The trained model.
    pub fn model(&self) -> &BaselineModel {
        &self.artifact.model
    }

    /// Metrics on the test split.
    pub fn metrics(&self) -> &EvalMetrics {
        &self.artifact.meta.metrics
    }
}

/// Scores `examples` with `model`: purchase metrics on the examples scored for purchase,
/// next-action accuracy on those with a next action (predicted from the example's own event
/// type).
pub fn evaluate(model: &BaselineModel, examples: &[&Example]) -> EvalMetrics {
    let probabilities: Vec<f64> = examples
        .iter()
        .map(|ex| model.logistic.predict(&ex.features.values))
        .collect();
    let (distributions, targets): (Vec<_>, Vec<_>) = examples
        .iter()
        .filter_map(|ex| {
            ex.next_action.map(|next| {
                (
                    model.markov.next_distribution(Some(ex.event_type())),
                    next.index(),
                )
            })
        })
        .unzip();
    metrics_of(&probabilities, examples, &distributions, &targets)
}

/// The metrics of purchase probabilities (one per example; examples not
/// [scored for purchase](Example::scored_for_purchase) are skipped) against the examples' labels
/// (the session label, the "soon" label, the session label by position) and of next-action
/// distributions against the actions that followed; shared by every model so their numbers
/// compare.
pub fn metrics_of<D: AsRef<[f64]>>(
    probabilities: &[f64],
    examples: &[&Example],
    distributions: &[D],
    targets: &[usize],
) -> EvalMetrics {
    assert_eq!(
        probabilities.len(),
        examples.len(),
        "one purchase probability per example"
    );
    let (probabilities, examples): (Vec<f64>, Vec<&Example>) = probabilities
        .iter()
        .zip(examples)
        .filter(|(_, ex)| ex.scored_for_purchase())
        .map(|(p, ex)| (*p, *ex))
        .unzip();
    let probabilities = probabilities.as_slice();
    let examples = examples.as_slice();
    let labels: Vec<bool> = examples.iter().map(|ex| ex.purchase).collect();
    let labels = labels.as_slice();
    let soon: Vec<bool> = examples.iter().map(|ex| ex.purchase_soon).collect();
    let by_position = metrics::REPORTED_POSITIONS
        .iter()
        .map(|&position| {
            let (p, y): (Vec<f64>, Vec<bool>) = probabilities
                .iter()
                .zip(examples)
                .filter(|(_, ex)| ex.position == position)
                .map(|(p, ex)| (*p, ex.purchase))
                .unzip();
            metrics::PositionMetrics {
                position,
                examples: p.len(),
                positives: y.iter().filter(|&&y| y).count(),
                roc_auc: metrics::roc_auc(&p, &y).ok(),
            }
        })
        .collect();
    let next_log_loss = (!targets.is_empty()).then(|| {
        distributions
            .iter()
            .zip(targets)
            .map(|(d, &t)| {
                -d.as_ref()
                    .get(t)
                    .copied()
                    .unwrap_or(0.0)
                    .clamp(metrics::LOG_LOSS_EPS, 1.0)
                    .ln()
            })
            .sum::<f64>()
            / targets.len() as f64
    });
    EvalMetrics {
        examples: probabilities.len(),
        positives: labels.iter().filter(|&&y| y).count(),
        roc_auc: metrics::roc_auc(probabilities, labels).ok(),
        pr_auc: metrics::pr_auc(probabilities, labels).ok(),
        log_loss: metrics::log_loss(probabilities, labels).ok(),
        ece: metrics::expected_calibration_error(probabilities, labels, metrics::DEFAULT_ECE_BINS)
            .ok(),
        next_action_cases: targets.len(),
        next_action_top1: metrics::top_k_accuracy(distributions, targets, 1).ok(),
        next_action_top3: metrics::top_k_accuracy(distributions, targets, 3).ok(),
        next_action_log_loss: next_log_loss,
        soon_positives: soon.iter().filter(|&&y| y).count(),
        soon_roc_auc: metrics::roc_auc(probabilities, &soon).ok(),
        soon_pr_auc: metrics::pr_auc(probabilities, &soon).ok(),
        by_position,
    }
}

/// Markov transitions seen in `examples`: `(None, type)` where a session opens and
/// `(type, next)` wherever there is a next action.
fn transitions<'a>(
    examples: &'a [&'a Example],
) -> impl Iterator<Item = (Option<EventType>, EventType)> + 'a {
    examples.iter().flat_map(|ex| {
        let start = ex.opens_session.then_some((None, ex.event_type()));
        let step = ex.next_action.map(|next| (Some(ex.event_type()), next));
        start.into_iter().chain(step)
    })
}

fn as_labeled<'a>(examples: &[&'a Example]) -> Vec<LabeledValues<'a>> {
    examples
        .iter()
        .filter(|ex| ex.scored_for_purchase())
        .map(|ex| (&ex.features.values, ex.purchase))
        .collect()
}

/// Builds the dataset from `events`, splits it by time, fits both models on the training split
/// (validation for early stopping) and evaluates on the test split.
pub fn train_baseline(events: &[ClickEvent], cfg: &TrainConfig) -> Result<TrainReport, ModelError> {
    let dataset: Dataset = build_dataset(events, &cfg.session, &cfg.features);
    let splits = dataset.split(&cfg.split)?;
    if splits.test.is_empty() {
        return Err(ModelError::InsufficientData(format!(
            "the test split is empty ({} sessions); use more data or a smaller train/validation share",
            dataset.sessions
        )));
    }
    let feature_names = FeatureWindower::new(cfg.features.clone()).feature_names();
    let (logistic, history) = LogisticModel::fit(
        &feature_names,
        &as_labeled(&splits.train),
        &as_labeled(&splits.validation),
        &cfg.logistic,
    )?;
    let markov = MarkovChain::fit_with_smoothing(transitions(&splits.train), cfg.markov_smoothing)?;
    let model = BaselineModel::new(markov, logistic);
    let metrics = evaluate(&model, &splits.test);

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
    let meta = ArtifactMeta {
        format_version: crate::artifact::FORMAT_VERSION,
        kind: BASELINE_KIND.to_string(),
        version: model.version.clone(),
        created_at: crate::artifact::now_rfc3339(),
        feature_spec_version: cfg.features.version.clone(),
        feature_names: model.logistic.feature_names().to_vec(),
        session_config: cfg.session.clone(),
        training_data_fingerprint: dataset.fingerprint.clone(),
        metrics,
        counts,
        training: TrainingInfo {
            feature_spec: cfg.features.clone(),
            split: cfg.split.clone(),
            logistic: cfg.logistic.clone(),
            markov_smoothing: cfg.markov_smoothing,
            history: history.clone(),
        },
    };
    Ok(TrainReport {
        artifact: ModelArtifact { model, meta },
        history,
    })
}
