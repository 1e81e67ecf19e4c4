//! Choosing a clip range from a tensor's calibration histogram.
//!
//! * `minmax`: the observed extremes.
//! * `percentile{p=99.99}`: both tails cut at the p-th percentile.
//! * `entropy`: the threshold whose quantized distribution is closest in KL
//!   divergence to the observed one (the TensorRT method), on magnitudes.
//! * `mse`: the range minimising expected squared error, counting rounding
//!   noise (`step²/12`) inside the range and clipping error outside it.

use serde::{Deserialize, Serialize};

use super::QType;
use crate::calib::hist::{Bin, FloatHist};

/// A calibration method.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    Minmax,
    Percentile { p: f64 },
    Entropy,
    Mse,
}

impl Method {
    /// Parses `minmax`, `percentile`, `percentile{p=99.9}`, `entropy`, `mse`.
    pub fn parse(s: &str) -> Result<Method, String> {
        let s = s.trim();
        let (name, args) = match s.split_once('{') {
            Some((n, rest)) => (n, Some(rest.trim_end_matches('}'))),
            None => (s, None),
        };
        match (name, args) {
            ("minmax", None) => Ok(Method::Minmax),
            ("entropy", None) => Ok(Method::Entropy),
            ("mse", None) => Ok(Method::Mse),
            ("percentile", None) => Ok(Method::Percentile { p: 99.99 }),
            ("percentile", Some(a)) => {
                let v = a.strip_prefix("p=").ok_or("percentile takes {p=NUMBER}")?;
                let p: f64 = v.parse().map_err(|_| format!("percentile: '{v}' is not a number"))?;
                if !(50.0..=100.0).contains(&p) {
                    return Err(format!("percentile: p={p} must be between 50 and 100"));
                }
                Ok(Method::Percentile { p })
            }
            _ => Err(format!("unknown method '{s}'; valid methods are minmax, percentile{{p=99.99}}, entropy, mse")),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Minmax => write!(f, "minmax"),
            Method::Percentile { p } => write!(f, "percentile{{p={p}}}"),
            Method::Entropy => write!(f, "entropy"),
            Method::Mse => write!(f, "mse"),
        }
    }
}

/// The clip range for a tensor. Always finite, `lo <= 0 <= hi` not implied.
///
/// Entropy compares 8-bit quantized distributions; for 16-bit codes it
/// gives mse's range, which weighs clipping against the rounding of the
/// actual number of levels.
pub fn clip_range(
    h: &FloatHist,
    method: Method,
    qt: QType,
    symmetric: bool,
    reduce_range: bool,
) -> (f64, f64) {
    if h.is_empty() {
        return (0.0, 0.0);
    }
    let (min, max) = (h.min as f64, h.max as f64);
    match method {
        Method::Minmax => (min, max),
        Method::Percentile { p } => percentile(h, p),
        Method::Entropy if qt.is_wide() => mse(h, qt, symmetric, reduce_range),
        Method::Entropy if symmetric => entropy(h, qt, symmetric),
        Method::Entropy => entropy_asymmetric(h),
        Method::Mse => mse(h, qt, symmetric, reduce_range),
    }
}

/// Value below which a fraction `q` of the mass lies (linear inside a bin).
fn quantile(bins: &[Bin], total: u64, q: f64) -> f64 {
    let target = q * total as f64;
    let mut acc = 0.0;
    for b in bins {
        let next = acc + b.count as f64;
        if next >= target {
            let t = if b.count == 0 {
                0.0
            } else {
                ((target - acc) / b.count as f64).clamp(0.0, 1.0)
            };
            return b.lo as f64 + t * (b.hi as f64 - b.lo as f64);
        }
        acc = next;
    }
    bins.last().map(|b| b.hi as f64).unwrap_or(0.0)
}

fn percentile(h: &FloatHist, p: f64) -> (f64, f64) {
    let bins = h.bins();
    let q = p / 100.0;
    let lo = if h.min >= 0.0 {
        h.min as f64
    } else {
        quantile(&bins, h.count, 1.0 - q)
    };
    let hi = if h.max <= 0.0 {
        h.max as f64
    } else {
        quantile(&bins, h.count, q)
    };
    (lo.min(hi), hi.max(lo))
}

/// Expected squared error of quantizing the histogram with `[lo, hi]`.
pub(crate) fn expected_error(bins: &[Bin], lo: f64, hi: f64, levels: f64) -> f64 {
    let step = (hi - lo) / levels;
    let noise = step * step / 12.0;
    let mut err = 0.0;
    for b in bins {
        let c = b.center();
        let e = if c == 0.0 {
            0.0
        } else if c < lo {
            (lo - c) * (lo - c)
        } else if c > hi {
            (c - hi) * (c - hi)
        } else {
            noise
        };
        err += e * b.count as f64;
    }
    err
}

