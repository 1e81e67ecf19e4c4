//! `convert-float`: float32 to float16 (or bfloat16) — compute and weights,
//! or weights only — keeping in float32 what would overflow.
//!
//! # What
//! GPUs run fp16 at twice the float32 rate; CPUs mostly do not, but every
//! runtime reads fp16 weights. Two forms:
//! * full (default): every op of the default domain that reads or makes
//!   float32 computes in float16; its float weights are stored as float16.
//!   With calibration data, every float tensor's largest magnitude is
//!   measured first (the model run on the samples), and an op that reads
//!   or makes a float value past [`OVERFLOW`] (half of fp16's 65504: a
//!   norm's sum of squares, a Softmax's logits, an Exp, a −3.4e38 mask
//!   constant, which is checked without data too) stays float32, with
//!   Casts at the edges of each float32 region. Graph inputs and outputs keep float32
//!   (`keep-io`), through Casts.
//! * `storage-only`: only the weights are stored as float16, each read
//!   through a `Cast` back to float32, so the model computes as before (at
//!   float speed in onnxruntime, which folds the Cast at load) from a file
//!   half the size.
//!
//! What does not change type: `Gemm` (tract 0.23.9 cannot load a float16
//! one), ops of other domains, ops holding subgraphs,
//! quantized ops (their scales are float32 by definition), random
//! generators and `EyeLike` (their `dtype` attribute), `NonMaxSuppression`
//! (float only), and the float32-only operands of ops that keep them:
//! `Resize`'s and `Upsample`'s scales. Casts to float become casts to
//! float16, and float `Constant`/`ConstantOfShape` values float16.
//!
//! # Example
//! ```text
//! before:  Y = MatMul (X, W)                          W: float[4, 4]
//! after:   X_f16 = Cast <to: FLOAT16> (X)
//!          Y_f16 = MatMul (X_f16, W)                  W: float16[4, 4]
//!          Y = Cast <to: FLOAT> (Y_f16)
//! ```
//!
//! # Options
//! * `to` (`f16`): `f16`, or `bf16` (storage only: onnxruntime's CPU
//!   provider has no bfloat16 kernels for most ops).
//! * `keep-io` (true): graph inputs and outputs stay float32.
//! * `storage-only` (false): see above.
//! * `min-elements` (16): smaller weights stay float32 in `storage-only`
//!   (a Cast costs more than their bytes save).
//! * `samples` (8): calibration samples measured for the overflow check.
//! * `exclude`: node labels or op types (glob `*`) to keep in float32.
//!
//! # Preconditions
//! Element types of the values known (`shape-inference`); an op whose
//! output type is unknown stays float32.
//!
//! # Numerics
//! Float16 keeps 11 significant bits: weights and activations round to a
//! relative 2⁻¹¹. `storage-only` changes only the weights' rounding.
//!
//! # Errors
//! Bad options; the model failing to run on the calibration data.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{int_attr, node_proto as op, Changed, Pass, PassContext, PassError};
use crate::ir::{At, Graph, Model, NodeId, Tensor, ValueId};
use crate::plan::glob_match;
use crate::proto::tensor_proto::DataType;
use crate::proto::{type_proto, TypeProto};

const NAME: &str = "convert-float";

/// Largest magnitude an fp16 region may see on calibration data: half of
/// fp16's largest finite value (65504), as headroom for samples beyond the
/// calibration set.
pub const OVERFLOW: f32 = 32752.0;

const F32: i32 = DataType::Float as i32;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub to: String,
    pub keep_io: bool,
    pub storage_only: bool,
    pub min_elements: usize,
    pub samples: usize,
    pub exclude: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            to: "f16".into(),
            keep_io: true,
            storage_only: false,
            min_elements: 16,
            samples: 8,
            exclude: vec![],
        }
    }
}

pub struct ConvertFloat {
    opts: Options,
}

impl ConvertFloat {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        let bad = super::options_error(NAME);
        match opts.to.as_str() {
            "f16" => {}
            "bf16" if opts.storage_only => {}
            "bf16" => {
                return Err(bad(
                    "to=bf16 computes in bfloat16, which onnxruntime's CPU provider has no kernels for: use storage-only=true (bfloat16 weights, float32 compute) or to=f16".into(),
                ))
            }
            t => return Err(bad(format!("to='{t}': expected f16 or bf16"))),
        }
        if opts.samples == 0 {
            return Err(bad("samples must be at least 1".into()));
        }
        Ok(ConvertFloat { opts })
    }

    fn half(&self) -> i32 {
        if self.opts.to == "bf16" {
            DataType::Bfloat16 as i32
        } else {
            DataType::Float16 as i32
        }
    }
}

