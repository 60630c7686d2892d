//! Next-item baselines of the session-based recommendation literature (GRU4Rec, SR-GNN):
//! popularity, item-to-item KNN on session co-occurrence, and a first-order item Markov chain.
//! Item-KNN answers from the session's last in-vocabulary item, the Markov chain from the last
//! item when it is in the vocabulary; both fill the rest of the list with the most popular items.

use std::collections::{HashMap, HashSet};

use super::{ItemSession, ItemVocab, NextItem};

/// Neighbours kept per item by the item-to-item models (enough for any list length up to it).
pub const NEIGHBOURS: usize = 100;

/// Distinct items of a session (its first ones, in time order) whose co-occurrence pairs are
/// counted (a crawler's session of thousands of items would cost millions of pairs and says
/// little about any one of them).
pub const MAX_SESSION_ITEMS: usize = 50;

/// The `k` most popular items, whatever the session.
#[derive(Debug, Clone)]
pub struct Popularity {
    top: Vec<u32>,
}

impl Popularity {
    /// The items of `vocab` by popularity (its indices are in popularity order).
    pub fn fit(vocab: &ItemVocab) -> Self {
        Popularity {
            top: (0..vocab.len() as u32).collect(),
        }
    }
}

impl NextItem for Popularity {
    fn name(&self) -> String {
        "popularity".into()
    }

    fn recommend(&self, _history: &[Option<u32>], k: usize) -> Vec<u32> {
        self.top.iter().take(k).copied().collect()
    }
}

/// `list` (best first) followed by the most popular items not in it, `k` in all.
fn fill_with_popular(mut list: Vec<u32>, k: usize, popular: &[u32]) -> Vec<u32> {
    list.truncate(k);
    if list.len() < k {
        let have: HashSet<u32> = list.iter().copied().collect();
        list.extend(
            popular
                .iter()
                .filter(|i| !have.contains(i))
                .take(k - list.len()),
        );
    }
    list
}

/// Per item, its neighbours by descending score, ties by index.
fn top_neighbours(scores: HashMap<u32, HashMap<u32, f64>>, n: usize) -> HashMap<u32, Vec<u32>> {
    scores
        .into_iter()
        .map(|(item, row)| {
            let mut row: Vec<(u32, f64)> = row.into_iter().collect();
            row.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            (item, row.into_iter().take(n).map(|(j, _)| j).collect())
        })
        .collect()
}

/// The last in-vocabulary item of a prefix.
fn last_known(history: &[Option<u32>]) -> Option<u32> {
    history.iter().rev().find_map(|i| *i)
}

/// Item-to-item KNN: items that share sessions with the last item, by cosine similarity of
/// their session sets, `|S(i) ∩ S(j)| / sqrt(|S(i)| |S(j)|)` (the "Item-KNN" of GRU4Rec).
#[derive(Debug, Clone)]
pub struct ItemKnn {
    neighbours: HashMap<u32, Vec<u32>>,
    popular: Vec<u32>,
}

impl ItemKnn {
    /// Co-occurrences in the training sessions, each pair counted once per session.
    pub fn fit(vocab: &ItemVocab, train: &[ItemSession]) -> Self {
        let mut sessions_of = vec![0u64; vocab.len()];
        let mut together: HashMap<(u32, u32), u64> = HashMap::new();
        for s in train {
            let mut seen = HashSet::new();
            let items: Vec<u32> = s
                .items
                .iter()
                .filter_map(|i| vocab.get(i))
                .filter(|i| seen.insert(*i))
                .collect();
            for &i in &items {
                sessions_of[i as usize] += 1;
            }
            let paired = &items[..items.len().min(MAX_SESSION_ITEMS)];
            for (a, &i) in paired.iter().enumerate() {
                for &j in &paired[a + 1..] {
                    let pair = if i < j { (i, j) } else { (j, i) };
                    *together.entry(pair).or_default() += 1;
                }
            }
        }
        let mut scores: HashMap<u32, HashMap<u32, f64>> = HashMap::new();
        for ((i, j), n) in together {
            let sim =
                n as f64 / (sessions_of[i as usize] as f64 * sessions_of[j as usize] as f64).sqrt();
            scores.entry(i).or_default().insert(j, sim);
            scores.entry(j).or_default().insert(i, sim);
        }
        ItemKnn {
            neighbours: top_neighbours(scores, NEIGHBOURS),
            popular: Popularity::fit(vocab).top,
        }
    }
}

impl NextItem for ItemKnn {
    fn name(&self) -> String {
        "item-KNN (session co-occurrence)".into()
    }

    fn recommend(&self, history: &[Option<u32>], k: usize) -> Vec<u32> {
        let near = last_known(history)
            .and_then(|i| self.neighbours.get(&i))
            .cloned()
            .unwrap_or_default();
        fill_with_popular(near, k, &self.popular)
    }
}

/// First-order Markov chain over items: the most frequent successors of the last item in the
/// training sessions.
#[derive(Debug, Clone)]
pub struct ItemMarkov {
    successors: HashMap<u32, Vec<u32>>,
    popular: Vec<u32>,
}

impl ItemMarkov {
    /// Transitions between consecutive in-vocabulary items of the training sessions.
    pub fn fit(vocab: &ItemVocab, train: &[ItemSession]) -> Self {
        let mut counts: HashMap<u32, HashMap<u32, f64>> = HashMap::new();
        for s in train {
            for pair in s.items.windows(2) {
                if let (Some(a), Some(b)) = (vocab.get(&pair[0]), vocab.get(&pair[1])) {
                    *counts.entry(a).or_default().entry(b).or_default() += 1.0;
                }
            }
        }
        ItemMarkov {
            successors: top_neighbours(counts, NEIGHBOURS),
            popular: Popularity::fit(vocab).top,
        }
    }
}

impl NextItem for ItemMarkov {
    fn name(&self) -> String {
        "item Markov chain (first order)".into()
    }

    fn recommend(&self, history: &[Option<u32>], k: usize) -> Vec<u32> {
        let next = history
            .last()
            .copied()
            .flatten()
            .and_then(|i| self.successors.get(&i))
            .cloned()
            .unwrap_or_default();
        fill_with_popular(next, k, &self.popular)
    }
}
