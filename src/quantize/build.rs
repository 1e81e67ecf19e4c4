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
    /// `quantize-gather` options when the mode is weights-only (the
    /// weights were quantized while calibrating, where GPTQ has its data;
    /// `insert` is unused and there are no statistics).
    pub weights_only: Option<crate::passes::quantize_gather::Options>,
    /// The mode is float16 (converted while calibrating, where the range
    /// check has its data): the tail only cleans up.
    pub half: bool,
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
    /// Weight values pruning zeroed and weight values in all.
    pub pruned: Option<(usize, usize)>,
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
    let dynamic = matches!(
        opts.mode,
        super::Mode::Dynamic | super::Mode::Weights | super::Mode::Half
    );
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
    } else if opts.mode == super::Mode::Weights {
        let w = &opts.weights_only;
        // MatMulNBits is a contrib op: any opset; the DequantizeLinear form
        // needs 13, or 21 for 4-bit codes and blocks.
        pipeline::prepare_for(if w.format == "qoperator" {
            1
        } else {
            w.min_opset()
        })
    } else if opts.activations.is_wide()
        || opts.promote16
        || (1..=4).contains(&opts.codebook_bits) && opts.target != crate::target::Target::Tract
    {
        // 16-bit QuantizeLinear/DequantizeLinear are opset 21's, and so are
        // the uint4 codes of a codebook of up to 16 levels (tract cannot
        // load uint4: for it the codes stay bytes).
        pipeline::prepare_for(crate::passes::upgrade_opset::TARGET_BLOCKED)
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
            weights_only: None,
            half: false,
            method: Method::Minmax,
            samples: 0,
            float_outputs: vec![],
            seconds: (t_prep, 0.0),
        });
    }
    if matches!(opts.mode, super::Mode::Weights | super::Mode::Half) {
        let t1 = Instant::now();
        let (w, gather) = if opts.mode == super::Mode::Weights {
            let (w, gather) = pipeline::weights_only(opts);
            (w, Some(gather))
        } else {
            (pipeline::half(opts), None)
        };
        let done = run(&mut m, &mut cx, w)?;
        let samples = cx.inputs().calib_data.as_ref().map_or(0, |d| d.len());
        let (_, analyses, mut remarks) = cx.into_parts();
        remarks.retain(|r| r.level == Level::Note);
        return Ok(Calibrated {
            prepared: m,
            analyses,
            prefix: format!("{prep},{done}"),
            remarks,
            insert: pipeline::insert_options(opts),
            dynamic: None,
            half: gather.is_none(),
            weights_only: gather,
            method: Method::Minmax,
            samples: match opts.mode {
                super::Mode::Weights if opts.rounding == super::Rounding::Adaptive => {
                    samples.min(opts.weights_only.samples)
                }
                super::Mode::Half if !opts.float16.storage_only => {
                    samples.min(opts.float16.samples)
                }
                _ => 0,
            },
            float_outputs: vec![],
            seconds: (t_prep, t1.elapsed().as_secs_f64()),
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
    let ranges = if opts.method.is_none() {
        per_tensor_ranges(&m, &mut cx, opts, method)?
    } else {
        vec![]
    };
    let mut chosen = run(
        &mut m,
        &mut cx,
        Pipeline::parse(&pipeline::choose(opts, method, &ranges))?,
    )?;
    if let Some(p) = super::equalize::apply(&mut m, &mut cx, opts, &chosen)? {
        chosen = p;
    }
    if opts.rounding == super::Rounding::Adaptive {
        let r = run(&mut m, &mut cx, pipeline::round_weights(opts))?;
        if learned_rounding_pays(&m, &mut cx, opts, &chosen)? {
            chosen = format!("{chosen},{r}");
        }
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
        weights_only: None,
        half: false,
        method,
        samples: stats.samples,
        float_outputs,
        seconds: (t_prep, t_cal),
    })
}

/// Whole-model trials `--method auto` per tensor makes at most: each
/// builds and scores the model once. A count, not a time, so that the
/// result does not depend on the machine.
const RANGE_TRIALS: usize = 48;

/// A per-tensor range is kept when the model scores at least this much
/// better with it (dB of mean output SQNR): less is sampling noise.
const RANGE_GAIN_DB: f64 = 0.05;

/// Fitted samples a per-tensor range is checked on, at most, and the
/// output values that bound it (small outputs take more samples).
const FIT_SAMPLES: usize = 32;
const FIT_VALUES: usize = 1 << 20;

/// Calibration samples learned rounding is checked on, at most.
const ROUNDING_SAMPLES: usize = 128;

/// `--method auto` per tensor ([`super::ranges`]): the readers' measured
/// errors rank, for each tensor, the rule that would help it most; in that
/// order (largest local gain first, at most [`RANGE_TRIALS`]), a tensor
/// takes its rule only where the whole model then scores better on the
/// calibration samples (greedy coordinate descent on the real objective;
/// the local measure alone misleads: on Silero VAD taking every local
/// winner cost 3.8 dB). The choice goes into the report.
fn per_tensor_ranges(
    m: &Model,
    cx: &mut PassContext,
    opts: &QuantizeOptions,
    method: Method,
) -> Result<Vec<String>, QuantizeError> {
    if opts.mode != super::Mode::Static {
        return Ok(vec![]);
    }
    let Some(mut choices) = super::ranges::choose(m, cx, opts, method)? else {
        return Ok(vec![]);
    };
    let Some((reference, samples)) = super::method::reference(m, cx, opts, true)? else {
        return Ok(vec![]);
    };
    // Samples spread over those the ranges were fitted on (up to
    // [`FIT_SAMPLES`] where outputs are small): a choice must not lose
    // there either. Held-out samples that happen to be alike (the first
    // files, of one kind) would otherwise decide alone: on Magika a range
    // that gained 8 dB on them lost 8 dB over the whole set.
    let fitted = match cx.inputs().calib_data.as_ref() {
        Some(data) if cx.analyses.held_out > 0 && data.len() > cx.analyses.held_out => {
            let threads = opts.threads.unwrap_or_else(crate::runtime::default_threads);
            let per_sample = output_values_per_sample(cx);
            let k = (FIT_VALUES / per_sample.max(1)).clamp(samples, FIT_SAMPLES.max(samples));
            let spread = data.spread(cx.analyses.held_out, k);
            Some((
                crate::validate::Reference::new(m, &spread, threads, &cx.inputs().input_shapes)?,
                spread.len(),
            ))
        }
        _ => None,
    };
    let n_fit = fitted.as_ref().map_or(0, |f| f.1);
    let scored = |ranges: &[String]| -> Result<Option<(f64, f64)>, QuantizeError> {
        let choice = pipeline::fold_calibration_with(opts, method, ranges);
        let held = super::method::score_placed(m, cx, opts, &reference, &choice, true)?;
        let fit = match &fitted {
            Some((r, _)) => super::method::score_placed(m, cx, opts, r, &choice, true)?,
            None => held,
        };
        Ok(held.zip(fit))
    };
    let Some(plain) = scored(&[])? else {
        return Ok(vec![]);
    };
    // Candidates: tensors whose readers measured another rule better, the
    // largest relative gain first (ties by name).
    let base = method.to_string();
    let mut order: Vec<(usize, f64)> = choices
        .iter()
        .enumerate()
        .filter(|(_, c)| c.method != base)
        .map(|(i, c)| {
            let err = |m: &str| {
                c.errors
                    .iter()
                    .find(|(r, _)| r == m)
                    .map_or(f64::INFINITY, |e| e.1)
            };
            (i, err(&c.method) / err(&base).max(1e-30))
        })
        .collect();
    order.sort_by(|a, b| {
        a.1.total_cmp(&b.1)
            .then(choices[a.0].tensor.cmp(&choices[b.0].tensor))
    });
    let mut kept: Vec<String> = Vec::new();
    let mut best = plain;
    let mut trials = 0usize;
    for &(i, _) in order.iter().take(RANGE_TRIALS) {
        let c = &choices[i];
        let mut trial = kept.clone();
        trial.push(format!("{}={}", c.tensor, c.method));
        trials += 1;
        match scored(&trial)? {
            Some(s) if s.0 > best.0 + RANGE_GAIN_DB && s.1 >= best.1 - RANGE_GAIN_DB => {
                best = s;
                kept = trial;
            }
            _ => {}
        }
    }
    for c in &mut choices {
        if c.method != base
            && !kept
                .iter()
                .any(|r| r.starts_with(&format!("{}=", c.tensor)))
        {
            c.method = base.clone();
        }
    }
    cx.analyses.range_choices = choices;
    cx.remark(
        "quantize",
        "<model>",
        format!(
            "method auto per tensor: {} tensor(s) took another range than {method} ({trials} tried, each kept only where the model scored better on {samples} held-out calibration sample(s) and no worse on {n_fit} it was fitted on); mean output SQNR {} against {} with {method} everywhere on the held-out samples ({} against {} on the others)",
            kept.len(),
            super::method::describe(best.0),
            super::method::describe(plain.0),
            super::method::describe(best.1),
            super::method::describe(plain.1)
        ),
    );
    kept.sort();
    Ok(kept)
}

/// Whether the rounding `round-weights` learned (in `cx`) scores at least
/// as well as nearest rounding on calibration samples spread over the set
/// (the model's outputs, not the layers' own: a layer's output error can
/// go down where a max-pool downstream reads the few positions it moved
/// the wrong way, as on Magika). When it does not, the learned rounding is
/// dropped and the remark says so.
fn learned_rounding_pays(
    m: &Model,
    cx: &mut PassContext,
    opts: &QuantizeOptions,
    chosen: &str,
) -> Result<bool, QuantizeError> {
    if cx.analyses.rounded.is_empty() {
        return Ok(false);
    }
    let Some(data) = cx.inputs().calib_data.clone() else {
        return Ok(true);
    };
    let per_sample = output_values_per_sample(cx);
    // Up to [`ROUNDING_SAMPLES`]: small outputs are scored on many
    // samples (on Magika, 32 of 100 said +0.8 dB where all 100 say −0.7).
    let k = (FIT_VALUES / per_sample.max(1)).clamp(4, ROUNDING_SAMPLES);
    let spread = data.spread(0, k);
    let threads = opts.threads.unwrap_or_else(crate::runtime::default_threads);
    let reference =
        crate::validate::Reference::new(m, &spread, threads, &cx.inputs().input_shapes)?;
    let learned = super::method::score_placed(m, cx, opts, &reference, chosen, false)?;
    let rounded = std::mem::take(&mut cx.analyses.rounded);
    let nearest = super::method::score_placed(m, cx, opts, &reference, chosen, false)?;
    let (Some(l), Some(n)) = (learned, nearest) else {
        cx.analyses.rounded = rounded;
        return Ok(true);
    };
    let pays = l >= n;
    cx.remark(
        "quantize",
        "<model>",
        format!(
            "learned rounding {}: mean output SQNR {} against {} with nearest rounding, on {} calibration sample(s) spread over the set",
            if pays { "kept" } else { "dropped" },
            super::method::describe(l),
            super::method::describe(n),
            spread.len()
        ),
    );
    if pays {
        cx.analyses.rounded = rounded;
    }
    Ok(pays)
}

/// Values in one calibration sample's graph outputs (1 when none were
/// kept): how many samples a measured choice needs for a stable score.
fn output_values_per_sample(cx: &PassContext) -> usize {
    cx.analyses
        .calib_outputs
        .first()
        .map(|o| o.iter().map(|(_, t)| t.len()).sum())
        .unwrap_or(1)
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
        self.build_with(keep_float, &[])
    }

    /// Runs the tail with `keep_float` kept in float and the activations
    /// `promote` reads quantized to 16 bits.
    pub fn build_with(
        &self,
        keep_float: &[String],
        promote: &[String],
    ) -> Result<Built, QuantizeError> {
        self.build_pruned(keep_float, promote, self.insert.prune_db)
    }

    /// Runs the tail with the weights of `exempt` (node labels) keeping
    /// all their 8-bit codes instead of the codebook's levels.
    pub fn build_exempt(&self, exempt: &[String]) -> Result<Built, QuantizeError> {
        let mut cal_insert = self.insert.clone();
        cal_insert.codebook_exempt = exempt.to_vec();
        cal_insert.codebook_exempt.sort();
        self.build_insert(cal_insert, &[], &[])
    }

    /// [`Self::build_with`], pruning at `prune_db` (0: none) instead of
    /// the options' level.
    pub fn build_pruned(
        &self,
        keep_float: &[String],
        promote: &[String],
        prune_db: f64,
    ) -> Result<Built, QuantizeError> {
        let mut insert = self.insert.clone();
        insert.prune_db = prune_db;
        self.build_insert(insert, keep_float, promote)
    }

    fn build_insert(
        &self,
        mut insert: insert_qdq::Options,
        keep_float: &[String],
        promote: &[String],
    ) -> Result<Built, QuantizeError> {
        insert.promote = promote.to_vec();
        insert.promote.sort();
        insert.keep_float.extend(keep_float.iter().cloned());
        insert.keep_float.sort();
        insert.keep_float.dedup();
        let mut m = self.prepared.clone();
        let mut cx = PassContext::resume(Inputs::default(), self.analyses.clone());
        let p = match (&self.dynamic, &self.weights_only) {
            (Some(d), _) => {
                let mut d = d.clone();
                d.keep_float = insert.keep_float.clone();
                pipeline::dynamic_tail(&d)
            }
            (None, Some(gather)) => pipeline::weights_tail(gather),
            (None, None) if self.half => pipeline::clean_tail(),
            (None, None) => pipeline::tail(&insert),
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
            pruned: analyses.pruned,
        })
    }

    /// The whole pipeline that produced `built`.
    pub fn pipeline_with(&self, built: &Built) -> String {
        format!("{},{}", self.prefix, built.tail)
    }
}
