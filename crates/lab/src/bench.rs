//! `clickpath-lab bench`: an end-to-end load test on a real Kafka broker.
//!
//! One run measures, each phase on fresh topics (a unique prefix per run and phase):
//!
//! 1. **pass-through**: the physical limit. A consume -> produce loop with no processing at all (same broker,
//!    same partition count, same records, same batching and acknowledgement rules as the stage run loop).
//! 2. **pipeline, maximum rate**: every stage running in this process, the generated records produced as fast
//!    as the producer can.
//! 3. **pipeline, fixed rates** (`--rate`, repeatable; by default half of the measured maximum): paced
//!    producing, for latency at a sustainable load.
//!
//! Per phase it reports throughput (records produced / seconds from the first send until the last output was
//! read), event-to-output latency (the time a prediction, or a pass-through copy, is read minus the time its
//! raw event was handed to the producer; HdrHistogram p50/p99/p999), the largest consumer lag seen, process CPU
//! seconds, and peak RSS (`VmHWM`). After the maximum-rate phase it reads the sessionizer's changelog back to
//! size its state per active user. The pipeline's rate is printed as a ratio of the pass-through rate.
//!
//! Latency is keyed by `event_id`: both a `Prediction` and a `ClickEvent` start with it, so the reader takes it
//! from the Avro body without a full decode.

