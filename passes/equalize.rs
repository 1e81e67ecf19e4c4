//! `equalize`: cross-layer equalization of consecutive weighted layers
//! (Nagel et al., "Data-Free Quantization Through Weight Equalization and
//! Bias Correction", ICCV 2019, section 4.1).
//!
//! # What
//! With one scale per weight tensor (what tract's integer kernels and many
//! NPUs require), a layer whose output channels have very different weight
//! ranges loses most channels to rounding: depthwise convolutions are the
//! classic case, where one channel's weights reach 50 and most stay below
//! one. When layer `A`'s output channel `i` feeds layer `B` only through
//! positively homogeneous ops (`f(s·x) = s·f(x)` for `s > 0`: Relu,
//! LeakyRelu, PRelu, max and average pooling, or nothing), dividing `A`'s
//! row `i` (and bias) by `s_i` and multiplying `B`'s input channel `i` by
//! `s_i` leaves the function unchanged. With
//! `s_i = sqrt(r1_i / r2_i)` (`r1_i`: the largest magnitude of `A`'s
//! output channel `i`, `r2_i`: of `B`'s input channel `i`) both become
//! `sqrt(r1_i·r2_i)`, which maximises the precision per-tensor
//! quantization leaves the two layers together. Chains (pointwise →
//! depthwise → pointwise) are swept until the factors settle.
//!
//! Pairs: `Conv → Conv` (any groups; the channel axis is 1 on both sides)
//! and `Gemm`/`MatMul → Gemm`/`MatMul` with constant 2-D weights (the
//! channel axis is the last). Every value between `A` and `B` is read once
//! and is not a graph output, so nothing else sees the rescaled channels.
//!
//! # Example
//! ```text
//! before:  H = Conv (X, W1, B1)     # row 0 of W1 reaches 8, row 1 0.5
//!          R = Relu (H)
//!          Y = Conv (R, W2)         # input channel 0 of W2 reaches 0.5, 1 reaches 8
//! after:   H = Conv (X, W1_eq, B1_eq)   # rows 0 and 1 both reach 2
//!          R = Relu (H)
//!          Y = Conv (R, W2_eq)          # input channels 0 and 1 both reach 2
//! ```
//!
//! # Options
//! * `sweeps` (default 20): the most passes over all pairs; the loop stops
//!   earlier once every factor of a sweep is within 0.1% of 1.
//!
//! # Preconditions
//! None. Weights must be float constants; anything else is left as it is.
//! Statistics already in the pipeline are dropped when anything changes
//! (the activations are rescaled): a `calibrate` must follow.
//!
//! # Numerics
//! Exact in real arithmetic; the weights are computed in f64 and rounded
//! once to f32. It changes which activations calibration sees (channels
//! are rescaled), so it runs before `calibrate`.
//!
//! # Errors
//! None.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, Tensor, ValueId};
use crate::proto::tensor_proto::DataType;

const NAME: &str = "equalize";

/// Factors are kept within this ratio of 1: a dead channel (all-zero
/// weights on one side) must not blow up the other side.
const MAX_FACTOR: f64 = 1e3;

/// A sweep whose factors all lie within `1 ± TOLERANCE` ends the loop.
const TOLERANCE: f64 = 1e-3;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub sweeps: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { sweeps: 20 }
    }
}

pub struct Equalize {
    opts: Options,
}

impl Equalize {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        if opts.sweeps == 0 {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: "sweeps must be at least 1".into(),
            });
        }
        Ok(Equalize { opts })
    }
}

/// How a weighted layer lays its channels out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `W[O, I/group, k…]`, channel axis 1 of its input and output.
    Conv { group: usize },
    /// `W[K, N]` (MatMul, Gemm) or `W[N, K]` (Gemm `transB`): channels on
    /// the last axis.
    Dense { transposed: bool },
}

