//! `drop-fake-quant`: removes activation QuantizeLinear → DequantizeLinear
//! pairs that only simulate quantization.
//!
//! # What
//! A runtime that does not fuse QDQ (tract) runs a Q → DQ pair on an
//! activation as two extra float passes over the tensor: on onnxruntime's
//! own QDQ output tract ran ppocr_cls at 0.32× and MiniLM at 0.41× float.
//! For such a target the pair is pure cost: this pass reads the float
//! tensor instead of the pair's result. QuantizeLinear nodes still read by
//! QOperator ops (`QLinearConv`, `QLinearMatMul`, after `lower-qdq`) stay;
//! a `dce` after it removes the rest. Weight DequantizeLinear on constants
//! stays: runtimes fold it at load (tract while the result fits 4 MiB), so
//! the file keeps its int8 weights.
//!
//! # Example
//! ```text
//! before:  X_q = QuantizeLinear (X, s, z)
//!          X_dq = DequantizeLinear (X_q, s, z)
//!          Y = Sigmoid (X_dq)
//! after:   Y = Sigmoid (X)
//! ```
//!
//! # Options
//! None.
//!
//! # Preconditions
//! None.
//!
//! # Numerics
//! Changes numbers: activations are no longer rounded at these points, so
//! the outputs move toward the float model's (each removed pair removed
//! at most half a quantization step of error there).
//!
//! # Errors
//! None.

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::Model;

const NAME: &str = "drop-fake-quant";

#[derive(Debug, Default)]
pub struct DropFakeQuant;

impl DropFakeQuant {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>(NAME, o)?;
        Ok(DropFakeQuant)
    }
}

impl Pass for DropFakeQuant {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let mut dropped = 0usize;
        for n in g.ops() {
            let node = g.node(n);
            if !node.is("DequantizeLinear") {
                continue;
            }
            let Some(xq) = node.input(0) else { continue };
            let q = g.producer(xq);
            if !g.node(q).is("QuantizeLinear") {
                continue;
            }
            let Some(x) = g.node(q).input(0) else {
                continue;
            };
            if g.constant(x).is_some() {
                continue;
            }
            // A graph output keeps its DequantizeLinear (and name); its
            // other readers take the float tensor.
            let y = node.output();
            if g.replace_all_uses(y, x) > 0 && g.output_ports(y).is_empty() {
                dropped += 1;
            }
        }
        cx.remark(
            NAME,
            "<model>",
            format!("{dropped} activation Q/DQ pair(s) removed (the op reads the float tensor)"),
        );
        Ok(if dropped > 0 {
            Changed::Yes
        } else {
            Changed::No
        })
    }
}
