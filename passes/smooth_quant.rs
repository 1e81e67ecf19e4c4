//! `smooth-quant`: moves activation outliers into the weights of the
//! MatMuls that read them (SmoothQuant, Xiao et al., ICML 2023).
//!
//! # What
//! A transformer's activations have a few channels far larger than the
//! rest (MiniLM-L3: one LayerNorm output channel at 28 against a median of
//! 1.6), so a per-tensor activation scale spends most of int8's levels on
//! them. For `Y = X·W` the pass divides channel `j` of `X` by
//! `s_j = max|X_j|^α / max|W_j,:|^(1-α)` and multiplies row `j` of `W` by
//! it: `Y` is unchanged in float, the activation is flatter and the
//! weights (quantized per output column) absorb the difference.
//!
//! Every MatMul (and Gemm without `transA`) with a constant 2-D float
//! weight reading the same activation is one group with one `s`. The
//! division is folded into the producer when the group alone reads the
//! activation and the producer is a `LayerNormalization` over the last
//! axis (scale and bias divided) or a `Mul`/`Div` by a scalar or per-channel
//! constant (GELU's closing `Mul(·, 0.5)`): exact and free. Otherwise a
//! `Mul(X, 1/s)` feeds the group while other readers keep `X`.
//!
//! # Example
//! ```text
//! before:  Y = MatMul (X, W)
//! after:   X_smooth = Mul (X, X_smooth_scale)     # 1/s per channel
//!          Y = MatMul (X_smooth, W_smooth)        # W_smooth[j,:] = s_j·W[j,:]
//! ```
//!
//! # Options
//! * `alpha` (default 0.8): the migration strength, in `[0, 1]`; 0 leaves
//!   activations as they are, 1 moves their whole range into the weights.
//! * `skip`: activation tensors (by name) to leave alone.
//!
//! # Preconditions
//! Statistics from `calibrate` with per-channel maxima of the MatMul
//! inputs. The pass consumes them: the smoothed graph has new activations,
//! so a `calibrate` must follow before `fold-calibration`.
//!
//! # Numerics
//! Exact in real arithmetic (float rounding of the rescaled weights only);
//! the point is what quantization does afterwards.
//!
//! # Errors
//! No statistics; `alpha` outside `[0, 1]`.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::calib::Stats;
use crate::ir::{At, Graph, Model, NodeId, Tensor, ValueId};
use crate::proto::tensor_proto::DataType;

const NAME: &str = "smooth-quant";

/// Smoothing factors are kept within this ratio of 1 either way: a dead
/// channel (all zeros) or a zero weight row must not produce a factor
/// that overflows the other side.
const MAX_FACTOR: f64 = 1e4;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub alpha: f64,
    /// Activations (tensor names) to leave alone: where smoothing was
    /// measured not to help.
    pub skip: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            alpha: 0.8,
            skip: vec![],
        }
    }
}

pub struct SmoothQuant {
    opts: Options,
}

impl SmoothQuant {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        if !(0.0..=1.0).contains(&opts.alpha) {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!("alpha must be within [0, 1], got {}", opts.alpha),
            });
        }
        Ok(SmoothQuant { opts })
    }
}

/// A reader of the activation with a constant weight: the node, and
/// whether the weight is stored `[N, K]` (Gemm `transB`).
struct Reader {
    node: NodeId,
    transposed: bool,
}

/// The activations a group of weighted readers shares, by value: the
/// readers whose rows (input channels) the factor multiplies.
pub struct Group {
    pub x: ValueId,
    readers: Vec<Reader>,
    channels: usize,
}

