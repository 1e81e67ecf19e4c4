//! Calibrating once and building quantized variants from it.
//!
//! [`calibrate`] runs the prepare and calibrate parts of the quantize
//! pipeline on the float model; [`Calibrated::build`] runs the tail on a
//! copy of the result, with a `keep-float` list: the full model, or one
//! with some nodes kept in float (sensitivity analysis, the automatic
//! fallback), without calibrating again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::inputs::{pass_inputs, Keep};
use super::{pipeline, QuantizeError, QuantizeOptions};
use crate::ir::Model;
use crate::passes::context::{Analyses, Inputs, Level, Remark};
use crate::passes::insert_qdq;
use crate::passes::{PassContext, PassManager, Pipeline};
use crate::plan::Decision;
use crate::quant::params::ActParams;
use crate::quant::range::Method;
use crate::tensorio::HostTensor;

/// A prepared, calibrated model and what the pipeline so far left.
pub struct Calibrated {
    /// The float model after the prepare and calibrate passes.
    pub prepared: Model,
    /// Statistics, activation parameters, coverage choice, interface.
    pub analyses: Analyses,
    /// The canonical pipeline that produced `prepared`.
    pub prefix: String,
    /// Remarks of the prepare and calibrate passes (notes only).
    pub remarks: Vec<Remark>,
    /// `insert-qdq` options before any fallback `keep-float`.
    pub insert: insert_qdq::Options,
    /// Calibration samples the statistics cover.
    pub samples: usize,
    /// `quantize-dynamic` options when the mode is dynamic (then `insert`
    /// is unused and there are no statistics).
    pub dynamic: Option<crate::passes::quantize_dynamic::Options>,
    /// The calibration method the ranges came from (what `--method auto`
    /// chose, or the one asked for).
    pub method: Method,
    /// The float graph's outputs on the first calibration samples (as many
    /// as validation uses by default), recorded while calibrating.
    pub float_outputs: Vec<Vec<(String, HostTensor)>>,
    /// Wall seconds of the prepare and calibrate parts.
    pub seconds: (f64, f64),
}

/// One quantized variant.
pub struct Built {
    pub model: Model,
    /// The tail pipeline that built it, in canonical form.
    pub tail: String,
    pub decisions: Vec<Decision>,
    pub remarks: Vec<Remark>,
    /// The activation tensors that got a Q/DQ pair.
    pub quantized_tensors: BTreeSet<String>,
}

/// Runs `pipeline` over `m` with `cx`, returning its canonical form as it
/// ran (passes that resolve their options, like `select-coverage`, print
/// what they chose).
pub fn run(
    m: &mut Model,
    cx: &mut PassContext,
    pipeline: Pipeline,
) -> Result<String, QuantizeError> {
    let mut pm = PassManager::new(pipeline);
    pm.run(m, cx)?;
    Ok(pm.pipeline.to_string())
}

/// Whether a graph rewrite is chosen by scoring it on the first
/// calibration samples (`--smooth auto`, `--equalize auto` with per-tensor
/// weights): their float outputs must be kept.
fn measured_choice(opts: &QuantizeOptions) -> bool {
    opts.smooth == super::Smooth::Auto || (opts.equalize.is_none() && !opts.per_channel)
}

/// The inputs `quantize` gives its pipeline.
fn quantize_inputs(float: &Model, opts: &QuantizeOptions) -> Result<Inputs, QuantizeError> {
    let keep = Keep {
        // minmax needs only exact ranges; every other method, and a saved
        // statistics file, needs the histograms.
        histograms: opts.method != Some(Method::Minmax) || opts.save_stats.is_some(),
        // Validation on the first calibration samples (the default) then
        // needs no second run of the float model.
        outputs: match &opts.val {
            None if opts.val_samples > 0 || opts.fidelity.is_some() => opts.val_samples.max(1),
            _ => 0,
        }
        .max(if opts.method.is_none() || measured_choice(opts) {
            super::method::SAMPLES
        } else {
            0
        }),
        data_hash: opts.save_stats.is_some(),
        model_hash: opts.save_stats.is_some(),
    };
    let inputs = pass_inputs(float, &opts.data_options(), keep)?;
    let dynamic = opts.mode == super::Mode::Dynamic;
    if !dynamic && inputs.stats.is_none() && inputs.calib_data.is_none() {
        return Err(QuantizeError::Calib(crate::calib::CalibError::NoData));
    }
    Ok(inputs)
}

/// Largest `K·N` of a constant MatMul weight for which tract's u8
/// (asymmetric) QLinearMatMul stays fast: past it tract recomputes the
/// weight's column sums on every run (2.6× slower than float on a 2048²
/// layer, `../shared/RUNTIMES.md`), where s8 symmetric activations avoid it.
const TRACT_U8_WEIGHT_LIMIT: i64 = 1 << 20;

/// The options with the activation type the target picks for this model,
/// when none was asked for: on tract, u8 asymmetric (one more bit for the
/// one-sided ranges after GELU, Relu, Softmax) unless a MatMul weight is
/// past [`TRACT_U8_WEIGHT_LIMIT`]. Measured on MiniLM-L3 (no weight past
/// it): 11.6 dB against 10.9 with s8, at the same speed in tract.
fn activations_for(float: &Model, opts: &QuantizeOptions) -> QuantizeOptions {
    let mut o = opts.clone();
    if !(opts.activations_by_model && opts.target == crate::target::Target::Tract) {
        return o;
    }
    let g = &float.graph;
    let big = g.ops().into_iter().any(|n| {
        let node = g.node(n);
        (node.is("MatMul") || node.is("Gemm"))
            && node
                .inputs()
                .iter()
                .flatten()
                .filter_map(|&v| g.constant(v))
                .any(|t| {
                    let d = t.dims();
                    d.len() >= 2 && d[d.len() - 2] * d[d.len() - 1] > TRACT_U8_WEIGHT_LIMIT
                })
    });
    if !big {
        o.activations = crate::quant::QType::U8;
        o.symmetric_activations = None;
    }
    o
}

