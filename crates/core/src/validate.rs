//! The cleaning stage's logic: reject malformed events, normalise the rest.
//!
//! [`validate_and_normalise`] checks one event against a [`ValidationConfig`] and, when it passes,
//! rewrites a few fields into canonical form in place (so downstream stages can compare them
//! byte for byte). Rejections carry a machine-readable [`RejectKind`] (a low-cardinality metric
//! label and dead-letter `error_kind`) and a sentence naming the field and value.
//!
//! Checks, in order (the first failure wins):
//! 1. `event_id` and `user_id` must not be empty or whitespace ([`RejectKind::MissingField`]).
//! 2. No string field, extras key or extras value may be longer than `max_field_len` bytes, and
//!    there may be at most `max_extras` extras ([`RejectKind::Oversized`]).
//! 3. `event_time` must lie in `[min_event_time_ms, now + max_future_skew_ms]` ([`RejectKind::BadTime`]).
//! 4. `price` and `order_value` must be finite and not negative; `quantity` must be in
//!    `1..=max_quantity` ([`RejectKind::BadValue`]). Absurd but positive quantities pass on purpose:
//!    the fraud detector needs to see cart stuffing.
//! 5. A `PAYMENT_ATTEMPT` must carry `payment` ([`RejectKind::MissingField`]). A `PURCHASE` without
//!    `order_value` is allowed (some sources do not report it).
//!
//! Normalisation: ids are trimmed; `device` and `channel` are trimmed and lower-cased; `currency` and
//! `country` are trimmed and upper-cased; `category` is lower-cased and split on `/` with each
//! segment trimmed and empty segments dropped (so `" /Electronics//Phones/ "` becomes
//! `electronics/phones`); a category that normalises to nothing becomes `None`. Fields that are
//! already canonical are left untouched (no allocation).

use clickpath_schema::{ClickEvent, EventType};
use serde::{Deserialize, Serialize};

/// Thresholds of the validation rules.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Earliest accepted event time, ms since the epoch. Default `946_684_800_000` (2000-01-01T00:00Z).
    pub min_event_time_ms: i64,
    /// How far an event time may lie ahead of the processing clock, ms. Default one day (`86_400_000`).
    pub max_future_skew_ms: i64,
    /// Longest accepted string field, extras key or extras value, in bytes. Default 1024.
    pub max_field_len: usize,
    /// Most extras entries accepted. Default 32.
    pub max_extras: usize,
    /// Largest accepted `quantity`. Default 1 000 000 (large enough to let cart stuffing through).
    pub max_quantity: i32,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            min_event_time_ms: 946_684_800_000,
            max_future_skew_ms: 86_400_000,
            max_field_len: 1024,
            max_extras: 32,
            max_quantity: 1_000_000,
        }
    }
}

/// Why an event was rejected, as a low-cardinality kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// A required field is absent or blank.
    MissingField,
    /// The event time is implausibly old or too far in the future.
    BadTime,
    /// A numeric field is NaN, infinite, negative or out of range.
    BadValue,
    /// A field is too long or there are too many extras.
    Oversized,
}

impl RejectKind {
    /// Snake-case name, e.g. `missing_field` (a metric label and dead-letter `error_kind` suffix).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::MissingField => "missing_field",
            RejectKind::BadTime => "bad_time",
            RejectKind::BadValue => "bad_value",
            RejectKind::Oversized => "oversized",
        }
    }
}

impl std::fmt::Display for RejectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: the kind and a sentence naming the field and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct Rejection {
    /// What kind of problem it is.
    pub kind: RejectKind,
    /// Human-readable reason, e.g. `price is NaN`.
    pub reason: String,
}

impl Rejection {
    fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Rejection {
            kind,
            reason: reason.into(),
        }
    }
}

