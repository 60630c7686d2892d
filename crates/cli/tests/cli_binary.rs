//! The `clickpath` binary as users run it.

use clickpath_schema::ClickEvent;
use clickpath_schema::codec::Codec;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn clickpath() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clickpath"));
    c.env_remove("CLICKPATH_CONFIG").env("RUST_LOG", "warn");
    c
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures")
        .join(rel)
}

/// A config file with unique topics on the test broker.
fn write_config(
    dir: &Path,
    brokers: &str,
    test: &str,
) -> (PathBuf, clickpath_stages::ClickpathConfig) {
    let cfg = clickpath_testkit::test_config(brokers, test);
    let t = &cfg.topics;
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_prefix = \"{}\"\n[topics]\nraw = \"{}\"\nclean = \"{}\"\nsessions = \"{}\"\nfeatures = \"{}\"\npredictions = \"{}\"\nalerts = \"{}\"\ndead_letters = \"{}\"\n[http]\nbind = \"127.0.0.1:0\"\n[runtime]\npoll_timeout_ms = 50\nshutdown_grace_ms = 10000\n",
        cfg.kafka.group_prefix,
        t.raw,
        t.clean,
        t.sessions,
        t.features,
        t.predictions,
        t.alerts,
        t.dead_letters
    );
    let path = dir.join("clickpath.toml");
    std::fs::write(&path, text).unwrap();
    (path, cfg)
}

fn count_records(brokers: &str, topic: &str, want: usize, wait: Duration) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "cli-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && out.len() < want {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    // Anything beyond `want` would be a duplicate.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

#[test]
fn validate_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[kafka]\nbrokerz = \"x\"\n[sessionizer]\ngap = 1\n").unwrap();
    let good = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/local.toml");
    let out = clickpath()
        .arg("validate")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("local.toml: ok"), "{stdout}");
    assert!(stdout.contains("kafka.brokerz: unknown key"), "{stdout}");
    assert!(stdout.contains("sessionizer.gap: unknown key"), "{stdout}");
}

/// With no broker at `kafka.brokers`, `run` and `topics create` stop with one message that names the
/// address, the key and how to start a broker (they used to repeat librdkafka's transport errors, or
/// wait a minute in silence).
#[test]
fn an_unreachable_broker_is_one_clear_error() {
    for args in [&["run", "all"][..], &["topics", "create"][..]] {
        let out = clickpath()
            .args(args)
            .env("CLICKPATH__KAFKA__BROKERS", "127.0.0.1:1")
            .env("CLICKPATH__KAFKA__CONNECT_TIMEOUT_MS", "1500")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        for needle in ["\"127.0.0.1:1\" (kafka.brokers)", "scripts/kafka.sh up"] {
            assert!(
                stderr.contains(needle),
                "{args:?}: no {needle:?} in {stderr}"
            );
        }
    }
}

