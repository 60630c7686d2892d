//! The one stage abstraction: a stage author writes `process` (plus optional hooks); consuming, decoding,
//! producing, offsets, dead letters, metrics and shutdown are the runtime's job.

use crate::handoff::{Handed, Handoff};
use crate::trace_context::TraceHeaders;
use clickpath_schema::codec::{AvroRecord, Codec, CodecError};

/// What a stage reads: the records of one or more input topics, decoded into one type.
///
/// A stage's input topics are given to [`crate::run_stage`] as a list; `decode` is told the position in that
/// list of the topic a record came from and decodes it with the codec (the writer's schema is resolved from
/// the record's schema id, as always). Any single [`AvroRecord`] is a one-topic input, so a stage that reads
/// one topic just names its record type. A stage that reads several topics names an enum with one variant per
/// topic:
///
/// ```
/// use clickpath_runtime::stage::StageInput;
/// use clickpath_schema::codec::{Codec, CodecError};
/// use clickpath_schema::{ClickEvent, Prediction};
///
/// enum EventOrPrediction {
///     Event(ClickEvent),
///     Prediction(Prediction),
/// }
///
/// impl StageInput for EventOrPrediction {
///     const ROLES: &'static [&'static str] = &["events", "predictions"];
///
///     fn decode(codec: &Codec, input: usize, payload: &[u8]) -> Result<Self, CodecError> {
///         match input {
///             0 => codec.decode(payload).map(EventOrPrediction::Event),
///             _ => codec.decode(payload).map(EventOrPrediction::Prediction),
///         }
///     }
/// }
/// ```
///
/// The input topics must be co-partitioned (keyed alike, with the same partition count): the run loop checks
/// the counts at start-up, assigns partition `p` of every input topic to the same instance, and a stage keeps
/// its per-partition state by partition number.
pub trait StageInput: Sized {
    /// One short name per input topic, in the order the topics are given to the run loop (`ROLES.len()` is the
    /// number of input topics; the names appear in start-up errors and logs).
    const ROLES: &'static [&'static str];

    /// Decodes a record read from input topic number `input` (an index into [`StageInput::ROLES`]; the run loop
    /// never passes a larger one).
    fn decode(codec: &Codec, input: usize, payload: &[u8]) -> Result<Self, CodecError>;
}

impl<T: AvroRecord> StageInput for T {
    const ROLES: &'static [&'static str] = &[T::FULL_NAME];

    fn decode(codec: &Codec, _input: usize, payload: &[u8]) -> Result<Self, CodecError> {
        codec.decode(payload)
    }
}

/// Why a record could not be processed. The run loop, not the stage, decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The record is bad (invalid field, impossible time): it goes to the dead-letter topic and the stage goes on.
    #[error("{kind}: {reason}")]
    Rejected {
        /// Short machine-readable kind, used as the dead-letter `error_kind` and a metric label.
        kind: &'static str,
        /// Human-readable reason naming the field and value.
        reason: String,
    },
    /// A broken internal invariant or unusable configuration: the stage stops without storing offsets,
    /// so a restarted instance reprocesses the batch.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// One record a stage wants produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Kafka key (the user id for every clickpath topic).
    pub key: Vec<u8>,
    /// Send no key at all (a dead letter of a record that had none); `key` is ignored.
    pub keyless: bool,
    /// Confluent-framed Avro value.
    pub payload: Vec<u8>,
    /// Headers copied verbatim from the input record, before every other header (dead letters).
    pub copied_headers: Vec<(String, Option<Vec<u8>>)>,
    /// Extra Kafka headers (dead letters carry their context here); the run loop adds `clickpath.stage`.
    pub headers: Vec<(&'static str, String)>,
    /// Explicit partition (changelog records go to their input partition); `None` partitions by key.
    pub partition: Option<i32>,
    /// Send no value at all (a deletion in a compacted topic); `payload` is ignored.
    pub tombstone: bool,
}

