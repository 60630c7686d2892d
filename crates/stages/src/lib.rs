//! The clickpath stages. Each one is a [`clickpath_runtime::Stage`] with all its logic in `clickpath-core`
//! (or `clickpath-model` for the scorer), so it can be tested without a broker. Their configuration, and
//! the whole configuration of a clickpath process, is [`config`]; [`topology`] says which stage reads what.
//!
//! Topology (every topic keyed by user id, except analytics rows, keyed by bucket and segment):
//! `raw -> cleaning -> clean -> {sessionizer -> sessions, windower -> features -> scorer -> predictions,
//! detector (clean + predictions) -> alerts, analytics -> analytics}`; records nobody can process go to the
//! dead-letter topic, events beyond the sessionizer's allowed lateness to the late-events topic.

pub mod analytics;
pub mod chain;
pub mod cleaning;
pub mod config;
pub mod detector;
pub mod scorer;
pub mod sessionizer;
pub mod topology;
pub mod windower;

pub use config::ClickpathConfig;
pub use topology::{StageName, run_chain, run_named};
