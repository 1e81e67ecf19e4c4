//! Quantization arithmetic: clip ranges from statistics, scales and zero
//! points, rounding and packing of weights and biases.
//!
//! Conventions follow ONNX `QuantizeLinear`: `q = saturate(round(x / s) + zp)`
//! with round-half-to-even, and `x ≈ (q - zp) · s`.

pub mod blockwise;
pub mod codebook;
pub mod gptq;
pub mod params;
pub mod range;

use serde::{Deserialize, Serialize};

/// Integer type of a quantized tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    U8,
    S8,
    /// 16-bit activations (opset 21): for accuracy and for NPU targets
    /// (A16W8); no CPU runtime has integer kernels for them.
    U16,
    S16,
}

impl QType {
    /// ONNX data type code.
    pub fn onnx(self) -> i32 {
        match self {
            QType::U8 => crate::proto::tensor_proto::DataType::Uint8 as i32,
            QType::S8 => crate::proto::tensor_proto::DataType::Int8 as i32,
            QType::U16 => crate::proto::tensor_proto::DataType::Uint16 as i32,
            QType::S16 => crate::proto::tensor_proto::DataType::Int16 as i32,
        }
    }

    /// 16-bit codes (Q/DQ of these need opset 21).
    pub fn is_wide(self) -> bool {
        matches!(self, QType::U16 | QType::S16)
    }

    /// The 8-bit type of the same signedness.
    pub fn narrow(self) -> QType {
        if self.is_signed() {
            QType::S8
        } else {
            QType::U8
        }
    }

    /// Signed codes.
    pub fn is_signed(self) -> bool {
        matches!(self, QType::S8 | QType::S16)
    }

    /// The option spelling (`u8`, `s8`, `u16`, `s16`).
    pub fn name(self) -> &'static str {
        match self {
            QType::U8 => "u8",
            QType::S8 => "s8",
            QType::U16 => "u16",
            QType::S16 => "s16",
        }
    }

    /// Representable integer range, optionally reduced to 7 bits (for
    /// runtimes whose int8 kernels can overflow on 8-bit operands), and with
    /// -128 dropped for symmetric signed tensors so that +x and -x quantize
    /// to opposite values. 16-bit types have no reduced range (no runtime
    /// has integer kernels for them to overflow).
    pub fn bounds(self, symmetric: bool, reduce_range: bool) -> (i32, i32) {
        match (self, reduce_range) {
            (QType::U8, false) => (0, 255),
            (QType::U8, true) => (0, 127),
            (QType::S8, false) => (if symmetric { -127 } else { -128 }, 127),
            (QType::S8, true) => (if symmetric { -63 } else { -64 }, 63),
            (QType::U16, _) => (0, 65535),
            (QType::S16, _) => (if symmetric { -32767 } else { -32768 }, 32767),
        }
    }

    pub fn parse(s: &str) -> Option<QType> {
        match s {
            "u8" | "uint8" => Some(QType::U8),
            "s8" | "i8" | "int8" => Some(QType::S8),
            "u16" | "uint16" => Some(QType::U16),
            "s16" | "i16" | "int16" => Some(QType::S16),
            _ => None,
        }
    }
}

/// Scale and zero point of one tensor (or one channel).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    pub scale: f32,
    pub zero_point: i32,
}

/// Scale below which a range is treated as empty: smaller scales would make
/// `x / scale` overflow or lose all precision.
const MIN_RANGE: f64 = 1e-30;

