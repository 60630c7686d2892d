//! Next-item recommendation: item sessions from click events, an item vocabulary, the baselines
//! ([`baselines`]: popularity, item co-occurrence KNN, first-order item Markov chain) and their
//! evaluation with the session-based protocol of GRU4Rec and SR-GNN ([`evaluate_next_item`]).
//!
//! Protocol, as in those papers with two stated differences:
//! - sessions are the sessionizer's (from [`assign_sessions`]), split by start time with the same
//!   [`SplitConfig`] as the purchase models (70 / 15 / 15); every model fits on the training part;
//! - a session's items are the `item_id`s of its events in time order, with immediate repeats
//!   collapsed (a view, then an add-to-cart of the same item is one step: recommending the item on
//!   screen is useless);
//! - the vocabulary holds training items seen at least `min_item_count` times (SR-GNN uses 5);
//!   rarer and unseen items are out of vocabulary: they may appear in a prefix, but a next item out
//!   of vocabulary is not a test case (no model could name it);
//! - for every test session and every position `t`, the items up to `t` are the input and item
//!   `t + 1` the target; Recall@k is the share of targets in the top `k`, MRR@k the mean
//!   reciprocal rank (0 outside the top `k`). Ties rank by vocabulary index (most popular first),
//!   so results are deterministic;
//! - the item at `t` (on screen) is left out of every model's list ([`without_current`]): the
//!   target differs from it by construction, so the list is the best `k` of the other items. (The
//!   sequence models' item head, which scores every event, leaves out the event's own item.)
//!
//! **Categories.** Where items are too sparse to learn (most of a catalogue seen a few times), the
//! same protocol runs one level up: [`category_sessions`] are the sessions' categories in time
//! order (immediate repeats collapsed, so the target is the next *other* category), with their own
//! vocabulary, baselines and sequence-model head ([`Recommend::Categories`]).

pub mod baselines;

use std::collections::HashMap;

use clickpath_core::{SessionConfig, assign_sessions};
use clickpath_schema::ClickEvent;
use serde::{Deserialize, Serialize};

use crate::dataset::SplitConfig;
use crate::error::ModelError;

/// One session's items in time order (immediate repeats collapsed).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemSession {
    /// Session key from [`assign_sessions`].
    pub key: String,
    /// Event time of the session's first event (ms).
    pub start: i64,
    /// Item ids in time order.
    pub items: Vec<String>,
}

/// The item sessions of `events` (any order), sorted by `(start, key)`. Sessions with no item
/// are kept (with no items), so the split by start time ranks the same sessions as the purchase
/// data's ([`crate::Dataset::split`]) and both evaluations use the same test sessions.
pub fn item_sessions(events: &[ClickEvent], session: &SessionConfig) -> Vec<ItemSession> {
    sessions_of(events, session, |ev| ev.item_id.as_deref())
}

/// The category sessions of `events`: as [`item_sessions`], with each event's category in place
/// of its item (an [`ItemSession`]'s `items` are then categories).
pub fn category_sessions(events: &[ClickEvent], session: &SessionConfig) -> Vec<ItemSession> {
    sessions_of(events, session, |ev| ev.category.as_deref())
}

/// What a recommendation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommend {
    /// The next item (`ClickEvent::item_id`).
    Items,
    /// The next category (`ClickEvent::category`).
    Categories,
}

impl Recommend {
    /// The sessions of `events` as sequences of what is recommended.
    pub fn sessions(self, events: &[ClickEvent], session: &SessionConfig) -> Vec<ItemSession> {
        match self {
            Recommend::Items => item_sessions(events, session),
            Recommend::Categories => category_sessions(events, session),
        }
    }

    /// "item" or "category", for messages and tables.
    pub fn noun(self) -> &'static str {
        match self {
            Recommend::Items => "item",
            Recommend::Categories => "category",
        }
    }
}

fn sessions_of(
    events: &[ClickEvent],
    session: &SessionConfig,
    field: impl Fn(&ClickEvent) -> Option<&str>,
) -> Vec<ItemSession> {
    let keys = assign_sessions(events, session);
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].event_time);
    let mut by_key: HashMap<&str, ItemSession> = HashMap::new();
    for i in order {
        let ev = &events[i];
        let s = by_key
            .entry(keys[i].as_str())
            .or_insert_with(|| ItemSession {
                key: keys[i].clone(),
                start: ev.event_time,
                items: Vec::new(),
            });
        if let Some(item) = field(ev).filter(|s| !s.is_empty())
            && s.items.last().map(String::as_str) != Some(item)
        {
            s.items.push(item.to_string());
        }
    }
    let mut out: Vec<ItemSession> = by_key.into_values().collect();
    out.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
    out
}

