//! Rust mirrors of the Avro records in `schemas/*.avsc`.
//!
//! The `.avsc` files are the single source of truth; these types must match them field for field
//! (names, order, optionality). `tests/schema_types.rs` round-trips every type through its schema,
//! so a drift between the two fails the build's tests.

use crate::feature_values::FeatureValues;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a shopper did. Symbols match the Avro enum `io.clickpath.EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// Any non-product page (home, category listing, content).
    PageView,
    /// A product detail page.
    ProductView,
    /// A search query was submitted.
    Search,
    /// An item was added to the cart.
    AddToCart,
    /// An item was removed from the cart.
    RemoveFromCart,
    /// An item was added to a wishlist.
    Wishlist,
    /// The shopper started the checkout flow.
    BeginCheckout,
    /// A payment was attempted (see [`Payment`]).
    PaymentAttempt,
    /// An order was placed.
    Purchase,
    /// The shopper logged in.
    Login,
}

impl EventType {
    /// All event types, in the Avro enum's symbol order (the order is part of the wire format).
    pub const ALL: [EventType; 10] = [
        EventType::PageView,
        EventType::ProductView,
        EventType::Search,
        EventType::AddToCart,
        EventType::RemoveFromCart,
        EventType::Wishlist,
        EventType::BeginCheckout,
        EventType::PaymentAttempt,
        EventType::Purchase,
        EventType::Login,
    ];

    /// Number of event types (the size of a next-action distribution).
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index of this type in [`EventType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The Avro symbol, e.g. `ADD_TO_CART`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PageView => "PAGE_VIEW",
            EventType::ProductView => "PRODUCT_VIEW",
            EventType::Search => "SEARCH",
            EventType::AddToCart => "ADD_TO_CART",
            EventType::RemoveFromCart => "REMOVE_FROM_CART",
            EventType::Wishlist => "WISHLIST",
            EventType::BeginCheckout => "BEGIN_CHECKOUT",
            EventType::PaymentAttempt => "PAYMENT_ATTEMPT",
            EventType::Purchase => "PURCHASE",
            EventType::Login => "LOGIN",
        }
    }

    /// Parses an Avro symbol (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of a payment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// The payment was authorised.
    Succeeded,
    /// The payment was declined or failed.
    Failed,
    /// The outcome is not known yet.
    Pending,
}

/// Details of a `PAYMENT_ATTEMPT` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// Outcome of the attempt.
    pub status: PaymentStatus,
    /// Payment method, e.g. `card`, `paypal`.
    pub method: String,
    /// Hash of the card (never the card number itself); absent for non-card methods.
    pub card_fingerprint: Option<String>,
}

/// One shopper action as published by the e-commerce platform (`schemas/click_event.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClickEvent {
    /// Unique id of the event (used for de-duplication).
    pub event_id: String,
    /// The shopper; also the Kafka key, so all of a user's events share a partition.
    pub user_id: String,
    /// The client's own session id, if the platform has one.
    pub session_id: Option<String>,
    /// What happened.
    pub event_type: EventType,
    /// When it happened, in milliseconds since the Unix epoch (event time).
    pub event_time: i64,
    /// Product id.
    pub item_id: Option<String>,
    /// Category path, `/`-separated from the root, e.g. `electronics/phones`.
    pub category: Option<String>,
    /// Brand name.
    pub brand: Option<String>,
    /// Unit price in `currency`.
    pub price: Option<f64>,
    /// ISO 4217 currency code.
    pub currency: Option<String>,
    /// Number of units (cart events).
    pub quantity: Option<i32>,
    /// The query text of a `SEARCH` event.
    pub search_query: Option<String>,
    /// Payment details of a `PAYMENT_ATTEMPT` event.
    pub payment: Option<Payment>,
    /// Order id of a `PURCHASE` event.
    pub order_id: Option<String>,
    /// Order total of a `PURCHASE` event.
    pub order_value: Option<f64>,
    /// Device class or id, e.g. `mobile`, `desktop`.
    pub device: Option<String>,
    /// Hash of the client's IP prefix (never the raw address).
    pub ip_prefix_hash: Option<String>,
    /// ISO 3166 country code.
    pub country: Option<String>,
    /// Marketing channel, e.g. `organic`, `email`, `paid_search`.
    pub channel: Option<String>,
    /// Referring URL or host.
    pub referrer: Option<String>,
    /// Free-form extra attributes.
    pub extras: BTreeMap<String, String>,
}

