//! Hand-worked cases of the definitions in `docs/analytics.md`.

use super::*;
use clickpath_schema::EventType::{self, *};

fn ev(user: &str, t: EventType, at: i64) -> ClickEvent {
    let mut e = ClickEvent::new(format!("{user}-{at}-{t}"), user, t, at);
    e.channel = Some("email".into());
    e.device = Some("mobile-00aa11".into());
    e.category = Some("electronics/phones".into());
    e
}

fn spec(order: FunnelOrder, window_ms: i64) -> FunnelSpec {
    FunnelSpec::new(
        vec![
            Step::of(&[ProductView]),
            Step::of(&[AddToCart]),
            Step::of(&[Purchase]),
        ],
        order,
        window_ms,
        Unit::User,
        1000,
    )
    .unwrap()
}

fn counts(events: &[ClickEvent], s: &FunnelSpec) -> FunnelReport {
    funnel_report(&journeys(events, s.unit), s)
}

#[test]
fn ordered_allows_other_events_between_steps_and_strict_does_not() {
    let evs = vec![
        ev("u", ProductView, 0),
        ev("u", Search, 10),
        ev("u", AddToCart, 20),
        ev("u", PageView, 30),
        ev("u", Purchase, 40),
    ];
    let r = counts(&evs, &spec(FunnelOrder::Ordered, 100));
    assert_eq!(r.overall.uniques, vec![1, 1, 1]);
    assert_eq!(r.overall.time_to_convert.median_ms, Some(40));
    assert_eq!(r.overall.step_timings[0].median_ms, Some(20));
    let r = counts(&evs, &spec(FunnelOrder::Strict, 100));
    assert_eq!(r.overall.uniques, vec![1, 0, 0]);
    assert_eq!(r.overall.drop_off, vec![1, 0]);
}

#[test]
fn strict_restarts_at_a_later_first_step() {
    // The first view is followed by another view, so only the second one's attempt goes on.
    let evs = vec![
        ev("u", ProductView, 0),
        ev("u", ProductView, 5),
        ev("u", AddToCart, 6),
        ev("u", Purchase, 9),
    ];
    let s = spec(FunnelOrder::Strict, 100);
    let r = counts(&evs, &s);
    assert_eq!(r.overall.uniques, vec![1, 1, 1]);
    assert_eq!(r.overall.time_to_convert.median_ms, Some(4));
    // Totals: the first view's attempt (reach 1) and the second's (reach 3).
    assert_eq!(r.overall.totals, vec![2, 1, 1]);
}

#[test]
fn the_window_is_measured_from_the_first_step_inclusively() {
    let evs = vec![
        ev("a", ProductView, 0),
        ev("a", AddToCart, 50),
        ev("a", Purchase, 100),
        ev("b", ProductView, 0),
        ev("b", AddToCart, 50),
        ev("b", Purchase, 101),
    ];
    let r = counts(&evs, &spec(FunnelOrder::Ordered, 100));
    assert_eq!(r.overall.uniques, vec![2, 2, 1]);
    assert!((r.overall.conversion_rate() - 0.5).abs() < 1e-12);
}

#[test]
fn a_later_start_can_convert_when_an_earlier_one_runs_out_of_time() {
    let evs = vec![
        ev("u", ProductView, 0),
        ev("u", ProductView, 500),
        ev("u", AddToCart, 550),
        ev("u", Purchase, 560),
    ];
    let s = spec(FunnelOrder::Ordered, 100);
    let j = journeys(&evs, Unit::User);
    let best = best_attempt(&s, &j[0].events).unwrap();
    assert_eq!((best.start, best.reached()), (1, 3));
    let r = counts(&evs, &s);
    assert_eq!(r.overall.uniques, vec![1, 1, 1]);
    assert_eq!(r.overall.totals, vec![2, 1, 1]);
    // The unit is bucketed by its best attempt's start (500 ms: bucket 0 with 1 s buckets).
    assert_eq!(r.buckets.len(), 1);
}

#[test]
fn any_order_counts_distinct_steps_done() {
    let evs = vec![
        ev("u", AddToCart, 0),
        ev("u", Purchase, 10),
        ev("u", ProductView, 20),
        ev("v", Purchase, 0),
        ev("v", Purchase, 5),
    ];
    let r = counts(&evs, &spec(FunnelOrder::AnyOrder, 100));
    assert_eq!(r.overall.uniques, vec![2, 1, 1]);
    let r = counts(&evs, &spec(FunnelOrder::Ordered, 100));
    assert_eq!(r.overall.uniques, vec![1, 0, 0]);
}

#[test]
fn totals_restart_only_after_a_completed_attempt() {
    // view cart buy | view cart buy: two conversions; the second view is outside the first attempt.
    let evs = vec![
        ev("u", ProductView, 0),
        ev("u", AddToCart, 1),
        ev("u", Purchase, 2),
        ev("u", ProductView, 3),
        ev("u", AddToCart, 4),
        ev("u", Purchase, 5),
    ];
    let r = counts(&evs, &spec(FunnelOrder::Ordered, 100));
    assert_eq!(r.overall.uniques, vec![1, 1, 1]);
    assert_eq!(r.overall.totals, vec![2, 2, 2]);
}

