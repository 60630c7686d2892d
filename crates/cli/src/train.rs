//! `clickpath train --model baseline`: fit the baseline models on events from a file.

use clickpath_model::train::{TrainConfig, train_baseline};
use std::path::Path;

/// Trains the baseline on `events` and writes the artifact to `out`; returns the report's text.
pub fn train_baseline_to(
    events: &[clickpath_schema::ClickEvent],
    cfg: &TrainConfig,
    out: &Path,
) -> anyhow::Result<String> {
    let report = train_baseline(events, cfg)?;
    report.artifact.save(out)?;
    Ok(serde_json::to_string_pretty(report.metrics())?)
}