/// A weighted layer's weight (and bias) as f64, rescaled in place and
/// written back once.
pub(crate) struct Layer {
    pub node: NodeId,
    pub layout: Layout,
    pub dims: Vec<usize>,
    pub w: Vec<f64>,
    /// The bias input (Conv slot 2, Gemm slot 2 as `[N]`), if any.
    pub bias: Option<Vec<f64>>,
    /// Whether the layer has a bias slot (Conv, Gemm) at all.
    pub has_bias_slot: bool,
}

impl Layer {
    /// The layer `n` if it is a Conv, Gemm or MatMul with a constant float
    /// weight this pass understands.
    pub(crate) fn read(g: &Graph, n: NodeId) -> Option<Layer> {
        let node = g.node(n);
        if !node.domain().is_empty() {
            return None;
        }
        let (layout, has_bias_slot) = match node.op_type() {
            "Conv" => (
                Layout::Conv {
                    group: node.attr_i("group").unwrap_or(1).max(1) as usize,
                },
                true,
            ),
            "Gemm" if node.attr_i("transA").unwrap_or(0) == 0 => (
                Layout::Dense {
                    transposed: node.attr_i("transB").unwrap_or(0) != 0,
                },
                true,
            ),
            "MatMul" => (Layout::Dense { transposed: false }, false),
            _ => return None,
        };
        let wv = node.input(1)?;
        if node.input(0) == Some(wv) {
            return None;
        }
        let t = g.constant(wv)?;
        if t.dtype() != DataType::Float as i32 {
            return None;
        }
        let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
        match layout {
            Layout::Conv { group } => {
                if dims.len() < 3 || dims[0] == 0 || !dims[0].is_multiple_of(group) {
                    return None;
                }
            }
            Layout::Dense { .. } => {
                if dims.len() != 2 {
                    return None;
                }
            }
        }
        let w: Vec<f64> = t.to_f32().ok()?.iter().map(|&x| x as f64).collect();
        let mut l = Layer {
            node: n,
            layout,
            dims,
            w,
            bias: None,
            has_bias_slot,
        };
        if has_bias_slot {
            if let Some(b) = node.input(2) {
                let t = g.constant(b)?;
                if t.dtype() != DataType::Float as i32 {
                    return None;
                }
                let vals: Vec<f64> = t.to_f32().ok()?.iter().map(|&x| x as f64).collect();
                let n_out = l.out_channels();
                l.bias = Some(match vals.len() {
                    // Gemm's C may be a scalar: one value for every column.
                    1 => vec![vals[0]; n_out],
                    k if k == n_out && t.dims().iter().filter(|&&d| d != 1).count() <= 1 => vals,
                    _ => return None,
                });
                // A Gemm's C broadcasts over the rows too: only a bias that
                // is one row ([N] or [1, N]) or a scalar is per column.
                if let Layout::Dense { .. } = l.layout {
                    let d = t.dims();
                    if d.len() > 2 || (d.len() == 2 && d[0] != 1) {
                        return None;
                    }
                }
            }
        }
        Some(l)
    }

    pub(crate) fn out_channels(&self) -> usize {
        match self.layout {
            Layout::Conv { .. } => self.dims[0],
            Layout::Dense { transposed } => self.dims[usize::from(!transposed)],
        }
    }

    pub(crate) fn in_channels(&self) -> usize {
        match self.layout {
            Layout::Conv { group } => self.dims[1] * group,
            Layout::Dense { transposed } => self.dims[usize::from(transposed)],
        }
    }

