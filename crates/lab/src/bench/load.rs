//! The load: generated records encoded once, produced on a clock, and read back to time each event.

use super::broker::send_waiting;
use clickpath_cli::generate::GenerateStats;
use clickpath_cli::produce::Pacer;
use clickpath_generator::{Generated, Generator, GeneratorConfig, corrupt};
use clickpath_runtime::kafka::base_client_config;
use clickpath_schema::codec::{Codec, HEADER_LEN};
use clickpath_stages::ClickpathConfig;
use hdrhistogram::Histogram;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The generated records, encoded once before any phase so producing costs no generation or encoding.
pub(super) struct Workload {
    pub(super) keys: Vec<Box<[u8]>>,
    pub(super) payloads: Vec<Box<[u8]>>,
    /// Per record: the index of the first record with the same event id (where its send time is kept),
    /// `u32::MAX` for malformed records.
    pub(super) slot: Vec<u32>,
    /// Event id -> slot.
    pub(super) ids: HashMap<Box<str>, u32>,
    pub(super) stats: GenerateStats,
}

impl Workload {
    pub(super) fn generate(
        seed: u64,
        records: u64,
        users: Option<u32>,
        codec: &Codec,
    ) -> anyhow::Result<Self> {
        let defaults = GeneratorConfig::default();
        let generator = Generator::new(GeneratorConfig {
            seed,
            users: users.unwrap_or(defaults.users),
            // Enough sessions that the generator never runs dry before `max_events`.
            sessions: records,
            max_events: records,
            ..defaults
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

    pub(super) fn len(&self) -> usize {
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
pub(super) struct Clock {
    pub(super) t0: Instant,
    /// Send time (ns after `t0`, +1 so 0 means unsent) per workload slot.
    pub(super) sends: Vec<AtomicU64>,
    pub(super) sent: AtomicU64,
    pub(super) first_send_ns: AtomicU64,
    pub(super) last_send_ns: AtomicU64,
    pub(super) producing_done: AtomicBool,
    pub(super) read: AtomicU64,
    pub(super) last_read_ns: AtomicU64,
    pub(super) stop_reader: AtomicBool,
}

impl Clock {
    pub(super) fn new(records: usize) -> Self {
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

    pub(super) fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

/// Produces `count` workload records to `topic` at `rate` (0 = as fast as possible), recording send times.
pub(super) fn produce(
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
        let record = FutureRecord::to(topic)
            .key(&*w.keys[i])
            .payload(&*w.payloads[i]);
        pending.push(send_waiting(producer, record, Duration::from_millis(1))?);
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
pub(super) struct ReadLatencies {
    pub(super) per_topic: Vec<Histogram<u64>>,
    /// `(topic index, send time ns since the phase clock's start, latency µs)` of every sample, when traced.
    pub(super) trace: Vec<(usize, u64, u64)>,
}

/// Reads every partition of `topics` from the start until told to stop; records latency per event id and topic.
/// The last topic is the phase's output: only its records count as read. The others (the pipeline's
/// intermediate topics) give the latency to each hop.
pub(super) fn read_outputs(
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
