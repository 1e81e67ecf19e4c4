//! `onnxq calibrate`: run calibration only and save the statistics for a
//! later `onnxq quantize --stats`.

use std::path::PathBuf;

use clap::Args;

use super::args::{load, quantize_options, CalibArgs};
use super::{CliResult, Failure};
use crate::passes::PassContext;

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
