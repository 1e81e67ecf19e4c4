//! `onnxq lint`: what a target runtime makes of a quantized model.
//!
//! For any QDQ or QOperator model — onnxq's, onnxruntime's quantizer's,
//! or one exported from quantization-aware training — this reads the
//! target's table ([`super::Spec`]) and reports, per group, whether the
//! runtime runs it as an integer kernel (and if not, why), which
//! QuantizeLinear → DequantizeLinear pairs feed no integer kernel (pure
//! overhead there), which constant weights are dequantized on every run,
//! and what the runtime cannot load. The summary is the share of
//! multiply-accumulates on integer kernels.

use std::collections::BTreeSet;

use super::{Format, Role, Spec, Target};
use crate::ir::{Graph, Model, NodeId, ValueId};
use crate::proto::tensor_proto::DataType;

/// How serious a finding is: warnings fail `--deny-warnings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
}

/// One op with an integer kernel on the target, or a compute op.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupFinding {
    pub node: String,
    pub op: String,
    /// Whether the target runs it as an integer kernel.
    pub integer: bool,
    /// What it becomes there, or why it stays float.
    pub detail: String,
    pub macs: Option<u64>,
    pub severity: Severity,
}

/// Anything else worth a line: overhead pairs, per-run dequantization,
/// what cannot load.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    pub node: String,
    pub message: String,
    pub severity: Severity,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Lint {
    pub target: String,
    pub groups: Vec<GroupFinding>,
    pub overhead: Vec<Finding>,
    pub unloadable: Vec<Finding>,
    /// Multiply-accumulates of the compute ops, and of those on integer
    /// kernels (ops whose shapes are unknown count as 0).
    pub macs_total: u64,
    pub macs_integer: u64,
}

impl Lint {
    pub fn warnings(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.severity)
            .chain(self.overhead.iter().map(|f| f.severity))
            .chain(self.unloadable.iter().map(|f| f.severity))
            .filter(|s| *s == Severity::Warning)
            .count()
    }

    pub fn mac_share(&self) -> f64 {
        if self.macs_total == 0 {
            0.0
        } else {
            self.macs_integer as f64 / self.macs_total as f64
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let tag = |sev: Severity| match sev {
            Severity::Warning => "warning",
            Severity::Info => "note",
        };
        for g in &self.groups {
            s.push_str(&format!(
                "  {:<7} {} ({}): {}{}\n",
                if g.integer { "int8" } else { tag(g.severity) },
                g.node,
                g.op,
                g.detail,
                g.macs.map(|m| format!(" [{m} MACs]")).unwrap_or_default()
            ));
        }
        for f in self.overhead.iter().chain(&self.unloadable) {
            s.push_str(&format!(
                "  {:<7} {}: {}\n",
                tag(f.severity),
                f.node,
                f.message
            ));
        }
        let integer = self.groups.iter().filter(|g| g.integer).count();
        s.push_str(&format!(
            "summary for {}: {integer} of {} groups on integer kernels, {:.1}% of the compute MACs; {} Q/DQ overhead finding(s); {} thing(s) the target cannot load; {} warning(s)\n",
            self.target,
            self.groups.len(),
            100.0 * self.mac_share(),
            self.overhead.len(),
            self.unloadable.len(),
            self.warnings()
        ));
        s
    }
}

const COMPUTE: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm"];

fn producer_is(g: &Graph, v: ValueId, op: &str) -> Option<NodeId> {
    let p = g.producer(v);
    g.node(p).is(op).then_some(p)
}

/// Element type of a Q/DQ node's quantized tensor.
fn qtype(g: &Graph, n: NodeId) -> i32 {
    let node = g.node(n);
    if node.is("DequantizeLinear") {
        node.input(0).map_or(0, |v| g.elem_type(v))
    } else {
        node.outputs()
            .first()
            .copied()
            .flatten()
            .map_or(0, |v| g.elem_type(v))
    }
}

fn type_name(t: i32) -> &'static str {
    crate::proto::dtype_name(t)
}

/// The value's sole reader through a Relu/Clip, if that reader is a
/// QuantizeLinear.
fn quantized_after(g: &Graph, v: ValueId, spec: &Spec) -> bool {
    let users = g.users(v);
    if g.is_graph_output(v) || users.is_empty() {
        return false;
    }
    users.iter().all(|&(u, _)| {
        let node = g.node(u);
        if node.is("QuantizeLinear") {
            return true;
        }
        let fused = spec
            .kernel(node.op_type())
            .is_some_and(|k| k.role == Role::FusedActivation && node.domain().is_empty());
        fused
            && g.users(node.output())
                .iter()
                .all(|&(w, _)| g.node(w).is("QuantizeLinear"))
            && !g.is_graph_output(node.output())
    })
}

