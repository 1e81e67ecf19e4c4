//! `upgrade-opset`: raises the default-domain opset to 13 where that is
//! known to be safe.
//!
//! # What
//! Per-channel DequantizeLinear (its `axis`) exists from opset 13, and
//! QuantizeLinear from 10. When the model imports an older default-domain
//! opset than `min`, this pass rewrites it to opset 13, the one target
//! onnxq knows how to reach. Only upgrades whose meaning is known are made:
//! every op of the default domain must either keep its semantics from the
//! model's opset up to 13, or be one of the few that change form in a way
//! rewritten here (attributes that became inputs; Softmax's axis
//! semantics, accepted when the axis is the last one, where old and new
//! definitions agree). Anything else refuses the upgrade with the op named,
//! rather than risk a silently different model.
//!
//! # Example
//! ```text
//! before:  <opset_import: ["" : 11]>  Y = Squeeze <axes: ints = [0]> (X)
//! after:   <opset_import: ["" : 13]>  Y = Squeeze (X, Squeeze_axes)
//!          <int64[1] Squeeze_axes = {0}>
//! ```
//!
//! # Options
//! `min` (default 13): upgrade only when the model's opset is below this
//! (10 for per-tensor QuantizeLinear, 13 for per-channel weights).
//!
//! # Preconditions
//! Ranks of Softmax inputs known (`shape-inference`) when the model has
//! Softmax below opset 13.
//!
//! # Numerics
//! Exact: only the spelling of ops changes.
//!
//! # Errors
//! An op whose semantics change between the model's opset and 13 in a way
//! not rewritten here (named in the message), or an opset older than 7.

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Model, NodeId, Tensor};
use crate::proto::{AttributeProto, NodeProto};

/// Ops whose semantics do not change between opset 7 and 13 for the
/// attributes and inputs they can carry at the older version.
const SAME_7_TO_13: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Celu",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Det",
    "Div",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "Identity",
    "If",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "Loop",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "MaxRoiPool",
    "MaxUnpool",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Multinomial",
    "Neg",
    "NonMaxSuppression",
    "NonZero",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RNN",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "RoiAlign",
    "Round",
    "Scan",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Sqrt",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Where",
    "Xor",
    "BitShift",
    "Det",
    "GreaterOrEqual",
    "MeanVarianceNormalization",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceErase",
    "SequenceInsert",
    "SequenceLength",
    "SplitToSequence",
    "ConcatFromSequence",
    "DynamicQuantizeLinear",
    "NegativeLogLikelihoodLoss",
    "SoftmaxCrossEntropyLoss",
    "Compress",
    "Clip",
    "Pad",
    "Slice",
];

/// Ops whose older forms take attributes that became inputs.
const ATTR_TO_INPUT: &[(&str, &str, i64)] = &[
    // (op, attribute, opset at which it became an input)
    ("Squeeze", "axes", 13),
    ("Unsqueeze", "axes", 13),
    ("Split", "split", 13),
    ("ReduceSum", "axes", 13),
];

/// The one opset onnxq upgrades to.
pub const TARGET: i64 = 13;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub min: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options { min: TARGET }
    }
}

#[derive(Debug, Default)]
pub struct UpgradeOpset {
    opts: Options,
}

impl UpgradeOpset {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        if !(1..=TARGET).contains(&opts.min) {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!(
                    "min={}: expected an opset between 1 and {TARGET} (onnxq upgrades to {TARGET})",
                    opts.min
                ),
            });
        }
        Ok(UpgradeOpset { opts })
    }
}

const NAME: &str = "upgrade-opset";

impl Pass for UpgradeOpset {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let have = m.opset("").unwrap_or(1);
        if have >= self.opts.min {
            return Ok(Changed::No);
        }
        // Q/DQ need the new opset only where something will be quantized.
        if !crate::plan::quantizes_anything(m) {
            cx.remark(
                NAME,
                "<model>",
                format!("opset {have} kept: nothing in the model is quantized, so nothing needs opset {}", self.opts.min),
            );
            return Ok(Changed::No);
        }
        let ops = upgrade(m, TARGET).map_err(|why| PassError::Precondition {
            pass: NAME.into(),
            message: format!(
                "the model imports opset {have} and quantization needs opset {}; upgrading is not safe: {why}. Use per-tensor weights (opset 10 suffices) or convert the model to opset {TARGET} first",
                self.opts.min
            ),
        })?;
        cx.remark(
            NAME,
            "<model>",
            format!(
                "default-domain opset upgraded from {have} to {TARGET} ({ops} nodes rewritten)"
            ),
        );
        Ok(Changed::Yes)
    }
}

