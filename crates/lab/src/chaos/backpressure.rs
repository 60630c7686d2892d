//! Back-pressure: a `clickpath run scorer` process made ten times slower (`[faults]`) for a while, fed feature
//! vectors faster than it can score them. Its memory must stay under the bound (`runtime.input_buffer_kbytes`
//! caps what it fetches ahead), its lag must grow on the broker instead, and once the slowdown ends it must
//! catch up, with a prediction for every input event.

use super::TopicReader;
use super::procs::Progress;
use crate::bench::leading_string;
use clickpath_cli::produce::EventProducer;
use clickpath_core::features::{FeatureSpec, FeatureWindower};
use clickpath_generator::{DirtyConfig, Generated, Generator, GeneratorConfig};
use clickpath_schema::codec::Codec;
use clickpath_stages::ClickpathConfig;
use clickpath_stages::StageName;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One back-pressure run.
#[derive(Debug, Clone)]
pub struct BackpressureOptions {
    /// Generated sessions (about 10 events each); each event becomes one feature vector.
    pub sessions: u64,
    /// Feature vectors produced per second.
    pub rate: f64,
    /// How much slower the scorer is made.
    pub slow_factor: f64,
    /// For how long after the scorer starts (seconds).
    pub slow_for_s: f64,
    /// `runtime.input_buffer_kbytes` of the scorer.
    pub input_buffer_kbytes: u64,
    /// The memory bound: the scorer's peak resident set (VmHWM) must stay under it, MiB.
    pub rss_limit_mib: f64,
    /// Generator seed.
    pub seed: u64,
    /// The `clickpath` binary to run the scorer with.
    pub binary: PathBuf,
    /// Where the scorer's config and log go.
    pub work_dir: PathBuf,
    /// Give up waiting for the scorer to catch up after this long.
    pub timeout: Duration,
}

/// One sample of the run, every 250 ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the scorer was ready and the input began.
    pub t_s: f64,
    /// Feature vectors produced so far.
    pub sent: u64,
    /// The scorer group's lag on the features topic (high watermarks minus committed offsets).
    pub lag: u64,
    /// The scorer's resident set, MiB.
    pub rss_mib: f64,
}

/// What a back-pressure run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BackpressureReport {
    /// Feature vectors produced (one per generated event).
    pub inputs: u64,
    /// Distinct input events with a prediction.
    pub predicted: u64,
    /// Input events without a prediction.
    pub lost: u64,
    /// Predictions beyond the first per event (at-least-once redelivery).
    pub duplicates: u64,
    /// Largest lag seen.
    pub max_lag: u64,
    /// Mean size of a feature-vector record, bytes: `max_lag` times this is the backlog that stayed on the
    /// broker.
    pub record_bytes: f64,
    /// The scorer's resident set at the first sample after it started scoring, MiB.
    pub rss_start_mib: f64,
    /// Its peak resident set over the run (VmHWM), MiB.
    pub rss_peak_mib: f64,
    /// The bound it must stay under, MiB.
    pub rss_limit_mib: f64,
    /// `runtime.input_buffer_kbytes` of the run.
    pub input_buffer_kbytes: u64,
    /// Seconds after the input began when the slowdown ended.
    pub slow_until_s: f64,
    /// Seconds after the slowdown ended (or after the last input, if later) until the lag was 0.
    pub recovery_s: Option<f64>,
    /// Messages of a scorer that exited before it was stopped.
    pub unexpected_exit: Option<String>,
    /// The samples.
    pub samples: Vec<Sample>,
}

