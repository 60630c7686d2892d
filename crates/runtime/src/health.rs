//! Liveness and readiness of the stage loops in this process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct StageHealth {
    joined: bool,
    last_beat: Instant,
    assigned: usize,
    /// Assigned partitions with records waiting and no progress (see [`crate::stall`]), one line each.
    stalled: Vec<String>,
}

/// Shared health board: each loop beats once per batch and reports its assignment.
#[derive(Clone, Default, Debug)]
pub struct Health(Arc<Mutex<BTreeMap<String, StageHealth>>>);

/// A loop that has not beaten for this long is considered stuck.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

impl Health {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, StageHealth>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Registers a stage loop (not ready until it joins its group).
    pub fn register(&self, stage: &str) {
        self.with(|m| {
            m.insert(
                stage.to_string(),
                StageHealth {
                    joined: false,
                    last_beat: Instant::now(),
                    assigned: 0,
                    stalled: Vec::new(),
                },
            );
        });
    }

    /// The loop of `stage` is alive.
    pub fn beat(&self, stage: &str) {
        self.with(|m| {
            if let Some(h) = m.get_mut(stage) {
                h.last_beat = Instant::now();
            }
        });
    }

    /// `stage` took part in a rebalance and now owns `assigned` partitions.
    pub fn set_assigned(&self, stage: &str, assigned: usize) {
        self.with(|m| {
            if let Some(h) = m.get_mut(stage) {
                h.joined = true;
                h.assigned = assigned;
            }
        });
    }

    /// The partitions of `stage` that hold records it has not consumed for too long (empty: none). A stage
    /// with any is not live: it polls, but makes no progress.
    pub fn set_stalled(&self, stage: &str, stalled: Vec<String>) {
        self.with(|m| {
            if let Some(h) = m.get_mut(stage) {
                h.stalled = stalled;
            }
        });
    }

    /// The loop of `stage` has ended.
    pub fn remove(&self, stage: &str) {
        self.with(|m| {
            m.remove(stage);
        });
    }

    /// Every registered loop beat recently and none has stalled partitions.
    pub fn is_live(&self) -> bool {
        self.with(|m| {
            m.values()
                .all(|h| h.last_beat.elapsed() < STALL_AFTER && h.stalled.is_empty())
        })
    }

    /// Every registered loop has joined its consumer group.
    pub fn is_ready(&self) -> bool {
        self.with(|m| !m.is_empty() && m.values().all(|h| h.joined))
    }

    /// One line per stage, for the health endpoints.
    pub fn describe(&self) -> String {
        self.with(|m| {
            m.iter()
                .map(|(s, h)| {
                    let mut line = format!(
                        "{s}: joined={} partitions={} last_beat={:.1}s ago stalled={}",
                        h.joined,
                        h.assigned,
                        h.last_beat.elapsed().as_secs_f64(),
                        h.stalled.len()
                    );
                    for p in &h.stalled {
                        line += &format!("\n  stalled {p}");
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_with_stalled_partitions_is_not_live_and_says_which() {
        let h = Health::new();
        h.register("sessionizer");
        h.set_assigned("sessionizer", 1);
        assert!(h.is_live() && h.is_ready());
        h.set_stalled(
            "sessionizer",
            vec!["clean/0: position 7044, end 12545".to_string()],
        );
        assert!(!h.is_live(), "polling without progress is not alive");
        assert!(h.is_ready());
        let text = h.describe();
        assert!(text.contains("stalled=1"), "{text}");
        assert!(text.contains("stalled clean/0: position 7044"), "{text}");
        h.set_stalled("sessionizer", Vec::new());
        assert!(h.is_live());
    }
}
