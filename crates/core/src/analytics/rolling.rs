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
//!
//! Durable state: with [`RollingFunnel::with_journal`] the aggregator records which units and
//! which bucket markers changed, and [`RollingFunnel::take_changes`] hands them over per batch in
//! a compact binary encoding (see [`RollingChanges`]); [`RollingFunnel::restore_unit`] and
//! [`RollingFunnel::restore_markers`] rebuild it, so a new owner closes the same buckets with the
//! same counts.

use super::funnels::{
    Acc, FunnelCounts, FunnelSpec, NO_VALUE, Segment, SegmentBreakdown, best_attempt_in,
    totals_attempts_in,
};
use crate::state_codec::{Reader, StateDecodeError, Writer, err};
use clickpath_schema::{ClickEvent, EventType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// First byte of a version-1 unit buffer: `0xA1 count(events) (ivar(time - previous)
/// u8(event type))* flags(bit k: segment k present) str(segment value)*`.
const UNIT_V1: u8 = 0xA1;
/// First byte of version-1 markers: `0xA2 flags(bit0 open_from, bit1 closed_before) [ivar] [ivar]`.
const MARKERS_V1: u8 = 0xA2;

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
    /// Whether changes are recorded for [`RollingFunnel::take_changes`].
    journal: bool,
    /// Units changed (or dropped) since the last take.
    changed: foldhash::HashSet<String>,
    /// Whether `open_from` or `closed_before` moved since the last take.
    markers_changed: bool,
}

/// What changed in a [`RollingFunnel`] since the last [`RollingFunnel::take_changes`], encoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollingChanges {
    /// Each changed unit with its buffer's encoding, or `None` when it holds nothing any more.
    /// Sorted by unit.
    pub units: Vec<(String, Option<Vec<u8>>)>,
    /// The bucket markers' encoding, when they moved.
    pub markers: Option<Vec<u8>>,
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
            journal: false,
            changed: Default::default(),
            markers_changed: false,
        }
    }

    /// The same aggregator, recording its changes for [`RollingFunnel::take_changes`].
    pub fn with_journal(mut self) -> Self {
        self.journal = true;
        self
    }

    /// What changed since the last call (empty without [`RollingFunnel::with_journal`]).
    pub fn take_changes(&mut self) -> RollingChanges {
        let mut units: Vec<(String, Option<Vec<u8>>)> = self
            .changed
            .drain()
            .map(|unit| {
                let bytes = self.units.get(&unit).map(encode_unit);
                (unit, bytes)
            })
            .collect();
        units.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let markers = std::mem::take(&mut self.markers_changed).then(|| {
            let mut out = Vec::with_capacity(20);
            let mut w = Writer(&mut out);
            w.u8(MARKERS_V1);
            w.u8(u8::from(self.open_from.is_some())
                    | (u8::from(self.closed_before.is_some()) << 1));
            for v in [self.open_from, self.closed_before].into_iter().flatten() {
                w.ivar(v);
            }
            out
        });
        RollingChanges { units, markers }
    }

    /// Installs a unit's buffer read back from a changelog (not recorded as a change).
    pub fn restore_unit(&mut self, unit: String, bytes: &[u8]) -> Result<(), StateDecodeError> {
        let buf = decode_unit(bytes)?;
        self.units.insert(unit, buf);
        Ok(())
    }

    /// Installs the bucket markers read back from a changelog (not recorded as a change).
    pub fn restore_markers(&mut self, bytes: &[u8]) -> Result<(), StateDecodeError> {
        let mut r = Reader { buf: bytes };
        if r.u8().map_err(|_| err("empty value"))? != MARKERS_V1 {
            return Err(err("not bucket markers"));
        }
        let flags = r.u8()?;
        let open_from = if flags & 1 != 0 {
            Some(r.ivar()?)
        } else {
            None
        };
        let closed_before = if flags & 2 != 0 {
            Some(r.ivar()?)
        } else {
            None
        };
        if flags > 3 || !r.buf.is_empty() {
            return Err(err("unexpected bytes in bucket markers"));
        }
        self.open_from = open_from;
        self.closed_before = closed_before;
        Ok(())
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
        let open_from = Some(self.open_from.map_or(b, |o| o.min(b)));
        self.markers_changed |= self.journal && open_from != self.open_from;
        self.open_from = open_from;
        let key = self.spec.unit.key(e);
        if self.journal && !self.changed.contains(key) {
            self.changed.insert(key.to_string());
        }
        let buf = self.units.entry(key.to_string()).or_default();
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
            self.markers_changed |= self.journal;
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
        let (journal, changed) = (self.journal, &mut self.changed);
        self.units.retain(|unit, u| {
            let cut = u.events.partition_point(|e| e.0 < t);
            if cut > 0 && journal {
                changed.insert(unit.clone());
            }
            u.events.drain(..cut);
            !u.events.is_empty()
        });
    }
}

