//! `clickpath generate`: generated events with ground truth, to files or to the raw topic.

use crate::produce::EventProducer;
use clickpath_generator::{Generated, Generator, GeneratorConfig, corrupt};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Counts of one generation run.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct GenerateStats {
    /// Valid events written or sent (duplicates included).
    pub events: u64,
    /// Malformed records written or sent.
    pub malformed: u64,
}

/// Sends one generated item: valid events encoded, malformed ones corrupted on the wire as labelled.
pub fn send_generated(producer: &mut EventProducer, item: &Generated) -> anyhow::Result<bool> {
    match item {
        Generated::Event(ev) => {
            producer.send_event(ev)?;
            Ok(false)
        }
        Generated::Malformed(m) => {
            let valid = producer.codec().encode(&m.event)?;
            let bytes = if m.kind.is_wire_level() {
                corrupt(&valid, m.kind)
            } else {
                valid
            };
            producer.send_raw(m.key.as_bytes(), &bytes)?;
            Ok(true)
        }
    }
}

/// Generates into the raw topic at `rate` records/s (0 = as fast as possible), calling `progress` now and then.
pub fn generate_to_kafka(
    generator: Generator,
    producer: &mut EventProducer,
    mut progress: impl FnMut(&GenerateStats),
) -> anyhow::Result<GenerateStats> {
    let mut stats = GenerateStats::default();
    for item in generator {
        if send_generated(producer, &item)? {
            stats.malformed += 1;
        } else {
            stats.events += 1;
        }
        if (stats.events + stats.malformed) % 1000 == 0 {
            progress(&stats);
        }
    }
    producer.flush()?;
    progress(&stats);
    Ok(stats)
}

/// Writes `events.jsonl` (the valid events, duplicates and disorder included), `malformed.jsonl` (every
/// injected bad record with its kind) and `truth.jsonl` (the generator's ground truth: true purchase
/// probability per session, anomaly and malformed labels).
pub fn generate_to_dir(config: GeneratorConfig, dir: &Path) -> anyhow::Result<GenerateStats> {
    std::fs::create_dir_all(dir)?;
    let mut generator = Generator::new(config)?;
    let mut events = BufWriter::new(File::create(dir.join("events.jsonl"))?);
    let mut malformed = BufWriter::new(File::create(dir.join("malformed.jsonl"))?);
    let mut truth = BufWriter::new(File::create(dir.join("truth.jsonl"))?);
    let mut stats = GenerateStats::default();
    while let Some(item) = generator.next() {
        match &item {
            Generated::Event(ev) => {
                serde_json::to_writer(&mut events, ev)?;
                events.write_all(b"\n")?;
                stats.events += 1;
            }
            Generated::Malformed(m) => {
                serde_json::to_writer(&mut malformed, m)?;
                malformed.write_all(b"\n")?;
                stats.malformed += 1;
            }
        }
        if (stats.events + stats.malformed) % 10_000 == 0 {
            write_truth(&mut generator, &mut truth)?;
        }
    }
    write_truth(&mut generator, &mut truth)?;
    truth.flush()?;
    events.flush()?;
    malformed.flush()?;
    Ok(stats)
}

/// Appends the ground truth released so far (keeps the generator's memory bounded).
fn write_truth(generator: &mut Generator, out: &mut impl Write) -> anyhow::Result<()> {
    for record in generator.take_truth() {
        serde_json::to_writer(&mut *out, &record)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a JSON-lines file of click events (as written by `generate --out`).
pub fn read_events_jsonl(path: &Path) -> anyhow::Result<Vec<clickpath_schema::ClickEvent>> {
    use std::io::BufRead;
    let f = std::io::BufReader::new(
        File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
    );
    let mut out = Vec::new();
    for (i, line) in f.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!("{}:{}: not a click event: {e}", path.display(), i + 1)
        })?);
    }
    Ok(out)
}
