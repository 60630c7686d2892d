//! Writing one session's events: ids, the shared client fields, the clock and dwell times.

use crate::catalog::Catalog;
use crate::users::{ClientProfile, User};
use clickpath_schema::{ClickEvent, EventType, Payment, PaymentStatus};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Sigma of the log-normal dwell times.
const DWELL_SIGMA: f64 = 0.8;
/// Dwell times are clipped here so that a session never splits at a 30 min inactivity gap.
pub(crate) const MAX_DWELL_MS: i64 = 15 * 60_000;
const MIN_DWELL_MS: i64 = 300;

/// Deterministic, unique ids for everything the generator names.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    tag: String,
    events: u64,
    orders: u64,
    sessions: u64,
    malformed: u64,
}

impl Ids {
    pub fn new(seed: u64) -> Self {
        Ids {
            tag: format!("{seed:x}"),
            events: 0,
            orders: 0,
            sessions: 0,
            malformed: 0,
        }
    }

    pub fn event(&mut self) -> String {
        self.events += 1;
        format!("ev-{}-{}", self.tag, self.events)
    }

    pub fn order(&mut self) -> String {
        self.orders += 1;
        format!("ord-{}-{}", self.tag, self.orders)
    }

    pub fn session(&mut self) -> String {
        self.sessions += 1;
        format!("ses-{}-{}", self.tag, self.sessions)
    }

    pub fn malformed(&mut self) -> String {
        self.malformed += 1;
        format!("bad-{}-{}", self.tag, self.malformed)
    }
}

/// Median dwell after an event of this type, before the next one (ms).
fn median_dwell_ms(after: EventType) -> f64 {
    match after {
        EventType::PageView => 12_000.0,
        EventType::Search => 9_000.0,
        EventType::ProductView => 35_000.0,
        EventType::AddToCart => 12_000.0,
        EventType::RemoveFromCart | EventType::Wishlist => 8_000.0,
        EventType::BeginCheckout => 45_000.0,
        EventType::PaymentAttempt => 4_000.0,
        EventType::Purchase => 20_000.0,
        EventType::Login => 6_000.0,
    }
}

/// A log-normal human dwell time after `after`; high intent reads product pages longer.
pub(crate) fn dwell_ms(rng: &mut ChaCha8Rng, after: EventType, p: f64) -> i64 {
    let mut median = median_dwell_ms(after);
    if after == EventType::ProductView {
        median *= 1.0 + p;
    }
    let z: f64 = StandardNormal.sample(rng);
    ((median.ln() + DWELL_SIGMA * z).exp() as i64).clamp(MIN_DWELL_MS, MAX_DWELL_MS)
}

/// One session being written: the shared fields of its events and its clock.
pub(crate) struct Script<'a> {
    pub ids: &'a mut Ids,
    pub user_id: String,
    pub session_id: Option<String>,
    pub device: String,
    pub country: String,
    pub ip_prefix_hash: String,
    pub channel: Option<String>,
    pub currency: String,
    /// Event time of the next event.
    pub t: i64,
    pub events: Vec<ClickEvent>,
}

impl<'a> Script<'a> {
    pub fn new(
        ids: &'a mut Ids,
        user_id: &str,
        client: &ClientProfile,
        start: i64,
        currency: &str,
    ) -> Self {
        Script {
            ids,
            user_id: user_id.to_string(),
            session_id: None,
            device: client.device.clone(),
            country: client.country.to_string(),
            ip_prefix_hash: client.ip_prefix_hash.clone(),
            channel: None,
            currency: currency.to_string(),
            t: start,
            events: Vec::new(),
        }
    }

    /// A new session of `user`: a fresh session id, the user's client and channel.
    pub fn session(ids: &'a mut Ids, user: &User, start: i64, currency: &str) -> Self {
        let session_id = ids.session();
        let mut script = Script::new(ids, &user.id, &user.client, start, currency);
        script.session_id = Some(session_id);
        script.channel = Some(user.channel.to_string());
        script
    }

