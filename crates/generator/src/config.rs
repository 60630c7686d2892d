//! Generator settings, their documented defaults and their validation.

use serde::{Deserialize, Serialize};

/// 2026-01-05T00:00:00Z (a Monday) in milliseconds since the Unix epoch.
pub const DEFAULT_START_TIME_MS: i64 = 1_767_571_200_000;

/// Latest accepted start time (2096-10-02), safely before the far-future malformed records.
const LATEST_START_MS: i64 = 4_000_000_000_000;
/// Longest accepted gap or delay: 365 days.
const MAX_GAP_MS: u64 = 365 * 86_400_000;

/// Everything that shapes a generated stream. Same config, same bytes.
///
/// The stream stops at the first limit reached among `sessions`, `duration_ms` and `max_events`;
/// a limit of 0 means "no limit", so all three at 0 give an endless stream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Seed of the single random stream everything is drawn from. Default 42.
    pub seed: u64,
    /// Number of ordinary shoppers. Default 1,000.
    pub users: u32,
    /// Ordinary sessions to start before stopping; 0 = no limit. Default 5,000.
    pub sessions: u64,
    /// Stop starting sessions this long after `start_time_ms`; 0 = no limit. Default 0.
    pub duration_ms: u64,
    /// Stop after this many emitted records (events, duplicates and malformed records together);
    /// 0 = no limit. Default 0.
    pub max_events: u64,
    /// Event time at which the simulated clock starts. Default 2026-01-05T00:00:00Z.
    pub start_time_ms: i64,
    /// The product catalogue.
    pub catalog: CatalogConfig,
    /// How shoppers behave.
    pub behaviour: BehaviourConfig,
    /// Funnel ratios the behaviour is calibrated to.
    pub funnel: FunnelConfig,
    /// Dirty-data injection rates.
    pub dirty: DirtyConfig,
    /// How many fraud and bot scenarios to inject.
    pub scenarios: ScenarioConfig,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 1_000,
            sessions: 5_000,
            duration_ms: 0,
            max_events: 0,
            start_time_ms: DEFAULT_START_TIME_MS,
            catalog: CatalogConfig::default(),
            behaviour: BehaviourConfig::default(),
            funnel: FunnelConfig::default(),
            dirty: DirtyConfig::default(),
            scenarios: ScenarioConfig::default(),
        }
    }
}

/// The product catalogue: categories with log-normal price levels and Zipf-popular items.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Number of categories. Default 40.
    pub categories: u32,
    /// Number of items, split evenly over the categories. Default 5,000.
    pub items: u32,
    /// ISO 4217 code put on priced events. Default `EUR`.
    pub currency: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            categories: 40,
            items: 5_000,
            currency: "EUR".to_string(),
        }
    }
}

/// Shopper behaviour that is not fixed by the funnel calibration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BehaviourConfig {
    /// Mean sessions per user per day before the refractory gap (the diurnal curve modulates it).
    /// Default 2.0.
    pub sessions_per_user_per_day: f64,
    /// Minimum time between the end of a user's session and the start of their next one.
    /// Default 2 h, far above a 30 min sessionization gap.
    pub min_session_gap_ms: u64,
    /// Alpha of the Beta distribution of a user's latent purchase intent. Default 0.6.
    pub intent_alpha: f64,
    /// Beta of the Beta distribution of a user's latent purchase intent. Default 12.0
    /// (mean intent about 4.8 %).
    pub intent_beta: f64,
    /// Mean number of product views in a session that ends with a purchase. Default 8.0.
    pub buyer_mean_product_views: f64,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig {
            sessions_per_user_per_day: 2.0,
            min_session_gap_ms: 2 * 3_600_000,
            intent_alpha: 0.6,
            intent_beta: 12.0,
            buyer_mean_product_views: 8.0,
        }
    }
}

/// Funnel ratios of ordinary traffic; the defaults are the published Retailrocket ratios.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunnelConfig {
    /// `ADD_TO_CART` events per `PRODUCT_VIEW` event. Default 0.026.
    pub cart_per_product_view: f64,
    /// `PURCHASE` events per `ADD_TO_CART` event. Default 0.32.
    pub purchase_per_cart: f64,
}

