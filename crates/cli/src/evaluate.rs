//! `clickpath evaluate`: sequence models, the baselines (logistic regression on aggregate
//! features, Markov chain for the next action) and the generator's session probability, on the same test
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
use clickpath_model::recommend::{
    ItemVocab, RecMetrics, Recommend, RecommendConfig, compare_baselines_of,
};
use clickpath_model::sequence::{
    CpuBackend, SequenceMeta, evaluate_items, evaluate_sequences, load_sequence, rec_metrics,
};
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
    /// The generator's truth.jsonl, for the row scored with each session's drawn purchase
    /// probability (generated data only).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Also write the tables as JSON to this file (`{"purchase": [...], "next_item": [...],
    /// "next_category": [...]}`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Length of the next-item lists (Recall@k, MRR@k).
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Length of the next-category lists (Recall@k, MRR@k of the category table).
    #[arg(long, default_value_t = clickpath_model::sequence::train::CATEGORY_RECOMMENDATIONS)]
    pub category_k: usize,
    /// Also rank each item-head model's recommendations through the experimental item index
    /// (`sequence::index`: inverted lists over the output embeddings, or a graph with
    /// --item-index-graph-degree) and report what it loses
    /// against the exact scan.
    #[arg(long)]
    pub item_index: bool,
    /// With --item-index: items with the largest bias scanned on every query (the popular head).
    #[arg(long, default_value_t = clickpath_model::sequence::index::IndexConfig::default().head, requires = "item_index")]
    pub item_index_head: usize,
    /// With --item-index: clusters (0: the square root of the clustered items).
    #[arg(long, default_value_t = 0, requires = "item_index")]
    pub item_index_lists: usize,
    /// With --item-index: clusters scanned per query (0: an eighth, at least 8).
    #[arg(long, default_value_t = 0, requires = "item_index")]
    pub item_index_probe: usize,
    /// With --item-index: a proximity graph with this many links per item instead of clusters
    /// (0: clusters; the cluster options do not apply to a graph).
    #[arg(long, default_value_t = 0, requires = "item_index",
          conflicts_with_all = ["item_index_head", "item_index_lists", "item_index_probe"])]
    pub item_index_graph_degree: usize,
    /// With --item-index-graph-degree: items kept while searching the graph (the beam width).
    #[arg(long, default_value_t = clickpath_model::sequence::index::IndexConfig::default().graph_ef, requires = "item_index_graph_degree")]
    pub item_index_graph_ef: usize,
    /// Least training occurrences for an item to be recommendable by the baselines (SR-GNN's
    /// protocol uses 5); with a model that has an item head, its vocabulary is used instead.
    #[arg(long, default_value_t = 5)]
    pub min_item_count: u64,
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

/// Name of the row scored with the generator's per-session purchase probability. It knows the
/// user's intent and the session's mood but none of the session's events, so it is a reference
/// for the first events, not an upper bound: later events carry information it lacks.
pub const SESSION_PRIOR_ROW: &str =
    "generator's session-start probability (reference, not a bound)";

/// Suffix of the row of a blended model's network alone (without its purchase blend).
pub const NETWORK_ONLY: &str = "(network only)";

fn row(model: impl Into<String>, metrics: EvalMetrics) -> Row {
    Row {
        model: model.into(),
        metrics,
    }
}

/// Both comparisons of one `clickpath evaluate` run.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Purchase probability and next action, one row per model.
    pub purchase: Vec<Row>,
    /// Next item (Recall@k, MRR@k), one row per recommender; empty when no item occurs often
    /// enough in training (the reason is printed instead).
    pub next_item: Vec<RecMetrics>,
    /// Next category, the same way (the models with a category head and the baselines over
    /// category sessions); empty when the events carry no categories often enough.
    pub next_category: Vec<RecMetrics>,
}

/// Evaluates every model of `args` plus the baselines (and the generator's session probability
/// with a truth file) on purchase and next action, and the next-item baselines.
pub fn compare_all(args: &EvaluateArgs) -> anyhow::Result<Comparison> {
    let events = read_events(&args.input, args.format)?;
    let models = compare(args, &events)?;
    let cfg = RecommendConfig {
        k: args.k,
        min_item_count: args.min_item_count,
        session: models.base.session.clone(),
        split: models.base.split.clone(),
        category_k: args.category_k,
        ..RecommendConfig::default()
    };
    if models.vocab.is_some() {
        eprintln!(
            "next item: the baselines recommend from the first model's vocabulary (--min-item-count is not used)"
        );
    }
    let next_item = with_baselines(
        Recommend::Items,
        &events,
        &cfg,
        models.vocab.as_ref(),
        models.item_rows,
    );
    let next_category = with_baselines(
        Recommend::Categories,
        &events,
        &cfg,
        models.categories.as_ref(),
        models.category_rows,
    );
    Ok(Comparison {
        purchase: models.rows,
        next_item,
        next_category,
    })
}

