//! Event-time gap sessions per user.
//!
//! A session is a maximal run of one user's events, in event-time order, in which
//! - consecutive events are less than `gap_ms` apart: an event at exactly `last + gap_ms` starts a
//!   new session (as in Flink, a session window ends at `last + gap`, exclusive), and
//! - every event lies less than `max_session_ms` after the session's first event: an event at
//!   `start + max_session_ms` or later starts a new session (close reason `max_length`).
//!
//! The streaming [`Sessionizer`] computes exactly these sessions from a stream whose disorder is
//! bounded. Its watermark is `max event time seen - max_out_of_orderness_ms` (raised further by
//! [`Sessionizer::advance_watermark`]), and the contract is that no event arriving later has an
//! event time below the watermark. Each user's events are buffered until the watermark passes them
//! (`time < watermark`), then applied in time order (ties in arrival order); a session closes as
//! soon as the watermark proves no later event can join it (`last + gap_ms <= watermark` or
//! `start + max_session_ms <= watermark`), or when a released event starts the next one.
//!
//! An event that breaks the contract (time below the watermark on arrival) is *late*. It is not
//! dropped: it joins the user's open session if there is one (extending its start when earlier),
//! or starts a new one, and is counted by [`Sessionizer::late_events`]. Its place in the path is
//! then its arrival position, not its time.
//!
//! [`assign_sessions`] applies the same rule offline to a slice of events in any order.
//!
//! Memory: one entry per user with an open session or buffered events, plus one timer each; a
//! closed session's state is dropped at once, paths are capped at `max_path_len`.

use crate::funnel::{compress_path, funnel_stage};
use clickpath_schema::{ClickEvent, EventType, FunnelStage, SessionSummary};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// Session rules and the stream's disorder bound.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Inactivity that ends a session, ms. Default 30 minutes (`1_800_000`). Values below 1 act as 1.
    pub gap_ms: i64,
    /// Longest a session may last from its first event, ms. Default 4 hours (`14_400_000`).
    /// Values below 1 act as 1.
    pub max_session_ms: i64,
    /// How far behind the newest event time another event may still arrive, ms. The watermark is
    /// `max event time seen - this`. Default 5 seconds (`5_000`). Negative values act as 0.
    pub max_out_of_orderness_ms: i64,
    /// Longest path kept per session (the most recent steps are kept). Default 50.
    pub max_path_len: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            gap_ms: 30 * 60 * 1000,
            max_session_ms: 4 * 60 * 60 * 1000,
            max_out_of_orderness_ms: 5_000,
            max_path_len: 50,
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

    /// Whether an event at `t` continues a session spanning `start..=last` (in time order).
    fn continues(&self, start: i64, last: i64, t: i64) -> bool {
        t < last.saturating_add(self.gap()) && t < start.saturating_add(self.max_session())
    }
}

/// The state of a user's session that is still open.
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

/// What the sessionizer keeps of a buffered event.
#[derive(Debug)]
struct Pending {
    time: i64,
    event_type: EventType,
    event_id: String,
    /// Order value when the event is a purchase, else 0.
    order_value: f64,
}

impl Pending {
    fn of(ev: &ClickEvent) -> Self {
        let order_value = if ev.event_type == EventType::Purchase {
            ev.order_value.unwrap_or(0.0)
        } else {
            0.0
        };
        Pending {
            time: ev.event_time,
            event_type: ev.event_type,
            event_id: ev.event_id.clone(),
            order_value,
        }
    }
}

impl OpenSession {
    fn begin(p: Pending, max_path_len: usize) -> Self {
        let mut path = Vec::with_capacity(max_path_len.min(8));
        compress_path(&mut path, p.event_type, max_path_len);
        OpenSession {
            start: p.time,
            last: p.time,
            count: 1,
            path,
            stage: funnel_stage(p.event_type),
            purchased: p.event_type == EventType::Purchase,
            order_value: p.order_value,
            first_event_id: p.event_id.clone(),
            last_event_id: p.event_id,
        }
    }

    /// Adds an event that belongs to this session (in order, or late and out of order).
    fn add(&mut self, p: Pending, max_path_len: usize) {
        self.count = self.count.saturating_add(1);
        compress_path(&mut self.path, p.event_type, max_path_len);
        self.stage = self.stage.max(funnel_stage(p.event_type));
        self.purchased |= p.event_type == EventType::Purchase;
        self.order_value += p.order_value;
        if p.time < self.start {
            self.start = p.time;
            self.first_event_id.clone_from(&p.event_id);
        }
        if p.time >= self.last {
            self.last = p.time;
            self.last_event_id = p.event_id;
        }
    }

