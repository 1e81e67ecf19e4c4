//! `quantize-gather`: embedding tables stored as int8, gathered before
//! they are dequantized.
//!
//! # What
//! A `Gather` (axis 0) from a large constant float table `T[V, D]` — a
//! token or position embedding — becomes
//! `Cast(float)(Gather(T_q, idx)) · Gather(s, idx)`: the table is stored
//! as symmetric int8 with one scale per row (`s[V, 1]`), and only the
//! gathered rows are turned back into floats. Dequantizing first
//! (`DequantizeLinear(T_q) → Gather`, what onnxruntime's quantizer
//! writes) makes both runtimes rebuild the whole float table on every run:
//! onnxruntime never folds DequantizeLinear, and tract folds a constant
//! expression only while its result fits 4 MiB. Embeddings are most of a
//! small encoder's file (MiniLM-L3: 46 of 69 MB), so this is where its
//! size goes from 0.77× to about 0.3× of float.
//!
//! # Example
//! ```text
//! before:  E = Gather (T, ids)
//! after:   E_q = Gather (T_q, ids)
//!          E_f = Cast <to: FLOAT> (E_q)
//!          E_s = Gather (T_scale, ids)
//!          E = Mul (E_f, E_s)
//! ```
//!
//! With `bits=4` the table is stored as 4-bit codes, two per byte (first
//! value in the low nibble), in blocks of `block-size` values along each
//! row, each block with an f16 scale and a uint8 zero point (the block's
//! clip searched as for weights, [`crate::quant::blockwise`]): 4.75 bits
//! a value. The gathered bytes are split into their nibbles with plain
//! float ops (standard ONNX, so tract and onnxruntime both run it with
//! the table packed; no runtime has a 4-bit Gather):
//! ```text
//! I = Reshape (ids, [-1])               P = Gather (T_q, I)    uint8[n, D/2]
//! F = Cast<FLOAT> (P)                   H = Floor (F · 1/16)   L = F − 16·H
//! C = Reshape (Concat<axis: 2> (Reshape (L, [n, D/2, 1]), Reshape (H, …)), [n, D/bs, bs])
//! E = Reshape ((C − Cast (Gather (T_zp, I))) · Cast (Gather (T_scale, I)),
//!              Concat (Shape (ids), [D]))
//! ```
//!
//! # Options
//! * `bits` (default 8): 8 (per row, symmetric) or 4 (in blocks).
//! * `block-size` (default 32): values per block with `bits=4`; a divisor
//!   of the row length (a table whose rows it does not divide stays int8).
//! * `min-elements` (default 65536): smaller tables stay float (their
//!   bytes do not matter and a float Gather is one op).
//! * `exclude`: node labels (glob `*`) to leave alone.
//!
//! # Preconditions
//! None.
//!
//! # Numerics
//! Each row rounds to int8 with its own scale (max |row| / 127): the
//! relative error of a gathered value is at most 1/254 of its row's
//! largest magnitude. With `bits=4`, a value is within half a step of its
//! block's 16-level grid (or clipped to it).
//!
//! # Errors
//! Bad options.

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{At, Graph, Model, NodeId, Tensor, ValueId};
use crate::plan::glob_match;
use crate::proto::tensor_proto::DataType;

const NAME: &str = "quantize-gather";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub bits: u32,
    pub block_size: usize,
    pub min_elements: usize,
    pub exclude: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bits: 8,
            block_size: 32,
            min_elements: 1 << 16,
            exclude: vec![],
        }
    }
}

pub struct QuantizeGather {
    opts: Options,
}

impl QuantizeGather {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        let bad = super::options_error(NAME);
        if !matches!(opts.bits, 4 | 8) {
            return Err(bad(format!("bits={}: expected 4 or 8", opts.bits)));
        }
        if opts.block_size < 2 || !opts.block_size.is_multiple_of(2) {
            return Err(bad(format!(
                "block-size={}: expected an even number of values (e.g. 32)",
                opts.block_size
            )));
        }
        Ok(QuantizeGather { opts })
    }
}

