//! Versioned artifact of a sequence model: `weights.mpk` (Burn record, full precision),
//! `model.json` (network shape and input normaliser) and `meta.json` (how it was trained and how
//! good it was). The version is the architecture plus 8 hex digits of the SHA-256 of the weights
//! and `model.json`, checked on load, so a modified or truncated file is refused.

use std::fs;
use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use clickpath_core::{FeatureSpec, SessionConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::blend::PurchaseBlend;
use super::encode::Normalizer;
use super::model::SequenceModel;
use super::net::NetConfig;
use super::train::{EpochReport, SequenceTrainConfig, SequenceTrainReport};
use crate::artifact::now_rfc3339;
use crate::baseline::hex;
use crate::error::ModelError;
use crate::metrics::{DatasetCounts, EvalMetrics};
use crate::recommend::{ItemVocab, RecMetrics};

/// File holding the weights.
pub const WEIGHTS_FILE: &str = "weights.mpk";
/// File holding the network shape and normaliser.
pub const MODEL_FILE: &str = "model.json";
/// File holding the metadata.
pub const META_FILE: &str = "meta.json";
/// `kind` of sequence-model artifacts in `meta.json`.
pub const SEQUENCE_KIND: &str = "sequence";
/// Layout version of the directory: 4 when the network has a category head (a reader of format 3 or
/// less does not know its weights); 3 when the network embeds items by vocabulary index (a reader
/// of format 2 or less would hash them into buckets that mean nothing to the weights); 2 when
/// `model.json` has a purchase blend, which a reader of format 1 would silently ignore (serving the
/// network alone while `meta.json` reports the blend's figures); 1 otherwise, so older readers
/// still load those.
pub const SEQUENCE_FORMAT_VERSION: u32 = 4;
/// Formats this build reads.
const READABLE_FORMATS: [u32; 4] = [1, 2, 3, 4];

/// The oldest format that describes `model` (see [`SEQUENCE_FORMAT_VERSION`]).
fn format_of<B: Backend>(model: &SequenceModel<B>) -> u32 {
    if model.config.category_vocab > 0 {
        4
    } else if model.config.item_input == super::net::ItemInput::Vocabulary {
        3
    } else if model.blend.is_some() {
        2
    } else {
        1
    }
}

/// Contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Network shape.
    pub net: NetConfig,
    /// Input normaliser.
    pub normalizer: Normalizer,
    /// Items the item head recommends (by vocabulary index); absent without an item head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemVocab>,
    /// Categories the category head recommends (by vocabulary index); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<ItemVocab>,
    /// The purchase blend (`super::blend`); absent: the purchase head alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_blend: Option<PurchaseBlend>,
}

/// How the model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceTrainingInfo {
    /// The full training configuration.
    pub config: SequenceTrainConfig,
    /// Epoch by epoch.
    pub history: Vec<EpochReport>,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// Training wall-clock time (s).
    pub seconds: f64,
    /// Burn backend it was trained on.
    pub backend: String,
}

/// Contents of `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceMeta {
    /// [`SEQUENCE_FORMAT_VERSION`] at save time.
    pub format_version: u32,
    /// Always [`SEQUENCE_KIND`].
    pub kind: String,
    /// `gru-…`, `lstm-…` or `transformer-…`.
    pub version: String,
    /// When it was trained, RFC 3339 UTC.
    pub created_at: String,
    /// Version of the feature spec the model reads.
    pub feature_spec_version: String,
    /// Names of the numeric features, in input order.
    pub feature_names: Vec<String>,
    /// Session rules of the training data.
    pub session_config: SessionConfig,
    /// SHA-256 over the training events' ids and times.
    pub training_data_fingerprint: String,
    /// Metrics on the test split.
    pub metrics: EvalMetrics,
    /// Metrics on the test split of the network alone, when the model has a purchase blend (`metrics`
    /// are the blend's, as served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_only_metrics: Option<EvalMetrics>,
    /// Next-item metrics on the test split (models with an item head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_item: Option<RecMetrics>,
    /// Next-category metrics on the test split (models with a category head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_category: Option<RecMetrics>,
    /// Sizes of the data.
    pub counts: DatasetCounts,
    /// How it was trained.
    pub training: SequenceTrainingInfo,
}

fn invalid(path: &Path, problem: String) -> ModelError {
    ModelError::InvalidArtifact {
        path: path.to_path_buf(),
        problem,
    }
}

fn version_of(net: &NetConfig, weights: &[u8], model_json: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(weights);
    h.update(model_json);
    format!("{}-{}", net.architecture.as_str(), hex(&h.finalize()[..4]))
}

