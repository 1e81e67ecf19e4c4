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

/// Refuses `--input-shape` entries that name no input or contradict its
/// declared rank or fixed dims, and — for random data, which has no shapes
/// of its own — inputs whose shape is undeclared or symbolic past the first
/// (batch) axis: calibrating a 1×1 image or a 1-sample waveform reports
/// success on numbers that mean nothing. A symbolic first axis is taken as 1.
pub fn check_input_shapes(
    float: &Model,
    given: &crate::passes::context::InputShapes,
    random: bool,
) -> Result<(), QuantizeError> {
    use crate::ir::types::Dim;
    let specs = crate::calib::data::input_specs(float);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for (name, shape) in given {
        let Some(spec) = specs.iter().find(|s| &s.name == name) else {
            return Err(QuantizeError::Usage(format!(
                "--input-shape {name}=…: the model has no input '{name}' (inputs: {})",
                names.join(", ")
            )));
        };
        let Some(dims) = &spec.dims else { continue };
        if dims.len() != shape.len() {
            return Err(QuantizeError::Usage(format!(
                "--input-shape {name}={}: input '{name}' has rank {} ({}), not {}",
                join(shape),
                dims.len(),
                describe(dims),
                shape.len()
            )));
        }
        for (k, (d, &s)) in dims.iter().zip(shape).enumerate() {
            if let Dim::Known(v) = d {
                if *v as usize != s {
                    return Err(QuantizeError::Usage(format!(
                        "--input-shape {name}={}: axis {k} of input '{name}' is fixed at {v} in the model ({})",
                        join(shape),
                        describe(dims)
                    )));
                }
            }
        }
    }
    if !random {
        return Ok(());
    }
    let mut missing = Vec::new();
    for s in &specs {
        if given.contains_key(&s.name) {
            continue;
        }
        match &s.dims {
            None => missing.push(format!(
                "input '{}' declares no shape: pass --input-shape {}=D0,D1,…",
                s.name, s.name
            )),
            Some(dims) => {
                let open: Vec<String> = dims
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter(|(_, d)| !matches!(d, Dim::Known(_)))
                    .map(|(k, d)| match d {
                        Dim::Symbol(n) => format!("'{n}' (axis {k})"),
                        _ => format!("axis {k}"),
                    })
                    .collect();
                if !open.is_empty() {
                    let example: Vec<String> = dims
                        .iter()
                        .enumerate()
                        .map(|(k, d)| match d {
                            Dim::Known(v) => v.to_string(),
                            _ if k == 0 => "1".into(),
                            Dim::Symbol(n) => format!("<{n}>"),
                            Dim::Unknown => format!("<d{k}>"),
                        })
                        .collect();
                    missing.push(format!(
                        "input '{}' ({}) has symbolic {}: pass --input-shape {}={}",
                        s.name,
                        describe(dims),
                        open.join(", "),
                        s.name,
                        example.join(",")
                    ));
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(QuantizeError::Usage(format!(
        "random calibration data (--calib-random) needs concrete input shapes, the sizes the model is deployed with: {}; or calibrate on real samples with --calib DIR (their shapes are used)",
        missing.join("; ")
    )))
}

fn join(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn describe(dims: &[crate::ir::types::Dim]) -> String {
    use crate::ir::types::Dim;
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Known(v) => v.to_string(),
            Dim::Symbol(n) => n.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
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
    check_input_shapes(float, &d.input_shapes, d.calib_random.is_some())?;
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
