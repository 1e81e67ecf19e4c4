//! The static cost model: what each ONNX node costs, from shapes alone.
//!
//! For every op node: multiply-accumulates (MACs), output elements, bytes
//! read and written, and parameters (elements of constant operands). The
//! shapes come from the graph's declared types — run `shape-inference` with
//! fixed input shapes first, or most intermediate shapes are unknown and the
//! costs that need them are `None`.
//!
//! MAC formulas (output shape `Y`, `|T|` = element count of `T`):
//!
//! | op | MACs |
//! |---|---|
//! | `Conv`, `ConvInteger`, `QLinearConv` | `|Y| · |W| / W[0]` (`W` is `[M, C/group, k…]`: one output element reads `C/group · ∏k` taps; dilation and stride only move the taps) |
//! | `ConvTranspose` | `|X| · |W| / W[0]` (`W` is `[C, M/group, k…]`: every input element is scattered to `M/group · ∏k` outputs) |
//! | `MatMul`, `MatMulInteger`, `QLinearMatMul` | `|Y| · K`, `K` the last dim of `A` (batch and broadcast dims are in `|Y|`) |
//! | `Gemm` | `|Y| · K`, `K = A[1]` (`A[0]` with `transA`) |
//! | `LSTM`, `GRU`, `RNN` | `seq · batch · (|W| + |R|)`: per step, every gate weight of input and recurrence once |
//! | anything else | 0 (elementwise, data movement, reductions: see `elements`) |
//!
//! Bias additions are not counted as MACs. Bytes are `elements × element
//! size` summed over the present inputs (constants included: weights are
//! read too) and over the outputs.

use crate::ir::{Graph, Model, NodeId, NodeKind, ValueId};
use crate::proto::dtype_bits;

/// What one ONNX node costs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeCost {
    /// The node's label ([`crate::ir::Node::label`]), which the runtime's
    /// timings ([`crate::runtime::NodeTime::onnx_nodes`]) use too.
    pub node: String,
    /// `op_type`, prefixed with the domain outside the default one.
    pub op: String,
    /// Shape of the first output, if static.
    pub output_shape: Option<Vec<usize>>,
    /// Multiply-accumulates; `None` when an op that has them lacks a shape.
    pub macs: Option<u64>,
    /// Elements of all outputs (the work of elementwise ops); `None` if an
    /// output shape is unknown.
    pub elements: Option<u64>,
    /// Bytes of all present inputs; `None` if one's shape or type is unknown.
    pub bytes_read: Option<u64>,
    /// Bytes of all outputs; `None` if one's shape or type is unknown.
    pub bytes_written: Option<u64>,
    /// Elements of the constant operands (initializers, `Constant` outputs).
    pub params: u64,
}

/// The op column: `Conv`, or `com.microsoft.FusedConv` outside the default
/// domain.
pub fn op_name(g: &Graph, n: NodeId) -> String {
    let node = g.node(n);
    if node.domain().is_empty() {
        node.op_type().to_string()
    } else {
        format!("{}.{}", node.domain(), node.op_type())
    }
}

