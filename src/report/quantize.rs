//! The quantize report's data model: what `onnxq quantize` did, as JSON for
//! machines (`--report FILE.json`) and as the terminal summary.
//!
//! `quantize` fills it; `report::html` renders it. It holds only data from
//! the layers below (decisions, remarks, validation, sensitivity, profile),
//! so every consumer can read it without knowing how quantization ran.

use serde::Serialize;

use crate::analysis::Profile;
use crate::passes::context::Remark;
use crate::plan::Decision;
use crate::quant::QType;
use crate::sensitivity::{NodeSensitivity, TensorError};
use crate::validate::Validation;

/// What quantization did.
#[derive(Clone, Debug, Serialize)]
pub struct QuantizeReport {
    pub input: String,
    pub output: String,
    /// The pipeline that produced the file, in canonical form: given to
    /// `onnxq opt MODEL --calib DIR -p PIPELINE` it writes the same bytes.
    pub pipeline: String,
    pub method: String,
    pub calibration_samples: usize,
    pub float_bytes: u64,
    pub quantized_bytes: u64,
    /// Both files deflated (zlib level 6, as a download is compressed);
    /// `None` past `accounting::COMPRESS_LIMIT`.
    pub float_compressed_bytes: Option<u64>,
    pub quantized_compressed_bytes: Option<u64>,
    pub nodes: Vec<Decision>,
    pub remarks: Vec<Remark>,
    pub validation: Option<Validation>,
    pub fallback: Option<Fallback>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruning: Option<Pruning>,
    /// What structured pruning removed (`--prune-channels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_pruning: Option<crate::passes::prune_channels::ChannelPruning>,
    /// Filled when a detailed report is asked for (`--report`): where the
    /// float model spends its time, the error of every shared tensor, and
    /// each quantized activation's histogram with the range chosen.
    pub profile: Option<Profile>,
    /// Share of the Conv/ConvTranspose/MatMul/Gemm multiply-accumulates that
    /// run quantized (`None` when shapes are unknown).
    pub quantized_mac_share: Option<f64>,
    /// The written file's compute ops by the precision they run in, with
    /// their weight bytes and MACs (counted at the calibration shapes).
    pub compute_by_precision: std::collections::BTreeMap<String, super::precision::PrecisionShare>,
    pub tensor_errors: Vec<TensorError>,
    /// Why the worst quantized tensors' error stays large, and the remedy
    /// for each cause (detailed reports).
    pub diagnoses: Vec<crate::report::diagnose::Diagnosis>,
    pub activations: Vec<ActivationSummary>,
    /// Per tensor, the clip rule `--method auto` kept and the readers'
    /// measured error under each rule tried (empty when a method was
    /// given).
    pub ranges: Vec<crate::passes::context::TensorChoice>,
    pub seconds: Timings,
    pub warnings: Vec<String>,
    /// What speed selection measured in the target's runtime: the
    /// candidates' ratios and each compute op's float and int8 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<crate::passes::context::SpeedChoice>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub prepare: f64,
    pub calibrate: f64,
    pub quantize: f64,
    pub validate: f64,
    pub fallback: f64,
    pub report: f64,
    pub total: f64,
}

/// A fidelity target for automatic fallback.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FidelityTarget {
    pub min_sqnr_db: Option<f64>,
    pub min_cosine: Option<f64>,
}

impl FidelityTarget {
    pub fn met(&self, v: &Validation) -> bool {
        self.min_sqnr_db
            .is_none_or(|t| v.min_sqnr().is_none_or(|s| s >= t))
            && self
                .min_cosine
                .is_none_or(|t| v.min_cosine().is_none_or(|c| c >= t))
    }

