//! Funnels: ordered, strict and any-order steps with a conversion window (PostHog's semantics).
//!
//! A funnel is a list of disjoint steps, each a set of event types. Within one unit's journey
//! (events sorted by event time) an *attempt* starts at an event of the first step (any step in
//! any-order mode) and collects later events into steps:
//!
//! - [`FunnelOrder::Ordered`] (PostHog "sequential", the default): the next step's earliest
//!   event after the current one; any other events may come in between;
//! - [`FunnelOrder::Strict`] (PostHog "strict order"): the very next event of the journey must be
//!   the next step; any other event, step or not, ends the attempt;
//! - [`FunnelOrder::AnyOrder`] (PostHog "any order"): each later event of a step not yet done
//!   completes that step; step *k* of the report means "any *k* distinct steps done".
//!
//! Every collected event must lie within `window_ms` of the attempt's first event (inclusive).
//! A unit's **reach** is the most steps any of its attempts completes; its *best attempt* is the
//! earliest one with that reach. **Uniques** count units by reach; **totals** count attempts,
//! where every starting event begins an attempt except those inside an attempt that already
//! completed the funnel (Mixpanel's re-entry after conversion). Step timings come from best
//! attempts. Breakdowns: a unit goes to the time bucket of its best attempt's first event and to
//! the segment values of its first event that has the attribute; an attempt's total goes to the
//! bucket of its own first event.

use super::AnalyticsError;
use super::journey::{Journey, Unit};
use super::stats::nearest_rank;
use clickpath_schema::{ClickEvent, EventType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One funnel step: the event types that count as doing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Display name (by default the event types joined by `|`).
    pub name: String,
    /// The event types that count as this step.
    pub events: Vec<EventType>,
}

impl Step {
    /// A step of the given event types, named after them.
    pub fn of(events: &[EventType]) -> Self {
        let name = events
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("|");
        Step {
            name,
            events: events.to_vec(),
        }
    }

    /// Parses `EVENT_TYPE[|EVENT_TYPE...]` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, AnalyticsError> {
        let events = s
            .split('|')
            .map(|p| EventType::parse(p.trim()).ok_or_else(|| AnalyticsError::BadStep(s.into())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Step::of(&events))
    }
}

/// How steps must follow each other (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunnelOrder {
    /// Steps in order; other events may come in between.
    #[default]
    Ordered,
    /// Steps in order with no other event in between.
    Strict,
    /// Steps in any order.
    AnyOrder,
}

impl std::str::FromStr for FunnelOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "ordered" => Ok(FunnelOrder::Ordered),
            "strict" => Ok(FunnelOrder::Strict),
            "any_order" | "any" => Ok(FunnelOrder::AnyOrder),
            _ => Err(format!(
                "unknown funnel order {s:?}; expected ordered, strict or any-order"
            )),
        }
    }
}

/// A validated funnel definition.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelSpec {
    steps: Vec<Step>,
    step_of: [Option<usize>; EventType::COUNT],
    /// Step order mode.
    pub order: FunnelOrder,
    /// Conversion window, from an attempt's first event (ms, inclusive).
    pub window_ms: i64,
    /// What a unit is.
    pub unit: Unit,
    /// Width of the time buckets of the breakdown (ms, aligned to the Unix epoch).
    pub bucket_ms: i64,
}

/// PostHog's default conversion window: 14 days.
pub const DEFAULT_WINDOW_MS: i64 = 14 * 24 * 3_600_000;
/// One day.
pub const DAY_MS: i64 = 24 * 3_600_000;

impl Default for FunnelSpec {
    /// `PRODUCT_VIEW → ADD_TO_CART → PURCHASE`, ordered, per user, 14-day window, daily buckets:
    /// the steps every supported data set has.
    fn default() -> Self {
        use EventType::*;
        FunnelSpec::new(
            vec![
                Step::of(&[ProductView]),
                Step::of(&[AddToCart]),
                Step::of(&[Purchase]),
            ],
            FunnelOrder::Ordered,
            DEFAULT_WINDOW_MS,
            Unit::User,
            DAY_MS,
        )
        .expect("the default funnel is valid")
    }
}

