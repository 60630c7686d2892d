//! Confluent-framed Avro: `0x00`, the writer schema id as a big-endian `u32`, then the Avro
//! binary body (no container file).
//!
//! Decoding always looks up the writer schema named by the header and resolves it against the
//! reader schema (the newest version of the type's subject), so records written by older or newer
//! producers decode as long as the evolution is compatible.

mod direct_read;
mod direct_write;
mod error;
mod framing;
mod inline;
mod precheck;
mod record;
mod wire;

pub use error::CodecError;
pub use framing::{HEADER_LEN, MAGIC, split_header};
pub use record::AvroRecord;

use crate::registry::{EmbeddedRegistry, RegistryError, SchemaRegistry};
use apache_avro::Schema;
use direct_write::WriteError;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use wire::BodyFault;

/// Largest single allocation apache-avro may make while decoding (one string, bytes or block).
///
/// apache-avro keeps this limit process-wide and takes the first value it is given; [`Codec::new`]
/// sets it, unless something decoded Avro before (then its default, 512 MiB, stays). Either way
/// the body pre-check already bounds every length by the payload's own size.
pub const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// A registry schema prepared for the hot path: parsed once, cached per id.
#[derive(Debug)]
struct Prepared {
    id: u32,
    /// Full name of the record, `None` for an unnamed writer schema.
    full_name: Option<String>,
    /// Full names this record also answers to (Avro aliases of a renamed record).
    aliases: Vec<String>,
    /// As registered: apache-avro's decoder and resolver follow its named references.
    schema: Arc<Schema>,
    /// Without named references: for the writers, the body pre-check and the direct decoder.
    inlined: Schema,
    /// Whether [`direct_read`] can read bodies of this schema (it reads every type our schemas use).
    direct: bool,
}

impl Prepared {
    fn new(id: u32, schema: Arc<Schema>) -> Result<Self, CodecError> {
        let inlined = inline::inline_refs(&schema)
            .map_err(|reason| CodecError::UnsupportedSchema { id, reason })?;
        let (full_name, aliases) = match schema.as_ref() {
            Schema::Record(r) => (
                Some(r.name.fullname(None)),
                r.aliases
                    .iter()
                    .flatten()
                    .map(|a| a.fullname(r.name.namespace.clone()))
                    .collect(),
            ),
            other => (other.name().map(|n| n.fullname(None)), Vec::new()),
        };
        Ok(Prepared {
            id,
            full_name,
            aliases,
            schema,
            direct: direct_read::supports(&inlined),
            inlined,
        })
    }

    /// Whether a record written as `writer` may be read with this (reader) schema.
    fn reads(&self, writer: &Prepared) -> bool {
        match (&self.full_name, &writer.full_name) {
            (Some(mine), Some(theirs)) => mine == theirs || self.aliases.contains(theirs),
            _ => false,
        }
    }
}

/// Encodes and decodes [`AvroRecord`]s in the Confluent wire format.
///
/// Cheap to clone (one `Arc`), `Send + Sync`: share one per process. Parsed schemas are cached by
/// id and each type's newest id is looked up once, so the per-record cost is the Avro work alone.
#[derive(Clone)]
pub struct Codec {
    inner: Arc<Inner>,
}

// One codec is shared by every task of a stage.
const _: () = {
    const fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Codec>()
};

struct Inner {
    registry: Arc<dyn SchemaRegistry>,
    by_id: RwLock<HashMap<u32, Arc<Prepared>>>,
    latest: RwLock<HashMap<&'static str, Arc<Prepared>>>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached: Vec<u32> = read(&self.inner.by_id).keys().copied().collect();
        f.debug_struct("Codec")
            .field("cached_schema_ids", &cached)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec over the schemas shipped in this binary ([`EmbeddedRegistry::shipped`]).
    pub fn embedded() -> Self {
        Self::new(EmbeddedRegistry::shipped())
    }

    /// A codec over any registry; also sets apache-avro's [`MAX_ALLOCATION_BYTES`].
    pub fn new(registry: Arc<dyn SchemaRegistry>) -> Self {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        Codec {
            inner: Arc::new(Inner {
                registry,
                by_id: RwLock::default(),
                latest: RwLock::default(),
            }),
        }
    }

    /// The schema id `encode` writes for `T`: the newest version of its subject.
    pub fn schema_id<T: AvroRecord>(&self) -> Result<u32, CodecError> {
        Ok(self.latest::<T>()?.id)
    }

