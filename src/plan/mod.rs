//! Where quantization goes: which tensors get a QuantizeLinear →
//! DequantizeLinear pair, which constants become int8 weights or int32
//! biases, and why each node is or is not quantized.
//!
//! The placement is the "QDQ" form that onnxruntime's CPU provider and
//! TensorRT fuse into integer kernels: around each quantizable op, its float
//! activation inputs and its output carry Q→DQ; its weights are int8
//! initializers read through DequantizeLinear; its bias is int32 with scale
//! `s_in · s_w`. One pair per tensor serves all its readers. Data-movement
//! ops pass their input's scale through. Three exceptions keep numbers good:
//! graph outputs stay float (the interface does not lose precision), Softmax
//! outputs stay float (tract 0.23.9 mis-computes Q→DQ→Softmax→Q→DQ, and a
//! probability's useful range spans orders of magnitude), and the output of
//! Conv/MatMul/Gemm/Add read only by a Relu or Clip is not quantized (the
//! pair is fused into the activation, which runtimes do as well).
//!
//! Both `calibrate` (what to observe) and `insert-qdq` (what to rewrite) use
//! these plans, so they never disagree. [`portable`] is the fidelity-first
//! placement; [`groups`] places whole groups where a target's runtime has
//! integer kernels (see `crate::target`).

pub mod groups;
pub mod portable;
pub mod speed;

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{Graph, Model, NodeId, ValueId};
use crate::proto::tensor_proto::DataType;
use crate::target::Target;

/// Ops whose inputs and outputs are quantized (their "node units" have
/// integer kernels in onnxruntime or TensorRT).
pub const QUANT_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "Add",
    "Mul",
    "Concat",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "GlobalMaxPool",
    "Resize",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
];

/// Ops that move data without computing: their output reuses the input's
/// scale and zero point (the targets' shared list).
pub use crate::target::DATA_MOVEMENT as DATA_MOVEMENT_OPS;

/// Compute ops: where the multiply-accumulates are, always quantized when
/// selected. The other ops of [`QUANT_OPS`] are quantized only next to a
/// quantized compute op (see [`plan`]).
pub const COMPUTE_OPS: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm"];

/// What the user asked to quantize.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    /// The runtime the file is for: which groups it runs as integer
    /// kernels decides the placement.
    pub target: Target,
    /// Only these op types (empty: all of [`QUANT_OPS`]).
    pub op_types: Vec<String>,
    /// Node names or op types to keep in float; `*` matches any run of
    /// characters.
    pub exclude: Vec<String>,
    /// Nodes (by label) kept in float by sensitivity analysis or automatic
    /// fallback, decided last so the placement of the others does not move.
    pub keep_float: BTreeSet<String>,
    /// If set, only these compute ops (by label) are quantized, with the
    /// elementwise ops that feed them: cost-aware selection
    /// (`select-coverage`).
    pub coverage: Option<BTreeSet<String>>,
    /// The selections `coverage` is the intersection of, each with the
    /// reason a compute op it left out is reported with.
    pub coverage_why: Vec<(BTreeSet<String>, String)>,
    /// Nodes (by label) that read their inputs in float and are never
    /// quantized: `smooth-quant`'s rescales, whose point is that the
    /// MatMuls after them see the smoothed range, not a Q/DQ of the
    /// unsmoothed one.
    pub float_readers: BTreeSet<String>,
}

impl Selection {
    /// Why `label` was left out of `coverage`.
    pub fn coverage_reason(&self, label: &str) -> &str {
        self.coverage_why
            .iter()
            .find(|(chosen, _)| !chosen.contains(label))
            .map_or(
                "left in float by the selection: too little of the measured time to pay for its Q/DQ pairs",
                |(_, why)| why.as_str(),
            )
    }
}

/// How a constant input of a quantized node is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightUse {
    pub node: NodeId,
    pub slot: usize,
    pub value: ValueId,
    /// Per-channel axis, when per-channel is possible for this use.
    pub axis: Option<usize>,
    /// Quantized like an activation (the target's activation type, range
    /// from the constant's own min/max) rather than as a symmetric weight:
    /// the constant operand of an elementwise kernel, whose operands share
    /// one type (onnxruntime's QLinearAdd takes two u8 inputs).
    pub as_activation: bool,
    /// The op itself stays float: only its weight is stored as int8 (a
    /// target that folds the DequantizeLinear at load). Its float bias can
    /// still absorb the mean shift the rounded weight causes.
    pub float_compute: bool,
}

/// An int32 bias: `value` feeds `node` at `slot`, with input scale from
/// `input` and weight scales from `weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct BiasUse {
    pub node: NodeId,
    pub slot: usize,
    pub value: ValueId,
    pub input: ValueId,
    pub weight: ValueId,
}

/// The decision for one op node.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    pub node: String,
    pub op: String,
    pub quantized: bool,
    pub reason: String,
}

