//! Helpers shared by the generator's integration tests.
#![allow(dead_code)]

use clickpath_generator::{Generated, Generator, GeneratorConfig, GeneratorStats, TruthRecord};
use clickpath_schema::ClickEvent;

/// Everything one run produced.
pub struct Run {
    pub records: Vec<Generated>,
    pub truth: Vec<TruthRecord>,
    pub stats: GeneratorStats,
}

impl Run {
    /// The emitted events (duplicates included, malformed records excluded), in emission order.
    pub fn events(&self) -> impl Iterator<Item = &ClickEvent> {
        self.records.iter().filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
    }
}

/// Runs a generator to the end, draining the ground truth as it goes.
pub fn run(cfg: GeneratorConfig) -> Run {
    let mut generator = Generator::new(cfg).expect("valid config");
    let mut records = Vec::new();
    let mut truth = Vec::new();
    while let Some(g) = generator.next() {
        records.push(g);
        if records.len() % 1000 == 0 {
            truth.extend(generator.take_truth());
        }
    }
    truth.extend(generator.take_truth());
    Run {
        records,
        truth,
        stats: generator.stats().clone(),
    }
}

/// How far behind the largest earlier event time each emitted event arrives (0 if not behind).
pub fn lateness(events: &[&ClickEvent]) -> Vec<i64> {
    let mut max_seen = i64::MIN;
    events
        .iter()
        .map(|e| {
            let l = if max_seen > e.event_time {
                max_seen - e.event_time
            } else {
                0
            };
            max_seen = max_seen.max(e.event_time);
            l
        })
        .collect()
}
