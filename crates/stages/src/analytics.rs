//! Analytics stage: the funnel per time bucket and per segment, published when a bucket closes.
//!
//! The logic is [`clickpath_core::analytics::RollingFunnel`], one per input partition. This
//! stage feeds each its partition's clean events, keeps each partition's watermark `lateness_ms`
//! behind that partition's newest event time (event time drifts by hours between partitions, so
//! each closes its own buckets), and publishes each bucket as soon as the partition's watermark
//! closes it (while processing the event that moved the watermark: the rows depend on the input
//! alone, not on the timing of the run; the tick, every `publish_interval_ms`, looks again) as
//! flat [`FunnelAggregate`] rows (`schemas/funnel_aggregate.avsc`): one for all units
//! (`segment = "all"`) and one per segment value, per partition.
//!
//! A row counts the users of one partition and says which in its `partition` field. Uniques,
//! totals and drop-off of different partitions add up, because a user belongs to one partition.
//! Medians and p90s are per partition. The rows do not depend on which instance owns a partition.
//!
//! The buffers are durable: each batch writes every changed unit's buffer (and the partition's
//! bucket markers, under the empty key) to the changelog, and a new owner restores them before it
//! reads the partition, so a restart or a rebalance neither loses nor repeats a bucket's events
//! (in exactly-once mode; at-least-once can publish a bucket twice, with the same counts).

use crate::config::AnalyticsConfig;
use clickpath_core::analytics::{BucketAggregate, FunnelCounts, FunnelSpec, RollingFunnel};
use clickpath_runtime::config::KafkaConfig;
use clickpath_runtime::{Context, RestoreBuffer, Stage, StageError, StateChange};
use clickpath_schema::ClickEvent;

use std::collections::BTreeMap;

// The row type lives with every other wire type; re-exported at the path it had.
pub use clickpath_schema::{FUNNEL_AGGREGATE_AVSC, FunnelAggregate};

/// The name this process's analytics rows carry: `kafka.instance_id`, else `<HOSTNAME>-<pid>`
/// (as the runtime names transactional producers).
pub fn instance_name(kafka: &KafkaConfig) -> String {
    let id = kafka.instance_id.trim();
    if id.is_empty() {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id()
        )
    } else {
        id.to_string()
    }
}

/// Key of events read without a partition (tests calling `process` directly).
const NO_PARTITION: i32 = FunnelAggregate::ALL_PARTITIONS;

/// Changelog key of a partition's bucket markers (unit keys are never empty).
const MARKERS_KEY: &[u8] = b"";

/// The analytics stage.
pub struct Analytics {
    spec: FunnelSpec,
    max_events_per_unit: usize,
    /// One aggregator per input partition.
    rolling: BTreeMap<i32, RollingFunnel>,
    steps: Vec<String>,
    order: String,
    window_ms: i64,
    output_topic: String,
    lateness_ms: i64,
    /// Newest event time per input partition.
    newest: BTreeMap<i32, i64>,
    instance: String,
    publish_interval_ms: i64,
    last_publish_ms: Option<i64>,
    flush_on_shutdown: bool,
    durable: bool,
    /// Changelog records read during a restore.
    restoring: RestoreBuffer,
}

