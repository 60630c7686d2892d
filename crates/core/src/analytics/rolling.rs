//! The funnel per time bucket, computed incrementally as events arrive (for a streaming stage).
//!
//! [`RollingFunnel`] buffers each unit's recent `(time, type)` pairs in event-time order. A
//! bucket `[s, s + bucket)` is **closed** once the watermark passes `s + bucket + window`: no
//! attempt that starts in it can change any more. It is then counted and emitted, and
//! events older than the next open bucket are evicted. Nothing later than that is ever needed,
//! because attempts only look forward from their start.
//!
//! Per bucket, a unit counts if an attempt starts in the bucket. Its reach is the best attempt
//! *starting in that bucket* (the batch [`super::funnel_report`] instead places each unit once,
//! in the bucket of its best attempt overall). Totals block re-entry only within a bucket.
//! A unit's segment values come from the first event *received* with the attribute. Events
//! older than the oldest open bucket are late and are counted in [`RollingFunnel::late`], not
//! used. A unit keeps at most `max_events_per_unit` events; the oldest go first.

use super::funnels::{
    Acc, FunnelCounts, FunnelSpec, NO_VALUE, Segment, SegmentBreakdown, best_attempt_in,
    totals_attempts_in,
};
use clickpath_schema::{ClickEvent, EventType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The funnel of one closed bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketAggregate {
    /// Bucket start (ms since the epoch).
    pub start_ms: i64,
    /// Bucket width (ms).
    pub bucket_ms: i64,
    /// All units with an attempt starting in the bucket.
    pub counts: FunnelCounts,
    /// The same per segment value.
    pub segments: Vec<SegmentBreakdown>,
}

#[derive(Default)]
struct UnitBuf {
    events: Vec<(i64, EventType)>,
    segments: [Option<String>; 3],
}

/// Incremental funnel aggregation per time bucket (see the module docs).
pub struct RollingFunnel {
    spec: FunnelSpec,
    max_events_per_unit: usize,
    units: HashMap<String, UnitBuf>,
    /// Start of the oldest bucket not yet emitted; `None` when nothing is buffered.
    open_from: Option<i64>,
    /// End of the newest emitted bucket: earlier events are late.
    closed_before: Option<i64>,
    late: u64,
    evicted: u64,
}

impl RollingFunnel {
    /// An empty aggregator.
    pub fn new(spec: FunnelSpec, max_events_per_unit: usize) -> Self {
        RollingFunnel {
            spec,
            max_events_per_unit: max_events_per_unit.max(1),
            units: HashMap::new(),
            open_from: None,
            closed_before: None,
            late: 0,
            evicted: 0,
        }
    }

    /// Events that arrived for an already emitted bucket (not used).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Events dropped because their unit's buffer was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Units currently buffered.
    pub fn units(&self) -> usize {
        self.units.len()
    }

    fn bucket_of(&self, t: i64) -> i64 {
        t.div_euclid(self.spec.bucket_ms) * self.spec.bucket_ms
    }

    /// Adds one event.
    pub fn push(&mut self, e: &ClickEvent) {
        let t = e.event_time;
        let b = self.bucket_of(t);
        if self.closed_before.is_some_and(|c| t < c) {
            self.late += 1;
            return;
        }
        self.open_from = Some(self.open_from.map_or(b, |o| o.min(b)));
        let buf = self
            .units
            .entry(self.spec.unit.key(e).to_string())
            .or_default();
        // After any equal times: simultaneous events keep their arrival order, as in batch.
        let at = buf.events.partition_point(|x| x.0 <= t);
        buf.events.insert(at, (t, e.event_type));
        if buf.events.len() > self.max_events_per_unit {
            buf.events.remove(0);
            self.evicted += 1;
        }
        for (slot, s) in buf.segments.iter_mut().zip(Segment::ALL) {
            if slot.is_none() {
                *slot = s.of_event(e);
            }
        }
    }

    /// Emits every bucket the watermark has closed, oldest first.
    pub fn advance(&mut self, watermark: i64) -> Vec<BucketAggregate> {
        let mut out = Vec::new();
        while let Some(b) = self.open_from {
            let end = b + self.spec.bucket_ms;
            if watermark < end.saturating_add(self.spec.window_ms) {
                break;
            }
            out.extend(self.close(b));
            self.evict_before(end);
            self.closed_before = Some(end);
            // Jump over empty buckets to the oldest buffered event's.
            let oldest = self
                .units
                .values()
                .filter_map(|u| u.events.first().map(|e| e.0))
                .min();
            self.open_from = oldest.map(|t| self.bucket_of(t).max(end));
        }
        out
    }

    /// Emits every bucket that has events, as at shutdown.
    pub fn flush(&mut self) -> Vec<BucketAggregate> {
        self.advance(i64::MAX)
    }

    fn close(&self, b: i64) -> Option<BucketAggregate> {
        let end = b + self.spec.bucket_ms;
        let n = self.spec.steps().len();
        let mut all = Acc::new(n);
        let mut segs: BTreeMap<(Segment, String), Acc> = BTreeMap::new();
        let mut any = false;
        for u in self.units.values() {
            let lo = u.events.partition_point(|e| e.0 < b);
            let hi = u.events.partition_point(|e| e.0 < end);
            let Some(best) = best_attempt_in(&self.spec, &u.events, lo..hi) else {
                continue;
            };
            any = true;
            let attempts = totals_attempts_in(&self.spec, &u.events, lo..hi);
            all.add_unit(&best);
            attempts.iter().for_each(|a| all.add_attempt(a));
            for (slot, s) in u.segments.iter().zip(Segment::ALL) {
                let v = slot.clone().unwrap_or_else(|| NO_VALUE.to_string());
                let acc = segs.entry((s, v)).or_insert_with(|| Acc::new(n));
                acc.add_unit(&best);
                attempts.iter().for_each(|a| acc.add_attempt(a));
            }
        }
        if !any {
            return None;
        }
        let mut segments: Vec<SegmentBreakdown> = Segment::ALL
            .iter()
            .map(|&segment| SegmentBreakdown {
                segment,
                values: Vec::new(),
            })
            .collect();
        for ((s, v), acc) in segs {
            if let Some(sb) = segments.iter_mut().find(|x| x.segment == s) {
                sb.values.push((v, acc.finish()));
            }
        }
        Some(BucketAggregate {
            start_ms: b,
            bucket_ms: self.spec.bucket_ms,
            counts: all.finish(),
            segments,
        })
    }

    fn evict_before(&mut self, t: i64) {
        self.units.retain(|_, u| {
            let cut = u.events.partition_point(|e| e.0 < t);
            u.events.drain(..cut);
            !u.events.is_empty()
        });
    }
}
