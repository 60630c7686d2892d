//! Event-time gap sessions per user, with allowed lateness, merges and durable per-user state.
//!
//! # Sessions
//! A session is a maximal run of one user's events, in event-time order (ties in arrival order),
//! in which consecutive events are less than `gap_ms` apart (an event at exactly `last + gap_ms`
//! starts a new session: as in Flink, a session window ends at `last + gap`, exclusive) and which
//! lies within one max-length period: event time is cut into periods of `max_session_ms` from the
//! Unix epoch, and a session never crosses a period boundary (with `max_session_ms` = 24 h that
//! is the UTC-midnight cut of web analytics). Periods fixed in time, rather than a length counted
//! from a session's first event, keep a late event's effect local: it can join or merge the
//! sessions around it, but never shift the cut points of the sessions after it.
//! [`assign_sessions`] applies the rule offline.
//!
//! # Watermark and held events
//! The [`Sessionizer`] serves one input partition. Its watermark is the highest
//! `event time - max_out_of_orderness_ms` seen (raised further by
//! [`Sessionizer::advance_watermark`]). An event at or above the watermark is held until the
//! watermark passes it (`time < watermark`), then applied in time order. A session closes, and its
//! [`SessionSummary`] is published, once `min(last + gap_ms, end of its period) <= watermark`
//! (close reason `gap`, or `max_length` when the period ends first).
//!
//! # Late events and corrections
//! An event below the watermark on arrival is *late*. Within the allowed lateness
//! (`watermark - time <= allowed_lateness_ms`) it is applied at once to the right session: it
//! joins the session whose `[start - gap, last + gap)` covers it, or, when it bridges two
//! sessions, merges them; otherwise it starts a new one. To make that possible a published
//! session is retained until `close time + allowed_lateness_ms <= watermark`. A changed session
//! that is already closed is published again at once (else when it closes again) as a
//! *correction*: `revision` counts publications (0 first), `session_id` is always
//! `user_id:start_time`, and `superseded_session_ids` lists the ids of earlier publications that
//! it replaces (the later of two merged sessions, or its own old id when a late event moved its
//! start earlier). A merged session keeps the earlier session's id unless the late event moved
//! the start. Consumers keep, per `session_id`, the highest revision and delete superseded ids.
//!
//! An event beyond the allowed lateness is not applied: [`Sessionizer::take_late`] returns it
//! with the reason, for a late-events topic. It is never silently dropped.
//!
//! # Duplicates
//! An event whose id the user's state still holds (its held events, and the 64-bit id hashes of
//! applied events within the allowed lateness) is dropped and counted
//! ([`Sessionizer::duplicates_dropped`]). The memory is bucketed by time: ids leave it when their
//! event time falls beyond the allowed lateness, from which point a repeat of them is a late
//! event (reported, not applied).
//!
//! # Durable state
//! Everything about a user is one [`UserState`]; every change is reported by
//! [`Sessionizer::take_changed`] for a compacted changelog, and [`Sessionizer::restore_user`] plus
//! [`Sessionizer::restore_watermark`] rebuild a sessionizer that continues with exactly the
//! output the original would have produced.
//!
//! Memory per user: the open session and the sessions within the allowed lateness (their
//! summaries, a path capped at `max_path_len`, and per event within the allowed lateness a
//! 24-byte step), the held events, lifetime counters. A user with no session or held event is
//! forgotten after `user_ttl_ms` of event time without events.

mod state;

use crate::hash::fnv1a;
use clickpath_schema::{ClickEvent, EventType, FunnelStage, SessionSummary};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use state::{Item, Sess};
pub use state::{StateDecodeError, UserState};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Session rules, the stream's disorder bound and the lateness allowed beyond it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Inactivity that ends a session, ms. Default 30 minutes (`1_800_000`). Values below 1 act as 1.
    pub gap_ms: i64,
    /// Length of the periods (counted from the Unix epoch) that a session may not cross, ms: no
    /// session lasts this long. Default 4 hours (`14_400_000`). Values below 1 act as 1.
    pub max_session_ms: i64,
    /// How far behind the newest event time another event may still arrive in order, ms. The
    /// watermark is `max event time seen - this`. Default 5 seconds (`5_000`). Negative values act as 0.
    pub max_out_of_orderness_ms: i64,
    /// Longest path kept per session (the most recent steps are kept). Default 50.
    pub max_path_len: usize,
    /// How far behind the watermark a late event may be and still be applied (joining or merging
    /// sessions, which are then corrected), ms; later ones go to the late-events output. Closed
    /// sessions are kept this long after they close. Default 5 minutes (`300_000`). Negative
    /// values act as 0.
    pub allowed_lateness_ms: i64,
    /// How long a user with no open or retained session is remembered (lifetime counters), ms of
    /// event time after the user's latest event. Default 7 days (`604_800_000`). Values below 1
    /// act as 1.
    pub user_ttl_ms: i64,
    /// Which funnel stage each event type reaches (`[sessionizer.funnel]`, one key per event type in
    /// snake case, e.g. `wishlist = "CART"`). Defaults to browse -> product view -> cart -> checkout ->
    /// purchase as in [`crate::funnel::funnel_stage`].
    pub funnel: crate::funnel::FunnelMap,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            gap_ms: 30 * 60 * 1000,
            max_session_ms: 4 * 60 * 60 * 1000,
            max_out_of_orderness_ms: 5_000,
            max_path_len: 50,
            allowed_lateness_ms: 5 * 60 * 1000,
            user_ttl_ms: 7 * 24 * 60 * 60 * 1000,
            funnel: crate::funnel::FunnelMap::default(),
        }
    }
}

