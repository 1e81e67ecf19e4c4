//! `--method auto`: the calibration method chosen per model by measuring.
//!
//! Which clip-range rule suits a model is not knowable in advance: on the
//! seven models this project is developed on the best one was mse for one,
//! percentile for three, entropy for two and minmax for one, and the wrong
//! one costs up to 7 dB. The statistics (histograms) serve every method,
//! so choosing costs no second calibration: each candidate method folds
//! the same statistics into ranges, the quantized model is built with the
//! placement the options ask for (every compute op the target fuses; speed
//! selection runs after the choice), and it is scored against the float
//! outputs calibration already recorded on the first calibration samples.
//! The highest mean output SQNR wins; ties go to the earlier candidate.
//! The choice is a plain `fold-calibration{method=…}` in the printed
//! pipeline, so a replay needs no second search.

use super::pipeline;
use super::{QuantizeError, QuantizeOptions};
use crate::ir::Model;
use crate::passes::context::Inputs;
use crate::passes::{PassContext, PassManager, Pipeline};
use crate::quant::range::Method;
use crate::validate::{Reference, Validation};

/// The methods tried, in tie-break order.
pub fn candidates() -> [Method; 5] {
    [
        Method::Mse,
        Method::Percentile { p: 99.99 },
        Method::Percentile { p: 99.999 },
        Method::Entropy,
        Method::Minmax,
    ]
}

/// Calibration samples a choice is scored on, at most: a small output (a
/// classifier's few probabilities) needs several samples for its score to
/// mean anything.
pub const SAMPLES: usize = 8;

/// Calibration samples a choice is scored on, at least (when there are
/// that many).
const MIN_SAMPLES: usize = 4;

/// Output values a score should rest on: samples are added, up to
/// [`SAMPLES`], until their outputs hold this many (a detector's 640×480
/// map reaches it in one sample, and is scored on [`MIN_SAMPLES`]).
const VALUES: usize = 1 << 18;

/// SQNR above this counts as this much: past it every method is
/// indistinguishable from float, and one exact output must not outvote
/// the others.
const CAP_DB: f64 = 80.0;

/// What the search found: the method and each candidate's score.
pub struct Choice {
    pub method: Method,
    /// The winner's score (see [`effective`]): what methods are ranked by.
    pub score: f64,
    /// The winner's mean capped output SQNR ([`score`]) alone: what graph
    /// rewrites (smoothing, equalization) are judged by, the log-odds
    /// tie-break being too weak a signal to change a graph on (on PP-OCR's
    /// classifier it preferred the plain graph by 0.3 dB where the
    /// evaluation set put the equalized one 10 dB ahead).
    pub sqnr: f64,
    pub scores: Vec<(Method, f64)>,
    pub samples: usize,
}

impl Choice {
    pub fn summary(&self) -> String {
        let scores: Vec<String> = self
            .scores
            .iter()
            .map(|(m, s)| format!("{m} {}", describe(*s)))
            .collect();
        format!(
            "method auto chose {}: mean output SQNR on {} calibration sample(s): {}",
            self.method,
            self.samples,
            scores.join(", ")
        )
    }
}

/// The score candidates are compared by: the mean capped output SQNR
/// ([`score`]) of `plain`; where every output reaches the cap (a confident
/// classifier's probabilities, identical in float whatever the
/// quantization), the cap plus the mean SQNR of `log`, the same outputs
/// compared as log-odds, so that such candidates are still told apart.
/// `None` with no float output.
pub fn effective(plain: &Validation, log: &Validation) -> Option<f64> {
    let p = score(plain)?;
    if p < CAP_DB {
        return Some(p);
    }
    Some(CAP_DB + score(log).unwrap_or(0.0).max(0.0))
}

/// Whether two capped SQNR scores can tell their candidates apart: not
/// when both reach the cap.
pub fn informative(a: f64, b: f64) -> bool {
    a < CAP_DB || b < CAP_DB
}

/// A score as the remarks print it.
pub fn describe(score: f64) -> String {
    if score == CAP_DB {
        format!("{CAP_DB:.0} dB or more")
    } else if score > CAP_DB {
        format!(
            "above {CAP_DB:.0} dB ({:.2} dB as log-odds)",
            score - CAP_DB
        )
    } else {
        format!("{score:.2} dB")
    }
}

/// Mean over float outputs of the capped SQNR; `None` with no float output.
pub fn score(v: &Validation) -> Option<f64> {
    let s: Vec<f64> = v
        .outputs
        .iter()
        .filter_map(|o| o.sqnr_db)
        .map(|d| {
            if d.is_nan() {
                f64::NEG_INFINITY
            } else {
                d.min(CAP_DB)
            }
        })
        .collect();
    (!s.is_empty()).then(|| s.iter().sum::<f64>() / s.len() as f64)
}

