//! The Kafka Streams peer as a [`Phase`]: what a platform engineer would run instead of clickpath's
//! stateful stages, on the same broker and input.
//!
//! The peer (`deploy/kafka-streams-peer`, started through `scripts/streams-peer.sh run`) keeps per-user
//! event-time sessions with the sessionizer's gap and lateness, and per-user sliding-window counts
//! over the windower's windows, with exactly-once. It runs in its own JVM, so its CPU seconds and peak
//! RSS are read from `/proc/<pid>` and reported apart from this process's (the load producer and the
//! reader, the harness's own cost).
//!
//! It is done when its consumer group has committed every input offset: under exactly-once the
//! outputs and changelogs of those records are committed in the same transactions.

use super::broker::{create_plain_topics, proc_cpu_seconds, proc_peak_rss_bytes};
use super::phase::{Phase, PhaseTopics};
use clickpath_runtime::RunnerEnv;
use clickpath_runtime::kafka::base_client_config;
use clickpath_runtime::shutdown::Shutdown;
use clickpath_stages::ClickpathConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the peer is started.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// `scripts/streams-peer.sh` (called as `<launcher> run ARGS`).
    pub launcher: PathBuf,
    /// Kafka Streams state stores: `rocksdb` (its default) or `memory`.
    pub store: String,
    /// Sessions only, no sliding-window counts (to see what the windows cost).
    pub sessions_only: bool,
}

/// What the peer's stdout said so far.
#[derive(Default)]
struct PeerStatus {
    running: AtomicBool,
    failure: Mutex<Option<String>>,
}

/// The Kafka Streams peer phase.
pub(super) struct KafkaStreamsPeer {
    setup: PeerSetup,
    app_id: String,
    input: String,
    sessions: String,
    windows: String,
    state_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    status: Arc<PeerStatus>,
    /// The group's committed input offsets, summed, and when they were read (read at most every 50 ms).
    committed: Mutex<(Option<Instant>, u64)>,
    offsets: Option<BaseConsumer>,
    partitions: i32,
}

impl KafkaStreamsPeer {
    /// A peer reading `<prefix>peer.in`, with application id `<prefix>peer` (its internal topics start
    /// with that).
    pub(super) fn new(prefix: &str, setup: PeerSetup) -> Self {
        let app_id = format!("{prefix}peer");
        let tmp = std::env::temp_dir();
        KafkaStreamsPeer {
            setup,
            input: format!("{prefix}peer.in"),
            sessions: format!("{prefix}peer.sessions"),
            windows: format!("{prefix}peer.windows"),
            state_dir: tmp.join(format!("{app_id}-state")),
            log: tmp.join(format!("{app_id}.log")),
            app_id,
            child: None,
            status: Arc::default(),
            committed: Mutex::new((None, 0)),
            offsets: None,
            partitions: 0,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The consumer group's committed offsets on the input, summed (0 before the first commit).
    fn committed_sum(&self) -> u64 {
        let mut cached = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        if cached
            .0
            .is_some_and(|at| at.elapsed() < Duration::from_millis(50))
        {
            return cached.1;
        }
        let Some(consumer) = &self.offsets else {
            return 0;
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.input, p);
        }
        if let Ok(c) = consumer.committed_offsets(tpl, Duration::from_secs(5)) {
            let sum = c
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => u64::try_from(o).unwrap_or(0),
                    _ => 0,
                })
                .sum();
            *cached = (Some(Instant::now()), sum);
        }
        cached.1
    }

    /// Reads the peer's stdout protocol (`peer: RUNNING`, `peer: ERROR ...`); its exit before a stop
    /// is a failure too, which also ends the phase through `shutdown`.
    fn watch(stdout: std::process::ChildStdout, status: Arc<PeerStatus>, shutdown: Shutdown) {
        let fail = |why: String| {
            let mut f = status.failure.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert(why);
            shutdown.trigger();
        };
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("peer: RUNNING") {
                status.running.store(true, Ordering::Release);
            } else if let Some(why) = line.strip_prefix("peer: ERROR ") {
                fail(why.to_string());
            } else if line.starts_with("peer: STOPPED") {
                return;
            }
        }
        fail("the Kafka Streams peer exited".into());
    }
}

