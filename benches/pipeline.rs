//! Stage logic in process, no broker, events/s on one core (`cargo bench -p clickpath-cli --bench pipeline`):
//! - `all_stages_events`: raw Avro bytes through cleaning, sessionizer, windower, scorer and detector, with
//!   every decode and encode the stages do when each reads its own topic (per-stage mode);
//! - `chained_all_six`: the chained topology's stage (`clickpath_stages::chain::Chain`, all six stages,
//!   analytics included, durable state journalled and taken every batch as the run loop does), raw bytes
//!   decoded once and typed records handed between the stages.

use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_runtime::{Context, Output, Stage};
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, FeatureVector};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::analytics::Analytics;
use clickpath_stages::chain::{Chain as Chained, ChainStages};
use clickpath_stages::cleaning::Cleaning;
use clickpath_stages::detector::Detector;
use clickpath_stages::scorer::Scorer;
use clickpath_stages::sessionizer::Sessionizer;
use clickpath_stages::topology::builtin_model;
use clickpath_stages::windower::Windower;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// The allocator of the `clickpath` binary, so the chain is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Chain {
    cleaning: Cleaning,
    sessionizer: Sessionizer,
    windower: Windower,
    scorer: Scorer,
    detector: Detector,
}

fn chain(cfg: &ClickpathConfig) -> Chain {
    Chain {
        cleaning: Cleaning::new(&cfg.cleaning, "clean"),
        sessionizer: Sessionizer::new(&cfg.sessionizer, "sessions", "late", false)
            .without_changelog(),
        windower: Windower::new(&cfg.windower, "features"),
        scorer: Scorer::new(
            builtin_model(&cfg.windower).unwrap(),
            &cfg.scorer,
            "predictions",
        ),
        detector: Detector::new(&cfg.detector, "alerts"),
    }
}

fn run(chain: &mut Chain, codec: &Codec, raw: &[Vec<u8>]) -> usize {
    let now = 1_767_657_600_000;
    let mut clean = Vec::<Output>::with_capacity(1);
    let mut features = Vec::<Output>::with_capacity(1);
    let mut out = Vec::<Output>::with_capacity(4);
    let mut produced = 0;
    for bytes in raw {
        clean.clear();
        let Ok(ev) = codec.decode::<ClickEvent>(bytes) else {
            continue;
        };
        let _ = chain
            .cleaning
            .process(ev, &mut Context::new(codec, &mut clean, now));
        for c in &clean {
            // Each downstream stage decodes its own copy, as it would from the topic.
            for stage in 0..3 {
                let ev: ClickEvent = codec.decode(&c.payload).unwrap();
                let ctx = &mut Context::new(
                    codec,
                    if stage == 1 { &mut features } else { &mut out },
                    now,
                );
                match stage {
                    0 => chain.sessionizer.process(ev, ctx).unwrap(),
                    1 => chain.windower.process(ev, ctx).unwrap(),
                    _ => chain.detector.process(ev.into(), ctx).unwrap(),
                }
            }
            for f in features.drain(..) {
                let fv: FeatureVector = codec.decode(&f.payload).unwrap();
                chain
                    .scorer
                    .process(fv, &mut Context::new(codec, &mut out, now))
                    .unwrap();
            }
            produced += out.len();
            out.clear();
        }
    }
    produced
}

/// The chain as `clickpath run all` builds it (baseline model), fed decoded raw events in batches
/// of 1,000 on four partitions, its state changes taken after each batch.
fn run_chained(chain: &mut Chained, codec: &Codec, raw: &[Vec<u8>]) -> usize {
    let now = 1_767_657_600_000;
    let mut out = Vec::<Output>::with_capacity(4_096);
    let mut produced = 0;
    for batch in raw.chunks(1_000) {
        for bytes in batch {
            let Ok(ev) = codec.decode::<ClickEvent>(bytes) else {
                continue;
            };
            let p = clickpath_runtime::query::partition_for_key(ev.user_id.as_bytes(), 4);
            let _ = chain.process(ev, &mut Context::new(codec, &mut out, now).for_partition(p));
        }
        chain
            .end_batch(&mut Context::new(codec, &mut out, now))
            .unwrap();
        black_box(chain.take_state_changes());
        produced += out.len();
        out.clear();
    }
    produced
}

fn bench(c: &mut Criterion) {
    let codec = Codec::embedded();
    let cfg = ClickpathConfig::default();
    let raw: Vec<Vec<u8>> = Generator::new(GeneratorConfig {
        sessions: 2_000,
        ..GeneratorConfig::default()
    })
    .unwrap()
    .filter_map(|g| match g {
        Generated::Event(e) => Some(codec.encode(&e).unwrap()),
        Generated::Malformed(_) => None,
    })
    .collect();
    let mut group = c.benchmark_group("pipeline_in_process");
    group.throughput(Throughput::Elements(raw.len() as u64));
    group.sample_size(10);
    group.bench_function("all_stages_events", |b| {
        b.iter_batched(
            || chain(&cfg),
            |mut ch| black_box(run(&mut ch, &codec, &raw)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("chained_all_six", |b| {
        b.iter_batched(
            || {
                let t = &cfg.topics;
                let stages = ChainStages {
                    cleaning: Cleaning::new(&cfg.cleaning, &t.clean),
                    sessionizer: Sessionizer::new(
                        &cfg.sessionizer,
                        &t.sessions,
                        &t.late_events,
                        false,
                    ),
                    windower: Windower::new(&cfg.windower, &t.features),
                    scorer: Scorer::new(
                        builtin_model(&cfg.windower).unwrap(),
                        &cfg.scorer,
                        &t.predictions,
                    ),
                    detector: Detector::new(&cfg.detector, &t.alerts),
                    analytics: Analytics::from_config(&cfg.analytics, &t.analytics, "bench", false)
                        .unwrap(),
                };
                let mut chain = Chained::new(stages, &cfg, None);
                chain.on_assign(&[0, 1, 2, 3]);
                chain
            },
            |mut ch| black_box(run_chained(&mut ch, &codec, &raw)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
