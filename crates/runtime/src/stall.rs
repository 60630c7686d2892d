//! Stall detection: an assigned input partition that holds records the stage has not consumed, and from which
//! it has consumed nothing for `runtime.stall_after_ms`.
//!
//! A loop that polls and gets nothing looks alive (it beats every poll), so liveness alone cannot see a
//! consumer whose fetcher stopped: a partition left paused, a position that was never re-established after a
//! rebalance, an upstream transaction that never ends under `read_committed`. [`StallWatch`] keeps, per
//! assigned partition, when the loop last made progress on it; partitions idle for longer than the limit are
//! then judged against their end offsets (one watermark query each, at most once per check interval), so an
//! idle partition with nothing to read is never reported. The run loop publishes the verdict to the health
//! board (`/healthz` fails), to `clickpath_stalled_partitions`, and to the log.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Where an idle partition stands, as looked up for the verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionEnds {
    /// The consumer's position: the next offset it would hand to the stage (`None`: it has none, e.g. no
    /// fetch started since the assignment).
    pub position: Option<i64>,
    /// The offset the group last committed, for a partition without a position (`None`: nothing committed,
    /// or it could not be read).
    pub committed: Option<i64>,
    /// Why the committed offset could not be read, when it could not (for example a pending transactional
    /// offset commit: `UNSTABLE_OFFSET_COMMIT`).
    pub committed_error: Option<String>,
    /// The partition's low watermark (first offset still held).
    pub low: i64,
    /// The partition's high watermark (end offset).
    pub high: i64,
    /// What librdkafka's last statistics said of the partition, when they cover it.
    pub fetch: Option<FetchInfo>,
}

/// A partition's fetcher as librdkafka's statistics describe it (`statistics.interval.ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchInfo {
    /// `fetch_state`: `active` while fetching; `none`, `stopping`, `stopped`, `offset-query` or `offset-wait`
    /// otherwise.
    pub state: String,
    /// The last stable offset (`ls_offset`): under `read_committed` nothing past it is handed out until the
    /// transaction that holds it ends.
    pub stable: i64,
}

impl PartitionEnds {
    /// Records waiting beyond the position (or beyond the committed offset, or the start, without one).
    /// Under `read_committed` the last offset may be a transaction marker, which the position passes only
    /// once fetched; the verdict therefore allows one record of slack.
    pub fn lag(&self) -> i64 {
        let from = self.position.or(self.committed).unwrap_or(self.low);
        (self.high - from.max(self.low)).max(0)
    }
}

/// A partition judged stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledPartition {
    /// Input topic.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// What the lookup found.
    pub ends: PartitionEnds,
    /// Time since the stage last consumed from it (or since it was assigned).
    pub idle: Duration,
}

impl StalledPartition {
    /// What is known about why, for the log and the health endpoint.
    pub fn cause(&self) -> String {
        let from = self
            .ends
            .position
            .or(self.ends.committed)
            .unwrap_or(self.ends.low);
        match &self.ends.fetch {
            Some(f) if f.state != "active" => {
                format!("its fetcher is in state {:?}, not fetching", f.state)
            }
            Some(f) if f.stable >= 0 && f.stable < self.ends.high && from >= f.stable => format!(
                "an open transaction holds the last stable offset at {} (read_committed waits for it to end)",
                f.stable
            ),
            _ if self.ends.position.is_none() => match &self.ends.committed_error {
                Some(e) => format!(
                    "no fetch position since the assignment, and the group's committed offset cannot be read \
                     ({e}); a transaction holding an offset commit of this group open for good (a hanging \
                     transaction: kafka-transactions.sh find-hanging / abort) blocks read_committed consumers \
                     this way"
                ),
                None => "no fetch position since the assignment".to_string(),
            },
            _ => "the consumer fetches nothing although records are waiting".to_string(),
        }
    }
}

impl fmt::Display for StalledPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match (self.ends.position, self.ends.committed) {
            (Some(p), _) => format!("position {p}"),
            (None, Some(c)) => format!("no position, committed {c}"),
            (None, None) => "no position, nothing committed".to_string(),
        };
        write!(
            f,
            "{}/{}: {at}, end {}, {} records waiting, nothing consumed for {:.0} s: {}",
            self.topic,
            self.partition,
            self.ends.high,
            self.ends.lag(),
            self.idle.as_secs_f64(),
            self.cause()
        )
    }
}

#[derive(Debug, Clone)]
struct Watched {
    last_progress: Instant,
}

/// Per assigned partition, when the stage last made progress on it.
#[derive(Debug)]
pub struct StallWatch {
    stall_after: Duration,
    check_every: Duration,
    last_check: Option<Instant>,
    partitions: BTreeMap<(String, i32), Watched>,
    stalled: Vec<StalledPartition>,
}