/// Prepares and calibrates `float` as `opts` say.
pub fn calibrate(float: &Model, opts: &QuantizeOptions) -> Result<Calibrated, QuantizeError> {
    let opts = &activations_for(float, opts);
    let t0 = Instant::now();
    let mut cx = PassContext::with_inputs(quantize_inputs(float, opts)?);
    if opts.coverage.is_some() && cx.inputs().calib_data.is_none() {
        return Err(QuantizeError::Usage(
            "--coverage needs data to profile the model on (--calib DIR)".into(),
        ));
    }
    let mut m = float.clone();
    let prepare = if opts.mode == super::Mode::Dynamic {
        // DynamicQuantizeLinear needs 11; MatMulInteger's per-column zero
        // points are fine from 10.
        pipeline::prepare_for(11)
    } else {
        pipeline::prepare(opts.per_channel || opts.target.spec().folds_weight_dq.is_some())
    };
    let prep = run(
        &mut m,
        &mut cx,
        Pipeline::parse(&format!("{}{prepare}", pipeline::fix_inputs(opts)?))?,
    )?;
    let t_prep = t0.elapsed().as_secs_f64();
    if opts.mode == super::Mode::Dynamic {
        let (_, analyses, mut remarks) = cx.into_parts();
        remarks.retain(|r| r.level == Level::Note);
        return Ok(Calibrated {
            prepared: m,
            analyses,
            prefix: prep,
            remarks,
            insert: pipeline::insert_options(opts),
            dynamic: Some(pipeline::dynamic_options(opts)),
            method: Method::Minmax,
            samples: 0,
            float_outputs: vec![],
            seconds: (t_prep, 0.0),
        });
    }
    let t1 = Instant::now();
    let mut collect = run(&mut m, &mut cx, Pipeline::parse(&pipeline::collect(opts))?)?;
    // The statistics of the graph as prepared: what `--save-stats` keeps
    // (a later `--stats` run without data prepares that graph; smoothing
    // needs data and calibrates its own graph again).
    let stats = cx
        .analyses
        .stats
        .clone()
        .expect("invariant: calibrate leaves statistics");
    if let Some(path) = &opts.save_stats {
        stats.save(path)?;
    }
    let methods: Vec<Method> = match opts.method {
        Some(m) => vec![m],
        None => super::method::candidates().to_vec(),
    };
    let smoothing = super::smooth::apply(&mut m, &mut cx, opts, &methods)?;
    if !smoothing.pipeline.is_empty() {
        collect = format!("{collect},{}", smoothing.pipeline);
    }
    let method = match opts.method {
        Some(method) => method,
        None => match smoothing.method {
            Some(choice) => {
                cx.remark("quantize", "<model>", choice.summary());
                choice.method
            }
            None => Method::Mse,
        },
    };
    let mut chosen = run(
        &mut m,
        &mut cx,
        Pipeline::parse(&pipeline::choose(opts, method))?,
    )?;
    if let Some(p) = super::equalize::apply(&mut m, &mut cx, opts, &chosen)? {
        chosen = p;
    }
    let cal = format!("{collect},{chosen}");
    let t_cal = t1.elapsed().as_secs_f64();
    let (_, mut analyses, mut remarks) = cx.into_parts();
    remarks.retain(|r| r.level == Level::Note);
    let float_outputs = std::mem::take(&mut analyses.calib_outputs);
    Ok(Calibrated {
        prepared: m,
        analyses,
        prefix: format!("{prep},{cal}"),
        remarks,
        insert: pipeline::insert_options(opts),
        dynamic: None,
        method,
        samples: stats.samples,
        float_outputs,
        seconds: (t_prep, t_cal),
    })
}

impl Calibrated {
    /// The activation parameters `fold-calibration` chose.
    pub fn act_params(&self) -> &BTreeMap<String, ActParams> {
        self.analyses
            .act_params
            .as_ref()
            .expect("invariant: fold-calibration ran")
    }

    /// Runs the tail with these node labels (added to the options' own)
    /// kept in float.
    pub fn build(&self, keep_float: &[String]) -> Result<Built, QuantizeError> {
        let mut insert = self.insert.clone();
        insert.keep_float.extend(keep_float.iter().cloned());
        insert.keep_float.sort();
        insert.keep_float.dedup();
        let mut m = self.prepared.clone();
        let mut cx = PassContext::resume(Inputs::default(), self.analyses.clone());
        let p = match &self.dynamic {
            Some(d) => {
                let mut d = d.clone();
                d.keep_float = insert.keep_float.clone();
                pipeline::dynamic_tail(&d)
            }
            None => pipeline::tail(&insert),
        };
        let tail = run(&mut m, &mut cx, p)?;
        let (_, analyses, mut remarks) = cx.into_parts();
        remarks.retain(|r| r.level == Level::Note);
        Ok(Built {
            model: m,
            tail,
            decisions: analyses.decisions,
            remarks,
            quantized_tensors: analyses.quantized_tensors,
        })
    }

    /// The whole pipeline that produced `built`.
    pub fn pipeline_with(&self, built: &Built) -> String {
        format!("{},{}", self.prefix, built.tail)
    }
}