fn mse(h: &FloatHist, qt: QType, symmetric: bool, reduce_range: bool) -> (f64, f64) {
    let bins = h.bins();
    let (qmin, qmax) = qt.bounds(symmetric, reduce_range);
    let levels = (qmax - qmin) as f64;
    let (min, max) = ((h.min as f64).min(0.0), (h.max as f64).max(0.0));
    let amax = min.abs().max(max.abs());
    let candidate = |a: f64| -> (f64, f64) {
        if symmetric {
            (-a * amax, a * amax)
        } else {
            (a * min, a * max)
        }
    };
    let mut best = (f64::INFINITY, 1.0);
    // A fine grid near the full range, coarser towards heavy clipping: the
    // optimum is usually within the top few tenths.
    let mut alphas: Vec<f64> = (1..=400).map(|i| i as f64 / 400.0).collect();
    alphas.extend((1..100).map(|i| 0.01 * (i as f64 / 100.0)));
    for a in alphas {
        let (lo, hi) = candidate(a);
        if hi - lo <= 0.0 {
            continue;
        }
        let e = expected_error(&bins, lo, hi, levels);
        // Ties go to the wider range: never clip for nothing.
        if e < best.0 || (e == best.0 && a > best.1) {
            best = (e, a);
        }
    }
    if best.0.is_infinite() {
        return (h.min as f64, h.max as f64);
    }
    candidate(best.1)
}

