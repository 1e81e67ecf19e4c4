//! `calibrate`: runs the float model on the calibration data and records a
//! histogram of every float tensor that quantization may touch.
//!
//! # What
//! Computes the full default placement (see `quant::plan`) and observes
//! every activation it could quantize — including outputs of data-movement
//! ops — so that one set of statistics serves any later `--exclude`,
//! `--op-types` or fallback choice. The statistics go into the pass
//! context for `fold-calibration`.
//!
//! # Example
//! ```text
//! # RUN: calibrate,fold-calibration,insert-qdq
//! ```
//! The graph is not changed.
//!
//! # Options
//! None; the data and run settings come from the context (`--calib DIR`,
//! `--calib-random N`, `--calib-limit N`, `--input-shape`).
//!
//! # Preconditions
//! Calibration data in the context, or statistics already there (loaded with
//! `--stats`, checked against this model's graph hash): then nothing runs.
//!
//! # Numerics
//! None: analysis only.
//!
//! # Errors
//! No data; a sample whose inputs do not match the model (names the file and
//! the input); a model tract cannot run.

use super::{Changed, Pass, PassContext, PassError};
use crate::calib::{self, CalibOptions};
use crate::ir::Model;
use crate::plan::{plan, Selection};

#[derive(Debug, Default)]
pub struct Calibrate;

impl Calibrate {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>("calibrate", o)?;
        Ok(Calibrate)
    }
}

/// Inputs of weighted ops whose per-channel means bias correction needs:
/// tensor name → channel axis.
pub fn mean_tensors(m: &Model) -> std::collections::BTreeMap<String, usize> {
    let sel = Selection {
        target: crate::target::Target::Portable,
        ..Default::default()
    };
    let p = plan(m, &sel, true);
    let g = &m.graph;
    let mut out = std::collections::BTreeMap::new();
    for w in &p.weights {
        let node = g.node(w.node);
        let Some(x) = node.input(0) else { continue };
        if w.slot != 1 || g.constant(x).is_some() {
            continue;
        }
        let axis = match node.op_type() {
            "Conv" => Some(1),
            "Gemm" => Some(if node.attr_i("transA").unwrap_or(0) != 0 {
                0
            } else {
                1
            }),
            "MatMul" => g
                .static_shape(x)
                .map(|s| s.len().saturating_sub(1))
                .or_else(|| {
                    g.value_type(x)
                        .and_then(|t| crate::ir::types::dims(&t))
                        .map(|d| d.len().saturating_sub(1))
                }),
            _ => None,
        };
        if let Some(a) = axis {
            out.insert(g.name(x).to_string(), a);
        }
    }
    out
}

/// Names of the tensors calibration observes for `m`: everything any
/// target's placement may quantize.
pub fn observed_tensors(m: &Model) -> Vec<String> {
    let g = &m.graph;
    let mut names: Vec<String> = crate::plan::observed(m)
        .into_iter()
        .map(|v| g.name(v).to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

impl Pass for Calibrate {
    fn name(&self) -> &'static str {
        "calibrate"
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let hash = cx
            .inputs()
            .model_hash
            .clone()
            .unwrap_or_else(|| calib::model_hash(m));
        // Statistics loaded from a file, or already in the pipeline: check
        // that they belong to this model, then use them.
        let given = cx
            .inputs()
            .stats
            .clone()
            .or_else(|| cx.analyses.stats.clone());
        if let Some(stats) = given {
            if stats.model_hash != hash {
                let e = calib::CalibError::ModelMismatch {
                    path: "--stats".into(),
                    theirs: stats.model_hash.clone(),
                    ours: hash,
                };
                return Err(PassError::Precondition {
                    pass: "calibrate".into(),
                    message: e.to_string(),
                });
            }
            cx.analyses.stats = Some(stats);
            return Ok(Changed::No);
        }
        let data = cx
            .inputs()
            .calib_data
            .as_ref()
            .ok_or_else(|| PassError::Precondition {
                pass: "calibrate".into(),
                message: calib::CalibError::NoData.to_string(),
            })?;
        let tensors = observed_tensors(m);
        let opts = CalibOptions {
            channel_axes: mean_tensors(m),
            input_shapes: cx.inputs().input_shapes.clone(),
            ..cx.inputs().calib_options.clone()
        };
        // The samples whose outputs are kept are what choices are scored
        // on: held out of the statistics those choices are made with, as
        // long as at least as many samples remain.
        let held = opts.keep_outputs.min(data.len() / 2);
        let opts = CalibOptions {
            holdout: if data.len() >= 4 { held } else { 0 },
            ..opts
        };
        let (stats, rest, outputs) = calib::calibrate_held_out(m, hash, data, &tensors, &opts)
            .map_err(|e| PassError::Failed {
                pass: "calibrate".into(),
                message: e.to_string(),
            })?;
        cx.analyses.stats = Some(std::sync::Arc::new(stats));
        cx.analyses.held_out = if rest.is_some() { opts.holdout } else { 0 };
        cx.analyses.holdout_stats = rest.map(std::sync::Arc::new);
        cx.analyses.calib_outputs = outputs;
        Ok(Changed::No)
    }
}
