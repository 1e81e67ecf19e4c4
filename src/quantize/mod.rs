//! Static post-training quantization, end to end: the library entry point
//! behind `onnxq quantize`.
//!
//! The driver builds one pipeline (see [`pipeline`]), runs it through the
//! pass manager, validates the result against the float model on held-out
//! data (or part of the calibration data), reruns the pipeline's tail for
//! the automatic fallback when a fidelity target is set, and reports
//! everything done. Every change to the graph is a pass of the printed
//! pipeline, so `onnxq opt MODEL --calib DIR -p PIPELINE` writes the same
//! file.
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

pub mod accounting;
pub mod build;
mod checks;
pub mod equalize;
pub mod fallback;
pub mod inputs;
pub mod method;
pub mod pipeline;
pub mod prune;
pub mod ranges;
mod reference;
pub mod selection;
pub mod smooth;

use checks::memory_guard;
pub use checks::{check_not_quantized, NEWEST_OPSET};
use reference::{reference_on, validation_data};

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::calib::data::DataSet;
use crate::ir::Model;
use crate::onnx::export::{self, ExportOptions};
use crate::onnx::import;
use crate::passes::context::InputShapes;
use crate::quant::range::Method;
use crate::quant::QType;
use crate::validate::Reference;

pub use crate::report::quantize::{
    ActivationSummary, Fallback, FidelityTarget, Pruning, QuantizeReport, Timings,
};
pub use build::{Built, Calibrated};
pub use inputs::{calib_data, DataOptions};
pub use smooth::SmoothChoice;

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
    /// Static (calibrated activation ranges) or dynamic (activations
    /// quantized at run time, MatMul/Gemm only).
    pub mode: Mode,
    /// Calibration method; `None`: chosen per model by measuring
    /// (`--method auto`, the default; see [`method`]).
    pub method: Option<Method>,
    /// Graph inputs read as constants (`fix-inputs`), `NAME=VALUE`.
    pub fixed_inputs: Vec<String>,
    /// SmoothQuant on the MatMul inputs (`smooth-quant`).
    pub smooth: Smooth,
    /// Cross-layer equalization and bias absorption (`equalize`,
    /// `absorb-bias`): always, never, or `None` (`auto`): tried where
    /// weights are per-tensor and kept where it measurably helps (see
    /// [`equalize`]).
    pub equalize: Option<bool>,
    pub activations: QType,
    pub symmetric_activations: Option<bool>,
    pub weights: QType,
    pub per_channel: bool,
    pub reduce_range: bool,
    pub exclude: Vec<String>,
    pub op_types: Vec<String>,
    /// Node labels to keep in float without a fallback search (from a
    /// selection file, `--selection`).
    pub keep_float: Vec<String>,
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
    pub fidelity: Option<FidelityTarget>,
    /// Memory the model's runs in tract may take (bytes); `None`: 90% of
    /// the available memory. See [`crate::runtime::memory`].
    pub max_memory: Option<u64>,
    /// The fallback gives the most sensitive nodes 16-bit activations
    /// instead of float (`--promote 16`; opset 21).
    pub promote16: bool,
    /// Correct biases for the mean shift weight rounding causes.
    pub bias_correction: bool,
    /// How weights round to their codes.
    pub rounding: Rounding,
    /// With [`Mode::Weights`]: bits, blocks, symmetry and form of the
    /// weights (`method` follows [`Self::rounding`]).
    pub weights_only: crate::passes::quantize_weights::Options,
    /// With [`Mode::Half`]: `convert-float` options.
    pub float16: crate::passes::convert_float::Options,
    /// Cost-aware selection: quantize the fewest Conv/MatMul/Gemm that
    /// cover this fraction of the compute ops' measured time.
    pub coverage: Option<f64>,
    /// Collect profile, tensor errors and activation histograms for the
    /// report (costs a profile run and a validation pass with captures).
    pub detailed_report: bool,
    /// The runtime the file is for.
    pub target: crate::target::Target,
    /// Keep int8 only where it is measured to pay in the target's runtime
    /// (`select-speed`); off: every compute op of the placement.
    pub speed_select: bool,
    /// `libonnxruntime` to time in (`--ort-lib`).
    pub ort_library: Option<PathBuf>,
    /// The activation type was not asked for: a target may choose it from
    /// the model (tract: u8 asymmetric unless a MatMul weight is past the
    /// size where tract's u8 kernel recomputes column sums every run).
    pub activations_by_model: bool,
    /// The compute ops to keep int8 without timing (a saved selection's
    /// `int8`): `select-speed{nodes=[…]}`.
    pub speed_nodes: Option<Vec<String>>,
    /// Every scale a power of two, activations symmetric (`--scales
    /// pow2`, for NPU targets).
    pub pow2_scales: bool,
    /// Weights restricted to 2^bits levels and stored as codes into a
    /// table (`--mode codebook --bits N`); 0: off.
    pub codebook_bits: u32,
    pub codebook_kind: crate::quant::codebook::Kind,
    /// One codebook table per channel instead of per weight.
    pub codebook_per_channel: bool,
    /// Magnitude pruning before quantization: the per-layer error budget
    /// in dB (`--prune DB`; see `insert-qdq`'s `prune-db`).
    pub prune_db: Option<f64>,
    /// Choose the pruning level by the fidelity target (`--prune auto`).
    pub prune_auto: bool,
    /// Structured pruning before calibration: the share of the
    /// Conv/MatMul/Gemm MACs to remove (`--prune-channels`; see the
    /// `prune-channels` pass).
    pub prune_channels: Option<f64>,
    /// Its per-reader error budget in dB (`prune-channels`'s `budget-db`).
    pub prune_channels_budget: f64,
    /// Choose the budget by the fidelity target (`--prune-channels auto`).
    pub prune_channels_auto: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            calib: None,
            calib_random: None,
            calib_limit: None,
            stats: None,
            save_stats: None,
            mode: Mode::Static,
            method: None,
            fixed_inputs: vec![],
            smooth: Smooth::Auto,
            equalize: None,
            activations: QType::U8,
            symmetric_activations: None,
            weights: QType::S8,
            per_channel: true,
            reduce_range: false,
            exclude: vec![],
            op_types: vec![],
            keep_float: vec![],
            input_shapes: InputShapes::new(),
            val: None,
            val_samples: 8,
            val_values: Some(1 << 20),
            external_data: None,
            progress: true,
            threads: None,
            fidelity: None,
            promote16: false,
            max_memory: None,
            bias_correction: true,
            rounding: Rounding::Nearest,
            weights_only: Default::default(),
            float16: Default::default(),
            coverage: None,
            detailed_report: false,
            target: crate::target::Target::OrtCpu,
            speed_select: true,
            ort_library: None,
            speed_nodes: None,
            activations_by_model: false,
            pow2_scales: false,
            codebook_bits: 0,
            codebook_kind: crate::quant::codebook::Kind::KMeans,
            codebook_per_channel: false,
            prune_db: None,
            prune_auto: false,
            prune_channels: None,
            prune_channels_budget: 20.0,
            prune_channels_auto: false,
        }
    }
}

