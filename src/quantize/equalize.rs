//! Whether cross-layer equalization runs: `--equalize auto` tries it where
//! weights are per-tensor and keeps it where it measurably helps.
//!
//! Equalization (`equalize`) balances the channel ranges of consecutive
//! weighted layers so that one weight scale per tensor loses less, and
//! bias absorption (`absorb-bias`) then moves the activation offsets it
//! leaves into the next layer's bias. Both change the activations, so the
//! equalized graph is calibrated again. What it buys depends on the model
//! (measured with per-tensor weights, onnxq's validation on 32 evaluation
//! samples: PP-OCR's classifier 17.5 → 27.2 dB, Silero VAD 0.4 → 7.6 dB,
//! PP-OCR's recogniser 10.7 → 12.8 dB, but its detector 11.9 → 11.3 dB
//! and the orientation classifier 49.9 → 49.7: the activations a pair
//! shares can get harder to quantize as its weights get easier). So under
//! `auto` the decision waits until the ranges and the speed selection are
//! chosen, and both graphs are then scored with the placement the file
//! will have, on the float outputs recorded on the first calibration
//! samples; the equalized one is dropped when the plain graph scores
//! better by more than [`super::smooth::MARGIN_DB`]. Equalization is the
//! published default for per-tensor weights, so it stands unless measured
//! to hurt (a confident classifier's few calibration samples often cannot
//! tell the two apart). It is not tried where no compute op ended up int8
//! (tract keeps many convolution nets float): the int8 weights stored for
//! float ops have a scale per channel, which equalization can only
//! disturb. With per-channel weights every channel has its own scale
//! already, and `auto` does not try it.
//!
//! The choice prints as `equalize{…},dce,calibrate[,absorb-bias,calibrate]`
//! before the range and speed choice (which replays with its nodes
//! pinned), so a replay makes no second trial.

use super::method;
use super::{build, QuantizeError, QuantizeOptions};
use crate::ir::Model;
use crate::passes::{Changed, PassContext, PassManager, Pipeline};

/// Runs `pass` alone: its canonical form when it changed `m`.
fn changed(
    m: &mut Model,
    cx: &mut PassContext,
    pass: &str,
) -> Result<Option<String>, QuantizeError> {
    let mut pm = PassManager::new(Pipeline::parse(pass)?);
    let runs = pm.run(m, cx)?;
    Ok(runs
        .iter()
        .any(|r| r.changed == Changed::Yes)
        .then(|| pm.pipeline.to_string()))
}

/// Equalizes and calibrates `m` again, then absorbs biases (and calibrates
/// again when any moved): the pipeline that ran, `None` when no pair of
/// layers needed equalizing (nothing ran but the try).
fn equalized(m: &mut Model, cx: &mut PassContext) -> Result<Option<String>, QuantizeError> {
    let Some(eq) = changed(m, cx, "equalize")? else {
        return Ok(None);
    };
    let mut p = format!(
        "{eq},{}",
        build::run(m, cx, Pipeline::parse("dce,calibrate")?)?
    );
    if let Some(ab) = changed(m, cx, "absorb-bias")? {
        let again = build::run(m, cx, Pipeline::parse("calibrate")?)?;
        p = format!("{p},{ab},{again}");
    }
    Ok(Some(p))
}

/// Decides and applies equalization on the calibrated `m` once its ranges
/// and speed selection are chosen: `chosen` is that part of the pipeline in
/// canonical form (`fold-calibration{…}[,select-speed{nodes=[…]}]`), which
/// replays on the equalized graph without timing anything, so both graphs
/// are scored with the placement the file will have. Returns what to print
/// in place of `chosen`, `None` when the graph stays as it was.
pub fn apply(
    m: &mut Model,
    cx: &mut PassContext,
    opts: &QuantizeOptions,
    chosen: &str,
) -> Result<Option<String>, QuantizeError> {
    let wanted = match opts.equalize {
        Some(w) => w,
        None => !opts.per_channel,
    };
    if !wanted || opts.mode != super::Mode::Static {
        return Ok(None);
    }
    let has_data = cx.inputs().calib_data.is_some() && cx.inputs().stats.is_none();
    if !has_data {
        if opts.equalize == Some(true) {
            return Err(QuantizeError::Usage(
                "--equalize on needs calibration data (--calib DIR): equalizing changes the activations, which are then calibrated again".into(),
            ));
        }
        cx.remark(
            "quantize",
            "<model>",
            "equalize not tried: it needs calibration data (--calib DIR), not only statistics",
        );
        return Ok(None);
    }
    let none_int8 = cx.analyses.speed.as_ref().is_some_and(|s| s.kept == 0);
    if opts.equalize.is_none() && none_int8 {
        cx.remark(
            "quantize",
            "<model>",
            "equalize not tried: no compute op runs int8 here, and the weights stored as int8 for float ops have a scale per channel already",
        );
        return Ok(None);
    }
    let mut tm = m.clone();
    let mut tcx = PassContext::resume(cx.inputs().clone(), cx.analyses.clone());
    let Some(eq_pipeline) = equalized(&mut tm, &mut tcx)? else {
        return Ok(None);
    };
    let again = build::run(&mut tm, &mut tcx, Pipeline::parse(chosen)?)?;
    let printed = format!("{eq_pipeline},{again}");
    let keep = |m: &mut Model, cx: &mut PassContext, tm: Model, tcx: PassContext| {
        let remarks = cx.take_remarks();
        *m = tm;
        let (inputs, analyses, eq_remarks) = tcx.into_parts();
        *cx = PassContext::resume(inputs, analyses);
        cx.extend_remarks(remarks);
        cx.extend_remarks(eq_remarks);
    };
    if opts.equalize == Some(true) {
        keep(m, cx, tm, tcx);
        return Ok(Some(printed));
    }
    let Some((reference, samples)) = method::reference(m, cx, opts, false)? else {
        keep(m, cx, tm, tcx);
        return Ok(Some(printed));
    };
    let (Some(plain), Some(eq)) = (
        method::score_placed(m, cx, opts, &reference, chosen, false)?,
        method::score_placed(&tm, &tcx, opts, &reference, chosen, false)?,
    ) else {
        keep(m, cx, tm, tcx);
        return Ok(Some(printed));
    };
    let (verdict, kept) = if !method::informative(plain, eq) {
        (
            format!(
                "equalize kept: the {samples} calibration sample(s) cannot tell the two graphs apart (output SQNR {} with and without)",
                method::describe(eq)
            ),
            true,
        )
    } else if plain > eq + super::smooth::MARGIN_DB {
        (
            format!(
                "equalize tried, not kept: mean output SQNR {} against {} without, on {samples} calibration sample(s)",
                method::describe(eq),
                method::describe(plain)
            ),
            false,
        )
    } else {
        (
            format!(
                "equalize kept: mean output SQNR {} against {} without, on {samples} calibration sample(s)",
                method::describe(eq),
                method::describe(plain)
            ),
            true,
        )
    };
    cx.remark("quantize", "<model>", verdict);
    if !kept {
        return Ok(None);
    }
    keep(m, cx, tm, tcx);
    Ok(Some(printed))
}