/// `t` (float32) as float16/bfloat16 bytes, named `name`.
fn to_half(t: &Tensor, name: &str, half: i32) -> Option<Tensor> {
    let v = t.to_f32().ok()?;
    let raw: Vec<u8> = if half == DataType::Bfloat16 as i32 {
        v.iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect()
    } else {
        v.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    };
    Some(Tensor::from_raw(name, half, t.dims(), Bytes::from(raw)))
}

/// `ty` with its element type replaced.
fn with_elem(mut ty: TypeProto, elem: i32) -> TypeProto {
    if let Some(type_proto::Value::TensorType(t)) = &mut ty.value {
        t.elem_type = Some(elem);
    }
    ty
}

/// Operands that stay float32 whatever the op computes in.
fn f32_only(op: &str, slot: usize) -> bool {
    matches!((op, slot), ("Resize", 2) | ("Upsample", 1))
}

/// Ops that keep float32. Gemm: tract 0.23.9 types a float16 Gemm's
/// output as float32 and refuses the model ("Output mismatch after
/// rewiring expansion"), so validation could not run it.
fn stays_f32(op: &str) -> bool {
    matches!(
        op,
        "Gemm"
            | "QuantizeLinear"
            | "DequantizeLinear"
            | "DynamicQuantizeLinear"
            | "QLinearConv"
            | "QLinearMatMul"
            | "MatMulInteger"
            | "ConvInteger"
            | "RandomNormal"
            | "RandomUniform"
            | "RandomNormalLike"
            | "RandomUniformLike"
            | "Bernoulli"
            | "Multinomial"
            | "EyeLike"
            | "NonMaxSuppression"
    )
}

