//! Long-lived per-user profiles (known devices and countries, baselines) and the per-event
//! numeric features the Half-Space Trees scorer sees.
//!
//! Features, each scaled to `[0, 1]` (see `features`): the log gap since the user's previous
//! event; its robust z-score against the user's own baseline and against the population's; the
//! robust coefficient of variation of the user's recent gaps; the price's robust z-score in its
//! category; the log quantity; the event type; recent failed payments; recent adds of unviewed
//! items.

use crate::anomaly::RobustEwma;
use crate::hash::fnv1a;
use clickpath_schema::ClickEvent;
use serde::{Deserialize, Serialize};

/// Most devices, countries and IP prefixes remembered per user (least recently seen are replaced).
pub const MAX_KNOWN: usize = 8;

/// Number of features per event.
pub const FEATURES: usize = 9;

/// Short names of the features, in order (for alert reasons).
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "log gap since previous event",
    "gap vs the user's own",
    "gap vs the population's",
    "cadence regularity (CV)",
    "price vs its category",
    "log quantity",
    "event type",
    "recent failed payments",
    "recent unviewed adds",
];

/// Values a baseline needs before its z-score is used.
const BASELINE_WARMUP: u32 = 5;

/// Smallest scale of a log-gap baseline, so a user with identical gaps so far is not infinitely
/// surprised by a slightly different one.
const MIN_LOG_GAP_SIGMA: f64 = 0.25;

/// One remembered device or country: hash, first and last time seen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Known {
    hash: u64,
    first_seen: i64,
    last_seen: i64,
}

fn remember(set: &mut Vec<Known>, hash: u64, t: i64) {
    if let Some(k) = set.iter_mut().find(|k| k.hash == hash) {
        k.first_seen = k.first_seen.min(t);
        k.last_seen = k.last_seen.max(t);
        return;
    }
    let fresh = Known {
        hash,
        first_seen: t,
        last_seen: t,
    };
    if set.len() < MAX_KNOWN {
        set.push(fresh);
    } else if let Some(oldest) = set.iter_mut().min_by_key(|k| k.last_seen) {
        *oldest = fresh;
    }
}

/// What the detector remembers about one user across sessions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Profile {
    last_seen: i64,
    last_event: Option<i64>,
    devices: Vec<Known>,
    countries: Vec<Known>,
    networks: Vec<Known>,
    /// The largest `order_value` of the user's purchases so far.
    largest_order: Option<f64>,
    /// The most recent country, for reasons.
    last_country: Option<String>,
    gap: RobustEwma,
}

impl Profile {
    /// An empty profile whose gap baseline uses smoothing `alpha`.
    pub fn new(alpha: f64) -> Self {
        Profile {
            last_seen: i64::MIN,
            last_event: None,
            devices: Vec::new(),
            countries: Vec::new(),
            networks: Vec::new(),
            largest_order: None,
            last_country: None,
            gap: RobustEwma::new(alpha, BASELINE_WARMUP),
        }
    }

    /// Newest event time seen.
    pub fn last_seen(&self) -> i64 {
        self.last_seen
    }

    /// Whether the user was seen on any device or in any country strictly before `t`.
    pub fn has_history_before(&self, t: i64) -> bool {
        self.devices
            .iter()
            .chain(&self.countries)
            .any(|k| k.first_seen < t)
    }

    /// Whether `device` was first seen strictly before `t`.
    pub fn knows_device(&self, device: &str, t: i64) -> bool {
        let h = fnv1a(device);
        self.devices.iter().any(|k| k.hash == h && k.first_seen < t)
    }

    /// Whether `country` was first seen strictly before `t`.
    pub fn knows_country(&self, country: &str, t: i64) -> bool {
        let h = fnv1a(country);
        self.countries
            .iter()
            .any(|k| k.hash == h && k.first_seen < t)
    }

    /// Whether the IP prefix hash `network` was first seen strictly before `t`.
    pub fn knows_network(&self, network: &str, t: i64) -> bool {
        let h = fnv1a(network);
        self.networks
            .iter()
            .any(|k| k.hash == h && k.first_seen < t)
    }

    /// The largest order value of the user's purchases seen so far.
    pub fn largest_order(&self) -> Option<f64> {
        self.largest_order
    }

    /// The country of the user's most recent event with one (before the current event).
    pub fn last_country(&self) -> Option<&str> {
        self.last_country.as_deref()
    }

    /// Folds the event's time in, and its client fields and order value when `trusted` (after the
    /// rules have looked). An event under an open takeover alert is not trusted: the attacker's
    /// device, network, country and cash-out are not the user's, and learned they would hide the
    /// next takeover (a second attacker's cash-out would not beat the first one's "largest order").
    pub fn observe(&mut self, ev: &ClickEvent, trusted: bool) {
        let t = ev.event_time;
        self.last_seen = self.last_seen.max(t);
        self.last_event = Some(self.last_event.map_or(t, |l| l.max(t)));
        if !trusted {
            return;
        }
        if let Some(d) = ev.device.as_deref().filter(|d| !d.is_empty()) {
            remember(&mut self.devices, fnv1a(d), t);
        }
        if let Some(c) = ev.country.as_deref().filter(|c| !c.is_empty()) {
            remember(&mut self.countries, fnv1a(c), t);
            if self.last_country.as_deref() != Some(c) {
                self.last_country = Some(c.to_owned());
            }
        }
        if let Some(n) = ev.ip_prefix_hash.as_deref().filter(|n| !n.is_empty()) {
            remember(&mut self.networks, fnv1a(n), t);
        }
        if ev.event_type == clickpath_schema::EventType::Purchase
            && let Some(v) = ev.order_value.filter(|v| v.is_finite() && *v > 0.0)
        {
            self.largest_order = Some(self.largest_order.map_or(v, |l| l.max(v)));
        }
    }