impl FunnelSpec {
    /// Validates the steps (at least two, none empty, pairwise disjoint) and the durations.
    pub fn new(
        steps: Vec<Step>,
        order: FunnelOrder,
        window_ms: i64,
        unit: Unit,
        bucket_ms: i64,
    ) -> Result<Self, AnalyticsError> {
        if steps.len() < 2 {
            return Err(AnalyticsError::TooFewSteps(steps.len()));
        }
        if window_ms <= 0 {
            return Err(AnalyticsError::NotPositive("the conversion window"));
        }
        if bucket_ms <= 0 {
            return Err(AnalyticsError::NotPositive("the time bucket"));
        }
        let mut step_of: [Option<usize>; EventType::COUNT] = [None; EventType::COUNT];
        for (i, s) in steps.iter().enumerate() {
            if s.events.is_empty() {
                return Err(AnalyticsError::EmptyStep(s.name.clone()));
            }
            for e in &s.events {
                match step_of[e.index()] {
                    Some(j) if j != i => {
                        return Err(AnalyticsError::OverlappingSteps {
                            event: e.to_string(),
                            first: steps[j].name.clone(),
                            second: s.name.clone(),
                        });
                    }
                    _ => step_of[e.index()] = Some(i),
                }
            }
        }
        Ok(FunnelSpec {
            steps,
            step_of,
            order,
            window_ms,
            unit,
            bucket_ms,
        })
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The step an event type belongs to, if any.
    pub fn step_of(&self, t: EventType) -> Option<usize> {
        self.step_of[t.index()]
    }

    pub(crate) fn can_start(&self, t: EventType) -> bool {
        match self.order {
            FunnelOrder::AnyOrder => self.step_of(t).is_some(),
            FunnelOrder::Ordered | FunnelOrder::Strict => self.step_of(t) == Some(0),
        }
    }
}

/// What the funnel needs of an event: its time and type. Journeys hold `&ClickEvent`; the
/// rolling aggregator keeps compact `(time, type)` pairs.
pub trait Timed {
    /// Event time (ms).
    fn time(&self) -> i64;
    /// Event type.
    fn kind(&self) -> EventType;
}

impl Timed for &ClickEvent {
    fn time(&self) -> i64 {
        self.event_time
    }
    fn kind(&self) -> EventType {
        self.event_type
    }
}

impl Timed for (i64, EventType) {
    fn time(&self) -> i64 {
        self.0
    }
    fn kind(&self) -> EventType {
        self.1
    }
}

/// One pass through the funnel, starting at one event of a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Index (in the journey) of the first event.
    pub start: usize,
    /// Index of the last event collected into a step.
    pub last: usize,
    /// Event time at which each completed step was done, in completion order.
    pub times: Vec<i64>,
}

impl Attempt {
    /// Number of steps completed.
    pub fn reached(&self) -> usize {
        self.times.len()
    }
}

