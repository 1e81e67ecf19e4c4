//! Learned weight rounding, closed form: GPTQ (Frantar, Ashkboos, Hoefler,
//! Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers", ICLR 2023), the one-pass successor of
//! Optimal Brain Quantization and of AdaRound's learned up-or-down
//! rounding (Nagel et al., ICML 2020).
//!
//! A layer computes `y = W·x`. Rounding each weight to its nearest code
//! minimises the weight error, not the output error
//! `E‖(W − Q)·x‖² = tr((W − Q)·H·(W − Q)ᵀ)` with `H = E[x·xᵀ]` over the
//! inputs the layer sees. GPTQ rounds one input column at a time and
//! moves what that column's rounding broke onto the columns not yet
//! rounded, weighted by the inverse of `H`: the optimal update when the
//! rest may still change (the Optimal Brain Surgeon step). Columns go in
//! order of decreasing `H` diagonal (the inputs with most energy first:
//! "act order"), and `H` is damped by 1% of its mean diagonal so that an
//! input seen on few samples does not make the inverse explode.
//!
//! The scales stay what round-to-nearest would use (the channel's largest
//! magnitude on the grid's end): only the codes change, so a file rounded
//! this way has the same form and size.

use super::{dequantize, quantize, Affine};

/// Fraction of the mean diagonal added to `H`'s diagonal.
pub const DAMP: f64 = 0.01;

/// The integer grid of one row (or block of a row): scale, zero point and the codes it may use.
#[derive(Copy, Clone, Debug)]
pub struct Grid {
    pub scale: f32,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}

impl Grid {
    fn code(&self, x: f64) -> i32 {
        quantize(x as f32, self.affine(), self.lo, self.hi)
    }

    fn value(&self, q: i32) -> f64 {
        dequantize(q, self.affine()) as f64
    }

    fn affine(&self) -> Affine {
        Affine {
            scale: self.scale,
            zero_point: self.zero_point,
        }
    }
}

/// The rounding of one weight matrix.
pub struct Rounded {
    /// The codes, row-major like the weights.
    pub codes: Vec<i32>,
    /// `tr((W − Q)·H·(W − Q)ᵀ)` with nearest rounding and with these codes
    /// (undamped `H`): the output error energy each causes on the inputs
    /// `H` was measured on.
    pub nearest_error: f64,
    pub error: f64,
}

/// Rounds `w` (`rows × k`, row-major; weight `(r, c)` on grid `grid(r, c)`:
/// one per row, or per block of columns, fixed before rounding) for
/// inputs of second moment `h` (`k × k`, row-major, symmetric). `None`
/// when `h` is not positive definite even damped (no input energy at all).
pub fn round(
    w: &[f32],
    rows: usize,
    k: usize,
    h: &[f64],
    grid: impl Fn(usize, usize) -> Grid,
) -> Option<Rounded> {
    assert_eq!(w.len(), rows * k, "invariant: w is rows × k");
    assert_eq!(h.len(), k * k, "invariant: h is k × k");
    let diag: Vec<f64> = (0..k).map(|i| h[i * k + i]).collect();
    let mean = diag.iter().sum::<f64>() / k.max(1) as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        return None;
    }
    // Act order: columns by decreasing input energy (ties by index).
    let mut perm: Vec<usize> = (0..k).collect();
    perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]).then(a.cmp(&b)));
    let mut hp = vec![0f64; k * k];
    for (i, &pi) in perm.iter().enumerate() {
        for (j, &pj) in perm.iter().enumerate() {
            hp[i * k + j] = h[pi * k + pj];
        }
        // An input never seen (all zeros) leaves its column free: any
        // value there costs nothing.
        if hp[i * k + i] <= 0.0 {
            hp[i * k + i] = mean;
        }
        hp[i * k + i] += DAMP * mean;
    }
    let u = inverse_upper_cholesky(&hp, k)?;
    let mut codes = vec![0i32; rows * k];
    let mut row = vec![0f64; k];
    for r in 0..rows {
        for (i, &pi) in perm.iter().enumerate() {
            row[i] = w[r * k + pi] as f64;
        }
        for i in 0..k {
            let q = grid(r, perm[i]).code(row[i]);
            codes[r * k + perm[i]] = q;
            let e = (row[i] - grid(r, perm[i]).value(q)) / u[i * k + i];
            let ui = &u[i * k..(i + 1) * k];
            for j in i + 1..k {
                row[j] -= e * ui[j];
            }
        }
    }
    let nearest: Vec<i32> = (0..rows * k)
        .map(|i| grid(i / k.max(1), i % k.max(1)).code(w[i] as f64))
        .collect();
    let err = |c: &[i32]| -> f64 {
        let mut total = 0.0;
        let mut d = vec![0f64; k];
        for r in 0..rows {
            for i in 0..k {
                d[i] = w[r * k + i] as f64 - grid(r, i).value(c[r * k + i]);
            }
            for i in 0..k {
                if d[i] == 0.0 {
                    continue;
                }
                let hi = &h[i * k..(i + 1) * k];
                let s: f64 = hi.iter().zip(&d).map(|(a, b)| a * b).sum();
                total += d[i] * s;
            }
        }
        total
    };
    Some(Rounded {
        nearest_error: err(&nearest),
        error: err(&codes),
        codes,
    })
}

