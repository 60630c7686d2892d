//! Cart stuffing: many adds to cart of items the user never looked at, or absurd quantities
//! held in the cart without a checkout.
//!
//! Two arms. *Unviewed adds*: bots add straight from listings, faster than anyone reads; at least
//! `cart_stuffing_min_unviewed_adds` of them within `cart_stuffing_window_ms`. *Held absurd
//! quantities*: at least `cart_stuffing_min_absurd_adds` adds of `cart_stuffing_absurd_quantity`
//! units or more, the oldest held for `cart_stuffing_hold_ms` while the user stays active (no gap
//! longer than the hold) and never checks out. A wholesale (B2B) buyer adds the same quantities,
//! but checks out within minutes: the checkout clears the held adds. Absurd quantities alone do
//! not tell the two apart, holding them does.

use super::{Finding, RulesConfig, hash_opt, human, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Most viewed items and most flagged adds remembered per user.
pub const MAX_REMEMBERED: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
struct FlaggedAdd {
    time: i64,
    event_id: String,
}

/// A user's recently viewed items, recent unviewed adds and absurd quantities in the cart.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct CartState {
    viewed: VecDeque<u64>,
    unviewed: VecDeque<FlaggedAdd>,
    /// Absurd-quantity adds since the user's last checkout (or last pause longer than the hold).
    held: VecDeque<FlaggedAdd>,
    last_event: Option<i64>,
}

impl CartState {
    /// Empties the state as `Default` would, keeping its allocations for the user's next visit.
    pub(super) fn clear(&mut self) {
        let CartState {
            viewed,
            unviewed,
            held,
            last_event,
        } = self;
        viewed.clear();
        unviewed.clear();
        held.clear();
        *last_event = None;
    }
}

impl CartState {
    /// Adds of unviewed items currently in the window.
    pub(super) fn unviewed_adds(&self) -> usize {
        self.unviewed.len()
    }
}

fn push_bounded(q: &mut VecDeque<FlaggedAdd>, time: i64, ev: &ClickEvent) {
    q.push_back(FlaggedAdd {
        time,
        event_id: ev.event_id.clone(),
    });
    if q.len() > MAX_REMEMBERED {
        q.pop_front();
    }
}

fn evidence(q: &VecDeque<FlaggedAdd>, cfg: &RulesConfig) -> Vec<String> {
    let skip = q.len().saturating_sub(cfg.max_evidence.max(1));
    q.iter().skip(skip).map(|a| a.event_id.clone()).collect()
}

pub(super) fn cart_stuffing(
    state: &mut CartState,
    ev: &ClickEvent,
    cfg: &RulesConfig,
) -> Option<Finding> {
    let t = ev.event_time;
    let horizon = t.saturating_sub(cfg.cart_stuffing_window_ms);
    while state.unviewed.front().is_some_and(|a| a.time <= horizon) {
        state.unviewed.pop_front();
    }
    let hold = cfg.cart_stuffing_hold_ms.max(1);
    // A pause longer than the hold ends it: an abandoned cart is not a held one.
    if state
        .last_event
        .is_some_and(|last| t.saturating_sub(last) > hold)
    {
        state.held.clear();
    }
    state.last_event = Some(state.last_event.map_or(t, |last| last.max(t)));
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
        }
        EventType::BeginCheckout | EventType::PaymentAttempt | EventType::Purchase => {
            state.held.clear();
            return None;
        }
        EventType::AddToCart => {
            if item.is_none_or(|h| !state.viewed.contains(&h)) {
                push_bounded(&mut state.unviewed, t, ev);
                let n = state.unviewed.len();
                let min = cfg.cart_stuffing_min_unviewed_adds.max(1) as usize;
                if n >= min {
                    let ratio = n as f64 / min as f64;
                    return Some(Finding {
                        alert_type: AlertType::CartStuffing,
                        severity: severity(Severity::Medium, ratio),
                        score: ratio,
                        reasons: vec![format!(
                            "{n} ADD_TO_CART of items not viewed first within {} \
                             (threshold {min}).",
                            human(cfg.cart_stuffing_window_ms)
                        )],
                        evidence: evidence(&state.unviewed, cfg),
                        window_start: state.unviewed.front().map_or(t, |a| a.time),
                        window_end: t,
                    });
                }
            }
            if ev
                .quantity
                .is_some_and(|q| q >= cfg.cart_stuffing_absurd_quantity.max(2))
            {
                push_bounded(&mut state.held, t, ev);
            }
        }
        _ => {}
    }
    held_cart(state, t, hold, cfg)
}

