//! Whether SmoothQuant runs: `--smooth auto` tries it and keeps it where
//! it measurably helps.
//!
//! Smoothing divides outlier activation channels into the weights of the
//! MatMuls that read them (`smooth-quant`); the smoothed graph has new
//! activations, so calibration runs again after it. Whether it pays
//! depends on the model: on MiniLM-L3 it lifts the output SQNR from 19.9
//! to 23.5 dB, while a convolutional model has nothing to smooth. Under
//! `auto` both graphs are scored as `--method auto` scores methods (each
//! with its best method, on the float outputs recorded on the first
//! calibration samples), and the smoothed one is kept only when it is
//! better by more than [`MARGIN_DB`]. The choice prints as
//! `smooth-quant{alpha=…},calibrate` in the pipeline, so a replay makes no
//! second trial.

use super::method::{self, Choice};
use super::{build, QuantizeError, QuantizeOptions, Smooth};
use crate::calib::Stats;
use crate::ir::Model;
use crate::passes::{PassContext, Pipeline};
use crate::quant::range::Method;

/// A smoothed graph must beat the plain one by more than this (dB of mean
/// output SQNR) to be kept: below it the difference is sampling noise and
/// the plain graph is simpler.
pub const MARGIN_DB: f64 = 0.1;

/// What smoothing did, for the remarks and the driver.
pub struct SmoothChoice {
    /// The passes that ran (`smooth-quant{…},calibrate`), empty when none.
    pub pipeline: String,
    /// The method choice on the graph that was kept (`None` when the
    /// method was given and nothing needed scoring).
    pub method: Option<Choice>,
}

/// Groups past this many are smoothed all or none: the group-by-group
/// search builds and scores the model once per group.
pub const GREEDY_MAX: usize = 48;

/// A group is left plain when the score without it is at most this much
/// lower (dB): equal within the scores' rounding, and one Mul cheaper.
pub const TOLERANCE_DB: f64 = 0.02;

fn smooth_pipeline(alpha: f64, skip: &[String]) -> String {
    let mut p = crate::passes::smooth_quant::Options {
        alpha,
        skip: skip.to_vec(),
    };
    p.skip.sort();
    let json = serde_json::to_value(&p).expect("invariant: options serialize");
    let pass = crate::passes::smooth_quant::SmoothQuant::from_options(json)
        .expect("invariant: alpha checked");
    let mut pl = Pipeline::default();
    pl.push(Box::new(pass));
    format!("{pl},calibrate")
}

/// Decides and applies smoothing on the calibrated `m`; `methods` are the
/// calibration methods still to choose among (one when it was given).
pub fn apply(
    m: &mut Model,
    cx: &mut PassContext,
    opts: &QuantizeOptions,
    methods: &[Method],
) -> Result<SmoothChoice, QuantizeError> {
    let auto_method = opts.method.is_none();
    let plain_choice = |m: &Model, cx: &PassContext| -> Result<Option<Choice>, QuantizeError> {
        if auto_method {
            method::choose(m, cx, opts, methods)
        } else {
            Ok(None)
        }
    };
    let stats = cx
        .analyses
        .stats
        .clone()
        .expect("invariant: calibrate ran before smoothing");
    let has_groups = !crate::passes::smooth_quant::groups(m, &stats).is_empty();
    let has_data = cx.inputs().calib_data.is_some();
    let none = |method| SmoothChoice {
        pipeline: String::new(),
        method,
    };
    match opts.smooth {
        Smooth::Off => Ok(none(plain_choice(m, cx)?)),
        _ if !has_groups => Ok(none(plain_choice(m, cx)?)),
        Smooth::Alpha(a) => {
            if !has_data {
                return Err(QuantizeError::Usage(format!(
                    "--smooth {a} needs calibration data (--calib DIR): smoothing changes the graph, which is then calibrated again"
                )));
            }
            let p = build::run(m, cx, Pipeline::parse(&smooth_pipeline(a, &[]))?)?;
            Ok(SmoothChoice {
                pipeline: p,
                method: plain_choice(m, cx)?,
            })
        }
        Smooth::Auto => {
            if !has_data {
                cx.remark(
                    "quantize",
                    "<model>",
                    "smooth-quant not tried: choosing it needs calibration data (--calib DIR), not only statistics",
                );
                return Ok(none(None));
            }
            auto(m, cx, opts, methods)
        }
    }
}

/// A copy of `m` smoothed (but for `skip`) and calibrated again.
struct Trial {
    m: Model,
    cx: PassContext,
    pipeline: String,
}

fn trial(m: &Model, cx: &PassContext, skip: &[String]) -> Result<Trial, QuantizeError> {
    let mut tm = m.clone();
    let mut tcx = PassContext::resume(cx.inputs().clone(), cx.analyses.clone());
    let p = build::run(
        &mut tm,
        &mut tcx,
        Pipeline::parse(&smooth_pipeline(Smooth::AUTO_ALPHA, skip))?,
    )?;
    Ok(Trial {
        m: tm,
        cx: tcx,
        pipeline: p,
    })
}

