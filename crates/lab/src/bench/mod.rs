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
//! 4. **Kafka Streams peer** (`--kafka-streams scripts/streams-peer.sh`): a Kafka Streams application doing
//!    the sessionizer's and windower's stateful work (event-time sessions, sliding-window counts, exactly-once)
//!    on the same broker and records, in its own JVM, compared per CPU second with the maximum-rate pipeline.
//!
//! Per phase it reports throughput (records produced / seconds from the first send until the last output was
//! read), event-to-output latency (the time a prediction, or a pass-through copy, is read minus the time its
//! raw event was handed to the producer; HdrHistogram p50/p99/p999), the largest consumer lag seen, process CPU
//! seconds, and peak RSS (`VmHWM`). After the maximum-rate phase it reads the sessionizer's changelog back to
//! size its state per active user. The pipeline's rate is printed as a ratio of the pass-through rate.
//!
//! Latency is keyed by `event_id`: both a `Prediction` and a `ClickEvent` start with it, so the reader takes it
//! from the Avro body without a full decode.

mod broker;
mod load;
mod peer;
mod phase;

pub use broker::{peak_rss_bytes, process_cpu_seconds};
pub use load::leading_string;
pub use peer::PeerSetup;

use clap::Args;
use clickpath_cli::generate::GenerateStats;
use clickpath_schema::codec::Codec;
use clickpath_stages::ClickpathConfig;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use load::Workload;
use phase::{PhaseKind, PhaseSetup, run_phase};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Distinct users in the generated records (default: the generator's 1,000). More users means
    /// more state to restore and fewer events per user.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: Option<u32>,
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
    /// Also run the Kafka Streams peer, started as `<LAUNCHER> run ARGS` (`scripts/streams-peer.sh`),
    /// on the same records after the maximum-rate pipeline, and compare the two per CPU second.
    #[arg(long, value_name = "LAUNCHER")]
    pub kafka_streams: Option<PathBuf>,
    /// The Kafka Streams peer's state stores: `rocksdb` (Kafka Streams' default) or `memory`.
    #[arg(long, default_value = "rocksdb", value_parser = ["rocksdb", "memory"])]
    pub kafka_streams_store: String,
    /// The Kafka Streams peer keeps sessions only, no sliding-window counts (what the windows cost).
    #[arg(long)]
    pub kafka_streams_sessions_only: bool,
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
            users: None,
            json: None,
            timeout_s: 180,
            no_fixed: false,
            trace: None,
            hops: false,
            kafka_streams: None,
            kafka_streams_store: "rocksdb".into(),
            kafka_streams_sessions_only: false,
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
    /// `pass-through`, `chain`, `pipeline` (per-stage) or `kafka-streams`.
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
    /// The Kafka Streams peer: CPU seconds its JVM used from when it was running until the phase
    /// drained (`cpu_seconds` is then the harness alone: producer, reader, lag queries).
    pub external_cpu_seconds: Option<f64>,
    /// Records per CPU second of the process doing the work: this one, or the peer's JVM (the
    /// broker's CPU is not included).
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
    /// Peak resident set size (`VmHWM`) so far of the process doing the work (this one, or the
    /// peer's JVM), bytes.
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
    /// Every stateful stage's changelog after the phase: live keys (users, units, buckets; not the
    /// partitions' own records) and bytes of the latest key + value of every live key.
    pub changelogs: BTreeMap<String, ChangelogSize>,
    /// After a chained run: every stage's state restored from the chain's changelog as the run
    /// left it (not compacted yet: every batch's changes).
    pub restore: Option<RestoreTiming>,
    /// The same from a copy holding only each key's latest record: the changelog after compaction.
    pub restore_compacted: Option<RestoreTiming>,
}

/// A restore of every stage's state into a fresh chain (all partitions), timed.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct RestoreTiming {
    /// Users restored: the sessionizer's live keys in the changelog.
    pub users: u64,
    /// Changelog records read (every stage's).
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Seconds to read every partition to its end and install every stage's state.
    pub seconds: f64,
    /// `users / seconds`.
    pub users_per_second: f64,
}