impl QuantizeOptions {
    /// Where the calibration data and statistics come from.
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            calib: self.calib.clone(),
            calib_random: self.calib_random,
            calib_limit: self.calib_limit,
            stats: self.stats.clone(),
            input_shapes: self.input_shapes.clone(),
            threads: self.threads,
            progress: self.progress,
            ort_library: self.ort_library.clone(),
        }
    }
}

/// Whether `smooth-quant` runs before the ranges are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Smooth {
    /// Tried where a MatMul reads an activation the statistics cover, and
    /// kept when it raises the output SQNR on the calibration samples
    /// (needs calibration data, as `--method auto` does).
    Auto,
    Off,
    /// Always, with this migration strength.
    Alpha(f64),
}

impl Smooth {
    /// The migration strength `auto` tries (the SmoothQuant paper's
    /// choice for most models; 0.5 moves too little on MiniLM-L3: cosine
    /// 0.9956 against 0.9974).
    pub const AUTO_ALPHA: f64 = 0.8;

    /// `auto`, `off`, or an alpha in `[0, 1]`.
    pub fn parse(s: &str) -> Result<Smooth, String> {
        match s {
            "auto" => Ok(Smooth::Auto),
            "off" => Ok(Smooth::Off),
            a => match a.parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(Smooth::Alpha(v)),
                _ => Err(format!(
                    "--smooth '{s}': expected auto, off or an alpha between 0 and 1"
                )),
            },
        }
    }
}

