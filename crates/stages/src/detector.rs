//! Anomaly detector: fraud and bot rules over clean events, and model surprise over the scorer's predictions;
//! alerts keyed by user.
//!
//! All logic is `clickpath_core::rules::Detector` (the same code `clickpath-lab evaluate-detector`
//! measures). The stage reads two co-partitioned topics (both keyed by user id): clean events, fed to
//! `on_event`, and predictions, fed to `on_prediction` (the model-surprise rule pairs each prediction with the
//! user's next event, whichever arrives first). An alert is published when it opens and again, with the same
//! `alert_id`, each time later evidence raises its severity; consumers keep the latest version per `alert_id`.
//!
//! State is kept per input partition (a `clickpath_core::rules::Detector` each: users, profiles and
//! the learned statistics) and is durable: each batch writes every changed user's entry (key: the
//! user id) and, when the partition had input, its statistics (key: empty) to the changelog; a new
//! owner restores them before it reads the partition. The rules that count across users (IP
//! velocity, card-testing rings) therefore see one partition's users (docs/state.md).
//!
//! The stage also publishes each user's open alerts to its query store (stage name `detector`), for
//! `GET /v1/users/{id}`: a JSON array of [`OpenAlertView`].

use clickpath_core::rules::{Detector as CoreDetector, RulesConfig};
use clickpath_runtime::query::QueryStore;
use clickpath_runtime::{Context, RestoreBuffer, Stage, StageError, StageInput, StateChange};
use clickpath_schema::codec::{Codec, CodecError};
use clickpath_schema::{AlertType, ClickEvent, FraudAlert, Prediction, Severity};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Changelog key of a partition's learned statistics (user ids are never empty).
const STATISTICS_KEY: &[u8] = b"";

/// Partition of input read without one (tests calling `process` directly).
const NO_PARTITION: i32 = -1;

/// Version written into every alert.
pub const DETECTOR_VERSION: &str = concat!("rules+hst-", env!("CARGO_PKG_VERSION"));

/// What the detector reads: its input topics are, in this order, the clean events and the predictions.
#[derive(Debug, Clone, PartialEq)]
// Each record is moved once, into `process`: boxing the larger variant would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum DetectorInput {
    /// A clean event (from `topics.clean`).
    Event(ClickEvent),
    /// The scorer's prediction for an event (from `topics.predictions`).
    Prediction(Prediction),
}

impl StageInput for DetectorInput {
    const ROLES: &'static [&'static str] = &["clean events", "predictions"];

    fn decode(codec: &Codec, input: usize, payload: &[u8]) -> Result<Self, CodecError> {
        match input {
            0 => codec.decode(payload).map(DetectorInput::Event),
            _ => codec.decode(payload).map(DetectorInput::Prediction),
        }
    }
}

impl From<ClickEvent> for DetectorInput {
    fn from(ev: ClickEvent) -> Self {
        DetectorInput::Event(ev)
    }
}

impl From<Prediction> for DetectorInput {
    fn from(p: Prediction) -> Self {
        DetectorInput::Prediction(p)
    }
}

/// One open alert in a user's query view. The view is the JSON array of the user's open alerts: at most one
/// per alert type (the detector keeps one open alert per user and type), oldest first, each dropped once its
/// cooldown has passed in event time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenAlertView {
    /// The alert's id (stable across its escalations).
    pub alert_id: String,
    /// What was detected (`CARD_TESTING`, `MODEL_SURPRISE`, ...).
    pub alert_type: AlertType,
    /// Its current severity.
    pub severity: Severity,
    /// Its current score.
    pub score: f64,
    /// Event time at which it opened: the end of its window when first published (ms).
    pub opened_at: i64,
    /// Event time of its latest publication: the end of its window then (ms).
    pub updated_at: i64,
}

/// A user's open alerts and the input partition the user lives in.
struct UserAlerts {
    partition: Option<i32>,
    alerts: Vec<OpenAlertView>,
}

/// The detector stage.
pub struct Detector {
    rules: RulesConfig,
    /// One detector per input partition.
    inner: BTreeMap<i32, CoreDetector>,
    output_topic: String,
    /// Newest event time per input partition.
    watermark_ms: BTreeMap<i32, i64>,
    durable: bool,
    /// Changelog records read during a restore.
    restoring: RestoreBuffer,
    cooldown_ms: i64,
    query: QueryStore,
    open: HashMap<String, UserAlerts>,
    /// Findings held back by the false-alarm budget, as last logged, and when.
    over_budget_logged: (u64, Option<std::time::Instant>),
}

impl Detector {
    /// A detector writing alerts to `output_topic`.
    pub fn new(cfg: &RulesConfig, output_topic: &str) -> Self {
        Detector {
            rules: cfg.clone(),
            inner: BTreeMap::new(),
            output_topic: output_topic.to_string(),
            watermark_ms: BTreeMap::new(),
            durable: true,
            restoring: RestoreBuffer::default(),
            cooldown_ms: cfg.cooldown_ms,
            query: QueryStore::new(),
            open: HashMap::new(),
            over_budget_logged: (0, None),
        }
    }

