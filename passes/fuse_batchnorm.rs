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

use crate::ir::At;
use ndarray::{ArrayD, IxDyn};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, NodeKind, Slot, Tensor, ValueId};
use crate::proto::tensor_proto::DataType;
use crate::proto::{dtype_name, NodeProto};

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
    let weight_in = node.input(1).ok_or("it has no weight input")?;
    let weight_name = format!("{}_fused", g.name(weight_in));
    let w = const_f32(g, weight_in, "weight")?;
    if node.is("Conv") {
        return plan_conv(g, p, af, &w, weight_name);
    }
    if node.is("ConvTranspose") {
        return plan_conv_transpose(g, p, af, &w, weight_name);
    }
    if node.is("Gemm") {
        return plan_gemm(g, p, af, &w, weight_name);
    }
    if node.is("MatMul") {
        return plan_matmul(g, p, af, &w, weight_name, x);
    }
    Err("not a fusable producer".into())
}

/// Conv: weight `[Cout, Cin/group, k…]` scaled along axis 0, bias fused.
fn plan_conv(
    g: &Graph,
    p: NodeId,
    af: &Affine,
    w: &ArrayD<f32>,
    weight_name: String,
) -> Result<Fusion, String> {
    let c = af.channels();
    let shape = w.shape();
    if shape.len() < 2 || shape[0] != c {
        return Err(format!(
            "weight shape {shape:?} does not have {c} output channels on axis 0"
        ));
    }
    let per_out = w.len() / c;
    let weight = scale_weight(w, af, |i| i / per_out);
    let (bias, bias_name) = fused_bias(g, g.node(p).input(2), af)?;
    Ok(Fusion {
        producer: p,
        how: Absorb::WeightBias,
        weight,
        weight_name,
        bias,
        bias_name,
    })
}

/// ConvTranspose: weight `[Cin, Cout/group, k…]`, the output channel of
/// `W[i, j, …]` being `(i / (Cin/group))·(Cout/group) + j`; bias fused.
fn plan_conv_transpose(
    g: &Graph,
    p: NodeId,
    af: &Affine,
    w: &ArrayD<f32>,
    weight_name: String,
) -> Result<Fusion, String> {
    let node = g.node(p);
    let c = af.channels();
    let shape = w.shape();
    let group = node.attr_i("group").unwrap_or(1);
    if shape.len() < 2 || group < 1 || !shape[0].is_multiple_of(group as usize) {
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
    let weight = scale_weight(w, af, |idx| {
        let i = idx / (cout_g * ksize);
        let j = (idx / ksize) % cout_g;
        (i / cin_g) * cout_g + j
    });
    let (bias, bias_name) = fused_bias(g, node.input(2), af)?;
    Ok(Fusion {
        producer: p,
        how: Absorb::WeightBias,
        weight,
        weight_name,
        bias,
        bias_name,
    })
}

/// Gemm (output `[M, N]`): `B` scaled along `N` (axis 1, or axis 0 under
/// `transB`), `C` replaced by [`gemm_bias`].
fn plan_gemm(
    g: &Graph,
    p: NodeId,
    af: &Affine,
    w: &ArrayD<f32>,
    weight_name: String,
) -> Result<Fusion, String> {
    let node = g.node(p);
    let c = af.channels();
    let shape = w.shape();
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
        scale_weight(w, af, |i| i / cols)
    } else {
        scale_weight(w, af, |i| i % cols)
    };
    let beta = node.attr_f("beta").unwrap_or(1.0) as f64;
    let (bias, bias_name) = gemm_bias(g, node.input(2), beta, af)?;
    Ok(Fusion {
        producer: p,
        how: Absorb::Gemm,
        weight,
        weight_name,
        bias,
        bias_name,
    })
}

