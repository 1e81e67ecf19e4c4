//! Whole-group placement for a target with integer kernels.
//!
//! A runtime is faster only where a quantized group is whole: every
//! activation input arrives through DequantizeLinear, the op has an
//! integer kernel in the target's table (`crate::target`), and its result
//! is quantized again. This placement quantizes exactly such groups and
//! nothing else, so no Q/DQ pair is left where it fuses into nothing:
//!
//! * compute ops (Conv, MatMul, Gemm) are the anchors, chosen by the
//!   selection (all, or those `select-coverage` / a speed selection kept);
//! * a compute op's result is quantized — after the Relu or Clip that
//!   reads it alone, which the target removes — except a MatMul whose
//!   result no quantized op reads, which onnxruntime runs as
//!   MatMulIntegerToFloat;
//! * an elementwise, pooling or concatenation kernel joins when an
//!   activation input already arrives quantized and its result flows into
//!   a quantized compute op: it then runs as an integer kernel between
//!   quantized neighbours, and a float operand gets a QuantizeLinear; its
//!   constant operands are quantized like activations. One whose result
//!   only float ops read (the residual stream before a LayerNorm) stays
//!   float: it would save nothing and cost accuracy;
//! * ops the target runs on quantized data directly (data movement,
//!   MaxPool, Resize in onnxruntime) keep their input's scale;
//! * everything else runs in float between a DequantizeLinear and, where a
//!   quantized op reads its result, a QuantizeLinear.
//!
//! Softmax results and values bound by name inside subgraphs stay float
//! (tract 0.23.9 mis-computes Q→DQ→Softmax→Q→DQ, and onnxq validates in
//! tract), so a compute op reading one is left float rather than made a
//! partial group. A quantized group's result that is a graph output moves
//! the output port to its DequantizeLinear, keeping the interface float.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    glob_match, is_float, weight_axis, BiasUse, Decision, Placement, Selection, WeightUse,
};
use crate::ir::{Graph, Model, NodeId, Slot, ValueId};
use crate::target::{Role, Spec};

/// Below this weight SQNR (dB) a per-tensor int8 weight is refused where
/// per-channel is much better (`Planner::per_tensor_too_lossy`). MiniLM-L3's
/// weights keep 25–39 dB per tensor but one (8.6 dB); at 20 dB two more
/// borderline layers went float for 3 dB more output SQNR, at 1.47× float
/// speed in tract instead of 1.77×.
const MIN_PER_TENSOR_WEIGHT_DB: f64 = 15.0;

/// Computes the whole-group placement of `m` for `spec`.
pub fn plan(m: &Model, sel: &Selection, spec: &Spec, per_channel: bool) -> Placement {
    let g = &m.graph;
    let mut cx = Planner {
        g,
        sel,
        spec,
        per_channel: per_channel && spec.per_channel,
        feeding: BTreeSet::new(),
    };
    cx.feeding = cx.feeding_set();
    let mut st = State::default();
    for n in g.ops() {
        cx.visit(n, &mut st);
    }
    cx.finish(st)
}

struct Planner<'a> {
    g: &'a Graph,
    sel: &'a Selection,
    spec: &'a Spec,
    per_channel: bool,
    /// Elementwise kernels whose result flows into a compute op the
    /// selection keeps (directly, through ops that pass quantized data, or
    /// through other such kernels). Only these may join: a kernel whose
    /// result only float ops read saves at most one DequantizeLinear, and
    /// quantizing it costs accuracy where it hurts most (the residual
    /// stream a LayerNorm reads, a gate's output).
    feeding: BTreeSet<NodeId>,
}

#[derive(Default)]
struct State {
    p: Placement,
    /// Tensors that arrive quantized (a quantized group's result, or data
    /// movement of one), with the tensor whose parameters they carry.
    avail: BTreeMap<ValueId, ValueId>,
    /// Quantized op nodes.
    quantized: BTreeSet<NodeId>,
    /// Compute ops whose result the group quantizes only if a quantized op
    /// reads it (MatMul in QDQ form).
    optional_outputs: BTreeMap<ValueId, NodeId>,
}

