//! `clickpath report`: path analytics of a file of events as one self-contained HTML page.
//!
//! The page inlines its CSS, its SVG charts (drawn with `plotters`' SVG backend, see
//! [`charts`]) and a small script that checks every chart rendered (the browser test reads its
//! marker). Nothing is fetched from the network when it is opened.

pub mod charts;
pub mod extras;
mod html;

use anyhow::Context as _;
use clap::Args;
use clickpath_core::analytics::{
    Analysis, AnalysisSpec, FunnelOrder, FunnelSpec, Step, Unit, analyse,
};
use clickpath_schema::ClickEvent;
use std::path::{Path, PathBuf};

pub use extras::{Extras, Scored};
pub use html::render_html;

/// Options of `clickpath report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Events as clickpath JSON lines (from `clickpath generate --out`).
    #[arg(long, conflicts_with_all = ["format", "file"])]
    pub input: Option<PathBuf>,
    /// Format of FILE: rees46, retailrocket, otto or diginetica.
    #[arg(long, requires = "file")]
    pub format: Option<String>,
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
    #[arg(long, default_value = "user")]
    pub unit: String,
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
        let unit = match self.unit.as_str() {
            "user" => Unit::User,
            "session" => Unit::Session,
            u => anyhow::bail!("--unit {u}: expected user or session"),
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
            (Some(p), None, None) => Ok((
                crate::generate::read_events_jsonl(p)?,
                p.display().to_string(),
                0,
            )),
            (None, Some(f), Some(p)) => {
                let fmt: clickpath_adapters::Format = f
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--format {f}: {e}"))?;
                let (events, bad) = read_dataset(fmt, p)?;
                Ok((events, format!("{} ({fmt})", p.display()), bad))
            }
            _ => anyhow::bail!("say what to read: --input EVENTS.jsonl, or --format FORMAT FILE"),
        }
    }
}

/// Reads a public data set file; bad rows are counted and skipped.
pub fn read_dataset(
    format: clickpath_adapters::Format,
    path: &Path,
) -> anyhow::Result<(Vec<ClickEvent>, u64)> {
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

/// Runs `clickpath report`: analyses, writes the HTML (and JSON) and returns a text summary.
pub fn run(args: &ReportArgs) -> anyhow::Result<String> {
    let spec = args.spec()?;
    let (events, source, bad) = args.load()?;
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
    };
    let html = render_html(&analysis, &source, &extras)?;
    std::fs::write(&args.out, html).with_context(|| args.out.display().to_string())?;
    if let Some(j) = &args.json {
        std::fs::write(j, serde_json::to_string_pretty(&analysis)?)
            .with_context(|| j.display().to_string())?;
    }
    let mut text = summary(&analysis);
    if bad > 0 {
        text.push_str(&format!("{bad} bad rows skipped\n"));
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
