//! clickpath-testkit.