/// Writes the trained model of `report` to `dir` (created if needed); returns its metadata.
pub fn save_sequence<B: Backend>(
    report: &SequenceTrainReport<B>,
    cfg: &SequenceTrainConfig,
    backend: &str,
    dir: &Path,
) -> Result<SequenceMeta, ModelError> {
    let model = &report.model;
    // The configuration as trained: the network shape filled in from the data (feature count,
    // item vocabulary), not as requested.
    let mut cfg = cfg.clone();
    cfg.net = model.config.clone();
    let cfg = &cfg;
    let weights = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(model.net.clone().into_record(), ())
        .map_err(|e| {
            invalid(
                &dir.join(WEIGHTS_FILE),
                format!("cannot encode the weights: {e}"),
            )
        })?;
    let model_json = serde_json::to_vec_pretty(&ModelFile {
        net: model.config.clone(),
        normalizer: model.normalizer.clone(),
        items: model.items.clone(),
        categories: model.categories.clone(),
        purchase_blend: model.blend.clone(),
    })
    .map_err(|source| ModelError::Json {
        path: dir.join(MODEL_FILE),
        source,
    })?;
    let meta = SequenceMeta {
        format_version: format_of(model),
        kind: SEQUENCE_KIND.into(),
        version: version_of(&model.config, &weights, &model_json),
        created_at: now_rfc3339(),
        feature_spec_version: cfg.features.version.clone(),
        feature_names: model.normalizer.names.clone(),
        session_config: cfg.session.clone(),
        training_data_fingerprint: report.fingerprint.clone(),
        metrics: report.test.clone(),
        network_only_metrics: report.network_test.clone(),
        next_item: report.test_items.clone(),
        next_category: report.test_categories.clone(),
        counts: report.counts.clone(),
        training: SequenceTrainingInfo {
            config: cfg.clone(),
            history: report.history.clone(),
            best_epoch: report.best_epoch,
            seconds: report.seconds,
            backend: backend.into(),
        },
    };
    let io = |path: std::path::PathBuf| move |source| ModelError::Io { path, source };
    fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    fs::write(dir.join(WEIGHTS_FILE), &weights).map_err(io(dir.join(WEIGHTS_FILE)))?;
    fs::write(dir.join(MODEL_FILE), &model_json).map_err(io(dir.join(MODEL_FILE)))?;
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|source| ModelError::Json {
        path: dir.join(META_FILE),
        source,
    })?;
    fs::write(dir.join(META_FILE), meta_json).map_err(io(dir.join(META_FILE)))?;
    Ok(meta)
}

/// Whether `dir` holds a sequence-model artifact (its `meta.json` says `kind: sequence`).
pub fn is_sequence_artifact(dir: &Path) -> bool {
    #[derive(Deserialize)]
    struct Kind {
        kind: String,
    }
    fs::read(dir.join(META_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Kind>(&b).ok())
        .is_some_and(|k| k.kind == SEQUENCE_KIND)
}

/// Loads the sequence model in `dir` onto `device`, checking its version hash and that it
/// reads the feature spec `spec` (by version and feature names).
pub fn load_sequence<B: Backend>(
    dir: &Path,
    spec: &FeatureSpec,
    device: &B::Device,
) -> Result<(SequenceModel<B>, SequenceMeta), ModelError> {
    let read = |name: &str| {
        fs::read(dir.join(name)).map_err(|source| ModelError::Io {
            path: dir.join(name),
            source,
        })
    };
    let json = |name: &'static str| {
        let path = dir.join(name);
        move |source| ModelError::Json { path, source }
    };
    let meta: SequenceMeta = serde_json::from_slice(&read(META_FILE)?).map_err(json(META_FILE))?;
    if meta.kind != SEQUENCE_KIND || !READABLE_FORMATS.contains(&meta.format_version) {
        return Err(invalid(
            &dir.join(META_FILE),
            format!(
                "kind {} format {} is not a sequence model of format {READABLE_FORMATS:?}",
                meta.kind, meta.format_version
            ),
        ));
    }
    let weights = read(WEIGHTS_FILE)?;
    let model_json = read(MODEL_FILE)?;
    let file: ModelFile = serde_json::from_slice(&model_json).map_err(json(MODEL_FILE))?;
    let version = version_of(&file.net, &weights, &model_json);
    let vocab_len = file.items.as_ref().map_or(0, ItemVocab::len);
    if vocab_len != file.net.item_vocab {
        return Err(invalid(
            &dir.join(MODEL_FILE),
            format!(
                "the network has an item head of {} items but model.json lists {vocab_len}",
                file.net.item_vocab
            ),
        ));
    }
    let categories_len = file.categories.as_ref().map_or(0, ItemVocab::len);
    if categories_len != file.net.category_vocab {
        return Err(invalid(
            &dir.join(MODEL_FILE),
            format!(
                "the network has a category head of {} categories but model.json lists {categories_len}",
                file.net.category_vocab
            ),
        ));
    }
    if let Some(blend) = &file.purchase_blend {
        blend
            .check(file.normalizer.len())
            .map_err(|problem| invalid(&dir.join(MODEL_FILE), problem))?;
    }
    if version != meta.version {
        return Err(invalid(
            &dir.join(WEIGHTS_FILE),
            format!(
                "the files hash to {version} but meta.json says {}; the artifact was modified or truncated",
                meta.version
            ),
        ));
    }
    let names = clickpath_core::FeatureWindower::new(spec.clone()).feature_names();
    if spec.version != meta.feature_spec_version || names != file.normalizer.names {
        return Err(invalid(
            &dir.join(MODEL_FILE),
            format!(
                "{} reads feature spec {} ({} features) but the windower runs {} ({} features)",
                meta.version,
                meta.feature_spec_version,
                file.normalizer.names.len(),
                spec.version,
                names.len()
            ),
        ));
    }
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .load(weights, device)
        .map_err(|e| {
            invalid(
                &dir.join(WEIGHTS_FILE),
                format!("cannot decode the weights: {e}"),
            )
        })?;
    let net = file.net.init::<B>(device).load_record(record);
    // A head the shape promises but the weights lack is dropped by the record's load without a word.
    if net.has_item_head() != (file.net.item_vocab > 0)
        || net.has_category_head() != (file.net.category_vocab > 0)
    {
        return Err(invalid(
            &dir.join(WEIGHTS_FILE),
            "the weights lack a head model.json describes (item or category); the artifact is damaged"
                .into(),
        ));
    }
    Ok((
        SequenceModel {
            net,
            config: file.net,
            normalizer: file.normalizer,
            items: file.items,
            categories: file.categories,
            blend: file.purchase_blend,
            device: device.clone(),
        },
        meta,
    ))
}