/// One change of a stage's durable state, written to the stage's compacted changelog topic on the partition
/// of the input record that caused it, so that a new owner of that partition restores exactly that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Input partition (= changelog partition) the state belongs to.
    pub partition: i32,
    /// State key (the user id, or a stage-internal key such as a partition watermark).
    pub key: Vec<u8>,
    /// New value; `None` deletes the key (a tombstone, removed by compaction).
    pub value: Option<Vec<u8>>,
}

/// Changelog records read during a restore, per partition, compacted as they arrive: the last value
/// of a key wins and a tombstone deletes it (a changelog not compacted yet holds several values per
/// key). A stateful stage hands each record of [`Stage::restore`] to [`RestoreBuffer::record`], and
/// takes a partition's live records in [`Stage::on_assign`] with [`RestoreBuffer::take`].
#[derive(Debug, Default)]
pub struct RestoreBuffer {
    partitions: std::collections::BTreeMap<i32, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl RestoreBuffer {
    /// Folds in one changelog record of `partition` (`None`: a tombstone).
    pub fn record(&mut self, partition: i32, key: &[u8], value: Option<&[u8]>) {
        let records = self.partitions.entry(partition).or_default();
        match value {
            Some(v) => records.insert(key.to_vec(), v.to_vec()),
            None => records.remove(key),
        };
    }

    /// The live records of `partition`, sorted by key, if any record of it was read (an empty map
    /// when every key was deleted); the buffer forgets them.
    pub fn take(&mut self, partition: i32) -> Option<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
        self.partitions.remove(&partition)
    }

    /// Forgets what was read for `partition` (it was revoked before being assigned).
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

/// What a stage's hooks use to emit records. Outputs are buffered and delivered by the run loop.
pub struct Context<'a> {
    codec: &'a Codec,
    outputs: &'a mut Vec<Output>,
    now_ms: i64,
    topic: Option<&'a str>,
    partition: Option<i32>,
    offset: Option<i64>,
    /// Set when the stage runs chained: emits to internal topics are handed over typed.
    handoff: Option<&'a mut Handoff>,
    /// The trace headers of the current record's outputs (see [`crate::trace_context`]).
    trace: Option<&'a TraceHeaders>,
}

impl<'a> Context<'a> {
    /// A context that appends encoded outputs to `outputs`.
    pub fn new(codec: &'a Codec, outputs: &'a mut Vec<Output>, now_ms: i64) -> Self {
        Context {
            codec,
            outputs,
            now_ms,
            topic: None,
            partition: None,
            offset: None,
            handoff: None,
            trace: None,
        }
    }

    /// The same context, for a record read from `partition` of the input topic.
    pub fn for_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The same context, for a record read from `partition` of input topic `topic`.
    pub fn for_record(mut self, topic: &'a str, partition: i32) -> Self {
        self.topic = Some(topic);
        self.partition = Some(partition);
        self
    }

    /// The same context, for the record at `offset` (named in dead letters of chained stages).
    pub fn at_offset(mut self, offset: i64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// A context for a stage chained behind this one: the same outputs, time and record, with
    /// emits to `handoff`'s internal topics handed over typed instead of (or as well as) produced.
    pub fn handing_off<'b>(&'b mut self, handoff: &'b mut Handoff) -> Context<'b> {
        Context {
            codec: self.codec,
            outputs: &mut *self.outputs,
            now_ms: self.now_ms,
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            handoff: Some(handoff),
            trace: self.trace,
        }
    }

    /// The same context, whose record's outputs carry `trace`.
    pub fn with_trace(mut self, trace: Option<&'a TraceHeaders>) -> Self {
        self.trace = trace;
        self
    }

    /// The trace headers that [`Context::emit`] puts on the current record's outputs (and hands
    /// on with them in the chain); `None` outside a record (end of batch, tick) or with
    /// `runtime.trace_context = "off"` (or `"continue"` and an untraced record). A stage that
    /// emits a record's outputs later (the scorer's micro-batch) keeps them and passes them to
    /// [`Context::emit_with_trace`]; an output the current record did not cause (another user's
    /// session closed by the watermark, an aggregate) is emitted with `None` there.
    pub fn trace(&self) -> Option<&'a TraceHeaders> {
        self.trace
    }

