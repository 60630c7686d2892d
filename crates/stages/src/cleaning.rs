//! Cleaning: validate and normalise raw events, drop duplicates, forward the rest keyed by user.
//!
//! De-duplication state is kept per input partition: a duplicate always shares its user, hence its
//! partition, and a partition read far ahead in event time must not expire another's ids.

use crate::config::CleaningConfig;
use clickpath_core::dedupe::Deduper;
use clickpath_core::validate::{ValidationConfig, validate_and_normalise};
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::ClickEvent;
use std::collections::BTreeMap;

/// The cleaning stage.
pub struct Cleaning {
    validation: ValidationConfig,
    dedupe_window_ms: i64,
    dedupe_max_ids: usize,
    dedupe: BTreeMap<i32, Deduper>,
    output_topic: String,
}

impl Cleaning {
    /// A cleaning stage writing to `output_topic`.
    pub fn new(cfg: &CleaningConfig, output_topic: &str) -> Self {
        Cleaning {
            validation: cfg.validation.clone(),
            dedupe_window_ms: cfg.dedupe_window_ms,
            dedupe_max_ids: cfg.dedupe_max_ids,
            dedupe: BTreeMap::new(),
            output_topic: output_topic.to_string(),
        }
    }

    /// Duplicates dropped so far.
    pub fn duplicates_dropped(&self) -> u64 {
        self.dedupe.values().map(Deduper::duplicates_dropped).sum()
    }
}

impl Stage for Cleaning {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "cleaning"
    }

    fn process(&mut self, mut ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        validate_and_normalise(&mut ev, &self.validation, ctx.now_ms()).map_err(|r| {
            StageError::Rejected {
                kind: r.kind.as_str(),
                reason: r.reason,
            }
        })?;
        let (window, max) = (self.dedupe_window_ms, self.dedupe_max_ids);
        let dedupe = self
            .dedupe
            .entry(ctx.partition().unwrap_or(0))
            .or_insert_with(|| Deduper::new(window, max));
        if dedupe.is_duplicate(&ev.event_id, ev.event_time) {
            return Ok(());
        }
        ctx.emit(&self.output_topic, &ev.user_id, &ev)
    }

    fn state_entries(&self) -> usize {
        self.dedupe.values().map(Deduper::len).sum()
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.dedupe.remove(p);
        }
    }
}