/// Gemm's new `C`: `C' = beta·a·C + b` (just `b` when there is no `C`).
fn gemm_bias(
    g: &Graph,
    c_in: Option<ValueId>,
    beta: f64,
    af: &Affine,
) -> Result<(ArrayD<f32>, String), String> {
    let c = af.channels();
    let Some(cv) = c_in else {
        return Ok((
            to_f32_array(&[c], af.b.clone()),
            format!("{}_fused", af.bias_name),
        ));
    };
    // C' = beta·a·C + b, broadcast against [N]; C is 0-, 1- or 2-D with a
    // last dim of 1 or N. Seen as [m, n'] it gives [m, N] ([N] if m is 1
    // and C was not 2-D).
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
    Ok((to_f32_array(&out_shape, v), format!("{}_fused", g.name(cv))))
}

/// MatMul with a constant `[K, N]` weight and a rank-2 output: the weight's
/// columns scaled, `b` added by a new `Add`.
fn plan_matmul(
    g: &Graph,
    p: NodeId,
    af: &Affine,
    w: &ArrayD<f32>,
    weight_name: String,
    x: ValueId,
) -> Result<Fusion, String> {
    let node = g.node(p);
    let c = af.channels();
    let shape = w.shape();
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
    let weight = scale_weight(w, af, |i| i % c);
    let bias = to_f32_array(&[c], af.b.clone());
    let bias_name = format!("{}_fused", af.bias_name);
    Ok(Fusion {
        producer: p,
        how: Absorb::MatMulAdd,
        weight,
        weight_name,
        bias,
        bias_name,
    })
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
            let label = g.label(bn).to_string();
            match fuse_one(g, bn, params_typed_apart) {
                Ok(note) => {
                    if let Some(note) = note {
                        cx.remark(NAME, &label, note);
                    }
                    changed = true;
                }
                Err(why) => cx.remark(NAME, &label, why),
            }
        }
        Ok(Changed::from_bool(changed))
    }
}

/// Where a BatchNormalization sits: its input, its result, and the graph
/// outputs that list the result.
struct Site {
    x: ValueId,
    y: ValueId,
    out_ports: Vec<usize>,
}

/// Removes one BatchNormalization: folded into its producer when that can
/// absorb it, else rewritten as Mul+Add. `Ok` holds a remark to make (why
/// the producer did not take it), `Err` the remark saying why it was kept.
fn fuse_one(g: &mut Graph, bn: NodeId, params_typed_apart: bool) -> Result<Option<String>, String> {
    let af = affine(g, bn).map_err(|why| format!("kept: {why}"))?;
    let site = site(g, bn)?;
    let (x, y) = (site.x, site.y);
    let bn_name = g.node(bn).name().to_string();
    let y_name = g.name(y).to_string();
    // The value that replaces y, and whether it is new (then it takes y's
    // name once the BN is gone).
    let (repl, fresh, note) = match producer_fusion(g, bn, x, &af) {
        Ok(Some(f)) => {
            let (repl, fresh) = absorb(g, f, x, bn_name, &y_name);
            (repl, fresh, None)
        }
        Ok(None) => {
            let rank = mul_add_rank(g, x, y, params_typed_apart)?;
            (mul_add(g, bn, x, rank, &af, &bn_name, &y_name), true, None)
        }
        Err(why_not) => {
            let rank =
                mul_add_rank(g, x, y, params_typed_apart).map_err(|e| format!("{why_not}; {e}"))?;
            let repl = mul_add(g, bn, x, rank, &af, &bn_name, &y_name);
            (repl, true, Some(format!("{why_not}; rewritten as Mul+Add")))
        }
    };
    g.replace_all_uses(y, repl);
    if let Some(&i) = site.out_ports.first() {
        g.redirect_output(i, repl);
    }
    g.remove_node(bn);
    if fresh && site.out_ports.is_empty() {
        g.rename(repl, &y_name);
    }
    Ok(note)
}

/// The BN's input and result, or the remark saying why it is kept: no
/// input, a result read by name from a subgraph or listed as several graph
/// outputs.
fn site(g: &Graph, bn: NodeId) -> Result<Site, String> {
    let (Some(x), y) = (g.node(bn).input(0), g.node(bn).output()) else {
        return Err("kept: it has no input".into());
    };
    if g.has_implicit_uses(y) {
        return Err("kept: a subgraph reads its result by name".into());
    }
    let out_ports: Vec<usize> = g.output_ports(y);
    if out_ports.len() > 1 {
        return Err("kept: its result is listed as several graph outputs".into());
    }
    Ok(Site { x, y, out_ports })
}

