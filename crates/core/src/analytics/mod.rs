//! Path analytics over a batch of events: funnels, top paths and decision factors.
//!
//! Everything here is a pure function of a slice of [`ClickEvent`]s, so the same code backs the
//! `clickpath report` command, the analytics stage and the reference tests. The definitions
//! (what "strict", "uniques" or "converted" mean) are written down in `docs/analytics.md`; each
//! submodule repeats the part it implements.
//!
//! - [`journey`]: events grouped per analysis unit (user or session), in event-time order;
//! - [`funnels`]: ordered, strict and any-order funnels with a conversion window, uniques and
//!   totals, drop-off, step timings, per time bucket and per segment;
//! - [`paths`]: compressed paths, top paths, converted-versus-dropped comparison and flows;
//! - [`factors`]: events and properties ranked by their association with conversion;
//! - [`rolling`]: the funnel per time bucket, incrementally, for a streaming stage.

pub mod factors;
pub mod funnels;
pub mod journey;
pub mod paths;
pub mod rolling;
mod stats;

pub use factors::{Factor, FactorKind, FactorSpec, decision_factors, unit_features};
pub use funnels::{
    Attempt, BucketCounts, FunnelCounts, FunnelOrder, FunnelReport, FunnelSpec, Segment,
    SegmentBreakdown, Step, StepTiming, Timed, attempt_from, best_attempt, best_attempt_in,
    funnel_report, totals_attempts, totals_attempts_in,
};
pub use journey::{Journey, Unit, journeys};
pub use paths::{Flow, PathCount, PathReport, PathSpec, UnitPath, path_counts, path_report};
pub use rolling::{BucketAggregate, RollingFunnel};
pub use stats::nearest_rank;

use clickpath_schema::ClickEvent;
use serde::{Deserialize, Serialize};

/// An invalid analytics specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyticsError {
    /// A funnel needs at least two steps to have a conversion.
    #[error("a funnel needs at least 2 steps, got {0}")]
    TooFewSteps(usize),
    /// A step matches no event type at all.
    #[error("funnel step {0:?} matches no event type")]
    EmptyStep(String),
    /// Two steps match the same event type, so an event could fill either; steps must be disjoint.
    #[error(
        "event type {event} belongs to both step {first:?} and step {second:?}; steps must be disjoint"
    )]
    OverlappingSteps {
        /// The shared event type.
        event: String,
        /// The earlier step.
        first: String,
        /// The later step.
        second: String,
    },
    /// The conversion window or the time bucket is not positive.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    /// A step description could not be parsed.
    #[error(
        "cannot parse step {0:?}: expected EVENT_TYPE[|EVENT_TYPE...], e.g. BEGIN_CHECKOUT|PAYMENT_ATTEMPT"
    )]
    BadStep(String),
}

/// Everything one analysis computes, serialisable as one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Number of events analysed.
    pub events: u64,
    /// Number of analysis units (users or sessions).
    pub units: u64,
    /// The funnel.
    pub funnel: FunnelReport,
    /// Paths and their outcomes.
    pub paths: PathReport,
    /// Events and properties ranked by association with conversion.
    pub factors: Vec<Factor>,
}

/// The settings of one analysis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalysisSpec {
    /// The funnel.
    pub funnel: FunnelSpec,
    /// Path settings.
    pub paths: PathSpec,
    /// Decision-factor settings.
    pub factors: FactorSpec,
}

/// Runs the funnel, path and factor analyses over `events` (any order; they are grouped and
/// sorted here).
pub fn analyse(events: &[ClickEvent], spec: &AnalysisSpec) -> Analysis {
    let units = journeys(events, spec.funnel.unit);
    let funnel = funnel_report(&units, &spec.funnel);
    let paths = path_report(&units, &spec.funnel, &spec.paths);
    let factors = decision_factors(&units, &spec.funnel, &spec.factors);
    Analysis {
        events: events.len() as u64,
        units: units.len() as u64,
        funnel,
        paths,
        factors,
    }
}

#[cfg(test)]
mod tests;
