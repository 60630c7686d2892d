//! Online scoring: each user's memory (the recurrent state, or the Transformer's window of
//! recent steps) advanced by one event, for a batch of users at once, so the cost per event does
//! not grow with the session.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::encode::Normalizer;
use super::encode::{EVENT_TYPES, Step};
use super::index::{IndexConfig, ItemSearch};
use super::model::{SequenceModel, StepOutput};
use super::net::{Architecture, NetConfig, StepTensors};
use crate::recommend::ItemVocab;

/// What a model remembers of one user between events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserMemory {
    /// Recurrent state (GRU: hidden; LSTM: hidden then cell); empty for a fresh user.
    pub state: Vec<f32>,
    /// Transformer: the most recent steps, oldest first (at most the model's window).
    pub window: Vec<Step>,
}

/// Version byte of [`UserMemory::to_bytes`].
const MEMORY_FORMAT: u8 = 1;

impl UserMemory {
    /// Compact little-endian encoding for the changelog: format, state length and floats, then
    /// window length and per step type, category, item, feature count and features.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 4 * self.state.len());
        out.push(MEMORY_FORMAT);
        out.extend_from_slice(&(self.state.len() as u32).to_le_bytes());
        for v in &self.state {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.window.len() as u32).to_le_bytes());
        for s in &self.window {
            for v in [s.event_type, s.category, s.item, s.numeric.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in &s.numeric {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Decodes [`UserMemory::to_bytes`]; `None` for bytes that are not a memory.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.u8()? != MEMORY_FORMAT {
            return None;
        }
        let n = r.u32()? as usize;
        let state = (0..n).map(|_| r.f32()).collect::<Option<Vec<f32>>>()?;
        let w = r.u32()? as usize;
        let mut window = Vec::with_capacity(w.min(1024));
        for _ in 0..w {
            let (event_type, category, item, k) = (r.u32()?, r.u32()?, r.u32()?, r.u32()? as usize);
            let numeric = (0..k).map(|_| r.f32()).collect::<Option<Vec<f32>>>()?;
            window.push(Step {
                event_type,
                category,
                item,
                numeric,
            });
        }
        r.0.is_empty().then_some(UserMemory { state, window })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn f32(&mut self) -> Option<f32> {
        self.take::<4>().map(f32::from_le_bytes)
    }
}

impl<B: Backend> SequenceModel<B> {
    /// Advances each user's memory by its step and returns the outputs after it, one per item,
    /// in one batched call. A memory that does not fit this model (another state width, from an
    /// older model) starts fresh.
    pub fn step_batch(&self, items: &mut [(&Step, &mut UserMemory)]) -> Vec<StepOutput> {
        if items.is_empty() {
            return Vec::new();
        }
        match self.config.architecture {
            Architecture::Transformer => self.step_windows(items),
            _ => self.step_recurrent(items),
        }
    }

    fn step_recurrent(&self, items: &mut [(&Step, &mut UserMemory)]) -> Vec<StepOutput> {
        let width = self.config.state_width();
        let b = items.len();
        let features = self.normalizer.len();
        let mut state = vec![0f32; b * width];
        for (i, (_, mem)) in items.iter().enumerate() {
            if mem.state.len() == width {
                state[i * width..(i + 1) * width].copy_from_slice(&mem.state);
            }
        }
        let steps: Vec<&[Step]> = items
            .iter()
            .map(|(s, _)| std::slice::from_ref(*s))
            .collect();
        let x = StepTensors::<B>::from_steps(&steps, 1, features, &self.device);
        let state = Tensor::<B, 2>::from_data(TensorData::new(state, [b, width]), &self.device);
        let out = self.net.step(x, Some(state));
        let p: Vec<f32> = out.purchase.into_data().into_vec().unwrap_or_default();
        let n: Vec<f32> = softmax(out.next, 1)
            .into_data()
            .into_vec()
            .unwrap_or_default();
        let q = HeadRows::of(
            out.item_query
                .map(|q| q.into_data().into_vec().unwrap_or_default()),
            self.config.item_head_width,
        );
        let c = HeadRows::of(
            out.category
                .map(|c| c.into_data().into_vec().unwrap_or_default()),
            self.config.category_vocab,
        );
        let new_state: Vec<f32> = out.state.into_data().into_vec().unwrap_or_default();
        items
            .iter_mut()
            .enumerate()
            .map(|(i, (_, mem))| {
                mem.state.clear();
                mem.state
                    .extend_from_slice(&new_state[i * width..(i + 1) * width]);
                mem.window.clear();
                let purchase = self.purchase_probability(p[i], &steps[i][0]);
                output_at(purchase, &n, (&q, &c), i)
            })
            .collect()
    }

    fn step_windows(&self, items: &mut [(&Step, &mut UserMemory)]) -> Vec<StepOutput> {
        let window = self.config.window.max(1);
        for (step, mem) in items.iter_mut() {
            mem.state.clear();
            if mem.window.len() >= window {
                mem.window.drain(..=mem.window.len() - window);
            }
            mem.window.push((*step).clone());
        }
        let seqs: Vec<&[Step]> = items.iter().map(|(_, m)| m.window.as_slice()).collect();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
        let x = StepTensors::<B>::from_steps(&seqs, len, self.normalizer.len(), &self.device);
        let out = self.net.forward_heads(x);
        let p: Vec<f32> = out.purchase.into_data().into_vec().unwrap_or_default();
        let n: Vec<f32> = softmax(out.next, 2)
            .into_data()
            .into_vec()
            .unwrap_or_default();
        let q = HeadRows::of(
            out.item_query
                .map(|q| q.into_data().into_vec().unwrap_or_default()),
            self.config.item_head_width,
        );
        let c = HeadRows::of(
            out.category
                .map(|c| c.into_data().into_vec().unwrap_or_default()),
            self.config.category_vocab,
        );
        seqs.iter()
            .enumerate()
            .map(|(i, s)| {
                let at = i * len + s.len() - 1;
                let purchase = s
                    .last()
                    .map_or(0.0, |step| self.purchase_probability(p[at], step));
                output_at(purchase, &n, (&q, &c), at)
            })
            .collect()
    }
}

/// One head's rows of one model call, flat (`width` floats per row: the item head's queries, the
/// category head's logits); none without that head.
struct HeadRows {
    flat: Vec<f32>,
    width: usize,
}

impl HeadRows {
    fn of(flat: Option<Vec<f32>>, width: usize) -> Self {
        HeadRows {
            flat: flat.unwrap_or_default(),
            width,
        }
    }

    fn row(&self, at: usize) -> Vec<f32> {
        self.flat
            .get(at * self.width..(at + 1) * self.width)
            .map(<[f32]>::to_vec)
            .unwrap_or_default()
    }
}

fn output_at(purchase: f64, n: &[f32], (q, c): (&HeadRows, &HeadRows), at: usize) -> StepOutput {
    StepOutput {
        purchase,
        next: n[at * EVENT_TYPES..(at + 1) * EVENT_TYPES]
            .iter()
            .map(|v| f64::from(*v))
            .collect(),
        item_query: q.row(at),
        categories: c.row(at),
    }
}

/// A sequence model behind a trait object, so a stage can hold a CPU or a CUDA model chosen at
/// run time.
pub trait OnlineModel: Send {
    /// The network's shape.
    fn config(&self) -> &NetConfig;
    /// The input normaliser (its names are the numeric features, in input order).
    fn normalizer(&self) -> &Normalizer;
    /// See [`SequenceModel::step_batch`].
    fn step_batch(&self, items: &mut [(&Step, &mut UserMemory)]) -> Vec<StepOutput>;
    /// The item vocabulary of the item head (index = [`OnlineModel::top_items`]' item); `None` without one.
    fn item_vocab(&self) -> Option<&ItemVocab>;
    /// The `k` best items for each query ([`StepOutput::item_query`]) with their scores, best first; see
    /// [`SequenceModel::top_scored_items`]. Empty lists without an item head.
    fn top_items(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u32, f32)>>;
    /// How [`OnlineModel::top_items`] ranks, for logs: `None` for the exact scan, or the index.
    fn item_index(&self) -> Option<String> {
        None
    }
    /// The category vocabulary of the category head (index = position in
    /// [`StepOutput::categories`]); `None` without one.
    fn category_vocab(&self) -> Option<&ItemVocab>;
}

impl<B: Backend> OnlineModel for SequenceModel<B>
where
    SequenceModel<B>: Send,
{
    fn config(&self) -> &NetConfig {
        &self.config
    }
    fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }
    fn step_batch(&self, items: &mut [(&Step, &mut UserMemory)]) -> Vec<StepOutput> {
        SequenceModel::step_batch(self, items)
    }
    fn item_vocab(&self) -> Option<&ItemVocab> {
        self.items.as_ref()
    }
    fn category_vocab(&self) -> Option<&ItemVocab> {
        self.categories.as_ref()
    }
    fn top_items(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u32, f32)>> {
        if !self.net.has_item_head() || queries.is_empty() || k == 0 {
            return vec![Vec::new(); queries.len()];
        }
        self.top_scored_items(queries, k)
    }
}

/// A model whose item ranking goes through an [`ItemSearch`] index when its vocabulary is large enough
/// ([`IndexConfig::min_items`]); everything else is the model's own. The inverted lists are 4-8x
/// faster than the exact scan over 50 000 items but keep only 38-53 % of a trained model's exact top
/// 20; the graph keeps 87-97 % at 3-10x (`clickpath evaluate --item-index`, docs/models.md). The
/// scorer serves the graph with `scorer.item_index = "graph"`, the exact scan by default.
pub struct IndexedModel<B: Backend> {
    model: SequenceModel<B>,
    index: Option<ItemSearch>,
}

impl<B: Backend> IndexedModel<B> {
    /// Builds the index of `model`'s item head (none without one, or below `cfg.min_items`).
    pub fn new(model: SequenceModel<B>, cfg: &IndexConfig) -> Self {
        let index = model.net.item_output().and_then(|(emb, bias)| {
            let width = emb.dims()[1];
            let emb: Vec<f32> = emb.into_data().into_vec().ok()?;
            let bias: Vec<f32> = bias.into_data().into_vec().ok()?;
            ItemSearch::build(&emb, &bias, width, cfg)
        });
        IndexedModel { model, index }
    }

    /// The index, when the vocabulary has one.
    pub fn index(&self) -> Option<&ItemSearch> {
        self.index.as_ref()
    }

    /// The model.
    pub fn model(&self) -> &SequenceModel<B> {
        &self.model
    }
}

impl<B: Backend> OnlineModel for IndexedModel<B>
where
    SequenceModel<B>: Send,
{
    fn config(&self) -> &NetConfig {
        &self.model.config
    }
    fn normalizer(&self) -> &Normalizer {
        &self.model.normalizer
    }
    fn step_batch(&self, items: &mut [(&Step, &mut UserMemory)]) -> Vec<StepOutput> {
        self.model.step_batch(items)
    }
    fn item_vocab(&self) -> Option<&ItemVocab> {
        self.model.items.as_ref()
    }
    fn category_vocab(&self) -> Option<&ItemVocab> {
        self.model.categories.as_ref()
    }
    fn top_items(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u32, f32)>> {
        match &self.index {
            Some(index) => queries.iter().map(|q| index.top_k(q, k)).collect(),
            None => OnlineModel::top_items(&self.model, queries, k),
        }
    }
    fn item_index(&self) -> Option<String> {
        self.index.as_ref().map(ItemSearch::describe)
    }
}

/// How a model on the CPU ranks its item head's vocabulary (`scorer.item_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemRanking {
    /// Every item scored: the exact top k.
    #[default]
    Exact,
    /// Through a graph index ([`super::graph_index`]) when the vocabulary has at least
    /// [`IndexConfig::min_items`] items: approximate, a few times faster on a large catalogue.
    Graph,
}