    /// "SQNR >= 30 dB and cosine >= 0.99".
    pub fn describe(&self) -> String {
        [
            self.min_sqnr_db.map(|x| format!("SQNR >= {x} dB")),
            self.min_cosine.map(|x| format!("cosine >= {x}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ")
    }
}

impl Fallback {
    /// How the nodes it lists were relieved: "in float", "with 16-bit
    /// activations" or "with 8-bit weights".
    pub fn relief(&self) -> &'static str {
        if self.promoted {
            "with 16-bit activations"
        } else if self.eight_bit_weights {
            "with their full 8-bit weights"
        } else {
            "in float"
        }
    }
}

/// What magnitude pruning did (`--prune`).
#[derive(Clone, Debug, Serialize)]
pub struct Pruning {
    /// The per-layer budget: each weight keeps all but this many dB of
    /// its energy (`insert-qdq`'s `prune-db`; lower prunes more).
    pub db: f64,
    /// Weight values zeroed, of all quantized weight values.
    pub zeros: usize,
    pub total: usize,
    /// Chosen by the search for `--target-sqnr`/`--target-cosine`
    /// (`--prune auto`), or given.
    pub searched: bool,
    /// (dB, worst output SQNR, worst mean cosine) per level tried.
    pub trials: Vec<(f64, Option<f64>, Option<f64>)>,
}

impl Pruning {
    pub fn sparsity(&self) -> f64 {
        self.zeros as f64 / self.total.max(1) as f64
    }
}

/// What automatic fallback did.
#[derive(Clone, Debug, Serialize)]
pub struct Fallback {
    pub target: FidelityTarget,
    pub reached: bool,
    /// Nodes kept in float, most sensitive first (the `keep-float` option
    /// of `insert-qdq` in the printed pipeline); with `promoted`, the nodes
    /// whose activations went to 16 bits instead (its `promote` option).
    pub excluded: Vec<String>,
    /// The fallback promoted activations to 16 bits instead of keeping
    /// nodes in float (`--promote 16`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub promoted: bool,
    /// With codebook weights: the nodes listed kept their full 8-bit
    /// weight codes instead of going float (`insert-qdq`'s
    /// `codebook-exempt`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub eight_bit_weights: bool,
    /// Isolated sensitivity of every quantized node, worst first.
    pub sensitivity: Vec<NodeSensitivity>,
    /// (number excluded, worst output SQNR, worst mean cosine) per trial.
    pub trials: Vec<(usize, Option<f64>, Option<f64>)>,
    /// Float latency / the kept file's, measured in the target's runtime
    /// after the search (`None`: no runtime to measure in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_ratio: Option<f64>,
}

/// One quantized activation for the report: the observed distribution
/// (64 bins over the observed range, counts) and the clip range chosen.
#[derive(Clone, Debug, Serialize)]
pub struct ActivationSummary {
    pub tensor: String,
    pub observed: (f32, f32),
    pub clip: (f64, f64),
    pub scale: f32,
    pub zero_point: i32,
    pub qtype: QType,
    /// Bin edges are `observed.0 + i·(observed.1 − observed.0)/bins.len()`.
    pub bins: Vec<u64>,
}

impl QuantizeReport {
    /// A human summary for the terminal.
    pub fn summary(&self) -> String {
        let q = self.nodes.iter().filter(|d| d.quantized).count();
        // Weight-only runs decide per weight, not per node (their remarks
        // below say what became of each).
        let nodes = if self.nodes.is_empty() && self.method.starts_with("weights only") {
            "activations stay float".to_string()
        } else if self.nodes.is_empty() && self.method.contains("float16") {
            "no integer quantization".to_string()
        } else {
            format!("{q} of {} candidate nodes quantized", self.nodes.len())
        };
        let mut s = format!(
            "onnxq quantize: {} -> {}\n  method {}, {} calibration sample(s); {nodes}\n  size {} -> {} bytes ({:.3}x)\n",
            self.input,
            self.output,
            self.method,
            self.calibration_samples,
            self.float_bytes,
            self.quantized_bytes,
            self.quantized_bytes as f64 / self.float_bytes.max(1) as f64
        );
        if let (Some(f), Some(q)) = (self.float_compressed_bytes, self.quantized_compressed_bytes) {
            s.push_str(&format!(
                "  compressed (deflate) {f} -> {q} bytes ({:.3}x)\n",
                q as f64 / f.max(1) as f64
            ));
        }
        if let Some(c) = &self.channel_pruning {
            let how = if c.searched {
                format!(
                    "the most that met the target of {} per-reader budgets tried ({} dB)",
                    c.trials.len(),
                    c.budget_db
                )
            } else {
                format!(
                    "asked {:.0}% at {} dB per reader",
                    100.0 * c.asked,
                    c.budget_db
                )
            };
            if c.channels_removed == 0 {
                s.push_str(&format!(
                    "  channel pruning: nothing removed ({}): the file is the unpruned model's\n",
                    if c.searched {
                        format!("no budget met the target, {} tried", c.trials.len())
                    } else {
                        format!("no group could lose a channel within {} dB", c.budget_db)
                    }
                ));
            } else {
                s.push_str(&format!(
                    "  channel pruning: {} of {} prunable channels removed in {} of {} groups: MACs {} -> {} ({:.1}% fewer; {how}), a narrower network in every runtime\n",
                    c.channels_removed,
                    c.channels_prunable,
                    c.groups_pruned,
                    c.groups,
                    c.macs_before,
                    c.macs_after,
                    100.0 * c.share(),
                ));
            }
        }
        if let Some(p) = &self.pruning {
            if p.searched && p.zeros == 0 {
                // Even the gentlest level missed the target.
                s.push_str(&format!(
                    "  pruning: no level met the target ({} tried, the gentlest {} dB per layer): nothing pruned\n",
                    p.trials.len(),
                    p.trials.first().map_or(0.0, |t| t.0)
                ));
            } else {
                s.push_str(&format!(
                    "  pruned {:.1}% of the weight values ({} of {}) at {} dB per layer{}\n",
                    100.0 * p.sparsity(),
                    p.zeros,
                    p.total,
                    p.db,
                    if p.searched {
                        format!(
                            ", the most pruning that met the target of {} levels tried",
                            p.trials.len()
                        )
                    } else {
                        String::new()
                    }
                ));
            }
        }
        self.summarize_skipped(&mut s);
        for (p, c) in &self.compute_by_precision {
            s.push_str(&format!(
                "  compute {p}: {} ops, {} weight bytes{}\n",
                c.ops,
                c.weight_bytes,
                c.macs.map(|m| format!(", {m} MACs")).unwrap_or_default()
            ));
        }
        if let Some(share) = self.quantized_mac_share {
            s.push_str(&format!(
                "  {:.1}% of the Conv/MatMul/Gemm/LSTM/GRU multiply-accumulates run quantized (subgraphs included)\n",
                share * 100.0
            ));
        }
        // What speed selection measured (or why it could not), and the
        // method `--method auto` chose: the two measured choices; and the
        // inputs read as constants, which change what the model does; and
        // what learned rounding did.
        for r in self.remarks.iter().filter(|r| {
            (r.node == "<model>"
                && matches!(
                    r.pass.as_str(),
                    "select-speed"
                        | "quantize"
                        | "fix-inputs"
                        | "round-weights"
                        | "quantize-weights"
                        | "convert-float"
                        | "validate"
                ))
                || r.pass == "quantize-gather"
        }) {
            s.push_str(&format!("  {}: {}\n", r.pass, r.message));
        }
        if let Some(fb) = &self.fallback {
            summarize_fallback(fb, &mut s);
        }
        for w in &self.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
        for d in self
            .diagnoses
            .iter()
            .filter(|d| !d.causes.is_empty())
            .take(3)
        {
            let c = &d.causes[0];
            s.push_str(&format!(
                "  why {} ({}) is at {:.1} dB: {}; remedy: {}\n",
                d.tensor, d.op, d.sqnr_db, c.detail, c.remedy
            ));
        }
        if let Some(v) = &self.validation {
            s.push_str(&v.table());
        }
        s.push_str(&format!(
            "  time: prepare {:.2}s, calibrate {:.2}s, quantize {:.2}s, fallback {:.2}s, validate {:.2}s, total {:.2}s\n",
            self.seconds.prepare, self.seconds.calibrate, self.seconds.quantize, self.seconds.fallback, self.seconds.validate, self.seconds.total
        ));
        s
    }

