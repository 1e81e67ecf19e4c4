//! State shared between the passes of one pipeline run.
//!
//! Analyses (calibration statistics, profiles) are produced by one pass and
//! consumed by later ones; the context carries them, together with the
//! settings that tell passes how to run the model, and the remarks that end
//! up in the report.

use std::collections::BTreeMap;

/// A remark about one node: what a pass decided and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Remark {
    pub pass: String,
    pub node: String,
    pub message: String,
}

/// Fixed input shapes for running a model: `name → dims`.
pub type InputShapes = BTreeMap<String, Vec<usize>>;

#[derive(Default)]
pub struct PassContext {
    /// Shapes to give the runtime for inputs whose dims are symbolic.
    pub input_shapes: InputShapes,
    /// Per-node remarks, in the order passes made them.
    pub remarks: Vec<Remark>,
}

impl PassContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn remark(&mut self, pass: &str, node: &str, message: impl Into<String>) {
        self.remarks.push(Remark { pass: pass.into(), node: node.into(), message: message.into() });
    }
}
