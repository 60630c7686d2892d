//! The outlook artifact: `model.json` (what is scored: the return model and the segments) and
//! `meta.json` (kind, version, how it was trained and how it did). The version is `outlook-` and 8
//! hex digits of the SHA-256 of `model.json`, checked on load.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::train::{OutlookMetrics, OutlookTrainConfig, OutlookTrainReport};
use super::{FEATURES, OutlookModel, Segments};
use crate::artifact::{invalid, now_rfc3339, parse, read, write_atomically};
use crate::baseline::content_version;
use crate::error::ModelError;
use crate::logistic::{LogisticModel, LogisticParams};

/// File holding the model.
pub const MODEL_FILE: &str = "model.json";
/// File holding the metadata.
pub const META_FILE: &str = "meta.json";
/// `kind` of outlook artifacts in `meta.json`.
pub const OUTLOOK_KIND: &str = "outlook";
/// Layout version of the directory.
pub const OUTLOOK_FORMAT_VERSION: u32 = 1;

/// Contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    /// The features, in input order (must equal [`FEATURES`]).
    features: Vec<String>,
    /// The return horizon (hours).
    horizon_hours: u32,
    /// The return model.
    returns: LogisticParams,
    /// The segments.
    segments: Segments,
}

/// Contents of `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlookMeta {
    /// Always [`OUTLOOK_KIND`].
    pub kind: String,
    /// [`OUTLOOK_FORMAT_VERSION`] at save time.
    pub format_version: u32,
    /// `outlook-…`.
    pub version: String,
    /// When it was trained, RFC 3339 UTC.
    pub created_at: String,
    /// The training configuration.
    pub config: OutlookTrainConfig,
    /// Test-split figures.
    pub metrics: OutlookMetrics,
}

fn model_file(model: &OutlookModel) -> ModelFile {
    ModelFile {
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
        horizon_hours: model.horizon_hours,
        returns: model.returns.params().clone(),
        segments: model.segments.clone(),
    }
}

fn version_of(model_json: &[u8]) -> String {
    content_version(OUTLOOK_KIND, model_json)
}

/// Writes the model of `report` to `dir` (created if needed) and returns its metadata; the report's
/// model gets its version.
pub fn save_outlook(
    report: &mut OutlookTrainReport,
    dir: &Path,
) -> Result<OutlookMeta, ModelError> {
    let json = |path: &Path, e: serde_json::Error| ModelError::Json {
        path: path.to_path_buf(),
        source: e,
    };
    let model_path = dir.join(MODEL_FILE);
    let model_json =
        serde_json::to_vec_pretty(&model_file(&report.model)).map_err(|e| json(&model_path, e))?;
    let version = version_of(&model_json);
    report.model.version = version.clone();
    let meta = OutlookMeta {
        kind: OUTLOOK_KIND.into(),
        format_version: OUTLOOK_FORMAT_VERSION,
        version,
        created_at: now_rfc3339(),
        config: report.config.clone(),
        metrics: report.metrics.clone(),
    };
    let meta_path = dir.join(META_FILE);
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| json(&meta_path, e))?;
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomically(&model_path, &model_json)?;
    write_atomically(&meta_path, &meta_json)?;
    Ok(meta)
}

/// Reads and checks the outlook artifact in `dir`: both files parse, the kind and format are known,
/// `model.json` hashes to the version in `meta.json`, the features are this build's and every
/// segment has a centroid of their width.
pub fn load_outlook(dir: &Path) -> Result<(OutlookModel, OutlookMeta), ModelError> {
    let meta_path = dir.join(META_FILE);
    let model_path = dir.join(MODEL_FILE);
    let meta_bytes = read(&meta_path)?;
    let model_bytes = read(&model_path)?;
    let header: serde_json::Value = parse(&meta_path, &meta_bytes)?;
    if header.get("kind").and_then(|k| k.as_str()) != Some(OUTLOOK_KIND) {
        return Err(invalid(
            &meta_path,
            format!("not an outlook artifact (kind {:?})", header.get("kind")),
        ));
    }
    let meta: OutlookMeta = parse(&meta_path, &meta_bytes)?;
    if meta.format_version != OUTLOOK_FORMAT_VERSION {
        return Err(invalid(
            &meta_path,
            format!(
                "format_version is {}, this build reads {OUTLOOK_FORMAT_VERSION}",
                meta.format_version
            ),
        ));
    }
    let version = version_of(&model_bytes);
    if version != meta.version {
        return Err(invalid(
            &model_path,
            format!(
                "content hashes to {version} but {META_FILE} says {}: the file was modified or is corrupted",
                meta.version
            ),
        ));
    }
    let file: ModelFile = parse(&model_path, &model_bytes)?;
    if file.features != FEATURES {
        return Err(invalid(
            &model_path,
            format!(
                "the model reads features {:?}; this build computes {FEATURES:?}",
                file.features
            ),
        ));
    }
    let s = &file.segments;
    let width_ok = s.means.len() == FEATURES.len()
        && s.stds.len() == FEATURES.len()
        && s.stds.iter().all(|v| v.is_finite() && *v > 0.0)
        && s.means.iter().all(|v| v.is_finite())
        && !s.centroids.is_empty()
        && s.centroids
            .iter()
            .all(|c| c.len() == FEATURES.len() && c.iter().all(|v| v.is_finite()))
        && s.descriptions.len() == s.centroids.len();
    if !width_ok {
        return Err(invalid(
            &model_path,
            "segments need one finite mean, a positive deviation and a finite centroid value per feature, and a description per centroid",
        ));
    }
    let mut expected: Vec<&str> = FEATURES.to_vec();
    expected.sort_unstable();
    if file.returns.feature_names != expected {
        return Err(invalid(
            &model_path,
            format!(
                "the return model reads {:?}; it must read exactly {expected:?}",
                file.returns.feature_names
            ),
        ));
    }
    let returns = LogisticModel::try_from(file.returns)
        .map_err(|problem| invalid(&model_path, format!("return model: {problem}")))?;
    Ok((
        OutlookModel::new(version, file.horizon_hours, returns, file.segments),
        meta,
    ))
}
