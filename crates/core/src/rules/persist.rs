//! The detector's durable state: each user's entry (rule state and profile) and the learned
//! statistics, in a compact binary encoding for a changelog.
//!
//! A value is one version byte, then the state in bincode's standard configuration (varints,
//! fields in declaration order) through its serde derives: [`USER_V2`] for a user's
//! [`super::UserEntry`], [`STATS_V3`] for the statistics. The structs are plain data, so the
//! encoding follows them; a change to their fields needs a new version byte. An older user
//! version still reads ([`v1`]), so do version-2 statistics ([`STATS_V2`]); any other version is an error: that user, or the statistics,
//! start afresh. Decoding is bounded to
//! [`MAX_VALUE`] bytes, so a corrupt length cannot allocate without limit.

use super::{UserEntry, anomaly_score, budget, calibrate, grammar, price, ring, signals, takeover};
use crate::anomaly::HstState;
use crate::hash::U64Build;
use crate::state_codec::StateDecodeError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// First byte of a version-1 user entry (before the takeover rule counted the session's focus):
/// still read.
pub(super) const USER_V1: u8 = 0xE1;
/// First byte of a version-2 user entry.
pub(super) const USER_V2: u8 = 0xE4;
/// First byte of version-2 statistics (version 1, `0xE2`, had no watermark: such a value is not
/// read, and the statistics start afresh). Version 2 is version 3 without its last field, the
/// stream's order values: still read, those start afresh.
pub(super) const STATS_V2: u8 = 0xE3;
/// First byte of version-3 statistics.
pub(super) const STATS_V3: u8 = 0xE5;
/// Largest value decoded (a partition's statistics are tens of KB; a user's entry a few).
const MAX_VALUE: usize = 16 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_VALUE>()
}

/// What the detector has learned of its partition's stream, borrowed for encoding.
#[derive(Serialize)]
pub(super) struct StatisticsRef<'a> {
    pub ips: &'a HashMap<u64, VecDeque<i64>, U64Build>,
    pub prices: &'a price::PriceBaselines,
    pub rings: &'a ring::Rings,
    pub grammar: &'a grammar::Grammar,
    pub population: &'a signals::Population,
    pub hst: HstState,
    pub last_score: f64,
    pub calibration: &'a calibrate::Calibration,
    pub population_features: &'a anomaly_score::PopulationFeatures,
    pub budget: &'a budget::AlertBudget,
    pub suppressed: u64,
    pub escalated: u64,
    pub watermark: i64,
    /// Last: version 2 is this encoding without it.
    pub orders: &'a takeover::StreamOrders,
}

/// The same, owned, as decoded.
#[derive(Deserialize)]
pub(super) struct Statistics {
    pub ips: HashMap<u64, VecDeque<i64>, U64Build>,
    pub prices: price::PriceBaselines,
    pub rings: ring::Rings,
    pub grammar: grammar::Grammar,
    pub population: signals::Population,
    pub hst: HstState,
    pub last_score: f64,
    pub calibration: calibrate::Calibration,
    pub population_features: anomaly_score::PopulationFeatures,
    pub budget: budget::AlertBudget,
    pub suppressed: u64,
    pub escalated: u64,
    pub watermark: i64,
    pub orders: takeover::StreamOrders,
}

fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| e.to_string())?;
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(version: u8, bytes: &[u8]) -> Result<T, StateDecodeError> {
    match bytes.split_first() {
        Some((&v, body)) if v == version => {
            let (value, read) = bincode::serde::decode_from_slice(body, config())
                .map_err(|e| StateDecodeError(e.to_string()))?;
            if read != body.len() {
                return Err(StateDecodeError("bytes after the state".into()));
            }
            Ok(value)
        }
        Some((v, _)) => Err(StateDecodeError(format!("unknown format byte 0x{v:02x}"))),
        None => Err(StateDecodeError("empty value".into())),
    }
}

/// A user's entry as a changelog value.
pub(super) fn encode_user(entry: &UserEntry) -> Result<Vec<u8>, String> {
    encode(USER_V2, entry)
}