    fn into_summary(self, user_id: &str, close_reason: &str) -> SessionSummary {
        SessionSummary {
            session_id: session_key(user_id, self.start),
            user_id: user_id.to_owned(),
            start_time: self.start,
            end_time: self.last,
            event_count: i32::try_from(self.count).unwrap_or(i32::MAX),
            path: self.path,
            furthest_stage: self.stage,
            purchased: self.purchased,
            order_value: self.order_value,
            first_event_id: self.first_event_id,
            last_event_id: self.last_event_id,
            close_reason: close_reason.to_owned(),
        }
    }
}

/// The session id of a user's session starting at `start`: `user_id:start`.
pub fn session_key(user_id: &str, start: i64) -> String {
    format!("{user_id}:{start}")
}

/// Per-user state: the open session and the events the watermark has not passed yet.
#[derive(Debug)]
struct UserState {
    /// The map key, shared with timers (no allocation per timer).
    key: Arc<str>,
    open: Option<OpenSession>,
    /// Sorted by time; equal times keep arrival order.
    pending: Vec<Pending>,
    /// Due time of this user's live timer, if one is scheduled.
    timer: Option<i64>,
}

impl UserState {
    fn new(key: Arc<str>) -> Self {
        UserState {
            key,
            open: None,
            pending: Vec::new(),
            timer: None,
        }
    }

