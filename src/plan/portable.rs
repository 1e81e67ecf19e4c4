//! The `portable` placement: fidelity first, for any runtime.
//!
//! Compute ops (Conv, ConvTranspose, MatMul, Gemm) are quantized with their
//! activation inputs; elementwise ops, activations, pools, Concat and
//! Resize only where their result flows into a quantized compute op; a
//! compute op's output only where a quantized node reads it. Graph outputs,
//! Softmax outputs and subgraph-bound values stay float; data movement
//! passes its input's scale through.

use std::collections::BTreeSet;

use super::*;

/// Computes the placement for `m` under `sel`. `per_channel` only affects
/// which axis weights record.
pub fn plan(m: &Model, sel: &Selection, per_channel: bool) -> Placement {
    let g = &m.graph;
    let cx = Portable {
        g,
        sel,
        per_channel,
    };
    let compute = cx.compute_anchors();
    let (feeding, reaches) = feeds_compute(g, &compute, &|n| {
        let node = g.node(n);
        let op = node.op_type();
        node.domain().is_empty()
            && QUANT_OPS.contains(&op)
            && cx.allowed(op)
            && !cx.excluded(node.label(), op)
            && !sel.float_readers.contains(node.label())
    });
    let mut p = Placement {
        float_readers: g
            .ops()
            .into_iter()
            .filter(|&n| sel.float_readers.contains(g.node(n).label()))
            .collect(),
        ..Default::default()
    };
    let mut quantized_nodes: BTreeSet<NodeId> = BTreeSet::new();
    for n in g.ops() {
        if cx.place_node(n, &feeding, &reaches, &mut p) {
            quantized_nodes.insert(n);
        }
    }
    p.activations.retain(|&v| !keep_float(g, v));
    tie_data_movement(g, &quantized_nodes, &mut p);
    p
}

struct Portable<'a> {
    g: &'a Graph,
    sel: &'a Selection,
    per_channel: bool,
}

