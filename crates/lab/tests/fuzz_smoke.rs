//! The fuzz targets of `fuzz/` on the stable toolchain: the same checks (`fuzz/src/targets.rs`), driven by a
//! seeded mutator over real seeds (generated events, hostile records, the adapter fixtures, the example
//! configurations) instead of libFuzzer's coverage feedback. Deterministic, a few seconds; the coverage-guided
//! runs are `scripts/fuzz.sh` (RELIABILITY.md).

#[path = "../../../fuzz/src/targets.rs"]
mod targets;

use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_lab::chaos::hostile::{HostileOptions, generate};
use clickpath_schema::codec::Codec;
use clickpath_stages::ClickpathConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// One random edit of `seed`: flip, set, insert or delete bytes, truncate, duplicate or splice.
fn mutate(rng: &mut StdRng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = [0x00, 0xFF, 0x7F, 0x80, b'"', b',', b'\n', b';'][rng.random_range(0..8)];
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 32));
                b.drain(i..j);
            }
            4 => b.truncate(rng.random_range(0..=len)),
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 64));
                let copy = b[i..j].to_vec();
                b.splice(j..j, copy);
            }
            6 if !other.is_empty() => {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            _ => {
                // A varint-sized lie somewhere: large and negative zig-zag lengths.
                let i = rng.random_range(0..=len);
                let lie: &[u8] = [
                    &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F][..],
                    &[0x01],
                    &[0x81, 0x80, 0x80, 0x80, 0x10],
                ][rng.random_range(0..3)];
                b.splice(i..i, lie.iter().copied());
            }
        }
    }
    b
}

fn run(target: fn(&[u8]), seeds: &[Vec<u8>], iterations: usize, rng_seed: u64) {
    let mut rng = StdRng::seed_from_u64(rng_seed);
    for s in seeds {
        target(s);
    }
    for _ in 0..iterations {
        let a = &seeds[rng.random_range(0..seeds.len())];
        let b = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, a, b);
        let result = std::panic::catch_unwind(|| target(&input));
        if result.is_err() {
            panic!("fuzz target panicked on input {input:?}");
        }
    }
}

#[test]
fn wire_decoder_survives_mutated_records() {
    let codec = Codec::embedded();
    let mut seeds: Vec<Vec<u8>> = Generator::new(GeneratorConfig {
        seed: 3,
        sessions: 30,
        ..GeneratorConfig::default()
    })
    .unwrap()
    .filter_map(|g| match g {
        Generated::Event(e) => Some(codec.encode(&e).unwrap()),
        Generated::Malformed(_) => None,
    })
    .collect();
    let mut opts = HostileOptions::for_config(&ClickpathConfig::default(), 200, 5);
    opts.max_record_bytes = 4096;
    seeds.extend(generate(&opts, &codec).into_iter().map(|r| r.payload));
    run(targets::wire_decode, &seeds, 100_000, 1);
}

#[test]
fn adapters_survive_mutated_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../adapters/tests/fixtures");
    let head = |rel: &str, n: usize| -> Vec<u8> {
        let b = std::fs::read(dir.join(rel)).unwrap();
        b[..b.len().min(n)].to_vec()
    };
    let with_format = |format: u8, file: Vec<u8>| -> Vec<u8> {
        let mut v = vec![format];
        v.extend(file);
        v
    };
    // The first byte picks the format: Format::ALL order is rees46, retailrocket, otto, diginetica.
    let seeds = vec![
        with_format(0, head("rees46/2019-Oct-sample.csv", 1500)),
        with_format(1, head("retailrocket/events.csv", 400)),
        with_format(2, head("otto/train.jsonl", 1500)),
        with_format(
            3,
            b"sessionId;userId;itemId;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n1;;31331;1031018;2016-05-09\n2;18278.0;32118;243569;2016-05-09\n"
                .to_vec(),
        ),
        with_format(
            3,
            b"sessionId;userId;timeframe;eventdate;ordernumber;itemId\n150;18278;849418;2016-05-06;25;10062\n".to_vec(),
        ),
        with_format(
            3,
            b"session_id,user_id,timeframe,eventdate,event_type,item_id,ordernumber\n1,NA,526309,2016-05-09,view,81766,\n1,NA,600000,2016-05-09,purchase,81766,7\n".to_vec(),
        ),
    ];
    run(targets::adapters, &seeds, 20_000, 2);
}

#[test]
fn config_loader_survives_mutated_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.push(b"[kafka]\nbrokers = \"b:9092\"\nproperties = { \"security.protocol\" = \"SSL\" }\n[topics]\npartitions = 6\n".to_vec());
    seeds.push(b"[runtime]\nmax_batch = 0\n[cleaning.validation]\nmax_extras = -1\n".to_vec());
    run(targets::config, &seeds, 4_000, 3);
}
