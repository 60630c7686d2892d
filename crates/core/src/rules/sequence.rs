//! Impossible sequences: a purchase with no checkout or payment attempt before it, where the stream's
//! purchases nearly always have one ([`SequenceMode::Learned`], from the [`Grammar`]), or always
//! ([`SequenceMode::Fixed`], the grammar of the project's generator).

use super::grammar::Grammar;
use super::{Finding, RulesConfig, human};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Most impossible purchases remembered per user (for the severity).
const MAX_IMPOSSIBLE: usize = 16;

/// How [`AlertType::ImpossibleSequence`] judges a purchase without a checkout or payment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceMode {
    /// Suspicious only where at least `sequence_min_coverage` of this stream's purchases have one
    /// (after `sequence_warmup_purchases` purchases): silent on streams without checkout events.
    #[default]
    Learned,
    /// Always suspicious: for streams known to publish every checkout and payment attempt.
    Fixed,
    /// Never judged.
    Off,
}

/// A user's last checkout time and recent impossible purchases.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SequenceState {
    last_checkout: Option<i64>,
    impossible: VecDeque<i64>,
}

impl SequenceState {
    /// Empties the state as `Default` would, keeping its allocations for the user's next visit.
    pub(super) fn clear(&mut self) {
        let SequenceState {
            last_checkout,
            impossible,
        } = self;
        *last_checkout = None;
        impossible.clear();
    }
}

pub(super) fn impossible_sequence(
    state: &mut SequenceState,
    grammar: &mut Grammar,
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
            let had = state
                .last_checkout
                .is_some_and(|c| c >= t.saturating_sub(lookback));
            // Judged against the stream before this purchase is counted.
            let coverage = grammar.precondition_coverage();
            grammar.observe_purchase(had);
            if had {
                return None;
            }
            let on_this_stream = match cfg.sequence_mode {
                SequenceMode::Off => return None,
                SequenceMode::Fixed => String::new(),
                SequenceMode::Learned => match coverage {
                    Some(c) if c >= cfg.sequence_min_coverage => {
                        format!(" On this stream {:.1} % of purchases have one.", 100.0 * c)
                    }
                    _ => return None,
                },
            };
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
                     ({count} such purchases within it).{on_this_stream}",
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

    fn fixed() -> Detector {
        Detector::new(
            RulesConfig {
                sequence_mode: SequenceMode::Fixed,
                ..RulesConfig::default()
            },
            "test",
        )
    }

    /// `n` users who each view, check out and buy (`with_checkout`), or only view and buy.
    fn buyers(n: usize, with_checkout: bool, t0: i64) -> Vec<ClickEvent> {
        let mut out = Vec::new();
        for i in 0..n {
            let t = t0 + i as i64 * 1000;
            let user = format!("b{t0}-{i}");
            let mut add = |id: &str, kind, dt| {
                let mut e = ev(&format!("{user}-{id}"), kind, t + dt);
                e.user_id = user.clone();
                out.push(e);
            };
            add("v", ProductView, 0);
            if with_checkout {
                add("c", BeginCheckout, 100);
            }
            add("p", Purchase, 200);
        }
        out
    }

    #[test]
    fn learned_mode_is_silent_where_the_stream_has_no_checkouts() {
        // A REES46-like stream: views and purchases, never a checkout.
        let alerts = run(&mut detector(), &buyers(1000, false, 0));
        assert!(of(&alerts, AlertType::ImpossibleSequence).is_empty());
    }

    #[test]
    fn learned_mode_flags_the_odd_purchase_where_checkouts_are_the_rule() {
        let mut d = detector();
        let warm = run(&mut d, &buyers(300, true, 0));
        assert!(warm.is_empty(), "{warm:?}");
        let mut buy = ev("odd", Purchase, 10_000_000);
        buy.user_id = "odd".into();
        let alerts = run(&mut d, &[buy]);
        let alerts = of(&alerts, AlertType::ImpossibleSequence);
        assert_eq!(alerts.len(), 1);
        assert!(
            alerts[0].reasons[0].contains("On this stream 100.0 % of purchases have one"),
            "{:?}",
            alerts[0].reasons
        );
        // During the warm-up nothing is judged, even on a stream with checkouts.
        let mut d = detector();
        let mut stream = buyers(50, true, 0);
        let mut early = ev("early", Purchase, 60_000);
        early.user_id = "early".into();
        stream.push(early);
        assert!(run(&mut d, &stream).is_empty());
        // Off: never.
        let mut off = Detector::new(
            RulesConfig {
                sequence_mode: SequenceMode::Off,
                ..RulesConfig::default()
            },
            "test",
        );
        let mut stream = buyers(300, true, 0);
        let mut odd = ev("odd", Purchase, 10_000_000);
        odd.user_id = "odd".into();
        stream.push(odd);
        assert!(run(&mut off, &stream).is_empty());
    }

    #[test]
    fn purchase_without_checkout_is_impossible() {
        let mut buy = ev("buy", Purchase, 10_000);
        buy.order_id = Some("o-1".into());
        let alerts = run(&mut fixed(), &[ev("v", ProductView, 5_000), buy.clone()]);
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
            assert!(run(&mut fixed(), &[before, buy.clone()]).is_empty());
        }
        // A checkout older than the lookback does not count.
        let stale = ev("c", BeginCheckout, 10_000 - 30 * 60 * 1000 - 1);
        assert_eq!(run(&mut fixed(), &[stale, buy]).len(), 1);
    }
}
