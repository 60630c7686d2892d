//! Confluent-framed Avro: `0x00`, the writer schema id as a big-endian `u32`, then the Avro
//! binary body (no container file).
//!
//! Decoding always looks up the writer schema named by the header and resolves it against the
//! reader schema (the newest version of the type's subject), so records written by older or newer
//! producers decode as long as the evolution is compatible.

mod direct;
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
    /// Without named references: for the serde writer, the body pre-check and the direct decoder.
    inlined: Schema,
    /// Whether [`direct`] can read bodies of this schema (it reads every type our schemas use).
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
            direct: direct::supports(&inlined),
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
    pub fn encode_into<T: AvroRecord>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let schema = self.latest::<T>()?;
        let start = out.len();
        framing::write_header(schema.id, out);
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
        precheck::check_body(&writer.inlined, body).map_err(|fault| match fault {
            BodyFault::Truncated(m) => CodecError::TruncatedBody(m),
            BodyFault::Invalid(m) => CodecError::BadBody(m),
        })?;
        if writer.id == reader.id && writer.direct {
            // Hot path: no resolution needed, read straight into T.
            return direct::from_body(&writer.inlined, body).map_err(|e| CodecError::BadBody(e.0));
        }
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

/// Cache locks hold plain maps that no panic can leave half-written, so poisoning is ignored.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