/// The float outputs calibration recorded on the first calibration
/// samples of `cx`, as a reference to score candidates against (as many
/// samples as [`VALUES`] asks for, within [`MIN_SAMPLES`]..[`SAMPLES`]);
/// `None` without calibration data or recorded outputs.
pub fn reference(
    m: &Model,
    cx: &PassContext,
    opts: &QuantizeOptions,
    held: bool,
) -> Result<Option<(Reference, usize)>, QuantizeError> {
    let outputs = &cx.analyses.calib_outputs;
    let Some(data) = cx.inputs().calib_data.as_ref() else {
        return Ok(None);
    };
    let per_sample: usize = outputs
        .first()
        .map(|o| o.iter().map(|(_, t)| t.len()).sum())
        .unwrap_or(0);
    let wanted = VALUES
        .div_ceil(per_sample.max(1))
        .clamp(MIN_SAMPLES, SAMPLES);
    let mut k = outputs.len().min(wanted).min(data.len());
    if held && cx.analyses.held_out > 0 {
        // Per-tensor choices are many and each is kept on a small gain:
        // they are checked on twice the samples, all of them held out.
        k = cx
            .analyses
            .held_out
            .min(2 * wanted)
            .min(data.len())
            .min(outputs.len());
    }
    if k == 0 {
        return Ok(None);
    }
    let threads = opts.threads.unwrap_or_else(crate::runtime::default_threads);
    let reference = Reference::from_outputs(
        m,
        &data.take(k),
        threads,
        &cx.inputs().input_shapes,
        outputs[..k].to_vec(),
    )?;
    Ok(Some((reference, k)))
}

/// The mean capped output SQNR ([`score`]) of the model `choice` (the
/// `fold-calibration{…}[,select-speed{nodes=[…]}]` part of a pipeline)
/// and the tail build from `m` calibrated in `cx`, against `reference`;
/// `held`: ranges are folded from the held-out statistics
/// ([`for_scoring`]), for a `reference` on the held-out samples.
pub fn score_placed(
    m: &Model,
    cx: &PassContext,
    opts: &QuantizeOptions,
    reference: &Reference,
    choice: &str,
    held: bool,
) -> Result<Option<f64>, QuantizeError> {
    let mut q = m.clone();
    let analyses = if held {
        for_scoring(cx)
    } else {
        cx.analyses.clone()
    };
    let mut c = PassContext::resume(Inputs::default(), analyses);
    let mut p = Pipeline::parse(choice)?;
    p.append(pipeline::tail(&pipeline::insert_options(opts)));
    PassManager::new(p).run(&mut q, &mut c)?;
    Ok(score(&reference.score(&q)?))
}

/// `cx`'s analyses with the held-out statistics in place of the full ones
/// (when calibration kept them): what candidates are folded from when
/// they are scored on the held-out samples.
pub fn for_scoring(cx: &PassContext) -> crate::passes::context::Analyses {
    let mut a = cx.analyses.clone();
    if let Some(h) = &a.holdout_stats {
        a.stats = Some(h.clone());
    }
    a
}

/// Chooses the method for `m` (prepared and calibrated in `cx`) among
/// `methods` (tie-break order); `None` when nothing can score them (no
/// calibration data, or no float output).
pub fn choose(
    m: &Model,
    cx: &PassContext,
    opts: &QuantizeOptions,
    methods: &[Method],
) -> Result<Option<Choice>, QuantizeError> {
    let Some((reference, k)) = reference(m, cx, opts, false)? else {
        return Ok(None);
    };
    let insert = pipeline::insert_options(opts);
    let logits = crate::validate::probability_outputs(m);
    let mut scores = Vec::new();
    let mut sqnrs = Vec::new();
    for &method in methods {
        let mut q = m.clone();
        let mut c = PassContext::resume(Inputs::default(), cx.analyses.clone());
        let mut p = Pipeline::parse(&pipeline::fold_calibration(opts, method))?;
        p.append(pipeline::tail(&insert));
        PassManager::new(p).run(&mut q, &mut c)?;
        let (plain, log) = reference.score_spaces(&q, &logits)?;
        match (effective(&plain, &log), score(&plain)) {
            (Some(s), Some(q)) => {
                scores.push((method, s));
                sqnrs.push(q);
            }
            _ => return Ok(None),
        }
    }
    let best = scores
        .iter()
        .enumerate()
        .fold(None::<(usize, f64)>, |acc, (i, &(_, s))| match acc {
            Some((_, b)) if b >= s => acc,
            _ => Some((i, s)),
        })
        .ok_or_else(|| QuantizeError::Usage("no calibration method to choose from".into()))?;
    Ok(Some(Choice {
        method: scores[best.0].0,
        score: best.1,
        sqnr: sqnrs[best.0],
        scores,
        samples: k,
    }))
}