/// For each position `i` of a journey and each step `s`, the first index `>= i` whose event
/// belongs to `s`. With it an attempt costs O(steps) instead of a scan to the end of its window,
/// so a journey of `n` events costs O(n · steps) rather than O(n²) (bots have long journeys).
struct NextStep {
    steps: usize,
    next: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl NextStep {
    fn new<E: Timed>(spec: &FunnelSpec, events: &[E]) -> Self {
        let steps = spec.steps.len();
        let n = events.len();
        let mut next = vec![NONE; (n + 1) * steps];
        for i in (0..n).rev() {
            let (head, tail) = next.split_at_mut((i + 1) * steps);
            head[i * steps..].copy_from_slice(&tail[..steps]);
            if let Some(s) = spec.step_of(events[i].kind()) {
                head[i * steps + s] = i as u32;
            }
        }
        NextStep { steps, next }
    }

    /// First index `>= from` of step `s`.
    fn at(&self, from: usize, s: usize) -> Option<usize> {
        let v = *self.next.get(from * self.steps + s)?;
        (v != NONE).then_some(v as usize)
    }
}

/// The attempt starting at `events[start]`, or `None` if that event cannot start one.
pub fn attempt_from<E: Timed>(spec: &FunnelSpec, events: &[E], start: usize) -> Option<Attempt> {
    attempt_with(spec, events, &NextStep::new(spec, events), start)
}

fn attempt_with<E: Timed>(
    spec: &FunnelSpec,
    events: &[E],
    next: &NextStep,
    start: usize,
) -> Option<Attempt> {
    let first = events.get(start)?;
    if !spec.can_start(first.kind()) {
        return None;
    }
    let n = spec.steps.len();
    let t0 = first.time();
    let within = |j: usize| events[j].time() - t0 <= spec.window_ms;
    let mut a = Attempt {
        start,
        last: start,
        times: vec![t0],
    };
    match spec.order {
        FunnelOrder::Ordered => {
            // The earliest event of each next step after the previous one.
            while a.reached() < n {
                match next.at(a.last + 1, a.reached()) {
                    Some(j) if within(j) => {
                        a.times.push(events[j].time());
                        a.last = j;
                    }
                    _ => break,
                }
            }
        }
        FunnelOrder::Strict => {
            // Only the very next event, and only if it is the next step.
            while a.reached() < n {
                let j = a.last + 1;
                if j < events.len()
                    && spec.step_of(events[j].kind()) == Some(a.reached())
                    && within(j)
                {
                    a.times.push(events[j].time());
                    a.last = j;
                } else {
                    break;
                }
            }
        }
        FunnelOrder::AnyOrder => {
            // Every other step is done at its earliest event after the start, if that is in time.
            let own = spec.step_of(first.kind())?;
            let mut done: Vec<usize> = (0..n)
                .filter(|&s| s != own)
                .filter_map(|s| next.at(start + 1, s))
                .filter(|&j| within(j))
                .collect();
            done.sort_unstable();
            for j in done {
                a.times.push(events[j].time());
                a.last = j;
            }
        }
    }
    Some(a)
}

/// The unit's best attempt: the most steps completed, the earliest start among equals.
pub fn best_attempt<E: Timed>(spec: &FunnelSpec, events: &[E]) -> Option<Attempt> {
    best_attempt_in(spec, events, 0..events.len())
}

/// Like [`best_attempt`], among the attempts that start at an index in `starts`.
pub fn best_attempt_in<E: Timed>(
    spec: &FunnelSpec,
    events: &[E],
    starts: std::ops::Range<usize>,
) -> Option<Attempt> {
    let next = NextStep::new(spec, events);
    let mut best: Option<Attempt> = None;
    for i in starts {
        if let Some(a) = attempt_with(spec, events, &next, i)
            && best.as_ref().is_none_or(|b| a.reached() > b.reached())
        {
            let full = a.reached() == spec.steps.len();
            best = Some(a);
            if full {
                break;
            }
        }
    }
    best
}

/// The attempts counted in totals: every starting event, except those inside an attempt that
/// completed the funnel.
pub fn totals_attempts<E: Timed>(spec: &FunnelSpec, events: &[E]) -> Vec<Attempt> {
    totals_attempts_in(spec, events, 0..events.len())
}

/// Like [`totals_attempts`], for the attempts that start at an index in `starts`.
pub fn totals_attempts_in<E: Timed>(
    spec: &FunnelSpec,
    events: &[E],
    starts: std::ops::Range<usize>,
) -> Vec<Attempt> {
    let next = NextStep::new(spec, events);
    let mut out = Vec::new();
    let mut blocked_through: Option<usize> = None;
    for i in starts {
        if blocked_through.is_some_and(|b| i <= b) {
            continue;
        }
        if let Some(a) = attempt_with(spec, events, &next, i) {
            if a.reached() == spec.steps.len() {
                blocked_through = Some(a.last);
            }
            out.push(a);
        }
    }
    out
}

/// The segment value of a unit without the attribute.
pub const NO_VALUE: &str = "(none)";

/// A dimension units are broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// Marketing channel.
    Channel,
    /// Device class: the part of `device` before the first `-` (`mobile-3fa2c1` is `mobile`).
    Device,
    /// Top-level category: the part of `category` before the first `/`.
    Category,
}