use clap::Args;
use clickpath_cli::produce::Pacer;
use clickpath_cli::{generate::GenerateStats, pipeline};
use clickpath_generator::{Generated, Generator, GeneratorConfig, corrupt};
use clickpath_runtime::kafka::{base_client_config, consumer_config, create_producer};
use clickpath_runtime::metrics::StageLabel;
use clickpath_schema::codec::{Codec, HEADER_LEN};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::StageName;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Options of `clickpath-lab bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Kafka bootstrap servers (a real broker; the run creates and deletes its own topics).
    #[arg(
        long,
        env = "CLICKPATH_TEST_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    pub brokers: String,
    /// Generated records per maximum-rate phase (events, duplicates and malformed records together).
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// A fixed produce rate (records/s) to measure latency at; repeatable. Default: half the maximum.
    #[arg(long = "rate")]
    pub rates: Vec<f64>,
    /// Seconds of producing per fixed-rate phase (capped by --events).
    #[arg(long, default_value_t = 20.0)]
    pub fixed_seconds: f64,
    /// Partitions of every topic (default: `topics.partitions` of the configuration).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Give up on a phase that has not drained after this many seconds (reported as incomplete).
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Skip the fixed-rate phases.
    #[arg(long)]
    pub no_fixed: bool,
    /// Write every latency sample (phase, topic, send time, latency) to this CSV file, to see when the slow
    /// events were sent and at which hop they became slow.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Also read the pipeline's intermediate topics (clean, features) and report the latency to each. Off by
    /// default: the two extra reads load the broker and lower the maximum rate.
    #[arg(long)]
    pub hops: bool,
}

impl BenchArgs {
    /// Options for a small run against `brokers` (tests).
    pub fn small(brokers: &str, events: u64) -> Self {
        BenchArgs {
            brokers: brokers.to_string(),
            events,
            rates: Vec::new(),
            fixed_seconds: 2.0,
            partitions: None,
            seed: 7,
            json: None,
            timeout_s: 180,
            no_fixed: false,
            trace: None,
            hops: false,
        }
    }
}

/// Event-to-output latency of one phase, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Outputs measured (the first output of each event id).
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Latency from an event's send to its record on one topic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HopLatency {
    /// The topic's role (`clean`, `features`, `predictions`).
    pub topic: String,
    /// The latency.
    pub latency: Latency,
}

/// One latency sample of `--trace`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSample {
    /// Index into the phase's `hops`.
    pub hop: usize,
    /// Send time, milliseconds after the phase's first send.
    pub sent_ms: f64,
    /// Latency, milliseconds.
    pub latency_ms: f64,
}

impl Latency {
    fn of(hist: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            samples: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// `pass-through` or `pipeline`.
    pub kind: String,
    /// Paced produce rate (records/s), `None` for maximum rate.
    pub target_rate: Option<f64>,
    /// Records produced to the input topic.
    pub records_sent: u64,
    /// Output records read back (predictions for the pipeline, copies for the pass-through).
    pub outputs_read: u64,
    /// Outputs the pipeline reported producing (scorer `records_out`); equals `records_sent` for the
    /// pass-through.
    pub outputs_expected: u64,
    /// Whether every stage caught up and every output was read before the timeout.
    pub complete: bool,
    /// Seconds from the first send until the last output was read.
    pub seconds: f64,
    /// Rate the producer achieved (records/s).
    pub send_rate: f64,
    /// End-to-end throughput: `records_sent / seconds`.
    pub throughput: f64,
    /// `throughput` divided by the machine's cores.
    pub throughput_per_core: f64,
    /// CPU seconds this process used during the phase (stages, producer, reader, clients).
    pub cpu_seconds: f64,
    /// Records per CPU second of this process (the broker's CPU is not included).
    pub records_per_cpu_second: f64,
    /// Event-to-output latency.
    pub latency: Latency,
    /// Pipeline phases with `--hops`: the latency from an event's send to its record on each topic on the way
    /// to the output (`clean`, `features`, `predictions`), which shows the hop that adds it. Empty otherwise.
    pub hops: Vec<HopLatency>,
    /// Every latency sample, when `--trace` asked for them (written to that file, not to the JSON report).
    #[serde(skip)]
    pub trace: Vec<TraceSample>,
    /// Largest consumer lag seen (records read by no consumer yet, summed over the stages), sampled every 5 ms.
    pub max_lag: u64,
    /// Per stage: records consumed.
    pub stage_records_in: BTreeMap<String, u64>,
    /// Records written to the broker during the phase, on every topic of the phase (the input, every
    /// intermediate and output topic, changelogs, dead letters): the sum of their end offsets.
    pub broker_writes: u64,
    /// Records read from the broker during the phase by the stages (or the pass-through loop) and by
    /// this harness's reader.
    pub broker_reads: u64,
    /// Peak resident set size of the process so far (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
}

impl PhaseReport {
    /// Records written to and read from the broker per input record: the Kafka work one input
    /// record costs.
    pub fn broker_io_per_record(&self) -> f64 {
        (self.broker_writes + self.broker_reads) as f64 / self.records_sent.max(1) as f64
    }

    /// `pipeline max rate`, `pipeline 1000/s`, `pass-through max rate`.
    pub fn label(&self) -> String {
        let rate = self
            .target_rate
            .map_or_else(|| "max rate".to_string(), |r| format!("{r:.0}/s"));
        format!("{} {rate}", self.kind)
    }
}

/// State size after the maximum-rate pipeline phase.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StateReport {
    /// Users with live state in the sessionizer changelog (latest value per key, tombstones removed).
    pub changelog_users: u64,
    /// Bytes of their latest values and keys.
    pub changelog_bytes: u64,
    /// `changelog_bytes / changelog_users`.
    pub bytes_per_user: f64,
    /// Each stage's in-memory state entries (the `state_entries` gauge) at the end of the phase.
    pub state_entries: BTreeMap<String, i64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Broker used.
    pub brokers: String,
    /// Partitions of every topic.
    pub partitions: i32,
    /// Cores available to this process.
    pub cores: usize,
    /// Records generated for the maximum-rate phases.
    pub generated: GenerateStats,
    /// Every phase, in the order run.
    pub phases: Vec<PhaseReport>,
    /// Maximum-rate pipeline throughput / pass-through throughput.
    pub pipeline_to_pass_through: f64,
    /// Sessionizer state size.
    pub state: StateReport,
}

/// The generated records, encoded once before any phase so producing costs no generation or encoding.
struct Workload {
    keys: Vec<Box<[u8]>>,
    payloads: Vec<Box<[u8]>>,
    /// Per record: the index of the first record with the same event id (where its send time is kept),
    /// `u32::MAX` for malformed records.
    slot: Vec<u32>,
    /// Event id -> slot.
    ids: HashMap<Box<str>, u32>,
    stats: GenerateStats,
}

impl Workload {
    fn generate(seed: u64, records: u64, codec: &Codec) -> anyhow::Result<Self> {
        let generator = Generator::new(GeneratorConfig {
            seed,
            // Enough sessions that the generator never runs dry before `max_events`.
            sessions: records,
            max_events: records,
            ..GeneratorConfig::default()
        })?;
        let mut w = Workload {
            keys: Vec::new(),
            payloads: Vec::new(),
            slot: Vec::new(),
            ids: HashMap::new(),
            stats: GenerateStats::default(),
        };
        for item in generator {
            let i = w.keys.len() as u32;
            match &item {
                Generated::Event(ev) => {
                    w.payloads.push(codec.encode(ev)?.into_boxed_slice());
                    let slot = *w.ids.entry(ev.event_id.as_str().into()).or_insert(i);
                    w.slot.push(slot);
                    w.stats.events += 1;
                }
                Generated::Malformed(m) => {
                    let valid = codec.encode(&m.event)?;
                    let bytes = if m.kind.is_wire_level() {
                        corrupt(&valid, m.kind)
                    } else {
                        valid
                    };
                    w.payloads.push(bytes.into_boxed_slice());
                    w.slot.push(u32::MAX);
                    w.stats.malformed += 1;
                }
            }
            w.keys.push(item.key().as_bytes().into());
        }
        Ok(w)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The first field of a Confluent-framed Avro record, when it is a string (`event_id` of a `ClickEvent` and of
/// a `Prediction`).
pub fn leading_string(payload: &[u8]) -> Option<&str> {
    let body = payload.get(HEADER_LEN..)?;
    let mut n: u64 = 0;
    let mut shift = 0;
    let mut used: usize = 0;
    for &b in body.iter().take(10) {
        n |= u64::from(b & 0x7f) << shift;
        shift += 7;
        used += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let len = (n >> 1) as i64 ^ -((n & 1) as i64);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(body.get(used..used.checked_add(len)?)?).ok()
}

/// Shared between a phase's producer, reader and monitor.
struct Clock {
    t0: Instant,
    /// Send time (ns after `t0`, +1 so 0 means unsent) per workload slot.
    sends: Vec<AtomicU64>,
    sent: AtomicU64,
    first_send_ns: AtomicU64,
    last_send_ns: AtomicU64,
    producing_done: AtomicBool,
    read: AtomicU64,
    last_read_ns: AtomicU64,
    stop_reader: AtomicBool,
}

impl Clock {
    fn new(records: usize) -> Self {
        Clock {
            t0: Instant::now(),
            sends: (0..records).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            first_send_ns: AtomicU64::new(u64::MAX),
            last_send_ns: AtomicU64::new(0),
            producing_done: AtomicBool::new(false),
            read: AtomicU64::new(0),
            last_read_ns: AtomicU64::new(0),
            stop_reader: AtomicBool::new(false),
        }
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

/// Produces `count` workload records to `topic` at `rate` (0 = as fast as possible), recording send times.
fn produce(
    producer: &FutureProducer,
    topic: &str,
    w: &Workload,
    count: usize,
    rate: f64,
    clock: &Clock,
) -> anyhow::Result<()> {
    let mut pacer = Pacer::new(rate);
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        pacer.wait();
        let t = clock.now_ns();
        if i == 0 {
            clock.first_send_ns.store(t, Ordering::Relaxed);
        }
        let slot = w.slot[i];
        if slot != u32::MAX {
            // Keep the first send of an event id (a duplicate's output is the first copy's).
            let _ = clock.sends[slot as usize].compare_exchange(
                0,
                t + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let mut record = FutureRecord::to(topic)
            .key(&*w.keys[i])
            .payload(&*w.payloads[i]);
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => anyhow::bail!("cannot produce to {topic}: {e}"),
            }
        }
        clock.sent.fetch_add(1, Ordering::Relaxed);
        clock.last_send_ns.store(t, Ordering::Relaxed);
    }
    producer.flush(Duration::from_secs(60))?;
    for r in futures::executor::block_on(futures::future::join_all(pending)) {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("delivery to {topic} failed: {e}"),
            Err(_) => anyhow::bail!("delivery to {topic} cancelled"),
        }
    }
    clock.producing_done.store(true, Ordering::Release);
    Ok(())
}

/// What the reader measured: per read topic, the latency from an event's first send to the first record of
/// that topic carrying its id.
struct ReadLatencies {
    per_topic: Vec<Histogram<u64>>,
    /// `(topic index, send time ns since the phase clock's start, latency µs)` of every sample, when traced.
    trace: Vec<(usize, u64, u64)>,
}

