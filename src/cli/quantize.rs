//! `onnxq quantize`: the whole flow from a float model to a validated int8
//! model (`crate::quantize` does the work), and the optional report.

use std::path::{Path, PathBuf};

use clap::Args;

use super::args::{check_output, quantize_options, CalibArgs, WriteArgs};
use super::{CliResult, Failure};
use crate::onnx::export;
use crate::quantize::{QuantizeOptions, QuantizeReport};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    pub model: PathBuf,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Reuse saved statistics instead of running calibration.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Save the calibration statistics to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_stats: Option<PathBuf>,
    /// static: activation ranges from calibration (Q/DQ in the graph);
    /// dynamic: int8 weights, activations quantized at run time
    /// (MatMul/Gemm only; --calib is then optional and used to validate);
    /// weights: weight-only (MatMul/Gemm weights and embedding tables,
    /// activations stay float; see --bits, --block-size, --format);
    /// f16: float16 compute and weights, ops whose calibration ranges would
    /// overflow kept float32 (for GPUs); bf16: bfloat16 weights (with
    /// --storage-only); codebook: static int8 whose weights take at most
    /// 2^bits levels (--bits, default 4; --codebook) and are stored as
    /// codes into a table: a smaller file and download, the same speed.
    #[arg(long, default_value = "static", value_parser = ["static", "dynamic", "weights", "f16", "bf16", "codebook"])]
    pub mode: String,
    /// --mode f16|bf16: store the weights in half precision and cast them
    /// back to float32 where read: half the file, float32 compute (for CPU
    /// runtimes, where fp16 compute is slower).
    #[arg(long)]
    pub storage_only: bool,
    /// --mode weights: 8 (per output channel by default, the default) or 4
    /// (in blocks); --mode codebook: 2 to 8 (default 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=8))]
    pub bits: Option<u32>,
    /// --mode codebook: how the levels are chosen: kmeans (the levels with
    /// the least squared error, exact), log (zero and ±max/2^j) or uniform
    /// (2^(bits-1)-1 evenly spaced levels each side of zero: symmetric
    /// int4 at 4 bits, the baseline).
    #[arg(long, default_value = "kmeans", value_parser = ["kmeans", "log", "uniform"])]
    pub codebook: String,
    /// --mode codebook: one table per weight (tensor, the default) or per
    /// output channel (channel: levels fitted to each channel, more
    /// accurate, but each table costs its levels' bytes: a larger file
    /// where channels hold few values, as depthwise convolutions do).
    #[arg(long, default_value = "tensor", value_parser = ["tensor", "channel"])]
    pub codebook_tables: String,
    /// Magnitude pruning before quantization: DB, each layer's smallest
    /// weights zeroed while it keeps all but DB dB of its energy (lower
    /// prunes more; the layers' errors add up, so deep networks need 35 or
    /// more), or auto: the most pruning that meets
    /// --target-sqnr/--target-cosine. Zeros shrink the compressed file, not
    /// the run time (no runtime has sparse kernels).
    #[arg(long, value_name = "DB|auto")]
    pub prune: Option<String>,
    /// Structured pruning before calibration: remove the convolution
    /// output channels that matter least on the calibration data (with
    /// the channels of what carries and reads them; their means folded
    /// into the readers' biases) until this share (0–0.9) of the
    /// Conv/MatMul/Gemm MACs is gone, while each reader keeps its error
    /// 20 dB below its output: a narrower network, smaller and faster in
    /// every runtime. auto: the most pruning whose quantized model meets
    /// --target-sqnr/--target-cosine against the float model. Residual and
    /// concatenated channels are left alone.
    #[arg(long, value_name = "FRACTION|auto")]
    pub prune_channels: Option<String>,
    /// Scales: float (any value) or pow2 (every scale a power of two and
    /// activations symmetric, as NPUs that rescale by shifts require, e.g.
    /// AMD Vitis-AI's DPU; add --per-tensor where the NPU wants it).
    #[arg(long, default_value = "float", value_parser = ["float", "pow2"])]
    pub scales: String,
    /// --mode weights: values per block along K (a power of two ≥ 16);
    /// default 32 for 4 bits and for --format qoperator, else per channel.
    #[arg(long, value_name = "N")]
    pub block_size: Option<usize>,
    /// --mode weights: signed codes with zero point 0 (default: unsigned
    /// codes with a zero point per block).
    #[arg(long)]
    pub symmetric: bool,
    /// --mode weights: qdq (opset-21 blocked DequantizeLinear → MatMul,
    /// which onnxruntime fuses into MatMulNBits) or qoperator
    /// (com.microsoft.MatMulNBits, accuracy_level 4, any opset).
    #[arg(long, default_value = "qdq", value_parser = ["qdq", "qoperator"])]
    pub format: String,
    /// Read an input that never changes where the model is deployed (a
    /// sample rate, a mode flag) as this constant: an If on it folds away
    /// and its branch is quantized. The input stays in the interface and is
    /// ignored. NAME=VALUE or NAME=V1,V2,… (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub fix_input: Vec<String>,
    /// Calibration method: auto (each of the others tried on the first
    /// calibration samples, the most accurate kept), minmax, percentile,
    /// percentile{p=99.9}, entropy, mse.
    #[arg(long, default_value = "auto")]
    pub method: String,
    /// SmoothQuant: divide outlier activation channels into the weights of
    /// the MatMuls reading them. auto: tried on transformer-like graphs and
    /// kept where it raises the output SQNR on the calibration samples;
    /// off; or an alpha in [0, 1] (migration strength) to always apply.
    #[arg(long, default_value = "auto", value_name = "auto|off|ALPHA")]
    pub smooth: String,
    /// Cross-layer equalization and bias absorption: balance the channel
    /// ranges of consecutive Conv/Gemm/MatMul weights and move measured
    /// activation offsets into the next bias. auto: where weights are
    /// per-tensor (the tract target, --per-tensor); on; off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub equalize: String,
    /// The runtime the file is for: ort-cpu (onnxruntime CPU: whole QDQ
    /// groups), tract (QOperator QLinearConv/QLinearMatMul), portable
    /// (fidelity-first QDQ for any runtime). Sets the defaults of
    /// --activations and --per-channel/--per-tensor.
    #[arg(long, default_value = "ort-cpu")]
    pub target: String,
    /// Quantize every compute op the target can run as an integer kernel,
    /// without measuring where int8 pays.
    #[arg(long)]
    pub no_speed_select: bool,
    /// The libonnxruntime.so to time in (default: ORT_DYLIB_PATH, then the
    /// onnxruntime Python package).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Per-tensor weight scales instead of per-channel.
    #[arg(long, conflicts_with = "per_channel")]
    pub per_tensor: bool,
    /// Per-channel weight scales (the default where the target keeps them
    /// fast).
    #[arg(long)]
    pub per_channel: bool,
    /// Activation type: u8 (asymmetric) or s8 (symmetric); default: what
    /// the target's integer kernels want. u16/s16: 16-bit activations
    /// (opset 21) with 8-bit weights, for accuracy and NPU targets (A16W8);
    /// no CPU runtime has integer kernels for them, so they run in float.
    #[arg(long)]
    pub activations: Option<String>,
    /// Weight type: s8 or u8 (both symmetric).
    #[arg(long, default_value = "s8")]
    pub weights: String,
    /// Do not correct biases for the mean shift weight rounding causes.
    #[arg(long)]
    pub no_bias_correction: bool,
    /// How weights round to their int8 codes: `nearest`, or `adaptive`
    /// (learned per layer from the inputs it sees on the calibration data,
    /// GPTQ; needs --calib).
    #[arg(long, default_value = "nearest", value_parser = ["nearest", "adaptive"])]
    pub rounding: String,
    /// 7-bit quantization for runtimes whose int8 kernels can overflow.
    #[arg(long)]
    pub reduce_range: bool,
    /// Keep these nodes or op types in float (repeatable; glob `*`).
    #[arg(long, value_name = "NODE_OR_OPTYPE")]
    pub exclude: Vec<String>,
    /// Only quantize these op types (comma list). A Relu/Clip the target
    /// fuses into a listed op's output comes with it.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub op_types: Vec<String>,
    /// Validation data (default: the first samples of the calibration data).
    #[arg(long, value_name = "DIR")]
    pub val: Option<PathBuf>,
    /// Validate on N samples (0: skip validation). Default: up to 8 of the
    /// calibration samples, fewer once their outputs hold 2^20 values
    #[arg(long)]
    pub val_samples: Option<usize>,
    /// Write the full report: FILE.json for machines, FILE.html for people
    /// (one self-contained page: time per op type, hotspots, per-layer SQNR,
    /// activation histograms with the chosen clip ranges).
    #[arg(long, value_name = "FILE.json|FILE.html")]
    pub report: Option<PathBuf>,
    /// Cost-aware selection: quantize the fewest Conv/MatMul/Gemm that
    /// cover this fraction (0–1) of their measured time, with what feeds them.
    #[arg(long, value_name = "FRACTION")]
    pub coverage: Option<f64>,
    /// Automatic fallback: keep the most sensitive nodes in float until the
    /// worst output SQNR on the validation data reaches DB.
    #[arg(long, value_name = "DB")]
    pub target_sqnr: Option<f64>,
    /// Automatic fallback on mean cosine similarity (e.g. 0.995).
    #[arg(long, value_name = "C")]
    pub target_cosine: Option<f64>,
    /// Memory the model's runs in tract (calibration, validation) may take,
    /// e.g. 8G: fewer worker threads when that fits, else a clear error
    /// before any run. Default: 90% of the memory available at start.
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// With --target-sqnr/--target-cosine: give the most sensitive nodes
    /// 16-bit activations instead of keeping them in float (mixed 8/16, for
    /// NPU targets; opset 21). The only width is 16.
    #[arg(long, value_name = "BITS")]
    pub promote: Option<u32>,
    /// Keep the nodes of a selection file (written by --save-selection) in
    /// float instead of searching.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["target_sqnr", "target_cosine"])]
    pub selection: Option<PathBuf>,
    /// Save the nodes the automatic fallback kept in float to FILE, for
    /// --selection.
    #[arg(long, value_name = "FILE")]
    pub save_selection: Option<PathBuf>,
    /// Print the pipeline that produced the file (replayable with
    /// `onnxq opt MODEL --calib DIR -p PIPELINE`) on stdout.
    #[arg(long)]
    pub print_pipeline: bool,
}

