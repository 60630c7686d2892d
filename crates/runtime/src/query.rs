//! Interactive queries: per-user state that a stage publishes for `GET /v1/users/{id}/...`, and the Kafka
//! partition that owns a user when this instance does not.
//!
//! Stages run on their own threads; after each batch they publish the views of the users they changed into
//! this concurrent store, so the HTTP handlers never touch a stage's working state.

use foldhash::HashMap;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

/// Kafka's murmur2 hash (as in the Java client's `Utils.murmur2`), used by the default partitioner of Java
/// producers and by librdkafka's `murmur2_random`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions`, as Kafka's default (murmur2) partitioner places it.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    if partitions == 0 {
        return 0;
    }
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions) as i32
}

/// Where a user's state is.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// This instance owns the user: here is the view.
    Local(Value),
    /// This instance owns the user's partition but has no state for the user.
    Unknown {
        /// The user's partition.
        partition: i32,
    },
    /// Another instance owns the user's partition.
    Remote {
        /// The user's partition.
        partition: i32,
    },
    /// This instance has not been assigned partitions yet.
    NotReady,
}

/// A user's view, rendered to JSON only when it is asked for: a restore publishes the views of
/// every restored user, and rendering them all up front was most of the restore's cost.
pub trait View: Send + Sync {
    /// The view as JSON.
    fn to_json(&self) -> Value;
}

impl<T: serde::Serialize + Send + Sync> View for T {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    views: HashMap<String, Box<dyn View>>,
    assigned: BTreeSet<i32>,
    partitions: usize,
}

/// One stage's published per-user views, shared with the HTTP handlers.
#[derive(Clone, Default)]
pub struct QueryStore(Arc<RwLock<Inner>>);

impl QueryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes (or replaces) a user's view: a JSON value, or any [`View`], which is rendered to
    /// JSON only if it is looked up.
    pub fn publish(&self, user_id: impl Into<String>, view: impl View + 'static) {
        self.write().views.insert(user_id.into(), Box::new(view));
    }

    /// Publishes many views under one lock, each rendered to JSON only if it is looked up.
    pub fn publish_many(&self, views: impl IntoIterator<Item = (String, Box<dyn View>)>) {
        self.write().views.extend(views);
    }

    /// Forgets a user's view.
    pub fn remove(&self, user_id: &str) {
        self.write().views.remove(user_id);
    }

    /// Records which input partitions this instance owns, out of how many.
    pub fn set_assignment(&self, assigned: &BTreeSet<i32>, partitions: usize) {
        let mut w = self.write();
        w.assigned = assigned.clone();
        w.partitions = partitions;
        // Views of users in partitions we no longer own would be stale.
        let keep = w.assigned.clone();
        let n = w.partitions;
        w.views
            .retain(|user, _| keep.contains(&partition_for_key(user.as_bytes(), n)));
    }

    /// Looks a user up.
    pub fn lookup(&self, user_id: &str) -> Lookup {
        let r = self.0.read().unwrap_or_else(|p| p.into_inner());
        if r.partitions == 0 {
            return Lookup::NotReady;
        }
        let partition = partition_for_key(user_id.as_bytes(), r.partitions);
        if !r.assigned.contains(&partition) {
            return Lookup::Remote { partition };
        }
        match r.views.get(user_id) {
            Some(v) => Lookup::Local(v.to_json()),
            None => Lookup::Unknown { partition },
        }
    }

    /// The partition `user_id` belongs to, once partitions are known.
    pub fn partition_of(&self, user_id: &str) -> Option<i32> {
        let r = self.0.read().unwrap_or_else(|p| p.into_inner());
        (r.partitions > 0).then(|| partition_for_key(user_id.as_bytes(), r.partitions))
    }

    /// Number of users with a published view.
    pub fn len(&self) -> usize {
        self.0.read().map(|r| r.views.len()).unwrap_or(0)
    }

    /// Whether no view is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Apache Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn lookup_says_local_unknown_or_remote() {
        let store = QueryStore::new();
        assert_eq!(store.lookup("alice"), Lookup::NotReady);
        let p = partition_for_key(b"alice", 3);
        store.set_assignment(&BTreeSet::from([p]), 3);
        assert_eq!(store.lookup("alice"), Lookup::Unknown { partition: p });
        store.publish("alice", serde_json::json!({"sessions": 2}));
        assert_eq!(
            store.lookup("alice"),
            Lookup::Local(serde_json::json!({"sessions": 2}))
        );
        store.set_assignment(&BTreeSet::new(), 3);
        assert_eq!(store.lookup("alice"), Lookup::Remote { partition: p });
        assert!(store.is_empty(), "views of revoked partitions are dropped");
    }
}

/// The stages whose stores `GET /v1/users/{id}` combines, with the part of the answer each gives.
///
/// Each store's view of a user is: for the `sessionizer`, the user's path state (an object); for the
/// `scorer`, the latest prediction (an object); for the `detector`, the user's open alerts (an array).
pub const USER_PARTS: [(&str, &str); 3] = [
    ("sessionizer", "path"),
    ("scorer", "prediction"),
    ("detector", "alerts"),
];

#[derive(Default)]
struct Registry {
    /// Per stage: its store and the stage whose consumer group owns its partitions (itself, or
    /// the chain it runs in).
    stores: HashMap<String, (QueryStore, String)>,
    group_prefix: String,
}

/// The query stores of every stage in this process, by stage name.
#[derive(Clone, Default)]
pub struct Queries(Arc<RwLock<Registry>>);

impl Queries {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `store` answer queries for `stage`.
    pub fn register(&self, stage: &str, store: QueryStore) {
        self.register_in(stage, store, stage);
    }

    /// Makes `store` answer queries for `stage`, which runs inside `group_stage` (a chain of
    /// stages): its partitions are owned by `group_stage`'s consumer group.
    pub fn register_in(&self, stage: &str, store: QueryStore, group_stage: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .stores
            .insert(stage.to_string(), (store, group_stage.to_string()));
    }

    /// The store of `stage`, if that stage runs in this process.
    pub fn get(&self, stage: &str) -> Option<QueryStore> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stores
            .get(stage)
            .map(|(store, _)| store.clone())
    }

    /// Sets `kafka.group_prefix`, so answers can name the consumer group that owns a partition.
    pub fn set_group_prefix(&self, prefix: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .group_prefix = prefix.to_string();
    }

    /// The consumer group of `stage` (`<group_prefix>.<stage>`, or that of the chain it runs in),
    /// when the prefix is known.
    pub fn consumer_group(&self, stage: &str) -> Option<String> {
        let r = self.0.read().unwrap_or_else(|p| p.into_inner());
        let group = r.stores.get(stage).map_or(stage, |(_, g)| g.as_str());
        (!r.group_prefix.is_empty()).then(|| format!("{}.{group}", r.group_prefix))
    }
}
