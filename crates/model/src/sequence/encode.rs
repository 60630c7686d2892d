//! What one event is to a sequence model: its type, its hashed item and category, and the
//! windower's features, normalised with statistics of the training data.

// FNV-1a, the workspace's one implementation: stable, so buckets mean the same in training and
// serving.
use clickpath_core::hash::fnv1a;
use clickpath_schema::{EventType, FeatureValues};
use serde::{Deserialize, Serialize};

use crate::dataset::Example;
use crate::recommend::ItemVocab;

/// Number of event types (the size of the type embedding and of the next-action head).
pub const EVENT_TYPES: usize = EventType::ALL.len();

/// Bucket of an optional id among `buckets` (>= 2): 0 means "absent", the rest are hashed.
pub fn bucket(value: Option<&str>, buckets: usize) -> u32 {
    match value {
        Some(v) if !v.is_empty() && buckets > 1 => (1 + fnv1a(v) % (buckets as u64 - 1)) as u32,
        _ => 0,
    }
}

/// Per-feature affine normalisation after a signed log transform (counts and money are
/// heavy-tailed): `(sign(x) ln(1 + |x|) - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    /// Feature names, in input order.
    pub names: Vec<String>,
    /// Mean of each transformed feature on the training data.
    pub mean: Vec<f32>,
    /// Standard deviation of each transformed feature (at least 1e-3).
    pub std: Vec<f32>,
}

fn squash(x: f64) -> f64 {
    if x.is_finite() {
        x.signum() * x.abs().ln_1p()
    } else {
        0.0
    }
}

impl Normalizer {
    /// Fits mean and standard deviation of every named feature over `rows`.
    pub fn fit<'a>(names: &[String], rows: impl Iterator<Item = &'a FeatureValues>) -> Self {
        let k = names.len();
        let (mut sum, mut sq, mut n) = (vec![0.0f64; k], vec![0.0f64; k], 0usize);
        for row in rows {
            n += 1;
            for (i, name) in names.iter().enumerate() {
                let x = squash(row.get(name).copied().unwrap_or(0.0));
                sum[i] += x;
                sq[i] += x * x;
            }
        }
        let n = n.max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n - m * m).max(0.0).sqrt()).max(1e-3) as f32)
            .collect();
        Normalizer {
            names: names.to_vec(),
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no features.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Appends the normalised features of `values` to `out`; a missing or non-finite feature
    /// counts as 0 before the transform.
    pub fn apply(&self, values: &FeatureValues, out: &mut Vec<f32>) {
        for (i, name) in self.names.iter().enumerate() {
            let x = squash(values.get(name).copied().unwrap_or(0.0)) as f32;
            out.push((x - self.mean[i]) / self.std[i]);
        }
    }
}

/// One event, encoded for the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// [`EventType::index`].
    pub event_type: u32,
    /// Category bucket (0: none).
    pub category: u32,
    /// Item bucket, or the item's vocabulary index + 1 for a model whose item input is its
    /// vocabulary (0: none, or out of vocabulary).
    pub item: u32,
    /// Normalised numeric features.
    pub numeric: Vec<f32>,
}

/// How ids become embedding rows: hashed buckets, and for items the vocabulary when the model
/// embeds items by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets<'a> {
    /// Category buckets.
    pub categories: usize,
    /// Item buckets (unused with `vocab`).
    pub items: usize,
    /// The item vocabulary, for a model whose item input is by vocabulary index.
    pub vocab: Option<&'a ItemVocab>,
}

impl<'a> Buckets<'a> {
    /// How a network of shape `net` encodes ids; `vocab` is its item head's vocabulary.
    pub fn of(net: &super::NetConfig, vocab: Option<&'a ItemVocab>) -> Self {
        Buckets {
            categories: net.category_buckets,
            items: net.item_buckets,
            vocab: vocab.filter(|_| net.item_input == super::ItemInput::Vocabulary),
        }
    }

    /// The embedding row of an optional item (0: none, or out of vocabulary).
    pub fn item(&self, item: Option<&str>) -> u32 {
        match self.vocab {
            Some(v) => item.and_then(|i| v.get(i)).map_or(0, |i| i + 1),
            None => bucket(item, self.items),
        }
    }
}

/// Encodes one event.
pub fn encode_step(
    buckets: Buckets<'_>,
    norm: &Normalizer,
    event_type: EventType,
    item: Option<&str>,
    category: Option<&str>,
    values: &FeatureValues,
) -> Step {
    let mut numeric = Vec::with_capacity(norm.len());
    norm.apply(values, &mut numeric);
    Step {
        event_type: event_type.index() as u32,
        category: bucket(category, buckets.categories),
        item: buckets.item(item),
        numeric,
    }
}

/// Encodes a training example's event.
pub fn encode_example(buckets: Buckets<'_>, norm: &Normalizer, ex: &Example) -> Step {
    encode_step(
        buckets,
        norm,
        ex.event_type(),
        ex.item_id.as_deref(),
        ex.category.as_deref(),
        &ex.features.values,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_reserve_zero_for_absent() {
        assert_eq!(bucket(None, 64), 0);
        assert_eq!(bucket(Some(""), 64), 0);
        let b = bucket(Some("item-42"), 64);
        assert!((1..64).contains(&b));
        assert_eq!(b, bucket(Some("item-42"), 64));
        // FNV-1a of "a" is a published test vector: 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn vocabulary_items_take_their_index_plus_one_and_the_rest_row_zero() {
        let vocab = ItemVocab::from_parts(vec!["a".into(), "b".into()], vec![5, 3]);
        let by_vocab = Buckets {
            categories: 8,
            items: 64,
            vocab: Some(&vocab),
        };
        assert_eq!(by_vocab.item(Some("a")), 1);
        assert_eq!(by_vocab.item(Some("b")), 2);
        assert_eq!(by_vocab.item(Some("unseen")), 0);
        assert_eq!(by_vocab.item(None), 0);
        let hashed = Buckets {
            vocab: None,
            ..by_vocab
        };
        assert_eq!(hashed.item(Some("a")), bucket(Some("a"), 64));
    }

    #[test]
    fn normalizer_centres_and_scales_and_tolerates_bad_values() {
        let names = vec!["x".to_string(), "y".to_string()];
        let rows: Vec<FeatureValues> = (0..100)
            .map(|i| FeatureValues::from([("x".to_string(), i as f64)]))
            .collect();
        let norm = Normalizer::fit(&names, rows.iter());
        let mut all = Vec::new();
        for r in &rows {
            norm.apply(r, &mut all);
        }
        let xs: Vec<f32> = all.iter().step_by(2).copied().collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 1e-4, "mean {mean}");
        // The constant (missing) feature stays finite.
        assert!(all.iter().skip(1).step_by(2).all(|v| *v == 0.0));
        let mut out = Vec::new();
        norm.apply(
            &FeatureValues::from([("x".to_string(), f64::NAN)]),
            &mut out,
        );
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
