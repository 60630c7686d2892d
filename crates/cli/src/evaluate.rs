//! `clickpath evaluate`: sequence models, the baselines (logistic regression on aggregate
//! features, Markov chain for the next action) and the generator's oracle, on the same test
//! split of the same events, in one table.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clickpath_adapters::Format;
use clickpath_core::FeatureSpec;
use clickpath_generator::TruthRecord;
use clickpath_model::dataset::build_dataset;
use clickpath_model::sequence::{CpuBackend, SequenceMeta, evaluate_sequences, load_sequence};
use clickpath_model::train::{EvalMetrics, TrainConfig, metrics_of, train_baseline};
use clickpath_report::read_dataset;
use clickpath_schema::ClickEvent;
use serde::Serialize;

/// Arguments of `clickpath evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// Events file.
    #[arg(long)]
    pub input: PathBuf,
    /// Format of --input.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Sequence-model artifact directories to evaluate (repeat the flag for several).
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// The generator's truth.jsonl, for the oracle row (generated data only).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the first model's test-split scores as JSON lines `{"score": p, "label": bool}`
    /// (the input of `clickpath report --scores`: ROC and calibration).
    #[arg(long)]
    pub scores_out: Option<PathBuf>,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Model name and version.
    pub model: String,
    /// Its metrics on the test split.
    pub metrics: EvalMetrics,
}

/// Reads events from `path` in `format`; unreadable rows are counted and skipped with a warning.
pub fn read_events(path: &Path, format: Format) -> anyhow::Result<Vec<ClickEvent>> {
    let (events, bad) =
        read_dataset(format, path).with_context(|| format!("reading {}", path.display()))?;
    if bad > 0 {
        eprintln!("{}: {bad} unreadable rows skipped", path.display());
    }
    Ok(events)
}

/// The generator's true purchase probability per client session id.
fn read_truth(path: &Path) -> anyhow::Result<HashMap<String, f64>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = HashMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: TruthRecord = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if let TruthRecord::Session(s) = rec {
            out.insert(s.session_id, s.purchase_probability);
        }
    }
    Ok(out)
}

fn row(model: impl Into<String>, metrics: EvalMetrics) -> Row {
    Row {
        model: model.into(),
        metrics,
    }
}

/// Evaluates every model of `args` plus the baselines (and the oracle with a truth file).
pub fn compare(args: &EvaluateArgs) -> anyhow::Result<Vec<Row>> {
    let events = read_events(&args.input, args.format)?;
    let mut loaded: Vec<(PathBuf, SequenceMeta)> = Vec::new();
    let mut rows = Vec::new();
    let device = Default::default();
    // The split and features of the first model (or the defaults) define the test set of the
    // baselines and the oracle.
    let mut base_cfg = TrainConfig::default();
    for dir in &args.models {
        let meta: SequenceMeta = serde_json::from_slice(
            &std::fs::read(dir.join("meta.json"))
                .with_context(|| format!("{}", dir.join("meta.json").display()))?,
        )
        .with_context(|| format!("{}: not a sequence-model artifact", dir.display()))?;
        if loaded.is_empty() {
            base_cfg.session = meta.training.config.session.clone();
            base_cfg.features = meta.training.config.features.clone();
            base_cfg.split = meta.training.config.split.clone();
        }
        loaded.push((dir.clone(), meta));
    }
    for (dir, meta) in &loaded {
        let spec: &FeatureSpec = &meta.training.config.features;
        let (model, _) = load_sequence::<CpuBackend>(dir, spec, &device)
            .with_context(|| format!("loading {}", dir.display()))?;
        let dataset = build_dataset(&events, &meta.training.config.session, spec);
        let splits = dataset.split(&meta.training.config.split)?;
        let seqs = clickpath_model::sequence::data::sequences(
            &splits.test,
            model.buckets(),
            &model.normalizer,
        );
        rows.push(row(meta.version.clone(), evaluate_sequences(&model, &seqs)));
        if let (Some(path), true) = (&args.scores_out, rows.len() == 1) {
            write_scores(path, &model, &seqs)?;
        }
    }
    let baseline = train_baseline(&events, &base_cfg)?;
    let m = baseline.metrics().clone();
    rows.push(row(
        "logistic regression (purchase) + Markov chain (next action)",
        m,
    ));
    if let Some(truth_path) = &args.truth {
        let truth = read_truth(truth_path)?;
        let session_of: HashMap<&str, &str> = events
            .iter()
            .filter_map(|e| e.session_id.as_deref().map(|s| (e.event_id.as_str(), s)))
            .collect();
        let dataset = build_dataset(&events, &base_cfg.session, &base_cfg.features);
        let splits = dataset.split(&base_cfg.split)?;
        let (mut p, mut y) = (Vec::new(), Vec::new());
        for ex in &splits.test {
            let prob = session_of
                .get(ex.features.event_id.as_str())
                .and_then(|s| truth.get(*s));
            if let Some(prob) = prob {
                p.push(*prob);
                y.push(ex.purchase);
            }
        }
        let none: [Vec<f64>; 0] = [];
        rows.push(row(
            "oracle (generator's true session probability)",
            metrics_of(&p, &y, &none, &[]),
        ));
    }
    Ok(rows)
}

/// Writes `{"score", "label"}` JSON lines for every test step of `seqs`.
fn write_scores(
    path: &Path,
    model: &clickpath_model::sequence::SequenceModel<CpuBackend>,
    seqs: &[clickpath_model::sequence::data::Sequence<'_>],
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(
        File::create(path).with_context(|| format!("writing {}", path.display()))?,
    );
    for (seq, outs) in seqs.iter().zip(model.score_sequences(seqs)) {
        for (ex, o) in seq.examples.iter().zip(outs) {
            let line = clickpath_report::Scored {
                score: o.purchase,
                label: ex.purchase,
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| model | test examples | ROC-AUC | PR-AUC | log loss | ECE | next top-1 | next top-3 |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let m = &r.metrics;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            m.examples,
            cell(m.roc_auc),
            cell(m.pr_auc),
            cell(m.log_loss),
            cell(m.ece),
            cell(m.next_action_top1),
            cell(m.next_action_top3)
        ));
    }
    out
}

/// Runs `clickpath evaluate`: the table, and the JSON file when asked.
pub fn run(args: &EvaluateArgs) -> anyhow::Result<String> {
    let rows = compare(args)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(table(&rows))
}
