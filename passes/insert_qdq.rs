//! `insert-qdq`: rewrites the float graph into QDQ form.
//!
//! # What
//! Following the placement of `quant::plan`:
//! * each quantized activation `x` gets `x_q = QuantizeLinear(x, s, z)`,
//!   `x_dq = DequantizeLinear(x_q, s, z)`, and every reader of `x` reads
//!   `x_dq` (one pair per tensor however many readers);
//! * each weight becomes an int8 initializer (per-channel along the
//!   consumer's output-channel axis where the layout has one) read through
//!   DequantizeLinear, so the file really shrinks;
//! * each bias of Conv/ConvTranspose/Gemm becomes int32 with scale
//!   `s_in · s_w`; where a value would overflow int32 the weight scale of
//!   that channel is widened instead of clipping the bias.
//!
//! # Example
//! ```text
//! before:  Y = Conv(X, W, B)
//! after:   X_q = QuantizeLinear(X, X_scale, X_zp)
//!          X_dq = DequantizeLinear(X_q, X_scale, X_zp)
//!          W_dq = DequantizeLinear<axis=0>(W_q, W_scale, W_zp)
//!          B_dq = DequantizeLinear<axis=0>(B_q, B_scale, B_zp)
//!          Y_pre = Conv(X_dq, W_dq, B_dq) ... then Q/DQ on Y
//! ```
//!
//! # Options
//! * `per-channel` (default true): per-channel weight scales; needs opset
//!   ≥ 13, which is upgraded to when that is safe.
//! * `weights`: `s8` (default, symmetric) or `u8` (symmetric around 128).
//! * `reduce-range`: 7-bit weights.
//! * `exclude`: node names or op types (glob `*`) kept in float.
//! * `op-types`: only quantize these op types.
//! * `bias-correction` (default true): fold the mean shift weight rounding
//!   causes back into Conv/Gemm biases (needs calibrated channel means).
//! * `keep-float`: node labels a fallback search keeps in float; the
//!   placement of every other node stays as if they were quantized.
//! * `promote`: node labels whose activation inputs take 16-bit codes
//!   (u16, or s16 where the activations are signed) over their whole
//!   observed range, instead of float: the mixed 8/16 fallback
//!   (`--promote 16`). A tensor tied to a promoted one (through data
//!   movement) is promoted with it; the file needs opset 21.
//! * `pow2`: every weight and bias scale a power of two (per channel, the
//!   one next to the channel's scale with the smaller squared error), for
//!   NPU targets; the activations' come from `fold-calibration{pow2}`.
//! * `prune-db` (default 0: off): magnitude pruning before rounding, each
//!   weight's smallest values zeroed while the energy removed stays
//!   `prune-db` dB below the weight's (one weight-space SQNR for every
//!   layer, so each layer's sparsity follows its distribution); bias
//!   correction folds back the mean shift. Zeros only shrink the
//!   compressed file (no runtime has sparse kernels).
//! * `codebook` (2–8, default 0: off) and `codebook-kind` (`kmeans`,
//!   `log`, `uniform`), `codebook-tables` (`tensor`, `channel`): each
//!   weight's codes restricted to 2^codebook levels of one table per
//!   weight, or per channel ([`crate::quant::codebook`]), before bias
//!   correction, so the correction folds back the mean shift of the
//!   coarser weights (`codebook-exempt`: node labels whose weights keep
//!   their 8-bit codes); `pack-codebook` then stores them as codes into the
//!   table.
//!
//! Compute ops chosen by `select-coverage` (an analysis in the context)
//! restrict the quantized Conv/MatMul/Gemm further.
//!
//! # Preconditions
//! Activation parameters in the context (`fold-calibration` before it);
//! element types known for the tensors involved (`shape-inference`); the
//! opset the weights need (10, or 13 for per-channel: `upgrade-opset`).
//!
//! # Numerics
//! Changes numbers: activations and weights take quantized values.
//!
//! # Errors
//! No parameters; a tensor the statistics do not cover; an opset below
//! what the weights need.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Model, Tensor, ValueId};
use crate::plan::{plan, Placement, Selection};
use crate::quant::params::ActParams;
use crate::quant::{quantize_bias, QType};