    fn summarize_skipped(&self, s: &mut String) {
        let skipped: Vec<&Decision> = self.nodes.iter().filter(|d| !d.quantized).collect();
        if skipped.is_empty() {
            return;
        }
        s.push_str("  kept in float:\n");
        for d in skipped.iter().take(20) {
            s.push_str(&format!("    {} ({}): {}\n", d.node, d.op, d.reason));
        }
        if skipped.len() > 20 {
            s.push_str(&format!(
                "    ... and {} more (see --report)\n",
                skipped.len() - 20
            ));
        }
    }
}

fn summarize_fallback(fb: &Fallback, s: &mut String) {
    let goal = fb.target.describe();
    if fb.excluded.is_empty() && fb.reached {
        s.push_str(&format!(
            "  fallback: {goal} met with everything quantized\n"
        ));
    } else if fb.reached && fb.promoted {
        s.push_str(&format!(
            "  fallback: {goal} met by giving {} node(s) 16-bit activations (insert-qdq's promote in the pipeline)\n",
            fb.excluded.len(),
        ));
    } else if fb.reached && fb.eight_bit_weights {
        s.push_str(&format!(
            "  fallback: {goal} met by giving {} node(s) their full 8-bit weights instead of codebook levels (insert-qdq's codebook-exempt in the pipeline)\n",
            fb.excluded.len(),
        ));
    } else if fb.reached {
        s.push_str(&format!(
            "  fallback: {goal} met by keeping {} node(s) in float (insert-qdq's keep-float in the pipeline; --save-selection FILE pins them)\n",
            fb.excluded.len(),
        ));
    }
    if let Some(r) = fb.speed_ratio {
        s.push_str(&format!(
            "  fallback: the file kept runs at {r:.2}x the float model's speed in the target's runtime\n"
        ));
    }
    if !fb.reached {
        let how = if fb.promoted {
            "at 16 bits"
        } else if fb.eight_bit_weights {
            "with 8-bit weights (float weights outside the quantized nodes, such as LSTM's, keep their codebook levels)"
        } else {
            "in float"
        };
        s.push_str(&format!(
            "  fallback: {goal} NOT reached even with every node {how} (best kept: {} excluded)\n",
            fb.excluded.len()
        ));
    }
}
