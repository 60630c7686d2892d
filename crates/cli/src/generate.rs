//! `clickpath generate`: generated events with ground truth, to files or to the raw topic.

use crate::app::GlobalArgs;
use crate::produce::EventProducer;
use anyhow::Context as _;
use clickpath_generator::{Generated, Generator, GeneratorConfig, corrupt};
use clickpath_schema::codec::Codec;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Arguments of `clickpath generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Write events.jsonl, malformed.jsonl and ground truth into this directory.
    #[arg(long, conflicts_with = "kafka")]
    pub out: Option<PathBuf>,
    /// Produce into the raw topic instead.
    #[arg(long)]
    pub kafka: bool,
    /// Sessions to generate (overrides the generator config).
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Seed (overrides the generator config).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Records per second when producing (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Generator configuration (TOML; see GeneratorConfig).
    #[arg(long)]
    pub generator_config: Option<PathBuf>,
}

/// `clickpath generate`: to files (`--out`) or to the raw topic (`--kafka`).
pub fn run(args: &GenerateArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let mut gcfg: GeneratorConfig = match &args.generator_config {
        Some(p) => {
            toml::from_str(&std::fs::read_to_string(p).with_context(|| p.display().to_string())?)
                .with_context(|| format!("{}: invalid generator config", p.display()))?
        }
        None => GeneratorConfig::default(),
    };
    if let Some(s) = args.sessions {
        gcfg.sessions = s as u64;
    }
    if let Some(s) = args.seed {
        gcfg.seed = s;
    }
    if let Some(dir) = &args.out {
        let stats = generate_to_dir(gcfg, dir)?;
        println!(
            "wrote {} events and {} malformed records to {}",
            stats.events,
            stats.malformed,
            dir.display()
        );
    } else if args.kafka {
        let cfg = global.load_config()?;
        let mut producer = EventProducer::new(&cfg, Codec::embedded(), &cfg.topics.raw, args.rate)?;
        let bar = indicatif::ProgressBar::new_spinner();
        let stats = generate_to_kafka(Generator::new(gcfg)?, &mut producer, |s| {
            bar.set_message(format!("{} events, {} malformed", s.events, s.malformed));
            bar.tick();
        })?;
        bar.finish();
        println!(
            "sent {} events and {} malformed records to {}",
            stats.events, stats.malformed, cfg.topics.raw
        );
    } else {
        anyhow::bail!("say where to: --out DIR or --kafka")
    }
    Ok(())
}

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