// Writing the chosen parameters into the graph: Q/DQ pairs, constants,
// biases.
mod materialize;
mod projection;
use materialize::{
    bias_shift, constant_as_activation, materialize_activations, materialize_biases,
    materialize_weights,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub per_channel: bool,
    pub weights: String,
    pub reduce_range: bool,
    pub exclude: Vec<String>,
    pub op_types: Vec<String>,
    pub bias_correction: bool,
    /// Node labels kept in float by a fallback search (or a selection
    /// file). Unlike `exclude`, the placement around them stays what it
    /// would be with them quantized, so that one node's effect can be
    /// measured in isolation.
    pub keep_float: Vec<String>,
    /// Node labels whose activation inputs are quantized to 16 bits.
    pub promote: Vec<String>,
    /// The runtime the file is for (`ort-cpu`, `tract`, `portable`): which
    /// groups it runs as integer kernels decides the placement.
    pub target: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pow2: bool,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub prune_db: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub codebook: u32,
    #[serde(skip_serializing_if = "is_kmeans")]
    pub codebook_kind: String,
    /// Node labels whose weights keep all their 8-bit codes (the
    /// automatic fallback's choice for codebook weights).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub codebook_exempt: Vec<String>,
    /// One codebook table per weight (`tensor`) or per channel of its
    /// quantization axis (`channel`).
    #[serde(skip_serializing_if = "is_tensor")]
    pub codebook_tables: String,
}

fn is_tensor(s: &str) -> bool {
    s == "tensor"
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

fn is_kmeans(s: &str) -> bool {
    s == "kmeans"
}

impl Default for Options {
    fn default() -> Self {
        Options {
            per_channel: true,
            weights: "s8".into(),
            reduce_range: false,
            exclude: vec![],
            op_types: vec![],
            bias_correction: true,
            keep_float: vec![],
            promote: vec![],
            target: "ort-cpu".into(),
            pow2: false,
            prune_db: 0.0,
            codebook: 0,
            codebook_kind: "kmeans".into(),
            codebook_tables: "tensor".into(),
            codebook_exempt: vec![],
        }
    }
}

pub struct InsertQdq {
    pub opts: Options,
    wtype: QType,
    target: crate::target::Target,
    codebook: Option<(usize, crate::quant::codebook::Kind)>,
}

impl InsertQdq {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options("insert-qdq", o)?;
        Self::new(opts)
    }

    pub fn new(opts: Options) -> Result<Self, PassError> {
        let wtype = QType::parse(&opts.weights)
            .filter(|q| !q.is_wide())
            .ok_or_else(|| PassError::Options {
                pass: "insert-qdq".into(),
                message: format!("weights '{}': expected s8 or u8", opts.weights),
            })?;
        let target =
            crate::target::Target::parse(&opts.target).ok_or_else(|| PassError::Options {
                pass: "insert-qdq".into(),
                message: format!(
                    "target '{}': expected one of ort-cpu, tract, portable",
                    opts.target
                ),
            })?;
        let kind = crate::quant::codebook::Kind::parse(&opts.codebook_kind).ok_or_else(|| {
            PassError::Options {
                pass: "insert-qdq".into(),
                message: format!(
                    "codebook-kind '{}': expected kmeans, log or uniform",
                    opts.codebook_kind
                ),
            }
        })?;
        if !(opts.prune_db == 0.0 || opts.prune_db.is_finite() && opts.prune_db > 0.0) {
            return Err(PassError::Options {
                pass: "insert-qdq".into(),
                message: format!(
                    "prune-db {}: expected a positive number of dB (0: off)",
                    opts.prune_db
                ),
            });
        }
        if !matches!(opts.codebook_tables.as_str(), "tensor" | "channel") {
            return Err(PassError::Options {
                pass: "insert-qdq".into(),
                message: format!(
                    "codebook-tables '{}': expected tensor or channel",
                    opts.codebook_tables
                ),
            });
        }
        let codebook = match opts.codebook {
            0 => None,
            b @ 2..=8 => Some((1usize << b, kind)),
            b => {
                return Err(PassError::Options {
                    pass: "insert-qdq".into(),
                    message: format!("codebook {b}: expected 2 to 8 bits (0: off)"),
                })
            }
        };
        Ok(InsertQdq {
            opts,
            wtype,
            target,
            codebook,
        })
    }
}