impl BackpressureReport {
    /// Checks that failed, empty when the run passed.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.unexpected_exit {
            p.push(format!("the scorer exited: {e}"));
        }
        if self.lost > 0 {
            p.push(format!("{} input events have no prediction", self.lost));
        }
        // The scenario proves nothing unless the slowdown made the scorer fall behind by more than it may
        // buffer.
        let buffer_records = self.input_buffer_kbytes as f64 * 1024.0 / self.record_bytes.max(1.0);
        if (self.max_lag as f64) < 2.0 * buffer_records {
            p.push(format!(
                "the lag peaked at {} records, not above twice the input buffer ({buffer_records:.0} records): raise the rate or the slowdown",
                self.max_lag
            ));
        }
        if self.rss_peak_mib > self.rss_limit_mib {
            p.push(format!(
                "peak RSS {:.1} MiB is over the bound of {:.1} MiB",
                self.rss_peak_mib, self.rss_limit_mib
            ));
        }
        if self.recovery_s.is_none() {
            p.push("the lag did not return to 0 after the slowdown ended".into());
        }
        p
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let backlog_mib = self.max_lag as f64 * self.record_bytes / (1 << 20) as f64;
        let mut s = format!(
            "back-pressure: scorer slowed until {:.1} s, input buffer {} KiB\n\
             inputs {} | predicted {} | lost {} | duplicates {}\n\
             max lag {} records (a backlog of ~{backlog_mib:.1} MiB of {:.0}-byte records)\n\
             scorer RSS {:.1} MiB at start, peak {:.1} MiB (bound {:.1} MiB)\n\
             recovered: {}\n",
            self.slow_until_s,
            self.input_buffer_kbytes,
            self.inputs,
            self.predicted,
            self.lost,
            self.duplicates,
            self.max_lag,
            self.record_bytes,
            self.rss_start_mib,
            self.rss_peak_mib,
            self.rss_limit_mib,
            self.recovery_s.map_or_else(
                || "no".to_string(),
                |r| format!("lag 0 {r:.1} s after the slowdown and the input ended")
            ),
        );
        s += "timeline (every 2 s): t s, sent, lag, RSS MiB\n";
        let mut next = 0.0;
        for x in &self.samples {
            if x.t_s >= next {
                s += &format!(
                    "  {:6.1} {:8} {:8} {:7.1}\n",
                    x.t_s, x.sent, x.lag, x.rss_mib
                );
                next = x.t_s + 2.0;
            }
        }
        s += &super::verdict(&self.problems());
        s
    }
}

/// The resident set and its peak (VmRSS, VmHWM) of process `pid`, bytes.
fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A loopback port free at the moment (for the scorer's HTTP endpoint).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether `GET /readyz` on `port` answers 200 (the scorer joined its group).
fn is_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// Feature vectors of generated events, computed with the windower's own code, encoded and keyed by user.
fn feature_records(
    opts: &BackpressureOptions,
    spec: &FeatureSpec,
    codec: &Codec,
) -> anyhow::Result<Vec<(String, Vec<u8>, String)>> {
    let gcfg = GeneratorConfig {
        seed: opts.seed,
        sessions: opts.sessions,
        dirty: DirtyConfig {
            malformed_rate: 0.0,
            duplicate_rate: 0.0,
            ..GeneratorConfig::default().dirty
        },
        ..GeneratorConfig::default()
    };
    let mut windower = FeatureWindower::new(spec.clone());
    let mut out = Vec::new();
    for item in Generator::new(gcfg)? {
        if let Generated::Event(ev) = item {
            let fv = windower.update(&ev);
            out.push((fv.user_id.clone(), codec.encode(&fv)?, fv.event_id.clone()));
        }
    }
    Ok(out)
}

/// Runs the scenario against the broker of `base` (topics and group under a fresh prefix).
pub fn run_backpressure(
    base: &ClickpathConfig,
    opts: &BackpressureOptions,
) -> anyhow::Result<BackpressureReport> {
    anyhow::ensure!(opts.slow_factor >= 1.0, "--slow-factor must be >= 1");
    let mut cfg = super::isolated_config(base, "backpressure");
    let port = free_port()?;
    cfg.http.bind = format!("127.0.0.1:{port}");
    cfg.runtime.input_buffer_kbytes = opts.input_buffer_kbytes;
    cfg.faults.slow_stage = "scorer".into();
    cfg.faults.slow_factor = opts.slow_factor;
    cfg.faults.slow_for_ms = (opts.slow_for_s * 1000.0) as u64;
    std::fs::create_dir_all(&opts.work_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))?;
    let codec = Codec::embedded();
    let records = feature_records(opts, &cfg.windower, &codec)?;
    let record_bytes =
        records.iter().map(|r| r.1.len()).sum::<usize>() as f64 / records.len().max(1) as f64;

    let config_path = opts.work_dir.join("clickpath.toml");
    std::fs::write(&config_path, toml::to_string(&cfg)?)?;
    let log = opts.work_dir.join("scorer.log");
    let mut scorer = start_scorer(opts, &config_path, &log, port)?;
    let started = Instant::now();
    let lag = Progress::new(&cfg, StageName::Scorer.as_str(), &cfg.topics.features)?;
    let mut report = BackpressureReport {
        inputs: records.len() as u64,
        record_bytes,
        rss_limit_mib: opts.rss_limit_mib,
        input_buffer_kbytes: opts.input_buffer_kbytes,
        slow_until_s: opts.slow_for_s,
        ..BackpressureReport::default()
    };
    let sent = AtomicU64::new(0);
    let done_sending = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| -> anyhow::Result<()> {
        let sender = s.spawn(|| -> anyhow::Result<()> {
            let r = (|| {
                let mut producer =
                    EventProducer::new(&cfg, codec.clone(), &cfg.topics.features, opts.rate)?;
                for (i, (key, payload, _)) in records.iter().enumerate() {
                    producer.send_raw(key.as_bytes(), payload)?;
                    sent.store(i as u64 + 1, Ordering::Relaxed);
                }
                producer.flush()
            })();
            done_sending.store(true, Ordering::Release);
            r
        });
        let feed = Feed {
            started,
            sent: &sent,
            done: &done_sending,
        };
        follow(opts, &mut scorer, &log, &lag, &feed, &mut report)?;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("feature producer panicked"))?
    });
    stop_scorer(&mut scorer);
    outcome?;

    count_predictions(&cfg, &records, &mut report)?;
    Ok(report)
}