impl SessionConfig {
    fn gap(&self) -> i64 {
        self.gap_ms.max(1)
    }

    fn max_session(&self) -> i64 {
        self.max_session_ms.max(1)
    }

    fn out_of_orderness(&self) -> i64 {
        self.max_out_of_orderness_ms.max(0)
    }

    fn lateness(&self) -> i64 {
        self.allowed_lateness_ms.max(0)
    }

    fn user_ttl(&self) -> i64 {
        self.user_ttl_ms.max(1)
    }

    /// End (exclusive) of the max-length period holding `t`.
    fn bucket_end(&self, t: i64) -> i64 {
        let m = self.max_session();
        t.div_euclid(m).saturating_add(1).saturating_mul(m)
    }

    /// Whether `a` and `b` lie in the same max-length period.
    fn same_period(&self, a: i64, b: i64) -> bool {
        let m = self.max_session();
        a.div_euclid(m) == b.div_euclid(m)
    }

    /// Whether an event at `t` continues, in time order, a session spanning `start..=last` (within
    /// the inactivity gap of `last` and in `start`'s max-length period): the rule of
    /// [`assign_sessions`].
    pub fn continues(&self, start: i64, last: i64, t: i64) -> bool {
        t < last.saturating_add(self.gap()) && self.same_period(start, t)
    }
}

/// The session id of a user's session starting at `start`: `user_id:start`.
pub fn session_key(user_id: &str, start: i64) -> String {
    format!("{user_id}:{start}")
}

/// A snapshot of a user's open session.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSession {
    /// Event time of the first event (ms).
    pub start: i64,
    /// Event time of the latest event (ms).
    pub last: i64,
    /// Number of events so far.
    pub count: u32,
    /// Event types in order, consecutive repeats compressed, the last `max_path_len` kept.
    pub path: Vec<EventType>,
    /// Furthest funnel stage reached so far.
    pub stage: FunnelStage,
    /// Whether a purchase happened.
    pub purchased: bool,
    /// Sum of purchase order values so far.
    pub order_value: f64,
    /// Id of the first event.
    pub first_event_id: String,
    /// Id of the latest event.
    pub last_event_id: String,
}

/// A user's path state, for the query API: the current session and lifetime counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathView {
    /// The shopper.
    pub user_id: String,
    /// Id of the user's latest session (open, or closed within the allowed lateness); `None`
    /// when there is none.
    pub session_id: Option<String>,
    /// Whether that session is still open (the watermark has not closed it).
    pub session_open: bool,
    /// Event time of its first event (ms).
    pub session_start: Option<i64>,
    /// Event time of its latest event (ms).
    pub session_last: Option<i64>,
    /// Its number of events.
    pub session_events: u32,
    /// Its path: event types in time order, consecutive repeats compressed, the last
    /// `max_path_len` kept.
    pub path: Vec<EventType>,
    /// The furthest funnel stage it reached.
    pub furthest_stage: Option<FunnelStage>,
    /// Events received but held until the watermark passes them (not in the path yet).
    pub held_events: usize,
    /// Sessions of this user so far (two merged sessions count once).
    pub lifetime_sessions: u64,
    /// Purchases so far.
    pub lifetime_purchases: u64,
    /// Sum of purchase order values so far.
    pub lifetime_spend: f64,
    /// Event time of the latest purchase (ms).
    pub last_purchase_time: Option<i64>,
}

/// Runtime bookkeeping around one user's durable state.
#[derive(Debug)]
struct Slot {
    /// The map key, shared with timers and the change log (no allocation per timer).
    key: Arc<str>,
    st: UserState,
    /// Due time of this user's live timer: always `st.due()`.
    timer: Option<i64>,
    /// Already listed in `changed`.
    logged: bool,
}

/// A scheduled check of one user's state; ordered so the heap pops the earliest first, ties by
/// user id (a total order makes the output order independent of the heap's history, so a
/// restored sessionizer emits in the same order as the original).
#[derive(Debug)]
struct Timer {
    due: i64,
    user: Arc<str>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.user.cmp(&self.user))
    }
}

/// Streaming event-time sessionizer for one partition (see the module docs for the rules).
#[derive(Debug)]
pub struct Sessionizer {
    cfg: SessionConfig,
    users: HashMap<Arc<str>, Slot>,
    /// One live timer per user (its `Slot::timer`); superseded ones stay until popped.
    timers: BinaryHeap<Timer>,
    watermark: i64,
    late_applied: u64,
    late_rejected: u64,
    duplicates: u64,
    late_out: Vec<(ClickEvent, String)>,
    changed: Vec<Arc<str>>,
}

