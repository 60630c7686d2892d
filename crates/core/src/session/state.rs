//! The durable state of one user: what the sessionizer's changelog stores, and the pure
//! operations on it (apply an event, settle at a watermark, build a summary).
//!
//! Field names are one letter and paths one character per step: this state is written to a
//! compacted changelog topic on every change, so its size is the changelog's size.

mod codec;

pub use codec::StateDecodeError;

use super::{SessionConfig, session_key};
use crate::funnel::{FunnelMap, compress_path};
use crate::hash::fnv1a;
use clickpath_schema::{ClickEvent, EventType, FunnelStage, SessionSummary};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An event type stored as its index in [`EventType::ALL`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Kind(pub(super) EventType);

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The index is < EventType::COUNT (10), so the cast cannot truncate.
        s.serialize_u8(self.0.index() as u8)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = u8::deserialize(d)?;
        EventType::ALL
            .get(usize::from(i))
            .map(|&t| Kind(t))
            .ok_or_else(|| D::Error::custom(format!("event type index {i} out of range")))
    }
}

/// A path stored as one letter per step (`a` = the first of [`EventType::ALL`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Path(pub(super) Vec<EventType>);

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text: String = self
            .0
            .iter()
            .map(|t| char::from(b'a' + t.index() as u8))
            .collect();
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.bytes()
            .map(|b| {
                EventType::ALL
                    .get(usize::from(b.wrapping_sub(b'a')))
                    .copied()
                    .ok_or_else(|| D::Error::custom(format!("bad path step {:?}", char::from(b))))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Path)
    }
}

/// An applied event whose time is still within the allowed lateness of the watermark: a late
/// event may still land before it, and a duplicate of it must still be recognised.
/// `(time - session start, type, FNV-1a hash of the event id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Step(i64, Kind, u64);

/// An event held until the watermark passes it: `(time, type, order value, event id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Held(i64, Kind, f64, String);

/// An event on its way into a session.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) time: i64,
    pub(super) kind: EventType,
    /// Order value when the event is a purchase, else 0.
    pub(super) value: f64,
    pub(super) id: String,
    pub(super) hash: u64,
}

impl Item {
    pub(super) fn of(ev: &ClickEvent, hash: u64) -> Self {
        let value = if ev.event_type == EventType::Purchase {
            // Validation rejects non-finite values upstream; 0 keeps the state serialisable
            // (JSON has no NaN) if an unvalidated one slips through.
            ev.order_value.filter(|v| v.is_finite()).unwrap_or(0.0)
        } else {
            0.0
        };
        Item {
            time: ev.event_time,
            kind: ev.event_type,
            value,
            id: ev.event_id.clone(),
            hash,
        }
    }

    fn from_held(h: Held) -> Self {
        let hash = fnv1a(&h.3);
        Item {
            time: h.0,
            kind: h.1.0,
            value: h.2,
            id: h.3,
            hash,
        }
    }
}

/// One session of a user: open, or closed and retained for the allowed lateness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Sess {
    /// Event time of the first event.
    #[serde(rename = "s")]
    pub(super) start: i64,
    /// Event time of the latest event.
    #[serde(rename = "l")]
    pub(super) last: i64,
    #[serde(rename = "n")]
    pub(super) count: u32,
    #[serde(rename = "f")]
    pub(super) stage: FunnelStage,
    #[serde(rename = "p")]
    pub(super) purchased: bool,
    #[serde(rename = "v")]
    pub(super) value: f64,
    #[serde(rename = "a")]
    pub(super) first_id: String,
    #[serde(rename = "b")]
    pub(super) last_id: String,
    /// Path of the events older than the allowed lateness (no late event can land among them),
    /// compressed and capped.
    #[serde(rename = "z", default, skip_serializing_if = "path_is_empty")]
    frozen: Path,
    /// The newer events, in time order (ties in arrival order).
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    recent: Vec<Step>,
    /// Revision of the latest publication; `None` before the first.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    rev: Option<u32>,
    /// Changed since the latest publication (or never published).
    #[serde(rename = "d")]
    pub(super) dirty: bool,
    /// Start times under which this session, or a session merged into it, was published.
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    published: Vec<i64>,
}

fn path_is_empty(p: &Path) -> bool {
    p.0.is_empty()
}

