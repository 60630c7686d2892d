//! The one stage abstraction: a stage author writes `process` (plus optional hooks); consuming, decoding,
//! producing, offsets, dead letters, metrics and shutdown are the runtime's job.

use clickpath_schema::codec::{AvroRecord, Codec};

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
#[derive(Debug, Clone)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Kafka key (the user id for every clickpath topic).
    pub key: Vec<u8>,
    /// Confluent-framed Avro value.
    pub payload: Vec<u8>,
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

/// What a stage's hooks use to emit records. Outputs are buffered and delivered by the run loop.
pub struct Context<'a> {
    codec: &'a Codec,
    outputs: &'a mut Vec<Output>,
    now_ms: i64,
    partition: Option<i32>,
}

impl<'a> Context<'a> {
    /// A context that appends encoded outputs to `outputs`.
    pub fn new(codec: &'a Codec, outputs: &'a mut Vec<Output>, now_ms: i64) -> Self {
        Context {
            codec,
            outputs,
            now_ms,
            partition: None,
        }
    }

    /// The same context, for a record read from `partition` of the input topic.
    pub fn for_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Input partition of the record being processed (`None` in tick and shutdown hooks).
    /// Stages keep event-time state per partition, so one lagging partition cannot make another's
    /// events late.
    pub fn partition(&self) -> Option<i32> {
        self.partition
    }

    /// Encodes `record` and queues it for `topic` under `key`.
    pub fn emit<T: AvroRecord>(
        &mut self,
        topic: &str,
        key: &str,
        record: &T,
    ) -> Result<(), StageError> {
        let payload = self
            .codec
            .encode(record)
            .map_err(|e| StageError::Fatal(format!("cannot encode {}: {e}", T::FULL_NAME)))?;
        self.outputs.push(Output {
            topic: topic.to_string(),
            key: key.as_bytes().to_vec(),
            payload,
            headers: Vec::new(),
            partition: None,
            tombstone: false,
        });
        Ok(())
    }

    /// Like [`Context::emit`], with extra Kafka headers.
    pub fn emit_with_headers<T: AvroRecord>(
        &mut self,
        topic: &str,
        key: &str,
        record: &T,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), StageError> {
        self.emit(topic, key, record)?;
        if let Some(last) = self.outputs.last_mut() {
            last.headers = headers;
        }
        Ok(())
    }

    /// Wall-clock time of the current batch, in ms since the epoch (for "far future" checks).
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// A Kafka consumer stage. Must be testable with no broker: call `process` with a [`Context`] directly.
pub trait Stage: Send {
    /// The record type read from the input topic.
    type Input: AvroRecord;

    /// Short name, used in the consumer group, metric labels and logs (e.g. `sessionizer`).
    fn name(&self) -> &'static str;

    /// Handles one decoded input record.
    fn process(&mut self, input: Self::Input, ctx: &mut Context<'_>) -> Result<(), StageError>;

    /// Runs every `runtime.tick_interval_ms` (watermarks, eviction of idle state).
    fn tick(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// Partitions of the input topic were assigned to this instance.
    fn on_assign(&mut self, _partitions: &[i32]) {}

    /// Partitions of the input topic were taken away from this instance.
    fn on_revoke(&mut self, _partitions: &[i32]) {}

    /// The stage is draining for shutdown; last chance to emit (for example open sessions in the demo).
    fn on_shutdown(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// Whether the stage keeps durable state in a changelog topic (`<group_prefix>.<stage>-changelog`).
    fn is_stateful(&self) -> bool {
        false
    }

    /// State changes since the last call; the run loop writes them to the changelog with the batch (in the same
    /// transaction in exactly-once mode).
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

    /// Number of entries the stage keeps in memory (users, ids), exported as a gauge.
    fn state_entries(&self) -> usize {
        0
    }
}
