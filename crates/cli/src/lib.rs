//! The `clickpath` command as a library, so integration tests drive the same code as the binary.

pub mod bench;
pub mod bench_restore;
pub mod bench_scorer;
pub mod chaos;
pub mod collect;
pub mod demo;
pub mod evaluate;
pub mod evaluate_detector;
pub mod generate;
pub mod pipeline;
pub mod produce;
pub mod replay;
pub mod report;
pub mod train;
