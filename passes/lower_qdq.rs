//! `lower-qdq`: rewrites whole QDQ groups of Conv and MatMul into the
//! QOperator ops tract runs as integer kernels.
//!
//! # What
//! tract never fuses QDQ: it constant-folds weight DequantizeLinear and
//! runs the op in float. Its integer kernels are reached through
//! `QLinearConv` and `QLinearMatMul` (see `target::tract`). This pass finds
//! each group — `DequantizeLinear` on every operand, the op, and a
//! `QuantizeLinear` on its result (after a Relu or Clip that alone reads
//! it) — and replaces it by the QOperator op on the quantized tensors. A
//! Relu or Clip in between becomes a `Clip` on the quantized result with
//! the bounds quantized (exact: rounding is monotonic). Float islands stay
//! as they are: DequantizeLinear → float ops → QuantizeLinear.
//!
//! # Example
//! ```text
//! before:  X_dq = DequantizeLinear (X_q, X_scale, X_zp)
//!          W_dq = DequantizeLinear (W_q, W_scale, W_zp)
//!          Y = Conv (X_dq, W_dq)
//!          Y_q = QuantizeLinear (Y, Y_scale, Y_zp)
//! after:   Y_q = QLinearConv (X_q, X_scale, X_zp, W_q, W_scale, W_zp, Y_scale, Y_zp)
//! ```
//!
//! # Options
//! None.
//!
//! # Preconditions
//! QDQ groups as `insert-qdq{target=tract}` writes them: per-tensor weight
//! scales (a group with per-channel weights is left as QDQ: tract does not
//! fuse its requantization), constant scales and zero points, an int32 bias
//! through DequantizeLinear with zero point 0. Groups that do not fit are
//! left alone with a remark.
//!
//! # Numerics
//! Changes numbers within one quantization step: the QOperator op
//! requantizes its accumulator once where the QDQ form rounds the float
//! result of the op.
//!
//! # Errors
//! None: what cannot be lowered stays QDQ.

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{At, Graph, Model, NodeId, Slot, Tensor, ValueId};
use crate::proto::NodeProto;

const NAME: &str = "lower-qdq";

#[derive(Debug, Default)]
pub struct LowerQdq;

impl LowerQdq {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>(NAME, o)?;
        Ok(LowerQdq)
    }
}

/// A dequantized operand: the quantized tensor and its scale and zero
/// point.
#[derive(Clone, Copy)]
struct Dq {
    q: ValueId,
    scale: ValueId,
    zp: Option<ValueId>,
}

/// A group found around one Conv or MatMul.
struct Group {
    op: NodeId,
    operands: Vec<Dq>,
    bias: Option<ValueId>,
    /// Relu or Clip between the op and its QuantizeLinear.
    activation: Option<NodeId>,
    quantize: NodeId,
}

impl Pass for LowerQdq {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let mut lowered = 0usize;
        for n in g.ops() {
            if !g.contains_node(n) {
                continue;
            }
            let node = g.node(n);
            if !(node.is("Conv") || node.is("MatMul")) {
                continue;
            }
            match find_group(g, n) {
                Ok(grp) => {
                    lower(g, &grp);
                    lowered += 1;
                }
                Err(Some(why)) => cx.remark(NAME, g.label(n), format!("kept as QDQ: {why}")),
                Err(None) => {}
            }
        }
        if lowered > 0 {
            remove_dead(g);
            cx.remark(
                NAME,
                "<model>",
                format!("{lowered} QDQ groups lowered to QLinearConv/QLinearMatMul"),
            );
        }
        Ok(Changed::from_bool(lowered > 0))
    }
}

/// A constant zero point of 8-bit codes (QOperator ops take no other; a
/// 16-bit one stays QDQ).
fn eight_bit(g: &Graph, z: ValueId) -> bool {
    use crate::proto::tensor_proto::DataType;
    g.constant(z)
        .is_some_and(|t| t.dtype() == DataType::Int8 as i32 || t.dtype() == DataType::Uint8 as i32)
}

/// The constant scalar behind `v`, if it is one.
fn scalar(g: &Graph, v: ValueId) -> bool {
    g.constant(v).is_some_and(|t| t.len() == 1)
}