impl Default for FunnelConfig {
    fn default() -> Self {
        FunnelConfig {
            cart_per_product_view: 0.026,
            purchase_per_cart: 0.32,
        }
    }
}

/// Dirty-data injection. Each rate is a probability per original event.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirtyConfig {
    /// Probability that an event is emitted a second time, same `event_id`, shortly after.
    /// Default 0.01.
    pub duplicate_rate: f64,
    /// Probability that an event is emitted out of order (after later events). Default 0.02.
    pub out_of_order_rate: f64,
    /// Out-of-order events and duplicates arrive strictly less than this far behind the
    /// largest event time emitted before them. Default 2,000 ms.
    pub disorder_bound_ms: u64,
    /// Probability that an event is emitted late, at least `late_delay_ms` of stream time
    /// after its event time. Default 0.0 (off).
    pub late_rate: f64,
    /// Minimum delay of a late event, in event time. Default 300,000 ms (5 min).
    pub late_delay_ms: u64,
    /// Probability that an extra malformed record follows an event. Default 0.002.
    pub malformed_rate: f64,
}

impl Default for DirtyConfig {
    fn default() -> Self {
        DirtyConfig {
            duplicate_rate: 0.01,
            out_of_order_rate: 0.02,
            disorder_bound_ms: 2_000,
            late_rate: 0.0,
            late_delay_ms: 300_000,
            malformed_rate: 0.002,
        }
    }
}

impl DirtyConfig {
    /// No dirty data at all.
    pub fn clean() -> Self {
        DirtyConfig {
            duplicate_rate: 0.0,
            out_of_order_rate: 0.0,
            late_rate: 0.0,
            malformed_rate: 0.0,
            ..DirtyConfig::default()
        }
    }
}

/// Number of injected instances of each fraud or bot scenario.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScenarioConfig {
    /// Crawler bots. Default 2.
    pub crawler_bots: u32,
    /// Card-testing bursts. Default 2.
    pub card_testing: u32,
    /// Account takeovers of existing users. Default 2.
    pub account_takeovers: u32,
    /// Cart-stuffing bots. Default 2.
    pub cart_stuffing: u32,
    /// Crawlers with human-like jitter (harder). Default 0.
    pub jittered_crawlers: u32,
    /// Card testing spread over hours (harder). Default 0.
    pub slow_card_testing: u32,
    /// Card-testing rings across accounts sharing a device and IP prefix (harder). Default 0.
    pub card_testing_rings: u32,
    /// Account takeovers from the victim's own country (harder). Default 0.
    pub local_takeovers: u32,
    /// Cart stuffing at human speed (harder). Default 0.
    pub slow_cart_stuffing: u32,
    /// Legitimate wholesale (B2B) bulk orders by existing users (not fraud). Default 0.
    pub bulk_buyers: u32,
    /// Legitimate fast repeat buyers among existing users (not fraud). Default 0.
    pub fast_repeat_buyers: u32,
    /// Existing users moving to a new phone and buying from it (not fraud). Default 0.
    pub new_devices: u32,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            crawler_bots: 2,
            card_testing: 2,
            account_takeovers: 2,
            cart_stuffing: 2,
            jittered_crawlers: 0,
            slow_card_testing: 0,
            card_testing_rings: 0,
            local_takeovers: 0,
            slow_cart_stuffing: 0,
            bulk_buyers: 0,
            fast_repeat_buyers: 0,
            new_devices: 0,
        }
    }
}

impl ScenarioConfig {
    /// No scenarios.
    pub fn none() -> Self {
        ScenarioConfig {
            crawler_bots: 0,
            card_testing: 0,
            account_takeovers: 0,
            cart_stuffing: 0,
            jittered_crawlers: 0,
            slow_card_testing: 0,
            card_testing_rings: 0,
            local_takeovers: 0,
            slow_cart_stuffing: 0,
            bulk_buyers: 0,
            fast_repeat_buyers: 0,
            new_devices: 0,
        }
    }
}

