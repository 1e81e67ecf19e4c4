//! `fold-constants`: evaluates nodes whose operands are all constants and
//! replaces their results with initializers.
//!
//! # What
//! Visits op nodes in topological order, so chains fold in one run:
//!
//! * a `Constant` node becomes an initializer of the same name (`value`,
//!   `value_float(s)`, `value_int(s)`, `value_string(s)`; `sparse_value` is
//!   kept);
//! * a `Shape` whose input has a fully static declared shape becomes an
//!   int64 initializer (`start`/`end` honoured);
//! * any other default-domain node whose present operands are all constants
//!   (initializers that are not graph inputs — those can be overridden at run
//!   time) is evaluated by tract and its results become initializers. The
//!   node is run alone: a one-node model with its operands as initializers
//!   and its results as outputs, loaded without optimisation, so tract
//!   computes in the node's own element type.
//!
//! Results keep their names; inputs left unused are removed by `dce`.
//!
//! # Example
//! ```text
//! before:  <float[3,2] W = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}>
//!          {
//!            s = Constant <value_float: float = 2.0> ()
//!            Wt = Transpose <perm: ints = [1, 0]> (W)
//!            Ws = Mul (Wt, s)
//!            Y = MatMul (X, Ws)
//!          }
//! after:   <float[2,3] Ws = {2.0, 6.0, 10.0, 4.0, 8.0, 12.0}>   # with dce
//!          {
//!            Y = MatMul (X, Ws)
//!          }
//! ```
//!
//! # Options
//! `max-bytes` (default 1048576 = 1 MiB): a result larger than this stays
//! computed at run time, so that `Expand`, `Tile` or `ConstantOfShape`
//! cannot blow a small model up. A result no larger than the constant
//! operands it is computed from is always folded (a transposed or reshaped
//! weight does not grow the model, and quantization wants weights constant).
//!
//! # Preconditions
//! Skipped with a remark, never an error: nondeterministic ops
//! (`RandomNormal`, `RandomUniform`, their `*Like` forms, `Multinomial`,
//! `Bernoulli`), ops with subgraph attributes, ops of other domains, nodes
//! without operands (other than `Constant`), results a subgraph reads by
//! name, results tract cannot compute or onnxq cannot hold (e.g. uint16,
//! strings from tract), results over `max-bytes`, and `DequantizeLinear`
//! (folding a quantized weight back to float would undo quantization).
//!
//! # Numerics
//! Exact: tract evaluates the node in its element type, the same kernels that
//! would run it at inference.
//!
//! # Errors
//! Bad options (`max-bytes` must be a non-negative integer).

use crate::ir::At;
use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, NodeKind, Tensor, ValueId};
use crate::proto::tensor_proto::DataType;
use crate::proto::{dtype_name, dtype_size, TensorProto, ValueInfoProto};
use crate::runtime::{RunOptions, Runner};
use crate::tensorio::HostTensor;

const NAME: &str = "fold-constants";

/// Ops whose result differs between runs.
const NONDETERMINISTIC: [&str; 6] = [
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FoldConstantsOptions {
    /// Largest result, in bytes, folded into an initializer.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    1 << 20
}

impl Default for FoldConstantsOptions {
    fn default() -> Self {
        FoldConstantsOptions {
            max_bytes: default_max_bytes(),
        }
    }
}

#[derive(Debug, Default)]
pub struct FoldConstants {
    pub opts: FoldConstantsOptions,
}

impl FoldConstants {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        Ok(FoldConstants {
            opts: super::parse_options(NAME, o)?,
        })
    }
}

