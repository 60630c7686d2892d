//! Cleaning: validate and normalise raw events, drop duplicates, forward the rest keyed by user.

use clickpath_core::dedupe::Deduper;
use clickpath_core::validate::{ValidationConfig, validate_and_normalise};
use clickpath_runtime::config::CleaningConfig;
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::ClickEvent;

/// The cleaning stage.
pub struct Cleaning {
    validation: ValidationConfig,
    dedupe: Deduper,
    output_topic: String,
}

impl Cleaning {
    /// A cleaning stage writing to `output_topic`.
    pub fn new(cfg: &CleaningConfig, output_topic: &str) -> Self {
        Cleaning {
            validation: cfg.validation.clone(),
            dedupe: Deduper::new(cfg.dedupe_window_ms, cfg.dedupe_max_ids),
            output_topic: output_topic.to_string(),
        }
    }

    /// Duplicates dropped so far.
    pub fn duplicates_dropped(&self) -> u64 {
        self.dedupe.duplicates_dropped()
    }
}

impl Stage for Cleaning {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "cleaning"
    }

    fn process(&mut self, mut ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        validate_and_normalise(&mut ev, &self.validation, ctx.now_ms()).map_err(|r| StageError::Rejected {
            kind: r.kind.as_str(),
            reason: r.reason,
        })?;
        if self.dedupe.is_duplicate(&ev.event_id, ev.event_time) {
            return Ok(());
        }
        ctx.emit(&self.output_topic, &ev.user_id, &ev)
    }

    fn state_entries(&self) -> usize {
        self.dedupe.len()
    }
}