impl Sess {
    fn begin(it: Item, funnel: &FunnelMap) -> Self {
        Sess {
            start: it.time,
            last: it.time,
            count: 1,
            stage: funnel.stage(it.kind),
            purchased: it.kind == EventType::Purchase,
            value: it.value,
            first_id: it.id.clone(),
            last_id: it.id,
            frozen: Path::default(),
            recent: vec![Step(0, Kind(it.kind), it.hash)],
            rev: None,
            dirty: true,
            published: Vec::new(),
        }
    }

    /// Adds an event that belongs here (in order, or late anywhere in the session).
    fn join(&mut self, it: Item, funnel: &FunnelMap) {
        self.count = self.count.saturating_add(1);
        self.stage = self.stage.max(funnel.stage(it.kind));
        self.purchased |= it.kind == EventType::Purchase;
        self.value += it.value;
        if it.time < self.start {
            // Only a late event lands before the start, and then no step is frozen yet (frozen
            // steps are older than every event that may still arrive).
            let shift = self.start.saturating_sub(it.time);
            for s in &mut self.recent {
                s.0 = s.0.saturating_add(shift);
            }
            self.start = it.time;
            self.first_id.clone_from(&it.id);
        }
        let off = it.time.saturating_sub(self.start);
        if it.time >= self.last {
            self.last = it.time;
            self.last_id = it.id;
        }
        // After every step at the same time: equal times keep arrival order.
        let at = if self.recent.last().is_none_or(|s| s.0 <= off) {
            self.recent.len()
        } else {
            self.recent.partition_point(|s| s.0 <= off)
        };
        self.recent.insert(at, Step(off, Kind(it.kind), it.hash));
        self.dirty = true;
    }

    /// Appends the next session of the same user, which a late event has just bridged to this one.
    fn absorb(&mut self, next: Sess) {
        self.count = self.count.saturating_add(next.count);
        self.stage = self.stage.max(next.stage);
        self.purchased |= next.purchased;
        self.value += next.value;
        self.last = next.last;
        self.last_id = next.last_id;
        // `next` starts after the bridging event, which is within the allowed lateness, so none
        // of its steps is frozen.
        debug_assert!(next.frozen.0.is_empty());
        let shift = next.start.saturating_sub(self.start);
        self.recent.extend(
            next.recent
                .into_iter()
                .map(|s| Step(s.0.saturating_add(shift), s.1, s.2)),
        );
        self.rev = self.rev.max(next.rev);
        for p in next.published {
            if !self.published.contains(&p) {
                self.published.push(p);
            }
        }
        self.dirty = true;
    }

    /// Moves the steps older than `horizon` into the frozen path; true when any moved.
    fn freeze(&mut self, horizon: i64, max_path_len: usize) -> bool {
        let cut = self
            .recent
            .partition_point(|s| self.start.saturating_add(s.0) < horizon);
        for s in self.recent.drain(..cut) {
            compress_path(&mut self.frozen.0, s.1.0, max_path_len);
        }
        cut > 0
    }

    /// Event types in time order, consecutive repeats compressed, the last `max_path_len` kept.
    pub(super) fn path(&self, max_path_len: usize) -> Vec<EventType> {
        let mut p = self.frozen.0.clone();
        for s in &self.recent {
            compress_path(&mut p, s.1.0, max_path_len);
        }
        p
    }

    /// When the watermark proves no in-order event can join any more.
    pub(super) fn close_time(&self, cfg: &SessionConfig) -> i64 {
        self.last
            .saturating_add(cfg.gap())
            .min(cfg.bucket_end(self.start))
    }

    /// Why the session closes (when the watermark closes it, not a shutdown).
    fn natural_reason(&self, cfg: &SessionConfig) -> &'static str {
        if cfg.bucket_end(self.start) < self.last.saturating_add(cfg.gap()) {
            "max_length"
        } else {
            "gap"
        }
    }

    /// Publishes the session (first time or as a correction) and marks it clean.
    /// `user_sessions`: the user's sessions up to this one, this one included.
    fn publish(
        &mut self,
        user_id: &str,
        reason: &str,
        cfg: &SessionConfig,
        user_sessions: u64,
    ) -> SessionSummary {
        let revision = self.rev.map_or(0, |r| r.saturating_add(1));
        self.rev = Some(revision);
        self.dirty = false;
        let superseded = self
            .published
            .iter()
            .filter(|&&p| p != self.start)
            .map(|&p| session_key(user_id, p))
            .collect();
        if !self.published.contains(&self.start) {
            self.published.push(self.start);
        }
        SessionSummary {
            session_id: session_key(user_id, self.start),
            user_id: user_id.to_owned(),
            start_time: self.start,
            end_time: self.last,
            event_count: i32::try_from(self.count).unwrap_or(i32::MAX),
            path: self.path(cfg.max_path_len),
            furthest_stage: self.stage,
            purchased: self.purchased,
            order_value: self.value,
            first_event_id: self.first_id.clone(),
            last_event_id: self.last_id.clone(),
            close_reason: reason.to_owned(),
            revision: i32::try_from(revision).unwrap_or(i32::MAX),
            superseded_session_ids: superseded,
            user_sessions: i64::try_from(user_sessions).unwrap_or(i64::MAX),
            outlook: None,
        }
    }
}

