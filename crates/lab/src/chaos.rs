//! Fault injection on a real broker (`clickpath-lab chaos`, RELIABILITY.md): hostile input for the cleaning
//! stage, SIGKILLed stage processes, a broker restart in the middle of a run, and a rebalance after one of
//! three instances dies, and back-pressure from a scorer made ten times slower. Each scenario compares what was
//! committed with what an uninterrupted run gives.

pub mod backpressure;
pub mod hostile;
pub mod procs;

use clickpath_runtime::kafka::base_client_config;
use clickpath_stages::ClickpathConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Key bytes (empty when absent).
    pub key: Vec<u8>,
    /// Value bytes (empty when absent).
    pub payload: Vec<u8>,
    /// Headers as (name, UTF-8 lossy value).
    pub headers: Vec<(String, String)>,
}

/// Reads a topic from the beginning (`read_committed`, no consumer group), keeping its place between calls.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
}

impl TopicReader {
    /// Assigns every partition of `topic` from its first offset.
    pub fn new(cfg: &ClickpathConfig, topic: &str) -> anyhow::Result<Self> {
        let mut c = base_client_config(cfg);
        c.set(
            "group.id",
            format!("{}.chaos-reader", cfg.kafka.group_prefix),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = c.create()?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = md
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            anyhow::bail!("topic {topic} has no partitions (does it exist?)");
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(TopicReader {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// The records that arrive within `budget`.
    pub fn poll_for(&mut self, budget: Duration) -> Vec<ReadRecord> {
        let deadline = Instant::now() + budget;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            if let Some(r) = self.poll_one(Duration::from_millis(100)) {
                out.push(r);
            }
        }
        out
    }

    /// Reads until `enough(records so far)` holds, nothing new arrived for `idle`, or `max_wait` passed.
    pub fn read_until(
        &mut self,
        idle: Duration,
        max_wait: Duration,
        mut enough: impl FnMut(usize) -> bool,
    ) -> Vec<ReadRecord> {
        let started = Instant::now();
        let mut last = Instant::now();
        let mut out = Vec::new();
        while last.elapsed() < idle && started.elapsed() < max_wait && !enough(out.len()) {
            if let Some(r) = self.poll_one(Duration::from_millis(100)) {
                out.push(r);
                last = Instant::now();
            }
        }
        out
    }

    fn poll_one(&mut self, timeout: Duration) -> Option<ReadRecord> {
        match self.consumer.poll(timeout)? {
            Ok(m) => {
                let headers = clickpath_runtime::kafka::record_headers(&m)
                    .into_iter()
                    .map(|(k, v)| {
                        let v = String::from_utf8_lossy(v.unwrap_or_default());
                        (k.to_string(), v.into_owned())
                    })
                    .collect();
                Some(ReadRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, topic = %self.topic, "Chaos reader consumer error.");
                None
            }
        }
    }
}

/// The closing lines of every scenario's report: PASS, or FAIL with each failed check.
pub fn verdict(problems: &[String]) -> String {
    let mut s = String::from(if problems.is_empty() {
        "result: PASS\n"
    } else {
        "result: FAIL\n"
    });
    for p in problems {
        s += &format!("  - {p}\n");
    }
    s
}

/// Where a scenario's processes keep their config and logs unless `--work-dir` says otherwise.
fn default_work_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("clickpath-chaos-{}", std::process::id()))
}

/// Fails the command when a check failed (the report, already printed, lists them).
fn fail_on(problems: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(problems.is_empty(), "{} check(s) failed", problems.len());
    Ok(())
}

/// A configuration with every topic and group under a fresh `chaos-<scenario>-<time>.` prefix, so a run
/// never reads another run's records.
pub fn isolated_config(base: &ClickpathConfig, scenario: &str) -> ClickpathConfig {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let prefix = format!("chaos-{scenario}-{t}-{}.", std::process::id());
    let mut cfg = base.clone();
    cfg.topics = cfg.topics.with_prefix(&prefix);
    cfg.kafka.group_prefix = format!("{prefix}group");
    cfg
}

/// The stages the kill and broker-restart scenarios can check (each has a reference to compare with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChaosStage {
    /// Clean events, checked by event id against validation and de-duplication.
    Cleaning,
    /// Sessions, checked in full against the event-time sessionizer.
    Sessionizer,
    /// Feature vectors, checked by event id (their values depend on in-memory window state).
    Windower,
    /// The whole pipeline chained (`clickpath run all`, `[topology] mode = "chained"`): sessions,
    /// predictions, alerts and funnel aggregates checked record by record against an uninterrupted
    /// in-process chain over the same input.
    Chain,
    /// The whole pipeline per stage (`clickpath run all`, `[topology] mode = "per-stage"`): the same
    /// outputs and reference, MODEL_SURPRISE alerts left out (their evidence depends on whether the
    /// detector reads an event or its prediction first).
    Pipeline,
}

