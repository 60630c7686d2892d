//! Account takeover: a login from a device and a country the user never used, then a high-value
//! checkout or payment within minutes.

use super::signals::Profile;
use super::{Finding, RulesConfig, human, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};

/// A login from a new device and a new country, waiting for a high-value checkout.
#[derive(Debug)]
struct SuspiciousLogin {
    time: i64,
    event_id: String,
    device: String,
    country: String,
    usual_country: Option<String>,
}

/// A user's pending suspicious login, if any.
#[derive(Debug, Default)]
pub(super) struct TakeoverState {
    login: Option<SuspiciousLogin>,
}

fn field(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

/// `profile` is what was known *before* this event.
pub(super) fn takeover(
    state: &mut TakeoverState,
    profile: &Profile,
    ev: &ClickEvent,
    cfg: &RulesConfig,
) -> Option<Finding> {
    let t = ev.event_time;
    if state
        .login
        .as_ref()
        .is_some_and(|l| t.saturating_sub(l.time) > cfg.takeover_window_ms)
    {
        state.login = None;
    }
    match ev.event_type {
        EventType::Login => {
            let device = field(ev.device.as_ref())?;
            let country = field(ev.country.as_ref())?;
            // Both must be new, and there must be a history to be new against: a first-time
            // user's first login is not a takeover.
            if profile.has_history_before(t)
                && !profile.knows_device(device, t)
                && !profile.knows_country(country, t)
            {
                state.login = Some(SuspiciousLogin {
                    time: t,
                    event_id: ev.event_id.clone(),
                    device: device.to_owned(),
                    country: country.to_owned(),
                    usual_country: profile.last_country().map(str::to_owned),
                });
            }
            None
        }
        EventType::BeginCheckout | EventType::PaymentAttempt => {
            let login = state.login.as_ref()?;
            let value = ev.order_value.filter(|v| v.is_finite())?;
            let min = cfg.takeover_min_value.max(0.0);
            if t < login.time || value < min {
                return None;
            }
            let ratio = value / min.max(1.0);
            let usual = login
                .usual_country
                .as_deref()
                .map(|c| format!(" (usual country {c})"))
                .unwrap_or_default();
            Some(Finding {
                alert_type: AlertType::AccountTakeover,
                severity: severity(Severity::High, ratio),
                score: ratio,
                reasons: vec![format!(
                    "LOGIN from new device {} and new country {}{usual}, then {} later a {} \
                     worth {value:.2} (high value from {min:.2}, window {}).",
                    login.device,
                    login.country,
                    human((t - login.time).max(0)),
                    ev.event_type,
                    human(cfg.takeover_window_ms)
                )],
                evidence: vec![login.event_id.clone(), ev.event_id.clone()],
                window_start: login.time,
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

    fn client(mut e: ClickEvent, device: &str, country: &str) -> ClickEvent {
        e.device = Some(device.into());
        e.country = Some(country.into());
        e
    }

    fn checkout(id: &str, t: i64, value: f64, device: &str, country: &str) -> ClickEvent {
        let mut e = client(ev(id, BeginCheckout, t), device, country);
        e.order_value = Some(value);
        e
    }

    /// Last week's ordinary session on the user's own phone in Germany.
    fn history() -> Vec<ClickEvent> {
        vec![
            client(ev("h1", Login, 0), "mobile-1", "DE"),
            client(ev("h2", PageView, 5_000), "mobile-1", "DE"),
        ]
    }

    const WEEK: i64 = 7 * 86_400_000;

    fn takeover_alerts(tail: Vec<ClickEvent>) -> Vec<FraudAlert> {
        let mut events = history();
        events.extend(tail);
        of(&run(&mut detector(), &events), AlertType::AccountTakeover)
    }

    #[test]
    fn new_device_and_country_then_high_value_checkout() {
        let alerts = takeover_alerts(vec![
            client(ev("l", Login, WEEK), "desktop-9", "BR"),
            client(ev("v", ProductView, WEEK + 20_000), "desktop-9", "BR"),
            checkout("c", WEEK + 120_000, 899.0, "desktop-9", "BR"),
        ]);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.evidence_event_ids, vec!["l", "c"]);
        assert_eq!((a.window_start, a.window_end), (WEEK, WEEK + 120_000));
        assert_eq!(
            a.severity,
            Severity::Critical,
            "899 is over 4x the 150 threshold"
        );
        assert!(
            a.reasons[0].contains("new device desktop-9 and new country BR (usual country DE)"),
            "{:?}",
            a.reasons
        );
        assert!(
            a.reasons[0].contains("2 min later a BEGIN_CHECKOUT worth 899.00"),
            "{:?}",
            a.reasons
        );
    }

    #[test]
    fn near_misses_do_not_fire() {
        let w = WEEK;
        let cases = [
            // New device, same country (a new phone at home).
            vec![
                client(ev("l", Login, w), "mobile-2", "DE"),
                checkout("c", w + 60_000, 899.0, "mobile-2", "DE"),
            ],
            // New country, same device (travelling with one's phone).
            vec![
                client(ev("l", Login, w), "mobile-1", "ES"),
                checkout("c", w + 60_000, 899.0, "mobile-1", "ES"),
            ],
            // Both new, but a cheap checkout.
            vec![
                client(ev("l", Login, w), "desktop-9", "BR"),
                checkout("c", w + 60_000, 149.99, "desktop-9", "BR"),
            ],
            // Both new, high value, but long after the login.
            vec![
                client(ev("l", Login, w), "desktop-9", "BR"),
                checkout("c", w + 15 * 60_000 + 1, 899.0, "desktop-9", "BR"),
            ],
            // High-value checkout with no login at all from the new client.
            vec![checkout("c", w + 60_000, 899.0, "desktop-9", "BR")],
        ];
        for (i, tail) in cases.into_iter().enumerate() {
            assert!(takeover_alerts(tail).is_empty(), "case {i}");
        }
        // A first-time user has no history to be new against.
        let first = [
            client(ev("l", Login, 0), "desktop-9", "BR"),
            checkout("c", 60_000, 899.0, "desktop-9", "BR"),
        ];
        assert!(of(&run(&mut detector(), &first), AlertType::AccountTakeover).is_empty());
    }

    #[test]
    fn a_page_view_reordered_before_the_login_does_not_make_the_device_known() {
        let alerts = takeover_alerts(vec![
            client(ev("v", PageView, WEEK + 1_000), "desktop-9", "BR"),
            client(ev("l", Login, WEEK), "desktop-9", "BR"),
            checkout("c", WEEK + 60_000, 500.0, "desktop-9", "BR"),
        ]);
        assert_eq!(alerts.len(), 1);
    }
}
