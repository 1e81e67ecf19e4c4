//! Lowering for what tract 0.23.9 cannot load: an equivalent graph it
//! runs, built before the hand-over.
//!
//! tract refuses int4/uint4 and 16-bit tensors, and ignores
//! DequantizeLinear's `block_size` (opset 21); it loads
//! `com.microsoft.MatMulNBits` but computes it in float from the packed
//! bytes on every run. Weight-only models (`quantize --mode weights`) are
//! made of exactly these, always on constant weights, so the lowering
//! dequantizes them here, in f32 as onnxruntime does, and hands tract a
//! float weight:
//! * `DequantizeLinear` of a constant with 4- or 16-bit codes, or blocked
//!   scales, becomes its float result (an initializer);
//! * `MatMulNBits` becomes `MatMul` (then `Add` of its bias) on the
//!   dequantized `[K, N]` weight;
//! * a `Cast` to float of a float16/bfloat16 weight becomes the float
//!   weight (tract folds it only under its 4 MiB budget, and otherwise
//!   re-casts it on every run);
//! * a codebook weight, `Gather(table, Cast(codes))` on constants
//!   (`pack-codebook`; uint4 codes tract cannot load), becomes the weight
//!   it gathers (tract folds it only under its 4 MiB budget);
//! * 16-bit activation `QuantizeLinear` / `DequantizeLinear`
//!   (`--activations u16|s16`, `--promote 16`) become the float ops ONNX
//!   defines them by — `Clip(Round(x / s) + zp, qmin, qmax)` and
//!   `(q − zp) · s`, `Round` half to even in both runtimes — so the codes
//!   travel as exact small integers in f32 and the result is what the
//!   16-bit file computes.
//!
//! The result computes what the original file computes (up to float
//! summation order); the report says when validation ran through it.

use crate::ir::{At, Graph, Model, NodeId, Tensor, ValueId};
use crate::proto::tensor_proto::DataType;
use crate::proto::{AttributeProto, NodeProto};

/// A default-domain node of `op_type` with `attrs`.
fn new_node(op_type: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.into()),
        attribute: attrs,
        ..Default::default()
    }
}

/// What [`for_tract`] rewrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lowered {
    /// Constant DequantizeLinear nodes folded to float weights.
    pub dequantized: usize,
    /// MatMulNBits nodes turned into MatMul.
    pub matmul_nbits: usize,
    /// Casts of float16/bfloat16 weights folded to float weights.
    pub half_casts: usize,
    /// 16-bit activation QuantizeLinear/DequantizeLinear run as float ops.
    pub wide_qdq: usize,
    /// Codebook weights (`Gather` of a table by constant codes) expanded.
    pub codebooks: usize,
}

impl Lowered {
    pub fn any(&self) -> bool {
        self.dequantized + self.matmul_nbits + self.half_casts + self.wide_qdq + self.codebooks > 0
    }
}

/// The code range of a 16-bit zero point's type, if it is one.
fn wide_bounds(g: &Graph, z: ValueId) -> Option<(f32, f32)> {
    match DataType::try_from(g.constant(z)?.dtype()) {
        Ok(DataType::Uint16) => Some((0.0, 65535.0)),
        Ok(DataType::Int16) => Some((-32768.0, 32767.0)),
        _ => None,
    }
}

/// A QuantizeLinear to 16-bit codes, or a DequantizeLinear of 16-bit
/// activation codes, with one scale and zero point: run as float ops.
fn is_wide_qdq(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    let is_q = node.is("QuantizeLinear");
    if !(is_q || node.is("DequantizeLinear")) {
        return false;
    }
    let scalar = |v: Option<ValueId>| {
        v.and_then(|v| g.constant(v))
            .is_some_and(|t| t.len() == 1 && t.dtype() == DataType::Float as i32)
    };
    let activation = is_q || node.input(0).is_some_and(|x| g.constant(x).is_none());
    activation
        && scalar(node.input(1))
        && node.input(2).is_some_and(|z| wide_bounds(g, z).is_some())
}

