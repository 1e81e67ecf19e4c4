//! [`OrtSession`]: a model loaded into onnxruntime's CPU execution provider,
//! with [`HostTensor`]s in and out.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use half::f16;
use ndarray::{ArrayD, IxDyn};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use prost::Message;

use super::library::{self, OrtLibrary};
use super::names::{self, Labels};
use super::OrtError;
use crate::ir::Model;
use crate::onnx::export;
use crate::proto::ModelProto;
use crate::tensorio::HostTensor;

/// ORT's graph optimization levels (`GraphOptimizationLevel` in its C API).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OrtOptLevel {
    Disable,
    /// Constant folding, redundant-node removal, simple fusions.
    Basic,
    /// Complex fusions, the QDQ → QLinear* fusions among them.
    Extended,
    /// Everything, layout transformations (NCHWc, NHWC) included:
    /// `ORT_ENABLE_ALL`, what users deploy with and what
    /// `eval/tools/speed.py` uses.
    #[default]
    All,
}

impl From<OrtOptLevel> for GraphOptimizationLevel {
    fn from(l: OrtOptLevel) -> Self {
        match l {
            OrtOptLevel::Disable => GraphOptimizationLevel::Disable,
            OrtOptLevel::Basic => GraphOptimizationLevel::Level1,
            OrtOptLevel::Extended => GraphOptimizationLevel::Level2,
            OrtOptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// How to load a model into onnxruntime.
#[derive(Clone, Debug, PartialEq)]
pub struct OrtOptions {
    /// The library to load (`--ort-lib`); `None` searches for it (see
    /// [`super::library`]). Only the first successful load of a process
    /// counts.
    pub library: Option<PathBuf>,
    /// Intra-op threads. 1 (the default) for measuring: one core's speed,
    /// repeatable on shared machines. 0 lets ORT pick (one per core).
    pub intra_threads: usize,
    /// Graph optimization level; [`OrtOptLevel::All`] by default.
    pub optimization: OrtOptLevel,
    /// Write the optimized graph here when the session is created, to see
    /// what ORT fused (ORT warns that a graph optimized at level `All` may
    /// hold hardware-specific layouts; it is for reading, not deploying).
    pub save_optimized: Option<PathBuf>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            library: None,
            intra_threads: 1,
            optimization: OrtOptLevel::All,
            save_optimized: None,
        }
    }
}

/// A runtime input or output of an ORT session.
#[derive(Clone, Debug, PartialEq)]
pub struct OrtIo {
    pub name: String,
    /// ONNX element type code (`TensorProto.DataType`); 0 for a non-tensor.
    pub dtype: i32,
    /// Declared dimensions, `-1` where symbolic.
    pub dims: Vec<i64>,
}

/// A model loaded into onnxruntime (CPU execution provider), ready to run.
///
/// Every node of the model handed to ORT carries a name (see
/// [`super::names`]), so ORT's profiles and optimized graphs can be read
/// back in terms of the ONNX graph.
pub struct OrtSession {
    /// ORT's `Run` takes `&mut` (the `ort` crate does not trust it to be
    /// thread-safe); one run at a time.
    session: Mutex<Session>,
    model_name: String,
    /// The model exactly as ORT received it, kept for [`Self::profile`],
    /// which loads it again with profiling on.
    pub(super) bytes: Arc<[u8]>,
    /// The graph as handed to ORT: labels and structure, for the mapping.
    pub(super) labels: Arc<Labels>,
    pub(super) opts: OrtOptions,
    inputs: Vec<OrtIo>,
    outputs: Vec<OrtIo>,
}

impl std::fmt::Debug for OrtSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtSession")
            .field("model", &self.model_name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl OrtSession {
    /// Loads `model` (exported with every tensor inline).
    pub fn new(model: &Model, opts: &OrtOptions) -> Result<OrtSession, OrtError> {
        Self::from_proto(export::to_proto(model), opts)
    }

    /// Loads a serialized `ModelProto`. External data cannot be resolved
    /// from memory; use [`OrtSession::new`] for a model read from a file.
    pub fn from_bytes(bytes: &[u8], opts: &OrtOptions) -> Result<OrtSession, OrtError> {
        let proto = ModelProto::decode(bytes).map_err(|e| OrtError::Decode {
            detail: e.to_string(),
        })?;
        Self::from_proto(proto, opts)
    }

    fn from_proto(mut proto: ModelProto, opts: &OrtOptions) -> Result<OrtSession, OrtError> {
        let labels = names::label_nodes(&mut proto);
        let model_name = match proto.graph.as_ref().map(|g| g.name()) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => "model".to_string(),
        };
        let bytes: Arc<[u8]> = proto.encode_to_vec().into();
        let session = commit(&bytes, opts, &model_name, None)?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| io(o.name(), o.dtype()))
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| io(o.name(), o.dtype()))
            .collect();
        Ok(OrtSession {
            session: Mutex::new(session),
            model_name,
            bytes,
            labels: Arc::new(labels),
            opts: opts.clone(),
            inputs,
            outputs,
        })
    }

    /// The library this session runs on.
    pub fn library(&self) -> &'static OrtLibrary {
        library::loaded().expect("invariant: a session exists only once the library is loaded")
    }

    /// The graph name (or `model`), used in error messages.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    pub fn inputs(&self) -> &[OrtIo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[OrtIo] {
        &self.outputs
    }

    /// Runs the model on named inputs and returns every graph output, in
    /// graph order.
    pub fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, OrtError> {
        let values = self.prepare(inputs)?;
        self.run_values(&values, true)
            .map(|o| o.expect("invariant: outputs were asked for"))
    }

    /// The inputs checked against the model's and converted to ORT values,
    /// once, so that timing loops measure only `Run`.
    pub(super) fn prepare(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, DynValue)>, OrtError> {
        let expected: Vec<String> = self.inputs.iter().map(|i| i.name.clone()).collect();
        let mut seen = std::collections::BTreeSet::new();
        for (name, _) in inputs {
            if !expected.contains(name) {
                return Err(OrtError::UnexpectedInput {
                    model: self.model_name.clone(),
                    name: name.clone(),
                    expected,
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(OrtError::DuplicateInput {
                    model: self.model_name.clone(),
                    name: name.clone(),
                });
            }
        }
        let missing: Vec<String> = expected
            .iter()
            .filter(|e| !seen.contains(e.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(OrtError::MissingInputs {
                model: self.model_name.clone(),
                missing,
                expected,
            });
        }
        inputs
            .iter()
            .map(|(name, t)| {
                to_value(t)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| OrtError::Input {
                        model: self.model_name.clone(),
                        name: name.clone(),
                        detail: e.to_string(),
                    })
            })
            .collect()
    }

    /// One `Run` on this session's own ORT session.
    pub(super) fn run_values(
        &self,
        values: &[(String, DynValue)],
        convert: bool,
    ) -> Result<Option<Vec<(String, HostTensor)>>, OrtError> {
        // A poisoned lock means a panic during an earlier run, which ORT
        // reports as an error instead; the session itself is unchanged.
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        run_on(&mut session, values, &self.model_name, convert)
    }
}

/// One `Run`; the outputs are converted only if `convert`.
pub(super) fn run_on(
    session: &mut Session,
    values: &[(String, DynValue)],
    model_name: &str,
    convert: bool,
) -> Result<Option<Vec<(String, HostTensor)>>, OrtError> {
    let feed: Vec<(&str, SessionInputValue<'_>)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), SessionInputValue::from(v)))
        .collect();
    let outputs = session.run(feed).map_err(|e| OrtError::Run {
        model: model_name.to_string(),
        detail: e.to_string(),
    })?;
    if !convert {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(outputs.len());
    for (name, value) in outputs.iter() {
        out.push((name.to_string(), from_value(name, &value)?));
    }
    Ok(Some(out))
}

/// Builds a session; `profile` (a file prefix) turns ORT's profiler on and
/// `save_optimized` overrides the options' path.
pub(super) fn commit(
    bytes: &[u8],
    opts: &OrtOptions,
    model_name: &str,
    profile: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Session, OrtError> {
    let lib = library::load(opts.library.as_deref())?;
    let fail = |e: &dyn std::fmt::Display| OrtError::Session {
        model: model_name.to_string(),
        detail: e.to_string(),
    };
    let mut b: SessionBuilder = Session::builder(&lib.env).map_err(|e| fail(&e))?;
    // Python's `InferenceSession` as `eval/tools/speed.py` configures it:
    // intra-op threads, one inter-op thread, level `All`, errors only.
    b = b
        .with_intra_threads(opts.intra_threads)
        .map_err(|e| fail(&e))?
        .with_inter_threads(1)
        .map_err(|e| fail(&e))?
        .with_optimization_level(opts.optimization.into())
        .map_err(|e| fail(&e))?
        .with_log_level(ort::logging::LogLevel::Error)
        .map_err(|e| fail(&e))?;
    let save = profile.map(|(_, s)| s).or(opts.save_optimized.as_deref());
    if let Some(path) = save {
        b = b.with_optimized_model_path(path).map_err(|e| fail(&e))?;
    }
    if let Some((prefix, _)) = profile {
        b = b.with_profiling(prefix).map_err(|e| fail(&e))?;
    }
    b.commit_from_memory(bytes).map_err(|e| fail(&e))
}

fn io(name: &str, ty: &ValueType) -> OrtIo {
    match ty {
        ValueType::Tensor { ty, shape, .. } => OrtIo {
            name: name.to_string(),
            dtype: onnx_dtype(*ty),
            dims: shape.iter().copied().collect(),
        },
        _ => OrtIo {
            name: name.to_string(),
            dtype: 0,
            dims: Vec::new(),
        },
    }
}

/// ORT's element type as an ONNX `TensorProto.DataType` code (0 if onnxq
/// has no use for it).
fn onnx_dtype(t: TensorElementType) -> i32 {
    use crate::proto::tensor_proto::DataType as D;
    (match t {
        TensorElementType::Float32 => D::Float,
        TensorElementType::Float64 => D::Double,
        TensorElementType::Float16 => D::Float16,
        TensorElementType::Bfloat16 => D::Bfloat16,
        TensorElementType::Int64 => D::Int64,
        TensorElementType::Int32 => D::Int32,
        TensorElementType::Int16 => D::Int16,
        TensorElementType::Int8 => D::Int8,
        TensorElementType::Uint64 => D::Uint64,
        TensorElementType::Uint32 => D::Uint32,
        TensorElementType::Uint16 => D::Uint16,
        TensorElementType::Uint8 => D::Uint8,
        TensorElementType::Bool => D::Bool,
        TensorElementType::String => D::String,
        _ => D::Undefined,
    }) as i32
}

fn to_value(t: &HostTensor) -> ort::Result<DynValue> {
    fn mk<T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
        a: &ArrayD<T>,
    ) -> ort::Result<DynValue> {
        let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
        // `iter` walks in logical (C) order whatever the memory layout.
        let data: Vec<T> = a.iter().cloned().collect();
        Ok(Tensor::from_array((shape, data))?.into_dyn())
    }
    match t {
        HostTensor::F32(a) => mk(a),
        HostTensor::F64(a) => mk(a),
        HostTensor::F16(a) => mk(a),
        HostTensor::I64(a) => mk(a),
        HostTensor::I32(a) => mk(a),
        HostTensor::I8(a) => mk(a),
        HostTensor::U8(a) => mk(a),
        HostTensor::Bool(a) => mk(a),
    }
}

fn from_value(name: &str, v: &DynValue) -> Result<HostTensor, OrtError> {
    fn get<T: ort::value::PrimitiveTensorElementType + Clone>(
        v: &DynValue,
    ) -> ort::Result<ArrayD<T>> {
        let (shape, data) = v.try_extract_tensor::<T>()?;
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        Ok(ArrayD::from_shape_vec(IxDyn(&dims), data.to_vec())
            .expect("invariant: ORT's element count matches its shape"))
    }
    let unsupported = |what: String| OrtError::UnsupportedOutput {
        name: name.to_string(),
        dtype: what,
    };
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(unsupported(format!("{other:?}"))),
    };
    let r = match ty {
        TensorElementType::Float32 => get::<f32>(v).map(HostTensor::F32),
        TensorElementType::Float64 => get::<f64>(v).map(HostTensor::F64),
        TensorElementType::Float16 => get::<f16>(v).map(HostTensor::F16),
        TensorElementType::Int64 => get::<i64>(v).map(HostTensor::I64),
        TensorElementType::Int32 => get::<i32>(v).map(HostTensor::I32),
        TensorElementType::Int8 => get::<i8>(v).map(HostTensor::I8),
        TensorElementType::Uint8 => get::<u8>(v).map(HostTensor::U8),
        TensorElementType::Bool => get::<bool>(v).map(HostTensor::Bool),
        other => return Err(unsupported(format!("{other}"))),
    };
    r.map_err(|e| unsupported(format!("{ty} ({e})")))
}
