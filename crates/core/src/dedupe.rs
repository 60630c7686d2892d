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
//!
//! Durable state: with [`Deduper::with_journal`] the filter records what changed, and
//! [`Deduper::take_changes`] hands it over per batch: the ids remembered since (grouped by time
//! bucket) and the buckets dropped since. A changelog writes each batch's ids of one bucket as one
//! [`DedupeChunk`] record and deletes a bucket's records when it is dropped, so after compaction it
//! holds about one window of ids, and [`Deduper::restore`] rebuilds the filter from them.

use crate::state_codec::{Reader, StateDecodeError, Writer, err};
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
    /// Whether changes are recorded for [`Deduper::take_changes`].
    journal: bool,
    /// Ids remembered since the last take (their times are looked up at take time).
    added: Vec<Arc<str>>,
    /// Buckets dropped since the last take.
    dropped: Vec<i64>,
}

/// What changed in a [`Deduper`] since the last [`Deduper::take_changes`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DedupeChanges {
    /// Ids remembered since, with their event times, grouped by time bucket (ascending). Ids
    /// already forgotten again are left out.
    pub added: Vec<(i64, Vec<(String, i64)>)>,
    /// Buckets dropped since (by expiry or for capacity): every id first seen in them is forgotten.
    pub dropped: Vec<i64>,
    /// The filter's clock (highest event time seen).
    pub clock: Option<i64>,
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
            journal: false,
            added: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// The same filter, recording its changes for [`Deduper::take_changes`].
    pub fn with_journal(mut self) -> Self {
        self.journal = true;
        self
    }

    /// The time bucket of event time `t` (what [`DedupeChanges`] groups ids by).
    pub fn bucket_of(&self, t: i64) -> i64 {
        t.div_euclid(self.bucket_ms)
    }

    /// What changed since the last call (empty without [`Deduper::with_journal`]).
    pub fn take_changes(&mut self) -> DedupeChanges {
        let mut by_bucket: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
        for id in std::mem::take(&mut self.added) {
            if let Some(&t) = self.ids.get(&*id) {
                by_bucket
                    .entry(self.bucket_of(t))
                    .or_default()
                    .push((id.to_string(), t));
            }
        }
        let mut dropped = std::mem::take(&mut self.dropped);
        dropped.sort_unstable();
        dropped.dedup();
        // A bucket dropped and then filled again in the same batch keeps its new ids.
        dropped.retain(|b| !self.buckets.contains_key(b));
        DedupeChanges {
            added: by_bucket.into_iter().collect(),
            dropped,
            clock: self.clock,
        }
    }

    /// Installs an id read back from a changelog (no duplicate is counted). A later sighting of the
    /// same id wins; ids outside the window of the clock so far are left out. Call
    /// [`Deduper::restore_clock`] with the changelog's clock when every id is in.
    pub fn restore(&mut self, event_id: &str, event_time_ms: i64) {
        if self.ids.get(event_id).is_some_and(|&t| t >= event_time_ms) {
            return;
        }
        self.forget(event_id);
        while self.ids.len() >= self.max_ids {
            if !self.evict_oldest() {
                break;
            }
        }
        let id: Arc<str> = Arc::from(event_id);
        self.ids.insert(Arc::clone(&id), event_time_ms);
        self.buckets
            .entry(self.bucket_of(event_time_ms))
            .or_default()
            .push_back(id);
        self.clock = Some(self.clock.map_or(event_time_ms, |c| c.max(event_time_ms)));
    }

    /// Sets the clock after a restore (it never goes back) and forgets what it puts out of the
    /// window. Nothing restored counts as a change.
    pub fn restore_clock(&mut self, clock: i64) {
        let clock = self.clock.map_or(clock, |c| c.max(clock));
        self.clock = Some(clock);
        self.expire(clock);
        self.added.clear();
        self.dropped.clear();
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
        if self.journal {
            self.added.push(Arc::clone(&id));
        }
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
            if self.journal {
                self.dropped.push(*entry.key());
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
                    if self.journal {
                        self.dropped.push(*entry.key());
                    }
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
                    if self.journal {
                        self.dropped.push(b);
                    }
                }
            }
        }
    }
}

/// First byte of a version-1 [`DedupeChunk`].
const CHUNK_V1: u8 = 0xD1;

/// One changelog record of a de-duplication filter: ids of one time bucket remembered in one batch,
/// and the filter's clock then.
///
/// Version 1: `0xD1 flags(bit0 clock) [ivar clock] uvar(count) (ivar(time - previous) str(id))*`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DedupeChunk {
    /// The filter's clock when the chunk was written.
    pub clock: Option<i64>,
    /// Ids with their first event times.
    pub ids: Vec<(String, i64)>,
}

