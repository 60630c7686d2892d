//! `clickpath replay-dead-letters`: after the cause of dead letters is fixed (a schema registered,
//! a validation rule relaxed, a stage upgraded), puts the rejected records back where they were
//! read, byte for byte, with their own headers, so the pipeline processes them again.

use crate::app::GlobalArgs;
use clickpath_runtime::deadletter::{self, headers::is_context};
use clickpath_runtime::kafka::{base_client_config, check_reachable, create_producer};
use clickpath_schema::DeadLetter;
use clickpath_schema::codec::Codec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// Header naming the dead letter a replayed record came from (`topic/partition/offset`).
pub const REPLAYED_FROM: &str = "clickpath.replayed_from";

/// Arguments of `clickpath replay-dead-letters`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayDeadLettersArgs {
    /// Only dead letters of these error kinds (`clickpath.error.kind`, e.g. `unknown_schema_id`);
    /// repeatable. Default: every kind.
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only dead letters of this stage (`__connect.errors.stage`, e.g. `cleaning`).
    #[arg(long)]
    pub stage: Option<String>,
    /// Only dead letters read from this topic (`__connect.errors.topic`).
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Produce to this topic instead of each record's source topic.
    #[arg(long)]
    pub to: Option<String>,
    /// Stop after replaying this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Count what would be replayed, produce nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayFilter {
    /// Error kinds taken (empty: all).
    pub kinds: Vec<String>,
    /// Stage taken.
    pub stage: Option<String>,
    /// Source topic taken.
    pub source_topic: Option<String>,
}

impl ReplayFilter {
    /// Whether `dl` is taken.
    pub fn takes(&self, dl: &DeadLetter) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&dl.error_kind))
            && self.stage.as_ref().is_none_or(|s| *s == dl.stage)
            && self
                .source_topic
                .as_ref()
                .is_none_or(|t| *t == dl.source_topic)
    }
}

/// What a replay did.
#[derive(Debug, Default, PartialEq)]
pub struct ReplaySummary {
    /// Dead letters read.
    pub read: u64,
    /// Replayed (or, in a dry run, that would be), per destination topic and error kind.
    pub replayed: BTreeMap<(String, String), u64>,
    /// Records of the dead-letter topic that are not dead letters (no context, not the old format).
    pub unreadable: u64,
}

impl ReplaySummary {
    /// Records replayed in all.
    pub fn total(&self) -> u64 {
        self.replayed.values().sum()
    }
}

/// The headers a replayed record carries: the original record's own (the dead letter's context
/// removed) and where it was replayed from.
pub fn replay_headers<'a>(
    dead_letter: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    from: &str,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    for (key, value) in dead_letter {
        if !is_context(key) && key != REPLAYED_FROM {
            out = out.insert(Header { key, value });
        }
    }
    out.insert(Header {
        key: REPLAYED_FROM,
        value: Some(from),
    })
}

