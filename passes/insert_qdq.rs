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

use crate::ir::At;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Model, Tensor, ValueId};
use crate::plan::{plan, Placement, Selection};
use crate::quant::params::ActParams;
use crate::quant::{quantize_bias, requantize, QType};

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
    /// The runtime the file is for (`ort-cpu`, `tract`, `portable`): which
    /// groups it runs as integer kernels decides the placement.
    pub target: String,
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
            target: "ort-cpu".into(),
        }
    }
}

pub struct InsertQdq {
    pub opts: Options,
    wtype: QType,
    target: crate::target::Target,
}

impl InsertQdq {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options("insert-qdq", o)?;
        Self::new(opts)
    }

    pub fn new(opts: Options) -> Result<Self, PassError> {
        let wtype = QType::parse(&opts.weights).ok_or_else(|| PassError::Options {
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
        Ok(InsertQdq {
            opts,
            wtype,
            target,
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
    match wtype {
        QType::U8 => (lo + 1, hi),
        QType::S8 => (lo, hi),
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

fn zp_tensor(name: &str, qt: QType, zps: &[i32], dims: &[i64]) -> Tensor {
    match qt {
        QType::U8 => Tensor::from_u8(
            name,
            dims,
            &zps.iter().map(|&z| z as u8).collect::<Vec<_>>(),
        ),
        QType::S8 => Tensor::from_i8(
            name,
            dims,
            &zps.iter().map(|&z| z as i8).collect::<Vec<_>>(),
        ),
    }
}

fn scale_tensor(name: &str, scales: &[f32], dims: &[i64]) -> Tensor {
    let raw: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    Tensor::from_raw(
        name,
        crate::proto::tensor_proto::DataType::Float as i32,
        dims,
        raw.into(),
    )
}

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
type QBias = (usize, Vec<i32>, Vec<f32>);

impl InsertQdq {
    fn rewrite(
        &self,
        m: &mut Model,
        cx: &mut PassContext,
        p: &Placement,
        params: &BTreeMap<String, ActParams>,
    ) -> Result<(), PassError> {
        let act = activation_params(&m.graph, p, params, cx.analyses.stats.as_deref())?;
        // Constants quantized like activations take the activations' type.
        let act_qtype = act.first().map(|(_, a)| a.qtype).unwrap_or(QType::U8);
        let mut weights = self.weight_scales(&m.graph, p, act_qtype)?;
        let n_learned = use_rounded(&m.graph, &cx.analyses.rounded, &mut weights);
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
        self.materialize_weights(g, p, &weights);
        materialize_biases(g, p, &biases);
        cx.remark(
            PASS,
            "<model>",
            format!(
                "{} activations, {} weights ({} with learned rounding) and {} biases quantized ({} bias-corrected); {} of {} candidate nodes quantized",
                n_act,
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
                    constant_as_activation(data, dims, act_qtype),
                );
                continue;
            }
            let amax = crate::quant::channel_amax(&data, &dims, w.axis);
            // Keep in step with `round-weights`, which learns codes on
            // these grids and is only used where they match.
            let (_, hi) = self.wtype.bounds(true, self.opts.reduce_range);
            let half = match self.wtype {
                QType::S8 => hi as f32,
                QType::U8 => (hi - 128) as f32,
            };
            let scales: Vec<f32> = amax
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
            let bq = quantize_bias(&bv, s_in, &qw.scales);
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

    /// Each weight as an int8 initializer read through DequantizeLinear,
    /// placed just before its first reader.
    fn materialize_weights(
        &self,
        g: &mut crate::ir::Graph,
        p: &Placement,
        weights: &BTreeMap<(ValueId, Option<usize>), QWeight>,
    ) {
        let mut wout: BTreeMap<(ValueId, Option<usize>), ValueId> = BTreeMap::new();
        for (&(v, axis), qw) in weights {
            let (wlo, whi) = qw.bounds();
            let name = g.name(v).to_string();
            let dims_i: Vec<i64> = qw.dims.iter().map(|&d| d as i64).collect();
            let zps: Vec<i32> = vec![qw.zp; qw.scales.len()];
            let q = requantize(&qw.data, &qw.dims, qw.axis, &qw.scales, qw.zp, wlo, whi);
            let dtype = match qw.qtype {
                QType::S8 => crate::proto::tensor_proto::DataType::Int8,
                QType::U8 => crate::proto::tensor_proto::DataType::Uint8,
            };
            let qt = Tensor::from_raw(&format!("{name}_q"), dtype as i32, &dims_i, q.into());
            let pdims: Vec<i64> = if axis.is_some() {
                vec![qw.scales.len() as i64]
            } else {
                vec![]
            };
            let qv = g.add_initializer(qt);
            let s = g.add_initializer(scale_tensor(&format!("{name}_scale"), &qw.scales, &pdims));
            let z = g.add_initializer(zp_tensor(&format!("{name}_zp"), qw.qtype, &zps, &pdims));
            let attrs = axis
                .map(|a| vec![int_attr("axis", a as i64)])
                .unwrap_or_default();
            let anchor = p
                .weights
                .iter()
                .find(|w| w.value == v && w.axis == axis)
                .expect("invariant: weight has a use")
                .node;
            let (_, o) = g.add_op(
                node_proto("DequantizeLinear", attrs),
                &[Some(qv), Some(s), Some(z)],
                &[&format!("{name}_dq")],
                At::Before(anchor),
            );
            wout.insert((v, axis), o[0]);
        }
        for w in &p.weights {
            let dq = wout[&(w.value, w.axis)];
            g.set_input(w.node, w.slot, Some(dq));
        }
    }
}

/// A constant operand of an elementwise kernel, quantized like an
/// activation: one scale and zero point of the activations' type over the
/// constant's own range (widened to include 0).
fn constant_as_activation(data: Vec<f32>, dims: Vec<usize>, qtype: QType) -> QWeight {
    let (lo, hi, _) = crate::calib::hist::finite_range(&data);
    let symmetric = qtype == QType::S8;
    let a = crate::quant::affine_for_range(lo as f64, hi as f64, qtype, symmetric, false);
    let (qlo, qhi) = qtype.bounds(symmetric, false);
    QWeight {
        axis: None,
        dims,
        scales: vec![a.scale],
        zp: a.zero_point,
        data,
        float: None,
        qtype,
        lo: qlo,
        hi: qhi,
    }
}

/// `x_q = QuantizeLinear(x)`, `x_dq = DequantizeLinear(x_q)` after each
/// quantized activation, every reader moved to `x_dq`. A tensor and the
/// data-movement results tied to it share one scale/zero-point pair.
/// Returns how many pairs were made.
fn materialize_activations(
    g: &mut crate::ir::Graph,
    p: &Placement,
    act: &[(ValueId, ActParams)],
) -> usize {
    let mut dequantized: Vec<(ValueId, ValueId)> = Vec::new();
    let mut params_made: BTreeMap<ValueId, (ValueId, ValueId)> = BTreeMap::new();
    for (v, ap) in act {
        let name = g.name(*v).to_string();
        let producer = g.producer(*v);
        let src = p.param_source(*v);
        let (s, z) = match params_made.get(&src) {
            Some(&sz) => sz,
            None => {
                let src_name = g.name(src).to_string();
                let s = g.add_initializer(scale_tensor(
                    &format!("{src_name}_scale"),
                    &[ap.affine.scale],
                    &[],
                ));
                let z = g.add_initializer(zp_tensor(
                    &format!("{src_name}_zp"),
                    ap.qtype,
                    &[ap.affine.zero_point],
                    &[],
                ));
                params_made.insert(src, (s, z));
                (s, z)
            }
        };
        let readers = g.users(*v);
        let (qn, qo) = g.add_op(
            node_proto("QuantizeLinear", vec![]),
            &[Some(*v), Some(s), Some(z)],
            &[&format!("{name}_q")],
            At::After(producer),
        );
        let (_, dqo) = g.add_op(
            node_proto("DequantizeLinear", vec![]),
            &[Some(qo[0]), Some(s), Some(z)],
            &[&format!("{name}_dq")],
            At::After(qn),
        );
        for (reader, slot) in readers {
            if p.float_readers.contains(&reader) {
                continue;
            }
            if let crate::ir::Slot::Input(i) = slot {
                g.set_input(reader, i as usize, Some(dqo[0]));
            }
        }
        dequantized.push((*v, dqo[0]));
    }
    // A quantized group's result that is a graph output: the port moves to
    // the DequantizeLinear (keeping its name), so the group stays whole.
    for (v, dq) in dequantized {
        if p.redirect_outputs.contains(&v) {
            for i in g.output_ports(v) {
                g.redirect_output(i, dq);
            }
        }
    }
    act.len()
}

/// Each bias as an int32 initializer read through DequantizeLinear.
fn materialize_biases(g: &mut crate::ir::Graph, p: &Placement, biases: &[QBias]) {
    for (i, q, scales) in biases {
        let b = &p.biases[*i];
        let name = g.name(b.value).to_string();
        let n = q.len() as i64;
        let qv = g.add_initializer(Tensor::from_i32(&format!("{name}_q"), &[n], q));
        // Per-axis scales only where the channels' scales differ (per-channel
        // weights, which need opset 13): `axis` on DequantizeLinear exists
        // from opset 13, and a per-tensor model keeps its opset (10 or 11),
        // where the scale must be a scalar.
        let per_channel = scales.iter().any(|s| *s != scales[0]);
        let pdims: Vec<i64> = if per_channel { vec![n] } else { vec![] };
        let sv: Vec<f32> = if per_channel {
            scales.clone()
        } else {
            vec![scales[0]]
        };
        let s = g.add_initializer(scale_tensor(&format!("{name}_scale"), &sv, &pdims));
        let z = g.add_initializer(Tensor::from_i32(
            &format!("{name}_zp"),
            &pdims,
            &vec![0; sv.len()],
        ));
        let attrs = if per_channel {
            vec![int_attr("axis", 0)]
        } else {
            vec![]
        };
        let (_, o) = g.add_op(
            node_proto("DequantizeLinear", attrs),
            &[Some(qv), Some(s), Some(z)],
            &[&format!("{name}_dq")],
            At::Before(b.node),
        );
        g.set_input(b.node, b.slot, Some(o[0]));
    }
}

/// Bias correction (Nagel et al., "Data-Free Quantization", §4.2, with
/// empirical input means): rounding the weights shifts each output channel's
/// expected value by `Σ δW · E[x]`, a systematic offset that every later
/// layer inherits. Returns that shift per output channel, to subtract from
/// the bias. Conv (groups included) and Gemm; `None` for layouts it does not
/// know.
fn bias_shift(node: &crate::ir::Node, qw: &QWeight, mean: &[f64]) -> Option<Vec<f64>> {
    let (lo, hi) = qw.bounds();
    let float = qw.float.as_deref().unwrap_or(&qw.data);
    let dq = |i: usize, c: usize| -> f64 {
        let a = crate::quant::Affine {
            scale: qw.scales[c],
            zero_point: qw.zp,
        };
        crate::quant::dequantize(crate::quant::quantize(qw.data[i], a, lo, hi), a) as f64
            - float[i] as f64
    };
    let per_channel = |c: usize| if qw.scales.len() == 1 { 0 } else { c };
    match node.op_type() {
        "Conv" => {
            let d = &qw.dims;
            if d.len() < 2 || qw.axis.is_some_and(|a| a != 0) {
                return None;
            }
            let (cout, cin_g) = (d[0], d[1]);
            let taps: usize = d[2..].iter().product();
            let group = node.attr_i("group").unwrap_or(1).max(1) as usize;
            if cout % group != 0 || mean.len() != cin_g * group {
                return None;
            }
            let per_group = cout / group;
            let mut shift = vec![0f64; cout];
            for (c, sh) in shift.iter_mut().enumerate() {
                let base_in = (c / per_group) * cin_g;
                for k in 0..cin_g {
                    let m = mean[base_in + k];
                    for t in 0..taps {
                        let i = (c * cin_g + k) * taps + t;
                        *sh += dq(i, per_channel(c)) * m;
                    }
                }
            }
            Some(shift)
        }
        "Gemm" => {
            let d = &qw.dims;
            if d.len() != 2 {
                return None;
            }
            let trans_b = node.attr_i("transB").unwrap_or(0) != 0;
            let (k_dim, n_dim) = if trans_b { (d[1], d[0]) } else { (d[0], d[1]) };
            if mean.len() != k_dim {
                return None;
            }
            let mut shift = vec![0f64; n_dim];
            for (n, sh) in shift.iter_mut().enumerate() {
                for (k, m) in mean.iter().enumerate() {
                    let i = if trans_b {
                        n * k_dim + k
                    } else {
                        k * n_dim + n
                    };
                    let c = if qw.axis == Some(0) {
                        i / d[1]
                    } else if qw.axis == Some(1) {
                        i % d[1]
                    } else {
                        0
                    };
                    *sh += dq(i, c) * m;
                }
            }
            Some(shift)
        }
        _ => None,
    }
}
