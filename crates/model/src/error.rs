//! Errors of training, metrics and artifacts.

use std::path::PathBuf;

/// What went wrong while training, evaluating, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The data cannot train a model (no examples, a single class, an empty split).
    #[error("not enough training data: {0}")]
    InsufficientData(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing an artifact file failed.
    #[error("artifact file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An artifact file is not valid JSON, or its content does not fit the format (a missing
    /// field, a number out of range, a non-finite or inconsistent parameter).
    #[error("artifact file {path}: cannot parse: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An artifact file parsed but its content is unusable (wrong kind, non-finite weights,
    /// feature names that do not match the spec, version mismatch).
    #[error("artifact file {path}: {problem}")]
    InvalidArtifact {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// Predictions and labels have different lengths.
    #[error("{predictions} predictions but {labels} labels")]
    LengthMismatch {
        /// Number of predictions.
        predictions: usize,
        /// Number of labels.
        labels: usize,
    },
    /// There is nothing to score.
    #[error("no examples")]
    Empty,
    /// The metric needs both classes but only one is present.
    #[error("only one class present")]
    SingleClass,
    /// A score or probability is NaN or infinite.
    #[error("non-finite prediction at index {0}")]
    NonFinite(usize),
    /// A parameter (k, number of bins) is zero.
    #[error("parameter must be positive")]
    ZeroParameter,
}
