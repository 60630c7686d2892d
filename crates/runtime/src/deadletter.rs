//! Dead-letter records: the original bytes plus the reason, as an Avro `DeadLetter` with context headers.

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
    })
}
