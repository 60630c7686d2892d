//! Bounded-memory duplicate filter by event id.
//!
//! Producers retry, so the same event id can arrive more than once. [`Deduper`] remembers each id
//! for `window_ms` of *event time* and answers whether an id was already seen within that window.
//!
//! The filter's clock is the highest event time it has seen. An id first seen at event time `t` is
//! remembered while `t >= clock - window_ms`; an event older than that is never a duplicate (and is
//! not remembered, since it would be forgotten at once). Ids are kept in time buckets of
//! `window_ms / 16` so expiry drops whole buckets, and memory is capped at `max_ids` ids: when the
//! cap is reached the oldest ids are forgotten first (counted by [`Deduper::evicted_for_capacity`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Number of time buckets a window is split into (expiry granularity).
const BUCKETS_PER_WINDOW: i64 = 16;

/// Duplicate filter by event id over a sliding event-time window, bounded by `max_ids`.
#[derive(Debug)]
pub struct Deduper {
    window_ms: i64,
    bucket_ms: i64,
    max_ids: usize,
    /// Highest event time seen (the filter's clock).
    clock: Option<i64>,
    /// Id to its first event time. The `Arc` is shared with the bucket list (one allocation per id).
    ids: HashMap<Arc<str>, i64>,
    /// Bucket index to the ids first seen in it, oldest first.
    buckets: BTreeMap<i64, VecDeque<Arc<str>>>,
    duplicates: u64,
    evicted_for_capacity: u64,
}

impl Deduper {
    /// A filter that remembers ids for `window_ms` of event time and at most `max_ids` ids.
    ///
    /// A `window_ms` below 1 is treated as 1 and a `max_ids` of 0 as 1.
    pub fn new(window_ms: i64, max_ids: usize) -> Self {
        let window_ms = window_ms.max(1);
        Deduper {
            window_ms,
            bucket_ms: (window_ms / BUCKETS_PER_WINDOW).max(1),
            max_ids: max_ids.max(1),
            clock: None,
            ids: HashMap::new(),
            buckets: BTreeMap::new(),
            duplicates: 0,
            evicted_for_capacity: 0,
        }
    }

    /// Whether `event_id` was already seen within the window; if not, remembers it.
    pub fn is_duplicate(&mut self, event_id: &str, event_time_ms: i64) -> bool {
        let clock = self.clock.map_or(event_time_ms, |c| c.max(event_time_ms));
        if self.clock != Some(clock) {
            self.clock = Some(clock);
            self.expire(clock);
        }
        let oldest_kept = clock.saturating_sub(self.window_ms);
        let stale = match self.ids.get(event_id) {
            Some(&first_seen) if first_seen >= oldest_kept => {
                self.duplicates += 1;
                return true;
            }
            Some(_) => true,
            None => false,
        };
        if event_time_ms < oldest_kept {
            // Too old to remember; a second copy of it will not be caught either.
            return false;
        }
        if stale {
            // Still stored from an expired sighting in a bucket not dropped yet.
            self.forget(event_id);
        }
        while self.ids.len() >= self.max_ids {
            if !self.evict_oldest() {
                break;
            }
            self.evicted_for_capacity += 1;
        }
        let id: Arc<str> = Arc::from(event_id);
        self.ids.insert(Arc::clone(&id), event_time_ms);
        self.buckets
            .entry(event_time_ms.div_euclid(self.bucket_ms))
            .or_default()
            .push_back(id);
        false
    }

