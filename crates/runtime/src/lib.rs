//! The Kafka stage runtime of clickpath: the `Stage` trait and the one run loop that consumes, decodes,
//! processes, produces, stores offsets, dead-letters bad records, exports metrics and drains on SIGTERM.
//!
//! Depends on `clickpath-schema` and `clickpath-core`; knows nothing of the concrete stages or of Burn.

pub mod changelog;
pub mod config;
pub mod deadletter;
pub mod handoff;
pub mod health;
pub mod http;
pub mod http_query;
pub mod inputs;
pub mod kafka;
pub mod metrics;
pub mod query;
pub mod runner;
pub mod shutdown;
pub mod stage;
pub mod stall;
pub mod telemetry;
pub mod trace_context;

pub use config::BusConfig;
pub use runner::{RunSummary, RunnerEnv, run_stage};
pub use stage::{Context, Output, RestoreBuffer, Stage, StageError, StageInput, StateChange};