#[test]
fn unknown_stage_is_a_clear_error() {
    let out = clickpath().args(["run", "sessionzer"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'sessionzer'") && stderr.contains("'sessionizer'"),
        "{stderr}"
    );
    // The choices come from the one list of stages, plus `all`.
    assert!(
        stderr.contains("cleaning, sessionizer, windower, scorer, detector, analytics, all"),
        "{stderr}"
    );
}

#[test]
fn demo_runs_on_the_embedded_bus_and_summarises() {
    // From the repository root, as `make demo` runs it: the shipped GRU scores and recommends items.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = clickpath()
        .current_dir(&root)
        .args(["demo", "--sessions", "300", "--seed", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("funnel (share of sessions reaching each stage)"),
        "{stdout}"
    );
    // The injected malformed records all reach the dead-letter topic.
    let line = stdout.lines().next().unwrap();
    let malformed: usize = line
        .split('(')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(malformed > 0, "{line}");
    assert!(
        stdout.contains(&format!("dead letters {malformed}\n")),
        "{stdout}"
    );
    let model_line = stdout
        .lines()
        .find(|l| l.contains("scorer model:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(model_line.contains("gru-"), "{stdout}");
    assert!(!model_line.contains("baseline"), "{stdout}");
    // Every prediction recommends items.
    let predictions = stdout
        .split("predictions ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    assert!(
        stdout.contains(&format!(
            "next-item recommendations: {predictions} of {predictions} predictions; e.g. after"
        )),
        "{stdout}"
    );
    // Quality on the stream it generated, and the shipped session outlook on every session.
    assert!(stdout.contains("purchase ROC-AUC so far: 0."), "{stdout}");
    assert!(stdout.contains("next-item hit rate: "), "{stdout}");
    let sessions = stdout
        .split("sessions ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    assert!(
        stdout.contains("session outlook (outlook-")
            && stdout.contains(&format!("segments of {sessions} sessions")),
        "{stdout}"
    );
}

/// `clickpath tail` reads the alert topic on the real broker: its role resolves to the configured
/// name, each line is a JSON object with the decoded alert, filters apply, and `--max` stops it.
#[test]
fn tail_prints_decoded_alerts_with_filters() {
    use clickpath_schema::{AlertType, FraudAlert, Severity};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = write_config(dir.path(), &brokers, "tail");
    let st = clickpath()
        .arg("--config")
        .arg(&config)
        .args(["topics", "create"])
        .status()
        .unwrap();
    assert!(st.success());
    let codec = Codec::embedded();
    // In a transaction, as an exactly-once detector writes: the topic then ends on a commit
    // marker no record sits at, and tail must still see the end.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set(
            "transactional.id",
            format!("{}-tail-test", cfg.kafka.group_prefix),
        )
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let severities = [
        Severity::Low,
        Severity::High,
        Severity::Critical,
        Severity::High,
    ];
    for (i, severity) in severities.into_iter().enumerate() {
        let alert = FraudAlert {
            alert_id: format!("a{i}"),
            user_id: format!("u{i}"),
            alert_type: AlertType::CardTesting,
            severity,
            score: 1.0,
            reasons: vec!["test".into()],
            evidence_event_ids: vec![],
            window_start: 0,
            window_end: 1,
            detector_version: "t".into(),
        };
        let bytes = codec.encode(&alert).unwrap();
        producer
            .send(
                BaseRecord::to(&cfg.topics.alerts)
                    .key(&alert.user_id)
                    .payload(&bytes),
            )
            .unwrap();
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    let tail = |extra: &[&str]| {
        let out = clickpath()
            .arg("--config")
            .arg(&config)
            .args(["tail", "alerts", "--from-beginning"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    // Every alert, then the end of the topic ends the command.
    let all = tail(&[]);
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|l| l["topic"] == cfg.topics.alerts.as_str()));
    assert!(
        all.iter()
            .all(|l| l["value"]["alert_type"] == "CARD_TESTING")
    );
    let high = tail(&["--min-severity", "high"]);
    assert_eq!(high.len(), 3);
    assert_eq!(tail(&["--min-severity", "high", "--max", "2"]).len(), 2);
    let one = tail(&["--user", "u2"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["value"]["severity"], "CRITICAL");
}

#[test]
fn replay_sends_a_real_dataset_to_the_raw_topic() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = write_config(dir.path(), &brokers, "replay");
    let st = clickpath()
        .args(["--config"])
        .arg(&config)
        .args(["topics", "create"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = clickpath()
        .arg("--config")
        .arg(&config)
        .args(["replay", "--format", "otto"])
        .arg(fixture("otto/train.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = count_records(&brokers, &cfg.topics.raw, 862, Duration::from_secs(20));
    assert_eq!(records.len(), 862, "every OTTO event once");
    let codec = Codec::embedded();
    let first: ClickEvent = codec.decode(&records[0]).unwrap();
    assert!(first.event_id.starts_with("otto:"), "{}", first.event_id);
}

#[cfg(unix)]
#[test]
fn sigterm_drains_commits_and_a_restart_continues_without_loss() {
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = write_config(dir.path(), &brokers, "sigterm");
    assert!(
        clickpath()
            .arg("--config")
            .arg(&config)
            .args(["topics", "create"])
            .status()
            .unwrap()
            .success()
    );
    let events = dir.path().join("events.jsonl");
    let generated = clickpath()
        .args(["generate", "--sessions", "150", "--seed", "9", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(generated.status.success());
    let replay = |path: &Path| {
        let out = clickpath()
            .arg("--config")
            .arg(&config)
            .args(["replay", "--format", "jsonl"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let all = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let first_path = dir.path().join("first.jsonl");
    let second_path = dir.path().join("second.jsonl");
    std::fs::write(&first_path, first.join("\n")).unwrap();
    std::fs::write(&second_path, second.join("\n")).unwrap();
    let distinct = |ls: &[&str]| {
        let mut ids: Vec<String> = ls
            .iter()
            .map(|l| serde_json::from_str::<ClickEvent>(l).unwrap().event_id)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let want_all = distinct(&lines);

    replay(&first_path);
    // Debug logs of the first instance are kept: no user id may appear in them.
    let log_path = dir.path().join("stage.log");
    let mut stage = clickpath()
        .arg("--config")
        .arg(&config)
        .args(["run", "cleaning"])
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let seen = count_records(
        &brokers,
        &cfg.topics.clean,
        distinct(first).len(),
        Duration::from_secs(60),
    );
    assert!(seen.len() >= distinct(first).len(), "first half cleaned");
    // Send more while it runs, then SIGTERM mid-stream.
    replay(&second_path);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    sigterm(&stage);
    let status = stage.wait().unwrap();
    assert!(
        status.success(),
        "drained and exited 0 on SIGTERM, got {status:?}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("Stage started"), "debug log captured");
    // Logs written to a file carry no terminal colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file");
    let users: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<ClickEvent>(l).unwrap().user_id)
        .collect();
    let leaked: Vec<&String> = users
        .iter()
        .filter(|u| log.contains(u.as_str()))
        .take(3)
        .collect();
    assert!(leaked.is_empty(), "user ids in the logs: {leaked:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "within the grace period"
    );

    // A restarted instance continues where the committed offsets say.
    let mut stage = clickpath()
        .arg("--config")
        .arg(&config)
        .args(["run", "cleaning"])
        .spawn()
        .unwrap();
    let codec = Codec::embedded();
    let records = count_records(
        &brokers,
        &cfg.topics.clean,
        want_all.len(),
        Duration::from_secs(60),
    );
    sigterm(&stage);
    assert!(stage.wait().unwrap().success());
    let mut got: Vec<String> = records
        .iter()
        .map(|r| codec.decode::<ClickEvent>(r).unwrap().event_id)
        .collect();
    got.sort();
    let before = got.len();
    got.dedup();
    assert_eq!(got, want_all, "nothing lost across the SIGTERM and restart");
    assert_eq!(
        before,
        got.len(),
        "and, with a clean drain, nothing duplicated"
    );
}

/// SIGTERM to a child this test spawned (kill(1): the workspace forbids unsafe code).
#[cfg(unix)]
fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// Dead letters on the real broker: a too strict validation rejects two orders, `tail` shows the
/// dead letters, a dry run counts them, and once the rule is fixed `replay-dead-letters` puts them
/// back on the raw topic byte for byte (the shop's header too), where cleaning accepts them; a
/// record of another kind stays a dead letter.
#[test]
fn dead_letters_are_the_records_as_received_and_replay_once_fixed() {
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let Some(brokers) = clickpath_testkit::test_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = write_config(dir.path(), &brokers, "dlq-replay");
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let out = clickpath()
            .arg("--config")
            .arg(&config)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cli(&["topics", "create"], &[]);
    let codec = Codec::embedded();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut orders = Vec::new();
    for i in 0..5 {
        let mut ev = ClickEvent::new(
            format!("e{i}"),
            format!("u{i}"),
            clickpath_schema::EventType::AddToCart,
            1_700_000_000_000 + i,
        );
        // Two wholesale orders of 50 units.
        ev.quantity = Some(if i < 2 { 50 } else { 1 });
        let bytes = codec.encode(&ev).unwrap();
        let headers = OwnedHeaders::new().insert(Header {
            key: "shop.origin",
            value: Some(&format!("web-{i}")),
        });
        producer
            .send(
                BaseRecord::to(&cfg.topics.raw)
                    .key(&ev.user_id)
                    .payload(&bytes)
                    .headers(headers),
            )
            .unwrap();
        if i < 2 {
            orders.push(bytes);
        }
    }
    producer
        .send(
            BaseRecord::to(&cfg.topics.raw)
                .key("u9")
                .payload(&b"\x01not avro"[..]),
        )
        .unwrap();
    // No key at all: its dead letter has none either (not an empty one).
    producer
        .send(BaseRecord::<(), [u8]>::to(&cfg.topics.raw).payload(&b"\x01no key"[..]))
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let run_cleaning = |env: &[(&str, &str)], clean: usize| {
        let mut stage = clickpath()
            .arg("--config")
            .arg(&config)
            .args(["run", "cleaning"])
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        let seen = count_records(&brokers, &cfg.topics.clean, clean, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(500));
        sigterm(&stage);
        assert!(stage.wait().unwrap().success());
        seen
    };
    // A too strict rule: at most 10 units.
    let strict = [("CLICKPATH__CLEANING__VALIDATION__MAX_QUANTITY", "10")];
    assert_eq!(run_cleaning(&strict, 3).len(), 3);
    let letters = count_records(
        &brokers,
        &cfg.topics.dead_letters,
        4,
        Duration::from_secs(30),
    );
    assert_eq!(letters.len(), 4);
    // The values are the records as received.
    for order in &orders {
        assert!(
            letters.contains(order),
            "an order's bytes in the dead letters"
        );
    }
    assert!(letters.contains(&b"\x01not avro".to_vec()));

    let tailed: Vec<serde_json::Value> = cli(&["tail", "dead_letters", "--from-beginning"], &[])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tailed.len(), 4);
    let keyless: Vec<&serde_json::Value> = tailed
        .iter()
        .filter(|l| l["value"]["value_bytes"] == 7)
        .collect();
    assert_eq!(keyless.len(), 1, "{tailed:?}");
    assert!(keyless[0]["value"]["user_id"].is_null(), "{tailed:?}");
    let bad_values: Vec<&serde_json::Value> = tailed
        .iter()
        .filter(|l| l["value"]["error_kind"] == "bad_value")
        .collect();
    assert_eq!(bad_values.len(), 2, "{tailed:?}");
    assert_eq!(bad_values[0]["value"]["stage"], "cleaning");
    assert_eq!(
        bad_values[0]["value"]["source_topic"],
        cfg.topics.raw.as_str()
    );
    assert_eq!(bad_values[0]["value"]["value"]["quantity"], 50);

    let dry = cli(
        &["replay-dead-letters", "--kind", "bad_value", "--dry-run"],
        &[],
    );
    assert!(
        dry.contains("4 dead letters read") && dry.contains("2 would be replayed"),
        "{dry}"
    );
    // The rule fixed (the default limit), the orders replayed: cleaning accepts them now.
    let replayed = cli(&["replay-dead-letters", "--kind", "bad_value"], &[]);
    assert!(replayed.contains("2 replayed"), "{replayed}");
    let clean = run_cleaning(&[], 5);
    let mut ids: Vec<String> = clean
        .iter()
        .map(|r| codec.decode::<ClickEvent>(r).unwrap().event_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
    // On the raw topic, a replayed record is the original with its own header and its origin.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "cli-test-raw-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&cfg.topics.raw, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut found = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while found < 2 && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
        };
        if let Some(from) = header("clickpath.replayed_from") {
            found += 1;
            assert!(
                std::str::from_utf8(from)
                    .unwrap()
                    .starts_with(&cfg.topics.dead_letters)
            );
            assert!(orders.iter().any(|o| m.payload() == Some(o.as_slice())));
            assert!(header("shop.origin").is_some_and(|v| v.starts_with(b"web-")));
            assert!(header("__connect.errors.topic").is_none());
        }
    }
    assert_eq!(found, 2, "both orders replayed to the raw topic");
}
