//! `onnxq opt`: run a pass pipeline over a model and write the result.

use std::path::PathBuf;

use clap::Args;

use super::args::{check_output, load, parse_input_shapes, save, WriteArgs};
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
    /// Fix an input's shape for passes that run the model: NAME=D0,D1,...
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
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
