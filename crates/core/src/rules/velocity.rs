//! Velocity: too many events per user, or per hashed IP prefix, within a short window.

use super::{Finding, Recent, RulesConfig, human, severity};
use crate::hash::{U64Build, fnv1a};
use clickpath_schema::{AlertType, ClickEvent, Severity};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Times of one user's events in the velocity window, oldest first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct UserVelocity {
    times: VecDeque<i64>,
}

impl UserVelocity {
    /// Empties the state as `Default` would, keeping its allocations for the user's next visit.
    pub(super) fn clear(&mut self) {
        let UserVelocity { times } = self;
        times.clear();
    }
}

/// Pushes `now` into `times`, drops times at or before `now - window` and keeps at most eight
/// times `max` (past that the severity cannot rise further). Returns the count in the window.
fn slide(times: &mut VecDeque<i64>, now: i64, window: i64, max: u32) -> usize {
    let horizon = now.saturating_sub(window);
    times.push_back(now);
    while times.front().is_some_and(|&t| t <= horizon) {
        times.pop_front();
    }
    let cap = (max as usize).saturating_mul(8);
    while times.len() > cap {
        times.pop_front();
    }
    times.len()
}

pub(super) fn user_velocity(
    state: &mut UserVelocity,
    recent: &Recent,
    cfg: &RulesConfig,
    now: i64,
) -> Option<Finding> {
    let max = cfg.velocity_max_events.max(1);
    let count = slide(&mut state.times, now, cfg.velocity_window_ms, max);
    if count <= max as usize {
        return None;
    }
    let ratio = count as f64 / f64::from(max);
    Some(Finding {
        alert_type: AlertType::Velocity,
        severity: severity(Severity::Low, ratio),
        score: ratio,
        reasons: vec![format!(
            "{count} events within {} (limit {max}).",
            human(cfg.velocity_window_ms)
        )],
        evidence: recent.since(now.saturating_sub(cfg.velocity_window_ms)),
        window_start: state.times.front().copied().unwrap_or(now),
        window_end: now,
    })
}

