//! Training and evaluation of the session outlook from raw click events.

use std::collections::HashMap;

use clickpath_core::{SessionConfig, Sessionizer};
use clickpath_schema::{ClickEvent, FeatureValues, SessionSummary};
use serde::{Deserialize, Serialize};

use super::{FEATURES, OutlookModel, Segments, describe, session_features, values};
use crate::dataset::SplitConfig;
use crate::error::ModelError;
use crate::kmeans;
use crate::logistic::{LogisticConfig, LogisticModel};
use crate::metrics::{log_loss, pr_auc, roc_auc};

/// Everything [`train_outlook`] needs besides the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlookTrainConfig {
    /// Session rules (must match the sessionizer stage's).
    pub session: SessionConfig,
    /// Time-based split by session start, over the sessions with a known label. Default 70 / 15 / 15.
    pub split: SplitConfig,
    /// A session's user "returns" when their next session starts within this many hours of its end.
    /// Default 168 (7 days).
    pub horizon_hours: u32,
    /// End of the data's observation window (ms): a session's return label is known only when its
    /// horizon ends before it. Default: the latest event time, which a data set with far-future
    /// timestamps (DIGINETICA has purchases months after their session's start) pushes too late.
    pub data_end_ms: Option<i64>,
    /// Number of behavioural segments. Default 4.
    pub segments: usize,
    /// Seed of the k-means seeding (the stability check refits from seeds `restarts` further on).
    /// Default 1.
    pub seed: u64,
    /// k-means fits from different seeds, the one with the least inertia kept. Default 10.
    pub restarts: usize,
    /// The return model's hyper-parameters.
    pub logistic: LogisticConfig,
}

impl Default for OutlookTrainConfig {
    fn default() -> Self {
        OutlookTrainConfig {
            session: SessionConfig::default(),
            split: SplitConfig::default(),
            horizon_hours: 168,
            data_end_ms: None,
            segments: 4,
            seed: 1,
            restarts: 10,
            logistic: LogisticConfig::default(),
        }
    }
}

/// One segment on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentReport {
    /// Segment number (as published).
    pub segment: usize,
    /// Its one-line description.
    pub description: String,
    /// Test sessions in it.
    pub sessions: usize,
    /// Their share of the test sessions.
    pub share: f64,
    /// The share of them whose user returned within the horizon.
    pub return_rate: f64,
}

/// How the outlook did on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlookMetrics {
    /// Closed sessions built from the events.
    pub sessions: usize,
    /// Of them without a known label (their horizon reaches past the last event): left out.
    pub censored: usize,
    /// Labelled sessions in the training, validation and test splits.
    pub split_sessions: [usize; 3],
    /// Test sessions whose user returned within the horizon.
    pub test_returns: usize,
    /// Return ROC-AUC on the test split.
    pub return_roc_auc: Option<f64>,
    /// Return PR-AUC (average precision) on the test split.
    pub return_pr_auc: Option<f64>,
    /// Return log loss on the test split.
    pub return_log_loss: Option<f64>,
    /// Segments on the test split.
    pub segments: Vec<SegmentReport>,
    /// Adjusted Rand index between the test split's segments and those of a refit on a bootstrap
    /// resample of the training sessions, from other seeds: 1 when retraining reproduces the same
    /// segmentation.
    pub stability_ari: Option<f64>,
}

/// A trained outlook and how it did.
#[derive(Debug, Clone)]
pub struct OutlookTrainReport {
    /// The model (its version is set by [`super::save_outlook`]'s hash; empty until then).
    pub model: OutlookModel,
    /// Test-split figures.
    pub metrics: OutlookMetrics,
    /// The configuration used.
    pub config: OutlookTrainConfig,
}

/// The closed sessions of `events`, built by the sessionizer itself (the same code the stage runs),
/// each session once at its last revision, merged-away ones dropped.
pub fn closed_sessions(events: &[ClickEvent], cfg: &SessionConfig) -> Vec<SessionSummary> {
    let mut order: Vec<&ClickEvent> = events.iter().collect();
    order.sort_by_key(|e| e.event_time);
    let mut sessionizer = Sessionizer::new(cfg.clone());
    let mut out = Vec::new();
    for ev in order {
        out.extend(sessionizer.on_event(ev));
    }
    out.extend(sessionizer.flush());
    let mut latest: HashMap<String, SessionSummary> = HashMap::new();
    let mut superseded = std::collections::HashSet::new();
    for s in out {
        superseded.extend(s.superseded_session_ids.iter().cloned());
        match latest.get(&s.session_id) {
            Some(old) if old.revision >= s.revision => {}
            _ => {
                latest.insert(s.session_id.clone(), s);
            }
        }
    }
    let mut sessions: Vec<SessionSummary> = latest
        .into_values()
        .filter(|s| !superseded.contains(&s.session_id))
        .collect();
    sessions.sort_by(|a, b| (a.start_time, &a.session_id).cmp(&(b.start_time, &b.session_id)));
    sessions
}

