//! Sessionizer: event-time gap sessions per user and each user's purchase-path state; publishes a summary
//! when a session closes (and a corrected one when a late event merges two), sends events beyond the allowed
//! lateness to the late-events topic, and keeps its state durable in a changelog topic.
//!
//! One core sessionizer per input partition: watermarks are per partition (as in Flink and Kafka Streams), so a
//! partition that is read ahead of another cannot make the other's events late, and a partition's state moves
//! with it on a rebalance.

use clickpath_core::session::{SessionConfig, Sessionizer as CoreSessionizer, UserState};
use clickpath_model::outlook::OutlookModel;
use clickpath_runtime::query::{QueryStore, View};
use clickpath_runtime::{Context, Stage, StageError, StateChange};
use clickpath_schema::{ClickEvent, SessionSummary};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Changelog key of a partition's watermark (user ids are never empty, so it cannot collide).
const WATERMARK_KEY: &[u8] = b"";

/// The sessionizer stage.
pub struct Sessionizer {
    config: SessionConfig,
    per_partition: BTreeMap<i32, CoreSessionizer>,
    sessions_topic: String,
    late_topic: String,
    flush_on_shutdown: bool,
    query: QueryStore,
    /// Whether state changes go to a changelog (off for the embedded demo, which has no durable bus).
    durable: bool,
    changes: Vec<StateChange>,
    /// Changelog records read during a restore, applied when the partition is handed over (last write wins,
    /// tombstones delete): a changelog that is not compacted yet holds several values per key.
    restoring: BTreeMap<i32, Restoring>,
    /// The watermark last written to the changelog, per partition: it is written whenever it moved, even when
    /// no user changed (a duplicate with a newer time can move it), so a restore resumes exactly.
    written_watermark: BTreeMap<i32, i64>,
    /// Adds each closed session's return propensity and segment when set.
    outlook: Option<Arc<OutlookModel>>,
}

#[derive(Default)]
struct Restoring {
    users: foldhash::HashMap<String, Vec<u8>>,
    watermark: Option<i64>,
}

impl Sessionizer {
    /// A sessionizer writing summaries to `sessions_topic` and too-late events to `late_topic`. With
    /// `flush_on_shutdown` the open sessions are closed and published when the stage stops (the demo wants
    /// that; a long-running deployment does not, since the next owner continues them from the changelog).
    pub fn new(
        cfg: &SessionConfig,
        sessions_topic: &str,
        late_topic: &str,
        flush_on_shutdown: bool,
    ) -> Self {
        Sessionizer {
            config: cfg.clone(),
            per_partition: BTreeMap::new(),
            sessions_topic: sessions_topic.to_string(),
            late_topic: late_topic.to_string(),
            flush_on_shutdown,
            query: QueryStore::new(),
            durable: true,
            changes: Vec::new(),
            restoring: BTreeMap::new(),
            written_watermark: BTreeMap::new(),
            outlook: None,
        }
    }

    /// Publishes every closed session with `model`'s outlook (return propensity and segment).
    pub fn with_outlook(mut self, model: Option<Arc<OutlookModel>>) -> Self {
        self.outlook = model;
        self
    }

    /// Keeps state in memory only (no changelog topic).
    pub fn without_changelog(mut self) -> Self {
        self.durable = false;
        self
    }

    fn partition(&mut self, partition: i32) -> &mut CoreSessionizer {
        let config = &self.config;
        self.per_partition
            .entry(partition)
            .or_insert_with(|| CoreSessionizer::new(config.clone()))
    }

    /// Emits closed sessions. Only those of `cause`'s user carry the current record's trace: an
    /// event moves the partition's watermark, which closes other users' idle sessions too, and
    /// those are not part of its trace.
    fn emit_all(
        &self,
        summaries: Vec<SessionSummary>,
        ctx: &mut Context<'_>,
        cause: Option<&str>,
    ) -> Result<(), StageError> {
        for mut summary in summaries {
            if let Some(model) = &self.outlook {
                summary.outlook = Some(model.assess(&summary));
            }
            let trace = ctx
                .trace()
                .filter(|_| cause == Some(summary.user_id.as_str()));
            ctx.emit_with_trace(
                &self.sessions_topic,
                &summary.user_id,
                &summary,
                Vec::new(),
                trace,
            )?;
        }
        Ok(())
    }