/// Lifetime counters of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Lifetime {
    /// Sessions so far (a merge of two counts once).
    #[serde(rename = "n")]
    pub(super) sessions: u64,
    #[serde(rename = "k")]
    pub(super) purchases: u64,
    #[serde(rename = "m")]
    pub(super) spend: f64,
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    pub(super) last_purchase: Option<i64>,
    /// Latest event time accepted (drives the idle expiry).
    #[serde(rename = "t")]
    pub(super) last_event: i64,
}

/// Everything the sessionizer keeps about one user: the open session and the closed sessions
/// still within the allowed lateness, the events held until the watermark passes them (and
/// with them the ids needed to drop duplicates), and lifetime counters. Install it with
/// [`super::Sessionizer::restore_user`]; capture it with [`super::Sessionizer::take_changed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    /// Sorted by start; disjoint.
    #[serde(rename = "s", default, skip_serializing_if = "Vec::is_empty")]
    pub(super) sessions: Vec<Sess>,
    /// Sorted by time; equal times keep arrival order.
    #[serde(rename = "h", default, skip_serializing_if = "Vec::is_empty")]
    pub(super) held: Vec<Held>,
    #[serde(rename = "c")]
    pub(super) life: Lifetime,
}

impl UserState {
    /// The changelog encoding: compact binary, version byte first (see the `codec` module). About a
    /// third of the JSON size, and several times faster to read back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        codec::encode(self, &mut out);
        out
    }

    /// Like [`UserState::to_bytes`], appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        codec::encode(self, out);
    }

    /// Reads a changelog value: the binary encoding, or the JSON that earlier versions wrote.
    /// Corrupt or foreign bytes give an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        match bytes.first() {
            Some(&codec::V1) => codec::decode_v1(bytes),
            Some(b'{') => {
                serde_json::from_slice(bytes).map_err(|e| StateDecodeError(format!("JSON: {e}")))
            }
            Some(b) => Err(StateDecodeError(format!("unknown format byte 0x{b:02x}"))),
            None => Err(StateDecodeError("empty value".into())),
        }
    }

    pub(super) fn new(first_time: i64) -> Self {
        UserState {
            sessions: Vec::new(),
            held: Vec::new(),
            life: Lifetime {
                sessions: 0,
                purchases: 0,
                spend: 0.0,
                last_purchase: None,
                last_event: first_time,
            },
        }
    }

    /// Whether an event with this id was accepted and is still remembered: the user's held
    /// events and the steps within the allowed lateness (older ones are beyond it anyway).
    pub(super) fn is_duplicate(&self, id: &str, hash: u64) -> bool {
        self.held.iter().any(|h| h.3 == id)
            || self
                .sessions
                .iter()
                .rev()
                .any(|s| s.recent.iter().any(|st| st.2 == hash))
    }

    /// Buffers an event until the watermark passes it.
    pub(super) fn hold(&mut self, it: Item) {
        let h = Held(it.time, Kind(it.kind), it.value, it.id);
        let at = if self.held.last().is_none_or(|x| x.0 <= h.0) {
            self.held.len()
        } else {
            self.held.partition_point(|x| x.0 <= h.0)
        };
        self.held.insert(at, h);
    }

    /// Applies an event the watermark has passed: it joins the session whose
    /// `[start - gap, last + gap)` covers it (in the same max-length period), merges the two
    /// sessions it bridges, or starts a new one.
    pub(super) fn apply(&mut self, it: Item, cfg: &SessionConfig) {
        apply(&mut self.sessions, &mut self.life, it, cfg);
    }

    /// Brings the user up to watermark `wm`: releases the held events it passes, publishes the
    /// changed sessions it closes, forgets the published sessions beyond the allowed lateness.
    pub(super) fn settle(
        &mut self,
        user_id: &str,
        wm: i64,
        cfg: &SessionConfig,
        out: &mut Vec<SessionSummary>,
    ) {
        let n = self.held.partition_point(|h| h.0 < wm);
        for h in self.held.drain(..n) {
            apply(&mut self.sessions, &mut self.life, Item::from_held(h), cfg);
        }
        let lateness = cfg.lateness();
        let horizon = wm.saturating_sub(lateness);
        let count = self.sessions.len();
        for (i, s) in self.sessions.iter_mut().enumerate() {
            s.freeze(horizon, cfg.max_path_len);
            if s.dirty && s.close_time(cfg) <= wm {
                let upto = sessions_up_to(&self.life, count, i);
                out.push(s.publish(user_id, s.natural_reason(cfg), cfg, upto));
            }
        }
        self.sessions
            .retain(|s| s.dirty || s.close_time(cfg).saturating_add(lateness) > wm);
    }

    /// Releases everything and publishes every changed session (reason `shutdown` unless the
    /// watermark already closed it).
    pub(super) fn flush(
        &mut self,
        user_id: &str,
        wm: i64,
        cfg: &SessionConfig,
        out: &mut Vec<SessionSummary>,
    ) {
        for h in self.held.drain(..) {
            apply(&mut self.sessions, &mut self.life, Item::from_held(h), cfg);
        }
        let count = self.sessions.len();
        for (i, s) in self.sessions.iter_mut().enumerate() {
            if s.dirty {
                let reason = if s.close_time(cfg) <= wm {
                    s.natural_reason(cfg)
                } else {
                    "shutdown"
                };
                let upto = sessions_up_to(&self.life, count, i);
                out.push(s.publish(user_id, reason, cfg, upto));
            }
        }
    }

    /// The smallest watermark at which this state changes: a held event is released once the
    /// watermark exceeds its time, a changed session is published at its close time, a published
    /// one forgotten at close time + allowed lateness, an empty user expires after the idle TTL.
    pub(super) fn due(&self, cfg: &SessionConfig) -> Option<i64> {
        let mut due = self.held.first().map(|h| h.0.saturating_add(1));
        for s in &self.sessions {
            let c = s.close_time(cfg);
            let d = if s.dirty {
                c
            } else {
                c.saturating_add(cfg.lateness())
            };
            due = Some(due.map_or(d, |x| x.min(d)));
        }
        if self.is_idle() {
            due = Some(self.life.last_event.saturating_add(cfg.user_ttl()));
        }
        due
    }

    /// No session and no held event: only the lifetime counters remain.
    pub(super) fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.held.is_empty()
    }

    /// Number of held events.
    pub(super) fn held_len(&self) -> usize {
        self.held.len()
    }
}

