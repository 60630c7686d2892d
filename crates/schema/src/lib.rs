//! The clickpath event contract: Avro schemas, the Rust record types that mirror them, and the
//! Confluent wire codec every stage uses to read and write Kafka records.
//!
//! - [`types`]: `ClickEvent`, `SessionSummary`, `FeatureVector`, `Prediction`, `FraudAlert`,
//!   `DeadLetter` and their parts; they match `schemas/*.avsc` field for field.
//! - [`registry`]: schema ids to schemas. The `.avsc` files and `schemas/registry.json` are
//!   compiled into the binary ([`EmbeddedRegistry`]); ids are stable and old versions stay
//!   registered so old records still decode. Feature `registry-client` adds a client for a
//!   Confluent-compatible registry.
//! - [`feature_values`]: the feature map of a `FeatureVector`, names shared between vectors.
//! - [`codec`]: [`Codec`] encodes `0x00 | schema id (u32 BE) | Avro body` and decodes by resolving
//!   the writer schema against the reader's.
//!
//! This is the bottom of the workspace: it must not depend on any other clickpath crate, nor on
//! Kafka, async runtimes or models.

pub mod codec;
pub mod feature_values;
pub mod registry;
pub mod types;

pub use codec::{AvroRecord, Codec, CodecError};
pub use feature_values::{FeatureNames, FeatureValues};
pub use registry::{EmbeddedRegistry, RegistryError, SchemaRegistry};
pub use types::*;
