//! The intermediate representation passes work on.
//!
//! A [`Model`] is the model-level proto fields onnxq does not interpret (kept
//! verbatim) plus a [`Graph`]: a petgraph `StableDiGraph` whose nodes are ops,
//! graph inputs and initializers, and whose edges are uses of values kept in a
//! typed side table. See [`graph`] for the invariants and the mutation API,
//! [`build`] for how import and the text parser build one, [`text`] for the
//! textual form tests are written in.

pub mod build;
pub mod external;
pub mod graph;
pub mod tensor;
pub mod text;
pub mod types;

pub use graph::{At, Graph, Node, NodeId, NodeKind, Port, Slot, Use, Value, ValueId, Violation};
pub use tensor::{Tensor, TensorError};

use std::path::PathBuf;

use crate::proto::{ModelProto, OperatorSetIdProto};

/// A model: the main graph plus everything else from the `ModelProto`.
#[derive(Clone, Debug)]
pub struct Model {
    /// The model proto as read, with `graph` taken out. IR version, opsets,
    /// producer, metadata, functions and training info are written back
    /// from here unchanged (unless a pass edits them on purpose).
    pub meta: ModelProto,
    pub graph: Graph,
    /// Directory external data was resolved against, if read from a file.
    pub dir: Option<PathBuf>,
}

impl Model {
    /// Opset version imported for `domain` (`""` and `ai.onnx` are the same).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| {
            if d == "ai.onnx" {
                String::new()
            } else {
                d.to_string()
            }
        };
        let want = norm(domain);
        self.meta
            .opset_import
            .iter()
            .find(|o| norm(o.domain()) == want)
            .map(|o| o.version())
    }

    /// Sets the opset version for `domain`, adding the import if missing.
    pub fn set_opset(&mut self, domain: &str, version: i64) {
        let norm = |d: &str| {
            if d == "ai.onnx" {
                String::new()
            } else {
                d.to_string()
            }
        };
        let want = norm(domain);
        if let Some(o) = self
            .meta
            .opset_import
            .iter_mut()
            .find(|o| norm(o.domain()) == want)
        {
            o.version = Some(version);
        } else {
            self.meta.opset_import.push(OperatorSetIdProto {
                domain: Some(domain.to_string()),
                version: Some(version),
            });
        }
    }
}
