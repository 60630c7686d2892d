//! Feature windower: per-user sliding-window features, one vector per clean event.

use clickpath_core::features::{FeatureSpec, FeatureWindower};
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::ClickEvent;

/// The feature windower stage.
pub struct Windower {
    inner: FeatureWindower,
    output_topic: String,
    watermark_ms: i64,
}

impl Windower {
    /// A windower writing feature vectors to `output_topic`.
    pub fn new(spec: &FeatureSpec, output_topic: &str) -> Self {
        Windower {
            inner: FeatureWindower::new(spec.clone()),
            output_topic: output_topic.to_string(),
            watermark_ms: i64::MIN,
        }
    }
}

impl Stage for Windower {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "windower"
    }

    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.watermark_ms = self.watermark_ms.max(ev.event_time);
        let fv = self.inner.update(&ev);
        ctx.emit(&self.output_topic, &fv.user_id, &fv)
    }

    fn tick(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        if self.watermark_ms > i64::MIN {
            self.inner.evict_idle(self.watermark_ms);
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.inner.users()
    }
}
