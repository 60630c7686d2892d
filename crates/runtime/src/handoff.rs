//! Typed records passed between stages chained in one process.
//!
//! A stage emits its outputs with [`crate::Context::emit`], naming a topic. When stages are chained
//! (one consumer runs several of them, as Kafka Streams and Flink chain the operators of one key
//! space), the records a stage emits to an *internal* topic are not encoded and produced: they are
//! handed, as the typed record, to the next stage in the same process. A [`Handoff`] says which
//! topics are internal and whether each is also produced (for downstream readers who want it), and
//! collects the handed records in the order they were emitted.

use std::any::Any;
use std::collections::VecDeque;

/// A record handed from one chained stage to the next.
pub struct Handed {
    /// Index of the route (the internal topic) in [`Handoff::new`]'s list.
    pub route: usize,
    /// The record's key (the user id for every clickpath topic).
    pub key: String,
    /// Input partition of the record that caused it, when the emitting hook knew it.
    pub partition: Option<i32>,
    /// Trace headers of the record that caused it (the next stage's outputs carry them).
    pub trace: Option<crate::trace_context::TraceHeaders>,
    /// The typed record (the type the emitting stage passed to `emit`).
    pub record: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Handed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handed")
            .field("route", &self.route)
            .field("key", &self.key)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// The internal topics of a chain and the records handed over so far, oldest first.
#[derive(Debug, Default)]
pub struct Handoff {
    /// Per route: topic name and whether records emitted to it are also produced.
    routes: Vec<(String, bool)>,
    records: VecDeque<Handed>,
}

impl Handoff {
    /// A handoff over `routes`: (topic, also produce it). Route `i` is the `i`-th topic.
    pub fn new(routes: Vec<(String, bool)>) -> Self {
        Handoff {
            routes,
            records: VecDeque::new(),
        }
    }

    /// The route of `topic` and whether it is also produced, if it is internal.
    pub fn route(&self, topic: &str) -> Option<(usize, bool)> {
        self.routes
            .iter()
            .position(|(t, _)| t == topic)
            .map(|i| (i, self.routes[i].1))
    }

    /// Topic name of route `i`.
    pub fn topic(&self, route: usize) -> &str {
        &self.routes[route].0
    }

    /// Queues a handed record.
    pub fn push(&mut self, handed: Handed) {
        self.records.push_back(handed);
    }

    /// The oldest record not taken yet.
    pub fn pop(&mut self) -> Option<Handed> {
        self.records.pop_front()
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;
    use clickpath_schema::codec::Codec;
    use clickpath_schema::{ClickEvent, EventType};

    #[test]
    fn emits_to_internal_topics_are_handed_over_typed_and_produced_only_when_asked() {
        let codec = Codec::embedded();
        let mut outputs = Vec::new();
        let mut handoff = Handoff::new(vec![("clean".into(), false), ("features".into(), true)]);
        let ev = ClickEvent::new("e1", "u1", EventType::Search, 1_700_000_000_000);
        {
            let mut outer = Context::new(&codec, &mut outputs, 5).for_partition(3);
            let mut ctx = outer.handing_off(&mut handoff);
            ctx.emit("clean", "u1", &ev).unwrap();
            ctx.emit("features", "u1", &ev).unwrap();
            ctx.emit("sessions", "u1", &ev).unwrap();
        }
        // Produced: the route asked to be, and the topic that is not internal.
        let topics: Vec<&str> = outputs.iter().map(|o| o.topic.as_str()).collect();
        assert_eq!(topics, ["features", "sessions"]);
        let first = handoff.pop().unwrap();
        assert_eq!((first.route, first.key.as_str()), (0, "u1"));
        assert_eq!(first.partition, Some(3));
        assert_eq!(*first.record.downcast::<ClickEvent>().unwrap(), ev);
        assert_eq!(handoff.pop().map(|h| h.route), Some(1));
        assert!(handoff.is_empty());
    }
}
