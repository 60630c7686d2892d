//! `clickpath report --topic`: the report's input read from Kafka instead of a file.
//!
//! - A topic of click events (the clean topic, or the raw one) is replayed and analysed exactly like
//!   a file: every record from `--since` (by Kafka record timestamp; `offsets_for_times`) up to the
//!   end offsets seen at start, or up to `--until`, or `--max-records`, whichever comes first.
//! - The analytics topic holds [`FunnelAggregate`] rows, already counted per time bucket and
//!   segment by the analytics stages. They are merged ([`merge_rows`]): the latest row of each
//!   `(bucket, segment, value, partition)` wins (a replay repeats rows, possibly from another
//!   instance after a rebalance), and the rows of different partitions add up, because a user
//!   belongs to one partition. Version-1 rows (partition -1) counted every partition of their
//!   instance and are told apart by instance instead.
//!
//! Reading uses no consumer group and commits nothing, so it never disturbs the stages.

use clickpath_core::analytics::{FunnelCounts, StepTiming};
use clickpath_runtime::BusConfig;
use clickpath_runtime::kafka::base_client_config;
use clickpath_schema::FunnelAggregate;
use clickpath_schema::codec::{AvroRecord, Codec};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which records of a topic to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicRange {
    /// First record timestamp to read (ms since the epoch, inclusive); `None`: the beginning.
    pub since_ms: Option<i64>,
    /// Last record timestamp to read (ms, exclusive); `None`: up to the end offsets seen at start.
    pub until_ms: Option<i64>,
    /// Stop after this many records (over all partitions).
    pub max_records: Option<u64>,
}

/// What a topic read found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRead<T> {
    /// The decoded records, partition by partition, in offset order.
    pub records: Vec<T>,
    /// Records that did not decode as `T` (skipped).
    pub undecodable: u64,
    /// Partitions read.
    pub partitions: usize,
}

/// Parses a `--since`/`--until` value: ms since the epoch, an RFC 3339 time with its offset
/// (`2026-11-30T12:00:00Z`, `2026-11-30T14:00:00.250+02:00`), or a UTC date (`2026-11-30`). Dates
/// that do not exist (`2026-02-31`) are errors.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = |why: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{s:?} is not a time ({why}): give ms since the epoch, an RFC 3339 time like \
             2026-11-30T12:00:00Z or 2026-11-30T14:00:00+02:00, or a UTC date like 2026-11-30"
        )
    };
    let nanos = if s.contains(['T', 't']) {
        time::OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| bad(&e))?
            .unix_timestamp_nanos()
    } else {
        let num = |x: &str| x.parse::<i32>().map_err(|_| bad(&"not a date"));
        let parts: Vec<&str> = s.split('-').collect();
        let [y, m, d] = parts.as_slice() else {
            return Err(bad(&"not a date"));
        };
        let month = u8::try_from(num(m)?)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .ok_or_else(|| bad(&"no such month"))?;
        let day = u8::try_from(num(d)?).map_err(|_| bad(&"no such day"))?;
        time::Date::from_calendar_date(num(y)?, month, day)
            .map_err(|e| bad(&e))?
            .midnight()
            .assume_utc()
            .unix_timestamp_nanos()
    };
    i64::try_from(nanos.div_euclid(1_000_000)).map_err(|_| bad(&"out of range"))
}

/// Decodes every payload as `T`; the ones that do not decode are counted and skipped.
pub fn decode_all<T: AvroRecord>(codec: &Codec, read: TopicRead<Vec<u8>>) -> TopicRead<T> {
    let mut out = TopicRead {
        records: Vec::with_capacity(read.records.len()),
        undecodable: read.undecodable,
        partitions: read.partitions,
    };
    for (i, payload) in read.records.iter().enumerate() {
        match codec.decode::<T>(payload) {
            Ok(v) => out.records.push(v),
            Err(e) => {
                out.undecodable += 1;
                if out.undecodable <= 10 {
                    tracing::warn!(record = i, error = %e, "Record skipped: it does not decode.");
                }
            }
        }
    }
    out
}

