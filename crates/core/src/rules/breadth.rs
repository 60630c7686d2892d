//! Crawler breadth: a browsing run (consecutive events no more than `bot_breadth_max_gap_ms` apart)
//! that views at least `bot_breadth_min_items` distinct items at a mean gap of at most
//! `bot_breadth_max_mean_gap_ms`, without a single add to cart. It catches crawlers whose timing is
//! human-like (log-normal jitter defeats [`super::bot`]'s regularity test) by what no shopper does:
//! read a large slice of the catalogue at a glance and buy nothing.
//!
//! State per user is bounded: the run's counters and the distinct items of the run, counted exactly
//! up to `bot_breadth_min_items` (32-bit hashes, sorted; at most 1 KiB at the default 60, and only for
//! users browsing a run of distinct items).

use super::{Finding, Recent, RulesConfig, hash_opt, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use serde::{Deserialize, Serialize};

/// Most item hashes a run remembers, whatever the configuration says.
const MAX_ITEMS: usize = 256;

/// The user's current browsing run.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct BrowsingRun {
    start: i64,
    last: i64,
    events: u32,
    carted: bool,
    /// The run's first distinct item hashes, inline: most runs are short, and need no allocation.
    head: [u32; HEAD],
    head_len: u8,
    /// All distinct item hashes of the run, sorted, up to the threshold, once `head` is full.
    items: Vec<u32>,
}

impl BrowsingRun {
    /// Empties the state as `Default` would, keeping its allocations for the user's next visit.
    pub(super) fn clear(&mut self) {
        let BrowsingRun {
            start,
            last,
            events,
            carted,
            head,
            head_len,
            items,
        } = self;
        (*start, *last, *events, *carted) = (0, 0, 0, false);
        (*head, *head_len) = ([0; HEAD], 0);
        items.clear();
    }
}

/// Distinct items a run holds inline before it allocates.
const HEAD: usize = 4;

impl BrowsingRun {
    /// Adds an item hash (up to `cap` distinct ones).
    fn insert(&mut self, h: u32, cap: usize) {
        if self.items.is_empty() {
            let head = &mut self.head[..usize::from(self.head_len)];
            if head.contains(&h) {
                return;
            }
            if head.len() < HEAD {
                self.head[usize::from(self.head_len)] = h;
                self.head_len += 1;
                return;
            }
            self.items.reserve_exact(cap.max(HEAD + 1));
            self.items.extend_from_slice(&self.head);
            self.items.sort_unstable();
        }
        if self.items.len() < cap
            && let Err(at) = self.items.binary_search(&h)
        {
            self.items.insert(at, h);
        }
    }

    /// Distinct items counted (up to the cap).
    fn distinct(&self) -> usize {
        if self.items.is_empty() {
            usize::from(self.head_len)
        } else {
            self.items.len()
        }
    }

    fn clear_items(&mut self) {
        self.head_len = 0;
        self.items.clear();
    }
}

pub(super) fn breadth(
    run: &mut BrowsingRun,
    recent: &Recent,
    ev: &ClickEvent,
    cfg: &RulesConfig,
) -> Option<Finding> {
    let t = ev.event_time;
    let cap = (cfg.bot_breadth_min_items as usize).clamp(1, MAX_ITEMS);
    if run.events == 0 || t.saturating_sub(run.last) > cfg.bot_breadth_max_gap_ms {
        run.start = t;
        run.last = t;
        run.events = 0;
        run.carted = false;
        // Kept allocated: a user's next run reuses it.
        run.clear_items();
    }
    run.events += 1;
    run.last = run.last.max(t);
    if ev.event_type == EventType::AddToCart {
        run.carted = true;
    }
    if run.carted {
        // A shopper: nothing to remember until the next run.
        run.clear_items();
        return None;
    }
    if !super::bot::is_browsing(ev.event_type) {
        // Orders, logins, payments: part of the run's timing, never of its breadth.
        return None;
    }
    if let Some(h) = hash_opt(ev.item_id.as_deref()) {
        run.insert((h >> 32) as u32 ^ h as u32, cap);
    }
    let distinct = run.distinct();
    if run.events < 2 || distinct < cap {
        return None;
    }
    let mean_gap = (run.last - run.start) as f64 / f64::from(run.events - 1);
    if mean_gap > cfg.bot_breadth_max_mean_gap_ms as f64 {
        return None;
    }
    // Severity grows with the run's length past the threshold (distinct items are not counted
    // beyond it).
    let ratio = f64::from(run.events) / cap as f64;
    Some(Finding {
        alert_type: AlertType::BotCadence,
        severity: severity(Severity::Medium, ratio),
        score: ratio,
        reasons: vec![format!(
            "At least {distinct} distinct items viewed in {} events, {mean_gap:.0} ms apart on \
             average, without an add to cart (crawler breadth; thresholds: {} items, {} ms).",
            run.events, cfg.bot_breadth_min_items, cfg.bot_breadth_max_mean_gap_ms
        )],
        evidence: recent.since(run.start.saturating_sub(1)),
        window_start: run.start,
        window_end: run.last,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use clickpath_schema::EventType::*;

    /// Product views of distinct items with log-normal-ish jitter: gaps cycle through 0.5x .. 3x of `median`.
    fn jittered_views(n: i64, median: i64) -> Vec<ClickEvent> {
        let factors = [0.5, 1.0, 3.0, 0.7, 1.8, 0.4, 1.2, 2.5];
        let mut t = 0;
        (0..n)
            .map(|i| {
                t += (median as f64 * factors[i as usize % factors.len()]) as i64;
                let mut e = ev(&format!("e{i}"), ProductView, t);
                e.item_id = Some(format!("item-{i}"));
                e
            })
            .collect()
    }

    #[test]
    fn a_jittered_crawler_is_caught_by_its_breadth() {
        let alerts = of(
            &run(&mut detector(), &jittered_views(120, 2_000)),
            AlertType::BotCadence,
        );
        // One alert, re-published as the run grows (escalations keep its id).
        assert!(
            alerts.iter().all(|a| a.alert_id == alerts[0].alert_id),
            "{alerts:?}"
        );
        assert!(
            alerts[0].reasons[0].contains("crawler breadth"),
            "{:?}",
            alerts[0].reasons
        );
    }

    #[test]
    fn shoppers_who_read_or_buy_are_not_crawlers() {
        // Slow reading: 120 distinct items, 20 s apart on average.
        let slow = jittered_views(120, 15_000);
        assert!(of(&run(&mut detector(), &slow), AlertType::BotCadence).is_empty());
        // Fast browsing that adds to cart.
        let mut fast = jittered_views(120, 2_000);
        fast[10].event_type = AddToCart;
        assert!(of(&run(&mut detector(), &fast), AlertType::BotCadence).is_empty());
        // A fast but narrow session: the same 20 items over and over.
        let mut narrow = jittered_views(120, 2_000);
        for (i, e) in narrow.iter_mut().enumerate() {
            e.item_id = Some(format!("item-{}", i % 20));
        }
        assert!(of(&run(&mut detector(), &narrow), AlertType::BotCadence).is_empty());
        // A pause longer than the run gap starts a new run.
        let mut split = jittered_views(50, 2_000);
        let mut second = jittered_views(50, 2_000);
        for (i, e) in second.iter_mut().enumerate() {
            e.event_time += 10_000_000;
            e.item_id = Some(format!("other-{i}"));
        }
        split.extend(second);
        assert!(of(&run(&mut detector(), &split), AlertType::BotCadence).is_empty());
    }
}
