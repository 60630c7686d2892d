//! Ground truth written beside the events: what the model knew and what was injected.

use crate::dirty::MalformedKind;
use clickpath_schema::AlertType;
use serde::{Deserialize, Serialize};

/// The true purchase probability and outcome of one ordinary session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTruth {
    /// The shopper.
    pub user_id: String,
    /// The client session id put on every event of the session.
    pub session_id: String,
    /// Id of the session's first event (in event time).
    pub first_event_id: String,
    /// Event time of the first event (ms).
    pub start_time: i64,
    /// Event time of the last event (ms).
    pub end_time: i64,
    /// Number of distinct events in the session.
    pub event_count: u32,
    /// The probability with which the outcome was drawn: the exact answer a scorer estimates.
    pub purchase_probability: f64,
    /// Whether the session ended with a `PURCHASE`.
    pub purchased: bool,
    /// The order total if it purchased, else 0.
    pub order_value: f64,
}

/// The kinds of fraud and bot behaviour the generator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// Very regular inter-event times, no dwell, product views across the whole catalogue, no
    /// cart. Detectable at its 30th event.
    CrawlerBot,
    /// A burst of failed `PAYMENT_ATTEMPT`s with distinct card fingerprints within minutes.
    /// Detectable at the 5th failed attempt.
    CardTesting,
    /// `LOGIN` of an existing user from a new device and a new country, then a high-value
    /// checkout and payment within minutes. Detectable at the `BEGIN_CHECKOUT`.
    AccountTakeover,
    /// Many `ADD_TO_CART`s without product views, with absurd quantities. Detectable at the 5th
    /// add.
    CartStuffing,
    /// A harder crawler: log-normal gaps (as irregular as a shopper's, median 1.5 to 4 s) over the
    /// whole catalogue, no cart. Detectable once it has viewed 60 distinct items.
    JitteredCrawler,
    /// Harder card testing: 8 to 14 failed payments with distinct cards spread over about 2 to 3
    /// hours, never 3 within 10 minutes. Detectable at the 5th failed card.
    SlowCardTesting,
    /// A card-testing ring: 8 to 12 new accounts on one device and IP prefix, each failing one or
    /// two cards, interleaved over about an hour; one label per account. Detectable once the ring
    /// has failed 5 distinct cards across 3 accounts (or at the account's first failure, if later).
    CardTestingRing,
    /// A harder takeover: the attacker logs in from a residential proxy in the victim's own
    /// country (new device and network, known country), then checks out expensive items worth
    /// several times the victim's largest earlier order. Detectable at the `BEGIN_CHECKOUT`.
    LocalTakeover,
    /// Cart stuffing at human speed: every item viewed first, one add every one to four minutes,
    /// quantities of 20 to 200, never a checkout. Detectable once 3 such adds have been held for
    /// 20 minutes without a checkout (at the user's first event from then on).
    SlowCartStuffing,
}

impl ScenarioKind {
    /// The alert a detector should raise for it.
    pub fn alert_type(self) -> AlertType {
        match self {
            ScenarioKind::CrawlerBot => AlertType::BotCadence,
            ScenarioKind::CardTesting => AlertType::CardTesting,
            ScenarioKind::AccountTakeover | ScenarioKind::LocalTakeover => {
                AlertType::AccountTakeover
            }
            ScenarioKind::CartStuffing | ScenarioKind::SlowCartStuffing => AlertType::CartStuffing,
            ScenarioKind::JitteredCrawler => AlertType::BotCadence,
            ScenarioKind::SlowCardTesting | ScenarioKind::CardTestingRing => AlertType::CardTesting,
        }
    }
}

/// One injected fraud or bot scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyLabel {
    /// What was injected.
    pub scenario: ScenarioKind,
    /// The user whose stream carries it (for an account takeover: the victim).
    pub user_id: String,
    /// Ids of every event of the scenario, in event-time order.
    pub event_ids: Vec<String>,
    /// Event time of the first event (ms).
    pub start_time: i64,
    /// Event time of the last event (ms).
    pub end_time: i64,
    /// Event time from which the pattern is complete by its minimal definition (see
    /// [`ScenarioKind`]); a detector's latency is measured from here.
    pub detectable_at_ms: i64,
}

/// Rare legitimate behaviour that looks odd: no alert should name these users for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegitPattern {
    /// A wholesale (B2B) buyer: views 2 to 6 items, adds 20 to 200 units of each, checks out
    /// within minutes and pays with their own card.
    BulkBuyer,
    /// A fast repeat buyer: 3 to 6 small orders within a few minutes (view, add, checkout, pay,
    /// purchase), sometimes a declined card followed by their second card.
    FastRepeatBuyer,
    /// A shopper on a new phone: from this session on a new device and mobile network in their
    /// usual country; logs in and buys an ordinary basket with their own card.
    NewDevice,
}

/// One injected legitimate-but-odd session of an ordinary user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegitLabel {
    /// What was injected.
    pub pattern: LegitPattern,
    /// The (ordinary, existing) user.
    pub user_id: String,
    /// Ids of the session's events, in event-time order.
    pub event_ids: Vec<String>,
    /// Event time of the first event (ms).
    pub start_time: i64,
    /// Event time of the last event (ms).
    pub end_time: i64,
}

/// One injected malformed record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedLabel {
    /// The record's unique key (also its event's `event_id`).
    pub key: String,
    /// How it is broken.
    pub kind: MalformedKind,
    /// Human-readable description of the damage.
    pub note: String,
}

/// One line of the ground-truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum TruthRecord {
    /// An ordinary session.
    Session(SessionTruth),
    /// An injected scenario.
    Anomaly(AnomalyLabel),
    /// An injected malformed record.
    Malformed(MalformedLabel),
    /// An injected legitimate-but-odd session.
    Legit(LegitLabel),
}
