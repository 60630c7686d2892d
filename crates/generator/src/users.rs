//! Simulated shoppers: latent purchase intent, category affinity and a stable client profile.

use crate::catalog::Catalog;
use rand::Rng;
use rand::distr::{Distribution, weighted::WeightedIndex};
use rand_chacha::ChaCha8Rng;
use rand_distr::Beta;

const COUNTRIES: [(&str, u32); 9] = [
    ("DE", 30),
    ("FR", 15),
    ("GB", 15),
    ("NL", 8),
    ("PL", 8),
    ("ES", 8),
    ("IT", 8),
    ("AT", 4),
    ("SE", 4),
];
/// Countries an account takeover can come from (any of them differs from the victim's).
pub(crate) const FOREIGN_COUNTRIES: [&str; 6] = ["US", "BR", "IN", "TR", "VN", "MX"];
const DEVICES: [(&str, u32); 3] = [("mobile", 60), ("desktop", 30), ("tablet", 10)];
const CHANNELS: [(&str, Option<&str>, u32); 6] = [
    ("organic", Some("google.com"), 35),
    ("direct", None, 25),
    ("paid_search", Some("google.com/ads"), 15),
    ("email", Some("newsletter"), 10),
    ("social", Some("instagram.com"), 10),
    ("affiliate", Some("partner.example"), 5),
];

/// Probability that a session stays in its current category at the next product view.
pub(crate) const STAY_IN_CATEGORY: f64 = 0.7;
/// Probability that a product view comes from a category outside the user's favourites.
const EXPLORE: f64 = 0.2;

/// The devices, countries and channels a user keeps across sessions.
#[derive(Debug, Clone)]
pub(crate) struct ClientProfile {
    pub device: String,
    pub country: &'static str,
    pub ip_prefix_hash: String,
}

/// One shopper.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: String,
    /// Latent purchase intent, Beta distributed.
    pub intent: f64,
    pub favourites: [u32; 3],
    pub favourite_weights: [f64; 3],
    pub client: ClientProfile,
    pub channel: &'static str,
    pub referrer: Option<&'static str>,
    pub has_account: bool,
    /// Card fingerprints on file; empty for users who pay by wallet.
    pub cards: Vec<String>,
    /// Sessions this user has had so far.
    pub sessions_done: u32,
}

/// Draws profiles; the weighted tables are built once.
pub(crate) struct UserFactory {
    intent: Beta<f64>,
    countries: WeightedIndex<u32>,
    devices: WeightedIndex<u32>,
    channels: WeightedIndex<u32>,
    salt: u64,
}

impl UserFactory {
    pub fn new(alpha: f64, beta: f64, seed: u64) -> Self {
        UserFactory {
            intent: Beta::new(alpha, beta).expect("validated positive parameters"),
            countries: WeightedIndex::new(COUNTRIES.iter().map(|c| c.1)).expect("constant"),
            devices: WeightedIndex::new(DEVICES.iter().map(|c| c.1)).expect("constant"),
            channels: WeightedIndex::new(CHANNELS.iter().map(|c| c.2)).expect("constant"),
            salt: splitmix(seed),
        }
    }

    /// User number `index`; ids are unique for distinct indices (a bijection of 48-bit values).
    pub fn user(&self, index: u64, catalog: &Catalog, rng: &mut ChaCha8Rng) -> User {
        let id = format!("u-{:012x}", user_code(index, self.salt));
        let mut favourites = [0u32; 3];
        for f in &mut favourites {
            *f = catalog.popular_category(rng);
        }
        // Dirichlet(1, 1, 1) weights over the three favourites.
        let mut w = [0f64; 3];
        for x in &mut w {
            *x = -(1.0 - rng.random::<f64>()).ln();
        }
        let total: f64 = w.iter().sum();
        let favourite_weights = w.map(|x| x / total);
        let (channel, referrer, _) = CHANNELS[self.channels.sample(rng)];
        let has_account = rng.random_bool(0.7);
        let cards = if rng.random_bool(0.85) {
            let n = if rng.random_bool(0.2) { 2 } else { 1 };
            (0..n).map(|_| card_fingerprint(rng)).collect()
        } else {
            Vec::new()
        };
        User {
            id,
            intent: self.intent.sample(rng),
            favourites,
            favourite_weights,
            client: self.client(rng),
            channel,
            referrer,
            has_account,
            cards,
            sessions_done: 0,
        }
    }

    /// A fresh device, country and network: a new user's, or an attacker's.
    pub fn client(&self, rng: &mut ChaCha8Rng) -> ClientProfile {
        let device_class = DEVICES[self.devices.sample(rng)].0;
        ClientProfile {
            device: format!("{device_class}-{:06x}", rng.random_range(0..0x100_0000u32)),
            country: COUNTRIES[self.countries.sample(rng)].0,
            ip_prefix_hash: format!("{:016x}", rng.random::<u64>()),
        }
    }
}

impl User {
    /// A category for the next product view: mostly a favourite, sometimes anything popular.
    pub fn pick_category(&self, catalog: &Catalog, rng: &mut ChaCha8Rng) -> u32 {
        if rng.random_bool(EXPLORE) {
            return catalog.popular_category(rng);
        }
        let u: f64 = rng.random();
        let mut acc = 0.0;
        for (c, w) in self.favourites.iter().zip(self.favourite_weights) {
            acc += w;
            if u < acc {
                return *c;
            }
        }
        self.favourites[2]
    }
}

/// A card fingerprint: a hash-like token, never a card number.
pub(crate) fn card_fingerprint(rng: &mut ChaCha8Rng) -> String {
    format!("fp-{:016x}", rng.random::<u64>())
}

/// Odd multiplier: multiplication by it is a bijection modulo 2^48.
const ID_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
const MASK48: u64 = (1 << 48) - 1;

fn user_code(index: u64, salt: u64) -> u64 {
    (index.wrapping_mul(ID_MULTIPLIER) ^ salt) & MASK48
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CatalogConfig;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    #[test]
    fn user_ids_are_unique() {
        let ids: BTreeSet<u64> = (0..100_000).map(|i| user_code(i, splitmix(9))).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn favourite_weights_sum_to_one_and_mean_intent_follows_beta() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let catalog = Catalog::new(&CatalogConfig::default(), &mut rng);
        let factory = UserFactory::new(0.6, 12.0, 3);
        let users: Vec<User> = (0..4000)
            .map(|i| factory.user(i, &catalog, &mut rng))
            .collect();
        for u in &users {
            let s: f64 = u.favourite_weights.iter().sum();
            assert!((s - 1.0).abs() < 1e-9);
        }
        let mean = users.iter().map(|u| u.intent).sum::<f64>() / users.len() as f64;
        let expected = 0.6 / 12.6;
        assert!(
            (mean - expected).abs() < 0.1 * expected,
            "mean intent {mean}"
        );
    }
}
