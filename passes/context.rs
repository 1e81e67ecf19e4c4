//! State shared between the passes of one pipeline run.
//!
//! Analyses are produced by one pass and consumed by later ones: the
//! calibration statistics (`calibrate` → `fold-calibration`), the
//! activation quantization parameters (`fold-calibration` → `insert-qdq`),
//! the profile (`profile-hotspots` → cost-aware selection). The context
//! carries them, with the settings that tell passes how to run the model,
//! and the remarks that end up in the report.

use std::collections::{BTreeMap, BTreeSet};

use crate::calib::data::DataSet;
use crate::calib::{CalibOptions, Stats};
use crate::quant::params::ActParams;

/// A remark about one node or tensor: what a pass decided and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Remark {
    pub pass: String,
    pub node: String,
    pub message: String,
}

/// Fixed input shapes for running a model: `name → dims`.
pub type InputShapes = BTreeMap<String, Vec<usize>>;

#[derive(Default)]
pub struct PassContext {
    /// Shapes to give the runtime for inputs whose dims are symbolic.
    pub input_shapes: InputShapes,
    /// Per-node remarks, in the order passes made them.
    pub remarks: Vec<Remark>,
    /// Calibration samples for `calibrate`.
    pub calib_data: Option<DataSet>,
    /// Threads and progress display for model runs.
    pub calib_options: CalibOptions,
    /// Graph outputs of the first `calib_options.keep_outputs` calibration
    /// samples, from `calibrate`.
    pub calib_outputs: Vec<Vec<(String, crate::tensorio::HostTensor)>>,
    /// Statistics from `calibrate` (or loaded with `--stats`).
    pub stats: Option<Stats>,
    /// Activation parameters per tensor name, from `fold-calibration`.
    pub act_params: Option<BTreeMap<String, ActParams>>,
    /// Per-channel means of weighted ops' inputs (from the statistics), for
    /// bias correction in `insert-qdq`.
    pub channel_means: BTreeMap<String, crate::calib::ChannelMeans>,
    /// When set, only these nodes (by label) may be quantized: the
    /// fallback and sensitivity machinery narrows quantization with it.
    pub only_nodes: Option<BTreeSet<String>>,
    /// Hash of the model as the user gave it (before preparation), which
    /// statistics files are tied to; `None`: hash the graph `calibrate` sees.
    pub model_hash: Option<String>,
    /// Cost-aware selection: the compute ops to quantize (label → why).
    pub compute_only: Option<BTreeMap<String, String>>,
    /// What `insert-qdq` decided for each node, for the report.
    pub decisions: Vec<crate::quant::plan::Decision>,
    /// Measured hotspots from `profile-hotspots`, for cost-aware passes.
    pub profile: Option<crate::report::Profile>,
}

impl PassContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn remark(&mut self, pass: &str, node: &str, message: impl Into<String>) {
        self.remarks.push(Remark {
            pass: pass.into(),
            node: node.into(),
            message: message.into(),
        });
    }
}
