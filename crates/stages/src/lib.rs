//! The clickpath stages. Each one is a [`clickpath_runtime::Stage`] with all its logic in `clickpath-core`
//! (or `clickpath-model` for the scorer), so it can be tested without a broker.
//!
//! Topology (every topic keyed by user id):
//! `raw -> cleaning -> clean -> {sessionizer -> sessions, windower -> features -> scorer -> predictions,
//! detector -> alerts}`; records nobody can process go to the dead-letter topic.
#![warn(missing_docs)]

pub mod analytics;
pub mod cleaning;
pub mod detector;
pub mod scorer;
pub mod sessionizer;
pub mod topology;
pub mod windower;

pub use topology::{StageName, run_named};