/// The tensor a `Constant` node holds, or why it cannot become an
/// initializer.
fn constant_value(g: &Graph, n: NodeId) -> Result<Tensor, String> {
    let node = g.node(n);
    let name = g.name(node.output());
    let op = node.op().expect("invariant: Constant is an op");
    let [a] = op.attribute.as_slice() else {
        return Err("it does not have exactly one value attribute".into());
    };
    if !a.ref_attr_name().is_empty() {
        return Err("its value refers to a function attribute".into());
    }
    let raw = |dtype: DataType, dims: &[i64], bytes: Vec<u8>| {
        Tensor::from_raw(name, dtype as i32, dims, bytes.into())
    };
    Ok(match a.name() {
        "value" => {
            let mut t: TensorProto = a.t.clone().ok_or("attribute 'value' holds no tensor")?;
            if !t.external_data.is_empty() {
                return Err("its tensor has external data".into());
            }
            t.name = Some(name.to_string());
            let t = Tensor::from_proto(t);
            t.validate().map_err(|e| e.to_string())?;
            t
        }
        "value_float" => raw(
            DataType::Float,
            &[],
            a.f.unwrap_or(0.0).to_le_bytes().to_vec(),
        ),
        "value_floats" => raw(
            DataType::Float,
            &[a.floats.len() as i64],
            a.floats.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        "value_int" => raw(
            DataType::Int64,
            &[],
            a.i.unwrap_or(0).to_le_bytes().to_vec(),
        ),
        "value_ints" => raw(
            DataType::Int64,
            &[a.ints.len() as i64],
            a.ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        "value_string" => Tensor::from_proto(TensorProto {
            name: Some(name.to_string()),
            data_type: Some(DataType::String as i32),
            string_data: vec![a.s.clone().unwrap_or_default()],
            ..Default::default()
        }),
        "value_strings" => Tensor::from_proto(TensorProto {
            name: Some(name.to_string()),
            data_type: Some(DataType::String as i32),
            dims: vec![a.strings.len() as i64],
            string_data: a.strings.clone(),
            ..Default::default()
        }),
        other => return Err(format!("attribute '{other}' is not folded")),
    })
}

/// `Shape(x)` from x's declared static shape, honouring `start`/`end`.
fn static_shape_of(g: &Graph, n: NodeId) -> Option<Tensor> {
    let node = g.node(n);
    let x = node.input(0)?;
    let dims = g.static_shape(x)?;
    let r = dims.len() as i64;
    let clamp = |i: i64| (if i < 0 { i + r } else { i }).clamp(0, r) as usize;
    let start = clamp(node.attr_i("start").unwrap_or(0));
    let end = clamp(node.attr_i("end").unwrap_or(r));
    let v: Vec<i64> = dims[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Some(Tensor::from_i64(
        g.name(node.output()),
        &[v.len() as i64],
        &v,
    ))
}

/// Why a node is not a candidate, or `None` when it is.
fn skip_reason(g: &Graph, n: NodeId) -> Option<String> {
    let node = g.node(n);
    if !node.domain().is_empty() {
        return Some(format!("op of domain '{}'", node.domain()));
    }
    if NONDETERMINISTIC.contains(&node.op_type()) {
        return Some("nondeterministic op".into());
    }
    if node.has_subgraphs() {
        return Some("op with subgraphs".into());
    }
    if node.is("DequantizeLinear") {
        // Folding a quantized weight's DequantizeLinear would de-quantize
        // the graph: a float weight, a bigger file, and no integer kernel
        // (onnxruntime fuses DQ → op → Q groups only while the DQ is there).
        return Some("a DequantizeLinear (folding it would de-quantize the model)".into());
    }
    None
}

/// Runs one node alone in tract on its constant operands.
fn evaluate(m: &Model, n: NodeId) -> Result<Vec<HostTensor>, String> {
    let g = &m.graph;
    let node = g.node(n);
    let mut meta = m.meta.clone();
    meta.functions.clear();
    meta.training_info.clear();
    meta.metadata_props.clear();
    let mut sub = Graph::new();
    sub.set_graph_name(&format!("fold {}", node.label()));
    let mut inputs = Vec::with_capacity(node.inputs().len());
    for v in node.inputs() {
        inputs.push(match v {
            Some(v) => {
                let t = g
                    .constant(*v)
                    .expect("invariant: operands checked constant")
                    .clone();
                Some(sub.add_initializer(t))
            }
            None => None,
        });
    }
    let mut proto = node.op().expect("invariant: an op").clone();
    proto.name = Some("fold".into());
    let outs: Vec<String> = node
        .outputs()
        .iter()
        .flatten()
        .map(|&v| g.name(v).to_string())
        .collect();
    if outs.len() != node.outputs().len() {
        return Err("it has omitted optional results".into());
    }
    let names: Vec<&str> = outs.iter().map(String::as_str).collect();
    let (_, vals) = sub.add_op(proto, &inputs, &names, At::End);
    for (v, name) in vals.iter().zip(&outs) {
        sub.push_output(
            *v,
            ValueInfoProto {
                name: Some(name.clone()),
                ..Default::default()
            },
        );
    }
    let one = Model {
        meta,
        graph: sub,
        dir: m.dir.clone(),
    };
    let opts = RunOptions {
        optimize: false,
        ..Default::default()
    };
    let runner = Runner::new(&one, &opts).map_err(|e| e.to_string())?;
    let res = runner.run(&[]).map_err(|e| e.to_string())?;
    Ok(res.into_iter().map(|(_, t)| t).collect())
}

/// Whether every result can be moved to a new value: no subgraph reads it
/// by name, and it is listed at most once among the graph outputs.
fn results_movable(g: &Graph, n: NodeId) -> bool {
    g.node(n).outputs().iter().flatten().all(|&v| {
        !g.has_implicit_uses(v) && g.outputs().iter().filter(|p| p.value == v).count() <= 1
    })
}

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut changed = false;
        let max = self.opts.max_bytes;
        for n in m.graph.ops() {
            let g = &m.graph;
            let node = g.node(n);
            if !matches!(node.kind(), NodeKind::Op(_)) {
                continue;
            }
            let label = node.label().to_string();
            let operands: Vec<ValueId> = node.inputs().iter().flatten().copied().collect();
            let all_const = operands.iter().all(|&v| g.constant(v).is_some());
            let is_constant = node.is("Constant");
            let is_static_shape = node.is("Shape") && !all_const;
            if !(is_constant || is_static_shape || (all_const && !operands.is_empty())) {
                continue;
            }
            if let Some(why) = skip_reason(g, n) {
                cx.remark(NAME, &label, format!("kept: {why}"));
                continue;
            }
            if !results_movable(g, n) {
                cx.remark(
                    NAME,
                    &label,
                    "kept: a subgraph reads a result by name, or it is listed twice as an output",
                );
                continue;
            }
            let tensors: Vec<Tensor> = if is_constant {
                match constant_value(g, n) {
                    Ok(t) => vec![t],
                    Err(why) => {
                        cx.remark(NAME, &label, format!("kept: {why}"));
                        continue;
                    }
                }
            } else if is_static_shape {
                match static_shape_of(g, n) {
                    Some(t) => vec![t],
                    None => continue,
                }
            } else {
                // Skip before running when declared shapes already say the
                // result is too big.
                let in_bytes: u64 = operands
                    .iter()
                    .map(|&v| g.constant(v).map_or(0, |t| t.nbytes() as u64))
                    .sum();
                let declared: Option<u64> = node
                    .outputs()
                    .iter()
                    .flatten()
                    .map(|&v| {
                        let d = g.static_shape(v)?;
                        let size = dtype_size(g.elem_type(v))? as u64;
                        Some(d.iter().product::<usize>() as u64 * size)
                    })
                    .sum();
                if let Some(b) = declared {
                    if b > max && b > in_bytes {
                        cx.remark(
                            NAME,
                            &label,
                            format!("kept: its results take {b} bytes, over max-bytes={max}"),
                        );
                        continue;
                    }
                }
                let hosts = match evaluate(m, n) {
                    Ok(h) => h,
                    Err(why) => {
                        cx.remark(
                            NAME,
                            &label,
                            format!("kept: the runtime cannot evaluate it: {why}"),
                        );
                        continue;
                    }
                };
                let b: u64 = hosts.iter().map(|h| h.to_le_bytes().len() as u64).sum();
                if b > max && b > in_bytes {
                    cx.remark(
                        NAME,
                        &label,
                        format!("kept: its results take {b} bytes, over max-bytes={max}"),
                    );
                    continue;
                }
                // The runtime must agree with the model on every declared
                // element type; a mismatch is a runtime quirk, not a fold.
                let outs: Vec<ValueId> = node.outputs().iter().flatten().copied().collect();
                let clash = outs.iter().zip(&hosts).find(|(&v, h)| {
                    let want = g.elem_type(v);
                    want != 0 && want != h.dtype()
                });
                if let Some((&v, h)) = clash {
                    cx.remark(
                        NAME,
                        &label,
                        format!(
                            "kept: the runtime computed '{}' as {}, the model declares {}",
                            g.name(v),
                            h.dtype_name(),
                            dtype_name(g.elem_type(v))
                        ),
                    );
                    continue;
                }
                hosts.iter().map(|h| h.to_tensor("")).collect()
            };
            m.graph.replace_with_constants(n, tensors);
            changed = true;
        }
        Ok(Changed::from_bool(changed))
    }
}
