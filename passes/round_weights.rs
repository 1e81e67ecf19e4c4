//! `round-weights`: learns how each Conv/Gemm/MatMul weight rounds to its
//! int8 codes from the inputs the layer sees, instead of rounding every
//! value to its nearest code (`--rounding adaptive`).
//!
//! # What
//! Nearest rounding makes each weight as close as it can be, but the
//! errors of a row add up in the layer's output. Rounding one weight up
//! and a correlated neighbour down cancels much of it. For every weight
//! `insert-qdq` will quantize, the pass measures the second moment
//! `H = E[x·xᵀ]` of the layer's input rows `x` (Conv: the input patches
//! one output position reads, per group; Gemm/MatMul: the input rows) in
//! the float model on calibration samples, and rounds with GPTQ
//! ([`crate::quant::gptq`]): the output error `tr((W − Q)·H·(W − Q)ᵀ)`
//! goes down, the scales and the file's form stay the same. A layer whose
//! learned rounding does not lower that error keeps nearest rounding.
//!
//! # Example
//! ```text
//! before:  W = [0.149, 0.149]  x ≈ (a, a)   nearest: [0.1, 0.1]   y error −0.098·a
//! after:   W = [0.149, 0.149]               learned: [0.2, 0.1]   y error +0.002·a
//! ```
//!
//! # Options
//! The placement options of the `insert-qdq` that follows (`weights`,
//! `per-channel`, `reduce-range`, `target`, `exclude`, `op-types`): the
//! codes are learned on the grids it will use, and it uses them only
//! where its grids agree. `samples`: calibration samples measured (32).
//!
//! # Preconditions
//! Calibration data (`--calib`).
//!
//! # Memory and time
//! Inputs are not kept: each sample's layer inputs are captured, folded
//! into the `H` of their layers and dropped. Layers are measured in
//! batches whose `H` ([`H_BYTES`]) and captured inputs ([`CAPTURE_BYTES`])
//! fit; a layer reading more than [`MAX_K`] values per output is left to
//! nearest rounding. Each `H` takes a bounded number of input rows
//! ([`rows`]), spread evenly over the samples and positions.
//!
//! # Numerics
//! Deterministic: every `H` sums its samples in order, each on one thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::context::RoundedWeight;
use super::insert_qdq::{InsertQdq, QWeight};
use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, ValueId};
use crate::quant::gptq::{self, Grid};
use crate::runtime::RunnerCache;
use crate::tensorio::HostTensor;

const NAME: &str = "round-weights";

/// Bytes of second-moment matrices held at once.
pub const H_BYTES: usize = 512 << 20;
/// Bytes of one sample's captured layer inputs held at once.
pub const CAPTURE_BYTES: usize = 256 << 20;
/// Widest layer input row (values per output) learned; wider layers keep
/// nearest rounding (their `H` alone would take `8·K²` bytes).
pub const MAX_K: usize = 6144;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub per_channel: bool,
    pub weights: String,
    pub reduce_range: bool,
    pub exclude: Vec<String>,
    pub op_types: Vec<String>,
    pub target: String,
    pub samples: usize,
}

impl Default for Options {
    fn default() -> Self {
        let d = super::insert_qdq::Options::default();
        Options {
            per_channel: d.per_channel,
            weights: d.weights,
            reduce_range: d.reduce_range,
            exclude: d.exclude,
            op_types: d.op_types,
            target: d.target,
            samples: 32,
        }
    }
}

pub struct RoundWeights {
    opts: Options,
    insert: InsertQdq,
}

impl RoundWeights {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        Self::new(opts)
    }

    pub fn new(opts: Options) -> Result<Self, PassError> {
        if opts.samples == 0 {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: "samples must be at least 1".into(),
            });
        }
        let insert = InsertQdq::new(super::insert_qdq::Options {
            per_channel: opts.per_channel,
            weights: opts.weights.clone(),
            reduce_range: opts.reduce_range,
            exclude: opts.exclude.clone(),
            op_types: opts.op_types.clone(),
            target: opts.target.clone(),
            ..Default::default()
        })
        .map_err(|e| match e {
            PassError::Options { message, .. } => PassError::Options {
                pass: NAME.into(),
                message,
            },
            e => e,
        })?;
        Ok(RoundWeights { opts, insert })
    }
}