impl Analytics {
    /// A stage counting `spec`'s funnel, with buckets closing `lateness_ms` after the window,
    /// at most `max_events_per_unit` buffered per unit, writing to `output_topic`. It looks for
    /// closed buckets on every tick; see [`Analytics::with_publish_interval_ms`].
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
            spec,
            max_events_per_unit,
            rolling: BTreeMap::new(),
            output_topic: output_topic.to_string(),
            lateness_ms: lateness_ms.max(0),
            newest: BTreeMap::new(),
            instance: String::new(),
            publish_interval_ms: 0,
            last_publish_ms: None,
            flush_on_shutdown: false,
            durable: true,
            restoring: RestoreBuffer::default(),
        }
    }

    /// Keeps the buffers in memory only (no changelog topic).
    pub fn without_changelog(mut self) -> Self {
        self.durable = false;
        self
    }

    fn fresh(&self) -> RollingFunnel {
        let f = RollingFunnel::new(self.spec.clone(), self.max_events_per_unit);
        if self.durable { f.with_journal() } else { f }
    }

    /// The stage `[analytics]` describes, writing to `output_topic` as `instance`. With
    /// `flush_on_shutdown` (the demo), a drain publishes the open buckets too, although later
    /// events could still have changed them.
    pub fn from_config(
        cfg: &AnalyticsConfig,
        output_topic: &str,
        instance: &str,
        flush_on_shutdown: bool,
    ) -> Result<Self, String> {
        let spec = cfg.funnel_spec()?;
        let mut stage =
            Analytics::new(spec, cfg.lateness_ms, cfg.max_events_per_unit, output_topic)
                .with_publish_interval_ms(cfg.publish_interval_ms);
        stage.instance = instance.to_string();
        stage.flush_on_shutdown = flush_on_shutdown;
        Ok(stage)
    }

    /// Looks for closed buckets at most once per `ms` of wall time (0: on every tick).
    pub fn with_publish_interval_ms(mut self, ms: u64) -> Self {
        self.publish_interval_ms = i64::try_from(ms).unwrap_or(i64::MAX);
        self
    }

    /// Events that came after their bucket was published.
    pub fn late_events(&self) -> u64 {
        self.rolling.values().map(RollingFunnel::late).sum()
    }

    /// Events dropped because their unit's buffer was full.
    pub fn evicted_events(&self) -> u64 {
        self.rolling.values().map(RollingFunnel::evicted).sum()
    }

    /// A partition's watermark: `lateness_ms` behind its newest event time; `None` before any
    /// event of it.
    pub fn watermark(&self, partition: i32) -> Option<i64> {
        self.newest
            .get(&partition)
            .map(|t| t.saturating_sub(self.lateness_ms))
    }

    fn row(
        &self,
        partition: i32,
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
            instance: self.instance.clone(),
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
            partition,
        }
    }

    /// The rows of one closed bucket of `partition`: all units first, then each segment value.
    pub fn rows(&self, partition: i32, b: &BucketAggregate) -> Vec<FunnelAggregate> {
        let mut out = vec![self.row(partition, b, "all", "", &b.counts)];
        for s in &b.segments {
            for (v, c) in &s.values {
                out.push(self.row(partition, b, s.segment.name(), v, c));
            }
        }
        out
    }

    fn publish(
        &self,
        partition: i32,
        buckets: Vec<BucketAggregate>,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        for b in buckets {
            // Keyed by bucket and segment: rows of one bucket and segment share a partition of the
            // output topic, whichever input partition they count.
            // An aggregate of many users' events: part of no single record's trace.
            for row in self.rows(partition, &b) {
                ctx.emit_with_trace(&self.output_topic, &row.key(), &row, Vec::new(), None)?;
            }
        }
        Ok(())
    }
}

impl Analytics {
    /// [`Stage::process`] by reference: the chained topology hands one event to several stages.
    pub fn process_event(
        &mut self,
        ev: &ClickEvent,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        let partition = ctx.partition().unwrap_or(NO_PARTITION);
        let newest = self.newest.entry(partition).or_insert(i64::MIN);
        *newest = (*newest).max(ev.event_time);
        if !self.rolling.contains_key(&partition) {
            let fresh = self.fresh();
            self.rolling.insert(partition, fresh);
        }
        let watermark = self.watermark(partition).unwrap_or(i64::MIN);
        let rolling = self.rolling.get_mut(&partition).expect("inserted");
        rolling.push(ev);
        // Buckets close as the partition's event time passes them, here rather than at a tick: which
        // events a bucket counts then depends on the input alone, not on when ticks fire (a late
        // event lands before or after its bucket closed the same way in every run, and in a run
        // restored from the changelog).
        let closed = rolling.advance(watermark);
        if !closed.is_empty() {
            self.publish(partition, closed, ctx)?;
        }
        Ok(())
    }
}

