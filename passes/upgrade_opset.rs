//! `upgrade-opset`: raises the default-domain opset to 13 (or 21) where
//! that is known to be safe.
//!
//! # What
//! Per-channel DequantizeLinear (its `axis`) exists from opset 13, and
//! QuantizeLinear from 10; 4-bit and 16-bit codes and blocked scales
//! (`block_size`) from 21. When the model imports an older default-domain
//! opset than `min`, this pass rewrites it to opset 13 (`min` ≤ 13) or 21
//! (`min` above 13), the targets onnxq knows how to reach. Only upgrades
//! whose meaning is known are made: every op of the default domain must
//! either keep its semantics from the model's opset up to the target, or
//! be one of the few that change form in a way rewritten here (attributes
//! that became inputs — Squeeze/Unsqueeze/Split/ReduceSum at 13, the other
//! reductions at 18; Split's `num_outputs` at 18; Softmax's axis
//! semantics, accepted when the axis is the last one, where old and new
//! definitions agree). Anything else (RoiAlign before 16, GridSample and
//! DFT before 20, GroupNormalization before 21, …) refuses the upgrade
//! with the op named, rather than risk a silently different model.
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
//! (10 for per-tensor QuantizeLinear, 13 for per-channel weights, 21 for
//! 4-bit, 16-bit or blocked weights); the upgrade goes to 13 when `min` ≤
//! 13, else to 21.
//!
//! # Preconditions
//! Ranks of Softmax inputs known (`shape-inference`) when the model has
//! Softmax below opset 13.
//!
//! # Numerics
//! Exact: only the spelling of ops changes.
//!
//! # Errors
//! An op whose semantics change between the model's opset and the target
//! in a way not rewritten here (named in the message; ops inside `If`/
//! `Loop`/`Scan` bodies are checked too), or an opset older than 7.

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

/// The opset onnxq upgrades to for per-channel weights.
pub const TARGET: i64 = 13;
/// The opset onnxq upgrades to for 4-bit, 16-bit and blocked Q/DQ.
pub const TARGET_BLOCKED: i64 = 21;

/// Reductions whose `axes` attribute became an input at opset 18
/// (ReduceSum's did at 13).
const REDUCE_AXES_18: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
];

/// Ops whose meaning changed between 13 and 21 in a way not rewritten
/// here, with the opset that changed it: RoiAlign's default coordinate
/// mode (16), GridSample's mode names (20), DFT's axis became an input
/// (20), GroupNormalization's scale/bias went per channel (21).
const CHANGED_13_TO_21: &[(&str, i64)] = &[
    ("RoiAlign", 16),
    ("GridSample", 20),
    ("DFT", 20),
    ("GroupNormalization", 21),
];

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
        if !(1..=TARGET_BLOCKED).contains(&opts.min) {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!(
                    "min={}: expected an opset between 1 and {TARGET_BLOCKED} (onnxq upgrades to {TARGET} or {TARGET_BLOCKED})",
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
        let target = if self.opts.min > TARGET {
            TARGET_BLOCKED
        } else {
            TARGET
        };
        let advice = if target == TARGET {
            format!("Use per-tensor weights (opset 10 suffices) or convert the model to opset {TARGET} first")
        } else {
            format!("Use 8-bit per-channel weights (opset 13) or convert the model to opset {TARGET_BLOCKED} first")
        };
        let ops = upgrade(m, target).map_err(|why| PassError::Precondition {
            pass: NAME.into(),
            message: format!(
                "the model imports opset {have} and quantization needs opset {}; upgrading is not safe: {why}. {advice}",
                self.opts.min
            ),
        })?;
        cx.remark(
            NAME,
            "<model>",
            format!(
                "default-domain opset upgraded from {have} to {target} ({ops} nodes rewritten)"
            ),
        );
        Ok(Changed::Yes)
    }
}

/// Upgrades the default-domain opset to `target` (13 or 21). Returns how
/// many nodes were rewritten, or why the upgrade is not safe. Nothing is
/// changed when it is not safe.
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
    if target != TARGET && target != TARGET_BLOCKED {
        return Err(format!(
            "upgrades go to opset {TARGET} or {TARGET_BLOCKED}, not {target}"
        ));
    }
    if target == TARGET_BLOCKED {
        // Checked before anything changes; `upgrade_to_13` changes nothing
        // either when it refuses, and the 7→13 rewrites make none of the
        // ops this checks.
        check_13_to_21(m, from.max(TARGET))?;
    }
    let mut count = 0;
    if from < TARGET {
        count += upgrade_to_13(m)?;
    }
    if target == TARGET_BLOCKED {
        count += upgrade_13_to_21(m, from.max(TARGET));
        // Opset 21 came with IR version 10 (which also brought int4).
        if m.meta.ir_version.unwrap_or(0) < 10 {
            m.meta.ir_version = Some(10);
        }
    }
    Ok(count)
}

