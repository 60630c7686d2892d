//! Parsing throughput of the readers, on the shipped fixtures repeated in memory.

use clickpath_adapters::{Format, from_reader};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::Cursor;

/// The fixture's header once, then its body `copies` times.
fn repeated(path: &str, copies: usize, has_header: bool) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let (header, body) = if has_header {
        text.split_once('\n').unwrap()
    } else {
        ("", text.as_str())
    };
    let mut out = String::new();
    if has_header {
        out.push_str(header);
        out.push('\n');
    }
    for _ in 0..copies {
        out.push_str(body);
    }
    out.into_bytes()
}

fn parse(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let inputs = [
        (
            "rees46",
            Format::Rees46,
            repeated(&format!("{dir}/rees46/2019-Oct-sample.csv"), 100, true),
        ),
        (
            "otto",
            Format::Otto,
            repeated(&format!("{dir}/otto/train.jsonl"), 100, false),
        ),
    ];
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    for (name, format, bytes) in inputs {
        let events = from_reader(format, Cursor::new(bytes.clone()), "bench")
            .unwrap()
            .count() as u64;
        group.throughput(Throughput::Elements(events));
        group.bench_function(name, |b| {
            b.iter(|| {
                let reader = from_reader(format, Cursor::new(bytes.clone()), "bench").unwrap();
                black_box(reader.filter(Result::is_ok).count())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