/// How weights round to their int8 codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Each weight to its nearest code.
    Nearest,
    /// Learned from the inputs each layer sees on calibration data
    /// (`round-weights`, GPTQ).
    Adaptive,
}

/// How activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ranges from calibration, Q/DQ in the graph.
    Static,
    /// Ranges computed on every run (`quantize-dynamic`).
    Dynamic,
    /// Weights only, activations stay float (`quantize-weights`,
    /// `quantize-gather`); [`QuantizeOptions::weights_only`] says how.
    Weights,
    /// Float16/bfloat16 compute or storage (`convert-float`);
    /// [`QuantizeOptions::float16`] says how.
    Half,
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

/// Quantizes a model in memory: prepares and calibrates it, then builds
/// the quantized model. Returns it with the report (its `output`, sizes and
/// validation are filled by [`quantize_file`]) and the calibrated model
/// further variants are built from.
pub fn quantize_model(
    float: &Model,
    opts: &QuantizeOptions,
) -> Result<(Built, QuantizeReport, Calibrated), QuantizeError> {
    let t0 = Instant::now();
    check_not_quantized(float, "the model")?;
    let mut warnings = Vec::new();
    if opts.calib_random.is_some() {
        warnings.push("calibrating on RANDOM inputs: activation ranges will be poor; use --calib DIR with representative data".into());
    }
    let calibrated = build::calibrate(float, opts)?;
    let t2 = Instant::now();
    let built = calibrated.build(&opts.keep_float)?;
    let t_q = t2.elapsed().as_secs_f64();
    let mut remarks = calibrated.remarks.clone();
    remarks.extend(built.remarks.iter().cloned());
    let report = QuantizeReport {
        input: String::new(),
        output: String::new(),
        pipeline: calibrated.pipeline_with(&built),
        method: match (opts.mode, opts.method) {
            (Mode::Dynamic, _) => "dynamic (run-time ranges)".into(),
            (Mode::Half, _) => format!(
                "{} {}",
                if opts.float16.to == "bf16" {
                    "bfloat16"
                } else {
                    "float16"
                },
                if opts.float16.storage_only {
                    "weights, float32 compute (storage only)"
                } else {
                    "compute and weights, float32 where calibration ranges would overflow"
                }
            ),
            (Mode::Weights, _) => format!(
                "weights only: {}, {}",
                opts.weights_only.describe(),
                if opts.rounding == Rounding::Adaptive {
                    "GPTQ rounding"
                } else {
                    "round to nearest"
                }
            ),
            (_, Some(m)) => m.to_string(),
            (_, None) => format!("auto: {}", calibrated.method),
        },
        calibration_samples: calibrated.samples,
        float_bytes: 0,
        quantized_bytes: 0,
        float_compressed_bytes: None,
        quantized_compressed_bytes: None,
        nodes: built.decisions.clone(),
        remarks,
        validation: None,
        fallback: None,
        pruning: None,
        channel_pruning: None,
        profile: None,
        quantized_mac_share: None,
        compute_by_precision: Default::default(),
        tensor_errors: vec![],
        diagnoses: vec![],
        activations: vec![],
        ranges: calibrated.analyses.range_choices.clone(),
        seconds: Timings {
            prepare: calibrated.seconds.0,
            calibrate: calibrated.seconds.1,
            quantize: t_q,
            total: t0.elapsed().as_secs_f64(),
            ..Default::default()
        },
        warnings,
        speed: calibrated.analyses.speed.clone(),
    };
    Ok((built, report, calibrated))
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
    check_not_quantized(&float, &input.display().to_string())?;
    let guarded = memory_guard(&float, input, opts)?;
    let opts = &guarded;
    let threads = opts.threads.unwrap_or_else(crate::runtime::default_threads);
    let (mut built, mut report, mut calibrated) = quantize_model(&float, opts)?;
    let (val, mut reference) = validation_data(&float, opts, &calibrated, threads)?;
    if let (true, Some(target), Some(val)) = (opts.prune_channels_auto, &opts.fidelity, &val) {
        let t = Instant::now();
        let r = reference_on(&mut reference, &float, val, threads, opts)?;
        (built, report, calibrated) =
            prune::search_channels(&float, opts, (built, report, calibrated), r, target)?;
        report.seconds.fallback += t.elapsed().as_secs_f64();
    }
    if let (true, Some(target), Some(val)) = (opts.prune_auto, &opts.fidelity, &val) {
        let t = Instant::now();
        let reference = reference_on(&mut reference, &float, val, threads, opts)?;
        let (pruning, kept) = prune::search(&calibrated, reference, target, opts.progress)?;
        if let Some(kept) = kept {
            // The fallback (if the target still needs one) reruns the
            // tail at this level.
            calibrated.insert.prune_db = pruning.db;
            report.pipeline = calibrated.pipeline_with(&kept);
            report.nodes = kept.decisions.clone();
            report.remarks = calibrated.remarks.clone();
            report.remarks.extend(kept.remarks.iter().cloned());
            built = kept;
        }
        report.pruning = Some(pruning);
        report.seconds.fallback += t.elapsed().as_secs_f64();
    } else if let Some((zeros, total)) = built.pruned {
        report.pruning = Some(Pruning {
            db: calibrated.insert.prune_db,
            zeros,
            total,
            searched: false,
            trials: vec![],
        });
    }
    report.channel_pruning = calibrated.analyses.channel_pruning.clone();
    if let (Some(target), Some(val)) = (&opts.fidelity, &val) {
        let t = Instant::now();
        let reference = reference_on(&mut reference, &float, val, threads, opts)?;
        let outcome = fallback::search(
            &calibrated,
            &built,
            reference,
            target,
            opts.promote16,
            opts.progress,
        )?;
        if let Some(kept) = outcome.built {
            report.pipeline = calibrated.pipeline_with(&kept);
            report.nodes = kept.decisions.clone();
            // The remarks of the build that was kept, not of the full one.
            report.remarks = calibrated.remarks.clone();
            report.remarks.extend(kept.remarks.iter().cloned());
            built = kept;
        }
        let mut fb = outcome.report;
        fb.speed_ratio = kept_speed(&calibrated, &built, reference, opts);
        report.fallback = Some(fb);
        report.seconds.fallback = t.elapsed().as_secs_f64();
    }
    // Weight-only files compute in float (or onnxruntime's MatMulNBits):
    // no share of MACs runs on quantized activations.
    if !matches!(opts.mode, Mode::Weights | Mode::Half) {
        report.quantized_mac_share = accounting::mac_share(&calibrated.prepared, &report.nodes);
    }
    if report.nodes.is_empty()
        && calibrated.dynamic.is_none()
        && !matches!(opts.mode, Mode::Weights | Mode::Half)
    {
        report.warnings.push("nothing in this model is a quantization candidate (no Conv, MatMul, Gemm or other op on float data onnxq quantizes): the output is the float model after clean-up".into());
    }
    report
        .warnings
        .extend(accounting::uncovered(&calibrated.prepared));
    if let Some(sp) = report.speed.as_ref().filter(|s| s.kept == 0 && s.of > 0) {
        let all = sp.candidates.iter().find(|c| c.0 == sp.of).map(|c| c.1);
        let size = if opts.target.spec().folds_weight_dq.is_some() {
            "their weights are stored as int8 (the runtime expands them at load), so the file is smaller but runs at float speed"
        } else {
            "so the file is about the size of the float model"
        };
        report.warnings.push(format!(
            "no compute op runs faster in int8 than in float in {} on this model{}: every one stays float, {size}; --no-speed-select quantizes them all (slower)",
            sp.runtime,
            all.map(|r| format!(" (all {} int8: {r:.2}x the float model's speed)", sp.of))
                .unwrap_or_default()
        ));
    }
    let summary = export::write_model(
        &built.model,
        output,
        &ExportOptions {
            external_min_bytes: opts.external_data,
        },
    )?;
    report.input = input.display().to_string();
    report.output = output.display().to_string();
    report.compute_by_precision = crate::report::precision::compute_by_precision_with(
        &built.model,
        &accounting::node_macs(&calibrated.prepared),
    );
    (report.float_bytes, report.float_compressed_bytes) = accounting::sizes(input);
    report.quantized_bytes =
        summary.model_bytes + summary.external.as_ref().map(|e| e.1).unwrap_or(0);
    // The files just written, without reading the model back for them.
    let written: Vec<PathBuf> = std::iter::once(output.to_path_buf())
        .chain(summary.external.as_ref().map(|e| e.0.clone()))
        .collect();
    report.quantized_compressed_bytes = accounting::deflated(&written);
    if let (true, Some(val)) = (opts.val_samples > 0, &val) {
        let t = Instant::now();
        // Validate the file as written.
        let written = import::read_model(output)?;
        let reference = match reference.take() {
            Some(r) => r,
            None => Reference::new(&float, val, threads, &opts.input_shapes)?,
        };
        report.validation = Some(reference.score(&written)?);
        // Counted, not lowered again: the validation runner did that.
        let l = crate::runtime::lower::count(&written);
        if l.any() {
            let parts: Vec<String> = [
                (l.dequantized, "DequantizeLinear folded to float weights"),
                (l.matmul_nbits, "MatMulNBits run as MatMul"),
                (l.half_casts, "half weights cast once"),
                (
                    l.wide_qdq,
                    "16-bit activation QuantizeLinear/DequantizeLinear run as their float ops",
                ),
                (l.codebooks, "codebook weights expanded once"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            report.remarks.push(crate::passes::context::Remark {
                pass: "validate".into(),
                node: "<model>".into(),
                message: format!(
                    "tract cannot load (or would re-expand on every run) this file's 4-bit/16-bit, blocked, codebook or half-precision weights or 16-bit activations: validated through an equivalent lowering ({}); onnxruntime runs the file as written",
                    parts.join(", ")
                ),
                level: crate::passes::context::Level::Note,
            });
        }
        if let Some(w) = low_fidelity_hint(report.validation.as_ref(), opts) {
            report.warnings.push(w);
        }
        report.seconds.validate = t.elapsed().as_secs_f64();
    }
    if opts.detailed_report {
        let t = Instant::now();
        detail_report(&mut report, &float, &calibrated, &built, val.as_ref(), opts)?;
        report.seconds.report = t.elapsed().as_secs_f64();
    }
    report.seconds.total = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Below this output SQNR (dB) the quantized model's numbers are far from
/// the float model's (about 30% relative error): said loudly with what to
/// try, instead of a table the user may not read.
const LOW_SQNR_DB: f64 = 10.0;

/// The warning for a validation with an output under [`LOW_SQNR_DB`].
fn low_fidelity_hint(
    v: Option<&crate::validate::Validation>,
    opts: &QuantizeOptions,
) -> Option<String> {
    let worst = v?
        .outputs
        .iter()
        .filter_map(|o| o.sqnr_db.map(|d| (o.name.as_str(), d)))
        .filter(|(_, d)| d.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    if worst.1 >= LOW_SQNR_DB || opts.fidelity.is_some() {
        return None;
    }
    let data = if opts.calib_random.is_some() {
        "calibrate on real samples (--calib DIR: random inputs rarely exercise a model's real ranges), "
    } else {
        ""
    };
    Some(format!(
        "output '{}' keeps only {:.1} dB SQNR against the float model: {data}let the automatic fallback keep the sensitive layers float (--target-sqnr 20), or rank them with `onnxq validate FLOAT QUANT --data DIR --per-layer`",
        worst.0, worst.1
    ))
}

/// The kept file's speed against the float model in the target's runtime,
/// on the validation samples; `None` where nothing can measure it.
fn kept_speed(
    calibrated: &Calibrated,
    built: &Built,
    reference: &Reference,
    opts: &QuantizeOptions,
) -> Option<f64> {
    use crate::runtime::bench::{self, Rounds};
    if opts.target == crate::target::Target::Portable {
        return None;
    }
    let inputs = crate::passes::context::Inputs {
        ort_library: opts.ort_library.clone(),
        ..Default::default()
    };
    let engine = crate::passes::select_speed::engine(opts.target, &inputs).ok()?;
    let specs = crate::calib::data::input_specs(&calibrated.prepared);
    let data = &reference.data;
    let samples: Vec<_> = (0..data.len().min(4))
        .filter_map(|i| data.load(i, &specs, &opts.input_shapes).ok())
        .collect();
    let mut float = calibrated.prepared.clone();
    let mut cx = crate::passes::PassContext::resume(
        crate::passes::context::Inputs::default(),
        calibrated.analyses.clone(),
    );
    let p = crate::passes::Pipeline::parse("restore-interface").ok()?;
    crate::passes::PassManager::new(p)
        .run(&mut float, &mut cx)
        .ok()?;
    let probe = bench::compare(
        &engine,
        &[&float],
        &samples,
        &Rounds::for_latency(1.0, 1.0, 1),
    )
    .ok()?;
    let rounds = Rounds::for_latency(probe[0].median_ms, 200.0, 5);
    let lat = bench::compare(&engine, &[&float, &built.model], &samples, &rounds).ok()?;
    Some(lat[1].ratio)
}

/// What `--report` adds: activation histograms with their chosen ranges,
/// the error of every shared tensor, and where the float model spends its
/// time.
fn detail_report(
    report: &mut QuantizeReport,
    float: &Model,
    calibrated: &Calibrated,
    built: &Built,
    val: Option<&DataSet>,
    opts: &QuantizeOptions,
) -> Result<(), QuantizeError> {
    if let Some(stats) = &calibrated.analyses.stats {
        report.activations = accounting::activation_summaries(
            stats,
            calibrated.act_params(),
            &built.quantized_tensors,
        );
    }
    if let Some(val) = val {
        // Error of every shared tensor, on the prepared float model (the
        // names quantization kept).
        report.tensor_errors = crate::sensitivity::tensor_errors(
            &calibrated.prepared,
            &built.model,
            val,
            &opts.input_shapes,
        )?;
        if let Some(stats) = &calibrated.analyses.stats {
            report.diagnoses = crate::report::diagnose::diagnose(
                &report.tensor_errors,
                stats,
                calibrated.act_params(),
                &built.quantized_tensors,
            );
        }
        let specs = crate::calib::data::input_specs(float);
        let first = val.load(0, &specs, &opts.input_shapes)?;
        report.profile = crate::analysis::profile::measure(&calibrated.prepared, &first, 5).ok();
    }
    Ok(())
}

/// Cleans a float model up as `quantize` does (its clean-up passes, at
/// these input shapes): what `validate --per-layer` maps a quantized
/// model's nodes back to.
pub fn prepare(float: &Model, input_shapes: &InputShapes) -> Result<Model, QuantizeError> {
    let mut m = float.clone();
    let mut cx = crate::passes::PassContext::with_inputs(crate::passes::context::Inputs {
        input_shapes: input_shapes.clone(),
        ..Default::default()
    });
    build::run(
        &mut m,
        &mut cx,
        crate::passes::Pipeline::parse(pipeline::CLEAN_UP)?,
    )?;
    Ok(m)
}

/// `onnxq calibrate`: the prepare passes and `calibrate`, keeping full
/// histograms and the hashes a statistics file records.
pub fn calibrate_stats(
    float: &Model,
    d: &DataOptions,
) -> Result<crate::calib::Stats, QuantizeError> {
    let keep = inputs::Keep {
        histograms: true,
        outputs: 0,
        data_hash: true,
        model_hash: true,
    };
    let inputs = inputs::pass_inputs(float, d, keep)?;
    if inputs.calib_data.is_none() {
        return Err(QuantizeError::Calib(crate::calib::CalibError::NoData));
    }
    let mut cx = crate::passes::PassContext::with_inputs(inputs);
    let mut m = float.clone();
    let p = format!("{},calibrate", pipeline::prepare(true));
    build::run(&mut m, &mut cx, crate::passes::Pipeline::parse(&p)?)?;
    let stats = cx
        .analyses
        .stats
        .take()
        .expect("invariant: calibrate leaves statistics");
    Ok(std::sync::Arc::try_unwrap(stats).unwrap_or_else(|a| (*a).clone()))
}
