//! Bot cadence: machine-regular inter-event times, no dwell, crawler-like breadth of items. Only
//! browsing events count ([`is_browsing`]): a crawler reads pages, and a buyer placing many orders in
//! a row (a B2B bulk order, DIGINETICA's multi-item purchases) is not crawling.

use super::{Finding, Recent, RulesConfig, hash_opt, severity};
use clickpath_schema::{AlertType, ClickEvent, EventType, Severity};
use serde::{Deserialize, Serialize};

/// Most events the cadence window may hold, whatever the configuration says.
const MAX_WINDOW: usize = 256;

/// MAD to sigma for normal data.
const MAD_SCALE: f64 = 1.4826;

/// A user's last events (time, item hash) in event-time order, and the current regular run.
///
/// A `Vec`, not a ring: the scans below run over one slice (over a `VecDeque` they were a tenth
/// of the detector's time). It holds up to twice the window, and drops its oldest events only
/// when full, so each event is moved once rather than the whole window at every event (that
/// `drain` was 4 % of the detector's time). Only the window is examined and written to a
/// changelog; it serialises as the `VecDeque` did.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Cadence {
    events: Vec<(i64, Option<u64>)>,
    /// Consecutive events at which the window was regular, broad and dwell-free.
    run: u32,
    last_cv: Option<f64>,
    /// Events in the window (the configuration's, clamped); 0 until the first event, when the
    /// whole of `events` counts.
    #[serde(skip)]
    window: usize,
}

impl Serialize for Cadence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Cadence", 3)?;
        st.serialize_field("events", self.window())?;
        st.serialize_field("run", &self.run)?;
        st.serialize_field("last_cv", &self.last_cv)?;
        st.end()
    }
}

impl Cadence {
    /// Empties the state as `Default` would, keeping its allocations for the user's next visit.
    pub(super) fn clear(&mut self) {
        let Cadence {
            events,
            run,
            last_cv,
            window,
        } = self;
        events.clear();
        (*run, *last_cv, *window) = (0, None, 0);
    }

    /// Robust coefficient of variation of the gaps at the last event, when the window was full
    /// and at least half its gaps were short (otherwise not computed: clearly not a bot).
    pub(super) fn last_cv(&self) -> Option<f64> {
        self.last_cv
    }