impl Planner<'_> {
    /// Compute ops the selection keeps, by the same checks
    /// [`Planner::visit_compute`] makes.
    fn selected_compute(&self, n: NodeId) -> bool {
        let g = self.g;
        let node = g.node(n);
        let Some(k) = self.spec.kernel(node.op_type()) else {
            return false;
        };
        if !node.domain().is_empty() || k.role != Role::Compute {
            return false;
        }
        let label = self.label(n);
        self.blocked(n, &self.data_inputs(n, k.data_inputs))
            .is_none()
            && self
                .sel
                .coverage
                .as_ref()
                .is_none_or(|c| c.contains(&label))
            && !self.sel.keep_float.contains(&label)
    }

    /// See [`Planner::feeding`]: one sweep in reverse topological order.
    fn feeding_set(&self) -> BTreeSet<NodeId> {
        let g = self.g;
        let kernel_role = |n: NodeId| {
            let node = g.node(n);
            node.domain()
                .is_empty()
                .then(|| self.spec.kernel(node.op_type()).map(|k| k.role))
                .flatten()
        };
        let passes = |n: NodeId| {
            let node = g.node(n);
            node.domain().is_empty()
                && (self.spec.passes_through(node.op_type()) || cheap_unary(g, n))
        };
        let mut reaches: BTreeSet<NodeId> = BTreeSet::new();
        let mut feeding: BTreeSet<NodeId> = BTreeSet::new();
        for n in g.ops().into_iter().rev() {
            let hit = g.node(n).outputs().iter().flatten().any(|v| {
                g.user_nodes(*v).iter().any(|&u| {
                    self.selected_compute(u)
                        || feeding.contains(&u)
                        || (passes(u) && reaches.contains(&u))
                })
            });
            if hit {
                reaches.insert(n);
                if matches!(
                    kernel_role(n),
                    Some(Role::Joins) | Some(Role::FusedActivation)
                ) {
                    feeding.insert(n);
                }
            }
        }
        feeding
    }

    fn label(&self, n: NodeId) -> String {
        self.g.label(n).to_string()
    }

    fn decide(&self, st: &mut State, n: NodeId, quantized: bool, why: &str) {
        st.p.decisions.push(Decision {
            node: self.label(n),
            op: self.g.node(n).op_type().to_string(),
            quantized,
            reason: why.to_string(),
        });
    }

    fn allowed(&self, op: &str) -> bool {
        self.sel.op_types.is_empty() || self.sel.op_types.iter().any(|t| t == op)
    }

    fn excluded_by(&self, n: NodeId) -> Option<&String> {
        let label = self.label(n);
        let op = self.g.node(n).op_type();
        self.sel
            .exclude
            .iter()
            .find(|pat| glob_match(pat, &label) || glob_match(pat, op))
    }

    /// Values that must stay float whatever the plan.
    fn stays_float(&self, v: ValueId) -> bool {
        let g = self.g;
        g.producer_node(v).is("Softmax") || g.has_implicit_uses(v) || !is_float(g, v)
    }

    /// The operands of `n` that carry activations (per the kernel's table)
    /// and are not omitted.
    fn data_inputs(&self, n: NodeId, data: Option<&[usize]>) -> Vec<(usize, ValueId)> {
        self.g
            .node(n)
            .inputs()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .filter(|(i, _)| data.is_none_or(|d| d.contains(i)))
            .collect()
    }

    /// Why `n` cannot be a quantized group at all, if so.
    fn blocked(&self, n: NodeId, inputs: &[(usize, ValueId)]) -> Option<String> {
        let g = self.g;
        let node = g.node(n);
        if !self.allowed(node.op_type()) {
            return Some("op type not selected (--op-types)".into());
        }
        if let Some(pat) = self.excluded_by(n) {
            return Some(format!("excluded by '{pat}'"));
        }
        if node.has_subgraphs() {
            return Some("has subgraphs".into());
        }
        for &(_, v) in inputs {
            if !is_float(g, v) {
                let t = g.elem_type(v);
                return Some(if t == 0 {
                    format!(
                        "element type of '{}' unknown (run shape-inference first)",
                        g.name(v)
                    )
                } else {
                    format!(
                        "input '{}' is {}, not float",
                        g.name(v),
                        crate::proto::dtype_name(t)
                    )
                });
            }
            if g.constant(v).is_none() && self.stays_float(v) {
                return Some(format!(
                    "reads '{}', which stays float (a Softmax result or a subgraph-bound value): the group could not be whole",
                    g.name(v)
                ));
            }
        }
        None
    }

    fn visit(&self, n: NodeId, st: &mut State) {
        let node = self.g.node(n);
        if !node.domain().is_empty() {
            return;
        }
        if super::integer_only(self.g, n) {
            return;
        }
        if self.sel.float_readers.contains(&self.label(n)) {
            st.p.float_readers.insert(n);
            return self.decide(st, n, false, super::SMOOTH_RESCALE);
        }
        let op = node.op_type();
        match self.spec.kernel(op) {
            Some(k) if k.role == Role::Compute => self.visit_compute(n, k.data_inputs, st),
            Some(k) if k.role == Role::Joins => self.visit_joins(n, k.data_inputs, st),
            // Fused activations are decided with their producer; one the
            // fallback kept in float is reported as such.
            Some(_) => {
                let label = self.label(n);
                if self.sel.keep_float.contains(&label)
                    && !st.p.decisions.iter().any(|d| d.node == label)
                {
                    self.decide(st, n, false, "kept in float by the fallback selection");
                }
            }
            None if self.spec.passes_through(op) => self.visit_passthrough(n, st),
            None => {}
        }
    }

    fn visit_compute(&self, n: NodeId, data: Option<&[usize]>, st: &mut State) {
        let g = self.g;
        let inputs = self.data_inputs(n, data);
        if let Some(why) = self.blocked(n, &inputs) {
            return self.decide(st, n, false, &why);
        }
        let label = self.label(n);
        if let Some(c) = &self.sel.coverage {
            if !c.contains(&label) {
                let why = self.sel.coverage_reason(&label).to_string();
                let why = if self.weights_only(n, st) {
                    format!("{why}; its weight is stored as int8 (the runtime folds it to float at load)")
                } else {
                    why
                };
                return self.decide(st, n, false, &why);
            }
        }
        if self.sel.keep_float.contains(&label) {
            return self.decide(st, n, false, "kept in float by the fallback selection");
        }
        if let Some(why) = self.per_tensor_too_lossy(n) {
            if self.weights_only(n, st) {
                return self.decide(st, n, false, &why);
            }
        }
        let node = g.node(n);
        let biased = matches!(node.op_type(), "Conv" | "ConvTranspose" | "Gemm");
        for (slot, v) in inputs {
            if g.constant(v).is_some() {
                st.p.weights.push(WeightUse {
                    node: n,
                    slot,
                    value: v,
                    axis: if self.per_channel {
                        weight_axis(g, n, slot, v)
                    } else {
                        None
                    },
                    as_activation: false,
                    float_compute: false,
                });
            } else {
                self.quantize_input(v, st);
            }
        }
        // The weight operand of MatMul may be an activation (attention);
        // of Conv and Gemm it is slot 1.
        if data.is_some() {
            if let Some(w) = node.input(1) {
                if g.constant(w).is_some() && is_float(g, w) {
                    st.p.weights.push(WeightUse {
                        node: n,
                        slot: 1,
                        value: w,
                        axis: if self.per_channel {
                            weight_axis(g, n, 1, w)
                        } else {
                            None
                        },
                        as_activation: false,
                        float_compute: false,
                    });
                }
            }
        }
        if biased {
            if let (Some(b), Some(x), Some(w)) = (node.input(2), node.input(0), node.input(1)) {
                if g.constant(b).is_some_and(|t| t.dims().len() == 1) && g.constant(w).is_some() {
                    st.p.biases.push(BiasUse {
                        node: n,
                        slot: 2,
                        value: b,
                        input: x,
                        weight: w,
                    });
                }
            }
        }
        st.quantized.insert(n);
        let out = node.outputs().first().copied().flatten();
        let Some(out) = out else {
            return self.decide(st, n, true, "quantized");
        };
        let fused = self.fused_activation(out);
        match fused {
            Some(act) => {
                let y = g.node(act).output();
                st.quantized.insert(act);
                st.avail.insert(y, y);
                self.decide(st, n, true, "quantized");
                let why = format!("fused into {}'s integer kernel", label);
                st.p.decisions.push(Decision {
                    node: self.label(act),
                    op: g.node(act).op_type().to_string(),
                    quantized: true,
                    reason: why,
                });
            }
            None => {
                st.avail.insert(out, out);
                if node.is("MatMul") && self.spec.format == crate::target::Format::Qdq {
                    st.optional_outputs.insert(out, n);
                }
                self.decide(st, n, true, "quantized");
            }
        }
    }

    /// On a target whose integer kernels take per-tensor weights and that
    /// folds int8 weights at load (tract): why this op's weight must not
    /// be quantized per tensor, when one scale for the whole tensor would
    /// wreck it (a few output channels far larger than the rest: MiniLM-L3's
    /// first FFN output weight keeps 8.6 dB per tensor against 33 dB per
    /// channel, and costs the model 7 dB of output SQNR). Such an op runs
    /// in float with per-channel int8 weights: the file stays as small, the
    /// op as fast as float.
    fn per_tensor_too_lossy(&self, n: NodeId) -> Option<String> {
        if self.per_channel || self.spec.folds_weight_dq.is_none() {
            return None;
        }
        let g = self.g;
        let w = g.node(n).input(1)?;
        let axis = weight_axis(g, n, 1, w)?;
        let t = g.constant(w)?;
        let a = t.to_f32().ok()?;
        let (tensor_db, channel_db) = crate::quant::params::per_tensor_weight_sqnr(&a, axis)?;
        (tensor_db < MIN_PER_TENSOR_WEIGHT_DB && channel_db >= tensor_db + 10.0).then(|| {
            format!(
                "a per-tensor int8 weight would lose too much (weight SQNR {tensor_db:.1} dB per tensor against {channel_db:.1} dB per channel): float compute, int8 per-channel weights folded at load"
            )
        })
    }

    /// For a compute op left float on a target that folds constant
    /// DequantizeLinear at load: stores its weight (slot 1) as int8,
    /// per channel where possible. Returns whether it did.
    fn weights_only(&self, n: NodeId, st: &mut State) -> bool {
        let g = self.g;
        let Some(limit) = self.spec.folds_weight_dq else {
            return false;
        };
        let Some(w) = g.node(n).input(1) else {
            return false;
        };
        let fits = g.constant(w).is_some_and(|t| {
            let elems: i64 = t.dims().iter().product();
            elems > 0 && elems as usize <= limit
        });
        // Shared weights stay float: their other reader may be quantized
        // with different parameters.
        if !fits || !is_float(g, w) || g.users(w).len() != 1 {
            return false;
        }
        st.p.weights.push(WeightUse {
            node: n,
            slot: 1,
            value: w,
            axis: weight_axis(g, n, 1, w),
            as_activation: false,
            float_compute: true,
        });
        true
    }

    /// The Relu or Clip that alone reads `v`, which the target folds into
    /// the quantized op before it.
    fn fused_activation(&self, v: ValueId) -> Option<NodeId> {
        let g = self.g;
        let users = g.users(v);
        if users.len() != 1 || g.is_graph_output(v) || users[0].1 != Slot::Input(0) {
            return None;
        }
        let u = users[0].0;
        let k = self.spec.kernel(g.node(u).op_type())?;
        let ok = k.role == Role::FusedActivation
            && g.node(u).domain().is_empty()
            && self.excluded_by(u).is_none()
            && !self.sel.keep_float.contains(&self.label(u))
            && g.node(u)
                .outputs()
                .first()
                .copied()
                .flatten()
                .is_some_and(|y| is_float(g, y) && !self.stays_float(y));
        ok.then_some(u)
    }

    /// `v` is read by a quantized group: it gets a Q/DQ pair with its own
    /// parameters unless it already arrives quantized.
    fn quantize_input(&self, v: ValueId, st: &mut State) {
        st.avail.entry(v).or_insert(v);
        if let Some(&producer) = st.optional_outputs.get(&v) {
            // A quantized op reads this MatMul's result: it keeps its Q.
            let _ = producer;
            st.optional_outputs.remove(&v);
        }
    }

    fn visit_joins(&self, n: NodeId, data: Option<&[usize]>, st: &mut State) {
        let g = self.g;
        let inputs = self.data_inputs(n, data);
        if let Some(why) = self.blocked(n, &inputs) {
            return self.decide(st, n, false, &why);
        }
        if self.sel.keep_float.contains(&self.label(n)) {
            return self.decide(st, n, false, "kept in float by the fallback selection");
        }
        let activations: Vec<ValueId> = inputs
            .iter()
            .map(|&(_, v)| v)
            .filter(|&v| g.constant(v).is_none())
            .collect();
        if activations.is_empty() {
            return self.decide(st, n, false, "no activation operand");
        }
        if !self.feeding.contains(&n) {
            return self.decide(
                st,
                n,
                false,
                "its result reaches no quantized Conv/MatMul/Gemm: an integer kernel here would save no time and cost accuracy",
            );
        }
        if !activations.iter().any(|v| st.avail.contains_key(v)) {
            let why = format!(
                "'{}' arrives in float: quantizing here would only add QuantizeLinear nodes",
                g.name(activations[0])
            );
            return self.decide(st, n, false, &why);
        }
        for (slot, v) in inputs {
            if g.constant(v).is_some() {
                st.p.weights.push(WeightUse {
                    node: n,
                    slot,
                    value: v,
                    axis: None,
                    as_activation: true,
                    float_compute: false,
                });
            } else {
                self.quantize_input(v, st);
            }
        }
        st.quantized.insert(n);
        if let Some(out) = g.node(n).outputs().first().copied().flatten() {
            match self.fused_activation(out) {
                Some(act) => {
                    st.quantized.insert(act);
                    let y = g.node(act).output();
                    st.avail.insert(y, y);
                    let why = format!("fused into {}'s integer kernel", self.label(n));
                    self.decide(st, n, true, "quantized: its inputs arrive quantized");
                    st.p.decisions.push(Decision {
                        node: self.label(act),
                        op: g.node(act).op_type().to_string(),
                        quantized: true,
                        reason: why,
                    });
                    return;
                }
                None => {
                    st.avail.insert(out, out);
                }
            }
        }
        self.decide(st, n, true, "quantized: its inputs arrive quantized");
    }

    fn visit_passthrough(&self, n: NodeId, st: &mut State) {
        let g = self.g;
        let node = g.node(n);
        let Some(src) = node.input(0) else { return };
        let Some(&param) = st.avail.get(&src) else {
            return;
        };
        if self.excluded_by(n).is_some() || node.has_subgraphs() {
            return;
        }
        for out in node.outputs().iter().flatten() {
            if is_float(g, *out) && !self.stays_float(*out) {
                st.avail.insert(*out, param);
                st.p.tied.insert(*out, param);
            }
        }
        // A quantized op downstream may read through this node: the source
        // keeps its Q whichever way it was produced.
        st.optional_outputs.remove(&src);
    }

    /// Turns the state into the placement: every quantized tensor gets a
    /// Q/DQ pair (own parameters, or its source's through data movement)
    /// unless nothing quantized reads it.
    fn finish(&self, mut st: State) -> Placement {
        let g = self.g;
        // A MatMul result no quantized op reads: onnxruntime's
        // MatMulIntegerToFloat needs no output QuantizeLinear.
        for v in st.optional_outputs.keys() {
            st.avail.remove(v);
        }
        let read_quantized =
            |v: ValueId, st: &State| g.user_nodes(v).iter().any(|u| st.quantized.contains(u));
        let mut tied = BTreeMap::new();
        let mut activations = BTreeSet::new();
        for (&v, &param) in &st.avail {
            if g.constant(v).is_some() || self.stays_float(v) {
                continue;
            }
            // Data movement of a tensor whose pair was dropped.
            if !st.avail.contains_key(&param) {
                continue;
            }
            let producer_quantized = st.quantized.contains(&g.producer(v));
            let needed = producer_quantized
                || read_quantized(v, &st)
                || st
                    .p
                    .tied
                    .get(&v)
                    .is_some_and(|_| read_through(g, v, &st.quantized, self.spec));
            if !needed {
                continue;
            }
            if v == param {
                activations.insert(v);
            } else {
                tied.insert(v, param);
            }
            if producer_quantized && g.is_graph_output(v) {
                st.p.redirect_outputs.insert(v);
            }
        }
        st.p.activations = activations;
        st.p.tied = tied;
        st.p
    }
}