/// Reads every partition of `topics` from the start until told to stop; records latency per event id and topic.
/// The last topic is the phase's output: only its records count as read. The others (the pipeline's
/// intermediate topics) give the latency to each hop.
fn read_outputs(
    cfg: &ClickpathConfig,
    topics: &[String],
    w: &Workload,
    clock: &Clock,
    trace: bool,
) -> anyhow::Result<ReadLatencies> {
    let mut c = base_client_config(cfg);
    c.set(
        "group.id",
        format!("{}.bench-reader", cfg.kafka.group_prefix),
    )
    .set("enable.auto.commit", "false")
    .set("enable.partition.eof", "false")
    .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = c.create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let partitions = clickpath_runtime::changelog::wait_partition_count(
            cfg,
            topic,
            Duration::from_secs(15),
        )?;
        for p in 0..partitions as i32 {
            // The phase's topics are new: offset 0, which needs no look-up before the first fetch.
            tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
        }
    }
    consumer.assign(&tpl)?;
    let output = topics.len() - 1;
    let mut out = ReadLatencies {
        // Microseconds, 1 µs .. 1 h, 3 significant digits.
        per_topic: (0..topics.len())
            .map(|_| Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3))
            .collect::<Result<_, _>>()?,
        trace: Vec::new(),
    };
    let mut seen: Vec<Vec<bool>> = (0..topics.len()).map(|_| vec![false; w.len()]).collect();
    while !clock.stop_reader.load(Ordering::Acquire) {
        let Some(msg) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "Bench reader error.");
                continue;
            }
        };
        let now = clock.now_ns();
        let Some(t) = topics.iter().position(|n| n == msg.topic()) else {
            continue;
        };
        if t == output {
            clock.read.fetch_add(1, Ordering::Relaxed);
            clock.last_read_ns.store(now, Ordering::Relaxed);
        }
        let slot = msg
            .payload()
            .and_then(leading_string)
            .and_then(|id| w.ids.get(id))
            .copied();
        if let Some(slot) = slot {
            let slot = slot as usize;
            let sent = clock.sends[slot].load(Ordering::Relaxed);
            if sent > 0 && !seen[t][slot] {
                seen[t][slot] = true;
                let us = (now.saturating_sub(sent - 1) / 1000).max(1);
                out.per_topic[t].saturating_record(us);
                if trace {
                    out.trace.push((t, sent - 1, us));
                }
            }
        }
    }
    Ok(out)
}

