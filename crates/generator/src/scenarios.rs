//! Fraud and bot scenarios. Each writes its events into a [`Script`] and returns the index of
//! the event from which it is detectable (see [`crate::ScenarioKind`] for the definitions).

use crate::catalog::Catalog;
use crate::script::{Script, cents};
use crate::users::{FOREIGN_COUNTRIES, card_fingerprint};
use clickpath_schema::{EventType, PaymentStatus};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

/// Events a crawler needs before it is recognisable.
const CRAWLER_EVIDENCE: usize = 30;
/// Failed distinct-card payments that make card testing recognisable.
const CARD_TESTING_EVIDENCE: usize = 5;
/// Adds without views that make cart stuffing recognisable.
const CART_STUFFING_EVIDENCE: usize = 5;

/// A crawler: a fixed cadence with a few ms of jitter, the whole catalogue, no cart.
pub(crate) fn crawler(rng: &mut ChaCha8Rng, catalog: &Catalog, script: &mut Script<'_>) -> usize {
    let interval = rng.random_range(800..2_500);
    let n = rng.random_range(150..300);
    script.emit(EventType::PageView);
    for i in 1..n {
        script.t += interval + rng.random_range(-3..=3);
        if i % 10 == 0 {
            let c = rng.random_range(0..catalog.categories.len());
            script.emit(EventType::PageView).category = Some(catalog.categories[c].name.clone());
        } else {
            let item = catalog.uniform_item(rng);
            script.emit_item(EventType::ProductView, catalog, item);
        }
    }
    CRAWLER_EVIDENCE - 1
}

/// Distinct items a jittered crawler views before it is recognisable.
const JITTERED_CRAWLER_EVIDENCE: usize = 60;

/// A crawler that sleeps log-normal times (median 1.5 to 4 s, as irregular as a shopper), over the
/// whole catalogue, with no cart.
pub(crate) fn jittered_crawler(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
) -> usize {
    let median = rng.random_range(1_500.0..4_000.0f64);
    let sigma = rng.random_range(0.5..0.9);
    let gaps = LogNormal::new(median.ln(), sigma).expect("finite parameters");
    let n = rng.random_range(150..300);
    script.emit(EventType::PageView);
    let mut seen = std::collections::HashSet::new();
    let mut detectable = 0;
    for _ in 1..n {
        script.t += gaps.sample(rng).min(60_000.0) as i64;
        let item = catalog.uniform_item(rng);
        script.emit_item(EventType::ProductView, catalog, item);
        if seen.insert(item) && seen.len() == JITTERED_CRAWLER_EVIDENCE {
            detectable = script.events.len() - 1;
        }
    }
    detectable
}

/// Slow card testing: a cheap item, then 8 to 14 declined payments with a new card each, spread
/// evenly (plus or minus 20 %) over 2 to 3 hours (so never 3 within 10 minutes).
pub(crate) fn slow_card_testing(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
) -> usize {
    script.emit(EventType::PageView);
    let item = catalog.uniform_item(rng);
    let price = catalog.items[item as usize].price;
    script.wait(rng, 2_000, 8_000);
    script.emit_item(EventType::ProductView, catalog, item);
    script.wait(rng, 1_000, 4_000);
    script
        .emit_item(EventType::AddToCart, catalog, item)
        .quantity = Some(1);
    script.wait(rng, 2_000, 6_000);
    script.emit_with_total(EventType::BeginCheckout, price);
    let mut detectable = 0;
    let n: usize = rng.random_range(8..=14);
    let gap = rng.random_range(2 * 3_600_000..3 * 3_600_000) / (n as i64 - 1);
    for k in 0..n {
        if k > 0 {
            script.wait(rng, gap * 4 / 5, gap * 6 / 5);
        }
        script.emit_payment(price, PaymentStatus::Failed, Some(card_fingerprint(rng)));
        if k + 1 == CARD_TESTING_EVIDENCE {
            detectable = script.events.len() - 1;
        }
    }
    detectable
}