/// `clickpath replay-dead-letters`: reads the dead-letter topic from its beginning to where it
/// ends now and produces the records the filter takes back to their source topic (or `--to`).
pub fn run(args: &ReplayDeadLettersArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let cfg = global.load_config()?;
    check_reachable(&cfg.bus).map_err(anyhow::Error::msg)?;
    let dlq = cfg.bus.topics.dead_letters.clone();
    let filter = ReplayFilter {
        kinds: args.kinds.clone(),
        stage: args.stage.clone(),
        source_topic: args.source_topic.clone(),
    };
    let producer = if args.dry_run {
        None
    } else {
        Some(create_producer(&cfg.bus)?)
    };
    let summary = replay(
        &cfg.bus,
        &dlq,
        &filter,
        args.to.as_deref(),
        args.max,
        producer.as_ref(),
    )?;
    for ((topic, kind), n) in &summary.replayed {
        println!(
            "{} {n} {kind} -> {topic}",
            if args.dry_run {
                "would replay"
            } else {
                "replayed"
            }
        );
    }
    println!(
        "{} dead letters read from {dlq}, {} {}{}",
        summary.read,
        summary.total(),
        if args.dry_run {
            "would be replayed"
        } else {
            "replayed"
        },
        if summary.unreadable > 0 {
            format!(
                ", {} records that are not dead letters skipped",
                summary.unreadable
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Replays the dead letters of `dlq` that `filter` takes (see [`run`]); `producer` `None` is a
/// dry run. Waits until every replayed record is acknowledged.
pub fn replay(
    bus: &clickpath_runtime::config::BusConfig,
    dlq: &str,
    filter: &ReplayFilter,
    to: Option<&str>,
    max: Option<u64>,
    producer: Option<&FutureProducer>,
) -> anyhow::Result<ReplaySummary> {
    let mut c = base_client_config(bus);
    c.set(
        "group.id",
        format!("{}.replay-dead-letters", bus.kafka.group_prefix),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    // Retention may have removed the low watermark before the first fetch: read from the oldest
    // record left rather than skip the partition.
    .set("auto.offset.reset", "earliest")
    .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = c.create()?;
    let wait = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(dlq), wait)?;
    let partitions = md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len()) as i32;
    anyhow::ensure!(
        partitions > 0,
        "topic {dlq} does not exist or has no partitions"
    );
    let mut start = TopicPartitionList::new();
    // Per partition, where the topic ends now: records after it (dead letters of this replay, or
    // of the live pipeline) are not read.
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(dlq, p, wait)?;
        start.add_partition_offset(dlq, p, Offset::Offset(low))?;
        if high > low {
            ends.insert(p, high);
        }
    }
    consumer.assign(&start)?;
    let stop = ends.clone();
    let codec = Codec::embedded();
    let mut summary = ReplaySummary::default();
    let mut deliveries = Vec::new();
    let mut checked = std::time::Instant::now();
    while !ends.is_empty() && max.is_none_or(|m| summary.total() < m) {
        // A partition can end on a transaction marker no record sits at: one whose position
        // reached its end is done. Checked on every empty poll and twice a second, so records
        // still arriving on other partitions cannot keep the replay going.
        let message = consumer.poll(Duration::from_millis(500));
        if message.is_none() || checked.elapsed() >= Duration::from_millis(500) {
            checked = std::time::Instant::now();
            for e in consumer.position()?.elements() {
                if let (Offset::Offset(o), Some(&end)) = (e.offset(), ends.get(&e.partition()))
                    && o >= end
                {
                    ends.remove(&e.partition());
                }
            }
        }
        let m = match message {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // librdkafka retries transport errors itself; a partition-end event is no error.
                tracing::warn!(error = %e, "Consumer error while replaying dead letters.");
                continue;
            }
        };
        let Some(&end) = stop.get(&m.partition()).filter(|&&end| m.offset() < end) else {
            // Past where the partition ended when the replay began.
            ends.remove(&m.partition());
            continue;
        };
        if m.offset() + 1 >= end {
            ends.remove(&m.partition());
        }
        let Ok(dl) = deadletter::read_message(&codec, &m) else {
            summary.unreadable += 1;
            continue;
        };
        summary.read += 1;
        if !filter.takes(&dl) {
            continue;
        }
        let topic = to.unwrap_or(&dl.source_topic).to_string();
        *summary
            .replayed
            .entry((topic.clone(), dl.error_kind.clone()))
            .or_default() += 1;
        let Some(producer) = producer else {
            continue;
        };
        let from = format!("{dlq}/{}/{}", m.partition(), m.offset());
        // The first format wrapped the record and had no headers of the record's own.
        let own = clickpath_runtime::kafka::record_headers(&m);
        let wrapped = !own
            .iter()
            .any(|(k, _)| *k == deadletter::headers::CONNECT_TOPIC);
        // A record that had no value has none again (the current format keeps it absent).
        let value = if wrapped {
            Some(dl.payload.as_slice())
        } else {
            m.payload()
        };
        let mut record = FutureRecord::to(&topic).headers(replay_headers(own, &from));
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(key) = &dl.key {
            record = record.key(key);
        }
        let delivery = loop {
            match producer.send_result(record) {
                Ok(d) => break d,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The local queue is full: let librdkafka drain it, then retry the same record.
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => anyhow::bail!("cannot produce to {topic}: {e}"),
            }
        };
        deliveries.push((from, delivery));
    }
    if let Some(p) = producer {
        p.flush(Duration::from_secs(60))?;
    }
    for (from, d) in deliveries {
        match futures::executor::block_on(d) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("replaying {from} failed: {e}"),
            Err(_) => anyhow::bail!("replaying {from}: the producer went away"),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    fn letter(kind: &str, stage: &str, topic: &str) -> DeadLetter {
        DeadLetter {
            source_topic: topic.into(),
            source_partition: 0,
            source_offset: 1,
            key: None,
            payload: Vec::new(),
            error_kind: kind.into(),
            reason: String::new(),
            stage: stage.into(),
            failed_at: 0,
        }
    }

    #[test]
    fn the_filter_takes_what_each_option_names() {
        let all = ReplayFilter::default();
        let dl = letter("unknown_schema_id", "cleaning", "clickpath.raw");
        assert!(all.takes(&dl));
        let kinds = ReplayFilter {
            kinds: vec!["bad_value".into(), "unknown_schema_id".into()],
            ..Default::default()
        };
        assert!(kinds.takes(&dl));
        assert!(!kinds.takes(&letter("wrong_magic", "cleaning", "clickpath.raw")));
        let stage = ReplayFilter {
            stage: Some("detector".into()),
            ..Default::default()
        };
        assert!(!stage.takes(&dl));
        let topic = ReplayFilter {
            source_topic: Some("clickpath.raw".into()),
            ..Default::default()
        };
        assert!(topic.takes(&dl));
        assert!(!topic.takes(&letter("x", "cleaning", "clickpath.predictions")));
    }

    #[test]
    fn a_replayed_record_keeps_its_own_headers_only() {
        let headers = [
            ("shop.origin", Some(&b"web"[..])),
            ("__connect.errors.topic", Some(&b"clickpath.raw"[..])),
            ("clickpath.error.kind", Some(&b"bad_value"[..])),
            ("clickpath.stage", Some(&b"cleaning"[..])),
            ("clickpath.replayed_from", Some(&b"older"[..])),
            ("traceparent", Some(&b"00-abc"[..])),
        ];
        let out = replay_headers(headers, "dlq/0/7");
        let got: Vec<(String, Option<Vec<u8>>)> = out
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("shop.origin".to_string(), Some(b"web".to_vec())),
                ("traceparent".to_string(), Some(b"00-abc".to_vec())),
                (
                    "clickpath.replayed_from".to_string(),
                    Some(b"dlq/0/7".to_vec())
                ),
            ]
        );
    }
}
