//! Why a tensor's error stays large: the causes its calibration statistics
//! show, and what onnxq offers against each.
//!
//! For the quantized tensors with the largest error on the validation data
//! (below [`POOR_DB`], at most [`MAX`]), the statistics are read for:
//!
//! * **outlier channels**: one channel of an input reaches far past the
//!   others (largest channel magnitude ≥ [`OUTLIER_RATIO`]× the median
//!   channel's), so the one scale all channels share leaves the others few
//!   codes. Remedy: `--equalize on` (moves the range into the weights),
//!   or keeping the reader float.
//! * **a wide dynamic range**: nearly every value lies in a small part of
//!   the range (99.9% within [`NARROW`] of it) while a few extremes set the
//!   step. Remedy: a clipping method (`--method percentile`/`mse`), or
//!   keeping it float.
//! * **a clipped tail**: the chosen range cuts off more than
//!   [`CLIPPED`] of the values. Remedy: `--method minmax`.
//! * **a saturating activation**: a Sigmoid/Tanh/Softmax/HardSigmoid
//!   output, or a third of the values piled in the range's end bins: a
//!   few codes carry everything. Remedy: keep the producer float.
//! * otherwise, **error from upstream**: the tensor's own rounding step
//!   would allow far more than it reaches (its step-noise SQNR is
//!   [`UPSTREAM_DB`] above the measured one): the error comes from the
//!   layers before it.
//!
//! Keeping float is always `--keep-float NODE` or the automatic fallback
//! (`--target-sqnr DB`), which finds such nodes by measurement; with
//! `--promote 16` the fallback gives them 16-bit activations instead.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::calib::Stats;
use crate::quant::params::ActParams;
use crate::sensitivity::TensorError;

/// Tensors at or above this SQNR are not diagnosed.
pub const POOR_DB: f64 = 30.0;
/// At most this many tensors are diagnosed, the worst first.
pub const MAX: usize = 8;
/// Largest / median channel magnitude that counts as outlier channels.
pub const OUTLIER_RATIO: f64 = 8.0;
/// 99.9% of values within this fraction of the range counts as a wide
/// dynamic range.
pub const NARROW: f64 = 1.0 / 16.0;
/// Fraction of values outside the clip range that counts as a clipped tail.
pub const CLIPPED: f64 = 1e-3;
/// Own step-noise SQNR this far above the measured one: error from upstream.
pub const UPSTREAM_DB: f64 = 12.0;

/// One tensor's diagnosis.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Diagnosis {
    pub tensor: String,
    /// The op producing it.
    pub op: String,
    pub sqnr_db: f64,
    /// What the statistics show, each with the remedy onnxq offers.
    pub causes: Vec<Cause>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cause {
    /// `outlier-channels`, `wide-range`, `clipped-tail`, `saturating`,
    /// `upstream`.
    pub kind: String,
    pub detail: String,
    pub remedy: String,
}

/// The diagnoses of the worst quantized tensors among `errors`.
pub fn diagnose(
    errors: &[TensorError],
    stats: &Stats,
    params: &BTreeMap<String, ActParams>,
    quantized: &BTreeSet<String>,
) -> Vec<Diagnosis> {
    let mut poor: Vec<&TensorError> = errors
        .iter()
        .filter(|e| quantized.contains(&e.tensor) && e.sqnr_db.is_finite() && e.sqnr_db < POOR_DB)
        .collect();
    poor.sort_by(|a, b| {
        a.sqnr_db
            .total_cmp(&b.sqnr_db)
            .then(a.tensor.cmp(&b.tensor))
    });
    poor.into_iter()
        .take(MAX)
        .map(|e| Diagnosis {
            tensor: e.tensor.clone(),
            op: e.op.clone(),
            sqnr_db: e.sqnr_db,
            causes: causes(e, stats, params.get(&e.tensor)),
        })
        .collect()
}

