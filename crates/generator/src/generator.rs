//! The streaming generator: schedules sessions in time order and emits their events merged.
//!
//! Users wait in a priority queue keyed by their next session start. The earliest is taken, its
//! whole session is written (a few dozen events at most) and its events are put into a second
//! priority queue keyed by emission time, which is the event time plus any injected delay. An
//! event is released once its emission time is not after the next session start: nothing
//! generated later can come before it. Memory is the users plus the events of sessions that
//! overlap in time, never the whole data set.

use crate::arrivals::Arrivals;
use crate::calibration::Calibration;
use crate::catalog::Catalog;
use crate::config::{ConfigError, GeneratorConfig};
use crate::dirty::{Malformed, make_malformed};
use crate::legit;
use crate::scenarios;
use crate::script::{Ids, Script};
use crate::session::ordinary_session;
use crate::truth::{
    AnomalyLabel, LegitLabel, LegitPattern, MalformedLabel, ScenarioKind, SessionTruth, TruthRecord,
};
use crate::users::{User, UserFactory};
use clickpath_schema::ClickEvent;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

/// Scenario placement range when no limit says how long the stream is.
const OPEN_ENDED_SESSIONS: u64 = 10_000;
/// Rough events per session, to place scenarios inside a `max_events`-limited stream.
const EVENTS_PER_SESSION_GUESS: u64 = 10;

/// One record of the generated stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum Generated {
    /// A click event (possibly a duplicate, out of order or late).
    Event(ClickEvent),
    /// A record a correct pipeline must reject.
    Malformed(Malformed),
}

impl Generated {
    /// The Kafka record key: the user id of an event, the unique marker of a malformed record.
    pub fn key(&self) -> &str {
        match self {
            Generated::Event(e) => &e.user_id,
            Generated::Malformed(m) => &m.key,
        }
    }

    /// The event inside (for a malformed record: the event to encode before corrupting).
    pub fn event(&self) -> &ClickEvent {
        match self {
            Generated::Event(e) => e,
            Generated::Malformed(m) => &m.event,
        }
    }
}

/// Counters of what has been generated so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GeneratorStats {
    /// Ordinary sessions written.
    pub sessions: u64,
    /// Ordinary sessions that purchased.
    pub purchases: u64,
    /// Scenarios injected.
    pub scenarios: u64,
    /// Distinct events written (ordinary and scenario).
    pub events: u64,
    /// Extra copies scheduled.
    pub duplicates: u64,
    /// Events scheduled out of order.
    pub out_of_order: u64,
    /// Events scheduled late.
    pub late: u64,
    /// Malformed records scheduled.
    pub malformed: u64,
    /// Records handed out by the iterator.
    pub emitted: u64,
}

/// Something waiting in the emission queue.
enum Item {
    Event(ClickEvent),
    Malformed(Malformed),
    /// Released to the ground-truth outbox after every record of its session.
    Truth(TruthRecord),
}

struct Pending {
    key: i64,
    seq: u64,
    item: Item,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.key, self.seq).cmp(&(other.key, other.seq))
    }
}

/// What a planned injection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Scenario(ScenarioKind),
    Legit(LegitPattern),
}

impl Plan {
    /// Whether it takes over a session of an existing user with a history (a takeover's victim,
    /// a legitimate pattern's shopper) instead of using its own actors.
    fn needs_existing_user(self) -> bool {
        matches!(
            self,
            Plan::Scenario(ScenarioKind::AccountTakeover | ScenarioKind::LocalTakeover)
                | Plan::Legit(_)
        )
    }
}

/// A scenario waiting for its session index.
struct Planned {
    at_session: u64,
    kind: Plan,
    /// Index into the scenario actors (unused for plans on existing users).
    actor: usize,
}

/// The behavioural click generator: an iterator of [`Generated`] records in (approximately)
/// event-time order, plus a ground-truth outbox ([`Generator::take_truth`]).
pub struct Generator {
    cfg: GeneratorConfig,
    rng: ChaCha8Rng,
    catalog: Catalog,
    users: Vec<User>,
    actors: Vec<User>,
    calibration: Calibration,
    arrivals: Arrivals,
    /// Next session start per user.
    schedule: BinaryHeap<Reverse<(i64, u32)>>,
    pending: BinaryHeap<Reverse<Pending>>,
    /// Sorted by `at_session`, latest first, so the next one is at the end.
    plan: Vec<Planned>,
    /// Plans due that wait for an existing user with a history.
    waiting: VecDeque<Plan>,
    ids: Ids,
    seq: u64,
    generating: bool,
    end_time: Option<i64>,
    truth: Vec<TruthRecord>,
    stats: GeneratorStats,
}