/// Accounts of a card-testing ring.
pub(crate) const RING_MIN_ACCOUNTS: usize = 8;
/// Most accounts of a card-testing ring.
pub(crate) const RING_MAX_ACCOUNTS: usize = 12;
/// Distinct failed cards, and accounts, that make a ring recognisable.
const RING_EVIDENCE_CARDS: usize = 5;
const RING_EVIDENCE_ACCOUNTS: usize = 3;

/// One account of a card-testing ring: a short shopper-like visit to a cheap item, then one or two
/// declined payments with new cards.
pub(crate) fn ring_account(rng: &mut ChaCha8Rng, catalog: &Catalog, script: &mut Script<'_>) {
    script.emit(EventType::PageView);
    let item = catalog.uniform_item(rng);
    let price = catalog.items[item as usize].price;
    script.wait(rng, 5_000, 20_000);
    script.emit_item(EventType::ProductView, catalog, item);
    script.wait(rng, 5_000, 20_000);
    script
        .emit_item(EventType::AddToCart, catalog, item)
        .quantity = Some(1);
    script.wait(rng, 5_000, 20_000);
    script.emit_with_total(EventType::BeginCheckout, price);
    for _ in 0..rng.random_range(1..=2) {
        script.wait(rng, 20_000, 60_000);
        script.emit_payment(price, PaymentStatus::Failed, Some(card_fingerprint(rng)));
    }
}

/// When a ring (its accounts' events) has failed enough distinct cards across enough accounts.
pub(crate) fn ring_detectable_at(accounts: &[(String, Vec<clickpath_schema::ClickEvent>)]) -> i64 {
    let mut failures: Vec<(i64, usize, &str)> = accounts
        .iter()
        .enumerate()
        .flat_map(|(a, (_, events))| {
            events
                .iter()
                .filter(|e| e.event_type == EventType::PaymentAttempt)
                .map(move |e| {
                    let card = e
                        .payment
                        .as_ref()
                        .and_then(|p| p.card_fingerprint.as_deref())
                        .unwrap_or("");
                    (e.event_time, a, card)
                })
        })
        .collect();
    failures.sort();
    let (mut cards, mut users) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    for (t, a, card) in failures {
        cards.insert(card);
        users.insert(a);
        if cards.len() >= RING_EVIDENCE_CARDS && users.len() >= RING_EVIDENCE_ACCOUNTS {
            return t;
        }
    }
    i64::MAX
}

/// Card testing: one cheap item, then many declined payments with a new card each.
pub(crate) fn card_testing(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
) -> usize {
    script.emit(EventType::PageView);
    let item = (0..5)
        .map(|_| catalog.uniform_item(rng))
        .min_by(|a, b| {
            catalog.items[*a as usize]
                .price
                .total_cmp(&catalog.items[*b as usize].price)
        })
        .expect("five candidates");
    let price = catalog.items[item as usize].price;
    script.wait(rng, 2_000, 8_000);
    script.emit_item(EventType::ProductView, catalog, item);
    script.wait(rng, 1_000, 4_000);
    script
        .emit_item(EventType::AddToCart, catalog, item)
        .quantity = Some(1);
    script.wait(rng, 2_000, 6_000);
    script.emit_with_total(EventType::BeginCheckout, price);
    let attempts = rng.random_range(8..25);
    let mut detectable = 0;
    for k in 0..attempts {
        script.wait(rng, 4_000, 20_000);
        script.emit_payment(price, PaymentStatus::Failed, Some(card_fingerprint(rng)));
        if k + 1 == CARD_TESTING_EVIDENCE {
            detectable = script.events.len() - 1;
        }
    }
    if rng.random_bool(0.4) {
        // One card finally works; the tester buys the cheap item to confirm it.
        script.wait(rng, 4_000, 20_000);
        script.emit_payment(price, PaymentStatus::Succeeded, Some(card_fingerprint(rng)));
        script.wait(rng, 1_000, 3_000);
        let order_id = script.ids.order();
        script.emit_with_total(EventType::Purchase, price).order_id = Some(order_id);
    }
    detectable
}