fn causes(e: &TensorError, stats: &Stats, p: Option<&ActParams>) -> Vec<Cause> {
    let mut out = Vec::new();
    let keep = "keep its reader float (--keep-float, or --target-sqnr for the automatic fallback), or give it 16 bits (--target-sqnr with --promote 16)"
        .to_string();
    if let Some(cm) = stats.means.get(&e.tensor) {
        let mut mags: Vec<f64> = cm
            .absmax
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if mags.len() >= 4 {
            mags.sort_by(f64::total_cmp);
            let median = mags[mags.len() / 2];
            let top = mags[mags.len() - 1];
            if median > 0.0 && top >= OUTLIER_RATIO * median {
                let c = cm.absmax.iter().position(|&x| x == top).unwrap_or(0);
                out.push(Cause {
                    kind: "outlier-channels".into(),
                    detail: format!(
                        "channel {c} reaches {top:.4}, {:.0}x the median channel's {median:.4}: the shared scale leaves the other channels few codes",
                        top / median
                    ),
                    remedy: format!("--equalize on moves channel ranges into the weights; or {keep}"),
                });
            }
        }
    }
    let Some(h) = stats.tensors.get(&e.tensor) else {
        return out;
    };
    let (lo, hi) = (h.min as f64, h.max as f64);
    let range = hi - lo;
    let bins: Vec<(f64, u64)> = h
        .bins()
        .into_iter()
        .map(|b| (b.center(), b.count))
        .collect();
    let total: u64 = bins.iter().map(|b| b.1).sum();
    if range > 0.0 && total > 0 {
        // Smallest window holding 99.9% of the values, from the
        // histogram's sorted bin centres.
        let keep_n = (total as f64 * 0.999).ceil() as u64;
        let mut best = range;
        let mut j = 0usize;
        let mut inside = 0u64;
        for i in 0..bins.len() {
            while j < bins.len() && inside < keep_n {
                inside += bins[j].1;
                j += 1;
            }
            if inside >= keep_n {
                best = best.min(bins[j - 1].0 - bins[i].0);
            }
            inside -= bins[i].1;
        }
        if best <= NARROW * range {
            out.push(Cause {
                kind: "wide-range".into(),
                detail: format!(
                    "99.9% of values lie within {best:.4} of a [{lo:.4}, {hi:.4}] range: a few extremes set the step"
                ),
                remedy: format!("a clipping range (--method percentile or mse); or {keep}"),
            });
        }
        if let Some(p) = p {
            let (clo, chi) = p.clip;
            let beyond: u64 = bins
                .iter()
                .filter(|(c, _)| *c < clo || *c > chi)
                .map(|b| b.1)
                .sum();
            let frac = beyond as f64 / total as f64;
            if frac > CLIPPED {
                out.push(Cause {
                    kind: "clipped-tail".into(),
                    detail: format!(
                        "the range [{clo:.4}, {chi:.4}] cuts off {:.2}% of the values (observed [{lo:.4}, {hi:.4}])",
                        100.0 * frac
                    ),
                    remedy: format!("the full range (--method minmax); or {keep}"),
                });
            }
        }
        let ends: u64 = bins
            .iter()
            .filter(|(c, _)| *c <= lo + range / 64.0 || *c >= hi - range / 64.0)
            .map(|b| b.1)
            .sum();
        let saturating_op = matches!(
            e.op.as_str(),
            "Sigmoid" | "Tanh" | "Softmax" | "HardSigmoid"
        );
        if saturating_op || ends as f64 >= total as f64 / 3.0 {
            out.push(Cause {
                kind: "saturating".into(),
                detail: format!(
                    "a saturating {}: {:.0}% of the values sit at the ends of the range",
                    if saturating_op {
                        e.op.as_str()
                    } else {
                        "activation"
                    },
                    100.0 * ends as f64 / total as f64
                ),
                remedy: keep.clone(),
            });
        }
        if out.is_empty() {
            if let Some(p) = p {
                // The tensor's own step noise (step²/12) against its power.
                let power: f64 =
                    bins.iter().map(|(c, n)| c * c * *n as f64).sum::<f64>() / total as f64;
                let step = p.affine.scale as f64;
                let own: f64 = 10.0 * (power / (step * step / 12.0)).log10();
                if own.is_finite() && own >= e.sqnr_db + UPSTREAM_DB {
                    out.push(Cause {
                        kind: "upstream".into(),
                        detail: format!(
                            "its own rounding allows {own:.1} dB; the error comes from the layers before it"
                        ),
                        remedy: "see the first tensors of lower SQNR upstream in the per-layer chart".into(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::hist::FloatHist;
    use crate::calib::ChannelMeans;
    use crate::quant::params::{fold, ActConfig};
    use crate::quant::range::Method;
    use crate::quant::QType;

    fn hist(xs: &[f32]) -> FloatHist {
        let mut h = FloatHist::new();
        h.observe(xs);
        h
    }

    fn error(tensor: &str, op: &str, db: f64) -> TensorError {
        TensorError {
            tensor: tensor.into(),
            op: op.into(),
            sqnr_db: db,
        }
    }

    fn kinds(d: &Diagnosis) -> Vec<&str> {
        d.causes.iter().map(|c| c.kind.as_str()).collect()
    }

    #[test]
    fn names_the_causes_the_statistics_show() {
        // "wide": 10 000 values in [0, 0.1] and a few at 10.
        let mut wide: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 1000.0).collect();
        wide.extend([10.0, 9.5, 9.8]);
        // "sig": a Sigmoid output piled at 0 and 1.
        let sig: Vec<f32> = (0..1000)
            .map(|i| if i % 2 == 0 { 0.0 } else { 1.0 })
            .collect();
        // "chan": one channel fifty times the others.
        let chan: Vec<f32> = (0..1000).map(|i| (i % 7) as f32 / 7.0).collect();
        // "fine": well spread, its error from upstream.
        let fine: Vec<f32> = (0..1000).map(|i| (i % 200) as f32 / 100.0 - 1.0).collect();
        let mut stats = Stats {
            model_hash: String::new(),
            data_hash: String::new(),
            samples: 1,
            input_shapes: BTreeMap::new(),
            tensors: BTreeMap::new(),
            means: BTreeMap::new(),
        };
        let mut params = BTreeMap::new();
        for (name, xs) in [
            ("wide", &wide),
            ("sig", &sig),
            ("chan", &chan),
            ("fine", &fine),
        ] {
            let h = hist(xs);
            let cfg = ActConfig {
                method: Method::Minmax,
                qtype: QType::U8,
                symmetric: false,
                reduce_range: false,
                pow2: false,
            };
            params.insert(name.to_string(), fold(&h, &cfg));
            stats.tensors.insert(name.to_string(), h);
        }
        stats.means.insert(
            "chan".into(),
            ChannelMeans {
                axis: 1,
                mean: vec![0.0; 5],
                absmax: vec![1.0, 1.1, 0.9, 1.0, 50.0],
                min: vec![],
                max: vec![],
                meansq: vec![],
            },
        );
        let errors = vec![
            error("wide", "Relu", 12.0),
            error("sig", "Sigmoid", 15.0),
            error("chan", "Conv", 18.0),
            error("fine", "Add", 10.0),
            error("good", "Conv", 45.0),
        ];
        let quantized: BTreeSet<String> = ["wide", "sig", "chan", "fine", "good"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let d = diagnose(&errors, &stats, &params, &quantized);
        // Worst first; the tensor above POOR_DB is left alone.
        let names: Vec<&str> = d.iter().map(|d| d.tensor.as_str()).collect();
        assert_eq!(names, ["fine", "wide", "sig", "chan"]);
        assert_eq!(kinds(&d[0]), ["upstream"]);
        assert!(kinds(&d[1]).contains(&"wide-range"), "{:?}", d[1]);
        assert!(kinds(&d[2]).contains(&"saturating"), "{:?}", d[2]);
        assert!(kinds(&d[3]).contains(&"outlier-channels"), "{:?}", d[3]);
        assert!(d[3].causes[0].detail.contains("channel 4"), "{:?}", d[3]);
        assert!(d[3].causes[0].remedy.contains("--equalize on"));
    }
}