/// Replaces 16-bit QuantizeLinear/DequantizeLinear `n` by its float ops.
fn lower_wide_qdq(g: &mut Graph, n: NodeId) {
    let node = g.node(n);
    let is_q = node.is("QuantizeLinear");
    let (x, s, z) = (
        node.input(0).expect("invariant: checked"),
        node.input(1).expect("invariant: checked"),
        node.input(2).expect("invariant: checked"),
    );
    let (lo, hi) = wide_bounds(g, z).expect("invariant: checked");
    let zf = g
        .constant(z)
        .and_then(|t| t.to_f32().ok())
        .and_then(|a| a.iter().next().copied())
        .unwrap_or(0.0);
    let y = node.output();
    let name = g.name(y).to_string();
    let scalar = |g: &mut Graph, suffix: &str, v: f32| {
        g.add_initializer(Tensor::from_f32(
            &format!("{name}_{suffix}"),
            &ndarray::arr0(v).into_dyn(),
        ))
    };
    let zv = scalar(g, "zp_lowered", zf);
    let op = |g: &mut Graph, ty: &str, ins: &[Option<ValueId>], suffix: &str| {
        g.add_op(
            new_node(ty, vec![]),
            ins,
            &[&format!("{name}_{suffix}")],
            At::Before(n),
        )
        .1[0]
    };
    let out = if is_q {
        let lov = scalar(g, "qmin_lowered", lo);
        let hiv = scalar(g, "qmax_lowered", hi);
        let d = op(g, "Div", &[Some(x), Some(s)], "div_lowered");
        let r = op(g, "Round", &[Some(d)], "round_lowered");
        let a = op(g, "Add", &[Some(r), Some(zv)], "zp_add_lowered");
        op(g, "Clip", &[Some(a), Some(lov), Some(hiv)], "lowered")
    } else {
        let d = op(g, "Sub", &[Some(x), Some(zv)], "zp_sub_lowered");
        op(g, "Mul", &[Some(d), Some(s)], "lowered")
    };
    replace(g, n, y, out);
}

/// A DequantizeLinear tract cannot load: 4- or 16-bit codes, or blocks.
fn needs_lowering_dq(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if !node.is("DequantizeLinear") {
        return false;
    }
    let narrow = node
        .input(0)
        .and_then(|v| g.constant(v))
        .map(|t| {
            matches!(
                DataType::try_from(t.dtype()),
                Ok(DataType::Int4 | DataType::Uint4 | DataType::Int16 | DataType::Uint16)
            )
        })
        .unwrap_or(false);
    narrow || node.attr_i("block_size").unwrap_or(0) != 0
}

/// A Cast to float of a constant float16/bfloat16 weight
/// (`convert-float{storage-only=true}`): tract folds it only while the
/// result fits its 4 MiB constant-folding budget, and otherwise casts the
/// whole weight on every run.
fn is_half_weight_cast(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    node.is("Cast")
        && node.attr_i("to") == Some(DataType::Float as i64)
        && node.input(0).and_then(|v| g.constant(v)).is_some_and(|t| {
            t.dtype() == DataType::Float16 as i32 || t.dtype() == DataType::Bfloat16 as i32
        })
}

/// The codes of a codebook index: `Cast(codes)` or, with per-channel
/// tables, `Add(Cast(codes), offsets)` on constants. Returns the Cast, the
/// codes and the offsets.
fn codebook_index(g: &Graph, idx: ValueId) -> Option<(NodeId, &Tensor, Option<&Tensor>)> {
    let p = g.producer(idx);
    let (cast, offsets) = if g.node(p).is("Add") {
        let c = g.producer(g.node(p).input(0)?);
        (c, Some(g.constant(g.node(p).input(1)?)?))
    } else {
        (p, None)
    };
    if !g.node(cast).is("Cast") {
        return None;
    }
    let codes = g.constant(g.node(cast).input(0)?)?;
    Some((cast, codes, offsets))
}

/// `Gather(table, index)` with a constant 1-D table and a constant
/// [`codebook_index`]: a `pack-codebook` or `codebook-float` weight.
fn is_codebook(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if !node.is("Gather") || node.attr_i("axis").unwrap_or(0) != 0 {
        return false;
    }
    let table = node.input(0).and_then(|v| g.constant(v));
    table.is_some_and(|t| t.dims().len() == 1)
        && node.input(1).and_then(|v| codebook_index(g, v)).is_some()
}

