//! A trained sequence model ready to score: the network, its shape and its input normaliser.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::blend::PurchaseBlend;
use super::data::Sequence;
use super::encode::{Buckets, EVENT_TYPES, Normalizer, Step};
use super::net::{Architecture, NetConfig, SequenceNet, StepTensors};
use crate::recommend::ItemVocab;

/// What a sequence model says after one event.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Probability that the session goes on to a purchase.
    pub purchase: f64,
    /// Probability of each next event type, by [`clickpath_schema::EventType::index`].
    pub next: Vec<f64>,
    /// The item head's query after the event (score it with [`SequenceModel::top_scored_items`]); empty
    /// without an item head, and from offline scoring ([`SequenceModel::score_steps`]).
    pub item_query: Vec<f32>,
    /// The category head's logits after the event, by category vocabulary index; empty without a
    /// category head, and from offline scoring.
    pub categories: Vec<f32>,
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
    /// Items the item head recommends (vocabulary index = output row); `None` without one.
    pub items: Option<ItemVocab>,
    /// Categories the category head recommends (vocabulary index = logit); `None` without one.
    pub categories: Option<ItemVocab>,
    /// Stacks the network's purchase logit with a logistic regression on the step's numeric inputs
    /// (`super::blend`); `None`: the network's purchase head alone.
    pub blend: Option<PurchaseBlend>,
    /// Device the network lives on.
    pub device: B::Device,
}

/// Sums of next-item quality over test cases ([`SequenceModel::item_eval`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ItemEval {
    /// Cases scored.
    pub cases: usize,
    /// Targets in the top `k`.
    pub hits: usize,
    /// Sum of `1 / rank` over targets in the top `k`.
    pub reciprocal_ranks: f64,
    /// Sum of `-ln p(target)` under the full softmax over the vocabulary.
    pub cross_entropy: f64,
}

impl ItemEval {
    /// Counts one case: `scores` of the whole vocabulary, the `target`'s index and log
    /// probability, the `current` index left out of the top `k`.
    fn add(&mut self, scores: &[f32], target: u32, current: Option<u32>, k: usize, log_p: f64) {
        self.cases += 1;
        self.cross_entropy -= log_p;
        let top = crate::recommend::without_current(top_k(scores, k + 1), |&j| j, current, k);
        if let Some(rank) = top.iter().position(|&j| j == target) {
            self.hits += 1;
            self.reciprocal_ranks += 1.0 / (rank + 1) as f64;
        }
    }
}

/// Queries scored against the whole vocabulary per tensor call.
const QUERY_CHUNK: usize = 512;

