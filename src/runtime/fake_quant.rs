//! Running a QDQ model's activation QuantizeLinear → DequantizeLinear pairs
//! as one vectorized element-wise op, with tract's exact arithmetic.
//!
//! Tract evaluates a QDQ graph in float: each activation pair quantizes to
//! u8/i8 and back. Its QuantizeLinear is a scalar loop with a branchy
//! round-half-to-even, and the pair makes an extra pass over the tensor; on
//! ppocr_det the pairs took 45% of a run. [`fuse`] rewrites, in tract's
//! typed model, every per-tensor pair whose quantized value has no other
//! reader into one [`FakeQuant`] node computing, per value,
//!
//! ```text
//! q = clamp(round_half_even(x · (1/scale)) + zp, lo, hi)     // tract's QuantizeLinear
//! y = (q − zp) · scale                                        // tract's DequantizeLinear
//! ```
//!
//! with the same f32 operations in the same order (tract multiplies by the
//! reciprocal it computed when loading, rounds like `tract_data`'s
//! `round_ties_to_even`, adds the zero point in wrapping i32), so outputs are
//! bit-identical — `tests/quantize.rs` checks it on a real model. Only
//! validation asks for it ([`super::RunOptions::fuse_qdq`]); running a file
//! with `onnxq run` uses tract's own ops.

use tract_onnx::prelude::{DatumType, OutletId, Tensor, TractResult, TypedModel};
use tract_onnx::tract_core::model::TypedModelPatch;
use tract_onnx::tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};

/// A quantize-dequantize round trip of f32 values (see the module docs).
#[derive(Clone, Debug)]
pub struct FakeQuant {
    /// What tract's QuantizeLinear multiplies by: `scale.recip()`.
    inv: f32,
    /// What tract's DequantizeLinear multiplies by.
    scale: f32,
    zero_point: i32,
    lo: i32,
    hi: i32,
}

impl PartialEq for FakeQuant {
    fn eq(&self, o: &Self) -> bool {
        self.inv.to_bits() == o.inv.to_bits()
            && self.scale.to_bits() == o.scale.to_bits()
            && (self.zero_point, self.lo, self.hi) == (o.zero_point, o.lo, o.hi)
    }
}

impl Eq for FakeQuant {}

impl FakeQuant {
    /// One value, exactly as tract's pair computes it.
    #[inline(always)]
    fn apply(&self, x: f32) -> f32 {
        let r = round_ties_to_even(x * self.inv);
        let q = (r as i32)
            .wrapping_add(self.zero_point)
            .clamp(self.lo, self.hi);
        (q - self.zero_point) as f32 * self.scale
    }
}

/// tract_data's `round_ties_to_even`, branch-free: below 2²³, adding and
/// removing 2²³ rounds half to even; at or above it (and for NaN) the value
/// is returned unchanged; the sign of a zero result is the input's.
#[inline(always)]
fn round_ties_to_even(v: f32) -> f32 {
    const TOINT: f32 = 8_388_608.0; // 2^23
    let a = v.abs();
    if a < TOINT {
        ((a + TOINT) - TOINT).copysign(v)
    } else {
        v
    }
}

/// Lanes of the vectorized loop.
const LANES: usize = 8;

impl FakeQuant {
    /// [`FakeQuant::apply`] for `v = x · inv` with |v| < 2³⁰ (not NaN): the
    /// zero point and the clamp can then be done in f32 (all integers
    /// involved are exact), avoiding the saturating float → int conversion
    /// that keeps the exact version scalar.
    #[inline(always)]
    fn apply_in_range(&self, v: f32) -> f32 {
        let r = round_ties_to_even(v);
        let (z, lo, hi) = (self.zero_point as f32, self.lo as f32, self.hi as f32);
        let q = r + z;
        let q = if q < lo { lo } else { q };
        let q = if q > hi { hi } else { q };
        (q - z) * self.scale
    }

    /// All values: eight at a time where every one is in range, else (NaN,
    /// or beyond 2³⁰ quantization steps) one by one, exactly.
    fn apply_all(&self, xs: &mut [f32]) {
        const LIMIT: f32 = 1_073_741_824.0; // 2^30
        let mut chunks = xs.chunks_exact_mut(LANES);
        for c in &mut chunks {
            let mut out = [0f32; LANES];
            let mut in_range = true;
            for i in 0..LANES {
                let v = c[i] * self.inv;
                in_range &= v.abs() < LIMIT;
                out[i] = self.apply_in_range(v);
            }
            if in_range {
                c.copy_from_slice(&out);
            } else {
                for x in c.iter_mut() {
                    *x = self.apply(*x);
                }
            }
        }
        for x in chunks.into_remainder() {
            *x = self.apply(*x);
        }
    }
}