/// Lints `m` (shape-inferred for MAC counts) for `target`.
pub fn lint(m: &Model, target: Target) -> Lint {
    let spec = target.spec();
    let g = &m.graph;
    let mut out = Lint {
        target: target.name().into(),
        groups: vec![],
        overhead: vec![],
        unloadable: vec![],
        macs_total: 0,
        macs_integer: 0,
    };
    let mut integer_nodes: BTreeSet<NodeId> = BTreeSet::new();
    for n in g.ops() {
        let node = g.node(n);
        let op = node.op_type();
        let macs = crate::analysis::cost::node_cost(g, n).macs;
        let is_compute = node.domain().is_empty()
            && (COMPUTE.contains(&op)
                || matches!(
                    op,
                    "QLinearConv" | "QLinearMatMul" | "MatMulInteger" | "ConvInteger"
                ));
        let kernel = node
            .domain()
            .is_empty()
            .then(|| spec.kernel(op))
            .flatten()
            .filter(|k| k.role != Role::FusedActivation);
        if !is_compute && kernel.is_none() {
            continue;
        }
        let (integer, detail, severity) = match spec.format {
            Format::Qdq => judge_qdq(g, n, spec),
            Format::QOperator => judge_qoperator(g, n),
        };
        if is_compute {
            out.macs_total += macs.unwrap_or(0);
            if integer {
                out.macs_integer += macs.unwrap_or(0);
            }
        }
        if integer {
            integer_nodes.insert(n);
        }
        out.groups.push(GroupFinding {
            node: g.label(n).into(),
            op: op.into(),
            integer,
            detail,
            macs: if is_compute { macs } else { None },
            severity,
        });
    }
    overhead(g, spec, &integer_nodes, &mut out);
    unloadable(g, spec, &mut out);
    out
}

fn judge_qdq(g: &Graph, n: NodeId, spec: &Spec) -> (bool, String, Severity) {
    let node = g.node(n);
    let op = node.op_type();
    let Some(k) = node.domain().is_empty().then(|| spec.kernel(op)).flatten() else {
        let quantized_in = node
            .inputs()
            .iter()
            .flatten()
            .any(|&v| producer_is(g, v, "DequantizeLinear").is_some());
        return if quantized_in {
            (
                false,
                format!("{} has no integer kernel for {op}: runs in float, its DequantizeLinear inputs are overhead", spec.name),
                Severity::Warning,
            )
        } else {
            (false, "float (not quantized)".into(), Severity::Info)
        };
    };
    let data: Vec<usize> = match k.data_inputs {
        Some(d) => d.to_vec(),
        None => (0..node.inputs().len()).collect(),
    };
    let mut any_dq = false;
    let mut missing = Vec::new();
    for (slot, v) in node.inputs().iter().enumerate() {
        let Some(v) = *v else { continue };
        let is_weight = !data.contains(&slot);
        // Conv/Gemm bias (slot 2) may come as int32 DequantizeLinear or float.
        if is_weight && slot == 2 {
            continue;
        }
        if is_weight && g.elem_type(v) != DataType::Float as i32 && g.elem_type(v) != 0 {
            continue;
        }
        match producer_is(g, v, "DequantizeLinear") {
            Some(dq) => {
                any_dq = true;
                // A MatMul operand dequantized from a constant is its weight.
                let is_weight = k.role == Role::Compute
                    && (is_weight || g.node(dq).input(0).is_some_and(|x| g.constant(x).is_some()));
                let t = qtype(g, dq);
                let want = if is_weight {
                    spec.weights.onnx()
                } else {
                    spec.activations.onnx()
                };
                if t != want && spec.name == "ort-cpu" {
                    missing.push(format!(
                        "{} '{}' is {} ({} wants {})",
                        if is_weight { "weight" } else { "input" },
                        g.name(v),
                        type_name(t),
                        spec.name,
                        type_name(want)
                    ));
                }
            }
            None => missing.push(format!("'{}' arrives in float", g.name(v))),
        }
    }
    let out_ok = match node.outputs().first().copied().flatten() {
        Some(y) => quantized_after(g, y, spec) || (node.is("MatMul") && k.role == Role::Compute),
        None => false,
    };
    if !out_ok {
        missing.push("its result is not quantized (no QuantizeLinear after it)".into());
    }
    if missing.is_empty() {
        (true, format!("becomes {}", k.becomes), Severity::Info)
    } else if any_dq {
        (
            false,
            format!(
                "group not whole, runs in float with Q/DQ overhead: {}",
                missing.join("; ")
            ),
            Severity::Warning,
        )
    } else {
        (false, "float (not quantized)".into(), Severity::Info)
    }
}

fn scalar_const(g: &Graph, v: Option<ValueId>) -> Option<bool> {
    let t = g.constant(v?)?;
    Some(t.dims().iter().product::<i64>() == 1)
}

