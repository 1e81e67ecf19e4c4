//! `fuse-batchnorm`: folds inference-mode BatchNormalization into the
//! producer's weights, or into a per-channel Mul+Add.
//!
//! # What
//! At inference BatchNormalization is an affine map per channel `c` (axis 1):
//! `y = a[c]·x + b[c]` with `a = scale / sqrt(var + epsilon)` and
//! `b = B − mean·a`. When its parameters are constants this pass:
//!
//! * folds it into the node that produces its input, when that node is
//!   - `Conv`: weight `[Cout, Cin/group, k…]` scaled along axis 0, bias
//!     `a·bias + b` (created when missing);
//!   - `ConvTranspose`: weight `[Cin, Cout/group, k…]`; output channel of
//!     `W[i, j, …]` is `(i / (Cin/group))·(Cout/group) + j`;
//!   - `Gemm` (output `[M, N]`, so the BN channel axis is `N`): `B` scaled
//!     along `N` (axis 1, or axis 0 under `transB`), `C' = beta·a·C + b`
//!     (created when missing) and `beta` reset to its default 1; `alpha` is
//!     untouched because it multiplies `A·B` which already carries `a`;
//!   - `MatMul` with a constant 2-D weight `[K, N]` and a rank-2 output (the
//!     only case where the BN channel axis 1 is the weight's output axis):
//!     the weight's columns are scaled and an `Add` of the new bias follows;
//!
//!   provided the producer's result is read by the BatchNormalization only
//!   and is not a graph output;
//! * otherwise rewrites it as `Mul(x, a) → Add(·, b)` with `a`, `b` shaped
//!   `[C, 1, …]` for the input's rank, which must be known.
//!
//! New weights and biases are new initializers named after the old ones
//! (`W` → `W_fused`); originals, which other nodes may share, are never
//! changed, and `dce` removes them once unused. The BatchNormalization's
//! result name lives on: its readers read the producer, and a graph output
//! keeps its name.
//!
//! # Example
//! ```text
//! before:  C = Conv <kernel_shape: ints = [2, 2]> (X, W)
//!          Y = BatchNormalization <epsilon: float = 1.0> (C, s, b, mean, var)
//! after:   Y = Conv <kernel_shape: ints = [2, 2]> (X, W_fused, b_fused)
//!
//! before:  Y = BatchNormalization (X, s, b, mean, var)     # X: float[N,2,4,4]
//! after:   Y_mul = Mul (X, s_folded)                       # s_folded: float[2,1,1]
//!          Y = Add (Y_mul, b_folded)
//! ```
//! (In the first, `Y` is a graph output, so the Conv result takes its name;
//! see `tests/passes/fuse-batchnorm/` for every form.)
//!
//! # Options
//! None.
//!
//! # Preconditions
//! Skipped with a remark (never an error): a BatchNormalization whose scale,
//! B, mean or var is not a float32 constant 1-D tensor of one common length,
//! whose input is not float32 (or of unknown type from opset 15 on, where
//! the parameters may differ in type from the input), in training mode (`training_mode=1`, `is_test=0`), with `spatial=0`, with
//! its running-statistics outputs used, or whose result a subgraph reads by
//! name. A producer that cannot absorb it (weight not constant, channel count
//! mismatch, shared result, MatMul output rank not 2) gets the Mul+Add form
//! instead; that needs the input rank (run `shape-inference` first when
//! the model does not declare it).
//!
//! # Numerics
//! Exact up to float rounding: `a` and `b` and the folded weights are computed
//! in f64 and rounded once to f32; results differ from the unfused model by
//! a few ulps (the test suite checks 1e-5 relative).
//!
//! # Errors
//! Only bad options (it takes none): everything it cannot fold is left as
//! it was, with a remark saying why.

use ndarray::{ArrayD, IxDyn};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, NodeKind, Slot, Tensor, ValueId};
use crate::onnx::import::node_label;
use crate::onnx::tensor_proto::DataType;
use crate::onnx::{dtype_name, NodeProto};

const FLOAT: i32 = DataType::Float as i32;
const NAME: &str = "fuse-batchnorm";

#[derive(Debug, Default)]
pub struct FuseBatchnorm;

impl FuseBatchnorm {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>(NAME, o)?;
        Ok(FuseBatchnorm)
    }
}

