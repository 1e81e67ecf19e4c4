//! Weight-only quantization of a `[K, N]` weight (a MatMul's right-hand
//! side): int8 or int4 codes in blocks of `block` consecutive values along
//! K in each column, or one block per column (per channel), each block with
//! its own scale and, when asymmetric, zero point.
//!
//! Each block's range is clipped where that lowers the block's squared
//! rounding error: the candidates shrink the block's range by up to
//! [`CLIP_STEPS`]·2.5%, as the clip searches of AWQ (Lin et al., MLSys 2024)
//! and onnxruntime's 4-bit quantizer do. A weight's largest values then
//! saturate a little, and every other value gets a finer grid.
//!
//! With calibration data the codes can instead be chosen by GPTQ
//! ([`super::gptq`]) on the grids chosen here ("static groups": the grids
//! are fixed before rounding starts, so act-order stays possible).

use super::gptq::Grid;
use super::{dequantize, quantize, Affine};

/// Clip candidates per block: range × (1 − 0.025·i) for i < CLIP_STEPS.
pub const CLIP_STEPS: usize = 20;

/// How a weight is quantized.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// 4 or 8.
    pub bits: u32,
    /// Values per block along K; 0: one block per column.
    pub block: usize,
    /// Signed codes with zero point 0; otherwise unsigned codes and a zero
    /// point per block.
    pub symmetric: bool,
}

impl Spec {
    /// The codes' range.
    pub fn bounds(&self) -> (i32, i32) {
        let b = self.bits as i32;
        if self.symmetric {
            (-(1 << (b - 1)), (1 << (b - 1)) - 1)
        } else {
            (0, (1 << b) - 1)
        }
    }

    /// Values per block for a weight of `k` rows.
    pub fn block_len(&self, k: usize) -> usize {
        if self.block == 0 {
            k.max(1)
        } else {
            self.block
        }
    }

    /// Blocks per column for a weight of `k` rows.
    pub fn blocks(&self, k: usize) -> usize {
        k.div_ceil(self.block_len(k)).max(1)
    }
}

/// A quantized `[K, N]` weight.
#[derive(Clone, Debug)]
pub struct Blocked {
    pub k: usize,
    pub n: usize,
    pub spec: Spec,
    /// `[K, N]`, row-major like the weight.
    pub codes: Vec<i32>,
    /// `[blocks, N]`: the grid of rows `b·block .. (b+1)·block` of column `c`
    /// at `b·N + c`.
    pub grids: Vec<Grid>,
}

impl Blocked {
    /// The grid of weight `(r, c)`.
    pub fn grid(&self, r: usize, c: usize) -> &Grid {
        &self.grids[(r / self.spec.block_len(self.k)) * self.n + c]
    }

    /// The dequantized weight, `[K, N]`, computed as onnxruntime's
    /// DequantizeLinear does: `(q − zp) · scale` in f32.
    pub fn dequantized(&self) -> Vec<f32> {
        (0..self.k * self.n)
            .map(|i| {
                let g = self.grid(i / self.n, i % self.n);
                dequantize(self.codes[i], affine(g))
            })
            .collect()
    }

    /// `Σ (w − deq(q))²` over the weight.
    pub fn squared_error(&self, w: &[f32]) -> f64 {
        self.dequantized()
            .iter()
            .zip(w)
            .map(|(&d, &x)| ((x - d) as f64).powi(2))
            .sum()
    }
}

fn affine(g: &Grid) -> Affine {
    Affine {
        scale: g.scale,
        zero_point: g.zero_point,
    }
}

/// The grid of one block for its values `v`, with its range × `alpha`.
fn block_grid(v: &[f32], spec: Spec, alpha: f32) -> Grid {
    let (lo, hi) = spec.bounds();
    let (mut mn, mut mx) = (0f32, 0f32);
    for &x in v {
        if x.is_finite() {
            mn = mn.min(x);
            mx = mx.max(x);
        }
    }
    let (mn, mx) = (mn * alpha, mx * alpha);
    if spec.symmetric {
        let amax = mn.abs().max(mx);
        let scale = if amax > 1e-30 { amax / hi as f32 } else { 1.0 };
        return Grid {
            scale,
            zero_point: 0,
            lo,
            hi,
        };
    }
    if mx - mn <= 1e-30 {
        return Grid {
            scale: 1.0,
            zero_point: 0,
            lo,
            hi,
        };
    }
    let scale = (mx - mn) / (hi - lo) as f32;
    let zp = (lo as f32 - mn / scale)
        .round_ties_even()
        .clamp(lo as f32, hi as f32) as i32;
    Grid {
        scale,
        zero_point: zp,
        lo,
        hi,
    }
}

fn block_error(v: &[f32], g: &Grid) -> f64 {
    let a = affine(g);
    v.iter()
        .map(|&x| {
            let d = x - dequantize(quantize(x, a, g.lo, g.hi), a);
            (d as f64) * (d as f64)
        })
        .sum()
}