/// The reader `n` of `x` if it multiplies `x` (its first input) by a
/// constant 2-D float weight with `channels` input channels.
fn reader(g: &Graph, n: NodeId, x: ValueId) -> Option<(Reader, usize)> {
    let node = g.node(n);
    let transposed = match node.op_type() {
        "MatMul" => false,
        "Gemm" if node.attr_i("transA").unwrap_or(0) == 0 => {
            node.attr_i("transB").unwrap_or(0) != 0
        }
        _ => return None,
    };
    if node.input(0) != Some(x) || node.input(1) == Some(x) {
        return None;
    }
    let w = g.constant(node.input(1)?)?;
    if w.dtype() != DataType::Float as i32 || w.dims().len() != 2 {
        return None;
    }
    let k = w.dims()[usize::from(transposed)] as usize;
    Some((
        Reader {
            node: n,
            transposed,
        },
        k,
    ))
}

/// The groups of `m` that statistics with per-channel maxima cover, in
/// graph order of their activations.
pub fn groups(m: &Model, stats: &Stats) -> Vec<Group> {
    let g = &m.graph;
    let mut by_x: BTreeMap<ValueId, Group> = BTreeMap::new();
    let mut order = Vec::new();
    for n in g.topo_order() {
        let Some(x) = g.node(n).input(0) else {
            continue;
        };
        let Some((r, k)) = reader(g, n, x) else {
            continue;
        };
        let Some(cm) = stats.means.get(g.name(x)) else {
            continue;
        };
        if cm.absmax.len() != k || g.constant(x).is_some() {
            continue;
        }
        let e = by_x.entry(x).or_insert_with(|| {
            order.push(x);
            Group {
                x,
                readers: vec![],
                channels: k,
            }
        });
        if e.channels == k {
            e.readers.push(r);
        }
    }
    order.into_iter().filter_map(|x| by_x.remove(&x)).collect()
}

/// Largest magnitude of each input channel (row `j` of `W[K, N]`, column
/// `j` of a transposed one) of the reader's weight.
fn row_max(g: &Graph, r: &Reader) -> Vec<f64> {
    let w = g
        .constant(g.node(r.node).input(1).expect("invariant: reader"))
        .expect("invariant: reader");
    let a = w.to_f32().expect("invariant: float weight");
    let a = a
        .into_dimensionality::<ndarray::Ix2>()
        .expect("invariant: 2-D");
    let axis = if r.transposed { 0 } else { 1 };
    a.map_axis(ndarray::Axis(axis), |lane| {
        lane.iter().fold(0f64, |m, &v| m.max((v as f64).abs()))
    })
    .to_vec()
}

/// The factors `s_j` for a group.
fn factors(act: &[f64], weight: &[f64], alpha: f64) -> Vec<f64> {
    act.iter()
        .zip(weight)
        .map(|(&a, &w)| {
            if a <= 0.0 || w <= 0.0 || !a.is_finite() || !w.is_finite() {
                return 1.0;
            }
            let s = a.powf(alpha) / w.powf(1.0 - alpha);
            s.clamp(1.0 / MAX_FACTOR, MAX_FACTOR)
        })
        .collect()
}

/// Multiplies the reader's weight rows by `s` (a new initializer: the old
/// one may have other readers).
fn scale_weight(g: &mut Graph, r: &Reader, s: &[f64]) {
    let wv = g.node(r.node).input(1).expect("invariant: reader");
    let w = g.constant(wv).expect("invariant: reader");
    let name = format!("{}_smooth", w.name());
    let mut a = w.to_f32().expect("invariant: float weight");
    let dims = a.shape().to_vec();
    for ((i, j), v) in a
        .view_mut()
        .into_dimensionality::<ndarray::Ix2>()
        .expect("invariant: 2-D")
        .indexed_iter_mut()
    {
        let c = if r.transposed { j } else { i };
        *v = (*v as f64 * s[c]) as f32;
    }
    let a = a
        .into_shape_with_order(IxDyn(&dims))
        .expect("invariant: same shape");
    let nv = g.add_initializer(Tensor::from_f32(&name, &a));
    g.set_input(r.node, 1, Some(nv));
}