/// The per-channel affine map `y = a·x + b` of one BatchNormalization.
struct Affine {
    a: Vec<f64>,
    b: Vec<f64>,
    /// Names of the BN's `scale` and `B` inputs, to derive new names from.
    scale_name: String,
    bias_name: String,
}

impl Affine {
    fn channels(&self) -> usize {
        self.a.len()
    }
}

/// A float32 constant's elements, or why not.
fn const_f32(g: &Graph, v: ValueId, role: &str) -> Result<ArrayD<f32>, String> {
    let name = g.name(v);
    let t = g
        .constant(v)
        .ok_or_else(|| format!("{role} '{name}' is not a constant"))?;
    if t.dtype() != FLOAT {
        return Err(format!(
            "{role} '{name}' is {}; only float tensors are folded",
            dtype_name(t.dtype())
        ));
    }
    t.to_f32().map_err(|e| e.to_string())
}

/// Reads a BatchNormalization's parameters, or says why it must stay.
fn affine(g: &Graph, bn: NodeId) -> Result<Affine, String> {
    let node = g.node(bn);
    if node.attr_i("training_mode") == Some(1) || node.attr_i("is_test") == Some(0) {
        return Err("it is in training mode".into());
    }
    if node.attr_i("spatial") == Some(0) {
        return Err("spatial=0 (per-element statistics) is not folded".into());
    }
    if node
        .outputs()
        .iter()
        .skip(1)
        .flatten()
        .any(|&v| g.is_used(v))
    {
        return Err("its running-statistics outputs are used".into());
    }
    let mut params = Vec::with_capacity(4);
    for (i, role) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
        let v = node
            .input(i)
            .ok_or_else(|| format!("input {role} is missing"))?;
        let arr = const_f32(g, v, role)?;
        if arr.ndim() != 1 {
            return Err(format!(
                "{role} '{}' has shape {:?}; expected one value per channel",
                g.name(v),
                arr.shape()
            ));
        }
        params.push(arr);
    }
    let c = params[0].len();
    if params.iter().any(|p| p.len() != c) {
        return Err("scale, B, mean and var differ in length".into());
    }
    let eps = node.attr_f("epsilon").unwrap_or(1e-5) as f64;
    let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let mut a = Vec::with_capacity(c);
    let mut b = Vec::with_capacity(c);
    for k in 0..c {
        let denom = var[k] as f64 + eps;
        if denom.is_nan() || denom <= 0.0 {
            return Err(format!("var + epsilon is not positive in channel {k}"));
        }
        let ak = scale[k] as f64 / denom.sqrt();
        a.push(ak);
        b.push(bias[k] as f64 - mean[k] as f64 * ak);
    }
    Ok(Affine {
        a,
        b,
        scale_name: g
            .name(node.input(1).expect("invariant: checked above"))
            .to_string(),
        bias_name: g
            .name(node.input(2).expect("invariant: checked above"))
            .to_string(),
    })
}

/// How the producer absorbs the BN.
enum Absorb {
    /// Replace input 1 (weight) and set input 2 (bias): Conv, ConvTranspose.
    WeightBias,
    /// Like `WeightBias`, and drop `beta` (the new C already includes it).
    Gemm,
    /// Replace the weight; add `Add(out, bias)` after the node.
    MatMulAdd,
}

/// A fusion fully computed before anything is changed.
struct Fusion {
    producer: NodeId,
    how: Absorb,
    weight: ArrayD<f32>,
    weight_name: String,
    bias: ArrayD<f32>,
    bias_name: String,
}

fn to_f32_array(shape: &[usize], v: Vec<f64>) -> ArrayD<f32> {
    let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("invariant: element count matches shape")
}

/// `a·bias + b` for an optional 1-D bias of length C.
fn fused_bias(
    g: &Graph,
    bias: Option<ValueId>,
    af: &Affine,
) -> Result<(ArrayD<f32>, String), String> {
    let c = af.channels();
    let (old, name) = match bias {
        Some(v) => {
            let arr = const_f32(g, v, "bias")?;
            if arr.shape() != [c] {
                return Err(format!(
                    "bias '{}' has shape {:?}, expected [{c}]",
                    g.name(v),
                    arr.shape()
                ));
            }
            (
                arr.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                format!("{}_fused", g.name(v)),
            )
        }
        None => (vec![0.0; c], format!("{}_fused", af.bias_name)),
    };
    let v = (0..c).map(|k| af.a[k] * old[k] + af.b[k]).collect();
    Ok((to_f32_array(&[c], v), name))
}

