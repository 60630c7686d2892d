//! Card-testing rings: failed payments with distinct cards from several accounts on one IP prefix,
//! each account too quiet for the per-user rule (one or two cards). When a prefix has
//! `ring_min_cards` distinct failed cards from `ring_min_accounts` accounts within `ring_window_ms`,
//! every account of the ring gets a `CARD_TESTING` alert, including those that finished earlier.
//!
//! State: per IP prefix with recent failed payments, at most [`MAX_PER_PREFIX`] of them; prefixes are
//! dropped once their newest failure is older than the window.

use super::{Finding, RulesConfig, human, severity};
use crate::hash::{U64Build, fnv1a};
use clickpath_schema::{AlertType, ClickEvent, EventType, PaymentStatus, Severity};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Most failed payments remembered per IP prefix.
pub const MAX_PER_PREFIX: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
struct RingFailure {
    time: i64,
    user: Box<str>,
    card: u64,
    event_id: Box<str>,
}

/// Recent failed payments per IP prefix.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Rings {
    by_prefix: HashMap<u64, VecDeque<RingFailure>, U64Build>,
}

impl Rings {
    /// Folds `ev` in; when it completes a ring, the ring's accounts and the finding each gets.
    /// `watermark`: the partition's newest event time; a prefix idle past the ring window at it
    /// starts empty, as if evicted already ([`Rings::evict`]).
    pub(super) fn observe(
        &mut self,
        ev: &ClickEvent,
        cfg: &RulesConfig,
        watermark: i64,
    ) -> Option<(Vec<String>, Finding)> {
        let payment = ev.payment.as_ref()?;
        if ev.event_type != EventType::PaymentAttempt || payment.status != PaymentStatus::Failed {
            return None;
        }
        let card = fnv1a(
            payment
                .card_fingerprint
                .as_deref()
                .filter(|c| !c.is_empty())?,
        );
        let prefix = fnv1a(ev.ip_prefix_hash.as_deref().filter(|p| !p.is_empty())?);
        let failures = self.by_prefix.entry(prefix).or_default();
        if failures
            .back()
            .is_some_and(|f| f.time.saturating_add(cfg.ring_window_ms) <= watermark)
        {
            failures.clear();
        }
        let t = ev.event_time;
        failures.push_back(RingFailure {
            time: t,
            user: ev.user_id.as_str().into(),
            card,
            event_id: ev.event_id.as_str().into(),
        });
        let horizon = t.saturating_sub(cfg.ring_window_ms);
        failures.retain(|f| f.time > horizon);
        while failures.len() > MAX_PER_PREFIX {
            failures.pop_front();
        }
        let mut cards: Vec<u64> = failures.iter().map(|f| f.card).collect();
        cards.sort_unstable();
        cards.dedup();
        let mut users: Vec<&str> = failures.iter().map(|f| &*f.user).collect();
        users.sort_unstable();
        users.dedup();
        let (min_cards, min_accounts) = (
            cfg.ring_min_cards.max(1) as usize,
            cfg.ring_min_accounts.max(2) as usize,
        );
        if cards.len() < min_cards || users.len() < min_accounts {
            return None;
        }
        let ratio = cards.len() as f64 / min_cards as f64;
        let skip = failures.len().saturating_sub(cfg.max_evidence.max(1));
        let finding = Finding {
            alert_type: AlertType::CardTesting,
            severity: severity(Severity::High, ratio),
            score: ratio,
            reasons: vec![format!(
                "Card-testing ring: {} accounts on one IP prefix failed {} distinct cards within {} \
                 (thresholds: {min_cards} cards, {min_accounts} accounts).",
                users.len(),
                cards.len(),
                human(cfg.ring_window_ms)
            )],
            evidence: failures
                .iter()
                .skip(skip)
                .map(|f| f.event_id.to_string())
                .collect(),
            window_start: failures.front().map_or(t, |f| f.time),
            window_end: t,
        };
        Some((users.into_iter().map(String::from).collect(), finding))
    }

    /// Drops prefixes whose newest failure is older than the window at `watermark_ms`.
    pub(super) fn evict(&mut self, watermark_ms: i64, window_ms: i64) {
        self.by_prefix.retain(|_, f| {
            f.back()
                .is_some_and(|x| x.time.saturating_add(window_ms) > watermark_ms)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;

    /// A failed payment of `user` with `card` from IP prefix `ip` at `t`.
    fn fail(user: &str, card: &str, ip: &str, t: i64) -> ClickEvent {
        let mut e = failed(&format!("{user}-{card}"), t, Some(card));
        e.user_id = user.into();
        e.ip_prefix_hash = Some(ip.into());
        e
    }

    #[test]
    fn a_ring_alerts_every_account_including_earlier_ones() {
        let mut d = detector();
        let mut events = Vec::new();
        // Six accounts, one card each, five minutes apart, on one prefix.
        for i in 0..6 {
            events.push(fail(
                &format!("acct{i}"),
                &format!("c{i}"),
                "ip1",
                i * 300_000,
            ));
        }
        let alerts = of(&run(&mut d, &events), AlertType::CardTesting);
        let mut users: Vec<&str> = alerts.iter().map(|a| a.user_id.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        assert_eq!(
            users,
            vec!["acct0", "acct1", "acct2", "acct3", "acct4", "acct5"]
        );
        let first = alerts.iter().find(|a| a.user_id == "acct0").unwrap();
        assert!(
            first.reasons[0].contains("Card-testing ring: 5 accounts"),
            "{:?}",
            first.reasons
        );
        // The ring completed at the 5th card (acct4, 20 min).
        assert_eq!(first.window_end, 4 * 300_000);
    }

    #[test]
    fn near_misses_are_not_rings() {
        // Four cards only; one household retrying one card; a ring spread over more than the hour;
        // and cards on different prefixes.
        let four: Vec<_> = (0..4)
            .map(|i| fail(&format!("a{i}"), &format!("c{i}"), "ip1", i * 60_000))
            .collect();
        let household: Vec<_> = (0..8)
            .map(|i| fail(&format!("a{}", i % 2), "same-card", "ip1", i * 60_000))
            .collect();
        let slow: Vec<_> = (0..6)
            .map(|i| fail(&format!("a{i}"), &format!("c{i}"), "ip1", i * 20 * 60_000))
            .collect();
        let spread: Vec<_> = (0..6)
            .map(|i| {
                fail(
                    &format!("a{i}"),
                    &format!("c{i}"),
                    &format!("ip{i}"),
                    i * 60_000,
                )
            })
            .collect();
        for (name, events) in [
            ("four", four),
            ("household", household),
            ("slow", slow),
            ("spread", spread),
        ] {
            let alerts = of(&run(&mut detector(), &events), AlertType::CardTesting);
            assert!(alerts.is_empty(), "{name}: {alerts:?}");
        }
    }
}
