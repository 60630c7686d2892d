//! Fraud and bot rules: the detector stage's logic.
//!
//! [`Detector::on_event`] folds one event into its user's rule state and returns the alerts it
//! raises. Rules (thresholds in [`RulesConfig`]):
//! - **Velocity** ([`AlertType::Velocity`]): more than `velocity_max_events` events from one user
//!   with times in `(now - velocity_window_ms, now]`.
//! - **Card testing** ([`AlertType::CardTesting`]): at least `card_testing_min_failures` failed
//!   payment attempts carrying at least `card_testing_min_cards` distinct card fingerprints within
//!   `card_testing_window_ms`.
//! - **Impossible sequence** ([`AlertType::ImpossibleSequence`]): a `PURCHASE` with no
//!   `BEGIN_CHECKOUT` or `PAYMENT_ATTEMPT` from the same user in the previous
//!   `impossible_sequence_lookback_ms` (earlier in the stream, so a purchase that overtakes its own
//!   checkout in transit also fires).
//!
//! Every alert has a deterministic id `user_id:TYPE:window_start`, where `window_start` is the
//! event time of the first event the rule counted (for an impossible sequence, the purchase
//! itself, its only evidence) and `window_end` the triggering event's time;
//! a severity that grows with how far the observation exceeds the threshold; reasons as sentences
//! with the numbers; and at most `max_evidence` evidence event ids (the most recent ones).
//!
//! Suppression: at most one alert per (user, type) per `cooldown_ms` of event time; evidence
//! arriving inside the cooldown is not re-alerted (counted by [`Detector::suppressed`]).
//!
//! Memory: per user, at most `max_evidence` recent ids, the velocity window's times (capped at
//! eight times the threshold) and up to [`MAX_FAILED_PAYMENTS`] failed payments; users silent
//! longer than every window and the cooldown are dropped by [`Detector::evict_idle`], which does
//! not change any later result.

use crate::hash::fnv1a;
use clickpath_schema::{AlertType, ClickEvent, EventType, FraudAlert, PaymentStatus, Severity};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Most failed payments remembered per user.
pub const MAX_FAILED_PAYMENTS: usize = 64;

/// Thresholds of the rules.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Velocity window, ms. Default 10 seconds (`10_000`).
    pub velocity_window_ms: i64,
    /// Most events per user in the velocity window before an alert. Default 30.
    pub velocity_max_events: u32,
    /// Card-testing window, ms. Default 10 minutes (`600_000`).
    pub card_testing_window_ms: i64,
    /// Failed payment attempts needed for card testing. Default 3.
    pub card_testing_min_failures: u32,
    /// Distinct card fingerprints among them needed for card testing. Default 3.
    pub card_testing_min_cards: u32,
    /// How far back a purchase looks for a checkout or payment attempt, ms. Default 30 minutes
    /// (`1_800_000`).
    pub impossible_sequence_lookback_ms: i64,
    /// Minimum event time between two alerts of one type for one user, ms. Default 10 minutes
    /// (`600_000`).
    pub cooldown_ms: i64,
    /// Most evidence event ids per alert (the most recent are kept). Default 20.
    pub max_evidence: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            velocity_window_ms: 10_000,
            velocity_max_events: 30,
            card_testing_window_ms: 600_000,
            card_testing_min_failures: 3,
            card_testing_min_cards: 3,
            impossible_sequence_lookback_ms: 30 * 60 * 1000,
            cooldown_ms: 10 * 60 * 1000,
            max_evidence: 20,
        }
    }
}

/// The Avro symbol of an alert type, e.g. `CARD_TESTING` (used in alert ids).
pub fn alert_type_symbol(t: AlertType) -> &'static str {
    match t {
        AlertType::Velocity => "VELOCITY",
        AlertType::BotCadence => "BOT_CADENCE",
        AlertType::CardTesting => "CARD_TESTING",
        AlertType::AccountTakeover => "ACCOUNT_TAKEOVER",
        AlertType::CartStuffing => "CART_STUFFING",
        AlertType::ImpossibleSequence => "IMPOSSIBLE_SEQUENCE",
        AlertType::PriceAnomaly => "PRICE_ANOMALY",
        AlertType::ModelSurprise => "MODEL_SURPRISE",
    }
}

/// Slot of an alert type in the per-user cooldown table.
fn slot(t: AlertType) -> usize {
    match t {
        AlertType::Velocity => 0,
        AlertType::BotCadence => 1,
        AlertType::CardTesting => 2,
        AlertType::AccountTakeover => 3,
        AlertType::CartStuffing => 4,
        AlertType::ImpossibleSequence => 5,
        AlertType::PriceAnomaly => 6,
        AlertType::ModelSurprise => 7,
    }
}

