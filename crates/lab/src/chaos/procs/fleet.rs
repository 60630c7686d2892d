//! The processes under test: the instances of a stage (started, SIGKILLed, restarted, stopped), the
//! broker's restarts, and the group's progress as the harness watches it.

use super::{BrokerControl, ChaosOptions, ChaosReport};
use clickpath_runtime::kafka::base_client_config;
use clickpath_stages::ClickpathConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The instances of the stage under test.
pub(super) struct Fleet<'a> {
    opts: &'a ChaosOptions,
    config: PathBuf,
    children: Vec<Option<Child>>,
    starts: Vec<usize>,
}

impl<'a> Fleet<'a> {
    /// `opts.instances` instances of `opts.stage` run with the configuration file `config`, all started.
    pub(super) fn start(opts: &'a ChaosOptions, config: PathBuf) -> anyhow::Result<Self> {
        let mut fleet = Fleet {
            opts,
            config,
            children: (0..opts.instances).map(|_| None).collect(),
            starts: vec![0; opts.instances],
        };
        for i in 0..opts.instances {
            fleet.spawn(i)?;
        }
        Ok(fleet)
    }
}

impl Fleet<'_> {
    fn log_path(&self, i: usize, n: usize) -> PathBuf {
        self.opts.work_dir.join(format!("instance-{i}.{n}.log"))
    }

    pub(super) fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.starts[i] += 1;
        let log = std::fs::File::create(self.log_path(i, self.starts[i]))?;
        let child = Command::new(&self.opts.binary)
            .arg("--config")
            .arg(&self.config)
            .args(["run", self.opts.target.run_arg()])
            .env_remove("CLICKPATH_CONFIG")
            .env("CLICKPATH__KAFKA__INSTANCE_ID", format!("chaos-{i}"))
            // Warnings, the rebalances and the restores and rewinds (which a failed run's diagnosis
            // starts from);
            // CLICKPATH_CHAOS_INSTANCE_LOG overrides it.
            .env(
                "RUST_LOG",
                std::env::var("CLICKPATH_CHAOS_INSTANCE_LOG").unwrap_or_else(|_| {
                    "warn,clickpath_runtime::kafka=info,clickpath_runtime::runner=info".into()
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Starts one more instance (index `children.len()`): a new member joins the group.
    pub(super) fn add(&mut self) -> anyhow::Result<()> {
        self.children.push(None);
        self.starts.push(0);
        self.spawn(self.children.len() - 1)
    }

    /// SIGKILL (std's `Child::kill` is SIGKILL on Unix) and reap.
    pub(super) fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Instances that exited on their own: recorded and restarted.
    pub(super) fn reap_exits(&mut self, report: &mut ChaosReport) -> anyhow::Result<()> {
        for i in 0..self.children.len() {
            let exited = match self.children[i].as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                let log =
                    std::fs::read_to_string(self.log_path(i, self.starts[i])).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                report
                    .unexpected_exits
                    .push(format!("instance {i} exited ({status}): {last}"));
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// SIGTERM everyone (drain) and wait.
    pub(super) fn stop(&mut self) {
        for c in self.children.iter().flatten() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in self.children.iter_mut() {
            if let Some(mut c) = c.take() {
                let deadline = Instant::now() + Duration::from_secs(40);
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Committed offsets of the stage's consumer group on its input topic.
pub(crate) struct Progress {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl Progress {
    pub(crate) fn new(cfg: &ClickpathConfig, group: &str, topic: &str) -> anyhow::Result<Self> {
        let mut c = base_client_config(cfg);
        c.set("group.id", format!("{}.{group}", cfg.kafka.group_prefix))
            .set("enable.auto.commit", "false")
            // The harness's view of progress must not wait for open transactions: read_committed would ask
            // for stable offsets, and a transaction holding an offset commit (a killed instance's, until it
            // times out) makes that look-up fail.
            .set("isolation.level", "read_uncommitted");
        let consumer: BaseConsumer = c.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..cfg.topics.partitions {
            tpl.add_partition(topic, p);
        }
        Ok(Progress { consumer, tpl })
    }

    /// The group's lag: high watermarks minus committed offsets, summed over the partitions; `None` while
    /// the broker does not answer.
    pub(crate) fn lag(&self) -> Option<u64> {
        let committed: i64 = self.committed()?.iter().sum();
        let mut high = 0;
        for e in self.tpl.elements() {
            high += self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(3))
                .ok()?
                .1;
        }
        Some((high - committed).max(0) as u64)
    }

    /// High watermark per partition; `None` while the broker does not answer.
    pub(super) fn ends(&self) -> Option<Vec<i64>> {
        self.tpl
            .elements()
            .iter()
            .map(|e| {
                self.consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(3))
                    .ok()
                    .map(|w| w.1)
            })
            .collect()
    }

    /// Committed offset per partition (0 when none yet); `None` while the broker does not answer.
    pub(super) fn committed(&self) -> Option<Vec<i64>> {
        let got = self
            .consumer
            .committed_offsets(self.tpl.clone(), Duration::from_secs(3))
            .ok()?;
        Some(
            got.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .collect(),
        )
    }
}

pub(super) fn write_config(dir: &Path, cfg: &ClickpathConfig) -> anyhow::Result<PathBuf> {
    let path = dir.join("clickpath.toml");
    std::fs::write(&path, toml::to_string(cfg)?)?;
    Ok(path)
}

/// The first few "Partition stalled" warnings in the instances' logs under `dir`.
pub(super) fn stall_warnings(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("Partition stalled")) {
            if found.len() < 5 {
                let name = log.file_name().unwrap_or_default().to_string_lossy();
                found.push(format!("{name}: {}", strip_ansi(line)));
            }
        }
    }
    found
}

/// A log line without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Kills one instance for good; returns per partition the seconds until its committed offset moved past
/// where it stood just after the kill (`None`: not within the run's timeout).
/// A partition counts as resumed once its committed offset moved past where it stood at the kill, or once
/// it has caught up with its input (a partition whose input ended before it could move).
pub(super) fn measure_recovery(fleet: &mut Fleet<'_>, progress: &Progress) -> Vec<Option<f64>> {
    let started = Instant::now();
    let deadline = started + fleet.opts.timeout;
    // The baseline is taken before the kill: afterwards the look-up may wait for the victim's open
    // transaction, and the others would have moved on meanwhile.
    let baseline = loop {
        if let Some(c) = progress.committed() {
            break c;
        }
        if Instant::now() > deadline {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let victim = fleet.children.len() - 1;
    fleet.kill(victim);
    let killed = Instant::now();
    let mut resumed: Vec<Option<f64>> = vec![None; baseline.len()];
    while Instant::now() < deadline && resumed.iter().any(Option::is_none) {
        if let (Some(c), Some(ends)) = (progress.committed(), progress.ends()) {
            for (p, o) in c.iter().enumerate() {
                let caught_up = *o >= ends[p] && killed.elapsed() > Duration::from_secs(1);
                if (*o > baseline[p] || caught_up) && resumed[p].is_none() {
                    resumed[p] = Some(killed.elapsed().as_secs_f64());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    resumed
}

/// Stops the broker, runs `while_down`, waits out the rest of `down_s`, starts it; returns the seconds from
/// stop to answering again.
pub(super) fn restart_broker(
    b: &BrokerControl,
    while_down: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let run = |cmd: &str| -> anyhow::Result<()> {
        let out = Command::new("sh").arg("-c").arg(cmd).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&b.stop)?;
    let down = Instant::now();
    while_down()?;
    std::thread::sleep(Duration::from_secs_f64(b.down_s).saturating_sub(down.elapsed()));
    run(&b.start)?;
    Ok(t.elapsed().as_secs_f64())
}