    /// Calls `f(channel, index)` for every weight entry, with the output
    /// channel (`out = true`) or the input channel it belongs to.
    fn for_each(&self, out: bool, mut f: impl FnMut(usize, usize)) {
        match self.layout {
            Layout::Conv { group } => {
                let o = self.dims[0];
                let ipg = self.dims[1];
                let per: usize = self.dims[2..].iter().product();
                let opg = o / group;
                for oc in 0..o {
                    for j in 0..ipg {
                        let ch = if out { oc } else { (oc / opg) * ipg + j };
                        let base = (oc * ipg + j) * per;
                        for k in 0..per {
                            f(ch, base + k);
                        }
                    }
                }
            }
            Layout::Dense { transposed } => {
                let (r, c) = (self.dims[0], self.dims[1]);
                for i in 0..r {
                    for j in 0..c {
                        // W[K, N]: row i is input channel i, column j output
                        // channel j; transposed W[N, K] the other way round.
                        let ch = match (out, transposed) {
                            (true, false) | (false, true) => j,
                            (false, false) | (true, true) => i,
                        };
                        f(ch, i * c + j);
                    }
                }
            }
        }
    }

    /// The largest weight magnitude per output (`out`) or input channel.
    pub(crate) fn absmax(&self, out: bool) -> Vec<f64> {
        let n = if out {
            self.out_channels()
        } else {
            self.in_channels()
        };
        let mut m = vec![0f64; n];
        self.for_each(out, |c, i| m[c] = m[c].max(self.w[i].abs()));
        m
    }

    /// Multiplies every output (`out`) or input channel `c` by `s[c]`; an
    /// output scaling scales the bias with it.
    pub(crate) fn scale(&mut self, out: bool, s: &[f64]) {
        let mut w = std::mem::take(&mut self.w);
        self.for_each(out, |c, i| w[i] *= s[c]);
        self.w = w;
        if out {
            if let Some(b) = &mut self.bias {
                for (b, &f) in b.iter_mut().zip(s) {
                    *b *= f;
                }
            }
        }
    }

    /// Per output channel: the sum of the weights reading input channel
    /// `c`, times `shift[c]` (what a constant shift of the input adds to
    /// every output when nothing pads it).
    pub(crate) fn shift_response(&self, shift: &[f64]) -> Vec<f64> {
        let mut out = vec![0f64; self.out_channels()];
        // Walk once by output channel and once by input channel: the two
        // channel indices of each entry.
        let mut outs = vec![0usize; self.w.len()];
        self.for_each(true, |c, i| outs[i] = c);
        self.for_each(false, |c, i| out[outs[i]] += self.w[i] * shift[c]);
        out
    }

    /// Writes the weight (and bias) back as new initializers named after
    /// the old ones with `suffix` (the old ones may have other readers).
    pub(crate) fn write(self, g: &mut Graph, suffix: &str) {
        self.store(g, suffix, true);
    }

    /// Writes only the bias back (the weight is unchanged).
    pub(crate) fn write_bias(self, g: &mut Graph, suffix: &str) {
        self.store(g, suffix, false);
    }

    fn store(self, g: &mut Graph, suffix: &str, weight: bool) {
        let node = g.node(self.node);
        let wv = node.input(1).expect("invariant: read from slot 1");
        let wname = g.name(wv).to_string();
        let bname = node
            .input(2)
            .map(|b| g.name(b).to_string())
            .unwrap_or_else(|| format!("{wname}_bias"));
        if weight {
            let w: Vec<f32> = self.w.iter().map(|&x| x as f32).collect();
            let wt = ArrayD::from_shape_vec(IxDyn(&self.dims), w).expect("invariant: same shape");
            let nv = g.add_initializer(Tensor::from_f32(
                &format!("{}{suffix}", wname.trim_end_matches(suffix)),
                &wt,
            ));
            g.set_input(self.node, 1, Some(nv));
        }
        if let Some(b) = self.bias {
            let n = b.len();
            let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            let bt = ArrayD::from_shape_vec(IxDyn(&[n]), b).expect("invariant: one per channel");
            let bv = g.add_initializer(Tensor::from_f32(
                &format!("{}{suffix}", bname.trim_end_matches(suffix)),
                &bt,
            ));
            g.set_input(self.node, 2, Some(bv));
        }
    }
}

