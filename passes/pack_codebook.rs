//! `pack-codebook`: stores a quantized weight that uses few distinct codes
//! as small indices into a table of them.
//!
//! # What
//! Every int8/uint8 constant read as a quantized weight (DequantizeLinear's
//! input, QLinearConv's and QLinearMatMul's weight) that holds at most
//! 2^bits distinct values becomes
//! `Gather(table, Cast<to=INT32>(codes))`: the table holds the distinct
//! values in order, the codes their indices as uint4, two per byte (half
//! the bytes of the int8 weight; codes of 5 to 8 bits would take a byte
//! each like the weight itself, and compress no better: a weight with
//! few distinct values already deflates to about their entropy). This is
//! standard ONNX that onnxruntime folds back into the int8 weight when it
//! loads the file (the integer kernels then run as before): the win is the
//! file and download size, not speed or memory. tract folds it too, but
//! only while the weight fits its 4 MiB constant-folding budget; a larger
//! one is expanded on every run, so validation folds them first
//! (`runtime::lower`). `insert-qdq{codebook=N}` makes weights that fit.
//!
//! # Example
//! ```text
//! before:  W_dq = DequantizeLinear<axis=0>(W_q, W_scale, W_zp)    W_q: int8[64,32,3,3], 9 distinct values
//! after:   W_q_codes_i = Cast<to=6>(W_q_codes)                    W_q_codes: uint4[64,32,3,3]
//!          W_q_cb = Gather(W_q_table, W_q_codes_i)                W_q_table: int8[9]
//!          W_dq = DequantizeLinear<axis=0>(W_q_cb, W_scale, W_zp)
//! ```
//!
//! # Options
//! * `bits` (2–4, default 4): the widest code; a weight with more distinct
//!   values than 2^bits stays as it is.
//! * `min-elements` (default 256): smaller weights stay as they are (the
//!   table and two nodes would cost more than they save).
//!
//! # Preconditions
//! Opset 21 or newer (uint4; `upgrade-opset{min=21}`).
//!
//! # Numerics
//! None: the gathered weight equals the original, value for value.
//!
//! # Errors
//! Bad options; an opset below 21.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{At, Model, Tensor, ValueId};
use crate::proto::tensor_proto::DataType;

const NAME: &str = "pack-codebook";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub bits: u32,
    pub min_elements: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bits: 4,
            min_elements: 256,
        }
    }
}

pub struct PackCodebook {
    opts: Options,
}

impl PackCodebook {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        if !(2..=4).contains(&opts.bits) {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!(
                    "bits {}: expected 2 to 4 (wider codes take a byte each, as the int8 weight does)",
                    opts.bits
                ),
            });
        }
        Ok(PackCodebook { opts })
    }
}

/// The precondition both codebook passes share: uint4 needs opset 21.
pub(super) fn require_uint4(m: &Model, pass: &str) -> Result<(), PassError> {
    let opset = m.opset("").unwrap_or(1);
    if opset < 21 {
        return Err(PassError::Precondition {
            pass: pass.into(),
            message: format!("uint4 codes need opset 21 and the model has {opset}: run `upgrade-opset{{min=21}}` first"),
        });
    }
    Ok(())
}

/// Points every reader of constant `v` at `Gather(table, Cast(codes))`
/// (plus `offsets`, broadcast, when each channel has its own table), the
/// new nodes placed before `v`'s first reader.
pub(super) fn replace_with_codebook(
    g: &mut crate::ir::Graph,
    v: ValueId,
    codes: Tensor,
    table: Tensor,
    offsets: Option<Tensor>,
) {
    let name = g.name(v).to_string();
    let anchor = g.users(v)[0].0;
    let cv = g.add_initializer(codes);
    let tv = g.add_initializer(table);
    let (_, ci) = g.add_op(
        super::node_proto("Cast", vec![super::int_attr("to", DataType::Int32 as i64)]),
        &[Some(cv)],
        &[&format!("{name}_codes_i")],
        At::Before(anchor),
    );
    let mut idx = ci[0];
    if let Some(o) = offsets {
        let ov = g.add_initializer(o);
        let (_, a) = g.add_op(
            super::node_proto("Add", vec![]),
            &[Some(idx), Some(ov)],
            &[&format!("{name}_index")],
            At::Before(anchor),
        );
        idx = a[0];
    }
    let (_, w) = g.add_op(
        super::node_proto("Gather", vec![]),
        &[Some(tv), Some(idx)],
        &[&format!("{name}_cb")],
        At::Before(anchor),
    );
    g.replace_all_uses(v, w[0]);
}

/// The table an element index reads (its channel, or 0).
type ChannelOf = Box<dyn Fn(usize) -> usize>;

/// The weight operand slot of a quantized-weight reader.
fn weight_slot(op: &str) -> Option<usize> {
    match op {
        "DequantizeLinear" => Some(0),
        "QLinearConv" | "QLinearMatMul" => Some(3),
        _ => None,
    }
}

/// The distinct bytes of `values` in increasing order of value (int8:
/// two's complement), if there are at most `limit`.
fn distinct(values: impl Iterator<Item = u8>, signed: bool, limit: usize) -> Option<Vec<u8>> {
    let mut seen = [false; 256];
    let mut n = 0;
    for b in values {
        if !seen[b as usize] {
            seen[b as usize] = true;
            n += 1;
            if n > limit {
                return None;
            }
        }
    }
    let mut out: Vec<u8> = (0..=255u8).filter(|&b| seen[b as usize]).collect();
    if signed {
        out.sort_by_key(|&b| b as i8);
    }
    Some(out)
}