/// The held-absurd-quantities arm, judged on every event of the user.
fn held_cart(state: &CartState, t: i64, hold: i64, cfg: &RulesConfig) -> Option<Finding> {
    let n = state.held.len();
    let min = cfg.cart_stuffing_min_absurd_adds.max(1) as usize;
    let since = state.held.front()?.time;
    if n < min || t.saturating_sub(since) < hold {
        return None;
    }
    let ratio = n as f64 / min as f64;
    Some(Finding {
        alert_type: AlertType::CartStuffing,
        severity: severity(Severity::Medium, ratio),
        score: ratio,
        reasons: vec![format!(
            "{n} ADD_TO_CART with quantities of {} or more held for {} without a checkout \
             (thresholds: {min} adds held {}).",
            cfg.cart_stuffing_absurd_quantity.max(2),
            human(t.saturating_sub(since)),
            human(hold)
        )],
        evidence: evidence(&state.held, cfg),
        window_start: since,
        window_end: t,
    })
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

    /// A view and an add of `qty` units of item `i` at `t`.
    fn view_add(i: i64, t: i64, qty: i32) -> [ClickEvent; 2] {
        [
            item(ev(&format!("v{i}"), ProductView, t), &format!("i{i}"), None),
            item(
                ev(&format!("a{i}"), AddToCart, t + 5_000),
                &format!("i{i}"),
                Some(qty),
            ),
        ]
    }

    #[test]
    fn absurd_quantities_held_without_checkout_make_cart_stuffing() {
        // One viewed item every three minutes, 500 units each, never a checkout.
        let events: Vec<_> = (0..10)
            .flat_map(|i| view_add(i, i * 180_000, 500))
            .collect();
        let alerts = cart_alerts(&events);
        assert_eq!(alerts.len(), 1);
        // The first add at 5 s; held 20 min at the first event from 1,205 s on: the view at 1,260 s.
        assert_eq!(alerts[0].window_end, 1_260_000);
        assert_eq!(alerts[0].window_start, 5_000);
        assert_eq!(alerts[0].evidence_event_ids[..3], ["a0", "a1", "a2"]);
        assert!(
            alerts[0].reasons[0].contains("held for 1255 s without a checkout"),
            "{:?}",
            alerts[0].reasons
        );
    }

    #[test]
    fn a_bulk_order_checked_out_is_not_cart_stuffing() {
        // Six items of 20 to 200 units within ten minutes, then a checkout, then more browsing.
        let mut events: Vec<_> = (0..6)
            .flat_map(|i| view_add(i, i * 100_000, 20 + 30 * i as i32))
            .collect();
        let mut checkout = ev("c", BeginCheckout, 700_000);
        checkout.order_value = Some(12_000.0);
        events.push(checkout);
        events.extend((6..20).flat_map(|i| view_add(i, i * 100_000, 1)));
        assert!(cart_alerts(&events).is_empty());
    }

    #[test]
    fn a_cart_left_and_resumed_after_a_pause_is_not_held() {
        // Three absurd adds, an hour away, then more browsing for half an hour.
        let mut events: Vec<_> = (0..3).flat_map(|i| view_add(i, i * 60_000, 100)).collect();
        events.extend((3..20).flat_map(|i| view_add(i, 3_600_000 + i * 100_000, 1)));
        assert!(cart_alerts(&events).is_empty());
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
        // Two absurd quantities of viewed items, held for an hour of browsing.
        let mut two_absurd: Vec<_> = (0..2).flat_map(|i| view_add(i, i * 10_000, 999)).collect();
        two_absurd.extend((2..40).flat_map(|i| view_add(i, i * 90_000, 1)));
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