fn product(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

/// Static shape of operand `i`, if present and known.
fn in_shape(g: &Graph, n: NodeId, i: usize) -> Option<Vec<usize>> {
    g.node(n).input(i).and_then(|v| shape_of(g, v))
}

/// Static shape of `v`: declared, or the tensor a `Constant` node holds.
fn shape_of(g: &Graph, v: ValueId) -> Option<Vec<usize>> {
    if let Some(s) = g.static_shape(v) {
        return Some(s);
    }
    let p = g.producer_node(v);
    if p.is("Constant") {
        let t = p.attr("value").and_then(|a| a.t.as_ref())?;
        return t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
    }
    None
}

/// Element type of `v`, looking into `Constant` nodes too (0 = unknown).
fn elem_of(g: &Graph, v: ValueId) -> i32 {
    match g.elem_type(v) {
        0 => {
            let p = g.producer_node(v);
            p.attr("value")
                .filter(|_| p.is("Constant"))
                .and_then(|a| a.t.as_ref())
                .map(|t| t.data_type())
                .unwrap_or(0)
        }
        t => t,
    }
}

/// Whether `v` is a constant operand: an initializer that cannot be
/// overridden, or the result of a `Constant` node.
fn is_constant(g: &Graph, v: ValueId) -> bool {
    g.constant(v).is_some() || g.producer_node(v).is("Constant")
}

fn bytes(g: &Graph, vs: impl Iterator<Item = ValueId>) -> Option<u64> {
    let mut total = 0u64;
    for v in vs {
        let bits = dtype_bits(elem_of(g, v))? as u64;
        total += (product(&shape_of(g, v)?) * bits).div_ceil(8);
    }
    Some(total)
}

/// The MACs of node `n`; see the module docs for the formulas.
fn macs(g: &Graph, n: NodeId, out: Option<&[usize]>) -> Option<u64> {
    let node = g.node(n);
    if !node.domain().is_empty() {
        return Some(0);
    }
    // |W| / W[0] for weight operand `w`.
    let per_row = |w: usize| -> Option<u64> {
        let ws = in_shape(g, n, w)?;
        Some(product(ws.get(1..)?))
    };
    match node.op_type() {
        "Conv" | "ConvInteger" => Some(product(out?) * per_row(1)?),
        "QLinearConv" => Some(product(out?) * per_row(3)?),
        "ConvTranspose" => Some(product(&in_shape(g, n, 0)?) * per_row(1)?),
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            let k = *in_shape(g, n, 0)?.last()? as u64;
            Some(product(out?) * k)
        }
        "Gemm" => {
            let a = in_shape(g, n, 0)?;
            let k = if node.attr_i("transA").unwrap_or(0) != 0 {
                *a.first()?
            } else {
                *a.get(1)?
            };
            Some(product(out?) * k as u64)
        }
        "LSTM" | "GRU" | "RNN" => {
            // X is [seq, batch, input] (or [batch, seq, input] with
            // layout=1): seq · batch either way.
            let x = in_shape(g, n, 0)?;
            let steps = product(x.get(..2)?);
            let w = product(&in_shape(g, n, 1)?);
            let r = product(&in_shape(g, n, 2)?);
            Some(steps * (w + r))
        }
        _ => Some(0),
    }
}

/// The cost of op node `n`.
pub fn node_cost(g: &Graph, n: NodeId) -> NodeCost {
    let node = g.node(n);
    let outs: Vec<ValueId> = node.outputs().iter().flatten().copied().collect();
    let ins: Vec<ValueId> = node.inputs().iter().flatten().copied().collect();
    let output_shape = outs.first().and_then(|&v| shape_of(g, v));
    let elements = outs
        .iter()
        .map(|&v| shape_of(g, v).map(|s| product(&s)))
        .sum::<Option<u64>>();
    let params = ins
        .iter()
        .filter(|&&v| is_constant(g, v))
        .filter_map(|&v| shape_of(g, v).map(|s| product(&s)))
        .sum();
    NodeCost {
        node: g.label(n).to_string(),
        op: op_name(g, n),
        macs: macs(g, n, output_shape.as_deref()),
        output_shape,
        elements,
        bytes_read: bytes(g, ins.iter().copied()),
        bytes_written: bytes(g, outs.iter().copied()),
        params,
    }
}

