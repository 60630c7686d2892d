//! clickpath-model.
#![warn(missing_docs)]

pub mod error;
pub mod logistic;
pub mod markov;
pub mod metrics;

pub use error::{MetricError, ModelError};
pub use logistic::{LogisticConfig, LogisticModel};
pub use markov::MarkovChain;
