//! Cleaning: validate and normalise raw events, drop duplicates, forward the rest keyed by user.
//!
//! De-duplication state is kept per input partition: a duplicate always shares its user, hence its
//! partition, and a partition read far ahead in event time must not expire another's ids.
//!
//! The filter is durable: each batch writes the ids it remembered to the changelog, one record per
//! time bucket (a [`DedupeChunk`] under a key of bucket and sequence number), and deletes a bucket's
//! records when the filter drops the bucket. A compacted changelog so holds about one window of
//! ids, and a new owner of the partition catches a duplicate of an event processed before a crash
//! or a rebalance.

use crate::config::CleaningConfig;
use clickpath_core::dedupe::{DedupeChunk, Deduper};
use clickpath_core::validate::{ValidationConfig, validate_and_normalise};
use clickpath_runtime::{Context, RestoreBuffer, Stage, StageError, StateChange};
use clickpath_schema::ClickEvent;
use std::collections::BTreeMap;

/// First byte of a chunk's changelog key (`'d'`, bucket as big-endian `i64`, sequence as big-endian
/// `u64`): keys sort by bucket, then by write order.
const CHUNK_KEY: u8 = b'd';

fn chunk_key(bucket: i64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(CHUNK_KEY);
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn parse_chunk_key(key: &[u8]) -> Option<(i64, u64)> {
    let (&first, rest) = key.split_first()?;
    if first != CHUNK_KEY || rest.len() != 16 {
        return None;
    }
    let bucket = i64::from_be_bytes(rest[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(rest[8..].try_into().ok()?);
    Some((bucket, seq))
}

/// One partition's filter and the changelog records that hold it.
struct PartitionState {
    dedupe: Deduper,
    /// Sequence numbers of the chunk records written per bucket (deleted with the bucket).
    chunks: BTreeMap<i64, Vec<u64>>,
    /// The next chunk's sequence number (above every one in the changelog).
    next_seq: u64,
}

/// The cleaning stage.
pub struct Cleaning {
    validation: ValidationConfig,
    dedupe_window_ms: i64,
    dedupe_max_ids: usize,
    partitions: BTreeMap<i32, PartitionState>,
    output_topic: String,
    durable: bool,
    /// Changelog records read during a restore.
    restoring: RestoreBuffer,
}

impl Cleaning {
    /// A cleaning stage writing to `output_topic`, its filter durable in a changelog.
    pub fn new(cfg: &CleaningConfig, output_topic: &str) -> Self {
        Cleaning {
            validation: cfg.validation.clone(),
            dedupe_window_ms: cfg.dedupe_window_ms,
            dedupe_max_ids: cfg.dedupe_max_ids,
            partitions: BTreeMap::new(),
            output_topic: output_topic.to_string(),
            durable: true,
            restoring: RestoreBuffer::default(),
        }
    }

    /// Keeps the filter in memory only (no changelog topic).
    pub fn without_changelog(mut self) -> Self {
        self.durable = false;
        self
    }

    /// Duplicates dropped so far.
    pub fn duplicates_dropped(&self) -> u64 {
        self.partitions
            .values()
            .map(|p| p.dedupe.duplicates_dropped())
            .sum()
    }

    fn fresh(&self) -> PartitionState {
        let dedupe = Deduper::new(self.dedupe_window_ms, self.dedupe_max_ids);
        PartitionState {
            dedupe: if self.durable {
                dedupe.with_journal()
            } else {
                dedupe
            },
            chunks: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Rebuilds a partition's filter from its changelog records.
    fn rebuild(&self, partition: i32, records: BTreeMap<Vec<u8>, Vec<u8>>) -> PartitionState {
        let mut state = self.fresh();
        let mut clock = None;
        // Keys sort by bucket, then sequence: ids go in roughly in time order.
        for (key, value) in records {
            let chunk = parse_chunk_key(&key).ok_or_else(|| "unknown key".to_string());
            let chunk = chunk.and_then(|(bucket, seq)| {
                DedupeChunk::from_bytes(&value)
                    .map(|c| (bucket, seq, c))
                    .map_err(|e| e.to_string())
            });
            match chunk {
                Ok((bucket, seq, c)) => {
                    for (id, t) in &c.ids {
                        state.dedupe.restore(id, *t);
                    }
                    clock = clock.max(c.clock);
                    state.chunks.entry(bucket).or_default().push(seq);
                    state.next_seq = state.next_seq.max(seq + 1);
                }
                // A record this version cannot read must not stop the partition: its ids are not
                // caught as duplicates, the rest are.
                Err(e) => tracing::error!(
                    partition,
                    error = %e,
                    "Cleaning changelog record does not parse; its ids are not restored."
                ),
            }
        }
        if let Some(c) = clock {
            state.dedupe.restore_clock(c);
        }
        state
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
        let partition = ctx.partition().unwrap_or(0);
        if !self.partitions.contains_key(&partition) {
            let fresh = self.fresh();
            self.partitions.insert(partition, fresh);
        }
        let state = self.partitions.get_mut(&partition).expect("inserted above");
        if state.dedupe.is_duplicate(&ev.event_id, ev.event_time) {
            return Ok(());
        }
        let key = ev.user_id.clone();
        ctx.emit_owned(&self.output_topic, &key, ev)
    }

    fn state_entries(&self) -> usize {
        self.partitions.values().map(|p| p.dedupe.len()).sum()
    }

    fn is_stateful(&self) -> bool {
        self.durable
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        let mut out = Vec::new();
        for (&partition, state) in &mut self.partitions {
            let changes = state.dedupe.take_changes();
            for bucket in changes.dropped {
                for seq in state.chunks.remove(&bucket).unwrap_or_default() {
                    out.push(StateChange {
                        partition,
                        key: chunk_key(bucket, seq),
                        value: None,
                    });
                }
            }
            for (bucket, ids) in changes.added {
                let seq = state.next_seq;
                state.next_seq += 1;
                state.chunks.entry(bucket).or_default().push(seq);
                let chunk = DedupeChunk {
                    clock: changes.clock,
                    ids,
                };
                out.push(StateChange {
                    partition,
                    key: chunk_key(bucket, seq),
                    value: Some(chunk.to_bytes()),
                });
            }
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
            if let Some(records) = self.restoring.take(p) {
                let state = self.rebuild(p, records);
                self.partitions.insert(p, state);
            }
        }
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        // The new owner restores these partitions from the changelog; drop our copy.
        for p in partitions {
            self.partitions.remove(p);
            self.restoring.forget(*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::EventType;
    use clickpath_schema::codec::Codec;

    const T0: i64 = 1_700_000_000_000;

    fn run(stage: &mut Cleaning, partition: i32, events: &[(&str, i64)]) -> usize {
        let codec = Codec::embedded();
        let mut outputs = Vec::new();
        for (id, t) in events {
            let ev = ClickEvent::new(*id, "u1", EventType::PageView, *t);
            let mut ctx = Context::new(&codec, &mut outputs, T0 + 60_000).for_partition(partition);
            stage.process(ev, &mut ctx).unwrap();
        }
        outputs.len()
    }

    /// What a compacted changelog holds after `changes`, per partition and key.
    fn compact(log: &mut BTreeMap<(i32, Vec<u8>), Vec<u8>>, changes: Vec<StateChange>) {
        for c in changes {
            match c.value {
                Some(v) => log.insert((c.partition, c.key), v),
                None => log.remove(&(c.partition, c.key)),
            };
        }
    }

    #[test]
    fn a_new_owner_catches_duplicates_of_events_before_the_handover() {
        let cfg = CleaningConfig::default();
        let mut first = Cleaning::new(&cfg, "clean");
        let mut log = BTreeMap::new();
        assert_eq!(run(&mut first, 3, &[("a", T0), ("b", T0 + 10)]), 2);
        compact(&mut log, first.take_state_changes());
        assert_eq!(run(&mut first, 3, &[("c", T0 + 20), ("a", T0)]), 1);
        compact(&mut log, first.take_state_changes());
        assert!(first.take_state_changes().is_empty(), "nothing changed");

        let mut second = Cleaning::new(&cfg, "clean");
        for ((p, k), v) in &log {
            second.restore(*p, k, Some(v)).unwrap();
        }
        second.on_assign(&[3]);
        assert_eq!(second.state_entries(), 3);
        // Duplicates of all three are dropped; a new id passes.
        assert_eq!(
            run(
                &mut second,
                3,
                &[("a", T0), ("b", T0), ("c", T0), ("d", T0 + 30)]
            ),
            1
        );
        // Restoring wrote nothing back; the new id is one new record, on a fresh sequence number.
        let changes = second.take_state_changes();
        assert_eq!(changes.len(), 1);
        assert!(!log.contains_key(&(3, changes[0].key.clone())));
    }

    #[test]
    fn expired_buckets_are_deleted_from_the_changelog() {
        let cfg = CleaningConfig::default();
        let window = cfg.dedupe_window_ms;
        let mut stage = Cleaning::new(&cfg, "clean");
        let mut log = BTreeMap::new();
        for i in 0..200i64 {
            run(
                &mut stage,
                0,
                &[(&format!("e{i}"), T0 - 200 * window / 10 + i * window / 10)],
            );
            compact(&mut log, stage.take_state_changes());
        }
        // 200 events over 20 windows: the compacted log holds about the last window's chunks.
        assert!(log.len() <= 20, "{} records", log.len());
        let ids: usize = log
            .values()
            .map(|v| DedupeChunk::from_bytes(v).unwrap().ids.len())
            .sum();
        assert_eq!(ids, stage.state_entries());
    }

    #[test]
    fn unreadable_records_are_skipped_and_keys_parse_back() {
        assert_eq!(parse_chunk_key(&chunk_key(-5, 7)), Some((-5, 7)));
        assert_eq!(parse_chunk_key(b"dshort"), None);
        let cfg = CleaningConfig::default();
        let mut stage = Cleaning::new(&cfg, "clean");
        stage
            .restore(0, &chunk_key(1, 0), Some(b"garbage"))
            .unwrap();
        stage.restore(0, b"other", Some(b"x")).unwrap();
        let good = DedupeChunk {
            clock: Some(T0),
            ids: vec![("a".into(), T0)],
        };
        stage
            .restore(0, &chunk_key(2, 1), Some(&good.to_bytes()))
            .unwrap();
        stage.on_assign(&[0]);
        assert_eq!(stage.state_entries(), 1);
        assert_eq!(run(&mut stage, 0, &[("a", T0)]), 0);
        // The next record goes above the highest sequence number seen.
        let next = stage.take_state_changes();
        assert!(next.is_empty());
        run(&mut stage, 0, &[("b", T0 + 1)]);
        let key = stage.take_state_changes().remove(0).key;
        assert_eq!(parse_chunk_key(&key).map(|k| k.1), Some(2));
    }

    #[test]
    fn without_changelog_the_stage_is_stateless_for_the_runtime() {
        let mut stage = Cleaning::new(&CleaningConfig::default(), "clean").without_changelog();
        run(&mut stage, 0, &[("a", T0)]);
        assert!(!stage.is_stateful());
        assert!(stage.take_state_changes().is_empty());
    }
}