/// A quantized weight, ready to be written.
pub(crate) struct QWeight {
    pub(crate) axis: Option<usize>,
    pub(crate) dims: Vec<usize>,
    pub(crate) scales: Vec<f32>,
    pub(crate) zp: i32,
    /// The values to round to the nearest code: the float weights, or the
    /// grid values `round-weights` chose for them.
    pub(crate) data: Vec<f32>,
    /// The float weights when `data` holds learned grid values: what bias
    /// correction measures the rounding against.
    pub(crate) float: Option<Vec<f32>>,
    /// The integer type and the codes it may use.
    pub(crate) qtype: QType,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
}

/// Puts the grid values `round-weights` learned in place of the float
/// weights they were learned for (same axis, same scales: the placement
/// and options agree); returns how many.
fn use_rounded(
    g: &crate::ir::Graph,
    rounded: &BTreeMap<String, crate::passes::context::RoundedWeight>,
    weights: &mut BTreeMap<(ValueId, Option<usize>), QWeight>,
) -> usize {
    let mut n = 0;
    for (&(v, axis), qw) in weights.iter_mut() {
        let Some(r) = rounded.get(g.name(v)) else {
            continue;
        };
        if r.axis != axis || r.scales != qw.scales || r.data.len() != qw.data.len() {
            continue;
        }
        qw.float = Some(std::mem::replace(&mut qw.data, r.data.clone()));
        n += 1;
    }
    n
}

/// The codes a symmetric weight of `wtype` uses: u8 weights are symmetric
/// around 128, so [1, 255].
fn weight_bounds(wtype: QType, reduce: bool) -> (i32, i32) {
    let (lo, hi) = wtype.bounds(true, reduce);
    if wtype.is_signed() {
        (lo, hi)
    } else {
        (lo + 1, hi)
    }
}

impl QWeight {
    fn bounds(&self) -> (i32, i32) {
        (self.lo, self.hi)
    }
}

// Q and DQ nodes carry no name (`super::node_proto`): their values are
// named after the tensor they quantize, and a name per node would cost more
// file bytes than it tells (a model has hundreds).
use super::{int_attr, node_proto};

impl Pass for InsertQdq {
    fn name(&self) -> &'static str {
        "insert-qdq"
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let params = cx
            .analyses
            .act_params
            .clone()
            .ok_or_else(|| PassError::Precondition {
                pass: PASS.into(),
                message:
                    "no quantization parameters: run `calibrate,fold-calibration` before this pass"
                        .into(),
            })?;
        let sel = Selection {
            op_types: self.opts.op_types.clone(),
            exclude: self.opts.exclude.clone(),
            keep_float: self.opts.keep_float.iter().cloned().collect(),
            coverage: cx.analyses.compute.clone(),
            coverage_why: cx.analyses.compute_why.clone(),
            target: self.target,
            float_readers: cx.analyses.float_readers.clone(),
        };
        let placement = plan(m, &sel, self.opts.per_channel);
        cx.analyses.decisions = placement.decisions.clone();
        if placement.activations.is_empty() && placement.weights.is_empty() {
            return Ok(Changed::No);
        }
        check_opset(m, &placement)?;
        self.rewrite(m, cx, &placement, &params)?;
        Ok(Changed::Yes)
    }
}