impl Generator {
    /// Validates `cfg`, draws the catalogue and the users and calibrates the funnel.
    pub fn new(cfg: GeneratorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let catalog = Catalog::new(&cfg.catalog, &mut rng);
        let b = &cfg.behaviour;
        let factory = UserFactory::new(b.intent_alpha, b.intent_beta, cfg.seed);
        let users: Vec<User> = (0..u64::from(cfg.users))
            .map(|i| factory.user(i, &catalog, &mut rng))
            .collect();
        let calibration =
            Calibration::solve(users.iter().map(|u| u.intent), &cfg.behaviour, &cfg.funnel)?;
        let arrivals = Arrivals::new(b.sessions_per_user_per_day);
        let mut schedule = BinaryHeap::with_capacity(users.len());
        for i in 0..cfg.users {
            schedule.push(Reverse((
                arrivals.next_after(cfg.start_time_ms, &mut rng),
                i,
            )));
        }

        let horizon = placement_horizon(&cfg);
        let lo = horizon / 20;
        let hi = (horizon * 4 / 5).max(lo);
        let s = &cfg.scenarios;
        let mut plan = Vec::new();
        let mut actors = Vec::new();
        for (kind, count) in [
            (Plan::Scenario(ScenarioKind::CrawlerBot), s.crawler_bots),
            (Plan::Scenario(ScenarioKind::CardTesting), s.card_testing),
            (
                Plan::Scenario(ScenarioKind::AccountTakeover),
                s.account_takeovers,
            ),
            (Plan::Scenario(ScenarioKind::CartStuffing), s.cart_stuffing),
            (
                Plan::Scenario(ScenarioKind::JitteredCrawler),
                s.jittered_crawlers,
            ),
            (
                Plan::Scenario(ScenarioKind::SlowCardTesting),
                s.slow_card_testing,
            ),
            (
                Plan::Scenario(ScenarioKind::CardTestingRing),
                s.card_testing_rings,
            ),
            (
                Plan::Scenario(ScenarioKind::LocalTakeover),
                s.local_takeovers,
            ),
            (
                Plan::Scenario(ScenarioKind::SlowCartStuffing),
                s.slow_cart_stuffing,
            ),
            (Plan::Legit(LegitPattern::BulkBuyer), s.bulk_buyers),
            (
                Plan::Legit(LegitPattern::FastRepeatBuyer),
                s.fast_repeat_buyers,
            ),
            (Plan::Legit(LegitPattern::NewDevice), s.new_devices),
        ] {
            for _ in 0..count {
                let actor = actors.len();
                // A ring's accounts are consecutive actors.
                let accounts = match kind {
                    _ if kind.needs_existing_user() => 0,
                    Plan::Scenario(ScenarioKind::CardTestingRing) => scenarios::RING_MAX_ACCOUNTS,
                    _ => 1,
                };
                for _ in 0..accounts {
                    let index = u64::from(cfg.users) + actors.len() as u64;
                    actors.push(factory.user(index, &catalog, &mut rng));
                }
                plan.push(Planned {
                    at_session: rng.random_range(lo..=hi),
                    kind,
                    actor,
                });
            }
        }
        plan.sort_by_key(|p| Reverse(p.at_session));

        let end_time =
            (cfg.duration_ms > 0).then(|| cfg.start_time_ms.saturating_add(cfg.duration_ms as i64));
        Ok(Generator {
            ids: Ids::new(cfg.seed),
            rng,
            catalog,
            users,
            actors,
            calibration,
            arrivals,
            schedule,
            pending: BinaryHeap::new(),
            plan,
            waiting: VecDeque::new(),
            seq: 0,
            generating: true,
            end_time,
            truth: Vec::new(),
            stats: GeneratorStats::default(),
            cfg,
        })
    }

    /// The config this generator runs.
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// The solved funnel parameters.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Counters of what has been generated so far.
    pub fn stats(&self) -> &GeneratorStats {
        &self.stats
    }

    /// Records waiting to be emitted (a diagnostic: it stays small however long the stream).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Takes the ground-truth records released so far. A session's or scenario's record is
    /// released once all of its records have been emitted; a malformed record's label when it
    /// is emitted. Call it now and then to keep memory bounded.
    pub fn take_truth(&mut self) -> Vec<TruthRecord> {
        std::mem::take(&mut self.truth)
    }