/// Scales a weight by `a[channel(flat index)]` in f64.
fn scale_weight(w: &ArrayD<f32>, af: &Affine, channel: impl Fn(usize) -> usize) -> ArrayD<f32> {
    let v = w
        .iter()
        .enumerate()
        .map(|(i, &x)| x as f64 * af.a[channel(i)])
        .collect();
    to_f32_array(w.shape(), v)
}

/// Plans folding `af` into the producer `p` of the BN's input, or says why not.
fn plan(g: &Graph, p: NodeId, af: &Affine, x: ValueId) -> Result<Fusion, String> {
    let node = g.node(p);
    let c = af.channels();
    let weight_in = node.input(1).ok_or("it has no weight input")?;
    let weight_name = format!("{}_fused", g.name(weight_in));
    let w = const_f32(g, weight_in, "weight")?;
    let shape = w.shape().to_vec();
    if node.is("Conv") {
        if shape.len() < 2 || shape[0] != c {
            return Err(format!(
                "weight shape {shape:?} does not have {c} output channels on axis 0"
            ));
        }
        let per_out = w.len() / c;
        let weight = scale_weight(&w, af, |i| i / per_out);
        let (bias, bias_name) = fused_bias(g, node.input(2), af)?;
        return Ok(Fusion {
            producer: p,
            how: Absorb::WeightBias,
            weight,
            weight_name,
            bias,
            bias_name,
        });
    }
    if node.is("ConvTranspose") {
        let group = node.attr_i("group").unwrap_or(1);
        if shape.len() < 2 || group < 1 || shape[0] % group as usize != 0 {
            return Err(format!("weight shape {shape:?} does not fit group={group}"));
        }
        let group = group as usize;
        let (cin, cout_g) = (shape[0], shape[1]);
        if cout_g * group != c {
            return Err(format!(
                "weight shape {shape:?} with group={group} does not have {c} output channels"
            ));
        }
        let cin_g = cin / group;
        let ksize: usize = shape[2..].iter().product();
        let weight = scale_weight(&w, af, |idx| {
            let i = idx / (cout_g * ksize);
            let j = (idx / ksize) % cout_g;
            (i / cin_g) * cout_g + j
        });
        let (bias, bias_name) = fused_bias(g, node.input(2), af)?;
        return Ok(Fusion {
            producer: p,
            how: Absorb::WeightBias,
            weight,
            weight_name,
            bias,
            bias_name,
        });
    }
    if node.is("Gemm") {
        let trans_b = node.attr_i("transB").unwrap_or(0) != 0;
        if shape.len() != 2 {
            return Err(format!("B has shape {shape:?}; expected 2-D"));
        }
        let n = if trans_b { shape[0] } else { shape[1] };
        if n != c {
            return Err(format!(
                "Gemm has {n} output columns, BatchNormalization {c} channels"
            ));
        }
        let cols = shape[1];
        let weight = if trans_b {
            scale_weight(&w, af, |i| i / cols)
        } else {
            scale_weight(&w, af, |i| i % cols)
        };
        let beta = node.attr_f("beta").unwrap_or(1.0) as f64;
        // C' = beta·a·C + b, broadcast against [N]; C is 0-, 1- or 2-D with a
        // last dim of 1 or N. Seen as [m, n'] it gives [m, N] ([N] if m is 1
        // and C was not 2-D).
        let (bias, bias_name) = match node.input(2) {
            None => (
                to_f32_array(&[c], af.b.clone()),
                format!("{}_fused", af.bias_name),
            ),
            Some(cv) => {
                let arr = const_f32(g, cv, "C")?;
                let s = arr.shape().to_vec();
                let (m, nn) = match s.len() {
                    0 => (1, 1),
                    1 => (1, s[0]),
                    2 => (s[0], s[1]),
                    _ => return Err(format!("C has shape {s:?}; expected at most 2-D")),
                };
                if nn != 1 && nn != c {
                    return Err(format!(
                        "C has shape {s:?}, which does not broadcast to [M, {c}]"
                    ));
                }
                let flat: Vec<f64> = arr.iter().map(|&x| x as f64).collect();
                let mut v = Vec::with_capacity(m * c);
                for r in 0..m {
                    for k in 0..c {
                        let cval = flat[r * nn + if nn == 1 { 0 } else { k }];
                        v.push(beta * af.a[k] * cval + af.b[k]);
                    }
                }
                let out_shape: Vec<usize> = if s.len() == 2 { vec![m, c] } else { vec![c] };
                (to_f32_array(&out_shape, v), format!("{}_fused", g.name(cv)))
            }
        };
        return Ok(Fusion {
            producer: p,
            how: Absorb::Gemm,
            weight,
            weight_name,
            bias,
            bias_name,
        });
    }
    if node.is("MatMul") {
        if shape.len() != 2 || shape[1] != c {
            return Err(format!("weight shape {shape:?} is not [K, {c}]"));
        }
        // BN normalises axis 1; only for a rank-2 output is that the weight's
        // output axis (for [B, T, N] it would be T).
        let rank = [x, node.input(0).ok_or("it has no first input")?]
            .iter()
            .find_map(|&v| {
                g.value_type(v)
                    .and_then(|t| crate::ir::types::dims(&t))
                    .map(|d| d.len())
            });
        match rank {
            Some(2) => {}
            Some(r) => return Err(format!("its output has rank {r}; BatchNormalization's channel axis is then not the weight's output axis")),
            None => return Err("its output rank is unknown (run shape-inference first)".into()),
        }
        let weight = scale_weight(&w, af, |i| i % c);
        let bias = to_f32_array(&[c], af.b.clone());
        let bias_name = format!("{}_fused", af.bias_name);
        return Ok(Fusion {
            producer: p,
            how: Absorb::MatMulAdd,
            weight,
            weight_name,
            bias,
            bias_name,
        });
    }
    Err("not a fusable producer".into())
}

