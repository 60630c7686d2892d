//! Bookkeeping of a stage's input topics: which topic is which input, which `(topic, partition)`s this
//! instance owns, and the offsets a batch has consumed.
//!
//! Everything is keyed by `(topic, partition)`. A stage itself keeps state per partition *number*: its input
//! topics are co-partitioned (keyed by user id, same partition count), so partition `p` of every input topic
//! holds the same users. [`Assignment`] turns topic-partition changes into partition-number changes for the
//! stage's hooks, its changelog restore and its query store.

use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};

/// A stage's input topics, in the order of its input type's roles ([`crate::stage::StageInput::ROLES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputTopics {
    topics: Vec<String>,
}

impl InputTopics {
    /// Checks `topics` against the `roles` the stage's input type reads: one topic per role, none empty,
    /// none twice.
    pub fn new<T: AsRef<str>>(
        stage: &str,
        roles: &[&str],
        topics: &[T],
    ) -> anyhow::Result<InputTopics> {
        let topics: Vec<String> = topics.iter().map(|t| t.as_ref().to_string()).collect();
        if topics.len() != roles.len() {
            anyhow::bail!(
                "stage {stage} reads {} input topic(s) ({}) but was given {}: {:?}",
                roles.len(),
                roles.join(", "),
                topics.len(),
                topics
            );
        }
        let mut seen = BTreeSet::new();
        for (topic, role) in topics.iter().zip(roles) {
            if topic.trim().is_empty() {
                anyhow::bail!("stage {stage}: the input topic for {role} is empty");
            }
            if !seen.insert(topic.as_str()) {
                anyhow::bail!("stage {stage}: input topic {topic} is given twice");
            }
        }
        Ok(InputTopics { topics })
    }

    /// The topics, in role order.
    pub fn names(&self) -> &[String] {
        &self.topics
    }

    /// Position of `topic` among the inputs (the index passed to `StageInput::decode`).
    pub fn index(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == topic)
    }

    /// The first input topic (the one a stage's changelog is sized after).
    pub fn first(&self) -> &str {
        &self.topics[0]
    }

    /// Number of input topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Always false: a stage reads at least one topic.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// Checks that every input topic exists and that all have the same number of partitions; returns it.
///
/// `counts` holds each topic's partition count, 0 when the topic does not exist. A single missing topic is
/// allowed (returns 0: the stage waits for it, as the consumer's subscription does); with several input topics
/// each must exist, or co-partitioning cannot be checked.
pub fn co_partitioned(stage: &str, counts: &[(String, usize)]) -> anyhow::Result<usize> {
    let missing: Vec<&str> = counts
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(t, _)| t.as_str())
        .collect();
    if counts.len() == 1 {
        return Ok(counts[0].1);
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "stage {stage}: input topic(s) {} do not exist (run `clickpath topics create`); a stage with several \
             input topics needs all of them to check they are co-partitioned",
            missing.join(", ")
        );
    }
    let first = counts[0].1;
    if counts.iter().any(|(_, n)| *n != first) {
        let list: Vec<String> = counts.iter().map(|(t, n)| format!("{t}: {n}")).collect();
        anyhow::bail!(
            "stage {stage}: input topics must have the same number of partitions (they are joined by user id \
             per partition), but {}",
            list.join(", ")
        );
    }
    Ok(first)
}

/// The `(topic, partition)`s assigned to this instance, and the partition numbers it therefore owns.
#[derive(Debug, Default, Clone)]
pub struct Assignment {
    /// Assigned partitions per topic.
    assigned: BTreeMap<String, BTreeSet<i32>>,
}

impl Assignment {
    /// Nothing assigned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tps`; returns the partition numbers owned now that were not owned before (ascending).
    pub fn assign(&mut self, tps: &[(String, i32)]) -> Vec<i32> {
        let before = self.partitions();
        for (topic, partition) in tps {
            self.assigned
                .entry(topic.clone())
                .or_default()
                .insert(*partition);
        }
        self.partitions().difference(&before).copied().collect()
    }

