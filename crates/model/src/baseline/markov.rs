//! First-order Markov chain over event types: the baseline next-action model.
//!
//! State is the last observed event type, or "start" before a session's first event. Counts are
//! kept (they are the model's data, and they serialise readably); probabilities with additive
//! smoothing are derived from them once, so a lookup on the hot path is a copy of one row.

use std::collections::BTreeMap;

use clickpath_schema::EventType;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

const N: usize = EventType::COUNT;
/// Row of the "session start" state; rows `1..=N` are the event types by index.
const START_ROW: usize = 0;
/// Name of the session-start state in the serialised table.
pub const START_STATE: &str = "START";

/// Additive smoothing used by [`MarkovChain::fit`]: one pseudo-count per transition (Laplace).
pub const DEFAULT_SMOOTHING: f64 = 1.0;

fn row_of(prev: Option<EventType>) -> usize {
    prev.map_or(START_ROW, |t| t.index() + 1)
}

/// First-order Markov chain `P(next | last observed event type)` with additive smoothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MarkovTable", into = "MarkovTable")]
pub struct MarkovChain {
    counts: [[u64; N]; N + 1],
    smoothing: f64,
    probabilities: [[f64; N]; N + 1],
}

impl MarkovChain {
    /// Fits with [`DEFAULT_SMOOTHING`]. Each item is `(last observed type, next type)`, `None`
    /// meaning the next type opened a session.
    pub fn fit(transitions: impl IntoIterator<Item = (Option<EventType>, EventType)>) -> Self {
        let mut counts = [[0u64; N]; N + 1];
        for (prev, next) in transitions {
            counts[row_of(prev)][next.index()] += 1;
        }
        Self::build(counts, DEFAULT_SMOOTHING)
    }

    /// Fits with the given additive `smoothing` (pseudo-count per transition; finite, `>= 0`).
    pub fn fit_with_smoothing(
        transitions: impl IntoIterator<Item = (Option<EventType>, EventType)>,
        smoothing: f64,
    ) -> Result<Self, ModelError> {
        let mut counts = [[0u64; N]; N + 1];
        for (prev, next) in transitions {
            counts[row_of(prev)][next.index()] += 1;
        }
        Self::from_counts(counts, smoothing)
    }

    fn from_counts(counts: [[u64; N]; N + 1], smoothing: f64) -> Result<Self, ModelError> {
        if !smoothing.is_finite() || smoothing < 0.0 {
            return Err(ModelError::InvalidConfig(format!(
                "markov smoothing must be finite and >= 0, got {smoothing}"
            )));
        }
        Ok(Self::build(counts, smoothing))
    }

    /// Derives the probability table; `smoothing` has been checked to be finite and `>= 0`.
    fn build(counts: [[u64; N]; N + 1], smoothing: f64) -> Self {
        let mut probabilities = [[0.0; N]; N + 1];
        for (row, probs) in counts.iter().zip(probabilities.iter_mut()) {
            let total = row.iter().sum::<u64>() as f64 + smoothing * N as f64;
            for (c, p) in row.iter().zip(probs.iter_mut()) {
                // An unseen state with no smoothing has no evidence at all: uniform.
                *p = if total > 0.0 {
                    (*c as f64 + smoothing) / total
                } else {
                    1.0 / N as f64
                };
            }
        }
        MarkovChain {
            counts,
            smoothing,
            probabilities,
        }
    }

    /// The additive smoothing this chain was fitted with.
    pub fn smoothing(&self) -> f64 {
        self.smoothing
    }

    /// How often `prev -> next` was seen in training.
    pub fn transition_count(&self, prev: Option<EventType>, next: EventType) -> u64 {
        self.counts[row_of(prev)][next.index()]
    }

    /// Number of transitions the chain was fitted on.
    pub fn total_transitions(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// `P(next | prev)` for every next type, indexed by [`EventType::index`]; sums to 1.
    pub fn next_distribution(&self, prev: Option<EventType>) -> [f64; N] {
        self.probabilities[row_of(prev)]
    }

    /// `P(next | prev)`.
    pub fn probability(&self, prev: Option<EventType>, next: EventType) -> f64 {
        self.probabilities[row_of(prev)][next.index()]
    }

    /// The most likely next type after `prev` (ties go to the lower [`EventType::index`]).
    pub fn most_likely_next(&self, prev: Option<EventType>) -> EventType {
        let row = &self.probabilities[row_of(prev)];
        let mut best = 0;
        for (i, &p) in row.iter().enumerate().skip(1) {
            if p > row[best] {
                best = i;
            }
        }
        EventType::ALL[best]
    }

    /// Greedy path: `steps` times take the most likely next type and continue from it.
    pub fn most_likely_path(&self, prev: Option<EventType>, steps: usize) -> Vec<EventType> {
        let mut path = Vec::with_capacity(steps);
        let mut state = prev;
        for _ in 0..steps {
            let next = self.most_likely_next(state);
            path.push(next);
            state = Some(next);
        }
        path
    }

    /// The probability table, one row per state, rows in `[None, Some(ALL[0]), ...]` order.
    pub fn probability_rows(&self) -> &[[f64; N]; N + 1] {
        &self.probabilities
    }
}

/// Serialised form: transition counts keyed by state and type names, so the file stays readable
/// and does not depend on the enum's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkovTable {
    /// Additive smoothing.
    pub smoothing: f64,
    /// `counts[from][to]`, `from` being [`START_STATE`] or an event type symbol.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl From<MarkovChain> for MarkovTable {
    fn from(chain: MarkovChain) -> Self {
        let mut counts = BTreeMap::new();
        let states = std::iter::once(None).chain(EventType::ALL.into_iter().map(Some));
        for (state, row) in states.zip(chain.counts.iter()) {
            let name = state.map_or(START_STATE, EventType::as_str);
            let row: BTreeMap<String, u64> = EventType::ALL
                .iter()
                .zip(row)
                .filter(|(_, c)| **c > 0)
                .map(|(t, c)| (t.as_str().to_string(), *c))
                .collect();
            if !row.is_empty() {
                counts.insert(name.to_string(), row);
            }
        }
        MarkovTable {
            smoothing: chain.smoothing,
            counts,
        }
    }
}