impl Pass for ConvertFloat {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        if self.opts.storage_only {
            return Ok(self.storage_only(m, cx));
        }
        let peaks = self.peaks(m, cx)?;
        let half = self.half();
        let g = &mut m.graph;
        // Which ops compute in half precision.
        let mut kept_hot: Vec<(String, String, f32)> = Vec::new();
        let mut constant_peaks: BTreeMap<ValueId, Option<f32>> = BTreeMap::new();
        let mut convert: BTreeSet<NodeId> = BTreeSet::new();
        for n in g.ops() {
            let node = g.node(n);
            let label = g.label(n).to_string();
            if !node.domain().is_empty()
                || node.has_subgraphs()
                || stays_f32(node.op_type())
                || self
                    .opts
                    .exclude
                    .iter()
                    .any(|p| glob_match(p, &label) || glob_match(p, node.op_type()))
            {
                continue;
            }
            // A Constant spelled with value_float(s) makes float32 whatever
            // its output is declared as.
            if node.op_type() == "Constant" && node.attr("value").is_none() {
                continue;
            }
            let outs: Vec<ValueId> = node.outputs().iter().flatten().copied().collect();
            // An output of unknown type could be float: the op keeps float32.
            if outs.iter().any(|&v| g.elem_type(v) == 0) {
                continue;
            }
            let touches_float = outs.iter().any(|&v| g.elem_type(v) == F32)
                || node
                    .inputs()
                    .iter()
                    .flatten()
                    .any(|&v| g.elem_type(v) == F32);
            if !touches_float {
                continue;
            }
            // Reading or making a value past fp16's range keeps the op
            // float32 (a Cast to fp16 before it would overflow too).
            let hot = outs
                .iter()
                .chain(node.inputs().iter().flatten())
                .filter(|&&v| g.elem_type(v) == F32)
                .filter_map(|&v| {
                    let p = match peaks.get(g.name(v)) {
                        Some(&p) => Some(p),
                        None => constant_peak(g, v, &mut constant_peaks),
                    };
                    p.map(|p| (v, p))
                })
                .find(|&(_, p)| p.is_nan() || p > OVERFLOW);
            if let Some((v, p)) = hot {
                kept_hot.push((label, g.name(v).to_string(), p));
                continue;
            }
            convert.insert(n);
        }
        if convert.is_empty() {
            cx.remark(NAME, "<model>", "no op converted".to_string());
            return Ok(Changed::No);
        }
        // Every value's type after conversion: a converted op's float
        // outputs become half; a float initializer whose readers all want
        // half becomes half in place.
        let wants_half = |g: &Graph, n: NodeId, slot: usize| -> bool {
            convert.contains(&n) && !f32_only(g.node(n).op_type(), slot)
        };
        let mut half_values: BTreeSet<ValueId> = BTreeSet::new();
        for &n in &convert {
            for &v in g.node(n).outputs().iter().flatten() {
                if g.elem_type(v) == F32 {
                    half_values.insert(v);
                }
            }
        }
        let mut weights = 0usize;
        for init in g.initializer_nodes() {
            let v = g.node(init).output();
            if g.elem_type(v) != F32 || !g.output_ports(v).is_empty() {
                continue;
            }
            let users = g.users(v);
            let all_half = !users.is_empty()
                && users.iter().all(|&(n, s)| match s {
                    crate::ir::Slot::Input(i) => wants_half(g, n, i as usize),
                    crate::ir::Slot::Implicit => false,
                });
            if !all_half {
                continue;
            }
            let t = g.constant(v).expect("invariant: an initializer");
            if let Some(h) = to_half(t, g.name(v), half) {
                g.set_initializer(v, h);
                half_values.insert(v);
                weights += 1;
            }
        }
        if !self.opts.keep_io {
            for i in 0..g.inputs().len() {
                let v = g.inputs()[i].value;
                if g.elem_type(v) == F32 {
                    let ty = g.inputs()[i]
                        .info
                        .r#type
                        .clone()
                        .map(|t| with_elem(t, half));
                    g.set_input_type(i, ty);
                    half_values.insert(v);
                }
            }
        }
        // Casts where a value's type and its reader's differ (one per value
        // and direction).
        let mut casts: BTreeMap<(ValueId, bool), ValueId> = BTreeMap::new();
        let mut cast_count = 0;
        for n in g.topo_order() {
            if g.node(n).op().is_none() {
                continue;
            }
            let ins: Vec<(usize, ValueId)> = g
                .node(n)
                .inputs()
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .collect();
            for (slot, v) in ins {
                if g.elem_type(v) != F32 && !half_values.contains(&v) {
                    continue;
                }
                let is_half = half_values.contains(&v);
                let want = wants_half(g, n, slot);
                if want == is_half {
                    continue;
                }
                let c = match casts.get(&(v, want)) {
                    Some(&c) => c,
                    None => {
                        let suffix = if want { "f16" } else { "f32" };
                        let to = if want { half as i64 } else { F32 as i64 };
                        let name = format!("{}_{suffix}", g.name(v));
                        let (_, out) = g.add_op(
                            op("Cast", vec![int_attr("to", to)]),
                            &[Some(v)],
                            &[&name],
                            At::Before(n),
                        );
                        if want {
                            half_values.insert(out[0]);
                        }
                        casts.insert((v, want), out[0]);
                        cast_count += 1;
                        out[0]
                    }
                };
                g.set_input(n, slot, Some(c));
            }
        }
        // Attributes that name float32.
        for &n in &convert {
            rewrite_attrs(g, n, half);
        }
        // Graph outputs: back to float32 under their names (keep-io).
        for i in 0..g.outputs().len() {
            let v = g.outputs()[i].value;
            if !half_values.contains(&v) {
                continue;
            }
            if self.opts.keep_io {
                let name = format!("{}_f32", g.name(v));
                let (_, out) = g.add_op(
                    op("Cast", vec![int_attr("to", F32 as i64)]),
                    &[Some(v)],
                    &[&name],
                    At::End,
                );
                g.redirect_output(i, out[0]);
                cast_count += 1;
            } else {
                let ty = g.outputs()[i]
                    .info
                    .r#type
                    .clone()
                    .map(|t| with_elem(t, half));
                g.set_output_type(i, ty);
            }
        }
        // Declared types of the values now half.
        for &v in &half_values {
            if let Some(info) = g.value(v).info().cloned() {
                let mut info = info;
                info.r#type = info.r#type.map(|t| with_elem(t, half));
                g.set_value_info(v, Some(info));
            }
        }
        for (label, tensor, peak) in &kept_hot {
            cx.remark(
                NAME,
                label,
                format!("stays float32: '{tensor}' reaches {peak:.3e} on the calibration data, past fp16's safe range ({OVERFLOW})"),
            );
        }
        cx.remark(
            NAME,
            "<model>",
            format!(
                "{} ops compute in {}, {} weights stored so; {} ops kept float32 for range, {} Casts inserted{}",
                convert.len(),
                self.opts.to,
                weights,
                kept_hot.len(),
                cast_count,
                if peaks.is_empty() {
                    " (no calibration data: ranges not checked, an overflow past 65504 would give inf)"
                } else {
                    ""
                }
            ),
        );
        Ok(Changed::Yes)
    }
}