/// A user's entry read back, from the current version or version 1.
pub(super) fn decode_user(bytes: &[u8]) -> Result<UserEntry, StateDecodeError> {
    match bytes.first() {
        Some(&USER_V1) => decode::<v1::UserEntry>(USER_V1, bytes).map(Into::into),
        _ => decode(USER_V2, bytes),
    }
}

/// Version 1 of a user's entry: the same but for the takeover rule's pending login, which had
/// no session focus. Such a login is dropped on reading (it lasts `takeover_window_ms` at most,
/// and its bar cannot be re-derived); everything else is kept, the profile above all.
pub(super) mod v1 {
    use super::super::{
        OpenAlert, Recent, UserRules as Current, anomaly_score, bot, breadth, card, cart, sequence,
        signals, surprise, takeover, velocity,
    };
    use crate::rules::ALERT_TYPES;
    use clickpath_schema::EventType;
    use serde::{Deserialize, Serialize};

    /// [`super::super::UserEntry`] as version 1 wrote it.
    #[derive(Default, Serialize, Deserialize)]
    pub(in super::super) struct UserEntry {
        pub rules: Option<Box<UserRules>>,
        pub profile: Option<Box<signals::Profile>>,
    }

    /// [`Current`] as version 1 wrote it, field for field.
    #[derive(Serialize, Deserialize)]
    pub(in super::super) struct UserRules {
        pub last_time: i64,
        pub last_type: Option<EventType>,
        pub active_hour: i64,
        pub recent: Recent,
        pub velocity: velocity::UserVelocity,
        pub cadence: bot::Cadence,
        pub browsing: breadth::BrowsingRun,
        pub card: card::CardState,
        pub takeover: takeover::TakeoverStateV1,
        pub cart: cart::CartState,
        pub sequence: sequence::SequenceState,
        pub surprise: surprise::SurpriseState,
        pub scores: anomaly_score::ScoreWindow,
        pub open: [Option<Box<OpenAlert>>; ALERT_TYPES.len()],
    }

    impl From<UserEntry> for super::UserEntry {
        fn from(old: UserEntry) -> Self {
            super::UserEntry {
                rules: old.rules.map(|r| {
                    let r = *r;
                    Box::new(Current {
                        last_time: r.last_time,
                        last_type: r.last_type,
                        active_hour: r.active_hour,
                        recent: r.recent,
                        velocity: r.velocity,
                        cadence: r.cadence,
                        browsing: r.browsing,
                        card: r.card,
                        takeover: Default::default(),
                        cart: r.cart,
                        sequence: r.sequence,
                        surprise: r.surprise,
                        scores: r.scores,
                        open: r.open,
                    })
                }),
                profile: old.profile,
            }
        }
    }
}

/// The statistics as a changelog value.
pub(super) fn encode_statistics(s: &StatisticsRef<'_>) -> Result<Vec<u8>, String> {
    encode(STATS_V3, s)
}