/// The fusion into the producer of `x`, fully planned: `Ok(None)` when that
/// is not a Conv, ConvTranspose, Gemm or MatMul op, `Err` when it is one but
/// cannot absorb the BN (its result is not ours alone, or [`plan`] refuses),
/// saying why.
fn producer_fusion(
    g: &Graph,
    bn: NodeId,
    x: ValueId,
    af: &Affine,
) -> Result<Option<Fusion>, String> {
    let p = g.producer(x);
    let prod = g.node(p);
    let fusable_op = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
        .iter()
        .any(|t| prod.is(t));
    if !fusable_op || !matches!(prod.kind(), NodeKind::Op(_)) {
        return Ok(None);
    }
    let plabel = prod.label().to_string();
    let sole_use = g.users(x) == [(bn, Slot::Input(0))];
    let r = if prod.outputs().first().copied().flatten() != Some(x) {
        Err("the input is not its first result".to_string())
    } else if !sole_use || g.is_graph_output(x) {
        Err("its result has other readers".to_string())
    } else {
        plan(g, p, af, x)
    };
    r.map(Some)
        .map_err(|e| format!("not folded into {} '{plabel}': {e}", prod.op_type()))
}

/// Applies a planned fusion: new weight and bias initializers on the
/// producer (and for MatMul an `Add` after it, named `bn_name`). Returns the
/// value that replaces the BN's result and whether it is new.
fn absorb(g: &mut Graph, f: Fusion, x: ValueId, bn_name: String, y_name: &str) -> (ValueId, bool) {
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
            g.op_mut(f.producer)
                .attribute
                .retain(|a| a.name() != "beta");
            (x, false)
        }
        Absorb::MatMulAdd => {
            let (_, outs) = g.add_op(
                op("Add", bn_name),
                &[Some(x), Some(b)],
                &[&format!("{y_name}_add")],
                At::After(f.producer),
            );
            (outs[0], true)
        }
    }
}

/// The input rank for the Mul+Add form, or the remark saying why the BN is
/// kept: its input is not float, or its element type or rank is unknown.
fn mul_add_rank(
    g: &Graph,
    x: ValueId,
    y: ValueId,
    params_typed_apart: bool,
) -> Result<usize, String> {
    // A folded producer has a float weight, so (one type T for its operands
    // and result) a float result; here the input alone says.
    let elem = match g.elem_type(x) {
        0 => g.elem_type(y),
        e => e,
    };
    match elem {
        FLOAT => {}
        0 if !params_typed_apart => {}
        0 => {
            return Err(
                "kept: its input's element type is unknown (run shape-inference first)".into(),
            )
        }
        other => {
            return Err(format!(
                "kept: its input is {}; only float is folded",
                dtype_name(other)
            ))
        }
    }
    let rank = g
        .value_type(x)
        .or_else(|| g.value_type(y))
        .and_then(|t| crate::ir::types::dims(&t))
        .map(|d| d.len());
    match rank {
        Some(r) if r >= 2 => Ok(r),
        Some(r) => Err(format!("kept: input rank {r} has no channel axis")),
        None => Err("kept: input rank unknown (run shape-inference first)".into()),
    }
}

/// Inserts `Mul(x, a) → Add(·, b)` after the BN, with `a` and `b` shaped
/// `[C, 1, …]` for `rank`; returns the Add's result.
fn mul_add(
    g: &mut Graph,
    bn: NodeId,
    x: ValueId,
    rank: usize,
    af: &Affine,
    bn_name: &str,
    y_name: &str,
) -> ValueId {
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
    let (mul, mo) = g.add_op(
        op("Mul", sub("mul")),
        &[Some(x), Some(a_t)],
        &[&format!("{y_name}_mul")],
        At::After(bn),
    );
    let (_, ao) = g.add_op(
        op("Add", sub("add")),
        &[Some(mo[0]), Some(b_t)],
        &[&format!("{y_name}_add")],
        At::After(mul),
    );
    ao[0]
}