    /// Encodes `value` with the newest schema of its type, header included.
    pub fn encode<T: AvroRecord>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Like [`Codec::encode`], but appends to `out` (reuse one buffer for many records).
    /// On error `out` is left as it was.
    ///
    /// Writes with the schema-guided [`direct_write`] serializer. A record whose fields do not match
    /// the schema's is refused ([`CodecError::EncodeFields`]); a shape that writer does not model is
    /// written by apache-avro's writer instead.
    pub fn encode_into<T: AvroRecord>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let schema = self.latest::<T>()?;
        let start = out.len();
        framing::write_header(schema.id, out);
        match direct_write::to_body(&schema.inlined, value, out) {
            Ok(()) => return Ok(()),
            Err(WriteError::Fields(reason)) => {
                out.truncate(start);
                return Err(CodecError::EncodeFields {
                    record: T::FULL_NAME,
                    reason,
                });
            }
            Err(WriteError::Unsupported(_)) => out.truncate(start + HEADER_LEN),
        }
        apache_avro::write_avro_datum_ref(&schema.inlined, value, out).map_err(|source| {
            out.truncate(start);
            CodecError::Encode {
                record: T::FULL_NAME,
                source,
            }
        })?;
        Ok(())
    }

    /// Decodes a framed record into `T`, resolving the writer schema named by its header against
    /// `T`'s newest schema.
    pub fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (writer_id, body) = split_header(bytes)?;
        let reader = self.latest::<T>()?;
        let writer = if writer_id == reader.id {
            reader.clone()
        } else {
            self.prepared(writer_id)?
        };
        if !reader.reads(&writer) {
            return Err(CodecError::WrongRecord {
                id: writer_id,
                expected: T::FULL_NAME,
                found: writer
                    .full_name
                    .clone()
                    .unwrap_or_else(|| format!("an unnamed {}", writer.inlined)),
            });
        }
        if writer.id == reader.id && writer.direct {
            // Hot path: no resolution needed, read straight into T (the direct decoder bounds
            // every length itself, so no pre-check walk).
            return direct_read::from_body(&writer.inlined, body).map_err(body_error);
        }
        precheck::check_body(&writer.inlined, body).map_err(body_error)?;
        let mut rest = body;
        let value = apache_avro::from_avro_datum(&writer.schema, &mut rest, None)
            .map_err(|e| CodecError::BadBody(e.to_string()))?;
        // Resolving a value against its own writer schema changes nothing.
        let value = if writer.id == reader.id {
            value
        } else {
            value
                .resolve(&reader.schema)
                .map_err(|source| CodecError::Resolution {
                    writer_id,
                    reader_id: reader.id,
                    source,
                })?
        };
        apache_avro::from_value::<T>(&value).map_err(|e| CodecError::BadBody(e.to_string()))
    }

    /// Decodes any framed record into JSON with the writer schema its header names, whatever its
    /// type (for tools that print topics): its schema id, its record's full name (`None` for an
    /// unnamed schema) and the value. Avro unions become their branch's value, enums their symbol.
    pub fn decode_json(
        &self,
        bytes: &[u8],
    ) -> Result<(u32, Option<String>, serde_json::Value), CodecError> {
        let (writer_id, body) = split_header(bytes)?;
        let writer = self.prepared(writer_id)?;
        precheck::check_body(&writer.inlined, body).map_err(body_error)?;
        let mut rest = body;
        let value = apache_avro::from_avro_datum(&writer.schema, &mut rest, None)
            .map_err(|e| CodecError::BadBody(e.to_string()))?;
        let json = avro_to_json(value).map_err(CodecError::BadBody)?;
        Ok((writer_id, writer.full_name.clone(), json))
    }

    fn latest<T: AvroRecord>(&self) -> Result<Arc<Prepared>, CodecError> {
        if let Some(p) = read(&self.inner.latest).get(T::FULL_NAME) {
            return Ok(p.clone());
        }
        let id = self
            .inner
            .registry
            .latest_id(T::FULL_NAME)
            .map_err(|e| match e {
                // The registry knows the subject but not the schema behind it: not the record's fault.
                RegistryError::UnknownId(id) => CodecError::Registry(RegistryError::BadIndex(
                    format!("latest id {id} of {} has no schema", T::FULL_NAME),
                )),
                other => other.into(),
            })?;
        let prepared = self.prepared(id)?;
        write(&self.inner.latest).insert(T::FULL_NAME, prepared.clone());
        Ok(prepared)
    }

    fn prepared(&self, id: u32) -> Result<Arc<Prepared>, CodecError> {
        if let Some(p) = read(&self.inner.by_id).get(&id) {
            return Ok(p.clone());
        }
        let prepared = Arc::new(Prepared::new(id, self.inner.registry.schema(id)?)?);
        Ok(write(&self.inner.by_id)
            .entry(id)
            .or_insert(prepared)
            .clone())
    }
}

