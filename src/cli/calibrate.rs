//! `onnxq calibrate`: run calibration only and save the statistics for a
//! later `onnxq quantize --stats`.

use std::path::PathBuf;

use clap::Args;

use super::args::{load, quantize_options, CalibArgs};
use super::{CliResult, Failure, Outcome};

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
    let out = calibrate(a)?;
    eprintln!("{}", out.text);
    Ok(())
}

/// `onnxq calibrate` without its printing: the statistics file written,
/// and what it holds.
pub fn calibrate(a: &CalibrateArgs) -> Result<Outcome, Failure> {
    let o = quantize_options(&a.calib)?;
    let m = load(&a.model)?;
    let t = std::time::Instant::now();
    let stats =
        crate::quantize::calibrate_stats(&m, &o.data_options()).map_err(Failure::bad_input)?;
    stats.save(&a.output).map_err(Failure::bad_input)?;
    let seconds = t.elapsed().as_secs_f64();
    let text = format!(
        "onnxq calibrate: {} tensors over {} samples in {seconds:.2}s -> {} (model {}, data {})",
        stats.tensors.len(),
        stats.samples,
        a.output.display(),
        stats.model_hash,
        &stats.data_hash[..16]
    );
    let json = serde_json::json!({
        "output": a.output.display().to_string(),
        "tensors": stats.tensors.len(),
        "samples": stats.samples,
        "model_hash": stats.model_hash,
        "data_hash": stats.data_hash,
        "seconds": seconds,
    });
    Ok(Outcome {
        json,
        text,
        failed: None,
    })
}
