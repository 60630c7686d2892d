//! Versioned model artifacts: a directory with `model.json` (the parameters) and `meta.json`
//! (what the model is, how it was made and how good it was).
//!
//! The version is `baseline-` + 8 hex digits of the SHA-256 of `model.json`'s exact bytes, so
//! [`ModelArtifact::load`] detects a modified or truncated parameter file, and two artifacts with
//! the same version hold the same weights.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clickpath_core::{FeatureSpec, FeatureWindower, SessionConfig};
use serde::{Deserialize, Serialize};

use crate::baseline::{BASELINE_KIND, BaselineModel, ModelParams, version_of_bytes};
use crate::dataset::SplitConfig;
use crate::error::ModelError;
use crate::logistic::{FitHistory, LogisticConfig};
use crate::metrics::{DatasetCounts, EvalMetrics};

/// File holding the parameters.
pub const MODEL_FILE: &str = "model.json";
/// File holding the metadata.
pub const META_FILE: &str = "meta.json";
/// Layout version of the artifact directory; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// How the model was trained, for reproduction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// The full feature spec.
    pub feature_spec: FeatureSpec,
    /// The time-based split.
    pub split: SplitConfig,
    /// Logistic regression hyper-parameters.
    pub logistic: LogisticConfig,
    /// Markov smoothing.
    pub markov_smoothing: f64,
    /// How the fit went.
    pub history: FitHistory,
}

/// Contents of `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// [`FORMAT_VERSION`] at save time.
    pub format_version: u32,
    /// Model kind, `baseline` here.
    pub kind: String,
    /// `baseline-<8 hex>`, the hash of `model.json`.
    pub version: String,
    /// When the model was trained, RFC 3339 UTC.
    pub created_at: String,
    /// Version of the feature spec the model reads.
    pub feature_spec_version: String,
    /// Names of the features the model reads, sorted.
    pub feature_names: Vec<String>,
    /// Session rules of the training data.
    pub session_config: SessionConfig,
    /// SHA-256 over the training events' ids and times in time order.
    pub training_data_fingerprint: String,
    /// Metrics on the test split.
    pub metrics: EvalMetrics,
    /// Data sizes.
    pub counts: DatasetCounts,
    /// Training settings and history.
    pub training: TrainingInfo,
}

/// A model with its metadata: what `save` writes and `load` reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelArtifact {
    /// The model.
    pub model: BaselineModel,
    /// Its metadata.
    pub meta: ArtifactMeta,
}

