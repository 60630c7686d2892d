//! The registry compiled into the binary from `schemas/registry.json` and the `.avsc` files it names.

use super::{RegistryError, SchemaRegistry};
use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

/// `schemas/registry.json`, embedded so the binary needs no checkout at run time.
const SHIPPED_INDEX: &str = include_str!("../../../../schemas/registry.json");

/// Every schema file the index may name, relative to `schemas/`.
///
/// When a schema evolves, copy its old file to `schemas/history/` and add a line here;
/// `tests/registry.rs` fails if a file in `schemas/` is missing from this table.
const SHIPPED_FILES: &[(&str, &str)] = &[
    (
        "click_event.avsc",
        include_str!("../../../../schemas/click_event.avsc"),
    ),
    (
        "session_summary.avsc",
        include_str!("../../../../schemas/session_summary.avsc"),
    ),
    (
        "feature_vector.avsc",
        include_str!("../../../../schemas/feature_vector.avsc"),
    ),
    (
        "prediction.avsc",
        include_str!("../../../../schemas/prediction.avsc"),
    ),
    (
        "fraud_alert.avsc",
        include_str!("../../../../schemas/fraud_alert.avsc"),
    ),
    (
        "dead_letter.avsc",
        include_str!("../../../../schemas/dead_letter.avsc"),
    ),
    (
        "funnel_aggregate.avsc",
        include_str!("../../../../schemas/funnel_aggregate.avsc"),
    ),
    (
        "history/feature_vector.v1.avsc",
        include_str!("../../../../schemas/history/feature_vector.v1.avsc"),
    ),
    (
        "history/fraud_alert.v1.avsc",
        include_str!("../../../../schemas/history/fraud_alert.v1.avsc"),
    ),
    (
        "history/funnel_aggregate.v1.avsc",
        include_str!("../../../../schemas/history/funnel_aggregate.v1.avsc"),
    ),
    (
        "history/prediction.v1.avsc",
        include_str!("../../../../schemas/history/prediction.v1.avsc"),
    ),
    (
        "history/prediction.v2.avsc",
        include_str!("../../../../schemas/history/prediction.v2.avsc"),
    ),
    (
        "history/session_summary.v1.avsc",
        include_str!("../../../../schemas/history/session_summary.v1.avsc"),
    ),
    (
        "history/session_summary.v2.avsc",
        include_str!("../../../../schemas/history/session_summary.v2.avsc"),
    ),
];

/// Layout of `schemas/registry.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    subjects: Vec<IndexSubject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexSubject {
    subject: String,
    versions: Vec<IndexVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexVersion {
    version: u32,
    id: u32,
    file: String,
    /// Rabin fingerprint of the parsing canonical form: proves a published id's schema never changed.
    fingerprint: String,
}

/// One registered schema version.
#[derive(Debug)]
struct Entry {
    subject: String,
    text: String,
    schema: Arc<Schema>,
}

/// An in-memory registry: the shipped schemas ([`EmbeddedRegistry::shipped`]) or any set of
/// schemas registered by hand (tests, tools).
#[derive(Debug, Default)]
pub struct EmbeddedRegistry {
    by_id: HashMap<u32, Entry>,
    /// Subject to its ids, oldest version first.
    subjects: BTreeMap<String, Vec<u32>>,
}

impl EmbeddedRegistry {
    /// An empty registry; add schemas with [`EmbeddedRegistry::register`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The schemas shipped in this binary (`schemas/registry.json`), parsed once per process.
    ///
    /// # Panics
    /// If the embedded index or a schema file is broken. That is a build defect, not bad input:
    /// the crate's tests load the same files, so it cannot reach a release.
    pub fn shipped() -> Arc<Self> {
        static SHIPPED: OnceLock<Arc<EmbeddedRegistry>> = OnceLock::new();
        SHIPPED
            .get_or_init(|| {
                let registry = Self::load(SHIPPED_INDEX, SHIPPED_FILES)
                    .unwrap_or_else(|e| panic!("embedded schema registry is broken: {e}"));
                Arc::new(registry)
            })
            .clone()
    }

