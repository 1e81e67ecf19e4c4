//! The `onnxq` command line: argument definitions and the commands that do
//! not belong to a library module of their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::ir::{types, Model, NodeKind};
use crate::onnx::export::{self, ExportOptions};
use crate::onnx::{dtype_name, import};
use crate::passes::{self, PassContext, PassManager, Pipeline, PrintSel};

/// A command failed: the message and the exit code (1: a check failed,
/// 2: bad input or usage).
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn bad_input(m: impl std::fmt::Display) -> Self {
        Failure {
            code: 2,
            message: m.to_string(),
        }
    }
    pub fn check(m: impl std::fmt::Display) -> Self {
        Failure {
            code: 1,
            message: m.to_string(),
        }
    }
}

pub type CliResult = Result<(), Failure>;

#[derive(Parser, Debug)]
#[command(
    name = "onnxq",
    version,
    about = "Compile ONNX models into quantized ONNX models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Summarise a model: versions, op histogram, parameters, inputs and outputs.
    Inspect(InspectArgs),
    /// Run a pass pipeline over a model and write the result.
    Opt(OptArgs),
    /// List the available passes.
    Passes,
    /// Run a model on inputs from .npy/.npz files and print or save the outputs.
    Run(RunArgs),
    /// Quantize a float model to int8 (static, calibrated), validate and report.
    Quantize(QuantizeArgs),
    /// Run calibration only and save the statistics (histograms) for reuse.
    Calibrate(CalibrateArgs),
    /// Compare a quantized model with the original on data; exit 1 below thresholds.
    Validate(ValidateArgs),
    /// Time every node (tract, median of N runs) and list the hotspots with MACs.
    Profile(ProfileArgs),
}

/// Where calibration data comes from.
#[derive(Args, Debug, Clone)]
pub struct CalibArgs {
    /// Directory of .npz samples (keys = input names), .npy samples, or
    /// test_data_set_*/input_*.pb folders. Read in sorted order.
    #[arg(long, value_name = "DIR")]
    pub calib: Option<PathBuf>,
    /// Use N seeded random samples instead of data (ranges will be poor).
    #[arg(long, value_name = "N")]
    pub calib_random: Option<usize>,
    /// Use at most the first N samples.
    #[arg(long, value_name = "N")]
    pub calib_limit: Option<usize>,
    /// Fix an input's shape: NAME=D0,D1,...
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Worker threads for model runs (results do not depend on it).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

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
    /// Calibration method: minmax, percentile, percentile{p=99.9}, entropy, mse.
    #[arg(long, default_value = "mse")]
    pub method: String,
    /// Per-tensor weight scales instead of per-channel.
    #[arg(long, conflicts_with = "per_channel")]
    pub per_tensor: bool,
    /// Per-channel weight scales (the default).
    #[arg(long)]
    pub per_channel: bool,
    /// Activation type: u8 (asymmetric) or s8 (symmetric).
    #[arg(long, default_value = "u8")]
    pub activations: String,
    /// Weight type: s8 or u8 (both symmetric).
    #[arg(long, default_value = "s8")]
    pub weights: String,
    /// Do not correct biases for the mean shift weight rounding causes.
    #[arg(long)]
    pub no_bias_correction: bool,
    /// 7-bit quantization for runtimes whose int8 kernels can overflow.
    #[arg(long)]
    pub reduce_range: bool,
    /// Keep these nodes or op types in float (repeatable; glob `*`).
    #[arg(long, value_name = "NODE_OR_OPTYPE")]
    pub exclude: Vec<String>,
    /// Only quantize these op types (comma list).
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
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    pub model: PathBuf,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Where to write the statistics (JSON).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The float model.
    pub original: PathBuf,
    /// The quantized model.
    pub quantized: PathBuf,
    /// Samples to compare on (same layouts as --calib).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Use at most N samples.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Fail (exit 1) if any float output's SQNR is below DB.
    #[arg(long, value_name = "DB")]
    pub min_sqnr: Option<f64>,
    /// Fail (exit 1) if any float output's mean cosine is below C.
    #[arg(long, value_name = "C")]
    pub min_cosine: Option<f64>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also report per-tensor SQNR and each quantized node's isolated
    /// sensitivity (output SQNR with only that node quantized), ranked.
    #[arg(long)]
    pub per_layer: bool,
    /// With --per-layer: samples for the isolated-sensitivity runs (one
    /// model run per quantized node per sample).
    #[arg(long, default_value_t = 4)]
    pub sensitivity_samples: usize,
    /// With --per-layer: how many rows of each ranking to print.
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// Print the model in onnxq's text IR.
    #[arg(long)]
    pub ir: bool,
    /// Machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// With --ir: print constants up to this many elements in full.
    #[arg(long, default_value_t = 16)]
    pub elide_above: usize,
}

