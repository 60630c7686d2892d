//! Impossible sequences: a purchase with no checkout or payment attempt before it.

use super::{Finding, RulesConfig, human};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use std::collections::VecDeque;

/// Most impossible purchases remembered per user (for the severity).
const MAX_IMPOSSIBLE: usize = 16;

/// A user's last checkout time and recent impossible purchases.
#[derive(Debug, Default)]
pub(super) struct SequenceState {
    last_checkout: Option<i64>,
    impossible: VecDeque<i64>,
}

pub(super) fn impossible_sequence(
    state: &mut SequenceState,
    ev: &ClickEvent,
    cfg: &RulesConfig,
) -> Option<Finding> {
    let t = ev.event_time;
    let lookback = cfg.impossible_sequence_lookback_ms;
    match ev.event_type {
        EventType::BeginCheckout | EventType::PaymentAttempt => {
            state.last_checkout = Some(state.last_checkout.map_or(t, |c| c.max(t)));
            None
        }
        EventType::Purchase => {
            if state
                .last_checkout
                .is_some_and(|c| c >= t.saturating_sub(lookback))
            {
                return None;
            }
            state.impossible.push_back(t);
            let horizon = t.saturating_sub(lookback);
            while state.impossible.front().is_some_and(|&x| x < horizon)
                || state.impossible.len() > MAX_IMPOSSIBLE
            {
                state.impossible.pop_front();
            }
            let count = state.impossible.len();
            let order = ev
                .order_id
                .as_deref()
                .map(|o| format!(" (order {o})"))
                .unwrap_or_default();
            Some(Finding {
                alert_type: AlertType::ImpossibleSequence,
                // One is odd (a lost event?); a repeat is a pattern.
                severity: match count {
                    1 => Severity::Medium,
                    2 | 3 => Severity::High,
                    _ => Severity::Critical,
                },
                score: count as f64,
                reasons: vec![format!(
                    "PURCHASE{order} with no BEGIN_CHECKOUT or PAYMENT_ATTEMPT in the previous {} \
                     ({count} such purchases within it).",
                    human(lookback)
                )],
                // The purchase alone is the evidence.
                window_start: t,
                window_end: t,
                evidence: vec![ev.event_id.clone()],
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

    #[test]
    fn purchase_without_checkout_is_impossible() {
        let mut buy = ev("buy", Purchase, 10_000);
        buy.order_id = Some("o-1".into());
        let alerts = run(&mut detector(), &[ev("v", ProductView, 5_000), buy.clone()]);
        let alerts = of(&alerts, AlertType::ImpossibleSequence);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.evidence_event_ids, vec!["buy"]);
        assert_eq!((a.window_start, a.window_end), (10_000, 10_000));
        assert_eq!(a.alert_id, "u:IMPOSSIBLE_SEQUENCE:10000");
        assert_eq!(a.severity, Severity::Medium);
        assert!(a.reasons[0].contains("(order o-1)"), "{:?}", a.reasons);
        assert!(a.reasons[0].contains("30 min"), "{:?}", a.reasons);

        // Near misses: checkout or payment attempt within the lookback.
        for before in [ev("c", BeginCheckout, 1_000), failed("c", 1_000, Some("x"))] {
            assert!(run(&mut detector(), &[before, buy.clone()]).is_empty());
        }
        // A checkout older than the lookback does not count.
        let stale = ev("c", BeginCheckout, 10_000 - 30 * 60 * 1000 - 1);
        assert_eq!(run(&mut detector(), &[stale, buy]).len(), 1);
    }
}