    /// Removes `tps`; returns the partition numbers no longer owned in any input topic (ascending).
    pub fn revoke(&mut self, tps: &[(String, i32)]) -> Vec<i32> {
        let before = self.partitions();
        for (topic, partition) in tps {
            if let Some(ps) = self.assigned.get_mut(topic) {
                ps.remove(partition);
            }
        }
        self.assigned.retain(|_, ps| !ps.is_empty());
        before.difference(&self.partitions()).copied().collect()
    }

    /// Whether partition `partition` of `topic` is assigned.
    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.assigned
            .get(topic)
            .is_some_and(|ps| ps.contains(&partition))
    }

    /// The partition numbers owned (assigned in at least one input topic).
    pub fn partitions(&self) -> BTreeSet<i32> {
        self.assigned.values().flatten().copied().collect()
    }

    /// Number of assigned `(topic, partition)`s.
    pub fn len(&self) -> usize {
        self.assigned.values().map(BTreeSet::len).sum()
    }

    /// Whether nothing is assigned.
    pub fn is_empty(&self) -> bool {
        self.assigned.is_empty()
    }
}

/// The next offset to consume of every `(topic, partition)` a batch read: what the batch commits.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOffsets {
    next: BTreeMap<(String, i32), i64>,
}

impl BatchOffsets {
    /// No offsets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the record at `offset` of `topic`/`partition` was consumed.
    pub fn consumed(&mut self, topic: &str, partition: i32, offset: i64) {
        let next = offset + 1;
        match self.next.get_mut(&(topic.to_string(), partition)) {
            Some(o) => *o = (*o).max(next),
            None => {
                self.next.insert((topic.to_string(), partition), next);
            }
        }
    }

