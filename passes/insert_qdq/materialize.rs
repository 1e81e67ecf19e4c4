//! `insert-qdq`'s graph writing: the scale and zero-point tensors, the
//! Q/DQ pairs after quantized activations, constants quantized like
//! activations, int8 weights read through DequantizeLinear, and int32
//! biases (with bias correction's shift).

use std::collections::BTreeMap;

use super::{int_attr, node_proto, QBias, QWeight};
use crate::ir::{At, Tensor, ValueId};
use crate::plan::Placement;
use crate::quant::params::ActParams;
use crate::quant::QType;

pub(super) fn zp_tensor(name: &str, qt: QType, zps: &[i32], dims: &[i64]) -> Tensor {
    match qt {
        QType::U8 => Tensor::from_u8(
            name,
            dims,
            &zps.iter().map(|&z| z as u8).collect::<Vec<_>>(),
        ),
        QType::S8 => Tensor::from_i8(
            name,
            dims,
            &zps.iter().map(|&z| z as i8).collect::<Vec<_>>(),
        ),
        // 16-bit codes as little-endian raw data, two's complement for s16.
        QType::U16 | QType::S16 => Tensor::from_raw(
            name,
            qt.onnx(),
            dims,
            zps.iter()
                .flat_map(|&z| (z as u16).to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
    }
}

pub(super) fn scale_tensor(name: &str, scales: &[f32], dims: &[i64]) -> Tensor {
    let raw: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    Tensor::from_raw(
        name,
        crate::proto::tensor_proto::DataType::Float as i32,
        dims,
        raw.into(),
    )
}

/// A constant operand of an elementwise kernel, quantized like an
/// activation: one scale and zero point of the activations' type over the
/// constant's own range (widened to include 0).
pub(super) fn constant_as_activation(
    data: Vec<f32>,
    dims: Vec<usize>,
    qtype: QType,
    pow2: bool,
) -> QWeight {
    let (lo, hi, _) = crate::calib::hist::finite_range(&data);
    let symmetric = qtype.is_signed() || pow2;
    let mut a = crate::quant::affine_for_range(lo as f64, hi as f64, qtype, symmetric, false);
    if pow2 {
        // Rounded up: the constant's own range is never clipped.
        a.scale = crate::quant::pow2_around(a.scale).1;
    }
    let (qlo, qhi) = qtype.bounds(symmetric, false);
    QWeight {
        axis: None,
        dims,
        scales: vec![a.scale],
        zp: a.zero_point,
        data,
        float: None,
        qtype,
        lo: qlo,
        hi: qhi,
    }
}

/// `x_q = QuantizeLinear(x)`, `x_dq = DequantizeLinear(x_q)` after each
/// quantized activation, every reader moved to `x_dq`. A tensor and the
/// data-movement results tied to it share one scale/zero-point pair.
/// Returns how many pairs were made.
pub(super) fn materialize_activations(
    g: &mut crate::ir::Graph,
    p: &Placement,
    act: &[(ValueId, ActParams)],
) -> usize {
    let mut dequantized: Vec<(ValueId, ValueId)> = Vec::new();
    let mut params_made: BTreeMap<ValueId, (ValueId, ValueId)> = BTreeMap::new();
    for (v, ap) in act {
        let name = g.name(*v).to_string();
        let producer = g.producer(*v);
        let src = p.param_source(*v);
        let (s, z) = match params_made.get(&src) {
            Some(&sz) => sz,
            None => {
                let src_name = g.name(src).to_string();
                let s = g.add_initializer(scale_tensor(
                    &format!("{src_name}_scale"),
                    &[ap.affine.scale],
                    &[],
                ));
                let z = g.add_initializer(zp_tensor(
                    &format!("{src_name}_zp"),
                    ap.qtype,
                    &[ap.affine.zero_point],
                    &[],
                ));
                params_made.insert(src, (s, z));
                (s, z)
            }
        };
        let readers = g.users(*v);
        let (qn, qo) = g.add_op(
            node_proto("QuantizeLinear", vec![]),
            &[Some(*v), Some(s), Some(z)],
            &[&format!("{name}_q")],
            At::After(producer),
        );
        let (_, dqo) = g.add_op(
            node_proto("DequantizeLinear", vec![]),
            &[Some(qo[0]), Some(s), Some(z)],
            &[&format!("{name}_dq")],
            At::After(qn),
        );
        for (reader, slot) in readers {
            if p.float_readers.contains(&reader) {
                continue;
            }
            if let crate::ir::Slot::Input(i) = slot {
                g.set_input(reader, i as usize, Some(dqo[0]));
            }
        }
        dequantized.push((*v, dqo[0]));
    }
    // A quantized group's result that is a graph output: the port moves to
    // the DequantizeLinear (keeping its name), so the group stays whole.
    for (v, dq) in dequantized {
        if p.redirect_outputs.contains(&v) {
            for i in g.output_ports(v) {
                g.redirect_output(i, dq);
            }
        }
    }
    act.len()
}

/// Each bias as an int32 initializer read through DequantizeLinear.
pub(super) fn materialize_biases(g: &mut crate::ir::Graph, p: &Placement, biases: &[QBias]) {
    for (i, q, scales) in biases {
        let b = &p.biases[*i];
        let name = g.name(b.value).to_string();
        let n = q.len() as i64;
        let qv = g.add_initializer(Tensor::from_i32(&format!("{name}_q"), &[n], q));
        // Per-axis scales only where the channels' scales differ (per-channel
        // weights, which need opset 13): `axis` on DequantizeLinear exists
        // from opset 13, and a per-tensor model keeps its opset (10 or 11),
        // where the scale must be a scalar.
        let per_channel = scales.iter().any(|s| *s != scales[0]);
        let pdims: Vec<i64> = if per_channel { vec![n] } else { vec![] };
        let sv: Vec<f32> = if per_channel {
            scales.clone()
        } else {
            vec![scales[0]]
        };
        let s = g.add_initializer(scale_tensor(&format!("{name}_scale"), &sv, &pdims));
        let z = g.add_initializer(Tensor::from_i32(
            &format!("{name}_zp"),
            &pdims,
            &vec![0; sv.len()],
        ));
        let attrs = if per_channel {
            vec![int_attr("axis", 0)]
        } else {
            vec![]
        };
        let (_, o) = g.add_op(
            node_proto("DequantizeLinear", attrs),
            &[Some(qv), Some(s), Some(z)],
            &[&format!("{name}_dq")],
            At::Before(b.node),
        );
        g.set_input(b.node, b.slot, Some(o[0]));
    }
}

/// Bias correction (Nagel et al., "Data-Free Quantization", §4.2, with
/// empirical input means): rounding the weights shifts each output channel's
/// expected value by `Σ δW · E[x]`, a systematic offset that every later
/// layer inherits. Returns that shift per output channel, to subtract from
/// the bias. Conv (groups included) and Gemm; `None` for layouts it does not
/// know.
pub(super) fn bias_shift(node: &crate::ir::Node, qw: &QWeight, mean: &[f64]) -> Option<Vec<f64>> {
    let (lo, hi) = qw.bounds();
    let float = qw.float.as_deref().unwrap_or(&qw.data);
    let dq = |i: usize, c: usize| -> f64 {
        let a = crate::quant::Affine {
            scale: qw.scales[c],
            zero_point: qw.zp,
        };
        crate::quant::dequantize(crate::quant::quantize(qw.data[i], a, lo, hi), a) as f64
            - float[i] as f64
    };
    let per_channel = |c: usize| if qw.scales.len() == 1 { 0 } else { c };
    match node.op_type() {
        "Conv" => {
            let d = &qw.dims;
            if d.len() < 2 || qw.axis.is_some_and(|a| a != 0) {
                return None;
            }
            let (cout, cin_g) = (d[0], d[1]);
            let taps: usize = d[2..].iter().product();
            let group = node.attr_i("group").unwrap_or(1).max(1) as usize;
            if cout % group != 0 || mean.len() != cin_g * group {
                return None;
            }
            let per_group = cout / group;
            let mut shift = vec![0f64; cout];
            for (c, sh) in shift.iter_mut().enumerate() {
                let base_in = (c / per_group) * cin_g;
                for k in 0..cin_g {
                    let m = mean[base_in + k];
                    for t in 0..taps {
                        let i = (c * cin_g + k) * taps + t;
                        *sh += dq(i, per_channel(c)) * m;
                    }
                }
            }
            Some(shift)
        }
        "Gemm" => {
            let d = &qw.dims;
            if d.len() != 2 {
                return None;
            }
            let trans_b = node.attr_i("transB").unwrap_or(0) != 0;
            let (k_dim, n_dim) = if trans_b { (d[1], d[0]) } else { (d[0], d[1]) };
            if mean.len() != k_dim {
                return None;
            }
            let mut shift = vec![0f64; n_dim];
            for (n, sh) in shift.iter_mut().enumerate() {
                for (k, m) in mean.iter().enumerate() {
                    let i = if trans_b {
                        n * k_dim + k
                    } else {
                        k * n_dim + n
                    };
                    let c = if qw.axis == Some(0) {
                        i / d[1]
                    } else if qw.axis == Some(1) {
                        i % d[1]
                    } else {
                        0
                    };
                    *sh += dq(i, c) * m;
                }
            }
            Some(shift)
        }
        _ => None,
    }
}

/// Each weight as an int8 initializer read through DequantizeLinear,
/// placed just before its first reader.
pub(super) fn materialize_weights(
    g: &mut crate::ir::Graph,
    p: &Placement,
    weights: &BTreeMap<(ValueId, Option<usize>), QWeight>,
) {
    let mut wout: BTreeMap<(ValueId, Option<usize>), ValueId> = BTreeMap::new();
    for (&(v, axis), qw) in weights {
        let (wlo, whi) = qw.bounds();
        let name = g.name(v).to_string();
        let dims_i: Vec<i64> = qw.dims.iter().map(|&d| d as i64).collect();
        let zps: Vec<i32> = vec![qw.zp; qw.scales.len()];
        let q = crate::quant::requantize(&qw.data, &qw.dims, qw.axis, &qw.scales, qw.zp, wlo, whi);
        let qt = Tensor::from_raw(&format!("{name}_q"), qw.qtype.onnx(), &dims_i, q.into());
        let pdims: Vec<i64> = if axis.is_some() {
            vec![qw.scales.len() as i64]
        } else {
            vec![]
        };
        let qv = g.add_initializer(qt);
        let s = g.add_initializer(scale_tensor(&format!("{name}_scale"), &qw.scales, &pdims));
        let z = g.add_initializer(zp_tensor(&format!("{name}_zp"), qw.qtype, &zps, &pdims));
        let attrs = axis
            .map(|a| vec![int_attr("axis", a as i64)])
            .unwrap_or_default();
        let anchor = p
            .weights
            .iter()
            .find(|w| w.value == v && w.axis == axis)
            .expect("invariant: weight has a use")
            .node;
        let (_, o) = g.add_op(
            node_proto("DequantizeLinear", attrs),
            &[Some(qv), Some(s), Some(z)],
            &[&format!("{name}_dq")],
            At::Before(anchor),
        );
        wout.insert((v, axis), o[0]);
    }
    for w in &p.weights {
        let dq = wout[&(w.value, w.axis)];
        g.set_input(w.node, w.slot, Some(dq));
    }
}
