//! Paths: each unit's event types in order, consecutive repeats compressed, and their outcomes.
//!
//! A unit's path is its whole journey's event types with consecutive repeats compressed
//! (`VIEW VIEW CART` is `VIEW CART`), cut to the first `max_len` elements (`truncated` says
//! so). A unit *converted* when its best funnel attempt completed every step.

use super::funnels::{FunnelSpec, best_attempt};
use super::journey::Journey;
use clickpath_schema::{ClickEvent, EventType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSpec {
    /// Longest path kept (longer ones are cut and marked truncated). Default 6.
    pub max_len: usize,
    /// How many paths the top lists keep. Default 10.
    pub top: usize,
}

impl Default for PathSpec {
    fn default() -> Self {
        PathSpec {
            max_len: 6,
            top: 10,
        }
    }
}

/// One unit's compressed path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnitPath {
    /// The event types, repeats compressed, at most `max_len`.
    pub steps: Vec<EventType>,
    /// Whether the path went on beyond `max_len`.
    pub truncated: bool,
}

impl UnitPath {
    /// The path of `events` (already in event-time order).
    pub fn of(events: &[&ClickEvent], max_len: usize) -> Self {
        let mut steps: Vec<EventType> = Vec::new();
        let mut truncated = false;
        for e in events {
            if steps.last() == Some(&e.event_type) {
                continue;
            }
            if steps.len() == max_len {
                truncated = true;
                break;
            }
            steps.push(e.event_type);
        }
        UnitPath { steps, truncated }
    }

    /// `PRODUCT_VIEW > ADD_TO_CART > …`.
    pub fn label(&self) -> String {
        let mut s = self
            .steps
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" > ");
        if self.truncated {
            s.push_str(" > …");
        }
        s
    }
}

/// How many units took one path, and how many of them converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCount {
    /// The path.
    pub path: UnitPath,
    /// Units with this path.
    pub units: u64,
    /// Of those, units that converted.
    pub converted: u64,
}

/// Units moving from one event type to the next at one depth of their paths (a Sankey link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Position of `from` in the path (0 = first event type).
    pub depth: usize,
    /// Event type at `depth`.
    pub from: EventType,
    /// Event type at `depth + 1`; `None` when the path ends (or is cut) at `depth`.
    pub to: Option<EventType>,
    /// Units.
    pub units: u64,
}

/// Paths of a set of journeys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// Units with at least one event.
    pub units: u64,
    /// Units that converted.
    pub converted: u64,
    /// Distinct paths.
    pub distinct_paths: u64,
    /// The most common paths.
    pub top: Vec<PathCount>,
    /// The most common paths of converted units (`units` = converted units on the path).
    pub top_converted: Vec<PathCount>,
    /// The most common paths of units that did not convert.
    pub top_dropped: Vec<PathCount>,
    /// Every transition, by depth, then units (descending).
    pub flows: Vec<Flow>,
}

/// Every distinct path with its counts, most common first (ties by path).
pub fn path_counts(units: &[Journey<'_>], funnel: &FunnelSpec, max_len: usize) -> Vec<PathCount> {
    let n = funnel.steps().len();
    let mut counts: BTreeMap<UnitPath, (u64, u64)> = BTreeMap::new();
    for j in units {
        if j.events.is_empty() {
            continue;
        }
        let converted = best_attempt(funnel, &j.events).is_some_and(|a| a.reached() == n);
        let c = counts.entry(UnitPath::of(&j.events, max_len)).or_default();
        c.0 += 1;
        c.1 += u64::from(converted);
    }
    let mut out: Vec<PathCount> = counts
        .into_iter()
        .map(|(path, (units, converted))| PathCount {
            path,
            units,
            converted,
        })
        .collect();
    // Stable sort: the BTreeMap order (by path) breaks ties.
    out.sort_by_key(|p| std::cmp::Reverse(p.units));
    out
}

/// Top paths, converted versus dropped, and the flows between event types.
pub fn path_report(units: &[Journey<'_>], funnel: &FunnelSpec, spec: &PathSpec) -> PathReport {
    let all = path_counts(units, funnel, spec.max_len);
    let top_of = |pick: &dyn Fn(&PathCount) -> u64| -> Vec<PathCount> {
        let mut v: Vec<PathCount> = all
            .iter()
            .filter(|p| pick(p) > 0)
            .map(|p| PathCount {
                path: p.path.clone(),
                units: pick(p),
                converted: p.converted.min(pick(p)),
            })
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.units));
        v.truncate(spec.top);
        v
    };
    let top_converted = top_of(&|p| p.converted);
    let mut top_dropped = top_of(&|p| p.units - p.converted);
    for p in &mut top_dropped {
        p.converted = 0;
    }
    let mut flows: BTreeMap<(usize, EventType, Option<EventType>), u64> = BTreeMap::new();
    for p in &all {
        let s = &p.path.steps;
        for (d, &from) in s.iter().enumerate() {
            *flows.entry((d, from, s.get(d + 1).copied())).or_default() += p.units;
        }
    }
    let mut flows: Vec<Flow> = flows
        .into_iter()
        .map(|((depth, from, to), units)| Flow {
            depth,
            from,
            to,
            units,
        })
        .collect();
    flows.sort_by(|a, b| a.depth.cmp(&b.depth).then(b.units.cmp(&a.units)));
    PathReport {
        units: all.iter().map(|p| p.units).sum(),
        converted: all.iter().map(|p| p.converted).sum(),
        distinct_paths: all.len() as u64,
        top: all.iter().take(spec.top).cloned().collect(),
        top_converted,
        top_dropped,
        flows,
    }
}
