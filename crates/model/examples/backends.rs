//! Compares Burn's CPU backends (`flex`, the default, and `ndarray`) on the sequence models:
//! training speed (two epochs of a GRU-64) and the online step per batch size.
//!
//! ```sh
//! clickpath generate --out data
//! cargo run --release -p clickpath-model --features ndarray --example backends -- data/events.jsonl
//! ```

use std::io::BufRead;
use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clickpath_model::sequence::{
    NetConfig, SequenceModel, SequenceTrainConfig, Step, UserMemory, train_sequence,
};
use clickpath_schema::ClickEvent;

fn train_speed<B: AutodiffBackend>(name: &str, events: &[ClickEvent]) {
    let cfg = SequenceTrainConfig {
        max_epochs: 2,
        patience: 2,
        ..SequenceTrainConfig::default()
    };
    let r = train_sequence::<B>(events, &cfg, &Default::default(), &mut |_| {}).expect("trains");
    let best = r
        .history
        .iter()
        .map(|e| e.sequences_per_second)
        .fold(0.0, f64::max);
    println!("| {name} | train GRU-64 | {best:.0} sequences/s |");
}

fn step_speed<B: Backend>(name: &str, batch: usize) {
    let features = 25;
    let cfg = NetConfig {
        numeric_features: features,
        ..NetConfig::default()
    };
    let model = SequenceModel::<B>::untrained(cfg, Default::default());
    let steps: Vec<Step> = (0..batch)
        .map(|i| Step {
            event_type: (i % 10) as u32,
            category: 1 + (i % 100) as u32,
            item: 1 + (i % 1000) as u32,
            numeric: vec![0.1; features],
        })
        .collect();
    let mut mems = vec![UserMemory::default(); batch];
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed().as_secs_f64() < 2.0 {
        let mut items: Vec<(&Step, &mut UserMemory)> = steps.iter().zip(mems.iter_mut()).collect();
        n += model.step_batch(&mut items).len();
    }
    println!(
        "| {name} | online step GRU-64, batch {batch} | {:.0} event-steps/s |",
        n as f64 / started.elapsed().as_secs_f64()
    );
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: backends EVENTS.jsonl");
    let file = std::fs::File::open(&path).expect("events file");
    let events: Vec<ClickEvent> = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    println!("| backend | work | speed |\n|---|---|---|");
    for batch in [1, 64, 256] {
        step_speed::<Flex>("flex", batch);
        step_speed::<NdArray>("ndarray", batch);
    }
    train_speed::<Autodiff<Flex>>("flex", &events);
    train_speed::<Autodiff<NdArray>>("ndarray", &events);
}
