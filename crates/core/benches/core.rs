//! Throughput of the per-event domain logic on a synthetic multi-user stream.
//!
//! Run with `cargo bench -p clickpath-core` (add `-- --quick` for a short run).

use clickpath_core::{
    Deduper, Detector, FeatureSpec, FeatureWindower, RulesConfig, SessionConfig, Sessionizer,
    UserState, ValidationConfig, validate_and_normalise,
};
use clickpath_schema::{ClickEvent, EventType, Payment, PaymentStatus};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// The allocator of the `clickpath` binary, so each stage's logic is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 100_000;
/// Users in the stream; `CLICKPATH_BENCH_USERS` overrides it (fewer users: their state fits in the
/// cache, which separates cache misses from computation, docs/detector.md "Cost").
fn users() -> u64 {
    std::env::var("CLICKPATH_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5_000)
}
const START: i64 = 1_700_000_000_000;

/// A deterministic stream in near time order: ~20 events/s over [`users`] users, 2% duplicates.
fn stream() -> Vec<ClickEvent> {
    let users = users();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut t = START;
    let mut out: Vec<ClickEvent> = Vec::with_capacity(EVENTS);
    while out.len() < EVENTS {
        if next(50) == 0 && !out.is_empty() {
            let i = next(out.len() as u64) as usize;
            let dup = out[i].clone();
            out.push(dup);
            continue;
        }
        t += next(100) as i64;
        let kind = match next(100) {
            0..=39 => EventType::PageView,
            40..=69 => EventType::ProductView,
            70..=79 => EventType::Search,
            80..=87 => EventType::AddToCart,
            88..=90 => EventType::RemoveFromCart,
            91..=93 => EventType::BeginCheckout,
            94..=95 => EventType::PaymentAttempt,
            96..=97 => EventType::Purchase,
            98 => EventType::Wishlist,
            _ => EventType::Login,
        };
        let jitter = next(2_000) as i64; // disorder below the sessionizer's 5 s bound
        let mut e = ClickEvent::new(
            format!("evt-{:012}", out.len()),
            format!("user-{:06}", next(users)),
            kind,
            t - jitter,
        );
        e.item_id = Some(format!("item-{}", next(2_000)));
        e.category = Some("Electronics/Phones".into());
        e.price = Some(next(50_000) as f64 / 100.0);
        e.quantity = Some(1 + next(3) as i32);
        e.device = Some("Mobile".into());
        e.currency = Some("eur".into());
        if kind == EventType::PaymentAttempt {
            e.payment = Some(Payment {
                status: if next(4) == 0 {
                    PaymentStatus::Failed
                } else {
                    PaymentStatus::Succeeded
                },
                method: "card".into(),
                card_fingerprint: Some(format!("card-{}", next(10_000))),
            });
        }
        if kind == EventType::Purchase {
            e.order_value = Some(next(100_000) as f64 / 100.0);
        }
        out.push(e);
    }
    out
}

fn benches(c: &mut Criterion) {
    let events = stream();
    let now = events.iter().map(|e| e.event_time).max().unwrap_or(START);

    let mut g = c.benchmark_group("core_per_event");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);

    g.bench_function("validate_and_dedupe", |b| {
        let cfg = ValidationConfig::default();
        b.iter_batched(
            || events.clone(),
            |mut evs| {
                let mut d = Deduper::new(3_600_000, 1_000_000);
                let mut kept = 0usize;
                for e in &mut evs {
                    if validate_and_normalise(e, &cfg, now).is_ok()
                        && !d.is_duplicate(&e.event_id, e.event_time)
                    {
                        kept += 1;
                    }
                }
                black_box(kept)
            },
            BatchSize::LargeInput,
        )
    });

    g.bench_function("sessionizer", |b| {
        b.iter(|| {
            let mut s = Sessionizer::new(SessionConfig::default());
            let mut closed = 0usize;
            for e in &events {
                closed += s.on_event(e).len();
            }
            closed += s.flush().len();
            black_box(closed)
        })
    });

    // What the stage does per batch: drain late events, serialise every changed user's state.
    g.bench_function("sessionizer_with_changelog_per_500", |b| {
        b.iter(|| {
            let mut s = Sessionizer::new(SessionConfig::default());
            let (mut closed, mut bytes) = (0usize, 0usize);
            for chunk in events.chunks(500) {
                for e in chunk {
                    closed += s.on_event(e).len();
                }
                closed += s.take_late().len();
                for (_, st) in s.take_changed() {
                    bytes += st.map_or(0, |st| st.to_bytes().len());
                }
            }
            closed += s.flush().len();
            black_box((closed, bytes))
        })
    });

    g.bench_function("windower_feature_vector", |b| {
        b.iter(|| {
            let mut w = FeatureWindower::new(FeatureSpec::default());
            for e in &events {
                black_box(w.update(e));
            }
        })
    });

    g.bench_function("windower_values", |b| {
        b.iter(|| {
            let mut w = FeatureWindower::new(FeatureSpec::default());
            let mut out = Vec::new();
            for e in &events {
                w.update_values(e, &mut out);
                black_box(&out);
            }
        })
    });

    // A fresh detector per run (every user new, as in the other stages' runs); freeing its 5 000
    // users' state at the end is a shutdown cost, not a per-event one, so it is not timed.
    g.bench_function("detector", |b| {
        b.iter_batched(
            || Detector::new(RulesConfig::default(), "bench"),
            |mut d| {
                let mut alerts = 0usize;
                for e in &events {
                    alerts += d.on_event(e).len();
                }
                (black_box(alerts), d)
            },
            BatchSize::PerIteration,
        )
    });
    // The same users an hour later: every user's state exists and has grown, so this is the
    // per-event cost without the first-event allocations (a stream of returning users).
    let later: Vec<ClickEvent> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.event_time += 3_600_000;
            e.event_id.push_str("-later");
            e
        })
        .collect();
    g.bench_function("detector_returning_users", |b| {
        b.iter_batched(
            || {
                let mut d = Detector::new(RulesConfig::default(), "bench");
                events.iter().for_each(|e| drop(d.on_event(e)));
                d
            },
            |mut d| {
                let mut alerts = 0usize;
                for e in &later {
                    alerts += d.on_event(e).len();
                }
                (black_box(alerts), d)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The sessionizer's changelog values: encode and decode one user's state, binary (what the stage
/// writes) and JSON (what earlier versions wrote, still readable). Elements are users.
fn state_codec(c: &mut Criterion) {
    let events = stream();
    let mut s = Sessionizer::new(SessionConfig::default());
    for e in &events {
        s.on_event(e);
    }
    let states: Vec<UserState> = s
        .take_changed()
        .into_iter()
        .filter_map(|(_, st)| st)
        .collect();
    let binary: Vec<Vec<u8>> = states.iter().map(UserState::to_bytes).collect();
    let json: Vec<Vec<u8>> = states
        .iter()
        .map(|st| serde_json::to_vec(st).unwrap())
        .collect();
    let mut g = c.benchmark_group("sessionizer_state");
    g.throughput(Throughput::Elements(states.len() as u64));
    g.bench_function("encode_binary", |b| {
        b.iter(|| states.iter().map(|st| st.to_bytes().len()).sum::<usize>())
    });
    g.bench_function("encode_json", |b| {
        b.iter(|| {
            states
                .iter()
                .map(|st| serde_json::to_vec(st).unwrap().len())
                .sum::<usize>()
        })
    });
    g.bench_function("decode_binary", |b| {
        b.iter(|| {
            binary
                .iter()
                .map(|v| UserState::from_bytes(v).is_ok() as usize)
                .sum::<usize>()
        })
    });
    g.bench_function("decode_json", |b| {
        b.iter(|| {
            json.iter()
                .map(|v| UserState::from_bytes(v).is_ok() as usize)
                .sum::<usize>()
        })
    });
    g.finish();
}

/// The detector's Half-Space Trees forest alone (default settings, 9 features as the detector's):
/// score and learn one point. Elements are points.
fn half_space_trees(c: &mut Criterion) {
    use clickpath_core::anomaly::{HalfSpaceTrees, HstConfig};
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let points: Vec<[f64; 9]> = (0..100_000)
        .map(|_| {
            std::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1_000) as f64 / 1_000.0
            })
        })
        .collect();
    let mut g = c.benchmark_group("anomaly");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.sample_size(10);
    g.bench_function("hst_score_and_learn", |b| {
        let mut f = HalfSpaceTrees::new(9, &HstConfig::default());
        b.iter(|| {
            let mut total = 0.0;
            for p in &points {
                total += f.score_and_learn(p);
            }
            black_box(total)
        })
    });
    g.finish();
}

criterion_group!(core, benches, state_codec, half_space_trees);
criterion_main!(core);
