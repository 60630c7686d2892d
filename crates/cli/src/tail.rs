//! `clickpath tail <topic>`: any clickpath topic as JSON lines or a readable table, decoded with the
//! schema each record names, for fraud analysts reading the alerts and anyone checking a deployment.

use crate::app::GlobalArgs;
use clickpath_runtime::kafka::{base_client_config, check_reachable};
use clickpath_schema::DeadLetter;
use clickpath_schema::codec::Codec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// How `clickpath tail` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TailFormat {
    /// One JSON object per line: topic, partition, offset, timestamp, schema and the decoded value.
    #[default]
    Json,
    /// One line per record: time, partition/offset, record, user and the record's main fields.
    Table,
}

/// Arguments of `clickpath tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// The topic: a name, or its role in the configuration (raw, clean, sessions, features,
    /// predictions, alerts, dead_letters, late_events, analytics).
    pub topic: String,
    /// Start at the beginning of every partition; without it, only records that arrive from now
    /// on are shown (and the command follows the topic).
    #[arg(long)]
    pub from_beginning: bool,
    /// Keep waiting for new records after the end (implied without --from-beginning).
    #[arg(long)]
    pub follow: bool,
    /// Stop after printing this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Only records of this user (`user_id`).
    #[arg(long)]
    pub user: Option<String>,
    /// Only alerts of this type (`alert_type`, e.g. CARD_TESTING).
    #[arg(long)]
    pub alert_type: Option<String>,
    /// Only alerts at least this severe: LOW, MEDIUM, HIGH or CRITICAL.
    #[arg(long)]
    pub min_severity: Option<String>,
    /// Output: json (default) or table.
    #[arg(long, value_enum, default_value_t = TailFormat::Json)]
    pub format: TailFormat,
}

const SEVERITIES: [&str; 4] = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];

/// Which decoded records `clickpath tail` prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TailFilter {
    /// `user_id` equal to this.
    pub user: Option<String>,
    /// `alert_type` equal to this.
    pub alert_type: Option<String>,
    /// Index in [`SEVERITIES`] that `severity` must reach.
    pub min_severity: Option<usize>,
}

impl TailFilter {
    /// The filter of `args`; an error for a severity that does not exist.
    pub fn of(args: &TailArgs) -> anyhow::Result<Self> {
        let min_severity = args
            .min_severity
            .as_deref()
            .map(|s| {
                SEVERITIES
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        anyhow::anyhow!("--min-severity {s:?}: expected one of {SEVERITIES:?}")
                    })
            })
            .transpose()?;
        Ok(TailFilter {
            user: args.user.clone(),
            alert_type: args.alert_type.clone(),
            min_severity,
        })
    }

    /// Whether `value` passes: a record without the field a filter reads does not.
    pub fn passes(&self, value: &serde_json::Value) -> bool {
        let text = |k: &str| value.get(k).and_then(serde_json::Value::as_str);
        if let Some(u) = &self.user
            && text("user_id") != Some(u.as_str())
        {
            return false;
        }
        if let Some(t) = &self.alert_type
            && !text("alert_type").is_some_and(|a| a.eq_ignore_ascii_case(t))
        {
            return false;
        }
        if let Some(min) = self.min_severity {
            let rank = text("severity").and_then(|s| SEVERITIES.iter().position(|x| *x == s));
            if rank.is_none_or(|r| r < min) {
                return false;
            }
        }
        true
    }
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp (ms), when it has one.
    pub timestamp: Option<i64>,
}

/// One output line for a decoded record.
pub fn render(
    format: TailFormat,
    at: &Origin<'_>,
    schema: (u32, Option<&str>),
    value: &serde_json::Value,
) -> String {
    match format {
        TailFormat::Json => serde_json::json!({
            "topic": at.topic,
            "partition": at.partition,
            "offset": at.offset,
            "timestamp": at.timestamp,
            "schema_id": schema.0,
            "record": schema.1,
            "value": value,
        })
        .to_string(),
        TailFormat::Table => {
            let name = schema.1.map_or("?", |n| n.rsplit('.').next().unwrap_or(n));
            let user = value.get("user_id").and_then(|u| u.as_str()).unwrap_or("-");
            // The record's main fields: short scalars other than ids, in schema order.
            let fields: Vec<String> = value
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| {
                    !k.ends_with("_id")
                        && (v.is_number() || v.as_str().is_some_and(|s| s.len() <= 40))
                })
                .take(5)
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    _ => format!("{k}={v}"),
                })
                .collect();
            format!(
                "{:>13}  {:>3}/{:<8} {:<16} {:<20} {}",
                at.timestamp.map_or("-".to_string(), |t| t.to_string()),
                at.partition,
                at.offset,
                name,
                user,
                fields.join(" ")
            )
        }
    }
}