    fn limit_reached(&self, start: i64) -> bool {
        (self.cfg.sessions > 0 && self.stats.sessions >= self.cfg.sessions)
            || self.end_time.is_some_and(|end| start >= end)
    }

    /// Writes the next session (and any scenario due) into the emission queue.
    fn generate_next_session(&mut self) {
        let Some(&Reverse((start, ui))) = self.schedule.peek() else {
            self.generating = false;
            return;
        };
        if self.limit_reached(start) {
            self.generating = false;
            return;
        }
        self.schedule.pop();
        let index = self.stats.sessions;
        while self.plan.last().is_some_and(|p| p.at_session <= index) {
            let Some(p) = self.plan.pop() else { break };
            match p.kind {
                kind if kind.needs_existing_user() => self.waiting.push_back(kind),
                Plan::Scenario(kind) => self.bot_or_fraud(kind, p.actor, start),
                Plan::Legit(_) => {}
            }
        }
        let ui = ui as usize;
        // A takeover needs a victim with a history of its own device and country; a legitimate
        // pattern, a shopper the detector already knows.
        let waiting = (self.users[ui].sessions_done > 0)
            .then(|| self.waiting.pop_front())
            .flatten();
        let end = match waiting {
            Some(Plan::Scenario(kind)) => {
                self.account_takeover(ui, start, kind == ScenarioKind::LocalTakeover)
            }
            Some(Plan::Legit(pattern)) => self.legit(pattern, ui, start),
            None => self.ordinary(ui, start),
        };
        self.stats.sessions += 1;
        let user = &mut self.users[ui];
        user.sessions_done += 1;
        let gap = self.cfg.behaviour.min_session_gap_ms as i64;
        let next = self
            .arrivals
            .next_after(end.saturating_add(gap), &mut self.rng);
        self.schedule.push(Reverse((next, ui as u32)));
    }

