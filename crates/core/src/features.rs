//! Per-user sliding-window behaviour features, the same code online (windower stage) and offline
//! (training data).
//!
//! [`FeatureWindower::update`] folds one event into its user's state and returns the features
//! *after* including it. Names, in the stable order of [`FeatureWindower::feature_names`]:
//!
//! For each window `W` of the spec (label from its length: `5m`, `1h`, `30s`, `250ms`), over the
//! user's events with time in `(now - W, now]`, where `now` is the user's latest event time:
//! - `events_W`: number of events (count).
//! - `product_views_W`: number of `PRODUCT_VIEW` events (count).
//! - `cart_adds_W`: number of `ADD_TO_CART` events (count, not quantity).
//! - `distinct_items_W`: number of distinct `item_id`s among them (count).
//! - `view_to_cart_W`: `cart_adds_W / max(product_views_W, 1)` (ratio; above 1 means carting
//!   without viewing, a bot signal).
//!
//! Then, per user:
//! - `run_events`: events since the user's last pause of at least [`RUN_GAP_MS`] (30 min), this
//!   one included (count); the same boundary rule as the sessionizer's default gap.
//! - `run_duration_s`: seconds from the first event of that run to now (s).
//! - `cart_value`: running value of the cart in the event's currency: `price * quantity` (quantity
//!   defaults to 1, price to 0) added by `ADD_TO_CART`, subtracted by `REMOVE_FROM_CART` (never
//!   below 0), reset to 0 by `PURCHASE` (currency units).
//! - `since_last_purchase_s`: seconds since the user's latest `PURCHASE`, capped at
//!   [`PURCHASE_RECENCY_CAP_S`] (one day), which is also the value when there is none (s).
//! - `purchases_total`: purchases since the user's state began (count).
//! - `type_<SYMBOL>` for every event type in Avro order: 1 for the current event's type, else 0.
//!
//! A user silent for [`IDLE_RESET_MS`] (one day) starts from a fresh state, so
//! [`FeatureWindower::evict_idle`] only frees memory and never changes a value (given the
//! watermark contract: no later event is older than the watermark). Events are expected in roughly
//! time order: a late event is counted, but windows expire from the oldest *arrived* event, so it
//! can linger up to the disorder bound longer. Each user keeps at most [`MAX_WINDOW_EVENTS`]
//! events; beyond that the oldest drop out of every window early.

mod state;

use crate::hash::{U64Build, fnv1a};
use crate::state_codec::StateDecodeError;
use clickpath_schema::{ClickEvent, EventType, FeatureNames, FeatureValues, FeatureVector};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A pause of at least this long (ms) starts a new run (`run_events`, `run_duration_s`).
pub const RUN_GAP_MS: i64 = 30 * 60 * 1000;
/// A user silent this long (ms) starts from a fresh state; also the eviction horizon.
pub const IDLE_RESET_MS: i64 = 24 * 60 * 60 * 1000;
/// Cap of `since_last_purchase_s`, and its value when there was no purchase (s).
pub const PURCHASE_RECENCY_CAP_S: f64 = (IDLE_RESET_MS / 1000) as f64;
/// Most events kept per user for the windows.
pub const MAX_WINDOW_EVENTS: usize = 10_000;

/// Which features to compute.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureSpec {
    /// Version written into every [`FeatureVector::spec_version`]. Default `v1`.
    pub version: String,
    /// Sliding window lengths, ms. Default 5 minutes and 1 hour (`[300_000, 3_600_000]`).
    /// Values below 1 act as 1; repeated lengths are computed once.
    pub windows_ms: Vec<i64>,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            version: "v1".to_owned(),
            windows_ms: vec![300_000, 3_600_000],
        }
    }
}