/// The models' next-item or next-category rows followed by the baselines' (fitted on the same
/// vocabulary); the baselines' failure (nothing frequent enough) is printed, not an error.
fn with_baselines(
    what: Recommend,
    events: &[ClickEvent],
    cfg: &RecommendConfig,
    vocab: Option<&ItemVocab>,
    model_rows: Vec<RecMetrics>,
) -> Vec<RecMetrics> {
    let noun = what.noun();
    match compare_baselines_of(what, events, cfg, vocab) {
        Ok(rows) => {
            let cases: Vec<usize> = model_rows.iter().chain(&rows).map(|r| r.cases).collect();
            if cases.windows(2).any(|w| w[0] != w[1]) {
                eprintln!(
                    "warning: next-{noun} rows have different test cases ({cases:?}): the models were \
                     trained with other session rules, splits or vocabularies"
                );
            }
            model_rows.into_iter().chain(rows).collect()
        }
        Err(e) => {
            eprintln!("next-{noun} evaluation skipped: {e}");
            Vec::new()
        }
    }
}

/// What [`compare`] found besides its purchase rows.
#[derive(Debug, Clone)]
pub struct ModelComparison {
    /// Purchase rows: the models, the baselines, the session-probability row.
    pub rows: Vec<Row>,
    /// Next-item rows of the models with an item head.
    pub item_rows: Vec<RecMetrics>,
    /// Session rules, features and split of the first model (or the defaults): the baselines'.
    pub base: TrainConfig,
    /// The first item-head model's vocabulary: the next-item baselines recommend from it, so
    /// every next-item row has the same test cases.
    pub vocab: Option<ItemVocab>,
    /// Next-category rows of the models with a category head.
    pub category_rows: Vec<RecMetrics>,
    /// The first category-head model's category vocabulary (for the category baselines).
    pub categories: Option<ItemVocab>,
}

/// Evaluates every model of `args` plus the baselines (and the generator's session probability
/// with a truth file) on `events`.
pub fn compare(args: &EvaluateArgs, events: &[ClickEvent]) -> anyhow::Result<ModelComparison> {
    let mut item_rows = Vec::new();
    // Per indexed row, the share of the exact top k its lists hold.
    let mut index_recalls: Vec<(String, f64)> = Vec::new();
    let mut vocab: Option<ItemVocab> = None;
    let (mut category_rows, mut categories) = (Vec::new(), None);
    let mut loaded: Vec<(PathBuf, SequenceMeta)> = Vec::new();
    let mut rows = Vec::new();
    let device = Default::default();
    // The split and features of the first model (or the defaults) define the test set of the
    // baselines and the session-probability row.
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
    for (i, (dir, meta)) in loaded.iter().enumerate() {
        let spec: &FeatureSpec = &meta.training.config.features;
        let (model, _) = load_sequence::<CpuBackend>(dir, spec, &device)
            .with_context(|| format!("loading {}", dir.display()))?;
        let dataset = build_dataset(events, &meta.training.config.session, spec);
        let splits = dataset.split(&meta.training.config.split)?;
        let seqs = clickpath_model::sequence::data::sequences(
            &splits.test,
            model.buckets(),
            &model.normalizer,
            model.vocabs(),
        );
        rows.push(row(meta.version.clone(), evaluate_sequences(&model, &seqs)));
        if model.blend.is_some() {
            // What the network adds is only visible beside what it scores alone.
            let alone = clickpath_model::sequence::SequenceModel {
                blend: None,
                ..model.clone()
            };
            rows.push(row(
                format!("{} {NETWORK_ONLY}", meta.version),
                evaluate_sequences(&alone, &seqs),
            ));
        }
        match evaluate_items(&model, &seqs, args.k) {
            Some(e) if e.cases == 0 => {
                eprintln!("{}: no next-item test case in its vocabulary", meta.version);
            }
            Some(e) => {
                item_rows.push(rec_metrics(&meta.version, args.k, e));
                let indexed = args
                    .item_index
                    .then(|| indexed_row(&model, &meta.version, &seqs, args))
                    .flatten();
                if let Some((row, recall)) = indexed {
                    index_recalls.push((row.model.clone(), recall));
                    item_rows.push(row);
                }
            }
            None => {}
        }
        if vocab.is_none() {
            vocab = model.items.clone();
        }
        if let Some(e) = model.category_eval(&seqs, args.category_k) {
            category_rows.push(rec_metrics(&meta.version, args.category_k, e));
            if categories.is_none() {
                categories = model.categories.clone();
            }
        }
        if let (Some(path), true) = (&args.scores_out, i == 0) {
            write_scores(path, &model, &seqs)?;
        }
    }
    for (name, recall) in &index_recalls {
        eprintln!(
            "{name}: the lists ranked through the item index hold {:.1} % of the exact top {}",
            100.0 * recall,
            args.k
        );
    }
    let baseline = train_baseline(events, &base_cfg)?;
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
        let dataset = build_dataset(events, &base_cfg.session, &base_cfg.features);
        let splits = dataset.split(&base_cfg.split)?;
        let (mut p, mut scored) = (Vec::new(), Vec::new());
        for ex in &splits.test {
            let prob = session_of
                .get(ex.features.event_id.as_str())
                .and_then(|s| truth.get(*s));
            if let Some(prob) = prob {
                p.push(*prob);
                scored.push(*ex);
            }
        }
        let none: [Vec<f64>; 0] = [];
        rows.push(row(SESSION_PRIOR_ROW, metrics_of(&p, &scored, &none, &[])));
    }
    Ok(ModelComparison {
        rows,
        item_rows,
        base: base_cfg,
        vocab,
        category_rows,
        categories,
    })
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
            if !ex.scored_for_purchase() {
                continue;
            }
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

