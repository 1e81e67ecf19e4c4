//! Codebooks: a weight's values restricted to a few levels (2^bits), so
//! that it can be stored as small codes into a table
//! (`codes → Cast → Gather(table)`, see `pack-codebook`).
//!
//! Levels are found in the weight's integer code domain (the value divided
//! by its channel's scale), so one table serves every channel of a
//! per-channel quantized weight and the table itself holds int8 codes: the
//! gathered weight is an ordinary int8 weight for the DequantizeLinear
//! after it, and runtimes that fold constants recover the integer kernel.
//!
//! Two kinds:
//! * [`Kind::KMeans`]: the levels that minimise the squared error over the
//!   weight's values, found exactly — one-dimensional k-means is solvable by
//!   dynamic programming over the sorted values (Wang & Song, "Ckmeans.1d.dp:
//!   Optimal k-means Clustering in One Dimension by Dynamic Programming",
//!   The R Journal 3(2), 2011). The values are binned at the integer codes
//!   (at most 255 bins, each holding its count, sum and sum of squares), so
//!   the search is exact for the binned values, deterministic and costs
//!   `O(k·255²)` per table whatever the weight's size. This is the weight
//!   sharing of Deep Compression (Han et al., ICLR 2016), without its
//!   retraining and with the global optimum instead of Lloyd's local one.
//! * [`Kind::Log`]: zero and signed powers of two below the largest
//!   magnitude (`±a, ±a/2, ±a/4, …`): logarithmic levels, dense near zero
//!   where most weights are.
//! * [`Kind::Uniform`]: `2m + 1` evenly spaced levels over the code range
//!   (`m = k/2 − 1`, 15 at 4 bits): symmetric uniform int4 (int3, …)
//!   with the weight's own scales, the baseline the other two are
//!   measured against.

/// How a codebook's levels are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    KMeans,
    Log,
    Uniform,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "kmeans" => Some(Kind::KMeans),
            "log" => Some(Kind::Log),
            "uniform" => Some(Kind::Uniform),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::KMeans => "kmeans",
            Kind::Log => "log",
            Kind::Uniform => "uniform",
        }
    }
}

/// Per-bin moments of the values, binned at the integer codes `lo..=hi`.
struct Bins {
    lo: i32,
    count: Vec<f64>,
    sum: Vec<f64>,
    sumsq: Vec<f64>,
}

impl Bins {
    fn new(values: &[f32], lo: i32, hi: i32) -> Bins {
        let n = (hi - lo + 1).max(1) as usize;
        let mut b = Bins {
            lo,
            count: vec![0.0; n],
            sum: vec![0.0; n],
            sumsq: vec![0.0; n],
        };
        for &x in values {
            if !x.is_finite() {
                continue;
            }
            let x = (x as f64).clamp(lo as f64, hi as f64);
            let i = (x.round_ties_even() as i32 - lo) as usize;
            b.count[i] += 1.0;
            b.sum[i] += x;
            b.sumsq[i] += x * x;
        }
        b
    }
}

/// The levels (integer codes in `lo..=hi`, sorted, distinct, at most `k`)
/// that `values` (in code units: value / scale, before any zero point)
/// are best restricted to.
pub fn fit(values: &[f32], lo: i32, hi: i32, k: usize, kind: Kind) -> Vec<i32> {
    let k = k.max(1);
    match kind {
        Kind::KMeans => kmeans(&Bins::new(values, lo, hi), k),
        Kind::Log => log_levels(values, lo, hi, k),
        Kind::Uniform => uniform_levels(lo, hi, k),
    }
}

/// `k·a/m` for `k = −m..=m`, `a` the largest symmetric code, rounded.
fn uniform_levels(lo: i32, hi: i32, k: usize) -> Vec<i32> {
    let a = hi.min(-lo) as f64;
    let m = (k / 2).saturating_sub(1).max(1) as i32;
    let mut levels: Vec<i32> = (-m..=m)
        .map(|j| (j as f64 * a / m as f64).round_ties_even() as i32)
        .collect();
    levels.dedup();
    levels
}

/// Exact k-means over the occupied bins, centroids rounded to codes.
fn kmeans(b: &Bins, k: usize) -> Vec<i32> {
    // The occupied bins, in order: the points of the dynamic program.
    let occupied: Vec<usize> = (0..b.count.len()).filter(|&i| b.count[i] > 0.0).collect();
    let n = occupied.len();
    if n == 0 {
        return vec![0.clamp(b.lo, b.lo + b.count.len() as i32 - 1)];
    }
    if n <= k {
        return occupied.iter().map(|&i| b.lo + i as i32).collect();
    }
    // Prefix sums of the moments: the squared error of a cluster of
    // points i..j (inclusive) in O(1).
    let mut pc = vec![0.0; n + 1];
    let mut ps = vec![0.0; n + 1];
    let mut pq = vec![0.0; n + 1];
    for (t, &i) in occupied.iter().enumerate() {
        pc[t + 1] = pc[t] + b.count[i];
        ps[t + 1] = ps[t] + b.sum[i];
        pq[t + 1] = pq[t] + b.sumsq[i];
    }
    let cost = |i: usize, j: usize| -> f64 {
        let c = pc[j + 1] - pc[i];
        let s = ps[j + 1] - ps[i];
        ((pq[j + 1] - pq[i]) - s * s / c).max(0.0)
    };
    // d[m][j]: the least error of points 0..=j in m+1 clusters; from[m][j]
    // the first point of the last cluster. Ties keep the earliest split.
    let mut d = vec![vec![f64::INFINITY; n]; k];
    let mut from = vec![vec![0usize; n]; k];
    for (j, d0) in d[0].iter_mut().enumerate() {
        *d0 = cost(0, j);
    }
    for m in 1..k {
        for j in m..n {
            let mut best = (f64::INFINITY, m);
            for i in m..=j {
                let e = d[m - 1][i - 1] + cost(i, j);
                if e < best.0 {
                    best = (e, i);
                }
            }
            d[m][j] = best.0;
            from[m][j] = best.1;
        }
    }
    let mut levels = Vec::with_capacity(k);
    let mut j = n - 1;
    for m in (0..k).rev() {
        let i = if m == 0 { 0 } else { from[m][j] };
        let mean = (ps[j + 1] - ps[i]) / (pc[j + 1] - pc[i]);
        levels.push(mean.round_ties_even() as i32);
        if m == 0 {
            break;
        }
        j = i - 1;
    }
    levels.sort_unstable();
    levels.dedup();
    levels
}

