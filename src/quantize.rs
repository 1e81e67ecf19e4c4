//! Static post-training quantization, end to end: the library entry point
//! behind `onnxq quantize`.
//!
//! The preset pipeline is
//! `eliminate-identity,fuse-batchnorm,fold-constants,dce,shape-inference,`
//! `calibrate,fold-calibration,insert-qdq,dce`; the result is validated
//! against the float model on held-out data (or part of the calibration
//! data) and everything done is reported.
//!
//! ```no_run
//! use onnxq::quantize::{quantize_file, QuantizeOptions};
//! use std::path::Path;
//!
//! // In a build script: quantize a model shipped with the crate.
//! let opts = QuantizeOptions {
//!     calib: Some("models/calib".into()),
//!     ..QuantizeOptions::default()
//! };
//! let report = quantize_file(Path::new("models/net.onnx"), Path::new("net.int8.onnx"), &opts)?;
//! println!("{}", report.summary());
//! # Ok::<(), onnxq::quantize::QuantizeError>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::calib::data::DataSet;
use crate::calib::{CalibOptions, Stats};
use crate::ir::Model;
use crate::onnx::export::{self, ExportOptions};
use crate::onnx::import;
use crate::passes::context::{InputShapes, Remark};
use crate::passes::fold_calibration::FoldCalibration;
use crate::passes::insert_qdq::{self, InsertQdq};
use crate::passes::{PassContext, PassManager, Pipeline};
use crate::quant::params::ActConfig;
use crate::quant::plan::Decision;
use crate::quant::range::Method;
use crate::quant::QType;
use crate::validate::{Reference, Validation};

/// The passes that prepare a float model for quantization.
///
/// `fold-constants` runs first so that `Constant` nodes become initializers
/// that `fuse-batchnorm` can fold; shape-inference last, on the final graph.
pub const PREP_PIPELINE: &str =
    "eliminate-identity,fold-constants,fuse-batchnorm,dce,shape-inference";

