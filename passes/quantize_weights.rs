//! `quantize-weights`: weight-only quantization of MatMul/Gemm weights —
//! int8 per channel, or int8/int4 in blocks along K — with activations
//! left in float (`onnxq quantize --mode weights`).
//!
//! # What
//! Where calibration data is scarce or a model's bytes are its weights (a
//! transformer's projections), only the weights are quantized. A constant
//! `W[K, N]` read by a MatMul (or a Gemm; one read transposed is stored
//! `[K, N]` and the Gemm's `transB` cleared) becomes integer codes with a
//! scale (and zero point unless `symmetric`) per column or per block of
//! `block-size` rows of a column ([`crate::quant::blockwise`]: each
//! block's clip searched to lower its rounding error). With
//! `method=gptq` the codes are chosen by GPTQ (Frantar et al., ICLR 2023)
//! from the second moment of the inputs the layer sees on calibration
//! samples, on the same grids.
//!
//! Two forms:
//! * `format=qdq` (default): `DequantizeLinear(W_q, scale, zp) → MatMul`,
//!   blocked (`axis=0, block_size`) or per channel (`axis=1`). 4-bit codes
//!   and blocks need opset 21. onnxruntime fuses a blocked DQ → MatMul
//!   into `MatMulNBits` with int8 compute (3.5× float at M=1, 1.4× at M=64
//!   on this machine's kind, `../shared/RUNTIMES.md`).
//! * `format=qoperator`: `com.microsoft.MatMulNBits` with
//!   `accuracy_level=4` (without it onnxruntime computes in float, no
//!   faster than the float model), at any opset; blocks only.
//!
//! # Example
//! ```text
//! before:  Y = MatMul (X, W)                      W: float[K, N]
//! after:   W_dq = DequantizeLinear <axis: 0, block_size: 32> (W_q, W_scale, W_zp)
//!          Y = MatMul (X, W_dq)                   W_q: uint4[K, N], W_scale: float[K/32, N]
//! ```
//!
//! # Options
//! * `bits` (8): 8 or 4.
//! * `block-size` (0): values per block along K, a power of two ≥ 16;
//!   0 is one scale per output channel (qdq only).
//! * `symmetric` (false): signed codes with zero point 0; otherwise
//!   unsigned codes with a zero point per block.
//! * `format` (`qdq`): `qdq` or `qoperator`.
//! * `method` (`nearest`): `nearest` or `gptq` (needs calibration data).
//! * `samples` (32): calibration samples GPTQ measures.
//! * `min-elements` (4096): smaller weights stay float.
//! * `exclude`: node labels (glob `*`) to leave alone.
//!
//! # Preconditions
//! `format=qdq`: opset ≥ 21 for 4-bit codes or blocks, ≥ 13 otherwise
//! (`upgrade-opset{min=21}` first). `method=gptq`: calibration data.
//!
//! # Numerics
//! The dequantized weight is `(q − zp)·scale` in f32, what both runtimes
//! compute. Deterministic: every block's search and GPTQ's sums run in a
//! fixed order.
//!
//! # Errors
//! Bad options; unmet preconditions.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::round_weights::{second_moments, Layer};
use super::{int_attr, node_proto as op, Changed, Pass, PassContext, PassError};
use crate::ir::{At, Graph, Model, NodeId, Tensor, ValueId};
use crate::plan::glob_match;
use crate::proto::tensor_proto::DataType;
use crate::quant::blockwise::{self, Blocked, Spec};

const NAME: &str = "quantize-weights";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub bits: u32,
    pub block_size: usize,
    pub symmetric: bool,
    pub format: String,
    pub method: String,
    pub samples: usize,
    pub min_elements: usize,
    pub exclude: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bits: 8,
            block_size: 0,
            symmetric: false,
            format: "qdq".into(),
            method: "nearest".into(),
            samples: 32,
            min_elements: 4096,
            exclude: vec![],
        }
    }
}