/// The maximum-rate pipeline against the Kafka Streams peer on the same records.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PeerComparison {
    /// Pipeline throughput / peer throughput (records/s, wall clock, on the same machine).
    pub throughput_ratio: f64,
    /// Pipeline records per CPU second / peer records per CPU second, where the pipeline's CPU
    /// includes this harness's producer and reader and the peer's is its JVM's alone.
    pub per_cpu_second_ratio: f64,
    /// CPU seconds of the pipeline phase (stages + harness).
    pub pipeline_cpu_seconds: f64,
    /// CPU seconds of the peer's JVM.
    pub peer_cpu_seconds: f64,
    /// Whether the peer kept sessions only (`--kafka-streams-sessions-only`).
    pub peer_sessions_only: bool,
}

impl PeerComparison {
    /// Compares a pipeline phase with a peer phase on the same records. The pipeline's CPU includes
    /// the harness's load producer and reader, which run in its process: the ratio is a lower bound.
    /// (The harness's CPU during the peer phase is no estimate of it: it grows with the phase's
    /// length, from polling the lag, not with the records.)
    pub fn of(pipeline: &PhaseReport, peer: &PhaseReport, sessions_only: bool) -> Option<Self> {
        let peer_cpu = peer.external_cpu_seconds?;
        let per_cpu = |records: u64, cpu: f64| records as f64 / cpu.max(1e-9);
        Some(PeerComparison {
            throughput_ratio: pipeline.throughput / peer.throughput.max(1e-9),
            per_cpu_second_ratio: per_cpu(pipeline.records_sent, pipeline.cpu_seconds)
                / per_cpu(peer.records_sent, peer_cpu).max(1e-9),
            pipeline_cpu_seconds: pipeline.cpu_seconds,
            peer_cpu_seconds: peer_cpu,
            peer_sessions_only: sessions_only,
        })
    }
}