/// Per session (same order): whether its user's next session starts within `horizon_ms` of its end;
/// `None` when that is unknown (no next session, and the horizon reaches past `data_end`). A "next
/// session" starts at least `gap_ms` after the end: one starting sooner is the same visit cut at the
/// session length limit (`max_length`), not a return.
fn return_labels(
    sessions: &[SessionSummary],
    horizon_ms: i64,
    gap_ms: i64,
    data_end: i64,
) -> Vec<Option<bool>> {
    let mut by_user: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in sessions.iter().enumerate() {
        by_user.entry(s.user_id.as_str()).or_default().push(i);
    }
    let mut labels = vec![None; sessions.len()];
    for list in by_user.values() {
        for (k, &i) in list.iter().enumerate() {
            let end = sessions[i].end_time;
            let next = list[k + 1..]
                .iter()
                .map(|&j| sessions[j].start_time)
                .find(|&t| t >= end.saturating_add(gap_ms));
            // Unknown unless the whole horizon is inside the data: keeping only the sessions whose
            // return was seen near the end would bias the label towards returns.
            if end.saturating_add(horizon_ms) <= data_end {
                labels[i] = Some(next.is_some_and(|t| t - end <= horizon_ms));
            }
        }
    }
    labels
}

fn labeled<'v>(
    values: &'v [FeatureValues],
    part: &[(&SessionSummary, bool)],
) -> Vec<(&'v FeatureValues, bool)> {
    values.iter().zip(part.iter().map(|(_, y)| *y)).collect()
}

fn moments(rows: &[[f64; FEATURES.len()]]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len().max(1) as f64;
    let means: Vec<f64> = (0..FEATURES.len())
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let stds = (0..FEATURES.len())
        .map(|j| {
            let v = rows.iter().map(|r| (r[j] - means[j]).powi(2)).sum::<f64>() / n;
            if v > 1e-12 { v.sqrt() } else { 1.0 }
        })
        .collect();
    (means, stds)
}

