//! clickpath-core: the pure domain logic behind clickpath's stages.
//!
//! Every stage's per-event decision lives here, as plain synchronous code over the record types of
//! [`clickpath_schema`]: cleaning ([`validate`], [`dedupe`]), sessions ([`session`], [`funnel`]),
//! behaviour features ([`features`]) and fraud/bot rules ([`rules`]). The same code runs online
//! (inside the Kafka stages) and offline (training data, reference outputs), so both agree by
//! construction.
//!
//! This crate must not depend on Kafka, an async runtime or Burn; it is meant to be cheap per
//! event (millions of events per second) and bounded in memory: every per-user structure is
//! evicted by an event-time watermark and every buffer has a cap.

pub mod analytics;
pub mod anomaly;
pub mod dedupe;
pub mod features;
pub mod funnel;
pub mod hash;
pub mod rules;
pub mod session;
pub mod state_codec;
pub mod time;
pub mod validate;

pub use dedupe::Deduper;
pub use features::{FeatureSpec, FeatureWindower};
pub use funnel::{compress_path, funnel_stage};
pub use rules::{Detector, RulesConfig};
pub use session::{
    OpenSession, PathView, SessionConfig, Sessionizer, UserState, assign_sessions, session_key,
};
pub use validate::{RejectKind, Rejection, ValidationConfig, validate_and_normalise};