fn dequantized(g: &Graph, v: ValueId) -> Option<Dq> {
    let p = g.producer_node(v);
    if !p.is("DequantizeLinear") || p.attr_i("block_size").is_some_and(|b| b != 0) {
        return None;
    }
    let scale = p.input(1)?;
    Some(Dq {
        q: p.input(0)?,
        scale,
        zp: p.input(2),
    })
}

/// The group around `n`, `Err(Some(why))` for a near miss worth a remark,
/// `Err(None)` when `n` is simply a float op.
fn find_group(g: &Graph, n: NodeId) -> Result<Group, Option<String>> {
    let node = g.node(n);
    let conv = node.is("Conv");
    let data: Vec<ValueId> = node.inputs().iter().take(2).flatten().copied().collect();
    if data.len() < 2 {
        return Err(None);
    }
    let operands: Vec<Dq> = data.iter().filter_map(|&v| dequantized(g, v)).collect();
    if operands.len() != 2 {
        return Err(None);
    }
    if operands
        .iter()
        .any(|d| d.zp.is_some_and(|z| !eight_bit(g, z)))
    {
        return Err(Some(
            "an operand has 16-bit codes: QOperator ops are 8-bit".into(),
        ));
    }
    for d in &operands {
        if !scalar(g, d.scale) || d.zp.is_some_and(|z| !scalar(g, z)) {
            return Err(Some(
                "per-channel scales: tract does not fuse their requantization".into(),
            ));
        }
    }
    let bias = match (conv, node.input(2)) {
        (true, Some(b)) => {
            let d = dequantized(g, b).ok_or_else(|| Some("its bias is float".to_string()))?;
            let int32 = g
                .constant(d.q)
                .is_some_and(|t| t.dtype() == crate::proto::tensor_proto::DataType::Int32 as i32);
            if !int32 {
                return Err(Some("its bias is not int32".into()));
            }
            Some(d.q)
        }
        (false, Some(_)) => return Err(None),
        _ => None,
    };
    let out = node.output();
    let (activation, q_in) = match sole_reader(g, out) {
        Some(u) if g.node(u).is("Relu") || g.node(u).is("Clip") => (Some(u), g.node(u).output()),
        _ => (None, out),
    };
    let quantize = sole_reader(g, q_in)
        .filter(|&u| g.node(u).is("QuantizeLinear"))
        .ok_or_else(|| Some("its result is not quantized".to_string()))?;
    let qn = g.node(quantize);
    if !qn.input(1).is_some_and(|s| scalar(g, s)) || !qn.input(2).is_some_and(|z| scalar(g, z)) {
        return Err(Some(
            "its output QuantizeLinear has no constant scalar scale and zero point".into(),
        ));
    }
    if qn.input(2).is_some_and(|z| !eight_bit(g, z)) {
        return Err(Some(
            "its result is quantized to 16 bits: QOperator ops are 8-bit".into(),
        ));
    }
    Ok(Group {
        op: n,
        operands,
        bias,
        activation,
        quantize,
    })
}

fn sole_reader(g: &Graph, v: ValueId) -> Option<NodeId> {
    let users = g.users(v);
    (users.len() == 1 && !g.is_graph_output(v) && users[0].1 == Slot::Input(0)).then(|| users[0].0)
}

/// A zero point operand, made explicit (QOperator ops require it): the
/// DequantizeLinear's, or a uint8 zero like its default.
fn zero_point(g: &mut Graph, d: &Dq) -> ValueId {
    match d.zp {
        Some(z) => z,
        None => {
            let name = format!("{}_zp", g.name(d.q));
            g.add_initializer(Tensor::from_u8(&name, &[], &[0]))
        }
    }
}