/// Whether only the group reads its input (so the producer may change).
fn exclusive(g: &Graph, grp: &Group) -> bool {
    let readers: Vec<NodeId> = grp.readers.iter().map(|r| r.node).collect();
    g.user_nodes(grp.x).iter().all(|u| readers.contains(u))
        && !g.is_graph_output(grp.x)
        && !g.has_implicit_uses(grp.x)
}

/// A float constant with one value per channel, or a scalar.
fn channel_const(g: &Graph, v: ValueId, channels: usize) -> Option<Vec<f32>> {
    let t = g.constant(v)?;
    if t.dtype() != DataType::Float as i32 {
        return None;
    }
    let a = t.to_f32().ok()?;
    let n = a.len();
    if n == 1 && t.dims().len() <= 1 {
        return Some(vec![a.iter().copied().next()?; channels]);
    }
    (t.dims() == [channels as i64]).then(|| a.iter().copied().collect())
}

/// Replaces input `slot` of `n` by a new `[channels]` constant.
fn set_channel_const(g: &mut Graph, n: NodeId, slot: usize, base: &str, vals: Vec<f32>) {
    let a = ArrayD::from_shape_vec(IxDyn(&[vals.len()]), vals).expect("invariant: 1-D");
    let v = g.add_initializer(Tensor::from_f32(&format!("{base}_smooth"), &a));
    g.set_input(n, slot, Some(v));
}

/// Folds `1/s` into the op producing the group's input when only the
/// group reads it and the op is per-channel linear in a constant: a
/// LayerNormalization over the last axis (its scale and bias divided) or
/// a Mul/Div by a scalar or `[K]` constant (the constant scaled; GELU's
/// closing `Mul(·, 0.5)`). False when it cannot.
fn fold_into_producer(g: &mut Graph, grp: &Group, inv: &[f32]) -> bool {
    if !exclusive(g, grp) {
        return false;
    }
    let p = g.producer(grp.x);
    let node = g.node(p);
    if node.output() != grp.x
        || node
            .outputs()
            .iter()
            .skip(1)
            .flatten()
            .any(|&v| g.is_used(v))
    {
        return false;
    }
    let k = grp.channels;
    match node.op_type() {
        "LayerNormalization" => {
            let last_axis = match node.attr_i("axis").unwrap_or(-1) {
                -1 => true,
                a => g
                    .static_shape(grp.x)
                    .is_some_and(|s| a >= 0 && a as usize + 1 == s.len()),
            };
            let params: Vec<(usize, ValueId)> = (1..3)
                .filter_map(|i| node.input(i).map(|v| (i, v)))
                .collect();
            let vals: Option<Vec<Vec<f32>>> = params
                .iter()
                .map(|&(_, v)| {
                    let t = g.constant(v)?;
                    (t.dims() == [k as i64])
                        .then(|| channel_const(g, v, k))
                        .flatten()
                })
                .collect();
            let Some(vals) = vals.filter(|_| last_axis && !params.is_empty()) else {
                return false;
            };
            for ((slot, v), vals) in params.into_iter().zip(vals) {
                let base = g.name(v).to_string();
                let scaled = vals.iter().zip(inv).map(|(&x, &d)| x * d).collect();
                set_channel_const(g, p, slot, &base, scaled);
            }
            true
        }
        "Mul" | "Div" => {
            let div = node.is("Div");
            let ins: Vec<Option<ValueId>> = node.inputs().to_vec();
            // Div folds only its divisor; Mul either operand.
            let slots: &[usize] = if div { &[1] } else { &[1, 0] };
            for &slot in slots {
                let (Some(c), Some(other)) = (ins[slot], ins[1 - slot]) else {
                    continue;
                };
                if g.constant(other).is_some() || g.static_shape(other) != g.static_shape(grp.x) {
                    continue;
                }
                let Some(vals) = channel_const(g, c, k) else {
                    continue;
                };
                let base = g.name(c).to_string();
                let scaled = vals
                    .iter()
                    .zip(inv)
                    .map(|(&x, &d)| if div { x / d } else { x * d })
                    .collect();
                set_channel_const(g, p, slot, &base, scaled);
                return true;
            }
            false
        }
        _ => false,
    }
}