impl Segment {
    /// All segments.
    pub const ALL: [Segment; 3] = [Segment::Channel, Segment::Device, Segment::Category];

    /// The value for a unit: from its first event that has the attribute, `(none)` otherwise.
    pub fn value(self, events: &[&ClickEvent]) -> String {
        events
            .iter()
            .find_map(|e| self.of_event(e))
            .unwrap_or_else(|| NO_VALUE.to_string())
    }

    /// The value of one event, if it has the attribute.
    pub fn of_event(self, e: &ClickEvent) -> Option<String> {
        let v = match self {
            Segment::Channel => e.channel.as_deref(),
            Segment::Device => e.device.as_deref().and_then(|d| d.split('-').next()),
            Segment::Category => e.category.as_deref().and_then(|c| c.split('/').next()),
        }?;
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Segment::Channel => "channel",
            Segment::Device => "device",
            Segment::Category => "category",
        }
    }
}

/// Median and 90th percentile (nearest rank) of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StepTiming {
    /// How many durations.
    pub count: u64,
    /// Median (ms).
    pub median_ms: Option<i64>,
    /// 90th percentile (ms).
    pub p90_ms: Option<i64>,
}

impl StepTiming {
    fn of(mut d: Vec<i64>) -> Self {
        StepTiming {
            count: d.len() as u64,
            median_ms: nearest_rank(&mut d, 0.5),
            p90_ms: nearest_rank(&mut d, 0.9),
        }
    }
}

/// The funnel counts of one group of units.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunnelCounts {
    /// Units that reached at least step `k` (index 0 = entered the funnel).
    pub uniques: Vec<u64>,
    /// Attempts that reached at least step `k`.
    pub totals: Vec<u64>,
    /// Units lost between step `k` and step `k + 1` (`uniques[k] - uniques[k + 1]`).
    pub drop_off: Vec<u64>,
    /// Time from step `k` to step `k + 1` in best attempts.
    pub step_timings: Vec<StepTiming>,
    /// Time from the first to the last step, for converted units.
    pub time_to_convert: StepTiming,
}

impl FunnelCounts {
    /// Share of entering units that completed the funnel (0 when none entered).
    pub fn conversion_rate(&self) -> f64 {
        match (self.uniques.first(), self.uniques.last()) {
            (Some(&first), Some(&last)) if first > 0 => last as f64 / first as f64,
            _ => 0.0,
        }
    }
}

/// Accumulates the counts of one group of units (shared with the rolling aggregator).
#[derive(Default)]
pub(crate) struct Acc {
    uniques: Vec<u64>,
    totals: Vec<u64>,
    deltas: Vec<Vec<i64>>,
    convert: Vec<i64>,
}

impl Acc {
    pub(crate) fn new(n: usize) -> Self {
        Acc {
            uniques: vec![0; n],
            totals: vec![0; n],
            deltas: vec![Vec::new(); n - 1],
            convert: Vec::new(),
        }
    }

    pub(crate) fn add_unit(&mut self, best: &Attempt) {
        let n = self.uniques.len();
        for u in self.uniques.iter_mut().take(best.reached()) {
            *u += 1;
        }
        for (k, w) in best.times.windows(2).enumerate() {
            self.deltas[k].push(w[1] - w[0]);
        }
        if best.reached() == n {
            self.convert.push(best.times[n - 1] - best.times[0]);
        }
    }

    pub(crate) fn add_attempt(&mut self, a: &Attempt) {
        for t in self.totals.iter_mut().take(a.reached()) {
            *t += 1;
        }
    }

