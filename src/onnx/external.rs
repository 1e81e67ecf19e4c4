//! Tensor data stored outside the model file (ONNX "external data").
//!
//! The mapped storage itself is [`crate::ir::external`]. A `location` must stay inside the model's directory: absolute paths, `..`
//! components and symlinks that lead out are refused, because a model file is
//! untrusted input and must not make onnxq read arbitrary files.

use std::path::{Component, Path, PathBuf};

pub use crate::ir::external::{map_file, ExternalSpan, MappedFile};

/// Why an external data reference was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("has no 'location' entry in external_data")]
    NoLocation,
    #[error("points to the absolute path '{0}'; external data must be a relative path inside the model's directory")]
    Absolute(String),
    #[error(
        "points to '{0}', which leaves the model's directory; external data must stay inside it"
    )]
    Escapes(String),
    #[error(
        "refers to '{path}', which cannot be opened ({source}); put the data file beside the model"
    )]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("has a malformed '{key}' entry '{value}'")]
    BadNumber { key: String, value: String },
    #[error("reads bytes {offset}..{end} of '{path}', which has only {size} bytes")]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        end: u64,
        size: u64,
    },
}

/// Resolves `location` against `model_dir`, refusing anything that would
/// read outside it (absolute paths, `..`, symlinks leading out).
pub fn resolve_location(model_dir: &Path, location: &str) -> Result<PathBuf, ExternalError> {
    let rel = Path::new(location);
    if rel.is_absolute() || location.starts_with('/') || location.starts_with('\\') {
        return Err(ExternalError::Absolute(location.to_string()));
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ExternalError::Escapes(location.to_string()));
    }
    let joined = model_dir.join(rel);
    let real = joined
        .canonicalize()
        .map_err(|source| ExternalError::Missing {
            path: joined.clone(),
            source,
        })?;
    let root = model_dir
        .canonicalize()
        .map_err(|source| ExternalError::Missing {
            path: model_dir.to_path_buf(),
            source,
        })?;
    if !real.starts_with(&root) {
        return Err(ExternalError::Escapes(location.to_string()));
    }
    Ok(real)
}