/// Feeds the group `X · (1/s)` from a new Mul after the producer; returns
/// the Mul.
fn insert_mul(g: &mut Graph, grp: &Group, inv: &[f32]) -> NodeId {
    let xname = g.name(grp.x).to_string();
    let a = ArrayD::from_shape_vec(IxDyn(&[grp.channels]), inv.to_vec())
        .expect("invariant: one per channel");
    let sv = g.add_initializer(Tensor::from_f32(&format!("{xname}_smooth_scale"), &a));
    let at = At::After(g.producer(grp.x));
    let (mul, outs) = g.add_op(
        super::node_proto("Mul", vec![]),
        &[Some(grp.x), Some(sv)],
        &[&format!("{xname}_smooth")],
        at,
    );
    let y = outs[0];
    if let Some(ty) = g.value_type(grp.x) {
        g.set_value_info(
            y,
            Some(crate::proto::ValueInfoProto {
                r#type: Some(ty),
                ..Default::default()
            }),
        );
    }
    for r in &grp.readers {
        g.set_input(r.node, 0, Some(y));
    }
    mul
}

impl Pass for SmoothQuant {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let stats = cx
            .analyses
            .stats
            .clone()
            .ok_or_else(|| PassError::Precondition {
                pass: NAME.into(),
                message: "no calibration statistics: run `calibrate` first".into(),
            })?;
        let mut groups = groups(m, &stats);
        groups.retain(|grp| !self.opts.skip.iter().any(|s| s == m.graph.name(grp.x)));
        let (mut folded, mut muls, mut readers) = (0usize, 0usize, 0usize);
        for grp in &groups {
            let g = &mut m.graph;
            let act = &stats.means[g.name(grp.x)].absmax;
            let mut wmax = vec![0f64; grp.channels];
            for r in &grp.readers {
                for (a, b) in wmax.iter_mut().zip(row_max(g, r)) {
                    *a = a.max(b);
                }
            }
            let s = factors(act, &wmax, self.opts.alpha);
            let inv: Vec<f32> = s.iter().map(|&v| (1.0 / v) as f32).collect();
            for r in &grp.readers {
                scale_weight(g, r, &s);
            }
            readers += grp.readers.len();
            if fold_into_producer(g, grp, &inv) {
                // The value now holds X/s: a new name, so that statistics
                // of X and of X/s never mix.
                let name = g.fresh_name(&format!("{}_smooth", g.name(grp.x)));
                g.rename(grp.x, &name);
                folded += 1;
            } else {
                let mul = insert_mul(g, grp, &inv);
                cx.analyses.float_readers.insert(g.label(mul).to_string());
                muls += 1;
            }
        }
        if groups.is_empty() {
            return Ok(Changed::No);
        }
        // The smoothed graph's activations differ: what was measured on
        // the old one must not be folded into ranges for the new one.
        cx.analyses.stats = None;
        cx.analyses.holdout_stats = None;
        cx.analyses.act_params = None;
        cx.remark(
            NAME,
            "<model>",
            format!(
                "smoothed the inputs of {readers} MatMul/Gemm ({} activations, alpha {}): {folded} folded into the op before them, {muls} through a new Mul",
                groups.len(),
                self.opts.alpha
            ),
        );
        Ok(Changed::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::factors;

    #[test]
    fn factors_balance_ranges_and_stay_bounded() {
        // alpha 0.5: s = sqrt(a / w), so a/s = w·s = sqrt(a·w).
        let s = factors(&[16.0, 1.0, 0.0, 1e30], &[1.0, 4.0, 1.0, 1.0], 0.5);
        assert!((s[0] - 4.0).abs() < 1e-12 && (s[1] - 0.5).abs() < 1e-12);
        assert_eq!(s[2], 1.0, "a dead channel is left alone");
        assert_eq!(s[3], super::MAX_FACTOR, "factors are bounded");
    }
}