impl ClickEvent {
    /// A minimal event with every optional field empty.
    pub fn new(
        event_id: impl Into<String>,
        user_id: impl Into<String>,
        event_type: EventType,
        event_time: i64,
    ) -> Self {
        ClickEvent {
            event_id: event_id.into(),
            user_id: user_id.into(),
            session_id: None,
            event_type,
            event_time,
            item_id: None,
            category: None,
            brand: None,
            price: None,
            currency: None,
            quantity: None,
            search_query: None,
            payment: None,
            order_id: None,
            order_value: None,
            device: None,
            ip_prefix_hash: None,
            country: None,
            channel: None,
            referrer: None,
            extras: BTreeMap::new(),
        }
    }
}

/// Stages of the purchase funnel, in order. Symbols match `io.clickpath.FunnelStage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FunnelStage {
    /// Browsing pages or searching.
    Browse,
    /// Looked at a product.
    ProductView,
    /// Put something in the cart.
    Cart,
    /// Started checkout (or attempted payment).
    Checkout,
    /// Bought.
    Purchase,
}

/// A closed session of one user, or a correction of one (`schemas/session_summary.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// `user_id` + `:` + start time in ms: stable and unique per user.
    pub session_id: String,
    /// The shopper.
    pub user_id: String,
    /// Event time of the first event (ms).
    pub start_time: i64,
    /// Event time of the last event (ms).
    pub end_time: i64,
    /// Number of (de-duplicated) events in the session.
    pub event_count: i32,
    /// Event types in order, consecutive repeats compressed, capped at the configured length.
    pub path: Vec<EventType>,
    /// Furthest funnel stage reached.
    pub furthest_stage: FunnelStage,
    /// Whether the session contains a purchase.
    pub purchased: bool,
    /// Sum of the purchase order values in the session.
    pub order_value: f64,
    /// Id of the first event.
    pub first_event_id: String,
    /// Id of the last event.
    pub last_event_id: String,
    /// Why the session closed: `gap`, `max_length` or `shutdown`.
    pub close_reason: String,
    /// 0 for a session's first publication, one more for each correction (a late event joined it
    /// or merged another session into it). For one `session_id` the highest revision wins.
    pub revision: i32,
    /// Ids of earlier published sessions this one replaces (merged into it, or its own id before
    /// a late event moved its start): consumers delete them.
    pub superseded_session_ids: Vec<String>,
    /// The user's sessions up to this one, this one included (0 from writers before schema
    /// version 3).
    #[serde(default)]
    pub user_sessions: i64,
    /// The session outlook model's view of the user at this session's end; `None` without a model
    /// (or from writers before schema version 3).
    #[serde(default)]
    pub outlook: Option<SessionOutlook>,
}

/// Return propensity and behavioural segment of a closed session (`SessionSummary.outlook`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionOutlook {
    /// Version of the outlook model (`outlook-…`).
    pub model_version: String,
    /// Probability that the user's next session starts within `return_horizon_hours` of this one's
    /// end.
    pub return_probability: f64,
    /// The horizon the model was trained for.
    pub return_horizon_hours: i32,
    /// Behavioural segment (0-based; meaningful within one `model_version`).
    pub segment: i32,
    /// One line derived from the segment's centroid.
    pub segment_description: String,
}

/// Behaviour features of one user at one event (`schemas/feature_vector.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureVector {
    /// The event that triggered this update.
    pub event_id: String,
    /// The shopper.
    pub user_id: String,
    /// Type of the triggering event.
    pub event_type: EventType,
    /// Event time of the triggering event (ms).
    pub event_time: i64,
    /// Version of the feature spec that produced the values.
    pub spec_version: String,
    /// Feature name to value (an Avro `map<double>` on the wire).
    pub values: FeatureValues,
    /// Item of the triggering event, if any (schema v2; absent in v1 records).
    #[serde(default)]
    pub item_id: Option<String>,
    /// Category of the triggering event, if any (schema v2; absent in v1 records).
    #[serde(default)]
    pub category: Option<String>,
}