impl StallWatch {
    /// A watch that reports partitions idle for `stall_after` with records waiting; `Duration::ZERO` turns
    /// it off.
    pub fn new(stall_after: Duration) -> Self {
        StallWatch {
            stall_after,
            // Often enough to report within ~1.25 x the limit, rarely enough to cost nothing.
            check_every: (stall_after / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(15)),
            last_check: None,
            partitions: BTreeMap::new(),
            stalled: Vec::new(),
        }
    }

    /// Whether the watch is on.
    pub fn enabled(&self) -> bool {
        !self.stall_after.is_zero()
    }

    /// Partitions newly assigned: their clock starts now.
    pub fn assigned(&mut self, tps: &[(String, i32)], now: Instant) {
        for (t, p) in tps {
            self.partitions
                .insert((t.clone(), *p), Watched { last_progress: now });
        }
    }

    /// Partitions revoked: no longer watched.
    pub fn revoked(&mut self, tps: &[(String, i32)]) {
        for (t, p) in tps {
            self.partitions.remove(&(t.clone(), *p));
        }
        self.stalled.retain(|s| {
            self.partitions
                .contains_key(&(s.topic.clone(), s.partition))
        });
    }

    /// A record of `topic`/`partition` was consumed.
    pub fn progressed(&mut self, topic: &str, partition: i32, now: Instant) {
        if let Some(w) = self.partitions.get_mut(&(topic.to_string(), partition)) {
            w.last_progress = now;
        }
    }

    /// Every partition starts its clock again (after a rewind, which sets every position back).
    pub fn restart_all(&mut self, now: Instant) {
        for w in self.partitions.values_mut() {
            w.last_progress = now;
        }
        self.stalled.clear();
    }

    /// Whether a check is due at `now`.
    pub fn check_due(&self, now: Instant) -> bool {
        self.enabled()
            && self
                .last_check
                .is_none_or(|t| now.duration_since(t) >= self.check_every)
    }

    /// Partitions from which nothing was consumed for at least the limit, with how long.
    pub fn idle(&self, now: Instant) -> Vec<(String, i32, Duration)> {
        self.partitions
            .iter()
            .map(|((t, p), w)| (t.clone(), *p, now.duration_since(w.last_progress)))
            .filter(|(_, _, idle)| *idle >= self.stall_after)
            .collect()
    }

    /// Runs a check: every idle partition is looked up (`lookup` returns `None` when it cannot tell, e.g.
    /// the broker does not answer; such a partition is not judged) and kept as stalled when records are
    /// waiting. Returns the partitions that became stalled with this check (to log once per episode).
    pub fn check(
        &mut self,
        now: Instant,
        mut lookup: impl FnMut(&str, i32) -> Option<PartitionEnds>,
    ) -> Vec<StalledPartition> {
        self.last_check = Some(now);
        let mut stalled = Vec::new();
        for (topic, partition, idle) in self.idle(now) {
            let Some(ends) = lookup(&topic, partition) else {
                // Unknown: keep the previous verdict rather than flap.
                if let Some(prev) = self
                    .stalled
                    .iter()
                    .find(|s| s.topic == topic && s.partition == partition)
                {
                    stalled.push(StalledPartition {
                        idle,
                        ..prev.clone()
                    });
                }
                continue;
            };
            // One record of slack: a trailing transaction marker (see `PartitionEnds::lag`).
            if ends.lag() > 1 {
                stalled.push(StalledPartition {
                    topic,
                    partition,
                    ends,
                    idle,
                });
            }
        }
        let new: Vec<StalledPartition> = stalled
            .iter()
            .filter(|s| {
                !self
                    .stalled
                    .iter()
                    .any(|o| o.topic == s.topic && o.partition == s.partition)
            })
            .cloned()
            .collect();
        self.stalled = stalled;
        new
    }

    /// The partitions found stalled by the last check (and not revoked or progressed since).
    pub fn stalled(&self) -> &[StalledPartition] {
        &self.stalled
    }

