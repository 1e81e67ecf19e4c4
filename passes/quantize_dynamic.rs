//! `quantize-dynamic`: int8 weights, activations quantized at run time.
//!
//! # What
//! Each MatMul (and Gemm without `transA`) whose second operand is a
//! constant 2-D weight `W[K,N]` becomes
//! `DynamicQuantizeLinear(X) → MatMulInteger(X_q, W_q, X_zp, W_zp) →
//! Cast(float) → Mul(X_scale · W_scale)` (then `+ beta·C` for a Gemm),
//! with `W` stored as symmetric int8, one scale per output column by
//! default. One DynamicQuantizeLinear serves every op reading the same
//! activation. This is onnxruntime's own dynamic form: its CPU provider
//! fuses the chain into `MatMulIntegerToFloat` / `DynamicQuantizeMatMul`
//! (u8 activations × s8 weights; `matmul_integer_to_float_fusion.cc`), 1.8–
//! 2.5× faster than float on transformer encoders on this project's
//! machine. Convolutions are left float: onnxruntime's `ConvInteger` is
//! 3.6× slower than float there.
//!
//! # Example
//! ```text
//! before:  Y = MatMul (X, W)
//! after:   X_q, X_scale, X_zp = DynamicQuantizeLinear (X)
//!          Y_i = MatMulInteger (X_q, W_q, X_zp, W_zp)
//!          Y_f = Cast <to: FLOAT> (Y_i)
//!          Y_s = Mul (X_scale, W_scale)
//!          Y = Mul (Y_f, Y_s)
//! ```
//!
//! # Options
//! * `per-channel` (default true): one weight scale per output column.
//! * `exclude`: node labels or op types (glob `*`) to keep float.
//! * `keep-float`: node labels kept float (what a fallback chose).
//! * `op-types` (default MatMul, Gemm): which ops to rewrite.
//!
//! # Preconditions
//! Default-domain opset ≥ 11 (DynamicQuantizeLinear); float32 activations.
//!
//! # Numerics
//! Weights round to int8 (per column); activations to u8 per tensor with
//! a range recomputed on every run, so no calibration is needed.
//!
//! # Errors
//! Opset below 11. The float weights left unused are removed by a `dce`
//! after it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{At, Graph, Model, NodeId, Tensor, ValueId};
use crate::plan::{glob_match, Decision};
use crate::proto::tensor_proto::DataType;

const NAME: &str = "quantize-dynamic";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub per_channel: bool,
    pub exclude: Vec<String>,
    pub keep_float: Vec<String>,
    pub op_types: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            per_channel: true,
            exclude: vec![],
            keep_float: vec![],
            op_types: vec!["MatMul".into(), "Gemm".into()],
        }
    }
}

pub struct QuantizeDynamic {
    opts: Options,
}

impl QuantizeDynamic {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        if let Some(bad) = opts
            .op_types
            .iter()
            .find(|t| !matches!(t.as_str(), "MatMul" | "Gemm"))
        {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!("op-types: '{bad}' cannot be quantized dynamically (MatMul, Gemm); convolutions stay float (onnxruntime's ConvInteger is slower than float)"),
            });
        }
        Ok(QuantizeDynamic { opts })
    }
}

use super::{int_attr, node_proto as op};

/// The constant weight of `n` as `[K, N]` floats, or why there is none.
fn weight(g: &Graph, n: NodeId) -> Result<(Vec<f32>, usize, usize), String> {
    let node = g.node(n);
    let w = node.input(1).ok_or("no second operand")?;
    let t = g
        .constant(w)
        .ok_or("the second operand is not a constant weight")?;
    if t.dtype() != DataType::Float as i32 {
        return Err("the weight is not float32".into());
    }
    let dims = t.dims().to_vec();
    if dims.len() != 2 {
        return Err(format!(
            "the weight has rank {} (2 is rewritten)",
            dims.len()
        ));
    }
    let a = t.to_f32().map_err(|e| e.to_string())?;
    let (r, c) = (dims[0] as usize, dims[1] as usize);
    let data: Vec<f32> = a.iter().copied().collect();
    if node.is("Gemm") {
        if node.attr_i("transA").unwrap_or(0) != 0 {
            return Err("Gemm with transA".into());
        }
        if node.attr_i("transB").unwrap_or(0) != 0 {
            // W = B^T: [c, r] stored as [K=c, N=r].
            let mut out = vec![0f32; r * c];
            for i in 0..r {
                for j in 0..c {
                    out[j * r + i] = data[i * c + j];
                }
            }
            return Ok((out, c, r));
        }
    }
    Ok((data, r, c))
}

