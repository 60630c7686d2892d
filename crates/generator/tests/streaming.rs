//! The iterator: determinism, limits, bounded memory and config errors.

mod common;

use clickpath_generator::{
    BehaviourConfig, ConfigError, DirtyConfig, Generated, Generator, GeneratorConfig,
    ScenarioConfig, TruthRecord,
};
use common::{lateness, run};
use proptest::prelude::*;

fn bytes(cfg: GeneratorConfig) -> Vec<u8> {
    let out = run(cfg);
    let mut buf = Vec::new();
    for g in &out.records {
        serde_json::to_writer(&mut buf, g).unwrap();
        buf.push(b'\n');
    }
    for t in &out.truth {
        serde_json::to_writer(&mut buf, t).unwrap();
        buf.push(b'\n');
    }
    buf
}

#[test]
fn same_config_same_bytes_other_seed_other_bytes() {
    let cfg = GeneratorConfig {
        sessions: 800,
        dirty: DirtyConfig {
            late_rate: 0.01,
            malformed_rate: 0.01,
            ..DirtyConfig::default()
        },
        ..GeneratorConfig::default()
    };
    let a = bytes(cfg.clone());
    let b = bytes(cfg.clone());
    assert!(a.len() > 100_000);
    assert!(a == b, "two runs of one config differ");
    let c = bytes(GeneratorConfig { seed: 43, ..cfg });
    assert!(a != c);
}

/// Nothing like the whole data set is held: the queue only covers overlapping sessions.
#[test]
fn memory_stays_bounded() {
    let mut generator = Generator::new(GeneratorConfig {
        sessions: 10_000,
        ..GeneratorConfig::default()
    })
    .unwrap();
    let (mut n, mut max_pending, mut max_truth) = (0usize, 0, 0);
    while generator.next().is_some() {
        n += 1;
        max_pending = max_pending.max(generator.pending_len());
        if n % 500 == 0 {
            max_truth = max_truth.max(generator.take_truth().len());
        }
    }
    assert!(n > 100_000, "{n} records");
    assert!(max_pending < 2_000, "{max_pending} records queued at once");
    assert!(max_truth < 500, "{max_truth} truth records between drains");
}

#[test]
fn max_events_caps_the_stream() {
    let out = run(GeneratorConfig {
        max_events: 1_234,
        ..GeneratorConfig::default()
    });
    assert_eq!(out.records.len(), 1_234);
    assert_eq!(out.stats.emitted, 1_234);
}

#[test]
fn duration_limits_session_starts() {
    let cfg = GeneratorConfig {
        sessions: 0,
        duration_ms: 6 * 3_600_000,
        ..GeneratorConfig::default()
    };
    let end = cfg.start_time_ms + 6 * 3_600_000;
    let out = run(cfg);
    let starts: Vec<i64> = out
        .truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Session(s) => Some(s.start_time),
            _ => None,
        })
        .collect();
    assert!(starts.len() > 100);
    assert!(starts.iter().all(|&s| s < end));
    assert!(starts.iter().any(|&s| s > end - 3_600_000));
}

#[test]
fn bad_configs_are_refused_with_every_reason() {
    let mut cfg = GeneratorConfig {
        users: 0,
        ..GeneratorConfig::default()
    };
    cfg.dirty.malformed_rate = -0.1;
    let err = Generator::new(cfg).err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("users") && text.contains("malformed_rate"),
        "{text}"
    );

    let mut cfg = GeneratorConfig::default();
    cfg.funnel.cart_per_product_view = 0.9;
    cfg.funnel.purchase_per_cart = 0.95;
    cfg.behaviour.buyer_mean_product_views = 30.0;
    assert!(matches!(
        Generator::new(cfg),
        Err(ConfigError::Calibration(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the seed and rates: disorder stays below the bound, every session truth is
    /// released, and emission is event-time order apart from the injected disorder.
    #[test]
    fn invariants_hold_for_random_configs(
        seed in any::<u64>(),
        users in 20u32..300,
        per_day in 1.0f64..30.0,
        ooo in 0.0f64..0.5,
        dup in 0.0f64..0.2,
        bound in 2u64..5_000,
    ) {
        let cfg = GeneratorConfig {
            seed,
            users,
            sessions: 300,
            behaviour: BehaviourConfig { sessions_per_user_per_day: per_day, ..Default::default() },
            dirty: DirtyConfig {
                out_of_order_rate: ooo,
                duplicate_rate: dup,
                disorder_bound_ms: bound,
                ..DirtyConfig::default()
            },
            scenarios: ScenarioConfig { crawler_bots: 1, card_testing: 1, account_takeovers: 1, cart_stuffing: 1, ..ScenarioConfig::none() },
            ..GeneratorConfig::default()
        };
        let out = run(cfg);
        let events: Vec<_> = out.events().collect();
        prop_assert!(lateness(&events).into_iter().all(|l| l < bound as i64));
        let sessions = out.truth.iter().filter(|t| matches!(t, TruthRecord::Session(_))).count() as u64;
        let takeovers = out.truth.iter().filter(|t| matches!(t, TruthRecord::Anomaly(a) if a.scenario == clickpath_generator::ScenarioKind::AccountTakeover)).count() as u64;
        prop_assert_eq!(sessions + takeovers, out.stats.sessions);
        let malformed = out.records.iter().filter(|g| matches!(g, Generated::Malformed(_))).count() as u64;
        prop_assert_eq!(malformed, out.stats.malformed);
        prop_assert_eq!(events.len() as u64, out.stats.events + out.stats.duplicates);
    }
}
