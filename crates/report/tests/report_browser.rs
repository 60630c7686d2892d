//! Opens `clickpath report` pages in headless Chromium: no console or script errors, every
//! chart drew an SVG of non-zero size, and a screenshot is saved under `target/tmp/report-browser/`.
//!
//! Chromium comes from `scripts/chromium.sh` (Debian's `chromium`). Without it the test skips
//! with a message, unless `CLICKPATH_REQUIRE_BROWSER=1`. `CLICKPATH_CHROMIUM` names another binary.

use clickpath_core::analytics::{AnalysisSpec, analyse};
use clickpath_generator::{Generated, Generator, GeneratorConfig, TruthRecord};
use clickpath_report::{Extras, Scored, read_dataset, render_html};
use clickpath_schema::{ClickEvent, FraudAlert, Severity};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CLICKPATH_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var("CLICKPATH_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "CLICKPATH_REQUIRE_BROWSER=1 but {} is missing; run scripts/chromium.sh",
        path.display()
    );
    eprintln!(
        "skipping: {} is missing (run scripts/chromium.sh, or set CLICKPATH_REQUIRE_BROWSER=1 to fail instead)",
        path.display()
    );
    None
}

/// What one Chromium run left: whether it exited cleanly, its stdout and its stderr.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs Chromium headless on `page` with `extra` flags; kills it after 90 s. Output goes to
/// files, not pipes: Chromium logs a lot, and a full pipe would block it.
fn run_chromium(bin: &Path, page: &Path, extra: &[String]) -> Run {
    let profile = tempfile::tempdir().unwrap();
    let out_path = profile.path().join("stdout");
    let err_path = profile.path().join("stderr");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&out_path).unwrap())
    .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().expect("chromium starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Run {
        ok: status.is_some_and(|s| s.success()),
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// The value of `attr` on the `#render-check` marker in the dumped DOM.
fn marker(dom: &str, attr: &str) -> Option<String> {
    let start = dom.find("id=\"render-check\"")?;
    let tag = &dom[dom[..start].rfind('<')?..];
    let tag = &tag[..tag.find('>')?];
    let key = format!("{attr}=\"");
    let v = &tag[tag.find(&key)? + key.len()..];
    Some(v[..v.find('"')?].to_string())
}

fn check_page(name: &str, events: &[ClickEvent], extras: &Extras) {
    let Some(bin) = chromium() else {
        return;
    };
    let mut spec = AnalysisSpec::default();
    spec.factors.min_support = 5;
    let html = render_html(&analyse(events, &spec), name, extras).unwrap();
    check_html(&bin, name, html, 4);
}

/// Opens `html` in Chromium: at least `min_charts` charts, all rendered, no errors; a screenshot.
fn check_html(bin: &Path, name: &str, html: String, min_charts: usize) {
    let charts = html.matches("<figure class=\"chart\"").count();
    assert!(charts >= min_charts, "{name}: only {charts} charts");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join(format!("{name}.html"));
    std::fs::write(&page, html).unwrap();

    let out = run_chromium(bin, &page, &["--dump-dom".into()]);
    let (dom, log) = (&out.stdout, &out.stderr);
    assert!(out.ok, "{name}: chromium failed or timed out: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "{name}: console messages: {console:#?}");
    assert_eq!(
        marker(dom, "data-errors").as_deref(),
        Some("0"),
        "{name}: script errors"
    );
    assert_eq!(
        marker(dom, "data-charts"),
        Some(charts.to_string()),
        "{name}"
    );
    assert_eq!(
        marker(dom, "data-rendered"),
        Some(charts.to_string()),
        "{name}: charts not rendered: {:?}",
        marker(dom, "data-missing")
    );

    let shot = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    let out = run_chromium(
        bin,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,5600".into(),
            "--hide-scrollbars".into(),
        ],
    );
    assert!(out.ok, "{name}: screenshot failed: {}", out.stderr);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{name}: screenshot too small"
    );
    eprintln!(
        "{name}: {charts} charts rendered; screenshot {}",
        shot.display()
    );
}

#[test]
fn generated_report_renders_in_chromium() {
    let cfg = GeneratorConfig {
        sessions: 1500,
        users: 400,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::new(cfg).unwrap();
    let events: Vec<ClickEvent> = generator
        .by_ref()
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
        .collect();
    // The generator's true purchase probabilities stand in for a model's scores, and its
    // anomaly labels for alerts: enough to draw the optional sections.
    let truth = generator.take_truth();
    let scores: Vec<Scored> = truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Session(s) => Some(Scored {
                score: s.purchase_probability,
                label: s.purchased,
            }),
            _ => None,
        })
        .collect();
    let alerts: Vec<FraudAlert> = truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Anomaly(a) => Some(FraudAlert {
                alert_id: a.user_id.clone(),
                user_id: a.user_id.clone(),
                alert_type: a.scenario.alert_type(),
                severity: Severity::High,
                score: 1.0,
                reasons: vec![format!("{:?}", a.scenario)],
                evidence_event_ids: a.event_ids.clone(),
                window_start: a.start_time,
                window_end: a.end_time,
                detector_version: "test".into(),
            }),
            _ => None,
        })
        .collect();
    assert!(scores.len() > 100 && !alerts.is_empty());
    // Decision factors as the GRU scorer writes them, aggregated.
    let predictions: Vec<clickpath_schema::Prediction> = (0..50)
        .map(|i| clickpath_schema::Prediction {
            event_id: format!("e{i}"),
            user_id: format!("u{}", i % 7),
            event_time: 0,
            model_version: "gru-test".into(),
            purchase_probability: 0.3,
            next_actions: vec![],
            predicted_path: vec![],
            factors: vec![
                clickpath_schema::Factor {
                    name: "cart_value_1h".into(),
                    contribution: 0.5 + i as f64 / 100.0,
                },
                clickpath_schema::Factor {
                    name: format!(
                        "event_type={}",
                        if i % 2 == 0 { "SEARCH" } else { "ADD_TO_CART" }
                    ),
                    contribution: if i % 2 == 0 { -0.3 } else { 0.8 },
                },
            ],
            scoring_latency_us: 10,
            recommended_items: Vec::new(),
            recommended_categories: Vec::new(),
        })
        .collect();
    // A session outlook trained on the same events (400 users over about two days: a 6-hour horizon).
    let outlook_cfg = clickpath_model::outlook::OutlookTrainConfig {
        horizon_hours: 6,
        ..Default::default()
    };
    let mut trained = clickpath_model::outlook::train_outlook(&events, &outlook_cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meta = clickpath_model::outlook::save_outlook(&mut trained, dir.path()).unwrap();
    let outlook = clickpath_report::extras::outlook_section(&events, &trained.model, &meta);
    assert_eq!(
        outlook.segments.iter().map(|s| s.sessions).sum::<usize>(),
        outlook.sessions
    );
    let extras = Extras {
        scores: Some(scores),
        alerts: Some(alerts),
        attributions: Some(clickpath_report::extras::aggregate_attributions(
            &predictions,
            20,
        )),
        outlook: Some(outlook),
    };
    let page = render_html(&analyse(&events, &AnalysisSpec::default()), "g", &extras).unwrap();
    assert!(page.contains("<h2>Return and segments</h2>") && page.contains(&meta.version));
    check_page("generated", &events, &extras);
}

