//! The broker side of a phase: the pass-through loop, topics made and removed, what the broker holds, and
//! this process's CPU and memory.

use clickpath_runtime::kafka::{base_client_config, consumer_config, create_producer};
use clickpath_stages::ClickpathConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The baseline: consume -> produce with no processing, batched and acknowledged like the stage run loop.
pub(super) fn pass_through(
    cfg: &ClickpathConfig,
    input: &str,
    output: &str,
    stop: &AtomicBool,
    ready: &AtomicBool,
    consumed: &AtomicU64,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = consumer_config(cfg, "passthrough").create()?;
    let producer: FutureProducer = create_producer(cfg)?;
    consumer.subscribe(&[input])?;
    let poll_timeout = Duration::from_millis(cfg.runtime.poll_timeout_ms);
    while !stop.load(Ordering::Acquire) {
        let mut batch = Vec::new();
        let mut wait = poll_timeout;
        while batch.len() < cfg.runtime.max_batch {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Pass-through consumer error.");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        if !ready.load(Ordering::Relaxed) && consumer.assignment()?.count() > 0 {
            ready.store(true, Ordering::Release);
        }
        if batch.is_empty() {
            continue;
        }
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut pending = Vec::with_capacity(batch.len());
        for m in &batch {
            next.insert(m.partition(), m.offset() + 1);
            let record = FutureRecord::to(output)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default());
            pending.push(send_waiting(&producer, record, Duration::from_millis(10))?);
        }
        for r in futures::executor::block_on(futures::future::join_all(pending)) {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!("delivery to {output} failed: {e}"),
                Err(_) => anyhow::bail!("delivery to {output} cancelled"),
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            tpl.add_partition_offset(input, *p, Offset::Offset(*o))?;
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            tracing::warn!(error = %e, "Pass-through could not store offsets.");
        }
        consumed.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Sends `record`; while librdkafka's queue is full, lets it deliver for `wait` and tries again.
/// Returns the delivery future.
pub(super) fn send_waiting<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
    wait: Duration,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(wait);
            }
            Err((e, r)) => anyhow::bail!("cannot produce to {}: {e}", r.topic),
        }
    }
}

/// CPU seconds (user + system) of this process so far.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// CPU seconds (user + system) of process `pid` so far, its waited-for children included (a
/// launcher script's JVM); 0 where it cannot be read.
pub(super) fn proc_cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_of(&format!("/proc/{pid}/stat")) + children_cpu_seconds(pid)
}

/// CPU seconds of `pid`'s live descendants (a launcher's `exec`-less child), read from each child's
/// `/proc` entry.
fn children_cpu_seconds(pid: u32) -> f64 {
    let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return 0.0;
    };
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .map(proc_cpu_seconds)
        .sum()
}

/// utime + stime of a `/proc/<pid>/stat` file, seconds.
fn cpu_seconds_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process (`VmHWM`), bytes; 0 where `/proc` is unavailable.
pub fn peak_rss_bytes() -> u64 {
    peak_rss_of("/proc/self/status")
}

/// Peak resident set size of process `pid` or, for a launcher script, of its largest child, bytes.
pub(super) fn proc_peak_rss_bytes(pid: u32) -> u64 {
    let own = peak_rss_of(&format!("/proc/{pid}/status"));
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .map(proc_peak_rss_bytes)
        .max()
        .unwrap_or(0);
    own.max(children)
}

/// `VmHWM` of a `/proc/<pid>/status` file, bytes.
fn peak_rss_of(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn admin(cfg: &ClickpathConfig) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(base_client_config(cfg).create()?)
}

pub(super) fn create_plain_topics(
    cfg: &ClickpathConfig,
    names: &[&str],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin = admin(cfg)?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                partitions,
                TopicReplication::Fixed(cfg.topics.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in futures::executor::block_on(admin.create_topics(topics.iter(), &opts))? {
        if let Err((name, code)) = r
            && code != RDKafkaErrorCode::TopicAlreadyExists
        {
            anyhow::bail!("cannot create {name}: {code}");
        }
    }
    Ok(())
}

/// Deletes a phase's topics (best effort: a leftover topic only costs disk on the broker).
pub(super) fn delete_topics(cfg: &ClickpathConfig, names: &[String]) {
    let Ok(admin) = admin(cfg) else { return };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    if let Err(e) = futures::executor::block_on(admin.delete_topics(&names, &opts)) {
        tracing::warn!(error = %e, "Could not delete bench topics.");
    }
}

/// A consumer context for which reaching a partition's end is the expected way to finish, not an error.
struct QuietEof;

impl rdkafka::client::ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(%error, reason, "Bench state reader error.");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// Sum of the end offsets of every partition of `topics` (records ever written to them; under
/// exactly-once they include the transaction markers); a topic that does not exist counts 0. A
/// broker that does not answer costs the figure, not the phase: 0 and a warning.
pub(super) fn topics_end_offsets(cfg: &ClickpathConfig, topics: &[String]) -> u64 {
    let sum = || -> anyhow::Result<u64> {
        let consumer: BaseConsumer<QuietEof> =
            base_client_config(cfg).create_with_context(QuietEof)?;
        let timeout = Duration::from_secs(10);
        let mut total = 0u64;
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                    total += u64::try_from(high).unwrap_or(0);
                }
            }
        }
        Ok(total)
    };
    sum().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "Cannot read the end offsets of the phase's topics; broker writes count 0.");
        0
    })
}

