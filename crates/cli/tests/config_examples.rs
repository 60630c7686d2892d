//! Every example under `config/` must load; the loader's layering must keep librdkafka's dotted keys intact.

use clickpath_stages::ClickpathConfig;
use std::path::PathBuf;

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

#[test]
fn every_example_config_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            ClickpathConfig::load_with_env(Some(&path), Vec::new())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the default and example configs, found {checked}"
    );
}

#[test]
fn dotted_librdkafka_properties_survive_loading() {
    let cfg = ClickpathConfig::load_with_env(
        Some(&config_dir().join("production-example.toml")),
        Vec::new(),
    )
    .unwrap();
    assert_eq!(
        cfg.kafka
            .properties
            .get("security.protocol")
            .map(String::as_str),
        Some("SASL_SSL")
    );
    assert_eq!(cfg.topics.partitions, 24);
    // Untouched sections keep their defaults.
    assert_eq!(cfg.topics.raw, "clickpath.clicks.raw");
}
