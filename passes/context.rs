//! State shared between the passes of one pipeline run.
//!
//! A context has three parts, kept apart so that a reader can tell where a
//! fact comes from:
//!
//! * [`Inputs`]: what the caller hands the pipeline and passes only read —
//!   calibration data, fixed input shapes, how to run the model, loaded
//!   statistics. `onnxq quantize` and `onnxq opt --calib/--stats` build
//!   them the same way, which is what makes a printed pipeline replayable.
//! * [`Analyses`]: results one pass leaves for later ones (`calibrate` →
//!   `fold-calibration` → `insert-qdq`, `profile-hotspots` →
//!   `select-coverage` → `insert-qdq`). Each field says who writes and who
//!   reads it. What a pass *decides* (which nodes to quantize, which to keep
//!   float) is never here: it is a pass option, printed in the pipeline.
//! * remarks: what passes decided and why, for the terminal and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::calib::data::DataSet;
use crate::calib::{CalibOptions, ChannelMeans, Stats};
use crate::ir::Model;
use crate::plan::Decision;
use crate::proto::ValueInfoProto;
use crate::quant::params::ActParams;
use crate::tensorio::HostTensor;

/// A weight's learned rounding: its values on the grid of `scales` along
/// `axis` (dequantized codes, in the weight's layout).
#[derive(Clone, Debug, Default)]
pub struct RoundedWeight {
    pub axis: Option<usize>,
    pub scales: Vec<f32>,
    pub data: Vec<f32>,
}

/// How much a remark matters to a reader of the summary.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Per-tensor detail (every chosen clip range): in `--print-remarks`
    /// output and the report's activation section, not in the summary.
    Detail,
    /// A decision or change a user should see.
    Note,
}

/// A remark about one node or tensor: what a pass decided and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Remark {
    pub pass: String,
    pub node: String,
    pub message: String,
    pub level: Level,
}

/// Fixed input shapes for running a model: `name → dims`.
pub type InputShapes = BTreeMap<String, Vec<usize>>;

/// What the caller gives the pipeline. Passes read these; none writes them.
#[derive(Clone, Default)]
pub struct Inputs {
    /// Shapes to give the runtime for inputs whose dims are symbolic.
    pub input_shapes: InputShapes,
    /// Calibration samples: `calibrate` runs the model on them,
    /// `profile-hotspots` times the first.
    pub calib_data: Option<DataSet>,
    /// Threads, progress display and what calibration keeps.
    pub calib_options: CalibOptions,
    /// Statistics loaded from a file (`--stats`): `calibrate` checks that
    /// they belong to this model and uses them instead of running it.
    pub stats: Option<Arc<Stats>>,
    /// Hash of the model as the user gave it (before preparation), which
    /// statistics files are tied to; `None`: hash the graph `calibrate`
    /// sees.
    pub model_hash: Option<String>,
    /// Where `libonnxruntime` is (`--ort-lib`), for passes that time the
    /// model in onnxruntime; `None`: `ORT_DYLIB_PATH`, then Python's
    /// onnxruntime package.
    pub ort_library: Option<std::path::PathBuf>,
}

/// The graph interface a pipeline started from: what `restore-interface`
/// gives back after passes specialised shapes for calibration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interface {
    /// Declared types of the graph inputs and outputs, by name.
    pub ports: BTreeMap<String, ValueInfoProto>,
    /// The `value_info` entries the model declared, by value name.
    pub declared: BTreeMap<String, ValueInfoProto>,
}

impl Interface {
    pub fn of(m: &Model) -> Interface {
        let g = &m.graph;
        let ports = g
            .inputs()
            .iter()
            .chain(g.outputs())
            .map(|p| (p.info.name().to_string(), p.info.clone()))
            .collect();
        let declared = g
            .value_info_values()
            .into_iter()
            .filter_map(|v| {
                let info = g.value(v).info()?;
                Some((g.name(v).to_string(), info.clone()))
            })
            .collect();
        Interface { ports, declared }
    }
}