/// Costs of every op node of the main graph, in topological order.
pub fn model_costs(m: &Model) -> Vec<NodeCost> {
    let g = &m.graph;
    g.ops()
        .into_iter()
        .filter(|&n| matches!(g.node(n).kind(), NodeKind::Op(_)))
        .map(|n| node_cost(g, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::text::parse_model;

    /// Costs of a one-node body `node` over declared values `decls`.
    fn costs(inputs: &str, outputs: &str, decls: &str, body: &str) -> Vec<NodeCost> {
        let text = format!(
            "<ir_version: 8, opset_import: [\"\" : 17]>\ng ({inputs}) => ({outputs})\n<\n{decls}\n>\n{{\n{body}\n}}\n"
        );
        let m = parse_model(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        model_costs(&m)
    }

    #[test]
    fn grouped_strided_conv() {
        // 8 output channels, 2 groups of 2 input channels, 3x3, stride 2:
        // each of the 1·8·4·4 = 128 outputs reads 2·3·3 = 18 taps.
        let c = costs(
            "float[1,4,8,8] X",
            "float[1,8,4,4] Y",
            "float[8,2,3,3] W = {... 144 elements, hash 00000000}",
            "[conv] Y = Conv <group: int = 2, pads: ints = [1, 1, 1, 1], strides: ints = [2, 2]> (X, W)",
        );
        assert_eq!(c[0].node, "conv");
        assert_eq!(c[0].op, "Conv");
        assert_eq!(c[0].output_shape, Some(vec![1, 8, 4, 4]));
        assert_eq!(c[0].macs, Some(2304));
        assert_eq!(c[0].params, 144);
        assert_eq!(c[0].elements, Some(128));
        assert_eq!(c[0].bytes_read, Some((256 + 144) * 4));
        assert_eq!(c[0].bytes_written, Some(128 * 4));
    }

    #[test]
    fn dilated_conv_with_bias() {
        // 10x10 input, 3x3 kernel dilated by 2 spans 5: 6x6 output;
        // 4·6·6 = 144 outputs of 3·3·3 = 27 taps; the bias adds no MACs.
        let c = costs(
            "float[1,3,10,10] X",
            "float[1,4,6,6] Y",
            "float[4,3,3,3] W = {... 108 elements, hash 00000000}, float[4] B = {0.0, 0.0, 0.0, 0.0}",
            "Y = Conv <dilations: ints = [2, 2]> (X, W, B)",
        );
        assert_eq!(
            c[0].node, "Conv@Y",
            "unnamed nodes are labelled by op and output"
        );
        assert_eq!(c[0].macs, Some(3888));
        assert_eq!(c[0].params, 112);
    }

    #[test]
    fn conv_transpose() {
        // Every one of the 4·5·5 = 100 inputs is scattered to 2·3·3 = 18
        // outputs: 1800 (the output is 11x11, which does not enter).
        let c = costs(
            "float[1,4,5,5] X",
            "float[1,2,11,11] Y",
            "float[4,2,3,3] W = {... 72 elements, hash 00000000}",
            "Y = ConvTranspose <strides: ints = [2, 2]> (X, W)",
        );
        assert_eq!(c[0].macs, Some(1800));
    }

    #[test]
    fn batched_and_broadcast_matmul() {
        // [2,1,4,5] x [3,5,6] -> [2,3,4,6]: 144 outputs, K = 5.
        let c = costs(
            "float[2,1,4,5] A, float[3,5,6] B",
            "float[2,3,4,6] Y",
            "",
            "Y = MatMul (A, B)",
        );
        assert_eq!(c[0].macs, Some(720));
        assert_eq!(c[0].params, 0, "graph inputs are not parameters");
    }

    #[test]
    fn gemm_trans_a() {
        // A is [K=5, M=4] transposed; B [5,6]: 4·6 outputs of 5 MACs.
        let c = costs(
            "float[5,4] A",
            "float[4,6] Y",
            "float[5,6] B = {... 30 elements, hash 00000000}, float[6] C = {... 6 elements, hash 00000000}",
            "Y = Gemm <transA: int = 1> (A, B, C)",
        );
        assert_eq!(c[0].macs, Some(120));
        assert_eq!(c[0].params, 36);
    }

    #[test]
    fn lstm() {
        // 7 steps, batch 1, input 10, hidden 16: per step 4·16·10 input
        // and 4·16·16 recurrent weights.
        let c = costs(
            "float[7,1,10] X",
            "float[7,1,1,16] Y",
            "float[1,64,10] W = {... 640 elements, hash 00000000}, float[1,64,16] R = {... 1024 elements, hash 00000000}",
            "Y = LSTM <hidden_size: int = 16> (X, W, R)",
        );
        assert_eq!(c[0].macs, Some(7 * (640 + 1024)));
    }

    #[test]
    fn elementwise_and_unknown_shapes() {
        let c = costs(
            "float[2,3] X",
            "float[2,3] Y",
            "",
            "A = Relu (X)\n  Y = Add (A, X)",
        );
        assert_eq!(c[0].macs, Some(0));
        // A has no declared shape: elements and bytes are unknown, MACs are
        // still 0 (Relu has none whatever the shape).
        assert_eq!(c[0].elements, None);
        assert_eq!(c[0].bytes_written, None);
        assert_eq!(c[0].bytes_read, Some(24));
        assert_eq!(c[1].elements, Some(6));
        // A MatMul without shapes has unknown MACs, not zero.
        let c = costs("float[2,3] X", "Y", "", "Y = MatMul (X, X)");
        assert_eq!(c[0].macs, None);
    }

    #[test]
    fn constant_node_weights_count_as_parameters() {
        let c = costs(
            "float[1,3] X",
            "float[1,2] Y",
            "",
            "W = Constant <value: tensor = float[3,2] {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}> ()\n  Y = MatMul (X, W)",
        );
        assert_eq!(c[0].op, "Constant");
        assert_eq!(c[0].params, 0);
        assert_eq!(c[0].bytes_written, Some(24));
        assert_eq!(c[1].params, 6);
        assert_eq!(c[1].macs, Some(6));
    }
}
