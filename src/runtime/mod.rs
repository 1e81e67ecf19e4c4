//! Running models: the only module that talks to tract.
//!
//! A [`Runner`] is a model loaded into tract (`tract-onnx` 0.23.9), ready to
//! run many times:
//!
//! ```text
//!  ir::Model ──export::to_bytes──▶ tract InferenceModel ──into_typed──▶ TypedModel
//!      (input facts fixed, extra outputs selected)      (f16→f32, declutter+optimize)
//!                                                              │
//!                                  Runner::run / Runner::profile ◀──into_runnable
//! ```
//!
//! * Runtime inputs are the graph inputs that are not initializers; an
//!   initializer listed among the inputs (IR < 4 style) is a constant to
//!   tract too (its ONNX loader turns it into a `Const` node).
//! * [`RunOptions::extra_outputs`] names intermediate tensors to capture. Every
//!   ONNX tensor name is an outlet label in tract's inference model, so they
//!   are promoted to model outputs *before* optimisation, which then keeps
//!   them alive. [`Runner::run`] returns them; [`Runner::run_visit`] hands
//!   each to a visitor as soon as its node has run and lets it go.
//! * Every node evaluation is followed by `vzeroupper` (see
//!   [`clear_upper_avx`]): tract's AVX-512 kernels leave the upper register
//!   state dirty, which made the SSE code after them ~3× slower.
//! * [`Runner::profile`] times every node of tract's plan and maps each one
//!   back to the ONNX nodes it came from (see [`NodeTime`]).
//!
//! Inputs and outputs are [`HostTensor`]s, matched by name. Tract's errors are
//! `anyhow` chains; they are flattened into the text of [`RuntimeError`],
//! whose variants name the model, tensor or node concerned.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::prelude::{
    f16, Datum, DatumType, Framework, InferenceFact, InferenceModelExt, IntoTValue, IntoTensor,
    OutletId, TValue, Tensor as TractTensor, TypedFact, TypedModel, TypedSimplePlan,
    TypedSimpleState,
};
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::ops::source::TypedSource;
use tract_onnx::tract_core::plan::SimplePlan;

use crate::ir::types::{self, Dim};
use crate::ir::{Model, NodeId, NodeKind};
use crate::onnx::dtype_name;
use crate::onnx::tensor_proto::DataType;
use crate::tensorio::HostTensor;

mod cache;
pub mod fake_quant;
pub mod weights;
pub use cache::{default_threads, par_map, par_workers, signature, RunnerCache, Signature};

// ---- infer_facts, for the shape-inference pass (see facts.rs) ----
mod facts;
pub use facts::{infer_facts, Fact};
// ---- end infer_facts ----

/// How to load a model into the runtime.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Concrete facts for runtime inputs: `(input name, shape, ONNX dtype)`;
    /// dtype `0` keeps the model's declared element type. Inputs not listed
    /// keep their declared (possibly symbolic) shape.
    pub input_shapes: Vec<(String, Vec<usize>, i32)>,
    /// Intermediate tensors to capture, by ONNX value name. They are
    /// returned after the graph outputs, in this order.
    pub extra_outputs: Vec<String>,
    /// Rewrite float16 computation to float32 (tract's `f16_to_f32`
    /// transform). Tract runs float16 graphs very slowly; with this set,
    /// float16 inputs are accepted and widened, and float16 values —
    /// outputs included — are computed and returned as float32.
    pub f16_to_f32: bool,
    /// Declutter and optimise (fuse, pick kernels). Off runs tract's typed
    /// model as translated from ONNX, nearly one tract node per ONNX node:
    /// slower, but profiles map one-to-one.
    pub optimize: bool,
    /// Ignore the model's `value_info` shapes. `None` (the default) ignores
    /// them exactly when [`RunOptions::input_shapes`] is non-empty: stale
    /// intermediate shapes from exporters often contradict fixed inputs.
    pub ignore_value_info: Option<bool>,
    /// Run activation QuantizeLinear → DequantizeLinear pairs as one
    /// vectorized op with identical results (see [`fake_quant`]).
    pub fuse_qdq: bool,
    /// Fold constant DequantizeLinear nodes (quantized weights) before
    /// tract analyses the model, with identical results (see [`weights`]).
    pub fold_weight_dequantize: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            input_shapes: Vec::new(),
            extra_outputs: Vec::new(),
            f16_to_f32: false,
            optimize: true,
            ignore_value_info: None,
            fuse_qdq: false,
            fold_weight_dequantize: false,
        }
    }
}

/// A runtime input of a model, as declared in the ONNX graph.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    /// ONNX element type code (0 if undeclared).
    pub dtype: i32,
    /// Declared dimensions, symbolic ones included; `None` if the rank is
    /// unknown.
    pub dims: Option<Vec<Dim>>,
}