#[test]
fn segments_and_buckets_split_units() {
    let mut evs = vec![
        ev("a", ProductView, 0),
        ev("a", AddToCart, 1),
        ev("a", Purchase, 2),
        ev("b", ProductView, 1500),
    ];
    evs[3].channel = Some("organic".into());
    evs[3].device = Some("desktop-123456".into());
    let r = counts(&evs, &spec(FunnelOrder::Ordered, 100));
    let starts: Vec<i64> = r.buckets.iter().map(|b| b.start_ms).collect();
    assert_eq!(starts, vec![0, 1000]);
    let channel = &r.segments[0];
    assert_eq!(channel.segment, Segment::Channel);
    let names: Vec<(&str, Vec<u64>)> = channel
        .values
        .iter()
        .map(|(v, c)| (v.as_str(), c.uniques.clone()))
        .collect();
    assert_eq!(
        names,
        vec![("email", vec![1, 1, 1]), ("organic", vec![1, 0, 0])]
    );
    let device: Vec<&str> = r.segments[1]
        .values
        .iter()
        .map(|(v, _)| v.as_str())
        .collect();
    assert_eq!(device, vec!["desktop", "mobile"]);
    assert_eq!(r.segments[2].values[0].0, "electronics");
}

#[test]
fn paths_compress_repeats_and_cut_long_ones() {
    let evs = vec![
        ev("a", PageView, 0),
        ev("a", ProductView, 1),
        ev("a", ProductView, 2),
        ev("a", AddToCart, 3),
        ev("a", Purchase, 4),
        ev("b", PageView, 0),
        ev("b", ProductView, 1),
        ev("b", AddToCart, 3),
        ev("b", Purchase, 4),
        ev("c", PageView, 0),
        ev("c", ProductView, 1),
        ev("c", PageView, 2),
    ];
    let s = spec(FunnelOrder::Ordered, 100);
    let units = journeys(&evs, Unit::User);
    let r = path_report(&units, &s, &PathSpec { max_len: 3, top: 5 });
    assert_eq!(r.units, 3);
    assert_eq!(r.converted, 2);
    assert_eq!(
        r.top[0].path.label(),
        "PAGE_VIEW > PRODUCT_VIEW > ADD_TO_CART > …"
    );
    assert_eq!((r.top[0].units, r.top[0].converted), (2, 2));
    assert_eq!(
        r.top_dropped[0].path.label(),
        "PAGE_VIEW > PRODUCT_VIEW > PAGE_VIEW"
    );
    let first = &r.flows[0];
    assert_eq!(
        (first.depth, first.from, first.to, first.units),
        (0, PageView, Some(ProductView), 3)
    );
}

#[test]
fn factors_rank_by_odds_ratio_with_haldane_correction() {
    // 4 converters all searched; 4 droppers never did.
    let mut evs = Vec::new();
    for i in 0..4 {
        let u = format!("c{i}");
        evs.push(ev(&u, ProductView, 0));
        evs.push(ev(&u, Search, 1));
        evs.push(ev(&u, AddToCart, 2));
        evs.push(ev(&u, Purchase, 3));
        let u = format!("d{i}");
        evs.push(ev(&u, ProductView, 0));
        evs.push(ev(&u, PageView, 1));
    }
    let s = spec(FunnelOrder::Ordered, 100);
    let units = journeys(&evs, Unit::User);
    let f = decision_factors(
        &units,
        &s,
        &FactorSpec {
            min_support: 4,
            z: 1.96,
            top: 10,
        },
    );
    let search = f.iter().find(|f| f.name == "event:SEARCH").unwrap();
    // (4.5 * 4.5) / (0.5 * 0.5) = 81.
    assert!((search.odds_ratio - 81.0).abs() < 1e-9);
    assert!(search.significant());
    assert!((search.lift - 2.0).abs() < 1e-12);
    let page = f.iter().find(|f| f.name == "event:PAGE_VIEW").unwrap();
    assert!((page.odds_ratio - 1.0 / 81.0).abs() < 1e-12);
    // Shared by everyone: odds ratio 1, not significant.
    let channel = f.iter().find(|f| f.name == "channel=email").unwrap();
    assert!((channel.odds_ratio - 1.0).abs() < 1e-12);
    assert!(!channel.significant());
    assert_eq!(f.last().unwrap().odds_ratio.ln().abs(), 0.0);
    // Significant factors come first.
    let sig: Vec<bool> = f.iter().map(Factor::significant).collect();
    assert!(sig[0] && sig.windows(2).all(|w| w[0] || !w[1]), "{sig:?}");
    // Steps are never factors.
    assert!(f.iter().all(|f| f.name != "event:ADD_TO_CART"));
}

#[test]
fn invalid_specs_are_rejected() {
    let one = vec![Step::of(&[ProductView])];
    assert_eq!(
        FunnelSpec::new(one, FunnelOrder::Ordered, 1, Unit::User, 1),
        Err(AnalyticsError::TooFewSteps(1))
    );
    let overlap = vec![Step::of(&[ProductView]), Step::of(&[ProductView, Purchase])];
    assert!(matches!(
        FunnelSpec::new(overlap, FunnelOrder::Ordered, 1, Unit::User, 1),
        Err(AnalyticsError::OverlappingSteps { .. })
    ));
    let ok = vec![Step::of(&[ProductView]), Step::of(&[Purchase])];
    assert_eq!(
        FunnelSpec::new(ok, FunnelOrder::Ordered, 0, Unit::User, 1),
        Err(AnalyticsError::NotPositive("the conversion window"))
    );
    assert_eq!(
        Step::parse("begin_checkout|PAYMENT_ATTEMPT")
            .unwrap()
            .events,
        vec![BeginCheckout, PaymentAttempt]
    );
    assert!(matches!(
        Step::parse("CHECKOUT"),
        Err(AnalyticsError::BadStep(_))
    ));
}