fn judge_qoperator(g: &Graph, n: NodeId) -> (bool, String, Severity) {
    let node = g.node(n);
    match node.op_type() {
        "QLinearConv" | "QLinearMatMul" => {
            if scalar_const(g, node.input(4)) == Some(false) {
                return (
                    false,
                    "per-channel weight scales: tract does not fuse the requantization (slower than float); requantize per tensor".into(),
                    Severity::Warning,
                );
            }
            if node.is("QLinearMatMul") {
                let w = node.input(3).and_then(|v| g.constant(v));
                let big = w.is_some_and(|t| {
                    let d = t.dims();
                    d.len() >= 2 && d[d.len() - 2] * d[d.len() - 1] > 1 << 20
                });
                let asym = node
                    .input(2)
                    .and_then(|v| g.constant(v))
                    .and_then(|t| t.to_i64().ok())
                    .is_some_and(|z| z.iter().any(|&x| x != 0));
                if big && asym {
                    return (
                        true,
                        "integer kernel, but with a K·N > 2^20 weight and a non-zero activation zero point tract recomputes the weight column sums on every run; use s8 symmetric activations".into(),
                        Severity::Warning,
                    );
                }
            }
            (true, "tract integer kernel".into(), Severity::Info)
        }
        "MatMulInteger" | "ConvInteger" => (true, "integer kernel".into(), Severity::Info),
        _ => {
            // Which inputs arrive through a DequantizeLinear, and whether
            // of an activation or of a constant (an int8 weight).
            let dq_of = |constant: bool| {
                node.inputs().iter().flatten().any(|&v| {
                    producer_is(g, v, "DequantizeLinear")
                        .and_then(|dq| g.node(dq).input(0))
                        .is_some_and(|x| g.constant(x).is_some() == constant)
                })
            };
            if dq_of(false) {
                (
                    false,
                    "QDQ form: tract runs it in float and the Q/DQ pairs cost time; `onnxq convert --target tract` lowers it".into(),
                    Severity::Warning,
                )
            } else if dq_of(true) {
                // Whether the weight is folded at load is the overhead
                // check's concern (it flags one past the fold budget).
                (
                    false,
                    "float, with int8 weights (tract expands them at load: a smaller file at float speed)".into(),
                    Severity::Info,
                )
            } else {
                (false, "float".into(), Severity::Info)
            }
        }
    }
}

/// Q → DQ pairs on activations whose DequantizeLinear feeds no integer
/// kernel, and constant weights dequantized on every run.
fn overhead(g: &Graph, spec: &Spec, integer: &BTreeSet<NodeId>, out: &mut Lint) {
    let feeds_integer = |v: ValueId| -> bool {
        // Directly, or through data movement that stays quantized.
        let mut stack = vec![v];
        let mut seen = BTreeSet::new();
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            for (u, _) in g.users(v) {
                let node = g.node(u);
                if integer.contains(&u) {
                    return true;
                }
                if node.is("QuantizeLinear") {
                    continue;
                }
                if spec.passes_through(node.op_type()) && node.domain().is_empty() {
                    stack.extend(node.outputs().iter().flatten().copied());
                }
            }
        }
        false
    };
    for n in g.ops() {
        let node = g.node(n);
        if !node.is("DequantizeLinear") {
            continue;
        }
        let Some(x) = node.input(0) else { continue };
        let y = node.output();
        if g.constant(x).is_some() {
            if !feeds_integer(y) {
                let elems: i64 = g.constant(x).map_or(0, |t| t.dims().iter().product());
                let folded = spec.folds_weight_dq.is_some_and(|l| elems as usize <= l);
                // A few scalars dequantized per run cost nothing.
                if !folded && elems >= 1024 {
                    out.overhead.push(Finding {
                        node: g.label(n).into(),
                        message: format!(
                            "constant '{}' ({elems} elements) is dequantized on every run for a float op: {}",
                            g.name(x),
                            if spec.folds_weight_dq.is_some() {
                                "past the runtime's constant-folding budget"
                            } else {
                                "this runtime does not fold DequantizeLinear"
                            }
                        ),
                        severity: Severity::Warning,
                    });
                }
            }
            continue;
        }
        if producer_is(g, x, "QuantizeLinear").is_some() && !feeds_integer(y) {
            out.overhead.push(Finding {
                node: g.label(n).into(),
                message: format!(
                    "Q/DQ pair on '{}' feeds no integer kernel on {}: pure overhead",
                    g.name(y),
                    spec.name
                ),
                severity: Severity::Warning,
            });
        }
    }
}

fn unloadable(g: &Graph, spec: &Spec, out: &mut Lint) {
    for n in g.ops() {
        let node = g.node(n);
        let key = format!("{}:{}", node.domain(), node.op_type());
        let mut hits: Vec<&super::Unloadable> =
            spec.unloadable.iter().filter(|u| u.what == key).collect();
        if node.is("QuantizeLinear") || node.is("DequantizeLinear") {
            let t = type_name(qtype(g, n)).to_ascii_lowercase();
            hits.extend(spec.unloadable.iter().filter(|u| u.what == t));
            if node.attr_i("block_size").is_some_and(|b| b > 0) {
                hits.extend(spec.unloadable.iter().filter(|u| u.what == "block_size"));
            }
        }
        for u in hits {
            out.unloadable.push(Finding {
                node: g.label(n).into(),
                message: format!("{} cannot load {}: {}", spec.name, u.what, u.note),
                severity: Severity::Warning,
            });
        }
    }
}
