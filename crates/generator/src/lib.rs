//! clickpath-generator.