/// The schema subject of the first payload that names a known schema (`io.clickpath.ClickEvent`,
/// `io.clickpath.FunnelAggregate`, ...): what the topic holds.
pub fn first_subject(payloads: &[Vec<u8>]) -> Option<String> {
    let registry = clickpath_schema::EmbeddedRegistry::shipped();
    payloads.iter().find_map(|p| {
        let id = u32::from_be_bytes(p.get(1..5)?.try_into().ok()?);
        (p.first() == Some(&0))
            .then(|| registry.subject_of(id).map(str::to_string))
            .flatten()
    })
}

/// Reads the record values of `topic` within `range`. Gives up with an error when the topic does
/// not exist or the broker does not answer within `timeout`.
pub fn read_topic(
    cfg: &BusConfig,
    topic: &str,
    range: TopicRange,
    timeout: Duration,
) -> anyhow::Result<TopicRead<Vec<u8>>> {
    let mut c = base_client_config(cfg);
    c.set("group.id", format!("{}.report", cfg.kafka.group_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = c.create()?;
    let wait = Duration::from_secs(10).min(timeout);
    let md = consumer.fetch_metadata(Some(topic), wait)?;
    let partitions = md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        anyhow::bail!("topic {topic} does not exist or has no partitions");
    }
    // Where to start, and where the data ends now: read up to these offsets, not forever.
    let mut start = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut from_time = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, p, wait)?;
        if high > low {
            ends.insert(p, high);
        }
        match range.since_ms {
            Some(t) => from_time.add_partition_offset(topic, p, Offset::Offset(t))?,
            None => start.add_partition_offset(topic, p, Offset::Offset(low))?,
        }
    }
    if range.since_ms.is_some() {
        for e in consumer.offsets_for_times(from_time, wait)?.elements() {
            // No record at or after `since`: nothing to read in that partition.
            match e.offset() {
                Offset::Offset(o) => {
                    start.add_partition_offset(topic, e.partition(), Offset::Offset(o))?
                }
                _ => {
                    ends.remove(&e.partition());
                }
            }
        }
    }
    let mut out = TopicRead {
        records: Vec::new(),
        undecodable: 0,
        partitions,
    };
    let wanted: TopicPartitionList = {
        let mut l = TopicPartitionList::new();
        for e in start.elements() {
            if let (Some(&end), Offset::Offset(o)) = (ends.get(&e.partition()), e.offset())
                && o < end
            {
                l.add_partition_offset(topic, e.partition(), Offset::Offset(o))?;
                continue;
            }
            ends.remove(&e.partition());
        }
        l
    };
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&wanted)?;
    let deadline = Instant::now() + timeout;
    let max = range.max_records.unwrap_or(u64::MAX);
    let mut read = 0u64;
    while !ends.is_empty() && read < max {
        if Instant::now() > deadline {
            anyhow::bail!(
                "reading {topic} took longer than {} s; {} partition(s) not read to their end",
                timeout.as_secs(),
                ends.len()
            );
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            // In read_committed mode the end offset may be a transaction marker no record sits at:
            // a partition whose position reached the end is done.
            for e in consumer.position()?.elements() {
                if let (Offset::Offset(o), Some(&end)) = (e.offset(), ends.get(&e.partition()))
                    && o >= end
                {
                    ends.remove(&e.partition());
                }
            }
            continue;
        };
        let m = msg?;
        let p = m.partition();
        let Some(&end) = ends.get(&p) else {
            continue;
        };
        if m.offset() >= end {
            ends.remove(&p);
            continue;
        }
        if m.offset() + 1 >= end {
            ends.remove(&p);
        }
        if let (Some(until), Some(ts)) = (range.until_ms, m.timestamp().to_millis())
            && ts >= until
        {
            // Timestamps grow with offsets (log-append time or a well-behaved producer).
            ends.remove(&p);
            continue;
        }
        read += 1;
        match m.payload() {
            Some(v) => out.records.push(v.to_vec()),
            // A tombstone has no value to decode.
            None => out.undecodable += 1,
        }
    }
    Ok(out)
}