/// The default-domain op types inside a node's subgraphs, recursively.
fn subgraph_ops(p: &NodeProto, out: &mut Vec<String>) {
    for a in &p.attribute {
        for sub in a.g.iter().chain(a.graphs.iter()) {
            for n in &sub.node {
                if matches!(n.domain(), "" | "ai.onnx") {
                    out.push(n.op_type().to_string());
                }
                subgraph_ops(n, out);
            }
        }
    }
}

/// Why the model cannot go from opset `from` (≥ 13) to 21, if it cannot.
fn check_13_to_21(m: &Model, from: i64) -> Result<(), String> {
    let g = &m.graph;
    let mut unsafe_ops: Vec<String> = Vec::new();
    for n in g.ops() {
        let node = g.node(n);
        let Some(p) = node.op() else { continue };
        let mut inner = Vec::new();
        subgraph_ops(p, &mut inner);
        for op in &inner {
            let changed = CHANGED_13_TO_21.iter().any(|(o, at)| o == op && from < *at)
                || (from < 18 && (REDUCE_AXES_18.contains(&op.as_str()) || op == "Split"));
            if changed {
                unsafe_ops.push(format!("{op} (inside {}'s subgraph)", node.label()));
            }
        }
        if !node.domain().is_empty() {
            continue;
        }
        let op = node.op_type();
        if let Some((_, at)) = CHANGED_13_TO_21.iter().find(|(o, _)| *o == op) {
            if from < *at {
                unsafe_ops.push(format!("{op} (changed at opset {at})"));
            }
        }
        // Training-mode outputs of BatchNormalization went away at 14.
        if op == "BatchNormalization"
            && from < 14
            && node.outputs().iter().skip(1).any(Option::is_some)
        {
            unsafe_ops.push("BatchNormalization (training outputs)".to_string());
        }
    }
    if unsafe_ops.is_empty() {
        return Ok(());
    }
    unsafe_ops.sort();
    unsafe_ops.dedup();
    Err(format!(
        "no known-safe upgrade to opset {TARGET_BLOCKED} for {}",
        unsafe_ops.join(", ")
    ))
}

/// Rewrites what changed form between `from` (≥ 13, checked by
/// [`check_13_to_21`]) and 21; returns how many nodes were rewritten.
fn upgrade_13_to_21(m: &mut Model, from: i64) -> usize {
    let mut count = 0;
    if from < 18 {
        let todo: Vec<NodeId> = m
            .graph
            .ops()
            .into_iter()
            .filter(|&n| {
                let node = m.graph.node(n);
                node.domain().is_empty()
                    && (REDUCE_AXES_18.contains(&node.op_type()) || node.op_type() == "Split")
            })
            .collect();
        for n in todo {
            if m.graph.node(n).op_type() == "Split" {
                // From 18 an even Split without a `split` input names its
                // number of outputs.
                if m.graph.node(n).input(1).is_none() {
                    let k = m.graph.node(n).outputs().len() as i64;
                    m.graph.op_mut(n).attribute.push(AttributeProto {
                        name: Some("num_outputs".into()),
                        r#type: Some(crate::proto::attribute_proto::AttributeType::Int as i32),
                        i: Some(k),
                        ..Default::default()
                    });
                    count += 1;
                }
            } else if m.graph.node(n).attr("axes").is_some() {
                attr_to_input(m, n, "axes");
                count += 1;
            }
        }
    }
    m.set_opset("", TARGET_BLOCKED);
    count
}

/// Upgrades an opset 7–12 model to 13.
fn upgrade_to_13(m: &mut Model) -> Result<usize, String> {
    let target = TARGET;
    let from = m.opset("").unwrap_or(1);
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
            attr_to_input(m, n, attr);
        }
    }
}

/// Moves an ints attribute to operand 1 (where each op that made this
/// change takes it), as a new initializer.
fn attr_to_input(m: &mut Model, n: NodeId, attr: &str) {
    let g = &mut m.graph;
    let op = g.node(n).op_type().to_string();
    if let Some(a) = take_attr(g.op_mut(n), attr) {
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
        g.set_input(n, 1, Some(v));
    }
}