    /// Collects the partition's state changes for the changelog and refreshes the query views.
    fn capture(&mut self, partition: i32) -> Result<(), StageError> {
        let durable = self.durable;
        let s = self.partition(partition);
        let changed = s.take_changed();
        let watermark = s.watermark();
        let mut views = Vec::with_capacity(changed.len());
        let mut changes = Vec::with_capacity(changed.len() + 1);
        for (user, state) in changed {
            // Published as is: rendered to JSON only if the query API asks for it.
            views.push((user.clone(), s.path_view(&user)));
            if durable {
                let value = state.map(|state| state.to_bytes());
                changes.push(StateChange {
                    partition,
                    key: user.into_bytes(),
                    value,
                });
            }
        }
        if durable && self.written_watermark.get(&partition) != Some(&watermark) {
            self.written_watermark.insert(partition, watermark);
            changes.push(StateChange {
                partition,
                key: WATERMARK_KEY.to_vec(),
                value: Some(watermark.to_string().into_bytes()),
            });
        }
        self.changes.extend(changes);
        for (user, view) in views {
            match view {
                Some(v) => self.query.publish(&user, v),
                None => self.query.remove(&user),
            }
        }
        Ok(())
    }
}

impl Sessionizer {
    /// [`Stage::process`] by reference: the chained topology hands one event to several stages.
    pub fn process_event(
        &mut self,
        ev: &ClickEvent,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        let partition = ctx.partition().unwrap_or(0);
        let s = self.partition(partition);
        let closed = s.on_event(ev);
        let late = s.take_late();
        self.emit_all(closed, ctx, Some(&ev.user_id))?;
        for (event, reason) in late {
            // Never silently dropped: the event itself, with the reason in a header.
            ctx.emit_with_headers(
                &self.late_topic,
                &event.user_id,
                &event,
                vec![("clickpath.late.reason", reason)],
            )?;
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
        self.process_event(&ev, ctx)
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        // The new owner restores these partitions from the changelog; drop our copy.
        for p in partitions {
            self.per_partition.remove(p);
            self.written_watermark.remove(p);
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        if self.flush_on_shutdown {
            let mut all = Vec::new();
            for s in self.per_partition.values_mut() {
                all.extend(s.flush());
            }
            self.emit_all(all, ctx, None)?;
        }
        Ok(())
    }

    fn is_stateful(&self) -> bool {
        self.durable
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        // Once per batch: each changed user is serialised once, however many of its events the batch held.
        let partitions: Vec<i32> = self.per_partition.keys().copied().collect();
        for p in partitions {
            if let Err(e) = self.capture(p) {
                tracing::error!(error = %e, "Cannot capture sessionizer state.");
            }
        }
        std::mem::take(&mut self.changes)
    }

    fn restore(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        let r = self.restoring.entry(partition).or_default();
        if key == WATERMARK_KEY {
            if let Some(v) = value {
                let wm = std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| {
                        StageError::Fatal("changelog watermark is not a number".into())
                    })?;
                r.watermark = Some(wm);
            }
            return Ok(());
        }
        let user = String::from_utf8(key.to_vec())
            .map_err(|_| StageError::Fatal("changelog key is not UTF-8".into()))?;
        match value {
            Some(v) => {
                r.users.insert(user, v.to_vec());
            }
            None => {
                r.users.remove(&user);
            }
        }
        Ok(())
    }

    fn on_assign(&mut self, partitions: &[i32]) {
        for &p in partitions {
            let Some(restored) = self.restoring.remove(&p) else {
                continue;
            };
            let mut fresh = CoreSessionizer::new(self.config.clone());
            if let Some(wm) = restored.watermark {
                fresh.restore_watermark(wm);
            }
            let mut views: Vec<(String, Box<dyn View>)> = Vec::with_capacity(restored.users.len());
            for (user, bytes) in restored.users {
                match UserState::from_bytes(&bytes) {
                    Ok(state) => {
                        fresh.restore_user(user.clone(), state);
                        if let Some(view) = fresh.path_view(&user) {
                            views.push((user, Box::new(view)));
                        }
                    }
                    // A record this version cannot read must not stop the partition; the user starts afresh.
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "Changelog state does not parse; user restarts empty.")
                    }
                }
            }
            self.query.publish_many(views);
            // Restoring is not a change: nothing to write back.
            let _ = fresh.take_changed();
            if let Some(wm) = restored.watermark {
                self.written_watermark.insert(p, wm);
            }
            self.per_partition.insert(p, fresh);
        }
    }

    fn query_store(&self) -> Option<QueryStore> {
        Some(self.query.clone())
    }

    fn state_entries(&self) -> usize {
        self.per_partition.values().map(|s| s.open_sessions()).sum()
    }
}
