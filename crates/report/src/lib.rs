//! `clickpath report` (crate `clickpath-report`): path analytics of a file of events, or of a topic, as one self-contained HTML page.
//!
//! From a file (`--input`, `--format F FILE`) or a topic of click events (`--topic`, e.g. the clean
//! topic, within `--since`/`--until`/`--max-records`) the events are analysed here. From the
//! analytics topic the stage's funnel aggregates are merged instead ([`topic`]).
//!
//! The page inlines its CSS, its SVG charts (drawn with `plotters`' SVG backend, see
//! [`charts`]) and a small script that checks every chart rendered (the browser test reads its
//! marker). Nothing is fetched from the network when it is opened.

pub mod charts;
pub mod extras;
mod html;
pub mod topic;

use anyhow::Context as _;
use clap::Args;
use clickpath_adapters::Format;
use clickpath_core::analytics::{
    Analysis, AnalysisSpec, FunnelOrder, FunnelSpec, Step, Unit, analyse,
};
use clickpath_runtime::BusConfig;
use clickpath_schema::FunnelAggregate;
use clickpath_schema::codec::Codec;
use clickpath_schema::{AvroRecord, ClickEvent, Prediction};
use std::path::{Path, PathBuf};
use std::time::Duration;
use topic::TopicRange;

pub use extras::{Extras, Scored};
pub use html::{render_aggregates_html, render_html};

/// Options of `clickpath report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Events as clickpath JSON lines (from `clickpath generate --out`).
    #[arg(long, conflicts_with_all = ["format", "file", "topic"])]
    pub input: Option<PathBuf>,
    /// Read a topic instead of a file: a topic of click events (`clean`, `raw` or a name) is
    /// analysed; the analytics topic (`analytics`, or its name) gives the stage's funnel aggregates.
    #[arg(long, conflicts_with_all = ["format", "file"])]
    pub topic: Option<String>,
    /// With --topic: first record to read, by record timestamp (ms since the epoch, RFC 3339 like
    /// 2026-11-30T12:00:00Z or 2026-11-30T14:00:00+02:00, or a UTC date like 2026-11-30).
    #[arg(long, requires = "topic")]
    pub since: Option<String>,
    /// With --topic: read records with timestamps before this (same forms as --since).
    #[arg(long, requires = "topic")]
    pub until: Option<String>,
    /// With --topic: read at most this many records.
    #[arg(long, requires = "topic")]
    pub max_records: Option<u64>,
    /// With --topic: give up when reading takes longer (seconds).
    #[arg(long, requires = "topic", default_value_t = 120)]
    pub read_timeout_secs: u64,
    /// Format of FILE.
    #[arg(long, requires = "file", value_enum)]
    pub format: Option<Format>,
    /// The data set file read with --format.
    pub file: Option<PathBuf>,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the analysis as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Funnel steps, comma-separated; `|` joins event types into one step.
    #[arg(long, default_value = "PRODUCT_VIEW,ADD_TO_CART,PURCHASE")]
    pub steps: String,
    /// Step order: ordered, strict or any-order.
    #[arg(long, default_value = "ordered")]
    pub order: String,
    /// Conversion window in minutes, from the first step.
    #[arg(long, default_value_t = 14 * 24 * 60)]
    pub window_minutes: i64,
    /// Count users or sessions (`session_id`, else the user).
    #[arg(long, value_enum, default_value_t = UnitArg::User)]
    pub unit: UnitArg,
    /// Time-bucket width in minutes.
    #[arg(long, default_value_t = 24 * 60)]
    pub bucket_minutes: i64,
    /// Minimum number of units a decision factor needs.
    #[arg(long, default_value_t = 10)]
    pub min_support: u64,
    /// Model scores as JSON lines `{"score": p, "label": bool}`: adds ROC and calibration.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Fraud alerts as JSON lines (`FraudAlert` records): adds an alert timeline.
    #[arg(long)]
    pub alerts: Option<PathBuf>,
    /// A session outlook artifact (`clickpath train --model outlook`): adds its segments and return
    /// propensity over the report's sessions.
    #[arg(long)]
    pub outlook_model: Option<PathBuf>,
    /// Aggregate the scorer's decision factors from this topic (`predictions`, or a name): adds
    /// the model-attribution chart. Reads up to --max-records (or all) records.
    #[arg(long)]
    pub predictions_topic: Option<String>,
}

/// What `--unit` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnitArg {
    /// Users.
    User,
    /// Sessions (`session_id`, else the user).
    Session,
}

