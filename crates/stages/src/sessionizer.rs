//! Sessionizer: event-time gap sessions per user; publishes a summary when a session closes.

use clickpath_core::session::{SessionConfig, Sessionizer as CoreSessionizer};
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::ClickEvent;

/// The sessionizer stage.
pub struct Sessionizer {
    inner: CoreSessionizer,
    output_topic: String,
    flush_on_shutdown: bool,
}

impl Sessionizer {
    /// A sessionizer writing summaries to `output_topic`. With `flush_on_shutdown` the open sessions are
    /// closed and published when the stage stops (the demo wants that; a long-running deployment does not,
    /// since the next instance continues them).
    pub fn new(cfg: &SessionConfig, output_topic: &str, flush_on_shutdown: bool) -> Self {
        Sessionizer {
            inner: CoreSessionizer::new(cfg.clone()),
            output_topic: output_topic.to_string(),
            flush_on_shutdown,
        }
    }
}

impl Stage for Sessionizer {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "sessionizer"
    }

    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        for summary in self.inner.on_event(&ev) {
            ctx.emit(&self.output_topic, &summary.user_id, &summary)?;
        }
        Ok(())
    }

    fn on_shutdown(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        if self.flush_on_shutdown {
            for summary in self.inner.flush() {
                ctx.emit(&self.output_topic, &summary.user_id, &summary)?;
            }
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.inner.open_sessions()
    }
}