/// Probability of one next action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionProbability {
    /// The action.
    pub event_type: EventType,
    /// Its probability.
    pub probability: f64,
}

/// A feature or event that moved a prediction, with its signed contribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// Feature or event name.
    pub name: String,
    /// Signed contribution to the purchase log-odds.
    pub contribution: f64,
}

/// The scorer's output for one event (`schemas/prediction.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The input event that was scored.
    pub event_id: String,
    /// The shopper.
    pub user_id: String,
    /// Event time of the input event (ms).
    pub event_time: i64,
    /// Model name and version, e.g. `baseline@3f2a9c`.
    pub model_version: String,
    /// Probability that the current session ends with a purchase.
    pub purchase_probability: f64,
    /// Most likely next actions, highest first.
    pub next_actions: Vec<ActionProbability>,
    /// Most likely next few steps.
    pub predicted_path: Vec<EventType>,
    /// What moved `purchase_probability` most, largest magnitude first.
    pub factors: Vec<Factor>,
    /// Time spent scoring, in microseconds.
    pub scoring_latency_us: i64,
    /// Items the sequence model expects the shopper to look at next, best first (schema version 2; empty
    /// in version-1 records, for models without an item head, and with `scorer.recommend_items = 0`).
    #[serde(default)]
    pub recommended_items: Vec<RecommendedItem>,
    /// Categories the sequence model expects the shopper to look at next, most probable first,
    /// never the category on screen or, for an event without one, the session's last (schema
    /// version 3; empty in older records, for models without a category head, and with
    /// `scorer.recommend_categories = 0`).
    #[serde(default)]
    pub recommended_categories: Vec<RecommendedCategory>,
}

/// One recommended category of a [`Prediction`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendedCategory {
    /// The category, as [`ClickEvent::category`] names it.
    pub category: String,
    /// The category head's probability that this is the next category.
    pub probability: f64,
}

/// One recommended item of a [`Prediction`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendedItem {
    /// The item, as [`ClickEvent::item_id`] names it.
    pub item_id: String,
    /// The item head's score: a logit, higher is more likely; comparable within one prediction only.
    pub score: f64,
}

/// Kind of fraud or bot behaviour. Symbols match `io.clickpath.AlertType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertType {
    /// Too many requests per user or IP prefix.
    Velocity,
    /// Inter-event times too regular, no dwell, crawler-like breadth.
    BotCadence,
    /// Many failed payments with distinct card fingerprints.
    CardTesting,
    /// New device and country, then a high-value checkout.
    AccountTakeover,
    /// Many add-to-carts without product views, absurd quantities.
    CartStuffing,
    /// Actions in an order the site cannot produce (purchase without checkout).
    ImpossibleSequence,
    /// A price far outside what the item's category normally costs.
    PriceAnomaly,
    /// Actions very unlikely under the sequence model.
    ModelSurprise,
    /// A run of events the streaming anomaly detector (Half-Space Trees) scores far above this
    /// stream's normal, with no rule naming a pattern (schema version 2).
    AnomalyScore,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Investigate.
    Medium,
    /// Act soon.
    High,
    /// Act now.
    Critical,
}

/// A fraud or bot alert for fraud teams (`schemas/fraud_alert.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudAlert {
    /// Unique, deterministic id (user, type, window start).
    pub alert_id: String,
    /// The shopper.
    pub user_id: String,
    /// What was detected.
    pub alert_type: AlertType,
    /// How urgent.
    pub severity: Severity,
    /// Detector score (rule-specific scale, higher is worse).
    pub score: f64,
    /// Human-readable reasons.
    pub reasons: Vec<String>,
    /// Ids of the events that triggered the alert.
    pub evidence_event_ids: Vec<String>,
    /// Event time of the first evidence event (ms).
    pub window_start: i64,
    /// Event time of the last evidence event (ms).
    pub window_end: i64,
    /// Version of the detector that raised it.
    pub detector_version: String,
}