/// Q/DQ need opset 10; per-channel (`axis`) needs 13. Upgrading is
/// `upgrade-opset`'s job, so that the pipeline shows it.
fn check_opset(m: &Model, p: &Placement) -> Result<(), PassError> {
    let need = if p.weights.iter().any(|w| w.axis.is_some()) {
        13
    } else {
        10
    };
    let have = m.opset("").unwrap_or(1);
    if have >= need {
        return Ok(());
    }
    Err(PassError::Precondition {
        pass: PASS.into(),
        message: format!(
            "the model imports opset {have}; {} needs opset {need}: run `upgrade-opset{{min={need}}}` before this pass (or use per-tensor weights, which need opset 10)",
            if need == 13 { "per-channel quantization" } else { "QuantizeLinear" }
        ),
    })
}

const PASS: &str = "insert-qdq";

/// 16-bit Q/DQ are opset 21's.
fn check_wide_opset(m: &Model, act: &[(ValueId, ActParams)]) -> Result<(), PassError> {
    let have = m.opset("").unwrap_or(1);
    if have >= 21 || !act.iter().any(|(_, a)| a.qtype.is_wide()) {
        return Ok(());
    }
    Err(PassError::Precondition {
        pass: PASS.into(),
        message: format!(
            "the model imports opset {have}; 16-bit QuantizeLinear/DequantizeLinear need opset 21: run `upgrade-opset{{min=21}}` before this pass"
        ),
    })
}

/// Gives the activations the `promote` nodes read (and every tensor tied
/// to them) 16-bit codes over their observed range: at 16 bits rounding
/// costs 256× less than at 8, so clipping never pays.
fn promote(
    g: &crate::ir::Graph,
    p: &Placement,
    labels: &[String],
    act: &mut [(ValueId, ActParams)],
) {
    if labels.is_empty() {
        return;
    }
    let labels: std::collections::BTreeSet<&str> = labels.iter().map(|s| s.as_str()).collect();
    let sources: std::collections::BTreeSet<ValueId> = act
        .iter()
        .filter(|(v, _)| {
            g.users(*v)
                .iter()
                .any(|(reader, _)| labels.contains(g.label(*reader)))
        })
        .map(|(v, _)| p.param_source(*v))
        .collect();
    for (v, ap) in act.iter_mut() {
        if !ap.qtype.is_wide() && sources.contains(&p.param_source(*v)) {
            *ap = ap.widened();
        }
    }
}

/// The statistics-derived parameters of every activation the placement
/// quantizes, looked up before the graph changes.
fn activation_params(
    g: &crate::ir::Graph,
    p: &Placement,
    params: &BTreeMap<String, ActParams>,
    stats: Option<&crate::calib::Stats>,
) -> Result<Vec<(ValueId, ActParams)>, PassError> {
    let mut act: Vec<(ValueId, ActParams)> = Vec::new();
    for &v in p.activations.iter().chain(p.tied.keys()) {
        let src = p.param_source(v);
        let name = g.name(src).to_string();
        // A tensor that held no finite value on any sample has no range
        // to calibrate: at these input shapes it is empty (or NaN), and a
        // file "quantized" from it would validate as a perfect match.
        if let Some(h) = stats.and_then(|s| s.tensors.get(&name)) {
            if h.is_empty() {
                let shape = g
                    .static_shape(src)
                    .map(|s| format!(" (shape {s:?})"))
                    .unwrap_or_default();
                return Err(PassError::Precondition {
                    pass: PASS.into(),
                    message: format!(
                        "tensor '{name}'{shape} held no finite value on any of the {} calibration sample(s): it is empty or NaN at the input shapes calibrated with, so its range cannot be calibrated; calibrate at the sizes the model is deployed with (--calib DIR with real samples, or --input-shape NAME=D0,D1,… with --calib-random)",
                        stats.map_or(0, |s| s.samples)
                    ),
                });
            }
        }
        let ap = params.get(&name).copied().ok_or_else(|| PassError::Precondition {
            pass: PASS.into(),
            message: format!("no statistics for tensor '{name}': the statistics do not cover this model; run calibrate on it again"),
        })?;
        act.push((v, ap));
    }
    act.sort_by_key(|(v, _)| *v);
    Ok(act)
}

