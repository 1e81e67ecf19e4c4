//! `onnxq run`: run a model on inputs from files and print or save the
//! outputs.

use std::path::PathBuf;

use clap::Args;

use super::args::load;
use super::{CliResult, Failure};
use crate::onnx::export;

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
