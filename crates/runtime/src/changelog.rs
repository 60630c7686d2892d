//! Durable stage state: compacted changelog topics, written with every batch and read back on assignment.
//!
//! As in Kafka Streams, a stage's state for input partition `p` lives in partition `p` of its changelog topic
//! `<group_prefix>.<stage>-changelog`; a new owner of `p` replays that partition to its end before it processes
//! any input of `p`. In exactly-once mode the changelog writes share the batch's transaction, so the restored
//! state always matches the committed input offsets.

use crate::config::BusConfig;
use crate::kafka::base_client_config;
use crate::stage::Stage;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The changelog topic of `stage`.
pub fn changelog_topic(cfg: &BusConfig, stage: &str) -> String {
    format!("{}.{stage}-changelog", cfg.kafka.group_prefix)
}

/// Number of partitions of `topic` (0 when it does not exist).
pub fn partition_count(cfg: &BusConfig, topic: &str) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = base_client_config(cfg).create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0))
}

/// How long a stage starting while the broker does not answer (a restart, a pod started during one) waits for it
/// before giving up.
pub const BROKER_WAIT: Duration = Duration::from_secs(90);

/// Like [`partition_count`], waiting up to `wait` for the topic to appear: a topic created a moment ago may
/// not be in every broker's metadata yet. While the broker does not answer at all, it keeps asking for up to
/// [`BROKER_WAIT`], then fails naming `kafka.brokers`.
pub fn wait_partition_count(cfg: &BusConfig, topic: &str, wait: Duration) -> anyhow::Result<usize> {
    let started = Instant::now();
    let mut warned = false;
    loop {
        match partition_count(cfg, topic) {
            Ok(n) if n > 0 || started.elapsed() >= wait => return Ok(n),
            Ok(_) => {}
            Err(e) if started.elapsed() >= BROKER_WAIT => anyhow::bail!(
                "no answer from the Kafka broker(s) at kafka.brokers = {:?} for {} s: {e}",
                cfg.kafka.brokers,
                BROKER_WAIT.as_secs()
            ),
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        brokers = %cfg.kafka.brokers,
                        error = %e,
                        "No answer from the Kafka broker at kafka.brokers yet; waiting up to {} s for it \
                         (a local one starts with scripts/kafka.sh up).",
                        BROKER_WAIT.as_secs()
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(800));
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `call` until it succeeds or [`BROKER_WAIT`] has passed, pausing between tries; the last
/// error names how long the broker was waited for.
fn retrying<T>(mut call: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() >= BROKER_WAIT => {
                return Err(e.context(format!(
                    "the Kafka broker did not answer for {} s",
                    BROKER_WAIT.as_secs()
                )));
            }
            Err(e) => {
                tracing::debug!(error = %e, "Broker call failed; retrying.");
                std::thread::sleep(Duration::from_millis(800));
            }
        }
    }
}

/// Creates the compacted changelog topic with as many partitions as the input topic, unless it exists.
pub fn ensure_changelog_topic(
    cfg: &BusConfig,
    changelog: &str,
    input_topic: &str,
) -> anyhow::Result<()> {
    let partitions = wait_partition_count(cfg, input_topic, Duration::from_secs(15))?;
    if partitions == 0 {
        anyhow::bail!("input topic {input_topic} does not exist (run `clickpath topics create`)");
    }
    // The broker may have just come back (a stage started during a broker restart): its first
    // answers can time out, so these calls are retried like the input's look-up.
    let existing = retrying(|| partition_count(cfg, changelog))?;
    if existing > 0 {
        if existing != partitions {
            anyhow::bail!(
                "changelog {changelog} has {existing} partitions but input {input_topic} has {partitions}; they must match"
            );
        }
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = base_client_config(cfg).create()?;
    let topic = NewTopic::new(
        changelog,
        partitions as i32,
        TopicReplication::Fixed(cfg.topics.replication_factor),
    )
    .set("cleanup.policy", "compact")
    .set("min.compaction.lag.ms", "0");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = retrying(|| {
        futures::executor::block_on(admin.create_topics([&topic], &opts)).map_err(Into::into)
    })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create changelog {name}: {code}"),
        }
    }
    Ok(())
}

/// The restore consumer's context: reaching a partition's end is how a restore finishes, not an error to log.
struct RestoreContext;

