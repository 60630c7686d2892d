//! Fraud and bot scenarios: labels point at real events that show the documented pattern.

mod common;

use clickpath_generator::{
    AnomalyLabel, GeneratorConfig, LegitLabel, LegitPattern, ScenarioConfig, ScenarioKind,
    TruthRecord,
};
use clickpath_schema::{ClickEvent, EventType, PaymentStatus};
use common::run;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn every_scenario_is_injected_labelled_and_shows_its_pattern() {
    let cfg = GeneratorConfig {
        sessions: 3_000,
        scenarios: ScenarioConfig {
            crawler_bots: 2,
            card_testing: 3,
            account_takeovers: 2,
            cart_stuffing: 1,
            jittered_crawlers: 2,
            slow_card_testing: 2,
            card_testing_rings: 1,
            local_takeovers: 2,
            slow_cart_stuffing: 2,
            ..ScenarioConfig::none()
        },
        ..GeneratorConfig::default()
    };
    let out = run(cfg);
    let mut by_id: BTreeMap<&str, &ClickEvent> = BTreeMap::new();
    for e in out.events() {
        by_id.entry(e.event_id.as_str()).or_insert(e);
    }
    let labels: Vec<&AnomalyLabel> = out
        .truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Anomaly(a) => Some(a),
            _ => None,
        })
        .collect();
    let count = |k| labels.iter().filter(|l| l.scenario == k).count();
    assert_eq!(count(ScenarioKind::CrawlerBot), 2);
    assert_eq!(count(ScenarioKind::CardTesting), 3);
    assert_eq!(count(ScenarioKind::AccountTakeover), 2);
    assert_eq!(count(ScenarioKind::CartStuffing), 1);
    assert_eq!(count(ScenarioKind::JitteredCrawler), 2);
    assert_eq!(count(ScenarioKind::SlowCardTesting), 2);
    assert_eq!(count(ScenarioKind::LocalTakeover), 2);
    assert_eq!(count(ScenarioKind::SlowCartStuffing), 2);
    let ring = count(ScenarioKind::CardTestingRing);
    assert!((8..=12).contains(&ring), "{ring} ring accounts");
    assert_eq!(out.stats.scenarios, 16 + ring as u64);

    for label in &labels {
        let events: Vec<&ClickEvent> = label
            .event_ids
            .iter()
            .map(|id| *by_id.get(id.as_str()).expect("labelled event was emitted"))
            .collect();
        assert!(events.iter().all(|e| e.user_id == label.user_id));
        assert!(
            events
                .windows(2)
                .all(|w| w[0].event_time <= w[1].event_time)
        );
        assert_eq!(events[0].event_time, label.start_time);
        assert_eq!(events.last().unwrap().event_time, label.end_time);
        if label.scenario == ScenarioKind::CardTestingRing {
            // An account may finish before its ring becomes recognisable.
            assert!(label.detectable_at_ms >= label.start_time);
        } else {
            assert!((label.start_time..=label.end_time).contains(&label.detectable_at_ms));
        }
        match label.scenario {
            ScenarioKind::CrawlerBot => check_crawler(&events),
            ScenarioKind::CardTesting => check_card_testing(&events),
            ScenarioKind::AccountTakeover => {
                check_takeover(&events, &out.events().collect::<Vec<_>>(), false)
            }
            ScenarioKind::LocalTakeover => {
                check_takeover(&events, &out.events().collect::<Vec<_>>(), true)
            }
            ScenarioKind::SlowCartStuffing => check_slow_cart_stuffing(&events, label),
            ScenarioKind::CartStuffing => check_cart_stuffing(&events),
            ScenarioKind::JitteredCrawler => check_jittered_crawler(&events),
            ScenarioKind::SlowCardTesting => check_slow_card_testing(&events),
            ScenarioKind::CardTestingRing => check_ring_account(&events),
        }
    }
}

fn count(events: &[&ClickEvent], t: EventType) -> usize {
    events.iter().filter(|e| e.event_type == t).count()
}

fn check_jittered_crawler(events: &[&ClickEvent]) {
    assert!(events.len() >= 150);
    assert_eq!(count(events, EventType::AddToCart), 0);
    // As irregular as a shopper: the gaps' robust spread is far above a fixed cadence's.
    let mut gaps: Vec<i64> = events
        .windows(2)
        .map(|w| w[1].event_time - w[0].event_time)
        .collect();
    gaps.sort_unstable();
    let (q1, q3) = (gaps[gaps.len() / 4], gaps[3 * gaps.len() / 4]);
    assert!(q3 as f64 > 1.5 * q1 as f64, "quartiles {q1} {q3}");
}

fn check_ring_account(events: &[&ClickEvent]) {
    let failed = count(events, EventType::PaymentAttempt);
    assert!((1..=2).contains(&failed), "{failed} failed payments");
    assert!(
        events
            .iter()
            .all(|e| e.ip_prefix_hash == events[0].ip_prefix_hash)
    );
}

fn check_slow_card_testing(events: &[&ClickEvent]) {
    let failed: Vec<i64> = events
        .iter()
        .filter(|e| e.event_type == EventType::PaymentAttempt)
        .map(|e| e.event_time)
        .collect();
    assert!((8..=14).contains(&failed.len()));
    // Never three within ten minutes; about two to three hours in all (gaps vary by 20 %).
    assert!(failed.windows(3).all(|w| w[2] - w[0] > 10 * 60_000));
    let span = failed.last().unwrap() - failed[0];
    assert!((96 * 60_000..=216 * 60_000).contains(&span), "{span} ms");
}

