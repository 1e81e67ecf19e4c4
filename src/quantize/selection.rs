//! Selection files: the nodes a fallback search kept in float, saved so
//! that a build pipeline can pin them (`quantize --selection FILE`, `opt
//! --selection FILE`) instead of passing a long list of flags.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::QuantizeError;

const FORMAT: &str = "onnxq-selection";
const VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Selection {
    pub format: String,
    pub version: u32,
    /// Node labels kept in float (`insert-qdq{keep-float=[…]}`).
    pub keep_float: Vec<String>,
    /// Why, for a reader: the target the search met.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Selection {
    pub fn new(keep_float: Vec<String>, reason: String) -> Self {
        Selection {
            format: FORMAT.into(),
            version: VERSION,
            keep_float,
            reason,
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), QuantizeError> {
        let json = serde_json::to_vec_pretty(self).expect("invariant: selection serializes");
        crate::onnx::export::write_atomic(path, &json).map_err(|e| {
            QuantizeError::Usage(format!(
                "{}: cannot write the selection ({e})",
                path.display()
            ))
        })
    }

    pub fn load(path: &Path) -> Result<Selection, QuantizeError> {
        let bad = |what: String| {
            QuantizeError::Usage(format!(
                "{}: not an onnxq selection file ({what}); write one with `onnxq quantize --save-selection FILE`",
                path.display()
            ))
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let s: Selection = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if s.format != FORMAT {
            return Err(bad(format!("format '{}'", s.format)));
        }
        if s.version != VERSION {
            return Err(bad(format!(
                "version {} (this onnxq reads {VERSION})",
                s.version
            )));
        }
        Ok(s)
    }
}
