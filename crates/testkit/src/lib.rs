//! Test helpers: the real broker's address, unique topic names per test, and test configurations.
//!
//! Real-broker tests read the bootstrap address from `CLICKPATH_TEST_BROKERS` (set by `.ci/run` after
//! `scripts/kafka.sh up`). When it is unset they skip with a message, unless `CLICKPATH_REQUIRE_BROKER=1`
//! (CI sets it), in which case a missing broker fails the test instead of silently skipping it.

use clickpath_stages::ClickpathConfig;
use rand::Rng;
use std::path::PathBuf;

/// The real broker to test against, or `None` (after printing why) when the test should skip.
pub fn test_brokers() -> Option<String> {
    match std::env::var("CLICKPATH_TEST_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            if std::env::var("CLICKPATH_REQUIRE_BROKER").is_ok_and(|v| v == "1") {
                panic!(
                    "CLICKPATH_REQUIRE_BROKER=1 but CLICKPATH_TEST_BROKERS is not set: start Kafka with scripts/kafka.sh up"
                );
            }
            eprintln!(
                "skipping: CLICKPATH_TEST_BROKERS is not set (run scripts/kafka.sh up and export it)"
            );
            None
        }
    }
}

/// A prefix unique to this test run, for topics and consumer groups.
pub fn unique_prefix(test: &str) -> String {
    let n: u32 = rand::rng().random();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("test-{test}-{t}-{n:08x}.")
}

/// Defaults with unique topics and groups, pointing at `brokers`, tuned for quick tests.
pub fn test_config(brokers: &str, test: &str) -> ClickpathConfig {
    let mut cfg = ClickpathConfig::default();
    let prefix = unique_prefix(test);
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.group_prefix = format!("{prefix}group");
    cfg.topics = cfg.topics.with_prefix(&prefix);
    cfg.runtime.poll_timeout_ms = 50;
    cfg.runtime.tick_interval_ms = 200;
    cfg.http.bind = "127.0.0.1:0".into();
    cfg
}

/// `../shared/data` beside the workspace, if present (a user's clone has none: tests skip then).
pub fn shared_data_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} is absent (only the project's CI and developers have it)",
            dir.display()
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_run_gets_its_own_topics_and_groups() {
        let a = test_config("127.0.0.1:1", "x");
        let b = test_config("127.0.0.1:1", "x");
        assert_ne!(
            a.topics.raw, b.topics.raw,
            "two runs of one test never share topics"
        );
        assert_ne!(a.kafka.group_prefix, b.kafka.group_prefix);
        for (role, name) in a.topics.all() {
            assert!(
                name.starts_with("test-x-"),
                "{role} topic {name} carries the test's prefix"
            );
        }
        assert_eq!(a.kafka.brokers, "127.0.0.1:1");
        a.check()
            .expect("a test configuration passes the config checks");
    }
}