impl rdkafka::client::ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports a partition's end as a partition error or as a global one.
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(%error, reason, "Changelog restore consumer error.");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for RestoreContext {}

/// What a restore read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RestoreStats {
    /// Changelog records applied.
    pub records: u64,
    /// Their bytes (keys and values).
    pub bytes: u64,
    /// Wall time of the restore.
    pub seconds: f64,
}

/// The longest a restore may take, watermark look-ups included.
const RESTORE_LIMIT: Duration = Duration::from_secs(600);

/// The low and high watermarks of a changelog partition, asked again while the broker does not answer (a
/// restore right after a broker restart). Never guessed: taking a failed look-up for an empty partition would
/// restore nothing and silently drop the partition's state.
fn changelog_end<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    changelog: &str,
    partition: i32,
    deadline: Instant,
) -> anyhow::Result<(i64, i64)> {
    loop {
        match consumer.fetch_watermarks(changelog, partition, Duration::from_secs(10)) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(changelog, partition, error = %e, "Changelog end offsets not known yet; asking again.");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => anyhow::bail!(
                "cannot read the end offsets of {changelog}/{partition} to restore it: {e}"
            ),
        }
    }
}

/// The consumer's next offset of `changelog`/`partition` in `positions` (-1 when it has none yet).
fn position_of(positions: &TopicPartitionList, changelog: &str, partition: i32) -> i64 {
    match positions
        .find_partition(changelog, partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    }
}

/// How often a restore calls its `alive` callback while it works.
pub const RESTORE_BEAT: Duration = Duration::from_secs(1);