/// The baseline: consume -> produce with no processing, batched and acknowledged like the stage run loop.
fn pass_through(
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
            let mut record = FutureRecord::to(output)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default());
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => anyhow::bail!("cannot produce to {output}: {e}"),
                }
            }
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

/// CPU seconds (user + system) of this process so far.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
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
    std::fs::read_to_string("/proc/self/status")
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

fn create_plain_topics(
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
fn delete_topics(cfg: &ClickpathConfig, names: &[String]) {
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
fn topics_end_offsets(cfg: &ClickpathConfig, topics: &[String]) -> u64 {
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

/// Reads a compacted changelog to its end: live keys and the bytes of their latest key + value.
fn changelog_size(cfg: &ClickpathConfig, topic: &str) -> anyhow::Result<(u64, u64)> {
    let partitions = clickpath_runtime::changelog::partition_count(cfg, topic)?;
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
    let mut latest: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut pending = partitions;
    let deadline = Instant::now() + Duration::from_secs(120);
    while pending > 0 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => pending -= 1,
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let key = m.key().unwrap_or_default();
                // The empty key is a partition's watermark, not a user.
                if key.is_empty() {
                    continue;
                }
                match m.payload() {
                    Some(v) => {
                        latest.insert(key.to_vec(), key.len() + v.len());
                    }
                    None => {
                        latest.remove(key);
                    }
                }
            }
        }
    }
    Ok((latest.len() as u64, latest.values().sum::<usize>() as u64))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    PassThrough,
    Pipeline,
}

struct PhaseSetup<'a> {
    kind: Kind,
    base: &'a ClickpathConfig,
    run_id: &'a str,
    phase: usize,
    partitions: i32,
    records: usize,
    rate: f64,
    timeout: Duration,
    bar: &'a ProgressBar,
    trace: bool,
    hops: bool,
}

