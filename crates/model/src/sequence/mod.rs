//! Burn sequence models (GRU, LSTM, causal Transformer) over a user's events: per step an
//! event-type embedding, hashed category and item embeddings and the windower's numeric
//! features; two heads, purchase within the session and next event type.
//!
//! CPU by default (Burn's `flex` backend, [`CpuBackend`]); `cuda` adds [`CudaBackend`].

pub mod artifact;
pub mod blend;
pub mod data;
pub mod encode;
pub mod graph_index;
pub mod index;
pub mod model;
pub mod net;
pub mod online;
pub mod train;

pub use artifact::{SequenceMeta, is_sequence_artifact, load_sequence, save_sequence};
pub use encode::{Buckets, Normalizer, Step, encode_step};
pub use model::{ItemEval, SequenceModel, StepOutput, top_k, top_k_probabilities, top_k_scored};
pub use net::{
    Architecture, HeadOutputs, ItemInput, NetConfig, SequenceNet, StepHeads, StepTensors,
};
pub use online::{
    DeviceFallback, IndexedModel, ItemRanking, OnlineDevice, OnlineModel, UserMemory, check_device,
    load_online,
};
pub use train::{
    EpochReport, RECOMMENDATIONS, SequenceTrainConfig, SequenceTrainReport, TrainProgress,
    evaluate_items, evaluate_items_served, evaluate_sequences, rec_metrics, train_sequence,
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

/// Checks that the first CUDA device works by running one tiny computation on it. Without a
/// usable GPU (no driver, no device) burn-cuda panics at the first operation, deep in a scoring
/// batch; this turns that into an error at start-up.
#[cfg(feature = "cuda")]
pub fn probe_cuda() -> Result<(), crate::ModelError> {
    let probe = std::panic::catch_unwind(|| {
        let device = Default::default();
        burn::tensor::Tensor::<CudaBackend, 1>::from_floats([1.0f32, 2.0], &device)
            .sum()
            .into_scalar()
    });
    match probe {
        Ok(sum) if (sum - 3.0).abs() < 1e-6 => Ok(()),
        Ok(sum) => Err(crate::ModelError::InvalidConfig(format!(
            "the CUDA device computed 1 + 2 = {sum}"
        ))),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(crate::ModelError::InvalidConfig(format!(
                "no usable CUDA device (is an NVIDIA driver installed and a GPU visible?): {why}"
            )))
        }
    }
}

#[cfg(test)]
mod tests;
