//! Training examples from raw click events, built with the same core code the stages run
//! (sessions from [`assign_sessions`], features from one [`FeatureWindower`]), so offline
//! features equal online ones by construction.

use std::borrow::Cow;
use std::collections::HashMap;

use clickpath_core::{FeatureSpec, FeatureWindower, SessionConfig, assign_sessions};
use clickpath_schema::{ClickEvent, EventType, FeatureVector};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::baseline::hex;
use crate::error::ModelError;

/// One scored moment: the features after an event and what happened next.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Session key from [`assign_sessions`].
    pub session_key: String,
    /// Event time of the session's first event (ms); the split is by this time.
    pub session_start: i64,
    /// Features after this event (its `event_type`, `event_id`, `event_time` describe the event).
    pub features: FeatureVector,
    /// Whether this is the session's first event.
    pub opens_session: bool,
    /// Position of the event in its session, from 1.
    pub position: usize,
    /// Whether this event is its session's first purchase. Such an example only serves the next
    /// action and item: its purchase label is the answer itself, so purchase training and
    /// evaluation skip it.
    pub is_purchase: bool,
    /// Whether this event comes after its session's first purchase (next action and item only).
    pub after_purchase: bool,
    /// Whether the session has a purchase (the "session will purchase" label; on the examples
    /// scored for purchase, a purchase after this event).
    pub purchase: bool,
    /// Whether one of the next [`SOON_EVENTS`] events of the session is its first purchase
    /// (the "purchase within the next N events" label).
    pub purchase_soon: bool,
    /// Type of the next event of the same session; `None` for the session's last event.
    pub next_action: Option<EventType>,
    /// The event's item, for the sequence models' hashed item embedding.
    pub item_id: Option<String>,
    /// The item the next event of the session brings, when it is a different item from the last
    /// one seen in the session so far (this event's or an earlier one's): the next-item target
    /// of the recommendation protocol (`crate::recommend`). `None` when the next event has no
    /// item, repeats the last one, or no item has been seen yet.
    pub next_new_item: Option<String>,
    /// The event's category, for the sequence models' hashed category embedding.
    pub category: Option<String>,
    /// The category the next event of the session brings, when it differs from the last category
    /// seen in the session so far: the next-category target, defined as [`Example::next_new_item`]
    /// is for items (`crate::recommend`, "Categories").
    pub next_new_category: Option<String>,
}

impl Example {
    /// Type of the event this example describes.
    pub fn event_type(&self) -> EventType {
        self.features.event_type
    }

    /// Whether the example is scored for purchase: every event strictly before its session's
    /// first purchase.
    pub fn scored_for_purchase(&self) -> bool {
        !self.is_purchase && !self.after_purchase
    }
}

/// Horizon of [`Example::purchase_soon`], in events. Five covers the closing stretch of a
/// purchase in a shop with the full grammar (add to cart, login, checkout, a declined and a
/// successful payment, purchase) and the last few views before a purchase in a shop with views
/// and purchases only; an intervention (an offer, a reminder) still has time to act before it.
pub const SOON_EVENTS: usize = 5;

/// Examples of a batch of events plus what identifies the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Examples in event-time order, one per event. The session's first purchase and what follows
    /// it serve the next action and item only ([`Example::scored_for_purchase`]): scoring the
    /// purchase for purchase would hand every model a free positive, and after it the question
    /// is answered.
    pub examples: Vec<Example>,
    /// Number of input events.
    pub events: usize,
    /// Number of sessions.
    pub sessions: usize,
    /// SHA-256 (hex) over the event ids and times in time order: identifies the training data.
    pub fingerprint: String,
}

/// Fractions of sessions (by start time) for training and validation; the rest is the test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    /// Earliest sessions used to fit. Default 0.70.
    pub train_fraction: f64,
    /// Next sessions used for early stopping. Default 0.15 (the last 0.15 are the test set).
    pub validation_fraction: f64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            train_fraction: 0.70,
            validation_fraction: 0.15,
        }
    }
}