/// Items per block when a GPU backend ranks items ([`SequenceModel::top_scored_items_by_blocks`]).
const RANK_BLOCK: usize = 64;

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
            items: None,
            categories: None,
            blend: None,
            config,
            device,
        }
    }

    /// The purchase probability of a step whose network purchase logit is `logit` (the blend applied
    /// when the model has one).
    pub fn purchase_probability(&self, logit: f32, step: &Step) -> f64 {
        let l = f64::from(logit);
        let l = self.blend.as_ref().map_or(l, |b| b.logit(l, &step.numeric));
        crate::logistic::sigmoid(l)
    }

    /// How this model's steps encode ids (hashed buckets; the vocabulary for its item input).
    pub fn buckets(&self) -> Buckets<'_> {
        Buckets::of(&self.config, self.items.as_ref())
    }

    /// The vocabularies of this model's heads, for [`super::data::sequences`].
    pub fn vocabs(&self) -> super::data::Vocabs<'_> {
        super::data::Vocabs {
            items: self.items.as_ref(),
            categories: self.categories.as_ref(),
        }
    }

    /// The category head's logits after every step of every sequence, computed like
    /// [`SequenceModel::score_steps`]; empty vectors for a model without a category head.
    pub fn category_logits(&self, seqs: &[&[Step]]) -> Vec<Vec<Vec<f32>>> {
        if !self.net.has_category_head() {
            return seqs.iter().map(|s| vec![Vec::new(); s.len()]).collect();
        }
        let width = self.config.category_vocab;
        self.per_step(seqs, |batch| {
            self.head_rows(batch, width, |out| out.category)
        })
    }

    /// Next-category quality on every step of `seqs` with a target in the category vocabulary: the
    /// best `k` categories other than the last one seen in the session (as
    /// [`crate::recommend::without_current`] ranks, and the baselines leave out the last category of
    /// their history), ties by vocabulary index; `None` without a category head.
    pub fn category_eval(&self, seqs: &[Sequence<'_>], k: usize) -> Option<ItemEval> {
        let vocab = self.categories.as_ref()?;
        let steps: Vec<&[Step]> = seqs.iter().map(|s| s.steps.as_slice()).collect();
        let mut e = ItemEval::default();
        for (seq, logits) in seqs.iter().zip(self.category_logits(&steps)) {
            // The category left out is the last one seen: a step without a category (a search, a
            // checkout) keeps the one before, which the target differs from by definition.
            let mut last = None;
            for ((target, row), ex) in seq.next_categories.iter().zip(logits).zip(&seq.examples) {
                // As the dataset's targets: an empty category is none.
                last = ex.category.as_deref().filter(|c| !c.is_empty()).or(last);
                let Some(target) = *target else { continue };
                let Some(&logit) = row.get(target as usize) else {
                    continue;
                };
                let current = last.and_then(|c| vocab.get(c));
                let log_p = f64::from(logit) - log_sum_exp(&row);
                e.add(&row, target, current, k, log_p);
            }
        }
        Some(e)
    }

    /// Step outputs of a whole batch of step sequences, each scored from an empty state.
    /// Sequences longer than the Transformer's window are scored with a sliding window, as the
    /// scorer does online.
    pub fn score_steps(&self, seqs: &[&[Step]]) -> Vec<Vec<StepOutput>> {
        self.per_step(seqs, |batch| self.forward_batch(batch))
    }

    /// The item head's query vector after every step of every sequence, computed like
    /// [`SequenceModel::score_steps`]; empty vectors for a model without an item head.
    pub fn item_queries(&self, seqs: &[&[Step]]) -> Vec<Vec<Vec<f32>>> {
        if !self.net.has_item_head() {
            return seqs.iter().map(|s| vec![Vec::new(); s.len()]).collect();
        }
        self.per_step(seqs, |batch| self.query_batch(batch))
    }

    /// The `k` best vocabulary items for each query (`[rows][item_head_width]`), best first;
    /// equal scores rank by vocabulary index (the more popular item first).
    ///
    /// # Panics
    /// On a model without an item head.
    pub fn top_items(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<u32>> {
        self.top_scored_items(queries, k)
            .into_iter()
            .map(|row| row.into_iter().map(|(i, _)| i).collect())
            .collect()
    }

    /// Like [`SequenceModel::top_items`], with each item's score (the logit: its dot product with
    /// the query plus its bias). Exact: every item of the vocabulary is scored, one matrix product per
    /// [`QUERY_CHUNK`] queries. On the CPU the scores are ranked as they are; on a GPU backend
    /// ([`SequenceModel::ranks_on_device`]) only the maximum of each block of items and then the best
    /// blocks' scores come back to the host ([`SequenceModel::top_scored_items_by_blocks`]).
    ///
    /// # Panics
    /// On a model without an item head.
    pub fn top_scored_items(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u32, f32)>> {
        if self.ranks_on_device() {
            return self.top_scored_items_by_blocks(queries, k);
        }
        let vocab = self.config.item_vocab;
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(QUERY_CHUNK) {
            let scores: Vec<f32> = self
                .vocab_scores(chunk)
                .into_data()
                .into_vec()
                .unwrap_or_default();
            out.extend(scores.chunks(vocab).map(|row| top_k_scored(row, k)));
        }
        out
    }

    /// Whether item ranking should reduce the scores on the device before reading them back: on a GPU
    /// backend (CubeCL), reading every user's whole row of scores costs far more than computing it.
    pub fn ranks_on_device(&self) -> bool {
        B::name(&self.device).contains("cubecl")
    }

    /// [`SequenceModel::top_scored_items`] with a reduction on the device: the scores are cut into
    /// blocks of [`RANK_BLOCK`] items; the host reads each block's maximum, keeps the `k` best blocks of
    /// each query (ties: lower block first) and reads only their scores. Exact, ties included: each of
    /// the true top `k` items lies in one of those blocks (a block left out has `k` better-ranked blocks
    /// in front of it, each holding an item ranked before any of its own).
    ///
    /// # Panics
    /// On a model without an item head.
    pub fn top_scored_items_by_blocks(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u32, f32)>> {
        let vocab = self.config.item_vocab;
        let blocks = vocab.div_ceil(RANK_BLOCK);
        let mut out = Vec::with_capacity(queries.len());
        if k == 0 {
            return vec![Vec::new(); queries.len()];
        }
        for chunk in queries.chunks(QUERY_CHUNK) {
            let rows = chunk.len();
            let mut scores = self.vocab_scores(chunk);
            let pad = blocks * RANK_BLOCK - vocab;
            if pad > 0 {
                let filler = Tensor::<B, 2>::full([rows, pad], f32::NEG_INFINITY, &self.device);
                scores = Tensor::cat(vec![scores, filler], 1);
            }
            let by_block = scores.reshape([rows, blocks, RANK_BLOCK]);
            let maxima: Vec<f32> = by_block
                .clone()
                .max_dim(2)
                .into_data()
                .into_vec()
                .unwrap_or_default();
            let keep = k.min(blocks);
            let mut chosen: Vec<Vec<u32>> = Vec::with_capacity(rows);
            let mut index = Vec::with_capacity(rows * keep * RANK_BLOCK);
            for row in maxima.chunks(blocks) {
                let best: Vec<u32> = top_k_scored(row, keep)
                    .into_iter()
                    .map(|(b, _)| b)
                    .collect();
                for &b in &best {
                    index.extend(std::iter::repeat_n(i64::from(b), RANK_BLOCK));
                }
                chosen.push(best);
            }
            let index = Tensor::<B, 3, Int>::from_data(
                TensorData::new(index, [rows, keep, RANK_BLOCK]),
                &self.device,
            );
            let picked: Vec<f32> = by_block
                .gather(1, index)
                .into_data()
                .into_vec()
                .unwrap_or_default();
            for (row, best) in picked.chunks(keep * RANK_BLOCK).zip(&chosen) {
                // Candidates in item order (blocks sorted), so ties keep the lower index.
                let mut candidates: Vec<(u32, f32)> = best
                    .iter()
                    .zip(row.chunks(RANK_BLOCK))
                    .flat_map(|(&b, scores)| {
                        scores
                            .iter()
                            .enumerate()
                            .map(move |(j, &s)| (b * RANK_BLOCK as u32 + j as u32, s))
                    })
                    .filter(|&(i, _)| (i as usize) < vocab)
                    .collect();
                candidates.sort_by_key(|&(i, _)| i);
                let (ids, values): (Vec<u32>, Vec<f32>) = candidates.into_iter().unzip();
                out.push(
                    top_k_scored(&values, k)
                        .into_iter()
                        .map(|(at, s)| (ids[at as usize], s))
                        .collect(),
                );
            }
        }
        out
    }

    /// Scores of every vocabulary item for each query: `[queries, item_vocab]`.
    fn vocab_scores(&self, queries: &[&[f32]]) -> Tensor<B, 2> {
        let width = self.config.item_head_width;
        let flat: Vec<f32> = queries.iter().flat_map(|q| q.iter().copied()).collect();
        let q =
            Tensor::<B, 2>::from_data(TensorData::new(flat, [queries.len(), width]), &self.device);
        self.net.all_item_scores(q)
    }

    /// Next-item quality of the queries against their targets (vocabulary indices): hits in the
    /// top `k` ranked without each query's current item (`current`, see
    /// [`crate::recommend::without_current`]), summed reciprocal ranks and the summed full-softmax
    /// cross-entropy (nats, over the whole vocabulary).
    ///
    /// # Panics
    /// On a model without an item head.
    pub fn item_eval(
        &self,
        queries: &[&[f32]],
        targets: &[u32],
        current: &[Option<u32>],
        k: usize,
    ) -> ItemEval {
        let vocab = self.config.item_vocab;
        let mut eval = ItemEval::default();
        for ((qs, ts), cs) in queries
            .chunks(QUERY_CHUNK)
            .zip(targets.chunks(QUERY_CHUNK))
            .zip(current.chunks(QUERY_CHUNK))
        {
            let scores = self.vocab_scores(qs);
            let log_p: Vec<f32> = burn::tensor::activation::log_softmax(scores.clone(), 1)
                .into_data()
                .into_vec()
                .unwrap_or_default();
            let scores: Vec<f32> = scores.into_data().into_vec().unwrap_or_default();
            for (i, (&t, &c)) in ts.iter().zip(cs).enumerate() {
                let row = &scores[i * vocab..(i + 1) * vocab];
                eval.add(row, t, c, k, f64::from(log_p[i * vocab + t as usize]));
            }
        }
        eval
    }

    /// Runs `batch_fn` over `seqs` in length-sorted batches (the Transformer over its window,
    /// then one sliding window per later step) and returns its per-step results in input order.
    fn per_step<T: Clone>(
        &self,
        seqs: &[&[Step]],
        batch_fn: impl Fn(&[&[Step]]) -> Vec<Vec<T>>,
    ) -> Vec<Vec<T>> {
        let window = self.config.window;
        let windowed = self.config.architecture == Architecture::Transformer;
        // Order by length so a batch pads little.
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut results: Vec<Option<Vec<T>>> = vec![None; seqs.len()];
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
            for (&i, s) in chunk.iter().zip(batch_fn(&batch)) {
                results[i] = Some(s);
            }
        }
        let mut out = Vec::with_capacity(seqs.len());
        for (i, r) in results.into_iter().enumerate() {
            let mut r = r.unwrap_or_default();
            if windowed && seqs[i].len() > window {
                // Each later step: the window ending at it, last position.
                for t in window..seqs[i].len() {
                    let slice = &seqs[i][t + 1 - window..=t];
                    if let Some(last) = batch_fn(&[slice]).pop().and_then(|mut v| v.pop()) {
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

    fn query_batch(&self, batch: &[&[Step]]) -> Vec<Vec<Vec<f32>>> {
        self.head_rows(batch, self.config.item_head_width, |out| out.item_query)
    }

    /// One head's output row (`width` floats) after every step of `batch`, from one forward pass.
    fn head_rows(
        &self,
        batch: &[&[Step]],
        width: usize,
        head: impl Fn(super::net::HeadOutputs<B>) -> Option<Tensor<B, 3>>,
    ) -> Vec<Vec<Vec<f32>>> {
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if len == 0 {
            return vec![Vec::new(); batch.len()];
        }
        let x = StepTensors::<B>::from_steps(batch, len, self.normalizer.len(), &self.device);
        let q: Vec<f32> = head(self.net.forward_heads(x))
            .map(|q| q.into_data().into_vec().unwrap_or_default())
            .unwrap_or_default();
        batch
            .iter()
            .enumerate()
            .map(|(i, seq)| {
                (0..seq.len())
                    .map(|t| {
                        let at = (i * len + t) * width;
                        q.get(at..at + width)
                            .map(<[f32]>::to_vec)
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect()
    }

    fn forward_batch(&self, batch: &[&[Step]]) -> Vec<Vec<StepOutput>> {
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if len == 0 {
            return vec![Vec::new(); batch.len()];
        }
        let x = StepTensors::<B>::from_steps(batch, len, self.normalizer.len(), &self.device);
        let (p, n) = self.net.forward(x);
        // Logits: the probability is computed per step, where the blend sees the step's inputs.
        let p: Vec<f32> = p.into_data().into_vec().unwrap_or_default();
        let n: Vec<f32> = softmax(n, 2).into_data().into_vec().unwrap_or_default();
        batch
            .iter()
            .enumerate()
            .map(|(i, seq)| {
                (0..seq.len())
                    .map(|t| {
                        let at = i * len + t;
                        StepOutput {
                            purchase: self.purchase_probability(p[at], &seq[t]),
                            next: n[at * EVENT_TYPES..(at + 1) * EVENT_TYPES]
                                .iter()
                                .map(|v| f64::from(*v))
                                .collect(),
                            item_query: Vec::new(),
                            categories: Vec::new(),
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// `ln Σ exp(x)`, computed stably.
fn log_sum_exp(xs: &[f32]) -> f64 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return f64::from(max);
    }
    let sum: f64 = xs.iter().map(|&x| f64::from(x - max).exp()).sum();
    f64::from(max) + sum.ln()
}

/// The `k` most probable entries of the softmax of `logits`, with their probabilities, best first,
/// ties by lower index (as [`top_k_scored`]).
pub fn top_k_probabilities(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let norm = log_sum_exp(logits);
    top_k_scored(logits, k)
        .into_iter()
        .map(|(i, l)| (i, (f64::from(l) - norm).exp()))
        .collect()
}

/// Indices of the `k` largest scores, best first, ties by lower index.
pub fn top_k(scores: &[f32], k: usize) -> Vec<u32> {
    top_k_scored(scores, k)
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// The `k` largest scores with their indices, best first, ties by lower index (in the order of
/// `f32::total_cmp`). One pass that keeps the best `k` sorted: after the first few, almost every score
/// is below the `k`-th and costs one comparison, so it is cheap for small `k` over a large vocabulary.
pub fn top_k_scored(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    use std::cmp::Ordering;
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &s) in scores.iter().enumerate() {
        if best.len() == k && s.total_cmp(&best[k - 1].1) != Ordering::Greater {
            // Not better than the k-th; an equal score keeps the earlier index.
            continue;
        }
        // After every kept score at least as large (those have lower indices).
        let at = best.partition_point(|&(_, b)| b.total_cmp(&s) != Ordering::Less);
        best.insert(at, (i as u32, s));
        best.truncate(k);
    }
    best
}