impl From<ChaosStage> for procs::Target {
    fn from(s: ChaosStage) -> Self {
        use clickpath_stages::StageName;
        match s {
            ChaosStage::Cleaning => procs::Target::Stage(StageName::Cleaning),
            ChaosStage::Sessionizer => procs::Target::Stage(StageName::Sessionizer),
            ChaosStage::Windower => procs::Target::Stage(StageName::Windower),
            ChaosStage::Chain => procs::Target::Chain,
            ChaosStage::Pipeline => procs::Target::Pipeline,
        }
    }
}

/// `processing.guarantee` on the command line, spelled as in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuaranteeArg {
    /// One transaction per batch: outputs, state changes and input offsets.
    #[value(name = "exactly_once")]
    ExactlyOnce,
    /// Offsets stored after the outputs are acknowledged.
    #[value(name = "at_least_once")]
    AtLeastOnce,
}

impl From<GuaranteeArg> for clickpath_runtime::config::Guarantee {
    fn from(g: GuaranteeArg) -> Self {
        match g {
            GuaranteeArg::ExactlyOnce => clickpath_runtime::config::Guarantee::ExactlyOnce,
            GuaranteeArg::AtLeastOnce => clickpath_runtime::config::Guarantee::AtLeastOnce,
        }
    }
}