/// Validates `ev` against `cfg` and normalises it in place.
///
/// `now_ms` is the processing clock (wall time, ms since the epoch) used for the future-skew check.
/// On `Err` the event is left unchanged: normalisation only runs after every check has passed.
pub fn validate_and_normalise(
    ev: &mut ClickEvent,
    cfg: &ValidationConfig,
    now_ms: i64,
) -> Result<(), Rejection> {
    check_ids(ev)?;
    check_sizes(ev, cfg)?;
    check_time(ev, cfg, now_ms)?;
    check_values(ev, cfg)?;
    if ev.event_type == EventType::PaymentAttempt && ev.payment.is_none() {
        return Err(Rejection::new(
            RejectKind::MissingField,
            "payment is missing on a PAYMENT_ATTEMPT event",
        ));
    }
    normalise(ev);
    Ok(())
}

fn check_ids(ev: &ClickEvent) -> Result<(), Rejection> {
    if ev.event_id.trim().is_empty() {
        return Err(Rejection::new(
            RejectKind::MissingField,
            "event_id is empty",
        ));
    }
    if ev.user_id.trim().is_empty() {
        return Err(Rejection::new(RejectKind::MissingField, "user_id is empty"));
    }
    Ok(())
}

fn check_sizes(ev: &ClickEvent, cfg: &ValidationConfig) -> Result<(), Rejection> {
    let max = cfg.max_field_len;
    let too_long = |name: &str, len: usize| {
        Rejection::new(
            RejectKind::Oversized,
            format!("{name} is {len} bytes long (limit {max})"),
        )
    };
    let fields: [(&str, Option<&str>); 16] = [
        ("event_id", Some(&ev.event_id)),
        ("user_id", Some(&ev.user_id)),
        ("session_id", ev.session_id.as_deref()),
        ("item_id", ev.item_id.as_deref()),
        ("category", ev.category.as_deref()),
        ("brand", ev.brand.as_deref()),
        ("currency", ev.currency.as_deref()),
        ("search_query", ev.search_query.as_deref()),
        ("order_id", ev.order_id.as_deref()),
        ("device", ev.device.as_deref()),
        ("ip_prefix_hash", ev.ip_prefix_hash.as_deref()),
        ("country", ev.country.as_deref()),
        ("channel", ev.channel.as_deref()),
        ("referrer", ev.referrer.as_deref()),
        (
            "payment.method",
            ev.payment.as_ref().map(|p| p.method.as_str()),
        ),
        (
            "payment.card_fingerprint",
            ev.payment
                .as_ref()
                .and_then(|p| p.card_fingerprint.as_deref()),
        ),
    ];
    for (name, value) in fields {
        if let Some(v) = value
            && v.len() > max
        {
            return Err(too_long(name, v.len()));
        }
    }
    if ev.extras.len() > cfg.max_extras {
        return Err(Rejection::new(
            RejectKind::Oversized,
            format!(
                "extras has {} entries (limit {})",
                ev.extras.len(),
                cfg.max_extras
            ),
        ));
    }
    for (k, v) in &ev.extras {
        if k.len() > max {
            return Err(Rejection::new(
                RejectKind::Oversized,
                format!("an extras key is {} bytes long (limit {max})", k.len()),
            ));
        }
        if v.len() > max {
            return Err(too_long(&format!("extras[{}]", clip(k)), v.len()));
        }
    }
    Ok(())
}