impl SplitConfig {
    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let (t, v) = (self.train_fraction, self.validation_fraction);
        if !(t.is_finite() && v.is_finite() && t > 0.0 && v >= 0.0 && t + v <= 1.0) {
            return Err(ModelError::InvalidConfig(format!(
                "split fractions must satisfy train > 0, validation >= 0, train + validation <= 1; \
                 got train {t}, validation {v}"
            )));
        }
        Ok(())
    }
}

/// Time-ordered train / validation / test views of a dataset's examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits<'a> {
    /// Examples of the earliest sessions.
    pub train: Vec<&'a Example>,
    /// Examples of the sessions after those.
    pub validation: Vec<&'a Example>,
    /// Examples of the latest sessions.
    pub test: Vec<&'a Example>,
}

/// Share of the examples scored for purchase whose session goes on to purchase (0 for none).
pub fn positive_rate(examples: &[&Example]) -> f64 {
    let scored: Vec<&&Example> = examples
        .iter()
        .filter(|ex| ex.scored_for_purchase())
        .collect();
    let positives = scored.iter().filter(|ex| ex.purchase).count();
    positives as f64 / scored.len().max(1) as f64
}

/// SHA-256 over `(event_id, event_time)` of `events` in the given order.
pub fn fingerprint<'a>(events: impl IntoIterator<Item = &'a ClickEvent>) -> String {
    let mut hasher = Sha256::new();
    for ev in events {
        // Length prefix so ids cannot run into each other.
        hasher.update((ev.event_id.len() as u64).to_le_bytes());
        hasher.update(ev.event_id.as_bytes());
        hasher.update(ev.event_time.to_le_bytes());
    }
    hex(&hasher.finalize())
}

/// Builds examples from `events` (any order): sorts them by event time (stable), assigns
/// sessions, feeds one windower in time order and labels every event.
pub fn build_dataset(
    events: &[ClickEvent],
    session: &SessionConfig,
    spec: &FeatureSpec,
) -> Dataset {
    // Generator and adapter output is usually sorted already: copy only when it is not.
    let sorted: Cow<'_, [ClickEvent]> = if events
        .windows(2)
        .all(|w| w[0].event_time <= w[1].event_time)
    {
        Cow::Borrowed(events)
    } else {
        let mut owned = events.to_vec();
        owned.sort_by_key(|ev| ev.event_time);
        Cow::Owned(owned)
    };
    let keys = assign_sessions(&sorted, session);

    // Per session: start time, position of the first purchase, and member indices.
    struct SessionInfo {
        start: i64,
        first_purchase: Option<usize>,
        members: Vec<usize>,
    }
    let mut sessions: HashMap<&str, SessionInfo> = HashMap::new();
    for (i, (ev, key)) in sorted.iter().zip(&keys).enumerate() {
        let info = sessions.entry(key.as_str()).or_insert(SessionInfo {
            start: ev.event_time,
            first_purchase: None,
            members: Vec::new(),
        });
        if ev.event_type == EventType::Purchase && info.first_purchase.is_none() {
            info.first_purchase = Some(i);
        }
        info.members.push(i);
    }
    // Next event of the same session, by index.
    let mut next_of: Vec<Option<usize>> = vec![None; sorted.len()];
    for info in sessions.values() {
        for pair in info.members.windows(2) {
            next_of[pair[0]] = Some(pair[1]);
        }
    }

    let item_of = |i: usize| sorted[i].item_id.as_deref().filter(|s| !s.is_empty());
    let category_of = |i: usize| sorted[i].category.as_deref().filter(|s| !s.is_empty());
    let mut last_item: HashMap<&str, &str> = HashMap::new();
    let mut last_category: HashMap<&str, &str> = HashMap::new();
    let mut windower = FeatureWindower::new(spec.clone());
    let mut examples = Vec::with_capacity(sorted.len());
    for (i, (ev, key)) in sorted.iter().zip(&keys).enumerate() {
        let features = windower.update(ev);
        let info = &sessions[key.as_str()];
        if let Some(item) = item_of(i) {
            last_item.insert(key.as_str(), item);
        }
        if let Some(category) = category_of(i) {
            last_category.insert(key.as_str(), category);
        }
        // The next event's value when it differs from the last one seen in the session.
        let next_new = |last: Option<&&str>, next: Option<&str>| match (last, next) {
            (Some(last), Some(next)) if *last != next => Some(next.to_string()),
            _ => None,
        };
        let next_new_item = next_new(last_item.get(key.as_str()), next_of[i].and_then(item_of));
        let next_new_category = next_new(
            last_category.get(key.as_str()),
            next_of[i].and_then(category_of),
        );
        let position = info.members.partition_point(|&m| m < i);
        let purchase_position = info
            .first_purchase
            .map(|p| info.members.partition_point(|&m| m < p));
        examples.push(Example {
            session_key: key.clone(),
            session_start: info.start,
            opens_session: position == 0,
            position: position + 1,
            is_purchase: info.first_purchase == Some(i),
            after_purchase: info.first_purchase.is_some_and(|p| i > p),
            features,
            purchase: info.first_purchase.is_some(),
            purchase_soon: purchase_position
                .is_some_and(|p| p > position && p <= position + SOON_EVENTS),
            next_action: next_of[i].map(|j| sorted[j].event_type),
            item_id: ev.item_id.clone(),
            category: ev.category.clone(),
            next_new_item,
            next_new_category,
        });
    }
    Dataset {
        examples,
        events: sorted.len(),
        sessions: sessions.len(),
        fingerprint: fingerprint(sorted.iter()),
    }
}