    /// An ordinary session of user `ui`; returns the time of its last event.
    fn ordinary(&mut self, ui: usize, start: i64) -> i64 {
        let user = &self.users[ui];
        let mut script = Script::session(&mut self.ids, user, start, &self.cfg.catalog.currency);
        let session_id = script.session_id.clone().unwrap_or_default();
        let outcome = ordinary_session(
            &mut self.rng,
            &self.catalog,
            &self.calibration,
            user,
            &mut script,
        );
        let events = std::mem::take(&mut script.events);
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return start;
        };
        let truth = SessionTruth {
            user_id: user.id.clone(),
            session_id,
            first_event_id: first.event_id.clone(),
            start_time: first.event_time,
            end_time: last.event_time,
            event_count: events.len() as u32,
            purchase_probability: outcome.probability,
            purchased: outcome.purchased,
            order_value: outcome.order_value,
        };
        let end = last.event_time;
        self.stats.purchases += u64::from(outcome.purchased);
        self.schedule_events(events, TruthRecord::Session(truth));
        end
    }

    /// A card-testing ring by the accounts starting at `actor`: one label per account.
    fn card_testing_ring(&mut self, actor: usize, start: i64) {
        let n = self
            .rng
            .random_range(scenarios::RING_MIN_ACCOUNTS..=scenarios::RING_MAX_ACCOUNTS);
        let device = format!("desktop-{:06x}", self.rng.random_range(0..0x100_0000u32));
        let ip = format!("{:016x}", self.rng.random::<u64>());
        let mut accounts = Vec::with_capacity(n);
        let mut t = start;
        for k in 0..n {
            let session_id = self.ids.session();
            let user = &self.actors[actor + k];
            let mut script = Script::new(
                &mut self.ids,
                &user.id,
                &user.client,
                t,
                &self.cfg.catalog.currency,
            );
            script.session_id = Some(session_id);
            script.device = device.clone();
            script.ip_prefix_hash = ip.clone();
            scenarios::ring_account(&mut self.rng, &self.catalog, &mut script);
            accounts.push((user.id.clone(), std::mem::take(&mut script.events)));
            t += self.rng.random_range(2 * 60_000..6 * 60_000);
        }
        let detectable = scenarios::ring_detectable_at(&accounts);
        for (user_id, events) in accounts {
            let first_failure = events
                .iter()
                .find(|e| e.event_type == clickpath_schema::EventType::PaymentAttempt)
                .map_or(i64::MIN, |e| e.event_time);
            let at = detectable.max(first_failure);
            // Past the account's last event when it finished before the ring was recognisable.
            let index = events
                .iter()
                .position(|e| e.event_time >= at)
                .unwrap_or(events.len());
            self.label_scenario_at(ScenarioKind::CardTestingRing, user_id, events, index, at);
        }
    }

    /// A crawler, card-testing or cart-stuffing scenario by its own actor.
    fn bot_or_fraud(&mut self, kind: ScenarioKind, actor: usize, start: i64) {
        if kind == ScenarioKind::CardTestingRing {
            self.card_testing_ring(actor, start);
            return;
        }
        let user = &self.actors[actor];
        let mut script = Script::session(&mut self.ids, user, start, &self.cfg.catalog.currency);
        let (rng, catalog) = (&mut self.rng, &self.catalog);
        let detectable = match kind {
            ScenarioKind::CrawlerBot => scenarios::crawler(rng, catalog, &mut script),
            ScenarioKind::CardTesting => scenarios::card_testing(rng, catalog, &mut script),
            ScenarioKind::CartStuffing => scenarios::cart_stuffing(rng, catalog, &mut script),
            ScenarioKind::JitteredCrawler => scenarios::jittered_crawler(rng, catalog, &mut script),
            ScenarioKind::SlowCardTesting => {
                scenarios::slow_card_testing(rng, catalog, &mut script)
            }
            ScenarioKind::SlowCartStuffing => {
                scenarios::slow_cart_stuffing(rng, catalog, &mut script)
            }
            ScenarioKind::AccountTakeover
            | ScenarioKind::LocalTakeover
            | ScenarioKind::CardTestingRing => return,
        };
        let events = std::mem::take(&mut script.events);
        let user_id = user.id.clone();
        self.label_scenario(kind, user_id, events, detectable);
    }

    /// A legitimate-but-odd session of user `ui`; returns the time of its last event.
    fn legit(&mut self, pattern: LegitPattern, ui: usize, start: i64) -> i64 {
        if pattern == LegitPattern::NewDevice {
            // The new phone and its mobile network stay with the user from now on.
            let client = &mut self.users[ui].client;
            client.device = format!("mobile-{:06x}", self.rng.random_range(0..0x100_0000u32));
            client.ip_prefix_hash = format!("{:016x}", self.rng.random::<u64>());
        }
        let user = &self.users[ui];
        let mut script = Script::session(&mut self.ids, user, start, &self.cfg.catalog.currency);
        let (rng, catalog, cards) = (&mut self.rng, &self.catalog, &user.cards);
        match pattern {
            LegitPattern::BulkBuyer => legit::bulk_buyer(rng, catalog, &mut script, cards),
            LegitPattern::FastRepeatBuyer => {
                legit::fast_repeat_buyer(rng, catalog, &mut script, cards)
            }
            LegitPattern::NewDevice => legit::new_device_purchase(rng, catalog, &mut script, cards),
        }
        let events = std::mem::take(&mut script.events);
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return start;
        };
        let label = LegitLabel {
            pattern,
            user_id: user.id.clone(),
            event_ids: events.iter().map(|e| e.event_id.clone()).collect(),
            start_time: first.event_time,
            end_time: last.event_time,
        };
        let end = last.event_time;
        self.schedule_events(events, TruthRecord::Legit(label));
        end
    }

    /// An account takeover of user `ui` (from the victim's own country when `local`); returns the
    /// time of its last event.
    fn account_takeover(&mut self, ui: usize, start: i64, local: bool) -> i64 {
        let user = &self.users[ui];
        // The attacker's client and channel replace the victim's (scenarios::account_takeover).
        let mut script = Script::session(&mut self.ids, user, start, &self.cfg.catalog.currency);
        let detectable = scenarios::account_takeover(
            &mut self.rng,
            &self.catalog,
            &mut script,
            user.cards.first().cloned(),
            local,
        );
        let events = std::mem::take(&mut script.events);
        let end = events.last().map_or(start, |e| e.event_time);
        let user_id = user.id.clone();
        let kind = if local {
            ScenarioKind::LocalTakeover
        } else {
            ScenarioKind::AccountTakeover
        };
        self.label_scenario(kind, user_id, events, detectable);
        end
    }

    fn label_scenario(
        &mut self,
        scenario: ScenarioKind,
        user_id: String,
        events: Vec<ClickEvent>,
        detectable: usize,
    ) {
        let at = events
            .get(detectable)
            .or(events.last())
            .map_or(0, |e| e.event_time);
        self.label_scenario_at(scenario, user_id, events, detectable, at);
    }

    /// Labels `events` of `user_id`, detectable at event `detectable` (or at `at_ms` when that is
    /// past the last event: a ring account finished before the ring became recognisable).
    fn label_scenario_at(
        &mut self,
        scenario: ScenarioKind,
        user_id: String,
        events: Vec<ClickEvent>,
        detectable: usize,
        at_ms: i64,
    ) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        let label = AnomalyLabel {
            scenario,
            user_id,
            event_ids: events.iter().map(|e| e.event_id.clone()).collect(),
            start_time: first.event_time,
            end_time: last.event_time,
            detectable_at_ms: events.get(detectable).map_or(at_ms, |e| e.event_time),
        };
        self.stats.scenarios += 1;
        self.schedule_events(events, TruthRecord::Anomaly(label));
    }

    fn push(&mut self, key: i64, item: Item) {
        self.seq += 1;
        self.pending.push(Reverse(Pending {
            key,
            seq: self.seq,
            item,
        }));
    }

    /// Queues a session's events with their dirty-data treatment, then its truth record.
    fn schedule_events(&mut self, events: Vec<ClickEvent>, truth: TruthRecord) {
        let d = &self.cfg.dirty;
        let bound = d.disorder_bound_ms as i64;
        let late_delay = d.late_delay_ms.max(1) as i64;
        let (ooo, late, dup, bad) = (
            d.out_of_order_rate,
            d.late_rate,
            d.duplicate_rate,
            d.malformed_rate,
        );
        let mut last_key = i64::MIN;
        for ev in events {
            self.stats.events += 1;
            let t = ev.event_time;
            let r: f64 = self.rng.random();
            // Delays below `bound` keep an event less than `bound` behind anything before it.
            let key = if r < ooo {
                self.stats.out_of_order += 1;
                t + self.rng.random_range(1..bound)
            } else if r < ooo + late {
                self.stats.late += 1;
                t + late_delay + self.rng.random_range(0..late_delay)
            } else {
                t
            };
            let dup_key = self.rng.random_bool(dup).then(|| {
                // A copy of an on-time or out-of-order event stays within the same bound.
                let slack = if key - t < bound {
                    bound - (key - t)
                } else {
                    bound
                };
                key + self.rng.random_range(0..slack)
            });
            let malformed = self
                .rng
                .random_bool(bad)
                .then(|| make_malformed(&mut self.rng, &mut self.ids, &ev));
            let copy = dup_key.map(|k| (k, ev.clone()));
            self.push(key, Item::Event(ev));
            last_key = last_key.max(key);
            if let Some(m) = malformed {
                self.stats.malformed += 1;
                self.push(key, Item::Malformed(m));
            }
            if let Some((k, copy)) = copy {
                self.stats.duplicates += 1;
                self.push(k, Item::Event(copy));
                last_key = last_key.max(k);
            }
        }
        self.push(last_key, Item::Truth(truth));
    }
}