/// Reads a compacted changelog to its end: live keys other than the empty one (a partition's own
/// record: a watermark, bucket markers, statistics) and the bytes of every live key's latest key +
/// value, the partition records included.
pub(super) fn changelog_size(cfg: &ClickpathConfig, topic: &str) -> anyhow::Result<(u64, u64)> {
    let latest = changelog_live(cfg, topic)?;
    let keys = latest.keys().filter(|k| !k.is_empty()).count();
    Ok((keys as u64, latest.values().sum::<usize>() as u64))
}

/// The chained topology's changelog, per stage: live keys (a stage's partition records, whose key
/// is the tag alone, left out) and bytes, as [`changelog_size`] counts them.
pub(super) fn chain_changelog_sizes(
    cfg: &ClickpathConfig,
    topic: &str,
) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let mut sizes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (key, bytes) in changelog_live(cfg, topic)? {
        let Some((stage, own)) = clickpath_stages::chain::changelog_stage(&key) else {
            continue;
        };
        let e = sizes.entry(stage.as_str().to_string()).or_default();
        e.0 += u64::from(!own.is_empty());
        e.1 += bytes as u64;
    }
    Ok(sizes)
}

/// Writes the latest value of every live key of `from` to `to` (made here, as many partitions, each
/// record to its own partition): what `from` holds once the log cleaner has compacted it. Returns the
/// records written.
pub(super) fn compacted_copy(cfg: &ClickpathConfig, from: &str, to: &str) -> anyhow::Result<u64> {
    let partitions = clickpath_runtime::changelog::partition_count(cfg, from)?;
    create_plain_topics(cfg, &[to], partitions as i32)?;
    let mut latest: HashMap<(i32, Vec<u8>), Vec<u8>> = HashMap::new();
    read_to_end(cfg, from, partitions, |m| {
        let key = (m.partition(), m.key().unwrap_or_default().to_vec());
        match m.payload() {
            Some(v) => {
                latest.insert(key, v.to_vec());
            }
            None => {
                latest.remove(&key);
            }
        }
    })?;
    let producer: FutureProducer = create_producer(cfg)?;
    let mut pending = Vec::with_capacity(latest.len());
    for ((p, key), value) in &latest {
        let record = FutureRecord::to(to).partition(*p).key(key).payload(value);
        pending.push(send_waiting(&producer, record, Duration::from_millis(10))?);
    }
    for r in futures::executor::block_on(futures::future::join_all(pending)) {
        r.map_err(|_| anyhow::anyhow!("delivery to {to} cancelled"))?
            .map_err(|(e, _)| anyhow::anyhow!("delivery to {to} failed: {e}"))?;
    }
    Ok(latest.len() as u64)
}

/// Every live key of a compacted changelog with the bytes of its latest key + value.
fn changelog_live(cfg: &ClickpathConfig, topic: &str) -> anyhow::Result<HashMap<Vec<u8>, usize>> {
    let partitions = clickpath_runtime::changelog::partition_count(cfg, topic)?;
    let mut latest: HashMap<Vec<u8>, usize> = HashMap::new();
    read_to_end(cfg, topic, partitions, |m| {
        let key = m.key().unwrap_or_default();
        match m.payload() {
            Some(v) => {
                latest.insert(key.to_vec(), key.len() + v.len());
            }
            None => {
                latest.remove(key);
            }
        }
    })?;
    Ok(latest)
}

/// Reads every partition of `topic` from its beginning to its end, handing each record to `each`.
fn read_to_end(
    cfg: &ClickpathConfig,
    topic: &str,
    partitions: usize,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let mut c = base_client_config(cfg);
    c.set(
        "group.id",
        format!("{}.bench-state", cfg.kafka.group_prefix),
    )
    .set("enable.auto.commit", "false")
    .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<QuietEof> = c.create_with_context(QuietEof)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut pending = partitions;
    let deadline = Instant::now() + Duration::from_secs(120);
    while pending > 0 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => pending -= 1,
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            Some(Ok(m)) => each(&m),
        }
    }
    anyhow::ensure!(pending == 0, "reading {topic}: not at its end within 120 s");
    Ok(())
}