    /// The window's events, oldest first.
    fn window(&self) -> &[(i64, Option<u64>)] {
        let keep = if self.window == 0 {
            self.events.len()
        } else {
            self.window
        };
        &self.events[self.events.len().saturating_sub(keep)..]
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_unstable_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Page views, product views and searches: what a crawler does.
pub(super) fn is_browsing(t: EventType) -> bool {
    matches!(
        t,
        EventType::PageView | EventType::ProductView | EventType::Search
    )
}

pub(super) fn cadence(
    state: &mut Cadence,
    recent: &Recent,
    ev: &ClickEvent,
    cfg: &RulesConfig,
) -> Option<Finding> {
    if !is_browsing(ev.event_type) {
        return None;
    }
    let n = (cfg.bot_min_events as usize).clamp(3, MAX_WINDOW);
    let item = hash_opt(ev.item_id.as_deref());
    // Insert in event-time order: a reordered event must not look like a long and a short gap.
    let events = &mut state.events;
    if events.last().is_none_or(|&(t, _)| t <= ev.event_time) {
        events.push((ev.event_time, item));
    } else {
        let at = events
            .iter()
            .rposition(|&(t, _)| t <= ev.event_time)
            .map_or(0, |i| i + 1);
        events.insert(at, (ev.event_time, item));
    }
    if events.len() > 2 * n {
        events.drain(..events.len() - n);
    }
    state.window = n;
    state.last_cv = None;
    // The field, not `state.window()`: the run and the CV are written while it is borrowed.
    let window = &state.events[state.events.len().saturating_sub(n)..];
    if window.len() < n {
        return None;
    }
    // Cheap test first (no sorting): the median gap is at most the limit exactly when at least
    // half of the gaps are. Human traffic (median dwell over 10 s) stops here.
    let max_gap = cfg.bot_max_median_gap_ms;
    let short = window
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 <= max_gap)
        .count();
    if 2 * short < n - 1 {
        state.run = 0;
        return None;
    }
    // Scratch space on the stack: no allocation per event.
    let mut gaps = [0f64; MAX_WINDOW];
    let gaps = &mut gaps[..n - 1];
    for (g, w) in gaps.iter_mut().zip(window.windows(2)) {
        *g = (w[1].0 - w[0].0) as f64;
    }
    let med = median(gaps);
    for g in gaps.iter_mut() {
        *g = (*g - med).abs();
    }
    let mad = median(gaps);
    // A zero median (events in the same millisecond) is as regular as it gets.
    let cv = if med > 0.0 {
        MAD_SCALE * mad / med
    } else {
        0.0
    };
    state.last_cv = Some(cv);
    let mut items = [0u64; MAX_WINDOW];
    let mut k = 0;
    for h in window.iter().filter_map(|e| e.1) {
        items[k] = h;
        k += 1;
    }
    let items = &mut items[..k];
    items.sort_unstable();
    let distinct = if k == 0 {
        0
    } else {
        1 + items.windows(2).filter(|w| w[0] != w[1]).count()
    };
    let regular = cv <= cfg.bot_max_cv;
    let no_dwell = med <= max_gap as f64;
    let broad = distinct >= cfg.bot_min_distinct_items as usize;
    if !(regular && no_dwell && broad) {
        state.run = 0;
        return None;
    }
    state.run = state.run.saturating_add(1);
    // The run grows with every further regular event: 1x at the first full window, 1.5x after
    // half a window more, and so on.
    let ratio = (n as f64 - 1.0 + f64::from(state.run)) / n as f64;
    let first = window.first().map_or(ev.event_time, |e| e.0);
    let last = window.last().map_or(ev.event_time, |e| e.0);
    Some(Finding {
        alert_type: AlertType::BotCadence,
        severity: severity(Severity::Medium, ratio),
        score: ratio,
        reasons: vec![format!(
            "{} events {:.0} ms apart (median) with a robust coefficient of variation of {cv:.3} \
             (limit {}) over {} distinct items; {} regular events in a row.",
            n,
            med,
            cfg.bot_max_cv,
            distinct,
            n as u32 - 1 + state.run
        )],
        evidence: recent.since(first.saturating_sub(1)),
        window_start: first,
        window_end: last,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::*;
    use clickpath_schema::EventType::*;

    /// `n` product views `gap(i)` ms apart, item `item(i)`.
    fn views(n: i64, gap: impl Fn(i64) -> i64, item: impl Fn(i64) -> String) -> Vec<ClickEvent> {
        let mut t = 1_000;
        (0..n)
            .map(|i| {
                t += gap(i);
                let mut e = ev(&format!("e{i}"), ProductView, t);
                e.item_id = Some(item(i));
                e
            })
            .collect()
    }

    /// A small deterministic jitter in `[-k, k]`.
    fn jitter(i: i64, k: i64) -> i64 {
        (i * 7919 % (2 * k + 1)) - k
    }

    #[test]
    fn crawler_is_flagged_at_the_window() {
        let crawl = views(60, |i| 1_200 + jitter(i, 3), |i| format!("item-{i}"));
        let mut d = detector();
        let alerts = of(&run(&mut d, &crawl), AlertType::BotCadence);
        let first = &alerts[0];
        assert_eq!(
            first.window_end, crawl[19].event_time,
            "fires at the 20th event"
        );
        assert_eq!(first.severity, Severity::Medium);
        assert!(
            first.reasons[0].contains("20 distinct items"),
            "{:?}",
            first.reasons
        );
        // It escalates as the run grows (1.5x at 30 regular events), with the same id.
        assert!(alerts.len() >= 2);
        assert_eq!(alerts[1].alert_id, first.alert_id);
        assert_eq!(alerts[1].severity, Severity::High);
        assert_eq!(alerts[1].window_end, crawl[29].event_time);
    }

    #[test]
    fn only_the_window_is_kept_in_state_and_judged_after_a_restore() {
        use super::super::bot::{Cadence, cadence};
        let crawl = views(70, |i| 1_200 + jitter(i, 3), |i| format!("item-{i}"));
        let cfg = RulesConfig::default();
        let (mut live, recent) = (Cadence::default(), Recent::default());
        let (mut restored, mut compared) = (None, 0);
        for (i, e) in crawl.iter().enumerate() {
            let a = cadence(&mut live, &recent, e, &cfg).map(|f| f.reasons);
            if let Some(r) = restored.as_mut() {
                assert_eq!(
                    cadence(r, &recent, e, &cfg).map(|f| f.reasons),
                    a,
                    "event {i}"
                );
                compared += usize::from(a.is_some());
            }
            if i == 44 {
                // Past twice the window once: the vector holds more than the window.
                assert!(live.events.len() > cfg.bot_min_events as usize);
                let json = serde_json::to_value(&live).unwrap();
                assert_eq!(
                    json["events"].as_array().unwrap().len(),
                    cfg.bot_min_events as usize
                );
                restored = Some(serde_json::from_value::<Cadence>(json).unwrap());
            }
        }
        assert!(live.events.len() <= 2 * cfg.bot_min_events as usize);
        // The restored window trimmed and refilled too: findings on 25 events after the restore.
        assert_eq!(compared, 25);
    }

    #[test]
    fn one_reordered_event_does_not_hide_a_crawler() {
        let mut crawl = views(25, |_| 1_000, |i| format!("item-{i}"));
        crawl.swap(10, 11);
        let alerts = of(&run(&mut detector(), &crawl), AlertType::BotCadence);
        assert_eq!(alerts.len(), 1);
    }

    #[test]
    fn a_bulk_order_is_not_a_crawler() {
        // 40 purchases of distinct items 1 s apart (a B2B order entered line by line).
        let mut bulk = views(40, |_| 1_000, |i| format!("i{i}"));
        for e in &mut bulk {
            e.event_type = Purchase;
        }
        assert!(of(&run(&mut detector(), &bulk), AlertType::BotCadence).is_empty());
    }

    #[test]
    fn near_misses_do_not_fire() {
        // Human dwell: log-normal-like spread of gaps (here alternating 4 s .. 40 s).
        let human = views(
            60,
            |i| [4_000, 12_000, 40_000, 7_000][i as usize % 4],
            |i| format!("i{i}"),
        );
        // Regular and fast but narrow: a page polling the same two items.
        let poll = views(60, |_| 1_000, |i| format!("i{}", i % 2));
        // Regular and broad but slow: a reader who spends 10 s on each page.
        let slow = views(60, |_| 10_000, |i| format!("i{i}"));
        // Fast and broad but irregular (gaps 0.5 .. 2.9 s); 40 items, below the breadth rule's 60
        // (longer runs like this are crawlers with jitter: breadth.rs).
        let erratic = views(40, |i| 500 + (i * 7919 % 2_400), |i| format!("i{i}"));
        // Only 19 events: not enough evidence yet.
        let short = views(19, |_| 1_000, |i| format!("i{i}"));
        for (name, events) in [
            ("human", human),
            ("poll", poll),
            ("slow", slow),
            ("erratic", erratic),
            ("short", short),
        ] {
            let alerts = of(&run(&mut detector(), &events), AlertType::BotCadence);
            assert!(alerts.is_empty(), "{name}: {alerts:?}");
        }
    }
}