#[test]
fn rees46_report_renders_in_chromium() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures/rees46/2019-Oct-sample.csv");
    let (events, bad) = read_dataset(clickpath_adapters::Format::Rees46, &path).unwrap();
    assert_eq!(bad, 0);
    check_page("rees46", &events, &Extras::default());
}

/// The page of `clickpath report --topic analytics`: the analytics stage's rows of generated
/// events, as two instances would publish them, merged and drawn.
#[test]
fn analytics_topic_report_renders_in_chromium() {
    use clickpath_core::analytics::{FunnelSpec, RollingFunnel};
    use clickpath_report::{render_aggregates_html, topic::merge_rows};
    use clickpath_stages::analytics::Analytics;
    let Some(bin) = chromium() else {
        return;
    };
    let events: Vec<ClickEvent> = Generator::new(GeneratorConfig {
        sessions: 1500,
        users: 400,
        ..GeneratorConfig::default()
    })
    .unwrap()
    .filter_map(|g| match g {
        Generated::Event(e) => Some(e),
        Generated::Malformed(_) => None,
    })
    .collect();
    let spec = FunnelSpec::new(
        FunnelSpec::default().steps().to_vec(),
        Default::default(),
        3_600_000,
        Default::default(),
        3_600_000,
    )
    .unwrap();
    let mut rows = Vec::new();
    for (i, instance) in ["pod-0", "pod-1"].into_iter().enumerate() {
        let mut rolling = RollingFunnel::new(spec.clone(), 1000);
        let stage = Analytics::new(spec.clone(), 0, 1000, "analytics");
        for e in events.iter().filter(|e| {
            clickpath_runtime::query::partition_for_key(e.user_id.as_bytes(), 2) == i as i32
        }) {
            rolling.push(e);
        }
        for b in rolling.flush() {
            rows.extend(stage.rows(i as i32, &b).into_iter().map(|mut r| {
                r.instance = instance.into();
                r
            }));
        }
    }
    let merged = merge_rows(&rows).unwrap();
    let html = render_aggregates_html(&merged, "generated aggregates").unwrap();
    check_html(&bin, "analytics-topic", html, 2);
}