/// A node with this op type and name, in the default domain.
fn op(op_type: &str, name: String) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.into()),
        name: (!name.is_empty()).then_some(name),
        ..Default::default()
    }
}

impl Pass for FuseBatchnorm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        // From opset 15 the parameters may have another type than the input.
        let params_typed_apart = m.opset("").unwrap_or(1) >= 15;
        let g = &mut m.graph;
        let mut changed = false;
        for bn in g.ops() {
            if !g.node(bn).is("BatchNormalization") {
                continue;
            }
            let label = node_label(g.node(bn).name(), "BatchNormalization");
            let af = match affine(g, bn) {
                Ok(af) => af,
                Err(why) => {
                    cx.remark(NAME, &label, format!("kept: {why}"));
                    continue;
                }
            };
            let (Some(x), y) = (g.node(bn).input(0), g.node(bn).output()) else {
                cx.remark(NAME, &label, "kept: it has no input");
                continue;
            };
            if g.has_implicit_uses(y) {
                cx.remark(NAME, &label, "kept: a subgraph reads its result by name");
                continue;
            }
            let out_ports: Vec<usize> = g.output_ports(y);
            if out_ports.len() > 1 {
                cx.remark(
                    NAME,
                    &label,
                    "kept: its result is listed as several graph outputs",
                );
                continue;
            }

            // Fold into the producer when it is ours alone.
            let p = g.producer(x);
            let prod = g.node(p);
            let fusable_op = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
                .iter()
                .any(|t| prod.is(t));
            let mut why_not = None;
            let mut fusion = None;
            if fusable_op && matches!(prod.kind, NodeKind::Op(_)) {
                let plabel = node_label(prod.name(), prod.op_type());
                let sole_use = g.users(x) == [(bn, Slot::Input(0))];
                let r = if prod.outputs().first().copied().flatten() != Some(x) {
                    Err("the input is not its first result".to_string())
                } else if !sole_use || g.is_graph_output(x) {
                    Err("its result has other readers".to_string())
                } else {
                    plan(g, p, &af, x)
                };
                match r {
                    Ok(f) => fusion = Some(f),
                    Err(e) => {
                        why_not = Some(format!(
                            "not folded into {} '{plabel}': {e}",
                            prod.op_type()
                        ))
                    }
                }
            }

            let bn_name = g.node(bn).name().to_string();
            let y_name = g.name(y).to_string();
            // The value that replaces y, and whether it is new (then it takes
            // y's name once the BN is gone).
            let (repl, fresh) = if let Some(f) = fusion {
                let w = g.add_initializer(Tensor::from_f32(&f.weight_name, &f.weight));
                let b = g.add_initializer(Tensor::from_f32(&f.bias_name, &f.bias));
                g.set_input(f.producer, 1, Some(w));
                match f.how {
                    Absorb::WeightBias => {
                        g.set_input(f.producer, 2, Some(b));
                        (x, false)
                    }
                    Absorb::Gemm => {
                        g.set_input(f.producer, 2, Some(b));
                        if let Some(op) = g.node_mut(f.producer).op_mut() {
                            op.attribute.retain(|a| a.name() != "beta");
                        }
                        (x, false)
                    }
                    Absorb::MatMulAdd => {
                        let (_, outs) = g.add_op_after(
                            f.producer,
                            op("Add", bn_name),
                            &[Some(x), Some(b)],
                            &[&format!("{y_name}_add")],
                        );
                        (outs[0], true)
                    }
                }
            } else {
                let prefix = why_not
                    .as_ref()
                    .map(|w| format!("{w}; "))
                    .unwrap_or_default();
                // A folded producer has a float weight, so (one type T for its
                // operands and result) a float result; here the input alone says.
                let elem = match g.elem_type(x) {
                    0 => g.elem_type(y),
                    e => e,
                };
                match elem {
                    FLOAT => {}
                    0 if !params_typed_apart => {}
                    0 => {
                        cx.remark(
                            NAME,
                            &label,
                            format!("{prefix}kept: its input's element type is unknown (run shape-inference first)"),
                        );
                        continue;
                    }
                    other => {
                        cx.remark(
                            NAME,
                            &label,
                            format!(
                                "{prefix}kept: its input is {}; only float is folded",
                                dtype_name(other)
                            ),
                        );
                        continue;
                    }
                }
                let rank = g
                    .value_type(x)
                    .or_else(|| g.value_type(y))
                    .and_then(|t| crate::ir::types::dims(&t))
                    .map(|d| d.len());
                let rank = match rank {
                    Some(r) if r >= 2 => r,
                    Some(r) => {
                        cx.remark(
                            NAME,
                            &label,
                            format!("{prefix}kept: input rank {r} has no channel axis"),
                        );
                        continue;
                    }
                    None => {
                        cx.remark(
                            NAME,
                            &label,
                            format!("{prefix}kept: input rank unknown (run shape-inference first)"),
                        );
                        continue;
                    }
                };
                let c = af.channels();
                let mut shape = vec![c];
                shape.resize(rank - 1, 1);
                let a_t = g.add_initializer(Tensor::from_f32(
                    &format!("{}_folded", af.scale_name),
                    &to_f32_array(&shape, af.a.clone()),
                ));
                let b_t = g.add_initializer(Tensor::from_f32(
                    &format!("{}_folded", af.bias_name),
                    &to_f32_array(&shape, af.b.clone()),
                ));
                let sub = |s: &str| {
                    if bn_name.is_empty() {
                        String::new()
                    } else {
                        format!("{bn_name}_{s}")
                    }
                };
                let (mul, mo) = g.add_op_after(
                    bn,
                    op("Mul", sub("mul")),
                    &[Some(x), Some(a_t)],
                    &[&format!("{y_name}_mul")],
                );
                let (_, ao) = g.add_op_after(
                    mul,
                    op("Add", sub("add")),
                    &[Some(mo[0]), Some(b_t)],
                    &[&format!("{y_name}_add")],
                );
                if !prefix.is_empty() {
                    cx.remark(NAME, &label, format!("{prefix}rewritten as Mul+Add"));
                }
                (ao[0], true)
            };
            g.replace_all_uses(y, repl);
            if let Some(&i) = out_ports.first() {
                g.redirect_output(i, repl);
            }
            g.remove_node(bn);
            if fresh && out_ports.is_empty() {
                g.rename(repl, &y_name);
            }
            changed = true;
        }
        Ok(Changed::from_bool(changed))
    }
}
