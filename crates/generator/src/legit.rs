//! Rare legitimate sessions that look odd (see [`crate::LegitPattern`]): a detector must not
//! alert on them. Each writes one session of an existing user into a [`Script`].

use crate::catalog::Catalog;
use crate::script::{Script, cents};
use clickpath_schema::{EventType, PaymentStatus};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Pays `total` with the user's first card (a wallet when they have none), then purchases.
fn pay_and_buy(rng: &mut ChaCha8Rng, script: &mut Script<'_>, cards: &[String], total: f64) {
    script.wait(rng, 10_000, 40_000);
    script.emit_payment(total, PaymentStatus::Succeeded, cards.first().cloned());
    script.wait(rng, 1_000, 4_000);
    let order_id = script.ids.order();
    script.emit_with_total(EventType::Purchase, total).order_id = Some(order_id);
}

/// A wholesale buyer: 2 to 6 items viewed, then added 20 to 200 at a time, checked out within
/// minutes.
pub(crate) fn bulk_buyer(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
    cards: &[String],
) {
    script.login_and_land(rng, 3_000, 10_000);
    let category = catalog.popular_category(rng);
    let mut total = 0.0;
    for _ in 0..rng.random_range(2..=6) {
        script.wait(rng, 15_000, 60_000);
        let item = catalog.pick_item(category, rng);
        script.emit_item(EventType::ProductView, catalog, item);
        script.wait(rng, 10_000, 40_000);
        let qty = rng.random_range(20..=200);
        script
            .emit_item(EventType::AddToCart, catalog, item)
            .quantity = Some(qty);
        total += catalog.items[item as usize].price * f64::from(qty);
    }
    let total = cents(total);
    script.wait(rng, 20_000, 90_000);
    script.emit_with_total(EventType::BeginCheckout, total);
    pay_and_buy(rng, script, cards, total);
}

/// A fast repeat buyer: 3 to 6 one-item orders within minutes; a fifth of the payments are
/// declined once first (the user then pays with their second card, or the same one again).
pub(crate) fn fast_repeat_buyer(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
    cards: &[String],
) {
    script.emit(EventType::Login);
    let category = catalog.popular_category(rng);
    for _ in 0..rng.random_range(3..=6) {
        script.wait(rng, 10_000, 40_000);
        let item = catalog.pick_item(category, rng);
        let price = catalog.items[item as usize].price;
        script.emit_item(EventType::ProductView, catalog, item);
        script.wait(rng, 5_000, 20_000);
        script
            .emit_item(EventType::AddToCart, catalog, item)
            .quantity = Some(1);
        script.wait(rng, 5_000, 15_000);
        script.emit_with_total(EventType::BeginCheckout, price);
        if !cards.is_empty() && rng.random_bool(0.2) {
            script.wait(rng, 5_000, 15_000);
            script.emit_payment(price, PaymentStatus::Failed, cards.last().cloned());
        }
        pay_and_buy(rng, script, cards, price);
    }
}

/// A shopper on a new phone (the caller has changed the script's device and network): logs in,
/// browses a favourite-like category and buys an ordinary basket of one or two items.
pub(crate) fn new_device_purchase(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    script: &mut Script<'_>,
    cards: &[String],
) {
    script.login_and_land(rng, 3_000, 10_000);
    let category = catalog.popular_category(rng);
    let mut viewed = Vec::new();
    for _ in 0..rng.random_range(2..=5) {
        script.wait(rng, 10_000, 60_000);
        let item = catalog.pick_item(category, rng);
        script.emit_item(EventType::ProductView, catalog, item);
        viewed.push(item);
    }
    let mut total = 0.0;
    for &item in viewed.iter().take(rng.random_range(1..=2)) {
        script.wait(rng, 5_000, 30_000);
        let qty = rng.random_range(1..=2);
        script
            .emit_item(EventType::AddToCart, catalog, item)
            .quantity = Some(qty);
        total += catalog.items[item as usize].price * f64::from(qty);
    }
    let total = cents(total);
    script.wait(rng, 20_000, 60_000);
    script.emit_with_total(EventType::BeginCheckout, total);
    pay_and_buy(rng, script, cards, total);
}