/// Scale and zero point covering `[lo, hi]` (widened to include 0, so zero
/// padding is exact). A zero or degenerate range gives scale 1, never
/// inf or NaN.
pub fn affine_for_range(
    lo: f64,
    hi: f64,
    qt: QType,
    symmetric: bool,
    reduce_range: bool,
) -> Affine {
    let (qmin, qmax) = qt.bounds(symmetric, reduce_range);
    let lo = if lo.is_finite() { lo.min(0.0) } else { 0.0 };
    let hi = if hi.is_finite() { hi.max(0.0) } else { 0.0 };
    if symmetric {
        let amax = lo.abs().max(hi.abs());
        let half = ((qmax - qmin) as f64) / 2.0;
        let scale = if amax < MIN_RANGE { 1.0 } else { amax / half };
        // Symmetric unsigned centres on 128 / 32768 (a signed range stored
        // unsigned).
        let zp = if qt.is_signed() {
            0
        } else {
            (qmin + qmax + 1) / 2
        };
        return Affine {
            scale: scale as f32,
            zero_point: zp,
        };
    }
    if hi - lo < MIN_RANGE {
        let zp = if qt.is_signed() { 0 } else { qmin };
        return Affine {
            scale: 1.0,
            zero_point: zp,
        };
    }
    let scale = (hi - lo) / (qmax - qmin) as f64;
    let scale32 = scale as f32;
    let zp = (qmin as f64 - lo / scale32 as f64)
        .round_ties_even()
        .clamp(qmin as f64, qmax as f64) as i32;
    Affine {
        scale: scale32,
        zero_point: zp,
    }
}

/// The powers of two at or next below and above `s` (both `s` when it is
/// one; 1 for a scale that is not a positive normal number).
pub fn pow2_around(s: f32) -> (f32, f32) {
    if !(s.is_normal() && s > 0.0) {
        return (1.0, 1.0);
    }
    // The exponent field: `s` with its mantissa cleared is the power of
    // two below it, exactly.
    let down = f32::from_bits(s.to_bits() & 0xff80_0000);
    if down == s {
        (s, s)
    } else {
        (down, down * 2.0)
    }
}

/// Whether `s` is a (normal, positive) power of two.
pub fn is_pow2(s: f32) -> bool {
    s.is_normal() && s > 0.0 && s.to_bits() & 0x007f_ffff == 0
}

/// Quantizes one value: `clamp(round_half_even(x / scale) + zp)`.
///
/// The rounding adds and subtracts 1.5·2²³, which rounds half to even in
/// the FPU's default mode for every |v| ≤ 2²²; values are clamped into that
/// range first (they saturate anyway). Unlike `f32::round_ties_even`, which
/// baseline x86-64 turns into a libm call per value, this vectorizes: the
/// weights of a 17M-parameter model are quantized in a few milliseconds.
#[inline]
pub fn quantize(x: f32, a: Affine, qmin: i32, qmax: i32) -> i32 {
    debug_assert!(
        qmin > -(1 << 22) && qmax < (1 << 22),
        "8- and 16-bit types only"
    );
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    const LIMIT: f32 = 4_194_304.0; // 2^22
    let v = (x / a.scale).clamp(-LIMIT, LIMIT);
    let r = (v + MAGIC) - MAGIC;
    // NaN stays NaN through the clamp and the rounding; `as` maps it to 0.
    (r as i32).saturating_add(a.zero_point).clamp(qmin, qmax)
}

#[inline]
pub fn dequantize(q: i32, a: Affine) -> f32 {
    (q - a.zero_point) as f32 * a.scale
}

/// Per-channel symmetric weight quantization along `axis`: one scale per
/// slice, from the largest magnitude in it (or from `clip` if given).
pub struct WeightQuant {
    pub scales: Vec<f32>,
    pub q: Vec<i8>,
}

/// Largest finite magnitude per index of `axis` (`None`: whole tensor).
pub fn channel_amax(w: &[f32], dims: &[usize], axis: Option<usize>) -> Vec<f32> {
    let (outer, channels, inner) = split_axis(dims, axis);
    let mut amax = vec![0f32; channels];
    let finite_abs = |x: f32| if x.is_finite() { x.abs() } else { 0.0 };
    if inner == 1 {
        // Channels last (MatMul weights): whole rows at a time, so the loop
        // runs along the channels and vectorizes.
        for row in w.chunks_exact(channels.max(1)) {
            for (m, &x) in amax.iter_mut().zip(row) {
                let a = finite_abs(x);
                *m = if a > *m { a } else { *m };
            }
        }
        return amax;
    }
    for o in 0..outer {
        for (c, m) in amax.iter_mut().enumerate() {
            let base = (o * channels + c) * inner;
            for &x in &w[base..base + inner] {
                if x.is_finite() {
                    *m = m.max(x.abs());
                }
            }
        }
    }
    amax
}