/// The weight a codebook `Gather` makes: the table's values at the codes
/// (plus their channel's offset), in the table's type and the codes'
/// shape; and the nodes computing the index, to remove.
fn expand_codebook(g: &Graph, n: NodeId) -> Option<(Tensor, Vec<NodeId>)> {
    let node = g.node(n);
    let table = g.constant(node.input(0)?)?;
    let idx_v = node.input(1)?;
    let (cast, codes, offsets) = codebook_index(g, idx_v)?;
    let width = table.nbytes() / table.len().max(1);
    let raw_table = table.raw_bytes().ok()?;
    let mut idx: Vec<i64> = match DataType::try_from(codes.dtype()) {
        Ok(DataType::Uint4) => {
            crate::ir::tensor::unpack4(&codes.raw_bytes().ok()?, codes.len(), false)
                .into_iter()
                .map(i64::from)
                .collect()
        }
        _ => codes.to_i64().ok()?,
    };
    if let Some(off) = offsets {
        let shape = |d: &[i64]| -> Vec<usize> { d.iter().map(|&x| x as usize).collect() };
        let a = ndarray::ArrayD::from_shape_vec(shape(codes.dims()), idx).ok()?;
        let o = ndarray::ArrayD::from_shape_vec(shape(off.dims()), off.to_i64().ok()?).ok()?;
        let sum = &a + &o.broadcast(a.shape())?;
        idx = sum.iter().copied().collect();
    }
    let mut out = Vec::with_capacity(idx.len() * width);
    for i in idx {
        let i = usize::try_from(i).ok().filter(|&i| i < table.len())?;
        out.extend_from_slice(&raw_table[i * width..(i + 1) * width]);
    }
    let name = format!("{}_lowered", g.name(node.output()));
    let mut index_nodes = vec![g.producer(idx_v)];
    if index_nodes[0] != cast {
        index_nodes.push(cast);
    }
    Some((
        Tensor::from_raw(&name, table.dtype(), codes.dims(), out.into()),
        index_nodes,
    ))
}

fn is_matmul_nbits(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    node.domain() == "com.microsoft" && node.op_type() == "MatMulNBits"
}

/// What [`for_tract`] would rewrite in `model`, counted without rewriting
/// it (for a report about a model validated through the lowering).
pub fn count(model: &Model) -> Lowered {
    let g = &model.graph;
    let mut l = Lowered::default();
    for n in g.ops() {
        if needs_lowering_dq(g, n) {
            l.dequantized += 1;
        } else if is_matmul_nbits(g, n) {
            l.matmul_nbits += 1;
        } else if is_half_weight_cast(g, n) {
            l.half_casts += 1;
        } else if is_wide_qdq(g, n) {
            l.wide_qdq += 1;
        } else if is_codebook(g, n) {
            l.codebooks += 1;
        }
    }
    l
}

/// The model rewritten so tract can load it, or `None` when it already
/// can (nothing to lower, or a form this lowering does not know, which
/// tract then reports as it loads).
pub fn for_tract(model: &Model) -> Option<(Model, Lowered)> {
    if !count(model).any() {
        return None;
    }
    let mut m = model.clone();
    let mut done = Lowered::default();
    let todo: Vec<NodeId> = m.graph.ops();
    for n in todo {
        if needs_lowering_dq(&m.graph, n) {
            if let Some(w) = dequantize_constant(&m.graph, n) {
                let g = &mut m.graph;
                let y = g.node(n).output();
                let name = g.name(y).to_string();
                let v = g.add_initializer(Tensor::from_f32(&format!("{name}_lowered"), &w));
                replace(g, n, y, v);
                done.dequantized += 1;
            }
        } else if is_matmul_nbits(&m.graph, n) && lower_matmul_nbits(&mut m.graph, n) {
            done.matmul_nbits += 1;
        } else if is_half_weight_cast(&m.graph, n) {
            let g = &mut m.graph;
            let w = g
                .node(n)
                .input(0)
                .and_then(|v| g.constant(v))
                .and_then(|t| t.to_f32().ok());
            if let Some(w) = w {
                let y = g.node(n).output();
                let name = g.name(y).to_string();
                let v = g.add_initializer(Tensor::from_f32(&format!("{name}_lowered"), &w));
                replace(g, n, y, v);
                done.half_casts += 1;
            }
        } else if is_wide_qdq(&m.graph, n) {
            lower_wide_qdq(&mut m.graph, n);
            done.wide_qdq += 1;
        } else if is_codebook(&m.graph, n) {
            if let Some((w, index_nodes)) = expand_codebook(&m.graph, n) {
                let g = &mut m.graph;
                let y = g.node(n).output();
                let v = g.add_initializer(w);
                replace(g, n, y, v);
                // The Add (if any) first, then the Cast it read.
                for k in index_nodes {
                    let c = g.node(k).output();
                    if g.users(c).is_empty() && g.output_ports(c).is_empty() {
                        g.remove_node(k);
                    }
                }
                done.codebooks += 1;
            }
        }
    }
    if !done.any() {
        return None;
    }
    // The codes, scales and zero points nothing reads now: tract would
    // still parse them (and refuse a 4-bit one).
    let g = &mut m.graph;
    for n in g.initializer_nodes() {
        let v = g.node(n).output();
        if g.users(v).is_empty() && g.output_ports(v).is_empty() {
            g.remove_node(n);
        }
    }
    Some((m, done))
}