/// Velocity of the event's hashed IP prefix over all users; the alert goes to the user whose
/// event crossed the limit (alerts are keyed by user). `(now, watermark)`: the user's time and the
/// partition's newest event time; a prefix idle past the window at the watermark starts empty, as
/// if evicted already ([`super::Detector::evict_idle`]).
pub(super) fn ip_velocity(
    ips: &mut HashMap<u64, VecDeque<i64>, U64Build>,
    recent: &Recent,
    ev: &ClickEvent,
    cfg: &RulesConfig,
    (now, watermark): (i64, i64),
) -> Option<Finding> {
    let ip = ev.ip_prefix_hash.as_deref().filter(|s| !s.is_empty())?;
    let max = cfg.ip_velocity_max_events.max(1);
    let times = ips.entry(fnv1a(ip)).or_default();
    if times
        .back()
        .is_some_and(|&b| b.saturating_add(cfg.velocity_window_ms) <= watermark)
    {
        times.clear();
    }
    // Per-IP time is the IP's own newest event time, so one user's clock skew cannot shrink
    // another's window.
    let ip_now = times
        .back()
        .map_or(ev.event_time, |&b| b.max(ev.event_time));
    let count = slide(times, ip_now, cfg.velocity_window_ms, max);
    if count <= max as usize {
        return None;
    }
    let ratio = count as f64 / f64::from(max);
    Some(Finding {
        alert_type: AlertType::Velocity,
        severity: severity(Severity::Low, ratio),
        score: ratio,
        reasons: vec![format!(
            "{count} events from IP prefix {ip} (all users) within {} (limit {max}).",
            human(cfg.velocity_window_ms)
        )],
        evidence: recent.since(now.saturating_sub(cfg.velocity_window_ms)),
        window_start: times.front().copied().unwrap_or(ip_now),
        window_end: ip_now,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use clickpath_schema::EventType::*;

    #[test]
    fn velocity_fires_above_the_limit_only() {
        // 30 events in 10 s: at the limit, no alert.
        let at_limit: Vec<_> = (0..30)
            .map(|i| ev(&format!("e{i}"), PageView, 1_000 + i * 300))
            .collect();
        assert!(of(&run(&mut detector(), &at_limit), AlertType::Velocity).is_empty());

        // 31 events within 10 s fire; the 31st is the trigger.
        let mut d = detector();
        let burst: Vec<_> = (0..40)
            .map(|i| ev(&format!("e{i}"), PageView, 1_000 + i * 300))
            .collect();
        let alerts = of(&run(&mut d, &burst), AlertType::Velocity);
        assert_eq!(alerts.len(), 1, "no escalation below 1.5x");
        let a = &alerts[0];
        assert_eq!(a.window_end, 1_000 + 30 * 300);
        assert_eq!(a.window_start, 1_000);
        assert_eq!(a.alert_id, "u:VELOCITY:1000");
        assert_eq!(a.severity, Severity::Low);
        assert_eq!(a.evidence_event_ids.len(), 20);
        assert_eq!(a.evidence_event_ids.last().map(String::as_str), Some("e30"));
        assert_eq!(a.evidence_event_ids[0], "e11");
        assert!(
            a.reasons[0].contains("31 events within 10 s (limit 30)"),
            "{:?}",
            a.reasons
        );
        assert_eq!(a.detector_version, "rules@test");

        // Spread out over more than 10 s: never more than 30 in a window.
        let slow: Vec<_> = (0..100)
            .map(|i| ev(&format!("e{i}"), PageView, i * 340))
            .collect();
        assert!(of(&run(&mut detector(), &slow), AlertType::Velocity).is_empty());
    }

    #[test]
    fn ip_velocity_counts_all_users_of_a_prefix() {
        let mut d = Detector::new(
            RulesConfig {
                ip_velocity_max_events: 10,
                ..RulesConfig::default()
            },
            "v",
        );
        // Eleven users, one event each, same prefix, within 10 s: the eleventh trips it.
        let events: Vec<_> = (0..11)
            .map(|i| {
                let mut e = ev(&format!("e{i}"), PageView, i * 500);
                e.user_id = format!("u{i}");
                e.ip_prefix_hash = Some("ip-a".into());
                e
            })
            .collect();
        let alerts = of(&run(&mut d, &events), AlertType::Velocity);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].user_id, "u10");
        assert!(
            alerts[0].reasons[0].contains("IP prefix ip-a"),
            "{:?}",
            alerts[0].reasons
        );

        // Near misses: ten per prefix; or eleven spread over two prefixes; or over 10 s.
        let mut d = Detector::new(
            RulesConfig {
                ip_velocity_max_events: 10,
                ..RulesConfig::default()
            },
            "v",
        );
        let mixed: Vec<_> = (0..11)
            .map(|i| {
                let mut e = ev(&format!("e{i}"), PageView, i * 500);
                e.user_id = format!("u{i}");
                e.ip_prefix_hash = Some(if i % 2 == 0 { "ip-a" } else { "ip-b" }.into());
                e
            })
            .collect();
        assert!(of(&run(&mut d, &mixed), AlertType::Velocity).is_empty());
        let slow: Vec<_> = (0..11)
            .map(|i| {
                let mut e = ev(&format!("e{i}"), PageView, i * 1_001);
                e.user_id = format!("u{i}");
                e.ip_prefix_hash = Some("ip-a".into());
                e
            })
            .collect();
        let mut d = Detector::new(
            RulesConfig {
                ip_velocity_max_events: 10,
                ..RulesConfig::default()
            },
            "v",
        );
        assert!(of(&run(&mut d, &slow), AlertType::Velocity).is_empty());
    }

    #[test]
    fn memory_per_user_is_bounded() {
        let mut d = detector();
        for i in 0..5_000i64 {
            d.on_event(&failed(&format!("p{i}"), i, Some(&format!("c{i}"))));
        }
        let u = d.users["u"].rules.as_ref().expect("rule state");
        assert!(u.velocity.times.len() <= 30 * 8);
        assert!(u.card.failures() <= MAX_FAILED_PAYMENTS);
        assert_eq!(u.recent.ids.len(), 20);
        // The ids' buffer holds at most twice the remembered ids (here at most 5 bytes each).
        assert!(u.recent.text.len() <= 2 * 20 * 5, "{}", u.recent.text.len());
    }
}