/// How a layer reads its input: the rows `x` its weight rows multiply.
#[derive(Clone, Debug)]
pub(crate) enum Reads {
    /// Conv: patches of `kernel` taps (per input channel of a group).
    Conv {
        groups: usize,
        cin_g: usize,
        kernel: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads_begin: Vec<usize>,
        pads_end: Vec<usize>,
    },
    /// Gemm/MatMul: the last axis of the input; the weight is `[K, N]`
    /// (`transposed`: `[N, K]`).
    Dense { transposed: bool },
}

/// One weight to learn: its layer, input, grid and row layout.
pub(crate) struct Layer {
    node: NodeId,
    input: ValueId,
    weight: ValueId,
    reads: Reads,
    /// Values per weight row (per output, within its group).
    k: usize,
    /// Groups, each with its own `H`.
    groups: usize,
}

impl Layer {
    /// A Gemm/MatMul reading the last axis (`k` values) of `input` with
    /// weight `weight`.
    pub(crate) fn dense(node: NodeId, input: ValueId, weight: ValueId, k: usize) -> Layer {
        Layer {
            node,
            input,
            weight,
            reads: Reads::Dense { transposed: false },
            k,
            groups: 1,
        }
    }

    fn h_bytes(&self) -> usize {
        self.groups * self.k * self.k * 8
    }
}

impl Pass for RoundWeights {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let Some(data) = cx.inputs().calib_data.clone() else {
            return Err(PassError::Precondition {
                pass: NAME.into(),
                message: "learned rounding needs calibration data: pass --calib".into(),
            });
        };
        let sel = crate::plan::Selection {
            op_types: self.opts.op_types.clone(),
            exclude: self.opts.exclude.clone(),
            coverage: cx.analyses.compute.clone(),
            coverage_why: cx.analyses.compute_why.clone(),
            target: crate::target::Target::parse(&self.opts.target).unwrap_or_default(),
            float_readers: cx.analyses.float_readers.clone(),
            ..Default::default()
        };
        let placement = crate::plan::plan(m, &sel, self.opts.per_channel);
        let grids = self
            .insert
            .weight_scales(&m.graph, &placement, crate::quant::QType::U8)?;
        let g = &m.graph;
        let mut uses: BTreeMap<ValueId, usize> = BTreeMap::new();
        for w in &placement.weights {
            *uses.entry(w.value).or_default() += 1;
        }
        let mut layers = Vec::new();
        let mut too_wide = Vec::new();
        for w in &placement.weights {
            if w.slot != 1 || w.as_activation || uses[&w.value] != 1 {
                continue;
            }
            let Some(qw) = grids.get(&(w.value, w.axis)) else {
                continue;
            };
            let Some(l) = layer(g, w.node, w.value, qw) else {
                continue;
            };
            if l.k > MAX_K || l.h_bytes() > H_BYTES {
                too_wide.push(g.label(w.node).to_string());
                continue;
            }
            layers.push(l);
        }
        if layers.is_empty() {
            cx.remark(
                NAME,
                "<model>",
                "no Conv/Gemm/MatMul weight to learn the rounding of".to_string(),
            );
            return Ok(Changed::No);
        }
        let samples = data.len().min(self.opts.samples);
        let threads = cx.inputs().calib_options.threads.max(1);
        let progress = cx.inputs().calib_options.progress;
        let bar = crate::calib::progress_bar(
            (batches(g, &layers).len() * samples + layers.len()) as u64,
            "learned rounding",
            progress,
        );
        let hs = second_moments(m, cx, &data, &layers, samples, &bar, NAME)?;
        let results = crate::runtime::par_map(layers.len(), threads, |i| {
            let l = &layers[i];
            let qw = grids
                .iter()
                .find(|((v, _), _)| *v == l.weight)
                .map(|(_, q)| q)
                .expect("invariant: layers come from the grids");
            // Fewer input rows than inputs per output leave H singular:
            // the rounding would fit those rows, not the layer's inputs.
            let out = match &hs[i] {
                Some((h, n)) if *n >= l.k => Some(Ok(learn(l, qw, h))),
                Some((_, n)) => Some(Err(*n)),
                None => None,
            };
            bar.inc(1);
            Ok::<_, PassError>(out)
        })?;
        bar.finish_and_clear();
        let mut learned = 0usize;
        let mut few_rows: Vec<String> = Vec::new();
        let (mut before, mut after) = (0f64, 0f64);
        for (l, r) in layers.iter().zip(results) {
            let label = g.label(l.node).to_string();
            let (w, nearest, err) = match r {
                Some(Ok(Some(x))) => x,
                Some(Err(n)) => {
                    few_rows.push(format!("{label} ({n} rows for {} inputs)", l.k));
                    continue;
                }
                _ => {
                    cx.detail(NAME, &label, "nearest rounding: the layer's input carried no energy on the calibration samples".to_string());
                    continue;
                }
            };
            before += nearest;
            after += err;
            if err < nearest {
                learned += 1;
                cx.detail(
                    NAME,
                    &label,
                    format!(
                        "learned rounding: output error of the rounding on calibration inputs {:.2} dB lower than nearest",
                        10.0 * (nearest / err.max(f64::MIN_POSITIVE)).log10()
                    ),
                );
                cx.analyses.rounded.insert(g.name(l.weight).to_string(), w);
            } else {
                cx.detail(
                    NAME,
                    &label,
                    "nearest rounding: learned rounding did not lower the output error".to_string(),
                );
            }
        }
        let mut msg = format!(
            "learned rounding on {learned} of {} weights ({} samples): their output rounding error {:.2} dB lower in total",
            layers.len(),
            samples,
            if after > 0.0 { 10.0 * (before / after).log10() } else { 0.0 }
        );
        if !few_rows.is_empty() {
            msg.push_str(&format!(
                "; {} keep nearest, their input seen on fewer rows than it has values (more calibration samples would let them learn): {}",
                few_rows.len(),
                few_rows.join(", ")
            ));
        }
        if !too_wide.is_empty() {
            msg.push_str(&format!(
                "; {} too wide to learn (more than {MAX_K} inputs per output) keep nearest: {}",
                too_wide.len(),
                too_wide.join(", ")
            ));
        }
        cx.remark(NAME, "<model>", msg);
        Ok(Changed::No)
    }
}