/// How many sessions scenarios are spread over.
fn placement_horizon(cfg: &GeneratorConfig) -> u64 {
    let mut n = u64::MAX;
    if cfg.sessions > 0 {
        n = n.min(cfg.sessions);
    }
    if cfg.duration_ms > 0 {
        let days = cfg.duration_ms as f64 / 86_400_000.0;
        let expected = f64::from(cfg.users) * cfg.behaviour.sessions_per_user_per_day * days;
        n = n.min(expected as u64);
    }
    if cfg.max_events > 0 {
        n = n.min(cfg.max_events / EVENTS_PER_SESSION_GUESS);
    }
    if n == u64::MAX {
        n = OPEN_ENDED_SESSIONS;
    }
    n.max(1)
}

impl Iterator for Generator {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        loop {
            if self.cfg.max_events > 0 && self.stats.emitted >= self.cfg.max_events {
                return None;
            }
            let horizon = if self.generating {
                self.schedule.peek().map_or(i64::MAX, |r| r.0.0)
            } else {
                i64::MAX
            };
            if self.pending.peek().is_some_and(|p| p.0.key <= horizon) {
                let Some(Reverse(p)) = self.pending.pop() else {
                    continue;
                };
                match p.item {
                    Item::Truth(t) => self.truth.push(t),
                    Item::Event(e) => {
                        self.stats.emitted += 1;
                        return Some(Generated::Event(e));
                    }
                    Item::Malformed(m) => {
                        self.stats.emitted += 1;
                        self.truth.push(TruthRecord::Malformed(MalformedLabel {
                            key: m.key.clone(),
                            kind: m.kind,
                            note: m.note.clone(),
                        }));
                        return Some(Generated::Malformed(m));
                    }
                }
                continue;
            }
            if !self.generating {
                return None;
            }
            self.generate_next_session();
        }
    }
}

/// Callers move a generator to a producer thread; keep it `Send`.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Generator>();
};