/// The graph inputs a caller must feed: graph inputs that are not
/// initializers, in graph order.
pub fn input_specs(model: &Model) -> Vec<InputSpec> {
    let g = &model.graph;
    g.inputs()
        .iter()
        .filter(|p| matches!(g.producer_node(p.value).kind, NodeKind::Input))
        .map(|p| {
            let ty = p.info.r#type.as_ref();
            InputSpec {
                name: p.info.name().to_string(),
                dtype: ty.map(types::elem_type).unwrap_or(0),
                dims: ty.and_then(types::dims),
            }
        })
        .collect()
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("model '{model}': tract cannot load it: {detail}")]
    Load { model: String, detail: String },
    #[error("model '{model}': run options name input '{name}', which is not a runtime input (inputs: {known})")]
    UnknownInput {
        model: String,
        name: String,
        known: String,
    },
    #[error("model '{model}': cannot capture tensor '{name}': no value of that name")]
    UnknownTensor { model: String, name: String },
    #[error("input '{name}': element type code {dtype} is not supported by the runtime")]
    UnsupportedDtype { name: String, dtype: i32 },
    #[error("missing input(s) {}; the model takes {}", .missing.join(", "), .expected.join(", "))]
    MissingInputs {
        missing: Vec<String>,
        expected: Vec<String>,
    },
    #[error("input '{name}' is not an input of the model; it takes {}", .expected.join(", "))]
    UnexpectedInput { name: String, expected: Vec<String> },
    #[error("input '{name}' is given twice")]
    DuplicateInput { name: String },
    #[error("input '{name}' has element type {got}, the model expects {expected}")]
    InputDtype {
        name: String,
        expected: String,
        got: String,
    },
    #[error("input '{name}' has shape {got:?}, the model expects {expected}")]
    InputShape {
        name: String,
        expected: String,
        got: Vec<usize>,
    },
    #[error("model '{model}': run failed: {detail}")]
    Run { model: String, detail: String },
    #[error("output '{name}' has tract element type {dtype}, which onnxq cannot return")]
    UnsupportedOutput { name: String, dtype: String },
}

/// One node of tract's plan, timed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    /// The tract node's name. Before optimisation it is the ONNX node name
    /// (or, for unnamed nodes, its first output's name); nodes tract adds
    /// are named `<onnx name>.<suffix>`.
    pub tract_node: String,
    /// Tract's op name (`Conv`, `OptMatMul`, …).
    pub op: String,
    /// The ONNX nodes this tract node stands for, in graph order: the one
    /// whose name it carries, plus unnamed-for neighbours that may have been
    /// fused into it (see [`NodeTimes::groups`]). Empty when no ONNX node
    /// could be identified.
    pub onnx_nodes: Vec<String>,
    /// Median time over the timed runs.
    pub median: Duration,
}

/// ONNX nodes and the plan nodes they became, with their summed time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FusedGroup {
    /// In graph order of first appearance.
    pub onnx_nodes: Vec<String>,
    /// In plan order.
    pub tract_nodes: Vec<String>,
    /// Sum of the members' median times.
    pub median: Duration,
}

/// Per-node and whole-model timings from [`Runner::profile`].
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTimes {
    /// Timed runs (after one untimed warm-up).
    pub runs: usize,
    /// Median wall time of a whole run.
    pub total: Duration,
    /// Plan nodes in execution order (model inputs left out).
    pub nodes: Vec<NodeTime>,
    /// The plan nodes joined into groups that share ONNX nodes: what a set
    /// of ONNX nodes costs once tract has fused and split them.
    pub groups: Vec<FusedGroup>,
    /// ONNX nodes attributed to no tract node: folded into constants when
    /// loading, or removed by optimisation.
    pub unattributed: Vec<String>,
}

impl NodeTimes {
    /// Sum of the per-node medians.
    pub fn node_sum(&self) -> Duration {
        self.nodes.iter().map(|n| n.median).sum()
    }
}

/// What the plan expects on one input.
#[derive(Clone, Debug)]
struct InputSlot {
    name: String,
    dt: DatumType,
    /// Concrete dimensions; `None` for a symbolic one.
    shape: Vec<Option<usize>>,
}

/// A model loaded into tract, ready to run.
#[derive(Debug)]
pub struct Runner {
    plan: Arc<TypedSimplePlan>,
    /// The plan [`Runner::run_visit`] uses: it computes the graph outputs
    /// and returns only them (and any captured tensor the graph outputs do
    /// not need, see `tail`); captured tensors are handed to the visitor
    /// the moment their node has run, still hot in cache, and freed as soon
    /// as the graph no longer needs them instead of living to the end of
    /// the run. Observing hundreds of large intermediates after the run
    /// read them back from memory and cost calibration more than the model.
    visit_plan: Arc<TypedSimplePlan>,
    /// Per plan node id and output slot: the indices in `outputs` of the
    /// captured tensors it produces (several names can share an outlet).
    watch: HashMap<(usize, usize), Vec<usize>>,
    /// Captured tensors `visit_plan` returns after the graph outputs
    /// (constants and tensors the graph outputs do not depend on, which
    /// it would otherwise not compute): indices in `outputs`.
    tail: Vec<usize>,
    /// Graph outputs: the first entries of `outputs`.
    n_graph: usize,
    /// Activation Q/DQ pairs run as one op ([`RunOptions::fuse_qdq`]).
    fused_qdq: usize,
    /// Constant DequantizeLinear nodes folded
    /// ([`RunOptions::fold_weight_dequantize`]).
    folded_dq: usize,
    model_name: String,
    inputs: Vec<InputSlot>,
    outputs: Vec<String>,
    f16_to_f32: bool,
    /// Per plan node id: the ONNX node names it stands for.
    groups: Vec<Vec<String>>,
    unattributed: Vec<String>,
}

