//! Behavioural clickstream generator with ground truth, dirty data and fraud scenarios.
//!
//! `clickpath generate` uses it to feed the pipeline with events whose true meaning is known:
//! the exact purchase probability of every session, which events are injected fraud or bots,
//! and which records are malformed. It depends only on `clickpath-schema` (no Kafka); pacing is
//! the caller's job, this crate generates as fast as it can.
//!
//! # Behavioural model
//!
//! **Catalogue.** `catalog.categories` categories, named `top/sub` (`electronics/smart`), with a
//! log-normal price level each (median 30, sigma 0.9); items split evenly over categories, priced
//! at the level times a log-normal factor (sigma 0.45). Category popularity and item popularity
//! inside a category are Zipf distributed (exponents 0.9 and 1.07).
//!
//! **Users.** Each of `users` shoppers has a latent purchase intent drawn from
//! `Beta(intent_alpha, intent_beta)` (mean about 4.8 % by default); a category affinity (three
//! favourite categories drawn by popularity with Dirichlet(1, 1, 1) weights, and a 20 % chance
//! per pick of exploring any popular category); and a stable client: device id, country,
//! marketing channel, IP-prefix hash, whether they have an account, and the card fingerprints on
//! file (or a wallet).
//!
//! **Arrivals.** Each user starts sessions as a Poisson process with mean
//! `sessions_per_user_per_day`, modulated by a diurnal curve (peak 20:00 UTC, trough 08:00 at 0.4
//! of the mean), after a refractory gap of `min_session_gap_ms` (2 h) from the end of their
//! previous session, so one user's sessions are separated by far more than 30 minutes. Dwell
//! times are capped at 15 minutes, so a session never splits at a 30 minute inactivity gap.
//!
//! **Sessions.** A session draws a mood multiplier `m` in {0.5, 1, 1.5} (weights 1/4, 1/2, 1/4);
//! its purchase probability is `p = min(0.95, intent * m)` and its outcome is drawn as
//! Bernoulli(`p`) *first*. `p` is recorded as [`SessionTruth::purchase_probability`]: the exact
//! answer a scorer estimates. The events are then a walk consistent with the outcome whose step
//! probabilities depend on `p`:
//! - `LOGIN` first with probability `0.25 + 0.5 p` (users with an account), then a landing
//!   `PAGE_VIEW` with the channel's referrer;
//! - a number of product visits: buyers `1 + Geometric` (mean `buyer_mean_product_views`),
//!   non-buyers `Geometric` (mean solved by calibration, may be zero: a bounce). Each visit is
//!   preceded by a `SEARCH` (25 %), a category listing `PAGE_VIEW` (35 %) or nothing (a
//!   recommendation click), stays in the current category with probability 0.7, and is a
//!   `PRODUCT_VIEW`;
//! - after a view: `ADD_TO_CART` (buyers: always for the one item they will buy, with probability
//!   `cb` for others; non-buyers: with probability `k (0.05 + p)`), possibly followed by a
//!   `REMOVE_FROM_CART` (12 %, never the item bought); otherwise a `WISHLIST` with probability
//!   `0.02 + 0.1 p`;
//! - buyers: an optional `LOGIN` (guests with an account), `BEGIN_CHECKOUT`, a declined
//!   `PAYMENT_ATTEMPT` (6 %), a successful `PAYMENT_ATTEMPT`, then `PURCHASE` with a fresh
//!   `order_id` and `order_value` equal to the cart's value. Non-buyers with a non-empty cart
//!   start checkout 30 % of the time and then fail a payment 30 % of the time;
//! - a trailing `PAGE_VIEW` with probability 0.3.
//!
//! `BEGIN_CHECKOUT`, `PAYMENT_ATTEMPT` and `PURCHASE` carry the cart total in `order_value` (the
//! payment record itself has no amount). Dwell times between events are log-normal (sigma 0.8)
//! with a median per previous event type (35 s after a product view, times `1 + p`; 12 s after a
//! page view; 4 s between payment and purchase), clipped to [0.3 s, 15 min].
//!
//! **Calibration.** The free parameters `cb`, the non-buyer mean views and `k` are solved in
//! closed form ([`Calibration`]) from the drawn users' intents so that, in expectation, ordinary
//! traffic has `funnel.cart_per_product_view` add-to-carts per product view (default 0.026) and
//! `funnel.purchase_per_cart` purchases per add-to-cart (default 0.32): the published
//! Retailrocket ratios. Injected scenarios are not part of the calibration.
//!
//! # Scenarios
//!
//! [`ScenarioKind`] lists them; each is labelled with an [`AnomalyLabel`] naming every event id.
//! Crawlers, card testers and cart stuffers are extra users that act once; an account takeover
//! replaces one later session of an existing user. They start at random session indices between 5 % and
//! 80 % of the expected number of sessions.
//!
//! # Dirty data
//!
//! Per event: a duplicate (same `event_id`, emitted less than `disorder_bound_ms` behind), an
//! out-of-order emission (held back by less than `disorder_bound_ms`), a late emission (held back
//! by `late_delay_ms` to twice that) and an extra [`Malformed`] record, at the configured rates.
//! "Behind" means: behind the largest event time emitted before it, so a consumer with a
//! bounded-out-of-orderness watermark of `disorder_bound_ms` sees no late duplicates or
//! out-of-order events.
//!
//! # Output and determinism
//!
//! [`Generator`] is an iterator of [`Generated`] records in emission order, which is event-time
//! order across users except for the injected disorder; ground truth comes out of
//! [`Generator::take_truth`]. Everything is drawn from one `ChaCha8Rng` seeded with `seed`, so
//! the same config gives the same records, byte for byte.
//!
//! ```
//! use clickpath_generator::{Generated, Generator, GeneratorConfig};
//!
//! let cfg = GeneratorConfig { sessions: 50, ..GeneratorConfig::default() };
//! let mut generator = Generator::new(cfg).unwrap();
//! let events = generator.by_ref().filter(|g| matches!(g, Generated::Event(_))).count();
//! assert!(events > 50);
//! assert!(!generator.take_truth().is_empty());
//! ```

mod arrivals;
mod calibration;
mod catalog;
mod config;
mod dirty;
mod generator;
mod legit;
mod scenarios;
mod script;
mod session;
mod truth;
mod users;

pub use arrivals::diurnal_multiplier;
pub use calibration::Calibration;
pub use config::{
    BehaviourConfig, CatalogConfig, ConfigError, DEFAULT_START_TIME_MS, DirtyConfig, FunnelConfig,
    GeneratorConfig, ScenarioConfig,
};
pub use dirty::{FAR_FUTURE_MS, Malformed, MalformedKind, UNKNOWN_SCHEMA_ID, corrupt};
pub use generator::{Generated, Generator, GeneratorStats};
pub use truth::{
    AnomalyLabel, LegitLabel, LegitPattern, MalformedLabel, ScenarioKind, SessionTruth, TruthRecord,
};
