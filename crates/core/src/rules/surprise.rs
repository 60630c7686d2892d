//! Model surprise: the user's actions are very unlikely under the sequence model's next-action
//! distributions (read from the prediction topic).
//!
//! A prediction made after event `k` carries the model's most likely next actions; when event
//! `k + 1` arrives, its surprise is `-ln p(observed type)`. An action outside the listed ones gets
//! the unlisted mass spread evenly over the unlisted types. The rule alerts when the mean surprise
//! of the user's last `surprise_min_events` scored actions reaches `surprise_min_mean_nats`.
//! Predictions and events come from different topics, so either may arrive first, and a consumer
//! catching up on both may read one topic well ahead of the other: the user's last
//! [`MAX_EVENTS`] event types are kept to pair late predictions with the events that followed
//! them, and up to [`MAX_PENDING`] early predictions wait for the events after theirs.

use super::{Finding, Recent, RulesConfig, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Prediction, Severity};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Most surprises remembered per user.
const MAX_WINDOW: usize = 64;

/// Most recent events remembered per user, to pair late predictions: the scorer is downstream of
/// the clean topic, so a busy user's events (a bot's burst) run ahead of their predictions. Four
/// times the default window; 32 x 16 bytes per user at most.
const MAX_EVENTS: usize = 32;

/// Most predictions per user waiting for the event after theirs (the oldest is dropped first), for
/// a consumer that reads the prediction topic ahead of the clean one (when catching up).
const MAX_PENDING: usize = 32;

/// Smallest probability used (a model that lists 0 must not give an infinite surprise).
const MIN_PROBABILITY: f64 = 1e-6;

/// A prediction waiting for the event after it.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    event_time: i64,
    listed: Vec<(EventType, f64)>,
}

/// A user's model-surprise state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SurpriseState {
    /// The last events (time, type): a ring (ids come from the user's recent-id ring).
    events: Vec<(i64, EventType)>,
    /// Next slot of `events` to overwrite once it is full.
    next: usize,
    /// Latest event time among the events the ring has forgotten: a prediction for an earlier
    /// event may have lost its next action, so it is not scored against a later one.
    forgotten: Option<i64>,
    /// Predictions whose next event has not arrived, in arrival order.
    pending: VecDeque<Pending>,
    /// The last surprises (nats) with the time of the event they scored.
    surprises: VecDeque<(f64, i64)>,
}

impl SurpriseState {
    /// Empties the state as `Default` would, keeping its allocations for the user's next visit.
    pub(super) fn clear(&mut self) {
        let SurpriseState {
            events,
            next,
            forgotten,
            pending,
            surprises,
        } = self;
        events.clear();
        (*next, *forgotten) = (0, None);
        pending.clear();
        surprises.clear();
    }
}

fn probability(listed: &[(EventType, f64)], observed: EventType) -> f64 {
    if let Some(&(_, p)) = listed.iter().find(|(t, _)| *t == observed) {
        return p.max(MIN_PROBABILITY);
    }
    let listed_mass: f64 = listed.iter().map(|(_, p)| p.max(0.0)).sum();
    let unlisted = EventType::COUNT.saturating_sub(listed.len()).max(1);
    ((1.0 - listed_mass).max(0.0) / unlisted as f64).max(MIN_PROBABILITY)
}

/// The surprise threshold's calibrator and the users active this hour (its alert-rate target).
pub(super) struct Calibrated<'a> {
    pub calibrator: &'a mut super::calibrate::Calibrator,
    pub active_users: u64,
}

/// Scores `observed` against `p`, then checks the window.
fn score(
    state: &mut SurpriseState,
    recent: &Recent,
    listed: &[(EventType, f64)],
    observed: (i64, EventType),
    cfg: &RulesConfig,
    cal: Calibrated<'_>,
) -> Option<Finding> {
    let s = -probability(listed, observed.1).ln();
    let n = (cfg.surprise_min_events as usize).clamp(1, MAX_WINDOW);
    state.surprises.push_back((s, observed.0));
    while state.surprises.len() > n {
        state.surprises.pop_front();
    }
    if state.surprises.len() < n {
        return None;
    }
    let mean = state.surprises.iter().map(|x| x.0).sum::<f64>() / n as f64;
    let limit = cal.calibrator.threshold(
        cfg.surprise_min_mean_nats.max(1e-9),
        cfg.calibration_per_10k_users_hour,
        cal.active_users,
    );
    cal.calibrator.observe(mean, observed.0);
    if mean < limit {
        return None;
    }
    let first = state.surprises.front().map_or(observed.0, |x| x.1);
    Some(Finding {
        alert_type: AlertType::ModelSurprise,
        severity: severity(Severity::Low, mean / limit),
        score: mean,
        reasons: vec![format!(
            "The last {n} actions had a mean surprise of {mean:.2} nats under the sequence model \
             (limit {limit:.2}; the latest, {}, had probability {:.4}).",
            observed.1,
            (-s).exp()
        )],
        // The scored events are the user's events since the first of them.
        evidence: recent.since(first.saturating_sub(1)),
        window_start: first,
        window_end: observed.0,
    })
}

