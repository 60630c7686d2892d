//! Analytics stage: the funnel per time bucket and per segment, published when a bucket closes.
//!
//! The logic is [`clickpath_core::analytics::RollingFunnel`]. This stage feeds it clean events,
//! moves its watermark `lateness_ms` behind the newest event time seen, and on every tick
//! publishes each closed bucket as flat [`FunnelAggregate`] rows: one for all units
//! (`segment = "all"`) and one per segment value. Each instance counts the users of its
//! partitions. Uniques, totals and drop-off of all instances add up, because a user belongs to
//! one partition. Medians and p90s are per instance.
//!
//! Not wired into the topology yet. [`FUNNEL_AGGREGATE_AVSC`] must first be registered in
//! `schemas/` (the shipped registry), and the buffered events are not yet in a changelog. So a
//! restart loses the open buckets' events, whose offsets are already committed.

use clickpath_core::analytics::{BucketAggregate, FunnelCounts, FunnelSpec, RollingFunnel};
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::{AvroRecord, ClickEvent};
use serde::{Deserialize, Serialize};

/// The Avro schema of [`FunnelAggregate`], to be added to `schemas/` as `funnel_aggregate.avsc`.
pub const FUNNEL_AGGREGATE_AVSC: &str = r#"{
  "type": "record", "name": "FunnelAggregate", "namespace": "io.clickpath",
  "doc": "Funnel counts of one closed time bucket, for all units or one segment value.",
  "fields": [
    {"name": "bucket_start", "type": "long", "doc": "Bucket start, ms since the epoch."},
    {"name": "bucket_ms", "type": "long", "doc": "Bucket width (ms)."},
    {"name": "steps", "type": {"type": "array", "items": "string"}, "doc": "Step names."},
    {"name": "funnel_order", "type": "string", "doc": "ordered, strict or any_order."},
    {"name": "window_ms", "type": "long", "doc": "Conversion window (ms)."},
    {"name": "segment", "type": "string", "doc": "all, channel, device or category."},
    {"name": "segment_value", "type": "string", "doc": "The segment's value; empty for all."},
    {"name": "uniques", "type": {"type": "array", "items": "long"}, "doc": "Units reaching each step."},
    {"name": "totals", "type": {"type": "array", "items": "long"}, "doc": "Attempts reaching each step."},
    {"name": "median_step_ms", "type": {"type": "array", "items": ["null", "long"]}, "doc": "Median time from step k to k+1."},
    {"name": "p90_step_ms", "type": {"type": "array", "items": ["null", "long"]}, "doc": "90th percentile of the same."},
    {"name": "median_convert_ms", "type": ["null", "long"], "default": null, "doc": "Median first-to-last step time."},
    {"name": "p90_convert_ms", "type": ["null", "long"], "default": null, "doc": "90th percentile of the same."}
  ]
}"#;

/// One row of the analytics topic (see [`FUNNEL_AGGREGATE_AVSC`] for the fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelAggregate {
    /// Bucket start (ms since the epoch).
    pub bucket_start: i64,
    /// Bucket width (ms).
    pub bucket_ms: i64,
    /// Step names.
    pub steps: Vec<String>,
    /// `ordered`, `strict` or `any_order`.
    pub funnel_order: String,
    /// Conversion window (ms).
    pub window_ms: i64,
    /// `all`, `channel`, `device` or `category`.
    pub segment: String,
    /// The segment's value; empty for `all`.
    pub segment_value: String,
    /// Units reaching each step.
    pub uniques: Vec<i64>,
    /// Attempts reaching each step.
    pub totals: Vec<i64>,
    /// Median time from step k to step k + 1 (ms).
    pub median_step_ms: Vec<Option<i64>>,
    /// 90th percentile of the same (ms).
    pub p90_step_ms: Vec<Option<i64>>,
    /// Median time from the first to the last step (ms).
    pub median_convert_ms: Option<i64>,
    /// 90th percentile of the same (ms).
    pub p90_convert_ms: Option<i64>,
}

impl AvroRecord for FunnelAggregate {
    const FULL_NAME: &'static str = "io.clickpath.FunnelAggregate";
}

/// The analytics stage.
pub struct Analytics {
    rolling: RollingFunnel,
    steps: Vec<String>,
    order: String,
    window_ms: i64,
    output_topic: String,
    lateness_ms: i64,
    newest_ms: i64,
}

impl Analytics {
    /// A stage counting `spec`'s funnel, with buckets closing `lateness_ms` after the window,
    /// at most `max_events_per_unit` buffered per unit, writing to `output_topic`.
    pub fn new(
        spec: FunnelSpec,
        lateness_ms: i64,
        max_events_per_unit: usize,
        output_topic: &str,
    ) -> Self {
        let order = serde_json::to_value(spec.order)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Analytics {
            steps: spec.steps().iter().map(|s| s.name.clone()).collect(),
            order,
            window_ms: spec.window_ms,
            rolling: RollingFunnel::new(spec, max_events_per_unit),
            output_topic: output_topic.to_string(),
            lateness_ms: lateness_ms.max(0),
            newest_ms: i64::MIN,
        }
    }

