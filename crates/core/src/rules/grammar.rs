//! The stream's own grammar, learned online: which event types occur (the vocabulary), how often each
//! follows each other for one user (transition frequencies), and how often a purchase has its
//! precondition (a `BEGIN_CHECKOUT` or `PAYMENT_ATTEMPT` of the same user within the lookback).
//!
//! Sequence rules ask it whether something is unusual *on this stream*: a purchase without a checkout is
//! normal where checkout events never occur (REES46, Retailrocket, OTTO and DIGINETICA have none) and
//! suspicious where nearly every purchase has one. Counts decay exponentially (a half-life counted in
//! observations, so the grammar follows a shop that changes what it publishes), nothing is judged before
//! a warm-up, and the state is a fixed-size table whatever the traffic.

use clickpath_schema::EventType;
use serde::{Deserialize, Serialize};

/// Event types: the size of every table here.
const TYPES: usize = EventType::COUNT;

/// Decayed counts that share one clock: each observation is added with a weight that grows by
/// `1 / decay` per observation (instead of multiplying every count by `decay`), and everything is
/// rescaled when the weight gets large, so an observation costs O(1).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DecayClock {
    growth: f64,
    weight: f64,
}

impl DecayClock {
    fn new(half_life: f64) -> Self {
        DecayClock {
            growth: 2f64.powf(1.0 / half_life.max(1.0)),
            weight: 1.0,
        }
    }

    /// The weight of the next observation, and whether the caller must rescale by `1 / RESCALE`.
    fn tick(&mut self) -> (f64, bool) {
        let w = self.weight;
        self.weight *= self.growth;
        if self.weight > RESCALE {
            self.weight /= RESCALE;
            (w, true)
        } else {
            (w, false)
        }
    }
}

/// Rescaling threshold of a [`DecayClock`] (far from overflow, far from losing precision).
const RESCALE: f64 = 1e100;

/// The learned grammar of one stream (one detector instance's partitions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grammar {
    events: DecayClock,
    /// Decayed count of each event type.
    seen: [f64; TYPES],
    /// Decayed count of `previous -> next` for one user (row: previous type).
    transitions: [[f64; TYPES]; TYPES],
    purchases: DecayClock,
    /// Decayed count of purchases, and of those with a precondition within the lookback.
    guarded: f64,
    covered: f64,
    /// Purchases seen in all (not decayed): the warm-up.
    purchases_seen: u64,
    warmup: u64,
}

impl Grammar {
    /// An empty grammar: counts halve every `half_life` observations (events for the vocabulary
    /// and transitions, purchases for the precondition coverage); nothing is judged before `warmup`
    /// purchases.
    pub fn new(half_life: f64, warmup: u64) -> Self {
        Grammar {
            events: DecayClock::new(half_life),
            seen: [0.0; TYPES],
            transitions: [[0.0; TYPES]; TYPES],
            purchases: DecayClock::new(half_life / 10.0),
            guarded: 0.0,
            covered: 0.0,
            purchases_seen: 0,
            warmup,
        }
    }

    /// Folds one event of a user whose previous event (if any) had type `previous`.
    pub fn observe(&mut self, previous: Option<EventType>, next: EventType) {
        let (w, rescale) = self.events.tick();
        self.seen[next.index()] += w;
        if let Some(p) = previous {
            self.transitions[p.index()][next.index()] += w;
        }
        if rescale {
            self.seen.iter_mut().for_each(|c| *c /= RESCALE);
            self.transitions
                .iter_mut()
                .flatten()
                .for_each(|c| *c /= RESCALE);
        }
    }

    /// Folds one purchase, with or without its precondition.
    pub fn observe_purchase(&mut self, had_precondition: bool) {
        let (w, rescale) = self.purchases.tick();
        self.guarded += w;
        if had_precondition {
            self.covered += w;
        }
        if rescale {
            self.guarded /= RESCALE;
            self.covered /= RESCALE;
        }
        self.purchases_seen += 1;
    }

    /// The (decayed) share of purchases that had their precondition; `None` during the warm-up.
    pub fn precondition_coverage(&self) -> Option<f64> {
        (self.purchases_seen >= self.warmup && self.guarded > 0.0)
            .then(|| self.covered / self.guarded)
    }

    /// The (decayed) share of events of type `t`: 0 for a type this stream never shows.
    pub fn share(&self, t: EventType) -> f64 {
        let total: f64 = self.seen.iter().sum();
        if total > 0.0 {
            self.seen[t.index()] / total
        } else {
            0.0
        }
    }

    /// `P(next | previous)` on this stream, 0 when `previous` was never followed by anything.
    pub fn transition(&self, previous: EventType, next: EventType) -> f64 {
        let row = &self.transitions[previous.index()];
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            row[next.index()] / total
        } else {
            0.0
        }
    }

    /// Purchases folded in so far.
    pub fn purchases_seen(&self) -> u64 {
        self.purchases_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::EventType::*;

    #[test]
    fn coverage_is_learned_after_the_warm_up_and_follows_the_stream() {
        let mut g = Grammar::new(1000.0, 50);
        for _ in 0..49 {
            g.observe_purchase(true);
        }
        assert_eq!(g.precondition_coverage(), None, "still warming up");
        g.observe_purchase(false);
        let c = g.precondition_coverage().unwrap();
        assert!((c - 0.98).abs() < 0.01, "{c}");
        // A shop that stops publishing checkouts: coverage decays towards 0 (purchase half-life 100).
        for _ in 0..1000 {
            g.observe_purchase(false);
        }
        assert!(g.precondition_coverage().unwrap() < 0.01);
    }

    #[test]
    fn vocabulary_and_transitions() {
        let mut g = Grammar::new(10_000.0, 1);
        let mut prev = None;
        for t in [ProductView, AddToCart, ProductView, AddToCart, Purchase] {
            g.observe(prev, t);
            prev = Some(t);
        }
        assert_eq!(g.share(BeginCheckout), 0.0);
        assert!((g.share(ProductView) - 0.4).abs() < 0.01);
        assert!((g.transition(ProductView, AddToCart) - 1.0).abs() < 1e-9);
        assert!((g.transition(AddToCart, Purchase) - 0.5).abs() < 0.01);
        assert_eq!(g.transition(Purchase, ProductView), 0.0);
    }

    #[test]
    fn decay_survives_many_rescales() {
        let mut g = Grammar::new(2.0, 1);
        for i in 0..100_000 {
            g.observe(None, if i % 2 == 0 { ProductView } else { Search });
            g.observe_purchase(i % 4 != 0);
        }
        let s = g.share(ProductView) + g.share(Search);
        assert!((s - 1.0).abs() < 1e-9 && s.is_finite());
        let c = g.precondition_coverage().unwrap();
        assert!(c.is_finite() && (0.0..=1.0).contains(&c), "{c}");
    }
}
