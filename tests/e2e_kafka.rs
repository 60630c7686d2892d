//! End to end on the real broker: generated events in, every stage running, outputs checked against
//! the pure `core` logic on the same events.
//!
//! Needs `CLICKPATH_TEST_BROKERS` (set by `make test`); skips without it unless `CLICKPATH_REQUIRE_BROKER=1`.

use clickpath_cli::collect::Collector;
use clickpath_cli::generate::send_generated;
use clickpath_cli::pipeline::{join_stages, spawn_stages};
use clickpath_cli::produce::EventProducer;
use clickpath_core::dedupe::Deduper;
use clickpath_core::session::Sessionizer;
use clickpath_core::validate::validate_and_normalise;
use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_runtime::config::Guarantee;
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, SessionSummary};
use clickpath_stages::StageName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A minimal HTTP/1.0 GET against the stage's endpoint: status code and body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The parts of a session that must match (the close reason depends on when the stream stopped).
fn session_key(s: &SessionSummary) -> (String, i64, i64, i32, String, bool, i64) {
    (
        s.user_id.clone(),
        s.start_time,
        s.end_time,
        s.event_count,
        format!("{:?}", s.path),
        s.purchased,
        s.user_sessions,
    )
}

#[test]
fn pipeline_on_real_broker_matches_core_logic() {
    run_pipeline(Guarantee::AtLeastOnce, None);
}

#[test]
fn exactly_once_pipeline_on_real_broker_matches_core_logic() {
    run_pipeline(Guarantee::ExactlyOnce, None);
}

/// The shipped GRU example behind the scorer: hidden state per user in the changelog, micro-batches,
/// predicted paths and decision factors, exactly once; and the shipped session outlook behind the
/// sessionizer.
#[test]
fn gru_scorer_pipeline_on_real_broker() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/gru-example");
    run_pipeline(Guarantee::ExactlyOnce, Some(dir));
}

const OUTLOOK_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/outlook-example");