impl ReportArgs {
    /// The analysis settings these options describe.
    pub fn spec(&self) -> anyhow::Result<AnalysisSpec> {
        let steps = self
            .steps
            .split(',')
            .map(Step::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let order: FunnelOrder = self.order.parse().map_err(anyhow::Error::msg)?;
        let unit = match self.unit {
            UnitArg::User => Unit::User,
            UnitArg::Session => Unit::Session,
        };
        let funnel = FunnelSpec::new(
            steps,
            order,
            self.window_minutes.saturating_mul(60_000),
            unit,
            self.bucket_minutes.saturating_mul(60_000),
        )?;
        let mut spec = AnalysisSpec {
            funnel,
            ..AnalysisSpec::default()
        };
        spec.factors.min_support = self.min_support;
        Ok(spec)
    }

    /// The events and a name for their source.
    pub fn load(&self) -> anyhow::Result<(Vec<ClickEvent>, String, u64)> {
        match (&self.input, &self.format, &self.file) {
            (Some(p), None, None) => {
                let (events, bad) = read_dataset(Format::Jsonl, p)?;
                Ok((events, p.display().to_string(), bad))
            }
            (None, Some(fmt), Some(p)) => {
                let (events, bad) = read_dataset(*fmt, p)?;
                Ok((events, format!("{} ({fmt})", p.display()), bad))
            }
            _ => anyhow::bail!(
                "say what to read: --input EVENTS.jsonl, --format FORMAT FILE, or --topic TOPIC"
            ),
        }
    }
}

/// Reads a file of events in `format`; bad rows are counted and skipped with a warning.
pub fn read_dataset(format: Format, path: &Path) -> anyhow::Result<(Vec<ClickEvent>, u64)> {
    let mut events = Vec::new();
    let mut bad = 0;
    for item in clickpath_adapters::read(format, path)? {
        match item {
            Ok(e) => events.push(e),
            Err(e) => {
                bad += 1;
                tracing::warn!(file = %path.display(), error = %e, "Row skipped.");
            }
        }
    }
    Ok((events, bad))
}

/// What `--topic` names: a configured role (`clean`, `analytics`, ...) or a topic name.
fn topic_name<'a>(cfg: &'a BusConfig, topic: &'a str) -> &'a str {
    cfg.topics
        .all()
        .into_iter()
        .find(|(role, _)| *role == topic)
        .map(|(_, name)| name)
        .unwrap_or(topic)
}

impl ReportArgs {
    /// The records range of `--since`, `--until` and `--max-records`.
    pub fn range(&self) -> anyhow::Result<TopicRange> {
        let since_ms = self
            .since
            .as_deref()
            .map(topic::parse_time)
            .transpose()
            .context("--since")?;
        let until_ms = self
            .until
            .as_deref()
            .map(topic::parse_time)
            .transpose()
            .context("--until")?;
        if let (Some(a), Some(b)) = (since_ms, until_ms) {
            anyhow::ensure!(a < b, "--since must be before --until");
        }
        Ok(TopicRange {
            since_ms,
            until_ms,
            max_records: self.max_records,
        })
    }
}

/// Runs `clickpath report`: analyses, writes the HTML (and JSON) and returns a text summary.
/// `cfg` gives the brokers and topic names for `--topic`.
pub fn run(args: &ReportArgs, cfg: &BusConfig) -> anyhow::Result<String> {
    let spec = args.spec()?;
    let (events, source, bad) = match &args.topic {
        None => args.load()?,
        Some(t) => {
            let name = topic_name(cfg, t);
            let range = args.range()?;
            let timeout = Duration::from_secs(args.read_timeout_secs.max(1));
            let codec = Codec::embedded();
            let raw = topic::read_topic(cfg, name, range, timeout)?;
            let holds_aggregates =
                topic::first_subject(&raw.records).as_deref() == Some(FunnelAggregate::FULL_NAME);
            if name == cfg.topics.analytics || holds_aggregates {
                return run_aggregates(args, name, topic::decode_all(&codec, raw));
            }
            let read = topic::decode_all::<ClickEvent>(&codec, raw);
            let source = format!(
                "topic {name} ({} records from {} partitions)",
                read.records.len() as u64 + read.undecodable,
                read.partitions
            );
            (read.records, source, read.undecodable)
        }
    };
    let analysis = analyse(&events, &spec);
    let extras = Extras {
        scores: args
            .scores
            .as_deref()
            .map(extras::read_json_lines)
            .transpose()?,
        alerts: args
            .alerts
            .as_deref()
            .map(extras::read_json_lines)
            .transpose()?,
        outlook: match &args.outlook_model {
            None => None,
            Some(dir) => {
                let (model, meta) = clickpath_model::outlook::load_outlook(dir)
                    .with_context(|| format!("--outlook-model {}", dir.display()))?;
                Some(extras::outlook_section(&events, &model, &meta))
            }
        },
        attributions: match &args.predictions_topic {
            None => None,
            Some(t) => {
                let name = topic_name(cfg, t);
                let range = TopicRange {
                    max_records: args.max_records,
                    ..TopicRange::default()
                };
                let raw = topic::read_topic(
                    cfg,
                    name,
                    range,
                    Duration::from_secs(args.read_timeout_secs.max(1)),
                )?;
                let read = topic::decode_all::<Prediction>(&Codec::embedded(), raw);
                Some(extras::aggregate_attributions(&read.records, 20))
            }
        },
    };
    let html = render_html(&analysis, &source, &extras)?;
    std::fs::write(&args.out, html).with_context(|| args.out.display().to_string())?;
    if let Some(j) = &args.json {
        std::fs::write(j, serde_json::to_string_pretty(&analysis)?)
            .with_context(|| j.display().to_string())?;
    }
    let mut text = summary(&analysis);
    if bad > 0 {
        let what = if args.topic.is_some() {
            "undecodable records"
        } else {
            "bad rows"
        };
        text.push_str(&format!("{bad} {what} skipped\n"));
    }
    text.push_str(&format!("report written to {}\n", args.out.display()));
    Ok(text)
}

/// `clickpath report --topic analytics`: merges the funnel aggregates and writes their page.
fn run_aggregates(
    args: &ReportArgs,
    name: &str,
    read: topic::TopicRead<FunnelAggregate>,
) -> anyhow::Result<String> {
    let Some(merged) = topic::merge_rows(&read.records) else {
        anyhow::bail!(
            "topic {name} has no funnel aggregates in that range ({} undecodable records); the analytics \
             stage publishes a bucket once analytics.bucket_ms + window_ms + lateness_ms have passed in event time",
            read.undecodable
        );
    };
    let source = format!(
        "topic {name} ({} rows from {} partitions)",
        read.records.len(),
        read.partitions
    );
    let html = render_aggregates_html(&merged, &source)?;
    std::fs::write(&args.out, html).with_context(|| args.out.display().to_string())?;
    if let Some(j) = &args.json {
        let rows: Vec<serde_json::Value> = merged
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "bucket_start": r.bucket_start,
                    "segment": r.segment,
                    "segment_value": r.segment_value,
                    "parts": r.parts,
                    "counts": r.counts,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "steps": merged.steps,
            "funnel_order": merged.funnel_order,
            "window_ms": merged.window_ms,
            "bucket_ms": merged.bucket_ms,
            "overall": merged.overall(),
            "rows": rows,
        });
        std::fs::write(j, serde_json::to_string_pretty(&doc)?)
            .with_context(|| j.display().to_string())?;
    }
    let c = merged.overall();
    let buckets = merged.rows.iter().filter(|r| r.segment == "all").count();
    let mut text = format!(
        "{} funnel rows, {buckets} buckets of {} min; funnel {}, window {} min\n",
        read.records.len(),
        merged.bucket_ms / 60_000,
        merged.funnel_order,
        merged.window_ms / 60_000
    );
    text.push_str("step                              uniques   totals  of first\n");
    for (k, name) in merged.steps.iter().enumerate() {
        text.push_str(&format!(
            "{:<32} {:>9} {:>8} {:>8.1}%\n",
            name,
            c.uniques[k],
            c.totals[k],
            100.0 * c.uniques[k] as f64 / c.uniques[0].max(1) as f64
        ));
    }
    if merged.replaced + merged.other_funnel + read.undecodable as usize > 0 {
        text.push_str(&format!(
            "{} replayed rows replaced, {} rows of another funnel left out, {} undecodable records skipped\n",
            merged.replaced, merged.other_funnel, read.undecodable
        ));
    }
    text.push_str(&format!("report written to {}\n", args.out.display()));
    Ok(text)
}