/// Train / validation / test item sessions by start time (`sessions` sorted as
/// [`item_sessions`] returns them).
pub fn split_sessions<'a>(
    sessions: &'a [ItemSession],
    cfg: &SplitConfig,
) -> Result<[&'a [ItemSession]; 3], ModelError> {
    cfg.validate()?;
    let n = sessions.len();
    let train_end = (cfg.train_fraction * n as f64).round() as usize;
    let validation_end =
        (((cfg.train_fraction + cfg.validation_fraction) * n as f64).round() as usize).min(n);
    Ok([
        &sessions[..train_end],
        &sessions[train_end..validation_end],
        &sessions[validation_end..],
    ])
}

/// Items seen often enough in training, indexed by popularity (index 0 is the most frequent;
/// ties by id), so "lower index" is the deterministic tie-break everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredVocab")]
pub struct ItemVocab {
    /// Item ids by index.
    pub items: Vec<String>,
    /// Training occurrences by index.
    pub counts: Vec<u64>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

/// What an artifact stores of a vocabulary (the index is rebuilt on load).
#[derive(Deserialize)]
struct StoredVocab {
    items: Vec<String>,
    counts: Vec<u64>,
}

impl From<StoredVocab> for ItemVocab {
    fn from(v: StoredVocab) -> Self {
        ItemVocab::from_parts(v.items, v.counts)
    }
}

impl ItemVocab {
    /// Items occurring at least `min_count` times in `sessions`.
    pub fn fit(sessions: &[ItemSession], min_count: u64) -> Self {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for s in sessions {
            for item in &s.items {
                *counts.entry(item.as_str()).or_default() += 1;
            }
        }
        let mut kept: Vec<(&str, u64)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count.max(1))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::from_parts(
            kept.iter().map(|(i, _)| i.to_string()).collect(),
            kept.iter().map(|(_, c)| *c).collect(),
        )
    }

    /// A vocabulary from its stored parts (items by index and their counts).
    pub fn from_parts(items: Vec<String>, counts: Vec<u64>) -> Self {
        let index = items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.clone(), i as u32))
            .collect();
        ItemVocab {
            items,
            counts,
            index,
        }
    }

    /// The `n` most popular items of this vocabulary.
    pub fn truncated(self, n: usize) -> Self {
        if self.items.len() <= n {
            return self;
        }
        let (mut items, mut counts) = (self.items, self.counts);
        items.truncate(n);
        counts.truncate(n);
        Self::from_parts(items, counts)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item made it.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The item id of vocabulary index `index`.
    pub fn item(&self, index: u32) -> Option<&str> {
        self.items.get(index as usize).map(String::as_str)
    }

    /// Index of `item`; `None` out of vocabulary.
    pub fn get(&self, item: &str) -> Option<u32> {
        self.index.get(item).copied()
    }

    /// A session's items as indices (`None` out of vocabulary).
    pub fn encode(&self, session: &ItemSession) -> Vec<Option<u32>> {
        session.items.iter().map(|i| self.get(i)).collect()
    }
}

/// A next-item recommender.
pub trait NextItem {
    /// Name for tables.
    fn name(&self) -> String;
    /// The `k` best next items after the session prefix `history` (vocabulary indices, `None`
    /// for items out of vocabulary), best first.
    fn recommend(&self, history: &[Option<u32>], k: usize) -> Vec<u32>;
}

/// Quality of next-item recommendations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecMetrics {
    /// Model name.
    pub model: String,
    /// List length `k`.
    pub k: usize,
    /// Test cases: positions whose next item is in the vocabulary.
    pub cases: usize,
    /// Share of targets in the top `k`.
    pub recall: f64,
    /// Mean reciprocal rank of the target, 0 outside the top `k`.
    pub mrr: f64,
}

/// `list` (best first) without the item on screen, `k` long: the target is the next *new* item,
/// so recommending the current one wastes a slot. Ask the model for `k + 1` items. Every model
/// (the baselines and the sequence model's item head, offline and online) ranks this way.
pub fn without_current<T>(
    list: Vec<T>,
    item: impl Fn(&T) -> u32,
    current: Option<u32>,
    k: usize,
) -> Vec<T> {
    let mut out: Vec<T> = list
        .into_iter()
        .filter(|x| Some(item(x)) != current)
        .collect();
    out.truncate(k);
    out
}

