//! Why a record could not be encoded or decoded.

use crate::registry::RegistryError;

/// Errors of [`Codec`](super::Codec). Every decode error means the input is bad (or its schema
/// unknown), so the run loop dead-letters the record; [`CodecError::kind`] names it for headers.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload has no bytes at all (e.g. a tombstone).
    #[error("empty payload")]
    Empty,
    /// The first byte is not the Confluent magic byte 0: not a framed Avro record.
    #[error("wrong magic byte 0x{0:02x}, expected 0x00")]
    WrongMagic(u8),
    /// Fewer than the 5 header bytes (magic + schema id); holds the payload length.
    #[error("truncated header: {0} bytes, need 5")]
    TruncatedHeader(usize),
    /// The header names a schema id that the registry does not know.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// The writer schema is a different record than the one asked for (e.g. a `FraudAlert` read
    /// as a `ClickEvent`): resolving them field by field could silently succeed, so it is refused.
    #[error("schema id {id} is {found}, expected {expected}")]
    WrongRecord {
        /// The writer schema id from the header.
        id: u32,
        /// Full name of the record the caller asked for.
        expected: &'static str,
        /// Full name of the writer schema.
        found: String,
    },
    /// The writer schema cannot be used by this codec (a recursive or broken named reference).
    #[error("schema id {id} is not supported: {reason}")]
    UnsupportedSchema {
        /// The schema id.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The Avro body ends before the writer schema says it should.
    #[error("truncated body: {0}")]
    TruncatedBody(String),
    /// The Avro body does not decode with the writer schema (bad lengths, indexes, UTF-8,
    /// trailing bytes) or does not fit the Rust type.
    #[error("bad body: {0}")]
    BadBody(String),
    /// The writer schema cannot be resolved against the reader schema (incompatible evolution).
    #[error("cannot resolve writer schema {writer_id} against reader schema {reader_id}: {source}")]
    Resolution {
        /// Schema id the record was written with.
        writer_id: u32,
        /// Schema id of the type it is read into.
        reader_id: u32,
        /// What apache-avro reported.
        #[source]
        source: apache_avro::Error,
    },
    /// The value does not fit its own schema (a bug: the Rust type and the `.avsc` disagree).
    #[error("cannot encode {record}: {source}")]
    Encode {
        /// Full name of the record type.
        record: &'static str,
        /// What apache-avro reported.
        #[source]
        source: apache_avro::Error,
    },
    /// The value's record fields do not match its schema's: missing, repeated, skipped or unknown
    /// fields (a bug: the Rust type and the `.avsc` disagree).
    #[error("cannot encode {record}: {reason}")]
    EncodeFields {
        /// Full name of the record type.
        record: &'static str,
        /// Which field, and what is wrong with it.
        reason: String,
    },
    /// The schema registry failed for another reason than an unknown id (network, bad schema).
    #[error(transparent)]
    Registry(RegistryError),
}

impl CodecError {
    /// Short, stable, machine-readable name, e.g. for a dead-letter `error_kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Empty => "empty",
            CodecError::WrongMagic(_) => "wrong_magic",
            CodecError::TruncatedHeader(_) => "truncated_header",
            CodecError::UnknownSchemaId(_) => "unknown_schema_id",
            CodecError::WrongRecord { .. } => "wrong_record",
            CodecError::UnsupportedSchema { .. } => "unsupported_schema",
            CodecError::TruncatedBody(_) => "truncated_body",
            CodecError::BadBody(_) => "bad_body",
            CodecError::Resolution { .. } => "schema_resolution",
            CodecError::Encode { .. } | CodecError::EncodeFields { .. } => "encode",
            CodecError::Registry(_) => "registry",
        }
    }

    /// Whether retrying the same bytes later could succeed (the registry was unreachable);
    /// every other error is a property of the record and should be dead-lettered.
    pub fn is_transient(&self) -> bool {
        matches!(self, CodecError::Registry(RegistryError::Transport(_)))
    }
}

impl From<RegistryError> for CodecError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownId(id) => CodecError::UnknownSchemaId(id),
            other => CodecError::Registry(other),
        }
    }
}
