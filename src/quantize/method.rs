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

/// Calibration samples a choice is scored on, at most.
pub const SAMPLES: usize = 4;

/// SQNR above this counts as this much: past it every method is
/// indistinguishable from float, and one exact output must not outvote
/// the others.
const CAP_DB: f64 = 80.0;

/// What the search found: the method and each candidate's score.
pub struct Choice {
    pub method: Method,
    /// The winner's score.
    pub score: f64,
    pub scores: Vec<(Method, f64)>,
    pub samples: usize,
}

impl Choice {
    pub fn summary(&self) -> String {
        let scores: Vec<String> = self
            .scores
            .iter()
            .map(|(m, s)| format!("{m} {s:.2}"))
            .collect();
        format!(
            "method auto chose {}: mean output SQNR (dB) on {} calibration sample(s): {}",
            self.method,
            self.samples,
            scores.join(", ")
        )
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

/// Chooses the method for `m` (prepared and calibrated in `cx`) among
/// `methods` (tie-break order); `None` when nothing can score them (no
/// calibration data, or no float output).
pub fn choose(
    m: &Model,
    cx: &PassContext,
    opts: &QuantizeOptions,
    methods: &[Method],
) -> Result<Option<Choice>, QuantizeError> {
    let outputs = &cx.analyses.calib_outputs;
    let Some(data) = cx.inputs().calib_data.as_ref() else {
        return Ok(None);
    };
    let k = outputs.len().min(SAMPLES).min(data.len());
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
    let insert = pipeline::insert_options(opts);
    let mut scores = Vec::new();
    for &method in methods {
        let mut q = m.clone();
        let mut c = PassContext::resume(Inputs::default(), cx.analyses.clone());
        let mut p = Pipeline::parse(&pipeline::fold_calibration(opts, method))?;
        p.append(pipeline::tail(&insert));
        PassManager::new(p).run(&mut q, &mut c)?;
        match score(&reference.score(&q)?) {
            Some(s) => scores.push((method, s)),
            None => return Ok(None),
        }
    }
    let best = scores
        .iter()
        .fold(None::<(Method, f64)>, |acc, &(m, s)| match acc {
            Some((_, b)) if b >= s => acc,
            _ => Some((m, s)),
        })
        .ok_or_else(|| QuantizeError::Usage("no calibration method to choose from".into()))?;
    Ok(Some(Choice {
        method: best.0,
        score: best.1,
        scores,
        samples: k,
    }))
}