/// The rows as a Markdown table: the session label ("will this session purchase") on every
/// example, the same score against "a purchase within the next
/// [`SOON_EVENTS`](clickpath_model::dataset::SOON_EVENTS) events", the session label at the
/// 1st, 3rd and 5th event, and the next action.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| model | test examples | ROC-AUC | PR-AUC | log loss | ECE | ROC-AUC soon | PR-AUC soon | \
         AUC @1 | AUC @3 | AUC @5 | next top-1 | next top-3 |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let m = &r.metrics;
        let at = |position: usize| {
            cell(
                m.by_position
                    .iter()
                    .find(|p| p.position == position)
                    .and_then(|p| p.roc_auc),
            )
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            m.examples,
            cell(m.roc_auc),
            cell(m.pr_auc),
            cell(m.log_loss),
            cell(m.ece),
            cell(m.soon_roc_auc),
            cell(m.soon_pr_auc),
            at(1),
            at(3),
            at(5),
            cell(m.next_action_top1),
            cell(m.next_action_top3)
        ));
    }
    out
}

/// The next-item rows as a Markdown table.
pub fn next_item_table(rows: &[RecMetrics]) -> String {
    recommendation_table("next-item", rows)
}

/// Next-item or next-category rows as a Markdown table (`what`: the first column's title).
fn recommendation_table(what: &str, rows: &[RecMetrics]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let k = first.k;
    let mut out =
        format!("| {what} model | test cases | Recall@{k} | MRR@{k} |\n|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} |\n",
            r.model, r.cases, r.recall, r.mrr
        ));
    }
    out
}

/// Runs `clickpath evaluate`: the tables, and the JSON file when asked.
pub fn run(args: &EvaluateArgs) -> anyhow::Result<String> {
    let all = compare_all(args)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&all)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = table(&all.purchase);
    for t in [
        next_item_table(&all.next_item),
        recommendation_table("next-category", &all.next_category),
    ] {
        if !t.is_empty() {
            out = format!("{out}\n{t}");
        }
    }
    Ok(out)
}