/// Tract's error chain as one line: `outer: cause: root cause`.
/// Hands `model` to tract as an inference model, with the ONNX defaults
/// tract 0.23.9 gets wrong spelled out first; returns it with the names of
/// its inputs in order. Every load goes through here, so a workaround for
/// tract applies to running, folding and shape inference alike.
///
/// Large initializers of the types in `weights_as_inputs` are handed over
/// as typed graph inputs instead (appended after the real inputs); their
/// names are returned third. That is enough for type and shape analysis,
/// which never reads weight values; [`Runner::new`] then puts the values
/// in as constants built straight from the model's bytes. Either way tract
/// never gets the weights through protobuf, which copied each one three
/// times (encoded, decoded, converted) — and on this kind of VM freshly
/// touched memory is what costs (MiniLM's shape inference took 30 ms or
/// 450 ms depending on it; its calibration 0.25 s or 0.5 s).
#[allow(clippy::type_complexity)]
fn load_inference(
    model: &Model,
    ignore_value_info: bool,
    weights_as_inputs: &[i32],
) -> tract_onnx::prelude::TractResult<(
    tract_onnx::prelude::InferenceModel,
    Vec<String>,
    Vec<String>,
)> {
    let mut proto = crate::onnx::export::to_proto(model);
    let mut moved = Vec::new();
    if let Some(g) = proto.graph.as_mut() {
        spell_out_defaults(&mut g.node);
        moved = move_weights_to_inputs(g, weights_as_inputs);
    }
    // Encoded, then decoded into tract's own protobuf types (tract-onnx
    // builds them with prost 0.14 too). Decoding here rather than through
    // `model_for_read` spares tract's `read_to_end` copy of the encoding,
    // and the encoding is freed before tract converts the tensors: one
    // copy of the weights fewer at the peak.
    let pb: tract_onnx::pb::ModelProto = {
        let bytes = prost::Message::encode_to_vec(&proto);
        drop(proto);
        prost::Message::decode(bytes.as_slice())?
    };
    let im = tract_onnx::onnx()
        .with_ignore_value_info(ignore_value_info)
        .model_for_proto_model(&pb)?;
    drop(pb);
    let names = im
        .input_outlets()?
        .iter()
        .map(|o| im.node(o.node).name.clone())
        .collect();
    Ok((im, names, moved))
}

/// Every floating-point type: what shape inference hands over as inputs.
const FLOAT_TYPES: [i32; 4] = [
    DataType::Float as i32,
    DataType::Double as i32,
    DataType::Float16 as i32,
    DataType::Bfloat16 as i32,
];

