//! The behavioural model: funnel calibration, purchases, sessions and their ground truth.

mod common;

use clickpath_generator::{
    DirtyConfig, GeneratorConfig, ScenarioConfig, SessionTruth, TruthRecord,
};
use clickpath_schema::{ClickEvent, EventType, PaymentStatus};
use common::run;
use std::collections::{BTreeMap, BTreeSet, HashSet};

fn sessions_of(truth: &[TruthRecord]) -> Vec<&SessionTruth> {
    truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Session(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Distinct events (first copy of each id) in event-time order.
fn distinct(events: impl Iterator<Item = ClickEvent>) -> Vec<ClickEvent> {
    let mut seen = HashSet::new();
    let mut out: Vec<ClickEvent> = events.filter(|e| seen.insert(e.event_id.clone())).collect();
    out.sort_by_key(|e| e.event_time);
    out
}

/// The default config (scenarios and dirty data included), with enough sessions for about
/// 200k events; the ratios must land within 20 % of the Retailrocket targets, and within 12 %
/// for ordinary traffic, which is what the calibration solves for.
#[test]
fn default_config_hits_the_retailrocket_funnel_ratios() {
    let cfg = GeneratorConfig {
        sessions: 20_000,
        ..GeneratorConfig::default()
    };
    let started = std::time::Instant::now();
    let out = run(cfg);
    let elapsed = started.elapsed();
    let events = distinct(out.events().cloned());
    eprintln!("{} distinct events in {elapsed:?}", events.len());
    assert!(events.len() > 150_000, "{} events", events.len());

    let scenario_ids: HashSet<&str> = out
        .truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Anomaly(a) => Some(a.event_ids.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .collect();
    let ratios = |organic_only: bool| {
        let mut n = BTreeMap::<EventType, f64>::new();
        for e in &events {
            if !(organic_only && scenario_ids.contains(e.event_id.as_str())) {
                *n.entry(e.event_type).or_default() += 1.0;
            }
        }
        (
            n[&EventType::AddToCart] / n[&EventType::ProductView],
            n[&EventType::Purchase] / n[&EventType::AddToCart],
        )
    };
    let (cart_all, buy_all) = ratios(false);
    let (cart, buy) = ratios(true);
    eprintln!("all: cart/view {cart_all:.4} purchase/cart {buy_all:.4}");
    eprintln!("ordinary: cart/view {cart:.4} purchase/cart {buy:.4}");
    let within = |got: f64, want: f64, tol: f64| (got / want - 1.0).abs() < tol;
    assert!(within(cart_all, 0.026, 0.2), "cart/view {cart_all}");
    assert!(within(buy_all, 0.32, 0.2), "purchase/cart {buy_all}");
    assert!(within(cart, 0.026, 0.12), "ordinary cart/view {cart}");
    assert!(within(buy, 0.32, 0.12), "ordinary purchase/cart {buy}");
}

#[test]
fn other_funnel_targets_are_reached_too() {
    let mut cfg = GeneratorConfig {
        sessions: 6_000,
        dirty: DirtyConfig::clean(),
        scenarios: ScenarioConfig::none(),
        ..GeneratorConfig::default()
    };
    cfg.funnel.cart_per_product_view = 0.08;
    cfg.funnel.purchase_per_cart = 0.5;
    let out = run(cfg);
    let count = |t| out.events().filter(|e| e.event_type == t).count() as f64;
    let cart = count(EventType::AddToCart) / count(EventType::ProductView);
    let buy = count(EventType::Purchase) / count(EventType::AddToCart);
    assert!((cart / 0.08 - 1.0).abs() < 0.15, "cart/view {cart}");
    assert!((buy / 0.5 - 1.0).abs() < 0.15, "purchase/cart {buy}");
}

/// Purchases are preceded by checkout and a successful payment in their session, and carry an
/// order id and the value of what is still in the cart.
#[test]
fn every_purchase_is_a_paid_checkout_of_the_cart() {
    let out = run(GeneratorConfig {
        sessions: 3_000,
        ..GeneratorConfig::default()
    });
    let mut by_session: BTreeMap<String, Vec<ClickEvent>> = BTreeMap::new();
    for e in distinct(out.events().cloned()) {
        let sid = e
            .session_id
            .clone()
            .expect("generated events carry a session id");
        by_session.entry(sid).or_default().push(e);
    }
    let mut purchases = 0;
    let mut order_ids = BTreeSet::new();
    for events in by_session.values() {
        let mut checkout = false;
        let mut paid = false;
        let mut cart = 0.0;
        for e in events {
            match e.event_type {
                EventType::AddToCart => {
                    cart += e.price.unwrap() * f64::from(e.quantity.unwrap());
                }
                EventType::RemoveFromCart => {
                    cart -= e.price.unwrap() * f64::from(e.quantity.unwrap());
                }
                EventType::BeginCheckout => checkout = true,
                EventType::PaymentAttempt => {
                    paid |= e.payment.as_ref().unwrap().status == PaymentStatus::Succeeded;
                }
                EventType::Purchase => {
                    purchases += 1;
                    assert!(
                        checkout && paid,
                        "purchase {} without checkout and payment",
                        e.event_id
                    );
                    let value = e.order_value.expect("order value");
                    assert!(value > 0.0);
                    assert!((value - cart).abs() < 0.011, "order {value} vs cart {cart}");
                    assert!(order_ids.insert(e.order_id.clone().expect("order id")));
                }
                _ => {}
            }
        }
    }
    assert!(purchases > 50, "{purchases} purchases");
}

/// The recorded purchase probability is the probability the outcome was drawn with: summed over
/// sessions it predicts the number of purchases, and higher probabilities purchase more often.
#[test]
fn session_truth_matches_the_emitted_sessions() {
    let out = run(GeneratorConfig {
        sessions: 4_000,
        ..GeneratorConfig::default()
    });
    let sessions = sessions_of(&out.truth);
    assert_eq!(
        sessions.len() as u64,
        out.stats.sessions - count_takeovers(&out.truth)
    );
    let events = distinct(out.events().cloned());
    let mut by_session: BTreeMap<&str, Vec<&ClickEvent>> = BTreeMap::new();
    for e in &events {
        by_session
            .entry(e.session_id.as_deref().unwrap())
            .or_default()
            .push(e);
    }
    for s in &sessions {
        let evs = &by_session[s.session_id.as_str()];
        assert_eq!(evs.len() as u32, s.event_count);
        assert_eq!(evs[0].event_id, s.first_event_id);
        assert_eq!(evs[0].event_time, s.start_time);
        assert_eq!(evs.last().unwrap().event_time, s.end_time);
        assert!(evs.iter().all(|e| e.user_id == s.user_id));
        let bought = evs.iter().any(|e| e.event_type == EventType::Purchase);
        assert_eq!(bought, s.purchased);
        assert!((0.0..=0.95).contains(&s.purchase_probability));
        // Dwell times never reach a 30 minute inactivity gap.
        for w in evs.windows(2) {
            assert!(w[1].event_time - w[0].event_time <= 15 * 60_000);
        }
    }
    let expected: f64 = sessions.iter().map(|s| s.purchase_probability).sum();
    let var: f64 = sessions
        .iter()
        .map(|s| s.purchase_probability * (1.0 - s.purchase_probability))
        .sum();
    let got = sessions.iter().filter(|s| s.purchased).count() as f64;
    assert!(
        (got - expected).abs() < 4.0 * var.sqrt(),
        "{got} purchases, expected {expected:.1}"
    );
    let rate = |lo: f64, hi: f64| {
        let b: Vec<_> = sessions
            .iter()
            .filter(|s| (lo..hi).contains(&s.purchase_probability))
            .collect();
        b.iter().filter(|s| s.purchased).count() as f64 / b.len() as f64
    };
    assert!(rate(0.15, 1.0) > 3.0 * rate(0.0, 0.03));
}

fn count_takeovers(truth: &[TruthRecord]) -> u64 {
    truth
        .iter()
        .filter(|t| {
            matches!(t, TruthRecord::Anomaly(a) if a.scenario == clickpath_generator::ScenarioKind::AccountTakeover)
        })
        .count() as u64
}

#[test]
fn sessions_of_one_user_are_hours_apart_and_follow_the_day() {
    let cfg = GeneratorConfig {
        sessions: 6_000,
        users: 500,
        ..GeneratorConfig::default()
    };
    let gap = cfg.behaviour.min_session_gap_ms as i64;
    let out = run(cfg);
    let mut by_user: BTreeMap<&str, Vec<&SessionTruth>> = BTreeMap::new();
    for s in sessions_of(&out.truth) {
        by_user.entry(s.user_id.as_str()).or_default().push(s);
    }
    assert!(by_user.values().any(|v| v.len() > 3));
    for v in by_user.values_mut() {
        v.sort_by_key(|s| s.start_time);
        for w in v.windows(2) {
            assert!(w[1].start_time - w[0].end_time >= gap);
        }
    }
    let mut by_hour = [0u32; 24];
    for s in sessions_of(&out.truth) {
        by_hour[((s.start_time / 3_600_000) % 24) as usize] += 1;
    }
    assert!(by_hour[20] > by_hour[8], "{by_hour:?}");
}