/// The first flag given that chooses what stays float by measuring
/// (fallback, selection file, coverage): the weight-only and float16 modes
/// have no such search.
fn fallback_flag(a: &QuantizeArgs) -> Option<&'static str> {
    [
        (a.target_sqnr.is_some(), "--target-sqnr"),
        (a.target_cosine.is_some(), "--target-cosine"),
        (a.selection.is_some(), "--selection"),
        (a.coverage.is_some(), "--coverage"),
    ]
    .into_iter()
    .find_map(|(set, f)| set.then_some(f))
}

/// The `quantize-weights` options of `--mode weights`, checked.
fn weights_only(a: &QuantizeArgs) -> Result<crate::passes::quantize_weights::Options, Failure> {
    if let Some(flag) = fallback_flag(a) {
        return Err(Failure::bad_input(format!(
            "{flag} is not available with --mode weights (weight-only quantization has no per-layer fallback yet); use --exclude NODE to keep a layer float"
        )));
    }
    let bits = a.bits.unwrap_or(8);
    if !matches!(bits, 4 | 8) {
        return Err(Failure::bad_input(format!(
            "--bits {bits}: expected 8 or 4 with --mode weights (--mode codebook takes 2 to 8)"
        )));
    }
    let block = a
        .block_size
        .unwrap_or(if bits == 4 || a.format == "qoperator" {
            32
        } else {
            0
        });
    let o = crate::passes::quantize_weights::Options {
        bits,
        block_size: block,
        symmetric: a.symmetric,
        format: a.format.clone(),
        ..Default::default()
    };
    // The pass's own checks (block size a power of two, …), as CLI errors.
    crate::passes::quantize_weights::QuantizeWeights::from_options(
        serde_json::to_value(&o).expect("invariant: options serialize"),
    )
    .map_err(|e| {
        Failure::bad_input(
            e.to_string()
                .replace("block-size=", "--block-size ")
                .replace("format=qoperator", "--format qoperator"),
        )
    })?;
    Ok(o)
}