/// What one row counts: its input partition, or for a version-1 row every partition of its instance.
fn counter(r: &FunnelAggregate) -> String {
    if r.partition >= 0 {
        format!("partition {}", r.partition)
    } else {
        format!("instance {}", r.instance)
    }
}

/// The analytics rows of one bucket, segment and value, summed over the partitions (or, for
/// version-1 rows, instances) that counted them.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedRow {
    /// Bucket start (ms).
    pub bucket_start: i64,
    /// `all`, `channel`, `device` or `category`.
    pub segment: String,
    /// The segment value (empty for `all`).
    pub segment_value: String,
    /// How many rows were added: one per partition (or, for version-1 rows, per instance).
    pub parts: usize,
    /// The summed counts. Median and p90 timings are kept only when one part counted the
    /// bucket (percentiles of parts do not add up).
    pub counts: FunnelCounts,
}

/// The funnel the rows describe, when they all share one.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedAggregates {
    /// Step names.
    pub steps: Vec<String>,
    /// `ordered`, `strict` or `any_order`.
    pub funnel_order: String,
    /// Conversion window (ms).
    pub window_ms: i64,
    /// Bucket width (ms).
    pub bucket_ms: i64,
    /// One per bucket, segment and value; buckets ascending, `all` first within a bucket.
    pub rows: Vec<MergedRow>,
    /// Rows dropped because a later row of the same instance replaced them.
    pub replaced: usize,
    /// Rows dropped because they count another funnel than the newest row's.
    pub other_funnel: usize,
}

impl MergedAggregates {
    /// Every bucket's `all` counts added up: units are counted once per bucket they started an
    /// attempt in.
    pub fn overall(&self) -> FunnelCounts {
        let n = self.steps.len();
        let parts: Vec<&FunnelCounts> = self
            .rows
            .iter()
            .filter(|r| r.segment == "all")
            .map(|r| &r.counts)
            .collect();
        sum_counts(n, &parts, false)
    }

    /// Per segment kind, each value's counts summed over the buckets.
    pub fn segments(&self) -> Vec<(String, Vec<(String, FunnelCounts)>)> {
        let n = self.steps.len();
        let mut by: BTreeMap<(String, String), Vec<&FunnelCounts>> = BTreeMap::new();
        for r in self.rows.iter().filter(|r| r.segment != "all") {
            by.entry((r.segment.clone(), r.segment_value.clone()))
                .or_default()
                .push(&r.counts);
        }
        let mut out: Vec<(String, Vec<(String, FunnelCounts)>)> = Vec::new();
        for ((seg, value), parts) in by {
            let c = sum_counts(n, &parts, false);
            match out.last_mut() {
                Some((s, values)) if *s == seg => values.push((value, c)),
                _ => out.push((seg, vec![(value, c)])),
            }
        }
        out
    }
}

fn sum_counts(n: usize, parts: &[&FunnelCounts], keep_timings: bool) -> FunnelCounts {
    let mut uniques = vec![0u64; n];
    let mut totals = vec![0u64; n];
    for p in parts {
        for (k, v) in p.uniques.iter().enumerate().take(n) {
            uniques[k] += v;
        }
        for (k, v) in p.totals.iter().enumerate().take(n) {
            totals[k] += v;
        }
    }
    let none = StepTiming {
        count: 0,
        median_ms: None,
        p90_ms: None,
    };
    let one = keep_timings && parts.len() == 1;
    FunnelCounts {
        drop_off: (0..n.saturating_sub(1))
            .map(|k| uniques[k].saturating_sub(uniques[k + 1]))
            .collect(),
        uniques,
        totals,
        step_timings: if one {
            parts[0].step_timings.clone()
        } else {
            vec![none; n.saturating_sub(1)]
        },
        time_to_convert: if one { parts[0].time_to_convert } else { none },
    }
}