impl Sessionizer {
    /// An empty sessionizer; the watermark starts at `i64::MIN`.
    pub fn new(cfg: SessionConfig) -> Self {
        Sessionizer {
            cfg,
            users: HashMap::default(),
            timers: BinaryHeap::new(),
            watermark: i64::MIN,
            late_applied: 0,
            late_rejected: 0,
            duplicates: 0,
            late_out: Vec::new(),
            changed: Vec::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Adds an event (already validated). Returns the summaries this publishes: sessions the
    /// raised watermark closes (any user), and corrections caused by a late event.
    ///
    /// A duplicate is dropped and counted; an event beyond the allowed lateness goes to
    /// [`Sessionizer::take_late`]. An in-order event is held until the watermark passes it, so
    /// its session reflects it only then.
    pub fn on_event(&mut self, ev: &ClickEvent) -> Vec<SessionSummary> {
        let mut out = Vec::new();
        let t = ev.event_time;
        self.watermark = self
            .watermark
            .max(t.saturating_sub(self.cfg.out_of_orderness()));
        self.fire_timers(&mut out);
        let wm = self.watermark;
        let lateness = self.cfg.lateness();
        if t < wm.saturating_sub(lateness) {
            self.late_rejected += 1;
            self.late_out
                .push((ev.clone(), late_reason(t, wm, lateness)));
            return out;
        }
        let hash = fnv1a(&ev.event_id);
        let cfg = &self.cfg;
        let slot = match self.users.get_mut(ev.user_id.as_str()) {
            Some(slot) => {
                if slot.st.is_duplicate(&ev.event_id, hash) {
                    self.duplicates += 1;
                    return out;
                }
                slot
            }
            None => {
                let key: Arc<str> = Arc::from(ev.user_id.as_str());
                self.users.entry(Arc::clone(&key)).or_insert(Slot {
                    key,
                    st: UserState::new(t),
                    timer: None,
                    logged: false,
                })
            }
        };
        slot.st.life.last_event = slot.st.life.last_event.max(t);
        let item = Item::of(ev, hash);
        if t < wm {
            self.late_applied += 1;
            slot.st.apply(item, cfg);
            slot.st.settle(&slot.key, wm, cfg, &mut out);
        } else {
            slot.st.hold(item);
        }
        log_change(&mut self.changed, slot);
        reschedule(slot, cfg, &mut self.timers);
        out
    }

    /// Raises the watermark to `watermark_ms` (a lower value is ignored) and publishes what that
    /// closes, as [`Sessionizer::on_event`] does. Used by a periodic tick, e.g. when a partition is idle.
    pub fn advance_watermark(&mut self, watermark_ms: i64) -> Vec<SessionSummary> {
        let mut out = Vec::new();
        self.watermark = self.watermark.max(watermark_ms);
        self.fire_timers(&mut out);
        out
    }

    /// The current watermark (ms); `i64::MIN` before the first event.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Installs a watermark saved with the state (a lower value than the current one is ignored).
    pub fn restore_watermark(&mut self, wm: i64) {
        self.watermark = self.watermark.max(wm);
    }

    /// Releases every held event and publishes every changed session (close reason `shutdown`
    /// unless the watermark already closed it), sorted by `(user_id, start_time)`. All state is
    /// dropped, and [`Sessionizer::take_changed`] reports every user as removed.
    pub fn flush(&mut self) -> Vec<SessionSummary> {
        let mut out = Vec::new();
        let wm = self.watermark;
        for (key, mut slot) in self.users.drain() {
            slot.st.flush(&key, wm, &self.cfg, &mut out);
            if !slot.logged {
                self.changed.push(key);
            }
        }
        self.timers.clear();
        out.sort_by(|a, b| {
            a.user_id
                .cmp(&b.user_id)
                .then(a.start_time.cmp(&b.start_time))
        });
        out
    }

    /// The events beyond the allowed lateness since the last call, each with the reason (a
    /// sentence), for the late-events output. Drain it after every batch: it grows until taken.
    pub fn take_late(&mut self) -> Vec<(ClickEvent, String)> {
        std::mem::take(&mut self.late_out)
    }

    /// The users whose state changed since the last call, with the new state, or `None` when it
    /// was removed: the entries for a compacted changelog keyed by user id (last write wins).
    pub fn take_changed(&mut self) -> Vec<(String, Option<UserState>)> {
        let keys = std::mem::take(&mut self.changed);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.users.get_mut(&key) {
                Some(slot) if slot.logged => {
                    slot.logged = false;
                    out.push((key.to_string(), Some(slot.st.clone())));
                }
                Some(_) => {} // listed twice (removed and back); already reported above
                None => out.push((key.to_string(), None)),
            }
        }
        out
    }

    /// Installs a user's state read back from the changelog (before processing resumes).
    pub fn restore_user(&mut self, user_id: String, state: UserState) {
        let key: Arc<str> = Arc::from(user_id);
        let mut slot = Slot {
            key: Arc::clone(&key),
            st: state,
            timer: None,
            logged: false,
        };
        reschedule(&mut slot, &self.cfg, &mut self.timers);
        self.users.insert(key, slot);
    }

    /// Number of users whose state is held (open or retained sessions, held events, or only
    /// lifetime counters until the idle TTL expires).
    pub fn open_sessions(&self) -> usize {
        self.users.len()
    }

    /// The user's open session (not yet closed by the watermark), reflecting the events the
    /// watermark has released so far.
    pub fn open_session(&self, user_id: &str) -> Option<OpenSession> {
        let s = self.users.get(user_id)?.st.sessions.last()?;
        if s.close_time(&self.cfg) <= self.watermark {
            return None;
        }
        Some(OpenSession {
            start: s.start,
            last: s.last,
            count: s.count,
            path: s.path(self.cfg.max_path_len),
            stage: s.stage,
            purchased: s.purchased,
            order_value: s.value,
            first_event_id: s.first_id.clone(),
            last_event_id: s.last_id.clone(),
        })
    }

    /// The user's path state: latest session and lifetime counters.
    pub fn path_view(&self, user_id: &str) -> Option<PathView> {
        let st = &self.users.get(user_id)?.st;
        let s: Option<&Sess> = st.sessions.last();
        Some(PathView {
            user_id: user_id.to_owned(),
            session_id: s.map(|s| session_key(user_id, s.start)),
            session_open: s.is_some_and(|s| s.close_time(&self.cfg) > self.watermark),
            session_start: s.map(|s| s.start),
            session_last: s.map(|s| s.last),
            session_events: s.map_or(0, |s| s.count),
            path: s.map_or_else(Vec::new, |s| s.path(self.cfg.max_path_len)),
            furthest_stage: s.map(|s| s.stage),
            held_events: st.held_len(),
            lifetime_sessions: st.life.sessions,
            lifetime_purchases: st.life.purchases,
            lifetime_spend: st.life.spend,
            last_purchase_time: st.life.last_purchase,
        })
    }

    /// Number of late events (below the watermark on arrival) that were within the allowed
    /// lateness and applied.
    pub fn late_events(&self) -> u64 {
        self.late_applied
    }

    /// Number of events beyond the allowed lateness (handed out by [`Sessionizer::take_late`]).
    pub fn late_rejected(&self) -> u64 {
        self.late_rejected
    }

    /// Number of duplicates (an event id the user's state still held) dropped.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates
    }