/// Everything `quantize` can be told.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Calibration data directory.
    pub calib: Option<PathBuf>,
    /// Use this many seeded random samples instead of data (poor ranges).
    pub calib_random: Option<usize>,
    pub calib_limit: Option<usize>,
    /// Reuse statistics from `onnxq calibrate` (or a previous `--save-stats`).
    pub stats: Option<PathBuf>,
    /// Save the statistics computed here.
    pub save_stats: Option<PathBuf>,
    pub method: Method,
    pub activations: QType,
    pub symmetric_activations: Option<bool>,
    pub weights: QType,
    pub per_channel: bool,
    pub reduce_range: bool,
    pub exclude: Vec<String>,
    pub op_types: Vec<String>,
    pub input_shapes: InputShapes,
    /// Validation data; by default a few calibration samples.
    pub val: Option<PathBuf>,
    /// How many samples to validate on (0: skip validation).
    pub val_samples: usize,
    /// With the default validation data (the first calibration samples):
    /// use fewer than `val_samples` once the samples' outputs hold this
    /// many values, which bounds the error of the SQNR and cosine
    /// estimates as well (a detector's 640×480 maps reach 2²⁰ values in
    /// four samples) at half the runs. `None`: always `val_samples`.
    pub val_values: Option<u64>,
    pub external_data: Option<usize>,
    pub progress: bool,
    pub threads: Option<usize>,
    /// Automatic fallback: keep the most sensitive nodes in float until the
    /// validation data meets this.
    pub target: Option<Target>,
    /// Correct biases for the mean shift weight rounding causes.
    pub bias_correction: bool,
    /// Cost-aware selection: quantize the fewest Conv/MatMul/Gemm that
    /// cover this fraction of the compute ops' measured time.
    pub coverage: Option<f64>,
    /// Collect profile, tensor errors and activation histograms for the
    /// report (costs a profile run and a validation pass with captures).
    pub detailed_report: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            calib: None,
            calib_random: None,
            calib_limit: None,
            stats: None,
            save_stats: None,
            method: Method::Mse,
            activations: QType::U8,
            symmetric_activations: None,
            weights: QType::S8,
            per_channel: true,
            reduce_range: false,
            exclude: vec![],
            op_types: vec![],
            input_shapes: InputShapes::new(),
            val: None,
            val_samples: 8,
            val_values: Some(1 << 20),
            external_data: None,
            progress: true,
            threads: None,
            target: None,
            bias_correction: true,
            coverage: None,
            detailed_report: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Import(#[from] import::ImportError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error(transparent)]
    Pass(#[from] crate::passes::PassError),
    #[error(transparent)]
    Calib(#[from] crate::calib::CalibError),
    #[error(transparent)]
    Data(#[from] crate::calib::data::DataError),
    #[error("validation: {0}")]
    Validate(#[from] crate::validate::ValidateError),
    #[error("{0}")]
    Usage(String),
}

impl QuantizeError {
    /// Exit code: every quantize failure is bad input or usage (2).
    pub fn exit_code(&self) -> i32 {
        2
    }
}

/// What quantization did.
#[derive(Clone, Debug, Serialize)]
pub struct QuantizeReport {
    pub input: String,
    pub output: String,
    pub pipeline: String,
    pub method: String,
    pub calibration_samples: usize,
    pub float_bytes: u64,
    pub quantized_bytes: u64,
    pub nodes: Vec<Decision>,
    pub remarks: Vec<Remark>,
    pub validation: Option<Validation>,
    pub fallback: Option<Fallback>,
    /// Filled when a detailed report is asked for (`--report`): where the
    /// float model spends its time, the error of every shared tensor, and
    /// each quantized activation's histogram with the range chosen.
    pub profile: Option<crate::report::profile::Profile>,
    /// Share of the Conv/ConvTranspose/MatMul/Gemm multiply-accumulates that
    /// run quantized (`None` when shapes are unknown).
    pub quantized_mac_share: Option<f64>,
    pub tensor_errors: Vec<crate::sensitivity::TensorError>,
    pub activations: Vec<ActivationSummary>,
    pub seconds: Timings,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub prepare: f64,
    pub calibrate: f64,
    pub quantize: f64,
    pub validate: f64,
    pub fallback: f64,
    pub report: f64,
    pub total: f64,
}

impl QuantizeReport {
    /// A human summary for the terminal.
    pub fn summary(&self) -> String {
        let q = self.nodes.iter().filter(|d| d.quantized).count();
        let mut s = format!(
            "onnxq quantize: {} -> {}\n  method {}, {} calibration sample(s); {} of {} candidate nodes quantized\n  size {} -> {} bytes ({:.3}x)\n",
            self.input,
            self.output,
            self.method,
            self.calibration_samples,
            q,
            self.nodes.len(),
            self.float_bytes,
            self.quantized_bytes,
            self.quantized_bytes as f64 / self.float_bytes.max(1) as f64
        );
        let skipped: Vec<&Decision> = self.nodes.iter().filter(|d| !d.quantized).collect();
        if !skipped.is_empty() {
            s.push_str("  kept in float:\n");
            for d in skipped.iter().take(20) {
                s.push_str(&format!("    {} ({}): {}\n", d.node, d.op, d.reason));
            }
            if skipped.len() > 20 {
                s.push_str(&format!(
                    "    ... and {} more (see --report)\n",
                    skipped.len() - 20
                ));
            }
        }
        if let Some(share) = self.quantized_mac_share {
            s.push_str(&format!(
                "  {:.1}% of the Conv/MatMul/Gemm multiply-accumulates run quantized\n",
                share * 100.0
            ));
        }
        if let Some(fb) = &self.fallback {
            let t = &fb.target;
            let goal = [
                t.min_sqnr_db.map(|x| format!("SQNR >= {x} dB")),
                t.min_cosine.map(|x| format!("cosine >= {x}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ");
            if fb.excluded.is_empty() && fb.reached {
                s.push_str(&format!(
                    "  fallback: {goal} met with everything quantized\n"
                ));
            } else if fb.reached {
                s.push_str(&format!(
                    "  fallback: {goal} met by keeping {} node(s) in float; pin with:\n    {}\n",
                    fb.excluded.len(),
                    fb.excluded
                        .iter()
                        .map(|e| format!("--exclude '{e}'"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            } else {
                s.push_str(&format!("  fallback: {goal} NOT reached even with every node in float (best kept: {} excluded)\n", fb.excluded.len()));
            }
        }
        for w in &self.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
        if let Some(v) = &self.validation {
            s.push_str(&v.table());
        }
        s.push_str(&format!(
            "  time: prepare {:.2}s, calibrate {:.2}s, quantize {:.2}s, fallback {:.2}s, validate {:.2}s, total {:.2}s\n",
            self.seconds.prepare, self.seconds.calibrate, self.seconds.quantize, self.seconds.fallback, self.seconds.validate, self.seconds.total
        ));
        s
    }
}

/// Runs a pipeline string over a model with a context.
pub fn run_pipeline(
    m: &mut Model,
    cx: &mut PassContext,
    pipeline: &str,
) -> Result<(), QuantizeError> {
    let mut pm = PassManager::new(Pipeline::parse(pipeline)?);
    pm.run(m, cx)?;
    Ok(())
}

/// Opens the calibration data the options name.
pub fn calib_data(opts: &QuantizeOptions) -> Result<Option<DataSet>, QuantizeError> {
    Ok(match (&opts.calib, opts.calib_random) {
        (Some(_), Some(_)) => {
            return Err(QuantizeError::Usage(
                "give either --calib or --calib-random, not both".into(),
            ))
        }
        (Some(dir), None) => Some(DataSet::open(dir, opts.calib_limit)?),
        (None, Some(n)) => Some(DataSet::random(n.max(1), 0x6f6e_6e78_71)),
        (None, None) => None,
    })
}

/// Prepares a float model (the prep passes) — also what `calibrate` runs,
/// so statistics files match.
pub fn prepare(m: &mut Model, cx: &mut PassContext) -> Result<(), QuantizeError> {
    run_pipeline(m, cx, PREP_PIPELINE)
}

fn insert_options(opts: &QuantizeOptions) -> insert_qdq::Options {
    insert_qdq::Options {
        per_channel: opts.per_channel,
        weights: if opts.weights == QType::U8 {
            "u8".into()
        } else {
            "s8".into()
        },
        reduce_range: opts.reduce_range,
        exclude: opts.exclude.clone(),
        op_types: opts.op_types.clone(),
        bias_correction: opts.bias_correction,
    }
}

/// A prepared, calibrated model from which quantized variants are built:
/// the full model, or one with only some nodes quantized (sensitivity
/// analysis, automatic fallback) — without calibrating again.
pub struct Calibrated {
    pub prepared: Model,
    pub act_params: std::collections::BTreeMap<String, crate::quant::params::ActParams>,
    pub channel_means: std::collections::BTreeMap<String, crate::calib::ChannelMeans>,
    pub insert: insert_qdq::Options,
    pub stats: Option<Stats>,
    pub compute_only: Option<std::collections::BTreeMap<String, String>>,
    declared: std::collections::BTreeSet<String>,
    /// The float graph's outputs on the first calibration samples (as many
    /// as validation uses by default), recorded while calibrating.
    pub float_outputs: Vec<Vec<(String, crate::tensorio::HostTensor)>>,
}

impl Calibrated {
    /// Inserts Q/DQ (restricted to `only` when given), removes dead code and
    /// restores the float model's interface.
    pub fn build(
        &self,
        float: &Model,
        only: Option<std::collections::BTreeSet<String>>,
    ) -> Result<(Model, Vec<Decision>, Vec<Remark>), QuantizeError> {
        let mut m = self.prepared.clone();
        let mut cx = PassContext::new();
        cx.act_params = Some(self.act_params.clone());
        cx.channel_means = self.channel_means.clone();
        cx.compute_only = self.compute_only.clone();
        cx.only_nodes = only;
        let mut pipeline = Pipeline { passes: vec![] };
        pipeline.push(Box::new(InsertQdq::new(self.insert.clone())?));
        pipeline.push(crate::passes::lookup("dce").and_then(|p| (p.make)(serde_json::json!({})))?);
        PassManager::new(pipeline).run(&mut m, &mut cx)?;
        restore_interface(&mut m, float, &self.declared);
        Ok((m, cx.decisions, cx.remarks))
    }
}

/// Quantizes a model in memory. Returns the quantized model and the report
/// (its `output`, sizes and validation are filled by [`quantize_file`]).
pub fn quantize_model(
    float: &Model,
    opts: &QuantizeOptions,
) -> Result<(Model, QuantizeReport, Calibrated), QuantizeError> {
    let t0 = Instant::now();
    let mut warnings = Vec::new();
    let mut cx = PassContext::new();
    cx.input_shapes = opts.input_shapes.clone();
    cx.calib_options = CalibOptions {
        input_shapes: opts.input_shapes.clone(),
        progress: opts.progress,
        threads: opts
            .threads
            .unwrap_or_else(|| CalibOptions::default().threads),
        // minmax needs only exact ranges; every other method, and a saved
        // statistics file, needs the histograms.
        histograms: opts.method != Method::Minmax || opts.save_stats.is_some(),
        // Validation on the first calibration samples (the default) then
        // needs no second run of the float model.
        hash_data: opts.save_stats.is_some(),
        keep_outputs: match &opts.val {
            None if opts.val_samples > 0 || opts.target.is_some() => opts.val_samples.max(1),
            _ => 0,
        },
        ..Default::default()
    };
    let data = calib_data(opts)?;
    // Shape inference runs with the calibration shapes, so that every rank
    // is known while passes decide; the value_info it adds is dropped again
    // at the end, so the output keeps the model's dynamic dimensions.
    if let Some(d) = &data {
        let specs = crate::calib::data::input_specs(float);
        let first = d.load(0, &specs, &opts.input_shapes)?;
        for (name, t) in first {
            cx.input_shapes
                .entry(name)
                .or_insert_with(|| t.shape().to_vec());
        }
    }
    // Saved statistics carry the shapes they were computed with; preparing
    // with the same ones makes `--stats` give what a direct run gives.
    let stats = match &opts.stats {
        Some(path) => {
            let stats = Stats::load(path)?;
            stats.check_model(float, &path.display().to_string())?;
            for (name, dims) in &stats.input_shapes {
                cx.input_shapes
                    .entry(name.clone())
                    .or_insert_with(|| dims.clone());
            }
            Some(stats)
        }
        None => None,
    };
    let declared: std::collections::BTreeSet<String> = float
        .graph
        .value_info_values()
        .into_iter()
        .map(|v| float.graph.name(v).to_string())
        .collect();
    // Statistics are tied to the model by this hash: computed when a file
    // of them is read or written, left empty when no one will look.
    cx.model_hash = Some(if opts.stats.is_some() || opts.save_stats.is_some() {
        crate::calib::model_hash(float)
    } else {
        String::new()
    });
    if opts.calib_random.is_some() {
        warnings.push("calibrating on RANDOM inputs: activation ranges will be poor; use --calib DIR with representative data".into());
    }
    let mut m = float.clone();
    prepare(&mut m, &mut cx)?;
    let t_prep = t0.elapsed().as_secs_f64();

    if stats.is_some() {
        cx.stats = stats;
    } else if data.is_none() {
        return Err(QuantizeError::Calib(crate::calib::CalibError::NoData));
    }
    let compute_only = match opts.coverage {
        None => None,
        Some(c) => {
            let d = data.as_ref().ok_or_else(|| {
                QuantizeError::Usage(
                    "--coverage needs data to profile the model on (--calib DIR)".into(),
                )
            })?;
            let specs = crate::calib::data::input_specs(float);
            let first = d.load(0, &specs, &opts.input_shapes)?;
            let profile = crate::report::profile::measure(&m, &first, 5)
                .map_err(|e| QuantizeError::Usage(format!("--coverage: profiling failed: {e}")))?;
            Some(select_by_coverage(&m, &profile, c))
        }
    };
    let samples = cx
        .stats
        .as_ref()
        .map(|s| s.samples)
        .or(data.as_ref().map(|d| d.len()))
        .unwrap_or(0);
    cx.calib_data = data;
    let t1 = Instant::now();
    run_pipeline(&mut m, &mut cx, "calibrate")?;
    let t_cal = t1.elapsed().as_secs_f64();
    if let (Some(path), Some(stats)) = (&opts.save_stats, &cx.stats) {
        stats.save(path)?;
    }

    let t2 = Instant::now();
    let cfg = ActConfig {
        method: opts.method,
        qtype: opts.activations,
        symmetric: opts
            .symmetric_activations
            .unwrap_or(opts.activations == QType::S8),
        reduce_range: opts.reduce_range,
    };
    let mut fold = Pipeline {
        passes: vec![Box::new(FoldCalibration::with_config(cfg))],
    };
    let calibrated = {
        let mut pm = PassManager::new(Pipeline {
            passes: std::mem::take(&mut fold.passes),
        });
        pm.run(&mut m, &mut cx)?;
        fold = pm.pipeline;
        Calibrated {
            prepared: m,
            act_params: cx
                .act_params
                .clone()
                .expect("invariant: fold-calibration sets parameters"),
            channel_means: cx.channel_means.clone(),
            insert: insert_options(opts),
            stats: cx.stats.clone(),
            compute_only: compute_only.clone(),
            declared,
            float_outputs: std::mem::take(&mut cx.calib_outputs),
        }
    };
    let (m, decisions, remarks) = calibrated.build(float, None)?;
    cx.remarks.extend(remarks);
    let shown = format!(
        "{PREP_PIPELINE},calibrate,{fold},{},dce",
        InsertQdq::new(calibrated.insert.clone())?.describe()
    );
    let t_q = t2.elapsed().as_secs_f64();

    let report = QuantizeReport {
        input: String::new(),
        output: String::new(),
        pipeline: shown,
        method: opts.method.to_string(),
        calibration_samples: samples,
        float_bytes: 0,
        quantized_bytes: 0,
        nodes: decisions,
        remarks: cx
            .remarks
            .iter()
            .filter(|r| r.pass != "fold-calibration")
            .cloned()
            .collect(),
        validation: None,
        fallback: None,
        profile: None,
        quantized_mac_share: None,
        tensor_errors: vec![],
        activations: vec![],
        seconds: Timings {
            prepare: t_prep,
            calibrate: t_cal,
            quantize: t_q,
            validate: 0.0,
            fallback: 0.0,
            report: 0.0,
            total: t0.elapsed().as_secs_f64(),
        },
        warnings,
    };
    Ok((m, report, calibrated))
}

/// Quantizes `input` into `output` (written atomically), validates and
/// reports.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
) -> Result<QuantizeReport, QuantizeError> {
    let t0 = Instant::now();
    let float = import::read_model(input)?;
    let threads = opts.threads.unwrap_or_else(crate::runtime::default_threads);
    let (mut q, mut report, calibrated) = quantize_model(&float, opts)?;
    let mut val = if opts.val_samples > 0 || opts.target.is_some() {
        let n = opts.val_samples.max(1);
        match &opts.val {
            Some(dir) => Some(DataSet::open(dir, Some(n))?),
            None => calib_data(opts)?.map(|d| d.take(n)),
        }
    } else {
        None
    };
    // The float outputs on the validation samples, computed once for the
    // fallback search and the final validation. When the validation
    // samples are the first calibration samples (the default), calibration
    // has recorded them: the float graph it ran is the prepared one, whose
    // exact rewrites (BatchNorm folding, constant folding) leave outputs
    // equal to the original's within float rounding (160 dB or more on
    // every model measured), far below any quantization error.
    let mut reference: Option<Reference> = match &mut val {
        Some(v) if calibrated.float_outputs.len() == v.len() => {
            let mut k = v.len();
            if let Some(budget) = opts.val_values {
                let mut values = 0u64;
                for (i, outs) in calibrated.float_outputs.iter().enumerate() {
                    values += outs.iter().map(|(_, t)| t.len() as u64).sum::<u64>();
                    if values >= budget {
                        k = i + 1;
                        break;
                    }
                }
            }
            *v = v.take(k);
            Some(Reference::from_outputs(
                &float,
                v,
                threads,
                calibrated.float_outputs[..k].to_vec(),
            )?)
        }
        _ => None,
    };
    if let (Some(target), Some(val)) = (&opts.target, &val) {
        let t = Instant::now();
        if reference.is_none() {
            reference = Some(Reference::new(&float, val, threads)?);
        }
        let reference = reference.as_ref().expect("invariant: set above");
        let fb = fallback(
            &float,
            &calibrated,
            &q,
            &report.nodes,
            reference,
            target,
            opts.progress,
        )?;
        if let Some(m) = fb.model.clone() {
            q = m;
            report.nodes = fb.decisions.clone();
            // The remarks of the build that was kept, not of the full one.
            report
                .remarks
                .retain(|r| r.pass != "insert-qdq" && r.pass != "dce");
            report.remarks.extend(fb.remarks.iter().cloned());
        }
        report.fallback = Some(fb);
        report.seconds.fallback = t.elapsed().as_secs_f64();
    }
    report.quantized_mac_share = mac_share(&calibrated.prepared, &report.nodes);
    let summary = export::write_model(
        &q,
        output,
        &ExportOptions {
            external_min_bytes: opts.external_data,
        },
    )?;
    report.input = input.display().to_string();
    report.output = output.display().to_string();
    report.float_bytes = file_size_with_data(input);
    report.quantized_bytes =
        summary.model_bytes + summary.external.as_ref().map(|e| e.1).unwrap_or(0);
    if let (true, Some(val)) = (opts.val_samples > 0, &val) {
        let t = Instant::now();
        // Validate the file as written.
        let written = import::read_model(output)?;
        let reference = match reference.take() {
            Some(r) => r,
            None => Reference::new(&float, val, threads)?,
        };
        report.validation = Some(reference.score(&written)?);
        report.seconds.validate = t.elapsed().as_secs_f64();
    }
    if opts.detailed_report {
        let t = Instant::now();
        if let Some(stats) = &calibrated.stats {
            report.activations = activation_summaries(stats, &calibrated.act_params, &q);
        }
        if let Some(val) = &val {
            // Error of every shared tensor, on the prepared float model (the
            // names quantization kept).
            report.tensor_errors =
                crate::sensitivity::tensor_errors(&calibrated.prepared, &q, val)?;
            let specs = crate::calib::data::input_specs(&float);
            let first = val.load(0, &specs, &opts.input_shapes)?;
            report.profile = crate::report::profile::measure(&calibrated.prepared, &first, 5).ok();
        }
        report.seconds.report = t.elapsed().as_secs_f64();
    }
    report.seconds.total = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// One quantized activation for the report: the observed distribution
/// (64 bins over the observed range, counts) and the clip range chosen.
#[derive(Clone, Debug, Serialize)]
pub struct ActivationSummary {
    pub tensor: String,
    pub observed: (f32, f32),
    pub clip: (f64, f64),
    pub scale: f32,
    pub zero_point: i32,
    pub qtype: QType,
    /// Bin edges are `observed.0 + i·(observed.1 − observed.0)/bins.len()`.
    pub bins: Vec<u64>,
}

/// Histograms and chosen ranges of the activations that were quantized.
pub fn activation_summaries(
    stats: &Stats,
    params: &std::collections::BTreeMap<String, crate::quant::params::ActParams>,
    q: &Model,
) -> Vec<ActivationSummary> {
    const BINS: usize = 64;
    let mut out = Vec::new();
    for (name, p) in params {
        // Only tensors that actually carry a Q/DQ pair in the output.
        if q.graph.lookup(&format!("{name}_q")).is_none() {
            continue;
        }
        let Some(h) = stats.tensors.get(name) else {
            continue;
        };
        let (lo, hi) = (h.min as f64, h.max as f64);
        let mut bins = vec![0u64; BINS];
        if hi > lo {
            for b in h.bins() {
                let c = ((b.center() - lo) / (hi - lo) * BINS as f64)
                    .floor()
                    .clamp(0.0, (BINS - 1) as f64) as usize;
                bins[c] += b.count;
            }
        } else if h.count > 0 {
            bins[0] = h.count;
        }
        out.push(ActivationSummary {
            tensor: name.clone(),
            observed: (h.min, h.max),
            clip: p.clip,
            scale: p.affine.scale,
            zero_point: p.affine.zero_point,
            qtype: p.qtype,
            bins,
        });
    }
    out
}

/// The fewest compute ops (Conv, ConvTranspose, MatMul, Gemm) whose measured
/// time covers `coverage` of all compute ops' time, largest first (ties in
/// graph order). Returns label → the reason it was chosen.
pub fn select_by_coverage(
    m: &Model,
    profile: &crate::report::profile::Profile,
    coverage: f64,
) -> std::collections::BTreeMap<String, String> {
    use crate::quant::plan::COMPUTE_OPS;
    let g = &m.graph;
    let times: std::collections::HashMap<&str, f64> = profile
        .nodes
        .iter()
        .map(|n| (n.cost.node.as_str(), n.attributed_ms))
        .collect();
    let mut ops: Vec<(usize, String, f64)> = g
        .ops()
        .into_iter()
        .enumerate()
        .filter(|(_, n)| {
            g.node(*n).domain().is_empty() && COMPUTE_OPS.contains(&g.node(*n).op_type())
        })
        .map(|(i, n)| {
            let key = crate::report::cost::node_key(g, n);
            let node = g.node(n);
            (
                i,
                import::node_label(node.name(), node.op_type()),
                times.get(key.as_str()).copied().unwrap_or(0.0),
            )
        })
        .collect();
    let total: f64 = ops.iter().map(|o| o.2).sum();
    ops.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut out = std::collections::BTreeMap::new();
    let mut acc = 0.0;
    for (_, label, t) in ops {
        if total > 0.0 && acc >= coverage * total {
            break;
        }
        acc += t;
        out.insert(
            label,
            format!(
                "{:.3} ms, {:.1}% of compute time",
                t,
                if total > 0.0 { t / total * 100.0 } else { 0.0 }
            ),
        );
    }
    out
}

/// MACs of every op node by label (0 for ops without multiply-accumulates
/// or unknown shapes).
pub fn node_macs(m: &Model) -> std::collections::BTreeMap<String, u64> {
    let g = &m.graph;
    g.ops()
        .into_iter()
        .map(|n| {
            let node = g.node(n);
            (
                import::node_label(node.name(), node.op_type()),
                crate::report::cost::node_cost(g, n).macs.unwrap_or(0),
            )
        })
        .collect()
}

/// Fraction of the compute ops' MACs in nodes the decisions quantized.
pub fn mac_share(prepared: &Model, decisions: &[Decision]) -> Option<f64> {
    use crate::quant::plan::COMPUTE_OPS;
    let quantized: std::collections::BTreeSet<&str> = decisions
        .iter()
        .filter(|d| d.quantized)
        .map(|d| d.node.as_str())
        .collect();
    let g = &prepared.graph;
    let (mut q, mut total) = (0u64, 0u64);
    for n in g.ops() {
        let node = g.node(n);
        if !node.domain().is_empty() || !COMPUTE_OPS.contains(&node.op_type()) {
            continue;
        }
        let macs = crate::report::cost::node_cost(g, n).macs?;
        total += macs;
        if quantized.contains(import::node_label(node.name(), node.op_type()).as_str()) {
            q += macs;
        }
    }
    (total > 0).then(|| q as f64 / total as f64)
}

/// A fidelity target for automatic fallback.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Target {
    pub min_sqnr_db: Option<f64>,
    pub min_cosine: Option<f64>,
}

impl Target {
    pub fn met(&self, v: &Validation) -> bool {
        self.min_sqnr_db
            .is_none_or(|t| v.min_sqnr().is_none_or(|s| s >= t))
            && self
                .min_cosine
                .is_none_or(|t| v.min_cosine().is_none_or(|c| c >= t))
    }
}

/// What automatic fallback did.
#[derive(Clone, Debug, Serialize)]
pub struct Fallback {
    pub target: Target,
    pub reached: bool,
    /// Nodes kept in float, most sensitive first: pin them with --exclude.
    pub excluded: Vec<String>,
    /// Isolated sensitivity of every quantized node, worst first.
    pub sensitivity: Vec<crate::sensitivity::NodeSensitivity>,
    /// (number excluded, worst output SQNR, worst mean cosine) per trial.
    pub trials: Vec<(usize, Option<f64>, Option<f64>)>,
    #[serde(skip)]
    pub model: Option<Model>,
    #[serde(skip)]
    pub decisions: Vec<Decision>,
    #[serde(skip)]
    pub remarks: Vec<Remark>,
}

/// Keeps the most sensitive nodes in float until `target` is met: ranks
/// nodes by isolated sensitivity, then bisects on how many of the worst to
/// exclude. Deterministic: ties are broken by node name.
pub fn fallback(
    float: &Model,
    cal: &Calibrated,
    full: &Model,
    decisions: &[Decision],
    reference: &Reference,
    target: &Target,
    progress: bool,
) -> Result<Fallback, QuantizeError> {
    let v0 = reference.score(full)?;
    let mut trials = vec![(0, v0.min_sqnr(), v0.min_cosine())];
    let quantized: Vec<String> = decisions
        .iter()
        .filter(|d| d.quantized)
        .map(|d| d.node.clone())
        .collect();
    let mut fb = Fallback {
        target: *target,
        reached: target.met(&v0),
        excluded: vec![],
        sensitivity: vec![],
        trials: vec![],
        model: None,
        decisions: vec![],
        remarks: vec![],
    };
    if fb.reached || quantized.is_empty() {
        fb.trials = trials;
        return Ok(fb);
    }
    let bar = crate::calib::progress_bar(quantized.len() as u64, "sensitivity", progress);
    let mut sens = Vec::with_capacity(quantized.len());
    for label in &quantized {
        let only: std::collections::BTreeSet<String> = [label.clone()].into_iter().collect();
        let (m, d, _) = cal.build(float, Some(only))?;
        let v = reference.score(&m)?;
        let op = d
            .iter()
            .find(|x| &x.node == label)
            .map(|x| x.op.clone())
            .unwrap_or_default();
        sens.push(crate::sensitivity::NodeSensitivity {
            node: label.clone(),
            op,
            output_sqnr_db: v.min_sqnr().unwrap_or(crate::validate::IDENTICAL_DB),
            cosine_mean: v.min_cosine(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Worst first; a lower cosine breaks SQNR ties, then the name.
    sens.sort_by(|a, b| {
        a.output_sqnr_db
            .total_cmp(&b.output_sqnr_db)
            .then(
                a.cosine_mean
                    .unwrap_or(1.0)
                    .total_cmp(&b.cosine_mean.unwrap_or(1.0)),
            )
            .then(a.node.cmp(&b.node))
    });
    // Fallback order: the error a node adds per multiply-accumulate it
    // would save by staying quantized. The isolated SQNR gives the node's
    // share of output noise (10^(-SQNR/10) of the signal); dividing by its
    // MACs (plus a floor of 1% of the average compute op) puts sensitive
    // elementwise ops, which cost little to keep in float, first, and large
    // convolutions last: the target is met with the most compute quantized.
    let macs = node_macs(&cal.prepared);
    let floor = {
        let v: Vec<u64> = macs.values().copied().filter(|&m| m > 0).collect();
        (v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 * 0.01).max(1.0)
    };
    let key = |s: &crate::sensitivity::NodeSensitivity| -> f64 {
        let noise = 10f64.powf(-s.output_sqnr_db / 10.0);
        noise / (macs.get(&s.node).copied().unwrap_or(0) as f64 + floor)
    };
    let mut order: Vec<(f64, &crate::sensitivity::NodeSensitivity)> =
        sens.iter().map(|s| (key(s), s)).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.node.cmp(&b.1.node)));
    let ranked: Vec<String> = order.iter().map(|(_, s)| s.node.clone()).collect();
    type Built = (Model, Vec<Decision>, Vec<Remark>);
    let try_k = |k: usize| -> Result<(Built, Validation), QuantizeError> {
        let keep: std::collections::BTreeSet<String> = ranked[k..].iter().cloned().collect();
        let (m, d, r) = cal.build(float, Some(keep))?;
        let v = reference.score(&m)?;
        Ok(((m, d, r), v))
    };
    // Bisect on k, the number of worst nodes kept in float: k = 0 fails.
    let (mut lo, mut hi) = (0usize, ranked.len());
    let mut best = {
        let (built, v) = try_k(hi)?;
        trials.push((hi, v.min_sqnr(), v.min_cosine()));
        fb.reached = target.met(&v);
        built
    };
    if fb.reached {
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let (built, v) = try_k(mid)?;
            trials.push((mid, v.min_sqnr(), v.min_cosine()));
            if target.met(&v) {
                hi = mid;
                best = built;
            } else {
                lo = mid;
            }
        }
    }
    fb.excluded = ranked[..hi].to_vec();
    fb.model = Some(best.0);
    fb.decisions = best.1;
    fb.remarks = best.2;
    fb.sensitivity = sens;
    fb.trials = trials;
    Ok(fb)
}

/// Drops `value_info` entries other than those the original declared, and
/// gives graph inputs and outputs back their declared types: shapes were
/// fixed for calibration, but the quantized model keeps the float model's
/// interface (dynamic dimensions included).
pub fn restore_interface(m: &mut Model, float: &Model, keep: &std::collections::BTreeSet<String>) {
    let g = &mut m.graph;
    for port in g.inputs_mut().iter_mut() {
        if let Some(orig) = float
            .graph
            .inputs()
            .iter()
            .find(|p| p.info.name() == port.info.name())
        {
            port.info = orig.info.clone();
        }
    }
    for port in g.outputs_mut().iter_mut() {
        if let Some(orig) = float
            .graph
            .outputs()
            .iter()
            .find(|p| p.info.name() == port.info.name())
        {
            port.info = orig.info.clone();
        }
    }
    let ids: Vec<_> = g.value_ids().collect();
    for v in ids {
        if g.value(v).info.is_some() && !keep.contains(g.name(v)) {
            g.value_mut(v).info = None;
        }
    }
}

/// A model file's size plus the external data files it references.
pub fn file_size_with_data(path: &Path) -> u64 {
    let base = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let Ok(m) = import::read_model(path) else {
        return base;
    };
    let mut files = std::collections::BTreeSet::new();
    for n in m.graph.initializer_nodes() {
        if let Some(t) = m.graph.node(n).initializer() {
            if let Some(e) = t.external() {
                files.insert(e.path().to_path_buf());
            }
        }
    }
    base + files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
}
