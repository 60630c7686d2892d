//! The false-alarm budget: per alert type, at most `alert_budget_per_10k_users_hour` new alerts per
//! 10,000 users active in the current hour of event time (never fewer than
//! `alert_budget_min_per_hour`). A rule that misfires on a stream it was not tuned for then raises a
//! bounded number of alerts instead of a storm; findings over the budget open no alert and are
//! counted (`Detector::over_budget`). Escalations of alerts already open are never held back.

use serde::{Deserialize, Serialize};

/// Alert types (the slots of the per-type tables).
pub(super) const TYPES: usize = super::ALERT_TYPES.len();

/// One hour's alerts per type against the users active in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct AlertBudget {
    hour: i64,
    active_users: u64,
    opened: [u64; TYPES],
    over: [u64; TYPES],
}

impl AlertBudget {
    /// Moves to the hour of `now` (event time; a new hour starts empty) and counts `user_active` as one of
    /// its users when this is the user's first event in it.
    pub(super) fn observe(&mut self, now: i64, first_event_this_hour: bool) {
        let hour = now.div_euclid(3_600_000);
        if hour > self.hour {
            self.hour = hour;
            self.active_users = 0;
            self.opened = [0; TYPES];
        }
        if first_event_this_hour {
            self.active_users += 1;
        }
    }

    /// Users active in the current hour so far.
    pub(super) fn active_users(&self) -> u64 {
        self.active_users
    }

    /// The hour (event time) the budget is counting.
    pub(super) fn hour(&self) -> i64 {
        self.hour
    }

    /// Whether a new alert of `slot` may open now; counts it (or the refusal).
    pub(super) fn admit(&mut self, slot: usize, per_10k: f64, min_per_hour: u64) -> bool {
        let allowed = (per_10k * self.active_users as f64 / 10_000.0).floor() as u64;
        if self.opened[slot] < allowed.max(min_per_hour) {
            self.opened[slot] += 1;
            true
        } else {
            self.over[slot] += 1;
            false
        }
    }

    /// Findings that opened no alert because their type's budget for the hour was spent, per slot.
    pub(super) fn over_budget(&self) -> [u64; TYPES] {
        self.over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_scales_with_active_users_and_resets_every_hour() {
        let mut b = AlertBudget::default();
        for _ in 0..20_000 {
            b.observe(1000, true);
        }
        // 20,000 users at 5 per 10k: 10 alerts of a type, then none; other types have their own.
        let admitted = (0..15).filter(|_| b.admit(0, 5.0, 2)).count();
        assert_eq!(admitted, 10);
        assert_eq!(b.over_budget()[0], 5);
        assert!(b.admit(1, 5.0, 2));
        // A small stream still gets the minimum.
        b.observe(3_600_000, true);
        assert_eq!(b.hour(), 1);
        assert_eq!((0..5).filter(|_| b.admit(0, 5.0, 2)).count(), 2);
    }
}