impl Stage for Analytics {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "analytics"
    }

    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.process_event(&ev, ctx)
    }

    fn tick(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let now = ctx.now_ms();
        if self
            .last_publish_ms
            .is_some_and(|last| now.saturating_sub(last) < self.publish_interval_ms)
        {
            return Ok(());
        }
        self.last_publish_ms = Some(now);
        let partitions: Vec<i32> = self.rolling.keys().copied().collect();
        for p in partitions {
            let Some(watermark) = self.watermark(p) else {
                continue;
            };
            let buckets = self.rolling.get_mut(&p).expect("listed").advance(watermark);
            self.publish(p, buckets, ctx)?;
        }
        Ok(())
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        // The new owner restores these partitions' buffers from the changelog; drop our copy.
        for p in partitions {
            self.newest.remove(p);
            self.rolling.remove(p);
            self.restoring.forget(*p);
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        if self.flush_on_shutdown {
            let partitions: Vec<i32> = self.rolling.keys().copied().collect();
            for p in partitions {
                let buckets = self.rolling.get_mut(&p).expect("listed").flush();
                self.publish(p, buckets, ctx)?;
            }
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.rolling.values().map(RollingFunnel::units).sum()
    }

    fn is_stateful(&self) -> bool {
        self.durable
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        let mut out = Vec::new();
        for (&partition, f) in &mut self.rolling {
            let changes = f.take_changes();
            out.extend(changes.units.into_iter().map(|(unit, value)| StateChange {
                partition,
                key: unit.into_bytes(),
                value,
            }));
            if let Some(m) = changes.markers {
                out.push(StateChange {
                    partition,
                    key: MARKERS_KEY.to_vec(),
                    value: Some(m),
                });
            }
        }
        out
    }

    fn restore(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        self.restoring.record(partition, key, value);
        Ok(())
    }

    fn on_assign(&mut self, partitions: &[i32]) {
        for &p in partitions {
            let Some(records) = self.restoring.take(p) else {
                continue;
            };
            let mut f = self.fresh();
            for (key, bytes) in records {
                let restored = if key == MARKERS_KEY {
                    f.restore_markers(&bytes)
                } else {
                    match String::from_utf8(key) {
                        Ok(unit) => f.restore_unit(unit, &bytes),
                        Err(_) => Err(clickpath_core::state_codec::StateDecodeError(
                            "unit key is not UTF-8".into(),
                        )),
                    }
                };
                // A record this version cannot read must not stop the partition: that unit's
                // buffered events are not counted.
                if let Err(e) = restored {
                    tracing::error!(partition = p, error = %e, "Analytics changelog record does not parse; skipped.");
                }
            }
            self.rolling.insert(p, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::{AvroRecord, Codec, EmbeddedRegistry, EventType, SchemaRegistry};

    const MIN: i64 = 60_000;

    fn ev(user: &str, t: EventType, at: i64) -> ClickEvent {
        let mut e = ClickEvent::new(format!("{user}{at}"), user, t, at);
        e.channel = Some("email".into());
        e
    }

    /// The shipped registry: the rows must encode with `schemas/funnel_aggregate.avsc`.
    fn codec() -> Codec {
        Codec::embedded()
    }

    fn decode(codec: &Codec, outputs: &[clickpath_runtime::Output]) -> Vec<FunnelAggregate> {
        outputs
            .iter()
            .map(|o| codec.decode(&o.payload).unwrap())
            .collect()
    }

    #[test]
    fn the_row_type_matches_the_shipped_schema() {
        let codec = codec();
        assert_eq!(
            EmbeddedRegistry::shipped()
                .latest_id(FunnelAggregate::FULL_NAME)
                .unwrap(),
            11
        );
        let row = FunnelAggregate {
            instance: "pod-0".into(),
            bucket_start: 3_600_000,
            bucket_ms: 3_600_000,
            steps: vec!["PRODUCT_VIEW".into(), "PURCHASE|ADD_TO_CART".into()],
            funnel_order: "strict".into(),
            window_ms: 60_000,
            segment: "device".into(),
            segment_value: "mobile ✓".into(),
            uniques: vec![5, 2],
            totals: vec![9, 2],
            median_step_ms: vec![Some(1_000)],
            p90_step_ms: vec![None],
            median_convert_ms: Some(1_000),
            p90_convert_ms: None,
            partition: 2,
        };
        let back: FunnelAggregate = codec.decode(&codec.encode(&row).unwrap()).unwrap();
        assert_eq!(back, row);
        // Field order: the schema's field names, in order, are the struct's.
        let schema: serde_json::Value = serde_json::from_str(FUNNEL_AGGREGATE_AVSC).unwrap();
        let names: Vec<&str> = schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let value = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "same field names");
        assert_eq!(names[0], "instance");
        assert_eq!(row.key(), "3600000/device=mobile ✓");
    }

    #[test]
    fn each_partition_closes_its_own_buckets() {
        let codec = codec();
        let spec = FunnelSpec::default();
        let close_first = spec.bucket_ms + spec.window_ms;
        let mut stage = Analytics::new(spec, 0, 1000, "analytics");
        let mut outputs = Vec::new();
        let feed = |stage: &mut Analytics, p: i32, e: ClickEvent, outputs: &mut Vec<_>| {
            let mut ctx = Context::new(&codec, outputs, 0).for_partition(p);
            stage.process(e, &mut ctx).unwrap();
            stage.tick(&mut ctx).unwrap();
        };
        feed(
            &mut stage,
            0,
            ev("a", EventType::ProductView, 0),
            &mut outputs,
        );
        feed(
            &mut stage,
            1,
            ev("b", EventType::ProductView, MIN),
            &mut outputs,
        );
        // Partition 0 runs far ahead and closes its first bucket; partition 1 still fills its own.
        feed(
            &mut stage,
            0,
            ev("a", EventType::PageView, 3 * close_first),
            &mut outputs,
        );
        assert_eq!(stage.watermark(0), Some(3 * close_first));
        assert_eq!(stage.watermark(1), Some(MIN));
        let rows = decode(&codec, &outputs);
        assert_eq!((rows[0].partition, rows[0].bucket_start), (0, 0));
        assert_eq!(rows[0].uniques, vec![1, 0, 0], "only a");
        outputs.clear();
        feed(
            &mut stage,
            1,
            ev("b", EventType::AddToCart, 2 * MIN),
            &mut outputs,
        );
        feed(
            &mut stage,
            1,
            ev("b", EventType::PageView, close_first),
            &mut outputs,
        );
        let rows = decode(&codec, &outputs);
        assert_eq!((rows[0].partition, rows[0].segment.as_str()), (1, "all"));
        assert_eq!(rows[0].uniques, vec![1, 1, 0], "b's add to cart counted");
    }

    #[test]
    fn a_new_owner_publishes_the_rows_the_old_one_would_have() {
        let codec = codec();
        let spec = FunnelSpec::default();
        let close_first = spec.bucket_ms + spec.window_ms;
        let events = [
            ev("a", EventType::ProductView, 0),
            ev("b", EventType::ProductView, MIN),
            ev("a", EventType::AddToCart, 2 * MIN),
            ev("b", EventType::AddToCart, 3 * MIN),
            ev("a", EventType::Purchase, 4 * MIN),
            ev("c", EventType::PageView, close_first),
        ];
        let feed = |stage: &mut Analytics, events: &[ClickEvent]| {
            let mut outputs = Vec::new();
            for e in events {
                let mut ctx = Context::new(&codec, &mut outputs, 0).for_partition(4);
                stage.process(e.clone(), &mut ctx).unwrap();
                stage.tick(&mut ctx).unwrap();
            }
            decode(&codec, &outputs)
        };
        let mut uninterrupted = Analytics::new(spec.clone(), 0, 1000, "analytics");
        let reference = feed(&mut uninterrupted, &events);
        assert!(!reference.is_empty());

        let mut first = Analytics::new(spec.clone(), 0, 1000, "analytics");
        assert!(feed(&mut first, &events[..3]).is_empty());
        let mut log: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for c in first.take_state_changes() {
            assert_eq!(c.partition, 4);
            log.insert(c.key, c.value);
        }
        first.on_revoke(&[4]);
        assert_eq!(first.state_entries(), 0);
        let mut second = Analytics::new(spec, 0, 1000, "analytics");
        for (k, v) in &log {
            second.restore(4, k, v.as_deref()).unwrap();
        }
        second.on_assign(&[4]);
        assert_eq!(second.state_entries(), 2);
        assert_eq!(feed(&mut second, &events[3..]), reference);
    }

    #[test]
    fn publishes_a_bucket_with_the_event_that_closes_it_and_flushes_on_shutdown() {
        let codec = codec();
        let spec = FunnelSpec::default();
        let close_first = spec.bucket_ms + spec.window_ms;
        let cfg = AnalyticsConfig {
            publish_interval_ms: 10_000,
            lateness_ms: 0,
            window_ms: spec.window_ms,
            bucket_ms: spec.bucket_ms,
            ..AnalyticsConfig::default()
        };
        let mut stage = Analytics::from_config(&cfg, "analytics", "pod-7", true).unwrap();
        let mut outputs = Vec::new();
        let mut ctx = Context::new(&codec, &mut outputs, 1_000);
        stage
            .process(ev("a", EventType::ProductView, 0), &mut ctx)
            .unwrap();
        stage.tick(&mut ctx).unwrap();
        assert!(outputs.is_empty(), "nothing closed yet");
        let mut ctx = Context::new(&codec, &mut outputs, 2_000);
        stage
            .process(ev("c", EventType::ProductView, close_first), &mut ctx)
            .unwrap();
        let rows = decode(&codec, &outputs);
        assert!(!rows.is_empty(), "published with the event that closed it");
        assert!(
            rows.iter()
                .all(|r| r.bucket_start == 0 && r.instance == "pod-7")
        );
        let published = outputs.len();
        let mut ctx = Context::new(&codec, &mut outputs, 20_000);
        stage.tick(&mut ctx).unwrap();
        assert_eq!(outputs.len(), published, "a tick publishes nothing twice");
        outputs.clear();
        // The drain publishes the still open bucket of `c`.
        let mut ctx = Context::new(&codec, &mut outputs, 12_000);
        stage.on_shutdown(&mut ctx).unwrap();
        let rows = decode(&codec, &outputs);
        assert_eq!(
            rows[0].bucket_start,
            close_first / cfg.bucket_ms * cfg.bucket_ms
        );
        assert_eq!(rows[0].uniques, vec![1, 0, 0]);

        let bad = AnalyticsConfig {
            steps: vec!["PURCHASE".into()],
            ..AnalyticsConfig::default()
        };
        let err = Analytics::from_config(&bad, "analytics", "x", false)
            .err()
            .unwrap();
        assert!(err.contains("analytics.steps"), "{err}");
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
        let rows = decode(&codec, &outputs);
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