impl Options {
    fn spec(&self) -> Spec {
        Spec {
            bits: self.bits,
            block: self.block_size,
            symmetric: self.symmetric,
        }
    }

    fn qoperator(&self) -> bool {
        self.format == "qoperator"
    }

    /// The opset the DequantizeLinear form needs.
    pub fn min_opset(&self) -> i64 {
        if self.bits == 4 || self.block_size > 0 {
            21
        } else {
            13
        }
    }

    /// What the weights become, for messages.
    pub fn describe(&self) -> String {
        let kind = if self.symmetric { "signed" } else { "unsigned" };
        let layout = if self.block_size == 0 {
            "per output channel".to_string()
        } else {
            format!("in blocks of {}", self.block_size)
        };
        format!("{}-bit {kind} {layout}", self.bits)
    }
}

pub struct QuantizeWeights {
    opts: Options,
}

impl QuantizeWeights {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        let bad = super::options_error(NAME);
        if !matches!(opts.bits, 4 | 8) {
            return Err(bad(format!("bits={}: expected 4 or 8", opts.bits)));
        }
        if opts.block_size != 0 && (opts.block_size < 16 || !opts.block_size.is_power_of_two()) {
            return Err(bad(format!(
                "block-size={}: expected 0 (per channel) or a power of two of at least 16 (onnxruntime's MatMulNBits kernels need one)",
                opts.block_size
            )));
        }
        if !matches!(opts.format.as_str(), "qdq" | "qoperator") {
            return Err(bad(format!(
                "format='{}': expected qdq or qoperator",
                opts.format
            )));
        }
        if opts.qoperator() && opts.block_size == 0 {
            return Err(bad(
                "format=qoperator writes MatMulNBits, which quantizes in blocks: give block-size (e.g. 32)".into(),
            ));
        }
        if !matches!(opts.method.as_str(), "nearest" | "gptq") {
            return Err(bad(format!(
                "method='{}': expected nearest or gptq",
                opts.method
            )));
        }
        if opts.samples == 0 {
            return Err(bad("samples must be at least 1".into()));
        }
        Ok(QuantizeWeights { opts })
    }
}

/// A weight to quantize and the nodes reading it.
struct Candidate {
    weight: ValueId,
    /// Readers: (node, the weight is read transposed `[N, K]`).
    readers: Vec<(NodeId, bool)>,
    k: usize,
    n: usize,
}