/// `base` raised one level at 1.5x, 2x and 4x the threshold (`ratio` = observed / threshold).
fn severity(base: Severity, ratio: f64) -> Severity {
    const LEVELS: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
    let start = LEVELS.iter().position(|&s| s == base).unwrap_or(0);
    let bumps = [1.5, 2.0, 4.0].iter().filter(|&&r| ratio >= r).count();
    LEVELS[(start + bumps).min(LEVELS.len() - 1)]
}

/// A duration for reasons: `10 s`, `10 min`, `2 h`, `1500 ms`.
fn human(ms: i64) -> String {
    if ms % 3_600_000 == 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

#[derive(Debug)]
struct FailedPayment {
    time: i64,
    card: Option<u64>,
    event_id: String,
}

#[derive(Debug)]
struct UserRules {
    /// Latest event time seen.
    last_time: i64,
    /// Ring of the most recent (time, event id); buffers are reused, so no allocation per event.
    recent: Vec<(i64, String)>,
    /// Next slot of `recent` to overwrite once it is full.
    recent_next: usize,
    /// Times of the events in the velocity window, oldest first.
    velocity: VecDeque<i64>,
    failed_payments: VecDeque<FailedPayment>,
    last_checkout: Option<i64>,
    /// Event time of the last alert per type, for the cooldown.
    last_alert: [Option<i64>; 8],
}

impl UserRules {
    fn new(t: i64) -> Self {
        UserRules {
            last_time: t,
            recent: Vec::new(),
            recent_next: 0,
            velocity: VecDeque::new(),
            failed_payments: VecDeque::new(),
            last_checkout: None,
            last_alert: [None; 8],
        }
    }

    fn remember(&mut self, t: i64, id: &str, cap: usize) {
        if self.recent.len() < cap {
            self.recent.push((t, id.to_owned()));
        } else if let Some(slot) = self.recent.get_mut(self.recent_next) {
            slot.0 = t;
            slot.1.clear();
            slot.1.push_str(id);
            self.recent_next = (self.recent_next + 1) % cap;
        }
    }

    /// Recent (time, id) pairs with time in `(after, ..]`, oldest first.
    fn recent_since(&self, after: i64) -> Vec<(i64, String)> {
        let (newer, older) = self
            .recent
            .split_at(self.recent_next.min(self.recent.len()));
        older
            .iter()
            .chain(newer)
            .filter(|(t, _)| *t > after)
            .cloned()
            .collect()
    }
}

/// Rule-based fraud and bot detector (see the module docs for the rules).
#[derive(Debug)]
pub struct Detector {
    cfg: RulesConfig,
    version: String,
    users: HashMap<String, UserRules>,
    suppressed: u64,
}

/// What a rule found, before suppression and formatting.
struct Finding {
    alert_type: AlertType,
    severity: Severity,
    score: f64,
    reasons: Vec<String>,
    evidence: Vec<String>,
    window_start: i64,
    window_end: i64,
}

impl Detector {
    /// A detector with `cfg`, stamping `detector_version` on its alerts.
    pub fn new(cfg: RulesConfig, detector_version: &str) -> Self {
        Detector {
            cfg,
            version: detector_version.to_owned(),
            users: HashMap::new(),
            suppressed: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RulesConfig {
        &self.cfg
    }

    /// Folds `ev` into its user's state and returns the alerts it raises (usually none).
    pub fn on_event(&mut self, ev: &ClickEvent) -> Vec<FraudAlert> {
        let t = ev.event_time;
        let user = match self.users.get_mut(ev.user_id.as_str()) {
            Some(u) => u,
            None => self
                .users
                .entry(ev.user_id.clone())
                .or_insert_with(|| UserRules::new(t)),
        };
        let now = user.last_time.max(t);
        user.last_time = now;
        let cfg = &self.cfg;
        user.remember(t, &ev.event_id, cfg.max_evidence.max(1));

        let mut findings: Vec<Finding> = Vec::new();
        findings.extend(velocity(user, cfg, now));
        findings.extend(card_testing(user, ev, cfg, now));
        findings.extend(impossible_sequence(user, ev, cfg));

        let mut alerts = Vec::new();
        for f in findings {
            let s = slot(f.alert_type);
            if user.last_alert[s].is_some_and(|at| now < at.saturating_add(cfg.cooldown_ms)) {
                self.suppressed += 1;
                continue;
            }
            user.last_alert[s] = Some(now);
            alerts.push(FraudAlert {
                alert_id: format!(
                    "{}:{}:{}",
                    ev.user_id,
                    alert_type_symbol(f.alert_type),
                    f.window_start
                ),
                user_id: ev.user_id.clone(),
                alert_type: f.alert_type,
                severity: f.severity,
                score: f.score,
                reasons: f.reasons,
                evidence_event_ids: f.evidence,
                window_start: f.window_start,
                window_end: f.window_end,
                detector_version: self.version.clone(),
            });
        }
        alerts
    }

    /// Drops users silent for longer than every rule window and the cooldown at `watermark_ms`.
    /// Returns the number removed.
    pub fn evict_idle(&mut self, watermark_ms: i64) -> usize {
        let c = &self.cfg;
        let horizon = c
            .velocity_window_ms
            .max(c.card_testing_window_ms)
            .max(c.impossible_sequence_lookback_ms)
            .max(c.cooldown_ms);
        let before = self.users.len();
        self.users
            .retain(|_, u| u.last_time.saturating_add(horizon) > watermark_ms);
        before - self.users.len()
    }

    /// Number of users with state.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Number of alerts withheld by the cooldown so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

fn velocity(user: &mut UserRules, cfg: &RulesConfig, now: i64) -> Option<Finding> {
    let max = cfg.velocity_max_events.max(1);
    let horizon = now.saturating_sub(cfg.velocity_window_ms);
    user.velocity.push_back(now);
    while user.velocity.front().is_some_and(|&t| t <= horizon) {
        user.velocity.pop_front();
    }
    // Past 8x the threshold the severity cannot rise further; stop growing.
    let cap = (max as usize).saturating_mul(8);
    while user.velocity.len() > cap {
        user.velocity.pop_front();
    }
    let count = user.velocity.len();
    if count <= max as usize {
        return None;
    }
    let ratio = count as f64 / f64::from(max);
    let evidence: Vec<String> = user
        .recent_since(horizon)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    Some(Finding {
        alert_type: AlertType::Velocity,
        severity: severity(Severity::Low, ratio),
        score: ratio,
        reasons: vec![format!(
            "{count} events within {} (limit {max}).",
            human(cfg.velocity_window_ms)
        )],
        evidence,
        window_start: user.velocity.front().copied().unwrap_or(now),
        window_end: now,
    })
}

fn card_testing(
    user: &mut UserRules,
    ev: &ClickEvent,
    cfg: &RulesConfig,
    now: i64,
) -> Option<Finding> {
    let payment = ev.payment.as_ref()?;
    if ev.event_type != EventType::PaymentAttempt || payment.status != PaymentStatus::Failed {
        return None;
    }
    let horizon = now.saturating_sub(cfg.card_testing_window_ms);
    user.failed_payments.push_back(FailedPayment {
        time: ev.event_time,
        card: payment.card_fingerprint.as_deref().map(fnv1a),
        event_id: ev.event_id.clone(),
    });
    while user
        .failed_payments
        .front()
        .is_some_and(|f| f.time <= horizon)
        || user.failed_payments.len() > MAX_FAILED_PAYMENTS
    {
        user.failed_payments.pop_front();
    }
    let failures = user.failed_payments.len();
    let mut cards: Vec<u64> = user.failed_payments.iter().filter_map(|f| f.card).collect();
    cards.sort_unstable();
    cards.dedup();
    let min_failures = cfg.card_testing_min_failures.max(1) as usize;
    let min_cards = cfg.card_testing_min_cards.max(1) as usize;
    if failures < min_failures || cards.len() < min_cards {
        return None;
    }
    let ratio = cards.len() as f64 / min_cards as f64;
    let skip = failures.saturating_sub(cfg.max_evidence.max(1));
    Some(Finding {
        alert_type: AlertType::CardTesting,
        severity: severity(Severity::High, ratio),
        score: ratio,
        reasons: vec![format!(
            "{failures} failed payment attempts with {} distinct card fingerprints within {} \
             (thresholds: {min_failures} failures, {min_cards} cards).",
            cards.len(),
            human(cfg.card_testing_window_ms)
        )],
        evidence: user
            .failed_payments
            .iter()
            .skip(skip)
            .map(|f| f.event_id.clone())
            .collect(),
        window_start: user.failed_payments.front().map_or(now, |f| f.time),
        window_end: ev.event_time,
    })
}

fn impossible_sequence(
    user: &mut UserRules,
    ev: &ClickEvent,
    cfg: &RulesConfig,
) -> Option<Finding> {
    let t = ev.event_time;
    match ev.event_type {
        EventType::BeginCheckout | EventType::PaymentAttempt => {
            user.last_checkout = Some(user.last_checkout.map_or(t, |c| c.max(t)));
            None
        }
        EventType::Purchase => {
            let lookback = cfg.impossible_sequence_lookback_ms;
            if user
                .last_checkout
                .is_some_and(|c| c >= t.saturating_sub(lookback))
            {
                return None;
            }
            let order = ev
                .order_id
                .as_deref()
                .map(|o| format!(" (order {o})"))
                .unwrap_or_default();
            Some(Finding {
                alert_type: AlertType::ImpossibleSequence,
                severity: Severity::Medium,
                score: 1.0,
                reasons: vec![format!(
                    "PURCHASE{order} with no BEGIN_CHECKOUT or PAYMENT_ATTEMPT in the previous {}.",
                    human(lookback)
                )],
                // The purchase alone is the evidence, so each one gets its own alert id.
                window_start: t,
                window_end: t,
                evidence: vec![ev.event_id.clone()],
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;
    use clickpath_schema::Payment;

    fn ev(id: &str, kind: EventType, t: i64) -> ClickEvent {
        ClickEvent::new(id, "u", kind, t)
    }

    fn failed(id: &str, t: i64, card: Option<&str>) -> ClickEvent {
        let mut e = ev(id, PaymentAttempt, t);
        e.payment = Some(Payment {
            status: PaymentStatus::Failed,
            method: "card".into(),
            card_fingerprint: card.map(String::from),
        });
        e
    }

    fn run(d: &mut Detector, events: &[ClickEvent]) -> Vec<FraudAlert> {
        events.iter().flat_map(|e| d.on_event(e)).collect()
    }

    fn detector() -> Detector {
        Detector::new(RulesConfig::default(), "rules@test")
    }

    #[test]
    fn velocity_fires_above_the_limit_only() {
        // 30 events in 10 s: at the limit, no alert.
        let at_limit: Vec<_> = (0..30)
            .map(|i| ev(&format!("e{i}"), PageView, 1_000 + i * 300))
            .collect();
        assert!(run(&mut detector(), &at_limit).is_empty());

        // 31 events within 10 s fire once; the 31st is the trigger.
        let mut d = detector();
        let burst: Vec<_> = (0..40)
            .map(|i| ev(&format!("e{i}"), PageView, 1_000 + i * 300))
            .collect();
        let alerts = run(&mut d, &burst);
        assert_eq!(alerts.len(), 1, "cooldown suppresses the rest");
        let a = &alerts[0];
        assert_eq!(a.alert_type, AlertType::Velocity);
        assert_eq!(a.window_end, 1_000 + 30 * 300);
        assert_eq!(a.window_start, 1_000);
        assert_eq!(a.alert_id, "u:VELOCITY:1000");
        assert_eq!(a.severity, Severity::Low);
        assert_eq!(a.evidence_event_ids.len(), 20);
        assert_eq!(a.evidence_event_ids.last().map(String::as_str), Some("e30"));
        assert_eq!(a.evidence_event_ids[0], "e11");
        assert!(
            a.reasons[0].contains("31 events within 10 s (limit 30)"),
            "{:?}",
            a.reasons
        );
        assert_eq!(a.detector_version, "rules@test");
        assert_eq!(d.suppressed(), 9);

        // Spread out over more than 10 s: never more than 30 in a window.
        let slow: Vec<_> = (0..100)
            .map(|i| ev(&format!("e{i}"), PageView, i * 340))
            .collect();
        assert!(run(&mut detector(), &slow).is_empty());
    }

    #[test]
    fn velocity_severity_grows_with_the_excess() {
        let mut d = Detector::new(
            RulesConfig {
                velocity_max_events: 4,
                cooldown_ms: 0,
                ..RulesConfig::default()
            },
            "v",
        );
        let alerts = run(
            &mut d,
            &(0..20)
                .map(|i| ev(&format!("e{i}"), Search, i))
                .collect::<Vec<_>>(),
        );
        let sev: Vec<_> = alerts.iter().map(|a| a.severity).collect();
        // 5/4, 6/4 (1.5x), 8/4 (2x), 16/4 (4x).
        assert_eq!(sev[0], Severity::Low);
        assert_eq!(sev[1], Severity::Medium);
        assert_eq!(sev[3], Severity::High);
        assert_eq!(sev[11], Severity::Critical);
    }

    #[test]
    fn card_testing_needs_enough_failures_and_cards() {
        let mut d = detector();
        let alerts = run(
            &mut d,
            &[
                failed("p1", 0, Some("c1")),
                failed("p2", 60_000, Some("c2")),
                failed("p3", 120_000, Some("c3")),
            ],
        );
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.alert_type, AlertType::CardTesting);
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.evidence_event_ids, vec!["p1", "p2", "p3"]);
        assert_eq!((a.window_start, a.window_end), (0, 120_000));
        assert_eq!(a.alert_id, "u:CARD_TESTING:0");
        assert!(
            a.reasons[0].contains(
                "3 failed payment attempts with 3 distinct card fingerprints within 10 min"
            ),
            "{:?}",
            a.reasons
        );

        // Near misses: two distinct cards; three failures on the same card; no fingerprints.
        for events in [
            vec![
                failed("p1", 0, Some("c1")),
                failed("p2", 1, Some("c2")),
                failed("p3", 2, Some("c1")),
            ],
            vec![
                failed("p1", 0, Some("c1")),
                failed("p2", 1, Some("c1")),
                failed("p3", 2, Some("c1")),
            ],
            vec![
                failed("p1", 0, None),
                failed("p2", 1, None),
                failed("p3", 2, None),
                failed("p4", 3, Some("c1")),
            ],
        ] {
            assert!(run(&mut detector(), &events).is_empty());
        }
        // Three cards but spread over more than the window.
        let spread = [
            failed("p1", 0, Some("c1")),
            failed("p2", 300_000, Some("c2")),
            failed("p3", 600_000, Some("c3")),
        ];
        assert!(run(&mut detector(), &spread).is_empty());
        // Successful payments do not count.
        let mut ok = failed("p3", 2, Some("c3"));
        if let Some(p) = ok.payment.as_mut() {
            p.status = PaymentStatus::Succeeded;
        }
        let events = [failed("p1", 0, Some("c1")), failed("p2", 1, Some("c2")), ok];
        assert!(run(&mut detector(), &events).is_empty());
    }

    #[test]
    fn purchase_without_checkout_is_impossible() {
        let mut buy = ev("buy", Purchase, 10_000);
        buy.order_id = Some("o-1".into());
        let alerts = run(&mut detector(), &[ev("v", ProductView, 5_000), buy.clone()]);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.alert_type, AlertType::ImpossibleSequence);
        assert_eq!(a.evidence_event_ids, vec!["buy"]);
        assert_eq!((a.window_start, a.window_end), (10_000, 10_000));
        assert_eq!(a.alert_id, "u:IMPOSSIBLE_SEQUENCE:10000");
        assert!(a.reasons[0].contains("(order o-1)"), "{:?}", a.reasons);
        assert!(a.reasons[0].contains("30 min"), "{:?}", a.reasons);

        // Near misses: checkout or payment attempt within the lookback.
        for before in [ev("c", BeginCheckout, 1_000), failed("c", 1_000, Some("x"))] {
            assert!(run(&mut detector(), &[before, buy.clone()]).is_empty());
        }
        // A checkout older than the lookback does not count.
        let stale = ev("c", BeginCheckout, 10_000 - 30 * 60 * 1000 - 1);
        assert_eq!(run(&mut detector(), &[stale, buy]).len(), 1);
    }

    #[test]
    fn cooldown_suppresses_then_expires() {
        let mut d = detector();
        let mut out = Vec::new();
        for (i, t) in [0, 60_000, 599_999, 600_000].into_iter().enumerate() {
            out.extend(d.on_event(&ev(&format!("p{i}"), Purchase, t)));
        }
        let ids: Vec<_> = out.iter().map(|a| a.alert_id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["u:IMPOSSIBLE_SEQUENCE:0", "u:IMPOSSIBLE_SEQUENCE:600000"],
            "alerts at 0 and 600 000 only"
        );
        assert_eq!(d.suppressed(), 2);
        // Other users and other types are not suppressed.
        let mut other = ev("x", Purchase, 60_000);
        other.user_id = "w".into();
        assert_eq!(d.on_event(&other).len(), 1);
    }

    #[test]
    fn eviction_drops_idle_users_only() {
        let mut d = detector();
        d.on_event(&ev("a", PageView, 0));
        let mut b = ev("b", PageView, 1_000_000);
        b.user_id = "w".into();
        d.on_event(&b);
        assert_eq!(d.evict_idle(30 * 60 * 1000), 1);
        assert_eq!(d.users(), 1);
        assert_eq!(d.evict_idle(30 * 60 * 1000), 0);
    }

    #[test]
    fn memory_per_user_is_bounded() {
        let mut d = detector();
        for i in 0..5_000i64 {
            d.on_event(&failed(&format!("p{i}"), i, Some(&format!("c{i}"))));
        }
        let u = &d.users["u"];
        assert!(u.velocity.len() <= 30 * 8);
        assert!(u.failed_payments.len() <= MAX_FAILED_PAYMENTS);
        assert_eq!(u.recent.len(), 20);
    }
}