    /// Services every timer due at the current watermark.
    fn fire_timers(&mut self, out: &mut Vec<SessionSummary>) {
        let wm = self.watermark;
        while self.timers.peek().is_some_and(|t| t.due <= wm) {
            let Some(Timer { due, user }) = self.timers.pop() else {
                break;
            };
            let Some(slot) = self.users.get_mut(&*user) else {
                continue;
            };
            if slot.timer != Some(due) {
                continue; // superseded
            }
            slot.timer = None;
            slot.st.settle(&slot.key, wm, &self.cfg, out);
            let expired = slot.st.is_idle()
                && slot.st.life.last_event.saturating_add(self.cfg.user_ttl()) <= wm;
            if expired {
                let logged = slot.logged;
                self.users.remove(&*user);
                if !logged {
                    self.changed.push(user);
                }
            } else {
                log_change(&mut self.changed, slot);
                reschedule(slot, &self.cfg, &mut self.timers);
            }
        }
        // Superseded timers pile up when due times move later; rebuild when they dominate.
        if self.timers.len() > 2 * self.users.len() + 1024 {
            self.timers = self
                .users
                .values()
                .filter_map(|s| {
                    s.timer.map(|due| Timer {
                        due,
                        user: Arc::clone(&s.key),
                    })
                })
                .collect();
        }
    }
}

/// Lists the user in the change log once per `take_changed` interval.
fn log_change(changed: &mut Vec<Arc<str>>, slot: &mut Slot) {
    if !slot.logged {
        slot.logged = true;
        changed.push(Arc::clone(&slot.key));
    }
}

/// Keeps the user's live timer at its state's due time.
fn reschedule(slot: &mut Slot, cfg: &SessionConfig, timers: &mut BinaryHeap<Timer>) {
    let due = slot.st.due(cfg);
    if due != slot.timer {
        slot.timer = due;
        if let Some(due) = due {
            timers.push(Timer {
                due,
                user: Arc::clone(&slot.key),
            });
        }
    }
}

/// Why an event is not applied, as a sentence.
fn late_reason(t: i64, wm: i64, lateness: i64) -> String {
    format!(
        "event time {} is {} behind the watermark {}, beyond the allowed lateness of {}",
        format_time(t),
        format_duration(wm.saturating_sub(t)),
        format_time(wm),
        format_duration(lateness)
    )
}

/// `ms` since the Unix epoch as an RFC 3339 UTC time with milliseconds.
fn format_time(ms: i64) -> String {
    crate::time::format_utc_ms(ms)
}