/// A compacted changelog's live size.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct ChangelogSize {
    /// Live keys, the partitions' own records (the empty key) left out.
    pub keys: u64,
    /// Bytes of the latest key and value of every live key, the partitions' records included.
    pub bytes: u64,
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
    /// The maximum-rate pipeline against the Kafka Streams peer, with `--kafka-streams`.
    pub kafka_streams: Option<PeerComparison>,
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
    let w = Workload::generate(args.seed, args.events, args.users, &codec)?;
    if w.len() == 0 {
        anyhow::bail!(
            "the generator produced no records (--events {})",
            args.events
        );
    }
    let run_id = unique_run_id()?;
    let bar = if progress {
        ProgressBar::new(w.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{prefix:>20} [{bar:30}] {pos}/{len} sent {per_sec} {msg}",
    )?);
    let timeout = Duration::from_secs(args.timeout_s);
    let peer = args.kafka_streams.as_ref().map(|launcher| PeerSetup {
        launcher: launcher.clone(),
        store: args.kafka_streams_store.clone(),
        sessions_only: args.kafka_streams_sessions_only,
    });
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
        peer: peer.as_ref(),
    };
    let mut phases = Vec::new();
    let (pass, _) = run_phase(&setup(PhaseKind::PassThrough, 0, w.len(), 0.0), &w, false)?;
    phases.push(pass);
    let (max, state) = run_phase(&setup(PhaseKind::Pipeline, 1, w.len(), 0.0), &w, true)?;
    let ratio = max.throughput / phases[0].throughput.max(1e-9);
    let max_rate = max.throughput;
    let pipeline_max = max.clone();
    phases.push(max);
    let mut kafka_streams = None;
    if peer.is_some() {
        // Right after the pipeline's maximum-rate phase, on the same records, before the paced phases.
        let (r, _) = run_phase(&setup(PhaseKind::KafkaStreams, 2, w.len(), 0.0), &w, false)?;
        kafka_streams = PeerComparison::of(&pipeline_max, &r, args.kafka_streams_sessions_only);
        phases.push(r);
    }
    if !args.no_fixed {
        let rates = if args.rates.is_empty() {
            vec![(max_rate / 2.0).round().max(1.0)]
        } else {
            args.rates.clone()
        };
        for (i, rate) in rates.into_iter().enumerate() {
            let records = ((rate * args.fixed_seconds) as usize).clamp(1, w.len());
            let (r, _) = run_phase(&setup(PhaseKind::Pipeline, 3 + i, records, rate), &w, false)?;
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
        kafka_streams,
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
        let pipe = max_rate("chain").or_else(|| max_rate("pipeline"));
        if let (Some(pass), Some(pipe)) = (max_rate("pass-through"), pipe) {
            let (a, b) = (pass.broker_io_per_record(), pipe.broker_io_per_record());
            out.push_str(&format!(
                "broker records written + read per input record: pass-through {a:.2}, {} {b:.2}; \
                 throughput ratio per broker record moved: {:.2}\n",
                pipe.kind,
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
        let per_stage: Vec<String> = s
            .changelogs
            .iter()
            .map(|(stage, c)| {
                format!(
                    "{stage} {} keys {} bytes = {:.0} bytes/user",
                    c.keys,
                    c.bytes,
                    c.bytes as f64 / s.changelog_users.max(1) as f64
                )
            })
            .collect();
        let total: u64 = s.changelogs.values().map(|c| c.bytes).sum();
        out.push_str(&format!(
            "changelogs (per sessionizer user): {}; all stages {:.0} bytes/user\n",
            per_stage.join(", "),
            total as f64 / s.changelog_users.max(1) as f64
        ));
        for (how, r) in [
            ("as the run left it", &s.restore),
            ("compacted", &s.restore_compacted),
        ] {
            let Some(r) = r else { continue };
            out.push_str(&format!(
                "restore of every stage's state into a fresh chain, changelog {how}: {} users ({} records, {:.1} MiB) in {:.2} s = {:.0} users/s (target >= 500000), {:.0} records/s\n",
                r.users,
                r.records,
                r.bytes as f64 / (1 << 20) as f64,
                r.seconds,
                r.users_per_second,
                r.records as f64 / r.seconds.max(1e-9)
            ));
        }
        if let Some(k) = &self.kafka_streams {
            out.push_str(&format!(
                "against Kafka Streams ({}, same records): throughput {:.2}x; records per CPU-s {:.2}x \
                 (pipeline {:.1} CPU-s including the harness's producer and reader, peer JVM {:.1} CPU-s; target >= 2)\n",
                if k.peer_sessions_only {
                    "sessions only"
                } else {
                    "sessions + sliding-window counts"
                },
                k.throughput_ratio,
                k.per_cpu_second_ratio,
                k.pipeline_cpu_seconds,
                k.peer_cpu_seconds,
            ));
        }
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
            // A phase whose outputs carry no event id (the peer's sessions) has no latency.
            let ms = |v: f64| {
                if p.latency.samples == 0 {
                    "-".to_string()
                } else {
                    format!("{v:.1}")
                }
            };
            out.push_str(&format!(
                "| {}{} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {} | {:.0} |\n",
                p.label(),
                if p.complete { "" } else { " (incomplete)" },
                p.records_sent,
                p.outputs_read,
                p.seconds,
                p.throughput,
                p.throughput_per_core,
                p.records_per_cpu_second,
                p.broker_io_per_record(),
                ms(p.latency.p50_ms),
                ms(p.latency.p99_ms),
                ms(p.latency.p999_ms),
                p.max_lag,
                p.peak_rss_bytes as f64 / (1 << 20) as f64
            ));
        }
        out
    }
}

/// A run id no other run on this broker shares: the start time in milliseconds alone is not enough, since
/// two benches started in the same millisecond (two tests of one process, run in parallel) would share
/// topics, and one would read the other's records and delete its topics under it.
pub(crate) fn unique_run_id() -> anyhow::Result<String> {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(format!("{millis}-{}-{run}", std::process::id()))
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