/// The label of a window length in feature names: `1h`, `5m`, `30s` or `250ms`.
pub fn window_label(ms: i64) -> String {
    const HOUR: i64 = 3_600_000;
    const MINUTE: i64 = 60_000;
    if ms % HOUR == 0 {
        format!("{}h", ms / HOUR)
    } else if ms % MINUTE == 0 {
        format!("{}m", ms / MINUTE)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Number of features per window.
const PER_WINDOW: usize = 5;
/// Number of per-user scalar features before the one-hot block.
const SCALARS: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Entry {
    time: i64,
    event_type: EventType,
    /// `fnv1a(item_id)`, or `None` without an item.
    item: Option<u64>,
}

#[derive(Debug, Default)]
struct WindowCounts {
    /// Sequence number of the oldest entry still inside the window.
    first: u64,
    events: u32,
    views: u32,
    carts: u32,
    items: HashMap<u64, u32, U64Build>,
}

impl WindowCounts {
    fn add(&mut self, e: &Entry) {
        self.events += 1;
        match e.event_type {
            EventType::ProductView => self.views += 1,
            EventType::AddToCart => self.carts += 1,
            _ => {}
        }
        if let Some(item) = e.item {
            *self.items.entry(item).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, e: &Entry) {
        self.events = self.events.saturating_sub(1);
        match e.event_type {
            EventType::ProductView => self.views = self.views.saturating_sub(1),
            EventType::AddToCart => self.carts = self.carts.saturating_sub(1),
            _ => {}
        }
        if let Some(item) = e.item
            && let Some(n) = self.items.get_mut(&item)
        {
            *n -= 1;
            if *n == 0 {
                self.items.remove(&item);
            }
        }
    }
}

#[derive(Debug)]
struct UserFeatures {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    head: u64,
    windows: Vec<WindowCounts>,
    /// Latest event time seen.
    last_time: i64,
    run_start: i64,
    run_events: u32,
    cart_value: f64,
    last_purchase: Option<i64>,
    purchases: u32,
}

impl UserFeatures {
    fn new(n_windows: usize, t: i64) -> Self {
        UserFeatures {
            entries: VecDeque::new(),
            head: 0,
            windows: (0..n_windows).map(|_| WindowCounts::default()).collect(),
            last_time: t,
            run_start: t,
            run_events: 0,
            cart_value: 0.0,
            last_purchase: None,
            purchases: 0,
        }
    }

    fn push(&mut self, e: Entry, windows_ms: &[i64], now: i64) {
        self.entries.push_back(e);
        for w in &mut self.windows {
            w.add(&e);
        }
        if self.entries.len() > MAX_WINDOW_EVENTS {
            self.pop_front();
        }
        for (w, &len) in self.windows.iter_mut().zip(windows_ms) {
            let horizon = now.saturating_sub(len);
            loop {
                let idx = (w.first - self.head) as usize;
                match self.entries.get(idx) {
                    Some(old) if old.time <= horizon => {
                        w.remove(old);
                        w.first += 1;
                    }
                    _ => break,
                }
            }
        }
        // Entries outside every window are no longer needed.
        let keep_from = self
            .windows
            .iter()
            .map(|w| w.first)
            .min()
            .unwrap_or(self.head);
        while self.head < keep_from && self.entries.pop_front().is_some() {
            self.head += 1;
        }
    }

    /// Drops the oldest entry from the windows that still hold it, and from the buffer.
    fn pop_front(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            for w in &mut self.windows {
                if w.first == self.head {
                    w.remove(&old);
                    w.first += 1;
                }
            }
            self.head += 1;
        }
    }

    /// Frees the window buffers; valid once every entry has left every window.
    fn clear_windows(&mut self) {
        let next = self.head + self.entries.len() as u64;
        self.entries = VecDeque::new();
        self.head = next;
        for w in &mut self.windows {
            *w = WindowCounts {
                first: next,
                ..WindowCounts::default()
            };
        }
    }
}

/// Per-user sliding-window feature state (see the module docs for every feature).
#[derive(Debug)]
pub struct FeatureWindower {
    spec: FeatureSpec,
    /// Distinct window lengths, in spec order.
    windows_ms: Vec<i64>,
    names: Vec<String>,
    /// The same names sorted, shared by every vector this windower builds.
    sorted_names: Arc<FeatureNames>,
    /// `names` index of each sorted name.
    sorted_order: Vec<usize>,
    /// Values in `names` order, reused between updates.
    scratch: Vec<f64>,
    users: HashMap<String, UserFeatures>,
    /// Whether changed users are recorded for [`FeatureWindower::take_changes`].
    journal: bool,
    /// Users changed (or removed) since the last take.
    changed: foldhash::HashSet<String>,
}

impl FeatureWindower {
    /// A windower computing `spec`'s features.
    pub fn new(spec: FeatureSpec) -> Self {
        let mut windows_ms: Vec<i64> = Vec::new();
        for w in spec.windows_ms.iter().map(|&w| w.max(1)) {
            if !windows_ms.contains(&w) {
                windows_ms.push(w);
            }
        }
        let mut names = Vec::new();
        for &w in &windows_ms {
            let l = window_label(w);
            names.extend([
                format!("events_{l}"),
                format!("product_views_{l}"),
                format!("cart_adds_{l}"),
                format!("distinct_items_{l}"),
                format!("view_to_cart_{l}"),
            ]);
        }
        names.extend(
            [
                "run_events",
                "run_duration_s",
                "cart_value",
                "since_last_purchase_s",
                "purchases_total",
            ]
            .map(String::from),
        );
        names.extend(
            EventType::ALL
                .iter()
                .map(|t| format!("type_{}", t.as_str())),
        );
        let mut sorted_order: Vec<usize> = (0..names.len()).collect();
        sorted_order.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let sorted_names =
            FeatureNames::from_sorted(sorted_order.iter().map(|&i| names[i].clone()).collect())
                .expect("distinct windows give distinct feature names");
        FeatureWindower {
            spec,
            windows_ms,
            names,
            sorted_names: Arc::new(sorted_names),
            sorted_order,
            scratch: Vec::new(),
            users: HashMap::new(),
            journal: false,
            changed: Default::default(),
        }
    }

    /// The same windower, recording which users change for [`FeatureWindower::take_changes`].
    pub fn with_journal(mut self) -> Self {
        self.journal = true;
        self
    }

    /// Every user changed since the last call with their state's changelog encoding (see the
    /// `state` module), or `None` for a user whose state was dropped. Empty without
    /// [`FeatureWindower::with_journal`].
    pub fn take_changes(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out: Vec<(String, Option<Vec<u8>>)> = self
            .changed
            .drain()
            .map(|user| {
                let bytes = self.users.get(&user).map(|u| {
                    let mut b = Vec::with_capacity(64 + 12 * u.entries.len());
                    state::encode(u, &mut b);
                    b
                });
                (user, bytes)
            })
            .collect();
        // A stable order: the changelog (and a test) sees the same records for the same input.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Installs a user's state read back from a changelog (not recorded as a change). Bytes this
    /// version cannot read, or written for another number of windows, are an error and change
    /// nothing: the user starts afresh.
    pub fn restore_user(&mut self, user: String, bytes: &[u8]) -> Result<(), StateDecodeError> {
        let state = state::decode(bytes, self.windows_ms.len())?;
        self.users.insert(user, state);
        Ok(())
    }

    /// The spec in use.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Folds `ev` into its user's state and returns the features after including it.
    pub fn update(&mut self, ev: &ClickEvent) -> FeatureVector {
        let mut in_spec_order = std::mem::take(&mut self.scratch);
        self.update_values(ev, &mut in_spec_order);
        let sorted = self
            .sorted_order
            .iter()
            .map(|&i| in_spec_order[i])
            .collect();
        self.scratch = in_spec_order;
        FeatureVector {
            event_id: ev.event_id.clone(),
            user_id: ev.user_id.clone(),
            event_type: ev.event_type,
            event_time: ev.event_time,
            spec_version: self.spec.version.clone(),
            values: FeatureValues::from_parts(self.sorted_names.clone(), sorted)
                .expect("one value per feature name"),
            item_id: ev.item_id.clone(),
            category: ev.category.clone(),
        }
    }

    /// Like [`FeatureWindower::update`], but writes the values into `out` (cleared first) in
    /// [`FeatureWindower::feature_names`] order, without building a map: the scorer's fast path.
    pub fn update_values(&mut self, ev: &ClickEvent, out: &mut Vec<f64>) {
        let t = ev.event_time;
        let n_windows = self.windows_ms.len();
        if self.journal && !self.changed.contains(ev.user_id.as_str()) {
            self.changed.insert(ev.user_id.clone());
        }
        let user = match self.users.get_mut(ev.user_id.as_str()) {
            Some(u) => u,
            None => self
                .users
                .entry(ev.user_id.clone())
                .or_insert_with(|| UserFeatures::new(n_windows, t)),
        };
        if t.saturating_sub(user.last_time) >= IDLE_RESET_MS {
            *user = UserFeatures::new(n_windows, t);
        }
        if user.run_events == 0 || t.saturating_sub(user.last_time) >= RUN_GAP_MS {
            user.run_start = t;
            user.run_events = 0;
        }
        user.run_events = user.run_events.saturating_add(1);
        user.run_start = user.run_start.min(t);
        let now = user.last_time.max(t);
        user.last_time = now;

        let amount = ev.price.unwrap_or(0.0) * f64::from(ev.quantity.unwrap_or(1));
        match ev.event_type {
            EventType::AddToCart => user.cart_value += amount,
            EventType::RemoveFromCart => user.cart_value = (user.cart_value - amount).max(0.0),
            EventType::Purchase => {
                user.cart_value = 0.0;
                user.purchases = user.purchases.saturating_add(1);
                user.last_purchase = Some(user.last_purchase.map_or(t, |p| p.max(t)));
            }
            _ => {}
        }
        let entry = Entry {
            time: t,
            event_type: ev.event_type,
            item: ev.item_id.as_deref().map(fnv1a),
        };
        user.push(entry, &self.windows_ms, now);

        out.clear();
        for w in &user.windows {
            out.extend([
                f64::from(w.events),
                f64::from(w.views),
                f64::from(w.carts),
                w.items.len() as f64,
                f64::from(w.carts) / f64::from(w.views.max(1)),
            ]);
        }
        let since_purchase = user.last_purchase.map_or(PURCHASE_RECENCY_CAP_S, |p| {
            (now.saturating_sub(p) as f64 / 1000.0).min(PURCHASE_RECENCY_CAP_S)
        });
        out.extend([
            f64::from(user.run_events),
            now.saturating_sub(user.run_start) as f64 / 1000.0,
            user.cart_value,
            since_purchase,
            f64::from(user.purchases),
        ]);
        out.extend(
            EventType::ALL
                .iter()
                .map(|&k| if k == ev.event_type { 1.0 } else { 0.0 }),
        );
        debug_assert_eq!(
            out.len(),
            n_windows * PER_WINDOW + SCALARS + EventType::COUNT
        );
    }

    /// Every feature name [`FeatureWindower::update`] emits, in a stable order.
    pub fn feature_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Number of users with state.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Frees the state of users silent for [`IDLE_RESET_MS`] at `watermark_ms` (they would start
    /// fresh anyway) and the window buffers of users silent longer than the largest window.
    /// Returns the number of users removed.
    pub fn evict_idle(&mut self, watermark_ms: i64) -> usize {
        let before = self.users.len();
        let largest = self.windows_ms.iter().copied().max().unwrap_or(0);
        let (journal, changed) = (self.journal, &mut self.changed);
        self.users.retain(|id, u| {
            let idle = watermark_ms.saturating_sub(u.last_time);
            if idle >= IDLE_RESET_MS {
                if journal {
                    changed.insert(id.clone());
                }
                return false;
            }
            if idle >= largest && !u.entries.is_empty() {
                u.clear_windows();
                if journal {
                    changed.insert(id.clone());
                }
            }
            true
        });
        before - self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;

    fn spec() -> FeatureSpec {
        FeatureSpec {
            version: "test".into(),
            windows_ms: vec![1_000, 5_000],
        }
    }

    fn ev(t: i64, kind: EventType, item: Option<&str>) -> ClickEvent {
        let mut e = ClickEvent::new(format!("e{t}"), "u", kind, t);
        e.item_id = item.map(String::from);
        e
    }

    fn cart(t: i64, kind: EventType, item: &str, price: f64, qty: i32) -> ClickEvent {
        let mut e = ev(t, kind, Some(item));
        e.price = Some(price);
        e.quantity = Some(qty);
        e
    }

    #[test]
    fn names_are_stable_and_match_keys() {
        let mut w = FeatureWindower::new(spec());
        let names = w.feature_names();
        assert_eq!(names.len(), 2 * PER_WINDOW + SCALARS + EventType::COUNT);
        assert_eq!(names[0], "events_1s");
        assert_eq!(names[5], "events_5s");
        assert!(names.contains(&"type_ADD_TO_CART".to_string()));
        let fv = w.update(&ev(0, PageView, None));
        let keys: Vec<_> = fv.values.keys().map(String::from).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(fv.spec_version, "test");

        let dup = FeatureWindower::new(FeatureSpec {
            version: "v".into(),
            windows_ms: vec![300_000, 300_000, 3_600_000, 0],
        });
        let n = dup.feature_names();
        assert_eq!(n.len(), 3 * PER_WINDOW + SCALARS + EventType::COUNT);
        assert_eq!(n[0], "events_5m");
        assert_eq!(n[5], "events_1h");
        assert_eq!(n[10], "events_1ms");
    }

    #[test]
    fn hand_computed_sequence() {
        let mut w = FeatureWindower::new(spec());
        let mut get = |e: &ClickEvent| w.update(e).values;

        let v = get(&ev(0, PageView, None));
        assert_eq!(v["events_1s"], 1.0);
        assert_eq!(v["run_events"], 1.0);
        assert_eq!(v["since_last_purchase_s"], PURCHASE_RECENCY_CAP_S);
        assert_eq!(v["type_PAGE_VIEW"], 1.0);
        assert_eq!(v["type_PURCHASE"], 0.0);

        get(&ev(500, ProductView, Some("A")));
        let v = get(&cart(900, AddToCart, "A", 10.0, 2));
        assert_eq!(v["cart_value"], 20.0);
        assert_eq!(v["view_to_cart_1s"], 1.0);

        // 1 s window is (500, 1500]: the 900 cart add and this view.
        let v = get(&ev(1_500, ProductView, Some("B")));
        assert_eq!(v["events_1s"], 2.0);
        assert_eq!(v["product_views_1s"], 1.0);
        assert_eq!(v["cart_adds_1s"], 1.0);
        assert_eq!(v["distinct_items_1s"], 2.0);
        assert_eq!(v["view_to_cart_1s"], 1.0);
        assert_eq!(v["events_5s"], 4.0);
        assert_eq!(v["product_views_5s"], 2.0);
        assert_eq!(v["view_to_cart_5s"], 0.5);
        assert_eq!(v["run_duration_s"], 1.5);

        // Removing more than is in the cart floors at 0; only this event is in the 1 s window.
        let v = get(&cart(4_000, RemoveFromCart, "A", 10.0, 3));
        assert_eq!(v["cart_value"], 0.0);
        assert_eq!(v["events_1s"], 1.0);
        assert_eq!(v["distinct_items_1s"], 1.0);
        assert_eq!(v["view_to_cart_1s"], 0.0);
        assert_eq!(v["events_5s"], 5.0);

        // 5 s window is (500, 5500]: 900, 1500, 4000, 5500; items A, B, A.
        let v = get(&ev(5_500, Purchase, None));
        assert_eq!(v["events_5s"], 4.0);
        assert_eq!(v["product_views_5s"], 1.0);
        assert_eq!(v["cart_adds_5s"], 1.0);
        assert_eq!(v["distinct_items_5s"], 2.0);
        assert_eq!(v["since_last_purchase_s"], 0.0);
        assert_eq!(v["purchases_total"], 1.0);
        assert_eq!(v["run_events"], 6.0);
        assert_eq!(v["run_duration_s"], 5.5);
        assert_eq!(v["type_PURCHASE"], 1.0);

        // Back after exactly the run gap: a new run; windows hold only this event.
        let t = 5_500 + RUN_GAP_MS;
        let v = get(&cart(t, AddToCart, "C", 2.5, 4));
        assert_eq!(v["run_events"], 1.0);
        assert_eq!(v["run_duration_s"], 0.0);
        assert_eq!(v["events_5s"], 1.0);
        assert_eq!(v["cart_adds_5s"], 1.0);
        assert_eq!(v["view_to_cart_5s"], 1.0, "no views counts as one");
        assert_eq!(v["cart_value"], 10.0);
        assert_eq!(v["since_last_purchase_s"], (RUN_GAP_MS / 1000) as f64);
        assert_eq!(v["purchases_total"], 1.0);

        // One ms short of the run gap: the same run.
        let v = get(&ev(t + RUN_GAP_MS - 1, PageView, None));
        assert_eq!(v["run_events"], 2.0);
        assert_eq!(
            v["since_last_purchase_s"],
            (2 * RUN_GAP_MS - 1) as f64 / 1000.0
        );

        // A day of silence resets the user: no purchases, empty cart.
        let v = get(&ev(t + RUN_GAP_MS - 1 + IDLE_RESET_MS, PageView, None));
        assert_eq!(v["purchases_total"], 0.0);
        assert_eq!(v["cart_value"], 0.0);
        assert_eq!(v["since_last_purchase_s"], PURCHASE_RECENCY_CAP_S);
    }

    #[test]
    fn users_are_independent() {
        let mut w = FeatureWindower::new(spec());
        w.update(&ev(0, ProductView, Some("A")));
        let mut other = ev(10, PageView, None);
        other.user_id = "v".into();
        let v = w.update(&other).values;
        assert_eq!(v["events_5s"], 1.0);
        assert_eq!(v["product_views_5s"], 0.0);
        assert_eq!(w.users(), 2);
    }

    /// A deterministic pseudo-random multi-user stream in time order, with long silences.
    fn stream(n: usize) -> Vec<ClickEvent> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut t = 1_000_000i64;
        (0..n)
            .map(|i| {
                t += match next(100) {
                    0 => IDLE_RESET_MS,
                    1..=5 => RUN_GAP_MS,
                    6..=8 => 2 * 3_600_000,
                    _ => next(3_000) as i64,
                };
                let kind = EventType::ALL[next(EventType::COUNT as u64) as usize];
                let mut e = ClickEvent::new(format!("e{i}"), format!("u{}", next(7)), kind, t);
                e.item_id = Some(format!("i{}", next(20)));
                e.price = Some(next(100) as f64);
                e.quantity = Some(1 + next(3) as i32);
                e
            })
            .collect()
    }

    #[test]
    fn online_with_eviction_equals_offline() {
        let events = stream(3_000);
        let mut online = FeatureWindower::new(FeatureSpec::default());
        let mut offline = FeatureWindower::new(FeatureSpec::default());
        let mut evicted = 0;
        let mut fast = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if i % 50 == 0 {
                evicted += online.evict_idle(e.event_time);
            }
            let a = online.update(e);
            offline.update_values(e, &mut fast);
            let b: FeatureValues = offline
                .feature_names()
                .into_iter()
                .zip(fast.iter().copied())
                .collect();
            assert_eq!(a.values, b, "event {i}");
        }
        assert!(evicted > 0, "the stream should exercise eviction");
        assert!(online.users() <= offline.users());
    }

    #[test]
    fn per_user_buffer_is_capped() {
        let mut w = FeatureWindower::new(FeatureSpec::default());
        let mut last = FeatureValues::default();
        for i in 0..(MAX_WINDOW_EVENTS as i64 + 500) {
            last = w.update(&ev(i, PageView, None)).values;
        }
        assert_eq!(last["events_5m"], MAX_WINDOW_EVENTS as f64);
        let u = &w.users["u"];
        assert_eq!(u.entries.len(), MAX_WINDOW_EVENTS);
    }

    /// A deterministic stream of 3 users with items, carts, purchases and long pauses.
    fn mixed_stream(n: usize, seed: u64) -> Vec<ClickEvent> {
        let mut x = seed | 1;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut t = 0i64;
        (0..n)
            .map(|i| {
                t += if next(20) == 0 {
                    2_000_000
                } else {
                    next(3_000) as i64
                };
                let kind = EventType::ALL[next(EventType::COUNT as u64) as usize];
                let mut e = ClickEvent::new(format!("e{i}"), format!("u{}", next(3)), kind, t);
                if next(3) > 0 {
                    e.item_id = Some(format!("i{}", next(7)));
                    e.price = Some(next(100) as f64 + 0.5);
                }
                e
            })
            .collect()
    }

    #[test]
    fn a_windower_restored_from_its_changes_computes_the_same_features() {
        for seed in 1..6u64 {
            let events = mixed_stream(400, seed);
            let mut first = FeatureWindower::new(spec()).with_journal();
            // What a compacted changelog holds: the last value per user.
            let mut log: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
            let cut = 150 + (seed as usize * 37) % 200;
            for (i, e) in events[..cut].iter().enumerate() {
                first.update(e);
                if i % 17 == 0 {
                    first.evict_idle(e.event_time);
                    log.extend(first.take_changes());
                }
            }
            log.extend(first.take_changes());
            assert!(first.take_changes().is_empty(), "nothing changed since");
            let mut second = FeatureWindower::new(spec());
            for (user, bytes) in &log {
                if let Some(b) = bytes {
                    second.restore_user(user.clone(), b).unwrap();
                }
            }
            assert_eq!(second.users(), first.users(), "seed {seed}");
            for e in &events[cut..] {
                assert_eq!(
                    first.update(e).values,
                    second.update(e).values,
                    "seed {seed}, {}",
                    e.event_id
                );
            }
        }
    }

    #[test]
    fn corrupt_or_foreign_state_is_an_error() {
        let mut w = FeatureWindower::new(spec()).with_journal();
        for e in mixed_stream(50, 9) {
            w.update(&e);
        }
        let (user, bytes) = w.take_changes().remove(0);
        let bytes = bytes.expect("a live user");
        for n in 0..bytes.len() {
            assert!(
                w.restore_user(user.clone(), &bytes[..n]).is_err(),
                "prefix {n}"
            );
        }
        let mut other = FeatureWindower::new(FeatureSpec {
            windows_ms: vec![1_000, 5_000, 60_000],
            ..spec()
        });
        let e = other.restore_user(user.clone(), &bytes).unwrap_err();
        assert!(e.to_string().contains("2 windows, the spec 3"), "{e}");
        assert!(w.restore_user(user, b"{}").is_err());
    }
}