/// The statistics of every activation either graph has: smoothing renames
/// what it changes, so the smoothed graph's statistics and the plain
/// graph's describe any mix of smoothed and plain groups (the tensors after
/// a smoothed MatMul differ only by float rounding).
fn merged(plain: &Stats, smoothed: &Stats) -> Stats {
    let mut s = smoothed.clone();
    for (k, v) in &plain.tensors {
        s.tensors.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &plain.means {
        s.means.entry(k.clone()).or_insert_with(|| v.clone());
    }
    s
}

/// `--smooth auto`: every group smoothed; then, group by group in graph
/// order, a group is left plain where that scores no worse (a smoothed
/// group the scores cannot tell from a plain one costs a Mul for nothing);
/// the result is kept when it beats the plain graph by [`MARGIN_DB`].
fn auto(
    m: &mut Model,
    cx: &mut PassContext,
    opts: &QuantizeOptions,
    methods: &[Method],
) -> Result<SmoothChoice, QuantizeError> {
    let auto_method = opts.method.is_none();
    let none = |method| SmoothChoice {
        pipeline: String::new(),
        method,
    };
    let Some(plain) = method::choose(m, cx, opts, methods)? else {
        return Ok(none(None));
    };
    let plain_stats = cx.analyses.stats.clone().expect("invariant: calibrated");
    let names: Vec<String> = crate::passes::smooth_quant::groups(m, &plain_stats)
        .iter()
        .map(|grp| m.graph.name(grp.x).to_string())
        .collect();
    let all = trial(m, cx, &[])?;
    let Some(all_choice) = method::choose(&all.m, &all.cx, opts, methods)? else {
        return Ok(none(auto_method.then_some(plain)));
    };
    let mut skip: Vec<String> = Vec::new();
    let mut best = all_choice.sqnr;
    if names.len() <= GREEDY_MAX {
        let stats = std::sync::Arc::new(merged(
            &plain_stats,
            all.cx
                .analyses
                .stats
                .as_ref()
                .expect("invariant: calibrated"),
        ));
        // The same for the held-out statistics choices are scored with.
        let held = match (&cx.analyses.holdout_stats, &all.cx.analyses.holdout_stats) {
            (Some(p), Some(s)) => Some(std::sync::Arc::new(merged(p, s))),
            _ => None,
        };
        for name in &names {
            let mut s2 = skip.clone();
            s2.push(name.clone());
            let mut tm = m.clone();
            let mut tcx = PassContext::resume(cx.inputs().clone(), cx.analyses.clone());
            tcx.analyses.stats = Some(stats.clone());
            tcx.analyses.holdout_stats = held.clone();
            let p = smooth_pipeline(Smooth::AUTO_ALPHA, &s2);
            let p = p.trim_end_matches(",calibrate");
            build::run(&mut tm, &mut tcx, Pipeline::parse(p)?)?;
            tcx.analyses.stats = Some(stats.clone());
            tcx.analyses.holdout_stats = held.clone();
            let Some(c) = method::choose(&tm, &tcx, opts, &[all_choice.method])? else {
                break;
            };
            if c.sqnr >= best - TOLERANCE_DB {
                skip = s2;
                best = c.sqnr;
            }
        }
    }
    let kept = if skip.is_empty() {
        Some((all, all_choice))
    } else if skip.len() == names.len() {
        None
    } else {
        let t = trial(m, cx, &skip)?;
        method::choose(&t.m, &t.cx, opts, methods)?.map(|c| (t, c))
    };
    let (t, choice) = match kept {
        Some((t, c)) if c.sqnr > plain.sqnr + MARGIN_DB => (t, c),
        other => {
            let why = match other {
                Some((_, c)) => format!("mean output SQNR {}", method::describe(c.sqnr)),
                None => "no MatMul input scored better smoothed".into(),
            };
            cx.remark(
                "quantize",
                "<model>",
                format!(
                    "smooth-quant tried, not kept: {why}, against {} without, on {} calibration sample(s)",
                    method::describe(plain.sqnr),
                    plain.samples
                ),
            );
            return Ok(none(auto_method.then_some(plain)));
        }
    };
    cx.remark(
        "quantize",
        "<model>",
        format!(
            "smooth-quant kept on {} of {} MatMul inputs: mean output SQNR {} against {} without, on {} calibration sample(s)",
            names.len() - skip.len(),
            names.len(),
            method::describe(choice.sqnr),
            method::describe(plain.sqnr),
            choice.samples
        ),
    );
    let remarks = cx.take_remarks();
    *m = t.m;
    let (inputs, analyses, smooth_remarks) = t.cx.into_parts();
    *cx = PassContext::resume(inputs, analyses);
    cx.extend_remarks(remarks);
    cx.extend_remarks(smooth_remarks);
    Ok(SmoothChoice {
        pipeline: t.pipeline,
        method: auto_method.then_some(choice),
    })
}
