//! Scoring cost of the baseline model: the scorer calls `predict` once per event.

use std::hint::black_box;

use clickpath_core::FeatureSpec;
use clickpath_model::{TrainConfig, build_dataset, train_baseline};
use clickpath_schema::{ClickEvent, EventType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Browsing and buying sessions, one user each (the shape of the crate's tests).
fn events(sessions: usize) -> Vec<ClickEvent> {
    use EventType::*;
    let mut out = Vec::new();
    for s in 0..sessions {
        let types: &[EventType] = match s % 9 {
            0..=4 => &[PageView, ProductView, Search, ProductView],
            5..=7 => &[AddToCart, ProductView, BeginCheckout, Purchase],
            _ => &[AddToCart, ProductView, BeginCheckout],
        };
        let start = 1_700_000_000_000 + s as i64 * 60_000;
        for (j, &t) in types.iter().enumerate() {
            let mut ev = ClickEvent::new(
                format!("e{s}-{j}"),
                format!("u{s}"),
                t,
                start + j as i64 * 5_000,
            );
            ev.item_id = Some(format!("item{}", s % 13));
            ev.price = Some(10.0 + (s % 50) as f64);
            out.push(ev);
        }
    }
    out
}

fn predict(c: &mut Criterion) {
    let events = events(2_000);
    let report = train_baseline(&events, &TrainConfig::default()).expect("training succeeds");
    let model = report.model();
    let dataset = build_dataset(
        &events,
        &TrainConfig::default().session,
        &FeatureSpec::default(),
    );
    let features: Vec<_> = dataset
        .examples
        .iter()
        .map(|ex| &ex.features)
        .take(1_000)
        .collect();

    let mut group = c.benchmark_group("baseline_predict");
    group.throughput(Throughput::Elements(features.len() as u64));
    group.bench_function("full_output_top3", |b| {
        b.iter(|| {
            for fv in &features {
                black_box(model.predict(Some(fv.event_type), black_box(fv), 3));
            }
        })
    });
    group.bench_function("purchase_probability_only", |b| {
        b.iter(|| {
            for fv in &features {
                black_box(model.logistic.predict(black_box(&fv.values)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, predict);
criterion_main!(benches);