    /// Number of ids currently remembered (never more than `max_ids`).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of duplicates reported so far.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates
    }

    /// Number of ids forgotten early because `max_ids` was reached (a sign the cap is too small).
    pub fn evicted_for_capacity(&self) -> u64 {
        self.evicted_for_capacity
    }

    /// Drops every bucket that lies entirely before `clock - window_ms`.
    fn expire(&mut self, clock: i64) {
        let oldest_kept = clock.saturating_sub(self.window_ms);
        // Bucket b covers [b * bucket_ms, (b + 1) * bucket_ms); drop it when its end <= oldest_kept.
        while let Some(entry) = self.buckets.first_entry() {
            let end = entry.key().saturating_add(1).saturating_mul(self.bucket_ms);
            if end > oldest_kept {
                break;
            }
            for id in entry.remove() {
                self.ids.remove(&*id);
            }
        }
    }

    /// Forgets the oldest remembered id; false when nothing is remembered.
    fn evict_oldest(&mut self) -> bool {
        while let Some(mut entry) = self.buckets.first_entry() {
            if let Some(id) = entry.get_mut().pop_front() {
                if entry.get().is_empty() {
                    entry.remove();
                }
                self.ids.remove(&*id);
                return true;
            }
            entry.remove();
        }
        false
    }

    /// Removes `id` from the map and its bucket (rare: only after an expired sighting).
    fn forget(&mut self, id: &str) {
        if let Some(t) = self.ids.remove(id) {
            let b = t.div_euclid(self.bucket_ms);
            if let Some(q) = self.buckets.get_mut(&b) {
                q.retain(|x| &**x != id);
                if q.is_empty() {
                    self.buckets.remove(&b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_inside_the_window_are_caught() {
        let mut d = Deduper::new(60_000, 1000);
        assert!(!d.is_duplicate("a", 1_000));
        assert!(!d.is_duplicate("b", 2_000));
        assert!(d.is_duplicate("a", 1_000));
        // A retry stamped later is still the same event.
        assert!(d.is_duplicate("a", 30_000));
        assert!(d.is_duplicate("b", 2_000));
        assert_eq!(d.duplicates_dropped(), 3);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn ids_are_forgotten_after_the_window() {
        let mut d = Deduper::new(60_000, 1000);
        assert!(!d.is_duplicate("a", 0));
        // Exactly at the window edge: still remembered.
        assert!(!d.is_duplicate("x", 60_000));
        assert!(d.is_duplicate("a", 0));
        // The clock moves one ms past the edge: `a` is forgotten.
        assert!(!d.is_duplicate("y", 60_001));
        assert!(!d.is_duplicate("a", 0), "too old to be remembered");
        assert!(!d.is_duplicate("a", 0), "and not remembered either");
        // A re-sent id with a fresh time starts a new sighting.
        assert!(!d.is_duplicate("a", 60_002));
        assert!(d.is_duplicate("a", 60_002));
        assert_eq!(d.duplicates_dropped(), 2);
    }

    #[test]
    fn capacity_evicts_oldest_first() {
        let mut d = Deduper::new(1_000_000, 3);
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(!d.is_duplicate(id, i as i64));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted_for_capacity(), 1);
        assert!(!d.is_duplicate("a", 0), "a was evicted");
        assert!(d.is_duplicate("d", 3), "d is recent");
    }

    #[test]
    fn memory_is_bounded_under_a_long_stream() {
        let max = 500;
        let mut d = Deduper::new(10_000, max);
        let mut peak = 0;
        for i in 0..50_000i64 {
            // ~5 events per ms-of-window at the start, then sparse: both bounds get exercised.
            let t = if i < 20_000 { i / 5 } else { i * 3 };
            d.is_duplicate(&format!("e{i}"), t);
            if i % 7 == 0 {
                d.is_duplicate(&format!("e{}", i / 2), t);
            }
            peak = peak.max(d.len());
        }
        assert!(peak <= max, "peak {peak}");
        assert!(d.evicted_for_capacity() > 0);
        // In the sparse part the window (10 s = 3333 events) exceeds the cap, so it stays full.
        assert_eq!(d.len(), max);
    }

    #[test]
    fn window_bounds_memory_below_the_cap() {
        let mut d = Deduper::new(1_000, 1_000_000);
        for i in 0..20_000i64 {
            d.is_duplicate(&i.to_string(), i * 10);
        }
        // 1 s window at one event per 10 ms: about 100 ids plus at most one bucket of slack.
        assert!(d.len() <= 110, "len {}", d.len());
        assert_eq!(d.evicted_for_capacity(), 0);
    }

    proptest! {
        /// Against a model that remembers every (id, first time) forever and applies the rule exactly.
        #[test]
        fn matches_reference(events in prop::collection::vec((0u8..20, 0i64..5_000), 1..300)) {
            let window = 1_000;
            let mut d = Deduper::new(window, usize::MAX);
            let mut seen: HashMap<String, i64> = HashMap::new();
            let mut clock = i64::MIN;
            for (id, t) in events {
                let id = format!("id{id}");
                clock = clock.max(t);
                let expected = match seen.get(&id) {
                    Some(&first) if first >= clock - window => true,
                    _ => {
                        if t >= clock - window {
                            seen.insert(id.clone(), t);
                        }
                        false
                    }
                };
                prop_assert_eq!(d.is_duplicate(&id, t), expected);
            }
        }
    }
}
