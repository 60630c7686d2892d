//! The readers against real data: the shipped REES46 and OTTO fixtures, a made-up Retailrocket
//! file, and DIGINETICA from the shared data folder when it is there.

use clickpath_adapters::{AdapterError, Format, read};
use clickpath_schema::{ClickEvent, EventType};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn read_all(format: Format, path: PathBuf) -> (Vec<ClickEvent>, Vec<AdapterError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for item in read(format, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        match item {
            Ok(e) => ok.push(e),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

fn counts(events: &[ClickEvent]) -> BTreeMap<EventType, usize> {
    let mut n = BTreeMap::new();
    for e in events {
        *n.entry(e.event_type).or_default() += 1;
    }
    n
}

#[test]
fn rees46_fixture_counts_and_fields() {
    let (events, errors) = read_all(Format::Rees46, fixture("rees46/2019-Oct-sample.csv"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 1_000);
    let n = counts(&events);
    assert_eq!(n[&EventType::ProductView], 987);
    assert_eq!(n[&EventType::AddToCart], 3);
    assert_eq!(n[&EventType::Purchase], 10);
    let sessions: BTreeSet<_> = events
        .iter()
        .map(|e| e.session_id.clone().unwrap())
        .collect();
    let users: BTreeSet<_> = events.iter().map(|e| e.user_id.clone()).collect();
    assert_eq!(sessions.len(), 372);
    assert_eq!(users.len(), 330);
    assert_eq!(events.iter().filter(|e| e.category.is_some()).count(), 634);

    // Line 2: 2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-…
    let first = &events[0];
    assert_eq!(first.event_id, "rees46:2019-Oct-sample:2");
    assert_eq!(first.event_time, 1_569_888_000_000);
    assert_eq!(first.event_type, EventType::ProductView);
    assert_eq!(first.item_id.as_deref(), Some("44600062"));
    assert_eq!(first.category, None);
    assert_eq!(first.brand.as_deref(), Some("shiseido"));
    assert_eq!(first.price, Some(35.79));
    assert_eq!(first.user_id, "541312140");
    assert_eq!(
        first.session_id.as_deref(),
        Some("72d76fde-8bb3-4e00-8c23-a032dfed738c")
    );
    assert_eq!(first.extras["category_id"], "2103807459595387724");
    assert_eq!(
        events[1].category.as_deref(),
        Some("appliances/environment/water_heater")
    );

    // Line 164: 2019-10-01 00:02:14 UTC,purchase,1004856,…,electronics.smartphone,samsung,130.76,543272936,8187d148-…
    let purchase = events
        .iter()
        .find(|e| e.event_id == "rees46:2019-Oct-sample:164")
        .unwrap();
    assert_eq!(purchase.event_type, EventType::Purchase);
    assert_eq!(purchase.event_time, 1_569_888_000_000 + 134_000);
    assert_eq!(purchase.order_value, Some(130.76));
    assert_eq!(purchase.order_id, purchase.session_id);
    assert_eq!(purchase.category.as_deref(), Some("electronics/smartphone"));
    assert_eq!(
        events.last().unwrap().event_time,
        1_569_888_000_000 + 17 * 60_000 + 26_000
    );
}

#[test]
fn otto_fixture_counts_and_fields() {
    let (events, errors) = read_all(Format::Otto, fixture("otto/train.jsonl"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 862);
    let n = counts(&events);
    assert_eq!(n[&EventType::ProductView], 800);
    assert_eq!(n[&EventType::AddToCart], 52);
    assert_eq!(n[&EventType::Purchase], 10);
    let sessions: BTreeSet<_> = events.iter().map(|e| e.user_id.clone()).collect();
    assert_eq!(sessions.len(), 20);
    // First event: {"session":0,"events":[{"aid":1517085,"ts":1659304800025,"type":"clicks"}, …
    let first = &events[0];
    assert_eq!(first.event_id, "otto:train:1:0");
    assert_eq!(first.user_id, "0");
    assert_eq!(first.session_id.as_deref(), Some("0"));
    assert_eq!(first.item_id.as_deref(), Some("1517085"));
    assert_eq!(first.event_time, 1_659_304_800_025, "ts is already in ms");
    assert_eq!(first.event_type, EventType::ProductView);
    // Session 0 orders items 305831 and 461689 at the same moment: one order.
    let orders: Vec<_> = events
        .iter()
        .filter(|e| e.user_id == "0" && e.event_type == EventType::Purchase)
        .collect();
    assert_eq!(orders.len(), 4);
    assert_eq!(orders[0].item_id.as_deref(), Some("305831"));
    assert_eq!(orders[0].order_id, orders[1].order_id);
    assert_ne!(orders[1].order_id, orders[2].order_id);
    let ids: BTreeSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
}

#[test]
fn retailrocket_made_up_file() {
    let (events, errors) = read_all(Format::Retailrocket, fixture("retailrocket/events.csv"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 10);
    let n = counts(&events);
    assert_eq!(n[&EventType::ProductView], 6);
    assert_eq!(n[&EventType::AddToCart], 2);
    assert_eq!(n[&EventType::Purchase], 2);
    let t = &events[3];
    assert_eq!(t.event_id, "retailrocket:events:5");
    assert_eq!(t.user_id, "1001");
    assert_eq!(t.event_time, 1_433_221_200_250);
    assert_eq!(t.item_id.as_deref(), Some("50002"));
    assert_eq!(t.order_id.as_deref(), Some("9001"));
    assert_eq!(events[0].order_id, None);
}

/// `<workspace>/../shared/data/diginetica_cikm2016/<file>`, if the shared data is there.
fn diginetica(file: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/diginetica_cikm2016")
        .join(file);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipping: DIGINETICA data not found at {} (research-only data, not shipped)",
            path.display()
        );
        None
    }
}

const MAY_9_2016_MS: i64 = 1_462_752_000_000;

#[test]
fn diginetica_views_sample() {
    let Some(path) = diginetica("sample_train-item-views.csv") else {
        return;
    };
    let (events, errors) = read_all(Format::Diginetica, path);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 12_391);
    assert!(
        events
            .iter()
            .all(|e| e.event_type == EventType::ProductView)
    );
    // 1;NA;81766;526309;2016-05-09
    let first = &events[0];
    assert_eq!(first.user_id, "session:1");
    assert_eq!(first.session_id.as_deref(), Some("1"));
    assert_eq!(first.item_id.as_deref(), Some("81766"));
    assert_eq!(first.event_time, MAY_9_2016_MS + 526_309);
    let sessions: BTreeSet<_> = events.iter().map(|e| e.session_id.clone()).collect();
    assert_eq!(sessions.len(), 2_986);
    // Session 48 belongs to user 2.
    assert!(
        events
            .iter()
            .filter(|e| e.session_id.as_deref() == Some("48"))
            .all(|e| e.user_id == "2")
    );
}

#[test]
fn diginetica_purchases() {
    let Some(path) = diginetica("train-purchases.csv") else {
        return;
    };
    let (events, errors) = read_all(Format::Diginetica, path);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(events.len(), 18_025);
    assert!(events.iter().all(|e| e.event_type == EventType::Purchase));
    // 150;18278;17100868;2016-05-06;16421;25911
    let first = &events[0];
    assert_eq!(first.user_id, "18278");
    assert_eq!(first.session_id.as_deref(), Some("150"));
    assert_eq!(first.order_id.as_deref(), Some("16421"));
    assert_eq!(first.item_id.as_deref(), Some("25911"));
    assert_eq!(
        first.event_time,
        MAY_9_2016_MS - 3 * 86_400_000 + 17_100_868
    );
    assert_eq!(events[1].user_id, "session:151");
    let sessions: BTreeSet<_> = events.iter().map(|e| e.session_id.clone()).collect();
    assert_eq!(sessions.len(), 12_630);
}

#[test]
fn diginetica_joined() {
    let Some(path) = diginetica("DERIVED_joined_views_purchases_sessions1-3999.csv") else {
        return;
    };
    let (events, errors) = read_all(Format::Diginetica, path);
    assert!(errors.is_empty(), "{errors:?}");
    let n = counts(&events);
    assert_eq!(n[&EventType::ProductView], 12_391);
    assert_eq!(n[&EventType::Purchase], 256);
    let buyers: BTreeSet<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::Purchase)
        .map(|e| e.session_id.clone())
        .collect();
    assert_eq!(buyers.len(), 138);
    // 150,18278.0,17100868,2016-05-06,purchase,25911,16421
    let p = events
        .iter()
        .find(|e| e.order_id.as_deref() == Some("16421"))
        .unwrap();
    assert_eq!(p.user_id, "18278");
    assert_eq!(p.item_id.as_deref(), Some("25911"));
}