/// `clickpath-lab chaos`: the fault-injection scenarios of RELIABILITY.md.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ChaosCommand {
    /// Hostile records interleaved with valid ones through the cleaning stage (in this process).
    Hostile {
        /// Hostile records to send.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// One valid record after every this many hostile ones.
        #[arg(long, default_value_t = 4)]
        hostile_per_valid: usize,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `runtime.max_record_bytes` for the run (the `oversized_record` case must fit the broker's limit).
        #[arg(long, default_value_t = 65_536)]
        max_record_bytes: usize,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Several `clickpath run <stage>` processes, SIGKILLed and restarted at random points; optionally
    /// broker restarts, or one instance killed for good to time the rebalance.
    Kill {
        /// The stage under test.
        #[arg(long, value_enum, default_value_t = ChaosStage::Sessionizer)]
        stage: ChaosStage,
        /// Delivery guarantee of the stage processes.
        #[arg(long, value_enum, default_value_t = GuaranteeArg::ExactlyOnce)]
        guarantee: GuaranteeArg,
        /// Instances of the stage.
        #[arg(long, default_value_t = 3)]
        instances: usize,
        /// Generated sessions (about 10 events each).
        #[arg(long, default_value_t = 5_000)]
        sessions: u64,
        /// SIGKILLs (each followed by a restart).
        #[arg(long, default_value_t = 3)]
        kills: usize,
        /// Kill the last instance for good after a third of the input and time the rebalance.
        #[arg(long)]
        rebalance: bool,
        /// Add one instance after two thirds of the input (with --rebalance: one leaves, one joins).
        #[arg(long)]
        add_instance: bool,
        /// Shell command that stops the broker (with --broker-start: restart it at each --broker-at point).
        #[arg(long, requires = "broker_start")]
        broker_stop: Option<String>,
        /// Shell command that starts the broker and waits until it answers.
        #[arg(long, requires = "broker_stop")]
        broker_start: Option<String>,
        /// Seconds the broker stays down.
        #[arg(long, default_value_t = 3.0)]
        broker_down_s: f64,
        /// When to restart the broker: fractions of the input the group has committed, comma-separated
        /// (one restart each).
        #[arg(long, value_delimiter = ',', default_value = "0.5")]
        broker_at: Vec<f64>,
        /// SIGKILL one instance just before each broker stop and start it again while the broker is down,
        /// so that it joins and restores its state while the broker comes back.
        #[arg(long)]
        broker_kill: bool,
        /// Input records per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up waiting for the output after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        /// Where the instances' config and logs go (default: a new directory under the system temp dir).
        #[arg(long)]
        work_dir: Option<std::path::PathBuf>,
    },
    /// A `clickpath run scorer` process made slower for a while and fed faster than it can score: its memory
    /// stays under the bound, its lag grows, and it catches up once the slowdown ends.
    Backpressure {
        /// Generated sessions (about 10 events, so 10 feature vectors, each).
        #[arg(long, default_value_t = 3_000)]
        sessions: u64,
        /// Feature vectors produced per second.
        #[arg(long, default_value_t = 3_000.0)]
        rate: f64,
        /// How much slower the scorer is made.
        #[arg(long, default_value_t = 10.0)]
        slow_factor: f64,
        /// For how many seconds after the scorer starts.
        #[arg(long, default_value_t = 10.0)]
        slow_for_s: f64,
        /// The scorer's `runtime.input_buffer_kbytes`.
        #[arg(long, default_value_t = 1024)]
        input_buffer_kbytes: u64,
        /// The bound on the scorer's peak resident set, MiB.
        #[arg(long, default_value_t = 256.0)]
        rss_limit_mib: f64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up waiting for the scorer to catch up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
        /// Where the scorer's config and log go (default: a new directory under the system temp dir).
        #[arg(long)]
        work_dir: Option<std::path::PathBuf>,
    },
}

/// Runs a `clickpath-lab chaos` command against the broker of `cfg`; prints the report and fails when a
/// check failed. `clickpath` is the binary whose processes are started, killed and restarted.
pub fn run_command(
    cmd: ChaosCommand,
    cfg: &ClickpathConfig,
    clickpath: &std::path::Path,
) -> anyhow::Result<()> {
    match cmd {
        ChaosCommand::Hostile {
            records,
            hostile_per_valid,
            seed,
            max_record_bytes,
            timeout_s,
        } => {
            let mut cfg = isolated_config(cfg, "hostile");
            cfg.runtime.max_record_bytes = max_record_bytes;
            let mut opts = hostile::HostileOptions::for_config(&cfg, records, seed);
            opts.hostile_per_valid = hostile_per_valid;
            let codec = clickpath_schema::codec::Codec::embedded();
            let recs = hostile::generate(&opts, &codec);
            let report = hostile::run_hostile(&cfg, &recs, Duration::from_secs(timeout_s))?;
            print!("{}", report.render());
            fail_on(&report.problems())
        }
        ChaosCommand::Kill {
            stage,
            guarantee,
            instances,
            sessions,
            kills,
            rebalance,
            add_instance,
            broker_stop,
            broker_start,
            broker_down_s,
            broker_at,
            broker_kill,
            rate,
            seed,
            timeout_s,
            work_dir,
        } => {
            let stage = stage.into();
            let guarantee = guarantee.into();
            anyhow::ensure!(
                broker_at.iter().all(|f| (0.0..=1.0).contains(f)),
                "--broker-at {broker_at:?}: each point is a fraction of the input, between 0 and 1"
            );
            let work_dir = work_dir.unwrap_or_else(default_work_dir);
            let opts = procs::ChaosOptions {
                target: stage,
                guarantee,
                instances,
                sessions,
                kills,
                broker: broker_stop
                    .zip(broker_start)
                    .map(|(stop, start)| procs::BrokerControl {
                        stop,
                        start,
                        down_s: broker_down_s,
                        at: broker_at,
                        kill_one: broker_kill,
                    }),
                rebalance,
                add_instance,
                rate,
                seed,
                binary: clickpath.to_path_buf(),
                work_dir: work_dir.clone(),
                timeout: Duration::from_secs(timeout_s),
            };
            let report = procs::run_chaos(cfg, &opts)?;
            print!("{}", report.render(guarantee));
            println!("instance logs: {}", work_dir.display());
            fail_on(&report.problems(guarantee))
        }
        ChaosCommand::Backpressure {
            sessions,
            rate,
            slow_factor,
            slow_for_s,
            input_buffer_kbytes,
            rss_limit_mib,
            seed,
            timeout_s,
            work_dir,
        } => {
            let work_dir = work_dir.unwrap_or_else(default_work_dir);
            let opts = backpressure::BackpressureOptions {
                sessions,
                rate,
                slow_factor,
                slow_for_s,
                input_buffer_kbytes,
                rss_limit_mib,
                seed,
                binary: clickpath.to_path_buf(),
                work_dir: work_dir.clone(),
                timeout: Duration::from_secs(timeout_s),
            };
            let report = backpressure::run_backpressure(cfg, &opts)?;
            print!("{}", report.render());
            println!("scorer log: {}", work_dir.join("scorer.log").display());
            fail_on(&report.problems())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ChaosCommand,
    }

    #[test]
    fn kill_takes_typed_stage_guarantee_and_restart_points() {
        let cli = Cli::try_parse_from([
            "chaos",
            "kill",
            "--stage",
            "windower",
            "--guarantee",
            "at_least_once",
            "--broker-at",
            "0.25,0.75",
            "--broker-kill",
            "--broker-stop",
            "true",
            "--broker-start",
            "true",
        ])
        .unwrap();
        let ChaosCommand::Kill {
            stage,
            guarantee,
            broker_at,
            broker_kill,
            ..
        } = cli.cmd
        else {
            panic!("not kill");
        };
        assert_eq!(stage, ChaosStage::Windower);
        assert_eq!(guarantee, GuaranteeArg::AtLeastOnce);
        assert_eq!(broker_at, vec![0.25, 0.75]);
        assert!(broker_kill);
        // A stage without a reference is refused, and the message lists the choices.
        let err = Cli::try_parse_from(["chaos", "kill", "--stage", "scorer"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cleaning, sessionizer, windower"), "{err}");
    }
}
