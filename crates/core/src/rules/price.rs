//! Price anomalies: an item price far from its category's running level.
//!
//! Prices are compared on a log scale (a price twice the usual is as odd as half of it) against
//! a robust running baseline per category ([`RobustEwma`]); the baseline is updated after the
//! check, with outliers clipped, so a burst of bad prices cannot teach it that they are normal.
//!
//! The baseline is a distribution over *items*, not views: an item counts once per price it is
//! seen with (a bounded cache remembers the last price of up to [`MAX_ITEMS`] items). Weighting
//! by views would make a category look as narrow as its few best sellers, and every rarely
//! viewed item at an ordinary catalogue price an outlier (it did, on generated traffic: seven
//! false alerts in 224,000 events). For the same reason an item seen again at its known price is
//! not re-scored: an alert means "a new price", not "another viewer".

use super::{Finding, RulesConfig, severity};
use crate::anomaly::RobustEwma;
use crate::hash::{U64Build, fnv1a};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Smallest scale of a category's log prices (a category of one price would otherwise make any
/// other price infinitely odd).
const MIN_LOG_SIGMA: f64 = 0.05;

/// Most items whose last price is remembered (later items are scored every time).
pub const MAX_ITEMS: usize = 200_000;

/// The price check's result for one event.
#[derive(Debug, Clone, Copy)]
pub(super) struct PriceZ {
    /// Robust z-score of the log price in its category.
    pub z: f64,
    /// The category's typical price (exp of the baseline location).
    pub typical: f64,
}

/// One baseline per category.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct PriceBaselines {
    categories: HashMap<u64, RobustEwma, U64Build>,
    /// Last price seen per item (as `f64` bits).
    items: HashMap<u64, u64, U64Build>,
}

impl PriceBaselines {
    /// Scores the event's item price against its category (before learning from it), then
    /// learns from it. `None` for events without an item price or category, or while the
    /// category's baseline is warming up.
    pub(super) fn observe(&mut self, ev: &ClickEvent, cfg: &RulesConfig) -> Option<PriceZ> {
        // Item-level prices only; order totals are not prices.
        if !matches!(
            ev.event_type,
            EventType::ProductView
                | EventType::AddToCart
                | EventType::RemoveFromCart
                | EventType::Wishlist
        ) {
            return None;
        }
        let price = ev.price.filter(|p| p.is_finite() && *p > 0.0)?;
        let category = ev.category.as_deref().filter(|c| !c.is_empty())?;
        if let Some(item) = ev.item_id.as_deref().filter(|i| !i.is_empty()) {
            let h = fnv1a(item);
            let room = self.items.len() < MAX_ITEMS;
            match self.items.get_mut(&h) {
                Some(known) if *known == price.to_bits() => return None,
                Some(known) => *known = price.to_bits(),
                None if room => {
                    self.items.insert(h, price.to_bits());
                }
                None => {}
            }
        }
        let key = fnv1a(category);
        let full = self.categories.len() >= cfg.price_max_categories;
        let base = match self.categories.get_mut(&key) {
            Some(b) => b,
            None if full => return None,
            None => self
                .categories
                .entry(key)
                .or_insert_with(|| RobustEwma::new(cfg.price_alpha, cfg.price_min_samples)),
        };
        let x = price.ln();
        let z = base.z(x, MIN_LOG_SIGMA);
        let typical = base.mean().exp();
        base.update(x);
        z.map(|z| PriceZ { z, typical })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.categories.len()
    }
}