    /// The next offset of `topic`/`partition`, if the batch read from it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.next.get(&(topic.to_string(), partition)).copied()
    }

    /// Whether the batch read nothing.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Number of `(topic, partition)`s read.
    pub fn len(&self) -> usize {
        self.next.len()
    }

    /// The `(topic, partition)`s read, with their next offsets.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.next.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    /// Sets the next offset of `(topic, partition)`, whatever it was.
    pub fn set(&mut self, topic: &str, partition: i32, next: i64) {
        self.next.insert((topic.to_string(), partition), next);
    }

    /// Takes every offset of `other`, replacing this one's for the same `(topic, partition)`.
    pub fn overwrite_with(&mut self, other: &BatchOffsets) {
        for (tp, next) in &other.next {
            self.next.insert(tp.clone(), *next);
        }
    }

    /// Drops the offsets of `tps` (partitions no longer owned).
    pub fn forget(&mut self, tps: &[(String, i32)]) {
        for tp in tps {
            self.next.remove(tp);
        }
    }

    /// The offsets as a list to store or to send to a transaction.
    pub fn to_list(&self) -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(self.next.len());
        for ((topic, partition), offset) in &self.next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        Ok(tpl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn input_topics_match_roles_and_index_by_name() {
        let t =
            InputTopics::new("detector", &["events", "predictions"], &["clean", "preds"]).unwrap();
        assert_eq!(t.index("clean"), Some(0));
        assert_eq!(t.index("preds"), Some(1));
        assert_eq!(t.index("other"), None);
        assert_eq!(t.first(), "clean");
        assert_eq!(t.len(), 2);

        let e = InputTopics::new("detector", &["events", "predictions"], &["clean"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("reads 2 input topic(s) (events, predictions) but was given 1"),
            "{e}"
        );
        let e = InputTopics::new("detector", &["events", "predictions"], &["clean", "clean"])
            .unwrap_err();
        assert!(e.to_string().contains("clean is given twice"), "{e}");
        let e = InputTopics::new("x", &["events"], &[" "]).unwrap_err();
        assert!(e.to_string().contains("for events is empty"), "{e}");
    }

    #[test]
    fn co_partitioning_is_checked() {
        let c = |v: &[(&str, usize)]| -> Vec<(String, usize)> {
            v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
        };
        assert_eq!(co_partitioned("s", &c(&[("a", 3)])).unwrap(), 3);
        assert_eq!(
            co_partitioned("s", &c(&[("a", 0)])).unwrap(),
            0,
            "one topic may still be coming"
        );
        assert_eq!(co_partitioned("s", &c(&[("a", 3), ("b", 3)])).unwrap(), 3);
        let e = co_partitioned("detector", &c(&[("a", 3), ("b", 4)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("same number of partitions") && e.contains("a: 3, b: 4"),
            "{e}"
        );
        let e = co_partitioned("detector", &c(&[("a", 3), ("b", 0)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("b do not exist"), "{e}");
    }

    #[test]
    fn partition_numbers_are_owned_while_any_topic_holds_them() {
        let mut a = Assignment::new();
        assert_eq!(a.assign(&[tp("clean", 0), tp("clean", 1)]), vec![0, 1]);
        // The same numbers in the second topic: nothing new to restore or announce.
        assert_eq!(
            a.assign(&[tp("preds", 1), tp("preds", 0)]),
            Vec::<i32>::new()
        );
        assert_eq!(a.assign(&[tp("preds", 2)]), vec![2]);
        assert!(a.contains("clean", 1) && a.contains("preds", 2));
        assert!(!a.contains("clean", 2) && !a.contains("other", 0));
        assert_eq!(a.len(), 5);
        // Partition 0 is still owned through `preds` after `clean` 0 goes.
        assert_eq!(a.revoke(&[tp("clean", 0)]), Vec::<i32>::new());
        assert!(!a.contains("clean", 0));
        assert_eq!(a.revoke(&[tp("preds", 0), tp("preds", 2)]), vec![0, 2]);
        assert_eq!(a.partitions(), BTreeSet::from([1]));
        assert_eq!(
            a.revoke(&[tp("clean", 1), tp("preds", 1), tp("gone", 7)]),
            vec![1]
        );
        assert!(a.is_empty());
    }

    #[test]
    fn committed_offsets_advance_with_each_batch_and_forget_revoked_partitions() {
        // What a transaction sends: the owned partitions' last committed offsets, advanced by the batch.
        let mut committed = BatchOffsets::new();
        committed.set("clean", 0, 40);
        committed.set("clean", 1, 7);
        committed.set("clean", 2, 9);
        let mut batch = BatchOffsets::new();
        batch.consumed("clean", 1, 20);
        committed.overwrite_with(&batch);
        assert_eq!(
            committed.get("clean", 0),
            Some(40),
            "untouched by the batch"
        );
        assert_eq!(committed.get("clean", 1), Some(21));
        // `set` replaces, even with a lower offset (a rewind to what the group committed).
        committed.set("clean", 0, 35);
        assert_eq!(committed.get("clean", 0), Some(35));
        committed.forget(&[tp("clean", 2), tp("other", 0)]);
        assert_eq!(committed.get("clean", 2), None);
        assert_eq!(committed.len(), 2);
    }

    #[test]
    fn batch_offsets_are_kept_per_topic_and_partition() {
        let mut o = BatchOffsets::new();
        assert!(o.is_empty());
        o.consumed("clean", 0, 10);
        o.consumed("preds", 0, 3);
        o.consumed("clean", 0, 11);
        o.consumed("clean", 1, 5);
        // An older offset never moves the position back.
        o.consumed("preds", 0, 2);
        assert_eq!(o.get("clean", 0), Some(12));
        assert_eq!(
            o.get("preds", 0),
            Some(4),
            "same partition number, other topic"
        );
        assert_eq!(o.get("clean", 1), Some(6));
        assert_eq!(o.get("preds", 1), None);
        assert_eq!(o.len(), 3);
        let list = o.to_list().unwrap();
        let mut got: Vec<(String, i32, i64)> = list
            .elements()
            .iter()
            .map(|e| {
                let Offset::Offset(off) = e.offset() else {
                    panic!("not an offset: {:?}", e.offset())
                };
                (e.topic().to_string(), e.partition(), off)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("clean".into(), 0, 12),
                ("clean".into(), 1, 6),
                ("preds".into(), 0, 4)
            ]
        );
    }
}
