//! Client for a Confluent-compatible schema registry REST API (feature `registry-client`).
//!
//! Plain `http://` only: ureq is built without TLS to keep the dependency tree small.

use super::{EmbeddedRegistry, RegistryError, SchemaRegistry};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How long an id the registry did not know is answered from the cache, so a burst of garbage
/// records does not become a burst of HTTP requests. Ids registered meanwhile show up after it.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(30);

/// At most this many unknown ids are remembered (the cache is cleared when full).
const UNKNOWN_ID_CAP: usize = 1024;

/// Default timeout of one HTTP request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`SchemaRegistry`] backed by a Confluent-compatible REST registry.
///
/// - [`SchemaRegistry::schema`] is `GET /schemas/ids/{id}`, cached forever (ids are immutable).
/// - [`SchemaRegistry::latest_id`] registers this binary's newest local schema of the subject with
///   `POST /subjects/{subject}/versions` and returns the id the registry assigns (an existing id
///   when the schema is already registered), cached. The reader schema is therefore always one
///   that matches the Rust type, even if another producer registered something newer.
pub struct ConfluentRegistryClient {
    base_url: String,
    agent: ureq::Agent,
    local: Arc<EmbeddedRegistry>,
    by_id: RwLock<HashMap<u32, Arc<Schema>>>,
    by_subject: RwLock<HashMap<String, u32>>,
    unknown: RwLock<HashMap<u32, Instant>>,
}

impl std::fmt::Debug for ConfluentRegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfluentRegistryClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Serialize)]
struct RegisterRequest<'a> {
    schema: &'a str,
}

#[derive(Deserialize)]
struct RegisterResponse {
    id: u32,
}

impl ConfluentRegistryClient {
    /// A client for the registry at `base_url` (e.g. `http://localhost:8081`) that registers the
    /// schemas shipped in this binary, with a 10 s request timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::with_local(base_url, EmbeddedRegistry::shipped(), DEFAULT_TIMEOUT)
    }

    /// A client that registers the newest schemas of `local` and gives each request `timeout`.
    pub fn with_local(
        base_url: impl Into<String>,
        local: Arc<EmbeddedRegistry>,
        timeout: Duration,
    ) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        ConfluentRegistryClient {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            agent,
            local,
            by_id: RwLock::default(),
            by_subject: RwLock::default(),
            unknown: RwLock::default(),
        }
    }

    /// Registers `schema_json` under `subject` and returns its id (idempotent on the registry side).
    pub fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let url = format!(
            "{}/subjects/{}/versions",
            self.base_url,
            percent_encode(subject)
        );
        let mut response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send_json(RegisterRequest {
                schema: schema_json,
            })
            .map_err(|e| transport(&url, e))?;
        let body: RegisterResponse = response
            .body_mut()
            .read_json()
            .map_err(|e| RegistryError::BadResponse(format!("{url}: {e}")))?;
        Ok(body.id)
    }

    fn fetch(&self, id: u32) -> Result<Schema, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base_url);
        let mut response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(404)) => return Err(RegistryError::UnknownId(id)),
            Err(e) => return Err(transport(&url, e)),
        };
        let body: SchemaResponse = response
            .body_mut()
            .read_json()
            .map_err(|e| RegistryError::BadResponse(format!("{url}: {e}")))?;
        Schema::parse_str(&body.schema).map_err(|source| RegistryError::InvalidSchema {
            what: format!("id {id} from {url}"),
            source,
        })
    }

    fn recently_unknown(&self, id: u32) -> bool {
        read(&self.unknown)
            .get(&id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_ID_TTL)
    }

    fn remember_unknown(&self, id: u32) {
        let mut unknown = write(&self.unknown);
        if unknown.len() >= UNKNOWN_ID_CAP {
            unknown.clear();
        }
        unknown.insert(id, Instant::now());
    }
}

impl SchemaRegistry for ConfluentRegistryClient {
    fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = read(&self.by_id).get(&id) {
            return Ok(s.clone());
        }
        if self.recently_unknown(id) {
            return Err(RegistryError::UnknownId(id));
        }
        match self.fetch(id) {
            Ok(schema) => Ok(write(&self.by_id)
                .entry(id)
                .or_insert_with(|| Arc::new(schema))
                .clone()),
            Err(RegistryError::UnknownId(id)) => {
                self.remember_unknown(id);
                Err(RegistryError::UnknownId(id))
            }
            Err(e) => Err(e),
        }
    }

    fn latest_id(&self, subject: &str) -> Result<u32, RegistryError> {
        if let Some(id) = read(&self.by_subject).get(subject) {
            return Ok(*id);
        }
        let local_id = self.local.latest_id(subject)?;
        let text = self
            .local
            .schema_text(local_id)
            .ok_or(RegistryError::UnknownId(local_id))?;
        let id = self.register(subject, text)?;
        write(&self.by_subject).insert(subject.to_owned(), id);
        Ok(id)
    }
}

fn transport(url: &str, e: ureq::Error) -> RegistryError {
    match e {
        ureq::Error::StatusCode(code) => {
            RegistryError::Transport(format!("HTTP {code} from {url}"))
        }
        other => RegistryError::Transport(format!("{url}: {other}")),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (subjects may hold any text).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(
            percent_encode("io.clickpath.ClickEvent"),
            "io.clickpath.ClickEvent"
        );
        assert_eq!(percent_encode("a b/c-value"), "a%20b%2Fc-value");
    }
}
