//! Anomaly detector: fraud and bot rules over clean events; alerts keyed by user.
//!
//! All logic is `clickpath_core::rules::Detector` (the same code `clickpath evaluate-detector`
//! measures). An alert is published when it opens and again, with the same `alert_id`, each time
//! later evidence raises its severity; consumers keep the latest version per `alert_id`.

use clickpath_core::rules::{Detector as CoreDetector, RulesConfig};
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::ClickEvent;

/// Version written into every alert.
pub const DETECTOR_VERSION: &str = concat!("rules+hst-", env!("CARGO_PKG_VERSION"));

/// The detector stage.
pub struct Detector {
    inner: CoreDetector,
    output_topic: String,
    watermark_ms: i64,
}

impl Detector {
    /// A detector writing alerts to `output_topic`.
    pub fn new(cfg: &RulesConfig, output_topic: &str) -> Self {
        Detector {
            inner: CoreDetector::new(cfg.clone(), DETECTOR_VERSION),
            output_topic: output_topic.to_string(),
            watermark_ms: i64::MIN,
        }
    }
}

impl Stage for Detector {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "detector"
    }

    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.watermark_ms = self.watermark_ms.max(ev.event_time);
        for alert in self.inner.on_event(&ev) {
            ctx.emit(&self.output_topic, &alert.user_id, &alert)?;
        }
        Ok(())
    }

    fn tick(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        if self.watermark_ms > i64::MIN {
            self.inner.evict_idle(self.watermark_ms);
        }
        Ok(())
    }
}