/// Points every reader (and graph output) of `y`, node `n`'s output, at
/// `v` and removes `n`.
fn replace(g: &mut Graph, n: NodeId, y: ValueId, v: ValueId) {
    g.replace_value(y, v);
    g.remove_node(n);
}

/// DequantizeLinear's result on constant operands, as ONNX defines it
/// (opset 21): `(x − zp) · scale` with the scale (and zero point) of the
/// element's block along `axis` — the whole tensor for a scalar scale,
/// one per index of `axis` for a 1-D one, `block_size` consecutive
/// indices for a blocked one (same rank as `x`).
fn dequantize_constant(g: &Graph, n: NodeId) -> Option<ndarray::ArrayD<f32>> {
    let node = g.node(n);
    let x = g.constant(node.input(0)?)?.to_f32().ok()?;
    let s = g.constant(node.input(1)?)?;
    if s.dtype() != DataType::Float as i32 {
        return None;
    }
    let s = s.to_f32().ok()?;
    let zp = match node.input(2) {
        Some(z) => Some(g.constant(z)?.to_f32().ok()?),
        None => None,
    };
    let dims = x.shape().to_vec();
    let rank = dims.len() as i64;
    let axis = node.attr_i("axis").unwrap_or(1);
    let axis = if axis < 0 { axis + rank } else { axis };
    let bs = node.attr_i("block_size").unwrap_or(0).max(0) as usize;
    // Map an element index to its scale index.
    let strides: Vec<usize> = (0..dims.len())
        .map(|d| dims[d + 1..].iter().product())
        .collect();
    let sdims = s.shape().to_vec();
    let kind = if s.len() == 1 {
        0
    } else if bs == 0 && sdims.len() == 1 && (0..rank).contains(&axis) {
        1
    } else if bs > 0 && sdims.len() == dims.len() && (0..rank).contains(&axis) {
        2
    } else {
        return None;
    };
    let a = axis.max(0) as usize;
    if kind == 1 && sdims[0] != dims[a] {
        return None;
    }
    if kind == 2
        && (0..dims.len()).any(|d| {
            sdims[d]
                != if d == a {
                    dims[a].div_ceil(bs)
                } else {
                    dims[d]
                }
        })
    {
        return None;
    }
    let sstrides: Vec<usize> = (0..sdims.len())
        .map(|d| sdims[d + 1..].iter().product())
        .collect();
    let sv: Vec<f32> = s.iter().copied().collect();
    let zv: Option<Vec<f32>> = zp.map(|z| z.iter().copied().collect());
    if zv.as_ref().is_some_and(|z| z.len() != sv.len()) {
        return None;
    }
    let out: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let si = match kind {
                0 => 0,
                1 => (i / strides[a]) % dims[a],
                _ => (0..dims.len())
                    .map(|d| {
                        let c = (i / strides[d]) % dims[d];
                        let c = if d == a { c / bs } else { c };
                        c * sstrides[d]
                    })
                    .sum(),
            };
            let z = zv.as_ref().map_or(0.0, |z| z[si]);
            (q - z) * sv[si]
        })
        .collect();
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), out).ok()
}