    pub(crate) fn finish(self) -> FunnelCounts {
        let drop_off = self.uniques.windows(2).map(|w| w[0] - w[1]).collect();
        FunnelCounts {
            drop_off,
            step_timings: self.deltas.into_iter().map(StepTiming::of).collect(),
            time_to_convert: StepTiming::of(self.convert),
            uniques: self.uniques,
            totals: self.totals,
        }
    }
}

/// The counts of one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketCounts {
    /// Bucket start (ms since the epoch).
    pub start_ms: i64,
    /// The counts.
    pub counts: FunnelCounts,
}

/// The counts per value of one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentBreakdown {
    /// The dimension.
    pub segment: Segment,
    /// Counts per value, by value.
    pub values: Vec<(String, FunnelCounts)>,
}

/// A funnel over a set of journeys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelReport {
    /// Step names.
    pub steps: Vec<String>,
    /// Order mode.
    pub order: FunnelOrder,
    /// Conversion window (ms).
    pub window_ms: i64,
    /// Unit.
    pub unit: Unit,
    /// Bucket width (ms).
    pub bucket_ms: i64,
    /// All units together.
    pub overall: FunnelCounts,
    /// Per time bucket, by start.
    pub buckets: Vec<BucketCounts>,
    /// Per segment.
    pub segments: Vec<SegmentBreakdown>,
    /// Every converted unit's time to convert (ms), ascending: the distribution's raw data.
    pub time_to_convert_ms: Vec<i64>,
}

/// Computes the funnel of `units`.
pub fn funnel_report(units: &[Journey<'_>], spec: &FunnelSpec) -> FunnelReport {
    let n = spec.steps.len();
    let mut overall = Acc::new(n);
    let mut buckets: BTreeMap<i64, Acc> = BTreeMap::new();
    let mut segments: BTreeMap<(Segment, String), Acc> = BTreeMap::new();
    let bucket_of = |t: i64| t.div_euclid(spec.bucket_ms) * spec.bucket_ms;
    for j in units {
        let ev = &j.events;
        let Some(best) = best_attempt(spec, ev) else {
            continue;
        };
        overall.add_unit(&best);
        buckets
            .entry(bucket_of(ev[best.start].event_time))
            .or_insert_with(|| Acc::new(n))
            .add_unit(&best);
        let keys: Vec<(Segment, String)> = Segment::ALL.iter().map(|&s| (s, s.value(ev))).collect();
        for k in &keys {
            segments
                .entry(k.clone())
                .or_insert_with(|| Acc::new(n))
                .add_unit(&best);
        }
        for a in totals_attempts(spec, ev) {
            overall.add_attempt(&a);
            buckets
                .entry(bucket_of(ev[a.start].event_time))
                .or_insert_with(|| Acc::new(n))
                .add_attempt(&a);
            for k in &keys {
                if let Some(acc) = segments.get_mut(k) {
                    acc.add_attempt(&a);
                }
            }
        }
    }
    let mut time_to_convert_ms = overall.convert.clone();
    time_to_convert_ms.sort_unstable();
    let mut by_segment: Vec<SegmentBreakdown> = Segment::ALL
        .iter()
        .map(|&segment| SegmentBreakdown {
            segment,
            values: Vec::new(),
        })
        .collect();
    for ((seg, value), acc) in segments {
        if let Some(b) = by_segment.iter_mut().find(|b| b.segment == seg) {
            b.values.push((value, acc.finish()));
        }
    }
    FunnelReport {
        steps: spec.steps.iter().map(|s| s.name.clone()).collect(),
        order: spec.order,
        window_ms: spec.window_ms,
        unit: spec.unit,
        bucket_ms: spec.bucket_ms,
        overall: overall.finish(),
        buckets: buckets
            .into_iter()
            .map(|(start_ms, acc)| BucketCounts {
                start_ms,
                counts: acc.finish(),
            })
            .collect(),
        segments: by_segment,
        time_to_convert_ms,
    }
}