/// A layer's input second moment `Σ x xᵀ` (`K × K`, row-major) and the
/// rows it sums.
pub(crate) type Moment = (Vec<f64>, usize);

/// The second moments `H = Σ x·xᵀ` of every layer's input rows (per group,
/// concatenated) in the float model `m` on the first `samples` calibration
/// samples, each with the number of rows it sums; `None` where the input
/// was never captured. Layers are measured in batches that fit
/// [`H_BYTES`] and [`CAPTURE_BYTES`]; `bar` advances once per sample run.
pub(crate) fn second_moments(
    m: &Model,
    cx: &PassContext,
    data: &crate::calib::data::DataSet,
    layers: &[Layer],
    samples: usize,
    bar: &crate::calib::progress::Progress,
    pass: &str,
) -> Result<Vec<Option<Moment>>, PassError> {
    let g = &m.graph;
    let threads = cx.inputs().calib_options.threads.max(1);
    let specs = crate::calib::data::input_specs(m);
    let shapes = cx.inputs().input_shapes.clone();
    let batches = batches(g, layers);
    let mut hs: Vec<Option<(Vec<f64>, usize)>> = (0..layers.len()).map(|_| None).collect();
    for batch in &batches {
        let wanted: BTreeSet<String> = batch
            .iter()
            .map(|&i| g.name(layers[i].input).to_string())
            .collect();
        let capture = RunnerCache::new(m, wanted.iter().cloned().collect());
        let acc: Vec<Mutex<Vec<Array2<f64>>>> = batch
            .iter()
            .map(|&i| {
                let l = &layers[i];
                Mutex::new((0..l.groups).map(|_| Array2::zeros((l.k, l.k))).collect())
            })
            .collect();
        let rows_seen: Vec<Mutex<usize>> = batch.iter().map(|_| Mutex::new(0)).collect();
        for s in 0..samples {
            let x = data
                .load(s, &specs, &shapes)
                .map_err(|e| PassError::Failed {
                    pass: pass.into(),
                    message: e.to_string(),
                })?;
            let out = capture.run(&x).map_err(|e| PassError::Failed {
                pass: pass.into(),
                message: format!("a calibration run failed: {e}"),
            })?;
            let mut captured: BTreeMap<String, HostTensor> =
                out.into_iter().skip(g.outputs().len()).collect();
            for (name, t) in x {
                if wanted.contains(&name) {
                    captured.insert(name, t);
                }
            }
            crate::runtime::par_map(batch.len(), threads, |j| {
                let l = &layers[batch[j]];
                let Some(HostTensor::F32(t)) = captured.get(g.name(l.input)) else {
                    return Ok::<_, PassError>(());
                };
                let per_sample = rows(l.k).div_ceil(samples);
                let mut h = acc[j]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = accumulate(l, t.view(), per_sample, &mut h);
                *rows_seen[j]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) += n;
                Ok(())
            })?;
            bar.inc(1);
        }
        for ((j, h), n) in batch.iter().zip(acc).zip(rows_seen) {
            let h = h
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = n
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let flat: Vec<f64> = h
                .into_iter()
                .flat_map(|a| a.into_raw_vec_and_offset().0)
                .collect();
            hs[*j] = Some((flat, n));
        }
    }
    Ok(hs)
}