/// Quantizes `w` (shape `dims`, row-major) symmetrically to int8 with one
/// scale per index of `axis` (`None`: one scale for the whole tensor).
pub fn quantize_weights(
    w: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    reduce_range: bool,
) -> WeightQuant {
    let (qmin, qmax) = QType::S8.bounds(true, reduce_range);
    let scales: Vec<f32> = channel_amax(w, dims, axis)
        .iter()
        .map(|&a| affine_for_range(-(a as f64), a as f64, QType::S8, true, reduce_range).scale)
        .collect();
    let q = requantize(w, dims, axis, &scales, 0, qmin, qmax)
        .into_iter()
        .map(|x| x as i8)
        .collect();
    WeightQuant { scales, q }
}

/// Quantizes weights with given per-channel scales and a common zero point,
/// to 8-bit codes as raw bytes (two's complement for a signed type): the
/// initializer's `raw_data` as is, with no wider intermediate.
pub fn requantize(
    w: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    scales: &[f32],
    zp: i32,
    qmin: i32,
    qmax: i32,
) -> Vec<u8> {
    let (outer, channels, inner) = split_axis(dims, axis);
    let mut q = vec![0u8; w.len()];
    if inner == 1 && scales.len() >= channels {
        // Channels last: row by row, lane by channel (see `channel_amax`).
        for (qrow, row) in q
            .chunks_exact_mut(channels.max(1))
            .zip(w.chunks_exact(channels.max(1)))
        {
            for ((qi, &x), &scale) in qrow.iter_mut().zip(row).zip(scales) {
                let a = Affine {
                    scale,
                    zero_point: zp,
                };
                *qi = quantize(x, a, qmin, qmax) as u8;
            }
        }
        return q;
    }
    for o in 0..outer {
        for (c, &scale) in scales.iter().enumerate().take(channels) {
            let a = Affine {
                scale,
                zero_point: zp,
            };
            let base = (o * channels + c) * inner;
            for (qi, &x) in q[base..base + inner].iter_mut().zip(&w[base..base + inner]) {
                *qi = quantize(x, a, qmin, qmax) as u8;
            }
        }
    }
    q
}

pub use crate::ir::types::split_axis;

/// Bias quantized to int32 with scale `s_in · s_w[c]`. Where a value would
/// overflow int32, the weight scale of that channel must be widened: the
/// returned `widen` lists `(channel, new_weight_scale)`.
pub struct BiasQuant {
    pub q: Vec<i32>,
    pub scales: Vec<f32>,
    pub widen: Vec<(usize, f32)>,
}