/// Options shared by every command that writes a model.
#[derive(Args, Debug, Clone)]
pub struct WriteArgs {
    /// Output model path.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Store tensors of at least MIN_BYTES (default 1024) in OUTPUT.data
    /// beside the model. Without it, external data is used only when the
    /// model would pass protobuf's 2 GB limit.
    #[arg(long, value_name = "MIN_BYTES", num_args = 0..=1, default_missing_value = "1024")]
    pub external_data: Option<usize>,
    /// Allow the output to replace the input file.
    #[arg(long)]
    pub in_place: bool,
}

#[derive(Args, Debug)]
pub struct OptArgs {
    pub model: PathBuf,
    #[command(flatten)]
    pub write: WriteArgs,
    /// The pass pipeline, e.g. "eliminate-identity,fuse-batchnorm,fold-constants,dce".
    #[arg(short = 'p', long = "pipeline")]
    pub pipeline: String,
    /// Dump the IR before these passes (comma list) or "all".
    #[arg(long, value_name = "PASSES|all")]
    pub print_ir_before: Option<String>,
    /// Dump the IR after these passes (comma list) or "all".
    #[arg(long, value_name = "PASSES|all")]
    pub print_ir_after: Option<String>,
    /// Print the time each pass took.
    #[arg(long)]
    pub time_passes: bool,
    /// Run only the first N passes of the pipeline (to bisect a bad pass).
    #[arg(long, value_name = "N")]
    pub bisect_limit: Option<usize>,
    /// Skip verifying the IR after each pass.
    #[arg(long)]
    pub no_verify: bool,
    /// Fix an input's shape for passes that run the model: NAME=D0,D1,...
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub model: PathBuf,
    /// An input: NAME=FILE.npy (or FILE.pb). With a single .npz, its arrays
    /// are matched by name.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Write the outputs to this .npz instead of printing a summary.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

pub fn load(path: &Path) -> Result<Model, Failure> {
    import::read_model(path).map_err(Failure::bad_input)
}

/// Refuses to overwrite the input unless asked.
pub fn check_output(input: &Path, w: &WriteArgs) -> CliResult {
    let same = match (input.canonicalize(), w.output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same && !w.in_place {
        return Err(Failure::bad_input(export::ExportError::WouldOverwrite {
            path: w.output.display().to_string(),
        }));
    }
    Ok(())
}

pub fn save(model: &Model, w: &WriteArgs) -> Result<export::WriteSummary, Failure> {
    let opts = ExportOptions {
        external_min_bytes: w.external_data,
    };
    export::write_model(model, &w.output, &opts).map_err(Failure::bad_input)
}

pub fn parse_input_shapes(list: &[String]) -> Result<passes::context::InputShapes, Failure> {
    let mut out = BTreeMap::new();
    for s in list {
        let (name, dims) = s.split_once('=').ok_or_else(|| {
            Failure::bad_input(format!("--input-shape '{s}': expected NAME=D0,D1,..."))
        })?;
        let dims: Result<Vec<usize>, _> =
            dims.split(',').map(|d| d.trim().parse::<usize>()).collect();
        let dims = dims.map_err(|_| {
            Failure::bad_input(format!(
                "--input-shape '{s}': dimensions must be non-negative integers"
            ))
        })?;
        out.insert(name.to_string(), dims);
    }
    Ok(out)
}

pub fn cmd_passes() -> CliResult {
    let w = passes::registry()
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0);
    for p in passes::registry() {
        let tag = if p.changes_numerics {
            " [changes numerics]"
        } else {
            ""
        };
        println!("{:<w$}  {}{}", p.name, p.summary, tag);
    }
    Ok(())
}

pub fn cmd_opt(a: &OptArgs) -> CliResult {
    check_output(&a.model, &a.write)?;
    let pipeline = Pipeline::parse(&a.pipeline).map_err(Failure::bad_input)?;
    let mut model = load(&a.model)?;
    let mut cx = PassContext::new();
    cx.input_shapes = parse_input_shapes(&a.input_shapes)?;
    let mut pm = PassManager::new(pipeline);
    pm.verify_each = !a.no_verify;
    pm.print_before = PrintSel::parse(a.print_ir_before.as_deref());
    pm.print_after = PrintSel::parse(a.print_ir_after.as_deref());
    pm.bisect_limit = a.bisect_limit;
    let before = model.graph.ops().len();
    let runs = pm.run(&mut model, &mut cx).map_err(Failure::bad_input)?;
    for r in &cx.remarks {
        eprintln!("remark: {}: {}: {}", r.pass, r.node, r.message);
    }
    if a.time_passes {
        eprint!("{}", passes::timing_table(&runs));
    }
    let s = save(&model, &a.write)?;
    eprintln!(
        "onnxq opt: {} -> {} ({} nodes -> {}; pipeline {})",
        a.model.display(),
        a.write.output.display(),
        before,
        model.graph.ops().len(),
        pm.pipeline
    );
    if let Some((p, n)) = s.external {
        eprintln!(
            "  external data: {} ({} tensors, {} bytes)",
            p.display(),
            s.external_tensors,
            n
        );
    }
    Ok(())
}

/// What `inspect` reports.
#[derive(serde::Serialize)]
pub struct Inspection {
    pub file: String,
    pub file_bytes: u64,
    pub ir_version: i64,
    pub opsets: BTreeMap<String, i64>,
    pub producer: String,
    pub graph_name: String,
    pub nodes: usize,
    pub op_histogram: BTreeMap<String, usize>,
    pub parameters: u64,
    pub parameter_bytes_by_dtype: BTreeMap<String, u64>,
    pub parameter_count_by_dtype: BTreeMap<String, u64>,
    pub external_tensors: usize,
    pub inputs: Vec<PortInfo>,
    pub outputs: Vec<PortInfo>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
pub struct PortInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Option<Vec<String>>,
}

pub fn inspect(path: &Path, m: &Model) -> Inspection {
    let g = &m.graph;
    let mut hist = BTreeMap::new();
    for n in g.ops() {
        let node = g.node(n);
        let key = if node.domain().is_empty() {
            node.op_type().to_string()
        } else {
            format!("{}.{}", node.domain(), node.op_type())
        };
        *hist.entry(key).or_insert(0usize) += 1;
    }
    let mut bytes = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut params = 0u64;
    let mut external = 0;
    for n in g.initializer_nodes() {
        if let NodeKind::Initializer(t) = &g.node(n).kind {
            let d = dtype_name(t.dtype()).to_string();
            *bytes.entry(d.clone()).or_insert(0u64) += t.nbytes() as u64;
            *counts.entry(d).or_insert(0u64) += t.len() as u64;
            params += t.len() as u64;
            external += t.external().is_some() as usize;
        }
    }
    let port = |p: &crate::ir::Port| {
        let ty = p.info.r#type.as_ref();
        PortInfo {
            name: p.info.name().to_string(),
            dtype: ty
                .map(|t| dtype_name(types::elem_type(t)).to_string())
                .unwrap_or_else(|| "?".into()),
            shape: ty.and_then(types::dims).map(|ds| {
                ds.into_iter()
                    .map(|d| match d {
                        types::Dim::Known(v) => v.to_string(),
                        types::Dim::Symbol(s) => s,
                        types::Dim::Unknown => "?".into(),
                    })
                    .collect()
            }),
        }
    };
    Inspection {
        file: path.display().to_string(),
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        ir_version: m.meta.ir_version(),
        opsets: m
            .meta
            .opset_import
            .iter()
            .map(|o| {
                (
                    if o.domain().is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        o.domain().to_string()
                    },
                    o.version(),
                )
            })
            .collect(),
        producer: format!("{} {}", m.meta.producer_name(), m.meta.producer_version())
            .trim()
            .to_string(),
        graph_name: g.shell.name().to_string(),
        nodes: g.ops().len(),
        op_histogram: hist,
        parameters: params,
        parameter_bytes_by_dtype: bytes,
        parameter_count_by_dtype: counts,
        external_tensors: external,
        inputs: g
            .inputs()
            .iter()
            .filter(|p| g.producer_node(p.value).initializer().is_none())
            .map(port)
            .collect(),
        outputs: g.outputs().iter().map(port).collect(),
        metadata: m
            .meta
            .metadata_props
            .iter()
            .map(|e| (e.key().to_string(), e.value().to_string()))
            .collect(),
    }
}