/// Rewrites one MatMulNBits on constant operands into MatMul (+ Add of
/// its bias) on the dequantized weight. Returns false (nothing changed)
/// for a form it does not know (act-order `g_idx`, non-constant weights).
fn lower_matmul_nbits(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n);
    let (Some(k), Some(nn), Some(bs)) = (
        node.attr_i("K"),
        node.attr_i("N"),
        node.attr_i("block_size"),
    ) else {
        return false;
    };
    let bits = node.attr_i("bits").unwrap_or(4);
    if !matches!(bits, 2 | 4 | 8) || k <= 0 || nn <= 0 || bs <= 0 || node.input(4).is_some() {
        return false;
    }
    let (k, nn, bs, bits) = (k as usize, nn as usize, bs as usize, bits as usize);
    let kb = k.div_ceil(bs);
    let blob = bs * bits / 8;
    let Some(a) = node.input(0) else { return false };
    let Some(b) = node.input(1).and_then(|v| g.constant(v)) else {
        return false;
    };
    let Some(s) = node.input(2).and_then(|v| g.constant(v)) else {
        return false;
    };
    if s.dtype() != DataType::Float as i32 || b.dtype() != DataType::Uint8 as i32 {
        return false;
    }
    let (Ok(braw), Ok(scales)) = (b.raw_bytes(), s.to_f32()) else {
        return false;
    };
    let scales: Vec<f32> = scales.iter().copied().collect();
    if braw.len() != nn * kb * blob || scales.len() != nn * kb {
        return false;
    }
    let per_byte = 8 / bits;
    let mask = (1u32 << bits) - 1;
    let code = |bytes: &[u8], i: usize| -> f32 {
        let byte = bytes[i / per_byte] as u32;
        ((byte >> ((i % per_byte) * bits)) & mask) as f32
    };
    // Zero points: packed like B (per row of N, `kb` codes), or float.
    let default_zp = (1u32 << (bits - 1)) as f32;
    let zp: Vec<f32> = match node.input(3) {
        None => vec![default_zp; nn * kb],
        Some(z) => {
            let Some(zt) = g.constant(z) else {
                return false;
            };
            if zt.dtype() == DataType::Uint8 as i32 {
                let Ok(raw) = zt.raw_bytes() else {
                    return false;
                };
                let row = kb.div_ceil(per_byte);
                if raw.len() != nn * row {
                    return false;
                }
                (0..nn * kb)
                    .map(|i| code(&raw[(i / kb) * row..(i / kb + 1) * row], i % kb))
                    .collect()
            } else {
                match zt.to_f32() {
                    Ok(z) if z.len() == nn * kb => z.iter().copied().collect(),
                    _ => return false,
                }
            }
        }
    };
    let mut w = vec![0f32; k * nn];
    for col in 0..nn {
        for blk in 0..kb {
            let bytes = &braw[(col * kb + blk) * blob..(col * kb + blk + 1) * blob];
            let (sc, z) = (scales[col * kb + blk], zp[col * kb + blk]);
            for j in 0..bs {
                let row = blk * bs + j;
                if row < k {
                    w[row * nn + col] = (code(bytes, j) - z) * sc;
                }
            }
        }
    }
    let bias = node.input(5);
    let y = node.output();
    let name = g.name(y).to_string();
    let w = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[k, nn]), w)
        .expect("invariant: k × n values");
    let wv = g.add_initializer(Tensor::from_f32(&format!("{name}_weight_lowered"), &w));
    let (mm, out) = g.add_op(
        new_node("MatMul", vec![]),
        &[Some(a), Some(wv)],
        &[&format!("{name}_lowered")],
        At::Before(n),
    );
    g.take_label(n, mm);
    let out = match bias {
        Some(bv) => {
            g.add_op(
                new_node("Add", vec![]),
                &[Some(out[0]), Some(bv)],
                &[&format!("{name}_lowered_bias")],
                At::Before(n),
            )
            .1[0]
        }
        None => out[0],
    };
    replace(g, n, y, out);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(crate::proto::attribute_proto::AttributeType::Int as i32),
            i: Some(v),
            ..Default::default()
        }
    }

    /// A blocked uint4 DequantizeLinear folds to `(q − zp) · scale` with
    /// each element's block's scale and zero point.
    #[test]
    fn blocked_dequantize_folds_to_its_float_weight() {
        // x: uint4 [4, 2], blocks of 2 rows along axis 0: scales [2, 2].
        let codes = [1, 15, 2, 14, 3, 13, 4, 12];
        let pack = |c: &[i32]| -> Vec<u8> {
            c.chunks(2)
                .map(|p| (p[0] as u8) | ((p.get(1).copied().unwrap_or(0) as u8) << 4))
                .collect()
        };
        let mut g = Graph::default();
        let q = g.add_initializer(Tensor::from_raw(
            "w_q",
            DataType::Uint4 as i32,
            &[4, 2],
            bytes::Bytes::from(pack(&codes)),
        ));
        let scales = [0.5f32, 0.25, 2.0, 1.0];
        let s = g.add_initializer(Tensor::from_f32(
            "w_s",
            &ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 2]), scales.to_vec()).unwrap(),
        ));
        let zps = [8, 7, 0, 1];
        let z = g.add_initializer(Tensor::from_raw(
            "w_zp",
            DataType::Uint4 as i32,
            &[2, 2],
            bytes::Bytes::from(pack(&zps)),
        ));
        let attrs = vec![int_attr("axis", 0), int_attr("block_size", 2)];
        let (dq, _) = g.add_op(
            new_node("DequantizeLinear", attrs),
            &[Some(q), Some(s), Some(z)],
            &["w_dq"],
            At::End,
        );
        assert!(needs_lowering_dq(&g, dq));
        let got = dequantize_constant(&g, dq).expect("folds");
        assert_eq!(got.shape(), &[4, 2]);
        let want: Vec<f32> = (0..8)
            .map(|i| {
                let (r, c) = (i / 2, i % 2);
                let b = (r / 2) * 2 + c;
                (codes[i] - zps[b]) as f32 * scales[b]
            })
            .collect();
        assert_eq!(got.iter().copied().collect::<Vec<_>>(), want);
    }
}