impl ConvertFloat {
    /// The largest magnitude of every float tensor over the first
    /// `samples` calibration samples (non-finite values count as
    /// infinite); empty without calibration data.
    fn peaks(&self, m: &Model, cx: &PassContext) -> Result<BTreeMap<String, f32>, PassError> {
        let Some(data) = cx.inputs().calib_data.as_ref() else {
            return Ok(BTreeMap::new());
        };
        let g = &m.graph;
        let mut names: Vec<String> = g
            .ops()
            .into_iter()
            .flat_map(|n| {
                g.node(n)
                    .outputs()
                    .iter()
                    .flatten()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .filter(|&v| g.elem_type(v) == F32)
            .map(|v| g.name(v).to_string())
            .collect();
        names.sort();
        names.dedup();
        let data = data.take(self.opts.samples);
        let opts = crate::calib::CalibOptions {
            input_shapes: cx.inputs().input_shapes.clone(),
            histograms: false,
            hash_data: false,
            keep_outputs: 0,
            holdout: 0,
            ..cx.inputs().calib_options.clone()
        };
        let (stats, _) =
            crate::calib::calibrate(m, String::new(), &data, &names, &opts).map_err(|e| {
                PassError::Failed {
                    pass: NAME.into(),
                    message: e.to_string(),
                }
            })?;
        Ok(stats
            .tensors
            .iter()
            .map(|(k, h)| {
                let p = if h.non_finite > 0 {
                    f32::INFINITY
                } else {
                    h.min.abs().max(h.max.abs())
                };
                (k.clone(), p)
            })
            .collect())
    }

    /// Float weights stored as half, each read through a Cast to float32.
    fn storage_only(&self, m: &mut Model, cx: &mut PassContext) -> Changed {
        let half = self.half();
        let g = &mut m.graph;
        let (mut count, mut before, mut after) = (0usize, 0usize, 0usize);
        for init in g.initializer_nodes() {
            let v = g.node(init).output();
            let Some(t) = g.constant(v) else { continue };
            let elems: i64 = t.dims().iter().product();
            let users = g.users(v);
            if t.dtype() != F32
                || (elems as usize) < self.opts.min_elements
                || users.is_empty()
                || !g.output_ports(v).is_empty()
                || users.iter().any(|(n, s)| {
                    matches!(s, crate::ir::Slot::Implicit)
                        || self.opts.exclude.iter().any(|p| {
                            glob_match(p, g.label(*n)) || glob_match(p, g.node(*n).op_type())
                        })
                })
            {
                continue;
            }
            let name = g.name(v).to_string();
            let Some(h) = to_half(t, &format!("{name}_{}", self.opts.to), half) else {
                continue;
            };
            before += elems as usize * 4;
            after += elems as usize * 2;
            let hv = g.add_initializer(h);
            let first = users
                .iter()
                .map(|(n, _)| *n)
                .min()
                .expect("invariant: read");
            let (_, out) = g.add_op(
                op("Cast", vec![int_attr("to", F32 as i64)]),
                &[Some(hv)],
                &[&format!("{name}_f32")],
                At::Before(first),
            );
            g.replace_all_uses(v, out[0]);
            count += 1;
        }
        cx.remark(
            NAME,
            "<model>",
            format!(
                "{count} weights stored as {} and cast to float32 where read: {before} -> {after} bytes",
                self.opts.to
            ),
        );
        Changed::from_bool(count > 0)
    }
}

/// The largest magnitude of a float constant (infinite when it holds a
/// non-finite value), cached; `None` for a value that is not a constant.
fn constant_peak(g: &Graph, v: ValueId, cache: &mut BTreeMap<ValueId, Option<f32>>) -> Option<f32> {
    *cache.entry(v).or_insert_with(|| {
        let t = g.constant(v)?.to_f32().ok()?;
        Some(t.iter().fold(0f32, |m, &x| {
            if x.is_finite() {
                m.max(x.abs())
            } else {
                f32::INFINITY
            }
        }))
    })
}

/// A converted op's attributes that say float32: Cast's target, a
/// Constant's or ConstantOfShape's value.
fn rewrite_attrs(g: &mut Graph, n: NodeId, half: i32) {
    let p = g.op_mut(n);
    let op = p.op_type().to_string();
    for a in &mut p.attribute {
        match (op.as_str(), a.name()) {
            ("Cast", "to") if a.i == Some(F32 as i64) => a.i = Some(half as i64),
            ("Constant" | "ConstantOfShape", "value") => {
                if let Some(t) = a.t.as_mut() {
                    if t.data_type == Some(F32) {
                        let wrapped = Tensor::from_proto(t.clone());
                        if let Some(h) = to_half(&wrapped, t.name(), half) {
                            *t = h.proto().clone();
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
