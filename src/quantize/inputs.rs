//! What a quantize pipeline is given: calibration data, statistics and
//! input shapes, built the same way for `quantize`, `calibrate` and
//! `opt --calib/--stats` — which is what makes a printed pipeline replay
//! byte for byte.

use std::path::PathBuf;
use std::sync::Arc;

use super::QuantizeError;
use crate::calib::data::DataSet;
use crate::calib::{CalibOptions, Stats};
use crate::ir::Model;
use crate::passes::context::{InputShapes, Inputs};

/// Seed of `--calib-random` samples.
pub const RANDOM_SEED: u64 = 0x6f_6e6e_7871;

/// Where calibration data and statistics come from, and how to run.
#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    pub calib: Option<PathBuf>,
    pub calib_random: Option<usize>,
    pub calib_limit: Option<usize>,
    /// Statistics saved by `onnxq calibrate` or `--save-stats`.
    pub stats: Option<PathBuf>,
    pub input_shapes: InputShapes,
    pub threads: Option<usize>,
    pub progress: bool,
    /// `libonnxruntime` for passes that time in onnxruntime (`--ort-lib`).
    pub ort_library: Option<PathBuf>,
}

/// What calibration keeps beyond the ranges.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keep {
    /// Full histograms (every method but minmax needs them, and so does a
    /// saved statistics file).
    pub histograms: bool,
    /// Graph outputs of this many leading samples, for validation.
    pub outputs: usize,
    /// A content hash of the data (only a saved statistics file records it).
    pub data_hash: bool,
    /// Hash the model for the statistics (needed when a statistics file is
    /// read or written).
    pub model_hash: bool,
}

/// Opens the calibration data the options name.
pub fn calib_data(d: &DataOptions) -> Result<Option<DataSet>, QuantizeError> {
    Ok(match (&d.calib, d.calib_random) {
        (Some(_), Some(_)) => {
            return Err(QuantizeError::Usage(
                "give either --calib or --calib-random, not both".into(),
            ))
        }
        (Some(dir), None) => Some(DataSet::open(dir, d.calib_limit)?),
        (None, Some(n)) => Some(DataSet::random(n.max(1), RANDOM_SEED)),
        (None, None) => None,
    })
}

/// The pipeline inputs for `float`: the data, the statistics file checked
/// against the model, and input shapes completed from the first sample and
/// from the statistics (shape inference must see the ranks calibration
/// saw, or `--stats` would place differently from a direct run).
pub fn pass_inputs(float: &Model, d: &DataOptions, keep: Keep) -> Result<Inputs, QuantizeError> {
    let mut input_shapes = d.input_shapes.clone();
    let data = calib_data(d)?;
    if let Some(data) = &data {
        let specs = crate::calib::data::input_specs(float);
        for (name, t) in data.load(0, &specs, &d.input_shapes)? {
            input_shapes
                .entry(name)
                .or_insert_with(|| t.shape().to_vec());
        }
    }
    let stats = match &d.stats {
        Some(path) => {
            let stats = Stats::load(path)?;
            stats.check_model(float, &path.display().to_string())?;
            for (name, dims) in &stats.input_shapes {
                input_shapes
                    .entry(name.clone())
                    .or_insert_with(|| dims.clone());
            }
            Some(Arc::new(stats))
        }
        None => None,
    };
    // Statistics are tied to the model by this hash: computed when a file
    // of them is read or written, left empty when no one will look.
    let model_hash = Some(if keep.model_hash || d.stats.is_some() {
        crate::calib::model_hash(float)
    } else {
        String::new()
    });
    let calib_options = CalibOptions {
        input_shapes: input_shapes.clone(),
        progress: d.progress,
        threads: d.threads.unwrap_or_else(|| CalibOptions::default().threads),
        histograms: keep.histograms,
        hash_data: keep.data_hash,
        keep_outputs: keep.outputs,
        ..Default::default()
    };
    Ok(Inputs {
        input_shapes,
        calib_data: data,
        calib_options,
        stats,
        model_hash,
        ort_library: d.ort_library.clone(),
    })
}