/// The Avro schema of [`FunnelAggregate`]: `schemas/funnel_aggregate.avsc` (registered as id 11; version 1 was id 8).
pub const FUNNEL_AGGREGATE_AVSC: &str = include_str!("../../../schemas/funnel_aggregate.avsc");

/// One row of the analytics topic (`schemas/funnel_aggregate.avsc`, field for field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelAggregate {
    /// The analytics instance that counted this row (`kafka.instance_id`, else `<host>-<pid>`).
    pub instance: String,
    /// Bucket start (ms since the epoch).
    pub bucket_start: i64,
    /// Bucket width (ms).
    pub bucket_ms: i64,
    /// Step names.
    pub steps: Vec<String>,
    /// `ordered`, `strict` or `any_order`.
    pub funnel_order: String,
    /// Conversion window (ms).
    pub window_ms: i64,
    /// `all`, `channel`, `device` or `category`.
    pub segment: String,
    /// The segment's value; empty for `all`.
    pub segment_value: String,
    /// Units reaching each step.
    pub uniques: Vec<i64>,
    /// Attempts reaching each step.
    pub totals: Vec<i64>,
    /// Median time from step k to step k + 1 (ms).
    pub median_step_ms: Vec<Option<i64>>,
    /// 90th percentile of the same (ms).
    pub p90_step_ms: Vec<Option<i64>>,
    /// Median time from the first to the last step (ms).
    pub median_convert_ms: Option<i64>,
    /// 90th percentile of the same (ms).
    pub p90_convert_ms: Option<i64>,
    /// The input partition whose users the row counts (schema version 2); -1 in version-1 rows,
    /// which counted every partition of their instance.
    #[serde(default = "FunnelAggregate::all_partitions")]
    pub partition: i32,
}

impl FunnelAggregate {
    /// The `partition` of a version-1 row: every partition of its instance.
    pub const ALL_PARTITIONS: i32 = -1;

    fn all_partitions() -> i32 {
        Self::ALL_PARTITIONS
    }

    /// The Kafka key of the row: `<bucket_start>/<segment>=<value>`. Rows of one bucket and
    /// segment share a partition whichever instance wrote them.
    pub fn key(&self) -> String {
        format!(
            "{}/{}={}",
            self.bucket_start, self.segment, self.segment_value
        )
    }
}

/// A record a stage could not process (`schemas/dead_letter.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Topic the record was read from.
    pub source_topic: String,
    /// Partition it was read from.
    pub source_partition: i32,
    /// Offset it was read at.
    pub source_offset: i64,
    /// Its key, as received.
    #[serde(with = "opt_bytes")]
    pub key: Option<Vec<u8>>,
    /// Its value, as received.
    #[serde(with = "serde_bytes_vec")]
    pub payload: Vec<u8>,
    /// Short machine-readable kind, e.g. `decode`, `validation`.
    pub error_kind: String,
    /// Human-readable reason.
    pub reason: String,
    /// Stage that rejected it.
    pub stage: String,
    /// Wall-clock time of the rejection (ms).
    pub failed_at: i64,
}

/// Avro `bytes` need serde's byte path, not a sequence of integers.
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let b: serde_bytes_buf::Buf = Deserialize::deserialize(d)?;
        Ok(b.0)
    }

    /// Minimal owned byte buffer visitor (accepts bytes or a sequence of u8).
    pub(crate) mod serde_bytes_buf {
        use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
        use std::fmt;

        pub struct Buf(pub Vec<u8>);

        impl<'de> Deserialize<'de> for Buf {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                        Ok(Buf(v.to_vec()))
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                        Ok(Buf(v))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Buf, E> {
                        Ok(Buf(v.as_bytes().to_vec()))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Buf, A::Error> {
                        let mut out = Vec::new();
                        while let Some(b) = a.next_element::<u8>()? {
                            out.push(b);
                        }
                        Ok(Buf(out))
                    }
                }
                d.deserialize_any(V)
            }
        }
    }
}

mod opt_bytes {
    use super::serde_bytes_vec::serde_bytes_buf::Buf;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    struct Bytes<'a>(&'a [u8]);
    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let b: Option<Buf> = Option::deserialize(d)?;
        Ok(b.map(|b| b.0))
    }
}
