//! Where int8 pays: measured per-node times of the float model and of a
//! quantized candidate, attributed to the compute ops (the anchors of the
//! quantized groups), give each compute op's float and int8 cost.
//!
//! A runtime runs a quantized group as a few nodes — the integer kernel
//! (which absorbs the DequantizeLinear of its inputs and the
//! QuantizeLinear of its output), plus QuantizeLinear nodes where a float
//! tensor enters the quantized region and DequantizeLinear nodes where a
//! quantized one leaves it, plus the elementwise kernels that joined
//! because their inputs arrived quantized. Every such node is charged to
//! the compute ops whose quantization made it exist:
//!
//! * a compute op (or the Relu/Clip fused into it) to itself;
//! * a QuantizeLinear of tensor `x` to the quantized compute ops that read
//!   `x` (through data movement), shared equally;
//! * a DequantizeLinear of an activation to the compute ops upstream of it;
//! * a joined elementwise kernel to the compute ops upstream of it.
//!
//! The float model's nodes are charged by the same labels (the candidate
//! keeps every float node's label), so both costs cover the same work.
//! The estimate ranks compute ops; what is kept is then decided by
//! measuring whole candidates end to end (see `select-speed`).

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{Graph, Model, NodeId, ValueId};
use crate::plan::COMPUTE_OPS;
use crate::runtime::bench::NodeTime;

/// Label → the compute-op labels its time is charged to, for the nodes of a
/// quantized candidate.
pub fn anchors(q: &Model) -> BTreeMap<String, BTreeSet<String>> {
    let g = &q.graph;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut memo: BTreeMap<ValueId, BTreeSet<String>> = BTreeMap::new();
    for n in g.ops() {
        let node = g.node(n);
        let label = node.label().to_string();
        let set = if is_quantized_compute(g, n) {
            [label.clone()].into_iter().collect()
        } else if node.is("QuantizeLinear") {
            node.outputs()
                .first()
                .copied()
                .flatten()
                .map(|v| downstream(g, v))
                .unwrap_or_default()
        } else {
            // DequantizeLinear, joined kernels, fused activations: the
            // compute ops upstream through quantized tensors.
            let mut s = BTreeSet::new();
            for v in node.inputs().iter().flatten() {
                s.extend(upstream(g, *v, &mut memo));
            }
            s
        };
        if !set.is_empty() {
            out.insert(label, set);
        }
    }
    out
}

/// A compute op reading a dequantized weight or activation, or one lowered
/// to QOperator form: a quantized group's anchor.
fn is_quantized_compute(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if node.domain().is_empty() && matches!(node.op_type(), "QLinearConv" | "QLinearMatMul") {
        return true;
    }
    node.domain().is_empty()
        && COMPUTE_OPS.contains(&node.op_type())
        && node
            .inputs()
            .iter()
            .flatten()
            .any(|&v| g.producer_node(v).is("DequantizeLinear"))
}

/// Quantized compute ops reading `v` (the output of a QuantizeLinear)
/// through DequantizeLinear and data movement.
fn downstream(g: &Graph, v: ValueId) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![v];
    let mut seen = BTreeSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x) {
            continue;
        }
        for u in g.user_nodes(x) {
            let node = g.node(u);
            if is_quantized_compute(g, u) {
                out.insert(node.label().to_string());
            } else if node.is("DequantizeLinear")
                || node.is("Clip")
                || (node.domain().is_empty()
                    && crate::target::DATA_MOVEMENT.contains(&node.op_type()))
            {
                stack.extend(node.outputs().iter().flatten().copied());
            }
        }
    }
    out
}

/// Quantized compute ops upstream of `v` through quantized tensors
/// (QuantizeLinear, DequantizeLinear, data movement, joined kernels that
/// read dequantized values): the groups whose quantization put `v` in the
/// integer region.
fn upstream(
    g: &Graph,
    v: ValueId,
    memo: &mut BTreeMap<ValueId, BTreeSet<String>>,
) -> BTreeSet<String> {
    if let Some(s) = memo.get(&v) {
        return s.clone();
    }
    let p = g.producer(v);
    let node = g.node(p);
    let mut s = BTreeSet::new();
    if is_quantized_compute(g, p) {
        s.insert(node.label().to_string());
    } else if node.op().is_some() && carries_quantized(g, p) {
        for x in node.inputs().iter().flatten() {
            if g.constant(*x).is_none() {
                s.extend(upstream(g, *x, memo));
            }
        }
    }
    memo.insert(v, s.clone());
    s
}

/// Whether `p` is part of the integer region: a Q/DQ node, or an op reading
/// a dequantized activation.
fn carries_quantized(g: &Graph, p: NodeId) -> bool {
    let node = g.node(p);
    if node.is("QuantizeLinear") || node.is("DequantizeLinear") {
        return true;
    }
    node.inputs().iter().flatten().any(|&v| {
        let pr = g.producer_node(v);
        pr.is("DequantizeLinear") && pr.input(0).is_some_and(|x| g.constant(x).is_none())
    })
}

/// Each compute op's cost: (float ms, int8 ms), from the float model's and
/// the candidate's per-node times and the candidate's anchors.
pub fn costs(
    anchors: &BTreeMap<String, BTreeSet<String>>,
    float: &[NodeTime],
    quant: &[NodeTime],
) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (times, which) in [(float, 0usize), (quant, 1)] {
        for t in times {
            let mut owners: BTreeSet<&String> = BTreeSet::new();
            for l in &t.labels {
                if let Some(a) = anchors.get(l) {
                    owners.extend(a.iter());
                }
            }
            if owners.is_empty() {
                continue;
            }
            let share = t.ms / owners.len() as f64;
            for o in owners {
                let e = out.entry(o.clone()).or_insert((0.0, 0.0));
                if which == 0 {
                    e.0 += share;
                } else {
                    e.1 += share;
                }
            }
        }
    }
    out
}
