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
//! this one plan, so they never disagree.

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{Graph, Model, NodeId, ValueId};
use crate::onnx::import::node_label;
use crate::onnx::tensor_proto::DataType;

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
/// scale and zero point.
pub const DATA_MOVEMENT_OPS: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Gather",
    "Split",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
    "Tile",
];

/// Compute ops: where the multiply-accumulates are, always quantized when
/// selected. The other ops of [`QUANT_OPS`] are quantized only next to a
/// quantized compute op (see [`plan`]).
pub const COMPUTE_OPS: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm"];

/// What the user asked to quantize.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
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
}

/// How a constant input of a quantized node is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightUse {
    pub node: NodeId,
    pub slot: usize,
    pub value: ValueId,
    /// Per-channel axis, when per-channel is possible for this use.
    pub axis: Option<usize>,
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

fn is_float(g: &Graph, v: ValueId) -> bool {
    g.elem_type(v) == DataType::Float as i32
}

/// The per-channel axis of a weight for its consumer, or `None` when the
/// layout has none (per-tensor then).
fn weight_axis(g: &Graph, n: NodeId, slot: usize, w: ValueId) -> Option<usize> {
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

/// Computes the placement for `m` under `sel`. `per_channel` only affects
/// which axis weights record.
pub fn plan(m: &Model, sel: &Selection, per_channel: bool) -> Placement {
    let g = &m.graph;
    let mut p = Placement::default();
    let allowed = |op: &str| sel.op_types.is_empty() || sel.op_types.iter().any(|t| t == op);
    let mut quantized_nodes: BTreeSet<NodeId> = BTreeSet::new();
    // Adjacency is judged against the compute ops the user's selection
    // keeps, not against a fallback `only` set: quantizing one Add alone (to
    // measure its sensitivity) must place it exactly as in the full model.
    let excluded = |label: &str, op: &str| -> bool {
        sel.exclude
            .iter()
            .any(|pat| glob_match(pat, label) || glob_match(pat, op))
    };
    // Compute ops that will be quantized: the anchors of the integer region.
    let compute: BTreeSet<NodeId> = g
        .ops()
        .into_iter()
        .filter(|&n| {
            let node = g.node(n);
            let op = node.op_type();
            let label = node_label(node.name(), op);
            node.domain().is_empty()
                && COMPUTE_OPS.contains(&op)
                && allowed(op)
                && !excluded(&label, op)
                && sel.coverage.as_ref().is_none_or(|c| c.contains(&label))
        })
        .collect();
    let (feeding, reaches) = feeds_compute(g, &compute, &|n| {
        let node = g.node(n);
        let op = node.op_type();
        node.domain().is_empty()
            && QUANT_OPS.contains(&op)
            && allowed(op)
            && !excluded(&node_label(node.name(), op), op)
    });

    for n in g.ops() {
        let node = g.node(n);
        let op = node.op_type().to_string();
        let label = node_label(node.name(), &op);
        let is_quant_op = node.domain().is_empty() && QUANT_OPS.contains(&op.as_str());
        let embedding = node.is("Gather")
            && node
                .input(0)
                .is_some_and(|d| g.constant(d).is_some() && is_float(g, d))
            && allowed("Gather");
        if !is_quant_op && !embedding {
            continue;
        }
        let decide = |q: bool, why: &str| Decision {
            node: label.clone(),
            op: op.clone(),
            quantized: q,
            reason: why.to_string(),
        };
        if !embedding && !allowed(&op) {
            p.decisions
                .push(decide(false, "op type not selected (--op-types)"));
            continue;
        }
        // Elementwise ops, activations, pooling, Concat and Resize pay off
        // only on the integer path into a quantized compute op: their result
        // is read (through data movement, or through other such ops) by one.
        // Elsewhere — inside normalisations, gates, decomposed activations
        // and softmaxes — a Q/DQ pair costs accuracy and saves no time.
        if !embedding && !COMPUTE_OPS.contains(&op.as_str()) && !feeding.contains(&n) {
            p.decisions.push(decide(false, "does not feed a quantized Conv/MatMul/Gemm: a Q/DQ pair here would cost accuracy and save no time"));
            continue;
        }
        if let Some(pat) = sel
            .exclude
            .iter()
            .find(|pat| glob_match(pat, &label) || glob_match(pat, &op))
        {
            p.decisions
                .push(decide(false, &format!("excluded by '{pat}'")));
            continue;
        }
        if let Some(c) = &sel.coverage {
            if COMPUTE_OPS.contains(&op.as_str()) && !c.contains(&label) {
                p.decisions.push(decide(false, "left in float by --coverage: too little of the measured time to pay for its Q/DQ pairs"));
                continue;
            }
        }
        // Every data input must be float (quantizing integer index math or
        // float16 graphs is out of scope here).
        let data_inputs: Vec<(usize, ValueId)> = node
            .inputs()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .filter(|(i, _)| match op.as_str() {
                // Only the data operand of these carries activations.
                "Resize" | "Clip" | "Gather" => *i == 0,
                _ => true,
            })
            .collect();
        if let Some((_, v)) = data_inputs.iter().find(|(_, v)| !is_float(g, *v)) {
            let t = g.elem_type(*v);
            let why = if t == 0 {
                format!(
                    "element type of '{}' unknown (run shape-inference first)",
                    g.name(*v)
                )
            } else {
                format!(
                    "input '{}' is {}, not float",
                    g.name(*v),
                    crate::onnx::dtype_name(t)
                )
            };
            p.decisions.push(decide(false, &why));
            continue;
        }
        if node.has_subgraphs() {
            p.decisions.push(decide(false, "has subgraphs"));
            continue;
        }
        // Last, so that nodes that could never be quantized keep their own
        // reason.
        if sel.keep_float.contains(&label) {
            p.decisions
                .push(decide(false, "kept in float by the fallback selection"));
            continue;
        }
        quantized_nodes.insert(n);
        if embedding {
            let d = node.input(0).expect("invariant: checked");
            p.weights.push(WeightUse {
                node: n,
                slot: 0,
                value: d,
                axis: if per_channel {
                    weight_axis(g, n, 0, d)
                } else {
                    None
                },
            });
            p.decisions.push(decide(true, "int8 embedding table"));
            continue;
        }
        let has_bias = matches!(op.as_str(), "Conv" | "ConvTranspose" | "Gemm");
        for &(slot, v) in &data_inputs {
            if has_bias && slot == 2 {
                continue; // decided below, once input and weight are known
            }
            if g.constant(v).is_some() {
                let axis = if per_channel {
                    weight_axis(g, n, slot, v)
                } else {
                    None
                };
                p.weights.push(WeightUse {
                    node: n,
                    slot,
                    value: v,
                    axis,
                });
            } else if !(slot == 0 && fused_into_activation(g, v)) {
                p.activations.insert(v);
            }
        }
        if has_bias {
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
    }

    // Values the plan must not touch: graph outputs, Softmax outputs, and
    // values bound by name inside subgraphs.
    let keep_float = |v: ValueId| -> bool {
        g.is_graph_output(v)
            || g.producer_node(v).is("Softmax")
            || g.has_implicit_uses(v)
            || !is_float(g, v)
    };
    p.activations.retain(|&v| !keep_float(v));

    // Data movement passes scales through: its output reuses the input's
    // params when the input is quantized.
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
            if keep_float(*out) {
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
    p
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
