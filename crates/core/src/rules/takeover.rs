//! Account takeover: a login from a device and a country the user never used, then a high-value
//! checkout or payment within minutes.
//!
//! The *local* arm covers attackers behind a residential proxy in the victim's own country: a
//! login from a new device *and* a new IP prefix (country known), then a checkout worth
//! `takeover_local_value_ratio` times the user's largest earlier purchase. A new phone alone is
//! common (so is a new network: mobile carriers, travel); a new phone on a new network cashing
//! out several times anything the user ever bought is the takeover's signature.
//!
//! How many times depends on a second signal, the session's focus: an attacker goes to the goods
//! he came for, a shopper on a new phone looks around first. A session that since the login has
//! viewed or searched no more often than it added to the cart is *focused* and is held to
//! `takeover_local_focused_ratio`; one that browsed, to `takeover_local_value_ratio`.

use super::calibrate::Calibrator;
use super::signals::Profile;
use super::{Finding, RulesConfig, human, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use serde::{Deserialize, Serialize};

/// Completed purchases the stream must have shown before its order values stand in for a user's
/// own (fewer make the upper quantile a guess).
pub const STREAM_ORDERS_WARMUP: u64 = 100;

/// Purchases after which an order value weighs half: prices move over months, not hours.
const STREAM_ORDERS_HALF_LIFE: f64 = 10_000.0;

/// The order values this stream completes (a decayed histogram of their logarithm): the
/// local arm's reference for a user who never bought, in place of one fixed amount for every shop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StreamOrders {
    log10_values: Calibrator,
}

impl StreamOrders {
    /// Values from 0.01 to 10^7 (outside: the end bins), losing half their weight every
    /// [`STREAM_ORDERS_HALF_LIFE`] purchases.
    pub(super) fn new() -> Self {
        StreamOrders {
            log10_values: Calibrator::new(-2.0, 7.0, STREAM_ORDERS_HALF_LIFE),
        }
    }

    /// Folds in a completed purchase the profile trusted (`trusted`: not under an open takeover
    /// alert, whose cash-out is not what this shop's customers spend).
    pub(super) fn observe(&mut self, ev: &ClickEvent, trusted: bool) {
        if trusted
            && ev.event_type == EventType::Purchase
            && let Some(v) = ev.order_value.filter(|v| v.is_finite() && *v > 0.0)
        {
            self.log10_values.observe(v.log10(), ev.event_time);
        }
    }

    /// Whether a decoded value has the shape this code indexes.
    pub(super) fn is_well_formed(&self) -> bool {
        self.log10_values.is_well_formed()
    }

    /// The order value that only a share `1 - quantile` of the stream's purchases reach (rounded
    /// up to the histogram's bin edge: bins are 8.4 % wide), once it has seen
    /// [`STREAM_ORDERS_WARMUP`] purchases (and `1 / (1 - quantile)`, for a quantile above 0.99);
    /// `None` before, or with `quantile` 0 (off).
    pub(super) fn quantile(&self, quantile: f64) -> Option<f64> {
        if !(quantile > 0.0 && quantile < 1.0) || self.log10_values.seen() < STREAM_ORDERS_WARMUP {
            return None;
        }
        self.log10_values
            .exceeded_by(1.0 - quantile)
            .map(|l| 10f64.powf(l))
    }
}

/// A login from a new device and a new country, waiting for a high-value checkout.
#[derive(Debug, Serialize, Deserialize)]
struct SuspiciousLogin {
    time: i64,
    event_id: String,
    device: String,
    country: String,
    usual_country: Option<String>,
    /// Country known, network new: the checkout must also beat this value times the ratio of
    /// the session's focus (the user's largest earlier order; for a user with none the stream's
    /// large order, at least `takeover_min_value`).
    local_reference: Option<f64>,
    /// Product views and searches since the login (saturating).
    browsed: u16,
    /// Adds to cart since the login (saturating).
    carted: u16,
}

impl SuspiciousLogin {
    /// Viewed or searched no more often than added to the cart since the login.
    fn focused(&self) -> bool {
        self.browsed <= self.carted
    }

