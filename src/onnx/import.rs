//! ONNX file → IR.
//!
//! The file is memory-mapped and decoded from a `Bytes` view of the map, so
//! `raw_data` of every tensor is a slice of the map rather than a copy.
//! Import checks what later stages rely on and names the culprit when it
//! fails: every operand is defined, every name is produced once, the graph is
//! acyclic, tensor shapes and sizes agree, external data stays inside the
//! model's directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::external::{self, ExternalError, ExternalSpan, MappedFile};
use super::tensor_proto::DataLocation;
use super::{GraphProto, ModelProto, TensorProto};
use crate::ir::build::{BuildError, GraphBuilder};
use crate::ir::{Graph, Model, Tensor, TensorError};

/// Why a model could not be imported. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read ({source})")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid ONNX model: protobuf decoding failed ({source}); the file may be truncated or not an ONNX file")]
    Decode {
        path: String,
        source: prost::DecodeError,
    },
    #[error("{path}: the model has no graph; is this an ONNX model file?")]
    NoGraph { path: String },
    #[error("{path}: node '{node}' ({op}) reads tensor '{tensor}', which no node, input or initializer defines")]
    Undefined {
        path: String,
        node: String,
        op: String,
        tensor: String,
    },
    #[error("{path}: graph output '{tensor}' is not produced by any node, input or initializer")]
    UndefinedOutput { path: String, tensor: String },
    #[error("{path}: tensor name '{tensor}' is defined twice ({first} and {second}); every tensor must have one producer")]
    Duplicate {
        path: String,
        tensor: String,
        first: String,
        second: String,
    },
    #[error("{path}: the graph has a cycle through node(s) {nodes}; ONNX graphs must be acyclic")]
    Cycle { path: String, nodes: String },
    #[error("{path}: {source}")]
    Tensor { path: String, source: TensorError },
    #[error("{path}: value '{tensor}' declares dimension {dim} at axis {axis}; dimensions must be non-negative (or -1 for unknown)")]
    BadDim {
        path: String,
        tensor: String,
        axis: usize,
        dim: i64,
    },
    #[error("{path}: value '{tensor}' declares shape {dims:?}, whose element count overflows; no tensor can have it")]
    DimOverflow {
        path: String,
        tensor: String,
        dims: Vec<i64>,
    },
    #[error("{path}: tensor '{tensor}' {source}")]
    External {
        path: String,
        tensor: String,
        source: ExternalError,
    },
}