/// Evaluates `model` on every position of every test session (see the module docs).
pub fn evaluate_next_item(
    model: &dyn NextItem,
    vocab: &ItemVocab,
    test: &[ItemSession],
    k: usize,
) -> RecMetrics {
    let (mut cases, mut hits, mut rr) = (0usize, 0usize, 0.0f64);
    for session in test {
        let encoded = vocab.encode(session);
        for t in 1..encoded.len() {
            let Some(target) = encoded[t] else { continue };
            cases += 1;
            let top = without_current(
                model.recommend(&encoded[..t], k + 1),
                |&i| i,
                encoded[t - 1],
                k,
            );
            if let Some(rank) = top.iter().position(|&i| i == target) {
                hits += 1;
                rr += 1.0 / (rank + 1) as f64;
            }
        }
    }
    let share = |x: f64| if cases == 0 { 0.0 } else { x / cases as f64 };
    RecMetrics {
        model: model.name(),
        k,
        cases,
        recall: share(hits as f64),
        mrr: share(rr),
    }
}

/// Default length of the next-category lists evaluated (a catalogue has far fewer categories than
/// items, and a page shows a few).
pub const CATEGORY_K: usize = 5;

/// Options of [`compare_baselines`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecommendConfig {
    /// Session rules. Default: core's.
    pub session: SessionConfig,
    /// Time-based split. Default 70 / 15 / 15 by session start.
    pub split: SplitConfig,
    /// Least training occurrences for an item to be in the vocabulary. Default 5 (SR-GNN).
    pub min_item_count: u64,
    /// List length. Default 20.
    pub k: usize,
    /// Least training occurrences for a category to be in the category vocabulary. Default 5.
    pub min_category_count: u64,
    /// List length of the next-category evaluation. Default [`CATEGORY_K`].
    pub category_k: usize,
}

impl Default for RecommendConfig {
    fn default() -> Self {
        RecommendConfig {
            session: SessionConfig::default(),
            split: SplitConfig::default(),
            min_item_count: 5,
            k: 20,
            min_category_count: 5,
            category_k: CATEGORY_K,
        }
    }
}

/// The baselines fitted on the training sessions of `events` and evaluated on the test sessions,
/// recommending from `vocab` when given (a model's, so that both have the same test cases) or
/// else from the training items seen `cfg.min_item_count` times.
pub fn compare_baselines(
    events: &[ClickEvent],
    cfg: &RecommendConfig,
    vocab: Option<&ItemVocab>,
) -> Result<Vec<RecMetrics>, ModelError> {
    compare_baselines_of(Recommend::Items, events, cfg, vocab)
}

/// [`compare_baselines`] for items or categories: categories use `cfg.min_category_count` and
/// lists of `cfg.category_k`.
pub fn compare_baselines_of(
    what: Recommend,
    events: &[ClickEvent],
    cfg: &RecommendConfig,
    vocab: Option<&ItemVocab>,
) -> Result<Vec<RecMetrics>, ModelError> {
    let (min_count, k) = match what {
        Recommend::Items => (cfg.min_item_count, cfg.k),
        Recommend::Categories => (cfg.min_category_count, cfg.category_k),
    };
    let sessions = what.sessions(events, &cfg.session);
    let [train, _, test] = split_sessions(&sessions, &cfg.split)?;
    let vocab = vocab
        .cloned()
        .unwrap_or_else(|| ItemVocab::fit(train, min_count));
    let noun = what.noun();
    if vocab.is_empty() {
        return Err(ModelError::InsufficientData(format!(
            "no {noun} occurs {min_count} times in the {} training sessions",
            train.len()
        )));
    }
    let cases: usize = test
        .iter()
        .map(|s| {
            vocab
                .encode(s)
                .iter()
                .skip(1)
                .filter(|i| i.is_some())
                .count()
        })
        .sum();
    if cases == 0 {
        return Err(ModelError::InsufficientData(format!(
            "none of the {} test sessions has a next {noun} in the vocabulary",
            test.len()
        )));
    }
    let models: Vec<Box<dyn NextItem>> = vec![
        Box::new(baselines::Popularity::fit(&vocab)),
        Box::new(baselines::ItemKnn::fit(&vocab, train)),
        Box::new(baselines::ItemMarkov::fit(&vocab, train)),
    ];
    Ok(models
        .iter()
        .map(|m| {
            let mut row = evaluate_next_item(m.as_ref(), &vocab, test, k);
            // The same baselines one level up: name them by what they recommend.
            if what == Recommend::Categories {
                row.model = row.model.replacen("item", "category", 1);
            }
            row
        })
        .collect())
}

#[cfg(test)]
mod tests;