/// Zero and `±a·2^-j` for the largest magnitude `a`, as many as fit in
/// `k` levels, rounded to codes.
fn log_levels(values: &[f32], lo: i32, hi: i32, k: usize) -> Vec<i32> {
    let a = values
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f64, |m, &x| m.max((x as f64).abs()))
        .min(hi.max(-lo) as f64);
    let mut levels = vec![0];
    let magnitudes = (k.saturating_sub(1) / 2).max(1);
    for j in 0..magnitudes {
        let v = (a / (1u64 << j) as f64).round_ties_even() as i32;
        levels.push(v.clamp(lo, hi));
        levels.push((-v).clamp(lo, hi));
    }
    levels.sort_unstable();
    levels.dedup();
    levels
}

/// The level nearest `x` (ties to the lower); `levels` sorted, non-empty.
pub fn nearest(levels: &[i32], x: f32) -> i32 {
    let x = x as f64;
    let i = levels.partition_point(|&l| (l as f64) < x);
    match (i.checked_sub(1).map(|j| levels[j]), levels.get(i)) {
        (Some(a), Some(&b)) => {
            if x - a as f64 <= b as f64 - x {
                a
            } else {
                b
            }
        }
        (Some(a), None) => a,
        (None, Some(&b)) => b,
        (None, None) => unreachable!("invariant: levels are non-empty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(values: &[f32], levels: &[i32]) -> f64 {
        values
            .iter()
            .map(|&x| {
                let e = x as f64 - nearest(levels, x) as f64;
                e * e
            })
            .sum()
    }

    #[test]
    fn kmeans_finds_the_clusters() {
        let mut v = vec![];
        for c in [-100.0f32, -3.0, 40.0, 90.0] {
            for d in [-1.0f32, 0.0, 1.0] {
                v.push(c + d);
            }
        }
        assert_eq!(fit(&v, -127, 127, 4, Kind::KMeans), vec![-100, -3, 40, 90]);
    }

    #[test]
    fn kmeans_is_optimal_against_every_split_of_a_small_set() {
        // Exhaustive check: three clusters of 8 distinct codes.
        let v: Vec<f32> = [-9.0f32, -7.0, -6.0, -1.0, 0.0, 2.0, 8.0, 9.0]
            .iter()
            .flat_map(|&x| std::iter::repeat_n(x, (x.abs() as usize % 3) + 1))
            .collect();
        let got = sse(&v, &fit(&v, -127, 127, 3, Kind::KMeans));
        let mut best = f64::INFINITY;
        for a in -9..=9 {
            for b in a..=9 {
                for c in b..=9 {
                    best = best.min(sse(&v, &[a, b, c]));
                }
            }
        }
        assert!(got <= best + 1e-9, "{got} > {best}");
    }

    #[test]
    fn fewer_distinct_values_than_levels_are_kept_exactly() {
        let v = [3.0f32, 3.2, -5.0, 0.0];
        assert_eq!(fit(&v, -127, 127, 16, Kind::KMeans), vec![-5, 0, 3]);
    }

    #[test]
    fn log_levels_halve_from_the_largest_magnitude() {
        let v = [100.0f32, -20.0, 1.0];
        assert_eq!(
            fit(&v, -127, 127, 8, Kind::Log),
            vec![-100, -50, -25, 0, 25, 50, 100]
        );
    }

    #[test]
    fn uniform_levels_are_symmetric_int4() {
        let l = fit(&[], -127, 127, 16, Kind::Uniform);
        assert_eq!(l.len(), 15);
        assert_eq!(l[7], 0);
        assert_eq!((l[0], l[14]), (-127, 127));
        assert_eq!(l[8], 18);
    }

    #[test]
    fn levels_stay_in_the_code_range() {
        let v = [500.0f32, -500.0, f32::NAN, 0.0];
        for kind in [Kind::KMeans, Kind::Log, Kind::Uniform] {
            let l = fit(&v, -127, 127, 4, kind);
            assert!(l.iter().all(|&x| (-127..=127).contains(&x)), "{l:?}");
        }
    }

    #[test]
    fn nearest_breaks_ties_low() {
        assert_eq!(nearest(&[-2, 2], 0.0), -2);
        assert_eq!(nearest(&[-2, 2], 0.1), 2);
        assert_eq!(nearest(&[-2, 2], 9.0), 2);
        assert_eq!(nearest(&[-2, 2], -9.0), -2);
    }
}