/// Initializers of more than [`WEIGHT_ELEMENTS`] elements whose type is in
/// `types` become graph inputs of the same type and shape (see
/// [`load_inference`]); returns their names. Shape computations read small
/// integer tensors, never these.
fn move_weights_to_inputs(g: &mut crate::onnx::GraphProto, types: &[i32]) -> Vec<String> {
    use crate::onnx::{type_proto, TensorShapeProto, TypeProto, ValueInfoProto};
    const WEIGHT_ELEMENTS: i64 = 4096;
    if types.is_empty() {
        return vec![];
    }
    let declared: BTreeSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    let (weights, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut g.initializer)
        .into_iter()
        .partition(|t| {
            types.contains(&t.data_type())
                && t.dims.iter().all(|&d| d >= 0)
                && t.dims.iter().product::<i64>() > WEIGHT_ELEMENTS
        });
    g.initializer = keep;
    let moved = weights.iter().map(|t| t.name().to_string()).collect();
    for t in weights {
        if declared.contains(t.name()) {
            continue;
        }
        let dims = t
            .dims
            .iter()
            .map(|&d| crate::onnx::tensor_shape_proto::Dimension {
                value: Some(crate::onnx::tensor_shape_proto::dimension::Value::DimValue(
                    d,
                )),
                ..Default::default()
            })
            .collect();
        g.input.push(ValueInfoProto {
            name: t.name.clone(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: t.data_type,
                    shape: Some(TensorShapeProto { dim: dims }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    moved
}

/// Writes out ONNX attribute defaults tract 0.23.9 gets wrong:
/// `ConstantOfShape` without `value` makes float32 zeros, where tract's
/// loader uses an f64 zero (`rctensor0(0.0)`) and every type downstream —
/// a folded initializer, an inferred value_info — would follow it.
fn spell_out_defaults(nodes: &mut [crate::onnx::NodeProto]) {
    use crate::onnx::attribute_proto::AttributeType;
    for n in nodes {
        let default_domain = matches!(n.domain(), "" | "ai.onnx");
        if default_domain
            && n.op_type() == "ConstantOfShape"
            && !n.attribute.iter().any(|a| a.name() == "value")
        {
            n.attribute.push(crate::onnx::AttributeProto {
                name: Some("value".into()),
                r#type: Some(AttributeType::Tensor as i32),
                t: Some(crate::onnx::TensorProto {
                    data_type: Some(DataType::Float as i32),
                    dims: vec![1],
                    float_data: vec![0.0],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
}

fn chain(e: &tract_onnx::prelude::TractError) -> String {
    format!("{e:#}")
}

fn onnx_to_datum(dtype: i32) -> Option<DatumType> {
    use DataType::*;
    Some(match DataType::try_from(dtype).ok()? {
        Float => DatumType::F32,
        Double => DatumType::F64,
        Float16 => DatumType::F16,
        Int64 => DatumType::I64,
        Int32 => DatumType::I32,
        Int16 => DatumType::I16,
        Int8 => DatumType::I8,
        Uint64 => DatumType::U64,
        Uint32 => DatumType::U32,
        Uint16 => DatumType::U16,
        Uint8 => DatumType::U8,
        Bool => DatumType::Bool,
        _ => return None,
    })
}

/// ONNX's name for a tract element type where one exists.
fn datum_name(dt: DatumType) -> String {
    let code = match dt.unquantized() {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I64 => DataType::Int64,
        DatumType::I32 => DataType::Int32,
        DatumType::I16 => DataType::Int16,
        DatumType::I8 => DataType::Int8,
        DatumType::U64 => DataType::Uint64,
        DatumType::U32 => DataType::Uint32,
        DatumType::U16 => DataType::Uint16,
        DatumType::U8 => DataType::Uint8,
        DatumType::Bool => DataType::Bool,
        other => return format!("{other:?}"),
    };
    dtype_name(code as i32).to_string()
}

fn median(v: &mut [Duration]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2
    }
}

impl Runner {
    /// Loads `model` into tract with `opts`.
    pub fn new(model: &Model, opts: &RunOptions) -> Result<Runner, RuntimeError> {
        let model_name = match model.graph.shell.name() {
            "" => "model".to_string(),
            n => n.to_string(),
        };
        let load = |e: tract_onnx::prelude::TractError| RuntimeError::Load {
            model: model_name.clone(),
            detail: chain(&e),
        };
        let ignore_vi = opts
            .ignore_value_info
            .unwrap_or(!opts.input_shapes.is_empty());
        let (mut im, input_names, weights_moved) =
            load_inference(model, ignore_vi, &[DataType::Float as i32]).map_err(load)?;

        // Fixed input facts.
        for (name, shape, dtype) in &opts.input_shapes {
            let ix = input_names.iter().position(|n| n == name).ok_or_else(|| {
                RuntimeError::UnknownInput {
                    model: model_name.clone(),
                    name: name.clone(),
                    known: input_names.join(", "),
                }
            })?;
            let dt = if *dtype == 0 {
                use tract_onnx::prelude::Fact;
                im.input_fact(ix).map_err(load)?.datum_type()
            } else {
                Some(
                    onnx_to_datum(*dtype).ok_or_else(|| RuntimeError::UnsupportedDtype {
                        name: name.clone(),
                        dtype: *dtype,
                    })?,
                )
            };
            let fact = match dt {
                Some(dt) => InferenceFact::dt_shape(dt, shape.clone()),
                None => InferenceFact::shape(shape.clone()),
            };
            im.set_input_fact(ix, fact).map_err(load)?;
        }

        // Captured intermediates become extra model outputs.
        let mut outlets = im.output_outlets().map_err(load)?.to_vec();
        let mut output_names: Vec<String> = model
            .graph
            .outputs()
            .iter()
            .map(|p| p.info.name().to_string())
            .collect();
        for name in &opts.extra_outputs {
            let outlet = im
                .find_outlet_label(name)
                .or_else(|| im.node_by_name(name).ok().map(|n| n.id.into()))
                .ok_or_else(|| RuntimeError::UnknownTensor {
                    model: model_name.clone(),
                    name: name.clone(),
                })?;
            outlets.push(outlet);
            output_names.push(name.clone());
        }
        im.select_output_outlets(&outlets).map_err(load)?;
        // The weights handed over as inputs: back to constants, the real
        // inputs the only inputs again.
        let real: Vec<OutletId> = im
            .input_outlets()
            .map_err(load)?
            .iter()
            .copied()
            .filter(|o| !weights_moved.contains(&im.node(o.node).name))
            .collect();
        im.set_input_outlets(&real).map_err(load)?;
        weights::substitute(&mut im, weights::float_constants(model, &weights_moved))
            .map_err(load)?;
        let folded_dq = if opts.fold_weight_dequantize {
            weights::substitute(&mut im, weights::dequantized_constants(model)).map_err(load)?
        } else {
            0
        };

        let mut typed: TypedModel = im.into_typed().map_err(load)?;
        if opts.f16_to_f32 {
            typed
                .transform(&FloatPrecisionTranslator::new(
                    DatumType::F16,
                    DatumType::F32,
                ))
                .map_err(load)?;
        }
        let fused_qdq = if opts.fuse_qdq {
            fake_quant::fuse(&mut typed).map_err(load)?
        } else {
            0
        };
        if opts.optimize {
            typed = typed.into_optimized().map_err(load)?;
        }
        let typed = Arc::new(typed);
        let outlets = typed.output_outlets().map_err(load)?.to_vec();
        let plan = SimplePlan::new(typed.clone()).map_err(load)?;
        let n_graph = model.graph.outputs().len();
        let (visit_plan, watch, tail) = if outlets.len() == n_graph {
            // Nothing captured: the visiting plan is the plain one.
            (plan.clone(), HashMap::new(), Vec::new())
        } else {
            Self::visit_plan(&typed, &outlets, n_graph).map_err(load)?
        };

        let tm = plan.model();
        let mut inputs = Vec::new();
        for (ix, o) in tm.input_outlets().map_err(load)?.iter().enumerate() {
            let fact: &TypedFact = tm.input_fact(ix).map_err(load)?;
            inputs.push(InputSlot {
                name: tm.node(o.node).name.clone(),
                dt: fact.datum_type,
                shape: fact.shape.iter().map(|d| d.to_usize().ok()).collect(),
            });
        }
        let order: Vec<usize> = plan
            .order_without_consts()
            .iter()
            .copied()
            .filter(|&id| tm.nodes()[id].op_as::<TypedSource>().is_none())
            .collect();
        let (groups, unattributed) = attribute(model, tm, &order);
        Ok(Runner {
            plan,
            visit_plan,
            watch,
            tail,
            n_graph,
            fused_qdq,
            folded_dq,
            model_name,
            inputs,
            outputs: output_names,
            f16_to_f32: opts.f16_to_f32,
            groups,
            unattributed,
        })
    }

    /// Builds the plan for [`Runner::run_visit`] over `outlets` (graph
    /// outputs first, `n_graph` of them, then captured tensors).
    #[allow(clippy::type_complexity)]
    fn visit_plan(
        typed: &Arc<TypedModel>,
        outlets: &[OutletId],
        n_graph: usize,
    ) -> tract_onnx::prelude::TractResult<(
        Arc<TypedSimplePlan>,
        HashMap<(usize, usize), Vec<usize>>,
        Vec<usize>,
    )> {
        let graph_outlets = &outlets[..n_graph];
        // `new_for_outputs` is deprecated in favour of selecting the model's
        // outputs, which here must stay selected: they are what kept the
        // captured tensors from being fused away by the optimiser.
        #[allow(deprecated)]
        let graph_only = SimplePlan::new_for_outputs(typed.clone(), graph_outlets)?;
        let computed: BTreeSet<usize> = graph_only.order_without_consts().iter().copied().collect();
        let mut watch: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
        let mut tail = Vec::new();
        let mut plan_outlets = graph_outlets.to_vec();
        for (i, o) in outlets.iter().enumerate().skip(n_graph) {
            if computed.contains(&o.node) {
                watch.entry((o.node, o.slot)).or_default().push(i);
            } else {
                tail.push(i);
                plan_outlets.push(*o);
            }
        }
        let plan = if tail.is_empty() {
            graph_only
        } else {
            #[allow(deprecated)]
            SimplePlan::new_for_outputs(typed.clone(), &plan_outlets)?
        };
        Ok((plan, watch, tail))
    }

    /// How many activation Q/DQ pairs run fused ([`RunOptions::fuse_qdq`]).
    pub fn fused_qdq(&self) -> usize {
        self.fused_qdq
    }

    /// How many constant DequantizeLinear nodes were folded
    /// ([`RunOptions::fold_weight_dequantize`]).
    pub fn folded_dq(&self) -> usize {
        self.folded_dq
    }

    /// Runtime input names, in the model's order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.name.clone()).collect()
    }

    /// Names of what [`Runner::run`] returns: graph outputs, then captures.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Matches named inputs to the plan's inputs, checking types and shapes.
    fn prepare(&self, given: &[(String, HostTensor)]) -> Result<Vec<TValue>, RuntimeError> {
        let expected = self.input_names();
        let mut by_name: HashMap<&str, &HostTensor> = HashMap::new();
        for (name, t) in given {
            if !expected.iter().any(|e| e == name) {
                return Err(RuntimeError::UnexpectedInput {
                    name: name.clone(),
                    expected,
                });
            }
            if by_name.insert(name.as_str(), t).is_some() {
                return Err(RuntimeError::DuplicateInput { name: name.clone() });
            }
        }
        let missing: Vec<String> = expected
            .iter()
            .filter(|e| !by_name.contains_key(e.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(RuntimeError::MissingInputs { missing, expected });
        }
        self.inputs
            .iter()
            .map(|slot| {
                let t = by_name[slot.name.as_str()];
                self.check_input(slot, t)?;
                Ok(to_tract(t, slot.dt, self.f16_to_f32).into_tvalue())
            })
            .collect()
    }

    fn check_input(&self, slot: &InputSlot, t: &HostTensor) -> Result<(), RuntimeError> {
        let host_dt = onnx_to_datum(t.dtype()).expect("invariant: host dtypes map to tract");
        let widened = self.f16_to_f32 && host_dt == DatumType::F16 && slot.dt == DatumType::F32;
        if host_dt != slot.dt.unquantized() && !widened {
            return Err(RuntimeError::InputDtype {
                name: slot.name.clone(),
                expected: datum_name(slot.dt),
                got: t.dtype_name().to_string(),
            });
        }
        let fits = t.shape().len() == slot.shape.len()
            && t.shape()
                .iter()
                .zip(&slot.shape)
                .all(|(g, w)| w.is_none_or(|w| w == *g));
        if !fits {
            let dims: Vec<String> = slot
                .shape
                .iter()
                .map(|d| d.map(|d| d.to_string()).unwrap_or_else(|| "?".into()))
                .collect();
            return Err(RuntimeError::InputShape {
                name: slot.name.clone(),
                expected: format!("[{}]", dims.join(",")),
                got: t.shape().to_vec(),
            });
        }
        Ok(())
    }

    fn run_error(&self, e: tract_onnx::prelude::TractError) -> RuntimeError {
        RuntimeError::Run {
            model: self.model_name.clone(),
            detail: chain(&e),
        }
    }

    fn collect(&self, values: Vec<TValue>) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        self.outputs
            .iter()
            .zip(values)
            .map(|(name, v)| Ok((name.clone(), from_tract(name, v)?)))
            .collect()
    }

    /// Runs the model on named inputs (any order). Returns the graph outputs
    /// followed by the captured tensors, named.
    pub fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        let values = self.prepare(inputs)?;
        let mut state = TypedSimpleState::new(&self.plan).map_err(|e| self.run_error(e))?;
        let out = state
            .run_plan_with_eval(values.into_iter().collect(), eval_node)
            .map_err(|e| self.run_error(e))?;
        self.collect(out.into_iter().collect())
    }

    /// Runs the model, hands each captured tensor to `visit` without
    /// copying it, and returns the graph outputs. `visit` gets the
    /// tensor's index in [`Runner::output_names`], name, shape, and
    /// `Some(values)` for float32 (`None` for other types); it is called
    /// while the model runs, right after the node that makes the tensor
    /// (see `visit_plan`). Calibration observes hundreds of large
    /// intermediates per sample this way.
    pub fn run_visit(
        &self,
        inputs: &[(String, HostTensor)],
        mut visit: impl FnMut(usize, &str, &[usize], Option<&[f32]>),
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        fn show(
            visit: &mut impl FnMut(usize, &str, &[usize], Option<&[f32]>),
            i: usize,
            name: &str,
            v: &TValue,
        ) {
            let shape = v.shape();
            let view = if v.datum_type() == DatumType::F32 {
                v.to_plain_array_view::<f32>().ok()
            } else {
                None
            };
            match view {
                Some(a) => match a.as_slice() {
                    Some(sl) => visit(i, name, shape, Some(sl)),
                    None => visit(
                        i,
                        name,
                        shape,
                        Some(&a.iter().copied().collect::<Vec<f32>>()),
                    ),
                },
                None => visit(i, name, shape, None),
            }
        }
        let values = self.prepare(inputs)?;
        let mut state = TypedSimpleState::new(&self.visit_plan).map_err(|e| self.run_error(e))?;
        let out = state
            .run_plan_with_eval(values.into_iter().collect(), |ctx, op_state, node, ins| {
                let r = eval_node(ctx, op_state, node, ins)?;
                for (slot, v) in r.iter().enumerate() {
                    if let Some(ixs) = self.watch.get(&(node.id, slot)) {
                        for &i in ixs {
                            show(&mut visit, i, &self.outputs[i], v);
                        }
                    }
                }
                Ok::<_, tract_onnx::prelude::TractError>(r)
            })
            .map_err(|e| self.run_error(e))?;
        for (&i, v) in self.tail.iter().zip(out.iter().skip(self.n_graph)) {
            show(&mut visit, i, &self.outputs[i], v);
        }
        self.outputs[..self.n_graph]
            .iter()
            .zip(out)
            .map(|(name, v)| Ok((name.clone(), from_tract(name, v)?)))
            .collect()
    }

    /// Times the model: one untimed warm-up, then `runs` (at least one)
    /// timed runs; reports per-node and whole-run medians.
    pub fn profile(
        &self,
        inputs: &[(String, HostTensor)],
        runs: usize,
    ) -> Result<NodeTimes, RuntimeError> {
        let runs = runs.max(1);
        let values = self.prepare(inputs)?;
        let mut state = TypedSimpleState::new(&self.plan).map_err(|e| self.run_error(e))?;
        state
            .run(values.iter().cloned().collect())
            .map_err(|e| self.run_error(e))?;
        let n = self.plan.model().nodes().len();
        let mut per_node: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); n];
        let mut totals = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut this = vec![Duration::ZERO; n];
            let start = Instant::now();
            state
                .run_plan_with_eval(
                    values.iter().cloned().collect(),
                    |ctx, op_state, node, ins| {
                        let t = Instant::now();
                        let r = eval_node(ctx, op_state, node, ins);
                        this[node.id] += t.elapsed();
                        r
                    },
                )
                .map_err(|e| self.run_error(e))?;
            totals.push(start.elapsed());
            for (acc, d) in per_node.iter_mut().zip(this) {
                acc.push(d);
            }
        }
        let model = self.plan.model();
        let nodes: Vec<NodeTime> = self
            .plan
            .order_without_consts()
            .iter()
            .map(|&id| &model.nodes()[id])
            .filter(|node| node.op_as::<TypedSource>().is_none())
            .map(|node| NodeTime {
                tract_node: node.name.clone(),
                op: node.op.name().to_string(),
                onnx_nodes: self.groups[node.id].clone(),
                median: median(&mut per_node[node.id]),
            })
            .collect();
        Ok(NodeTimes {
            runs,
            total: median(&mut totals),
            groups: fused_groups(&nodes),
            nodes,
            unattributed: self.unattributed.clone(),
        })
    }
}

/// Evaluates one plan node the way every run here does: tract's own
/// evaluation, then [`clear_upper_avx`].
fn eval_node(
    ctx: &tract_onnx::tract_core::plan::EvalContext,
    state: Option<&mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
    node: &tract_onnx::prelude::TypedNode,
    inputs: tract_onnx::prelude::TVec<TValue>,
) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::TVec<TValue>> {
    let r = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
    clear_upper_avx();
    r
}

/// Ends the AVX "dirty upper state" tract's hand-written AVX-512 kernels
/// leave behind them.
///
/// Those kernels return without `vzeroupper`, and every SSE-encoded
/// instruction that runs afterwards, ours and tract's own Rust-compiled ops
/// alike (everything this crate and tract build for baseline x86-64), then
/// pays a false dependency on the upper register halves. Measured on this
/// project's EPYC machines: scanning a ppocr_det activation for its range
/// took 0.49 ns per value right after a tract node and 0.15 ns after
/// `vzeroupper`. Called after every node the runner evaluates.
#[inline]
fn clear_upper_avx() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above, cached by std), and
        // `vzeroupper` only zeroes bits 128 and up of ymm0–15; LLVM knows
        // the intrinsic clobbers them, and code built for baseline x86-64
        // keeps nothing there.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::x86_64::_mm256_zeroupper()
        }
    }
}

fn to_tract(t: &HostTensor, want: DatumType, f16_to_f32: bool) -> TractTensor {
    match t {
        HostTensor::F16(a) if f16_to_f32 && want == DatumType::F32 => {
            TractTensor::from(a.mapv(f16::to_f32))
        }
        HostTensor::F32(a) => TractTensor::from(a.clone()),
        HostTensor::F64(a) => TractTensor::from(a.clone()),
        HostTensor::F16(a) => TractTensor::from(a.clone()),
        HostTensor::I64(a) => TractTensor::from(a.clone()),
        HostTensor::I32(a) => TractTensor::from(a.clone()),
        HostTensor::I8(a) => TractTensor::from(a.clone()),
        HostTensor::U8(a) => TractTensor::from(a.clone()),
        HostTensor::Bool(a) => TractTensor::from(a.clone()),
    }
}

fn from_tract(name: &str, v: TValue) -> Result<HostTensor, RuntimeError> {
    let t = v.into_tensor();
    let dt = t.datum_type();
    let unsupported = || RuntimeError::UnsupportedOutput {
        name: name.to_string(),
        dtype: format!("{dt:?}"),
    };
    // Quantized types carry their bytes as the plain integer type; symbolic
    // dimensions (shape computations) come back as int64.
    let want = match dt {
        DatumType::TDim => DatumType::I64,
        d => d.unquantized(),
    };
    let t = if want != dt {
        t.cast_to_dt(want).map_err(|_| unsupported())?.into_owned()
    } else {
        t
    };
    fn arr<T: Datum + Clone>(t: &TractTensor) -> Option<ndarray::ArrayD<T>> {
        t.to_plain_array_view::<T>().ok().map(|a| a.to_owned())
    }
    let out = match want {
        DatumType::F32 => arr::<f32>(&t).map(HostTensor::F32),
        DatumType::F64 => arr::<f64>(&t).map(HostTensor::F64),
        DatumType::F16 => arr::<f16>(&t).map(HostTensor::F16),
        DatumType::I64 => arr::<i64>(&t).map(HostTensor::I64),
        DatumType::I32 => arr::<i32>(&t).map(HostTensor::I32),
        DatumType::I8 => arr::<i8>(&t).map(HostTensor::I8),
        DatumType::U8 => arr::<u8>(&t).map(HostTensor::U8),
        DatumType::Bool => arr::<bool>(&t).map(HostTensor::Bool),
        _ => None,
    };
    out.ok_or_else(unsupported)
}

/// The name tract gives an ONNX node: its name, else its first output's.
fn onnx_key(model: &Model, n: NodeId) -> String {
    let g = &model.graph;
    let node = g.node(n);
    if !node.name().is_empty() {
        return node.name().to_string();
    }
    match node.outputs().iter().flatten().next() {
        Some(&v) => g.name(v).to_string(),
        None => node.op_type().to_string(),
    }
}

/// Maps every plan node (`order`: the plan's non-constant nodes) to the
/// ONNX nodes it stands for, and lists the ONNX nodes no plan node stands for.
///
/// Tract keeps ONNX node names through translation and optimisation: a plan
/// node's name is an ONNX node's, or one followed by `.suffix`/`-suffix` for
/// nodes tract derives from it; the longest such ONNX name wins. Tract also
/// names a fused node after *either* end of the chain it fused (MatMul, Add,
/// Relu run as one `OptMatMul` named `relu.low`, next to `matmul.pack_b`
/// packing the weights), so an ONNX node no plan node is named after is
/// linked to both neighbours it could have been fused into: its producer's
/// plan node when it was that value's only user, and its user's plan node
/// when it has a single user. [`fused_groups`] then joins plan nodes sharing
/// an ONNX node into one group. An ONNX node with neither neighbour (folded
/// into a constant at load, or removed) is unattributed.
fn attribute(model: &Model, tm: &TypedModel, order: &[usize]) -> (Vec<Vec<String>>, Vec<String>) {
    let g = &model.graph;
    let ops = g.ops();
    let keys: Vec<String> = ops.iter().map(|&n| onnx_key(model, n)).collect();
    let index: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let op_pos: HashMap<NodeId, usize> = ops.iter().enumerate().map(|(i, &n)| (n, i)).collect();

    // For each ONNX op (by position in `ops`), the plan nodes named after it.
    let mut named: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ops.len()];
    for &id in order {
        let name = tm.nodes()[id].name.as_str();
        let mut cut = name.len();
        loop {
            if let Some(&i) = index.get(&name[..cut]) {
                named[i].insert(id);
                break;
            }
            match name[..cut].rfind(['.', '-']) {
                Some(p) => cut = p,
                None => break,
            }
        }
    }
    let rank: HashMap<usize, usize> = order.iter().enumerate().map(|(r, &id)| (id, r)).collect();
    let by_rank = |id: &usize| rank.get(id).copied();
    // `holders[i]`: plan nodes ONNX op `i` is attributed to.
    let mut holders = named.clone();

    // Upstream, in graph order so fused chains (Conv, BatchNormalization,
    // Relu) follow their head: join the last plan node of the producer.
    for (i, &n) in ops.iter().enumerate() {
        if !named[i].is_empty() {
            continue;
        }
        let from = g.node(n).inputs().iter().flatten().find_map(|&v| {
            let pi = *op_pos.get(&g.producer(v))?;
            (g.user_nodes(v) == [n] && !g.is_graph_output(v)).then_some(pi)
        });
        if let Some(id) = from.and_then(|pi| holders[pi].iter().copied().max_by_key(by_rank)) {
            holders[i].insert(id);
        }
    }
    // Downstream, in reverse order: join the first plan node of the user.
    for (i, &n) in ops.iter().enumerate().rev() {
        if !named[i].is_empty() {
            continue;
        }
        let outs: Vec<_> = g.node(n).outputs().iter().flatten().copied().collect();
        let [v] = outs.as_slice() else { continue };
        if g.is_graph_output(*v) {
            continue;
        }
        let [u] = g.user_nodes(*v)[..] else { continue };
        let Some(&ui) = op_pos.get(&u) else { continue };
        if let Some(id) = holders[ui].iter().copied().min_by_key(by_rank) {
            holders[i].insert(id);
        }
    }

    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); tm.nodes().len()];
    let mut unattributed = Vec::new();
    for (i, h) in holders.iter().enumerate() {
        if h.is_empty() {
            unattributed.push(keys[i].clone());
        }
        for &id in h {
            per_node[id].push(keys[i].clone());
        }
    }
    (per_node, unattributed)
}

/// Joins timed plan nodes that share an ONNX node into groups (union-find
/// over the relation [`attribute`] built), in plan order.
fn fused_groups(nodes: &[NodeTime]) -> Vec<FusedGroup> {
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in &n.onnx_nodes {
            if let Some(&j) = owner.get(o.as_str()) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                // The earlier node is the root, so groups come out in plan order.
                parent[a.max(b)] = a.min(b);
            } else {
                owner.insert(o, i);
            }
        }
    }
    let mut groups: Vec<FusedGroup> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let root = find(&mut parent, i);
        let gi = *slot.entry(root).or_insert_with(|| {
            groups.push(FusedGroup::default());
            groups.len() - 1
        });
        let grp = &mut groups[gi];
        grp.tract_nodes.push(n.tract_node.clone());
        for o in &n.onnx_nodes {
            if !grp.onnx_nodes.contains(o) {
                grp.onnx_nodes.push(o.clone());
            }
        }
        grp.median += n.median;
    }
    groups
}