/// Builds the sessions of `events`, labels each with its user's return within the horizon, splits
/// the labelled ones by start time, fits the return model (early-stopped on validation) and the
/// segments on the training split, and measures both on the test split.
pub fn train_outlook(
    events: &[ClickEvent],
    cfg: &OutlookTrainConfig,
) -> Result<OutlookTrainReport, ModelError> {
    cfg.split.validate()?;
    if cfg.segments == 0 || cfg.horizon_hours == 0 {
        return Err(ModelError::InvalidConfig(
            "outlook segments and horizon_hours must be at least 1".into(),
        ));
    }
    let sessions = closed_sessions(events, &cfg.session);
    let data_end = cfg
        .data_end_ms
        .unwrap_or_else(|| events.iter().map(|e| e.event_time).max().unwrap_or(0));
    let horizon_ms = i64::from(cfg.horizon_hours) * 3_600_000;
    let labels = return_labels(&sessions, horizon_ms, cfg.session.gap_ms, data_end);
    let labelled: Vec<(&SessionSummary, bool)> = sessions
        .iter()
        .zip(&labels)
        .filter_map(|(s, y)| y.map(|y| (s, y)))
        .collect();
    let n = labelled.len();
    let n_train = (n as f64 * cfg.split.train_fraction).round() as usize;
    let n_valid = (n as f64 * cfg.split.validation_fraction).round() as usize;
    let (train, rest) = labelled.split_at(n_train.min(n));
    let (validation, test) = rest.split_at(n_valid.min(rest.len()));
    if train.is_empty() || test.is_empty() {
        return Err(ModelError::InsufficientData(format!(
            "{} sessions, {n} with a known {}-hour return label: need training and test sessions \
             (a shorter horizon or more days of data)",
            sessions.len(),
            cfg.horizon_hours
        )));
    }
    let features = |part: &[(&SessionSummary, bool)]| -> Vec<[f64; FEATURES.len()]> {
        part.iter().map(|(s, _)| session_features(s)).collect()
    };
    let (x_train, x_valid, x_test) = (features(train), features(validation), features(test));
    let names: Vec<String> = FEATURES.iter().map(|s| s.to_string()).collect();
    let model_names = super::feature_names();
    let as_values = |xs: &[[f64; FEATURES.len()]]| -> Vec<FeatureValues> {
        xs.iter().map(|x| values(&model_names, x)).collect()
    };
    let (v_train, v_valid) = (as_values(&x_train), as_values(&x_valid));
    let (returns, _) = LogisticModel::fit(
        &names,
        &labeled(&v_train, train),
        &labeled(&v_valid, validation),
        &cfg.logistic,
    )?;

    let (means, stds) = moments(&x_train);
    let mut segments = Segments {
        means,
        stds,
        centroids: Vec::new(),
        descriptions: Vec::new(),
    };
    let z_train: Vec<Vec<f64>> = x_train.iter().map(|x| segments.standardise(x)).collect();
    segments.centroids = kmeans::fit_best(&z_train, cfg.segments, cfg.seed, cfg.restarts);
    segments.descriptions = segments.centroids.iter().map(|c| describe(c)).collect();
    // The retrain the stability figure compares with: a bootstrap resample of the training sessions
    // (other data, as a retrain on next month's would see) and seeds never used above.
    let other_seeds = cfg.seed.wrapping_add(cfg.restarts.max(1) as u64);
    let mut rng = crate::logistic::SplitMix64(other_seeds);
    let resample: Vec<Vec<f64>> = (0..z_train.len())
        .map(|_| z_train[(rng.next_u64() % z_train.len() as u64) as usize].clone())
        .collect();
    let refit = Segments {
        centroids: kmeans::fit_best(&resample, cfg.segments, other_seeds, cfg.restarts),
        ..segments.clone()
    };

    let model = OutlookModel::new(String::new(), cfg.horizon_hours, returns, segments);
    let y_test: Vec<bool> = test.iter().map(|(_, y)| *y).collect();
    let p_test: Vec<f64> = x_test.iter().map(|x| model.return_probability(x)).collect();
    let assigned: Vec<usize> = x_test.iter().map(|x| model.segments.assign(x)).collect();
    let reassigned: Vec<usize> = x_test.iter().map(|x| refit.assign(x)).collect();
    let segment_reports = (0..model.segments.centroids.len())
        .map(|k| {
            let members: Vec<bool> = assigned
                .iter()
                .zip(&y_test)
                .filter(|(a, _)| **a == k)
                .map(|(_, y)| *y)
                .collect();
            SegmentReport {
                segment: k,
                description: model.segments.descriptions[k].clone(),
                sessions: members.len(),
                share: members.len() as f64 / test.len() as f64,
                return_rate: members.iter().filter(|y| **y).count() as f64
                    / members.len().max(1) as f64,
            }
        })
        .collect();
    let metrics = OutlookMetrics {
        sessions: sessions.len(),
        censored: sessions.len() - n,
        split_sessions: [train.len(), validation.len(), test.len()],
        test_returns: y_test.iter().filter(|y| **y).count(),
        return_roc_auc: roc_auc(&p_test, &y_test).ok(),
        return_pr_auc: pr_auc(&p_test, &y_test).ok(),
        return_log_loss: log_loss(&p_test, &y_test).ok(),
        segments: segment_reports,
        stability_ari: kmeans::adjusted_rand_index(&assigned, &reassigned),
    };
    Ok(OutlookTrainReport {
        model,
        metrics,
        config: cfg.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::{EventType, FunnelStage};

    fn summary(user: &str, start: i64, end: i64) -> SessionSummary {
        SessionSummary {
            session_id: format!("{user}:{start}"),
            user_id: user.into(),
            start_time: start,
            end_time: end,
            event_count: 3,
            path: vec![EventType::ProductView],
            furthest_stage: FunnelStage::ProductView,
            purchased: false,
            order_value: 0.0,
            first_event_id: "a".into(),
            last_event_id: "b".into(),
            close_reason: "gap".into(),
            revision: 0,
            superseded_session_ids: Vec::new(),
            user_sessions: 1,
            outlook: None,
        }
    }

    /// Users over twelve days: buyers (even users) view, add to cart and buy, then come back within
    /// hours; browsers view twice and come back only after three days. A 24-hour horizon separates them.
    fn shop(users: usize) -> Vec<ClickEvent> {
        const HOUR: i64 = 3_600_000;
        let mut out = Vec::new();
        for u in 0..users {
            let user = format!("u{u:03}");
            let buyer = u % 2 == 0;
            let mut t = 1_700_000_000_000 + (u as i64 % 24) * HOUR;
            let mut n = 0;
            while t < 1_700_000_000_000 + 12 * 24 * HOUR {
                let path: &[EventType] = if buyer {
                    &[
                        EventType::ProductView,
                        EventType::AddToCart,
                        EventType::Purchase,
                    ]
                } else {
                    &[EventType::PageView, EventType::ProductView]
                };
                for (i, kind) in path.iter().enumerate() {
                    let mut ev =
                        ClickEvent::new(format!("{user}-{n}"), &user, *kind, t + i as i64 * 60_000);
                    if *kind == EventType::Purchase {
                        ev.order_value = Some(30.0);
                    }
                    out.push(ev);
                    n += 1;
                }
                t += if buyer { 5 * HOUR } else { 72 * HOUR };
            }
        }
        out
    }

    #[test]
    fn the_outlook_learns_who_returns_and_segments_buyers_apart() {
        let cfg = OutlookTrainConfig {
            horizon_hours: 24,
            segments: 2,
            ..OutlookTrainConfig::default()
        };
        let mut report = train_outlook(&shop(120), &cfg).unwrap();
        let m = &report.metrics;
        assert!(
            m.censored > 0,
            "the last day's sessions have no label: {m:?}"
        );
        assert!(m.return_roc_auc.unwrap() > 0.95, "{m:?}");
        assert_eq!(m.stability_ari, Some(1.0), "{m:?}");
        // One segment is the buyers: they all return; the other never does.
        let rates: Vec<f64> = m.segments.iter().map(|s| s.return_rate).collect();
        assert!(rates.contains(&1.0) && rates.contains(&0.0), "{m:?}");
        // Buyers' sessions are most sessions (they come back every 5 hours), so the browsers' segment
        // is the one away from the average.
        let browsers = m.segments.iter().find(|s| s.return_rate == 0.0).unwrap();
        assert!(browsers.description.contains("non-buyers"), "{browsers:?}");

        // The artifact round-trips to the same outlook; a changed byte is refused.
        let dir = tempfile::tempdir().unwrap();
        let meta = super::super::save_outlook(&mut report, dir.path()).unwrap();
        assert!(meta.version.starts_with("outlook-"));
        let (loaded, _) = super::super::load_outlook(dir.path()).unwrap();
        let session = closed_sessions(&shop(2), &cfg.session).remove(0);
        let want = report.model.assess(&session);
        assert_eq!(loaded.assess(&session), want);
        assert_eq!(want.model_version, meta.version);
        assert_eq!(want.return_horizon_hours, 24);
        let path = dir.path().join(super::super::artifact::MODEL_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"horizon_hours\": 24", "\"horizon_hours\": 25");
        std::fs::write(&path, text).unwrap();
        let err = super::super::load_outlook(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("modified or is corrupted"), "{err}");
    }

    #[test]
    fn too_little_data_for_the_horizon_is_a_clear_error() {
        let cfg = OutlookTrainConfig {
            horizon_hours: 24 * 365,
            ..OutlookTrainConfig::default()
        };
        let err = train_outlook(&shop(10), &cfg).unwrap_err().to_string();
        assert!(err.contains("shorter horizon"), "{err}");
    }

    #[test]
    fn a_return_is_the_next_session_within_the_horizon_and_unknown_near_the_end() {
        let h = 100;
        let sessions = vec![
            summary("a", 0, 10),    // next at 50: returns
            summary("b", 0, 10),    // next at 200: does not
            summary("a", 50, 60),   // no next, 60 + 100 <= 1000: does not
            summary("b", 200, 210), // no next
            summary("c", 950, 960), // horizon past the end: unknown
            summary("d", 940, 950), // returns at 990, but its horizon reaches past the end: unknown
            summary("d", 990, 995),
            summary("e", 0, 100), // cut at the length limit: its continuation is no return
            summary("e", 102, 150),
        ];
        let labels = return_labels(&sessions, h, 5, 1_000);
        assert_eq!(
            labels,
            vec![
                Some(true),
                Some(false),
                Some(false),
                Some(false),
                None,
                None,
                None,
                Some(false),
                Some(false)
            ]
        );
    }
}