/// Ops between `A` and `B` that commute with a positive per-channel scale
/// (`f(s·x) = s·f(x)`, channel by channel).
fn homogeneous(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if !node.domain().is_empty() {
        return false;
    }
    // Only the first output may be read (MaxPool's indices are not scaled).
    if node
        .outputs()
        .iter()
        .skip(1)
        .flatten()
        .any(|&v| g.is_used(v))
    {
        return false;
    }
    match node.op_type() {
        "Relu" | "LeakyRelu" | "PRelu" | "MaxPool" | "AveragePool" | "GlobalAveragePool"
        | "GlobalMaxPool" => true,
        // Clip(x, 0) with no upper bound is a Relu; any other bound is not
        // scale-invariant.
        "Clip" => {
            let lo_ok = match node.input(1) {
                None => node.attr_f("min").is_none_or(|m| m == 0.0),
                Some(v) => g
                    .constant(v)
                    .and_then(|t| t.to_f32().ok())
                    .is_some_and(|a| a.iter().all(|&x| x == 0.0)),
            };
            let hi_none = node.input(2).is_none() && node.attr_f("max").is_none();
            lo_ok && hi_none
        }
        _ => false,
    }
}

/// A pair: `b` reads `a`'s output channels through `via`.
pub(crate) struct Pair {
    pub a: NodeId,
    pub b: NodeId,
    pub via: Vec<NodeId>,
}

/// Whether `v` is read by exactly one node, once, as that node's data
/// input, and by nothing else (no graph output, no subgraph).
fn single_reader(g: &Graph, v: ValueId) -> Option<NodeId> {
    let users = g.users(v);
    if users.len() != 1 || g.is_graph_output(v) || g.has_implicit_uses(v) {
        return None;
    }
    let n = users[0].0;
    (g.node(n).input(0) == Some(v)).then_some(n)
}

/// The layer `b` that reads `a`'s output through homogeneous ops only, if
/// the channel axes agree.
pub(crate) fn follow(g: &Graph, a: NodeId, homogeneous_ok: bool) -> Option<Pair> {
    let la = Layer::read(g, a)?;
    let mut v = g.node(a).output();
    if g.node(a).outputs().len() > 1 {
        return None;
    }
    let mut via = vec![];
    loop {
        let n = single_reader(g, v)?;
        if let Some(lb) = Layer::read(g, n) {
            let same_axis = matches!(
                (la.layout, lb.layout),
                (Layout::Conv { .. }, Layout::Conv { .. })
                    | (Layout::Dense { .. }, Layout::Dense { .. })
            );
            if !same_axis || lb.in_channels() != la.out_channels() {
                return None;
            }
            return Some(Pair { a, b: n, via });
        }
        if !homogeneous_ok || !homogeneous(g, n) || via.len() >= 4 {
            return None;
        }
        // Pooling keeps the Conv layout; a Dense chain has no pooling.
        let pooling = g.node(n).op_type().contains("Pool");
        if pooling && !matches!(la.layout, Layout::Conv { .. }) {
            return None;
        }
        via.push(n);
        v = g.node(n).output();
    }
}

/// The equalization factors for `A`'s output ranges `r1` and `B`'s input
/// ranges `r2`: `s_i = sqrt(r1_i / r2_i)`, 1 for a dead channel.
pub(crate) fn factors(r1: &[f64], r2: &[f64]) -> Vec<f64> {
    r1.iter()
        .zip(r2)
        .map(|(&a, &b)| {
            if a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite() {
                (a / b).sqrt().clamp(1.0 / MAX_FACTOR, MAX_FACTOR)
            } else {
                1.0
            }
        })
        .collect()
}

/// The spread of a layer's channel ranges: its largest output-channel
/// magnitude over the median one (robust to a few dead channels).
fn spread(l: &Layer) -> f64 {
    let mut m: Vec<f64> = l.absmax(true).into_iter().filter(|&x| x > 0.0).collect();
    if m.is_empty() {
        return 1.0;
    }
    m.sort_by(f64::total_cmp);
    m[m.len() - 1] / m[(m.len() - 1) / 2]
}