impl Pass for QuantizeWeights {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let o = &self.opts;
        if !o.qoperator() {
            let have = m.opset("").unwrap_or(1);
            if have < o.min_opset() {
                return Err(PassError::Precondition {
                    pass: NAME.into(),
                    message: format!(
                        "{} weights in DequantizeLinear need opset {}, the model has {have}: run upgrade-opset{{min={}}} first, or use format=qoperator (MatMulNBits, any opset)",
                        o.describe(),
                        o.min_opset(),
                        o.min_opset()
                    ),
                });
            }
        }
        let (cands, skipped) = candidates(&m.graph, o);
        for (label, why) in &skipped {
            cx.detail(NAME, label, format!("stays float: {why}"));
        }
        if cands.is_empty() {
            cx.remark(
                NAME,
                "<model>",
                "no MatMul/Gemm reads a constant float weight large enough to quantize".to_string(),
            );
            return Ok(Changed::No);
        }
        let spec = o.spec();
        let threads = cx.inputs().calib_options.threads.max(1);
        // Nearest rounding reads one weight per worker at a time, so a
        // model's float weights never sit in memory together (a 3 GB model
        // would need them all twice); GPTQ keeps them, as it revisits each
        // with its layer's calibration inputs.
        let kept: Option<Vec<Vec<f32>>> = if o.method == "gptq" {
            Some(
                cands
                    .iter()
                    .map(|c| weight_kn(&m.graph, c))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        };
        let graph = &m.graph;
        let rounded: Vec<(Blocked, f64, f64)> =
            crate::runtime::par_map(cands.len(), threads, |i| {
                let c = &cands[i];
                let owned;
                let w: &[f32] = match &kept {
                    Some(ws) => &ws[i],
                    None => {
                        owned = weight_kn(graph, c)?;
                        &owned
                    }
                };
                let q = blockwise::quantize_nearest(w, c.k, c.n, spec, true);
                let energy: f64 = w.iter().map(|&x| (x as f64).powi(2)).sum();
                let err = q.squared_error(w);
                Ok::<_, PassError>((q, energy, err))
            })?;
        let mut quant: Vec<Blocked> = Vec::with_capacity(rounded.len());
        let mut errors: Vec<(f64, f64)> = Vec::with_capacity(rounded.len());
        for (q, energy, err) in rounded {
            quant.push(q);
            errors.push((energy, err));
        }
        let mut learned: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
        if let Some(weights) = &kept {
            learned = self.gptq(m, cx, &cands, weights, &mut quant)?;
            for &i in learned.keys() {
                errors[i].1 = quant[i].squared_error(&weights[i]);
            }
        }
        let g = &mut m.graph;
        let (mut before, mut after) = (0usize, 0usize);
        for (i, (c, q)) in cands.iter().zip(&quant).enumerate() {
            let label = g.label(c.readers[0].0).to_string();
            let (energy, err) = errors[i];
            let sqnr = 10.0 * (energy / err.max(f64::MIN_POSITIVE)).log10();
            let mut msg = format!("{} weight, SQNR {sqnr:.1} dB", o.describe());
            if let Some((near, err)) = learned.get(&i) {
                msg.push_str(&format!(
                    "; GPTQ: output rounding error on calibration inputs {:.2} dB lower than nearest",
                    10.0 * (near / err.max(f64::MIN_POSITIVE)).log10()
                ));
            }
            cx.detail(NAME, &label, msg);
            before += c.k * c.n * 4;
            after += if o.qoperator() {
                rewrite_nbits(g, c, q)
            } else {
                rewrite_dq(g, c, q)
            };
        }
        if o.qoperator() {
            m.set_opset(
                "com.microsoft",
                m.opset("com.microsoft").unwrap_or(1).max(1),
            );
        }
        cx.remark(
            NAME,
            "<model>",
            format!(
                "{} MatMul/Gemm weights stored as {} ({}): {before} -> {after} bytes{}",
                cands.len(),
                o.describe(),
                if o.qoperator() {
                    "MatMulNBits, accuracy level 4"
                } else {
                    "DequantizeLinear"
                },
                if learned.is_empty() {
                    String::new()
                } else {
                    format!("; GPTQ rounding on {} of them", learned.len())
                }
            ),
        );
        Ok(Changed::Yes)
    }
}

