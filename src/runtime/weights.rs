//! Constant DequantizeLinear nodes (a QDQ model's int8 weights and int32
//! biases) folded into float constants with tract's exact arithmetic,
//! before tract analyses the model.
//!
//! Tract folds these nodes itself while analysing a model, through generic
//! broadcasting kernels: on ppocr_rec that took 0.3 s per load, more than
//! running eight samples. [`dequantized_constants`] computes the same
//! values — `(q − zp) · scale`, the subtraction in integers for a
//! per-tensor scale and in f32 for a per-axis one, one f32 rounding of the
//! product, as tract 0.23.9's `DequantizeLinearF32` and per-axis expansion
//! do — and [`substitute`] puts them in place of the nodes' outputs in
//! tract's inference model, which then drops the integer tensors unread.
//! The model keeps its int8 weights all the way into tract, so no float
//! copy of them goes through protobuf encoding. Only validation asks for it
//! ([`super::RunOptions::fold_weight_dequantize`]); `tests/quantize.rs`
//! checks the outputs are bit-identical to tract's own folding.

use tract_onnx::prelude::{
    tract_ndarray, InferenceModel, IntoTensor, OutletId, Tensor, TractResult,
};
use tract_onnx::tract_core::model::SpecialOps;
use tract_onnx::tract_hir::infer::InferenceModelPatch;

use crate::ir::{Model, Tensor as IrTensor};
use crate::proto::tensor_proto::DataType;

/// The float32 initializers of `model` named in `names`, as tract tensors
/// (one copy, from the model's bytes).
pub fn float_constants(model: &Model, names: &[String]) -> Vec<(String, Tensor)> {
    let g = &model.graph;
    names
        .iter()
        .filter_map(|name| {
            let t = g.constant(g.lookup(name)?)?;
            Some((name.clone(), t.to_f32().ok()?.into_tensor()))
        })
        .collect()
}

/// For every DequantizeLinear of `model` whose inputs are all constants:
/// its output's name and the float tensor it computes.
pub fn dequantized_constants(model: &Model) -> Vec<(String, Tensor)> {
    let g = &model.graph;
    let mut out = Vec::new();
    for n in g.ops() {
        let node = g.node(n);
        if !node.is("DequantizeLinear") || !node.domain().is_empty() {
            continue;
        }
        let ins: Vec<Option<&IrTensor>> = (0..node.inputs().len())
            .map(|i| node.input(i).and_then(|v| g.constant(v)))
            .collect();
        let (Some(Some(x)), Some(Some(scale))) = (ins.first(), ins.get(1)) else {
            continue;
        };
        let zp = match ins.get(2) {
            Some(Some(z)) => Some(*z),
            Some(None) => continue,
            None => None,
        };
        if let Some(t) = dequantize(x, scale, zp, node.attr_i("axis").unwrap_or(1)) {
            out.push((g.name(node.output()).to_string(), t));
        }
    }
    out
}

/// `DequantizeLinear(x, scale, zp)` on constants, with tract's arithmetic;
/// `None` for types tract would not fold either (tract then reports the
/// node when it loads the model). Reads the integers straight from the raw
/// bytes: on MiniLM these are 17M weights, and every extra copy is fresh
/// memory.
fn dequantize(x: &IrTensor, scale: &IrTensor, zp: Option<&IrTensor>, axis: i64) -> Option<Tensor> {
    let int = [
        DataType::Int8 as i32,
        DataType::Uint8 as i32,
        DataType::Int32 as i32,
    ];
    if !int.contains(&x.dtype()) || scale.dtype() != DataType::Float as i32 {
        return None;
    }
    let s: Vec<f32> = scale.to_f32().ok()?.iter().copied().collect();
    let z: Vec<i64> = match zp {
        Some(z) if int.contains(&z.dtype()) => z.to_i64().ok()?,
        Some(_) => return None,
        None => vec![0],
    };
    let raw = x.raw_bytes().ok()?;
    let n = x.checked_len().ok()?;
    let dtype = x.dtype();
    let width = if dtype == DataType::Int32 as i32 {
        4
    } else {
        1
    };
    if raw.len() != n * width {
        return None;
    }
    let at = |i: usize| -> i32 {
        match dtype {
            d if d == DataType::Int8 as i32 => raw[i] as i8 as i32,
            d if d == DataType::Uint8 as i32 => raw[i] as i32,
            _ => i32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        }
    };
    let dims: Vec<usize> = x.dims().iter().map(|&d| d as usize).collect();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    if s.len() == 1 && z.len() == 1 {
        // Tract's per-tensor DequantizeLinearF32: integer subtraction.
        let (sc, zc) = (s[0], z[0] as i32);
        out.extend((0..n).map(|i| at(i).wrapping_sub(zc) as f32 * sc));
    } else {
        // Tract's per-axis expansion: cast, subtract, multiply, in f32.
        let r = dims.len() as i64;
        let ax = if axis < 0 { axis + r } else { axis };
        if ax < 0 || ax >= r {
            return None;
        }
        let (outer, channels, inner) = crate::ir::types::split_axis(&dims, Some(ax as usize));
        if (s.len() != 1 && s.len() != channels) || (z.len() != 1 && z.len() != channels) {
            return None;
        }
        for o in 0..outer {
            for c in 0..channels {
                let sc = if s.len() == 1 { s[0] } else { s[c] };
                let zc = (if z.len() == 1 { z[0] } else { z[c] }) as f32;
                let base = (o * channels + c) * inner;
                out.extend((base..base + inner).map(|i| (at(i) as f32 - zc) * sc));
            }
        }
    }
    tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(&dims), out)
        .ok()
        .map(|a| a.into_tensor())
}

/// Puts each `(name, tensor)` in place of the outlet tract names `name`,
/// then drops what no output needs any more (the integer weights and the
/// DequantizeLinear nodes), so tract never analyses them. Returns how many
/// outlets were replaced.
pub fn substitute(im: &mut InferenceModel, consts: Vec<(String, Tensor)>) -> TractResult<usize> {
    let mut patch = InferenceModelPatch::default();
    let mut n = 0;
    for (name, t) in consts {
        // Node outputs carry their ONNX names as labels; graph inputs are
        // named nodes.
        let outlet = im
            .find_outlet_label(&name)
            .or_else(|| im.node_by_name(&name).ok().map(|n| OutletId::new(n.id, 0)));
        let Some(outlet) = outlet else {
            continue;
        };
        let c: OutletId = patch.add_const(format!("{name}.folded"), t)?;
        patch.shunt_outside(im, outlet, c)?;
        n += 1;
    }
    if n > 0 {
        patch.apply(im)?;
        im.compact()?;
    }
    Ok(n)
}
