//! `onnxq opt`: run a pass pipeline over a model and write the result.

use std::path::PathBuf;

use clap::Args;

use super::args::{check_output, load, quantize_options, save, CalibArgs, WriteArgs};
use super::{CliResult, Failure};
use crate::passes::{self, PassContext, PassManager, Pipeline, PrintSel};

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
    /// Data and run settings for passes that run the model (calibrate,
    /// profile-hotspots, shape-inference), taken as `quantize` takes them.
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Statistics for `calibrate` instead of running it (from `onnxq
    /// calibrate` or `quantize --save-stats`).
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Keep the nodes of a selection file (`quantize --save-selection`) in
    /// float: added to every insert-qdq's keep-float.
    #[arg(long, value_name = "FILE")]
    pub selection: Option<PathBuf>,
}

pub fn cmd_opt(a: &OptArgs) -> CliResult {
    check_output(&a.model, &a.write)?;
    let mut items = passes::parse_pipeline(&a.pipeline).map_err(Failure::bad_input)?;
    if let Some(path) = &a.selection {
        let sel = crate::quantize::selection::Selection::load(path).map_err(Failure::bad_input)?;
        add_keep_float(&mut items, &sel.keep_float);
    }
    let pipeline = Pipeline::from_items(items).map_err(Failure::bad_input)?;
    let mut model = load(&a.model)?;
    let mut d = quantize_options(&a.calib)?.data_options();
    d.stats = a.stats.clone();
    let keep = crate::quantize::inputs::Keep {
        histograms: true,
        ..Default::default()
    };
    let inputs =
        crate::quantize::inputs::pass_inputs(&model, &d, keep).map_err(Failure::bad_input)?;
    let mut cx = PassContext::with_inputs(inputs);
    let mut pm = PassManager::new(pipeline);
    pm.verify_each = !a.no_verify;
    pm.print_before = PrintSel::parse(a.print_ir_before.as_deref());
    pm.print_after = PrintSel::parse(a.print_ir_after.as_deref());
    pm.bisect_limit = a.bisect_limit;
    let before = model.graph.ops().len();
    let runs = pm.run(&mut model, &mut cx).map_err(Failure::bad_input)?;
    for r in cx
        .remarks()
        .iter()
        .filter(|r| r.level == passes::context::Level::Note)
    {
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

/// Adds a selection file's labels to every `insert-qdq`'s `keep-float`.
fn add_keep_float(items: &mut [passes::PipelineItem], labels: &[String]) {
    for item in items.iter_mut().filter(|i| i.name == "insert-qdq") {
        let list = item
            .options
            .entry("keep-float".into())
            .or_insert_with(|| serde_json::Value::Array(vec![]));
        if let serde_json::Value::Array(v) = list {
            v.extend(labels.iter().cloned().map(serde_json::Value::String));
        }
    }
}