/// Upgrades the default-domain opset to `target` (13). Returns how many
/// nodes were rewritten, or why the upgrade is not safe.
pub fn upgrade(m: &mut Model, target: i64) -> Result<usize, String> {
    let from = m.opset("").unwrap_or(1);
    if from >= target {
        return Ok(0);
    }
    if from < 7 {
        return Err(format!(
            "opset {from} predates the ops onnxq can upgrade (7 and later)"
        ));
    }
    if target != 13 {
        return Err(format!("upgrades go to opset 13, not {target}"));
    }
    let g = &m.graph;
    let mut unsafe_ops: Vec<String> = Vec::new();
    let mut rewrites: Vec<NodeId> = Vec::new();
    for n in g.ops() {
        let node = g.node(n);
        if !node.domain().is_empty() {
            continue;
        }
        let op = node.op_type();
        // Gemm (C optional at 11), Flatten/Concat/Gather (negative axes or
        // indices allowed at 11), Cast and MatMul (more types at 9) only
        // widened what is valid: a model valid at 7 means the same at 13.
        // BatchNormalization lost `spatial` at 9: the same unless it is 0.
        if (from < 11 && matches!(op, "Clip" | "Pad" | "Resize"))
            || (from < 10 && matches!(op, "Slice" | "TopK" | "Resize"))
            || (from < 9 && op == "BatchNormalization" && node.attr_i("spatial") == Some(0))
        {
            // Attribute/semantics changes at 9–11 are not rewritten here.
            unsafe_ops.push(op.to_string());
            continue;
        }
        if SAME_7_TO_13.contains(&op) {
            continue;
        }
        if ATTR_TO_INPUT.iter().any(|(o, _, _)| *o == op) {
            rewrites.push(n);
            continue;
        }
        if matches!(op, "Softmax" | "LogSoftmax" | "Hardmax") {
            let rank = node
                .input(0)
                .and_then(|x| g.value_type(x))
                .and_then(|t| crate::ir::types::dims(&t))
                .map(|d| d.len());
            let axis = node.attr_i("axis").unwrap_or(1);
            match rank {
                Some(r) if axis == r as i64 - 1 || axis == -1 => rewrites.push(n),
                Some(r) => unsafe_ops.push(format!(
                    "{op} (axis {axis} of a rank-{r} input: opset 13 changed its meaning)"
                )),
                None => unsafe_ops.push(format!(
                    "{op} (input rank unknown; run shape-inference first)"
                )),
            }
            continue;
        }
        if op == "Dropout" {
            rewrites.push(n);
            continue;
        }
        unsafe_ops.push(op.to_string());
    }
    if !unsafe_ops.is_empty() {
        unsafe_ops.sort();
        unsafe_ops.dedup();
        return Err(format!(
            "no known-safe upgrade for {}",
            unsafe_ops.join(", ")
        ));
    }
    let count = rewrites.len();
    for n in rewrites {
        rewrite_node(m, n);
    }
    m.set_opset("", target);
    // Opset 13 came with IR version 7; an older IR (before 4, every
    // initializer had to be a graph input too) would make the quantized
    // file's new initializers invalid.
    if m.meta.ir_version.unwrap_or(0) < 7 {
        m.meta.ir_version = Some(7);
    }
    Ok(count)
}

fn take_attr(p: &mut NodeProto, name: &str) -> Option<AttributeProto> {
    let i = p.attribute.iter().position(|a| a.name() == name)?;
    Some(p.attribute.remove(i))
}

fn rewrite_node(m: &mut Model, n: NodeId) {
    let g = &mut m.graph;
    let op = g.node(n).op_type().to_string();
    match op.as_str() {
        "Softmax" | "LogSoftmax" | "Hardmax" => {
            // The axis is the last one: spell it out as -1, meaning the same
            // under both definitions.
            let p = g.op_mut(n);
            take_attr(p, "axis");
            p.attribute.push(AttributeProto {
                name: Some("axis".into()),
                r#type: Some(crate::proto::attribute_proto::AttributeType::Int as i32),
                i: Some(-1),
                ..Default::default()
            });
        }
        "Dropout" => {
            // Inference-mode Dropout: the ratio attribute (an input since 12)
            // does not affect results.
            let p = g.op_mut(n);
            take_attr(p, "ratio");
            take_attr(p, "is_test");
        }
        _ => {
            let (_, attr, _) = ATTR_TO_INPUT
                .iter()
                .find(|(o, _, _)| *o == op)
                .expect("invariant: listed");
            let a = take_attr(g.op_mut(n), attr);
            if let Some(a) = a {
                // Named after the node ("unnamedSqueeze" when it has no
                // name), made unique by `add_initializer`.
                let node_name = g.node(n).name();
                let base = if node_name.is_empty() {
                    format!("unnamed{op}")
                } else {
                    node_name.to_string()
                };
                let name = format!("{base}_{attr}");
                let t = Tensor::from_i64(&name, &[a.ints.len() as i64], &a.ints);
                let v = g.add_initializer(t);
                let slot = 1; // the attribute becomes operand 1 in each of these ops
                g.set_input(n, slot, Some(v));
            }
        }
    }
}