    /// Builds a registry from an index in the `schemas/registry.json` format and the files it names.
    ///
    /// Checks that ids are unique, versions count up from 1, every file exists and is named
    /// after its subject, each fingerprint matches its file, and no file is left unused.
    pub fn load(index_json: &str, files: &[(&str, &str)]) -> Result<Self, RegistryError> {
        let index: Index = serde_json::from_str(index_json)
            .map_err(|e| RegistryError::BadIndex(format!("registry.json: {e}")))?;
        let files: HashMap<&str, &str> = files.iter().copied().collect();
        let mut used = Vec::new();
        let mut registry = Self::new();
        for subject in &index.subjects {
            for (n, v) in subject.versions.iter().enumerate() {
                if v.version as usize != n + 1 {
                    return Err(RegistryError::BadIndex(format!(
                        "{}: version {} listed where version {} was expected",
                        subject.subject,
                        v.version,
                        n + 1
                    )));
                }
                let text = files.get(v.file.as_str()).ok_or_else(|| {
                    RegistryError::BadIndex(format!("{} is not an embedded schema file", v.file))
                })?;
                used.push(v.file.as_str());
                let id = v.id;
                registry.register(&subject.subject, id, text)?;
                let actual = fingerprint(&registry.by_id[&id].schema);
                if actual != v.fingerprint {
                    return Err(RegistryError::BadIndex(format!(
                        "{} (id {id}) has fingerprint {actual} but registry.json pins {}: \
                         a published schema must never change, add a new version instead",
                        v.file, v.fingerprint
                    )));
                }
            }
        }
        if let Some(unused) = files.keys().find(|f| !used.contains(f)) {
            return Err(RegistryError::BadIndex(format!(
                "{unused} is embedded but registry.json does not name it"
            )));
        }
        Ok(registry)
    }

    /// Registers `schema_json` as the next version of `subject` under `id`; returns the version (from 1).
    ///
    /// The schema must be a named type whose full name is `subject`, and `id` must be new.
    pub fn register(
        &mut self,
        subject: &str,
        id: u32,
        schema_json: &str,
    ) -> Result<u32, RegistryError> {
        if self.by_id.contains_key(&id) {
            return Err(RegistryError::BadIndex(format!(
                "schema id {id} is used twice"
            )));
        }
        let schema =
            Schema::parse_str(schema_json).map_err(|source| RegistryError::InvalidSchema {
                what: format!("{subject} (id {id})"),
                source,
            })?;
        let full_name = schema.name().map(|n| n.fullname(None));
        if full_name.as_deref() != Some(subject) {
            return Err(RegistryError::BadIndex(format!(
                "schema id {id} is named {full_name:?}, not after its subject {subject:?}"
            )));
        }
        self.by_id.insert(
            id,
            Entry {
                subject: subject.to_owned(),
                text: schema_json.to_owned(),
                schema: Arc::new(schema),
            },
        );
        let ids = self.subjects.entry(subject.to_owned()).or_default();
        ids.push(id);
        Ok(ids.len() as u32)
    }

    /// Registered subjects, sorted.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.subjects.keys().map(String::as_str)
    }

    /// Ids of `subject`'s versions, oldest first.
    pub fn versions(&self, subject: &str) -> Option<&[u32]> {
        self.subjects.get(subject).map(Vec::as_slice)
    }

    /// The subject an id is registered under.
    pub fn subject_of(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(|e| e.subject.as_str())
    }

    /// The schema JSON as registered (what a remote registry is sent).
    pub fn schema_text(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(|e| e.text.as_str())
    }
}

impl SchemaRegistry for EmbeddedRegistry {
    fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        self.by_id
            .get(&id)
            .map(|e| e.schema.clone())
            .ok_or(RegistryError::UnknownId(id))
    }

    fn latest_id(&self, subject: &str) -> Result<u32, RegistryError> {
        self.subjects
            .get(subject)
            .and_then(|ids| ids.last().copied())
            .ok_or_else(|| RegistryError::UnknownSubject(subject.to_owned()))
    }
}

/// Hex Rabin (CRC-64-AVRO) fingerprint of the schema's parsing canonical form, as pinned in
/// `schemas/registry.json`. Docs and defaults do not change it; anything that changes the wire does.
pub fn fingerprint(schema: &Schema) -> String {
    schema.fingerprint::<Rabin>().to_string()
}
