//! The scorer's online step of each sequence model per batch size, on the default CPU backend
//! (`flex`), and the GRU step with next-item recommendations (an item head over a 50 000-item vocabulary,
//! top 20): by the exact scan (`gru_top20_of_50k`) and through the item index the scorer serves with
//! (`gru_top20_of_50k_indexed`, `sequence::index`); the GPU numbers come from
//! `clickpath-lab bench-scorer --device cuda` (`scripts/gpu-bench.sh`).

use std::hint::black_box;

use clickpath_model::sequence::index::IndexConfig;
use clickpath_model::sequence::{
    Architecture, CpuBackend, IndexedModel, NetConfig, OnlineModel, SequenceModel, Step, UserMemory,
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

/// Items in the recommendation benchmark's vocabulary, and how many each step recommends.
const VOCAB: usize = 50_000;
const TOP: usize = 20;

/// One GRU step per user plus the 20 best of 50 000 items for each: what the scorer does per event with
/// `recommend_items = 20` (predicted paths and factors aside).
fn online_step_with_items(c: &mut Criterion) {
    let mut group = c.benchmark_group("online_step_items");
    group.sample_size(10);
    let m = SequenceModel::<CpuBackend>::untrained(
        NetConfig {
            architecture: Architecture::Gru,
            numeric_features: FEATURES,
            item_vocab: VOCAB,
            ..NetConfig::default()
        },
        Default::default(),
    );
    let indexed = IndexedModel::new(m.clone(), &IndexConfig::default());
    assert!(indexed.index().is_some(), "50 000 items get an index");
    let graph = IndexedModel::new(
        m.clone(),
        &IndexConfig {
            graph_degree: 16,
            ..IndexConfig::default()
        },
    );
    assert!(graph.index().is_some(), "50 000 items get a graph");
    let ranked: [(&str, &dyn OnlineModel); 3] = [
        ("gru_top20_of_50k", &m),
        ("gru_top20_of_50k_indexed", &indexed),
        ("gru_top20_of_50k_graph", &graph),
    ];
    for (name, model) in ranked {
        for batch in [1usize, 64, 256] {
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
            group.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, _| {
                b.iter(|| {
                    let mut items: Vec<(&Step, &mut UserMemory)> =
                        steps.iter().zip(mems.iter_mut()).collect();
                    let outs = model.step_batch(&mut items);
                    let queries: Vec<&[f32]> =
                        outs.iter().map(|o| o.item_query.as_slice()).collect();
                    black_box(model.top_items(&queries, TOP).len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, online_step, online_step_with_items);
criterion_main!(benches);