/// An int32 bias ready to be written: index into `Placement::biases`,
/// quantized values and their scales.
pub(super) type QBias = (usize, Vec<i32>, Vec<f32>);

impl InsertQdq {
    fn rewrite(
        &self,
        m: &mut Model,
        cx: &mut PassContext,
        p: &Placement,
        params: &BTreeMap<String, ActParams>,
    ) -> Result<(), PassError> {
        let mut act = activation_params(&m.graph, p, params, cx.analyses.stats.as_deref())?;
        promote(&m.graph, p, &self.opts.promote, &mut act);
        check_wide_opset(m, &act)?;
        // Constants quantized like activations take the activations' type,
        // in 8 bits (their codes are written as bytes).
        let act_qtype = act
            .first()
            .map(|(_, a)| a.qtype.narrow())
            .unwrap_or(QType::U8);
        let mut weights = self.weight_scales(&m.graph, p, act_qtype)?;
        let n_learned = use_rounded(&m.graph, &cx.analyses.rounded, &mut weights);
        if self.opts.prune_db > 0.0 {
            projection::prune_weights(&m.graph, p, cx, &mut weights, self.opts.prune_db);
        }
        if let Some((levels, kind)) = self.codebook {
            let per_channel = self.opts.codebook_tables == "channel";
            let exempt = &self.opts.codebook_exempt;
            projection::codebook_weights(
                &m.graph,
                p,
                cx,
                &mut weights,
                (levels, kind, per_channel),
                exempt,
            );
        }
        let (biases, mut n_corrected) =
            self.quantize_biases(&m.graph, cx, p, &act, &mut weights)?;
        let float_biases = if self.opts.bias_correction {
            self.correct_float_biases(&m.graph, cx, p, &weights)?
        } else {
            vec![]
        };
        n_corrected += float_biases.len();
        let g = &mut m.graph;
        for (n, bias) in float_biases {
            let name = match g.node(n).input(2) {
                Some(b) => format!("{}_corrected", g.name(b)),
                None => format!("{}_bias_corrected", g.label(n)),
            };
            let len = bias.len();
            let t = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[len]), bias)
                .expect("invariant: one per channel");
            let bv = g.add_initializer(Tensor::from_f32(&name, &t));
            g.set_input(n, 2, Some(bv));
        }
        let n_act = materialize_activations(g, p, &act);
        cx.analyses.quantized_tensors = act.iter().map(|(v, _)| g.name(*v).to_string()).collect();
        materialize_weights(g, p, &weights);
        materialize_biases(g, p, &biases);
        cx.remark(
            PASS,
            "<model>",
            format!(
                "{} activations ({} at 16 bits), {} weights ({} with learned rounding) and {} biases quantized ({} bias-corrected); {} of {} candidate nodes quantized",
                n_act,
                act.iter().filter(|(_, a)| a.qtype.is_wide()).count(),
                weights.len(),
                n_learned,
                biases.len(),
                n_corrected,
                p.decisions.iter().filter(|d| d.quantized).count(),
                p.decisions.len()
            ),
        );
        Ok(())
    }

    /// Every weight's float data and its scales (per channel along the
    /// consumer's output axis, or one), keyed by (value, axis).
    pub(crate) fn weight_scales(
        &self,
        g: &crate::ir::Graph,
        p: &Placement,
        act_qtype: QType,
    ) -> Result<BTreeMap<(ValueId, Option<usize>), QWeight>, PassError> {
        let mut weights: BTreeMap<(ValueId, Option<usize>), QWeight> = BTreeMap::new();
        for w in &p.weights {
            if weights.contains_key(&(w.value, w.axis)) {
                continue;
            }
            let t = g
                .constant(w.value)
                .expect("invariant: weights are constants");
            let a = t.to_f32().map_err(|e| PassError::Failed {
                pass: PASS.into(),
                message: e.to_string(),
            })?;
            let dims: Vec<usize> = a.shape().to_vec();
            // `to_f32` builds a standard-layout array: its buffer is the
            // data in order, taken without a second copy.
            let (data, _) = a.into_raw_vec_and_offset();
            if w.as_activation {
                weights.insert(
                    (w.value, w.axis),
                    constant_as_activation(data, dims, act_qtype, self.opts.pow2),
                );
                continue;
            }
            let amax = crate::quant::channel_amax(&data, &dims, w.axis);
            // Keep in step with `round-weights`, which learns codes on
            // these grids and is only used where they match.
            let (_, hi) = self.wtype.bounds(true, self.opts.reduce_range);
            let half = if self.wtype.is_signed() {
                hi as f32
            } else {
                (hi - 128) as f32
            };
            let mut scales: Vec<f32> = amax
                .iter()
                .map(|&a| {
                    if a > 0.0 && (a / half).is_normal() {
                        a / half
                    } else {
                        1.0
                    }
                })
                .collect();
            let zp = if self.wtype == QType::U8 { 128 } else { 0 };
            let (lo, hi) = weight_bounds(self.wtype, self.opts.reduce_range);
            if self.opts.pow2 {
                projection::pow2_scales(&data, &dims, w.axis, &mut scales, lo - zp, hi - zp);
            }
            weights.insert(
                (w.value, w.axis),
                QWeight {
                    axis: w.axis,
                    dims,
                    scales,
                    zp,
                    data,
                    float: None,
                    qtype: self.wtype,
                    lo,
                    hi,
                },
            );
        }
        Ok(weights)
    }

    /// Biases as int32 with scale `s_in · s_w`, corrected for the mean
    /// shift weight rounding causes; a weight scale is widened where a bias
    /// would overflow int32. Returns the biases and how many were
    /// corrected.
    fn quantize_biases(
        &self,
        g: &crate::ir::Graph,
        cx: &mut PassContext,
        p: &Placement,
        act: &[(ValueId, ActParams)],
        weights: &mut BTreeMap<(ValueId, Option<usize>), QWeight>,
    ) -> Result<(Vec<QBias>, usize), PassError> {
        let act_scale = |v: ValueId| -> Option<f32> {
            act.iter()
                .find(|(x, _)| *x == v)
                .map(|(_, a)| a.affine.scale)
        };
        let mut biases: Vec<QBias> = Vec::new();
        let mut n_corrected = 0usize;
        for (i, b) in p.biases.iter().enumerate() {
            let Some(s_in) = act_scale(b.input) else {
                continue;
            };
            let wuse = p
                .weights
                .iter()
                .find(|w| w.node == b.node && w.slot == 1)
                .expect("invariant: biased ops have a weight use");
            let Some(qw) = weights.get_mut(&(wuse.value, wuse.axis)) else {
                continue;
            };
            let t = g
                .constant(b.value)
                .expect("invariant: biases are constants");
            let mut bv: Vec<f32> = t
                .to_f32()
                .map_err(|e| PassError::Failed {
                    pass: PASS.into(),
                    message: e.to_string(),
                })?
                .iter()
                .copied()
                .collect();
            let channels = qw.scales.len();
            if channels != 1 && channels != bv.len() {
                continue; // bias does not line up with the weight's channels: keep float
            }
            if self.opts.bias_correction && self.correct_bias(g, cx, b, qw, &mut bv) {
                n_corrected += 1;
            }
            let mut bq = quantize_bias(&bv, s_in, &qw.scales);
            if self.opts.pow2 && !bq.widen.is_empty() {
                // A widened scale is rounded up to the next power of two
                // (wider still, so the bias still fits).
                for (c, s) in &mut bq.widen {
                    *s = crate::quant::pow2_around(*s).1;
                    qw.scales[*c] = *s;
                }
                let widen = std::mem::take(&mut bq.widen);
                bq = quantize_bias(&bv, s_in, &qw.scales);
                bq.widen = widen;
            }
            for (c, s) in &bq.widen {
                qw.scales[*c] = *s;
                cx.remark(
                    PASS,
                    g.name(b.value),
                    format!("weight scale of channel {c} widened to {s} so the int32 bias fits"),
                );
            }
            biases.push((i, bq.q, bq.scales));
        }
        Ok((biases, n_corrected))
    }

    /// The corrected float biases of ops that stay float with int8
    /// weights (`WeightUse::float_compute`): their weights round like any
    /// other, and the mean shift that causes is as easy to fold back into
    /// a float bias (a Conv or Gemm without one gets one). Ops whose input
    /// means are not known are left as they are.
    fn correct_float_biases(
        &self,
        g: &crate::ir::Graph,
        cx: &PassContext,
        p: &Placement,
        weights: &BTreeMap<(ValueId, Option<usize>), QWeight>,
    ) -> Result<Vec<(crate::ir::NodeId, Vec<f32>)>, PassError> {
        let mut out = Vec::new();
        for w in p.weights.iter().filter(|w| w.float_compute && w.slot == 1) {
            let node = g.node(w.node);
            let (Some(x), Some(qw)) = (node.input(0), weights.get(&(w.value, w.axis))) else {
                continue;
            };
            let channels = match node.op_type() {
                "Conv" => qw.dims[0],
                "Gemm" if node.attr_i("transA").unwrap_or(0) == 0 => {
                    qw.dims[usize::from(node.attr_i("transB").unwrap_or(0) == 0)]
                }
                _ => continue,
            };
            let mut bv: Vec<f32> = match node.input(2) {
                None => vec![0.0; channels],
                Some(b) => {
                    let Some(t) = g.constant(b) else { continue };
                    if t.dims().iter().product::<i64>() != channels as i64 {
                        continue;
                    }
                    t.to_f32()
                        .map_err(|e| PassError::Failed {
                            pass: PASS.into(),
                            message: e.to_string(),
                        })?
                        .iter()
                        .copied()
                        .collect()
                }
            };
            let b = crate::plan::BiasUse {
                node: w.node,
                slot: 2,
                value: w.value,
                input: x,
                weight: w.value,
            };
            if self.correct_bias(g, cx, &b, qw, &mut bv) {
                out.push((w.node, bv));
            }
        }
        Ok(out)
    }

    /// Subtracts from `bv` the output shift the rounded weights cause,
    /// from the calibrated channel means of the op's input. Returns whether
    /// it could.
    fn correct_bias(
        &self,
        g: &crate::ir::Graph,
        cx: &PassContext,
        b: &crate::plan::BiasUse,
        qw: &QWeight,
        bv: &mut [f32],
    ) -> bool {
        let input = g.name(b.input);
        let Some(means) = cx.analyses.channel_means.get(input) else {
            return false;
        };
        let node = g.node(b.node);
        let Some(shift) = bias_shift(node, qw, &means.mean) else {
            return false;
        };
        // Gemm: y = alpha·A·B + beta·C.
        let (alpha, beta) = if node.op_type() == "Gemm" {
            (
                node.attr_f("alpha").unwrap_or(1.0),
                node.attr_f("beta").unwrap_or(1.0),
            )
        } else {
            (1.0, 1.0)
        };
        if shift.len() != bv.len() || beta == 0.0 {
            return false;
        }
        for (x, d) in bv.iter_mut().zip(&shift) {
            *x -= (alpha as f64 * d / beta as f64) as f32;
        }
        true
    }
}
