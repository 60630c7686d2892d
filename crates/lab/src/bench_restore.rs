//! `clickpath-lab bench-restore`: how fast a sessionizer instance gets its state back from the changelog.
//!
//! Builds realistic per-user state with the core sessionizer (generated traffic), writes it to a fresh
//! compacted changelog topic on the given broker, then times the runtime's restore of every partition into a
//! sessionizer stage, including parsing and installing each user's state.

use clickpath_core::session::Sessionizer as CoreSessionizer;
use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_runtime::Stage;
use clickpath_runtime::changelog::{ensure_changelog_topic, restore};
use clickpath_runtime::kafka::create_producer;
use clickpath_stages::ClickpathConfig;
use clickpath_stages::sessionizer::Sessionizer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer};
use std::time::{Duration, Instant};

/// Arguments of `clickpath-lab bench-restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchRestoreArgs {
    /// Users whose state is written and restored.
    #[arg(long, default_value_t = 200_000)]
    pub users: usize,
    /// Write the state as JSON (the format of earlier versions) instead of binary.
    #[arg(long)]
    pub json_state: bool,
}

/// `clickpath-lab bench-restore`: under fresh `bench-<time>.` topics and groups, measures and
/// prints one line.
pub fn run_command(args: &BenchRestoreArgs, mut cfg: ClickpathConfig) -> anyhow::Result<()> {
    let run_id = crate::bench::unique_run_id()?;
    cfg.topics = cfg.topics.with_prefix(&format!("bench-{run_id}."));
    cfg.kafka.group_prefix = format!("clickpath-bench-{run_id}");
    let r = bench_restore(&cfg, args.users, args.json_state)?;
    println!(
        "restored {} users ({} records, {:.1} MiB, {:.0} bytes/user) in {:.2} s = {:.0} users/s",
        r.users,
        r.records,
        r.bytes as f64 / (1 << 20) as f64,
        r.bytes as f64 / r.users.max(1) as f64,
        r.seconds,
        r.users_per_second()
    );
    Ok(())
}

/// What one restore measured.
#[derive(Debug, Clone, Copy)]
pub struct RestoreReport {
    /// Users whose state was written.
    pub users: usize,
    /// Changelog records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Seconds to read every partition to its end and install the state.
    pub seconds: f64,
}

impl RestoreReport {
    /// Users restored per second.
    pub fn users_per_second(&self) -> f64 {
        self.users as f64 / self.seconds.max(1e-9)
    }
}

/// Writes the state of about `users` users to a fresh changelog under `cfg`'s topics and restores it.
///
/// With `json_state` the values are written as JSON, the format of earlier versions (still read), to compare.
pub fn bench_restore(
    cfg: &ClickpathConfig,
    users: usize,
    json_state: bool,
) -> anyhow::Result<RestoreReport> {
    // Realistic state: open sessions of generated shoppers, captured mid-stream.
    let mut core = CoreSessionizer::new(cfg.sessionizer.clone());
    let gen_cfg = GeneratorConfig {
        users: users as u32,
        sessions: users as u64,
        ..GeneratorConfig::default()
    };
    for g in Generator::new(gen_cfg)? {
        if let Generated::Event(ev) = g {
            core.on_event(&ev);
        }
    }
    let states: Vec<(String, Vec<u8>)> = core
        .take_changed()
        .into_iter()
        .filter_map(|(u, s)| {
            s.map(|s| {
                let bytes = if json_state {
                    serde_json::to_vec(&s).unwrap_or_default()
                } else {
                    s.to_bytes()
                };
                (u, bytes)
            })
        })
        .collect();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(clickpath_runtime::kafka::create_topics(cfg, &cfg.topics))?;
    let changelog = clickpath_runtime::changelog::changelog_topic(cfg, "sessionizer");
    ensure_changelog_topic(cfg, &changelog, &cfg.topics.clean)?;
    let producer = create_producer(cfg)?;
    let partitions = cfg.topics.partitions.max(1);
    let mut pending = Vec::new();
    for (user, bytes) in &states {
        let p = clickpath_runtime::query::partition_for_key(user.as_bytes(), partitions as usize);
        let mut rec = FutureRecord::to(&changelog)
            .partition(p)
            .key(user.as_bytes())
            .payload(bytes.as_slice());
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Let librdkafka drain its queue, then retry the same record.
                    rec = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => anyhow::bail!("cannot write the changelog: {e}"),
            }
        }
    }
    for r in futures::executor::block_on(futures::future::join_all(pending)) {
        r.map_err(|_| anyhow::anyhow!("cancelled"))?
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let mut stage = Sessionizer::new(
        &cfg.sessionizer,
        &cfg.topics.sessions,
        &cfg.topics.late_events,
        false,
    );
    let all: Vec<i32> = (0..partitions).collect();
    let started = Instant::now();
    let stats = restore(cfg, &changelog, &all, &mut stage, None, &|| {})?;
    let read_seconds = started.elapsed().as_secs_f64();
    stage.on_assign(&all);
    tracing::info!(
        read_seconds,
        install_seconds = started.elapsed().as_secs_f64() - read_seconds,
        "Restore timed."
    );
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreReport {
        users: states.len(),
        records: stats.records,
        bytes: stats.bytes,
        seconds,
    })
}