/// A finding when the price's |z| reaches `limit` (`price_max_abs_z`, raised by calibration).
pub(super) fn price_anomaly(ev: &ClickEvent, z: Option<PriceZ>, limit: f64) -> Option<Finding> {
    let PriceZ { z, typical } = z?;
    let limit = limit.abs().max(1e-9);
    if z.abs() < limit {
        return None;
    }
    let price = ev.price.unwrap_or_default();
    let currency = ev.currency.as_deref().unwrap_or("");
    Some(Finding {
        alert_type: AlertType::PriceAnomaly,
        severity: severity(Severity::Low, z.abs() / limit),
        score: z.abs(),
        reasons: vec![format!(
            "{} price {price:.2} {currency} of item {} is {:.1} robust sigmas {} the running level \
             of category {} (typical {typical:.2}; limit {limit:.2}).",
            ev.event_type,
            ev.item_id.as_deref().unwrap_or("?"),
            z.abs(),
            if z > 0.0 { "above" } else { "below" },
            ev.category.as_deref().unwrap_or("?"),
        )],
        evidence: vec![ev.event_id.clone()],
        window_start: ev.event_time,
        window_end: ev.event_time,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use clickpath_schema::EventType::*;

    /// A view by user `u{i}` of an item priced `price` in `cat`.
    fn view(i: i64, cat: &str, price: f64) -> ClickEvent {
        let mut e = ev(&format!("e{i}"), ProductView, i * 1_000);
        e.user_id = format!("u{i}");
        e.category = Some(cat.into());
        e.item_id = Some(format!("item-{i}"));
        e.price = Some(price);
        e.currency = Some("EUR".into());
        e
    }

    /// Prices spread by a factor of about 1.5 around 30, deterministic.
    fn usual(i: i64) -> f64 {
        30.0 * [0.7, 0.85, 1.0, 1.2, 1.45][i as usize % 5]
    }

    fn price_alerts(d: &mut Detector, events: &[ClickEvent]) -> Vec<FraudAlert> {
        of(&run(d, events), AlertType::PriceAnomaly)
    }

    #[test]
    fn far_prices_fire_both_ways_once_warm() {
        let mut d = detector();
        let warm: Vec<_> = (0..100).map(|i| view(i, "toys", usual(i))).collect();
        assert!(price_alerts(&mut d, &warm).is_empty());
        let high = price_alerts(&mut d, &[view(100, "toys", 3_000.0)]);
        assert_eq!(high.len(), 1);
        assert!(
            high[0].reasons[0].contains("above the running level of category toys"),
            "{:?}",
            high[0].reasons
        );
        assert_eq!(high[0].evidence_event_ids, vec!["e100"]);
        let low = price_alerts(&mut d, &[view(101, "toys", 0.30)]);
        assert_eq!(low.len(), 1);
        assert!(low[0].reasons[0].contains("below"));
        // The outliers did not shift the baseline: ordinary prices stay quiet.
        let after: Vec<_> = (102..200).map(|i| view(i, "toys", usual(i))).collect();
        assert!(price_alerts(&mut d, &after).is_empty());
    }

    #[test]
    fn near_misses_do_not_fire() {
        let mut d = detector();
        let warm: Vec<_> = (0..100).map(|i| view(i, "toys", usual(i))).collect();
        price_alerts(&mut d, &warm);
        // Twice the usual top price: unusual, not absurd.
        assert!(price_alerts(&mut d, &[view(100, "toys", 90.0)]).is_empty());
        // Absurd price, but in a category still warming up (49 prices).
        let cold: Vec<_> = (200..249).map(|i| view(i, "books", usual(i))).collect();
        price_alerts(&mut d, &cold);
        assert!(price_alerts(&mut d, &[view(300, "books", 3_000.0)]).is_empty());
        // Order totals are not item prices.
        let mut total = view(301, "toys", 3_000.0);
        total.event_type = Purchase;
        assert!(price_alerts(&mut d, &[total]).is_empty());
    }

    #[test]
    fn an_item_is_scored_once_per_price() {
        let mut d = detector();
        let warm: Vec<_> = (0..100).map(|i| view(i, "toys", usual(i))).collect();
        price_alerts(&mut d, &warm);
        let mut odd = view(100, "toys", 3_000.0);
        assert_eq!(price_alerts(&mut d, &[odd.clone()]).len(), 1);
        // Another viewer of the same item at the same price: no new alert.
        odd.user_id = "someone-else".into();
        odd.event_id = "e100b".into();
        assert!(price_alerts(&mut d, &[odd.clone()]).is_empty());
        // The same item at a new absurd price is scored again.
        odd.price = Some(0.01);
        assert_eq!(price_alerts(&mut d, &[odd]).len(), 1);
        // A best seller viewed a thousand times does not narrow the category: an ordinary
        // item four times the usual level stays quiet (about 3 sigma of the item spread).
        let hits: Vec<_> = (0..1_000)
            .map(|i| {
                let mut e = view(1_000 + i, "toys", 30.0);
                e.item_id = Some("best-seller".into());
                e
            })
            .collect();
        price_alerts(&mut d, &hits);
        assert!(price_alerts(&mut d, &[view(5_000, "toys", 120.0)]).is_empty());
    }

    #[test]
    fn category_count_is_capped() {
        let mut d = Detector::new(
            RulesConfig {
                price_max_categories: 3,
                ..RulesConfig::default()
            },
            "v",
        );
        let events: Vec<_> = (0..10).map(|i| view(i, &format!("c{i}"), 10.0)).collect();
        run(&mut d, &events);
        assert_eq!(d.prices.len(), 3);
    }
}