    /// The smallest watermark at which this user's state can change: the first buffered event is
    /// released once the watermark exceeds its time; the open session closes at `last + gap` or
    /// `start + max_session`.
    fn due(&self, cfg: &SessionConfig) -> Option<i64> {
        let release = self.pending.first().map(|p| p.time.saturating_add(1));
        let close = self.open.as_ref().map(|s| {
            s.last
                .saturating_add(cfg.gap())
                .min(s.start.saturating_add(cfg.max_session()))
        });
        match (release, close) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A scheduled check of one user's state; ordered so the heap pops the earliest first.
#[derive(Debug)]
struct Timer {
    due: i64,
    user: Arc<str>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
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
        other.due.cmp(&self.due)
    }
}

/// Streaming event-time sessionizer (see the module docs for the exact rule and watermark contract).
#[derive(Debug)]
pub struct Sessionizer {
    cfg: SessionConfig,
    users: HashMap<Arc<str>, UserState>,
    /// At most one live timer per user; superseded ones stay until popped and are skipped.
    timers: BinaryHeap<Timer>,
    max_seen: Option<i64>,
    watermark: i64,
    late: u64,
}

impl Sessionizer {
    /// An empty sessionizer; the watermark starts at `i64::MIN`.
    pub fn new(cfg: SessionConfig) -> Self {
        Sessionizer {
            cfg,
            users: HashMap::new(),
            timers: BinaryHeap::new(),
            max_seen: None,
            watermark: i64::MIN,
            late: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Adds an event (already validated and de-duplicated). Returns the sessions this closes: the
    /// user's previous session when a released event is past the gap or the maximum length, plus
    /// the sessions of any user that the advanced watermark closes.
    ///
    /// The event itself is buffered until the watermark passes it, so its own session's change is
    /// visible through [`Sessionizer::open_session`] only then.
    pub fn on_event(&mut self, ev: &ClickEvent) -> Vec<SessionSummary> {
        let mut out = Vec::new();
        let t = ev.event_time;
        if self.max_seen.is_none_or(|m| t > m) {
            self.max_seen = Some(t);
            let wm = t.saturating_sub(self.cfg.out_of_orderness());
            self.watermark = self.watermark.max(wm);
        }
        self.fire_timers(&mut out);
        let late = t < self.watermark;
        if late {
            self.late += 1;
        }
        let cfg = &self.cfg;
        let timers = &mut self.timers;
        let p = Pending::of(ev);
        match self.users.get_mut(ev.user_id.as_str()) {
            Some(st) => accept(st, p, late, cfg, timers, &mut out),
            None => {
                let key: Arc<str> = Arc::from(ev.user_id.as_str());
                let st = self
                    .users
                    .entry(Arc::clone(&key))
                    .or_insert_with(|| UserState::new(key));
                accept(st, p, late, cfg, timers, &mut out);
            }
        }
        if late {
            // A late event may have started a session that the watermark already closes.
            self.fire_timers(&mut out);
        }
        out
    }

    /// Raises the watermark to `watermark_ms` (a lower value is ignored), releases the buffered
    /// events it passes and closes every open session whose `last + gap_ms <= watermark` (reason
    /// `gap`) or `start + max_session_ms <= watermark` (reason `max_length`). Used by a periodic
    /// tick, e.g. when a partition is idle.
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

    /// Releases every buffered event and closes every session (close reason `shutdown`, or `gap` /
    /// `max_length` for sessions that buffered events end), sorted by `(user_id, start_time)`.
    pub fn flush(&mut self) -> Vec<SessionSummary> {
        let mut out = Vec::new();
        for (_, mut st) in self.users.drain() {
            for p in st.pending.drain(..) {
                apply(&mut st.open, &st.key, p, &self.cfg, &mut out);
            }
            if let Some(s) = st.open.take() {
                out.push(s.into_summary(&st.key, "shutdown"));
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

    /// Number of users with an open session or buffered events (each holds one open session, or
    /// will once its events are released).
    pub fn open_sessions(&self) -> usize {
        self.users.len()
    }

    /// The user's open session, reflecting the events the watermark has released so far.
    pub fn open_session(&self, user_id: &str) -> Option<&OpenSession> {
        self.users.get(user_id).and_then(|s| s.open.as_ref())
    }

    /// Number of late events seen (event time below the watermark on arrival); they were applied
    /// on a best-effort basis (see the module docs).
    pub fn late_events(&self) -> u64 {
        self.late
    }

    /// Services every timer due at the current watermark.
    fn fire_timers(&mut self, out: &mut Vec<SessionSummary>) {
        let wm = self.watermark;
        while self.timers.peek().is_some_and(|t| t.due <= wm) {
            let Some(Timer { due, user }) = self.timers.pop() else {
                break;
            };
            let Some(st) = self.users.get_mut(&*user) else {
                continue;
            };
            if st.timer != Some(due) {
                continue; // superseded by an earlier timer that already ran
            }
            st.timer = None;
            let n = st.pending.partition_point(|p| p.time < wm);
            for p in st.pending.drain(..n) {
                apply(&mut st.open, &st.key, p, &self.cfg, out);
            }
            close_if_due(st, wm, &self.cfg, out);
            if st.open.is_none() && st.pending.is_empty() {
                self.users.remove(&*user);
            } else {
                reschedule(st, &self.cfg, &mut self.timers);
            }
        }
    }
}

/// Takes a new event for a user: buffered in time order, or (late) applied at once.
fn accept(
    st: &mut UserState,
    p: Pending,
    late: bool,
    cfg: &SessionConfig,
    timers: &mut BinaryHeap<Timer>,
    out: &mut Vec<SessionSummary>,
) {
    if late {
        apply(&mut st.open, &st.key, p, cfg, out);
    } else {
        let at = st.pending.partition_point(|q| q.time <= p.time);
        st.pending.insert(at, p);
    }
    reschedule(st, cfg, timers);
}

/// Applies a released event to the user's open session, closing it first when the event cannot
/// join it.
fn apply(
    open: &mut Option<OpenSession>,
    user_id: &str,
    p: Pending,
    cfg: &SessionConfig,
    out: &mut Vec<SessionSummary>,
) {
    if let Some(s) = open.as_mut() {
        let reason = if p.time < s.last {
            None // late and out of order: it belongs here (see the module docs)
        } else if p.time >= s.last.saturating_add(cfg.gap()) {
            Some("gap")
        } else if !cfg.continues(s.start, s.last, p.time) {
            Some("max_length")
        } else {
            None
        };
        match reason {
            None => s.add(p, cfg.max_path_len),
            Some(reason) => {
                let next = OpenSession::begin(p, cfg.max_path_len);
                let closed = std::mem::replace(s, next);
                out.push(closed.into_summary(user_id, reason));
            }
        }
    } else {
        *open = Some(OpenSession::begin(p, cfg.max_path_len));
    }
}

/// Closes the user's open session when the watermark proves no later event can join it.
fn close_if_due(st: &mut UserState, wm: i64, cfg: &SessionConfig, out: &mut Vec<SessionSummary>) {
    let reason = match &st.open {
        Some(s) if s.last.saturating_add(cfg.gap()) <= wm => "gap",
        Some(s) if s.start.saturating_add(cfg.max_session()) <= wm => "max_length",
        _ => return,
    };
    if let Some(s) = st.open.take() {
        out.push(s.into_summary(&st.key, reason));
    }
}

/// Makes sure a timer is scheduled no later than the user's due time.
fn reschedule(st: &mut UserState, cfg: &SessionConfig, timers: &mut BinaryHeap<Timer>) {
    match st.due(cfg) {
        None => st.timer = None,
        Some(due) => {
            if st.timer.is_none_or(|cur| due < cur) {
                st.timer = Some(due);
                timers.push(Timer {
                    due,
                    user: Arc::clone(&st.key),
                });
            }
        }
    }
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

    fn cfg(ooo: i64) -> SessionConfig {
        SessionConfig {
            gap_ms: GAP,
            max_session_ms: 10_000,
            max_out_of_orderness_ms: ooo,
            max_path_len: 4,
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
        assert_eq!(s.open_sessions(), 1);
        assert!(s.open_session("alice").is_none());
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
        assert_eq!(s.open_sessions(), 0);
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
    fn state_is_dropped_when_sessions_close() {
        let mut s = Sessionizer::new(cfg(0));
        for i in 0..1_000i64 {
            s.on_event(&ev(&format!("e{i}"), &format!("u{i}"), PageView, i * 10));
        }
        // Users older than the gap (100 events) are closed and forgotten.
        assert!(s.open_sessions() <= 101, "{}", s.open_sessions());
        assert!(s.timers.len() <= 202, "{}", s.timers.len());
    }
}
