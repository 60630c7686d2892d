//! Card testing: many failed payment attempts with distinct cards in a short window.

use super::{Finding, RulesConfig, human, severity};
use crate::hash::fnv1a;
use clickpath_schema::{AlertType, ClickEvent, EventType, PaymentStatus, Severity};
use std::collections::VecDeque;

/// Most failed payments remembered per user.
pub const MAX_FAILED_PAYMENTS: usize = 64;

#[derive(Debug)]
struct FailedPayment {
    time: i64,
    card: Option<u64>,
    event_id: String,
}

/// A user's recent failed payments, oldest first.
#[derive(Debug, Default)]
pub(super) struct CardState {
    failed: VecDeque<FailedPayment>,
}

impl CardState {
    /// Failed payments currently remembered.
    pub(super) fn failures(&self) -> usize {
        self.failed.len()
    }
}

pub(super) fn card_testing(
    state: &mut CardState,
    ev: &ClickEvent,
    cfg: &RulesConfig,
    now: i64,
) -> Option<Finding> {
    let horizon = now.saturating_sub(cfg.card_testing_window_ms);
    // Expire on every event, so `failures` (an anomaly feature) stays current.
    while state.failed.front().is_some_and(|f| f.time <= horizon) {
        state.failed.pop_front();
    }
    let payment = ev.payment.as_ref()?;
    if ev.event_type != EventType::PaymentAttempt || payment.status != PaymentStatus::Failed {
        return None;
    }
    if ev.event_time <= horizon {
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
    let failures = state.failed.len();
    let mut cards: Vec<u64> = state.failed.iter().filter_map(|f| f.card).collect();
    cards.sort_unstable();
    cards.dedup();
    let min_failures = cfg.card_testing_min_failures.max(1) as usize;
    let min_cards = cfg.card_testing_min_cards.max(1) as usize;
    if failures < min_failures || cards.len() < min_cards {
        return None;
    }
    let ratio = cards.len() as f64 / min_cards as f64;
    let skip = failures.saturating_sub(cfg.max_evidence.max(1));
    Some(Finding {
        alert_type: AlertType::CardTesting,
        severity: severity(Severity::High, ratio),
        score: ratio,
        reasons: vec![format!(
            "{failures} failed payment attempts with {} distinct card fingerprints within {} \
             (thresholds: {min_failures} failures, {min_cards} cards).",
            cards.len(),
            human(cfg.card_testing_window_ms)
        )],
        evidence: state
            .failed
            .iter()
            .skip(skip)
            .map(|f| f.event_id.clone())
            .collect(),
        window_start: state.failed.iter().map(|f| f.time).min().unwrap_or(now),
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