fn run_pipeline(guarantee: Guarantee, model_dir: Option<&str>) {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let mut cfg = clickpath_testkit::test_config(
        &brokers,
        if model_dir.is_some() {
            "e2e-gru"
        } else {
            "e2e"
        },
    );
    cfg.processing.guarantee = guarantee;
    if let Some(dir) = model_dir {
        cfg.scorer.model_dir = Some(dir.into());
        cfg.scorer.explain_every = 5;
        cfg.outlook.model_dir = Some(OUTLOOK_EXAMPLE.into());
    }
    cfg.kafka.instance_id = "e2e-1".into();
    // Multi-threaded: the HTTP server keeps running on it after block_on returns.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))
        .unwrap();

    let gen_cfg = GeneratorConfig {
        seed: 7,
        sessions: 300,
        ..GeneratorConfig::default()
    };
    let items: Vec<Generated> = Generator::new(gen_cfg).unwrap().collect();
    let valid: Vec<ClickEvent> = items
        .iter()
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e.clone()),
            Generated::Malformed(_) => None,
        })
        .collect();
    let malformed_keys: Vec<String> = items
        .iter()
        .filter_map(|g| match g {
            Generated::Malformed(m) => Some(m.key.clone()),
            Generated::Event(_) => None,
        })
        .collect();
    assert!(
        !malformed_keys.is_empty(),
        "the generator injects malformed records by default"
    );

    let env = cfg.runner_env(Codec::embedded());
    let stages = spawn_stages(&StageName::ALL, &cfg, &env, true).unwrap();
    let http = rt
        .block_on(clickpath_runtime::http::serve_env(&env))
        .unwrap();
    let mut producer = EventProducer::new(&cfg, env.codec.clone(), &cfg.topics.raw, 0.0).unwrap();
    for item in &items {
        send_generated(&mut producer, item).unwrap();
    }
    producer.flush().unwrap();
    let produced = producer.sent();

    let t = cfg.topics.clone();
    let m = env.metrics.clone();
    let caught_up = || {
        let clean = m.records_out_total("cleaning", &t.clean);
        m.records_in_total("cleaning", &t.raw) >= produced
            && m.records_in_total("sessionizer", &t.clean) >= clean
            && m.records_in_total("windower", &t.clean) >= clean
            && m.records_in_total("detector", &t.clean) >= clean
            && m.records_in_total("scorer", &t.features)
                >= m.records_out_total("windower", &t.features)
            && m.records_in_total("detector", &t.predictions)
                >= m.records_out_total("scorer", &t.predictions)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !caught_up() && Instant::now() < deadline {
        if env.shutdown.is_triggered() {
            // A stage failed and stopped the pipeline: report its error rather than a timeout.
            join_stages(stages).unwrap();
            panic!("a stage stopped the pipeline without an error");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        caught_up(),
        "pipeline did not drain within 120 s:\n{}",
        env.metrics.encode()
    );
    // The sessionizer answers path queries for users it owns (all partitions here).
    let user = &valid.last().unwrap().user_id;
    let (code, body) = http_get(http, &format!("/v1/users/{user}/path"));
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["user_id"], user.as_str());
    assert!(
        view["lifetime_sessions"].as_u64().unwrap() + u64::from(view["session_open"] == true) >= 1,
        "{view}"
    );
    assert_eq!(http_get(http, "/v1/users/nobody-at-all/path").0, 404);
    // The combined view carries the scorer's latest prediction for the user.
    let (code, body) = http_get(http, &format!("/v1/users/{user}"));
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let version = view["prediction"]["model_version"]
        .as_str()
        .unwrap_or_default();
    assert!(
        version.starts_with(if model_dir.is_some() {
            "gru-"
        } else {
            "baseline-"
        }),
        "{view}"
    );

    env.shutdown.trigger();
    join_stages(stages).unwrap();

    // The reference: the same core logic, run directly over the same events in the same order.
    let now = clickpath_runtime::runner::now_ms();
    let mut dedupe = Deduper::new(cfg.cleaning.dedupe_window_ms, cfg.cleaning.dedupe_max_ids);
    let mut sessionizer = Sessionizer::new(cfg.sessionizer.clone());
    let mut expected_sessions = Vec::new();
    let mut clean_ids = BTreeSet::new();
    let mut invalid = 0usize;
    for ev in &valid {
        let mut ev = ev.clone();
        if validate_and_normalise(&mut ev, &cfg.cleaning.validation, now).is_err() {
            invalid += 1;
            continue;
        }
        if dedupe.is_duplicate(&ev.event_id, ev.event_time) {
            continue;
        }
        clean_ids.insert(ev.event_id.clone());
        expected_sessions.extend(sessionizer.on_event(&ev));
    }
    expected_sessions.extend(sessionizer.flush());

    let mut collector = Collector::new(&cfg, env.codec.clone()).unwrap();
    let want_dead = malformed_keys.len();
    let want_predictions = clean_ids.len();
    let want_sessions = expected_sessions.len();
    collector.poll_until(Duration::from_secs(60), |c| {
        c.sessions.len() >= want_sessions
            && c.predictions.len() >= want_predictions
            && c.dead_letters.len() >= want_dead
    });
    collector.poll_for(Duration::from_millis(500));
    let got = &collector.collected;
    assert_eq!(got.undecodable, 0);

    // Sessions equal the pure sessionizer's.
    let mut a: Vec<_> = got.sessions.iter().map(session_key).collect();
    let mut b: Vec<_> = expected_sessions.iter().map(session_key).collect();
    a.sort();
    b.sort();
    let only_pipeline: Vec<_> = a.iter().filter(|s| !b.contains(s)).collect();
    let only_reference: Vec<_> = b.iter().filter(|s| !a.contains(s)).collect();
    assert!(
        only_pipeline.is_empty() && only_reference.is_empty() && a.len() == b.len(),
        "sessions differ from the core sessionizer's ({} vs {}):\nonly in pipeline: {only_pipeline:#?}\nonly in reference: {only_reference:#?}",
        a.len(),
        b.len()
    );

    // One prediction per clean event, each for a real input event.
    let predicted: BTreeSet<String> = got.predictions.iter().map(|p| p.event_id.clone()).collect();
    assert_eq!(
        got.predictions.len(),
        clean_ids.len(),
        "one prediction per clean event"
    );
    assert_eq!(
        predicted, clean_ids,
        "predictions refer to exactly the clean input events"
    );
    for p in &got.predictions {
        assert!((0.0..=1.0).contains(&p.purchase_probability));
    }
    // Every session carries the outlook model's assessment of exactly what was published.
    let outlook = model_dir.map(|_| {
        clickpath_model::outlook::load_outlook(std::path::Path::new(OUTLOOK_EXAMPLE))
            .unwrap()
            .0
    });
    for s in &got.sessions {
        let bare = SessionSummary {
            outlook: None,
            ..s.clone()
        };
        assert_eq!(
            s.outlook,
            outlook.as_ref().map(|m| m.assess(&bare)),
            "{s:?}"
        );
    }
    if model_dir.is_some() {
        assert!(
            got.predictions
                .iter()
                .all(|p| p.model_version.starts_with("gru-"))
        );
        assert!(got.predictions.iter().all(|p| p.predicted_path.len() == 3));
        let explained = got
            .predictions
            .iter()
            .filter(|p| !p.factors.is_empty())
            .count();
        assert!(
            explained * 5 >= got.predictions.len() - 5,
            "every 5th prediction carries factors: {explained} of {}",
            got.predictions.len()
        );
        // The scorer scored in micro-batches and reported them.
        let metrics = env.metrics.encode();
        let batches: f64 = metrics
            .lines()
            .find(|l| l.starts_with("clickpath_model_batch_events_count{stage=\"scorer\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(batches > 0.0, "no scorer micro-batch observed:\n{metrics}");
        // Its per-user hidden states went to its changelog, one (latest) value per user.
        let changelog = clickpath_runtime::changelog::changelog_topic(&cfg, "scorer");
        let read = clickpath_report::topic::read_topic(
            &cfg,
            &changelog,
            Default::default(),
            Duration::from_secs(30),
        )
        .unwrap();
        let users: BTreeSet<&str> = valid.iter().map(|e| e.user_id.as_str()).collect();
        assert!(
            !read.records.is_empty() && read.records.len() >= users.len() / 2,
            "scorer changelog holds {} records for {} users",
            read.records.len(),
            users.len()
        );
    }

    // Alerts cite real input events.
    let all_ids: BTreeSet<&str> = valid.iter().map(|e| e.event_id.as_str()).collect();
    for alert in &got.alerts {
        for id in &alert.evidence_event_ids {
            assert!(
                all_ids.contains(id.as_str()),
                "alert {} cites unknown event {id}",
                alert.alert_id
            );
        }
    }

    // The dead-letter topic holds exactly the injected malformed records.
    assert_eq!(
        invalid, 0,
        "semantic malformed records are labelled as malformed, not plain events"
    );
    let mut dead_keys: Vec<String> = got
        .dead_letters
        .iter()
        .map(|d| String::from_utf8_lossy(d.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let mut want_keys = malformed_keys.clone();
    dead_keys.sort();
    want_keys.sort();
    assert_eq!(
        dead_keys, want_keys,
        "dead letters are exactly the injected malformed records"
    );
    let kinds: BTreeMap<&str, usize> = got.dead_letters.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.error_kind.as_str()).or_default() += 1;
        m
    });
    assert!(
        kinds.len() >= 2,
        "several kinds of bad input were exercised: {kinds:?}"
    );
}
