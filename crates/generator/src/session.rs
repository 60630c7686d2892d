//! The ordinary shopping session: outcome first, then a walk consistent with it.

use crate::calibration::{Calibration, SESSION_MOODS, session_probability};
use crate::catalog::Catalog;
use crate::script::{Script, cents};
use crate::users::{STAY_IN_CATEGORY, User};
use clickpath_schema::{EventType, PaymentStatus};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Geometric};

/// Probability that a navigation step before a product view is a search.
const SEARCH_STEP: f64 = 0.25;
/// Probability that it is a category listing page (otherwise: a recommendation click).
const LISTING_STEP: f64 = 0.35;
/// Probability that a carted product other than the one bought is removed again.
const REMOVE_AFTER_CART: f64 = 0.12;
/// Probability that a non-buyer with a cart starts checkout, and then tries to pay.
const ABANDONED_CHECKOUT: f64 = 0.3;
const ABANDONED_PAYMENT: f64 = 0.3;
/// Probability that a buyer's first payment attempt is declined.
const BUYER_DECLINED_FIRST: f64 = 0.06;

/// What the walk decided, for the ground truth.
pub(crate) struct Outcome {
    pub probability: f64,
    pub purchased: bool,
    pub order_value: f64,
}

/// A number of product views with the given mean (`offset` views are guaranteed).
fn views(rng: &mut ChaCha8Rng, mean: f64, offset: u64) -> u64 {
    let extra_mean = (mean - offset as f64).max(0.0);
    let g = Geometric::new(1.0 / (1.0 + extra_mean)).expect("probability in (0, 1]");
    offset + g.sample(rng)
}

/// Writes one ordinary session of `user` into `script`.
pub(crate) fn ordinary_session(
    rng: &mut ChaCha8Rng,
    catalog: &Catalog,
    calib: &Calibration,
    user: &User,
    script: &mut Script<'_>,
) -> Outcome {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let mut mood = SESSION_MOODS[SESSION_MOODS.len() - 1].0;
    for (m, w) in SESSION_MOODS {
        acc += w;
        if u < acc {
            mood = m;
            break;
        }
    }
    let p = session_probability(user.intent, mood);
    let bought = rng.random_bool(p);
    let n_views = if bought {
        views(rng, calib.buyer_mean_views, 1)
    } else {
        views(rng, calib.nonbuyer_mean_views, 0)
    };
    let bought_at = if bought {
        rng.random_range(0..n_views)
    } else {
        u64::MAX
    };

    let logged_in = user.has_account && rng.random_bool(0.25 + 0.5 * p);
    if logged_in {
        script.emit(EventType::Login);
        script.dwell(rng, p);
    }
    let landing = script.emit(EventType::PageView);
    landing.referrer = user.referrer.map(str::to_string);

    // (item, unit price, quantity) still in the cart.
    let mut cart: Vec<(u32, f64, i32)> = Vec::new();
    let mut category = user.pick_category(catalog, rng);
    for i in 0..n_views {
        script.dwell(rng, p);
        if i > 0 && !rng.random_bool(STAY_IN_CATEGORY) {
            category = user.pick_category(catalog, rng);
        }
        let step: f64 = rng.random();
        let cat = &catalog.categories[category as usize];
        if step < SEARCH_STEP {
            script.emit(EventType::Search).search_query = Some(cat.query.clone());
            script.dwell(rng, p);
        } else if step < SEARCH_STEP + LISTING_STEP {
            script.emit(EventType::PageView).category = Some(cat.name.clone());
            script.dwell(rng, p);
        }
        let item = catalog.pick_item(category, rng);
        script.emit_item(EventType::ProductView, catalog, item);
        let carted = if i == bought_at {
            true
        } else if bought {
            rng.random_bool(calib.buyer_extra_cart_probability)
        } else {
            rng.random_bool(calib.nonbuyer_cart_probability(p))
        };
        if carted {
            let qty = if rng.random_bool(0.85) { 1 } else { 2 };
            script.dwell(rng, p);
            script
                .emit_item(EventType::AddToCart, catalog, item)
                .quantity = Some(qty);
            if i != bought_at && rng.random_bool(REMOVE_AFTER_CART) {
                script.dwell(rng, p);
                script
                    .emit_item(EventType::RemoveFromCart, catalog, item)
                    .quantity = Some(qty);
            } else {
                cart.push((item, catalog.items[item as usize].price, qty));
            }
        } else if rng.random_bool(0.02 + 0.1 * p) {
            script.dwell(rng, p);
            script.emit_item(EventType::Wishlist, catalog, item);
        }
    }

    let total = cents(cart.iter().map(|(_, price, q)| price * f64::from(*q)).sum());
    let card = user.cards.first().cloned();
    let mut order_value = 0.0;
    if bought {
        if user.has_account && !logged_in && rng.random_bool(0.8) {
            script.dwell(rng, p);
            script.emit(EventType::Login);
        }
        script.dwell(rng, p);
        script.emit_with_total(EventType::BeginCheckout, total);
        if rng.random_bool(BUYER_DECLINED_FIRST) {
            script.dwell(rng, p);
            script.emit_payment(total, PaymentStatus::Failed, card.clone());
        }
        script.dwell(rng, p);
        let paying_card = user.cards.last().cloned();
        script.emit_payment(total, PaymentStatus::Succeeded, paying_card);
        script.dwell(rng, p);
        let order_id = script.ids.order();
        let purchase = script.emit_with_total(EventType::Purchase, total);
        purchase.order_id = Some(order_id);
        order_value = total;
    } else if total > 0.0 && rng.random_bool(ABANDONED_CHECKOUT) {
        script.dwell(rng, p);
        script.emit_with_total(EventType::BeginCheckout, total);
        if rng.random_bool(ABANDONED_PAYMENT) {
            script.dwell(rng, p);
            script.emit_payment(total, PaymentStatus::Failed, card);
        }
    }
    if rng.random_bool(0.3) {
        script.dwell(rng, p);
        script.emit(EventType::PageView);
    }
    Outcome {
        probability: p,
        purchased: bought,
        order_value,
    }
}
