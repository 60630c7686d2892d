//! Decision factors: events and properties ranked by their association with conversion.
//!
//! Following PostHog's correlation analysis, each unit that entered the funnel is one
//! observation: *converted* (its best attempt completed the funnel) or *dropped*. Its features
//! are read from the events of its best attempt's interval (from the attempt's first event to
//! its last step if it converted, else to the end of the conversion window), so nothing after a
//! purchase explains it:
//!
//! - `event:TYPE` for each event type that is not a funnel step;
//! - `channel=…`, `device=…` (class), `category=…` (top level) and `country=…` properties.
//!
//! For a feature, with `a` converted and `b` dropped units having it and `c`, `d` without, the
//! odds ratio is `(a+½)(d+½) / ((b+½)(c+½))` (Haldane–Anscombe correction, so empty cells stay
//! finite), its confidence interval `exp(ln OR ± z·√(1/(a+½) + 1/(b+½) + 1/(c+½) + 1/(d+½)))`
//! (Woolf), and the lift `(a/(a+b)) / ((a+c)/(a+b+c+d))`. Features present in fewer than
//! `min_support` units are left out. The rest are ranked by [`Factor::strength`], the interval end
//! nearest to 1, so a significant factor comes before any that is not.

use super::funnels::{FunnelSpec, Segment, best_attempt};
use super::journey::Journey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Factor settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FactorSpec {
    /// Minimum number of units having a feature. Default 10.
    pub min_support: u64,
    /// The normal quantile of the interval (1.96 for 95 %).
    pub z: f64,
    /// How many factors to keep. Default 20.
    pub top: usize,
}

impl Default for FactorSpec {
    fn default() -> Self {
        FactorSpec {
            min_support: 10,
            z: 1.96,
            top: 20,
        }
    }
}

/// Whether a factor is an event or a property value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorKind {
    /// The unit did this (non-step) event type.
    Event,
    /// One of the unit's events had this property value.
    Property,
}

/// One feature's association with conversion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// `event:SEARCH`, `channel=email`, ….
    pub name: String,
    /// Event or property.
    pub kind: FactorKind,
    /// Converted units with the feature (`a`).
    pub converted_with: u64,
    /// Dropped units with the feature (`b`).
    pub dropped_with: u64,
    /// Converted units without it (`c`).
    pub converted_without: u64,
    /// Dropped units without it (`d`).
    pub dropped_without: u64,
    /// Corrected odds ratio.
    pub odds_ratio: f64,
    /// Lower end of the confidence interval.
    pub ci_low: f64,
    /// Upper end of the confidence interval.
    pub ci_high: f64,
    /// Conversion rate with the feature over the overall conversion rate.
    pub lift: f64,
}

impl Factor {
    /// The log of the interval's end nearest to 1, signed so that larger means a surer
    /// association in either direction: `ln(ci_low)` above 1, `-ln(ci_high)` below. It is
    /// positive exactly when the factor is significant.
    pub fn strength(&self) -> f64 {
        self.ci_low.ln().max(-self.ci_high.ln())
    }

    /// Whether the interval excludes 1 (no association).
    pub fn significant(&self) -> bool {
        self.ci_low > 1.0 || self.ci_high < 1.0
    }

    fn new(name: String, kind: FactorKind, a: u64, b: u64, c: u64, d: u64, z: f64) -> Self {
        let (af, bf, cf, df) = (
            a as f64 + 0.5,
            b as f64 + 0.5,
            c as f64 + 0.5,
            d as f64 + 0.5,
        );
        let ln_or = (af * df / (bf * cf)).ln();
        let se = (1.0 / af + 1.0 / bf + 1.0 / cf + 1.0 / df).sqrt();
        let total = (a + b + c + d) as f64;
        let base = (a + c) as f64 / total;
        let with = a as f64 / (a + b) as f64;
        Factor {
            name,
            kind,
            converted_with: a,
            dropped_with: b,
            converted_without: c,
            dropped_without: d,
            odds_ratio: ln_or.exp(),
            ci_low: (ln_or - z * se).exp(),
            ci_high: (ln_or + z * se).exp(),
            lift: if base > 0.0 { with / base } else { 0.0 },
        }
    }
}

/// The features of one unit (see the module docs), as `(kind, name)`.
pub fn unit_features(
    funnel: &FunnelSpec,
    j: &Journey<'_>,
) -> Option<(bool, BTreeSet<(bool, String)>)> {
    let n = funnel.steps().len();
    let best = best_attempt(funnel, &j.events)?;
    let converted = best.reached() == n;
    let t0 = best.times[0];
    let end = if converted {
        best.times[n - 1]
    } else {
        t0.saturating_add(funnel.window_ms)
    };
    let mut feats = BTreeSet::new();
    for e in j.events[best.start..]
        .iter()
        .take_while(|e| e.event_time <= end)
    {
        if funnel.step_of(e.event_type).is_none() {
            feats.insert((true, format!("event:{}", e.event_type)));
        }
        let one = [*e];
        for s in Segment::ALL {
            let v = s.value(&one);
            if v != "(none)" {
                feats.insert((false, format!("{}={v}", s.name())));
            }
        }
        if let Some(c) = e.country.as_deref().filter(|c| !c.is_empty()) {
            feats.insert((false, format!("country={c}")));
        }
    }
    Some((converted, feats))
}

/// Events and properties ranked by association with conversion.
pub fn decision_factors(
    units: &[Journey<'_>],
    funnel: &FunnelSpec,
    spec: &FactorSpec,
) -> Vec<Factor> {
    let (mut conv, mut drop) = (0u64, 0u64);
    let mut with: BTreeMap<(bool, String), (u64, u64)> = BTreeMap::new();
    for j in units {
        let Some((converted, feats)) = unit_features(funnel, j) else {
            continue;
        };
        if converted {
            conv += 1;
        } else {
            drop += 1;
        }
        for f in feats {
            let c = with.entry(f).or_default();
            if converted {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
    }
    let mut out: Vec<Factor> = with
        .into_iter()
        .filter(|(_, (a, b))| a + b >= spec.min_support)
        .map(|((is_event, name), (a, b))| {
            let kind = if is_event {
                FactorKind::Event
            } else {
                FactorKind::Property
            };
            Factor::new(name, kind, a, b, conv - a, drop - b, spec.z)
        })
        .collect();
    // Rank by the confidence bound nearest to "no association": a factor seen in few units has a
    // wide interval and sinks, however extreme its (corrected) point estimate.
    out.sort_by(|x, y| {
        y.strength()
            .total_cmp(&x.strength())
            .then_with(|| x.name.cmp(&y.name))
    });
    out.truncate(spec.top);
    out
}
