//! Burn sequence models (GRU, LSTM, causal Transformer) over a user's events: per step an
//! event-type embedding, hashed category and item embeddings and the windower's numeric
//! features; two heads, purchase within the session and next event type.
//!
//! CPU by default (Burn's `flex` backend, [`CpuBackend`]); `cuda` adds [`CudaBackend`].

pub mod artifact;
pub mod data;
pub mod encode;
pub mod model;
pub mod net;
pub mod online;
pub mod train;

pub use artifact::{SequenceMeta, is_sequence_artifact, load_sequence, save_sequence};
pub use encode::{Buckets, Normalizer, Step, encode_step};
pub use model::{SequenceModel, StepOutput};
pub use net::{Architecture, NetConfig, SequenceNet, StepTensors};
pub use online::{OnlineDevice, OnlineModel, UserMemory, load_online};
pub use train::{
    EpochReport, SequenceTrainConfig, SequenceTrainReport, TrainProgress, evaluate_sequences,
    train_sequence,
};

/// The default CPU backend: Burn's `flex` (measured faster than `ndarray` here).
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend with automatic differentiation, for training.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;
/// NVIDIA GPUs through burn-cuda.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
/// The CUDA backend with automatic differentiation, for training.
#[cfg(feature = "cuda")]
pub type CudaTrainBackend = burn::backend::Autodiff<CudaBackend>;

#[cfg(test)]
mod tests;
