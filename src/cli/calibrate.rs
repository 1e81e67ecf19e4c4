//! `onnxq calibrate`: run calibration only and save the statistics for a
//! later `onnxq quantize --stats`.

use std::path::PathBuf;

use clap::Args;

use super::args::{load, quantize_options, CalibArgs};
use super::{CliResult, Failure};

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    pub model: PathBuf,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Where to write the statistics (JSON).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

pub fn cmd_calibrate(a: &CalibrateArgs) -> CliResult {
    let o = quantize_options(&a.calib)?;
    let m = load(&a.model)?;
    let t = std::time::Instant::now();
    let stats =
        crate::quantize::calibrate_stats(&m, &o.data_options()).map_err(Failure::bad_input)?;
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
