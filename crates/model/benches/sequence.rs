//! The scorer's online step of each sequence model per batch size, on the default CPU backend
//! (`flex`); the GPU numbers come from `clickpath-lab bench-scorer --device cuda` (`scripts/gpu-bench.sh`).

use std::hint::black_box;

use clickpath_model::sequence::{
    Architecture, CpuBackend, NetConfig, SequenceModel, Step, UserMemory,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const FEATURES: usize = 25;

fn model(arch: Architecture) -> SequenceModel<CpuBackend> {
    let cfg = NetConfig {
        architecture: arch,
        numeric_features: FEATURES,
        ..NetConfig::default()
    };
    SequenceModel::untrained(cfg, Default::default())
}

fn online_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("online_step");
    for arch in [
        Architecture::Gru,
        Architecture::Lstm,
        Architecture::Transformer,
    ] {
        let m = model(arch);
        let batches: &[usize] = if arch == Architecture::Transformer {
            &[1, 64]
        } else {
            &[1, 64, 256]
        };
        for &batch in batches {
            let steps: Vec<Step> = (0..batch)
                .map(|i| Step {
                    event_type: (i % 10) as u32,
                    category: 1 + (i % 100) as u32,
                    item: 1 + (i % 1000) as u32,
                    numeric: vec![0.1; FEATURES],
                })
                .collect();
            let mut mems = vec![UserMemory::default(); batch];
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(arch.as_str(), batch), &batch, |b, _| {
                b.iter(|| {
                    let mut items: Vec<(&Step, &mut UserMemory)> =
                        steps.iter().zip(mems.iter_mut()).collect();
                    black_box(m.step_batch(&mut items).len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, online_step);
criterion_main!(benches);
