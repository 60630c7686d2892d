//! `clickpath replay`: a public data set (or generator output) into the raw topic.

use crate::app::GlobalArgs;
use crate::produce::EventProducer;
use clickpath_adapters::Format;
use clickpath_schema::codec::Codec;
use std::path::{Path, PathBuf};

/// Arguments of `clickpath replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Format of the file.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The file.
    pub file: PathBuf,
    /// Records per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

/// `clickpath replay`: sends the file's events to the raw topic and says how many.
pub fn run(args: &ReplayArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let cfg = global.load_config()?;
    let mut producer = EventProducer::new(&cfg, Codec::embedded(), &cfg.topics.raw, args.rate)?;
    let stats = replay(args.format, &args.file, &mut producer)?;
    println!(
        "sent {} events to {} ({} bad rows skipped)",
        stats.sent, cfg.topics.raw, stats.bad_rows
    );
    Ok(())
}

/// Counts of one replay.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    /// Events sent.
    pub sent: u64,
    /// Rows that could not be parsed (reported, skipped).
    pub bad_rows: u64,
}

/// Replays `path` in `format` into the producer's topic; bad rows are logged with their line and skipped.
pub fn replay(
    format: Format,
    path: &Path,
    producer: &mut EventProducer,
) -> anyhow::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    for item in clickpath_adapters::read(format, path)? {
        match item {
            Ok(ev) => {
                producer.send_event(&ev)?;
                stats.sent += 1;
            }
            Err(e) => {
                stats.bad_rows += 1;
                tracing::warn!(file = %path.display(), error = %e, "Row skipped.");
            }
        }
    }
    producer.flush()?;
    Ok(stats)
}
