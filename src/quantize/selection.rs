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
    /// The compute ops speed selection kept int8 (`select-speed{nodes=[…]}`):
    /// pinning them makes a rerun independent of timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<Vec<String>>,
    /// The calibration method `--method auto` chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Whether smoothing ran (`off`, or its alpha), as `--smooth` takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smooth: Option<String>,
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
            ..Default::default()
        }
    }

    /// Adds what a run measured (speed selection, method choice) from its
    /// printed pipeline, so that a rerun with this file repeats it.
    pub fn pin_measured(&mut self, pipeline: &str) {
        let Ok(items) = crate::passes::pipeline::parse_pipeline(pipeline) else {
            return;
        };
        self.smooth = Some("off".into());
        for it in items {
            match it.name.as_str() {
                "select-speed" => {
                    self.int8 = it
                        .options
                        .get("nodes")
                        .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
                }
                "smooth-quant" => self.smooth = it.options.get("alpha").map(|a| a.to_string()),
                "fold-calibration" => {
                    let get = |k: &str| it.options.get(k).cloned();
                    self.method = match (get("method"), get("percentile")) {
                        (Some(serde_json::Value::String(m)), Some(p)) if m == "percentile" => {
                            Some(format!("percentile{{p={p}}}"))
                        }
                        (Some(serde_json::Value::String(m)), _) => Some(m),
                        _ => None,
                    }
                }
                _ => {}
            }
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