/// The user's clean event: remembered, and scored if a prediction for an earlier event waits.
pub(super) fn on_event(
    state: &mut SurpriseState,
    recent: &Recent,
    ev: &ClickEvent,
    cfg: &RulesConfig,
    cal: Calibrated<'_>,
) -> Option<Finding> {
    if state.events.len() < MAX_EVENTS {
        state.events.push((ev.event_time, ev.event_type));
    } else if let Some(slot) = state.events.get_mut(state.next) {
        state.forgotten = Some(state.forgotten.unwrap_or(i64::MIN).max(slot.0));
        *slot = (ev.event_time, ev.event_type);
        state.next = (state.next + 1) % MAX_EVENTS;
    }
    // This event is the next action of the waiting prediction with the latest earlier event
    // time; predictions of still earlier events missed theirs (it never reached the detector) and
    // are dropped.
    let latest = state
        .pending
        .iter()
        .enumerate()
        .filter(|(_, p)| p.event_time < ev.event_time)
        .max_by_key(|(_, p)| p.event_time)
        .map(|(i, _)| i)?;
    let pending = state.pending.remove(latest)?;
    state.pending.retain(|p| p.event_time >= ev.event_time);
    score(
        state,
        recent,
        &pending.listed,
        (ev.event_time, ev.event_type),
        cfg,
        cal,
    )
}

