//! The `clickpath` command as a library: one module per command (its `Args` and `run`), and the
//! pieces they share (producing, collecting, running stages). Integration tests and
//! `clickpath-lab` drive the same code as the binary.

pub mod app;
pub mod collect;
pub mod demo;
pub mod demo_quality;
pub mod evaluate;
pub mod generate;
pub mod pipeline;
pub mod produce;
pub mod replay;
pub mod replay_dead_letters;
pub mod run_stage;
pub mod tail;
pub mod topics;
pub mod train;
pub mod validate;