use super::{int_attr, node_proto as op};

impl Pass for QuantizeGather {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let mut done = Vec::new();
        for n in g.ops() {
            if !self.eligible(g, n) {
                continue;
            }
            let label = g.label(n).to_string();
            let cols = g
                .node(n)
                .input(0)
                .and_then(|v| g.constant(v))
                .map(|t| t.dims()[1] as usize)
                .expect("invariant: checked");
            let bs = self.opts.block_size;
            let (bytes, how) = if self.opts.bits == 4 && cols.is_multiple_of(bs) {
                (rewrite4(g, n, bs), format!("4-bit in blocks of {bs}"))
            } else {
                (rewrite(g, n), "int8 per row".to_string())
            };
            done.push((label, bytes, how));
        }
        for (label, (before, after), how) in &done {
            cx.remark(
                NAME,
                label,
                format!("embedding table stored as {how}: {before} -> {after} bytes"),
            );
        }
        Ok(if done.is_empty() {
            Changed::No
        } else {
            Changed::Yes
        })
    }
}

impl QuantizeGather {
    fn eligible(&self, g: &Graph, n: NodeId) -> bool {
        let node = g.node(n);
        if !node.is("Gather") || node.attr_i("axis").unwrap_or(0) != 0 {
            return false;
        }
        let label = g.label(n);
        if self.opts.exclude.iter().any(|p| glob_match(p, label)) {
            return false;
        }
        let Some(t) = node.input(0).and_then(|v| g.constant(v)) else {
            return false;
        };
        let elems: i64 = t.dims().iter().product();
        t.dtype() == DataType::Float as i32
            && t.dims().len() == 2
            && elems >= self.opts.min_elements as i64
            && node.input(1).is_some_and(|i| g.constant(i).is_none())
            // A table read elsewhere too (tied input/output embeddings)
            // would stay float beside its copy: no smaller file.
            && node.input(0).is_some_and(|v| g.users(v).len() == 1)
    }
}

/// What a rewrite reads of an eligible Gather.
struct Table {
    /// The float table `[rows, cols]`, and its values.
    tv: ValueId,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
    /// The indices and the gathered result.
    idx: ValueId,
    y: ValueId,
}

impl Table {
    fn read(g: &Graph, n: NodeId) -> Table {
        let node = g.node(n);
        let (tv, idx) = (
            node.input(0).expect("invariant: checked"),
            node.input(1).expect("invariant: checked"),
        );
        let t = g.constant(tv).expect("invariant: checked");
        Table {
            tv,
            idx,
            y: node.output(),
            rows: t.dims()[0] as usize,
            cols: t.dims()[1] as usize,
            data: t
                .to_f32()
                .expect("invariant: float table")
                .iter()
                .copied()
                .collect(),
        }
    }
}

/// Rewrites one Gather; returns the table's bytes before and after.
fn rewrite(g: &mut Graph, n: NodeId) -> (usize, usize) {
    let Table {
        tv,
        idx,
        y,
        rows,
        cols,
        data,
    } = Table::read(g, n);
    let tname = g.name(tv).to_string();
    let base = g.name(y).to_string();
    let wq = crate::quant::quantize_weights(&data, &[rows, cols], Some(0), false);
    let tq = g.add_initializer(Tensor::from_i8(
        &format!("{tname}_q"),
        &[rows as i64, cols as i64],
        &wq.q,
    ));
    let scales = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rows, 1]), wq.scales)
        .expect("invariant: one scale per row");
    let ts = g.add_initializer(Tensor::from_f32(&format!("{tname}_scale"), &scales));
    let attrs = g.node(n).op().expect("invariant: an op").attribute.clone();
    let (gq, eq) = g.add_op(
        op("Gather", attrs.clone()),
        &[Some(tq), Some(idx)],
        &[&format!("{base}_q")],
        At::Before(n),
    );
    let to = int_attr("to", DataType::Float as i64);
    let (_, ef) = g.add_op(
        op("Cast", vec![to]),
        &[Some(eq[0])],
        &[&format!("{base}_f")],
        At::Before(n),
    );
    let (_, es) = g.add_op(
        op("Gather", attrs),
        &[Some(ts), Some(idx)],
        &[&format!("{base}_s")],
        At::Before(n),
    );
    let (_, out) = g.add_op(
        op("Mul", vec![]),
        &[Some(ef[0]), Some(es[0])],
        &[&format!("{base}_deq")],
        At::Before(n),
    );
    g.take_label(n, gq);
    g.replace_value(y, out[0]);
    g.remove_node(n);
    (rows * cols * 4, rows * cols + rows * 4)
}