/// The funnel as a plain-text table (what `clickpath report` prints).
pub fn summary(a: &Analysis) -> String {
    let f = &a.funnel;
    let c = &f.overall;
    let mut s = format!(
        "{} events, {} {}s; funnel {:?}, window {} min\n",
        a.events,
        a.units,
        match f.unit {
            Unit::User => "user",
            Unit::Session => "session",
        },
        f.order,
        f.window_ms / 60_000
    );
    s.push_str("step                              uniques   totals  of first  of previous\n");
    for (k, name) in f.steps.iter().enumerate() {
        let first = c.uniques.first().copied().unwrap_or(0).max(1) as f64;
        let prev = if k == 0 {
            c.uniques[0]
        } else {
            c.uniques[k - 1]
        }
        .max(1) as f64;
        s.push_str(&format!(
            "{:<32} {:>9} {:>8} {:>8.1}% {:>11.1}%\n",
            name,
            c.uniques[k],
            c.totals[k],
            100.0 * c.uniques[k] as f64 / first,
            100.0 * c.uniques[k] as f64 / prev
        ));
    }
    if let Some(m) = c.time_to_convert.median_ms {
        s.push_str(&format!(
            "time to convert: median {}, p90 {}\n",
            html::duration(m),
            c.time_to_convert
                .p90_ms
                .map(html::duration)
                .unwrap_or_default()
        ));
    }
    s
}