impl ItemRanking {
    /// Links per item of the served graph (the degree measured in docs/models.md).
    pub const GRAPH_DEGREE: usize = 16;

    /// The index to serve through (`None`: the exact scan); `ef` is the graph search's beam width.
    pub fn index_config(self, ef: usize) -> Option<IndexConfig> {
        match self {
            ItemRanking::Exact => None,
            ItemRanking::Graph => Some(IndexConfig {
                graph_degree: Self::GRAPH_DEGREE,
                graph_ef: ef.max(1),
                ..IndexConfig::default()
            }),
        }
    }
}

/// Where a model runs (`scorer.device`: `"cpu"` or `"cuda"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnlineDevice {
    /// Burn's `flex` CPU backend.
    #[default]
    Cpu,
    /// burn-cuda, first GPU (needs the `cuda` feature).
    Cuda,
}

/// What the scorer does when `scorer.device = "cuda"` and no CUDA device can be used
/// (`scorer.device_fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceFallback {
    /// Refuse to start, with the reason (the default: a GPU deployment that silently runs on
    /// CPU is usually a mistake).
    #[default]
    Fail,
    /// Run on the CPU backend, log a warning and raise `clickpath_model_device_fallback`.
    Cpu,
}

/// Checks that `device` can run models in this build on this machine: always for the CPU;
/// for CUDA, a build with the `cuda` feature and a working GPU ([`super::probe_cuda`]).
pub fn check_device(device: OnlineDevice) -> Result<(), crate::ModelError> {
    match device {
        OnlineDevice::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        OnlineDevice::Cuda => super::probe_cuda(),
        #[cfg(not(feature = "cuda"))]
        OnlineDevice::Cuda => Err(no_cuda_build()),
    }
}