/// Rewrites one Gather to a 4-bit table in blocks of `bs` along each row
/// (`bs` divides the row length; checked by the caller). Returns the
/// table's bytes before and after.
fn rewrite4(g: &mut Graph, n: NodeId, bs: usize) -> (usize, usize) {
    use crate::quant::blockwise::{self, Spec};
    let Table {
        tv,
        idx,
        y,
        rows,
        cols,
        data,
    } = Table::read(g, n);
    // Blocks run along a row: quantize the transposed table [D, V].
    let mut wt = vec![0f32; rows * cols];
    for (i, &x) in data.iter().enumerate() {
        wt[(i % cols) * rows + i / cols] = x;
    }
    let spec = Spec {
        bits: 4,
        block: bs,
        symmetric: false,
    };
    let mut b = blockwise::quantize_nearest(&wt, cols, rows, spec, true);
    drop(wt);
    // Scales are stored as f16 where every one is a normal f16 (else f32);
    // the codes are re-rounded on the stored scales.
    let f16_ok = b.grids.iter().all(|gr| {
        let h = half::f16::from_f32(gr.scale);
        h.is_normal() && h.is_finite()
    });
    if f16_ok {
        for gr in &mut b.grids {
            gr.scale = half::f16::from_f32(gr.scale).to_f32();
        }
    }
    let kb = cols / bs;
    let mut codes = vec![0i32; rows * cols];
    for (r, row) in codes.chunks_mut(cols).enumerate() {
        for (c, q) in row.iter_mut().enumerate() {
            let gr = b.grid(c, r);
            *q = crate::quant::quantize(
                data[r * cols + c],
                crate::quant::Affine {
                    scale: gr.scale,
                    zero_point: gr.zero_point,
                },
                gr.lo,
                gr.hi,
            );
        }
    }
    let packed = blockwise::pack4(codes.iter().copied());
    let (r64, c64, kb64, bs64) = (rows as i64, cols as i64, kb as i64, bs as i64);
    let tname = g.name(tv).to_string();
    let base = g.name(y).to_string();
    let tq = g.add_initializer(Tensor::from_u8(
        &format!("{tname}_q4"),
        &[r64, c64 / 2],
        &packed,
    ));
    // Grids of row r are b.grids[blk * rows + r]; tables are [V, kb, 1].
    let zps: Vec<u8> = (0..rows * kb)
        .map(|i| b.grids[(i % kb) * rows + i / kb].zero_point as u8)
        .collect();
    let scales: Vec<f32> = (0..rows * kb)
        .map(|i| b.grids[(i % kb) * rows + i / kb].scale)
        .collect();
    let tz = g.add_initializer(Tensor::from_u8(
        &format!("{tname}_zp"),
        &[r64, kb64, 1],
        &zps,
    ));
    let (ts, scale_bytes) = if f16_ok {
        let raw: Vec<u8> = scales
            .iter()
            .flat_map(|&s| half::f16::from_f32(s).to_le_bytes())
            .collect();
        let t = Tensor::from_raw(
            &format!("{tname}_scale"),
            DataType::Float16 as i32,
            &[r64, kb64, 1],
            bytes::Bytes::from(raw),
        );
        (g.add_initializer(t), 2)
    } else {
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rows, kb, 1]), scales)
            .expect("invariant: one scale per block");
        (
            g.add_initializer(Tensor::from_f32(&format!("{tname}_scale"), &a)),
            4,
        )
    };
    let konst = |g: &mut Graph, name: &str, dims: &[i64], v: &[i64]| {
        g.add_initializer(Tensor::from_i64(&format!("{base}_{name}"), dims, v))
    };
    let flat_shape = konst(g, "flat", &[1], &[-1]);
    let half_shape = konst(g, "halves", &[3], &[-1, c64 / 2, 1]);
    let block_shape = konst(g, "blocks", &[3], &[-1, kb64, bs64]);
    let row_len = konst(g, "row", &[1], &[c64]);
    let sixteenth = g.add_initializer(Tensor::from_f32(
        &format!("{base}_sixteenth"),
        &ndarray::arr0(1.0f32 / 16.0).into_dyn(),
    ));
    let sixteen = g.add_initializer(Tensor::from_f32(
        &format!("{base}_sixteen"),
        &ndarray::arr0(16.0f32).into_dyn(),
    ));
    let to_float = || int_attr("to", DataType::Float as i64);
    let add = |g: &mut Graph,
               ty: &str,
               attrs: Vec<crate::proto::AttributeProto>,
               ins: &[ValueIdOpt],
               out: &str| {
        g.add_op(
            op(ty, attrs),
            ins,
            &[&format!("{base}_{out}")],
            At::Before(n),
        )
        .1[0]
    };
    let i = add(g, "Reshape", vec![], &[Some(idx), Some(flat_shape)], "idx");
    let gq = g.add_op(
        op("Gather", vec![]),
        &[Some(tq), Some(i)],
        &[&format!("{base}_q4")],
        At::Before(n),
    );
    g.take_label(n, gq.0);
    let f = add(g, "Cast", vec![to_float()], &[Some(gq.1[0])], "bytes");
    let hs = add(g, "Mul", vec![], &[Some(f), Some(sixteenth)], "hi16");
    let hi = add(g, "Floor", vec![], &[Some(hs)], "hi");
    let h16 = add(g, "Mul", vec![], &[Some(hi), Some(sixteen)], "hi_x16");
    let lo = add(g, "Sub", vec![], &[Some(f), Some(h16)], "lo");
    let lo3 = add(g, "Reshape", vec![], &[Some(lo), Some(half_shape)], "lo3");
    let hi3 = add(g, "Reshape", vec![], &[Some(hi), Some(half_shape)], "hi3");
    let pairs = add(
        g,
        "Concat",
        vec![int_attr("axis", 2)],
        &[Some(lo3), Some(hi3)],
        "pairs",
    );
    let codes = add(
        g,
        "Reshape",
        vec![],
        &[Some(pairs), Some(block_shape)],
        "codes",
    );
    let zq = add(g, "Gather", vec![], &[Some(tz), Some(i)], "zp_q");
    let zf = add(g, "Cast", vec![to_float()], &[Some(zq)], "zp");
    let sq = add(g, "Gather", vec![], &[Some(ts), Some(i)], "scale_q");
    let sf = if f16_ok {
        add(g, "Cast", vec![to_float()], &[Some(sq)], "scale")
    } else {
        sq
    };
    let centred = add(g, "Sub", vec![], &[Some(codes), Some(zf)], "centred");
    let deq = add(g, "Mul", vec![], &[Some(centred), Some(sf)], "blocks_f");
    let ishape = add(g, "Shape", vec![], &[Some(idx)], "ids_shape");
    let oshape = add(
        g,
        "Concat",
        vec![int_attr("axis", 0)],
        &[Some(ishape), Some(row_len)],
        "shape",
    );
    let out = add(g, "Reshape", vec![], &[Some(deq), Some(oshape)], "deq");
    g.replace_value(y, out);
    g.remove_node(n);
    (
        rows * cols * 4,
        packed.len() + zps.len() + rows * kb * scale_bytes,
    )
}

type ValueIdOpt = Option<ValueId>;