/// The user's sessions up to the `i`-th of the `count` kept (sorted by start), that one included: the
/// lifetime count less the later ones. A session closes only once the watermark passes its gap, by
/// when the user's next session may have begun; counting that one would tell a return-propensity
/// model the answer.
fn sessions_up_to(life: &Lifetime, count: usize, i: usize) -> u64 {
    let later = count.saturating_sub(i + 1) as u64;
    life.sessions.saturating_sub(later).max(1)
}

fn apply(sessions: &mut Vec<Sess>, life: &mut Lifetime, it: Item, cfg: &SessionConfig) {
    if it.kind == EventType::Purchase {
        life.purchases += 1;
        life.spend += it.value;
        life.last_purchase = Some(life.last_purchase.map_or(it.time, |p| p.max(it.time)));
    }
    let t = it.time;
    let gap = cfg.gap();
    // Fast path: the next in-order event of the latest session.
    if let Some(s) = sessions.last_mut()
        && t >= s.last
        && t < s.last.saturating_add(gap)
        && cfg.same_period(s.start, t)
    {
        s.join(it, &cfg.funnel);
        return;
    }
    let i = sessions.partition_point(|s| s.start <= t);
    let left = i > 0 && {
        let s = &sessions[i - 1];
        t < s.last.saturating_add(gap) && cfg.same_period(s.start, t)
    };
    let right = i < sessions.len() && {
        let s = &sessions[i];
        t > s.start.saturating_sub(gap) && cfg.same_period(s.start, t)
    };
    match (left, right) {
        (true, true) => {
            let next = sessions.remove(i);
            let s = &mut sessions[i - 1];
            s.join(it, &cfg.funnel);
            s.absorb(next);
            life.sessions = life.sessions.saturating_sub(1);
        }
        (true, false) => sessions[i - 1].join(it, &cfg.funnel),
        (false, true) => sessions[i].join(it, &cfg.funnel),
        (false, false) => {
            sessions.insert(i, Sess::begin(it, &cfg.funnel));
            life.sessions += 1;
        }
    }
}