impl Phase for KafkaStreamsPeer {
    fn kind(&self) -> &'static str {
        "kafka-streams"
    }

    fn create_topics(&self, cfg: &ClickpathConfig, _hops: bool) -> anyhow::Result<PhaseTopics> {
        let names = [&self.input, &self.sessions, &self.windows].map(String::as_str);
        create_plain_topics(cfg, &names, cfg.topics.partitions)?;
        Ok(PhaseTopics {
            input: self.input.clone(),
            read: vec![("sessions".into(), self.sessions.clone())],
            created: names.iter().map(|n| n.to_string()).collect(),
        })
    }

    fn start(&mut self, cfg: &ClickpathConfig, env: &RunnerEnv) -> anyhow::Result<()> {
        let s = &cfg.sessionizer;
        let grace = s.max_out_of_orderness_ms.max(0) + s.allowed_lateness_ms.max(0);
        let windows: Vec<String> = if self.setup.sessions_only {
            vec!["none".into()]
        } else {
            cfg.windower.windows_ms.iter().map(i64::to_string).collect()
        };
        let log = std::fs::File::create(&self.log)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.log.display()))?;
        let mut child = Command::new(&self.setup.launcher)
            .arg("run")
            .args(["--bootstrap", &cfg.kafka.brokers])
            .args(["--app-id", &self.app_id])
            .args(["--input", &self.input])
            .args(["--sessions", &self.sessions])
            .args(["--windows", &self.windows])
            .args(["--gap-ms", &s.gap_ms.to_string()])
            .args(["--grace-ms", &grace.to_string()])
            .args(["--windows-ms", &windows.join(",")])
            .args(["--store", &self.setup.store])
            .args([
                "--min-event-time-ms",
                &cfg.cleaning.validation.min_event_time_ms.to_string(),
            ])
            .args([
                "--max-future-skew-ms",
                &cfg.cleaning.validation.max_future_skew_ms.to_string(),
            ])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.setup.launcher.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (status, shutdown) = (Arc::clone(&self.status), env.shutdown.clone());
        std::thread::Builder::new()
            .name("peer-stdout".into())
            .spawn(move || Self::watch(stdout, status, shutdown))?;
        self.child = Some(child);
        let mut c = base_client_config(cfg);
        c.set("group.id", &self.app_id)
            .set("enable.auto.commit", "false");
        self.offsets = Some(c.create()?);
        self.partitions = cfg.topics.partitions;
        Ok(())
    }

    fn ready(&self, _env: &RunnerEnv) -> bool {
        self.status.running.load(Ordering::Acquire)
            || self
                .status
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }

    fn lag(&self, _env: &RunnerEnv, sent: u64) -> u64 {
        sent.saturating_sub(self.committed_sum())
    }

    fn expected_outputs(&self, _env: &RunnerEnv, _sent: u64) -> u64 {
        // Done is "every input offset committed" (the lag), not a count of outputs.
        0
    }

    fn records_in(&self, _env: &RunnerEnv) -> BTreeMap<String, u64> {
        BTreeMap::from([(self.kind().into(), self.committed_sum())])
    }

    fn broker_reads(&self, _env: &RunnerEnv) -> u64 {
        self.committed_sum()
    }

    fn state_entries(&self, _env: &RunnerEnv) -> BTreeMap<String, i64> {
        BTreeMap::new()
    }

    fn ends_at_last_output(&self) -> bool {
        false
    }

    fn external_cpu_seconds(&self) -> Option<f64> {
        self.pid().map(proc_cpu_seconds)
    }

    fn external_peak_rss_bytes(&self) -> Option<u64> {
        self.pid().map(proc_peak_rss_bytes)
    }

    fn internal_topics(&self, cfg: &ClickpathConfig) -> Vec<String> {
        // Kafka Streams names its changelog and suppression topics `<application.id>-<store>-changelog`.
        let list = || -> anyhow::Result<Vec<String>> {
            let consumer: BaseConsumer = base_client_config(cfg).create()?;
            let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
            let prefix = format!("{}-", self.app_id);
            Ok(md
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|n| n.starts_with(&prefix))
                .collect())
        };
        list().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot list the Kafka Streams peer's internal topics.");
            Vec::new()
        })
    }

    fn stop(&mut self, _env: &RunnerEnv) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Closing its stdin asks the peer to close (committing its last transaction); a peer that
        // does not exit within a minute is killed.
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let exit = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let failure = self
            .status
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|f| f != "the Kafka Streams peer exited");
        if let Some(why) = failure {
            anyhow::bail!(
                "the Kafka Streams peer failed: {why} (its log: {})",
                self.log.display()
            );
        }
        match exit {
            Some(s) if s.success() => Ok(()),
            Some(s) => anyhow::bail!(
                "the Kafka Streams peer exited with {s} (its log: {})",
                self.log.display()
            ),
            None => anyhow::bail!(
                "the Kafka Streams peer did not stop within 60 s (its log: {})",
                self.log.display()
            ),
        }
    }
}