/// Runs one phase on fresh topics; returns its report and, for a maximum-rate pipeline phase, the state size.
fn run_phase(
    s: &PhaseSetup<'_>,
    w: &Workload,
    want_state: bool,
) -> anyhow::Result<(PhaseReport, Option<StateReport>)> {
    let mut cfg = s.base.clone();
    let prefix = format!("bench-{}-{}.", s.run_id, s.phase);
    cfg.topics = cfg.topics.with_prefix(&prefix);
    cfg.topics.partitions = s.partitions;
    cfg.kafka.group_prefix = format!("{prefix}group");
    cfg.http.bind = "127.0.0.1:0".into();
    let clock = Clock::new(w.len());
    let label = match (s.kind, s.rate > 0.0) {
        (Kind::PassThrough, _) => "pass-through".to_string(),
        (Kind::Pipeline, false) => "pipeline, max rate".to_string(),
        (Kind::Pipeline, true) => format!("pipeline, {:.0}/s", s.rate),
    };
    s.bar.reset();
    s.bar.set_length(s.records as u64);
    s.bar.set_prefix(label.clone());

    // Topics the reader follows, the output last, with their roles.
    let mut read: Vec<(String, String)> = Vec::new();
    let (input, output, created) = match s.kind {
        Kind::PassThrough => {
            let input = format!("{prefix}passthrough.in");
            let output = format!("{prefix}passthrough.out");
            create_plain_topics(&cfg, &[&input, &output], s.partitions)?;
            (input.clone(), output.clone(), vec![input, output])
        }
        Kind::Pipeline => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))?;
            let mut created: Vec<String> = cfg
                .topics
                .all()
                .into_iter()
                .map(|(_, n)| n.to_string())
                .collect();
            // Every stage's changelog, for those that keep one (the sessionizer; the scorer with a
            // sequence model): counted in the broker's writes and deleted with the rest.
            created.extend(
                StageName::ALL
                    .iter()
                    .map(|n| clickpath_runtime::changelog::changelog_topic(&cfg, n.as_str())),
            );
            if s.hops {
                read.push(("clean".into(), cfg.topics.clean.clone()));
                read.push(("features".into(), cfg.topics.features.clone()));
            }
            (
                cfg.topics.raw.clone(),
                cfg.topics.predictions.clone(),
                created,
            )
        }
    };

    read.push((
        match s.kind {
            Kind::PassThrough => "output".into(),
            Kind::Pipeline => "predictions".into(),
        },
        output.clone(),
    ));
    let read_topics: Vec<String> = read.iter().map(|(_, t)| t.clone()).collect();
    let env = cfg.runner_env(Codec::embedded());
    let stop = AtomicBool::new(false);
    let ready = AtomicBool::new(false);
    let consumed = AtomicU64::new(0);
    let cpu_before = process_cpu_seconds();
    let t = cfg.topics.clone();
    let stage_names: Vec<&str> = StageName::ALL.iter().map(|n| n.as_str()).collect();

    let outcome = std::thread::scope(
        |scope| -> anyhow::Result<(PhaseReport, Option<StateReport>)> {
            // Start the consumers and wait until they own their partitions, so the clock measures processing, not
            // group joins.
            let mut stages = None;
            let mut passthrough = None;
            match s.kind {
                Kind::PassThrough => {
                    let (cfg, input, output) = (&cfg, &input, &output);
                    let (stop, ready, consumed) = (&stop, &ready, &consumed);
                    passthrough = Some(scope.spawn(move || {
                        let r = pass_through(cfg, input, output, stop, ready, consumed);
                        ready.store(true, Ordering::Release);
                        r
                    }));
                }
                Kind::Pipeline => {
                    stages = Some(pipeline::spawn_stages(&StageName::ALL, &cfg, &env, false)?);
                }
            }
            let assigned = |stage: &str| {
                env.metrics
                    .assigned_partitions
                    .get_or_create(&StageLabel {
                        stage: stage.into(),
                    })
                    .get()
                    > 0
            };
            let ready_deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let is_ready = match s.kind {
                    Kind::PassThrough => ready.load(Ordering::Acquire),
                    Kind::Pipeline => stage_names.iter().all(|n| assigned(n)),
                };
                if is_ready || env.shutdown.is_triggered() {
                    break;
                }
                if Instant::now() > ready_deadline {
                    anyhow::bail!("the {label} consumers were not assigned partitions within 60 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }

            // The clients of the load are made before the clock starts, and the clock starts once they are
            // ready, so it measures the steady state and not their start-up. An idempotent producer cannot
            // send until it has a producer id (up to 0.5 s after its creation on the local broker), and a
            // consumer fetches nothing until it has connected and found its partitions' leaders: before this,
            // both showed as a latency tail of the first second of every phase. A stage consumer that was
            // just assigned also looks up its start offsets first, hence the pause.
            let load_producer = create_producer(&cfg)?;
            let reader = {
                let (cfg, topics, clock, trace) = (&cfg, &read_topics, &clock, s.trace);
                scope.spawn(move || read_outputs(cfg, topics, w, clock, trace))
            };
            std::thread::sleep(Duration::from_secs(1));
            let producer = {
                let (input, clock) = (&input, &clock);
                let (records, rate) = (s.records, s.rate);
                scope.spawn(move || produce(&load_producer, input, w, records, rate, clock))
            };

            let m = &env.metrics;
            let lag = || -> u64 {
                let sent = clock.sent.load(Ordering::Relaxed);
                match s.kind {
                    Kind::PassThrough => sent.saturating_sub(consumed.load(Ordering::Relaxed)),
                    Kind::Pipeline => {
                        let clean = m.records_out_total("cleaning", &t.clean);
                        let features = m.records_out_total("windower", &t.features);
                        let predictions = m.records_out_total("scorer", &t.predictions);
                        sent.saturating_sub(m.records_in_total("cleaning", &t.raw))
                            + clean.saturating_sub(m.records_in_total("sessionizer", &t.clean))
                            + clean.saturating_sub(m.records_in_total("windower", &t.clean))
                            + clean.saturating_sub(m.records_in_total("detector", &t.clean))
                            + clean.saturating_sub(m.records_in_total("analytics", &t.clean))
                            + features.saturating_sub(m.records_in_total("scorer", &t.features))
                            + predictions
                                .saturating_sub(m.records_in_total("detector", &t.predictions))
                    }
                }
            };
            let expected = || -> u64 {
                match s.kind {
                    Kind::PassThrough => clock.sent.load(Ordering::Relaxed),
                    Kind::Pipeline => m.records_out_total("scorer", &t.predictions),
                }
            };
            let deadline = Instant::now() + s.timeout;
            let mut max_lag = 0;
            let mut complete = false;
            let mut last_draw = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(5));
                let l = lag();
                max_lag = max_lag.max(l);
                if last_draw.elapsed() >= Duration::from_millis(200) {
                    last_draw = Instant::now();
                    s.bar.set_position(clock.sent.load(Ordering::Relaxed));
                    s.bar.set_message(format!(
                        "read {} | lag {l}",
                        clock.read.load(Ordering::Relaxed)
                    ));
                }
                let produced = clock.producing_done.load(Ordering::Acquire);
                if produced && l == 0 && clock.read.load(Ordering::Relaxed) >= expected() {
                    complete = producer.is_finished();
                    if complete {
                        break;
                    }
                }
                if env.shutdown.is_triggered() || Instant::now() > deadline {
                    break;
                }
                if producer.is_finished() && !clock.producing_done.load(Ordering::Acquire) {
                    // The producer failed; its error is returned below.
                    break;
                }
            }
            let end_ns = clock.now_ns();
            let cpu_seconds = process_cpu_seconds() - cpu_before;
            let mut state_entries = BTreeMap::new();
            let mut stage_records_in = BTreeMap::new();
            match s.kind {
                Kind::PassThrough => {
                    stage_records_in
                        .insert("pass-through".into(), consumed.load(Ordering::Relaxed));
                }
                Kind::Pipeline => {
                    for n in StageName::ALL {
                        let input = n.input_topic(&env);
                        stage_records_in
                            .insert(n.as_str().into(), m.records_in_total(n.as_str(), &input));
                        let entries = m
                            .state_entries
                            .get_or_create(&StageLabel {
                                stage: n.as_str().into(),
                            })
                            .get();
                        state_entries.insert(n.as_str().to_string(), entries);
                    }
                }
            }
            let outputs_expected = expected();
            let stage_reads = match s.kind {
                Kind::PassThrough => consumed.load(Ordering::Relaxed),
                Kind::Pipeline => StageName::ALL
                    .iter()
                    .flat_map(|n| {
                        n.input_topics(&env)
                            .into_iter()
                            .map(move |topic| m.records_in_total(n.as_str(), &topic))
                    })
                    .sum(),
            };
            clock.stop_reader.store(true, Ordering::Release);
            stop.store(true, Ordering::Release);
            env.shutdown.trigger();
            let produced = producer
                .join()
                .map_err(|_| anyhow::anyhow!("bench producer panicked"))?;
            let read_latencies = reader
                .join()
                .map_err(|_| anyhow::anyhow!("bench reader panicked"))??;
            if let Some(p) = passthrough {
                p.join()
                    .map_err(|_| anyhow::anyhow!("pass-through loop panicked"))??;
            }
            if let Some(st) = stages {
                pipeline::join_stages(st)?;
            }
            produced?;
            if !complete {
                tracing::warn!(phase = %label, "The phase did not drain before the timeout; figures are partial.");
            }

            let sent = clock.sent.load(Ordering::Relaxed);
            let first = clock.first_send_ns.load(Ordering::Relaxed);
            let last_send = clock.last_send_ns.load(Ordering::Relaxed);
            let last_read = clock.last_read_ns.load(Ordering::Relaxed);
            let end = if complete {
                last_read.max(first)
            } else {
                end_ns
            };
            let seconds = end.saturating_sub(first) as f64 / 1e9;
            let throughput = sent as f64 / seconds.max(1e-9);
            let cores = cores();
            let report = PhaseReport {
                kind: match s.kind {
                    Kind::PassThrough => "pass-through".into(),
                    Kind::Pipeline => "pipeline".into(),
                },
                target_rate: (s.rate > 0.0).then_some(s.rate),
                records_sent: sent,
                outputs_read: clock.read.load(Ordering::Relaxed),
                outputs_expected,
                complete,
                seconds,
                send_rate: sent as f64 / (last_send.saturating_sub(first) as f64 / 1e9).max(1e-9),
                throughput,
                throughput_per_core: throughput / cores as f64,
                cpu_seconds,
                records_per_cpu_second: sent as f64 / cpu_seconds.max(1e-9),
                latency: Latency::of(read_latencies.per_topic.last().expect("an output topic")),
                hops: match s.kind {
                    Kind::Pipeline if s.hops => read
                        .iter()
                        .zip(&read_latencies.per_topic)
                        .map(|((role, _), h)| HopLatency {
                            topic: role.clone(),
                            latency: Latency::of(h),
                        })
                        .collect(),
                    _ => Vec::new(),
                },
                trace: read_latencies
                    .trace
                    .iter()
                    .map(|&(hop, sent_ns, us)| TraceSample {
                        hop,
                        sent_ms: sent_ns.saturating_sub(first) as f64 / 1e6,
                        latency_ms: us as f64 / 1000.0,
                    })
                    .collect(),
                max_lag,
                stage_records_in,
                broker_writes: topics_end_offsets(&cfg, &created),
                // Only the output counts for the harness: `--hops` reads of intermediate topics are
                // the harness's own diagnostics, not the pipeline's I/O.
                broker_reads: stage_reads + clock.read.load(Ordering::Relaxed),
                peak_rss_bytes: peak_rss_bytes(),
            };
            let state = if want_state && s.kind == Kind::Pipeline {
                let changelog = clickpath_runtime::changelog::changelog_topic(&cfg, "sessionizer");
                let (users, bytes) = changelog_size(&cfg, &changelog)?;
                Some(StateReport {
                    changelog_users: users,
                    changelog_bytes: bytes,
                    bytes_per_user: bytes as f64 / users.max(1) as f64,
                    state_entries,
                })
            } else {
                None
            };
            Ok((report, state))
        },
    );
    if outcome.is_err() {
        env.shutdown.trigger();
    }
    delete_topics(&cfg, &created);
    outcome
}