impl Dataset {
    /// Splits by session start time: sessions sorted by `(start, key)`, the first
    /// `train_fraction` of them train, the next `validation_fraction` validate, the rest test.
    /// A session never straddles two splits.
    pub fn split(&self, cfg: &SplitConfig) -> Result<Splits<'_>, ModelError> {
        cfg.validate()?;
        let mut starts: Vec<(i64, &str)> = self
            .examples
            .iter()
            .map(|ex| (ex.session_start, ex.session_key.as_str()))
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let n = starts.len();
        let train_end = (cfg.train_fraction * n as f64).round() as usize;
        let validation_end =
            ((cfg.train_fraction + cfg.validation_fraction) * n as f64).round() as usize;
        let rank: HashMap<&str, usize> = starts
            .iter()
            .enumerate()
            .map(|(i, (_, key))| (*key, i))
            .collect();
        let mut splits = Splits {
            train: Vec::new(),
            validation: Vec::new(),
            test: Vec::new(),
        };
        for ex in &self.examples {
            let r = rank[ex.session_key.as_str()];
            if r < train_end {
                splits.train.push(ex);
            } else if r < validation_end {
                splits.validation.push(ex);
            } else {
                splits.test.push(ex);
            }
        }
        Ok(splits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;
    use proptest::prelude::*;

    fn ev(id: &str, user: &str, t: EventType, time: i64) -> ClickEvent {
        ClickEvent::new(id, user, t, time)
    }

    const MIN: i64 = 60_000;

    /// u1: browse, cart, purchase, then more browsing (same session); a second session after an
    /// hour without a purchase. u2: one short session that ends with a cart.
    fn events() -> Vec<ClickEvent> {
        vec![
            ev("a1", "u1", PageView, 0),
            ev("b1", "u2", Search, MIN),
            ev("a2", "u1", AddToCart, 2 * MIN),
            ev("b2", "u2", AddToCart, 3 * MIN),
            ev("a3", "u1", Purchase, 4 * MIN),
            ev("a4", "u1", PageView, 5 * MIN),
            ev("a5", "u1", Purchase, 6 * MIN),
            ev("a6", "u1", Search, 70 * MIN),
        ]
    }

    fn build(events: &[ClickEvent]) -> Dataset {
        build_dataset(events, &SessionConfig::default(), &FeatureSpec::default())
    }

    #[test]
    fn labels_and_targets_of_every_event() {
        let ds = build(&events());
        let ids: Vec<&str> = ds
            .examples
            .iter()
            .map(|ex| ex.features.event_id.as_str())
            .collect();
        assert_eq!(ids, ["a1", "b1", "a2", "b2", "a3", "a4", "a5", "a6"]);
        // a3 is the session's first purchase; it and what follows are not scored for purchase.
        let scored: Vec<bool> = ds
            .examples
            .iter()
            .map(|ex| ex.scored_for_purchase())
            .collect();
        assert_eq!(scored, [true, true, true, true, false, false, false, true]);
        assert!(ds.examples[4].is_purchase && !ds.examples[4].after_purchase);
        assert!(ds.examples[5].after_purchase && ds.examples[6].after_purchase);
        let purchase: Vec<bool> = ds.examples.iter().map(|ex| ex.purchase).collect();
        assert_eq!(
            purchase,
            [true, false, true, false, true, true, true, false]
        );
        let soon: Vec<bool> = ds.examples.iter().map(|ex| ex.purchase_soon).collect();
        assert_eq!(soon, [true, false, true, false, false, false, false, false]);
        let next: Vec<Option<EventType>> = ds.examples.iter().map(|ex| ex.next_action).collect();
        assert_eq!(
            next,
            [
                Some(AddToCart),
                Some(AddToCart),
                Some(Purchase),
                None,
                Some(PageView),
                Some(Purchase),
                None,
                None
            ]
        );
        let opens: Vec<bool> = ds.examples.iter().map(|ex| ex.opens_session).collect();
        assert_eq!(opens, [true, true, false, false, false, false, false, true]);
        let positions: Vec<usize> = ds.examples.iter().map(|ex| ex.position).collect();
        assert_eq!(positions, [1, 1, 2, 2, 3, 4, 5, 1]);
        assert_eq!((ds.events, ds.sessions), (8, 3));
        assert_eq!(ds.examples[7].session_start, 70 * MIN);
        assert_eq!(ds.examples[4].session_key, ds.examples[0].session_key);
        assert_eq!(ds.examples[7].features.values["purchases_total"], 2.0);
    }

    #[test]
    fn next_new_item_is_the_next_event_s_item_when_it_changes() {
        let item = |id: &str, t: EventType, at: i64, item: Option<&str>| {
            let mut e = ev(id, "u", t, at * MIN);
            e.item_id = item.map(str::to_string);
            e
        };
        let ds = build(&[
            item("e1", Search, 0, None), // next brings x, but nothing seen yet
            item("e2", ProductView, 1, Some("x")), // next repeats x
            item("e3", AddToCart, 2, Some("x")), // next is a search
            item("e4", Search, 3, None), // next brings y (last seen: x)
            item("e5", ProductView, 4, Some("y")), // next brings x again
            item("e6", ProductView, 5, Some("x")), // last event
        ]);
        let targets: Vec<Option<&str>> = ds
            .examples
            .iter()
            .map(|ex| ex.next_new_item.as_deref())
            .collect();
        assert_eq!(targets, [None, None, None, Some("y"), Some("x"), None]);
    }

    #[test]
    fn next_new_category_changes_with_the_category_not_the_item() {
        let cat = |id: &str, at: i64, item: &str, category: Option<&str>| {
            let mut e = ev(id, "u", ProductView, at * MIN);
            e.item_id = Some(item.into());
            e.category = category.map(str::to_string);
            e
        };
        let ds = build(&[
            cat("e1", 0, "a", Some("shoes")), // next: another shoe
            cat("e2", 1, "b", Some("shoes")), // next has no category
            cat("e3", 2, "c", None),          // next: bags (last seen: shoes)
            cat("e4", 3, "d", Some("bags")),  // next: shoes again
            cat("e5", 4, "e", Some("shoes")), // last event
        ]);
        let of = |f: fn(&Example) -> Option<&str>| ds.examples.iter().map(f).collect::<Vec<_>>();
        assert_eq!(
            of(|ex| ex.next_new_category.as_deref()),
            [None, None, Some("bags"), Some("shoes"), None]
        );
        assert_eq!(
            of(|ex| ex.next_new_item.as_deref()),
            [Some("b"), Some("c"), Some("d"), Some("e"), None],
            "every step brings a new item"
        );
    }

    #[test]
    fn purchase_soon_looks_exactly_soon_events_ahead() {
        // One session: views at positions 1..=8, the first purchase at position 9 (a second
        // purchase after it does not count).
        let mut evs: Vec<ClickEvent> = (0..8)
            .map(|i| ev(&format!("v{i}"), "u", PageView, i * MIN))
            .collect();
        evs.push(ev("p", "u", Purchase, 8 * MIN));
        evs.push(ev("p2", "u", Purchase, 9 * MIN));
        let ds = build(&evs);
        let soon: Vec<(usize, bool)> = ds
            .examples
            .iter()
            .filter(|ex| ex.scored_for_purchase())
            .map(|ex| (ex.position, ex.purchase_soon))
            .collect();
        let want: Vec<(usize, bool)> = (1..=8).map(|p| (p, 9 - p <= SOON_EVENTS)).collect();
        assert_eq!(soon, want);
        assert!(ds.examples.iter().all(|ex| ex.purchase));
        // The purchase is example 9, the second purchase after it example 10.
        let purchase = &ds.examples[8];
        assert!(purchase.is_purchase && purchase.next_action == Some(Purchase));
        assert!(ds.examples[9].after_purchase && !ds.examples[9].purchase_soon);
    }

    #[test]
    fn a_session_that_opens_with_its_purchase_has_nothing_to_score_for_purchase() {
        let ds = build(&[ev("p", "u", Purchase, 0), ev("v", "u", PageView, MIN)]);
        assert_eq!(ds.examples.len(), 2);
        assert!(ds.examples.iter().all(|ex| !ex.scored_for_purchase()));
        assert_eq!(ds.examples[0].next_action, Some(PageView));
    }

    #[test]
    fn input_order_does_not_matter_but_fingerprint_sees_the_data() {
        let sorted = build(&events());
        let mut shuffled = events();
        shuffled.reverse();
        shuffled.swap(0, 3);
        let other = build(&shuffled);
        assert_eq!(sorted, other);
        let mut changed = events();
        changed[7].event_time += 1;
        assert_ne!(build(&changed).fingerprint, sorted.fingerprint);
        assert_eq!(sorted.fingerprint.len(), 64);
    }

    #[test]
    fn split_rejects_bad_fractions() {
        let ds = build(&events());
        for (t, v) in [(0.0, 0.1), (0.8, 0.3), (f64::NAN, 0.1), (0.5, -0.1)] {
            let cfg = SplitConfig {
                train_fraction: t,
                validation_fraction: v,
            };
            assert!(ds.split(&cfg).is_err(), "{t} {v}");
        }
    }

    proptest! {
        /// Sessions stay whole and splits follow session start time.
        #[test]
        fn split_is_by_session_start(
            raw in proptest::collection::vec((0u8..5, 0i64..500, 0usize..EventType::COUNT), 1..60),
            train in 0.1f64..0.8,
        ) {
            let events: Vec<ClickEvent> = raw
                .iter()
                .enumerate()
                .map(|(i, (u, t, k))| ev(&format!("e{i}"), &format!("u{u}"), EventType::ALL[*k], t * MIN))
                .collect();
            let ds = build(&events);
            let cfg = SplitConfig { train_fraction: train, validation_fraction: (1.0 - train) / 2.0 };
            let splits = ds.split(&cfg).unwrap();
            prop_assert_eq!(
                splits.train.len() + splits.validation.len() + splits.test.len(),
                ds.examples.len()
            );
            let parts = [&splits.train, &splits.validation, &splits.test];
            for (i, a) in parts.iter().enumerate() {
                for b in &parts[i + 1..] {
                    for x in a.iter() {
                        for y in b.iter() {
                            prop_assert_ne!(&x.session_key, &y.session_key);
                            prop_assert!(x.session_start <= y.session_start);
                        }
                    }
                }
            }
        }
    }
}