pub fn cmd_quantize(a: &QuantizeArgs) -> CliResult {
    let report = quantize(a)?;
    eprint!("{}", report.summary());
    if a.print_pipeline {
        println!("{}", report.pipeline);
    }
    Ok(())
}

/// `onnxq quantize` without its printing: the model written, the selection
/// and report files asked for written, and the report returned (what the
/// Python package's `onnxq.quantize` returns).
pub fn quantize(a: &QuantizeArgs) -> Result<QuantizeReport, Failure> {
    check_output(&a.model, &a.write)?;
    let o = options(a)?;
    let report =
        crate::quantize::quantize_file(&a.model, &a.write.output, &o).map_err(|e| match e {
            // A pass's or the runtime's finding is about this model.
            crate::quantize::QuantizeError::Pass(_)
            | crate::quantize::QuantizeError::Validate(_) => {
                Failure::bad_input(format!("{}: {e}", a.model.display()))
            }
            e => Failure::bad_input(e),
        })?;
    if let Some(path) = &a.save_selection {
        save_selection(path, &report, &o)?;
    }
    if let Some(p) = &a.report {
        write_report(p, &report)?;
    }
    Ok(report)
}

/// The library's options from the command's arguments; bad values are
/// refused here, before any model is read.
fn options(a: &QuantizeArgs) -> Result<QuantizeOptions, Failure> {
    use crate::quant::{range::Method, QType};
    let mut o = quantize_options(&a.calib)?;
    o.stats = a.stats.clone();
    o.save_stats = a.save_stats.clone();
    o.mode = match a.mode.as_str() {
        "dynamic" => crate::quantize::Mode::Dynamic,
        "weights" => crate::quantize::Mode::Weights,
        "f16" | "bf16" => crate::quantize::Mode::Half,
        _ => crate::quantize::Mode::Static,
    };
    if a.mode == "codebook" {
        o.codebook_bits = a.bits.unwrap_or(4);
        o.codebook_kind = crate::quant::codebook::Kind::parse(&a.codebook)
            .expect("invariant: clap checked the value");
        o.codebook_per_channel = a.codebook_tables == "channel";
    } else if a.codebook != "kmeans" || a.codebook_tables != "tensor" {
        return Err(Failure::bad_input(
            "--codebook and --codebook-tables choose codebook levels: add --mode codebook"
                .to_string(),
        ));
    }
    o.pow2_scales = a.scales == "pow2";
    match a.prune.as_deref() {
        None => {}
        Some("auto") => {
            if a.target_sqnr.is_none() && a.target_cosine.is_none() {
                return Err(Failure::bad_input(
                    "--prune auto chooses the pruning level by the fidelity target: give --target-sqnr DB or --target-cosine C (or a level: --prune 20)",
                ));
            }
            o.prune_auto = true;
        }
        Some(db) => match db.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => o.prune_db = Some(x),
            _ => {
                return Err(Failure::bad_input(format!(
                    "--prune {db}: expected a positive number of dB (e.g. 20) or auto"
                )))
            }
        },
    }
    if let Some(arg) = &a.prune_channels {
        let f = if arg == "auto" {
            if a.target_sqnr.is_none() && a.target_cosine.is_none() {
                return Err(Failure::bad_input(
                    "--prune-channels auto chooses how much to prune by the fidelity target: give --target-sqnr DB or --target-cosine C (or a share: --prune-channels 0.2)",
                ));
            }
            o.prune_channels_auto = true;
            // As much as the error budget allows; the search sets the budget.
            o.prune_channels_budget = crate::quantize::prune::CHANNEL_LEVELS
                [crate::quantize::prune::CHANNEL_LEVELS.len() - 1];
            0.9
        } else {
            match arg.parse::<f64>() {
                Ok(f) if f > 0.0 && f <= 0.9 => f,
                _ => {
                    return Err(Failure::bad_input(format!(
                        "--prune-channels {arg}: expected the share of MACs to remove, above 0 and at most 0.9, or auto"
                    )))
                }
            }
        };
        if !matches!(o.mode, crate::quantize::Mode::Static) {
            return Err(Failure::bad_input(format!(
                "--prune-channels works with static quantization (and --mode codebook): not available with --mode {}",
                a.mode
            )));
        }
        if a.stats.is_some() {
            return Err(Failure::bad_input(
                "--prune-channels changes the network before calibration: saved statistics (--stats) describe the unpruned one; give --calib DIR",
            ));
        }
        o.prune_channels = Some(f);
    }
    if a.prune.is_some() && !matches!(o.mode, crate::quantize::Mode::Static) {
        return Err(Failure::bad_input(format!(
            "--prune works with static quantization (and --mode codebook): not available with --mode {}",
            a.mode
        )));
    }
    if o.pow2_scales && !matches!(o.mode, crate::quantize::Mode::Static) {
        return Err(Failure::bad_input(format!(
            "--scales pow2 sets the scales of static quantization's Q/DQ: not available with --mode {}",
            a.mode
        )));
    }
    if o.mode == crate::quantize::Mode::Half {
        o.float16 = crate::passes::convert_float::Options {
            to: a.mode.clone(),
            storage_only: a.storage_only,
            ..Default::default()
        };
        crate::passes::convert_float::ConvertFloat::from_options(
            serde_json::to_value(&o.float16).expect("invariant: options serialize"),
        )
        .map_err(|e| {
            Failure::bad_input(
                e.to_string()
                    .replace("to=bf16", "--mode bf16")
                    .replace("storage-only=true", "--storage-only"),
            )
        })?;
        if let Some(flag) = fallback_flag(a) {
            return Err(Failure::bad_input(format!(
                "{flag} is not available with --mode {}; use --exclude NODE to keep a layer float32",
                a.mode
            )));
        }
    } else if a.storage_only {
        return Err(Failure::bad_input(
            "--storage-only stores half-precision weights: add --mode f16 or --mode bf16"
                .to_string(),
        ));
    }
    if o.mode == crate::quantize::Mode::Weights {
        o.weights_only = weights_only(a)?;
    } else if (a.bits.is_some() && a.mode != "codebook")
        || a.block_size.is_some()
        || a.symmetric
        || a.format != "qdq"
    {
        return Err(Failure::bad_input(
            "--bits, --block-size, --symmetric and --format describe weight-only quantization: add --mode weights (or --mode codebook for --bits)".to_string(),
        ));
    }
    if o.mode == crate::quantize::Mode::Dynamic {
        if let Some(bad) = a
            .op_types
            .iter()
            .find(|t| !matches!(t.as_str(), "MatMul" | "Gemm"))
        {
            return Err(Failure::bad_input(format!(
                "--mode dynamic --op-types {bad}: only MatMul and Gemm are quantized dynamically (onnxruntime's ConvInteger is 3.6x slower than float); use --mode static for convolutions"
            )));
        }
    }
    o.method = match a.method.as_str() {
        "auto" => None,
        m => Some(Method::parse(m).map_err(Failure::bad_input)?),
    };
    o.smooth = crate::quantize::Smooth::parse(&a.smooth).map_err(Failure::bad_input)?;
    for f in &a.fix_input {
        crate::passes::fix_inputs::split(f)
            .map_err(|e| Failure::bad_input(format!("--fix-input {e}")))?;
    }
    o.fixed_inputs = a.fix_input.clone();
    o.equalize = match a.equalize.as_str() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    };
    let target = crate::target::Target::parse(&a.target).ok_or_else(|| {
        Failure::bad_input(format!(
            "--target '{}': expected ort-cpu, tract or portable",
            a.target
        ))
    })?;
    o.target = target;
    o.speed_select = !a.no_speed_select;
    o.ort_library = a.ort_lib.clone();
    let spec = target.spec();
    o.activations = match &a.activations {
        Some(s) => QType::parse(s).ok_or_else(|| {
            Failure::bad_input(format!("--activations '{s}': expected u8, s8, u16 or s16"))
        })?,
        None => spec.activations,
    };
    if a.activations.is_none() && spec.symmetric_activations {
        o.symmetric_activations = Some(true);
    }
    o.activations_by_model = a.activations.is_none();
    o.weights = QType::parse(&a.weights)
        .filter(|q| !q.is_wide())
        .ok_or_else(|| {
            Failure::bad_input(format!("--weights '{}': expected s8 or u8", a.weights))
        })?;
    o.per_channel = if a.per_tensor {
        false
    } else {
        a.per_channel || spec.per_channel
    };
    o.bias_correction = !a.no_bias_correction;
    o.rounding = if a.rounding == "adaptive" {
        crate::quantize::Rounding::Adaptive
    } else {
        crate::quantize::Rounding::Nearest
    };
    o.detailed_report = a.report.is_some();
    if let Some(c) = a.coverage {
        if !(0.0..=1.0).contains(&c) {
            return Err(Failure::bad_input(format!(
                "--coverage {c}: expected a fraction between 0 and 1"
            )));
        }
        o.coverage = Some(c);
    }
    o.reduce_range = a.reduce_range;
    o.exclude = a.exclude.clone();
    if let Some(path) = &a.selection {
        let sel = crate::quantize::selection::Selection::load(path).map_err(Failure::bad_input)?;
        o.keep_float = sel.keep_float;
        o.speed_nodes = sel.int8;
        if let (None, Some(m)) = (o.method, &sel.method) {
            o.method = Some(Method::parse(m).map_err(|e| {
                Failure::bad_input(format!("{}: method '{m}': {e}", path.display()))
            })?);
        }
        if let (crate::quantize::Smooth::Auto, Some(sm)) = (o.smooth, &sel.smooth) {
            o.smooth = crate::quantize::Smooth::parse(sm).map_err(|e| {
                Failure::bad_input(format!("{}: smooth '{sm}': {e}", path.display()))
            })?;
        }
    }
    o.op_types = a.op_types.clone();
    o.val = a.val.clone();
    if let Some(n) = a.val_samples {
        o.val_samples = n;
        o.val_values = None;
    }
    o.external_data = a.write.external_data;
    if let Some(m) = &a.max_memory {
        o.max_memory = Some(
            crate::runtime::memory::parse_size(m)
                .map_err(|e| Failure::bad_input(format!("--max-memory {e}")))?,
        );
    }
    if let Some(bits) = a.promote {
        if bits != 16 {
            return Err(Failure::bad_input(format!(
                "--promote {bits}: the only width to promote to is 16"
            )));
        }
        if a.target_sqnr.is_none() && a.target_cosine.is_none() {
            return Err(Failure::bad_input(
                "--promote 16 chooses which nodes to promote by the automatic fallback: give --target-sqnr DB or --target-cosine C",
            ));
        }
        if a.save_selection.is_some() {
            return Err(Failure::bad_input(
                "--save-selection pins nodes kept in float; with --promote 16 the pipeline printed by --print-pipeline (insert-qdq's promote) replays the choice",
            ));
        }
        o.promote16 = true;
    }
    if (o.activations.is_wide() || o.promote16) && target == crate::target::Target::Tract {
        return Err(Failure::bad_input(
            "16-bit activations are for NPU targets and accuracy: tract has no 16-bit kernels and would run them as float; use --target portable (or ort-cpu)",
        ));
    }
    if a.target_sqnr.is_some() || a.target_cosine.is_some() {
        o.fidelity = Some(crate::quantize::FidelityTarget {
            min_sqnr_db: a.target_sqnr,
            min_cosine: a.target_cosine,
        });
    }
    Ok(o)
}

