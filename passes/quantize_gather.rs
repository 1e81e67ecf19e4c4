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
//! # Options
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
//! largest magnitude.
//!
//! # Errors
//! None.

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{At, Graph, Model, NodeId, Tensor};
use crate::plan::glob_match;
use crate::proto::tensor_proto::DataType;

const NAME: &str = "quantize-gather";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub min_elements: usize,
    pub exclude: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
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
        Ok(QuantizeGather {
            opts: super::parse_options(NAME, o)?,
        })
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
            let bytes = rewrite(g, n);
            done.push((label, bytes));
        }
        for (label, (before, after)) in &done {
            cx.remark(
                NAME,
                label,
                format!("embedding table stored as int8 per row: {before} -> {after} bytes"),
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

/// Rewrites one Gather; returns the table's bytes before and after.
fn rewrite(g: &mut Graph, n: NodeId) -> (usize, usize) {
    let node = g.node(n);
    let (tv, idx) = (
        node.input(0).expect("invariant: checked"),
        node.input(1).expect("invariant: checked"),
    );
    let y = node.output();
    let t = g.constant(tv).expect("invariant: checked");
    let (rows, cols) = (t.dims()[0] as usize, t.dims()[1] as usize);
    let data: Vec<f32> = t
        .to_f32()
        .expect("invariant: float table")
        .iter()
        .copied()
        .collect();
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
    g.replace_all_uses(y, out[0]);
    for i in g.output_ports(y) {
        g.redirect_output(i, out[0]);
    }
    g.remove_node(n);
    (rows * cols * 4, rows * cols + rows * 4)
}
