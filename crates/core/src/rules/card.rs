//! Card testing: many failed payment attempts with distinct cards in a short window, or many distinct
//! cards failing over hours (slow card testing, paced to stay under the short window's thresholds).

use super::{Finding, RulesConfig, human, severity};
use crate::hash::fnv1a;
use clickpath_schema::{AlertType, ClickEvent, EventType, PaymentStatus, Severity};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Most failed payments remembered per user.
pub const MAX_FAILED_PAYMENTS: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
struct FailedPayment {
    time: i64,
    card: Option<u64>,
    event_id: String,
}

/// A user's recent failed payments, oldest first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct CardState {
    failed: VecDeque<FailedPayment>,
    /// Failed payments within the short window at the last event (an anomaly feature).
    recent: usize,
}

impl CardState {
    /// Empties the state as `Default` would, keeping its allocations for the user's next visit.
    pub(super) fn clear(&mut self) {
        let CardState { failed, recent } = self;
        failed.clear();
        *recent = 0;
    }

    /// Failed payments within `card_testing_window_ms` at the last event.
    pub(super) fn failures(&self) -> usize {
        self.recent
    }

    /// Time of the newest failed payment remembered.
    pub(super) fn last_failure(&self) -> Option<i64> {
        self.failed.back().map(|f| f.time)
    }
}

/// Distinct card fingerprints among `failed`.
fn distinct_cards<'a>(failed: impl Iterator<Item = &'a FailedPayment>) -> usize {
    let mut cards: Vec<u64> = failed.filter_map(|f| f.card).collect();
    cards.sort_unstable();
    cards.dedup();
    cards.len()
}

