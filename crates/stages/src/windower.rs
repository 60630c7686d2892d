//! Feature windower: per-user sliding-window features, one vector per clean event.
//!
//! State is kept per input partition and is durable: each batch writes every changed user's
//! windows to the changelog (one record per user, the binary encoding of
//! `clickpath_core::features`), a user dropped by eviction is deleted, and a new owner of the
//! partition restores them before it reads the partition, so its features continue exactly.

use clickpath_core::features::{FeatureSpec, FeatureWindower};
use clickpath_runtime::{Context, RestoreBuffer, Stage, StageError, StateChange};
use clickpath_schema::ClickEvent;
use std::collections::BTreeMap;

/// The feature windower stage.
pub struct Windower {
    spec: FeatureSpec,
    per_partition: BTreeMap<i32, FeatureWindower>,
    output_topic: String,
    /// Highest event time seen per partition (eviction only frees memory: it changes no value).
    watermark_ms: BTreeMap<i32, i64>,
    durable: bool,
    /// Changelog records read during a restore.
    restoring: RestoreBuffer,
}

impl Windower {
    /// A windower writing feature vectors to `output_topic`, its state durable in a changelog.
    pub fn new(spec: &FeatureSpec, output_topic: &str) -> Self {
        Windower {
            spec: spec.clone(),
            per_partition: BTreeMap::new(),
            output_topic: output_topic.to_string(),
            watermark_ms: BTreeMap::new(),
            durable: true,
            restoring: RestoreBuffer::default(),
        }
    }

    /// Keeps state in memory only (no changelog topic).
    pub fn without_changelog(mut self) -> Self {
        self.durable = false;
        self
    }

    fn fresh(&self) -> FeatureWindower {
        let w = FeatureWindower::new(self.spec.clone());
        if self.durable { w.with_journal() } else { w }
    }
}

impl Windower {
    /// [`Stage::process`] by reference: the chained topology hands one event to several stages.
    pub fn process_event(
        &mut self,
        ev: &ClickEvent,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        let partition = ctx.partition().unwrap_or(0);
        let wm = self.watermark_ms.entry(partition).or_insert(i64::MIN);
        *wm = (*wm).max(ev.event_time);
        if !self.per_partition.contains_key(&partition) {
            let fresh = self.fresh();
            self.per_partition.insert(partition, fresh);
        }
        let windower = self.per_partition.get_mut(&partition).expect("inserted");
        let fv = windower.update(ev);
        let key = fv.user_id.clone();
        ctx.emit_owned(&self.output_topic, &key, fv)
    }
}

impl Stage for Windower {
    type Input = ClickEvent;

    fn name(&self) -> &'static str {
        "windower"
    }

    fn process(&mut self, ev: ClickEvent, ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.process_event(&ev, ctx)
    }

    fn tick(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        for (p, w) in &mut self.per_partition {
            if let Some(&wm) = self.watermark_ms.get(p).filter(|&&wm| wm > i64::MIN) {
                w.evict_idle(wm);
            }
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.per_partition
            .values()
            .map(FeatureWindower::users)
            .sum()
    }

    fn is_stateful(&self) -> bool {
        self.durable
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        let mut out = Vec::new();
        for (&partition, w) in &mut self.per_partition {
            out.extend(
                w.take_changes()
                    .into_iter()
                    .map(|(user, value)| StateChange {
                        partition,
                        key: user.into_bytes(),
                        value,
                    }),
            );
        }
        out
    }

    fn restore(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        self.restoring.record(partition, key, value);
        Ok(())
    }

    fn on_assign(&mut self, partitions: &[i32]) {
        for &p in partitions {
            let Some(users) = self.restoring.take(p) else {
                continue;
            };
            let mut w = self.fresh();
            for (key, bytes) in users {
                // A record this version cannot read must not stop the partition; the user starts afresh.
                let restored = String::from_utf8(key)
                    .map_err(|_| "the key is not UTF-8".to_string())
                    .and_then(|user| w.restore_user(user, &bytes).map_err(|e| e.to_string()));
                if let Err(e) = restored {
                    tracing::error!(partition = p, error = %e, "Windower changelog state does not parse; user restarts empty.");
                }
            }
            self.per_partition.insert(p, w);
        }
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        // The new owner restores these partitions from the changelog; drop our copy.
        for p in partitions {
            self.per_partition.remove(p);
            self.watermark_ms.remove(p);
            self.restoring.forget(*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::codec::Codec;
    use clickpath_schema::{EventType, FeatureVector};

    const T0: i64 = 1_700_000_000_000;

    fn feed(stage: &mut Windower, partition: i32, events: &[ClickEvent]) -> Vec<FeatureVector> {
        let codec = Codec::embedded();
        let mut outputs = Vec::new();
        for ev in events {
            let mut ctx = Context::new(&codec, &mut outputs, T0).for_partition(partition);
            stage.process(ev.clone(), &mut ctx).unwrap();
        }
        outputs
            .iter()
            .map(|o| codec.decode(&o.payload).unwrap())
            .collect()
    }

    fn events(from: usize, to: usize) -> Vec<ClickEvent> {
        (from..to)
            .map(|i| {
                let kind = [
                    EventType::ProductView,
                    EventType::AddToCart,
                    EventType::PageView,
                ][i % 3];
                let mut e = ClickEvent::new(
                    format!("e{i}"),
                    format!("u{}", i % 4),
                    kind,
                    T0 + i as i64 * 7_000,
                );
                e.item_id = Some(format!("i{}", i % 5));
                e.price = Some(10.0);
                e
            })
            .collect()
    }

    #[test]
    fn a_new_owner_continues_the_features_exactly() {
        let spec = FeatureSpec::default();
        let mut uninterrupted = Windower::new(&spec, "f");
        let mut first = Windower::new(&spec, "f");
        let mut log: BTreeMap<(i32, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        feed(&mut uninterrupted, 2, &events(0, 60));
        feed(&mut first, 2, &events(0, 60));
        for c in first.take_state_changes() {
            log.insert((c.partition, c.key), c.value);
        }
        first.on_revoke(&[2]);
        assert_eq!(first.state_entries(), 0);

        let mut second = Windower::new(&spec, "f");
        for ((p, k), v) in &log {
            second.restore(*p, k, v.as_deref()).unwrap();
        }
        second.on_assign(&[2]);
        assert_eq!(second.state_entries(), 4);
        assert!(
            second.take_state_changes().is_empty(),
            "restoring is no change"
        );
        let later = events(60, 120);
        assert_eq!(
            feed(&mut second, 2, &later),
            feed(&mut uninterrupted, 2, &later)
        );
    }

    #[test]
    fn without_changelog_nothing_is_recorded() {
        let mut stage = Windower::new(&FeatureSpec::default(), "f").without_changelog();
        feed(&mut stage, 0, &events(0, 5));
        assert!(!stage.is_stateful());
        assert!(stage.take_state_changes().is_empty());
    }
}
