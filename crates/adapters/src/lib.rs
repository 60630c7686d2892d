//! clickpath-adapters.