/// KL-divergence calibration over magnitudes (TensorRT's algorithm):
/// 2048 uniform bins over `[0, max|x|]`, thresholds from 128 bins up, each
/// candidate's distribution quantized to the integer levels available.
fn entropy(h: &FloatHist, qt: QType, symmetric: bool) -> (f64, f64) {
    const NBINS: usize = 2048;
    let amax = (h.min as f64).abs().max((h.max as f64).abs());
    if amax <= 0.0 {
        return (0.0, 0.0);
    }
    // Magnitude histogram, spreading each bucket uniformly over the bins it
    // overlaps.
    let mut hist = vec![0f64; NBINS];
    let width = amax / NBINS as f64;
    for b in h.bins() {
        let (mut a, mut z) = ((b.lo as f64).abs(), (b.hi as f64).abs());
        if a > z {
            std::mem::swap(&mut a, &mut z);
        }
        if b.lo < 0.0 && b.hi > 0.0 {
            a = 0.0;
        }
        let (ia, iz) = (
            ((a / width) as usize).min(NBINS - 1),
            ((z / width) as usize).min(NBINS - 1),
        );
        let n = (iz - ia + 1) as f64;
        for slot in &mut hist[ia..=iz] {
            *slot += b.count as f64 / n;
        }
    }
    // Levels available on one side: 128 for signed, 256 for a non-negative
    // tensor in u8.
    let nonneg = h.min >= 0.0;
    let levels = if nonneg && qt == QType::U8 && !symmetric {
        256
    } else {
        128
    };
    let mut best = (f64::INFINITY, NBINS);
    let start = levels.min(NBINS);
    for i in (start..=NBINS).step_by(16) {
        let mut p: Vec<f64> = hist[..i].to_vec();
        let outliers: f64 = hist[i..].iter().sum();
        if outliers > 0.001 * h.count as f64 {
            continue;
        }
        p[i - 1] += outliers;
        // Quantize hist[..i] into `levels` groups, expanding back over the
        // non-empty bins of each group.
        let mut q = vec![0f64; i];
        let group = i as f64 / levels as f64;
        for g in 0..levels {
            let s = (g as f64 * group) as usize;
            let e = (((g + 1) as f64 * group) as usize).min(i);
            if s >= e {
                continue;
            }
            let total: f64 = hist[s..e].iter().sum();
            let nonzero = hist[s..e].iter().filter(|&&x| x > 0.0).count();
            if nonzero == 0 {
                continue;
            }
            for j in s..e {
                if hist[j] > 0.0 {
                    q[j] = total / nonzero as f64;
                }
            }
        }
        let kl = kl_divergence(&p, &q);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    let t = best.1 as f64 * width;
    if nonneg {
        (h.min as f64, t.min(h.max as f64))
    } else {
        // Never clip past zero: a tensor on one side of zero keeps the end
        // nearest zero.
        (
            (-t).max(h.min as f64).min(0.0f64.min(h.max as f64)),
            t.min(h.max as f64).max(0.0f64.max(h.min as f64)),
        )
    }
}

/// KL-divergence calibration for asymmetric (u8) activations: the range
/// `[min(min,0), max(max,0)]` is shrunk towards zero, and each candidate's
/// 256-level quantized distribution is compared with the observed one (mass
/// outside the candidate clipped onto its edges). Symmetric magnitude
/// calibration would waste levels on the empty side of a one-sided tensor,
/// or collapse the range of a tensor that never comes near zero.
fn entropy_asymmetric(h: &FloatHist) -> (f64, f64) {
    const NBINS: usize = 2048;
    const LEVELS: usize = 256;
    let lo0 = (h.min as f64).min(0.0);
    let hi0 = (h.max as f64).max(0.0);
    if hi0 - lo0 <= 0.0 {
        return (0.0, 0.0);
    }
    let width = (hi0 - lo0) / NBINS as f64;
    let mut hist = vec![0f64; NBINS];
    for b in h.bins() {
        let ia = (((b.lo as f64 - lo0) / width) as usize).min(NBINS - 1);
        let iz = (((b.hi as f64 - lo0) / width) as usize).min(NBINS - 1);
        let n = (iz - ia + 1) as f64;
        for slot in &mut hist[ia..=iz] {
            *slot += b.count as f64 / n;
        }
    }
    let mut best = (f64::INFINITY, 1.0f64);
    for k in (LEVELS..=NBINS).step_by(16) {
        let f = k as f64 / NBINS as f64;
        let a = (((lo0 * f - lo0) / width).floor() as usize).min(NBINS - 1);
        let z = (((hi0 * f - lo0) / width).ceil() as usize).clamp(a + 1, NBINS);
        let mut p: Vec<f64> = hist[a..z].to_vec();
        let below: f64 = hist[..a].iter().sum();
        let above: f64 = hist[z..].iter().sum();
        // KL compares shapes, not how much was clipped: a window holding a
        // sliver of the data, everything else piled on its edge, can look
        // like a match. Candidates must keep 99.9% of the mass inside.
        if below + above > 0.001 * h.count as f64 {
            continue;
        }
        p[0] += below;
        let last = p.len() - 1;
        p[last] += above;
        let len = z - a;
        let group = len as f64 / LEVELS as f64;
        let mut q = vec![0f64; len];
        for g in 0..LEVELS {
            let s = (g as f64 * group) as usize;
            let e = (((g + 1) as f64 * group) as usize).min(len);
            if s >= e {
                continue;
            }
            let total: f64 = hist[a + s..a + e].iter().sum();
            let nonzero = hist[a + s..a + e].iter().filter(|&&x| x > 0.0).count();
            if nonzero == 0 {
                continue;
            }
            for j in s..e {
                if hist[a + j] > 0.0 {
                    q[j] = total / nonzero as f64;
                }
            }
        }
        let kl = kl_divergence(&p, &q);
        // Ties go to the wider range.
        if kl < best.0 || (kl == best.0 && f > best.1) {
            best = (kl, f);
        }
    }
    (
        (lo0 * best.1).max(h.min as f64),
        (hi0 * best.1).min(h.max as f64),
    )
}

fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let ps: f64 = p.iter().sum();
    let qs: f64 = q.iter().sum();
    if ps <= 0.0 || qs <= 0.0 {
        return f64::INFINITY;
    }
    let mut kl = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        if a > 0.0 {
            let pa = a / ps;
            // A bin the quantized distribution misses costs as if nearly empty.
            let qb = if b > 0.0 { b / qs } else { 1e-12 };
            kl += pa * (pa / qb).ln();
        }
    }
    kl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussianish(n: usize, outlier: f32) -> FloatHist {
        let mut h = FloatHist::new();
        // Deterministic bell-shaped data from sums of uniforms.
        let mut s: u64 = 12345;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            v.push(acc);
        }
        v.push(outlier);
        h.observe(&v);
        h
    }

    #[test]
    fn methods_clip_outliers_but_minmax_does_not() {
        let h = gaussianish(100_000, 50.0);
        let (lo, hi) = clip_range(&h, Method::Minmax, QType::U8, false, false);
        assert_eq!(hi, 50.0);
        assert!(lo < -1.0);
        for m in [Method::Percentile { p: 99.99 }, Method::Entropy] {
            let (lo, hi) = clip_range(&h, m, QType::S8, true, false);
            assert!(hi < 10.0 && hi > 0.8, "{m}: hi {hi}");
            assert!(lo < -0.8, "{m}: lo {lo}");
        }
        // MSE weighs the outlier's squared clipping error against the
        // rounding noise of everything else: it clips, but only part way.
        let (_, hi) = clip_range(&h, Method::Mse, QType::S8, true, false);
        assert!(hi < 50.0 && hi > 0.8, "mse: hi {hi}");
        // With many outliers' worth of mass in the bulk, it clips hard.
        let h = gaussianish(100_000, 3.0);
        let (_, hi) = clip_range(&h, Method::Mse, QType::S8, true, false);
        assert!(hi < 3.0, "mse: hi {hi}");
    }

    #[test]
    fn method_parsing() {
        assert_eq!(
            Method::parse("percentile{p=99.9}"),
            Ok(Method::Percentile { p: 99.9 })
        );
        assert!(Method::parse("kmeans")
            .unwrap_err()
            .contains("valid methods"));
        assert!(Method::parse("percentile{p=20}").is_err());
    }

    #[test]
    fn empty_histogram_gives_zero_range() {
        let h = FloatHist::new();
        assert_eq!(
            clip_range(&h, Method::Mse, QType::U8, false, false),
            (0.0, 0.0)
        );
    }
}
