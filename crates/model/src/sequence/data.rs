//! Sessions as sequences of encoded steps with per-step labels, and padded label tensors.

use std::collections::HashMap;

use burn::prelude::*;

use super::encode::{Buckets, Normalizer, Step, encode_example};
use crate::dataset::Example;
use crate::recommend::ItemVocab;

/// One session: its encoded steps and, per step, the purchase label and next action.
#[derive(Debug, Clone)]
pub struct Sequence<'a> {
    /// The examples, in event-time order.
    pub examples: Vec<&'a Example>,
    /// Encoded steps, one per example.
    pub steps: Vec<Step>,
    /// Per step, the vocabulary index of [`Example::next_new_item`] (`None`: no target, or an
    /// item out of vocabulary, or no vocabulary).
    pub next_items: Vec<Option<u32>>,
    /// Per step, the category vocabulary index of [`Example::next_new_category`] (`None` as for
    /// items).
    pub next_categories: Vec<Option<u32>>,
}

impl Sequence<'_> {
    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the sequence has no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The vocabularies a model's heads name (`None`: the model has no such head).
#[derive(Debug, Clone, Copy, Default)]
pub struct Vocabs<'a> {
    /// The item head's items.
    pub items: Option<&'a ItemVocab>,
    /// The category head's categories.
    pub categories: Option<&'a ItemVocab>,
}

/// Groups `examples` (event-time order) into per-session sequences, in order of first event;
/// next-item and next-category targets are looked up in `vocabs`.
pub fn sequences<'a>(
    examples: &[&'a Example],
    buckets: Buckets<'_>,
    norm: &Normalizer,
    vocabs: Vocabs<'_>,
) -> Vec<Sequence<'a>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Sequence<'a>> = Vec::new();
    for ex in examples {
        let i = *index.entry(ex.session_key.as_str()).or_insert_with(|| {
            out.push(Sequence {
                examples: Vec::new(),
                steps: Vec::new(),
                next_items: Vec::new(),
                next_categories: Vec::new(),
            });
            out.len() - 1
        });
        out[i].examples.push(ex);
        out[i].steps.push(encode_example(buckets, norm, ex));
        let look_up = |v: Option<&ItemVocab>, target: &Option<String>| {
            v.zip(target.as_deref()).and_then(|(v, t)| v.get(t))
        };
        out[i]
            .next_items
            .push(look_up(vocabs.items, &ex.next_new_item));
        out[i]
            .next_categories
            .push(look_up(vocabs.categories, &ex.next_new_category));
    }
    out
}

/// Per-step targets of a padded batch.
#[derive(Debug, Clone)]
pub struct Targets<B: Backend> {
    /// 1 where the session goes on to a purchase `[batch, time]`.
    pub purchase: Tensor<B, 2>,
    /// 1 on the steps scored for purchase, 0 on the session's first purchase, the steps after it
    /// and padding `[batch, time]`.
    pub mask: Tensor<B, 2>,
    /// Next action index `[batch, time, 1]` (0 where there is none).
    pub next: Tensor<B, 3, Int>,
    /// 1 where there is a next action `[batch, time]`.
    pub next_mask: Tensor<B, 2>,
}

impl<B: Backend> Targets<B> {
    /// Targets of `batch`, padded to `len` steps.
    pub fn of(batch: &[&Sequence<'_>], len: usize, device: &B::Device) -> Self {
        let b = batch.len();
        let mut purchase = vec![0f32; b * len];
        let mut mask = vec![0f32; b * len];
        let mut next = vec![0i32; b * len];
        let mut next_mask = vec![0f32; b * len];
        for (i, seq) in batch.iter().enumerate() {
            for (t, ex) in seq.examples.iter().take(len).enumerate() {
                let at = i * len + t;
                // The session's purchase step teaches the next action only.
                mask[at] = f32::from(u8::from(ex.scored_for_purchase()));
                purchase[at] = f32::from(u8::from(ex.purchase));
                if let Some(n) = ex.next_action {
                    next[at] = n.index() as i32;
                    next_mask[at] = 1.0;
                }
            }
        }
        Targets {
            purchase: Tensor::from_data(TensorData::new(purchase, [b, len]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, len]), device),
            next: Tensor::from_data(TensorData::new(next, [b, len, 1]), device),
            next_mask: Tensor::from_data(TensorData::new(next_mask, [b, len]), device),
        }
    }
}

/// Next-item targets of a padded batch, flattened: the positions (`i * len + t`) that have a
/// target and the targets' vocabulary indices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemTargets {
    /// Flattened positions with a target.
    pub positions: Vec<i32>,
    /// Vocabulary index of each position's target.
    pub items: Vec<i32>,
}

impl ItemTargets {
    /// The next-item targets of `batch`, padded to `len` steps.
    pub fn of(batch: &[&Sequence<'_>], len: usize) -> Self {
        Self::from(batch, len, |s| &s.next_items)
    }

    /// The next-category targets of `batch` (vocabulary indices of the categories).
    pub fn categories_of(batch: &[&Sequence<'_>], len: usize) -> Self {
        Self::from(batch, len, |s| &s.next_categories)
    }

    fn from<'s>(
        batch: &[&'s Sequence<'_>],
        len: usize,
        targets: impl Fn(&'s Sequence<'_>) -> &'s [Option<u32>],
    ) -> Self {
        let mut out = ItemTargets::default();
        for (i, seq) in batch.iter().enumerate() {
            for (t, target) in targets(seq).iter().take(len).enumerate() {
                if let Some(item) = target {
                    out.positions.push((i * len + t) as i32);
                    out.items.push(*item as i32);
                }
            }
        }
        out
    }
}