/// Quantizes `w` (`[k, n]`, row-major) by `spec` with round-to-nearest, each
/// block's clip searched when `search`.
pub fn quantize_nearest(w: &[f32], k: usize, n: usize, spec: Spec, search: bool) -> Blocked {
    assert_eq!(w.len(), k * n, "invariant: w is k × n");
    let bl = spec.block_len(k);
    let nb = spec.blocks(k);
    let mut grids = Vec::with_capacity(nb * n);
    let mut v = Vec::with_capacity(bl);
    for b in 0..nb {
        let rows = b * bl..((b + 1) * bl).min(k);
        for c in 0..n {
            v.clear();
            v.extend(rows.clone().map(|r| w[r * n + c]));
            let mut best = block_grid(&v, spec, 1.0);
            if search {
                let mut best_err = block_error(&v, &best);
                for i in 1..CLIP_STEPS {
                    let g = block_grid(&v, spec, 1.0 - 0.025 * i as f32);
                    let e = block_error(&v, &g);
                    if e < best_err {
                        best = g;
                        best_err = e;
                    }
                }
            }
            grids.push(best);
        }
    }
    let mut out = Blocked {
        k,
        n,
        spec,
        codes: vec![0; k * n],
        grids,
    };
    for (i, &x) in w.iter().enumerate() {
        let g = *out.grid(i / n, i % n);
        out.codes[i] = quantize(x, affine(&g), g.lo, g.hi);
    }
    out
}

/// GPTQ codes for `w` on the grids of `nearest` (its round-to-nearest
/// quantization), for inputs of second moment `h` (`k × k`). Returns the
/// quantization with the learned codes and the output error energy of
/// nearest and of learned rounding; `None` when `h` carries no energy.
pub fn quantize_gptq(w: &[f32], nearest: &Blocked, h: &[f64]) -> Option<(Blocked, f64, f64)> {
    let (k, n) = (nearest.k, nearest.n);
    // GPTQ rounds rows of [N, K] (one output each).
    let mut t = vec![0f32; k * n];
    for r in 0..k {
        for c in 0..n {
            t[c * k + r] = w[r * n + c];
        }
    }
    let out = super::gptq::round(&t, n, k, h, |c, r| *nearest.grid(r, c))?;
    let mut codes = vec![0i32; k * n];
    for c in 0..n {
        for r in 0..k {
            codes[r * n + c] = out.codes[c * k + r];
        }
    }
    Some((
        Blocked {
            codes,
            ..nearest.clone()
        },
        out.nearest_error,
        out.error,
    ))
}

/// Packs 4-bit codes two per byte, the first in the low nibble (ONNX's
/// INT4/UINT4 layout); an odd count leaves the last high nibble 0.
pub fn pack4(codes: impl IntoIterator<Item = i32>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in codes.into_iter().enumerate() {
        let nib = (c & 0xf) as u8;
        if i % 2 == 0 {
            out.push(nib);
        } else {
            *out.last_mut().expect("invariant: pushed at even i") |= nib << 4;
        }
    }
    out
}

pub use crate::ir::tensor::unpack4;

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(k: usize, n: usize) -> Vec<f32> {
        // Deterministic values with one outlier per column.
        (0..k * n)
            .map(|i| {
                let x = ((i * 7919 % 1000) as f32 / 500.0) - 1.0;
                if i % (k * n / n.max(1) + 1) == 3 {
                    x * 6.0
                } else {
                    x
                }
            })
            .collect()
    }

    #[test]
    fn blocks_beat_channels_and_clip_search_beats_full_range() {
        let (k, n) = (128, 8);
        let w = weight(k, n);
        for symmetric in [false, true] {
            let s = |block| Spec {
                bits: 4,
                block,
                symmetric,
            };
            let chan = quantize_nearest(&w, k, n, s(0), false).squared_error(&w);
            let full = quantize_nearest(&w, k, n, s(32), false).squared_error(&w);
            let searched = quantize_nearest(&w, k, n, s(32), true).squared_error(&w);
            assert!(full < chan, "{symmetric}: blocks {full} vs channels {chan}");
            assert!(searched <= full, "{symmetric}: search {searched} vs {full}");
        }
    }

    #[test]
    fn codes_stay_in_range_and_round_trip_through_packing() {
        let (k, n) = (40, 3);
        let w = weight(k, n);
        for symmetric in [false, true] {
            let spec = Spec {
                bits: 4,
                block: 16,
                symmetric,
            };
            let q = quantize_nearest(&w, k, n, spec, true);
            let (lo, hi) = spec.bounds();
            assert!(q.codes.iter().all(|&c| (lo..=hi).contains(&c)));
            // 40 rows in blocks of 16: the last block has 8.
            assert_eq!(q.grids.len(), 3 * n);
            let packed = pack4(q.codes.iter().copied());
            assert_eq!(packed.len(), (k * n).div_ceil(2));
            assert_eq!(unpack4(&packed, k * n, symmetric), q.codes);
        }
    }

    #[test]
    fn gptq_lowers_the_output_error_on_correlated_inputs() {
        let (k, n) = (64, 4);
        let w = weight(k, n);
        // Inputs whose neighbours are strongly correlated.
        let mut h = vec![0f64; k * k];
        for i in 0..k {
            for j in 0..k {
                h[i * k + j] = 0.9f64.powi((i as i32 - j as i32).abs());
            }
        }
        let spec = Spec {
            bits: 4,
            block: 32,
            symmetric: false,
        };
        let near = quantize_nearest(&w, k, n, spec, true);
        let (learned, before, after) = quantize_gptq(&w, &near, &h).unwrap();
        assert!(after < before, "{after} vs {before}");
        assert_eq!(learned.grids.len(), near.grids.len());
    }
}
