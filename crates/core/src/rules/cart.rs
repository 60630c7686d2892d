//! Cart stuffing: many adds to cart of items the user never looked at, or absurd quantities.

use super::{Finding, RulesConfig, hash_opt, human, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use std::collections::VecDeque;

/// Most viewed items and most flagged adds remembered per user.
pub const MAX_REMEMBERED: usize = 64;

#[derive(Debug)]
struct FlaggedAdd {
    time: i64,
    unviewed: bool,
    absurd: bool,
    event_id: String,
}

/// A user's recently viewed items and recent suspicious adds.
#[derive(Debug, Default)]
pub(super) struct CartState {
    viewed: VecDeque<u64>,
    adds: VecDeque<FlaggedAdd>,
}

impl CartState {
    /// Adds of unviewed items currently in the window.
    pub(super) fn unviewed_adds(&self) -> usize {
        self.adds.iter().filter(|a| a.unviewed).count()
    }
}

pub(super) fn cart_stuffing(
    state: &mut CartState,
    ev: &ClickEvent,
    cfg: &RulesConfig,
) -> Option<Finding> {
    let t = ev.event_time;
    let horizon = t.saturating_sub(cfg.cart_stuffing_window_ms);
    while state.adds.front().is_some_and(|a| a.time <= horizon) {
        state.adds.pop_front();
    }
    let item = hash_opt(ev.item_id.as_deref());
    match ev.event_type {
        EventType::ProductView => {
            if let Some(h) = item
                && !state.viewed.contains(&h)
            {
                state.viewed.push_back(h);
                if state.viewed.len() > MAX_REMEMBERED {
                    state.viewed.pop_front();
                }
            }
            None
        }
        EventType::AddToCart => {
            let unviewed = item.is_none_or(|h| !state.viewed.contains(&h));
            let absurd = ev
                .quantity
                .is_some_and(|q| q >= cfg.cart_stuffing_absurd_quantity.max(2));
            if !unviewed && !absurd {
                return None;
            }
            state.adds.push_back(FlaggedAdd {
                time: t,
                unviewed,
                absurd,
                event_id: ev.event_id.clone(),
            });
            if state.adds.len() > MAX_REMEMBERED {
                state.adds.pop_front();
            }
            let n_unviewed = state.adds.iter().filter(|a| a.unviewed).count();
            let n_absurd = state.adds.iter().filter(|a| a.absurd).count();
            let min_unviewed = cfg.cart_stuffing_min_unviewed_adds.max(1) as usize;
            let min_absurd = cfg.cart_stuffing_min_absurd_adds.max(1) as usize;
            if n_unviewed < min_unviewed && n_absurd < min_absurd {
                return None;
            }
            let ratio =
                (n_unviewed as f64 / min_unviewed as f64).max(n_absurd as f64 / min_absurd as f64);
            let skip = state.adds.len().saturating_sub(cfg.max_evidence.max(1));
            Some(Finding {
                alert_type: AlertType::CartStuffing,
                severity: severity(Severity::Medium, ratio),
                score: ratio,
                reasons: vec![format!(
                    "{n_unviewed} ADD_TO_CART of items not viewed first and {n_absurd} with \
                     quantities of {} or more within {} (thresholds: {min_unviewed} unviewed, \
                     {min_absurd} absurd).",
                    cfg.cart_stuffing_absurd_quantity.max(2),
                    human(cfg.cart_stuffing_window_ms)
                )],
                evidence: state
                    .adds
                    .iter()
                    .skip(skip)
                    .map(|a| a.event_id.clone())
                    .collect(),
                window_start: state.adds.front().map_or(t, |a| a.time),
                window_end: t,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use clickpath_schema::EventType::*;

    fn item(mut e: ClickEvent, item: &str, qty: Option<i32>) -> ClickEvent {
        e.item_id = Some(item.into());
        e.quantity = qty;
        e
    }

    fn cart_alerts(events: &[ClickEvent]) -> Vec<FraudAlert> {
        of(&run(&mut detector(), events), AlertType::CartStuffing)
    }

    #[test]
    fn unviewed_adds_make_cart_stuffing() {
        let adds: Vec<_> = (0..5)
            .map(|i| {
                item(
                    ev(&format!("a{i}"), AddToCart, i * 2_000),
                    &format!("i{i}"),
                    Some(1),
                )
            })
            .collect();
        let alerts = cart_alerts(&adds);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].window_end, 8_000, "fires at the fifth add");
        assert_eq!(
            alerts[0].evidence_event_ids,
            vec!["a0", "a1", "a2", "a3", "a4"]
        );
        assert!(alerts[0].reasons[0].starts_with("5 ADD_TO_CART of items not viewed"));
    }

    #[test]
    fn absurd_quantities_make_cart_stuffing_even_after_views() {
        let mut events = Vec::new();
        for i in 0..3 {
            events.push(item(
                ev(&format!("v{i}"), ProductView, i * 10_000),
                &format!("i{i}"),
                None,
            ));
            events.push(item(
                ev(&format!("a{i}"), AddToCart, i * 10_000 + 5_000),
                &format!("i{i}"),
                Some(500),
            ));
        }
        let alerts = cart_alerts(&events);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].evidence_event_ids, vec!["a0", "a1", "a2"]);
    }

    #[test]
    fn near_misses_do_not_fire() {
        // Four unviewed adds.
        let four: Vec<_> = (0..4)
            .map(|i| {
                item(
                    ev(&format!("a{i}"), AddToCart, i * 1_000),
                    &format!("i{i}"),
                    Some(1),
                )
            })
            .collect();
        // Ten adds, each after a view of that item (an ordinary big basket), quantities 1-2.
        let mut viewed = Vec::new();
        for i in 0..10 {
            viewed.push(item(
                ev(&format!("v{i}"), ProductView, i * 10_000),
                &format!("i{i}"),
                None,
            ));
            viewed.push(item(
                ev(&format!("a{i}"), AddToCart, i * 10_000 + 3_000),
                &format!("i{i}"),
                Some(1 + (i % 2) as i32),
            ));
        }
        // Two absurd quantities of viewed items.
        let mut two_absurd = Vec::new();
        for i in 0..2 {
            two_absurd.push(item(
                ev(&format!("v{i}"), ProductView, i * 10_000),
                &format!("i{i}"),
                None,
            ));
            two_absurd.push(item(
                ev(&format!("a{i}"), AddToCart, i * 10_000 + 3_000),
                &format!("i{i}"),
                Some(999),
            ));
        }
        // Five unviewed adds spread over more than ten minutes.
        let slow: Vec<_> = (0..5)
            .map(|i| {
                item(
                    ev(&format!("a{i}"), AddToCart, i * 200_000),
                    &format!("i{i}"),
                    Some(1),
                )
            })
            .collect();
        for (name, events) in [
            ("four", four),
            ("viewed", viewed),
            ("two_absurd", two_absurd),
            ("slow", slow),
        ] {
            assert!(cart_alerts(&events).is_empty(), "{name}");
        }
    }
}