/// `--report FILE`: one HTML page for `.html`/`.htm`, JSON otherwise.
fn write_report(p: &Path, report: &QuantizeReport) -> CliResult {
    let json = serde_json::to_vec_pretty(report).expect("invariant: report serializes");
    if p.extension().is_some_and(|e| e == "html" || e == "htm") {
        let html = crate::report::html::render(report);
        export::write_atomic(p, html.as_bytes())
            .map_err(|e| Failure::bad_input(format!("{}: cannot write ({e})", p.display())))?;
        return Ok(());
    }
    export::write_atomic(p, &json)
        .map_err(|e| Failure::bad_input(format!("{}: cannot write ({e})", p.display())))?;
    Ok(())
}

/// Writes what the fallback kept in float (or the selection given) as a
/// selection file.
fn save_selection(
    path: &std::path::Path,
    report: &crate::quantize::QuantizeReport,
    o: &crate::quantize::QuantizeOptions,
) -> CliResult {
    use crate::quantize::selection::Selection;
    let mut sel = match &report.fallback {
        Some(fb) => Selection::new(
            fb.excluded.clone(),
            format!(
                "kept in float by the automatic fallback to meet {}",
                fb.target.describe()
            ),
        ),
        None => Selection::new(o.keep_float.clone(), String::new()),
    };
    sel.pin_measured(&report.pipeline);
    sel.save(path).map_err(Failure::bad_input)
}