impl TryFrom<MarkovTable> for MarkovChain {
    type Error = String;

    fn try_from(table: MarkovTable) -> Result<Self, Self::Error> {
        let mut counts = [[0u64; N]; N + 1];
        for (from, row) in &table.counts {
            let prev = if from == START_STATE {
                None
            } else {
                Some(
                    EventType::parse(from)
                        .ok_or_else(|| format!("unknown markov state {from:?}"))?,
                )
            };
            for (to, &count) in row {
                let next =
                    EventType::parse(to).ok_or_else(|| format!("unknown event type {to:?}"))?;
                counts[row_of(prev)][next.index()] = count;
            }
        }
        MarkovChain::from_counts(counts, table.smoothing).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;
    use proptest::prelude::*;

    /// Sessions that always go PageView -> ProductView -> AddToCart -> BeginCheckout -> Purchase.
    fn deterministic_chain(sessions: usize) -> MarkovChain {
        let path = [PageView, ProductView, AddToCart, BeginCheckout, Purchase];
        let transitions = (0..sessions).flat_map(|_| {
            std::iter::once((None, path[0]))
                .chain(path.windows(2).map(|w| (Some(w[0]), w[1])))
                .collect::<Vec<_>>()
        });
        MarkovChain::fit(transitions)
    }

    #[test]
    fn deterministic_chain_predicts_the_next_action() {
        let chain = deterministic_chain(20);
        assert_eq!(chain.most_likely_next(None), PageView);
        assert_eq!(chain.most_likely_next(Some(PageView)), ProductView);
        assert_eq!(chain.most_likely_next(Some(AddToCart)), BeginCheckout);
        assert_eq!(
            chain.most_likely_path(Some(ProductView), 3),
            vec![AddToCart, BeginCheckout, Purchase]
        );
        // (20 + 1) / (20 + 10) with Laplace smoothing.
        assert!((chain.probability(Some(BeginCheckout), Purchase) - 21.0 / 30.0).abs() < 1e-12);
        assert_eq!(chain.transition_count(None, PageView), 20);
        assert_eq!(chain.total_transitions(), 100);
    }

    #[test]
    fn unseen_state_is_uniform_without_smoothing() {
        let chain = MarkovChain::fit_with_smoothing([(None, Search)], 0.0).unwrap();
        assert_eq!(chain.probability(None, Search), 1.0);
        assert!(
            chain
                .next_distribution(Some(Login))
                .iter()
                .all(|&p| (p - 0.1).abs() < 1e-12)
        );
        assert!(MarkovChain::fit_with_smoothing([], -1.0).is_err());
        assert!(MarkovChain::fit_with_smoothing([], f64::NAN).is_err());
    }

    #[test]
    fn table_round_trip_and_bad_names() {
        let chain = deterministic_chain(3);
        let json = serde_json::to_string(&chain).unwrap();
        assert!(json.contains("\"START\""), "{json}");
        let back: MarkovChain = serde_json::from_str(&json).unwrap();
        assert_eq!(back, chain);
        let bad = r#"{"smoothing":1.0,"counts":{"TELEPORT":{"SEARCH":1}}}"#;
        let err = serde_json::from_str::<MarkovChain>(bad).unwrap_err();
        assert!(err.to_string().contains("TELEPORT"), "{err}");
    }

    proptest! {
        #[test]
        fn rows_are_distributions(
            pairs in proptest::collection::vec((0usize..=N, 0usize..N), 0..60),
            smoothing in 0.0f64..3.0,
        ) {
            let transitions = pairs.iter().map(|&(from, to)| {
                let prev = if from == N { None } else { Some(EventType::ALL[from]) };
                (prev, EventType::ALL[to])
            });
            let chain = MarkovChain::fit_with_smoothing(transitions, smoothing).unwrap();
            for row in chain.probability_rows() {
                prop_assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                prop_assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
            }
            prop_assert_eq!(chain.total_transitions(), pairs.len() as u64);
        }
    }
}