impl Pass for QuantizeDynamic {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let opset = m.opset("").unwrap_or(1);
        if opset < 11 {
            return Err(PassError::Precondition {
                pass: NAME.into(),
                message: format!("default-domain opset {opset}: DynamicQuantizeLinear needs 11 or later; run upgrade-opset{{min=13}} first"),
            });
        }
        let g = &mut m.graph;
        let mut decisions = Vec::new();
        let mut shared: BTreeMap<ValueId, (ValueId, ValueId, ValueId)> = BTreeMap::new();
        let mut rewritten = 0usize;
        for n in g.ops() {
            let node = g.node(n);
            let op_type = node.op_type().to_string();
            if !node.domain().is_empty() || !matches!(op_type.as_str(), "MatMul" | "Gemm") {
                continue;
            }
            let label = g.label(n).to_string();
            let mut decide = |quantized: bool, why: String| {
                decisions.push(Decision {
                    node: label.clone(),
                    op: op_type.clone(),
                    quantized,
                    reason: why,
                })
            };
            if !self.opts.op_types.contains(&op_type) {
                decide(false, "op type not selected (op-types)".into());
                continue;
            }
            if let Some(p) = self
                .opts
                .exclude
                .iter()
                .find(|p| glob_match(p, &label) || glob_match(p, &op_type))
            {
                decide(false, format!("excluded by '{p}'"));
                continue;
            }
            if self.opts.keep_float.contains(&label) {
                decide(false, "kept in float by the fallback selection".into());
                continue;
            }
            let x = match node.input(0) {
                Some(x) if g.constant(x).is_none() && g.elem_type(x) == DataType::Float as i32 => x,
                _ => {
                    decide(
                        false,
                        "the first operand is not a float32 activation".into(),
                    );
                    continue;
                }
            };
            if op_type == "Gemm" {
                let bad_alpha = node.attr_f("alpha").is_some_and(|a| a != 1.0);
                let c_const = node.input(2).is_none_or(|c| g.constant(c).is_some());
                if bad_alpha || !c_const {
                    decide(false, "Gemm with alpha ≠ 1 or a non-constant C".into());
                    continue;
                }
            }
            let (w, k, cols) = match weight(g, n) {
                Ok(w) => w,
                Err(why) => {
                    decide(false, why);
                    continue;
                }
            };
            self.rewrite(g, n, x, &w, k, cols, &mut shared);
            rewritten += 1;
            decide(true, "quantized (dynamic)".into());
        }
        cx.remark(
            NAME,
            "<model>",
            format!(
                "{rewritten} of {} MatMul/Gemm rewritten to DynamicQuantizeLinear → MatMulInteger",
                decisions.len()
            ),
        );
        cx.analyses.decisions = decisions;
        if rewritten == 0 {
            return Ok(Changed::No);
        }
        Ok(Changed::Yes)
    }
}

impl QuantizeDynamic {
    #[allow(clippy::too_many_arguments)]
    fn rewrite(
        &self,
        g: &mut Graph,
        n: NodeId,
        x: ValueId,
        w: &[f32],
        k: usize,
        cols: usize,
        shared: &mut BTreeMap<ValueId, (ValueId, ValueId, ValueId)>,
    ) {
        let node = g.node(n);
        let is_gemm = node.is("Gemm");
        let beta = node.attr_f("beta").unwrap_or(1.0);
        let c = if is_gemm { node.input(2) } else { None };
        let y = node.output();
        let base = g.name(y).to_string();
        let wname = g
            .name(node.input(1).expect("invariant: checked"))
            .to_string();
        let (xq, xs, xz) = *shared.entry(x).or_insert_with(|| {
            let xn = g.name(x).to_string();
            let at = At::After(g.producer(x));
            let (_, o) = g.add_op(
                op("DynamicQuantizeLinear", vec![]),
                &[Some(x)],
                &[
                    &format!("{xn}_dyn_q"),
                    &format!("{xn}_dyn_scale"),
                    &format!("{xn}_dyn_zp"),
                ],
                at,
            );
            (o[0], o[1], o[2])
        });
        let axis = self.opts.per_channel.then_some(1);
        let wq = crate::quant::quantize_weights(w, &[k, cols], axis, false);
        let n_scales = wq.scales.len() as i64;
        let w_q = g.add_initializer(Tensor::from_i8(
            &format!("{wname}_q"),
            &[k as i64, cols as i64],
            &wq.q,
        ));
        let zdims: Vec<i64> = if self.opts.per_channel {
            vec![n_scales]
        } else {
            vec![]
        };
        let w_zp = g.add_initializer(Tensor::from_i8(
            &format!("{wname}_zp"),
            &zdims,
            &vec![0i8; n_scales as usize],
        ));
        let w_scale = g.add_initializer(Tensor::from_f32(
            &format!("{wname}_scale"),
            &ndarray::ArrayD::from_shape_vec(
                ndarray::IxDyn(&zdims.iter().map(|&d| d as usize).collect::<Vec<_>>()),
                wq.scales.clone(),
            )
            .expect("invariant: one scale per column"),
        ));
        let (_, mi) = g.add_op(
            op("MatMulInteger", vec![]),
            &[Some(xq), Some(w_q), Some(xz), Some(w_zp)],
            &[&format!("{base}_int")],
            At::Before(n),
        );
        let (_, cf) = g.add_op(
            op("Cast", vec![int_attr("to", DataType::Float as i64)]),
            &[Some(mi[0])],
            &[&format!("{base}_int_f")],
            At::Before(n),
        );
        let (_, s) = g.add_op(
            op("Mul", vec![]),
            &[Some(xs), Some(w_scale)],
            &[&format!("{base}_scale")],
            At::Before(n),
        );
        let (last, mut out) = g.add_op(
            op("Mul", vec![]),
            &[Some(cf[0]), Some(s[0])],
            &[&format!("{base}_mm")],
            At::Before(n),
        );
        let mut last = last;
        if let Some(c) = c {
            let c = if beta != 1.0 {
                let t = g.constant(c).expect("invariant: checked constant");
                let a = t.to_f32().expect("invariant: float C") * beta;
                g.add_initializer(Tensor::from_f32(&format!("{}_beta", g.name(c)), &a))
            } else {
                c
            };
            let (l, o) = g.add_op(
                op("Add", vec![]),
                &[Some(out[0]), Some(c)],
                &[&format!("{base}_bias")],
                At::Before(n),
            );
            last = l;
            out = o;
        }
        g.take_label(n, last);
        g.replace_all_uses(y, out[0]);
        for i in g.output_ports(y) {
            g.redirect_output(i, out[0]);
        }
        g.remove_node(n);
    }
}