pub fn cmd_inspect(a: &InspectArgs) -> CliResult {
    let m = load(&a.model)?;
    if a.ir {
        let opts = crate::ir::text::PrintOptions {
            elide_above: a.elide_above,
        };
        print!("{}", crate::ir::text::print_model_with(&m, &opts));
        return Ok(());
    }
    let r = inspect(&a.model, &m);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("invariant: serializable")
        );
        return Ok(());
    }
    println!("{}  ({} bytes)", r.file, r.file_bytes);
    println!(
        "  ir_version {}   opsets {}",
        r.ir_version,
        r.opsets
            .iter()
            .map(|(d, v)| format!("{d} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.producer.is_empty() {
        println!("  producer   {}", r.producer);
    }
    println!("  nodes      {}", r.nodes);
    let mut hist: Vec<(&String, &usize)> = r.op_histogram.iter().collect();
    hist.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!(
        "  ops        {}",
        hist.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  parameters {} ({})",
        r.parameters,
        r.parameter_bytes_by_dtype
            .iter()
            .map(|(d, b)| format!("{d}: {} in {b} bytes", r.parameter_count_by_dtype[d]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if r.external_tensors > 0 {
        println!("  external   {} tensors", r.external_tensors);
    }
    let show = |p: &PortInfo| {
        format!(
            "{} {}[{}]",
            p.name,
            p.dtype,
            p.shape
                .as_ref()
                .map(|s| s.join(","))
                .unwrap_or_else(|| "?".into())
        )
    };
    for p in &r.inputs {
        println!("  input      {}", show(p));
    }
    for p in &r.outputs {
        println!("  output     {}", show(p));
    }
    for (k, v) in &r.metadata {
        println!("  metadata   {k} = {v}");
    }
    Ok(())
}

pub fn cmd_run(a: &RunArgs) -> CliResult {
    let model = load(&a.model)?;
    let mut inputs = Vec::new();
    for arg in &a.inputs {
        inputs.extend(crate::tensorio::read_inputs_arg(arg).map_err(Failure::bad_input)?);
    }
    let shapes: Vec<(String, Vec<usize>, i32)> = inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec(), t.dtype()))
        .collect();
    let ro = crate::runtime::RunOptions {
        input_shapes: shapes,
        ..Default::default()
    };
    let runner = crate::runtime::Runner::new(&model, &ro).map_err(Failure::bad_input)?;
    let outs = runner.run(&inputs).map_err(Failure::bad_input)?;
    match &a.output {
        Some(p) => {
            let bytes = crate::tensorio::npz_to_bytes(&outs).map_err(Failure::bad_input)?;
            export::write_atomic(p, &bytes)
                .map_err(|e| Failure::bad_input(format!("{}: cannot write ({e})", p.display())))?;
            eprintln!(
                "onnxq run: {} output(s) written to {}",
                outs.len(),
                p.display()
            );
        }
        None => {
            for (n, t) in &outs {
                println!("{n}: {t}");
            }
        }
    }
    Ok(())
}

fn quantize_options(c: &CalibArgs) -> Result<crate::quantize::QuantizeOptions, Failure> {
    Ok(crate::quantize::QuantizeOptions {
        calib: c.calib.clone(),
        calib_random: c.calib_random,
        calib_limit: c.calib_limit,
        input_shapes: parse_input_shapes(&c.input_shapes)?,
        progress: !c.quiet,
        threads: c.threads,
        ..Default::default()
    })
}

pub fn cmd_quantize(a: &QuantizeArgs) -> CliResult {
    use crate::quant::{range::Method, QType};
    check_output(&a.model, &a.write)?;
    let mut o = quantize_options(&a.calib)?;
    o.stats = a.stats.clone();
    o.save_stats = a.save_stats.clone();
    o.method = Method::parse(&a.method).map_err(Failure::bad_input)?;
    o.activations = QType::parse(&a.activations).ok_or_else(|| {
        Failure::bad_input(format!(
            "--activations '{}': expected u8 or s8",
            a.activations
        ))
    })?;
    o.weights = QType::parse(&a.weights).ok_or_else(|| {
        Failure::bad_input(format!("--weights '{}': expected s8 or u8", a.weights))
    })?;
    o.per_channel = !a.per_tensor;
    o.bias_correction = !a.no_bias_correction;
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
    o.op_types = a.op_types.clone();
    o.val = a.val.clone();
    if let Some(n) = a.val_samples {
        o.val_samples = n;
        o.val_values = None;
    }
    o.external_data = a.write.external_data;
    if a.target_sqnr.is_some() || a.target_cosine.is_some() {
        o.target = Some(crate::quantize::Target {
            min_sqnr_db: a.target_sqnr,
            min_cosine: a.target_cosine,
        });
    }
    let report = crate::quantize::quantize_file(&a.model, &a.write.output, &o)
        .map_err(Failure::bad_input)?;
    eprint!("{}", report.summary());
    if let Some(p) = &a.report {
        let json = serde_json::to_vec_pretty(&report).expect("invariant: report serializes");
        if p.extension().is_some_and(|e| e == "html" || e == "htm") {
            let html = crate::report::html::render(&report);
            export::write_atomic(p, html.as_bytes())
                .map_err(|e| Failure::bad_input(format!("{}: cannot write ({e})", p.display())))?;
            return Ok(());
        }
        export::write_atomic(p, &json)
            .map_err(|e| Failure::bad_input(format!("{}: cannot write ({e})", p.display())))?;
    }
    Ok(())
}

pub fn cmd_calibrate(a: &CalibrateArgs) -> CliResult {
    let o = quantize_options(&a.calib)?;
    let mut m = load(&a.model)?;
    let mut cx = PassContext::new();
    cx.input_shapes = o.input_shapes.clone();
    cx.calib_options = crate::calib::CalibOptions {
        input_shapes: o.input_shapes.clone(),
        progress: o.progress,
        threads: o
            .threads
            .unwrap_or_else(|| crate::calib::CalibOptions::default().threads),
        histograms: true,
        ..Default::default()
    };
    cx.calib_data = Some(
        crate::quantize::calib_data(&o)
            .map_err(Failure::bad_input)?
            .ok_or_else(|| Failure::bad_input(crate::calib::CalibError::NoData))?,
    );
    let t = std::time::Instant::now();
    cx.model_hash = Some(crate::calib::model_hash(&m));
    if let Some(d) = &cx.calib_data {
        let specs = crate::calib::data::input_specs(&m);
        for (name, t) in d
            .load(0, &specs, &o.input_shapes)
            .map_err(Failure::bad_input)?
        {
            cx.input_shapes
                .entry(name)
                .or_insert_with(|| t.shape().to_vec());
        }
    }
    crate::quantize::prepare(&mut m, &mut cx).map_err(Failure::bad_input)?;
    crate::quantize::run_pipeline(&mut m, &mut cx, "calibrate").map_err(Failure::bad_input)?;
    let stats = cx
        .stats
        .as_ref()
        .expect("invariant: calibrate sets statistics");
    stats.save(&a.output).map_err(Failure::bad_input)?;
    eprintln!(
        "onnxq calibrate: {} tensors over {} samples in {:.2}s -> {} (model {}, data {})",
        stats.tensors.len(),
        stats.samples,
        t.elapsed().as_secs_f64(),
        a.output.display(),
        stats.model_hash,
        &stats.data_hash[..16]
    );
    Ok(())
}

pub fn cmd_validate(a: &ValidateArgs) -> CliResult {
    let orig = load(&a.original)?;
    let quant = load(&a.quantized)?;
    let data = crate::calib::data::DataSet::open(&a.data, a.limit).map_err(Failure::bad_input)?;
    let v = crate::validate::validate(&orig, &quant, &data, crate::runtime::default_threads())
        .map_err(Failure::bad_input)?;
    let layers = if a.per_layer {
        // Isolated variants are built on the float model as onnxq prepares
        // it for quantization (Constants folded, BatchNorm fused), which is
        // what the quantized model's nodes correspond to.
        let mut prepared = orig.clone();
        let mut cx = PassContext::new();
        let specs = crate::calib::data::input_specs(&orig);
        for (name, t) in data
            .load(0, &specs, &BTreeMap::new())
            .map_err(Failure::bad_input)?
        {
            cx.input_shapes.insert(name, t.shape().to_vec());
        }
        crate::quantize::prepare(&mut prepared, &mut cx).map_err(Failure::bad_input)?;
        Some(
            crate::sensitivity::per_layer(
                &prepared,
                &quant,
                &data,
                a.sensitivity_samples,
                !a.quiet,
            )
            .map_err(Failure::bad_input)?,
        )
    } else {
        None
    };
    if a.json {
        let j = serde_json::json!({ "validation": v, "per_layer": layers });
        println!(
            "{}",
            serde_json::to_string_pretty(&j).expect("invariant: serializable")
        );
    } else {
        print!("{}", v.table());
        if let Some(l) = &layers {
            print!("{}", l.table(a.top));
        }
    }
    let mut failed = Vec::new();
    if let (Some(min), Some(got)) = (a.min_sqnr, v.min_sqnr()) {
        if got < min {
            failed.push(format!("SQNR {got:.2} dB is below --min-sqnr {min}"));
        }
    }
    if let (Some(min), Some(got)) = (a.min_cosine, v.min_cosine()) {
        if got < min {
            failed.push(format!("mean cosine {got:.5} is below --min-cosine {min}"));
        }
    }
    if !failed.is_empty() {
        return Err(Failure::check(failed.join("; ")));
    }
    Ok(())
}

// ---- `onnxq profile` ----

#[derive(Args, Debug)]
pub struct ProfileArgs {
    pub model: PathBuf,
    /// Run on the first sample of this directory (same layouts as --calib);
    /// without it, on seeded random inputs.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Timed runs after one warm-up; times are medians.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Fix an input's shape: NAME=D0,D1,... (symbolic dims default to 1
    /// with random inputs).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
}

/// `onnxq profile`: `shape-inference` at the sample's shapes, then
/// `profile-hotspots`, printed as a table or JSON.
pub fn cmd_profile(a: &ProfileArgs) -> CliResult {
    use crate::calib::data::DataSet;
    use crate::passes::profile_hotspots::RANDOM_SEED;
    if a.runs == 0 {
        return Err(Failure::bad_input("--runs must be at least 1"));
    }
    let mut m = load(&a.model)?;
    let mut cx = PassContext::new();
    cx.input_shapes = parse_input_shapes(&a.input_shapes)?;
    let data = match &a.data {
        Some(dir) => DataSet::open(dir, Some(1)).map_err(Failure::bad_input)?,
        None => DataSet::random(1, RANDOM_SEED),
    };
    // Fixed shapes from the sample, so shape inference sees every dim.
    let specs = crate::calib::data::input_specs(&m);
    for (name, t) in data
        .load(0, &specs, &cx.input_shapes)
        .map_err(Failure::bad_input)?
    {
        cx.input_shapes
            .entry(name)
            .or_insert_with(|| t.shape().to_vec());
    }
    let source = data.root.clone();
    cx.calib_data = Some(data);
    let pipeline = Pipeline::parse(&format!(
        "shape-inference,profile-hotspots{{runs={}}}",
        a.runs
    ))
    .map_err(Failure::bad_input)?;
    PassManager::new(pipeline)
        .run(&mut m, &mut cx)
        .map_err(Failure::bad_input)?;
    for r in &cx.remarks {
        eprintln!("remark: {}: {}: {}", r.pass, r.node, r.message);
    }
    let p = cx
        .profile
        .as_ref()
        .expect("invariant: profile-hotspots sets the profile");
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            model: String,
            data: String,
            #[serde(flatten)]
            profile: &'a crate::report::Profile,
        }
        let out = Out {
            model: a.model.display().to_string(),
            data: source,
            profile: p,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("invariant: serializable")
        );
    } else {
        println!("{}  (data: {source})", a.model.display());
        print!("{}", p.table());
    }
    Ok(())
}

// ---- end `onnxq profile` ----