/// A dead letter as `clickpath tail` shows it: its context, its key as `user_id` (clickpath's
/// keys are user ids), and the original value decoded when it is a clickpath record (`null` and its
/// size when not).
pub fn dead_letter_view(codec: &Codec, dl: &DeadLetter) -> serde_json::Value {
    let original = codec.decode_json(&dl.payload).ok().map(|(_, _, v)| v);
    serde_json::json!({
        "source_topic": dl.source_topic,
        "source_partition": dl.source_partition,
        "source_offset": dl.source_offset,
        "error_kind": dl.error_kind,
        "reason": dl.reason,
        "stage": dl.stage,
        "failed_at": dl.failed_at,
        "user_id": dl.key.as_deref().map(String::from_utf8_lossy),
        "value_bytes": dl.payload.len(),
        "value": original,
    })
}

/// `clickpath tail`: prints the topic's records until the end (or `--max`), or follows it.
pub fn run(args: &TailArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let cfg = global.load_config()?;
    let filter = TailFilter::of(args)?;
    let topic = cfg
        .bus
        .topics
        .all()
        .into_iter()
        .find(|(role, _)| *role == args.topic)
        .map_or(args.topic.clone(), |(_, name)| name.to_string());
    check_reachable(&cfg.bus).map_err(anyhow::Error::msg)?;
    let mut c = base_client_config(&cfg.bus);
    c.set("group.id", format!("{}.tail", cfg.bus.kafka.group_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = c.create()?;
    let wait = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(&topic), wait)?;
    let partitions = md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len()) as i32;
    anyhow::ensure!(
        partitions > 0,
        "topic {topic} does not exist or has no partitions"
    );
    let follow = args.follow || !args.from_beginning;
    let mut start = TopicPartitionList::new();
    // Per partition, where the data ends now (reading stops there unless following).
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(&topic, p, wait)?;
        let from = if args.from_beginning { low } else { high };
        start.add_partition_offset(&topic, p, Offset::Offset(from))?;
        if high > from {
            ends.insert(p, high);
        }
    }
    consumer.assign(&start)?;
    let codec = Codec::embedded();
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut printed = 0u64;
    while (follow || !ends.is_empty()) && args.max.is_none_or(|m| printed < m) {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            // Under exactly-once the end offset may be a transaction marker no record sits at
            // (as `clickpath report --topic` knows): a partition whose position reached it is done.
            for e in consumer.position()?.elements() {
                if let (Offset::Offset(o), Some(&end)) = (e.offset(), ends.get(&e.partition()))
                    && o >= end
                {
                    ends.remove(&e.partition());
                }
            }
            continue;
        };
        let m = message?;
        let (partition, offset) = (m.partition(), m.offset());
        if ends.get(&partition).is_some_and(|&end| offset + 1 >= end) {
            ends.remove(&partition);
        }
        let decoded = if topic == cfg.bus.topics.dead_letters {
            // The value is the rejected record as received; the dead letter is in its headers.
            clickpath_runtime::deadletter::read_message(&codec, &m)
                .map(|dl| {
                    (
                        0,
                        Some("dead_letter".to_string()),
                        dead_letter_view(&codec, &dl),
                    )
                })
                .map_err(anyhow::Error::msg)
        } else {
            let Some(payload) = m.payload() else {
                continue;
            };
            codec.decode_json(payload).map_err(anyhow::Error::from)
        };
        match decoded {
            Ok((id, name, value)) => {
                if !filter.passes(&value) {
                    continue;
                }
                let at = Origin {
                    topic: &topic,
                    partition,
                    offset,
                    timestamp: m.timestamp().to_millis(),
                };
                writeln!(
                    out,
                    "{}",
                    render(args.format, &at, (id, name.as_deref()), &value)
                )?;
                printed += 1;
            }
            Err(e) => eprintln!("{topic} {partition}/{offset}: not a clickpath record ({e})"),
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::{AlertType, FraudAlert, Severity};

    fn alert(user: &str, kind: AlertType, severity: Severity) -> serde_json::Value {
        let codec = Codec::embedded();
        let a = FraudAlert {
            alert_id: "a1".into(),
            user_id: user.into(),
            alert_type: kind,
            severity,
            score: 2.0,
            reasons: vec!["r".into()],
            evidence_event_ids: vec!["e1".into()],
            window_start: 1,
            window_end: 2,
            detector_version: "v".into(),
        };
        codec.decode_json(&codec.encode(&a).unwrap()).unwrap().2
    }

    #[test]
    fn a_dead_letter_shows_its_context_and_its_record_when_it_decodes() {
        let codec = Codec::embedded();
        let ev =
            clickpath_schema::ClickEvent::new("e1", "u-7", clickpath_schema::EventType::Search, 1);
        let mut dl = DeadLetter {
            source_topic: "clickpath.raw".into(),
            source_partition: 2,
            source_offset: 9,
            key: Some(b"u-7".to_vec()),
            payload: codec.encode(&ev).unwrap(),
            error_kind: "bad_value".into(),
            reason: "why".into(),
            stage: "cleaning".into(),
            failed_at: 5,
        };
        let v = dead_letter_view(&codec, &dl);
        assert_eq!(v["user_id"], "u-7");
        assert_eq!(v["error_kind"], "bad_value");
        assert_eq!(v["value"]["event_id"], "e1");
        assert!(
            TailFilter::of(&args(Some("u-7"), None, None))
                .unwrap()
                .passes(&v)
        );
        dl.payload = b"\x01not avro".to_vec();
        let v = dead_letter_view(&codec, &dl);
        assert!(v["value"].is_null());
        assert_eq!(v["value_bytes"], 9);
    }

    fn args(user: Option<&str>, kind: Option<&str>, min: Option<&str>) -> TailArgs {
        TailArgs {
            topic: "alerts".into(),
            from_beginning: true,
            follow: false,
            max: None,
            user: user.map(str::to_string),
            alert_type: kind.map(str::to_string),
            min_severity: min.map(str::to_string),
            format: TailFormat::Json,
        }
    }

    #[test]
    fn filters_read_user_type_and_severity() {
        let high = alert("u1", AlertType::CardTesting, Severity::High);
        let low = alert("u2", AlertType::BotCadence, Severity::Low);
        let pass = |a: &TailArgs, v: &serde_json::Value| TailFilter::of(a).unwrap().passes(v);
        assert!(pass(&args(None, None, None), &low));
        assert!(pass(&args(Some("u1"), None, None), &high));
        assert!(!pass(&args(Some("u1"), None, None), &low));
        assert!(pass(&args(None, Some("card_testing"), None), &high));
        assert!(!pass(&args(None, Some("CARD_TESTING"), None), &low));
        assert!(pass(&args(None, None, Some("medium")), &high));
        assert!(!pass(&args(None, None, Some("MEDIUM")), &low));
        // A record without a severity does not pass a severity filter.
        assert!(!pass(
            &args(None, None, Some("LOW")),
            &serde_json::json!({"user_id": "u"})
        ));
        assert!(TailFilter::of(&args(None, None, Some("urgent"))).is_err());
    }

    #[test]
    fn json_lines_carry_origin_and_value_and_tables_the_main_fields() {
        let v = alert("u1", AlertType::CardTesting, Severity::High);
        let at = Origin {
            topic: "t",
            partition: 2,
            offset: 41,
            timestamp: Some(5),
        };
        let line = render(TailFormat::Json, &at, (4, Some("clickpath.FraudAlert")), &v);
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["partition"], 2);
        assert_eq!(back["offset"], 41);
        assert_eq!(back["value"]["alert_type"], "CARD_TESTING");
        let row = render(
            TailFormat::Table,
            &at,
            (4, Some("clickpath.FraudAlert")),
            &v,
        );
        assert!(row.contains("2/41"), "{row}");
        assert!(row.contains("FraudAlert"), "{row}");
        assert!(row.contains("u1"), "{row}");
        assert!(row.contains("alert_type=CARD_TESTING"), "{row}");
        assert!(row.contains("severity=HIGH"), "{row}");
    }
}
