//! Argument groups several commands share (where calibration data comes
//! from, where a model is written) and the helpers that act on them: load a
//! model, refuse to overwrite the input, save, parse `--input-shape`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{CliResult, Failure};
use crate::ir::Model;
use crate::onnx::export::{self, ExportOptions};
use crate::onnx::import;
use crate::passes;

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

pub(super) fn quantize_options(c: &CalibArgs) -> Result<crate::quantize::QuantizeOptions, Failure> {
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