fn check_crawler(events: &[&ClickEvent]) {
    assert!(events.len() >= 150);
    assert_eq!(count(events, EventType::AddToCart), 0);
    let gaps: Vec<i64> = events
        .windows(2)
        .map(|w| w[1].event_time - w[0].event_time)
        .collect();
    let (lo, hi) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    assert!(hi - lo <= 6, "cadence varies from {lo} to {hi} ms");
    assert!(*hi < 3_000, "no human dwell");
    let categories: BTreeSet<_> = events.iter().filter_map(|e| e.category.as_ref()).collect();
    assert!(
        categories.len() >= 20,
        "breadth: {} categories",
        categories.len()
    );
}

fn check_card_testing(events: &[&ClickEvent]) {
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| e.payment.as_ref().map(|p| (e, p)))
        .filter(|(_, p)| p.status == PaymentStatus::Failed)
        .collect();
    assert!(failed.len() >= 8);
    let cards: BTreeSet<_> = failed
        .iter()
        .map(|(_, p)| p.card_fingerprint.clone())
        .collect();
    assert_eq!(cards.len(), failed.len(), "a new card each time");
    let span = failed.last().unwrap().0.event_time - failed[0].0.event_time;
    assert!(span < 10 * 60_000, "within minutes: {span} ms");
}

fn check_takeover(events: &[&ClickEvent], stream: &[&ClickEvent], local: bool) {
    let login = events[0];
    assert_eq!(login.event_type, EventType::Login);
    let before: Vec<_> = stream
        .iter()
        .filter(|e| e.user_id == login.user_id && e.event_time < login.event_time)
        .collect();
    assert!(!before.is_empty(), "the victim has a history");
    assert!(before.iter().all(|e| e.device != login.device
        && e.ip_prefix_hash != login.ip_prefix_hash
        && (local == (e.country == login.country))));
    let checkout = events
        .iter()
        .find(|e| e.event_type == EventType::BeginCheckout)
        .expect("checkout");
    assert!(checkout.event_time - login.event_time < 10 * 60_000);
    let value = checkout.order_value.unwrap();
    let typical: Vec<f64> = stream
        .iter()
        .filter(|e| e.event_type == EventType::Purchase)
        .filter_map(|e| e.order_value)
        .collect();
    let mean = typical.iter().sum::<f64>() / typical.len() as f64;
    assert!(
        value > 2.0 * mean,
        "high value: {value} vs mean order {mean}"
    );
    assert_eq!(count(events, EventType::Purchase), 1);
}

fn check_cart_stuffing(events: &[&ClickEvent]) {
    assert_eq!(count(events, EventType::ProductView), 0);
    let adds: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::AddToCart)
        .collect();
    assert!(adds.len() >= 15);
    assert!(adds.iter().all(|e| e.quantity.unwrap() >= 50));
}

fn check_slow_cart_stuffing(events: &[&ClickEvent], label: &AnomalyLabel) {
    assert_eq!(count(events, EventType::BeginCheckout), 0);
    let adds: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::AddToCart)
        .collect();
    assert!(adds.len() >= 12);
    assert!(
        adds.iter()
            .all(|e| (20..=200).contains(&e.quantity.unwrap()))
    );
    // Human speed: every add follows a view of its item, never two adds within 30 s.
    assert!(
        adds.windows(2)
            .all(|w| w[1].event_time - w[0].event_time >= 30_000)
    );
    for a in &adds {
        assert!(events.iter().any(|v| v.event_type == EventType::ProductView
            && v.item_id == a.item_id
            && v.event_time < a.event_time));
    }
    // Recognisable once three adds have been held for 20 minutes.
    assert!(label.detectable_at_ms >= adds[0].event_time + 20 * 60_000);
    assert!(label.detectable_at_ms < adds[0].event_time + 20 * 60_000 + 5 * 60_000);
}

#[test]
fn legitimate_patterns_are_labelled_on_existing_users_and_look_as_documented() {
    let cfg = GeneratorConfig {
        sessions: 2_000,
        users: 300,
        scenarios: ScenarioConfig {
            bulk_buyers: 3,
            fast_repeat_buyers: 3,
            new_devices: 3,
            ..ScenarioConfig::none()
        },
        ..GeneratorConfig::default()
    };
    let out = run(cfg);
    let stream: Vec<&ClickEvent> = out.events().collect();
    let labels: Vec<&LegitLabel> = out
        .truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Legit(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(labels.len(), 9);
    assert_eq!(out.stats.scenarios, 0, "not fraud");
    for l in labels {
        let mine: Vec<&&ClickEvent> = stream
            .iter()
            .filter(|e| l.event_ids.contains(&e.event_id))
            .collect();
        let earlier: Vec<&&ClickEvent> = stream
            .iter()
            .filter(|e| e.user_id == l.user_id && e.event_time < l.start_time)
            .collect();
        assert!(!earlier.is_empty(), "an existing user with a history");
        let purchases = mine
            .iter()
            .filter(|e| e.event_type == EventType::Purchase)
            .count();
        match l.pattern {
            LegitPattern::BulkBuyer => {
                assert_eq!(purchases, 1);
                assert!(
                    mine.iter()
                        .filter(|e| e.event_type == EventType::AddToCart)
                        .all(|e| e.quantity.unwrap() >= 20)
                );
            }
            LegitPattern::FastRepeatBuyer => {
                assert!((3..=6).contains(&purchases));
                assert!(l.end_time - l.start_time < 30 * 60_000);
            }
            LegitPattern::NewDevice => {
                assert_eq!(purchases, 1);
                let device = &mine[0].device;
                assert!(
                    earlier
                        .iter()
                        .all(|e| &e.device != device && e.country == mine[0].country)
                );
                // The new phone stays: the user's later sessions use it.
                assert!(
                    stream
                        .iter()
                        .filter(|e| e.user_id == l.user_id && e.event_time > l.end_time)
                        .all(|e| &e.device == device)
                );
            }
        }
    }
}
