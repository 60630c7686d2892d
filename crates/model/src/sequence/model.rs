//! A trained sequence model ready to score: the network, its shape and its input normaliser.

use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};

use super::data::Sequence;
use super::encode::{Buckets, EVENT_TYPES, Normalizer, Step};
use super::net::{Architecture, NetConfig, SequenceNet, StepTensors};

/// What a sequence model says after one event.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Probability that the session goes on to a purchase.
    pub purchase: f64,
    /// Probability of each next event type, by [`clickpath_schema::EventType::index`].
    pub next: Vec<f64>,
}

/// A sequence model: network plus everything needed to encode its inputs.
#[derive(Debug, Clone)]
pub struct SequenceModel<B: Backend> {
    /// The network.
    pub net: SequenceNet<B>,
    /// Its shape.
    pub config: NetConfig,
    /// Input normalisation fitted on the training data.
    pub normalizer: Normalizer,
    /// Device the network lives on.
    pub device: B::Device,
}

/// Sequences per forward pass when scoring many sessions.
const SCORE_BATCH: usize = 256;

impl<B: Backend> SequenceModel<B> {
    /// A freshly initialised model of shape `config` whose normaliser passes its
    /// `config.numeric_features` inputs (named `f0`, `f1`, ...) through unchanged: for benchmarks
    /// and tests of the mechanics, not for predictions.
    pub fn untrained(config: NetConfig, device: B::Device) -> Self {
        let n = config.numeric_features;
        SequenceModel {
            net: config.init(&device),
            normalizer: Normalizer {
                names: (0..n).map(|i| format!("f{i}")).collect(),
                mean: vec![0.0; n],
                std: vec![1.0; n],
            },
            config,
            device,
        }
    }

    /// Hashed-embedding bucket counts.
    pub fn buckets(&self) -> Buckets {
        Buckets {
            categories: self.config.category_buckets,
            items: self.config.item_buckets,
        }
    }

    /// Step outputs of a whole batch of step sequences, each scored from an empty state.
    /// Sequences longer than the Transformer's window are scored with a sliding window, as the
    /// scorer does online.
    pub fn score_steps(&self, seqs: &[&[Step]]) -> Vec<Vec<StepOutput>> {
        let mut out: Vec<Vec<StepOutput>> = Vec::with_capacity(seqs.len());
        let window = self.config.window;
        let windowed = self.config.architecture == Architecture::Transformer;
        // Order by length so a batch pads little.
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut results: Vec<Option<Vec<StepOutput>>> = vec![None; seqs.len()];
        for chunk in order.chunks(SCORE_BATCH) {
            let batch: Vec<&[Step]> = chunk
                .iter()
                .map(|&i| {
                    if windowed {
                        &seqs[i][..seqs[i].len().min(window)]
                    } else {
                        seqs[i]
                    }
                })
                .collect();
            let scored = self.forward_batch(&batch);
            for (&i, s) in chunk.iter().zip(scored) {
                results[i] = Some(s);
            }
        }
        for (i, r) in results.into_iter().enumerate() {
            let mut r = r.unwrap_or_default();
            if windowed && seqs[i].len() > window {
                // Each later step: the window ending at it, last position.
                for t in window..seqs[i].len() {
                    let slice = &seqs[i][t + 1 - window..=t];
                    let mut s = self.forward_batch(&[slice]);
                    if let Some(last) = s.pop().and_then(|mut v| v.pop()) {
                        r.push(last);
                    }
                }
            }
            out.push(r);
        }
        out
    }

    /// Step outputs of `sequences` (see [`SequenceModel::score_steps`]).
    pub fn score_sequences(&self, sequences: &[Sequence<'_>]) -> Vec<Vec<StepOutput>> {
        let steps: Vec<&[Step]> = sequences.iter().map(|s| s.steps.as_slice()).collect();
        self.score_steps(&steps)
    }

    fn forward_batch(&self, batch: &[&[Step]]) -> Vec<Vec<StepOutput>> {
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if len == 0 {
            return vec![Vec::new(); batch.len()];
        }
        let x = StepTensors::<B>::from_steps(batch, len, self.normalizer.len(), &self.device);
        let (p, n) = self.net.forward(x);
        let p: Vec<f32> = sigmoid(p).into_data().into_vec().unwrap_or_default();
        let n: Vec<f32> = softmax(n, 2).into_data().into_vec().unwrap_or_default();
        batch
            .iter()
            .enumerate()
            .map(|(i, seq)| {
                (0..seq.len())
                    .map(|t| {
                        let at = i * len + t;
                        StepOutput {
                            purchase: f64::from(p[at]),
                            next: n[at * EVENT_TYPES..(at + 1) * EVENT_TYPES]
                                .iter()
                                .map(|v| f64::from(*v))
                                .collect(),
                        }
                    })
                    .collect()
            })
            .collect()
    }
}
