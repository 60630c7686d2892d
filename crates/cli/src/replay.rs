//! `clickpath replay`: a public data set (or generator output) into the raw topic.

use crate::produce::EventProducer;
use clickpath_adapters::Format;
use std::path::Path;

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
