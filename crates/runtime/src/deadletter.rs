//! Dead letters the Kafka way: a record a stage could not process goes to the dead-letter topic as
//! it was received (its key and value bytes, its headers), with its context in headers that Kafka
//! Connect's dead-letter queues use (`errors.deadletterqueue.context.headers.enable`), beside
//! clickpath's own error kind and reason. Tools that know Connect's dead letters read them as such,
//! and a fixed record can be replayed byte for byte (`clickpath replay-dead-letters`).
//!
//! Until 2026-12-05 the value was an Avro `DeadLetter` wrapping the original bytes; [`read`] still
//! reads those.

/// Header names on every dead letter.
pub mod headers {
    /// Topic the record was read from (Kafka Connect).
    pub const CONNECT_TOPIC: &str = "__connect.errors.topic";
    /// Partition it was read from (Kafka Connect).
    pub const CONNECT_PARTITION: &str = "__connect.errors.partition";
    /// Offset it was read at (Kafka Connect).
    pub const CONNECT_OFFSET: &str = "__connect.errors.offset";
    /// The clickpath stage that rejected it, e.g. `cleaning` (Kafka Connect names its own
    /// processing stages here, e.g. `VALUE_CONVERTER`).
    pub const CONNECT_STAGE: &str = "__connect.errors.stage";
    /// `clickpath.<kind>` (Kafka Connect puts the Java exception's class name here).
    pub const CONNECT_EXCEPTION_CLASS: &str = "__connect.errors.exception.class.name";
    /// The reason (Kafka Connect: the exception's message).
    pub const CONNECT_EXCEPTION_MESSAGE: &str = "__connect.errors.exception.message";
    /// Short machine-readable error kind, e.g. `wrong_magic`, `bad_value`.
    pub const ERROR_KIND: &str = "clickpath.error.kind";
    /// Human-readable reason.
    pub const ERROR_REASON: &str = "clickpath.error.reason";
    /// Wall-clock time of the rejection (ms since the epoch, decimal).
    pub const FAILED_AT: &str = "clickpath.error.failed_at";
    /// Topic the record was read from (as [`CONNECT_TOPIC`]; kept for readers of the first format).
    pub const SOURCE_TOPIC: &str = "clickpath.source.topic";
    /// Partition it was read from (as [`CONNECT_PARTITION`]).
    pub const SOURCE_PARTITION: &str = "clickpath.source.partition";
    /// Offset it was read at (as [`CONNECT_OFFSET`]).
    pub const SOURCE_OFFSET: &str = "clickpath.source.offset";

    /// Whether a dead letter sets header `name` itself (an input header of that name is not copied).
    pub fn is_context(name: &str) -> bool {
        name.starts_with("__connect.errors.")
            || name.starts_with("clickpath.error.")
            || name.starts_with("clickpath.source.")
            || name == "clickpath.stage"
    }
}

use crate::stage::Output;
use crate::trace_context::{TRACEPARENT, TRACESTATE};
use clickpath_schema::DeadLetter;
use clickpath_schema::codec::Codec;

/// Where a rejected record was read, and why it was rejected.
#[derive(Debug, Clone, Copy)]
pub struct Rejection<'a> {
    /// The stage that rejected it.
    pub stage: &'a str,
    /// Topic, partition and offset it was read at (-1 when the record came in process).
    pub topic: &'a str,
    /// Partition it was read from.
    pub partition: i32,
    /// Offset it was read at.
    pub offset: i64,
    /// Short machine-readable kind.
    pub kind: &'a str,
    /// Human-readable reason.
    pub reason: &'a str,
    /// Wall-clock time of the rejection (ms).
    pub now_ms: i64,
}

/// The dead letter of a record that `why.stage` could not process: `key` and `payload` as
/// received (`None`: the record had none, and its dead letter has none), the `input_headers` (name, value) copied except those the dead letter sets itself
/// (and the trace headers when `own_trace`: the dead letter then carries its own), then the
/// context headers.
pub fn dead_letter_output<'h>(
    dead_letter_topic: &str,
    why: &Rejection<'_>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    input_headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    own_trace: bool,
) -> Output {
    use headers::*;
    let copied_headers = input_headers
        .into_iter()
        .filter(|(name, _)| {
            !is_context(name) && !(own_trace && (*name == TRACEPARENT || *name == TRACESTATE))
        })
        .map(|(name, value)| (name.to_string(), value.map(<[u8]>::to_vec)))
        .collect();
    Output {
        topic: dead_letter_topic.to_string(),
        key: key.map(<[u8]>::to_vec).unwrap_or_default(),
        keyless: key.is_none(),
        payload: payload.map(<[u8]>::to_vec).unwrap_or_default(),
        tombstone: payload.is_none(),
        copied_headers,
        headers: vec![
            (CONNECT_TOPIC, why.topic.to_string()),
            (CONNECT_PARTITION, why.partition.to_string()),
            (CONNECT_OFFSET, why.offset.to_string()),
            (CONNECT_STAGE, why.stage.to_string()),
            (CONNECT_EXCEPTION_CLASS, format!("clickpath.{}", why.kind)),
            (CONNECT_EXCEPTION_MESSAGE, why.reason.to_string()),
            (ERROR_KIND, why.kind.to_string()),
            (ERROR_REASON, why.reason.to_string()),
            (FAILED_AT, why.now_ms.to_string()),
            (SOURCE_TOPIC, why.topic.to_string()),
            (SOURCE_PARTITION, why.partition.to_string()),
            (SOURCE_OFFSET, why.offset.to_string()),
        ],
        ..Output::default()
    }
}