/// The int8/uint8 constants read as quantized weights, with the axis
/// their per-channel scales run along (`None`: one scale, or readers that
/// disagree).
fn candidates(g: &crate::ir::Graph, min: usize) -> BTreeMap<ValueId, Option<usize>> {
    let mut out: BTreeMap<ValueId, Option<usize>> = BTreeMap::new();
    for n in g.ops() {
        let node = g.node(n);
        let Some(slot) = weight_slot(node.op_type()) else {
            continue;
        };
        let Some(v) = node.input(slot) else { continue };
        let Some(t) = g.constant(v) else { continue };
        if !matches!(
            DataType::try_from(t.dtype()),
            Ok(DataType::Int8 | DataType::Uint8)
        ) || t.len() < min
        {
            continue;
        }
        let rank = t.dims().len();
        let scales = node
            .input(slot + 1)
            .and_then(|s| g.constant(s))
            .map_or(1, |s| s.len());
        let axis = (scales > 1).then(|| match node.op_type() {
            "DequantizeLinear" => {
                let a = node.attr_i("axis").unwrap_or(1);
                if a < 0 {
                    (a + rank as i64) as usize
                } else {
                    a as usize
                }
            }
            "QLinearConv" => 0,
            _ => rank - 1,
        });
        let axis = axis.filter(|&a| a < rank && t.dims()[a] as usize == scales);
        out.entry(v)
            .and_modify(|e| {
                if *e != axis {
                    *e = None;
                }
            })
            .or_insert(axis);
    }
    out
}

impl Pass for PackCodebook {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        require_uint4(m, NAME)?;
        let g = &mut m.graph;
        let limit = 1usize << self.opts.bits;
        let (mut packed, mut before, mut after) = (0usize, 0usize, 0usize);
        for (v, axis) in candidates(g, self.opts.min_elements) {
            let t = g.constant(v).expect("invariant: candidates are constants");
            let (dtype, dims) = (t.dtype(), t.dims().to_vec());
            let Ok(raw) = t.raw_bytes().map(|r| r.into_owned()) else {
                continue;
            };
            let signed = dtype == DataType::Int8 as i32;
            let udims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            // One table for the tensor, else one per channel of the axis
            // its scales run along.
            let (tables, chan): (Vec<Vec<u8>>, ChannelOf) =
                match distinct(raw.iter().copied(), signed, limit) {
                    Some(t) => (vec![t], Box::new(|_| 0)),
                    None => {
                        let Some(axis) = axis else { continue };
                        let (_, channels, inner) = crate::quant::split_axis(&udims, Some(axis));
                        let chan = move |i: usize| (i / inner.max(1)) % channels.max(1);
                        let mut per: Vec<Vec<u8>> = vec![Vec::new(); channels];
                        for (i, &b) in raw.iter().enumerate() {
                            per[chan(i)].push(b);
                        }
                        let tables: Option<Vec<Vec<u8>>> = per
                            .into_iter()
                            .map(|c| distinct(c.into_iter(), signed, limit))
                            .collect();
                        let Some(tables) = tables else { continue };
                        (tables, Box::new(chan))
                    }
                };
            let width = tables.iter().map(Vec::len).max().unwrap_or(1);
            let mut index = vec![[0u8; 256]; tables.len()];
            for (t, idx) in tables.iter().zip(index.iter_mut()) {
                for (i, &b) in t.iter().enumerate() {
                    idx[b as usize] = i as u8;
                }
            }
            let bytes = crate::quant::blockwise::pack4(
                raw.iter()
                    .enumerate()
                    .map(|(i, &b)| i32::from(index[chan(i)][b as usize])),
            );
            let name = g.name(v).to_string();
            let codes = Tensor::from_raw(
                &format!("{name}_codes"),
                DataType::Uint4 as i32,
                &dims,
                bytes.into(),
            );
            // Tables padded to one width (with their first value), laid
            // end to end.
            let mut flat = Vec::with_capacity(tables.len() * width);
            for t in &tables {
                flat.extend_from_slice(t);
                flat.extend(std::iter::repeat_n(t[0], width - t.len()));
            }
            before += raw.len();
            after += codes.nbytes()
                + flat.len()
                + if tables.len() > 1 {
                    4 * tables.len()
                } else {
                    0
                };
            let table = Tensor::from_raw(
                &format!("{name}_table"),
                dtype,
                &[flat.len() as i64],
                flat.into(),
            );
            // Each channel's codes index its own table: its offset is
            // added, broadcast along the channel axis.
            let offsets = (tables.len() > 1).then(|| {
                let axis = axis.expect("invariant: per-channel tables have an axis");
                let mut odims = vec![1i64; dims.len()];
                odims[axis] = tables.len() as i64;
                let offsets: Vec<i32> = (0..tables.len()).map(|c| (c * width) as i32).collect();
                Tensor::from_i32(&format!("{name}_offsets"), &odims, &offsets)
            });
            replace_with_codebook(g, v, codes, table, offsets);
            packed += 1;
        }
        if packed > 0 {
            cx.remark(
                NAME,
                "<model>",
                format!(
                    "{packed} weight(s) stored as 4-bit codes into a table: {before} -> {after} bytes; runtimes rebuild the int8 weights when they load the file (smaller download and file, same speed and memory)"
                ),
            );
        }
        Ok(Changed::from_bool(packed > 0))
    }
}