pub(super) fn card_testing(
    state: &mut CardState,
    ev: &ClickEvent,
    cfg: &RulesConfig,
    now: i64,
) -> Option<Finding> {
    let horizon = now.saturating_sub(cfg.card_testing_window_ms);
    let slow_horizon = now.saturating_sub(
        cfg.card_testing_slow_window_ms
            .max(cfg.card_testing_window_ms),
    );
    // Expire on every event, so `failures` (an anomaly feature) stays current.
    while state.failed.front().is_some_and(|f| f.time <= slow_horizon) {
        state.failed.pop_front();
    }
    state.recent = state.failed.iter().filter(|f| f.time > horizon).count();
    let payment = ev.payment.as_ref()?;
    if ev.event_type != EventType::PaymentAttempt || payment.status != PaymentStatus::Failed {
        return None;
    }
    if ev.event_time <= slow_horizon {
        return None;
    }
    state.failed.push_back(FailedPayment {
        time: ev.event_time,
        card: payment.card_fingerprint.as_deref().map(fnv1a),
        event_id: ev.event_id.clone(),
    });
    while state.failed.len() > MAX_FAILED_PAYMENTS {
        state.failed.pop_front();
    }
    state.recent = state.failed.iter().filter(|f| f.time > horizon).count();
    let min_failures = cfg.card_testing_min_failures.max(1) as usize;
    let min_cards = cfg.card_testing_min_cards.max(1) as usize;
    let short_cards = distinct_cards(state.failed.iter().filter(|f| f.time > horizon));
    let (window, failures, cards, min_cards, kind) =
        if state.recent >= min_failures && short_cards >= min_cards {
            (
                cfg.card_testing_window_ms,
                state.recent,
                short_cards,
                min_cards,
                "",
            )
        } else {
            let all = distinct_cards(state.failed.iter());
            let slow_min = cfg.card_testing_slow_min_cards.max(1) as usize;
            if all < slow_min {
                return None;
            }
            let window = cfg.card_testing_slow_window_ms;
            (
                window,
                state.failed.len(),
                all,
                slow_min,
                "slow card testing; ",
            )
        };
    let in_window = state.failed.len() - failures;
    let ratio = cards as f64 / min_cards as f64;
    let skip = failures.saturating_sub(cfg.max_evidence.max(1));
    Some(Finding {
        alert_type: AlertType::CardTesting,
        severity: severity(Severity::High, ratio),
        score: ratio,
        reasons: vec![format!(
            "{failures} failed payment attempts with {cards} distinct card fingerprints within {} \
             ({kind}thresholds: {min_failures} failures and {} cards within {}, or {} cards within \
             {}).",
            human(window),
            cfg.card_testing_min_cards,
            human(cfg.card_testing_window_ms),
            cfg.card_testing_slow_min_cards,
            human(cfg.card_testing_slow_window_ms)
        )],
        evidence: state
            .failed
            .iter()
            .skip(in_window + skip)
            .map(|f| f.event_id.clone())
            .collect(),
        window_start: state
            .failed
            .iter()
            .skip(in_window)
            .map(|f| f.time)
            .min()
            .unwrap_or(now),
        window_end: ev.event_time,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use clickpath_schema::PaymentStatus;

    fn card_alerts(events: &[ClickEvent]) -> Vec<FraudAlert> {
        of(&run(&mut detector(), events), AlertType::CardTesting)
    }

    #[test]
    fn slow_card_testing_over_hours_is_caught() {
        // Ten cards, one every 15 min: never 3 within 10 min.
        let events: Vec<ClickEvent> = (0..10)
            .map(|i| failed(&format!("p{i}"), i * 15 * 60_000, Some(&format!("c{i}"))))
            .collect();
        let alerts = card_alerts(&events);
        assert!(!alerts.is_empty());
        assert!(alerts.iter().all(|a| a.alert_id == alerts[0].alert_id));
        let first = &alerts[0];
        // The 5th distinct card, at 60 min.
        assert_eq!(first.window_end, 4 * 15 * 60_000);
        assert_eq!(first.evidence_event_ids.len(), 5);
        assert!(
            first.reasons[0].contains("slow card testing"),
            "{:?}",
            first.reasons
        );
        // Near miss: 4 cards over the afternoon, or 5 spread over more than 4 hours.
        let four: Vec<ClickEvent> = (0..4)
            .map(|i| failed(&format!("p{i}"), i * 30 * 60_000, Some(&format!("c{i}"))))
            .collect();
        assert!(card_alerts(&four).is_empty());
        let spread: Vec<ClickEvent> = (0..5)
            .map(|i| failed(&format!("p{i}"), i * 61 * 60_000, Some(&format!("c{i}"))))
            .collect();
        assert!(card_alerts(&spread).is_empty());
        // One customer retrying the same card all afternoon is not card testing.
        let retry: Vec<ClickEvent> = (0..10)
            .map(|i| failed(&format!("p{i}"), i * 15 * 60_000, Some("c0")))
            .collect();
        assert!(card_alerts(&retry).is_empty());
    }

    #[test]
    fn card_testing_needs_enough_failures_and_cards() {
        let alerts = card_alerts(&[
            failed("p1", 0, Some("c1")),
            failed("p2", 60_000, Some("c2")),
            failed("p3", 120_000, Some("c3")),
        ]);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.evidence_event_ids, vec!["p1", "p2", "p3"]);
        assert_eq!((a.window_start, a.window_end), (0, 120_000));
        assert_eq!(a.alert_id, "u:CARD_TESTING:0");
        assert!(
            a.reasons[0].contains(
                "3 failed payment attempts with 3 distinct card fingerprints within 10 min"
            ),
            "{:?}",
            a.reasons
        );

        // Near misses: two distinct cards; three failures on the same card; no fingerprints.
        for events in [
            vec![
                failed("p1", 0, Some("c1")),
                failed("p2", 1, Some("c2")),
                failed("p3", 2, Some("c1")),
            ],
            vec![
                failed("p1", 0, Some("c1")),
                failed("p2", 1, Some("c1")),
                failed("p3", 2, Some("c1")),
            ],
            vec![
                failed("p1", 0, None),
                failed("p2", 1, None),
                failed("p3", 2, None),
                failed("p4", 3, Some("c1")),
            ],
        ] {
            assert!(card_alerts(&events).is_empty());
        }
        // Three cards but spread over more than the window.
        assert!(
            card_alerts(&[
                failed("p1", 0, Some("c1")),
                failed("p2", 300_000, Some("c2")),
                failed("p3", 600_000, Some("c3")),
            ])
            .is_empty()
        );
        // Successful payments do not count.
        let mut ok = failed("p3", 2, Some("c3"));
        if let Some(p) = ok.payment.as_mut() {
            p.status = PaymentStatus::Succeeded;
        }
        assert!(
            card_alerts(&[failed("p1", 0, Some("c1")), failed("p2", 1, Some("c2")), ok]).is_empty()
        );
    }

    #[test]
    fn more_cards_escalate_the_same_alert() {
        let events: Vec<_> = (0..12)
            .map(|i| failed(&format!("p{i}"), i * 10_000, Some(&format!("c{i}"))))
            .collect();
        let alerts = card_alerts(&events);
        let sev: Vec<_> = alerts
            .iter()
            .map(|a| (a.alert_id.as_str(), a.severity))
            .collect();
        // 3 cards: High; 5 cards (1.5x): Critical. Nothing in between is repeated.
        assert_eq!(
            sev,
            vec![
                ("u:CARD_TESTING:0", Severity::High),
                ("u:CARD_TESTING:0", Severity::Critical)
            ]
        );
        assert_eq!(alerts[1].evidence_event_ids.len(), 5);
    }
}