/// The upper Cholesky factor `U` of `A⁻¹` (`A⁻¹ = Uᵀ·U`) for symmetric
/// positive definite `a` (`k × k`, row-major); `None` when `a` is not.
fn inverse_upper_cholesky(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, k)?;
    // L⁻¹, lower triangular, by forward substitution column by column;
    // column c is kept contiguous (`lt[c·k + t]` = L⁻¹ₜ꜀) so the inner sum
    // runs along rows of L and of the column alike.
    let mut lt = vec![0f64; k * k];
    for c in 0..k {
        let col = &mut lt[c * k..(c + 1) * k];
        col[c] = 1.0 / l[c * k + c];
        for r in c + 1..k {
            let lr = &l[r * k + c..r * k + r];
            let s: f64 = lr.iter().zip(&col[c..r]).map(|(a, b)| a * b).sum();
            col[r] = -s / l[r * k + r];
        }
    }
    let mut li = vec![0f64; k * k];
    for c in 0..k {
        for r in c..k {
            li[r * k + c] = lt[c * k + r];
        }
    }
    // A⁻¹ = L⁻ᵀ·L⁻¹: (A⁻¹)ᵢⱼ = Σ_{t ≥ max(i,j)} L⁻¹ₜᵢ·L⁻¹ₜⱼ.
    let mut inv = vec![0f64; k * k];
    for t in 0..k {
        let lt = &li[t * k..t * k + t + 1];
        for i in 0..=t {
            let a = lt[i];
            if a == 0.0 {
                continue;
            }
            let row = &mut inv[i * k..i * k + i + 1];
            for (j, x) in row.iter_mut().enumerate() {
                *x += a * lt[j];
            }
        }
    }
    for i in 0..k {
        for j in 0..i {
            inv[j * k + i] = inv[i * k + j];
        }
    }
    let l2 = cholesky(&inv, k)?;
    // U = L2ᵀ.
    let mut u = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            u[j * k + i] = l2[i * k + j];
        }
    }
    Some(u)
}

/// Solves `A X = B` for symmetric positive definite `A` (`k × k`, row
/// major) and `B` (`k × cols`, row major, overwritten by `X`) through its
/// Cholesky factor; `None` when `A` is not positive definite.
pub fn solve_spd(a: &[f64], k: usize, b: &mut [f64], cols: usize) -> Option<()> {
    let l = cholesky(a, k)?;
    for c in 0..cols {
        // L y = b, then Lᵀ x = y, column by column.
        for i in 0..k {
            let s: f64 = (0..i).map(|j| l[i * k + j] * b[j * cols + c]).sum();
            b[i * cols + c] = (b[i * cols + c] - s) / l[i * k + i];
        }
        for i in (0..k).rev() {
            let s: f64 = (i + 1..k).map(|j| l[j * k + i] * b[j * cols + c]).sum();
            b[i * cols + c] = (b[i * cols + c] - s) / l[i * k + i];
        }
    }
    Some(())
}