    /// The ratio of the user's reference the checkout must beat on the local arm.
    fn local_ratio(&self, cfg: &RulesConfig) -> f64 {
        if self.focused() {
            cfg.takeover_local_focused_ratio
        } else {
            cfg.takeover_local_value_ratio
        }
    }
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

/// [`TakeoverState`] as version 1 of the detector's user entry wrote it (its login had no
/// session focus); read to be dropped (`persist::v1`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct TakeoverStateV1 {
    login: Option<Box<SuspiciousLoginV1>>,
}

/// A version-1 pending login, field for field.
#[derive(Debug, Serialize, Deserialize)]
struct SuspiciousLoginV1 {
    time: i64,
    event_id: String,
    device: String,
    country: String,
    usual_country: Option<String>,
    local_min_value: Option<f64>,
}

#[cfg(test)]
impl TakeoverStateV1 {
    /// A version-1 state with a pending login at `time`, for the format's tests.
    pub(super) fn pending(time: i64) -> Self {
        TakeoverStateV1 {
            login: Some(Box::new(SuspiciousLoginV1 {
                time,
                event_id: "l".into(),
                device: "d".into(),
                country: "DE".into(),
                usual_country: None,
                local_min_value: Some(300.0),
            })),
        }
    }
}

fn field(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

/// `profile` is what was known *before* this event, `orders` what the stream buys.
pub(super) fn takeover(
    state: &mut TakeoverState,
    profile: &Profile,
    orders: &StreamOrders,
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
            let local_reference = if !profile.knows_country(country, t) {
                None
            } else if cfg.takeover_local_value_ratio > 0.0
                && field(ev.ip_prefix_hash.as_ref()).is_some_and(|n| !profile.knows_network(n, t))
            {
                Some(
                    profile
                        .largest_order()
                        .or_else(|| {
                            orders
                                .quantile(cfg.takeover_stream_order_quantile)
                                .map(|q| q.max(cfg.takeover_min_value))
                        })
                        .unwrap_or(cfg.takeover_min_value),
                )
            } else {
                return None;
            };
            state.login = Some(Box::new(SuspiciousLogin {
                time: t,
                event_id: ev.event_id.clone(),
                device: device.to_owned(),
                country: country.to_owned(),
                usual_country: profile.last_country().map(str::to_owned),
                local_reference,
                browsed: 0,
                carted: 0,
            }));
            None
        }
        EventType::ProductView | EventType::Search => {
            if let Some(login) = state.login.as_mut().filter(|l| t >= l.time) {
                login.browsed = login.browsed.saturating_add(1);
            }
            None
        }
        EventType::AddToCart => {
            if let Some(login) = state.login.as_mut().filter(|l| t >= l.time) {
                login.carted = login.carted.saturating_add(1);
            }
            None
        }
        EventType::BeginCheckout | EventType::PaymentAttempt => {
            let login = state.login.as_ref()?;
            let value = ev.order_value.filter(|v| v.is_finite())?;
            let local_min = login.local_reference.map(|r| r * login.local_ratio(cfg));
            let min = cfg
                .takeover_min_value
                .max(local_min.unwrap_or(0.0))
                .max(0.0);
            if t < login.time || value < min {
                return None;
            }
            let ratio = value / min.max(1.0);
            let origin = match (login.local_reference, login.usual_country.as_deref()) {
                (Some(reference), _) => format!(
                    "new IP prefix in the user's own country {} ({} {} times {}, {} views and \
                     searches for {} adds to cart since the login)",
                    login.country,
                    if login.focused() {
                        "a focused session:"
                    } else {
                        "a browsing session:"
                    },
                    reference_source(reference, profile, cfg),
                    login.local_ratio(cfg),
                    login.browsed,
                    login.carted
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

/// What the local arm's `reference` was, in words: the user's largest earlier purchase, or for a
/// user with none the stream's large order, or `takeover_min_value` while the stream's orders are
/// not learned. (Told from the profile now: a purchase between login and checkout can blur it.)
fn reference_source(reference: f64, profile: &Profile, cfg: &RulesConfig) -> String {
    let q = cfg.takeover_stream_order_quantile;
    match profile.largest_order() {
        Some(l) if l == reference => format!("the user's largest earlier purchase {reference:.2}"),
        Some(_) => format!("the reference {reference:.2} at the login"),
        None if reference == cfg.takeover_min_value && !(q > 0.0 && q < 1.0) => format!(
            "takeover_min_value {reference:.2} (no purchase by the user; the stream's orders \
             are not used)"
        ),
        None if reference == cfg.takeover_min_value => format!(
            "takeover_min_value {reference:.2} (no purchase by the user; the stream's \
             {q}-quantile order is below it or not learned yet)"
        ),
        None => format!(
            "the stream's {}-quantile order {reference:.2} (no purchase by the user)",
            cfg.takeover_stream_order_quantile
        ),
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

    /// A login from `device` on `network` in Germany a week later, then straight to a checkout of
    /// `value` (a focused session).
    fn local_tail(device: &str, network: &str, value: f64) -> Vec<ClickEvent> {
        vec![
            on_network(client(ev("l", Login, WEEK), device, "DE"), network),
            on_network(checkout("c", WEEK + 90_000, value, device, "DE"), network),
        ]
    }

    /// The same login, then three product views and a search for one add to cart before the
    /// checkout (a browsing session).
    fn browsing_tail(device: &str, network: &str, value: f64) -> Vec<ClickEvent> {
        let at =
            |id: &str, kind, t| on_network(client(ev(id, kind, WEEK + t), device, "DE"), network);
        vec![
            on_network(client(ev("l", Login, WEEK), device, "DE"), network),
            at("v1", ProductView, 10_000),
            at("s", Search, 20_000),
            at("v2", ProductView, 30_000),
            at("v3", ProductView, 40_000),
            at("a", AddToCart, 50_000),
            on_network(checkout("c", WEEK + 90_000, value, device, "DE"), network),
        ]
    }

    fn local_alerts(mut events: Vec<ClickEvent>, tail: Vec<ClickEvent>) -> Vec<FraudAlert> {
        events.extend(tail);
        of(&run(&mut detector(), &events), AlertType::AccountTakeover)
    }

    fn no_orders() -> Vec<ClickEvent> {
        history()
            .into_iter()
            .map(|e| on_network(e, "home"))
            .collect()
    }

    #[test]
    fn local_takeover_new_device_and_network_cashing_out_above_the_users_orders() {
        // Straight to the goods: the bar is 1 x 120, raised to takeover_min_value = 150.
        let alerts = local_alerts(
            history_with_purchase(),
            local_tail("desktop-9", "proxy", 300.0),
        );
        assert_eq!(alerts.len(), 1);
        let reason = &alerts[0].reasons[0];
        assert!(
            reason.contains("new IP prefix in the user's own country DE (a focused session")
                && reason.contains("0 views and searches for 0 adds to cart")
                && reason.contains("high value from 150.00"),
            "{reason}"
        );
        // Browsing first: the bar is 3 x 120 = 360.
        let alerts = local_alerts(
            history_with_purchase(),
            browsing_tail("desktop-9", "proxy", 899.0),
        );
        assert_eq!(alerts.len(), 1);
        let reason = &alerts[0].reasons[0];
        assert!(
            reason.contains("(a browsing session")
                && reason.contains("4 views and searches for 1 adds to cart")
                && reason.contains("high value from 360.00"),
            "{reason}"
        );
        // No purchase yet: the bar is 1 (focused) or 3 (browsing) x takeover_min_value = 150.
        assert_eq!(
            local_alerts(no_orders(), local_tail("desktop-9", "proxy", 151.0)).len(),
            1
        );
        assert_eq!(
            local_alerts(no_orders(), browsing_tail("desktop-9", "proxy", 451.0)).len(),
            1
        );
    }

    /// 200 other shoppers' purchases worth 100.5 to 299.5, before the user's history: the
    /// stream's 0.9 quantile is about 280 (291.6, the bin edge above it).
    fn shop_orders() -> Vec<ClickEvent> {
        (0..200)
            .map(|i| {
                let mut e = ClickEvent::new(
                    format!("p{i}"),
                    format!("other-{i}"),
                    Purchase,
                    -1_000_000 + i64::from(i),
                );
                e.order_value = Some(100.5 + f64::from(i));
                e
            })
            .collect()
    }

    #[test]
    fn a_user_without_purchases_is_measured_against_the_streams_large_orders() {
        let with_shop = |tail: Vec<ClickEvent>, quantile: f64| {
            let mut events = shop_orders();
            events.extend(no_orders());
            events.extend(tail);
            let cfg = RulesConfig {
                takeover_stream_order_quantile: quantile,
                ..RulesConfig::default()
            };
            let mut d = Detector::new(cfg, "rules@test");
            of(&run(&mut d, &events), AlertType::AccountTakeover)
        };
        // A shopper on a new phone who browses, then buys 727: under 3 x ~280 here, over
        // 3 x takeover_min_value (150) where the stream's orders are not used.
        assert!(with_shop(browsing_tail("mobile-7", "carrier", 727.0), 0.9).is_empty());
        assert_eq!(
            with_shop(browsing_tail("mobile-7", "carrier", 727.0), 0.0).len(),
            1
        );
        // Straight to the goods: 1 x ~280.
        assert!(with_shop(local_tail("desktop-9", "proxy", 270.0), 0.9).is_empty());
        let alerts = with_shop(local_tail("desktop-9", "proxy", 300.0), 0.9);
        assert_eq!(alerts.len(), 1);
        let reason = &alerts[0].reasons[0];
        assert!(
            reason.contains("the stream's 0.9-quantile order 2")
                && reason.contains("(no purchase by the user)"),
            "{reason}"
        );
        // Before the stream has shown STREAM_ORDERS_WARMUP purchases, takeover_min_value stands.
        let few = local_alerts(no_orders(), local_tail("desktop-9", "proxy", 151.0));
        assert!(
            few[0].reasons[0].contains("takeover_min_value 150.00")
                && few[0].reasons[0].contains("is below it or not learned yet"),
            "{:?}",
            few[0].reasons
        );
        let off = with_shop(browsing_tail("mobile-7", "carrier", 727.0), 0.0);
        assert!(
            off[0].reasons[0].contains("the stream's orders are not used"),
            "{:?}",
            off[0].reasons
        );
    }

    #[test]
    fn a_cheap_shops_orders_never_lower_the_bar_below_takeover_min_value() {
        // 200 orders of 20 to 40: the quantile (about 38) is raised to takeover_min_value, so a
        // browsing session's bar stays 3 x 150.
        let mut events: Vec<ClickEvent> = shop_orders()
            .into_iter()
            .map(|mut e| {
                e.order_value = e.order_value.map(|v| 20.0 + (v - 100.5) / 10.0);
                e
            })
            .collect();
        events.extend(no_orders());
        let run_tail = |tail: Vec<ClickEvent>| {
            let mut all = events.clone();
            all.extend(tail);
            of(&run(&mut detector(), &all), AlertType::AccountTakeover)
        };
        assert!(run_tail(browsing_tail("mobile-7", "carrier", 440.0)).is_empty());
        let alerts = run_tail(browsing_tail("mobile-7", "carrier", 460.0));
        assert_eq!(alerts.len(), 1);
        assert!(
            alerts[0].reasons[0].contains("high value from 450.00"),
            "{:?}",
            alerts[0].reasons
        );
    }

    #[test]
    fn a_taken_over_accounts_cash_outs_do_not_move_the_streams_orders() {
        // The shop's 200 orders, then a user's history and a takeover from Brazil (alerted at the
        // checkout), then 150 purchases of 100,000 under the open alert: the stream's 0.9
        // quantile does not move. The same purchases on the user's own phone would move it.
        let base = || {
            let mut d = detector();
            let mut events = shop_orders();
            events.extend(history());
            run(&mut d, &events);
            d
        };
        let cash_outs = |device: &str, country: &str| -> Vec<ClickEvent> {
            (0..150)
                .map(|i| {
                    let mut e = client(
                        ev(&format!("x{i}"), Purchase, WEEK + 130_000 + i),
                        device,
                        country,
                    );
                    e.order_value = Some(100_000.0);
                    e
                })
                .collect()
        };
        let mut taken = base();
        let before = taken.orders.quantile(0.9).unwrap();
        let alerts = run(
            &mut taken,
            &[
                client(ev("l", Login, WEEK), "desktop-9", "BR"),
                checkout("c", WEEK + 120_000, 899.0, "desktop-9", "BR"),
            ],
        );
        assert_eq!(of(&alerts, AlertType::AccountTakeover).len(), 1);
        run(&mut taken, &cash_outs("desktop-9", "BR"));
        assert_eq!(taken.orders.quantile(0.9), Some(before));
        let mut own = base();
        run(&mut own, &cash_outs("mobile-1", "DE"));
        assert!(own.orders.quantile(0.9).unwrap() > 10.0 * before);
    }

    #[test]
    fn the_streams_order_quantile_warms_up_and_ignores_cash_outs() {
        let mut orders = super::StreamOrders::new();
        let buy = |v: f64| {
            let mut e = ev("p", Purchase, 0);
            e.order_value = Some(v);
            e
        };
        for i in 0..super::STREAM_ORDERS_WARMUP - 1 {
            orders.observe(&buy(10.0 + i as f64), true);
        }
        assert_eq!(orders.quantile(0.9), None, "not warm yet");
        orders.observe(&buy(109.0), true);
        let q = orders.quantile(0.9).unwrap();
        // 100 values from 10 to 109: the 0.9 quantile is about 100 (to an 8.4 % bin).
        assert!((97.0..=106.0).contains(&q), "{q}");
        assert_eq!(orders.quantile(0.0), None, "off");
        assert_eq!(orders.quantile(1.0), None);
        // Untrusted purchases (under an open takeover alert), checkouts, and values that are not
        // positive numbers teach nothing.
        for _ in 0..1_000 {
            orders.observe(&buy(1e6), false);
            orders.observe(&buy(f64::NAN), true);
            orders.observe(&buy(-5.0), true);
            orders.observe(&checkout("c", 0, 1e6, "d", "DE"), true);
        }
        assert_eq!(orders.quantile(0.9), Some(q));
    }

    #[test]
    fn a_second_takeover_is_judged_against_the_user_not_the_first_attacker() {
        // A takeover from Brazil cashes out 899; a week later a second attacker, local and
        // focused this time, cashes out 300: over the user's own 120 (and the floor of 150),
        // under the first attacker's 899.
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
            alerts[1].reasons[0].contains("high value from 150.00"),
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
            // A new phone on a new network, browsing, then buying under 3 x the user's 120.
            browsing_tail("mobile-2", "carrier", 359.0),
            // The same, straight to a checkout worth less than the user's own 120 and the
            // floor of 150.
            local_tail("mobile-2", "carrier", 149.0),
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
        // No purchase yet: browsing under 3 x 150, or focused under 150.
        assert!(local_alerts(no_orders(), browsing_tail("desktop-9", "proxy", 449.0)).is_empty());
        assert!(local_alerts(no_orders(), local_tail("desktop-9", "proxy", 149.0)).is_empty());
        // Events before the login do not count towards the session's focus.
        let mut early_view = history_with_purchase();
        early_view.push(on_network(
            client(ev("v0", ProductView, WEEK - 1_000), "mobile-1", "DE"),
            "home",
        ));
        let alerts = local_alerts(early_view, local_tail("desktop-9", "proxy", 300.0));
        assert!(
            alerts.len() == 1 && alerts[0].reasons[0].contains("a focused session"),
            "{alerts:?}"
        );
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
