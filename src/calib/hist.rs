//! A fixed-size, exact, order-independent histogram of f32 values.
//!
//! Calibration must not grow with the number of samples and must give the
//! same statistics whatever order the samples come in. Uniform histograms
//! need the range before the first value arrives (two sweeps over the data,
//! or rebinning that depends on arrival order). This histogram instead
//! buckets each value by the top 16 bits of its IEEE-754 pattern: sign,
//! exponent and 7 mantissa bits. Every bucket spans a relative width of
//! 2⁻⁷ (under 0.8 %), resolution is finest where values are dense (near
//! zero), merging is plain addition, and one sweep suffices. The exact
//! minimum and maximum are kept beside it.

use serde::{Deserialize, Serialize};

/// Number of buckets: one per 16-bit prefix of an f32.
pub const BUCKETS: usize = 1 << 16;

/// Histogram of one tensor's values over all calibration samples.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatHist {
    pub min: f32,
    pub max: f32,
    /// Finite values seen.
    pub count: u64,
    /// NaNs and infinities seen (excluded from ranges).
    pub non_finite: u64,
    counts: Vec<u64>,
}

impl Default for FloatHist {
    fn default() -> Self {
        FloatHist {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            non_finite: 0,
            counts: vec![0; BUCKETS],
        }
    }
}

/// The buckets of infinities and NaNs (exponent bits all ones), positive
/// and negative: never counted.
const NON_FINITE_BUCKETS: [std::ops::Range<usize>; 2] = [0x7f80..0x8000, 0xff80..0x1_0000];

/// Lanes of the branch-free range scan in [`finite_range`]: two SSE
/// registers per accumulator, so nothing spills to the stack.
const LANES: usize = 8;

/// `(min, max, non-finite count)` of `xs`, ignoring NaNs and infinities;
/// `min > max` when nothing is finite.
pub fn finite_range(xs: &[f32]) -> (f32, f32, u64) {
    // Fast path, written for the vectorizer: comparisons skip NaNs by
    // themselves, and `x * 0` is NaN exactly for NaN and ±inf, so one sum
    // says whether any value was not finite. Only then is the slice
    // scanned again, value by value.
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut poison = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let x = c[i];
            lo[i] = if x < lo[i] { x } else { lo[i] };
            hi[i] = if x > hi[i] { x } else { hi[i] };
            poison[i] += x * 0.0;
        }
    }
    for (i, &x) in rest.iter().enumerate() {
        lo[i] = if x < lo[i] { x } else { lo[i] };
        hi[i] = if x > hi[i] { x } else { hi[i] };
        poison[i] += x * 0.0;
    }
    if poison.iter().all(|p| *p == 0.0) {
        let lo = lo
            .iter()
            .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
        let hi = hi
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        return (lo, hi, 0);
    }
    let (mut lo, mut hi, mut bad) = (f32::INFINITY, f32::NEG_INFINITY, 0u64);
    for &x in xs {
        if x.is_finite() {
            lo = lo.min(x);
            hi = hi.max(x);
        } else {
            bad += 1;
        }
    }
    (lo, hi, bad)
}

/// The values a bucket covers, as `(low, high)` with `low <= high`.
pub fn bucket_bounds(b: usize) -> (f32, f32) {
    let a = f32::from_bits((b as u32) << 16);
    let z = f32::from_bits(((b as u32) << 16) | 0xFFFF);
    if a <= z {
        (a, z)
    } else {
        (z, a)
    }
}

/// One non-empty bucket: its value interval and count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bin {
    pub lo: f32,
    pub hi: f32,
    pub count: u64,
}

impl Bin {
    /// Representative value (midpoint), exactly 0 for the zero buckets' zero.
    pub fn center(&self) -> f64 {
        if self.lo == 0.0 && self.hi <= f32::MIN_POSITIVE
            || self.hi == 0.0 && self.lo >= -f32::MIN_POSITIVE
        {
            // The bucket around ±0 holds (mostly) exact zeros: ReLU outputs,
            // padding. Treat them as zero so they cost no error.
            return 0.0;
        }
        (self.lo as f64 + self.hi as f64) / 2.0
    }
}

impl FloatHist {
    pub fn new() -> Self {
        Self::default()
    }

    /// A histogram, or (`buckets == false`) only the exact range and counts:
    /// what the `minmax` method needs, at a fraction of the cost.
    pub fn with_buckets(buckets: bool) -> Self {
        if buckets {
            Self::default()
        } else {
            FloatHist {
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
                count: 0,
                non_finite: 0,
                counts: Vec::new(),
            }
        }
    }

    /// Whether bucket counts are kept.
    pub fn has_buckets(&self) -> bool {
        !self.counts.is_empty()
    }