#[cfg(not(feature = "cuda"))]
fn no_cuda_build() -> crate::ModelError {
    crate::ModelError::InvalidConfig(
        "scorer.device = \"cuda\" needs a build with the `cuda` feature".into(),
    )
}

/// Loads the sequence model in `dir` for online scoring on `device`.
pub fn load_online(
    dir: &std::path::Path,
    spec: &clickpath_core::FeatureSpec,
    device: OnlineDevice,
    index: Option<&IndexConfig>,
) -> Result<(Box<dyn OnlineModel>, super::SequenceMeta), crate::ModelError> {
    match device {
        OnlineDevice::Cpu => {
            let (m, meta) =
                super::load_sequence::<super::CpuBackend>(dir, spec, &Default::default())?;
            let served: Box<dyn OnlineModel> = match index {
                Some(cfg) => Box::new(IndexedModel::new(m, cfg)),
                None => Box::new(m),
            };
            Ok((served, meta))
        }
        #[cfg(feature = "cuda")]
        OnlineDevice::Cuda => {
            super::probe_cuda()?;
            let (m, meta) =
                super::load_sequence::<super::CudaBackend>(dir, spec, &Default::default())?;
            Ok((Box::new(m), meta))
        }
        #[cfg(not(feature = "cuda"))]
        OnlineDevice::Cuda => Err(no_cuda_build()),
    }
}