/// The statistics read back, from the current version or version 2.
pub(super) fn decode_statistics(bytes: &[u8]) -> Result<Statistics, StateDecodeError> {
    match bytes.first() {
        Some(&STATS_V2) => {
            // bincode writes fields one after the other: version 2's bytes followed by a fresh
            // last field are a version-3 value.
            let fresh =
                encode(STATS_V3, &takeover::StreamOrders::new()).map_err(StateDecodeError)?;
            let mut v3 = Vec::with_capacity(bytes.len() + fresh.len());
            v3.push(STATS_V3);
            v3.extend_from_slice(&bytes[1..]);
            v3.extend_from_slice(&fresh[1..]);
            decode(STATS_V3, &v3)
        }
        _ => decode(STATS_V3, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Detector, RulesConfig};
    use clickpath_schema::{ClickEvent, EventType, FraudAlert, Payment, PaymentStatus, Prediction};
    use std::collections::BTreeMap;

    /// 30 users over two hours: browsing, carts, logins from several devices and networks,
    /// payments (a quarter failing, on many cards for a few users), bursts, and predictions.
    fn stream(seed: u64) -> Vec<Result<ClickEvent, Prediction>> {
        let mut x = seed | 1;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut t = 1_700_000_000_000i64;
        let mut out = Vec::new();
        for i in 0..6_000 {
            let user = next(30);
            // Users 0-2 are fast (bots and card testers), the rest human-paced.
            t += if user < 3 {
                next(400) as i64
            } else {
                next(3_000) as i64
            };
            let kind = EventType::ALL[next(EventType::COUNT as u64) as usize];
            let mut e = ClickEvent::new(format!("e{i}"), format!("u{user}"), kind, t);
            e.item_id = Some(format!("i{}", next(40)));
            e.price = Some(5.0 + next(300) as f64);
            e.category = Some(format!("c{}", next(4)));
            e.device = Some(format!("d{}", user * 2 + next(2)));
            e.country = Some(if next(20) == 0 { "BR" } else { "DE" }.into());
            e.ip_prefix_hash = Some(format!("ip{}", next(12)));
            if kind == EventType::PaymentAttempt {
                e.payment = Some(Payment {
                    status: if user < 3 || next(4) == 0 {
                        PaymentStatus::Failed
                    } else {
                        PaymentStatus::Succeeded
                    },
                    method: "card".into(),
                    card_fingerprint: Some(format!("card{}", next(50))),
                });
            }
            if kind == EventType::Purchase {
                e.order_value = Some(10.0 + next(500) as f64);
            }
            if next(3) == 0 {
                out.push(Err(Prediction {
                    event_id: e.event_id.clone(),
                    user_id: e.user_id.clone(),
                    event_time: t,
                    model_version: "m".into(),
                    purchase_probability: 0.1,
                    next_actions: vec![clickpath_schema::ActionProbability {
                        event_type: EventType::PageView,
                        probability: 0.9,
                    }],
                    predicted_path: Vec::new(),
                    factors: Vec::new(),
                    scoring_latency_us: 1,
                    recommended_items: Vec::new(),
                    recommended_categories: Vec::new(),
                }));
            }
            out.push(Ok(e));
        }
        out
    }

    fn feed(d: &mut Detector, inputs: &[Result<ClickEvent, Prediction>]) -> Vec<FraudAlert> {
        let mut alerts = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            alerts.extend(match input {
                Ok(e) => d.on_event(e),
                Err(p) => d.on_prediction(p),
            });
            if let (Ok(e), 0) = (input, i % 500) {
                d.evict_idle(e.event_time - 600_000);
            }
        }
        alerts
    }

    #[test]
    fn when_idle_state_is_evicted_never_changes_an_alert() {
        // Eviction runs on a wall-clock tick, so a run may evict at any point, or not at all.
        // The users come back five hours later, after every rule window: never evicted, their
        // rule state is reset in place; evicted, it is dropped and made anew.
        let mut inputs = stream(11);
        let mut later = inputs.clone();
        for input in &mut later {
            let (time, id) = match input {
                Ok(e) => (&mut e.event_time, &mut e.event_id),
                Err(p) => (&mut p.event_time, &mut p.event_id),
            };
            *time += 5 * 3_600_000;
            id.push_str("-later");
        }
        inputs.extend(later);
        let alerts = |evict_every: usize| {
            let mut d = Detector::new(RulesConfig::default(), "v");
            let mut alerts = Vec::new();
            let mut watermark = i64::MIN;
            for (i, input) in inputs.iter().enumerate() {
                alerts.extend(match input {
                    Ok(e) => {
                        watermark = watermark.max(e.event_time);
                        d.on_event(e)
                    }
                    Err(p) => d.on_prediction(p),
                });
                if evict_every > 0 && i % evict_every == 0 {
                    d.evict_idle(watermark);
                }
            }
            alerts
        };
        let never = alerts(0);
        assert!(!never.is_empty(), "the stream raises alerts");
        for every in [1, 7, 97] {
            assert_eq!(alerts(every), never, "evicting every {every} inputs");
        }
    }

    #[test]
    fn a_detector_restored_from_its_changes_raises_the_same_alerts() {
        let inputs = stream(7);
        let mut uninterrupted = Detector::new(RulesConfig::default(), "v");
        let reference = feed(&mut uninterrupted, &inputs);

        let cut = inputs.len() / 2;
        let mut first = Detector::new(RulesConfig::default(), "v").with_journal();
        // What a compacted changelog holds, written every 250 inputs as a stage's batches would.
        let mut users: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut statistics = None;
        let mut got = Vec::new();
        for chunk in inputs[..cut].chunks(250) {
            got.extend(feed(&mut first, chunk));
            let c = first.take_changes().unwrap();
            users.extend(c.users);
            statistics = c.statistics.or(statistics);
        }
        assert_eq!(first.take_changes().unwrap(), Default::default());
        let mut second = Detector::new(RulesConfig::default(), "v");
        for (user, bytes) in &users {
            if let Some(b) = bytes {
                second.restore_user(user.clone(), b).unwrap();
            }
        }
        second.restore_statistics(&statistics.unwrap()).unwrap();
        assert_eq!(second.users(), first.users());
        let before = got.len();
        got.extend(feed(&mut second, &inputs[cut..]));
        assert!(got.len() > before, "alerts after the handover");
        assert!(reference.len() > 10, "{} alerts", reference.len());
        assert_eq!(got, reference);
    }

    #[test]
    fn rule_state_reset_in_place_is_a_new_state() {
        use super::super::{UserEntry, UserRules};
        let mut d = Detector::new(RulesConfig::default(), "v");
        feed(&mut d, &stream(5));
        let t = 1_800_000_000_000;
        let fresh = super::encode_user(&UserEntry {
            rules: Some(Box::new(UserRules::new(t))),
            profile: None,
        })
        .unwrap();
        let mut checked = 0;
        for entry in d.users.values_mut() {
            let mut rules_only = std::mem::take(entry);
            rules_only.profile = None;
            if rules_only.rules.is_none() {
                continue;
            }
            let before = super::encode_user(&rules_only).unwrap();
            if let Some(rules) = rules_only.rules.as_deref_mut() {
                rules.reset(t);
            }
            assert_eq!(super::encode_user(&rules_only).unwrap(), fresh);
            checked += usize::from(before != fresh);
        }
        assert!(checked > 20, "{checked} users had state to reset");
    }

    #[test]
    fn a_version_1_entry_reads_with_its_profile_and_without_its_pending_login() {
        use super::super::{UserEntry, UserRules};
        let mut d = Detector::new(RulesConfig::default(), "v");
        feed(&mut d, &stream(5));
        let profile = d
            .users
            .values_mut()
            .find_map(|e| e.profile.take())
            .expect("a user with a profile");
        let profile_bytes = bincode::serde::encode_to_vec(&profile, super::config()).unwrap();
        let t = 1_800_000_000_000;
        let r = UserRules::new(t);
        let old = super::v1::UserEntry {
            rules: Some(Box::new(super::v1::UserRules {
                last_time: r.last_time,
                last_type: Some(EventType::Login),
                active_hour: r.active_hour,
                recent: r.recent,
                velocity: r.velocity,
                cadence: r.cadence,
                browsing: r.browsing,
                card: r.card,
                takeover: super::super::takeover::TakeoverStateV1::pending(t),
                cart: r.cart,
                sequence: r.sequence,
                surprise: r.surprise,
                scores: r.scores,
                open: r.open,
            })),
            profile: Some(profile),
        };
        let bytes = super::encode(super::USER_V1, &old).unwrap();
        let read = super::decode_user(&bytes).unwrap();
        let rules = read.rules.as_deref().unwrap();
        assert_eq!(rules.last_type, Some(EventType::Login));
        assert_eq!(
            bincode::serde::encode_to_vec(read.profile.as_deref().unwrap(), super::config())
                .unwrap(),
            profile_bytes,
            "the profile is kept"
        );
        // The pending login is dropped: the rule state is a fresh one, but for what was kept.
        let fresh = UserRules {
            last_type: Some(EventType::Login),
            ..UserRules::new(t)
        };
        let rules_only = |rules| {
            super::encode_user(&UserEntry {
                rules,
                profile: None,
            })
            .unwrap()
        };
        assert_eq!(rules_only(read.rules), rules_only(Some(Box::new(fresh))));
        // A version-1 value cut short is still an error.
        assert!(super::decode_user(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn version_2_statistics_read_with_the_stream_orders_afresh() {
        use super::super::takeover::StreamOrders;
        let mut d = Detector::new(RulesConfig::default(), "v").with_journal();
        feed(&mut d, &stream(3));
        let v3 = d.take_changes().unwrap().statistics.unwrap();
        // Version 2 wrote the same fields but the last.
        let orders = super::encode(super::STATS_V3, &d.orders).unwrap();
        assert!(v3.ends_with(&orders[1..]));
        let mut v2 = vec![super::STATS_V2];
        v2.extend_from_slice(&v3[1..v3.len() + 1 - orders.len()]);

        let mut read = Detector::new(RulesConfig::default(), "v").with_journal();
        read.restore_statistics(&v2).unwrap();
        read.statistics_changed = true;
        let again = read.take_changes().unwrap().statistics.unwrap();
        let fresh = super::encode(super::STATS_V3, &StreamOrders::new()).unwrap();
        assert_eq!(
            &again[..v3.len() + 1 - orders.len()],
            &v3[..v3.len() + 1 - orders.len()]
        );
        assert_eq!(&again[v3.len() + 1 - orders.len()..], &fresh[1..]);
        // Cut short, it is still an error.
        assert!(read.restore_statistics(&v2[..v2.len() - 1]).is_err());
        // A version-3 value keeps the stream's orders.
        let mut read = Detector::new(RulesConfig::default(), "v").with_journal();
        read.restore_statistics(&v3).unwrap();
        read.statistics_changed = true;
        assert_eq!(read.take_changes().unwrap().statistics.unwrap(), v3);
    }

    #[test]
    fn corrupt_or_foreign_values_are_errors() {
        let mut d = Detector::new(RulesConfig::default(), "v").with_journal();
        for e in stream(3).iter().take(300).flatten() {
            d.on_event(e);
        }
        let c = d.take_changes().unwrap();
        let user = c.users[0].1.clone().unwrap();
        let stats = c.statistics.unwrap();
        let mut fresh = Detector::new(RulesConfig::default(), "v");
        for n in [0, 1, user.len() / 2, user.len() - 1] {
            assert!(
                fresh.restore_user("u".into(), &user[..n]).is_err(),
                "user prefix {n}"
            );
        }
        for n in [0, 1, stats.len() / 2, stats.len() - 1] {
            assert!(
                fresh.restore_statistics(&stats[..n]).is_err(),
                "stats prefix {n}"
            );
        }
        assert!(fresh.restore_user("u".into(), &stats).is_err());
        assert!(fresh.restore_statistics(&user).is_err());
        // A forest of another shape refuses the learned counts.
        let mut other = Detector::new(
            RulesConfig {
                hst: crate::anomaly::HstConfig {
                    trees: 3,
                    ..Default::default()
                },
                ..RulesConfig::default()
            },
            "v",
        );
        assert!(other.restore_statistics(&stats).is_err());
        assert_eq!(fresh.users(), 0);
        // A histogram whose bins do not match the code decodes, but is refused (it would be
        // indexed past its end).
        d.calibration.price = super::calibrate::Calibrator::new(0.0, 1.0, 10.0).with_bins(3);
        d.statistics_changed = true;
        let bad = d.take_changes().unwrap().statistics.unwrap();
        assert!(super::decode_statistics(&bad).is_ok());
        assert!(fresh.restore_statistics(&bad).is_err());
    }
}