/// Results passes leave for later passes.
#[derive(Clone, Default)]
pub struct Analyses {
    /// The model's interface before the first pass ran (recorded by the
    /// pass manager); read by `restore-interface`.
    pub interface: Option<Interface>,
    /// Written by `calibrate` (or taken from [`Inputs::stats`]); read by
    /// `fold-calibration`.
    pub stats: Option<Arc<Stats>>,
    /// Graph outputs of the first `calib_options.keep_outputs` calibration
    /// samples, from `calibrate`: `quantize` validates against them.
    pub calib_outputs: Vec<Vec<(String, HostTensor)>>,
    /// The statistics of the calibration samples after the first
    /// `held_out` (from `calibrate`): measured choices fold ranges from
    /// these and score them on the first `held_out` samples' outputs, so
    /// that no range is judged on the data it was fitted to.
    pub holdout_stats: Option<Arc<Stats>>,
    pub held_out: usize,
    /// Activation parameters per tensor name, from `fold-calibration`;
    /// read by `insert-qdq`.
    pub act_params: Option<BTreeMap<String, ActParams>>,
    /// Per-channel means of weighted ops' inputs, from `fold-calibration`
    /// (out of the statistics); read by `insert-qdq` for bias correction.
    pub channel_means: BTreeMap<String, ChannelMeans>,
    /// What `--method auto` measured per tensor (the report's "why").
    pub range_choices: Vec<TensorChoice>,
    /// Written by `round-weights`, read by `insert-qdq`: per weight
    /// tensor (by name), the grid values learned rounding chose.
    pub rounded: BTreeMap<String, RoundedWeight>,
    /// Measured hotspots, from `profile-hotspots`; read by
    /// `select-coverage`.
    pub profile: Option<crate::analysis::Profile>,
    /// Compute ops a selection pass kept for int8 (by label):
    /// `select-coverage` by measured time share, `select-speed` by where
    /// int8 pays; read by `insert-qdq`. `None`: no selection ran.
    pub compute: Option<BTreeSet<String>>,
    /// Each selection that narrowed `compute` and the reason it gives the
    /// compute ops it left out, in pipeline order.
    pub compute_why: Vec<(BTreeSet<String>, String)>,
    /// What `select-speed` measured, for the report.
    pub speed: Option<SpeedChoice>,
    /// What `insert-qdq` decided for each candidate node, for the report.
    pub decisions: Vec<Decision>,
    /// The activation tensors `insert-qdq` gave a Q/DQ pair (by name in
    /// the float graph), for the report.
    pub quantized_tensors: BTreeSet<String>,
    /// Weight values `insert-qdq{prune-db}` zeroed, and weight values in
    /// all (`None`: no pruning asked for).
    pub pruned: Option<(usize, usize)>,
    /// What `prune-channels` removed, for the report.
    pub channel_pruning: Option<super::prune_channels::ChannelPruning>,
    /// Nodes that must read float inputs and stay float (by label), from
    /// `smooth-quant`; read by `insert-qdq`.
    pub float_readers: BTreeSet<String>,
}

/// What `select-speed` measured and chose.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SpeedChoice {
    /// The runtime the candidates were timed in (`onnxruntime`, `tract`),
    /// or `cost model` when none could be loaded.
    pub runtime: String,
    /// Why the cost model stood in, when it did.
    pub fallback_reason: Option<String>,
    /// Each candidate: compute ops kept int8 and float latency / its
    /// latency (median over alternating rounds).
    pub candidates: Vec<(usize, f64)>,
    /// The kept candidate's compute ops and ratio.
    pub kept: usize,
    pub of: usize,
    pub ratio: f64,
    /// Per compute op: (label, estimated float ms, estimated int8 ms).
    pub costs: Vec<(String, f64, f64)>,
}

/// What `--method auto` measured for one tensor: the clip rule kept and,
/// per rule tried, the relative error energy it caused in the outputs of
/// the ops reading the tensor.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TensorChoice {
    pub tensor: String,
    pub method: String,
    pub errors: Vec<(String, f64)>,
}

impl Analyses {
    /// Narrows the compute ops kept for int8 (the intersection with an
    /// earlier selection's).
    pub fn keep_compute(&mut self, chosen: BTreeSet<String>, why: &str) {
        self.compute_why.push((chosen.clone(), why.to_string()));
        self.compute = Some(match self.compute.take() {
            Some(earlier) => earlier.intersection(&chosen).cloned().collect(),
            None => chosen,
        });
    }
}

#[derive(Default)]
pub struct PassContext {
    inputs: Inputs,
    pub analyses: Analyses,
    remarks: Vec<Remark>,
}

impl PassContext {
    /// A context with no data: enough for every pass that does not run the
    /// model.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_inputs(inputs: Inputs) -> Self {
        PassContext {
            inputs,
            ..Default::default()
        }
    }

    /// A context that continues from analyses an earlier pipeline left
    /// (the quantize driver builds several variants from one calibration).
    pub fn resume(inputs: Inputs, analyses: Analyses) -> Self {
        PassContext {
            inputs,
            analyses,
            remarks: Vec::new(),
        }
    }

    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    pub fn remarks(&self) -> &[Remark] {
        &self.remarks
    }

    pub fn take_remarks(&mut self) -> Vec<Remark> {
        std::mem::take(&mut self.remarks)
    }

    /// Adds remarks made elsewhere (a variant tried on a copy and kept).
    pub fn extend_remarks(&mut self, remarks: impl IntoIterator<Item = Remark>) {
        self.remarks.extend(remarks);
    }

    /// Takes the analyses out, leaving empty ones.
    pub fn into_parts(self) -> (Inputs, Analyses, Vec<Remark>) {
        (self.inputs, self.analyses, self.remarks)
    }

    /// A remark a user should see.
    pub fn remark(&mut self, pass: &str, node: &str, message: impl Into<String>) {
        self.push_remark(pass, node, message, Level::Note);
    }

    /// A per-tensor detail (see [`Level::Detail`]).
    pub fn detail(&mut self, pass: &str, node: &str, message: impl Into<String>) {
        self.push_remark(pass, node, message, Level::Detail);
    }

    fn push_remark(&mut self, pass: &str, node: &str, message: impl Into<String>, level: Level) {
        self.remarks.push(Remark {
            pass: pass.into(),
            node: node.into(),
            message: message.into(),
            level,
        });
    }
}