/// Reads a model file, resolving external data against its directory.
pub fn read_model(path: &Path) -> Result<Model, ImportError> {
    let label = path.display().to_string();
    let io = |source| ImportError::Io {
        path: label.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let bytes = if len == 0 {
        Bytes::new()
    } else {
        Bytes::from_owner(external::map_file(&file).map_err(io)?)
    };
    let dir = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    from_bytes(bytes, dir, &label)
}

/// Decodes a model from bytes. `dir` resolves external data; `label` names
/// the source in errors.
pub fn from_bytes(bytes: Bytes, dir: Option<&Path>, label: &str) -> Result<Model, ImportError> {
    let proto = ModelProto::decode(bytes).map_err(|source| ImportError::Decode {
        path: label.to_string(),
        source,
    })?;
    from_proto(proto, dir, label)
}

/// Builds the IR from a decoded model.
///
/// Nesting needs no limit here: import's only recursion over subgraphs is
/// [`subgraph_free_names`](crate::ir::build::subgraph_free_names), one level
/// per nested subgraph, and a proto that came through [`from_bytes`] holds
/// at most 33 of them (prost decodes at most 100 nested messages, and each
/// subgraph costs three). A proto built in memory can be deeper; it comes
/// from Rust code, not a file, and its author owns its depth (dropping it
/// recurses just the same).
pub fn from_proto(
    mut proto: ModelProto,
    dir: Option<&Path>,
    label: &str,
) -> Result<Model, ImportError> {
    let gp = proto.graph.take().ok_or_else(|| ImportError::NoGraph {
        path: label.to_string(),
    })?;
    let mut cx = Importer {
        label: label.to_string(),
        dir: dir.map(Path::to_path_buf),
        maps: HashMap::new(),
    };
    let graph = cx.graph(gp)?;
    Ok(Model {
        meta: proto,
        graph,
        dir: dir.map(Path::to_path_buf),
    })
}

struct Importer {
    label: String,
    dir: Option<PathBuf>,
    maps: HashMap<PathBuf, Arc<MappedFile>>,
}

impl Importer {
    /// The main graph. Subgraphs (If/Loop/Scan bodies) stay protos inside
    /// their node's attributes: import does not recurse into them, except
    /// to find the outer names they read (see [`from_proto`] on depth).
    fn graph(&mut self, mut gp: GraphProto) -> Result<Graph, ImportError> {
        let mut b = GraphBuilder::new();
        for tp in std::mem::take(&mut gp.initializer) {
            b.initializer(tp, "an initializer".to_string(), |tp| self.tensor(tp))
                .map_err(|e| self.build_error(e))??;
        }
        for sp in std::mem::take(&mut gp.sparse_initializer) {
            b.sparse_initializer(sp, "a sparse initializer".into())
                .map_err(|e| self.build_error(e))?;
        }
        for vi in std::mem::take(&mut gp.input) {
            self.check_dims(&vi)?;
            b.input(vi, "a graph input".into())
                .map_err(|e| self.build_error(e))?;
        }
        // Ops: outputs first (so an unsorted file still imports), operands second.
        for np in std::mem::take(&mut gp.node) {
            let who = node_label(np.name(), np.op_type());
            b.node(np, |_| who.clone())
                .map_err(|e| self.build_error(e))?;
        }
        let mut r = b.resolve().map_err(|e| self.build_error(e))?;
        for vi in std::mem::take(&mut gp.value_info) {
            self.check_dims(&vi)?;
            r.value_info(vi);
        }
        for vi in std::mem::take(&mut gp.output) {
            self.check_dims(&vi)?;
            r.output(vi, "a graph output".into())
                .map_err(|e| self.build_error(e))?;
        }
        r.finish(gp).map_err(|e| self.build_error(e))
    }

    /// A builder error in import's words; sites are descriptions of the
    /// definition ("an initializer", a node's label).
    fn build_error(&self, e: BuildError<String>) -> ImportError {
        let path = self.label.clone();
        match e {
            BuildError::Duplicate {
                name,
                first,
                second,
            } => ImportError::Duplicate {
                path,
                tensor: name,
                first,
                second,
            },
            BuildError::DuplicateInput { name, .. } => ImportError::Duplicate {
                path,
                tensor: name,
                first: "a graph input".into(),
                second: "another graph input".into(),
            },
            BuildError::UndefinedOperand { name, node, .. }
            | BuildError::UndefinedImplicit { name, node } => ImportError::Undefined {
                path,
                node: node_label(&node.name, &node.op_type),
                op: node.op_type,
                tensor: name,
            },
            BuildError::UndefinedOutput { name, .. } => {
                ImportError::UndefinedOutput { path, tensor: name }
            }
            BuildError::Cycle { nodes } => ImportError::Cycle {
                path,
                nodes: nodes
                    .iter()
                    .take(6)
                    .map(|n| format!("'{}'", node_label(&n.name, &n.op_type)))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        }
    }

    /// Declared shapes must be ones a tensor can have: later stages (shape
    /// inference, the runtime) multiply dimensions out, so a negative one or
    /// a product past 64 bits is refused here, naming the value.
    fn check_dims(&self, vi: &super::ValueInfoProto) -> Result<(), ImportError> {
        // The declared numbers as written: `types::dims` already reads every
        // negative value as "unknown", which would hide corrupt ones here.
        let Some(ds) = vi.r#type.as_ref().and_then(declared_dims) else {
            return Ok(());
        };
        let mut count: Option<u64> = Some(1);
        for (axis, d) in ds.iter().enumerate() {
            let Some(v) = *d else { continue };
            // -1 is how several exporters (PaddlePaddle among them) write
            // "unknown": accept it as such. Anything below is corrupt.
            if v == -1 {
                continue;
            }
            if v < 0 {
                return Err(ImportError::BadDim {
                    path: self.label.clone(),
                    tensor: vi.name().into(),
                    axis,
                    dim: v,
                });
            }
            count = count.and_then(|c| c.checked_mul(v as u64));
        }
        if count.is_none() {
            let known = ds.iter().map(|d| d.unwrap_or(-1)).collect();
            return Err(ImportError::DimOverflow {
                path: self.label.clone(),
                tensor: vi.name().into(),
                dims: known,
            });
        }
        Ok(())
    }

    fn tensor(&mut self, tp: TensorProto) -> Result<Tensor, ImportError> {
        // Shape first: sizing an external span from the shape must not
        // overflow on a hostile `dims`.
        let shape_only = Tensor::from_proto(TensorProto {
            dims: tp.dims.clone(),
            data_type: tp.data_type,
            name: tp.name.clone(),
            ..Default::default()
        });
        let n = shape_only
            .checked_len()
            .map_err(|source| ImportError::Tensor {
                path: self.label.clone(),
                source,
            })?;
        if let Some(bits) = crate::proto::dtype_bits(tp.data_type()) {
            if n.checked_mul(bits).is_none() {
                return Err(ImportError::Tensor {
                    path: self.label.clone(),
                    source: TensorError::Overflow {
                        name: tp.name().into(),
                        dims: tp.dims.clone(),
                    },
                });
            }
        }
        let t = if tp.data_location == Some(DataLocation::External as i32) {
            let span = self
                .external_span(&tp)
                .map_err(|source| ImportError::External {
                    path: self.label.clone(),
                    tensor: tp.name().into(),
                    source,
                })?;
            Tensor::from_external(tp, Arc::new(span))
        } else {
            Tensor::from_proto(tp)
        };
        t.validate().map_err(|source| ImportError::Tensor {
            path: self.label.clone(),
            source,
        })?;
        Ok(t)
    }

    fn external_span(&mut self, tp: &TensorProto) -> Result<ExternalSpan, ExternalError> {
        let entry = |k: &str| {
            tp.external_data
                .iter()
                .find(|e| e.key() == k)
                .map(|e| e.value().to_string())
        };
        let location = entry("location").ok_or(ExternalError::NoLocation)?;
        let num = |k: &str| -> Result<Option<u64>, ExternalError> {
            match entry(k) {
                None => Ok(None),
                Some(v) => {
                    v.trim()
                        .parse::<u64>()
                        .map(Some)
                        .map_err(|_| ExternalError::BadNumber {
                            key: k.into(),
                            value: v,
                        })
                }
            }
        };
        let offset = num("offset")?.unwrap_or(0);
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let path = external::resolve_location(&dir, &location)?;
        let file = match self.maps.get(&path) {
            Some(f) => f.clone(),
            None => {
                let f = MappedFile::open(&path).map_err(|source| ExternalError::Missing {
                    path: path.clone(),
                    source,
                })?;
                self.maps.insert(path.clone(), f.clone());
                f
            }
        };
        let size = file.len() as u64;
        let length = match num("length")? {
            Some(l) => l,
            None => {
                // No length: the shape decides, or the rest of the file.
                let probe = Tensor::from_proto(TensorProto {
                    raw_data: None,
                    ..tp.clone()
                });
                match crate::proto::dtype_bits(tp.data_type()) {
                    Some(_) => probe.nbytes() as u64,
                    None => size.saturating_sub(offset),
                }
            }
        };
        let end = offset.saturating_add(length);
        if end > size {
            return Err(ExternalError::OutOfRange {
                path,
                offset,
                end,
                size,
            });
        }
        Ok(ExternalSpan::new(file, offset as usize, length as usize)
            .expect("invariant: range checked"))
    }
}

/// The `dim_value`s of a tensor type as written (`None` for symbolic or
/// missing ones); `None` when the type is not a tensor or has no shape.
fn declared_dims(t: &super::TypeProto) -> Option<Vec<Option<i64>>> {
    use super::tensor_shape_proto::dimension::Value;
    let shape = crate::ir::types::as_tensor(t)?.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// How a node is named in messages: its name, or its op type if unnamed.
pub fn node_label(name: &str, op_type: &str) -> String {
    if name.is_empty() {
        format!("<unnamed {op_type}>")
    } else {
        name.to_string()
    }
}