impl DedupeChunk {
    /// The binary encoding (version byte first).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.ids.len() * 40);
        let mut w = Writer(&mut out);
        w.u8(CHUNK_V1);
        w.u8(u8::from(self.clock.is_some()));
        if let Some(c) = self.clock {
            w.ivar(c);
        }
        w.uvar(self.ids.len() as u64);
        let mut prev = 0i64;
        for (id, t) in &self.ids {
            w.ivar(t.wrapping_sub(prev));
            prev = *t;
            w.str(id);
        }
        out
    }

    /// Reads a chunk; corrupt or foreign bytes give an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        let mut r = Reader { buf: bytes };
        match r.u8() {
            Ok(CHUNK_V1) => {}
            Ok(b) => return Err(StateDecodeError(format!("unknown format byte 0x{b:02x}"))),
            Err(_) => return Err(err("empty value")),
        }
        let flags = r.u8()?;
        let clock = if flags & 1 != 0 {
            Some(r.ivar()?)
        } else {
            None
        };
        // Each id takes at least two bytes (a time difference and a length).
        let n = r.count(2)?;
        let mut ids = Vec::with_capacity(n);
        let mut prev = 0i64;
        for _ in 0..n {
            prev = prev.wrapping_add(r.ivar()?);
            ids.push((r.str()?, prev));
        }
        if !r.buf.is_empty() {
            return Err(err("bytes after the last id"));
        }
        Ok(DedupeChunk { clock, ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn journal_reports_new_ids_by_bucket_and_dropped_buckets() {
        // Buckets of 1 s (a 16 s window).
        let mut d = Deduper::new(16_000, 1000).with_journal();
        assert!(!d.is_duplicate("a", 1_500));
        assert!(!d.is_duplicate("b", 2_100));
        assert!(d.is_duplicate("a", 1_600));
        let c = d.take_changes();
        assert_eq!(
            c.added,
            vec![
                (1, vec![("a".to_string(), 1_500)]),
                (2, vec![("b".to_string(), 2_100)])
            ]
        );
        assert_eq!((c.dropped, c.clock), (vec![], Some(2_100)));
        // 17.1 s puts bucket 1 (ending at 2 s) out of the window, and bucket 2 stays.
        assert!(!d.is_duplicate("c", 18_050));
        let c = d.take_changes();
        assert_eq!(c.added, vec![(18, vec![("c".to_string(), 18_050)])]);
        assert_eq!(c.dropped, vec![1]);
        assert_eq!(
            d.take_changes(),
            DedupeChanges {
                clock: Some(18_050),
                ..Default::default()
            }
        );
        // Without a journal nothing is recorded.
        let mut plain = Deduper::new(16_000, 1000);
        plain.is_duplicate("a", 1);
        assert!(plain.take_changes().added.is_empty());
    }

    #[test]
    fn a_filter_restored_from_its_chunks_catches_the_same_duplicates() {
        let mut d = Deduper::new(60_000, 10_000).with_journal();
        let mut chunks: BTreeMap<i64, Vec<DedupeChunk>> = BTreeMap::new();
        for i in 0..500i64 {
            d.is_duplicate(&format!("e{i}"), i * 400);
            if i % 37 == 0 {
                let c = d.take_changes();
                for b in c.dropped {
                    chunks.remove(&b);
                }
                for (b, ids) in c.added {
                    let chunk = DedupeChunk {
                        clock: c.clock,
                        ids,
                    };
                    let bytes = chunk.to_bytes();
                    assert_eq!(DedupeChunk::from_bytes(&bytes).unwrap(), chunk);
                    chunks.entry(b).or_default().push(chunk);
                }
            }
        }
        let c = d.take_changes();
        for b in c.dropped {
            chunks.remove(&b);
        }
        for (b, ids) in c.added {
            chunks.entry(b).or_default().push(DedupeChunk {
                clock: c.clock,
                ids,
            });
        }
        // About one window of ids is kept, not the whole stream.
        let kept: usize = chunks.values().flatten().map(|c| c.ids.len()).sum();
        assert!(kept < 200, "{kept}");
        let mut r = Deduper::new(60_000, 10_000);
        for chunk in chunks.values().flatten() {
            for (id, t) in &chunk.ids {
                r.restore(id, *t);
            }
        }
        r.restore_clock(
            chunks
                .values()
                .flatten()
                .filter_map(|c| c.clock)
                .max()
                .unwrap(),
        );
        assert_eq!(r.len(), d.len());
        for i in 0..500i64 {
            let (id, t) = (format!("e{i}"), i * 400 + 50);
            assert_eq!(r.is_duplicate(&id, t), d.is_duplicate(&id, t), "{id}");
        }
    }

    #[test]
    fn corrupt_chunks_are_errors() {
        let good = DedupeChunk {
            clock: Some(5),
            ids: vec![("x".into(), 3), ("y".into(), -7)],
        }
        .to_bytes();
        assert!(DedupeChunk::from_bytes(&good).is_ok());
        for n in 0..good.len() {
            assert!(DedupeChunk::from_bytes(&good[..n]).is_err(), "prefix {n}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(DedupeChunk::from_bytes(&extra).is_err());
        assert!(DedupeChunk::from_bytes(b"{\"json\":1}").is_err());
        // A huge count in a short record is refused before any allocation.
        assert!(DedupeChunk::from_bytes(&[CHUNK_V1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

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