    /// Forgets the stalled verdict of partitions that made progress since (called after a batch).
    pub fn clear_progressed(&mut self, now: Instant) {
        let after = self.stall_after;
        let partitions = &self.partitions;
        self.stalled.retain(|s| {
            partitions
                .get(&(s.topic.clone(), s.partition))
                .is_some_and(|w| now.duration_since(w.last_progress) >= after)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    fn ends(position: Option<i64>, high: i64) -> PartitionEnds {
        PartitionEnds {
            position,
            high,
            ..PartitionEnds::default()
        }
    }

    #[test]
    fn a_partition_with_waiting_records_and_no_progress_is_stalled_after_the_limit() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(10));
        w.assigned(&[tp("in", 0), tp("in", 1)], t0);
        // Before the limit nothing is even looked up.
        let mut looked = 0;
        assert!(
            w.check(t0 + Duration::from_secs(9), |_, _| {
                looked += 1;
                Some(ends(Some(0), 100))
            })
            .is_empty()
        );
        assert_eq!(looked, 0);
        w.progressed("in", 1, t0 + Duration::from_secs(5));
        let new = w.check(t0 + Duration::from_secs(11), |_, p| {
            assert_eq!(p, 0, "partition 1 progressed 6 s ago: not idle");
            Some(ends(Some(40), 100))
        });
        assert_eq!(new.len(), 1);
        assert_eq!((new[0].topic.as_str(), new[0].partition), ("in", 0));
        assert_eq!(new[0].ends.lag(), 60);
        assert!(
            new[0]
                .to_string()
                .contains("in/0: position 40, end 100, 60 records waiting")
        );
        // Reported once per episode, but still listed (partition 1, idle too by now, is at its end).
        assert!(
            w.check(t0 + Duration::from_secs(20), |_, p| {
                Some(ends(Some(if p == 0 { 40 } else { 100 }), 100))
            })
            .is_empty()
        );
        assert_eq!(w.stalled().len(), 1);
        // Progress ends it.
        w.progressed("in", 0, t0 + Duration::from_secs(21));
        w.clear_progressed(t0 + Duration::from_secs(21));
        assert!(w.stalled().is_empty());
    }

    #[test]
    fn an_idle_partition_at_its_end_is_not_stalled() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(1));
        w.assigned(&[tp("in", 0), tp("in", 1)], t0);
        let at = t0 + Duration::from_secs(5);
        // At the end, and one behind (a trailing transaction marker not yet fetched).
        let new = w.check(at, |_, p| Some(ends(Some(100 - i64::from(p)), 100)));
        assert!(new.is_empty());
        assert!(w.stalled().is_empty());
    }

    #[test]
    fn no_position_is_judged_from_the_committed_offset() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(1));
        w.assigned(&[tp("in", 0), tp("in", 1), tp("in", 2)], t0);
        let at = t0 + Duration::from_secs(2);
        let new = w.check(at, |_, p| {
            Some(PartitionEnds {
                committed: [Some(7_044), Some(50), None][p as usize],
                high: [12_545, 50, 0][p as usize],
                ..PartitionEnds::default()
            })
        });
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0].partition, 0);
        assert_eq!(new[0].ends.lag(), 5_501);
        assert!(new[0].cause().contains("no fetch position"));
        let unreadable = StalledPartition {
            ends: PartitionEnds {
                committed: None,
                committed_error: Some("UnstableOffsetCommit".into()),
                ..new[0].ends.clone()
            },
            ..new[0].clone()
        };
        assert!(
            unreadable
                .cause()
                .contains("cannot be read (UnstableOffsetCommit)")
        );
        assert!(
            unreadable.to_string().contains("nothing committed"),
            "{unreadable}"
        );
    }

    #[test]
    fn an_open_upstream_transaction_is_named_as_the_cause() {
        let s = StalledPartition {
            topic: "in".into(),
            partition: 0,
            ends: PartitionEnds {
                position: Some(50),
                high: 90,
                fetch: Some(FetchInfo {
                    state: "active".into(),
                    stable: 50,
                }),
                ..PartitionEnds::default()
            },
            idle: Duration::from_secs(300),
        };
        assert!(
            s.cause().contains("last stable offset at 50"),
            "{}",
            s.cause()
        );
        let moving = StalledPartition {
            ends: PartitionEnds {
                fetch: Some(FetchInfo {
                    state: "active".into(),
                    stable: 90,
                }),
                ..s.ends.clone()
            },
            ..s
        };
        assert!(
            moving.cause().contains("fetches nothing"),
            "{}",
            moving.cause()
        );
    }

    #[test]
    fn unknown_ends_keep_the_previous_verdict_and_revocation_clears_it() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(1));
        w.assigned(&[tp("in", 0)], t0);
        let stopped = PartitionEnds {
            fetch: Some(FetchInfo {
                state: "offset-wait".into(),
                stable: 10,
            }),
            ..ends(Some(3), 10)
        };
        assert_eq!(
            w.check(t0 + Duration::from_secs(2), |_, _| Some(stopped.clone()))
                .len(),
            1
        );
        assert!(w.stalled()[0].cause().contains("\"offset-wait\""));
        assert!(w.check(t0 + Duration::from_secs(3), |_, _| None).is_empty());
        assert_eq!(
            w.stalled().len(),
            1,
            "a failed lookup does not clear the verdict"
        );
        w.revoked(&[tp("in", 0)]);
        assert!(w.stalled().is_empty());
        assert!(w.idle(t0 + Duration::from_secs(9)).is_empty());
    }

    #[test]
    fn a_rewind_restarts_every_clock_and_zero_turns_the_watch_off() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(1));
        w.assigned(&[tp("in", 0)], t0);
        w.restart_all(t0 + Duration::from_secs(5));
        assert!(w.idle(t0 + Duration::from_millis(5_500)).is_empty());
        assert!(w.check_due(t0));
        let off = StallWatch::new(Duration::ZERO);
        assert!(!off.enabled());
        assert!(!off.check_due(t0));
    }
}