/// A prediction for one of the user's events: scores the event after it if that already
/// arrived, else waits for it.
pub(super) fn on_prediction(
    state: &mut SurpriseState,
    recent: &Recent,
    p: &Prediction,
    cfg: &RulesConfig,
    cal: Calibrated<'_>,
) -> Option<Finding> {
    let listed: Vec<(EventType, f64)> = p
        .next_actions
        .iter()
        .map(|a| (a.event_type, a.probability))
        .collect();
    // Events after the predicted one were forgotten (the events ran more than `MAX_EVENTS`
    // ahead of the predictions): the next action is unknown, and pairing with a later event
    // would score the wrong action.
    if state.forgotten.is_some_and(|t| t > p.event_time) {
        return None;
    }
    // Likewise when no remembered event is as old as the predicted one while later ones are
    // remembered: the state was started (or restarted after `evict_idle`) after the predicted
    // event, so its next action may be an event this state never saw.
    let covered = state.events.iter().any(|(t, _)| *t <= p.event_time);
    let later = state.events.iter().any(|(t, _)| *t > p.event_time);
    if later && !covered {
        return None;
    }
    // The first remembered event after the predicted one (the next action).
    let next = state
        .events
        .iter()
        .filter(|(t, _)| *t > p.event_time)
        .min_by_key(|(t, _)| *t)
        .copied();
    match next {
        Some(observed) => score(state, recent, &listed, observed, cfg, cal),
        None => {
            if state.pending.len() >= MAX_PENDING {
                state.pending.pop_front();
            }
            state.pending.push_back(Pending {
                event_time: p.event_time,
                listed,
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use super::{MAX_EVENTS, MIN_PROBABILITY, probability};
    use clickpath_schema::{ActionProbability, EventType, EventType::*};

    fn prediction(event_time: i64, listed: &[(EventType, f64)]) -> Prediction {
        Prediction {
            event_id: format!("p{event_time}"),
            user_id: "u".into(),
            event_time,
            model_version: "test".into(),
            purchase_probability: 0.1,
            next_actions: listed
                .iter()
                .map(|&(event_type, probability)| ActionProbability {
                    event_type,
                    probability,
                })
                .collect(),
            predicted_path: vec![],
            factors: vec![],
            scoring_latency_us: 0,
            recommended_items: Vec::new(),
            recommended_categories: Vec::new(),
        }
    }

    fn surprise_detector() -> Detector {
        Detector::new(
            RulesConfig {
                surprise_min_events: 4,
                surprise_min_mean_nats: 3.0,
                ..RulesConfig::default()
            },
            "s",
        )
    }

    /// Events of `types` one second apart, with a prediction for each. With `late`, each
    /// prediction arrives after the event that follows it; otherwise right after its own event.
    /// (`ahead`: every prediction before any event, as when the prediction topic is read first.)
    fn stream(
        d: &mut Detector,
        types: &[EventType],
        listed: &[(EventType, f64)],
        late: bool,
    ) -> Vec<FraudAlert> {
        let mut out = Vec::new();
        for (i, &ty) in types.iter().enumerate() {
            let t = i as i64 * 1_000;
            out.extend(d.on_event(&ev(&format!("e{i}"), ty, t)));
            if !late {
                out.extend(d.on_prediction(&prediction(t, listed)));
            } else if i > 0 {
                out.extend(d.on_prediction(&prediction(t - 1_000, listed)));
            }
        }
        of(&out, AlertType::ModelSurprise)
    }

    const LISTED: [(EventType, f64); 3] = [(ProductView, 0.6), (PageView, 0.3), (Search, 0.05)];

    #[test]
    fn a_user_back_after_every_window_starts_afresh_whether_or_not_evicted_meanwhile() {
        // Two unlikely actions, an hour of silence (past every rule window), two more.
        let run = |evict: bool| {
            let mut d = surprise_detector();
            let mut out = Vec::new();
            let times = [
                0, 1_000, 2_000, 3_600_000, 3_601_000, 3_602_000, 3_603_000, 3_604_000,
            ];
            let types = [
                PageView, AddToCart, AddToCart, PageView, AddToCart, AddToCart, AddToCart,
                AddToCart,
            ];
            for (i, (&t, &ty)) in times.iter().zip(&types).enumerate() {
                if evict && i == 3 {
                    // A tick between the two visits, at a watermark another user moved on.
                    d.on_event(&ClickEvent::new("x", "other", PageView, 3_000_000));
                    d.evict_idle(3_000_000);
                }
                out.extend(d.on_event(&ev(&format!("e{i}"), ty, t)));
                out.extend(d.on_prediction(&prediction(t, &LISTED)));
            }
            of(&out, AlertType::ModelSurprise)
        };
        let evicted = run(true);
        assert_eq!(
            evicted.len(),
            1,
            "the second visit alone has four unlikely actions"
        );
        assert_eq!(evicted[0].window_start, 3_601_000);
        assert_eq!(run(false), evicted, "the same alert without the eviction");
    }

    #[test]
    fn unlikely_actions_alert_in_either_arrival_order() {
        // Add-to-cart after add-to-cart: unlisted, (1 - 0.95) / 7 each: 6.9 nats.
        let types = [PageView, AddToCart, AddToCart, AddToCart, AddToCart];
        for late in [false, true] {
            let alerts = stream(&mut surprise_detector(), &types, &LISTED, late);
            assert_eq!(alerts.len(), 1, "late predictions: {late}");
            let a = &alerts[0];
            assert_eq!(a.evidence_event_ids, vec!["e1", "e2", "e3", "e4"]);
            assert!((a.score - (7.0f64 / 0.05).ln()).abs() < 1e-9, "{}", a.score);
            assert_eq!((a.window_start, a.window_end), (1_000, 4_000));
        }
    }

    #[test]
    fn predictions_read_ahead_of_their_events_are_all_paired() {
        // A consumer catching up may read the whole prediction backlog before the events.
        let types = [PageView, AddToCart, AddToCart, AddToCart, AddToCart];
        let mut d = surprise_detector();
        let mut out = Vec::new();
        for i in 0..types.len() as i64 {
            out.extend(d.on_prediction(&prediction(i * 1_000, &LISTED)));
        }
        for (i, &ty) in types.iter().enumerate() {
            out.extend(d.on_event(&ev(&format!("e{i}"), ty, i as i64 * 1_000)));
        }
        let alerts = of(&out, AlertType::ModelSurprise);
        assert_eq!(alerts.len(), 1, "{out:#?}");
        assert_eq!(alerts[0].evidence_event_ids, vec!["e1", "e2", "e3", "e4"]);
        assert!((alerts[0].score - (7.0f64 / 0.05).ln()).abs() < 1e-9);

        // A prediction whose next event never arrives is dropped when a later event pairs with a
        // later prediction, and is never paired with a wrong event.
        let mut d = surprise_detector();
        let mut out = Vec::new();
        out.extend(d.on_prediction(&prediction(0, &LISTED)));
        out.extend(d.on_prediction(&prediction(2_000, &LISTED)));
        // Likely (listed at 0.6) for the prediction at 2 s; had it paired with the one at 0 it
        // would score the same, so check the count of scored actions instead: one, not two.
        out.extend(d.on_event(&ev("e3", ProductView, 3_000)));
        for (i, t) in [(4, 4_000), (5, 5_000), (6, 6_000)] {
            out.extend(d.on_prediction(&prediction(t - 1_000, &LISTED)));
            out.extend(d.on_event(&ev(&format!("e{i}"), AddToCart, t)));
        }
        // Scored: e3 (0.5 nats), e4, e5, e6 (6.9 each): mean 5.3 >= 3.0 over exactly 4.
        let alerts = of(&out, AlertType::ModelSurprise);
        assert_eq!(alerts.len(), 1, "{out:#?}");
        let want = (3.0 * (7.0f64 / 0.05).ln() - 0.6f64.ln()) / 4.0;
        assert!((alerts[0].score - want).abs() < 1e-9, "{}", alerts[0].score);
    }

    #[test]
    fn predictions_far_behind_their_events_are_not_paired_with_the_wrong_event() {
        // MAX_EVENTS + 4 add-to-carts, then their predictions: the ring remembers the last
        // MAX_EVENTS events (e4..), so the predictions for e0..e3, whose own events were
        // forgotten, are skipped; the one for e4 pairs with e5, and so on.
        let n = MAX_EVENTS as i64 + 4;
        let mut d = surprise_detector();
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(d.on_event(&ev(&format!("e{i}"), AddToCart, i * 1_000)));
        }
        for i in 0..n {
            out.extend(d.on_prediction(&prediction(i * 1_000, &LISTED)));
        }
        let alerts = of(&out, AlertType::ModelSurprise);
        assert!(!alerts.is_empty());
        // The first alert covers the first 4 scored actions: e5..e8 (not e4 four times).
        assert_eq!(
            (alerts[0].window_start, alerts[0].window_end),
            (5_000, 8_000)
        );
    }

    #[test]
    fn predictions_of_events_before_the_state_began_are_not_paired() {
        // The user's state was evicted (or never saw the early events): events of a new session
        // arrive, then the late predictions of the old one. Their next actions were never seen
        // here; pairing them with the new session's first event would score the wrong action.
        let mut d = surprise_detector();
        let mut out = Vec::new();
        let old_session = 0..6;
        let new_start = 10_000_000;
        for i in 0..6 {
            out.extend(d.on_event(&ev(&format!("n{i}"), ProductView, new_start + i * 1_000)));
        }
        for i in old_session {
            out.extend(d.on_prediction(&prediction(i * 1_000, &[(Purchase, 0.999)])));
        }
        assert!(of(&out, AlertType::ModelSurprise).is_empty(), "{out:#?}");
        // The new session's own predictions still pair (view after view is likely).
        for i in 0..6 {
            out.extend(d.on_prediction(&prediction(new_start + i * 1_000, &LISTED)));
        }
        assert!(of(&out, AlertType::ModelSurprise).is_empty(), "{out:#?}");
    }

    #[test]
    fn near_misses_do_not_fire() {
        // Likely actions.
        let likely = [PageView, ProductView, ProductView, PageView, ProductView];
        assert!(stream(&mut surprise_detector(), &likely, &LISTED, false).is_empty());
        // Three searches (listed at 0.05: 3.0 nats each) and a product view (0.5 nats): mean 2.4.
        let mixed = [PageView, Search, Search, Search, ProductView];
        assert!(stream(&mut surprise_detector(), &mixed, &LISTED, false).is_empty());
        // Unlikely, but fewer scored actions than the window.
        let short = [PageView, AddToCart, AddToCart, AddToCart];
        assert!(stream(&mut surprise_detector(), &short, &LISTED, false).is_empty());
        // Without predictions nothing is scored.
        let mut d = surprise_detector();
        let alerts = run(
            &mut d,
            &[AddToCart, AddToCart, AddToCart, AddToCart, AddToCart]
                .iter()
                .enumerate()
                .map(|(i, &t)| ev(&format!("e{i}"), t, i as i64))
                .collect::<Vec<_>>(),
        );
        assert!(of(&alerts, AlertType::ModelSurprise).is_empty());
    }

    #[test]
    fn probabilities_of_unlisted_actions_share_the_rest() {
        assert!((probability(&LISTED, PageView) - 0.3).abs() < 1e-12);
        assert!((probability(&LISTED, Purchase) - 0.05 / 7.0).abs() < 1e-12);
        assert_eq!(probability(&[(Purchase, 0.0)], Purchase), MIN_PROBABILITY);
        assert_eq!(probability(&[(Purchase, 1.0)], PageView), MIN_PROBABILITY);
    }
}
