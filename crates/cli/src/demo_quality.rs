//! How good the demo's predictions were on the stream it generated: purchase ROC-AUC on the events
//! before their session's first purchase (the honest label of docs/models.md), and the share of
//! predictions whose recommended items contain the session's next item.

use std::collections::HashMap;

use clickpath_schema::{ClickEvent, EventType, Prediction, SessionSummary};

/// The demo's prediction quality.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelQuality {
    /// Predictions of events before their session's first purchase (or in a session without one).
    pub purchase_cases: usize,
    /// Of them in a session that goes on to a purchase.
    pub purchase_positives: usize,
    /// Purchase ROC-AUC over those cases (`None` with a single class).
    pub purchase_roc_auc: Option<f64>,
    /// Predictions with recommended items and a next item in the same session.
    pub item_cases: usize,
    /// Of them listing that next item.
    pub item_hits: usize,
}

impl ModelQuality {
    /// Scores `predictions` against `events` (the generated stream) grouped into `sessions`.
    pub fn measure(
        events: &[ClickEvent],
        sessions: &[SessionSummary],
        predictions: &[Prediction],
    ) -> Self {
        let mut by_id: HashMap<&str, &ClickEvent> = HashMap::new();
        let mut by_user: HashMap<&str, Vec<&ClickEvent>> = HashMap::new();
        for e in events {
            if by_id.insert(e.event_id.as_str(), e).is_none() {
                by_user.entry(e.user_id.as_str()).or_default().push(e);
            }
        }
        for list in by_user.values_mut() {
            list.sort_by_key(|e| e.event_time);
        }
        // The latest revision of each session, per user, without the ones merged into others.
        let mut latest: HashMap<&str, &SessionSummary> = HashMap::new();
        let mut superseded = std::collections::HashSet::new();
        for s in sessions {
            superseded.extend(s.superseded_session_ids.iter().map(String::as_str));
            match latest.get(s.session_id.as_str()) {
                Some(old) if old.revision >= s.revision => {}
                _ => {
                    latest.insert(s.session_id.as_str(), s);
                }
            }
        }
        let mut sessions_of: HashMap<&str, Vec<&SessionSummary>> = HashMap::new();
        for s in latest.into_values() {
            if !superseded.contains(s.session_id.as_str()) {
                sessions_of.entry(s.user_id.as_str()).or_default().push(s);
            }
        }
        for list in sessions_of.values_mut() {
            list.sort_by_key(|s| s.start_time);
        }
        let mut q = ModelQuality::default();
        let (mut scores, mut labels) = (Vec::new(), Vec::new());
        for p in predictions {
            let Some(ev) = by_id.get(p.event_id.as_str()) else {
                continue;
            };
            let Some(session) = sessions_of.get(p.user_id.as_str()).and_then(|list| {
                list.iter()
                    .find(|s| s.start_time <= ev.event_time && ev.event_time <= s.end_time)
            }) else {
                continue;
            };
            let in_session: Vec<&ClickEvent> = by_user[p.user_id.as_str()]
                .iter()
                .copied()
                .filter(|e| session.start_time <= e.event_time && e.event_time <= session.end_time)
                .collect();
            let first_purchase = in_session
                .iter()
                .filter(|e| e.event_type == EventType::Purchase)
                .map(|e| e.event_time)
                .min();
            if first_purchase.is_none_or(|t| ev.event_time < t)
                && ev.event_type != EventType::Purchase
            {
                scores.push(p.purchase_probability);
                labels.push(first_purchase.is_some());
            }
            if !p.recommended_items.is_empty() {
                let next_item = in_session
                    .iter()
                    .filter(|e| e.event_time > ev.event_time)
                    .find_map(|e| e.item_id.as_deref());
                if let Some(item) = next_item {
                    q.item_cases += 1;
                    q.item_hits +=
                        usize::from(p.recommended_items.iter().any(|r| r.item_id == item));
                }
            }
        }
        q.purchase_cases = scores.len();
        q.purchase_positives = labels.iter().filter(|y| **y).count();
        q.purchase_roc_auc = clickpath_model::metrics::roc_auc(&scores, &labels).ok();
        q
    }

    /// Two summary lines.
    pub fn render(&self) -> String {
        let auc = self
            .purchase_roc_auc
            .map_or("-".to_string(), |a| format!("{a:.3}"));
        let mut out = format!(
            "  purchase ROC-AUC so far: {auc} over {} predictions before their session's purchase ({} in sessions that buy)\n",
            self.purchase_cases, self.purchase_positives
        );
        if self.item_cases > 0 {
            out.push_str(&format!(
                "  next-item hit rate: {:.1} % ({} of {} recommendation lists contain the session's next item)\n",
                100.0 * self.item_hits as f64 / self.item_cases as f64,
                self.item_hits,
                self.item_cases
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::{FunnelStage, RecommendedItem};

    fn ev(id: &str, t: EventType, time: i64, item: &str) -> ClickEvent {
        let mut e = ClickEvent::new(id, "u", t, time);
        e.item_id = Some(item.into());
        e
    }

    fn session(start: i64, end: i64) -> SessionSummary {
        SessionSummary {
            session_id: format!("u:{start}"),
            user_id: "u".into(),
            start_time: start,
            end_time: end,
            event_count: 3,
            path: Vec::new(),
            furthest_stage: FunnelStage::Purchase,
            purchased: true,
            order_value: 0.0,
            first_event_id: String::new(),
            last_event_id: String::new(),
            close_reason: "gap".into(),
            revision: 0,
            superseded_session_ids: Vec::new(),
            user_sessions: 1,
            outlook: None,
        }
    }

    fn prediction(event: &str, p: f64, items: &[&str]) -> Prediction {
        Prediction {
            event_id: event.into(),
            user_id: "u".into(),
            event_time: 0,
            model_version: "m".into(),
            purchase_probability: p,
            next_actions: Vec::new(),
            predicted_path: Vec::new(),
            factors: Vec::new(),
            scoring_latency_us: 0,
            recommended_items: items
                .iter()
                .map(|i| RecommendedItem {
                    item_id: i.to_string(),
                    score: 1.0,
                })
                .collect(),
            recommended_categories: Vec::new(),
        }
    }

    #[test]
    fn labels_stop_at_the_first_purchase_and_hits_look_at_the_next_item() {
        let events = [
            ev("a", EventType::ProductView, 0, "x"),
            ev("b", EventType::AddToCart, 10, "y"),
            ev("c", EventType::Purchase, 20, "y"),
            ev("d", EventType::ProductView, 5_000, "z"),
            ev("e", EventType::ProductView, 5_010, "w"),
        ];
        let sessions = [session(0, 20), session(5_000, 5_010)];
        let predictions = [
            prediction("a", 0.9, &["y"]),  // buys later; next item y: hit
            prediction("b", 0.8, &["q"]),  // buys later; next item y: miss
            prediction("c", 0.99, &["y"]), // the purchase itself: no purchase case, no next item
            prediction("d", 0.1, &["w"]),  // never buys; next item w: hit
            prediction("e", 0.2, &[]),     // never buys; no recommendation
        ];
        let q = ModelQuality::measure(&events, &sessions, &predictions);
        assert_eq!((q.purchase_cases, q.purchase_positives), (4, 2));
        assert_eq!(q.purchase_roc_auc, Some(1.0));
        assert_eq!((q.item_cases, q.item_hits), (3, 2));
        assert!(q.render().contains("66.7 %"), "{}", q.render());
    }
}