/// An Avro value as JSON: records as objects, unions as their branch, enums as their symbol, bytes
/// as arrays of numbers, logical types as their underlying numbers.
fn avro_to_json(value: apache_avro::types::Value) -> Result<serde_json::Value, String> {
    use apache_avro::types::Value as A;
    use serde_json::Value as J;
    let number = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or(J::Null)
    };
    Ok(match value {
        A::Null => J::Null,
        A::Boolean(b) => J::Bool(b),
        A::Int(i) | A::Date(i) | A::TimeMillis(i) => J::from(i),
        A::Long(i)
        | A::TimeMicros(i)
        | A::TimestampMillis(i)
        | A::TimestampMicros(i)
        | A::TimestampNanos(i)
        | A::LocalTimestampMillis(i)
        | A::LocalTimestampMicros(i)
        | A::LocalTimestampNanos(i) => J::from(i),
        A::Float(f) => number(f64::from(f)),
        A::Double(f) => number(f),
        A::String(s) | A::Enum(_, s) => J::String(s),
        A::Bytes(b) | A::Fixed(_, b) => J::Array(b.into_iter().map(J::from).collect()),
        A::Union(_, inner) => avro_to_json(*inner)?,
        A::Array(items) => J::Array(
            items
                .into_iter()
                .map(avro_to_json)
                .collect::<Result<_, _>>()?,
        ),
        A::Map(m) => J::Object(
            m.into_iter()
                .map(|(k, v)| Ok((k, avro_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        A::Record(fields) => J::Object(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k, avro_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        A::Uuid(u) => J::String(u.to_string()),
        other => return Err(format!("no JSON form for {other:?}")),
    })
}

fn body_error(fault: impl Into<BodyFault>) -> CodecError {
    match fault.into() {
        BodyFault::Truncated(m) => CodecError::TruncatedBody(m),
        BodyFault::Invalid(m) => CodecError::BadBody(m),
    }
}

/// Cache locks hold plain maps that no panic can leave half-written, so poisoning is ignored.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    /// The body the direct writer gives, which must be the one apache-avro's writer gives.
    fn direct_body<T: AvroRecord>(value: &T) -> Vec<u8> {
        let codec = Codec::embedded();
        let schema = codec.latest::<T>().unwrap();
        let mut direct = Vec::new();
        direct_write::to_body(&schema.inlined, value, &mut direct)
            .unwrap_or_else(|e| panic!("{} takes the fallback: {e}", T::FULL_NAME));
        let mut reference = Vec::new();
        apache_avro::write_avro_datum_ref(&schema.inlined, value, &mut reference).unwrap();
        assert_eq!(direct, reference, "{}", T::FULL_NAME);
        direct
    }

    #[test]
    fn any_record_decodes_to_json_by_its_own_schema() {
        let codec = Codec::embedded();
        let mut click = ClickEvent::new("e1", "u1", EventType::AddToCart, 1_700_000_000_000);
        click.price = Some(9.5);
        click.extras.insert("k".into(), "v".into());
        let bytes = codec.encode(&click).unwrap();
        let (id, name, json) = codec.decode_json(&bytes).unwrap();
        assert_eq!(id, codec.schema_id::<ClickEvent>().unwrap());
        assert_eq!(name.as_deref(), Some(ClickEvent::FULL_NAME));
        assert_eq!(json["user_id"], "u1");
        assert_eq!(json["event_type"], "ADD_TO_CART");
        assert_eq!(json["event_time"], 1_700_000_000_000i64);
        assert_eq!(json["price"], 9.5);
        assert_eq!(json["item_id"], serde_json::Value::Null);
        assert_eq!(json["extras"]["k"], "v");
        assert!(codec.decode_json(&bytes[..bytes.len() - 3]).is_err());
    }

    /// The fallback to apache-avro is for foreign types; every shipped one takes the fast path.
    #[test]
    fn every_shipped_record_type_takes_the_direct_writer() {
        let mut click = ClickEvent::new("e", "u", EventType::Purchase, 1);
        direct_body(&click);
        click.payment = Some(Payment {
            status: PaymentStatus::Failed,
            method: "card".into(),
            card_fingerprint: None,
        });
        click.extras.insert("k".into(), "v".into());
        click.quantity = Some(2);
        direct_body(&click);
        direct_body(&SessionSummary {
            session_id: "s".into(),
            user_id: "u".into(),
            start_time: 1,
            end_time: 2,
            event_count: 2,
            path: vec![EventType::PageView, EventType::Purchase],
            furthest_stage: FunnelStage::Purchase,
            purchased: true,
            order_value: 9.5,
            first_event_id: "a".into(),
            last_event_id: "b".into(),
            close_reason: "gap".into(),
            revision: 1,
            superseded_session_ids: vec!["s0".into()],
            user_sessions: 4,
            outlook: Some(crate::SessionOutlook {
                model_version: "outlook-1".into(),
                return_probability: 0.25,
                return_horizon_hours: 24,
                segment: 1,
                segment_description: "buyers".into(),
            }),
        });
        direct_body(&FeatureVector {
            event_id: "e".into(),
            user_id: "u".into(),
            event_type: EventType::Search,
            event_time: 3,
            spec_version: "v1".into(),
            values: [("events_5m".to_string(), 2.0)].into(),
            item_id: Some("i".into()),
            category: None,
        });
        direct_body(&Prediction {
            event_id: "e".into(),
            user_id: "u".into(),
            event_time: 4,
            model_version: "m".into(),
            purchase_probability: 0.5,
            next_actions: vec![ActionProbability {
                event_type: EventType::Login,
                probability: 0.25,
            }],
            predicted_path: vec![EventType::Purchase],
            factors: vec![Factor {
                name: "f".into(),
                contribution: -1.0,
            }],
            scoring_latency_us: 7,
            recommended_items: Vec::new(),
            recommended_categories: Vec::new(),
        });
        direct_body(&FraudAlert {
            alert_id: "a".into(),
            user_id: "u".into(),
            alert_type: AlertType::CardTesting,
            severity: Severity::Critical,
            score: 1.0,
            reasons: vec!["r".into()],
            evidence_event_ids: vec![],
            window_start: 1,
            window_end: 2,
            detector_version: "d".into(),
        });
        for key in [None, Some(vec![0xff, 0])] {
            direct_body(&DeadLetter {
                source_topic: "t".into(),
                source_partition: 0,
                source_offset: 5,
                key,
                payload: vec![0, 1, 2],
                error_kind: "decode".into(),
                reason: "r".into(),
                stage: "s".into(),
                failed_at: 6,
            });
        }
    }

    #[test]
    fn a_record_missing_a_schema_field_is_refused_not_written_short() {
        // apache-avro 0.21's writer would write the two fields it got and report success.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Short {
            event_id: String,
        }
        impl AvroRecord for Short {
            const FULL_NAME: &'static str = "io.clickpath.Short";
        }
        let schema = r#"{"type":"record","name":"Short","namespace":"io.clickpath",
            "fields":[{"name":"event_id","type":"string"},{"name":"n","type":"long","default":0}]}"#;
        let mut registry = crate::registry::EmbeddedRegistry::new();
        registry.register(Short::FULL_NAME, 1, schema).unwrap();
        let codec = Codec::new(Arc::new(registry));
        let mut out = vec![7];
        let err = codec
            .encode_into(
                &Short {
                    event_id: "e".into(),
                },
                &mut out,
            )
            .unwrap_err();
        assert!(
            matches!(&err, CodecError::EncodeFields { reason, .. } if reason.contains("n is missing")),
            "{err}"
        );
        assert_eq!(err.kind(), "encode");
        assert_eq!(out, [7], "the buffer is left as it was");
    }

    #[test]
    fn fields_declared_in_another_order_than_the_schema_are_written_in_schema_order() {
        // apache-avro 0.21's writer would write `user_id` first and the record would read back
        // with the two ids swapped.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Reordered {
            user_id: String,
            event_id: String,
        }
        impl AvroRecord for Reordered {
            const FULL_NAME: &'static str = "io.clickpath.Reordered";
        }
        let schema = r#"{"type":"record","name":"Reordered","namespace":"io.clickpath",
            "fields":[{"name":"event_id","type":"string"},{"name":"user_id","type":"string"}]}"#;
        let mut registry = crate::registry::EmbeddedRegistry::new();
        registry.register(Reordered::FULL_NAME, 1, schema).unwrap();
        let codec = Codec::new(Arc::new(registry));
        let value = Reordered {
            user_id: "u".into(),
            event_id: "e".into(),
        };
        let bytes = codec.encode(&value).unwrap();
        assert_eq!(bytes[HEADER_LEN..], [2, b'e', 2, b'u']);
        let back: Reordered = codec.decode(&bytes).unwrap();
        assert_eq!((back.event_id, back.user_id), ("e".into(), "u".into()));
    }
}