/// Starts `clickpath run scorer` with `config`, logging to `log`, and waits until it owns its
/// partitions (its `/readyz` on `port`), so the lag measures the slowdown, not the group join. The
/// slowdown's clock starts at its first input.
fn start_scorer(
    opts: &BackpressureOptions,
    config: &std::path::Path,
    log: &std::path::Path,
    port: u16,
) -> anyhow::Result<Child> {
    let mut scorer: Child = Command::new(&opts.binary)
        .arg("--config")
        .arg(config)
        .args(["run", "scorer"])
        .env_remove("CLICKPATH_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let ready_by = Instant::now() + Duration::from_secs(60);
    while !is_ready(port) {
        if let Some(status) = scorer.try_wait()? {
            anyhow::bail!(
                "the scorer exited before it was ready ({status}); log: {}",
                log.display()
            );
        }
        if Instant::now() > ready_by {
            let _ = scorer.kill();
            anyhow::bail!(
                "the scorer was not ready within 60 s; log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(scorer)
}

/// The input producer's progress, shared with the sampler.
#[derive(Clone, Copy)]
struct Feed<'a> {
    started: Instant,
    sent: &'a AtomicU64,
    done: &'a AtomicBool,
}

/// Samples lag and memory every 250 ms until the input is sent and the lag is back to 0 after the
/// slowdown (recovered), the scorer exits, or the timeout.
fn follow(
    opts: &BackpressureOptions,
    scorer: &mut Child,
    log: &std::path::Path,
    lag: &Progress,
    feed: &Feed<'_>,
    report: &mut BackpressureReport,
) -> anyhow::Result<()> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let pid = scorer.id();
    let Feed {
        started,
        sent,
        done: done_sending,
    } = *feed;
    let mut input_end_s = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let t_s = started.elapsed().as_secs_f64();
        if let Some(status) = scorer.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            report.unexpected_exit = Some(format!("{status}: {last}"));
            break;
        }
        let l = lag.lag();
        let (rss, hwm) = rss_of(pid).unwrap_or((0, 0));
        report.rss_peak_mib = report.rss_peak_mib.max(mib(hwm));
        let now_sent = sent.load(Ordering::Relaxed);
        if let Some(l) = l {
            if report.rss_start_mib == 0.0 && now_sent > 0 && l < now_sent {
                // Scoring has begun (the model is loaded): the resident set to compare with.
                report.rss_start_mib = mib(rss);
            }
            report.max_lag = report.max_lag.max(l);
            report.samples.push(Sample {
                t_s,
                sent: now_sent,
                lag: l,
                rss_mib: mib(rss),
            });
        }
        let done = done_sending.load(Ordering::Acquire);
        if done && input_end_s.is_none() {
            input_end_s = Some(t_s);
        }
        if let (Some(end), Some(0)) = (input_end_s, l)
            && t_s >= opts.slow_for_s
        {
            report.recovery_s = Some(t_s - end.max(opts.slow_for_s));
            break;
        }
        if started.elapsed() > opts.timeout {
            break;
        }
    }
    Ok(())
}

/// Drains the scorer (SIGTERM), then kills it if it does not go.
fn stop_scorer(scorer: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &scorer.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while matches!(scorer.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = scorer.kill();
    let _ = scorer.wait();
}

/// Every input event must have a prediction: counts those found, lost and duplicated.
fn count_predictions(
    cfg: &ClickpathConfig,
    records: &[(String, Vec<u8>, String)],
    report: &mut BackpressureReport,
) -> anyhow::Result<()> {
    let expected: HashSet<&str> = records.iter().map(|r| r.2.as_str()).collect();
    let mut reader = TopicReader::new(cfg, &cfg.topics.predictions)?;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < expected.len() && Instant::now() < deadline {
        let chunk = reader.read_until(Duration::from_secs(5), Duration::from_secs(10), |n| {
            n >= 10_000
        });
        if chunk.is_empty() {
            break;
        }
        for p in &chunk {
            if let Some(id) = leading_string(&p.payload)
                && expected.contains(id)
                && !seen.insert(id.to_string())
            {
                report.duplicates += 1;
            }
        }
    }
    report.predicted = seen.len() as u64;
    report.lost = expected.len() as u64 - report.predicted;
    Ok(())
}
