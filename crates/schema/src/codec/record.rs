//! Which Avro record each Rust type is.

use crate::types::{
    ClickEvent, DeadLetter, FeatureVector, FraudAlert, FunnelAggregate, Prediction, SessionSummary,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A top-level record type with a schema in the registry.
pub trait AvroRecord: Serialize + DeserializeOwned {
    /// Full name of the Avro record (`namespace.name`); also its registry subject.
    const FULL_NAME: &'static str;
}

impl AvroRecord for ClickEvent {
    const FULL_NAME: &'static str = "io.clickpath.ClickEvent";
}

impl AvroRecord for SessionSummary {
    const FULL_NAME: &'static str = "io.clickpath.SessionSummary";
}

impl AvroRecord for FeatureVector {
    const FULL_NAME: &'static str = "io.clickpath.FeatureVector";
}

impl AvroRecord for Prediction {
    const FULL_NAME: &'static str = "io.clickpath.Prediction";
}

impl AvroRecord for FraudAlert {
    const FULL_NAME: &'static str = "io.clickpath.FraudAlert";
}

impl AvroRecord for DeadLetter {
    const FULL_NAME: &'static str = "io.clickpath.DeadLetter";
}

impl AvroRecord for FunnelAggregate {
    const FULL_NAME: &'static str = "io.clickpath.FunnelAggregate";
}