fn counts_of(row: &FunnelAggregate) -> FunnelCounts {
    let u = |v: &[i64]| v.iter().map(|&x| x.max(0) as u64).collect::<Vec<_>>();
    let timing = |median_ms: Option<i64>, p90_ms: Option<i64>| StepTiming {
        // The rows do not say how many durations: count the timings that exist.
        count: u64::from(median_ms.is_some()),
        median_ms,
        p90_ms,
    };
    let uniques = u(&row.uniques);
    FunnelCounts {
        drop_off: uniques
            .windows(2)
            .map(|w| w[0].saturating_sub(w[1]))
            .collect(),
        uniques,
        totals: u(&row.totals),
        step_timings: row
            .median_step_ms
            .iter()
            .zip(row.p90_step_ms.iter().chain(std::iter::repeat(&None)))
            .map(|(&m, &p)| timing(m, p))
            .collect(),
        time_to_convert: timing(row.median_convert_ms, row.p90_convert_ms),
    }
}

/// Merges analytics rows read in topic order (see the module docs). Rows of a funnel other than
/// the last row's (the configuration changed) are left out and counted.
pub fn merge_rows(rows: &[FunnelAggregate]) -> Option<MergedAggregates> {
    let last = rows.last()?;
    let same_funnel = |r: &FunnelAggregate| {
        r.steps == last.steps
            && r.funnel_order == last.funnel_order
            && r.window_ms == last.window_ms
            && r.bucket_ms == last.bucket_ms
    };
    let mut latest: BTreeMap<(i64, bool, String, String, String), &FunnelAggregate> =
        BTreeMap::new();
    let mut replaced = 0;
    let mut other_funnel = 0;
    for r in rows {
        if !same_funnel(r) {
            other_funnel += 1;
            continue;
        }
        let key = (
            r.bucket_start,
            r.segment != "all",
            r.segment.clone(),
            r.segment_value.clone(),
            counter(r),
        );
        if latest.insert(key, r).is_some() {
            replaced += 1;
        }
    }
    let mut grouped: BTreeMap<(i64, bool, String, String), Vec<FunnelCounts>> = BTreeMap::new();
    for ((b, not_all, seg, value, _), r) in latest {
        grouped
            .entry((b, not_all, seg, value))
            .or_default()
            .push(counts_of(r));
    }
    let n = last.steps.len();
    let rows = grouped
        .into_iter()
        .map(|((bucket_start, _, segment, segment_value), parts)| {
            let refs: Vec<&FunnelCounts> = parts.iter().collect();
            MergedRow {
                bucket_start,
                segment,
                segment_value,
                parts: parts.len(),
                counts: sum_counts(n, &refs, true),
            }
        })
        .collect();
    Some(MergedAggregates {
        steps: last.steps.clone(),
        funnel_order: last.funnel_order.clone(),
        window_ms: last.window_ms,
        bucket_ms: last.bucket_ms,
        rows,
        replaced,
        other_funnel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        instance: &str,
        bucket: i64,
        segment: &str,
        value: &str,
        uniques: &[i64],
    ) -> FunnelAggregate {
        FunnelAggregate {
            instance: instance.into(),
            bucket_start: bucket,
            bucket_ms: 3_600_000,
            steps: vec![
                "PRODUCT_VIEW".into(),
                "ADD_TO_CART".into(),
                "PURCHASE".into(),
            ],
            funnel_order: "ordered".into(),
            window_ms: 3_600_000,
            segment: segment.into(),
            segment_value: value.into(),
            uniques: uniques.to_vec(),
            totals: uniques.iter().map(|u| u * 2).collect(),
            median_step_ms: vec![Some(1000), None],
            p90_step_ms: vec![Some(2000), None],
            median_convert_ms: None,
            p90_convert_ms: None,
            partition: FunnelAggregate::ALL_PARTITIONS,
        }
    }

    #[test]
    fn partitions_add_up_whichever_instance_published_them() {
        let in_partition = |instance: &str, p: i32, uniques: &[i64]| FunnelAggregate {
            partition: p,
            ..row(instance, 0, "all", "", uniques)
        };
        let rows = vec![
            in_partition("pod-a", 0, &[5, 2, 1]),
            in_partition("pod-a", 1, &[3, 1, 0]),
            // Partition 1 moved to pod-b, which published its bucket again: a replay.
            in_partition("pod-b", 1, &[3, 1, 0]),
        ];
        let m = merge_rows(&rows).unwrap();
        assert_eq!((m.replaced, m.rows.len()), (1, 1));
        assert_eq!(m.rows[0].parts, 2);
        assert_eq!(m.rows[0].counts.uniques, vec![8, 3, 1]);
    }

    #[test]
    fn instances_add_up_and_replays_replace() {
        let rows = vec![
            row("a", 0, "all", "", &[5, 2, 1]),
            row("b", 0, "all", "", &[3, 1, 0]),
            row("a", 0, "channel", "email", &[2, 1, 1]),
            // A replay of instance a's bucket-0 row: replaces it, does not add.
            row("a", 0, "all", "", &[5, 2, 1]),
            row("a", 3_600_000, "all", "", &[1, 1, 1]),
        ];
        let m = merge_rows(&rows).unwrap();
        assert_eq!(m.replaced, 1);
        assert_eq!(m.rows.len(), 3);
        let first = &m.rows[0];
        assert_eq!((first.bucket_start, first.segment.as_str()), (0, "all"));
        assert_eq!(first.parts, 2);
        assert_eq!(first.counts.uniques, vec![8, 3, 1]);
        assert_eq!(first.counts.totals, vec![16, 6, 2]);
        assert_eq!(first.counts.drop_off, vec![5, 2]);
        assert_eq!(
            first.counts.step_timings[0].median_ms, None,
            "not mergeable"
        );
        assert_eq!(m.rows[1].segment, "channel");
        assert_eq!(
            m.rows[1].counts.step_timings[0].median_ms,
            Some(1000),
            "one instance"
        );
        assert_eq!(m.overall().uniques, vec![9, 4, 2]);
        let segs = m.segments();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].0, "channel");
        assert_eq!(segs[0].1[0].0, "email");
        assert_eq!(segs[0].1[0].1.uniques, vec![2, 1, 1]);
    }

    #[test]
    fn rows_of_another_funnel_are_left_out() {
        let mut old = row("a", 0, "all", "", &[1, 0, 0]);
        old.window_ms = 60_000;
        let m = merge_rows(&[old, row("a", 0, "all", "", &[4, 3, 2])]).unwrap();
        assert_eq!(m.other_funnel, 1);
        assert_eq!(m.overall().uniques, vec![4, 3, 2]);
        assert!(merge_rows(&[]).is_none());
    }

    #[test]
    fn times_parse_as_ms_or_utc() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        // Offsets, as RFC 3339 allows: the same instant.
        assert_eq!(
            parse_time("2023-11-15T00:13:20+02:00").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T17:43:20.250-04:30").unwrap(),
            1_700_000_000_250
        );
        assert_eq!(parse_time("2024-02-29").unwrap(), 1_709_164_800_000);
        for bad in [
            "yesterday",
            "2023-13-01",
            "2026-02-31",
            "2023-02-29",
            "2023-04-31",
            "2023-11-14T22:13:20",
            "2023-11-14T25:00:00Z",
            "2023-11-31T10:00:00Z",
        ] {
            let err = parse_time(bad).unwrap_err().to_string();
            assert!(err.contains("is not a time"), "{bad}: {err}");
        }
    }
}