    /// Forgets the devices, countries and IP prefixes first seen at or after `t`: what the session
    /// of a takeover (alerted now, its login at `t`) taught before the alert. The most recent
    /// country (for reasons) may be the attacker's, so it is forgotten until the next trusted event.
    pub fn forget_since(&mut self, t: i64) {
        for set in [&mut self.devices, &mut self.countries, &mut self.networks] {
            set.retain(|k| k.first_seen < t);
        }
        self.last_country = None;
    }
}

/// Population-wide baselines.
#[derive(Debug, Serialize, Deserialize)]
pub struct Population {
    gap: RobustEwma,
}

impl Population {
    /// Baselines with smoothing `alpha`.
    pub fn new(alpha: f64) -> Self {
        Population {
            gap: RobustEwma::new(alpha, BASELINE_WARMUP),
        }
    }
}

fn unit(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The event's features (and the baselines updated with it). `cv` is the user's recent cadence
/// regularity, `price_z` the price's robust z-score in its category, `failures` the failed
/// payments and `unviewed_adds` the adds of unviewed items in their rule windows.
pub(super) fn features(
    profile: &mut Profile,
    population: &mut Population,
    ev: &ClickEvent,
    cv: Option<f64>,
    price_z: Option<f64>,
    failures: usize,
    unviewed_adds: usize,
) -> [f64; FEATURES] {
    let gap = profile
        .last_event
        .map(|l| (ev.event_time - l).max(0) as f64);
    let log_gap = gap.map(f64::ln_1p);
    let (user_z, pop_z) = match log_gap {
        Some(g) => {
            let u = profile.gap.z(g, MIN_LOG_GAP_SIGMA);
            let p = population.gap.z(g, MIN_LOG_GAP_SIGMA);
            profile.gap.update(g);
            population.gap.update(g);
            (u, p)
        }
        None => (None, None),
    };
    [
        gap.map_or(1.0, |g| unit((1.0 + g).log10() / 7.0)),
        user_z.map_or(0.5, |z| unit((z + 5.0) / 10.0)),
        pop_z.map_or(0.5, |z| unit((z + 5.0) / 10.0)),
        cv.map_or(1.0, unit),
        price_z.map_or(0.5, |z| unit((z + 8.0) / 16.0)),
        ev.quantity
            .map_or(0.0, |q| unit(f64::from(q.max(1)).log10() / 3.0)),
        ev.event_type.index() as f64 / 9.0,
        unit(failures as f64 / 10.0),
        unit(unviewed_adds as f64 / 10.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::EventType;

    fn at(t: i64, device: &str, country: &str) -> ClickEvent {
        let mut e = ClickEvent::new("e", "u", EventType::PageView, t);
        e.device = Some(device.into());
        e.country = Some(country.into());
        e
    }

    #[test]
    fn profile_knows_what_it_saw_before_a_time() {
        let mut p = Profile::new(0.05);
        assert!(!p.has_history_before(0));
        p.observe(&at(100, "mobile-1", "DE"), true);
        assert!(p.has_history_before(101));
        assert!(!p.has_history_before(100));
        assert!(p.knows_device("mobile-1", 101));
        assert!(
            !p.knows_device("mobile-1", 100),
            "first seen at 100, not before"
        );
        assert!(p.knows_country("DE", 200) && !p.knows_country("US", 200));
        assert_eq!(p.last_country(), Some("DE"));
    }

    #[test]
    fn untrusted_events_and_forgotten_sessions_teach_nothing_but_time() {
        let mut p = Profile::new(0.05);
        p.observe(&at(100, "own-phone", "DE"), true);
        let mut buy = at(200, "own-phone", "DE");
        buy.event_type = EventType::Purchase;
        buy.order_value = Some(50.0);
        p.observe(&buy, true);
        // The attacker's login is learned (nothing was alerted yet), then forgotten at the alert.
        p.observe(&at(1_000, "attacker", "BR"), true);
        assert!(p.knows_device("attacker", 1_001));
        p.forget_since(1_000);
        assert!(!p.knows_device("attacker", 2_000) && !p.knows_country("BR", 2_000));
        assert!(p.knows_device("own-phone", 2_000) && p.knows_country("DE", 2_000));
        // The cash-out under the open alert is not the user's largest order.
        let mut cash_out = at(1_500, "attacker", "BR");
        cash_out.event_type = EventType::Purchase;
        cash_out.order_value = Some(5_000.0);
        p.observe(&cash_out, false);
        assert_eq!(p.largest_order(), Some(50.0));
        assert!(!p.knows_device("attacker", 2_000));
        assert_eq!((p.last_seen(), p.last_country()), (1_500, None));
    }

    #[test]
    fn known_sets_are_bounded_and_keep_the_recent_ones() {
        let mut p = Profile::new(0.05);
        for i in 0..20 {
            p.observe(&at(i, &format!("d{i}"), "DE"), true);
        }
        assert_eq!(p.devices.len(), MAX_KNOWN);
        assert!(p.knows_device("d19", 100) && !p.knows_device("d0", 100));
    }

    #[test]
    fn features_are_in_the_unit_cube() {
        let mut p = Profile::new(0.05);
        let mut pop = Population::new(0.05);
        let mut e = at(0, "d", "DE");
        e.quantity = Some(i32::MAX);
        for t in [0, 5, 5, 1_000_000_000] {
            e.event_time = t;
            let f = features(&mut p, &mut pop, &e, Some(9.0), Some(-1e9), 99, 3);
            assert!(f.iter().all(|x| (0.0..=1.0).contains(x)), "{f:?}");
            p.observe(&e, true);
        }
    }
}