/// Writes `--trace`: one CSV row per latency sample.
fn write_trace(path: &std::path::Path, report: &BenchReport) -> anyhow::Result<()> {
    use std::io::Write;
    let file =
        std::fs::File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "phase,topic,sent_ms,latency_ms")?;
    for (i, phase) in report.phases.iter().enumerate() {
        let label = phase.label();
        for t in &phase.trace {
            let topic = phase.hops.get(t.hop).map_or("output", |h| h.topic.as_str());
            writeln!(
                out,
                "{i}:{label},{topic},{:.3},{:.3}",
                t.sent_ms, t.latency_ms
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the whole benchmark; the caller prints [`BenchReport::render`].
pub fn run_bench(
    base: ClickpathConfig,
    args: &BenchArgs,
    progress: bool,
) -> anyhow::Result<BenchReport> {
    let mut base = base;
    base.kafka.brokers = args.brokers.clone();
    let partitions = args.partitions.unwrap_or(base.topics.partitions).max(1);
    let codec = Codec::embedded();
    let w = Workload::generate(args.seed, args.events, &codec)?;
    if w.len() == 0 {
        anyhow::bail!(
            "the generator produced no records (--events {})",
            args.events
        );
    }
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .to_string();
    let bar = if progress {
        ProgressBar::new(w.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{prefix:>20} [{bar:30}] {pos}/{len} sent {per_sec} {msg}",
    )?);
    let timeout = Duration::from_secs(args.timeout_s);
    let setup = |kind, phase, records, rate| PhaseSetup {
        kind,
        base: &base,
        run_id: &run_id,
        phase,
        partitions,
        records,
        rate,
        timeout,
        bar: &bar,
        trace: args.trace.is_some(),
        hops: args.hops,
    };
    let mut phases = Vec::new();
    let (pass, _) = run_phase(&setup(Kind::PassThrough, 0, w.len(), 0.0), &w, false)?;
    phases.push(pass);
    let (max, state) = run_phase(&setup(Kind::Pipeline, 1, w.len(), 0.0), &w, true)?;
    let ratio = max.throughput / phases[0].throughput.max(1e-9);
    let max_rate = max.throughput;
    phases.push(max);
    if !args.no_fixed {
        let rates = if args.rates.is_empty() {
            vec![(max_rate / 2.0).round().max(1.0)]
        } else {
            args.rates.clone()
        };
        for (i, rate) in rates.into_iter().enumerate() {
            let records = ((rate * args.fixed_seconds) as usize).clamp(1, w.len());
            let (r, _) = run_phase(&setup(Kind::Pipeline, 2 + i, records, rate), &w, false)?;
            phases.push(r);
        }
    }
    bar.finish_and_clear();
    let report = BenchReport {
        brokers: args.brokers.clone(),
        partitions,
        cores: cores(),
        generated: w.stats,
        phases,
        pipeline_to_pass_through: ratio,
        state: state.unwrap_or_default(),
    };
    if let Some(path) = &args.trace {
        write_trace(path, &report)?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(report)
}

impl BenchReport {
    /// The results as a text table.
    pub fn render(&self) -> String {
        let mut out = format!(
            "clickpath-lab bench: {} records ({} events, {} malformed) on {}, {} partitions, {} cores\n\n",
            self.generated.events + self.generated.malformed,
            self.generated.events,
            self.generated.malformed,
            self.brokers,
            self.partitions,
            self.cores
        );
        out.push_str(&self.markdown_table());
        if self.phases.iter().any(|p| !p.hops.is_empty()) {
            out.push('\n');
            out.push_str(&self.hops_table());
        }
        out.push_str(&format!(
            "\npipeline / pass-through throughput: {:.2} (target >= 0.60)\n",
            self.pipeline_to_pass_through
        ));
        let max_rate = |kind: &str| {
            self.phases
                .iter()
                .find(|p| p.kind == kind && p.target_rate.is_none())
        };
        if let (Some(pass), Some(pipe)) = (max_rate("pass-through"), max_rate("pipeline")) {
            let (a, b) = (pass.broker_io_per_record(), pipe.broker_io_per_record());
            out.push_str(&format!(
                "broker records written + read per input record: pass-through {a:.2}, pipeline {b:.2}; \
                 throughput ratio per broker record moved: {:.2}\n",
                self.pipeline_to_pass_through * b / a.max(1e-9)
            ));
        }
        let s = &self.state;
        let entries: Vec<String> = s
            .state_entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!(
            "state: sessionizer changelog {} users, {} bytes = {:.0} bytes/user (target <= 1024); state entries {}\n",
            s.changelog_users,
            s.changelog_bytes,
            s.bytes_per_user,
            entries.join(" ")
        ));
        out
    }

    /// Per pipeline phase and topic on the way to the output, the latency from send to that topic (ms).
    pub fn hops_table(&self) -> String {
        let mut out = String::from(
            "| phase | to topic | p50 ms | p99 ms | p999 ms | max ms |\n|---|---|---:|---:|---:|---:|\n",
        );
        for p in &self.phases {
            for h in &p.hops {
                out.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                    p.label(),
                    h.topic,
                    h.latency.p50_ms,
                    h.latency.p99_ms,
                    h.latency.p999_ms,
                    h.latency.max_ms
                ));
            }
        }
        out
    }

    /// One Markdown table row per phase.
    pub fn markdown_table(&self) -> String {
        let mut out = String::from(
            "| phase | records | outputs | seconds | records/s | per core | records/CPU-s | broker I/O per record | p50 ms | p99 ms | p999 ms | max lag | peak RSS MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for p in &self.phases {
            out.push_str(&format!(
                "| {}{} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {:.0} |\n",
                p.label(),
                if p.complete { "" } else { " (incomplete)" },
                p.records_sent,
                p.outputs_read,
                p.seconds,
                p.throughput,
                p.throughput_per_core,
                p.records_per_cpu_second,
                p.broker_io_per_record(),
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.p999_ms,
                p.max_lag,
                p.peak_rss_bytes as f64 / (1 << 20) as f64
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_string_reads_the_event_id_of_an_encoded_event() {
        let codec = Codec::embedded();
        let ev = clickpath_schema::ClickEvent::new(
            "ev-123",
            "u1",
            clickpath_schema::EventType::PageView,
            1,
        );
        let bytes = codec.encode(&ev).unwrap();
        assert_eq!(leading_string(&bytes), Some("ev-123"));
        assert_eq!(leading_string(&bytes[..3]), None);
        assert_eq!(leading_string(&bytes[..7]), None);
    }

    #[test]
    fn proc_readings_are_plausible() {
        assert!(peak_rss_bytes() > 0);
        assert!(process_cpu_seconds() >= 0.0);
    }
}