impl Pass for Equalize {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let pairs: Vec<Pair> = g
            .topo_order()
            .into_iter()
            .filter_map(|n| follow(g, n, true))
            .collect();
        if pairs.is_empty() {
            return Ok(Changed::No);
        }
        let mut layers: BTreeMap<NodeId, Layer> = BTreeMap::new();
        for p in &pairs {
            for n in [p.a, p.b] {
                layers
                    .entry(n)
                    .or_insert_with(|| Layer::read(g, n).expect("invariant: read when paired"));
            }
        }
        let before: BTreeMap<NodeId, f64> = pairs
            .iter()
            .map(|p| (p.a, spread(&layers[&p.a]).ln()))
            .collect();
        // What each layer's channels were multiplied by in all: a layer
        // whose factors all stay within the tolerance of 1 is already
        // balanced and left as it is.
        let mut total: BTreeMap<NodeId, f64> = BTreeMap::new();
        let mut sweeps = 0;
        for _ in 0..self.opts.sweeps {
            sweeps += 1;
            let mut moved = 0f64;
            for p in &pairs {
                let r1 = layers[&p.a].absmax(true);
                let r2 = layers[&p.b].absmax(false);
                let s = factors(&r1, &r2);
                moved = s.iter().fold(moved, |m, &x| m.max((x - 1.0).abs()));
                let inv: Vec<f64> = s.iter().map(|&x| 1.0 / x).collect();
                let dev = s.iter().fold(0f64, |m, &x| m.max(x.ln().abs()));
                for n in [p.a, p.b] {
                    *total.entry(n).or_default() += dev;
                }
                layers.get_mut(&p.a).expect("invariant").scale(true, &inv);
                layers.get_mut(&p.b).expect("invariant").scale(false, &s);
            }
            if moved < TOLERANCE {
                break;
            }
        }
        let moved = |n: NodeId| total.get(&n).is_some_and(|&d| d > TOLERANCE);
        let pairs: Vec<Pair> = pairs
            .into_iter()
            .filter(|p| moved(p.a) || moved(p.b))
            .collect();
        if pairs.is_empty() {
            return Ok(Changed::No);
        }
        let mean = |f: &dyn Fn(&Pair) -> f64| pairs.iter().map(f).sum::<f64>() / pairs.len() as f64;
        let (before, after) = (
            mean(&|p| before[&p.a]),
            mean(&|p| spread(&layers[&p.a]).ln()),
        );
        for (n, l) in layers {
            if moved(n) {
                l.write(g, "_eq");
            }
        }
        // The tensors between the layers now hold rescaled channels: new
        // names, so that nothing compares them with the original model's.
        for p in &pairs {
            let mut vals = vec![g.node(p.a).output()];
            vals.extend(p.via.iter().map(|&n| g.node(n).output()));
            for v in vals {
                let name = g.fresh_name(&format!("{}_eq", g.name(v)));
                g.rename(v, &name);
            }
        }
        // The rescaled channels have new ranges: statistics measured before
        // must not be folded into ranges for them.
        cx.analyses.stats = None;
        cx.analyses.holdout_stats = None;
        cx.analyses.act_params = None;
        cx.remark(
            NAME,
            "<model>",
            format!(
                "equalized {} layer pairs in {sweeps} sweeps: a layer's largest output-channel weight range over its median went from {:.1}x to {:.1}x",
                pairs.len(),
                before.exp(),
                after.exp()
            ),
        );
        Ok(Changed::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::factors;

    #[test]
    fn factors_meet_in_the_geometric_mean() {
        let s = factors(&[8.0, 0.5, 0.0], &[0.5, 8.0, 1.0]);
        assert!((s[0] - 4.0).abs() < 1e-12 && (s[1] - 0.25).abs() < 1e-12);
        assert_eq!(s[2], 1.0, "a dead channel is left alone");
        // r1/s = r2·s = sqrt(r1·r2).
        assert!((8.0 / s[0] - 0.5 * s[0]).abs() < 1e-12);
    }
}