    /// A `LOGIN`, then after `lo..hi` ms the landing `PAGE_VIEW`: how a logged-in visit starts.
    pub fn login_and_land(&mut self, rng: &mut ChaCha8Rng, lo: i64, hi: i64) {
        self.emit(EventType::Login);
        self.wait(rng, lo, hi);
        self.emit(EventType::PageView);
    }

    /// Appends an event of `ty` at the current time and returns it for filling in.
    pub fn emit(&mut self, ty: EventType) -> &mut ClickEvent {
        let mut e = ClickEvent::new(self.ids.event(), self.user_id.clone(), ty, self.t);
        e.session_id.clone_from(&self.session_id);
        e.device = Some(self.device.clone());
        e.country = Some(self.country.clone());
        e.ip_prefix_hash = Some(self.ip_prefix_hash.clone());
        e.channel.clone_from(&self.channel);
        self.events.push(e);
        self.events.last_mut().expect("just pushed")
    }

    /// Appends an event about `item` (id, category, brand, price, currency).
    pub fn emit_item(&mut self, ty: EventType, catalog: &Catalog, item: u32) -> &mut ClickEvent {
        let currency = self.currency.clone();
        let it = &catalog.items[item as usize];
        let e = self.emit(ty);
        e.item_id = Some(Catalog::item_id(item));
        e.category = Some(catalog.categories[it.category as usize].name.clone());
        e.brand = Some(catalog.brand(item).to_string());
        e.price = Some(it.price);
        e.currency = Some(currency);
        e
    }

    /// Appends a checkout-side event carrying the cart total in `order_value`.
    pub fn emit_with_total(&mut self, ty: EventType, total: f64) -> &mut ClickEvent {
        let currency = self.currency.clone();
        let e = self.emit(ty);
        e.order_value = Some(total);
        e.currency = Some(currency);
        e
    }

    /// Appends a `PAYMENT_ATTEMPT` for `total`.
    pub fn emit_payment(
        &mut self,
        total: f64,
        status: PaymentStatus,
        card: Option<String>,
    ) -> &mut ClickEvent {
        let e = self.emit_with_total(EventType::PaymentAttempt, total);
        e.payment = Some(Payment {
            status,
            method: if card.is_some() { "card" } else { "paypal" }.to_string(),
            card_fingerprint: card,
        });
        e
    }

    /// Advances the clock by a human dwell time after the last event.
    pub fn dwell(&mut self, rng: &mut ChaCha8Rng, p: f64) {
        let after = self
            .events
            .last()
            .map_or(EventType::PageView, |e| e.event_type);
        self.t += dwell_ms(rng, after, p);
    }

    /// Advances the clock by a random amount in `[lo, hi)` ms.
    pub fn wait(&mut self, rng: &mut ChaCha8Rng, lo: i64, hi: i64) {
        self.t += rng.random_range(lo..hi);
    }
}

/// Rounds money to cents so that totals print the way a shop would show them.
pub(crate) fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn dwell_stays_in_bounds_and_has_the_documented_median() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut xs: Vec<i64> = (0..4001)
            .map(|_| dwell_ms(&mut rng, EventType::PageView, 0.0))
            .collect();
        assert!(
            xs.iter()
                .all(|&x| (MIN_DWELL_MS..=MAX_DWELL_MS).contains(&x))
        );
        xs.sort();
        let median = xs[2000] as f64;
        assert!((median / 12_000.0 - 1.0).abs() < 0.1, "median {median}");
    }

    #[test]
    fn ids_are_distinct_per_kind() {
        let mut ids = Ids::new(42);
        assert_eq!(ids.event(), "ev-2a-1");
        assert_eq!(ids.event(), "ev-2a-2");
        assert_eq!(ids.order(), "ord-2a-1");
        assert_eq!(ids.malformed(), "bad-2a-1");
    }
}