impl Portable<'_> {
    fn allowed(&self, op: &str) -> bool {
        self.sel.op_types.is_empty() || self.sel.op_types.iter().any(|t| t == op)
    }

    fn excluded(&self, label: &str, op: &str) -> bool {
        self.sel
            .exclude
            .iter()
            .any(|pat| glob_match(pat, label) || glob_match(pat, op))
    }

    /// Compute ops that will be quantized: the anchors of the integer
    /// region. Adjacency is judged against the compute ops the user's
    /// selection keeps, not against a fallback `keep-float` list:
    /// quantizing one Add alone (to measure its sensitivity) must place it
    /// exactly as in the full model.
    fn compute_anchors(&self) -> BTreeSet<NodeId> {
        let g = self.g;
        g.ops()
            .into_iter()
            .filter(|&n| {
                let node = g.node(n);
                let op = node.op_type();
                let label = node.label();
                node.domain().is_empty()
                    && COMPUTE_OPS.contains(&op)
                    && self.allowed(op)
                    && !self.excluded(label, op)
                    && self.sel.coverage.as_ref().is_none_or(|c| c.contains(label))
            })
            .collect()
    }

    /// Why `n` stays float, if it does (before the keep-float list, which
    /// comes last so that nodes that could never be quantized keep their
    /// own reason).
    fn float_reason(
        &self,
        n: NodeId,
        embedding: bool,
        feeding: &BTreeSet<NodeId>,
    ) -> Option<String> {
        let g = self.g;
        let node = g.node(n);
        let op = node.op_type();
        let label = node.label();
        if !embedding && !self.allowed(op) {
            return Some("op type not selected (--op-types)".into());
        }
        if self.sel.float_readers.contains(label) {
            return Some(super::SMOOTH_RESCALE.into());
        }
        // Elementwise ops, activations, pooling, Concat and Resize pay off
        // only on the integer path into a quantized compute op: their result
        // is read (through data movement, or through other such ops) by one.
        // Elsewhere — inside normalisations, gates, decomposed activations
        // and softmaxes — a Q/DQ pair costs accuracy and saves no time.
        if !embedding && !COMPUTE_OPS.contains(&op) && !feeding.contains(&n) {
            return Some("does not feed a quantized Conv/MatMul/Gemm: a Q/DQ pair here would cost accuracy and save no time".into());
        }
        if let Some(pat) = self
            .sel
            .exclude
            .iter()
            .find(|pat| glob_match(pat, label) || glob_match(pat, op))
        {
            return Some(format!("excluded by '{pat}'"));
        }
        if let Some(c) = &self.sel.coverage {
            if COMPUTE_OPS.contains(&op) && !c.contains(label) {
                return Some(self.sel.coverage_reason(label).into());
            }
        }
        // Every data input must be float (quantizing integer index math or
        // float16 graphs is out of scope here).
        if let Some((_, v)) = data_inputs(g, n).iter().find(|(_, v)| !is_float(g, *v)) {
            let t = g.elem_type(*v);
            return Some(if t == 0 {
                format!(
                    "element type of '{}' unknown (run shape-inference first)",
                    g.name(*v)
                )
            } else {
                format!(
                    "input '{}' is {}, not float",
                    g.name(*v),
                    crate::proto::dtype_name(t)
                )
            });
        }
        if node.has_subgraphs() {
            return Some("has subgraphs".into());
        }
        if self.sel.keep_float.contains(label) {
            return Some("kept in float by the fallback selection".into());
        }
        None
    }

    /// Decides one node and records what it quantizes. Returns whether it
    /// is quantized.
    fn place_node(
        &self,
        n: NodeId,
        feeding: &BTreeSet<NodeId>,
        reaches: &BTreeSet<NodeId>,
        p: &mut Placement,
    ) -> bool {
        let g = self.g;
        let node = g.node(n);
        let op = node.op_type();
        let is_quant_op = node.domain().is_empty() && QUANT_OPS.contains(&op);
        let embedding = node.is("Gather")
            && node
                .input(0)
                .is_some_and(|d| g.constant(d).is_some() && is_float(g, d))
            && self.allowed("Gather");
        if (!is_quant_op && !embedding) || super::integer_only(g, n) {
            return false;
        }
        let decide = |q: bool, why: &str| Decision {
            node: node.label().to_string(),
            op: op.to_string(),
            quantized: q,
            reason: why.to_string(),
        };
        if let Some(why) = self.float_reason(n, embedding, feeding) {
            p.decisions.push(decide(false, &why));
            return false;
        }
        if embedding {
            let d = node.input(0).expect("invariant: checked");
            p.weights.push(WeightUse {
                node: n,
                slot: 0,
                value: d,
                axis: self.axis(n, 0, d),
                as_activation: false,
                float_compute: false,
            });
            p.decisions.push(decide(true, "int8 embedding table"));
            return true;
        }
        self.place_operands(n, p);
        // The output, unless fused into a following Relu/Clip or kept float.
        if let Some(out) = node.outputs().first().copied().flatten() {
            // A result that no quantized node reads (the last layer before
            // a float head, a Sigmoid output, a normalisation) stays float:
            // requantizing it would only add error.
            if !fused_into_activation(g, out)
                && !g.is_graph_output(out)
                && is_float(g, out)
                && reaches.contains(&n)
            {
                p.activations.insert(out);
            }
        }
        p.decisions.push(decide(true, "quantized"));
        true
    }

    fn axis(&self, n: NodeId, slot: usize, w: ValueId) -> Option<usize> {
        if self.per_channel {
            weight_axis(self.g, n, slot, w)
        } else {
            None
        }
    }

    /// Weights, activation inputs and the int32 bias of a quantized node.
    fn place_operands(&self, n: NodeId, p: &mut Placement) {
        let g = self.g;
        let node = g.node(n);
        let has_bias = matches!(node.op_type(), "Conv" | "ConvTranspose" | "Gemm");
        for (slot, v) in data_inputs(g, n) {
            if has_bias && slot == 2 {
                continue; // decided below, once input and weight are known
            }
            if g.constant(v).is_some() {
                p.weights.push(WeightUse {
                    node: n,
                    slot,
                    value: v,
                    axis: self.axis(n, slot, v),
                    as_activation: false,
                    float_compute: false,
                });
            } else if !(slot == 0 && fused_into_activation(g, v)) {
                p.activations.insert(v);
            }
        }
        if !has_bias {
            return;
        }
        if let (Some(b), Some(x), Some(w)) = (node.input(2), node.input(0), node.input(1)) {
            let b_ok = g.constant(b).is_some_and(|t| t.dims().len() == 1);
            if b_ok && g.constant(w).is_some() && g.constant(x).is_none() {
                p.biases.push(BiasUse {
                    node: n,
                    slot: 2,
                    value: b,
                    input: x,
                    weight: w,
                });
            } else if g.constant(b).is_none() {
                p.activations.insert(b);
            }
        }
    }
}

