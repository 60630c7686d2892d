//! Events grouped per analysis unit, in event-time order.

use clickpath_schema::ClickEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who a funnel counts: PostHog's "aggregate by persons" or by sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// One unit per `user_id` (the default, as in Mixpanel and PostHog).
    #[default]
    User,
    /// One unit per client session: `session_id`, or the user id when the event has none.
    Session,
}

impl Unit {
    /// The unit key of an event.
    pub fn key(self, e: &ClickEvent) -> &str {
        match self {
            Unit::User => &e.user_id,
            Unit::Session => e.session_id.as_deref().unwrap_or(&e.user_id),
        }
    }
}

/// The events of one unit, sorted by event time; events with equal times keep their input order.
#[derive(Debug, Clone)]
pub struct Journey<'a> {
    /// The unit's key (user id or session id).
    pub key: &'a str,
    /// The unit's events.
    pub events: Vec<&'a ClickEvent>,
}

/// Groups `events` by unit, ordered by key so that every result is deterministic.
pub fn journeys(events: &[ClickEvent], unit: Unit) -> Vec<Journey<'_>> {
    let mut by_key: BTreeMap<&str, Vec<&ClickEvent>> = BTreeMap::new();
    for e in events {
        by_key.entry(unit.key(e)).or_default().push(e);
    }
    by_key
        .into_iter()
        .map(|(key, mut events)| {
            // A stable sort keeps the input order of simultaneous events (files list them as they happened).
            events.sort_by_key(|e| e.event_time);
            Journey { key, events }
        })
        .collect()
}