    /// Keeps state in memory only (no changelog topic).
    pub fn without_changelog(mut self) -> Self {
        self.durable = false;
        self
    }

    fn fresh(&self) -> CoreDetector {
        let d = CoreDetector::new(self.rules.clone(), DETECTOR_VERSION);
        if self.durable { d.with_journal() } else { d }
    }

    /// The detector of `partition`, created when absent.
    fn partition(&mut self, partition: i32) -> &mut CoreDetector {
        if !self.inner.contains_key(&partition) {
            let fresh = self.fresh();
            self.inner.insert(partition, fresh);
        }
        self.inner.get_mut(&partition).expect("inserted")
    }

    /// Warns (at most once a minute) when findings were held back by the false-alarm budget: a rule
    /// misfiring on this stream, or an attack wave larger than the budget.
    fn log_over_budget(&mut self) {
        let mut sums: BTreeMap<AlertType, u64> = BTreeMap::new();
        for d in self.inner.values() {
            for (t, n) in d.over_budget() {
                *sums.entry(t).or_default() += n;
            }
        }
        let by_type: Vec<(AlertType, u64)> = sums.into_iter().collect();
        let total: u64 = by_type.iter().map(|(_, n)| n).sum();
        let (logged, at) = self.over_budget_logged;
        if total > logged && at.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
            let by_type: Vec<String> = by_type
                .iter()
                .map(|(t, n)| format!("{}={n}", clickpath_core::rules::alert_type_symbol(*t)))
                .collect();
            tracing::warn!(
                held_back = total - logged,
                total = %by_type.join(" "),
                "Findings over the false-alarm budget opened no alert (detector.alert_budget_per_10k_users_hour)."
            );
            self.over_budget_logged = (total, Some(std::time::Instant::now()));
        }
    }

    /// The open alerts of `user_id`, as published to the query store (`None` when it has none).
    pub fn open_alerts(&self, user_id: &str) -> Option<&[OpenAlertView]> {
        self.open.get(user_id).map(|u| u.alerts.as_slice())
    }

    fn emit(&mut self, alerts: Vec<FraudAlert>, ctx: &mut Context<'_>) -> Result<(), StageError> {
        for alert in alerts {
            ctx.emit(&self.output_topic, &alert.user_id, &alert)?;
            self.track(&alert, ctx.partition());
        }
        Ok(())
    }

    /// Folds a published alert (new or escalated) into its user's view and republishes the view.
    fn track(&mut self, alert: &FraudAlert, partition: Option<i32>) {
        let user = self
            .open
            .entry(alert.user_id.clone())
            .or_insert_with(|| UserAlerts {
                partition,
                alerts: Vec::new(),
            });
        user.partition = partition.or(user.partition);
        match user
            .alerts
            .iter_mut()
            .find(|a| a.alert_type == alert.alert_type)
        {
            // An escalation of the open alert.
            Some(a) if a.alert_id == alert.alert_id => {
                a.severity = alert.severity;
                a.score = alert.score;
                a.updated_at = a.updated_at.max(alert.window_end);
            }
            // A new alert of a type whose previous one closed (its cooldown passed for the core detector
            // before this stage's watermark caught up).
            Some(a) => *a = open_view(alert),
            None => user.alerts.push(open_view(alert)),
        }
        self.publish(&alert.user_id);
    }

    fn publish(&self, user_id: &str) {
        match self.open_alerts(user_id) {
            // Rendered to JSON only if the query API asks for it.
            Some(view) => self.query.publish(user_id, view.to_vec()),
            None => self.query.remove(user_id),
        }
    }

    /// Drops alerts whose cooldown has passed at their partition's watermark, and users left with
    /// none.
    fn expire(&mut self) {
        let cooldown = self.cooldown_ms;
        let watermarks = &self.watermark_ms;
        let mut changed = Vec::new();
        self.open.retain(|user, u| {
            let watermark = watermarks
                .get(&u.partition.unwrap_or(NO_PARTITION))
                .copied()
                .unwrap_or(i64::MIN);
            let before = u.alerts.len();
            u.alerts
                .retain(|a| a.opened_at.saturating_add(cooldown) > watermark);
            if u.alerts.len() != before {
                changed.push(user.clone());
            }
            !u.alerts.is_empty()
        });
        for user in changed {
            self.publish(&user);
        }
    }
}

fn open_view(alert: &FraudAlert) -> OpenAlertView {
    OpenAlertView {
        alert_id: alert.alert_id.clone(),
        alert_type: alert.alert_type,
        severity: alert.severity,
        score: alert.score,
        opened_at: alert.window_end,
        updated_at: alert.window_end,
    }
}

