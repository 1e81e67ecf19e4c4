//! Evaluation against the original: run both models on the same samples and
//! measure, per output, how close the quantized one stays.
//!
//! * SQNR in dB, pooled over all samples: `10·log10(Σref² / Σ(q−ref)²)`
//!   (200 when identical);
//! * mean per-sample cosine similarity of the flattened output;
//! * maximum absolute error;
//! * top-1 agreement along the last axis when it looks like class scores
//!   (a rank-2 `[N, C]` output, or non-negative rows summing to one);
//! * exact match for integer outputs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::calib::data::{input_specs, DataError, DataSet};
use crate::ir::Model;
use crate::runtime::{par_map, RunnerCache, RuntimeError};
use crate::tensorio::HostTensor;

/// SQNR reported for bit-identical outputs.
pub const IDENTICAL_DB: f64 = 200.0;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OutputReport {
    pub name: String,
    pub samples: usize,
    /// `None` for integer outputs.
    pub sqnr_db: Option<f64>,
    pub cosine_mean: Option<f64>,
    pub cosine_min: Option<f64>,
    pub max_abs_err: Option<f64>,
    /// Fraction of rows whose argmax agrees, when the output looks like classes.
    pub top1_agreement: Option<f64>,
    /// Fraction of samples identical, for integer outputs.
    pub exact_match: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Validation {
    pub data: String,
    pub samples: usize,
    pub outputs: Vec<OutputReport>,
}

impl Validation {
    /// Worst SQNR over float outputs.
    pub fn min_sqnr(&self) -> Option<f64> {
        self.outputs
            .iter()
            .filter_map(|o| o.sqnr_db)
            .reduce(f64::min)
    }
    pub fn min_cosine(&self) -> Option<f64> {
        self.outputs
            .iter()
            .filter_map(|o| o.cosine_mean)
            .reduce(f64::min)
    }

    /// A table for the terminal.
    pub fn table(&self) -> String {
        let mut s = format!(
            "validation on {} sample(s) of {}\n",
            self.samples, self.data
        );
        s.push_str("  output                          SQNR dB   cos mean   cos min   max |err|   top-1 agree\n");
        for o in &self.outputs {
            let f = |v: Option<f64>, p: usize| {
                v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into())
            };
            if let Some(e) = o.exact_match {
                s.push_str(&format!("  {:<30} exact match {:.1}%\n", o.name, e * 100.0));
                continue;
            }
            s.push_str(&format!(
                "  {:<30} {:>8} {:>10} {:>9} {:>11} {:>13}\n",
                o.name,
                f(o.sqnr_db, 2),
                f(o.cosine_mean, 5),
                f(o.cosine_min, 5),
                o.max_abs_err
                    .map(|x| format!("{x:.4e}"))
                    .unwrap_or_else(|| "-".into()),
                o.top1_agreement
                    .map(|x| format!("{:.1}%", x * 100.0))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{which} model, sample {sample}: {source}")]
    Runtime {
        which: &'static str,
        sample: String,
        source: RuntimeError,
    },
    #[error("the models differ in outputs: {orig:?} vs {quant:?}")]
    Outputs {
        orig: Vec<String>,
        quant: Vec<String>,
    },
}

#[derive(Default)]
struct Acc {
    ref2: f64,
    err2: f64,
    cos_sum: f64,
    cos_min: f64,
    cos_n: usize,
    max_abs: f64,
    top1_hits: u64,
    top1_rows: u64,
    classes: bool,
    int_same: usize,
    is_int: bool,
    n: usize,
}

fn looks_like_classes(shape: &[usize], data: &[f32]) -> bool {
    let Some(&c) = shape.last() else { return false };
    if c < 2 {
        return false;
    }
    if shape.len() == 2 && c <= 1000 {
        return true;
    }
    // Probability rows: non-negative, each summing to one.
    data.chunks(c).take(64).all(|row| {
        let s: f32 = row.iter().sum();
        row.iter().all(|&x| x >= 0.0) && (s - 1.0).abs() < 1e-2
    })
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Concrete shapes for symbolic input dims (`--input-shape`): random
/// samples are drawn at them.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// Compares `quant` against `orig` on every sample of `data`, running
/// samples on up to `threads` threads (the result does not depend on it).
pub fn validate(
    orig: &Model,
    quant: &Model,
    data: &DataSet,
    threads: usize,
) -> Result<Validation, ValidateError> {
    Reference::new(orig, data, threads, &Shapes::new())?.score(quant)
}

/// The original model's outputs on a data set, computed once, so that many
/// candidates (per-node sensitivity, fallback search) are scored against
/// them without rerunning the float model.
pub struct Reference {
    pub data: DataSet,
    threads: usize,
    samples: Vec<RefSample>,
}

/// Named tensors: a sample's inputs or a model's outputs.
type Named = Vec<(String, HostTensor)>;

/// One reference sample: its label, inputs and the original's outputs.
type RefSample = (String, Named, Named);

impl Reference {
    /// The original's outputs on `data`, with random samples drawn at
    /// `shapes` (the `--input-shape` calibration used).
    pub fn new(
        orig: &Model,
        data: &DataSet,
        threads: usize,
        shapes: &Shapes,
    ) -> Result<Reference, ValidateError> {
        let specs = input_specs(orig);
        let mut inputs = Vec::with_capacity(data.len());
        for i in 0..data.len() {
            inputs.push((data.sources[i].label(), data.load(i, &specs, shapes)?));
        }
        let ro = RunnerCache::new(orig, vec![]);
        let outputs = par_map(inputs.len(), threads, |i| {
            let (label, x) = &inputs[i];
            ro.run(x).map_err(|source| ValidateError::Runtime {
                which: "original",
                sample: label.clone(),
                source,
            })
        })?;
        Ok(Reference {
            data: data.clone(),
            threads,
            samples: inputs
                .into_iter()
                .zip(outputs)
                .map(|((label, x), y)| (label, x, y))
                .collect(),
        })
    }

    /// A reference from float outputs already computed (by calibration) on
    /// `data`, in sample order.
    pub fn from_outputs(
        orig: &Model,
        data: &DataSet,
        threads: usize,
        shapes: &Shapes,
        outputs: Vec<Vec<(String, HostTensor)>>,
    ) -> Result<Reference, ValidateError> {
        let specs = input_specs(orig);
        let mut samples = Vec::with_capacity(data.len());
        for (i, y) in outputs.into_iter().enumerate().take(data.len()) {
            let x = data.load(i, &specs, shapes)?;
            samples.push((data.sources[i].label(), x, y));
        }
        Ok(Reference {
            data: data.clone(),
            threads,
            samples,
        })
    }

    /// Scores a candidate against the reference outputs. Samples run in
    /// parallel; they are compared in order, so the figures do not depend
    /// on the thread count.
    pub fn score(&self, quant: &Model) -> Result<Validation, ValidateError> {
        Ok(self.score_spaces(quant, &[])?.0)
    }

    /// [`Reference::score`], and a second comparison in which the outputs
    /// named in `logits` (probabilities: Softmax or Sigmoid results) are
    /// compared as log-odds: a confident classifier's probabilities round
    /// to the same float whatever the quantization (both candidates score
    /// the cap), while its log-probabilities still tell them apart. One
    /// run of the candidate serves both.
    pub fn score_spaces(
        &self,
        quant: &Model,
        logits: &[(String, Probability)],
    ) -> Result<(Validation, Validation), ValidateError> {
        let rq = RunnerCache::new(quant, vec![]).validating();
        let outputs = par_map(self.samples.len(), self.threads, |i| {
            let (label, inputs, _) = &self.samples[i];
            rq.run(inputs).map_err(|source| ValidateError::Runtime {
                which: "quantized",
                sample: label.clone(),
                source,
            })
        })?;
        let mut accs: Vec<(String, Acc)> = Vec::new();
        let mut log_accs: Vec<(String, Acc)> = Vec::new();
        for ((_, _, a), b) in self.samples.iter().zip(&outputs) {
            compare_sample(&mut accs, a, b)?;
            if !logits.is_empty() {
                compare_sample(&mut log_accs, &to_logits(a, logits), &to_logits(b, logits))?;
            }
        }
        let plain = finish(&self.data, accs);
        let log = if logits.is_empty() {
            plain.clone()
        } else {
            finish(&self.data, log_accs)
        };
        Ok((plain, log))
    }
}

/// How an output holds probabilities, for [`Reference::score_spaces`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Probability {
    /// A Softmax result: compared as `ln p`.
    Softmax,
    /// A Sigmoid result: compared as `ln(p / (1 − p))`.
    Sigmoid,
}

/// The outputs of `m` that are probabilities (produced by a Softmax or a
/// Sigmoid), by name.
pub fn probability_outputs(m: &Model) -> Vec<(String, Probability)> {
    let g = &m.graph;
    g.outputs()
        .iter()
        .filter_map(|p| {
            let node = g.producer_node(p.value);
            let kind = match node.op_type() {
                "Softmax" => Probability::Softmax,
                "Sigmoid" => Probability::Sigmoid,
                _ => return None,
            };
            node.domain()
                .is_empty()
                .then(|| (g.name(p.value).to_string(), kind))
        })
        .collect()
}

/// `outputs` with the probability outputs in `logits` mapped to log-odds
/// (probabilities clamped to f32's normal range first, so 0 and 1 stay
/// finite).
fn to_logits(outputs: &[(String, HostTensor)], logits: &[(String, Probability)]) -> Named {
    const TINY: f64 = 1e-30;
    outputs
        .iter()
        .map(|(name, t)| {
            let Some((_, kind)) = logits.iter().find(|(n, _)| n == name) else {
                return (name.clone(), t.clone());
            };
            let HostTensor::F32(a) = t else {
                return (name.clone(), t.clone());
            };
            let a = a.mapv(|p| {
                let p = (p as f64).clamp(TINY, 1.0);
                let v = match kind {
                    Probability::Softmax => p.ln(),
                    Probability::Sigmoid => (p / (1.0 - p).max(TINY)).ln(),
                };
                v as f32
            });
            (name.clone(), HostTensor::F32(a))
        })
        .collect()
}

fn compare_sample(
    accs: &mut Vec<(String, Acc)>,
    a: &[(String, HostTensor)],
    b: &[(String, HostTensor)],
) -> Result<(), ValidateError> {
    {
        if a.len() != b.len() {
            return Err(ValidateError::Outputs {
                orig: a.iter().map(|x| x.0.clone()).collect(),
                quant: b.iter().map(|x| x.0.clone()).collect(),
            });
        }
        if accs.is_empty() {
            *accs = a
                .iter()
                .map(|(n, _)| {
                    (
                        n.clone(),
                        Acc {
                            cos_min: f64::INFINITY,
                            ..Default::default()
                        },
                    )
                })
                .collect();
        }
        for (k, ((_, ta), (_, tb))) in a.iter().zip(b).enumerate() {
            let acc = &mut accs[k].1;
            acc.n += 1;
            let float = matches!(
                ta,
                HostTensor::F32(_) | HostTensor::F64(_) | HostTensor::F16(_)
            );
            if !float {
                acc.is_int = true;
                if ta == tb {
                    acc.int_same += 1;
                }
                continue;
            }
            let (x, y) = (ta.to_f32(), tb.to_f32());
            let xs: Vec<f32> = x.iter().copied().collect();
            let ys: Vec<f32> = y.iter().copied().collect();
            if xs.len() != ys.len() {
                acc.err2 += f64::INFINITY;
                continue;
            }
            let (mut dot, mut nx, mut ny) = (0f64, 0f64, 0f64);
            for (&p, &q) in xs.iter().zip(&ys) {
                let (p, q) = (p as f64, q as f64);
                acc.ref2 += p * p;
                acc.err2 += (q - p) * (q - p);
                acc.max_abs = acc.max_abs.max((q - p).abs());
                dot += p * q;
                nx += p * p;
                ny += q * q;
            }
            let cos = if nx == 0.0 && ny == 0.0 {
                1.0
            } else if nx == 0.0 || ny == 0.0 {
                0.0
            } else {
                dot / (nx.sqrt() * ny.sqrt())
            };
            acc.cos_sum += cos;
            acc.cos_min = acc.cos_min.min(cos);
            acc.cos_n += 1;
            if acc.n == 1 {
                acc.classes = looks_like_classes(x.shape(), &xs);
            }
            if acc.classes {
                let c = *x
                    .shape()
                    .last()
                    .expect("invariant: classes have a last axis");
                for (ra, rb) in xs.chunks(c).zip(ys.chunks(c)) {
                    acc.top1_rows += 1;
                    acc.top1_hits += (argmax(ra) == argmax(rb)) as u64;
                }
            }
        }
    }
    Ok(())
}

fn finish(data: &DataSet, accs: Vec<(String, Acc)>) -> Validation {
    let outputs = accs
        .into_iter()
        .map(|(name, a)| {
            if a.is_int {
                return OutputReport {
                    name,
                    samples: a.n,
                    sqnr_db: None,
                    cosine_mean: None,
                    cosine_min: None,
                    max_abs_err: None,
                    top1_agreement: None,
                    exact_match: Some(a.int_same as f64 / a.n.max(1) as f64),
                };
            }
            let sqnr = if a.err2 == 0.0 {
                IDENTICAL_DB
            } else if a.ref2 == 0.0 || !a.err2.is_finite() {
                f64::NEG_INFINITY
            } else {
                (10.0 * (a.ref2 / a.err2).log10()).min(IDENTICAL_DB)
            };
            OutputReport {
                name,
                samples: a.n,
                sqnr_db: Some(sqnr),
                cosine_mean: (a.cos_n > 0).then(|| a.cos_sum / a.cos_n as f64),
                cosine_min: (a.cos_n > 0).then_some(a.cos_min),
                max_abs_err: Some(a.max_abs),
                top1_agreement: (a.classes && a.top1_rows > 0)
                    .then(|| a.top1_hits as f64 / a.top1_rows as f64),
                exact_match: None,
            }
        })
        .collect();
    Validation {
        data: data.root.clone(),
        samples: data.len(),
        outputs,
    }
}