/// Input rows an `H` of width `k` is measured on in all.
pub fn rows(k: usize) -> usize {
    (8 * k).clamp(2048, 16384)
}

/// The layer `node` reading weight `w` (on grid `qw`), when its rows line
/// up with the grid's channels.
fn layer(g: &Graph, node: NodeId, w: ValueId, qw: &QWeight) -> Option<Layer> {
    let n = g.node(node);
    let input = n.input(0)?;
    if g.constant(input).is_some() || n.input(1) != Some(w) {
        return None;
    }
    let d = &qw.dims;
    match n.op_type() {
        "Conv" => {
            if d.len() < 3 || qw.axis.is_some_and(|a| a != 0) {
                return None;
            }
            let spatial = d.len() - 2;
            let groups = n.attr_i("group").unwrap_or(1).max(1) as usize;
            if !d[0].is_multiple_of(groups) {
                return None;
            }
            let ints = |name: &str, default: usize| -> Option<Vec<usize>> {
                match n.attr_ints(name) {
                    Some(v) if v.iter().all(|&x| x >= 0) => {
                        Some(v.iter().map(|&x| x as usize).collect())
                    }
                    Some(_) => None,
                    None => Some(vec![default; spatial]),
                }
            };
            let strides = ints("strides", 1)?;
            let dilations = ints("dilations", 1)?;
            let pads = match n.attr_ints("pads") {
                Some(p) if p.len() == 2 * spatial && p.iter().all(|&x| x >= 0) => {
                    p.iter().map(|&x| x as usize).collect()
                }
                Some(_) => return None,
                None => vec![0; 2 * spatial],
            };
            match n.attr_s("auto_pad").unwrap_or(b"NOTSET") {
                b"NOTSET" | b"" | b"VALID" => {}
                _ => return None,
            }
            if strides.len() != spatial || dilations.len() != spatial {
                return None;
            }
            let kernel = d[2..].to_vec();
            let cin_g = d[1];
            Some(Layer {
                node,
                input,
                weight: w,
                k: cin_g * kernel.iter().product::<usize>(),
                groups,
                reads: Reads::Conv {
                    groups,
                    cin_g,
                    kernel,
                    strides,
                    dilations,
                    pads_begin: pads[..spatial].to_vec(),
                    pads_end: pads[spatial..].to_vec(),
                },
            })
        }
        "Gemm" | "MatMul" => {
            if d.len() != 2 {
                return None;
            }
            let transposed = n.op_type() == "Gemm" && n.attr_i("transB").unwrap_or(0) != 0;
            if n.op_type() == "Gemm" && n.attr_i("transA").unwrap_or(0) != 0 {
                return None;
            }
            let out_axis = if transposed { 0 } else { 1 };
            if qw.axis.is_some_and(|a| a != out_axis) {
                return None;
            }
            Some(Layer {
                node,
                input,
                weight: w,
                k: d[1 - out_axis],
                groups: 1,
                reads: Reads::Dense { transposed },
            })
        }
        _ => None,
    }
}