impl Detector {
    /// A clean event, by reference: the chained topology hands one event to several stages.
    pub fn process_event(
        &mut self,
        ev: &ClickEvent,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        let p = ctx.partition().unwrap_or(NO_PARTITION);
        let wm = self.watermark_ms.entry(p).or_insert(i64::MIN);
        *wm = (*wm).max(ev.event_time);
        let alerts = self.partition(p).on_event(ev);
        self.emit(alerts, ctx)
    }

    /// A prediction, by reference (the chained topology also publishes it).
    pub fn process_prediction(
        &mut self,
        pred: &Prediction,
        ctx: &mut Context<'_>,
    ) -> Result<(), StageError> {
        let p = ctx.partition().unwrap_or(NO_PARTITION);
        let alerts = self.partition(p).on_prediction(pred);
        self.emit(alerts, ctx)
    }
}

impl Stage for Detector {
    type Input = DetectorInput;

    fn name(&self) -> &'static str {
        "detector"
    }

    fn process(&mut self, input: DetectorInput, ctx: &mut Context<'_>) -> Result<(), StageError> {
        match input {
            DetectorInput::Event(ev) => self.process_event(&ev, ctx),
            DetectorInput::Prediction(pred) => self.process_prediction(&pred, ctx),
        }
    }

    fn tick(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        for (p, d) in &mut self.inner {
            if let Some(&wm) = self.watermark_ms.get(p).filter(|&&wm| wm > i64::MIN) {
                d.evict_idle(wm);
            }
        }
        self.expire();
        self.log_over_budget();
        Ok(())
    }

    fn is_stateful(&self) -> bool {
        self.durable
    }

    fn take_state_changes(&mut self) -> Vec<StateChange> {
        let mut out = Vec::new();
        for (&partition, d) in &mut self.inner {
            let changes = match d.take_changes() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(partition, error = %e, "Detector state does not encode; not written.");
                    continue;
                }
            };
            out.extend(changes.users.into_iter().map(|(user, value)| StateChange {
                partition,
                key: user.into_bytes(),
                value,
            }));
            if let Some(stats) = changes.statistics {
                out.push(StateChange {
                    partition,
                    key: STATISTICS_KEY.to_vec(),
                    value: Some(stats),
                });
            }
        }
        out
    }

    fn restore(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        self.restoring.record(partition, key, value);
        Ok(())
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        // The new owner restores these partitions from the changelog; drop our copy.
        for p in partitions {
            self.inner.remove(p);
            self.watermark_ms.remove(p);
            self.restoring.forget(*p);
        }
        self.open
            .retain(|_, u| u.partition.is_none_or(|p| !partitions.contains(&p)));
    }

    fn on_assign(&mut self, partitions: &[i32]) {
        for &p in partitions {
            let Some(records) = self.restoring.take(p) else {
                continue;
            };
            let mut d = self.fresh();
            for (key, bytes) in records {
                let restored = if key == STATISTICS_KEY {
                    d.restore_statistics(&bytes)
                } else {
                    match String::from_utf8(key) {
                        Ok(user) => d.restore_user(user, &bytes),
                        Err(_) => Err(clickpath_core::state_codec::StateDecodeError(
                            "user key is not UTF-8".into(),
                        )),
                    }
                };
                // A record this version cannot read must not stop the partition: that user (or
                // the statistics) starts afresh.
                if let Err(e) = restored {
                    tracing::error!(partition = p, error = %e, "Detector changelog record does not parse; skipped.");
                }
            }
            // The restored open alerts are the ones this partition's users can still escalate.
            for (user, opened_at, alert) in d.open_alerts() {
                let views = self
                    .open
                    .entry(user.to_string())
                    .or_insert_with(|| UserAlerts {
                        partition: Some(p),
                        alerts: Vec::new(),
                    });
                views.partition = Some(p);
                if views
                    .alerts
                    .iter()
                    .all(|a| a.alert_type != alert.alert_type)
                {
                    views.alerts.push(OpenAlertView {
                        opened_at,
                        ..open_view(alert)
                    });
                }
            }
            for views in self.open.values_mut() {
                views.alerts.sort_by_key(|a| a.opened_at);
            }
            self.inner.insert(p, d);
        }
        // The query store dropped the views of partitions this instance stopped owning, and an eager
        // rebalance revokes every partition before it assigns them again: publish the open alerts this
        // instance still tracks for the users of the (re)assigned partitions.
        let users: Vec<String> = self
            .open
            .iter()
            .filter(|(_, u)| u.partition.is_none_or(|p| partitions.contains(&p)))
            .map(|(user, _)| user.clone())
            .collect();
        for user in users {
            self.publish(&user);
        }
    }

    fn query_store(&self) -> Option<QueryStore> {
        Some(self.query.clone())
    }

    fn state_entries(&self) -> usize {
        self.inner.values().map(CoreDetector::users).sum()
    }
}
