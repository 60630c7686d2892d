//! Dead-letter records: the original bytes plus the reason, as an Avro `DeadLetter` with context headers
//! (as Kafka Connect's `errors.deadletterqueue.context.headers.enable` and KIP-1034 do), so operators can
//! route and count them without decoding the value.

/// Header names on every dead letter.
pub mod headers {
    /// Short machine-readable error kind, e.g. `wrong_magic`, `bad_value`.
    pub const ERROR_KIND: &str = "clickpath.error.kind";
    /// Human-readable reason.
    pub const ERROR_REASON: &str = "clickpath.error.reason";
    /// Topic the record was read from.
    pub const SOURCE_TOPIC: &str = "clickpath.source.topic";
    /// Partition it was read from.
    pub const SOURCE_PARTITION: &str = "clickpath.source.partition";
    /// Offset it was read at.
    pub const SOURCE_OFFSET: &str = "clickpath.source.offset";
}

use crate::stage::Output;
use clickpath_schema::DeadLetter;
use clickpath_schema::codec::Codec;

/// Builds the dead-letter output for a record that `stage` could not process.
#[allow(clippy::too_many_arguments)]
pub fn dead_letter_output(
    codec: &Codec,
    dead_letter_topic: &str,
    stage: &str,
    source_topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    payload: &[u8],
    kind: &str,
    reason: &str,
    now_ms: i64,
) -> anyhow::Result<Output> {
    let record = DeadLetter {
        source_topic: source_topic.to_string(),
        source_partition: partition,
        source_offset: offset,
        key: key.map(|k| k.to_vec()),
        payload: payload.to_vec(),
        error_kind: kind.to_string(),
        reason: reason.to_string(),
        stage: stage.to_string(),
        failed_at: now_ms,
    };
    let encoded = codec
        .encode(&record)
        .map_err(|e| anyhow::anyhow!("cannot encode dead letter: {e}"))?;
    Ok(Output {
        topic: dead_letter_topic.to_string(),
        key: key.map(|k| k.to_vec()).unwrap_or_default(),
        payload: encoded,
        headers: vec![
            (headers::ERROR_KIND, kind.to_string()),
            (headers::ERROR_REASON, reason.to_string()),
            (headers::SOURCE_TOPIC, source_topic.to_string()),
            (headers::SOURCE_PARTITION, partition.to_string()),
            (headers::SOURCE_OFFSET, offset.to_string()),
        ],
        partition: None,
        tombstone: false,
    })
}