/// Layers (indices) in batches whose `H` and one sample's captured inputs
/// fit the budgets.
fn batches(g: &Graph, layers: &[Layer]) -> Vec<Vec<usize>> {
    let bytes = |v: ValueId| -> usize {
        g.static_shape(v)
            .map(|s| s.iter().product::<usize>() * 4)
            .unwrap_or(1 << 20)
    };
    let mut out = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let (mut hb, mut cb) = (0usize, 0usize);
    let mut seen: BTreeSet<ValueId> = BTreeSet::new();
    for (i, l) in layers.iter().enumerate() {
        let add = if seen.contains(&l.input) {
            0
        } else {
            bytes(l.input)
        };
        if !cur.is_empty() && (hb + l.h_bytes() > H_BYTES || cb + add > CAPTURE_BYTES) {
            out.push(std::mem::take(&mut cur));
            seen.clear();
            hb = 0;
            cb = 0;
        }
        seen.insert(l.input);
        hb += l.h_bytes();
        cb += bytes(l.input);
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Folds up to `wanted` input rows of layer `l` from one captured input
/// `x` into its per-group `H`s (evenly spaced positions); returns how many.
fn accumulate(
    l: &Layer,
    x: ndarray::ArrayViewD<f32>,
    wanted: usize,
    h: &mut [Array2<f64>],
) -> usize {
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("invariant: standard layout");
    let shape = x.shape();
    match &l.reads {
        Reads::Dense { .. } => {
            let Some(&k) = shape.last() else { return 0 };
            if k != l.k || k == 0 {
                return 0;
            }
            let total = xs.len() / k;
            let take = wanted.min(total);
            if take == 0 {
                return 0;
            }
            let mut rows = Array2::<f64>::zeros((take, k));
            for (j, mut r) in rows.rows_mut().into_iter().enumerate() {
                let p = j * total / take;
                for (dst, &src) in r.iter_mut().zip(&xs[p * k..(p + 1) * k]) {
                    *dst = src as f64;
                }
            }
            h[0] += &rows.t().dot(&rows);
            take
        }
        Reads::Conv {
            groups,
            cin_g,
            kernel,
            strides,
            dilations,
            pads_begin,
            pads_end,
        } => {
            let spatial = kernel.len();
            if shape.len() != spatial + 2 || shape[1] != groups * cin_g {
                return 0;
            }
            let in_dims = &shape[2..];
            let mut out_dims = Vec::with_capacity(spatial);
            for a in 0..spatial {
                let span = dilations[a] * (kernel[a] - 1) + 1;
                let padded = in_dims[a] + pads_begin[a] + pads_end[a];
                if padded < span {
                    return 0;
                }
                out_dims.push((padded - span) / strides[a] + 1);
            }
            let per_image: usize = out_dims.iter().product();
            let total = shape[0] * per_image;
            let take = wanted.min(total);
            if take == 0 {
                return 0;
            }
            let taps: usize = kernel.iter().product();
            let in_plane: usize = in_dims.iter().product();
            let channels = shape[1];
            let mut rows: Vec<Array2<f64>> =
                (0..*groups).map(|_| Array2::zeros((take, l.k))).collect();
            let mut o = vec![0usize; spatial];
            let mut t = vec![0usize; spatial];
            for j in 0..take {
                let p = j * total / take;
                let (img, mut rest) = (p / per_image, p % per_image);
                for a in (0..spatial).rev() {
                    o[a] = rest % out_dims[a];
                    rest /= out_dims[a];
                }
                // Offsets (within a channel plane) of every tap, or none
                // where the tap falls in the padding.
                let mut offs: Vec<Option<usize>> = Vec::with_capacity(taps);
                for ti in 0..taps {
                    let mut r = ti;
                    for a in (0..spatial).rev() {
                        t[a] = r % kernel[a];
                        r /= kernel[a];
                    }
                    let mut off = 0usize;
                    let mut inside = true;
                    for a in 0..spatial {
                        let c = (o[a] * strides[a] + t[a] * dilations[a]) as isize
                            - pads_begin[a] as isize;
                        if c < 0 || c as usize >= in_dims[a] {
                            inside = false;
                            break;
                        }
                        off = off * in_dims[a] + c as usize;
                    }
                    offs.push(inside.then_some(off));
                }
                for (gi, r) in rows.iter_mut().enumerate() {
                    let mut row = r.row_mut(j);
                    for ci in 0..*cin_g {
                        let base = (img * channels + gi * cin_g + ci) * in_plane;
                        for (ti, off) in offs.iter().enumerate() {
                            if let Some(off) = off {
                                row[ci * taps + ti] = xs[base + off] as f64;
                            }
                        }
                    }
                }
            }
            for (hg, r) in h.iter_mut().zip(&rows) {
                *hg += &r.t().dot(r);
            }
            take
        }
    }
}

/// The learned grid values of layer `l`'s weight (in its layout) from
/// its per-group `H`s (`h`, concatenated), with the output rounding error
/// of nearest and of learned rounding summed over groups; `None` when no
/// group could be learned.
fn learn(l: &Layer, qw: &QWeight, h: &[f64]) -> Option<(RoundedWeight, f64, f64)> {
    let k = l.k;
    let grid = |c: usize| Grid {
        scale: if qw.scales.len() == 1 {
            qw.scales[0]
        } else {
            qw.scales[c]
        },
        zero_point: qw.zp,
        lo: qw.lo,
        hi: qw.hi,
    };
    let total_rows = qw.data.len() / k;
    let rows_per_group = total_rows / l.groups;
    // Rows (per output), each k long, in the weight's layout or transposed.
    let transposed_layout = matches!(l.reads, Reads::Dense { transposed: false });
    let matrix: Vec<f32> = if transposed_layout {
        // [K, N] → [N, K].
        let n = total_rows;
        let mut t = vec![0f32; qw.data.len()];
        for kk in 0..k {
            for c in 0..n {
                t[c * k + kk] = qw.data[kk * n + c];
            }
        }
        t
    } else {
        qw.data.clone()
    };
    let mut values = vec![0f32; matrix.len()];
    let (mut nearest, mut err) = (0f64, 0f64);
    let mut energy = false;
    for gi in 0..l.groups {
        let r0 = gi * rows_per_group;
        let w = &matrix[r0 * k..(r0 + rows_per_group) * k];
        let hg = &h[gi * k * k..(gi + 1) * k * k];
        let out = gptq::round(w, rows_per_group, k, hg, |r, _| grid(r0 + r));
        let dst = &mut values[r0 * k..(r0 + rows_per_group) * k];
        match out {
            Some(r) if r.error < r.nearest_error => {
                energy = true;
                nearest += r.nearest_error;
                err += r.error;
                for (i, (d, &q)) in dst.iter_mut().zip(&r.codes).enumerate() {
                    *d = crate::quant::dequantize(q, grid_affine(&grid(r0 + i / k)));
                }
            }
            other => {
                if let Some(r) = other {
                    energy = true;
                    nearest += r.nearest_error;
                    err += r.nearest_error;
                }
                for (i, (d, &x)) in dst.iter_mut().zip(w).enumerate() {
                    let a = grid_affine(&grid(r0 + i / k));
                    *d = crate::quant::dequantize(crate::quant::quantize(x, a, qw.lo, qw.hi), a);
                }
            }
        }
    }
    if !energy {
        return None;
    }
    let data = if transposed_layout {
        let n = total_rows;
        let mut t = vec![0f32; values.len()];
        for kk in 0..k {
            for c in 0..n {
                t[kk * n + c] = values[c * k + kk];
            }
        }
        t
    } else {
        values
    };
    Some((
        RoundedWeight {
            axis: qw.axis,
            scales: qw.scales.clone(),
            data,
        },
        nearest,
        err,
    ))
}

fn grid_affine(g: &Grid) -> crate::quant::Affine {
    crate::quant::Affine {
        scale: g.scale,
        zero_point: g.zero_point,
    }
}