impl ElementWiseMiniOp for FakeQuant {
    fn name(&self) -> String {
        "onnxq.FakeQuant".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {} zero_point: {} range: {}..={}",
            self.scale, self.zero_point, self.lo, self.hi
        )])
    }

    fn eval_in_place(&self, t: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        let mut plain = t.try_as_plain_ram_mut()?;
        self.apply_all(plain.as_slice_mut::<f32>()?);
        Ok(())
    }

    fn eval_out_of_place(&self, t: &Tensor, out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let mut t = t.clone();
        self.eval_in_place(&mut t, out_dt)?;
        Ok(t)
    }
}

/// The fused op for a tract QuantizeLinear node, if it is a per-tensor one.
fn quantize_params(model: &TypedModel, node: usize) -> Option<(f32, i32, i32, i32)> {
    let ew = model.node(node).op_as::<ElementWiseOp>()?;
    if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
        return Some((q.scale, q.zero_point as i32, u8::MIN as i32, u8::MAX as i32));
    }
    if let Some(q) = ew.0.downcast_ref::<QuantizeLinearI8>() {
        return Some((q.scale, q.zero_point as i32, i8::MIN as i32, i8::MAX as i32));
    }
    None
}

/// Replaces every per-tensor QuantizeLinear → DequantizeLinear pair of
/// `model` (the quantized value read by that one DequantizeLinear only, with
/// the same zero point) by a [`FakeQuant`]. Returns how many were fused.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut pairs = Vec::new();
    for q in model.eval_order()? {
        let Some((inv, zp, lo, hi)) = quantize_params(model, q) else {
            continue;
        };
        let succ = &model.node(q).outputs[0].successors;
        if succ.len() != 1 || model.output_outlets()?.contains(&OutletId::new(q, 0)) {
            continue;
        }
        let dq = succ[0].node;
        let Some(d) = model.node(dq).op_as::<DequantizeLinearF32>() else {
            continue;
        };
        if d.zero_point != zp {
            continue;
        }
        pairs.push((
            q,
            dq,
            FakeQuant {
                inv,
                scale: d.scale,
                zero_point: zp,
                lo,
                hi,
            },
        ));
    }
    let n = pairs.len();
    for (q, dq, op) in pairs {
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, model.node(q).inputs[0])?;
        let name = format!("{}.fake_quant", model.node(dq).name);
        let y = patch.wire_node(name, ElementWiseOp(Box::new(op), None), &[x])?;
        patch.shunt_outside(model, OutletId::new(dq, 0), y[0])?;
        patch.apply(model)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tract's QuantizeLinear then DequantizeLinear, written out from
    /// tract-core 0.23.9 (`quantize_linear_f32_u8`, `DequantizeLinearF32`).
    fn tract_pair(x: f32, inv: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> f32 {
        let v = x * inv;
        let r = {
            let u = v.to_bits();
            let e = (u >> 23) & 0xff;
            if e >= 0x7f + 23 {
                v
            } else {
                let toint = 1.0 / f32::EPSILON;
                let y = if u >> 31 == 1 {
                    v - toint + toint
                } else {
                    v + toint - toint
                };
                if y == 0.0 {
                    if u >> 31 == 1 {
                        -0.0
                    } else {
                        0.0
                    }
                } else {
                    y
                }
            }
        };
        let q = ((r as i32).wrapping_add(zp)).clamp(lo, hi);
        (q - zp) as f32 * scale
    }

    #[test]
    fn vector_path_matches_tract_bit_for_bit() {
        let scale = 0.0173f32;
        let op = FakeQuant {
            inv: scale.recip(),
            scale,
            zero_point: 37,
            lo: 0,
            hi: 255,
        };
        let mut xs: Vec<f32> = (-5000..5000)
            .map(|i| i as f32 * 0.000_913 * (1 + (i & 3)) as f32)
            .collect();
        // Exact ties, extremes and NaN, in and out of whole chunks.
        xs.extend([
            0.5 * scale,
            1.5 * scale,
            -2.5 * scale,
            1e12,
            -1e12,
            f32::NAN,
            f32::INFINITY,
            3e9,
        ]);
        let want: Vec<u32> = xs
            .iter()
            .map(|&x| tract_pair(x, op.inv, scale, 37, 0, 255).to_bits())
            .collect();
        let mut got = xs.clone();
        op.apply_all(&mut got);
        let got: Vec<u32> = got.iter().map(|y| y.to_bits()).collect();
        assert_eq!(got, want);
        let scalar: Vec<u32> = xs.iter().map(|&x| op.apply(x).to_bits()).collect();
        assert_eq!(scalar, want);
    }
}
