//! `onnxq validate`: compare a quantized model with its float original on
//! data, optionally per layer; exit 1 below the given thresholds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::args::load;
use super::{CliResult, Failure, Outcome};

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

pub fn cmd_validate(a: &ValidateArgs) -> CliResult {
    let out = validation(a)?;
    out.print(a.json);
    out.failed.map_or(Ok(()), Err)
}

/// `onnxq validate` without its printing: the comparison as JSON and as
/// the table, and the thresholds it missed.
pub fn validation(a: &ValidateArgs) -> Result<Outcome, Failure> {
    let orig = load(&a.original)?;
    let quant = load(&a.quantized)?;
    let data = crate::calib::data::DataSet::open(&a.data, a.limit).map_err(Failure::bad_input)?;
    let v = crate::validate::validate(&orig, &quant, &data, crate::runtime::default_threads())
        .map_err(Failure::bad_input)?;
    let layers = if a.per_layer {
        // Isolated variants are built on the float model as onnxq prepares
        // it for quantization (Constants folded, BatchNorm fused), which is
        // what the quantized model's nodes correspond to.
        let specs = crate::calib::data::input_specs(&orig);
        let shapes: BTreeMap<String, Vec<usize>> = data
            .load(0, &specs, &BTreeMap::new())
            .map_err(Failure::bad_input)?
            .into_iter()
            .map(|(name, t)| (name, t.shape().to_vec()))
            .collect();
        let prepared = crate::quantize::prepare(&orig, &shapes).map_err(Failure::bad_input)?;
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
    let mut text = v.table();
    if let Some(l) = &layers {
        text.push_str(&l.table(a.top));
    }
    let json = serde_json::json!({ "validation": v, "per_layer": layers });
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
    Ok(Outcome {
        json,
        text,
        failed: (!failed.is_empty()).then(|| Failure::check(failed.join("; "))),
    })
}