impl QuantizeWeights {
    /// Replaces the codes of `quant` by GPTQ's where they lower the output
    /// error; returns, per candidate learned, the error energy of nearest
    /// and of learned rounding.
    fn gptq(
        &self,
        m: &Model,
        cx: &mut PassContext,
        cands: &[Candidate],
        weights: &[Vec<f32>],
        quant: &mut [Blocked],
    ) -> Result<BTreeMap<usize, (f64, f64)>, PassError> {
        let Some(data) = cx.inputs().calib_data.clone() else {
            return Err(PassError::Precondition {
                pass: NAME.into(),
                message: "method=gptq learns from the inputs each layer sees: pass calibration data (--calib DIR), or use method=nearest".into(),
            });
        };
        let g = &m.graph;
        // One layer per reader; H of a shared weight sums its readers'.
        let mut layers = Vec::new();
        let mut owner = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            if c.k > super::round_weights::MAX_K {
                continue;
            }
            for &(n, _) in &c.readers {
                let Some(x) = g.node(n).input(0) else {
                    continue;
                };
                layers.push(Layer::dense(n, x, c.weight, c.k));
                owner.push(i);
            }
        }
        let samples = data.len().min(self.opts.samples);
        let bar = crate::calib::progress_bar(
            (layers.len() + samples) as u64,
            "GPTQ weights",
            cx.inputs().calib_options.progress,
        );
        let hs = second_moments(m, cx, &data, &layers, samples, &bar, NAME)?;
        let mut h_of: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for (j, h) in hs.into_iter().enumerate() {
            let Some((h, rows)) = h else { continue };
            let i = owner[j];
            let k = cands[i].k;
            // Fewer rows than inputs leave H singular: it would fit those
            // rows, not the layer's inputs.
            if rows < k {
                continue;
            }
            let acc = h_of.entry(i).or_insert_with(|| vec![0f64; k * k]);
            for (a, b) in acc.iter_mut().zip(&h) {
                *a += b / rows as f64;
            }
        }
        let threads = cx.inputs().calib_options.threads.max(1);
        let items: Vec<(usize, &Vec<f64>)> = h_of.iter().map(|(&i, h)| (i, h)).collect();
        let results = crate::runtime::par_map(items.len(), threads, |j| {
            let (i, h) = items[j];
            let r = blockwise::quantize_gptq(&weights[i], &quant[i], h);
            bar.inc(1);
            Ok::<_, PassError>(r)
        })?;
        bar.finish_and_clear();
        let mut out = BTreeMap::new();
        for ((i, _), r) in items.iter().zip(results) {
            if let Some((q, near, err)) = r {
                if err < near {
                    quant[*i] = q;
                    out.insert(*i, (near, err));
                }
            }
        }
        Ok(out)
    }
}

/// The weights this pass quantizes, and why other MatMul/Gemm weights
/// stay float (by reader label).
fn candidates(g: &Graph, o: &Options) -> (Vec<Candidate>, Vec<(String, String)>) {
    let mut by_weight: BTreeMap<ValueId, Vec<(NodeId, bool)>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for n in g.ops() {
        let node = g.node(n);
        if !node.domain().is_empty() || !(node.is("MatMul") || node.is("Gemm")) {
            continue;
        }
        let label = g.label(n).to_string();
        if o.exclude.iter().any(|p| glob_match(p, &label)) {
            skipped.push((label, "excluded".into()));
            continue;
        }
        let Some(w) = node.input(1) else { continue };
        let Some(t) = g.constant(w) else { continue };
        if t.dtype() != DataType::Float as i32 || t.dims().len() != 2 {
            continue;
        }
        if node.input(0).is_some_and(|x| g.constant(x).is_some()) {
            continue;
        }
        let transposed = node.is("Gemm") && node.attr_i("transB").unwrap_or(0) != 0;
        if node.is("Gemm") {
            if node.attr_i("transA").unwrap_or(0) != 0 {
                skipped.push((label, "Gemm with transA".into()));
                continue;
            }
            if o.qoperator() && !gemm_as_bias(g, n) {
                skipped.push((
                    label,
                    "MatMulNBits takes a Gemm only with alpha = beta = 1 and a constant bias of shape [N]".into(),
                ));
                continue;
            }
        }
        if (t.len()) < o.min_elements {
            skipped.push((
                label,
                format!(
                    "{} elements, under min-elements={}",
                    t.len(),
                    o.min_elements
                ),
            ));
            continue;
        }
        by_weight.entry(w).or_default().push((n, transposed));
    }
    let mut out = Vec::new();
    for (w, readers) in by_weight {
        let t = g.constant(w).expect("invariant: checked above");
        let d = t.dims();
        let transposed = readers[0].1;
        if readers.iter().any(|r| r.1 != transposed) || g.users(w).len() != readers.len() {
            for (n, _) in &readers {
                skipped.push((
                    g.label(*n).to_string(),
                    "its weight is also read elsewhere or in another orientation".into(),
                ));
            }
            continue;
        }
        let (k, n) = if transposed {
            (d[1] as usize, d[0] as usize)
        } else {
            (d[0] as usize, d[1] as usize)
        };
        if k < 16 {
            for (r, _) in &readers {
                skipped.push((
                    g.label(*r).to_string(),
                    format!("K = {k}: under 16 values per output column"),
                ));
            }
            continue;
        }
        out.push(Candidate {
            weight: w,
            readers,
            k,
            n,
        });
    }
    (out, skipped)
}