/// A cheap elementwise op of one activation (its other operands constant):
/// a float island the placement looks through when deciding whether an
/// elementwise kernel leads into a quantized compute op (the `/ 6` of a
/// decomposed HardSwish between a QLinearMul and the next Conv).
/// Reductions, normalisations and transcendental functions are not looked
/// through: what feeds them is a LayerNorm's input or a gate, where
/// quantizing costs most.
fn cheap_unary(g: &Graph, n: NodeId) -> bool {
    const CHEAP: &[&str] = &[
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Clip",
        "Relu",
        "LeakyRelu",
        "HardSigmoid",
        "HardSwish",
        "Neg",
        "Abs",
    ];
    let node = g.node(n);
    node.domain().is_empty()
        && CHEAP.contains(&node.op_type())
        && node
            .inputs()
            .iter()
            .flatten()
            .filter(|&&v| g.constant(v).is_none())
            .count()
            == 1
}

/// Whether a quantized op reads `v` through a chain of ops that pass the
/// quantized tensor through.
fn read_through(g: &Graph, v: ValueId, quantized: &BTreeSet<NodeId>, spec: &Spec) -> bool {
    let mut stack = vec![v];
    let mut seen = BTreeSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x) {
            continue;
        }
        for u in g.user_nodes(x) {
            if quantized.contains(&u) {
                return true;
            }
            let node = g.node(u);
            if node.domain().is_empty() && spec.passes_through(node.op_type()) {
                stack.extend(node.outputs().iter().flatten().copied());
            }
        }
    }
    false
}