    /// Runs `f` with the partition set to `partition`: a hook that emits records of several
    /// partitions at once (a batch scored at its end) names each one's partition.
    pub fn with_partition<R>(&mut self, partition: i32, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.partition.replace(partition);
        let r = f(self);
        self.partition = before;
        r
    }

    /// Input topic of the record being processed (`None` in hooks, and in contexts built with
    /// [`Context::for_partition`]).
    pub fn topic(&self) -> Option<&str> {
        self.topic
    }

    /// Input partition of the record being processed (`None` in tick and shutdown hooks).
    /// Stages keep event-time state per partition, so one lagging partition cannot make another's
    /// events late. With several input topics this is the partition number, the same for every topic (they are
    /// co-partitioned).
    pub fn partition(&self) -> Option<i32> {
        self.partition
    }

    /// Offset of the record being processed, when the run loop said it.
    pub fn offset(&self) -> Option<i64> {
        self.offset
    }

    /// The codec the outputs are encoded with.
    pub fn codec(&self) -> &Codec {
        self.codec
    }

    /// Queues an output built by hand (a dead letter), with the current record's trace headers.
    pub fn push_output(&mut self, mut output: Output) {
        if let Some(t) = self.trace {
            t.push_onto(&mut output.headers);
        }
        self.outputs.push(output);
    }

