//! Sessionizer: event-time gap sessions per user; publishes a summary when a session closes.
//!
//! One core sessionizer per input partition: watermarks are per partition (as in Flink and Kafka
//! Streams), so a partition that is read ahead of another cannot make the other's events late.

use clickpath_core::session::{SessionConfig, Sessionizer as CoreSessionizer};
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::ClickEvent;
use std::collections::BTreeMap;

/// The sessionizer stage.
pub struct Sessionizer {
    config: SessionConfig,
    per_partition: BTreeMap<i32, CoreSessionizer>,
    output_topic: String,
    flush_on_shutdown: bool,
}

impl Sessionizer {
    /// A sessionizer writing summaries to `output_topic`. With `flush_on_shutdown` the open sessions are
    /// closed and published when the stage stops (the demo wants that; a long-running deployment does not,
    /// since the next instance continues them).
    pub fn new(cfg: &SessionConfig, output_topic: &str, flush_on_shutdown: bool) -> Self {
        Sessionizer {
            config: cfg.clone(),
            per_partition: BTreeMap::new(),
            output_topic: output_topic.to_string(),
            flush_on_shutdown,
        }
    }

    fn emit_all(
        &self,
        summaries: Vec<clickpath_schema::SessionSummary>,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        for summary in summaries {
            ctx.emit(&self.output_topic, &summary.user_id, &summary)?;
        }
        Ok(())
    }
}

impl Stage for Sessionizer {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "sessionizer"
    }

    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let partition = ctx.partition().unwrap_or(0);
        let config = &self.config;
        let closed = self
            .per_partition
            .entry(partition)
            .or_insert_with(|| CoreSessionizer::new(config.clone()))
            .on_event(&ev);
        self.emit_all(closed, ctx)
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        // Without a changelog (yet) the new owner starts these users afresh; drop our copy.
        for p in partitions {
            self.per_partition.remove(p);
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        if self.flush_on_shutdown {
            let mut all = Vec::new();
            for s in self.per_partition.values_mut() {
                all.extend(s.flush());
            }
            self.emit_all(all, ctx)?;
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.per_partition.values().map(|s| s.open_sessions()).sum()
    }
}
