//! Generation throughput: records per second of the default behavioural model.

use clickpath_generator::{Generator, GeneratorConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    for (name, sessions) in [
        ("default_5k_sessions", 5_000u64),
        ("default_20k_sessions", 20_000),
    ] {
        let cfg = GeneratorConfig {
            sessions,
            ..GeneratorConfig::default()
        };
        let records = Generator::new(cfg.clone()).unwrap().count() as u64;
        group.throughput(Throughput::Elements(records));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut g = Generator::new(cfg.clone()).unwrap();
                let n = g.by_ref().count();
                black_box((n, g.take_truth().len()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, generate);
criterion_main!(benches);