/// The placement.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Tensors that get their own Q/DQ pair (and need statistics).
    pub activations: BTreeSet<ValueId>,
    /// Outputs of data-movement ops: Q/DQ with the params of the source.
    pub tied: BTreeMap<ValueId, ValueId>,
    pub weights: Vec<WeightUse>,
    pub biases: Vec<BiasUse>,
    pub decisions: Vec<Decision>,
    /// Graph outputs whose producer is a quantized group: the output port
    /// moves to the DequantizeLinear, so the group stays whole (a float
    /// reader of the op's own result would keep it from fusing).
    pub redirect_outputs: BTreeSet<ValueId>,
    /// Readers that keep reading the float value where it is quantized for
    /// others ([`Selection::float_readers`]).
    pub float_readers: BTreeSet<NodeId>,
}

impl Placement {
    /// The tensor whose statistics decide `v`'s params (itself or its tie
    /// source, followed to the end).
    pub fn param_source(&self, v: ValueId) -> ValueId {
        let mut v = v;
        while let Some(&s) = self.tied.get(&v) {
            v = s;
        }
        v
    }

    /// Whether `v` gets a Q/DQ pair.
    pub fn is_quantized(&self, v: ValueId) -> bool {
        self.activations.contains(&v) || self.tied.contains_key(&v)
    }
}

/// Computes the placement for `m` under `sel`, for its target.
/// `per_channel` only affects which axis weights record.
pub fn plan(m: &Model, sel: &Selection, per_channel: bool) -> Placement {
    match sel.target {
        Target::Portable => portable::plan(m, sel, per_channel),
        t => groups::plan(m, sel, t.spec(), per_channel),
    }
}

/// Why a `smooth-quant` rescale stays float.
pub(crate) const SMOOTH_RESCALE: &str =
    "SmoothQuant's rescale: reads the float activation, so the MatMuls after it see the smoothed range";

/// Every tensor some target's placement may quantize, for `calibrate` to
/// observe: one set of statistics serves every target, selection and
/// fallback choice.
pub fn observed(m: &Model) -> BTreeSet<ValueId> {
    observed_and_weights(m).0
}

/// Whether any target's placement would quantize anything in `m` (an
/// activation, or a weight stored as int8).
pub fn quantizes_anything(m: &Model) -> bool {
    let (acts, weights) = observed_and_weights(m);
    !acts.is_empty() || weights
}

fn observed_and_weights(m: &Model) -> (BTreeSet<ValueId>, bool) {
    let mut weights = false;
    let mut out = BTreeSet::new();
    for t in Target::ALL {
        let sel = Selection {
            target: t,
            ..Default::default()
        };
        let p = plan(m, &sel, true);
        out.extend(p.activations.iter().copied());
        out.extend(p.tied.keys().copied());
        out.extend(p.tied.values().copied());
        weights |= !p.weights.is_empty();
    }
    (out, weights)
}

/// Simple glob: `*` matches any run of characters.
pub fn glob_match(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

pub(crate) fn is_float(g: &Graph, v: ValueId) -> bool {
    g.elem_type(v) == DataType::Float as i32
}

/// Whether `n` is shape or index arithmetic: every input and output has a
/// known element type and none is float (an int64 Concat of dims, a Cast
/// of token ids). Such a node is not a quantization candidate at all, so
/// it is neither counted nor listed among the nodes kept in float.
pub(crate) fn integer_only(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    let vals: Vec<ValueId> = node
        .inputs()
        .iter()
        .chain(node.outputs())
        .flatten()
        .copied()
        .collect();
    !vals.is_empty()
        && vals.iter().all(|&v| {
            let t = g.elem_type(v);
            t != 0
                && t != DataType::Float as i32
                && t != DataType::Float16 as i32
                && t != DataType::Double as i32
                && t != DataType::Bfloat16 as i32
        })
}

/// The per-channel axis of a weight for its consumer, or `None` when the
/// layout has none (per-tensor then).
pub(crate) fn weight_axis(g: &Graph, n: NodeId, slot: usize, w: ValueId) -> Option<usize> {
    let node = g.node(n);
    let rank = g.constant(w).map(|t| t.dims().len())?;
    match (node.op_type(), slot) {
        ("Conv", 1) => Some(0),
        // ConvTranspose weights are [Cin, Cout/group, ...]: axis 1 is the
        // output channel only when there is one group.
        ("ConvTranspose", 1) if node.attr_i("group").unwrap_or(1) == 1 => Some(1),
        ("Gemm", 1) if rank == 2 => Some(if node.attr_i("transB").unwrap_or(0) != 0 {
            0
        } else {
            1
        }),
        ("MatMul", 1) if rank >= 2 => Some(rank - 1),
        // Embedding tables: one scale per row keeps rare tokens exact.
        ("Gather", 0) if rank == 2 => Some(0),
        _ => None,
    }
}