/// A dead letter read back from its record: the key and value are the original record's, the rest
/// comes from the headers (`header` gives the last value of a header name). A record without the
/// context headers is read as the first format, an Avro `DeadLetter` value; an error if it is
/// neither.
pub fn read<'a>(
    codec: &Codec,
    key: Option<&[u8]>,
    value: &[u8],
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<DeadLetter, String> {
    use headers::*;
    let Some(source_topic) = header(CONNECT_TOPIC) else {
        return codec.decode::<DeadLetter>(value).map_err(|e| {
            format!("neither a dead letter with context headers nor an Avro DeadLetter: {e}")
        });
    };
    let number = |name: &str| -> Result<i64, String> {
        header(name)
            .ok_or_else(|| format!("header {name} missing"))?
            .parse()
            .map_err(|e| format!("header {name}: {e}"))
    };
    Ok(DeadLetter {
        source_topic: source_topic.to_string(),
        source_partition: i32::try_from(number(CONNECT_PARTITION)?)
            .map_err(|e| format!("header {CONNECT_PARTITION}: {e}"))?,
        source_offset: number(CONNECT_OFFSET)?,
        key: key.map(<[u8]>::to_vec),
        payload: value.to_vec(),
        error_kind: header(ERROR_KIND).unwrap_or_default().to_string(),
        reason: header(ERROR_REASON)
            .or_else(|| header(CONNECT_EXCEPTION_MESSAGE))
            .unwrap_or_default()
            .to_string(),
        stage: header(CONNECT_STAGE).unwrap_or_default().to_string(),
        failed_at: number(FAILED_AT).unwrap_or(0),
    })
}

/// [`read`] of a consumed record (the last value of each header name counts).
pub fn read_message<M: rdkafka::Message>(codec: &Codec, m: &M) -> Result<DeadLetter, String> {
    let headers = crate::kafka::record_headers(m);
    let header = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| *v)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    read(codec, m.key(), m.payload().unwrap_or_default(), header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why() -> Rejection<'static> {
        Rejection {
            stage: "cleaning",
            topic: "clickpath.raw",
            partition: 3,
            offset: 42,
            kind: "bad_value",
            reason: "event_time is in the year 3000",
            now_ms: 1_700_000_000_000,
        }
    }

    fn header_of<'a>(out: &'a Output) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            out.headers
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    #[test]
    fn the_record_goes_as_received_with_connect_context_headers() {
        let input = [
            ("traceparent", Some(&b"00-abc"[..])),
            ("shop.origin", Some(&b"\xff\x00binary"[..])),
            ("empty", None),
            // A dead letter replayed and rejected again: its old context is not copied.
            ("__connect.errors.topic", Some(&b"older"[..])),
            ("clickpath.error.kind", Some(&b"older"[..])),
        ];
        let out = dead_letter_output(
            "dlq",
            &why(),
            Some(b"u-1"),
            Some(b"\x00garbage"),
            input,
            false,
        );
        assert_eq!((out.topic.as_str(), &out.key[..]), ("dlq", &b"u-1"[..]));
        assert_eq!(out.payload, b"\x00garbage", "the value is not wrapped");
        assert_eq!(
            out.copied_headers,
            vec![
                ("traceparent".to_string(), Some(b"00-abc".to_vec())),
                ("shop.origin".to_string(), Some(b"\xff\x00binary".to_vec())),
                ("empty".to_string(), None),
            ]
        );
        let h = header_of(&out);
        assert_eq!(h("__connect.errors.topic"), Some("clickpath.raw"));
        assert_eq!(h("__connect.errors.partition"), Some("3"));
        assert_eq!(h("__connect.errors.offset"), Some("42"));
        assert_eq!(h("__connect.errors.stage"), Some("cleaning"));
        assert_eq!(
            h("__connect.errors.exception.class.name"),
            Some("clickpath.bad_value")
        );
        assert_eq!(
            h("__connect.errors.exception.message"),
            Some("event_time is in the year 3000")
        );
        assert_eq!(h("clickpath.error.kind"), Some("bad_value"));
        // With a trace of its own, the input's trace headers are not copied.
        let traced = dead_letter_output("dlq", &why(), None, None, input, true);
        // No key and no value: none on the dead letter either.
        assert!(traced.keyless && traced.tombstone);
        assert!(!out.keyless && !out.tombstone);
        assert!(
            traced
                .copied_headers
                .iter()
                .all(|(k, _)| k != "traceparent")
        );
        assert!(traced.key.is_empty());
    }

    #[test]
    fn read_gives_back_what_was_written_in_either_format() {
        let codec = Codec::embedded();
        let out = dead_letter_output("dlq", &why(), Some(b"u-1"), Some(b"raw bytes"), [], false);
        let read_back = read(&codec, Some(&out.key), &out.payload, header_of(&out)).unwrap();
        let expected = DeadLetter {
            source_topic: "clickpath.raw".into(),
            source_partition: 3,
            source_offset: 42,
            key: Some(b"u-1".to_vec()),
            payload: b"raw bytes".to_vec(),
            error_kind: "bad_value".into(),
            reason: "event_time is in the year 3000".into(),
            stage: "cleaning".into(),
            failed_at: 1_700_000_000_000,
        };
        assert_eq!(read_back, expected);
        // The first format: an Avro DeadLetter value, no context headers.
        let wrapped = codec.encode(&expected).unwrap();
        assert_eq!(read(&codec, None, &wrapped, |_| None).unwrap(), expected);
        // Neither: an error, and a bad number in a header too.
        assert!(read(&codec, None, b"raw bytes", |_| None).is_err());
        let bad = |name: &str| match name {
            "__connect.errors.topic" => Some("t"),
            "__connect.errors.partition" => Some("x"),
            _ => Some("1"),
        };
        let err = read(&codec, None, b"", bad).unwrap_err();
        assert!(err.contains("__connect.errors.partition"), "{err}");
    }
}