pub(crate) fn invalid(path: &Path, problem: impl Into<String>) -> ModelError {
    ModelError::InvalidArtifact {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half a
/// file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let tmp = path.with_extension("json.tmp");
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::write(&tmp, bytes).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(
    path: &Path,
    bytes: &[u8],
) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

impl ModelArtifact {
    /// Writes `model.json` then `meta.json` into `dir` (created if needed).
    ///
    /// Fails if the model's `version` does not match its parameters (fields edited after
    /// [`BaselineModel::new`]) or the metadata names another version.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let model_json = BaselineModel::params_json(&self.model.markov, &self.model.logistic);
        let version = version_of_bytes(model_json.as_bytes());
        let model_path = dir.join(MODEL_FILE);
        if version != self.model.version || version != self.meta.version {
            return Err(invalid(
                &model_path,
                format!(
                    "parameters hash to {version} but the model says {} and the metadata {}; \
                     rebuild the model with BaselineModel::new",
                    self.model.version, self.meta.version
                ),
            ));
        }
        fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let meta_path = dir.join(META_FILE);
        let meta_json =
            serde_json::to_string_pretty(&self.meta).map_err(|source| ModelError::Json {
                path: meta_path.clone(),
                source,
            })?;
        write_atomically(&model_path, model_json.as_bytes())?;
        write_atomically(&meta_path, meta_json.as_bytes())
    }

    /// Reads and checks the artifact in `dir` for use with features of `spec`.
    ///
    /// Checks, each failing with the file and the problem: both files exist and parse; the kind
    /// is `baseline` and the format version known; `model.json` hashes to the version in
    /// `meta.json`; every parameter is finite; the model's feature names and spec version equal
    /// those of `spec`.
    pub fn load(dir: &Path, spec: &FeatureSpec) -> Result<Self, ModelError> {
        let meta_bytes = read(&dir.join(META_FILE))?;
        let model_bytes = read(&dir.join(MODEL_FILE))?;
        Self::from_bytes(dir, &meta_bytes, &model_bytes, spec)
    }

    /// Like [`ModelArtifact::load`], from the two files' contents (for artifacts embedded in the
    /// binary); `dir` only names the files in error messages.
    pub fn from_bytes(
        dir: &Path,
        meta_bytes: &[u8],
        model_bytes: &[u8],
        spec: &FeatureSpec,
    ) -> Result<Self, ModelError> {
        let meta_path: PathBuf = dir.join(META_FILE);
        let model_path: PathBuf = dir.join(MODEL_FILE);
        // Kind and format first, so another model's artifact gets that message rather than a
        // confusing field-level parse error.
        let header: serde_json::Value = parse(&meta_path, meta_bytes)?;
        match header.get("kind").and_then(|k| k.as_str()) {
            Some(BASELINE_KIND) => {}
            Some(other) => {
                return Err(invalid(
                    &meta_path,
                    format!("model kind is {other:?}, expected {BASELINE_KIND:?}"),
                ));
            }
            None => return Err(invalid(&meta_path, "no \"kind\" string field")),
        }
        match header.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            other => {
                return Err(invalid(
                    &meta_path,
                    format!("format_version is {other:?}, this build reads {FORMAT_VERSION}"),
                ));
            }
        }
        let meta: ArtifactMeta = parse(&meta_path, meta_bytes)?;

        let actual_version = version_of_bytes(model_bytes);
        if actual_version != meta.version {
            return Err(invalid(
                &model_path,
                format!(
                    "content hashes to version {actual_version} but {META_FILE} says {}: \
                     the file was modified or is corrupted",
                    meta.version
                ),
            ));
        }
        // Finite, consistent parameters are checked while parsing (LogisticParams::validate).
        let params: ModelParams = parse(&model_path, model_bytes)?;
        if params.kind != BASELINE_KIND {
            return Err(invalid(
                &model_path,
                format!(
                    "model kind is {:?}, expected {BASELINE_KIND:?}",
                    params.kind
                ),
            ));
        }

        let mut expected = FeatureWindower::new(spec.clone()).feature_names();
        expected.sort();
        let names = params.logistic.feature_names();
        if names != expected.as_slice() {
            let missing: Vec<&String> = expected.iter().filter(|n| !names.contains(n)).collect();
            let extra: Vec<&String> = names.iter().filter(|n| !expected.contains(n)).collect();
            return Err(invalid(
                &model_path,
                format!(
                    "feature names do not match feature spec {:?}: missing {missing:?}, \
                     unexpected {extra:?}",
                    spec.version
                ),
            ));
        }
        if meta.feature_names != names {
            return Err(invalid(
                &meta_path,
                "feature_names differ from those in model.json",
            ));
        }
        if meta.feature_spec_version != spec.version {
            return Err(invalid(
                &meta_path,
                format!(
                    "trained with feature spec version {:?} but the spec given is {:?}",
                    meta.feature_spec_version, spec.version
                ),
            ));
        }
        let model = BaselineModel {
            markov: params.markov,
            logistic: params.logistic,
            version: actual_version,
        };
        Ok(ModelArtifact { model, meta })
    }
}

/// The current time as RFC 3339 UTC with seconds, e.g. `2024-05-01T12:00:00Z`.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rfc3339_from_unix(secs)
}

/// Formats Unix seconds as RFC 3339 UTC (proleptic Gregorian calendar).
fn rfc3339_from_unix(secs: i64) -> String {
    let (year, month, day) = clickpath_core::time::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_unix(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339_from_unix(-1), "1969-12-31T23:59:59Z");
    }
}