fn lower(g: &mut Graph, grp: &Group) {
    let q = g.node(grp.quantize);
    let (ys, yz) = (
        q.input(1).expect("invariant: checked"),
        q.input(2).expect("invariant: checked"),
    );
    let y_q = q.output();
    let node = g.node(grp.op);
    let conv = node.is("Conv");
    let attrs = node.op().expect("invariant: an op").attribute.clone();
    let (a, w) = (grp.operands[0], grp.operands[1]);
    let (az, wz) = (zero_point(g, &a), zero_point(g, &w));
    let mut inputs = vec![
        Some(a.q),
        Some(a.scale),
        Some(az),
        Some(w.q),
        Some(w.scale),
        Some(wz),
        Some(ys),
        Some(yz),
    ];
    if let Some(b) = grp.bias {
        inputs.push(Some(b));
    }
    let proto = NodeProto {
        op_type: Some(if conv { "QLinearConv" } else { "QLinearMatMul" }.into()),
        name: Some(g.node(grp.op).name().to_string()).filter(|s| !s.is_empty()),
        attribute: if conv { attrs } else { vec![] },
        ..Default::default()
    };
    let base = g.name(y_q).to_string();
    let (lin, out) = g.add_op(proto, &inputs, &[&format!("{base}_lin")], At::After(grp.op));
    g.take_label(grp.op, lin);
    let mut result = out[0];
    if let Some(act) = grp.activation {
        result = quantized_clip(g, act, result, ys, yz);
    }
    g.replace_all_uses(y_q, result);
    for i in g.output_ports(y_q) {
        g.redirect_output(i, result);
    }
}

/// `Clip` of a quantized tensor with the Relu/Clip bounds quantized by the
/// group's output scale and zero point.
fn quantized_clip(g: &mut Graph, act: NodeId, x: ValueId, ys: ValueId, yz: ValueId) -> ValueId {
    let node = g.node(act);
    let bound = |slot: usize, attr: &str| -> Option<f32> {
        node.input(slot)
            .and_then(|v| g.constant(v))
            .and_then(|t| t.to_f32().ok())
            .and_then(|a| a.iter().next().copied())
            .or_else(|| node.attr_f(attr))
    };
    let (lo, hi) = if node.is("Relu") {
        (Some(0.0), None)
    } else {
        (bound(1, "min"), bound(2, "max"))
    };
    let s = g
        .constant(ys)
        .and_then(|t| t.to_f32().ok())
        .and_then(|a| a.iter().next().copied())
        .unwrap_or(1.0);
    let zt = g.constant(yz).expect("invariant: checked constant");
    let dtype = zt.dtype();
    let z = zt
        .to_i64()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(0) as i32;
    let signed = dtype == crate::proto::tensor_proto::DataType::Int8 as i32;
    let (qmin, qmax) = if signed { (-128, 127) } else { (0, 255) };
    let quant = |x: f32| -> i32 {
        let a = crate::quant::Affine {
            scale: s,
            zero_point: z,
        };
        crate::quant::quantize(x, a, qmin, qmax)
    };
    let name = g.name(x).to_string();
    let mut bound_value = |v: i32, which: &str| -> ValueId {
        let t = if signed {
            Tensor::from_i8(&format!("{name}_{which}"), &[], &[v as i8])
        } else {
            Tensor::from_u8(&format!("{name}_{which}"), &[], &[v as u8])
        };
        g.add_initializer(t)
    };
    let lo_v = bound_value(lo.map(quant).unwrap_or(qmin), "min");
    let hi_v = bound_value(hi.map(quant).unwrap_or(qmax), "max");
    let proto = NodeProto {
        op_type: Some("Clip".into()),
        ..Default::default()
    };
    let anchor = g.producer(x);
    let (_, o) = g.add_op(
        proto,
        &[Some(x), Some(lo_v), Some(hi_v)],
        &[&format!("{name}_clip")],
        At::After(anchor),
    );
    o[0]
}

/// Removes what lowering left unused (the float ops, Q/DQ nodes and the
/// float results), as `dce` would.
fn remove_dead(g: &mut Graph) {
    loop {
        let mut removed = false;
        for n in g.topo_order().into_iter().rev() {
            let node = g.node(n);
            if node.op().is_none() {
                continue;
            }
            let outs: Vec<ValueId> = node.outputs().iter().flatten().copied().collect();
            if outs.iter().all(|&v| !g.is_used(v)) {
                g.remove_node(n);
                removed = true;
            }
        }
        if !removed {
            break;
        }
    }
}
