//! ONNX file → IR.
//!
//! The file is memory-mapped and decoded from a `Bytes` view of the map, so
//! `raw_data` of every tensor is a slice of the map rather than a copy.
//! Import checks what later stages rely on and names the culprit when it
//! fails: every operand is defined, every name is produced once, the graph is
//! acyclic, tensor shapes and sizes agree, external data stays inside the
//! model's directory.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::external::{self, ExternalError, ExternalSpan, MappedFile};
use super::tensor_proto::DataLocation;
use super::{GraphProto, ModelProto, TensorProto};
use crate::ir::{Graph, Model, NodeId, Tensor, TensorError};

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
    fn graph(&mut self, mut gp: GraphProto) -> Result<Graph, ImportError> {
        let mut g = Graph::new();
        let mut defined: HashMap<String, String> = HashMap::new();
        let label = self.label.clone();
        let define = |defined: &mut HashMap<String, String>, name: &str, by: String| {
            if let Some(first) = defined.get(name) {
                return Err(ImportError::Duplicate {
                    path: label.clone(),
                    tensor: name.to_string(),
                    first: first.clone(),
                    second: by,
                });
            }
            defined.insert(name.to_string(), by);
            Ok(())
        };

        for tp in std::mem::take(&mut gp.initializer) {
            define(&mut defined, tp.name(), "an initializer".into())?;
            let t = self.tensor(tp)?;
            g.add_initializer(t);
        }
        for sp in std::mem::take(&mut gp.sparse_initializer) {
            let name = sp
                .values
                .as_ref()
                .map(|t| t.name().to_string())
                .unwrap_or_default();
            define(&mut defined, &name, "a sparse initializer".into())?;
            g.add_sparse_initializer(sp);
        }
        let mut seen_inputs = BTreeSet::new();
        for vi in std::mem::take(&mut gp.input) {
            self.check_dims(&vi)?;
            if !seen_inputs.insert(vi.name().to_string()) {
                return Err(ImportError::Duplicate {
                    path: self.label.clone(),
                    tensor: vi.name().into(),
                    first: "a graph input".into(),
                    second: "another graph input".into(),
                });
            }
            match g.lookup(vi.name()) {
                Some(v) => g.push_input_port(v, vi),
                None => {
                    define(&mut defined, vi.name(), "a graph input".into())?;
                    g.add_input(vi);
                }
            }
        }

        // Ops: outputs first (so an unsorted file still imports), operands second.
        let mut pending: Vec<(NodeId, Vec<String>, BTreeSet<String>)> = Vec::new();
        for mut np in std::mem::take(&mut gp.node) {
            let inputs = std::mem::take(&mut np.input);
            let outputs = std::mem::take(&mut np.output);
            let who = node_label(np.name(), np.op_type());
            for o in outputs.iter().filter(|o| !o.is_empty()) {
                define(&mut defined, o, who.clone())?;
            }
            let free = subgraph_free_names(&np);
            let outs: Vec<Option<String>> = outputs
                .into_iter()
                .map(|o| (!o.is_empty()).then_some(o))
                .collect();
            let n = g.import_op(np, &outs);
            pending.push((n, inputs, free));
        }
        for (n, inputs, free) in pending {
            for (slot, name) in inputs.iter().enumerate() {
                let v = if name.is_empty() {
                    None
                } else {
                    Some(g.lookup(name).ok_or_else(|| self.undefined(&g, n, name))?)
                };
                g.set_input(n, slot, v);
            }
            for name in free {
                let v = g
                    .lookup(&name)
                    .ok_or_else(|| self.undefined(&g, n, &name))?;
                g.add_implicit_input(n, v);
            }
        }

        let mut orphan_infos = Vec::new();
        for (i, vi) in std::mem::take(&mut gp.value_info).into_iter().enumerate() {
            self.check_dims(&vi)?;
            match g.lookup(vi.name()) {
                Some(v) if g.value(v).info.is_none() => g.value_mut(v).info = Some((i as u64, vi)),
                // Entries for unknown names (or repeated entries) are not ours
                // to judge: keep them verbatim.
                _ => orphan_infos.push(vi),
            }
        }
        for vi in std::mem::take(&mut gp.output) {
            self.check_dims(&vi)?;
            let v = g
                .lookup(vi.name())
                .ok_or_else(|| ImportError::UndefinedOutput {
                    path: self.label.clone(),
                    tensor: vi.name().into(),
                })?;
            g.push_output(v, vi);
        }
        gp.value_info = orphan_infos;
        g.shell = gp;

        if let Err(cycle) = g.try_topo_order() {
            let names: Vec<String> = cycle
                .iter()
                .filter(|&&n| g.node(n).op().is_some())
                .take(6)
                .map(|&n| format!("'{}'", node_label(g.node(n).name(), g.node(n).op_type())))
                .collect();
            return Err(ImportError::Cycle {
                path: self.label.clone(),
                nodes: names.join(", "),
            });
        }
        Ok(g)
    }

    fn undefined(&self, g: &Graph, n: NodeId, name: &str) -> ImportError {
        let node = g.node(n);
        ImportError::Undefined {
            path: self.label.clone(),
            node: node_label(node.name(), node.op_type()),
            op: node.op_type().to_string(),
            tensor: name.to_string(),
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
        if let Some(bits) = crate::onnx::dtype_bits(tp.data_type()) {
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
                match crate::onnx::dtype_bits(tp.data_type()) {
                    Some(_) => probe.nbytes() as u64,
                    None => size.saturating_sub(offset),
                }
            }
        };
        let end = offset.checked_add(length).unwrap_or(u64::MAX);
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

/// Names read inside a node's subgraph attributes that the subgraphs do not
/// define themselves: the outer-scope values the node implicitly uses.
pub fn subgraph_free_names(np: &super::NodeProto) -> BTreeSet<String> {
    let mut free = BTreeSet::new();
    for a in &np.attribute {
        for sg in a.g.iter().chain(a.graphs.iter()) {
            free.extend(graph_free_names(sg));
        }
    }
    free
}

fn graph_free_names(g: &GraphProto) -> BTreeSet<String> {
    let mut defined: BTreeSet<&str> = BTreeSet::new();
    for i in &g.input {
        defined.insert(i.name());
    }
    for t in &g.initializer {
        defined.insert(t.name());
    }
    for s in &g.sparse_initializer {
        if let Some(v) = &s.values {
            defined.insert(v.name());
        }
    }
    for n in &g.node {
        for o in &n.output {
            defined.insert(o);
        }
    }
    let mut free = BTreeSet::new();
    for n in &g.node {
        for i in &n.input {
            if !i.is_empty() && !defined.contains(i.as_str()) {
                free.insert(i.clone());
            }
        }
        for name in subgraph_free_names(n) {
            if !defined.contains(name.as_str()) {
                free.insert(name);
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name()) {
            free.insert(o.name().to_string());
        }
    }
    free
}