/// The next-item row of `model` ranked through an item index (`--item-index`), built whatever
/// the vocabulary's size so that the index's cost in quality is measured on every data set; and
/// the share of the exact top `k` its lists hold.
fn indexed_row(
    model: &clickpath_model::sequence::SequenceModel<CpuBackend>,
    version: &str,
    seqs: &[clickpath_model::sequence::data::Sequence<'_>],
    args: &EvaluateArgs,
) -> Option<(clickpath_model::recommend::RecMetrics, f64)> {
    use clickpath_model::sequence::index::IndexConfig;
    let k = args.k;
    let cfg = IndexConfig {
        min_items: 1,
        head: args.item_index_head,
        lists: args.item_index_lists,
        probe: args.item_index_probe,
        graph_degree: args.item_index_graph_degree,
        graph_ef: args.item_index_graph_ef,
        ..IndexConfig::default()
    };
    let served = clickpath_model::sequence::IndexedModel::new(model.clone(), &cfg);
    let index = served.index()?;
    let (eval, recall) = clickpath_model::sequence::evaluate_items_served(model, &served, seqs, k)?;
    // Described after the evaluation: a graph reports what its searches cost.
    let name = format!("{version} through the item index ({})", index.describe());
    (eval.cases > 0).then(|| (rec_metrics(&name, k, eval), recall))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_generator::GeneratorConfig;

    /// The index flags: a graph's width needs a graph, and the cluster options are refused with one
    /// rather than ignored.
    #[test]
    fn index_flags_that_do_not_apply_are_refused() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: EvaluateArgs,
        }
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["evaluate", "--input", "events.jsonl", "--item-index"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| c.args)
        };
        let graph = parse(&[
            "--item-index-graph-degree",
            "16",
            "--item-index-graph-ef",
            "128",
        ])
        .unwrap();
        assert_eq!(
            (graph.item_index_graph_degree, graph.item_index_graph_ef),
            (16, 128)
        );
        assert!(
            parse(&["--item-index-graph-ef", "128"]).is_err(),
            "a width without a graph"
        );
        for cluster in [
            "--item-index-head",
            "--item-index-lists",
            "--item-index-probe",
        ] {
            assert!(
                parse(&["--item-index-graph-degree", "16", cluster, "8"]).is_err(),
                "{cluster} with a graph"
            );
            assert!(parse(&[cluster, "8"]).is_ok(), "{cluster} with the lists");
        }
    }

    /// On a small generated set: the baselines and the session-probability row are scored on the
    /// same pre-purchase examples, the next-item baselines on the same sessions, and the JSON
    /// file holds both tables.
    #[test]
    fn evaluate_reports_purchase_labels_positions_and_next_items() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GeneratorConfig {
            sessions: 1_500,
            seed: 7,
            ..GeneratorConfig::default()
        };
        crate::generate::generate_to_dir(cfg, dir.path()).unwrap();
        let args = EvaluateArgs {
            input: dir.path().join("events.jsonl"),
            format: Format::Jsonl,
            models: Vec::new(),
            truth: Some(dir.path().join("truth.jsonl")),
            json: Some(dir.path().join("eval.json")),
            scores_out: None,
            k: 20,
            category_k: 3,
            item_index: false,
            item_index_head: 0,
            item_index_lists: 0,
            item_index_probe: 0,
            item_index_graph_degree: 0,
            item_index_graph_ef: 64,
            min_item_count: 2,
        };
        let text = run(&args).unwrap();
        assert!(text.contains("| AUC @1 |"), "{text}");
        assert!(text.contains(SESSION_PRIOR_ROW), "{text}");
        assert!(text.contains("| popularity |"), "{text}");
        let all: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("eval.json")).unwrap()).unwrap();
        let purchase = all["purchase"].as_array().unwrap();
        assert_eq!(purchase.len(), 2);
        let (baseline, prior) = (&purchase[0]["metrics"], &purchase[1]["metrics"]);
        assert_eq!(baseline["examples"], prior["examples"]);
        assert_eq!(baseline["positives"], prior["positives"]);
        // A purchase within 5 events implies a purchasing session.
        let soon = baseline["soon_positives"].as_u64().unwrap();
        assert!(soon > 0 && soon <= baseline["positives"].as_u64().unwrap());
        let positions: Vec<u64> = baseline["by_position"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["position"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, [1, 3, 5]);
        let items = all["next_item"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        let recall = |name: &str| {
            let r = items
                .iter()
                .find(|r| r["model"].as_str().unwrap().starts_with(name))
                .unwrap();
            assert!(r["cases"].as_u64().unwrap() > 0, "{r}");
            r["recall"].as_f64().unwrap()
        };
        // Shoppers stay in a category and revisit neighbours: co-occurrence beats popularity.
        assert!(
            recall("item-KNN") > recall("popularity") + 0.05,
            "{items:?}"
        );
        // The same baselines over the sessions' categories, named so, on one set of cases.
        assert!(text.contains("| next-category model |"), "{text}");
        let categories = all["next_category"].as_array().unwrap();
        let names: Vec<&str> = categories
            .iter()
            .map(|r| r["model"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "popularity",
                "category-KNN (session co-occurrence)",
                "category Markov chain (first order)"
            ]
        );
        let cases: Vec<u64> = categories
            .iter()
            .map(|r| r["cases"].as_u64().unwrap())
            .collect();
        assert!(
            cases[0] > 0 && cases.iter().all(|&c| c == cases[0]),
            "{cases:?}"
        );
        assert!(categories.iter().all(|r| r["k"] == 3), "{categories:?}");
    }
}