/// Lower Cholesky factor of `a`; `None` when `a` is not positive definite.
fn cholesky(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let (li, lj) = (&l[i * k..i * k + j], &l[j * k..j * k + j]);
            let s: f64 = li.iter().zip(lj).map(|(a, b)| a * b).sum();
            let v = a[i * k + j] - s;
            if i == j {
                if !(v > 0.0 && v.is_finite()) {
                    return None;
                }
                l[i * k + i] = v.sqrt();
            } else {
                l[i * k + j] = v / l[j * k + j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid {
            scale: 0.1,
            zero_point: 0,
            lo: -127,
            hi: 127,
        }
    }

    /// `H` of inputs `xs` (each of length k).
    fn second_moment(xs: &[Vec<f64>], k: usize) -> Vec<f64> {
        let mut h = vec![0f64; k * k];
        for x in xs {
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += x[i] * x[j] / xs.len() as f64;
                }
            }
        }
        h
    }

    #[test]
    fn inverse_cholesky_factor_inverts() {
        let k = 3;
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let u = inverse_upper_cholesky(&a, k).unwrap();
        // Uᵀ·U·A = I.
        for i in 0..k {
            for j in 0..k {
                let mut s = 0.0;
                for t in 0..k {
                    let mut inv = 0.0;
                    for r in 0..k {
                        inv += u[r * k + i] * u[r * k + t];
                    }
                    s += inv * a[t * k + j];
                }
                assert!(
                    (s - f64::from(u8::from(i == j))).abs() < 1e-9,
                    "{i},{j}: {s}"
                );
            }
        }
    }

    #[test]
    fn correlated_inputs_lower_the_output_error() {
        // Two nearly equal inputs: rounding one weight down can be made up
        // by rounding the other up.
        let k = 4;
        let xs: Vec<Vec<f64>> = (0..64)
            .map(|i| {
                let a = ((i * 37 % 17) as f64 - 8.0) / 4.0;
                let b = ((i * 11 % 13) as f64 - 6.0) / 3.0;
                vec![a, a * 0.98 + 0.01 * b, b, b * 0.97]
            })
            .collect();
        let h = second_moment(&xs, k);
        let w = [
            0.149f32, 0.149, -0.251, -0.251, 0.349, 0.051, 0.0449, 0.0449,
        ];
        let r = round(&w, 2, k, &h, |_, _| grid()).unwrap();
        assert!(
            r.error < 0.5 * r.nearest_error,
            "{} vs {}",
            r.error,
            r.nearest_error
        );
        // Every code stays on the grid, next to its weight.
        for (i, &q) in r.codes.iter().enumerate() {
            assert!((q as f32 * 0.1 - w[i]).abs() <= 0.1 + 1e-6);
        }
    }

    #[test]
    fn uncorrelated_unit_inputs_round_to_nearest() {
        // With H = I nothing can compensate: nearest is optimal.
        let k = 3;
        let mut h = vec![0f64; 9];
        for i in 0..3 {
            h[i * 3 + i] = 1.0;
        }
        let w = [0.26f32, -0.34, 0.04];
        let r = round(&w, 1, k, &h, |_, _| grid()).unwrap();
        assert_eq!(r.codes, vec![3, -3, 0]);
        assert!((r.error - r.nearest_error).abs() < 1e-12);
    }

    #[test]
    fn no_input_energy_is_refused() {
        assert!(round(&[0.1, 0.2], 1, 2, &[0.0; 4], |_, _| grid()).is_none());
    }
}