/// A duration in ms as `1 h 6 min 2.5 s`.
fn format_duration(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let mut parts = Vec::new();
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if milli > 0 {
        let frac = format!("{milli:03}");
        parts.push(format!("{s}.{} s", frac.trim_end_matches('0')));
    } else if s > 0 {
        parts.push(format!("{s} s"));
    }
    parts.join(" ")
}

/// Assigns every event to a session with the same rule as [`Sessionizer`], offline.
///
/// Events may be in any order; each user's events are taken in time order (ties in input order).
/// Returns, aligned with `events`, each event's session id (`user_id:start_time`, the same as
/// [`SessionSummary::session_id`]).
pub fn assign_sessions(events: &[ClickEvent], cfg: &SessionConfig) -> Vec<String> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    // Stable sort: equal (user, time) keep input order, as the streaming buffer does.
    order.sort_by(|&a, &b| {
        let (ea, eb) = (&events[a], &events[b]);
        ea.user_id
            .cmp(&eb.user_id)
            .then(ea.event_time.cmp(&eb.event_time))
    });
    let mut out = vec![String::new(); events.len()];
    let mut current: Option<(&str, i64, i64, usize)> = None; // user, start, last, first index
    for i in order {
        let ev = &events[i];
        let t = ev.event_time;
        let key_of = match current {
            Some((user, start, last, first))
                if user == ev.user_id && cfg.continues(start, last, t) =>
            {
                current = Some((user, start, t, first));
                first
            }
            _ => {
                current = Some((&ev.user_id, t, t, i));
                out[i] = session_key(&ev.user_id, t);
                continue;
            }
        };
        out[i] = out[key_of].clone();
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;

    const GAP: i64 = 1_000;
    const LATE: i64 = 2_000;

    fn cfg(ooo: i64) -> SessionConfig {
        SessionConfig {
            gap_ms: GAP,
            max_session_ms: 10_000,
            max_out_of_orderness_ms: ooo,
            max_path_len: 4,
            allowed_lateness_ms: LATE,
            user_ttl_ms: 100_000,
            ..SessionConfig::default()
        }
    }

    fn ev(id: &str, user: &str, t: EventType, time: i64) -> ClickEvent {
        ClickEvent::new(id, user, t, time)
    }

    fn run(s: &mut Sessionizer, events: &[ClickEvent]) -> Vec<SessionSummary> {
        let mut out = Vec::new();
        for e in events {
            out.extend(s.on_event(e));
        }
        out.extend(s.flush());
        out
    }

    #[test]
    fn a_gap_of_exactly_gap_ms_starts_a_new_session() {
        let events = [
            ev("a", "u", PageView, 0),
            ev("b", "u", PageView, GAP - 1),
            ev("c", "u", PageView, 2 * GAP - 1),
        ];
        let mut s = Sessionizer::new(cfg(0));
        let out = run(&mut s, &events);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].start_time, out[0].end_time, out[0].event_count),
            (0, GAP - 1, 2)
        );
        assert_eq!(out[0].close_reason, "gap");
        assert_eq!((out[1].start_time, out[1].event_count), (2 * GAP - 1, 1));
        assert_eq!(out[1].close_reason, "shutdown");
        assert_eq!(out[1].session_id, format!("u:{}", 2 * GAP - 1));

        let keys = assign_sessions(&events, &cfg(0));
        assert_eq!(keys, vec!["u:0", "u:0", "u:1999"]);
    }

    /// Out-of-order slack lets the next session's events apply before this one closes: they must not
    /// count among this one's `user_sessions` (a return-propensity model would read the answer).
    #[test]
    fn user_sessions_count_only_sessions_up_to_the_published_one() {
        let events = [
            ev("a", "u", PageView, 0),
            ev("b", "u", PageView, 1_200),
            ev("c", "u", PageView, 5_000),
        ];
        let mut s = Sessionizer::new(cfg(2_000));
        let out = run(&mut s, &events);
        let counts: Vec<(i64, i64)> = out
            .iter()
            .map(|x| (x.start_time, x.user_sessions))
            .collect();
        assert_eq!(counts, vec![(0, 1), (1_200, 2), (5_000, 3)]);
    }

    #[test]
    fn max_length_splits_a_busy_session() {
        let c = cfg(0);
        let events: Vec<_> = (0..25)
            .map(|i| ev(&format!("e{i}"), "u", ProductView, i * 500))
            .collect();
        let mut s = Sessionizer::new(c.clone());
        let out = run(&mut s, &events);
        // 0..9500 (20 events), then 10_000..12_000 (5 events).
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].start_time, out[0].end_time, out[0].event_count),
            (0, 9_500, 20)
        );
        assert_eq!(out[0].close_reason, "max_length");
        assert_eq!((out[1].start_time, out[1].event_count), (10_000, 5));
        assert_eq!(out[0].last_event_id, "e19");
        assert_eq!(out[1].first_event_id, "e20");
    }

    #[test]
    fn summary_tracks_path_stage_and_purchases() {
        let mut buy = ev("p", "u", Purchase, 500);
        buy.order_value = Some(42.5);
        let mut buy2 = ev("q", "u", Purchase, 600);
        buy2.order_value = None;
        let events = [
            ev("a", "u", PageView, 0),
            ev("b", "u", PageView, 100),
            ev("c", "u", ProductView, 200),
            ev("d", "u", AddToCart, 300),
            ev("e", "u", BeginCheckout, 400),
            buy,
            buy2,
            ev("f", "u", PageView, 700),
        ];
        let mut s = Sessionizer::new(cfg(0));
        let out = run(&mut s, &events);
        assert_eq!(out.len(), 1);
        let x = &out[0];
        // Repeats compressed, last 4 kept.
        assert_eq!(x.path, vec![AddToCart, BeginCheckout, Purchase, PageView]);
        assert_eq!(x.furthest_stage, FunnelStage::Purchase);
        assert!(x.purchased);
        assert_eq!(x.order_value, 42.5);
        assert_eq!(x.event_count, 8);
        assert_eq!(
            (x.first_event_id.as_str(), x.last_event_id.as_str()),
            ("a", "f")
        );
    }

    #[test]
    fn the_watermark_closes_other_users_sessions() {
        let mut s = Sessionizer::new(cfg(100));
        assert!(s.on_event(&ev("a1", "alice", PageView, 0)).is_empty());
        assert!(s.on_event(&ev("b1", "bob", PageView, 500)).is_empty());
        assert_eq!(s.open_sessions(), 2);
        // Watermark 1099: alice's session ends at 0 + 1000 <= 1099, bob's at 1500 > 1099.
        let out = s.on_event(&ev("b2", "bob", PageView, 1_199));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].user_id, "alice");
        assert_eq!(out[0].close_reason, "gap");
        assert_eq!(s.watermark(), 1_099);
        assert!(s.open_session("alice").is_none());
        assert!(s.open_session("bob").is_some());
        // Not one ms earlier: the boundary is `last + gap <= watermark`.
        let mut s = Sessionizer::new(cfg(100));
        s.on_event(&ev("a1", "alice", PageView, 0));
        assert!(s.on_event(&ev("b1", "bob", PageView, 1_099)).is_empty());
        assert_eq!(s.advance_watermark(1_000).len(), 1);
    }

    #[test]
    fn advance_watermark_releases_and_closes() {
        let mut s = Sessionizer::new(cfg(5_000));
        s.on_event(&ev("a", "u", PageView, 0));
        s.on_event(&ev("b", "u", ProductView, 10));
        assert!(s.open_session("u").is_none(), "still buffered");
        assert!(s.advance_watermark(11).is_empty());
        let open = s.open_session("u").expect("released");
        assert_eq!((open.start, open.last, open.count), (0, 10, 2));
        assert!(s.advance_watermark(5).is_empty(), "lower watermark ignored");
        assert_eq!(s.watermark(), 11);
        let out = s.advance_watermark(1_010);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, vec![PageView, ProductView]);
        assert!(s.open_session("u").is_none());
    }

    #[test]
    fn disorder_within_the_bound_is_reordered() {
        // `e` overtakes `d` by 15 ms (< 50). In time order d continues the session (990 ms after c);
        // taken in arrival order e would have split it (1005 ms after c).
        let head = [
            ev("b", "u", ProductView, 20),
            ev("a", "u", PageView, 0),
            ev("c", "u", AddToCart, 40),
        ];
        let mut s = Sessionizer::new(cfg(50));
        let mut events = head.to_vec();
        events.extend([ev("e", "u", Purchase, 1_045), ev("d", "u", Search, 1_030)]);
        let out = run(&mut s, &events);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].path, vec![ProductView, AddToCart, Search, Purchase]);
        assert_eq!(
            (
                out[0].first_event_id.as_str(),
                out[0].last_event_id.as_str()
            ),
            ("a", "e")
        );
        assert_eq!(out[0].event_count, 5);

        // With d exactly one gap after c, the split falls between c and d.
        let mut s = Sessionizer::new(cfg(50));
        let mut events = head.to_vec();
        events.extend([ev("e", "u", Purchase, 1_045), ev("d", "u", Search, 1_040)]);
        let out = run(&mut s, &events);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].path, vec![PageView, ProductView, AddToCart]);
        assert_eq!(out[1].path, vec![Search, Purchase]);
        assert_eq!(out[1].first_event_id, "d");
        assert_eq!(s.late_events(), 0);
    }

    #[test]
    fn late_events_join_the_open_session() {
        let mut s = Sessionizer::new(cfg(0));
        s.on_event(&ev("a", "u", PageView, 100));
        s.on_event(&ev("b", "u", ProductView, 200));
        s.on_event(&ev("x", "other", PageView, 300));
        // Watermark is 300; 150 is late but inside u's open session.
        s.on_event(&ev("late", "u", AddToCart, 150));
        assert_eq!(s.late_events(), 1);
        let out = s.flush();
        let u = out.iter().find(|x| x.user_id == "u").expect("u's session");
        assert_eq!(u.event_count, 3);
        assert_eq!(u.end_time, 200);
        assert_eq!(u.furthest_stage, FunnelStage::Cart);
    }

    #[test]
    fn flush_sorts_and_empties() {
        let mut s = Sessionizer::new(cfg(10));
        for (i, u) in ["c", "a", "b", "a"].into_iter().enumerate() {
            assert!(
                s.on_event(&ev(&format!("e{i}"), u, PageView, i as i64 * 100))
                    .is_empty()
            );
        }
        let out = s.flush();
        let keys: Vec<_> = out
            .iter()
            .map(|x| (x.user_id.as_str(), x.start_time))
            .collect();
        assert_eq!(keys, vec![("a", 100), ("b", 200), ("c", 0)]);
        assert_eq!(out[0].event_count, 2);
        assert!(out.iter().all(|x| x.close_reason == "shutdown"));
        assert_eq!(s.open_sessions(), 0);
        assert!(s.flush().is_empty());
    }

    #[test]
    fn state_is_dropped_after_lateness_and_ttl() {
        let mut c = cfg(0);
        c.user_ttl_ms = 1_000;
        let mut s = Sessionizer::new(c);
        for i in 0..5_000i64 {
            s.on_event(&ev(&format!("e{i}"), &format!("u{i}"), PageView, i * 10));
        }
        // A user is forgotten at last + gap + lateness (session) and then last + ttl (counters).
        assert!(s.open_sessions() <= 302, "{}", s.open_sessions());
        assert!(s.timers.len() <= 2 * 302 + 1024, "{}", s.timers.len());
        let gone: Vec<_> = s
            .take_changed()
            .into_iter()
            .filter(|(_, st)| st.is_none())
            .collect();
        assert!(gone.len() >= 5_000 - 302, "{}", gone.len());
    }

    fn ids(x: &SessionSummary) -> (&str, i32, Vec<&str>) {
        (
            x.session_id.as_str(),
            x.revision,
            x.superseded_session_ids
                .iter()
                .map(String::as_str)
                .collect(),
        )
    }

    #[test]
    fn a_late_event_bridging_two_sessions_merges_them() {
        let mut s = Sessionizer::new(cfg(0));
        let mut out = s.on_event(&ev("a", "u", PageView, 0));
        out.extend(s.on_event(&ev("b", "u", ProductView, 1_500)));
        // Watermark 2_600 has closed both sessions ([0] at 1_000, [1_500] at 2_500).
        out.extend(s.on_event(&ev("x", "other", PageView, 2_600)));
        let got: Vec<_> = out.iter().map(ids).collect();
        assert_eq!(got, vec![("u:0", 0, vec![]), ("u:1500", 0, vec![])]);
        // 800 is 1_800 behind the watermark (within 2_000) and within a gap of both.
        let out = s.on_event(&ev("late", "u", AddToCart, 800));
        assert_eq!(out.len(), 1, "{out:?}");
        let m = &out[0];
        assert_eq!(ids(m), ("u:0", 1, vec!["u:1500"]));
        assert_eq!((m.start_time, m.end_time, m.event_count), (0, 1_500, 3));
        assert_eq!(m.path, vec![PageView, AddToCart, ProductView]);
        assert_eq!(
            (m.first_event_id.as_str(), m.last_event_id.as_str()),
            ("a", "b")
        );
        assert_eq!(m.close_reason, "gap");
        assert_eq!(s.late_events(), 1);
        let view = s.path_view("u").expect("u is known");
        assert_eq!(view.lifetime_sessions, 1, "two sessions merged into one");
        assert!(s.take_late().is_empty());
    }

    #[test]
    fn a_late_event_before_the_start_renames_the_session() {
        let mut s = Sessionizer::new(cfg(0));
        s.on_event(&ev("a", "u", PageView, 1_000));
        let out = s.on_event(&ev("x", "other", PageView, 2_000));
        assert_eq!(
            out.iter().map(ids).collect::<Vec<_>>(),
            vec![("u:1000", 0, vec![])]
        );
        // 500 joins [1_000] from below: the session now starts at 500, and its new end
        // (1_000 + gap = 2_000) is already closed, so the correction goes out at once.
        let out = s.on_event(&ev("early", "u", Search, 500));
        assert_eq!(
            out.iter().map(ids).collect::<Vec<_>>(),
            vec![("u:500", 1, vec!["u:1000"])]
        );
        assert_eq!(out[0].first_event_id, "early");
        assert_eq!(out[0].path, vec![Search, PageView]);
    }

    #[test]
    fn a_late_event_that_reopens_a_session_is_published_when_it_closes_again() {
        let mut s = Sessionizer::new(cfg(0));
        s.on_event(&ev("a", "u", PageView, 0));
        assert_eq!(s.on_event(&ev("x", "other", PageView, 1_200)).len(), 1);
        // 900 joins [0] and moves its end to 1_900 > watermark 1_200: open again.
        assert!(s.on_event(&ev("late", "u", Search, 900)).is_empty());
        assert!(s.open_session("u").is_some());
        let out = s.advance_watermark(1_900);
        assert_eq!(
            out.iter().map(ids).collect::<Vec<_>>(),
            vec![("u:0", 1, vec![])]
        );
        assert_eq!(out[0].event_count, 2);
    }

    #[test]
    fn events_beyond_the_allowed_lateness_are_reported_not_applied() {
        let mut s = Sessionizer::new(SessionConfig::default());
        let t0 = 1_764_331_200_000; // 2025-11-28T12:00:00Z
        s.on_event(&ev("a", "u", PageView, t0 + 367_000));
        let wm = t0 + 362_000; // 12:06:02 (the default disorder bound is 5 s)
        assert_eq!(s.watermark(), wm);
        s.on_event(&ev("ok", "u", PageView, wm - 300_000));
        s.on_event(&ev("late", "u", PageView, t0 + 1_000));
        assert_eq!(s.late_events(), 1);
        assert_eq!(s.late_rejected(), 1);
        let late = s.take_late();
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].0.event_id, "late");
        assert_eq!(
            late[0].1,
            "event time 2025-11-28T12:00:01.000Z is 6 min 1 s behind the watermark \
             2025-11-28T12:06:02.000Z, beyond the allowed lateness of 5 min"
        );
        assert!(s.take_late().is_empty());
        let out = s.flush();
        assert_eq!(out.iter().map(|x| x.event_count).sum::<i32>(), 2);
    }

    #[test]
    fn duplicates_are_dropped_while_remembered() {
        let mut s = Sessionizer::new(cfg(100));
        s.on_event(&ev("a", "u", PageView, 0));
        s.on_event(&ev("a", "u", PageView, 0)); // held original
        s.on_event(&ev("b", "u", Search, 500));
        s.on_event(&ev("a", "u", PageView, 0)); // applied original, within the lateness
        assert_eq!(s.duplicates_dropped(), 2);
        // Watermark 2_100 publishes u's session; `a` is now 2_100 behind it.
        let mut out = s.on_event(&ev("c", "v", Search, 2_200));
        out.extend(s.on_event(&ev("a", "u", PageView, 0)));
        assert_eq!(s.duplicates_dropped(), 2);
        assert_eq!(
            s.take_late().len(),
            1,
            "a repeat beyond the lateness is late, not applied"
        );
        out.extend(s.flush());
        let u: Vec<_> = out.iter().filter(|x| x.user_id == "u").collect();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].event_count, 2);
    }

    #[test]
    fn path_view_tracks_the_session_and_lifetime_counters() {
        let mut s = Sessionizer::new(cfg(0));
        let mut buy = ev("p", "u", Purchase, 100);
        buy.order_value = Some(20.0);
        let mut buy2 = ev("q", "u", Purchase, 2_000);
        buy2.order_value = Some(5.5);
        for e in [
            ev("a", "u", PageView, 0),
            ev("a2", "u", PageView, 50),
            buy,
            buy2,
        ] {
            s.on_event(&e);
        }
        s.on_event(&ev("b", "u", AddToCart, 2_100));
        let v = s.path_view("u").expect("known user");
        assert_eq!(v.session_id.as_deref(), Some("u:2000"));
        assert!(v.session_open);
        assert_eq!(v.path, vec![Purchase]);
        assert_eq!(v.held_events, 1);
        assert_eq!((v.lifetime_sessions, v.lifetime_purchases), (2, 2));
        assert_eq!(v.lifetime_spend, 25.5);
        assert_eq!(v.last_purchase_time, Some(2_000));
        let json = serde_json::to_value(&v).expect("serialises");
        assert_eq!(json["path"], serde_json::json!(["PURCHASE"]));
        assert!(s.path_view("nobody").is_none());
    }

    #[test]
    fn restored_state_continues_the_same_sessions() {
        let mut a = Sessionizer::new(cfg(50));
        a.on_event(&ev("a", "u", PageView, 0));
        a.on_event(&ev("b", "u", Search, 100)); // releases a
        let mut b = Sessionizer::new(cfg(50));
        for (user, st) in a.take_changed() {
            b.restore_user(user, st.expect("u has state"));
        }
        b.restore_watermark(a.watermark());
        for s in [&mut a, &mut b] {
            s.on_event(&ev("c", "u", ProductView, 120));
        }
        assert_eq!(a.flush(), b.flush());
    }

    #[test]
    fn periods_are_fixed_in_time() {
        // Periods of 10_000 ms from the epoch: 9_500 and 10_100 are 600 ms apart but split.
        let events = [
            ev("a", "u", PageView, 9_500),
            ev("b", "u", PageView, 10_100),
        ];
        assert_eq!(assign_sessions(&events, &cfg(0)), vec!["u:9500", "u:10100"]);
        let mut s = Sessionizer::new(cfg(0));
        let out = run(&mut s, &events);
        assert_eq!(out[0].close_reason, "max_length");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn durations_and_times_read_well() {
        assert_eq!(format_duration(999), "999 ms");
        assert_eq!(format_duration(3_600_000 + 2_500), "1 h 2.5 s");
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