/// Whether Gemm `n` is `A·B + C` with C absent or a constant `[N]`.
fn gemm_as_bias(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if node.attr_f("alpha").unwrap_or(1.0) != 1.0 {
        return false;
    }
    match node.input(2) {
        None => true,
        Some(c) => {
            node.attr_f("beta").unwrap_or(1.0) == 1.0
                && g.constant(c)
                    .is_some_and(|t| t.dims().len() == 1 && t.dtype() == DataType::Float as i32)
        }
    }
}

/// The candidate's weight as `[K, N]`, row-major.
fn weight_kn(g: &Graph, c: &Candidate) -> Result<Vec<f32>, PassError> {
    let t = g
        .constant(c.weight)
        .expect("invariant: a candidate's weight");
    let a = t.to_f32().map_err(|e| PassError::Failed {
        pass: NAME.into(),
        message: e.to_string(),
    })?;
    let v: Vec<f32> = a.iter().copied().collect();
    if !c.readers[0].1 {
        return Ok(v);
    }
    let (k, n) = (c.k, c.n);
    let mut out = vec![0f32; k * n];
    for r in 0..n {
        for kk in 0..k {
            out[kk * n + r] = v[r * k + kk];
        }
    }
    Ok(out)
}

fn f32_tensor(name: &str, dims: &[usize], v: Vec<f32>) -> Tensor {
    let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(dims), v)
        .expect("invariant: data matches its dims");
    Tensor::from_f32(name, &a)
}

/// Codes as an ONNX tensor of `bits` (signed or not), `[dims]`.
fn code_tensor(name: &str, dims: &[usize], codes: &[i32], bits: u32, signed: bool) -> Tensor {
    let d: Vec<i64> = dims.iter().map(|&x| x as i64).collect();
    let (dtype, raw) = match (bits, signed) {
        (4, true) => (DataType::Int4, blockwise::pack4(codes.iter().copied())),
        (4, false) => (DataType::Uint4, blockwise::pack4(codes.iter().copied())),
        (_, true) => (
            DataType::Int8,
            codes.iter().map(|&c| c as i8 as u8).collect(),
        ),
        (_, false) => (DataType::Uint8, codes.iter().map(|&c| c as u8).collect()),
    };
    Tensor::from_raw(name, dtype as i32, &d, Bytes::from(raw))
}

/// `DequantizeLinear → reader`; returns the bytes the weight now takes.
fn rewrite_dq(g: &mut Graph, c: &Candidate, q: &Blocked) -> usize {
    let spec = q.spec;
    let wname = g.name(c.weight).to_string();
    let (k, n) = (c.k, c.n);
    let nb = spec.blocks(k);
    let codes = code_tensor(
        &format!("{wname}_q"),
        &[k, n],
        &q.codes,
        spec.bits,
        spec.symmetric,
    );
    let mut bytes = codes.nbytes();
    let per_channel = spec.block == 0;
    let sdims: Vec<usize> = if per_channel { vec![n] } else { vec![nb, n] };
    let scales = f32_tensor(
        &format!("{wname}_scale"),
        &sdims,
        q.grids.iter().map(|g| g.scale).collect(),
    );
    bytes += scales.nbytes();
    let xq = g.add_initializer(codes);
    let xs = g.add_initializer(scales);
    let mut inputs = vec![Some(xq), Some(xs)];
    if !spec.symmetric {
        let zps: Vec<i32> = q.grids.iter().map(|g| g.zero_point).collect();
        let z = code_tensor(
            &format!("{wname}_zero_point"),
            &sdims,
            &zps,
            spec.bits,
            false,
        );
        bytes += z.nbytes();
        inputs.push(Some(g.add_initializer(z)));
    }
    let mut attrs = vec![int_attr("axis", if per_channel { 1 } else { 0 })];
    if !per_channel {
        attrs.push(int_attr("block_size", spec.block as i64));
    }
    let first = c.readers[0].0;
    let (_, dq) = g.add_op(
        op("DequantizeLinear", attrs),
        &inputs,
        &[&format!("{wname}_dq")],
        At::Before(first),
    );
    for &(r, transposed) in &c.readers {
        g.set_input(r, 1, Some(dq[0]));
        if transposed {
            let p = g.op_mut(r);
            p.attribute.retain(|a| a.name() != "transB");
        }
    }
    bytes
}