/// The operands of `n` that carry activations or weights (the data operand
/// only, for Resize, Clip and Gather).
fn data_inputs(g: &Graph, n: NodeId) -> Vec<(usize, ValueId)> {
    let op = g.node(n).op_type();
    g.node(n)
        .inputs()
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .filter(|(i, _)| match op {
            "Resize" | "Clip" | "Gather" => *i == 0,
            _ => true,
        })
        .collect()
}

/// Values the plan must not touch: graph outputs, Softmax outputs, and
/// values bound by name inside subgraphs.
fn keep_float(g: &Graph, v: ValueId) -> bool {
    g.is_graph_output(v)
        || g.producer_node(v).is("Softmax")
        || g.has_implicit_uses(v)
        || !is_float(g, v)
}

/// Data movement passes scales through: its output reuses the input's
/// params when the input is quantized and a quantized node reads it.
fn tie_data_movement(g: &Graph, quantized_nodes: &BTreeSet<NodeId>, p: &mut Placement) {
    for n in g.ops() {
        let node = g.node(n);
        if !node.domain().is_empty() || !DATA_MOVEMENT_OPS.contains(&node.op_type()) {
            continue;
        }
        let Some(src) = node.input(0) else { continue };
        if !p.is_quantized(src) || g.constant(src).is_some() {
            continue;
        }
        for out in node.outputs().iter().flatten() {
            if keep_float(g, *out) {
                p.activations.remove(out);
                continue;
            }
            // Only worth a pair when a quantized node reads the result.
            let read_by_quantized = g
                .user_nodes(*out)
                .iter()
                .any(|u| quantized_nodes.contains(u));
            let reads_through = g.user_nodes(*out).iter().any(|u| {
                let un = g.node(*u);
                un.domain().is_empty() && DATA_MOVEMENT_OPS.contains(&un.op_type())
            });
            if read_by_quantized || reads_through || p.activations.contains(out) {
                p.activations.remove(out);
                p.tied.insert(*out, src);
            }
        }
    }
}

/// Whether `v` is the output of Conv/ConvTranspose/MatMul/Gemm/Add read
/// only by one Relu or Clip: runtimes fuse the activation into the op, so the
/// tensor between them gets no Q/DQ pair. Purely structural, so calibration
/// and rewriting agree whatever is excluded.
fn fused_into_activation(g: &Graph, v: ValueId) -> bool {
    let producer = g.producer_node(v);
    if !matches!(
        producer.op_type(),
        "Conv" | "ConvTranspose" | "MatMul" | "Gemm" | "Add"
    ) || !producer.domain().is_empty()
    {
        return false;
    }
    let users = g.users(v);
    users.len() == 1
        && !g.is_graph_output(v)
        && matches!(users[0].1, crate::ir::Slot::Input(0))
        && (g.node(users[0].0).is("Relu") || g.node(users[0].0).is("Clip"))
}

/// The non-compute candidate nodes whose results flow into a quantized
/// compute op: read by one directly, through data movement, or through
/// another such node. One sweep in reverse topological order (readers come
/// later than what they read).
/// Also returns every node whose result reaches a quantized node.
fn feeds_compute(
    g: &Graph,
    compute: &BTreeSet<NodeId>,
    candidate: &dyn Fn(NodeId) -> bool,
) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let is_move = |m: NodeId| {
        let x = g.node(m);
        x.domain().is_empty() && DATA_MOVEMENT_OPS.contains(&x.op_type())
    };
    // `reaches[n]`: n's result reaches a quantized node, possibly through
    // data movement.
    let mut reaches: BTreeSet<NodeId> = BTreeSet::new();
    let mut feeding: BTreeSet<NodeId> = BTreeSet::new();
    for n in g.ops().into_iter().rev() {
        let users: Vec<NodeId> = g
            .node(n)
            .outputs()
            .iter()
            .flatten()
            .flat_map(|v| g.user_nodes(*v))
            .collect();
        let hit = users.iter().any(|u| {
            compute.contains(u) || feeding.contains(u) || (is_move(*u) && reaches.contains(u))
        });
        if hit {
            reaches.insert(n);
            if !compute.contains(&n) && candidate(n) {
                feeding.insert(n);
            }
        }
    }
    (feeding, reaches)
}
