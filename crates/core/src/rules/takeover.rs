//! Account takeover: a login from a device and a country the user never used, then a high-value
//! checkout or payment within minutes.
//!
//! The *local* arm covers attackers behind a residential proxy in the victim's own country: a
//! login from a new device *and* a new IP prefix (country known), then a checkout worth
//! `takeover_local_value_ratio` times the user's largest earlier purchase. A new phone alone is
//! common (so is a new network: mobile carriers, travel); a new phone on a new network cashing
//! out several times anything the user ever bought is the takeover's signature.

use super::signals::Profile;
use super::{Finding, RulesConfig, human, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use serde::{Deserialize, Serialize};

/// A login from a new device and a new country, waiting for a high-value checkout.
#[derive(Debug, Serialize, Deserialize)]
struct SuspiciousLogin {
    time: i64,
    event_id: String,
    device: String,
    country: String,
    usual_country: Option<String>,
    /// Country known, network new: the checkout must also beat this value.
    local_min_value: Option<f64>,
}

/// A user's pending suspicious login, if any.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct TakeoverState {
    /// Boxed: rare, and three strings inline would grow every user's state.
    login: Option<Box<SuspiciousLogin>>,
}

impl TakeoverState {
    /// Empties the state as `Default` would (the rare login is dropped).
    pub(super) fn clear(&mut self) {
        let TakeoverState { login } = self;
        *login = None;
    }
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
            // The device must be new, and there must be a history to be new against: a
            // first-time user's first login is not a takeover.
            if !profile.has_history_before(t) || profile.knows_device(device, t) {
                return None;
            }
            let local_min_value = if !profile.knows_country(country, t) {
                None
            } else if cfg.takeover_local_value_ratio > 0.0
                && field(ev.ip_prefix_hash.as_ref()).is_some_and(|n| !profile.knows_network(n, t))
            {
                let reference = profile.largest_order().unwrap_or(cfg.takeover_min_value);
                Some(cfg.takeover_local_value_ratio * reference)
            } else {
                return None;
            };
            state.login = Some(Box::new(SuspiciousLogin {
                time: t,
                event_id: ev.event_id.clone(),
                device: device.to_owned(),
                country: country.to_owned(),
                usual_country: profile.last_country().map(str::to_owned),
                local_min_value,
            }));
            None
        }
        EventType::BeginCheckout | EventType::PaymentAttempt => {
            let login = state.login.as_ref()?;
            let value = ev.order_value.filter(|v| v.is_finite())?;
            let min = cfg
                .takeover_min_value
                .max(login.local_min_value.unwrap_or(0.0))
                .max(0.0);
            if t < login.time || value < min {
                return None;
            }
            let ratio = value / min.max(1.0);
            let origin = match (login.local_min_value, login.usual_country.as_deref()) {
                (Some(_), _) => format!(
                    "new IP prefix in the user's own country {} (the largest earlier purchase \
                     times {})",
                    login.country, cfg.takeover_local_value_ratio
                ),
                (None, Some(usual)) => {
                    format!("new country {} (usual country {usual})", login.country)
                }
                (None, None) => format!("new country {}", login.country),
            };
            Some(Finding {
                alert_type: AlertType::AccountTakeover,
                severity: severity(Severity::High, ratio),
                score: ratio,
                reasons: vec![format!(
                    "LOGIN from new device {} and {origin}, then {} later a {} worth \
                     {value:.2} (high value from {min:.2}, window {}).",
                    login.device,
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

    fn on_network(mut e: ClickEvent, network: &str) -> ClickEvent {
        e.ip_prefix_hash = Some(network.into());
        e
    }

    /// Last week's session at home (phone, home network), ending in a purchase worth 120.
    fn history_with_purchase() -> Vec<ClickEvent> {
        let mut purchase = client(ev("h3", Purchase, 60_000), "mobile-1", "DE");
        purchase.order_value = Some(120.0);
        [
            client(ev("h1", Login, 0), "mobile-1", "DE"),
            client(ev("h2", PageView, 5_000), "mobile-1", "DE"),
            purchase,
        ]
        .into_iter()
        .map(|e| on_network(e, "home"))
        .collect()
    }

    /// A login from `device` on `network` in Germany a week later, then a checkout of `value`.
    fn local_tail(device: &str, network: &str, value: f64) -> Vec<ClickEvent> {
        vec![
            on_network(client(ev("l", Login, WEEK), device, "DE"), network),
            on_network(checkout("c", WEEK + 90_000, value, device, "DE"), network),
        ]
    }

    fn local_alerts(mut events: Vec<ClickEvent>, tail: Vec<ClickEvent>) -> Vec<FraudAlert> {
        events.extend(tail);
        of(&run(&mut detector(), &events), AlertType::AccountTakeover)
    }

    #[test]
    fn local_takeover_new_device_and_network_cashing_out_far_above_the_users_orders() {
        // 2 x 120 = 240 is the bar for this user.
        let alerts = local_alerts(
            history_with_purchase(),
            local_tail("desktop-9", "proxy", 899.0),
        );
        assert_eq!(alerts.len(), 1);
        let reason = &alerts[0].reasons[0];
        assert!(
            reason.contains("new IP prefix in the user's own country DE")
                && reason.contains("high value from 240.00"),
            "{reason}"
        );
        // No purchase yet: the bar is 2 x takeover_min_value = 300.
        let no_orders = history()
            .into_iter()
            .map(|e| on_network(e, "home"))
            .collect();
        assert_eq!(
            local_alerts(no_orders, local_tail("desktop-9", "proxy", 320.0)).len(),
            1
        );
    }

    #[test]
    fn a_second_takeover_is_judged_against_the_user_not_the_first_attacker() {
        // A takeover from Brazil cashes out 899; a week later a second attacker, local this
        // time, cashes out 300: over 2 x the user's own 120, under 2 x the first attacker's 899.
        let mut cash_out = on_network(
            client(ev("p1", Purchase, WEEK + 150_000), "desktop-9", "BR"),
            "proxy-br",
        );
        cash_out.order_value = Some(899.0);
        let first = vec![
            on_network(client(ev("l1", Login, WEEK), "desktop-9", "BR"), "proxy-br"),
            on_network(
                checkout("c1", WEEK + 120_000, 899.0, "desktop-9", "BR"),
                "proxy-br",
            ),
            cash_out,
        ];
        let mut events = history_with_purchase();
        events.extend(first);
        events.extend(
            local_tail("tablet-3", "proxy-de", 300.0)
                .into_iter()
                .map(|mut e| {
                    e.event_time += WEEK;
                    e.event_id.push('2');
                    e
                }),
        );
        let alerts = of(&run(&mut detector(), &events), AlertType::AccountTakeover);
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert_eq!(alerts[1].evidence_event_ids, vec!["l2", "c2"]);
        assert!(
            alerts[1].reasons[0].contains("high value from 240.00"),
            "{:?}",
            alerts[1].reasons
        );
        // The first attacker's device and country were forgotten: back on them, they are new.
        let d = {
            let mut d = detector();
            run(&mut d, &events);
            d
        };
        let profile = d.users["u"].profile.as_ref().unwrap();
        assert!(!profile.knows_device("desktop-9", 3 * WEEK));
        assert!(!profile.knows_country("BR", 3 * WEEK));
    }

    #[test]
    fn local_near_misses_do_not_fire() {
        let cases = [
            // A new phone on a new network buying what the user usually buys (under 240).
            local_tail("mobile-2", "carrier", 200.0),
            // A new phone at home, expensive basket: the network is known.
            local_tail("mobile-2", "home", 899.0),
            // The known phone on a new network (travel within the country).
            local_tail("mobile-1", "hotel", 899.0),
        ];
        for (i, tail) in cases.into_iter().enumerate() {
            assert!(
                local_alerts(history_with_purchase(), tail).is_empty(),
                "case {i}"
            );
        }
        // No purchase yet and under 300.
        let no_orders = history()
            .into_iter()
            .map(|e| on_network(e, "home"))
            .collect();
        assert!(local_alerts(no_orders, local_tail("desktop-9", "proxy", 299.0)).is_empty());
        // The local arm off.
        let off = RulesConfig {
            takeover_local_value_ratio: 0.0,
            ..RulesConfig::default()
        };
        let mut d = Detector::new(off, "rules@test");
        let mut events = history_with_purchase();
        events.extend(local_tail("desktop-9", "proxy", 5_000.0));
        assert!(of(&run(&mut d, &events), AlertType::AccountTakeover).is_empty());
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