    /// Events that came after their bucket was published.
    pub fn late_events(&self) -> u64 {
        self.rolling.late()
    }

    fn row(
        &self,
        b: &BucketAggregate,
        segment: &str,
        value: &str,
        c: &FunnelCounts,
    ) -> FunnelAggregate {
        let long = |v: &[u64]| {
            v.iter()
                .map(|&x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect()
        };
        FunnelAggregate {
            bucket_start: b.start_ms,
            bucket_ms: b.bucket_ms,
            steps: self.steps.clone(),
            funnel_order: self.order.clone(),
            window_ms: self.window_ms,
            segment: segment.to_string(),
            segment_value: value.to_string(),
            uniques: long(&c.uniques),
            totals: long(&c.totals),
            median_step_ms: c.step_timings.iter().map(|t| t.median_ms).collect(),
            p90_step_ms: c.step_timings.iter().map(|t| t.p90_ms).collect(),
            median_convert_ms: c.time_to_convert.median_ms,
            p90_convert_ms: c.time_to_convert.p90_ms,
        }
    }

    /// The rows of one closed bucket: all units first, then each segment value.
    pub fn rows(&self, b: &BucketAggregate) -> Vec<FunnelAggregate> {
        let mut out = vec![self.row(b, "all", "", &b.counts)];
        for s in &b.segments {
            for (v, c) in &s.values {
                out.push(self.row(b, s.segment.name(), v, c));
            }
        }
        out
    }
}

impl Stage for Analytics {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "analytics"
    }

    fn process(&mut self, ev: ClickEvent, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.newest_ms = self.newest_ms.max(ev.event_time);
        self.rolling.push(&ev);
        Ok(())
    }

    fn tick(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        if self.newest_ms == i64::MIN {
            return Ok(());
        }
        for b in self
            .rolling
            .advance(self.newest_ms.saturating_sub(self.lateness_ms))
        {
            // Keyed by bucket and segment: a row's key names what it counts (there is no user).
            for row in self.rows(&b) {
                let key = format!("{}/{}={}", row.bucket_start, row.segment, row.segment_value);
                ctx.emit(&self.output_topic, &key, &row)?;
            }
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.rolling.units()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::{Codec, EmbeddedRegistry, EventType};
    use std::sync::Arc;

    const MIN: i64 = 60_000;

    fn ev(user: &str, t: EventType, at: i64) -> ClickEvent {
        let mut e = ClickEvent::new(format!("{user}{at}"), user, t, at);
        e.channel = Some("email".into());
        e
    }

    fn codec() -> Codec {
        let mut r = EmbeddedRegistry::new();
        r.register(FunnelAggregate::FULL_NAME, 900, FUNNEL_AGGREGATE_AVSC)
            .unwrap();
        Codec::new(Arc::new(r))
    }

    #[test]
    fn closed_buckets_are_published_as_rows() {
        let codec = codec();
        let spec = FunnelSpec::default();
        let window = spec.window_ms;
        let day = spec.bucket_ms;
        let mut stage = Analytics::new(spec, 10 * MIN, 1000, "analytics");
        let mut outputs = Vec::new();
        let events = [
            ev("a", EventType::ProductView, 0),
            ev("a", EventType::AddToCart, MIN),
            ev("a", EventType::Purchase, 2 * MIN),
            ev("b", EventType::ProductView, 5 * MIN),
        ];
        for e in events {
            let mut ctx = Context::new(&codec, &mut outputs, 0);
            stage.process(e, &mut ctx).unwrap();
        }
        let mut ctx = Context::new(&codec, &mut outputs, 0);
        stage.tick(&mut ctx).unwrap();
        assert!(outputs.is_empty(), "the bucket is still open");
        assert_eq!(stage.state_entries(), 2);

        // An event past the first bucket's end + window + lateness closes it.
        let late_enough = day + window + 10 * MIN;
        let mut ctx = Context::new(&codec, &mut outputs, 0);
        stage
            .process(ev("c", EventType::PageView, late_enough), &mut ctx)
            .unwrap();
        stage.tick(&mut ctx).unwrap();
        let rows: Vec<FunnelAggregate> = outputs
            .iter()
            .map(|o| codec.decode(&o.payload).unwrap())
            .collect();
        let all = &rows[0];
        assert_eq!((all.segment.as_str(), all.bucket_start), ("all", 0));
        assert_eq!(all.uniques, vec![2, 1, 1]);
        assert_eq!(all.median_convert_ms, Some(2 * MIN));
        assert_eq!(all.funnel_order, "ordered");
        assert_eq!(String::from_utf8_lossy(&outputs[0].key), "0/all=");
        let email = rows
            .iter()
            .find(|r| r.segment == "channel" && r.segment_value == "email")
            .unwrap();
        assert_eq!(email.uniques, vec![2, 1, 1]);
        // Only the newest user is still buffered.
        assert_eq!(stage.state_entries(), 1);
        assert_eq!(stage.late_events(), 0);
    }
}