    /// Adds values.
    ///
    /// This is calibration's inner loop: every captured tensor of every
    /// sample passes through it, so it is written for the vectorizer. The
    /// range is kept in [`LANES`] independent lanes without branches
    /// (`f32::min` carries NaN semantics that keep LLVM scalar; a scalar
    /// min/max chain took more time than the model runs on MobileNet-sized
    /// nets), and every value, finite or not, is counted into its bucket:
    /// the non-finite buckets (exponent all ones) are emptied into
    /// `non_finite` afterwards instead of being tested per value.
    pub fn observe(&mut self, xs: &[f32]) {
        let (lo, hi, bad) = finite_range(xs);
        if lo <= hi {
            // `+ 0.0` turns −0 into +0: which signed zero a lane keeps
            // depends on where the zeros fall, and the statistics must not.
            self.min = self.min.min(lo + 0.0);
            self.max = self.max.max(hi + 0.0);
        }
        self.count += xs.len() as u64 - bad;
        self.non_finite += bad;
        if !self.counts.is_empty() {
            for &x in xs {
                self.counts[(x.to_bits() >> 16) as usize] += 1;
            }
            for b in NON_FINITE_BUCKETS.iter().flat_map(|r| r.clone()) {
                self.counts[b] = 0;
            }
        }
    }

    /// Adds another histogram (commutative and associative).
    pub fn merge(&mut self, o: &FloatHist) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.non_finite += o.non_finite;
        if self.counts.len() < o.counts.len() {
            self.counts.resize(o.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
    }

    /// Non-empty buckets, ascending by value.
    pub fn bins(&self) -> Vec<Bin> {
        let mut v: Vec<Bin> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(b, &c)| {
                let (lo, hi) = bucket_bounds(b);
                // Clamp the bucket to the observed extremes so that estimates
                // never reach past what was actually seen.
                Bin {
                    lo: lo.max(self.min),
                    hi: hi.min(self.max),
                    count: c,
                }
            })
            .collect();
        v.sort_by(|a, b| a.lo.total_cmp(&b.lo));
        v
    }

    /// Sparse form for the statistics file: `(bucket, count)` pairs.
    pub fn to_sparse(&self) -> SparseHist {
        SparseHist {
            min: self.min,
            max: self.max,
            count: self.count,
            non_finite: self.non_finite,
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(b, &c)| (b as u32, c))
                .collect(),
        }
    }

    pub fn from_sparse(s: &SparseHist) -> Result<Self, String> {
        let mut h = FloatHist {
            min: s.min,
            max: s.max,
            count: s.count,
            non_finite: s.non_finite,
            counts: vec![0; BUCKETS],
        };
        for &(b, c) in &s.buckets {
            let slot = h
                .counts
                .get_mut(b as usize)
                .ok_or_else(|| format!("bucket {b} out of range"))?;
            *slot += c;
        }
        Ok(h)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The serialized histogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SparseHist {
    pub min: f32,
    pub max: f32,
    pub count: u64,
    pub non_finite: u64,
    pub buckets: Vec<(u32, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_exact_extremes() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.13 - 4.0)
            .collect();
        let mut a = FloatHist::new();
        a.observe(&xs[..500]);
        a.observe(&xs[500..]);
        let mut b = FloatHist::new();
        let mut rev = xs.clone();
        rev.reverse();
        b.observe(&rev);
        assert_eq!(a, b);
        assert_eq!(a.min, -4.0);
        assert_eq!(a.max, 100.0 * 0.13 - 4.0);
        assert_eq!(a.count, 1000);
        let total: u64 = a.bins().iter().map(|b| b.count).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn bins_cover_their_values() {
        for &x in &[
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            3.5e-20,
            -7.25e12,
            f32::MIN_POSITIVE,
        ] {
            let (lo, hi) = bucket_bounds((x.to_bits() >> 16) as usize);
            assert!(lo <= x && x <= hi, "{x} not in [{lo}, {hi}]");
        }
    }

    #[test]
    fn non_finite_values_are_counted_apart() {
        let mut h = FloatHist::new();
        h.observe(&[1.0, f32::NAN, f32::INFINITY, -2.0]);
        assert_eq!((h.min, h.max, h.count, h.non_finite), (-2.0, 1.0, 2, 2));
    }

    #[test]
    fn vector_range_matches_a_scalar_scan() {
        // Lengths around the lane width, non-finite values in every lane
        // position, and signed zeros.
        for len in [0usize, 1, 7, 8, 9, 33, 1000] {
            for poison in [
                None,
                Some(f32::NAN),
                Some(f32::INFINITY),
                Some(f32::NEG_INFINITY),
            ] {
                let mut xs: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % 211) as f32 * 0.37 - 40.0)
                    .collect();
                if let (Some(p), true) = (poison, len > 0) {
                    xs[len / 2] = p;
                    xs[len - 1] = p;
                }
                let finite: Vec<f32> = xs.iter().copied().filter(|x| x.is_finite()).collect();
                let want_lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
                let want_hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let (lo, hi, bad) = finite_range(&xs);
                assert_eq!((lo, hi), (want_lo, want_hi), "len {len} poison {poison:?}");
                assert_eq!(bad as usize, len - finite.len());
            }
        }
        let mut h = FloatHist::new();
        h.observe(&[-0.0, 0.0, -0.0]);
        assert_eq!(
            (h.min.to_bits(), h.max.to_bits()),
            (0, 0),
            "signed zeros normalised"
        );
    }

    #[test]
    fn sparse_round_trip() {
        let mut h = FloatHist::new();
        h.observe(&[0.5, 0.25, -3.0, 0.0]);
        assert_eq!(FloatHist::from_sparse(&h.to_sparse()).unwrap(), h);
    }
}
