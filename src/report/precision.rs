//! Where a model's compute runs by precision: the compute ops (Conv,
//! MatMul, Gemm and their quantized forms) grouped by the precision a
//! runtime runs them in, with their weight bytes and MACs. `inspect` and
//! the quantize report both show it.

use std::collections::BTreeMap;

use crate::ir::{Graph, Model, NodeId};

/// The compute ops of one precision.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Default)]
pub struct PrecisionShare {
    pub ops: usize,
    /// Bytes of their constant weights (codes, scales and zero points
    /// included).
    pub weight_bytes: u64,
    /// Their multiply-accumulates, where every one's shapes are known.
    pub macs: Option<u64>,
}

/// The precision a compute op runs in, as a runtime sees the file: its
/// own type for QOperator and integer ops, the codes behind a
/// DequantizeLinear weight (and activation) for QDQ, else its output type.
fn precision(g: &Graph, n: NodeId) -> Option<String> {
    use crate::proto::tensor_proto::DataType;
    let node = g.node(n);
    let op = node.op_type();
    if node.domain() == "com.microsoft" && op == "MatMulNBits" {
        return Some(format!(
            "{}-bit weights (MatMulNBits)",
            node.attr_i("bits").unwrap_or(4)
        ));
    }
    if !node.domain().is_empty() {
        return None;
    }
    match op {
        "QLinearConv" | "QLinearMatMul" | "ConvInteger" | "MatMulInteger" => {
            return Some("int8 compute (QOperator/integer)".into())
        }
        "Conv" | "ConvTranspose" | "MatMul" | "Gemm" => {}
        _ => return None,
    }
    // Each operand: the bits behind its DequantizeLinear, and whether it
    // dequantizes a constant (a weight) or an activation.
    let operand = |slot: usize| -> Option<(&'static str, bool)> {
        let v = node.input(slot)?;
        let p = g.producer_node(v);
        if !p.is("DequantizeLinear") {
            return None;
        }
        let x = p.input(0)?;
        // The zero point's type when there is one (a value made by a pass
        // may carry no declared type), else the codes'.
        let t = match p.input(2).and_then(|z| g.constant(z)) {
            Some(z) => z.dtype(),
            None => g.elem_type(x),
        };
        let bits = match DataType::try_from(t) {
            Ok(DataType::Int4 | DataType::Uint4) => "4",
            Ok(DataType::Int16 | DataType::Uint16) => "16",
            _ => "8",
        };
        Some((bits, g.constant(x).is_some()))
    };
    match (operand(0), operand(1)) {
        (Some((a, false)), Some((w, true))) => {
            Some(format!("{a}-bit activations, {w}-bit weights (QDQ)"))
        }
        (Some((a, false)), Some((b, false))) => Some(format!(
            "{}-bit activations on both operands (QDQ)",
            if a == "16" || b == "16" { "16" } else { a }
        )),
        (None, Some((w, true))) => Some(format!(
            "{w}-bit weights (DequantizeLinear), float activations"
        )),
        _ => {
            // The output's declared type, else the weights' (a converted
            // file often declares no intermediate types).
            let declared = g.elem_type(node.output());
            let weight = node
                .inputs()
                .iter()
                .flatten()
                .filter_map(|v| g.constant(*v))
                .map(|t| t.dtype())
                .next()
                .unwrap_or(0);
            let t = if declared != 0 { declared } else { weight };
            Some(match DataType::try_from(t) {
                Ok(DataType::Float16) => "float16".into(),
                Ok(DataType::Bfloat16) => "bfloat16".into(),
                _ => "float32".into(),
            })
        }
    }
}

/// Bytes of the constants node `n` reads (initializers or Constant
/// nodes), directly or through a DequantizeLinear or Cast of constants.
fn weight_bytes(g: &Graph, n: NodeId) -> u64 {
    let constant = |v: crate::ir::ValueId| -> Option<u64> {
        if let Some(t) = g.constant(v) {
            return Some(t.nbytes() as u64);
        }
        let p = g.producer_node(v);
        if !p.is("Constant") {
            return None;
        }
        let t = p.attr("value")?.t.clone()?;
        Some(crate::ir::Tensor::from_proto(t).nbytes() as u64)
    };
    let mut total = 0;
    for &v in g.node(n).inputs().iter().flatten() {
        if let Some(b) = constant(v) {
            total += b;
            continue;
        }
        let p = g.producer_node(v);
        if p.is("DequantizeLinear") || p.is("Cast") {
            total += p
                .inputs()
                .iter()
                .flatten()
                .filter_map(|&x| constant(x))
                .sum::<u64>();
        }
    }
    total
}

/// The compute ops of `m` by precision. MACs are summed where every op of a
/// precision has static shapes (`None` otherwise).
pub fn compute_by_precision(m: &Model) -> BTreeMap<String, PrecisionShare> {
    compute_by_precision_with(m, &BTreeMap::new())
}

/// [`compute_by_precision`], taking an op's MACs from `macs` (by node label,
/// e.g. counted on the float model with its calibration shapes) where its
/// own shapes are not static.
pub fn compute_by_precision_with(
    m: &Model,
    macs_by_label: &BTreeMap<String, u64>,
) -> BTreeMap<String, PrecisionShare> {
    let g = &m.graph;
    let mut compute: BTreeMap<String, PrecisionShare> = BTreeMap::new();
    for n in g.ops() {
        let Some(p) = precision(g, n) else { continue };
        let node = g.node(n);
        let macs = if node.domain() == "com.microsoft" {
            // MatMulNBits: rows of A × K × N.
            (|| {
                let (k, nn) = (node.attr_i("K")?, node.attr_i("N")?);
                let a = g.static_shape(node.input(0)?)?;
                let rows: usize = a[..a.len().saturating_sub(1)].iter().product();
                Some(rows as u64 * k as u64 * nn as u64)
            })()
        } else {
            crate::analysis::cost::node_cost(g, n).macs
        }
        .filter(|&m| m > 0)
        .or_else(|| macs_by_label.get(g.label(n)).copied().filter(|&m| m > 0));
        let e = compute.entry(p).or_insert_with(|| PrecisionShare {
            macs: Some(0),
            ..Default::default()
        });
        e.ops += 1;
        e.weight_bytes += weight_bytes(g, n);
        e.macs = e.macs.zip(macs).map(|(a, b)| a + b);
    }
    compute
}