/// Cart stuffing: adds straight from listings, no product views, absurd quantities.
pub(crate) fn cart_stuffing(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
) -> usize {
    script.login_and_land(rng, 2_000, 6_000);
    let n = rng.random_range(15..40);
    let mut detectable = 0;
    for k in 0..n {
        script.wait(rng, 1_000, 4_000);
        let item = catalog.uniform_item(rng);
        script
            .emit_item(EventType::AddToCart, catalog, item)
            .quantity = Some(rng.random_range(50..1_000));
        if k + 1 == CART_STUFFING_EVIDENCE {
            detectable = script.events.len() - 1;
        }
    }
    detectable
}

/// How long a human-speed cart stuffer holds absurd quantities before it is recognisable.
pub(crate) const CART_HOLD_MS: i64 = 20 * 60_000;
/// Absurd-quantity adds a held cart needs to be recognisable.
const HELD_ABSURD_ADDS: usize = 3;

/// Cart stuffing at human speed: a login, then items viewed one by one and added in quantities of
/// 20 to 200, one every one to four minutes, for at least 30 minutes; never a checkout.
pub(crate) fn slow_cart_stuffing(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
) -> usize {
    script.login_and_land(rng, 3_000, 10_000);
    let (mut first_add, mut adds, mut detectable) = (None::<i64>, 0, None);
    // The detector judges a held cart on the user's next event, whatever it is.
    let mut check = |script: &Script<'_>, adds: usize, first_add: Option<i64>| {
        if detectable.is_none()
            && adds >= HELD_ABSURD_ADDS
            && first_add.is_some_and(|t0| script.t >= t0 + CART_HOLD_MS)
        {
            detectable = Some(script.events.len() - 1);
        }
    };
    let n = rng.random_range(12..30);
    let mut k = 0;
    while k < n || first_add.is_none_or(|t0| script.t < t0 + CART_HOLD_MS + 10 * 60_000) {
        k += 1;
        script.wait(rng, 20_000, 90_000);
        let item = catalog.uniform_item(rng);
        script.emit_item(EventType::ProductView, catalog, item);
        check(script, adds, first_add);
        script.wait(rng, 30_000, 150_000);
        script
            .emit_item(EventType::AddToCart, catalog, item)
            .quantity = Some(rng.random_range(20..=200));
        first_add.get_or_insert(script.t);
        adds += 1;
        check(script, adds, first_add);
    }
    detectable.unwrap_or(script.events.len() - 1)
}

/// An account takeover: the script already carries the victim's id; this replaces its client
/// (device, network and, unless `local`, country) with the attacker's and buys expensive items
/// within minutes. A `local` attacker goes through a residential proxy in the victim's country.
pub(crate) fn account_takeover(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
    victim_card: Option<String>,
    local: bool,
) -> usize {
    if !local {
        let foreign: Vec<&str> = FOREIGN_COUNTRIES
            .iter()
            .copied()
            .filter(|c| *c != script.country)
            .collect();
        script.country = foreign[rng.random_range(0..foreign.len())].to_string();
    }
    script.device = format!("desktop-{:06x}", rng.random_range(0..0x100_0000u32));
    script.ip_prefix_hash = format!("{:016x}", rng.random::<u64>());
    script.channel = Some("direct".to_string());
    script.login_and_land(rng, 5_000, 20_000);
    let mut total = 0.0;
    for _ in 0..rng.random_range(1..=2) {
        let item = catalog.expensive[rng.random_range(0..catalog.expensive.len())];
        let qty = rng.random_range(1..=3);
        script.wait(rng, 10_000, 40_000);
        script.emit_item(EventType::ProductView, catalog, item);
        script.wait(rng, 5_000, 15_000);
        script
            .emit_item(EventType::AddToCart, catalog, item)
            .quantity = Some(qty);
        total += catalog.items[item as usize].price * f64::from(qty);
    }
    let total = cents(total);
    script.wait(rng, 10_000, 40_000);
    script.emit_with_total(EventType::BeginCheckout, total);
    let detectable = script.events.len() - 1;
    script.wait(rng, 10_000, 30_000);
    let card = victim_card.unwrap_or_else(|| card_fingerprint(rng));
    script.emit_payment(total, PaymentStatus::Succeeded, Some(card));
    script.wait(rng, 3_000, 8_000);
    let order_id = script.ids.order();
    script.emit_with_total(EventType::Purchase, total).order_id = Some(order_id);
    detectable
}
