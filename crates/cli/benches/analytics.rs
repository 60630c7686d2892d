//! Path analytics throughput: the batch analysis behind `clickpath report` and the rolling funnel
//! behind the analytics stage, on generated events, one core
//! (`cargo bench -p clickpath-cli --bench analytics`).

use clickpath_core::analytics::{AnalysisSpec, FunnelSpec, RollingFunnel, analyse};
use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_schema::ClickEvent;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn events() -> Vec<ClickEvent> {
    let cfg = GeneratorConfig {
        sessions: 5_000,
        ..GeneratorConfig::default()
    };
    Generator::new(cfg)
        .unwrap()
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let events = events();
    let mut g = c.benchmark_group("analytics");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("batch_analyse", |b| {
        let spec = AnalysisSpec::default();
        b.iter(|| black_box(analyse(&events, &spec)))
    });
    g.bench_function("rolling_funnel", |b| {
        b.iter(|| {
            let mut r = RollingFunnel::new(FunnelSpec::default(), 10_000);
            let mut out = 0;
            for (i, e) in events.iter().enumerate() {
                r.push(e);
                if i % 1000 == 0 {
                    out += r.advance(e.event_time - 3_600_000).len();
                }
            }
            black_box(out + r.flush().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