/// Why a config was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// One or more settings are out of range; every problem is listed.
    #[error("invalid generator config:\n{}", bullets(.0))]
    Invalid(Vec<String>),
    /// The funnel targets cannot be reached with these behaviour settings.
    #[error("cannot calibrate the funnel: {0}")]
    Calibration(String),
}

fn bullets(problems: &[String]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl GeneratorConfig {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut probability = |name: &str, v: f64| {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{name} must be in [0, 1], got {v}"));
            }
        };
        probability("dirty.duplicate_rate", self.dirty.duplicate_rate);
        probability("dirty.out_of_order_rate", self.dirty.out_of_order_rate);
        probability("dirty.late_rate", self.dirty.late_rate);
        probability("dirty.malformed_rate", self.dirty.malformed_rate);
        if self.dirty.out_of_order_rate + self.dirty.late_rate > 1.0 {
            problems.push("dirty.out_of_order_rate + dirty.late_rate must not exceed 1".into());
        }
        if self.dirty.disorder_bound_ms < 2 {
            problems.push("dirty.disorder_bound_ms must be at least 2".into());
        }
        if self.dirty.late_rate > 0.0 && self.dirty.late_delay_ms <= self.dirty.disorder_bound_ms {
            problems.push("dirty.late_delay_ms must exceed dirty.disorder_bound_ms".into());
        }
        if self.users == 0 {
            problems.push("users must be at least 1".into());
        }
        if self.catalog.categories == 0 {
            problems.push("catalog.categories must be at least 1".into());
        }
        if self.catalog.items < self.catalog.categories {
            problems.push("catalog.items must be at least catalog.categories".into());
        }
        let b = &self.behaviour;
        if !(0.001..=10_000.0).contains(&b.sessions_per_user_per_day) {
            problems.push("behaviour.sessions_per_user_per_day must be in [0.001, 10000]".into());
        }
        if b.min_session_gap_ms > MAX_GAP_MS {
            problems.push("behaviour.min_session_gap_ms must be at most 365 days".into());
        }
        if !(b.intent_alpha.is_finite() && b.intent_alpha > 0.0) {
            problems.push("behaviour.intent_alpha must be positive".into());
        }
        if !(b.intent_beta.is_finite() && b.intent_beta > 0.0) {
            problems.push("behaviour.intent_beta must be positive".into());
        }
        if !(b.buyer_mean_product_views.is_finite() && b.buyer_mean_product_views >= 1.0) {
            problems.push("behaviour.buyer_mean_product_views must be at least 1".into());
        }
        let f = &self.funnel;
        if !(f.cart_per_product_view > 0.0 && f.cart_per_product_view < 1.0) {
            problems.push("funnel.cart_per_product_view must be in (0, 1)".into());
        }
        if !(f.purchase_per_cart > 0.0 && f.purchase_per_cart <= 1.0) {
            problems.push("funnel.purchase_per_cart must be in (0, 1]".into());
        }
        if !(0..LATEST_START_MS).contains(&self.start_time_ms) {
            problems.push(
                "start_time_ms must be between 1970 and 2096 (malformed records use 2100)".into(),
            );
        }
        if self.dirty.disorder_bound_ms > MAX_GAP_MS || self.dirty.late_delay_ms > MAX_GAP_MS {
            problems.push("dirty delays must be at most 365 days".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GeneratorConfig::default().validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported() {
        let mut cfg = GeneratorConfig {
            users: 0,
            ..GeneratorConfig::default()
        };
        cfg.dirty.duplicate_rate = 1.5;
        cfg.funnel.purchase_per_cart = 0.0;
        let Err(ConfigError::Invalid(problems)) = cfg.validate() else {
            panic!("expected invalid config");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<GeneratorConfig>(r#"{"seed": 1, "colour": "red"}"#);
        assert!(err.is_err());
        let partial: GeneratorConfig =
            serde_json::from_str(r#"{"seed": 7, "dirty": {"late_rate": 0.1}}"#).unwrap();
        assert_eq!(partial.seed, 7);
        assert_eq!(partial.dirty.late_rate, 0.1);
        assert_eq!(partial.dirty.duplicate_rate, 0.01);
    }
}