/// First few characters of a field name taken from input, for reasons (never echo huge input).
fn clip(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn check_time(ev: &ClickEvent, cfg: &ValidationConfig, now_ms: i64) -> Result<(), Rejection> {
    let t = ev.event_time;
    if t < cfg.min_event_time_ms {
        return Err(Rejection::new(
            RejectKind::BadTime,
            format!(
                "event_time {t} is before the earliest accepted time {}",
                cfg.min_event_time_ms
            ),
        ));
    }
    let latest = now_ms.saturating_add(cfg.max_future_skew_ms);
    if t > latest {
        return Err(Rejection::new(
            RejectKind::BadTime,
            format!(
                "event_time {t} is {} ms ahead of the clock (limit {} ms)",
                t.saturating_sub(now_ms),
                cfg.max_future_skew_ms
            ),
        ));
    }
    Ok(())
}

fn check_amount(name: &str, v: Option<f64>) -> Result<(), Rejection> {
    let Some(v) = v else { return Ok(()) };
    let problem = if v.is_nan() {
        format!("{name} is NaN")
    } else if v.is_infinite() {
        format!("{name} is infinite")
    } else if v < 0.0 {
        format!("{name} is negative ({v})")
    } else {
        return Ok(());
    };
    Err(Rejection::new(RejectKind::BadValue, problem))
}

fn check_values(ev: &ClickEvent, cfg: &ValidationConfig) -> Result<(), Rejection> {
    check_amount("price", ev.price)?;
    check_amount("order_value", ev.order_value)?;
    if let Some(q) = ev.quantity {
        if q <= 0 {
            return Err(Rejection::new(
                RejectKind::BadValue,
                format!("quantity is {q} (must be at least 1)"),
            ));
        }
        if q > cfg.max_quantity {
            return Err(Rejection::new(
                RejectKind::BadValue,
                format!("quantity is {q} (limit {})", cfg.max_quantity),
            ));
        }
    }
    Ok(())
}

fn normalise(ev: &mut ClickEvent) {
    trim_in_place(&mut ev.event_id);
    trim_in_place(&mut ev.user_id);
    if let Some(s) = ev.session_id.as_mut() {
        trim_in_place(s);
    }
    if let Some(s) = ev.item_id.as_mut() {
        trim_in_place(s);
    }
    if let Some(s) = ev.order_id.as_mut() {
        trim_in_place(s);
    }
    for s in [ev.device.as_mut(), ev.channel.as_mut()]
        .into_iter()
        .flatten()
    {
        trim_in_place(s);
        lowercase_in_place(s);
    }
    for s in [ev.currency.as_mut(), ev.country.as_mut()]
        .into_iter()
        .flatten()
    {
        trim_in_place(s);
        uppercase_in_place(s);
    }
    if let Some(c) = ev.category.as_mut() {
        normalise_category(c);
        if c.is_empty() {
            ev.category = None;
        }
    }
}

fn trim_in_place(s: &mut String) {
    let t = s.trim();
    if t.len() != s.len() {
        *s = t.to_owned();
    }
}

fn lowercase_in_place(s: &mut String) {
    if s.is_ascii() {
        s.make_ascii_lowercase();
    } else if s.chars().any(char::is_uppercase) {
        *s = s.to_lowercase();
    }
}

fn uppercase_in_place(s: &mut String) {
    if s.is_ascii() {
        s.make_ascii_uppercase();
    } else if s.chars().any(char::is_lowercase) {
        *s = s.to_uppercase();
    }
}

/// Whether `c` is already canonical: no blank, padded or empty segments and no upper case.
fn category_is_canonical(c: &str) -> bool {
    !c.is_empty()
        && !c.chars().any(char::is_uppercase)
        && c.split('/')
            .all(|seg| !seg.is_empty() && seg.trim().len() == seg.len())
}

fn normalise_category(c: &mut String) {
    if category_is_canonical(c) {
        return;
    }
    let mut out = String::with_capacity(c.len());
    for seg in c.split('/').map(str::trim).filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(seg);
    }
    lowercase_in_place(&mut out);
    *c = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::{Payment, PaymentStatus};

    const NOW: i64 = 1_700_000_000_000;

    fn ok_event() -> ClickEvent {
        let mut ev = ClickEvent::new("e1", "u1", EventType::AddToCart, NOW - 1000);
        ev.price = Some(9.99);
        ev.quantity = Some(2);
        ev
    }

    fn reject(ev: &mut ClickEvent) -> Rejection {
        validate_and_normalise(ev, &ValidationConfig::default(), NOW)
            .expect_err("event should be rejected")
    }

    fn pass(ev: &mut ClickEvent) {
        validate_and_normalise(ev, &ValidationConfig::default(), NOW).expect("event should pass");
    }

    #[test]
    fn a_plain_event_passes() {
        pass(&mut ok_event());
    }

    #[test]
    fn blank_ids_are_missing_fields() {
        let mut ev = ok_event();
        ev.event_id = "  \t".into();
        let r = reject(&mut ev);
        assert_eq!(r.kind, RejectKind::MissingField);
        assert!(r.reason.contains("event_id"), "{}", r.reason);

        let mut ev = ok_event();
        ev.user_id = String::new();
        let r = reject(&mut ev);
        assert_eq!(r.kind, RejectKind::MissingField);
        assert!(r.reason.contains("user_id"), "{}", r.reason);
    }

    #[test]
    fn event_time_bounds() {
        let cfg = ValidationConfig::default();
        let mut ev = ok_event();
        ev.event_time = cfg.min_event_time_ms - 1;
        assert_eq!(reject(&mut ev).kind, RejectKind::BadTime);
        ev.event_time = cfg.min_event_time_ms;
        pass(&mut ev);

        ev.event_time = NOW + cfg.max_future_skew_ms + 1;
        let r = reject(&mut ev);
        assert_eq!(r.kind, RejectKind::BadTime);
        assert!(r.reason.contains("ahead"), "{}", r.reason);
        ev.event_time = NOW + cfg.max_future_skew_ms;
        pass(&mut ev);
    }

    #[test]
    fn bad_amounts() {
        for (v, word) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "infinite"),
            (f64::NEG_INFINITY, "infinite"),
            (-0.01, "negative"),
        ] {
            let mut ev = ok_event();
            ev.price = Some(v);
            let r = reject(&mut ev);
            assert_eq!(r.kind, RejectKind::BadValue);
            assert_eq!(r.reason.split(' ').next(), Some("price"));
            assert!(r.reason.contains(word), "{}", r.reason);

            let mut ev = ClickEvent::new("e", "u", EventType::Purchase, NOW);
            ev.order_value = Some(v);
            let r = reject(&mut ev);
            assert_eq!(r.kind, RejectKind::BadValue);
            assert!(r.reason.starts_with("order_value"), "{}", r.reason);
        }
        // Near miss: zero is a legal price (free items) and order value.
        let mut ev = ok_event();
        ev.price = Some(0.0);
        ev.order_value = Some(0.0);
        pass(&mut ev);
    }

    #[test]
    fn quantity_range() {
        let max = ValidationConfig::default().max_quantity;
        for q in [0, -1, max + 1, i32::MIN] {
            let mut ev = ok_event();
            ev.quantity = Some(q);
            let r = reject(&mut ev);
            assert_eq!(r.kind, RejectKind::BadValue);
            assert!(r.reason.contains(&q.to_string()), "{}", r.reason);
        }
        // Absurd but legal quantities pass so the detector can see cart stuffing.
        for q in [1, 500_000, max] {
            let mut ev = ok_event();
            ev.quantity = Some(q);
            pass(&mut ev);
        }
    }

    #[test]
    fn oversized_fields_and_extras() {
        let cfg = ValidationConfig::default();
        let long = "x".repeat(cfg.max_field_len + 1);
        let exact = "x".repeat(cfg.max_field_len);

        let mut ev = ok_event();
        ev.referrer = Some(long.clone());
        let r = reject(&mut ev);
        assert_eq!(r.kind, RejectKind::Oversized);
        assert!(r.reason.contains("referrer"), "{}", r.reason);
        ev.referrer = Some(exact.clone());
        pass(&mut ev);

        let mut ev = ok_event();
        ev.payment = Some(Payment {
            status: PaymentStatus::Failed,
            method: "card".into(),
            card_fingerprint: Some(long.clone()),
        });
        let r = reject(&mut ev);
        assert!(r.reason.contains("card_fingerprint"), "{}", r.reason);

        let mut ev = ok_event();
        ev.extras.insert(long.clone(), "v".into());
        assert_eq!(reject(&mut ev).kind, RejectKind::Oversized);

        let mut ev = ok_event();
        ev.extras.insert("k".into(), long);
        let r = reject(&mut ev);
        assert!(r.reason.contains("extras[k]"), "{}", r.reason);

        let mut ev = ok_event();
        for i in 0..cfg.max_extras {
            ev.extras.insert(format!("k{i}"), exact.clone());
        }
        pass(&mut ev);
        ev.extras.insert("one_more".into(), "v".into());
        let r = reject(&mut ev);
        assert_eq!(r.kind, RejectKind::Oversized);
        assert!(r.reason.contains("extras has 33"), "{}", r.reason);
    }

    #[test]
    fn payment_attempt_needs_payment_but_purchase_needs_no_value() {
        let mut ev = ClickEvent::new("e", "u", EventType::PaymentAttempt, NOW);
        let r = reject(&mut ev);
        assert_eq!(r.kind, RejectKind::MissingField);
        assert!(r.reason.contains("payment"), "{}", r.reason);
        ev.payment = Some(Payment {
            status: PaymentStatus::Succeeded,
            method: "paypal".into(),
            card_fingerprint: None,
        });
        pass(&mut ev);

        let mut ev = ClickEvent::new("e", "u", EventType::Purchase, NOW);
        pass(&mut ev);
        assert_eq!(ev.order_value, None);
    }

    #[test]
    fn normalises_fields() {
        let mut ev = ok_event();
        ev.event_id = "  e1 ".into();
        ev.user_id = "\tu1".into();
        ev.device = Some(" Mobile".into());
        ev.channel = Some("Paid_Search".into());
        ev.currency = Some("eur ".into());
        ev.country = Some("de".into());
        ev.category = Some(" /Electronics//Phones / Smart/ ".into());
        pass(&mut ev);
        assert_eq!(ev.event_id, "e1");
        assert_eq!(ev.user_id, "u1");
        assert_eq!(ev.device.as_deref(), Some("mobile"));
        assert_eq!(ev.channel.as_deref(), Some("paid_search"));
        assert_eq!(ev.currency.as_deref(), Some("EUR"));
        assert_eq!(ev.country.as_deref(), Some("DE"));
        assert_eq!(ev.category.as_deref(), Some("electronics/phones/smart"));

        let mut ev = ok_event();
        ev.category = Some("//".into());
        pass(&mut ev);
        assert_eq!(ev.category, None);

        let mut ev = ok_event();
        ev.category = Some("Élec/Téléphones".into());
        pass(&mut ev);
        assert_eq!(ev.category.as_deref(), Some("élec/téléphones"));
    }

    #[test]
    fn canonical_values_are_left_alone() {
        let mut ev = ok_event();
        ev.category = Some("a/b".into());
        ev.device = Some("desktop".into());
        let before = ev.clone();
        pass(&mut ev);
        assert_eq!(ev, before);
    }

    #[test]
    fn rejected_events_are_not_normalised() {
        let mut ev = ok_event();
        ev.device = Some("MOBILE".into());
        ev.price = Some(f64::NAN);
        reject(&mut ev);
        assert_eq!(ev.device.as_deref(), Some("MOBILE"));
    }

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(RejectKind::MissingField.as_str(), "missing_field");
        assert_eq!(RejectKind::BadTime.as_str(), "bad_time");
        assert_eq!(RejectKind::BadValue.as_str(), "bad_value");
        assert_eq!(RejectKind::Oversized.as_str(), "oversized");
        let r = Rejection::new(RejectKind::BadValue, "price is NaN");
        assert_eq!(r.to_string(), "bad_value: price is NaN");
    }

    #[test]
    fn config_loads_with_defaults_and_rejects_unknown_keys() {
        let cfg: ValidationConfig = serde_json::from_str(r#"{"max_extras": 4}"#).unwrap();
        assert_eq!(cfg.max_extras, 4);
        assert_eq!(cfg.max_quantity, 1_000_000);
        assert!(serde_json::from_str::<ValidationConfig>(r#"{"max_extra": 4}"#).is_err());
    }
}