fn encode_unit(u: &UnitBuf) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 3 * u.events.len());
    let mut w = Writer(&mut out);
    w.u8(UNIT_V1);
    w.uvar(u.events.len() as u64);
    let mut prev = 0i64;
    for &(t, kind) in &u.events {
        w.ivar(t.wrapping_sub(prev));
        prev = t;
        w.kind(kind, 0);
    }
    let flags = u
        .segments
        .iter()
        .enumerate()
        .fold(0u8, |f, (i, s)| f | (u8::from(s.is_some()) << i));
    w.u8(flags);
    for s in u.segments.iter().flatten() {
        w.str(s);
    }
    out
}

fn decode_unit(bytes: &[u8]) -> Result<UnitBuf, StateDecodeError> {
    let mut r = Reader { buf: bytes };
    match r.u8() {
        Ok(UNIT_V1) => {}
        Ok(b) => return Err(StateDecodeError(format!("unknown format byte 0x{b:02x}"))),
        Err(_) => return Err(err("empty value")),
    }
    let n = r.count(2)?;
    let mut events = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(r.ivar()?);
        let (kind, extra) = r.kind()?;
        if extra {
            return Err(err("unexpected flag on an event type"));
        }
        events.push((prev, kind));
    }
    let flags = r.u8()?;
    if flags > 0b111 {
        return Err(err("unknown segment flags"));
    }
    let mut segments: [Option<String>; 3] = Default::default();
    for (i, slot) in segments.iter_mut().enumerate() {
        if flags & (1 << i) != 0 {
            *slot = Some(r.str()?);
        }
    }
    if !r.buf.is_empty() {
        return Err(err("bytes after the segments"));
    }
    Ok(UnitBuf { events, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{FunnelOrder, Step, Unit};
    use clickpath_schema::EventType::*;

    fn spec() -> FunnelSpec {
        FunnelSpec::new(
            vec![
                Step::of(&[ProductView]),
                Step::of(&[AddToCart]),
                Step::of(&[Purchase]),
            ],
            FunnelOrder::Ordered,
            5_000,
            Unit::User,
            10_000,
        )
        .unwrap()
    }

    fn stream(n: usize) -> Vec<ClickEvent> {
        let mut x = 0x1234_5678_u64;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut t = 0i64;
        (0..n)
            .map(|i| {
                t += next(900) as i64;
                let kind = [PageView, ProductView, AddToCart, Purchase][next(4) as usize];
                let mut e = ClickEvent::new(format!("e{i}"), format!("u{}", next(6)), kind, t);
                if next(2) == 0 {
                    e.channel = Some(format!("c{}", next(3)));
                }
                e
            })
            .collect()
    }

    /// Closes buckets every 10 events, as a stage's ticks would.
    fn run(f: &mut RollingFunnel, events: &[ClickEvent], out: &mut Vec<BucketAggregate>) {
        for (i, e) in events.iter().enumerate() {
            f.push(e);
            if i % 10 == 9 {
                out.extend(f.advance(e.event_time - 2_000));
            }
        }
    }

    #[test]
    fn an_aggregator_restored_from_its_changes_closes_the_same_buckets() {
        let events = stream(600);
        let mut reference = Vec::new();
        run(
            &mut RollingFunnel::new(spec(), 100),
            &events,
            &mut reference,
        );
        assert!(reference.len() > 20, "{} buckets", reference.len());

        let mut first = RollingFunnel::new(spec(), 100).with_journal();
        let mut got = Vec::new();
        let mut units: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut markers = None;
        let cut = 370;
        for chunk in events[..cut].chunks(10) {
            run(&mut first, chunk, &mut got);
            let c = first.take_changes();
            units.extend(c.units);
            markers = c.markers.or(markers);
        }
        assert_eq!(first.take_changes(), RollingChanges::default());
        let mut second = RollingFunnel::new(spec(), 100);
        for (unit, bytes) in units {
            if let Some(b) = bytes {
                second.restore_unit(unit, &b).unwrap();
            }
        }
        second.restore_markers(&markers.unwrap()).unwrap();
        assert_eq!(second.units(), first.units());
        run(&mut second, &events[cut..], &mut got);
        assert_eq!(got, reference);
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let mut f = RollingFunnel::new(spec(), 100).with_journal();
        let mut e = ClickEvent::new("e", "u", ProductView, 5);
        e.device = Some("mobile".into());
        f.push(&e);
        let c = f.take_changes();
        let unit = c.units[0].1.clone().unwrap();
        let markers = c.markers.unwrap();
        for n in 0..unit.len() {
            assert!(
                f.restore_unit("u".into(), &unit[..n]).is_err(),
                "unit prefix {n}"
            );
        }
        for n in 0..markers.len() {
            assert!(
                f.restore_markers(&markers[..n]).is_err(),
                "markers prefix {n}"
            );
        }
        assert!(f.restore_unit("u".into(), &markers).is_err());
        assert!(f.restore_markers(&unit).is_err());
    }
}