/// Replays `partitions` of `changelog` into `stage`, each to its high watermark (committed data only; waiting
/// for a transaction still open below it to end). `alive` is called when the restore starts and then
/// every [`RESTORE_BEAT`] while it runs: the run loop beats its liveness with it, so a restore longer than
/// the liveness limit (a large state, a transaction left open) is not taken for a stuck loop.
pub fn restore<S: Stage>(
    cfg: &BusConfig,
    changelog: &str,
    partitions: &[i32],
    stage: &mut S,
    metrics: Option<&crate::metrics::Metrics>,
    alive: &dyn Fn(),
) -> anyhow::Result<RestoreStats> {
    let started = Instant::now();
    let mut stats = RestoreStats::default();
    if partitions.is_empty() {
        return Ok(stats);
    }
    alive();
    let mut last_beat = Instant::now();
    let _span =
        tracing::info_span!("restore", stage = stage.name(), changelog, partitions = ?partitions)
            .entered();
    let mut c = crate::kafka::consumer_client_config(cfg);
    c.set("group.id", format!("{}.restore", cfg.kafka.group_prefix))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // A restore ends when every partition reports its end. With the default 500 ms the broker holds
        // each fetch that finds a partition at its end, and the restore waited for that twice or more;
        // 10 ms costs a few idle fetches at most.
        .set("fetch.wait.max.ms", "10")
        // Prefetch a whole changelog partition of small records rather than 100 K at a time.
        .set("queued.min.messages", "1000000")
        // The restore starts at each partition's low watermark (below); should compaction or
        // retention have moved it on meanwhile, the earliest record left is the place to start.
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<RestoreContext> = c.create_with_context(RestoreContext)?;
    // The end to read to is the high watermark, asked without transactions in the way: a read_committed
    // look-up answers with the last stable offset, which a transaction left open (a previous owner's, killed
    // mid-batch, until the broker aborts it at its timeout) holds back, and the committed records behind it
    // (the next owner's batches) are the partition's state too.
    let mut ends_config = crate::kafka::consumer_client_config(cfg);
    ends_config.set("isolation.level", "read_uncommitted");
    let ends_client: BaseConsumer = ends_config.create()?;
    // Progress per partition (records read of the records to read), exported while restoring, and the end
    // offset (high watermark) to read to.
    let mut totals: std::collections::BTreeMap<i32, (u64, u64)> = std::collections::BTreeMap::new();
    let mut ends: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    let mut starts: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    let deadline = started + RESTORE_LIMIT;
    for &p in partitions {
        let (lo, hi) = changelog_end(&ends_client, changelog, p, deadline)?;
        totals.insert(p, (0, (hi - lo).max(0) as u64));
        ends.insert(p, hi);
        starts.insert(p, lo);
    }
    let stage_name = stage.name();
    let report = |p: i32, totals: &std::collections::BTreeMap<i32, (u64, u64)>, done: bool| {
        if let (Some(m), Some((read, total))) = (metrics, totals.get(&p)) {
            let read = if done { *total } else { *read };
            m.set_restore_progress(stage_name, changelog, p, read, *total);
        }
    };
    // An empty partition needs no fetch at all (a fresh stage's every partition): waiting for its
    // end-of-partition event alone used to cost one fetch round of the broker.
    let mut pending: BTreeSet<i32> = BTreeSet::new();
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        if totals.get(&p).is_some_and(|t| t.1 == 0) {
            report(p, &totals, true);
        } else {
            pending.insert(p);
            // The low watermark as a concrete offset, not `Offset::Beginning`: a logical offset
            // makes librdkafka ask the broker for it first, and a consumer this new was not
            // connected yet, so the first fetch waited for the look-up's 500 ms retry.
            tpl.add_partition_offset(changelog, p, Offset::Offset(starts[&p]))?;
        }
    }
    if pending.is_empty() {
        stats.seconds = started.elapsed().as_secs_f64();
        return Ok(stats);
    }
    consumer.assign(&tpl)?;
    tracing::debug!(
        changelog,
        setup_seconds = started.elapsed().as_secs_f64(),
        "Restore consumer assigned."
    );
    // Partitions whose end of partition came before their high watermark: an open transaction holds them.
    let mut held: BTreeSet<i32> = BTreeSet::new();
    while !pending.is_empty() {
        if last_beat.elapsed() >= RESTORE_BEAT {
            alive();
            last_beat = Instant::now();
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "restore of {changelog} partitions {pending:?} did not finish in {} s",
                RESTORE_LIMIT.as_secs()
            );
        }
        // A held partition is done once its position passes the end (the transaction ended, its records
        // skipped if it aborted); the end-of-partition event for the new position may not come by itself.
        if !held.is_empty() {
            let positions = consumer.position()?;
            held.retain(|&p| {
                let reached = position_of(&positions, changelog, p) >= ends[&p];
                if reached {
                    pending.remove(&p);
                    report(p, &totals, true);
                }
                !reached
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // Under read_committed the end of a partition is its last stable offset.
                let position = position_of(&consumer.position()?, changelog, p);
                if position >= ends[&p] {
                    pending.remove(&p);
                    held.remove(&p);
                    report(p, &totals, true);
                } else if held.insert(p) {
                    tracing::warn!(
                        changelog,
                        partition = p,
                        position,
                        end = ends[&p],
                        "An open transaction holds the changelog below its end; the restore waits until it ends \
                         (a previous owner's, aborted by the broker after its transaction timeout)."
                    );
                }
            }
            Some(Err(e)) => anyhow::bail!("restore of {changelog} failed: {e}"),
            Some(Ok(m)) => {
                // Past the end read at the start: written after the restore began (a transaction that was
                // still open then, or a late zombie's), not part of the state handed over.
                if ends
                    .get(&m.partition())
                    .is_some_and(|&end| m.offset() >= end)
                {
                    let p = m.partition();
                    pending.remove(&p);
                    held.remove(&p);
                    report(p, &totals, true);
                    continue;
                }
                let key = m.key().unwrap_or_default();
                let value = m.payload();
                let p = m.partition();
                stats.records += 1;
                if let Some(t) = totals.get_mut(&p) {
                    t.0 += 1;
                    if t.0 % 10_000 == 0 {
                        report(p, &totals, false);
                    }
                }
                stats.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
                stage.restore(p, key, value).map_err(|e| {
                    anyhow::anyhow!("restore of {changelog}/{p} at {}: {e}", m.offset())
                })?;
                // The last record before the high watermark read at the start: done, without waiting for
                // the end-of-partition event (which comes with the next fetch). Under read_committed a
                // trailing transaction marker may hold the last offset; then the event ends it instead.
                if ends.get(&p).is_some_and(|&end| m.offset() + 1 >= end) {
                    pending.remove(&p);
                    held.remove(&p);
                    report(p, &totals, true);
                }
            }
        }
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_calls_are_retried_until_they_answer() {
        let mut tries = 0;
        let n = retrying(|| {
            tries += 1;
            if tries < 3 {
                anyhow::bail!("OperationTimedOut")
            }
            Ok(7)
        })
        .unwrap();
        assert_eq!((n, tries), (7, 3));
    }
}
