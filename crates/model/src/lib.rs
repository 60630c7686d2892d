//! clickpath-model: the prediction models behind the scorer, their training, evaluation and
//! versioned artifacts.
//!
//! The baseline ([`BaselineModel`]) pairs a first-order Markov chain over event types
//! ([`markov`], next action and predicted path) with a logistic regression on the windower's
//! features ([`logistic`], probability that the session ends with a purchase, with signed
//! explanations). [`train_baseline`] builds examples from raw click events with the same core
//! code the stages run ([`dataset`]), splits them by time, fits, and evaluates on the latest
//! sessions ([`metrics`]); [`ModelArtifact`] saves and loads the result as a versioned directory.
//!
//! Layout: `baseline/` (markov, logistic, train, artifact) mirrors `sequence/` (net, train, artifact, online);
//! `dataset` and `metrics` serve both. `recommend/` holds next-item recommendation: item sessions,
//! the item vocabulary, the baselines and the Recall@k / MRR@k evaluation.
//!
//! Dependencies: schema and core only. This crate must not depend on Kafka or an async runtime.
//! Burn sequence models ([`sequence`], GRU, LSTM and Transformer) sit behind the `sequence`
//! cargo feature (`cuda` adds the GPU backend), so crates that only need the baseline do not
//! build Burn.

pub mod baseline;
pub mod dataset;
pub mod error;
pub mod kmeans;
pub mod metrics;
pub mod outlook;
pub mod recommend;
#[cfg(feature = "sequence")]
pub mod sequence;

// The baseline's parts, at the paths they have always had.
pub use baseline::{artifact, logistic, markov, train};

pub use artifact::{ArtifactMeta, ModelArtifact};
pub use baseline::{BaselineModel, ModelOutput, PredictOptions};
pub use dataset::{Dataset, Example, SplitConfig, Splits, build_dataset};
pub use error::{MetricError, ModelError};
pub use logistic::{FitHistory, LogisticConfig, LogisticModel};
pub use markov::MarkovChain;
pub use train::{
    DatasetCounts, EvalMetrics, TrainConfig, TrainReport, evaluate, metrics_of, train_baseline,
};
