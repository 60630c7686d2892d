//! Where writer schemas come from: a schema id on the wire names a schema in a registry.
//!
//! [`EmbeddedRegistry`] (the default) serves the schemas compiled into the binary from
//! `schemas/registry.json`; with the `registry-client` feature, `ConfluentRegistryClient` talks
//! to a Confluent-compatible REST registry instead.

mod embedded;

#[cfg(feature = "registry-client")]
mod confluent;

pub use embedded::{EmbeddedRegistry, fingerprint};

#[cfg(feature = "registry-client")]
pub use confluent::ConfluentRegistryClient;

use apache_avro::Schema;
use std::sync::Arc;

/// A source of Avro schemas keyed by the ids written in the Confluent wire header.
///
/// Subjects are record full names (e.g. `io.clickpath.ClickEvent`), Confluent's
/// `RecordNameStrategy`: topic names are configurable, so `<topic>-value` subjects would not be stable.
pub trait SchemaRegistry: Send + Sync {
    /// The schema registered under `id`. Unknown ids give [`RegistryError::UnknownId`].
    fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError>;

    /// The id of the newest version of `subject`, the one writers use.
    fn latest_id(&self, subject: &str) -> Result<u32, RegistryError>;
}

/// Why a registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No schema has this id.
    #[error("no schema is registered with id {0}")]
    UnknownId(u32),
    /// No schema is registered under this subject.
    #[error("no schema is registered under subject {0:?}")]
    UnknownSubject(String),
    /// A schema text is not a valid Avro schema.
    #[error("schema {what} is not valid Avro: {source}")]
    InvalidSchema {
        /// Which schema (file name, id or subject).
        what: String,
        /// The parser's complaint.
        #[source]
        source: apache_avro::Error,
    },
    /// The registry's own index is inconsistent (duplicate id, missing file, changed schema, ...).
    #[error("schema registry index is inconsistent: {0}")]
    BadIndex(String),
    /// The remote registry could not be reached or answered with an unexpected status.
    #[error("schema registry request failed: {0}")]
    Transport(String),
    /// The remote registry answered with a body this client does not understand.
    #[error("schema registry sent an unexpected response: {0}")]
    BadResponse(String),
}