pub fn quantize_bias(b: &[f32], s_in: f32, s_w: &[f32]) -> BiasQuant {
    let per_channel = s_w.len() == b.len();
    let limit = i32::MAX as f64 - 1.0;
    let mut q = Vec::with_capacity(b.len());
    let mut scales = Vec::with_capacity(b.len());
    let mut widen = Vec::new();
    for (c, &x) in b.iter().enumerate() {
        let sw = if per_channel { s_w[c] } else { s_w[0] };
        let mut s = s_in as f64 * sw as f64;
        if s <= 0.0 || !s.is_finite() {
            s = 1.0;
        }
        if (x as f64 / s).abs() > limit && per_channel {
            // Widen the weight scale just enough (plus a margin) that the
            // bias fits; clipping the bias instead would shift every output
            // of the channel.
            let new_sw = (x as f64).abs() / (s_in as f64 * limit) * 1.01;
            widen.push((c, new_sw as f32));
            s = s_in as f64 * (new_sw as f32) as f64;
        }
        let s32 = s as f32;
        let v = (x as f64 / s32 as f64)
            .round_ties_even()
            .clamp(-limit, limit) as i32;
        q.push(v);
        scales.push(s32);
    }
    BiasQuant { q, scales, widen }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_range_gives_finite_scale() {
        for qt in [QType::U8, QType::S8] {
            for sym in [false, true] {
                let a = affine_for_range(0.0, 0.0, qt, sym, false);
                assert!(a.scale.is_finite() && a.scale > 0.0);
                let a = affine_for_range(1e-40, 1e-40, qt, sym, false);
                assert!(a.scale.is_finite() && a.scale > 0.0);
            }
        }
    }

    /// 16-bit types: the full code range, unsigned symmetric centred on
    /// 32768, and 256 times finer steps than 8 bits over the same range.
    #[test]
    fn sixteen_bit_types_cover_their_codes() {
        assert_eq!(QType::U16.bounds(false, true), (0, 65535));
        assert_eq!(QType::S16.bounds(true, false), (-32767, 32767));
        assert_eq!(QType::parse("int16"), Some(QType::S16));
        assert_eq!(QType::U16.narrow(), QType::U8);
        let u = affine_for_range(-1.0, 1.0, QType::U16, true, false);
        assert_eq!(u.zero_point, 32768);
        let a8 = affine_for_range(-0.5, 3.0, QType::U8, false, false);
        let a16 = affine_for_range(-0.5, 3.0, QType::U16, false, false);
        let ratio = a8.scale / a16.scale;
        assert!((ratio - 65535.0 / 255.0).abs() < 1e-3, "{ratio}");
        let q = quantize(0.0, a16, 0, 65535);
        assert_eq!(dequantize(q, a16), 0.0);
        // Widening keeps the observed range whole and the signedness.
        let p = params::ActParams {
            qtype: QType::S8,
            affine: affine_for_range(-2.0, 2.0, QType::S8, true, false),
            clip: (-1.0, 1.0),
            observed: (-2.0, 1.5),
        };
        let w = p.widened();
        assert_eq!(w.qtype, QType::S16);
        assert_eq!(w.affine.zero_point, 0);
        assert_eq!(w.clip, (-2.0, 1.5));
        assert!((w.affine.scale - 2.0 / 32767.0).abs() < 1e-9);
    }

    #[test]
    fn asymmetric_u8_represents_zero_exactly() {
        let a = affine_for_range(-0.3, 5.1, QType::U8, false, false);
        let q = quantize(0.0, a, 0, 255);
        assert_eq!(dequantize(q, a), 0.0);
        // Ties go to even, and the fast rounding agrees with the library's
        // everywhere, saturation and NaN included.
        let unit = Affine {
            scale: 1.0,
            zero_point: 0,
        };
        for (x, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (126.5, 126),
        ] {
            assert_eq!(quantize(x, unit, -128, 127), want, "{x}");
        }
        let reference = |x: f32, a: Affine, lo: i32, hi: i32| {
            ((x / a.scale).round_ties_even() as i64 + a.zero_point as i64)
                .clamp(lo as i64, hi as i64) as i32
        };
        let b = Affine {
            scale: 0.0371,
            zero_point: 3,
        };
        for i in -20000..20000 {
            let x = i as f32 * 0.000_913 * (1 + (i & 7)) as f32;
            assert_eq!(quantize(x, b, -128, 127), reference(x, b, -128, 127), "{x}");
            assert_eq!(quantize(x, b, 0, 255), reference(x, b, 0, 255), "{x}");
        }
        // Out of range saturates, and NaN lands on the zero point.
        for (x, want) in [
            (f32::INFINITY, 127),
            (1e30, 127),
            (f32::NEG_INFINITY, -128),
            (-1e30, -128),
            (f32::NAN, 3),
        ] {
            assert_eq!(quantize(x, b, -128, 127), want, "{x}");
        }
        assert!((dequantize(quantize(5.1, a, 0, 255), a) - 5.1).abs() <= a.scale);
    }

    #[test]
    fn per_channel_weights_use_own_scale() {
        let w = [1.0, -2.0, 0.5, 0.01, 0.02, -0.04];
        let wq = quantize_weights(&w, &[2, 3], Some(0), false);
        assert_eq!(wq.scales.len(), 2);
        assert!((wq.scales[0] - 2.0 / 127.0).abs() < 1e-9);
        assert_eq!(wq.q[1], -127);
        assert_eq!(wq.q[5], -127);
    }

    #[test]
    fn bias_overflow_widens_weight_scale() {
        let bq = quantize_bias(&[1e6, 0.5], 1e-4, &[1e-6, 1e-2]);
        assert_eq!(bq.widen.len(), 1);
        assert_eq!(bq.widen[0].0, 0);
        assert!(bq.q[0].unsigned_abs() < i32::MAX as u32);
        let back = bq.q[0] as f64 * bq.scales[0] as f64;
        assert!((back - 1e6).abs() / 1e6 < 1e-6);
    }
}