/// `com.microsoft.MatMulNBits` in place of each reader; returns the bytes
/// the weight now takes.
fn rewrite_nbits(g: &mut Graph, c: &Candidate, q: &Blocked) -> usize {
    let spec = q.spec;
    let wname = g.name(c.weight).to_string();
    let (k, n) = (c.k, c.n);
    let bl = spec.block;
    let nb = spec.blocks(k);
    let blob = bl * spec.bits as usize / 8;
    // Unsigned codes: a symmetric code c is stored c + 2^(bits-1), the
    // kernel's default zero point.
    let shift = if spec.symmetric {
        1i32 << (spec.bits - 1)
    } else {
        0
    };
    let mut b = Vec::with_capacity(n * nb * blob);
    for col in 0..n {
        for blk in 0..nb {
            let vals = (0..bl).map(|i| {
                let r = blk * bl + i;
                if r < k {
                    q.codes[r * n + col] + shift
                } else {
                    0
                }
            });
            if spec.bits == 4 {
                b.extend(blockwise::pack4(vals));
            } else {
                b.extend(vals.map(|v| v as u8));
            }
        }
    }
    let bt = Tensor::from_raw(
        &format!("{wname}_nbits"),
        DataType::Uint8 as i32,
        &[n as i64, nb as i64, blob as i64],
        Bytes::from(b),
    );
    let mut scales = vec![0f32; n * nb];
    let mut zps = vec![0i32; n * nb];
    for blk in 0..nb {
        for col in 0..n {
            let gr = &q.grids[blk * n + col];
            scales[col * nb + blk] = gr.scale;
            zps[col * nb + blk] = gr.zero_point;
        }
    }
    let st = f32_tensor(&format!("{wname}_scale"), &[n, nb], scales);
    let mut bytes = bt.nbytes() + st.nbytes();
    let bv = g.add_initializer(bt);
    let sv = g.add_initializer(st);
    let zv = if spec.symmetric {
        None
    } else {
        let raw: Vec<u8> = if spec.bits == 4 {
            (0..n)
                .flat_map(|col| blockwise::pack4(zps[col * nb..(col + 1) * nb].iter().copied()))
                .collect()
        } else {
            zps.iter().map(|&z| z as u8).collect()
        };
        let per_row = if spec.bits == 4 { nb.div_ceil(2) } else { nb };
        let zt = Tensor::from_raw(
            &format!("{wname}_zero_point"),
            DataType::Uint8 as i32,
            &[n as i64, per_row as i64],
            Bytes::from(raw),
        );
        bytes += zt.nbytes();
        Some(g.add_initializer(zt))
    };
    for &(r, _) in &c.readers {
        let node = g.node(r);
        let a = node.input(0);
        let bias = if node.is("Gemm") { node.input(2) } else { None };
        let y = node.output();
        let base = g.name(y).to_string();
        let mut p = op(
            "MatMulNBits",
            vec![
                int_attr("K", k as i64),
                int_attr("N", n as i64),
                int_attr("bits", spec.bits as i64),
                int_attr("block_size", bl as i64),
                int_attr("accuracy_level", 4),
            ],
        );
        p.domain = Some("com.microsoft".into());
        let (mm, out) = g.add_op(
            p,
            &[a, Some(bv), Some(sv), zv, None, bias],
            &[&format!("{base}_nbits")],
            At::Before(r),
        );
        g.take_label(r, mm);
        g.replace_value(y, out[0]);
        g.remove_node(r);
    }
    bytes
}