    /// Encodes `record` and queues it for `topic` under `key`, with the current record's trace
    /// headers; when the stage runs chained and `topic` is internal, hands the record to the next
    /// stage instead (and also queues it when the chain produces that topic).
    pub fn emit<T: AvroRecord + Clone + Send + 'static>(
        &mut self,
        topic: &str,
        key: &str,
        record: &T,
    ) -> Result<(), StageError> {
        self.emit_with_trace(topic, key, record, Vec::new(), self.trace)
    }

    /// [`Context::emit`] for a record the stage no longer needs: handed to the next chained stage
    /// without a copy.
    pub fn emit_owned<T: AvroRecord + Send + 'static>(
        &mut self,
        topic: &str,
        key: &str,
        record: T,
    ) -> Result<(), StageError> {
        let trace = self.trace;
        if let Some(handoff) = self.handoff.as_deref_mut()
            && let Some((route, produce)) = handoff.route(topic)
        {
            if produce {
                let out = traced(encoded(self.codec, topic, key, &record)?, Vec::new(), trace);
                self.outputs.push(out);
            }
            handoff.push(Handed {
                route,
                key: key.to_owned(),
                partition: self.partition,
                trace: trace.cloned(),
                record: Box::new(record),
            });
            return Ok(());
        }
        let out = traced(encoded(self.codec, topic, key, &record)?, Vec::new(), trace);
        self.outputs.push(out);
        Ok(())
    }

    /// Like [`Context::emit`], with extra Kafka headers (on the produced record only).
    pub fn emit_with_headers<T: AvroRecord + Clone + Send + 'static>(
        &mut self,
        topic: &str,
        key: &str,
        record: &T,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), StageError> {
        self.emit_with_trace(topic, key, record, headers, self.trace)
    }

    /// Like [`Context::emit_with_headers`], with the trace headers of `trace` instead of the current
    /// record's (`None`: none): for an output of another record (a micro-batch scored later) or of
    /// no single record (an aggregate, a session another user's event closed).
    pub fn emit_with_trace<T: AvroRecord + Clone + Send + 'static>(
        &mut self,
        topic: &str,
        key: &str,
        record: &T,
        headers: Vec<(&'static str, String)>,
        trace: Option<&TraceHeaders>,
    ) -> Result<(), StageError> {
        if let Some(handoff) = self.handoff.as_deref_mut()
            && let Some((route, produce)) = handoff.route(topic)
        {
            handoff.push(Handed {
                route,
                key: key.to_owned(),
                partition: self.partition,
                trace: trace.cloned(),
                record: Box::new(record.clone()),
            });
            if !produce {
                return Ok(());
            }
        }
        let out = traced(encoded(self.codec, topic, key, record)?, headers, trace);
        self.outputs.push(out);
        Ok(())
    }

    /// Wall-clock time of the current batch, in ms since the epoch (for "far future" checks).
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// `out` with `headers` and the trace headers of `trace`.
fn traced(
    mut out: Output,
    headers: Vec<(&'static str, String)>,
    trace: Option<&TraceHeaders>,
) -> Output {
    out.headers = headers;
    if let Some(t) = trace {
        t.push_onto(&mut out.headers);
    }
    out
}

/// `record` encoded as an output to `topic` under `key`.
fn encoded<T: AvroRecord>(
    codec: &Codec,
    topic: &str,
    key: &str,
    record: &T,
) -> Result<Output, StageError> {
    let payload = codec
        .encode(record)
        .map_err(|e| StageError::Fatal(format!("cannot encode {}: {e}", T::FULL_NAME)))?;
    Ok(Output {
        topic: topic.to_string(),
        key: key.as_bytes().to_vec(),
        payload,
        ..Output::default()
    })
}

/// A Kafka consumer stage. Must be testable with no broker: call `process` with a [`Context`] directly.
pub trait Stage: Send {
    /// What the stage reads: a record type (one input topic), or an enum over several topics (see
    /// [`StageInput`]).
    type Input: StageInput;

    /// Short name, used in the consumer group, metric labels and logs (e.g. `sessionizer`).
    fn name(&self) -> &'static str;

    /// Handles one decoded input record.
    fn process(&mut self, input: Self::Input, ctx: &mut Context<'_>) -> Result<(), StageError>;

    /// Runs once per polled batch, after its last record was processed and before the batch is made
    /// durable: a stage that buffers records (to score them together, say) emits them here, so they commit
    /// with the batch's offsets. Any error stops the stage (there is no single record to dead-letter).
    fn end_batch(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// After the first record of a batch, how long to keep polling for more (up to `runtime.max_batch`)
    /// before processing: a stage that scores records together trades this much latency for fuller
    /// batches. Zero (the default) takes only what is already fetched.
    fn poll_linger(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Runs every `runtime.tick_interval_ms` (watermarks, eviction of idle state).
    fn tick(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// Partitions of the input topics were assigned to this instance: the partition numbers it did not own
    /// before (with several input topics, a number is owned while any input topic's partition of that number
    /// is assigned).
    fn on_assign(&mut self, _partitions: &[i32]) {}

    /// Partitions of the input topics were taken away from this instance: the partition numbers it no longer
    /// owns in any input topic.
    fn on_revoke(&mut self, _partitions: &[i32]) {}

    /// The stage is draining for shutdown; last chance to emit (for example open sessions in the demo).
    fn on_shutdown(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// Whether the stage keeps durable state in a changelog topic (`<group_prefix>.<stage>-changelog`).
    fn is_stateful(&self) -> bool {
        false
    }

    /// State changes since the last call; the run loop writes them to the changelog with the batch in
    /// exactly-once mode (in its transaction), and at each commit (`runtime.commit_interval_ms`) in
    /// at-least-once mode. Stages also refresh their query views here.
    fn take_state_changes(&mut self) -> Vec<StateChange> {
        Vec::new()
    }

    /// Installs one changelog record while partitions are restored, before any input of that partition is
    /// processed. `None` is a tombstone.
    fn restore(
        &mut self,
        _partition: i32,
        _key: &[u8],
        _value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        Ok(())
    }

    /// The store where the stage publishes per-user views for the HTTP query API, if it has one.
    fn query_store(&self) -> Option<crate::query::QueryStore> {
        None
    }

    /// Every query store the stage publishes, with the stage name it answers for: by default its
    /// own [`Stage::query_store`]; a chain of stages has one per stage that publishes.
    fn query_stores(&self) -> Vec<(&'static str, crate::query::QueryStore)> {
        self.query_store()
            .map(|s| vec![(self.name(), s)])
            .unwrap_or_default()
    }

    /// Number of entries the stage keeps in memory (users, ids), exported as a gauge.
    fn state_entries(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::{ClickEvent, EventType, Prediction};

    /// A two-topic input, as the detector's.
    #[derive(Debug, PartialEq)]
    #[allow(clippy::large_enum_variant)]
    enum Either {
        Event(ClickEvent),
        Prediction(Prediction),
    }

    impl StageInput for Either {
        const ROLES: &'static [&'static str] = &["events", "predictions"];

        fn decode(codec: &Codec, input: usize, payload: &[u8]) -> Result<Self, CodecError> {
            match input {
                0 => codec.decode(payload).map(Either::Event),
                _ => codec.decode(payload).map(Either::Prediction),
            }
        }
    }

    fn prediction() -> Prediction {
        Prediction {
            event_id: "e1".into(),
            user_id: "u".into(),
            event_time: 1_700_000_000_000,
            model_version: "test".into(),
            purchase_probability: 0.5,
            next_actions: Vec::new(),
            predicted_path: Vec::new(),
            factors: Vec::new(),
            scoring_latency_us: 3,
            recommended_items: Vec::new(),
            recommended_categories: Vec::new(),
        }
    }

    #[test]
    fn a_record_type_is_a_one_topic_input() {
        let codec = Codec::embedded();
        assert_eq!(
            <ClickEvent as StageInput>::ROLES,
            &["io.clickpath.ClickEvent"]
        );
        let ev = ClickEvent::new("e1", "u", EventType::Search, 1_700_000_000_000);
        let bytes = codec.encode(&ev).unwrap();
        assert_eq!(
            <ClickEvent as StageInput>::decode(&codec, 0, &bytes).unwrap(),
            ev
        );
    }

    #[test]
    fn an_enum_input_decodes_each_topic_into_its_variant() {
        let codec = Codec::embedded();
        let ev = ClickEvent::new("e1", "u", EventType::Search, 1_700_000_000_000);
        let ev_bytes = codec.encode(&ev).unwrap();
        let p_bytes = codec.encode(&prediction()).unwrap();
        assert_eq!(
            Either::decode(&codec, 0, &ev_bytes).unwrap(),
            Either::Event(ev)
        );
        assert_eq!(
            Either::decode(&codec, 1, &p_bytes).unwrap(),
            Either::Prediction(prediction())
        );
        // A record on the wrong topic is a decode error (dead-lettered by the run loop), never a wrong variant.
        let e = Either::decode(&codec, 0, &p_bytes).unwrap_err();
        assert!(!e.kind().is_empty(), "{e}");
        assert!(Either::decode(&codec, 1, &ev_bytes).is_err());
    }

    #[test]
    fn a_restore_buffer_keeps_the_last_value_of_each_key() {
        let mut b = RestoreBuffer::default();
        b.record(1, b"a", Some(b"1"));
        b.record(1, b"b", Some(b"2"));
        b.record(1, b"a", Some(b"3"));
        b.record(1, b"b", None);
        b.record(2, b"x", None);
        let one = b.take(1).unwrap();
        assert_eq!(
            one.into_iter().collect::<Vec<_>>(),
            vec![(b"a".to_vec(), b"3".to_vec())]
        );
        assert_eq!(b.take(1), None, "taken");
        assert_eq!(b.take(2).map(|m| m.len()), Some(0), "read, all deleted");
        b.record(3, b"k", Some(b"v"));
        b.forget(3);
        assert_eq!(b.take(3), None);
    }

    #[test]
    fn context_knows_the_topic_and_partition_of_the_record() {
        let codec = Codec::embedded();
        let mut outputs = Vec::new();
        let ctx = Context::new(&codec, &mut outputs, 0).for_record("preds", 3);
        assert_eq!((ctx.topic(), ctx.partition()), (Some("preds"), Some(3)));
        let ctx = Context::new(&codec, &mut outputs, 0).for_partition(2);
        assert_eq!((ctx.topic(), ctx.partition()), (None, Some(2)));
    }
}
