//! `codebook-float`: the float weights quantization left in float —
//! recurrent cells (LSTM, GRU, RNN), and Conv/MatMul/Gemm kept in float or
//! read without a DequantizeLinear — restricted to 2^bits levels and
//! stored as uint4 codes into a float table.
//!
//! # What
//! No CPU runtime runs a quantized LSTM, so `insert-qdq` leaves recurrent
//! weights in float, and in a small recurrent model they are most of the
//! file. This pass fits each such weight's levels
//! ([`crate::quant::codebook`]: exact k-means, log or uniform, over the
//! weight's values on a grid of 1023 steps each side of zero, the levels
//! then exact at that grid) and writes `Gather(table, Cast(codes))` as
//! `pack-codebook` does. Runtimes fold it back into the float weight at
//! load: smaller file and download, same speed and memory.
//!
//! # Example
//! ```text
//! before:  Y, Yh, Yc = LSTM (X, W, R, B)                  W: float[1,64,16]
//! after:   W_codes_i = Cast<to=6>(W_codes)                W_codes: uint4[1,64,16]
//!          W_cb = Gather(W_table, W_codes_i)              W_table: float[16]
//!          Y, Yh, Yc = LSTM (X, W_cb, R_cb, B)
//! ```
//!
//! # Options
//! * `bits` (2–4, default 4) and `kind` (`kmeans`, `log`, `uniform`).
//! * `min-elements` (default 1024): smaller weights stay float.
//!
//! # Preconditions
//! Opset 21 or newer (uint4 codes).
//!
//! # Numerics
//! Changes numbers: each weight takes its nearest level. The remark gives
//! each weight's SQNR against the float one.
//!
//! # Errors
//! Bad options; an opset below 21.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, Tensor, ValueId};
use crate::proto::tensor_proto::DataType;
use crate::quant::codebook::{self, Kind};

const NAME: &str = "codebook-float";

/// Steps each side of zero on which levels are fitted.
const GRID: i32 = 1023;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub bits: u32,
    pub kind: String,
    pub min_elements: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bits: 4,
            kind: "kmeans".into(),
            min_elements: 1024,
        }
    }
}

pub struct CodebookFloat {
    opts: Options,
    kind: Kind,
}

impl CodebookFloat {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        let bad = |message: String| PassError::Options {
            pass: NAME.into(),
            message,
        };
        if !(2..=4).contains(&opts.bits) {
            return Err(bad(format!("bits {}: expected 2 to 4", opts.bits)));
        }
        let kind = Kind::parse(&opts.kind).ok_or_else(|| {
            bad(format!(
                "kind '{}': expected kmeans, log or uniform",
                opts.kind
            ))
        })?;
        Ok(CodebookFloat { opts, kind })
    }
}

/// The weight slots of the ops whose float weights this pass packs.
fn weight_slots(op: &str) -> &'static [usize] {
    match op {
        "LSTM" | "GRU" | "RNN" => &[1, 2],
        "Conv" | "ConvTranspose" | "MatMul" | "Gemm" => &[1],
        _ => &[],
    }
}

/// Float constants read as weights, each once.
fn candidates(g: &Graph, min: usize) -> BTreeSet<ValueId> {
    let mut out = BTreeSet::new();
    for n in g.ops() {
        let node = g.node(n);
        for &slot in weight_slots(node.op_type()) {
            let Some(v) = node.input(slot) else { continue };
            if g.constant(v)
                .is_some_and(|t| t.dtype() == DataType::Float as i32 && t.len() >= min)
            {
                out.insert(v);
            }
        }
    }
    out
}

impl Pass for CodebookFloat {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        super::pack_codebook::require_uint4(m, NAME)?;
        let g = &mut m.graph;
        let mut packed = 0usize;
        for v in candidates(g, self.opts.min_elements) {
            let t = g.constant(v).expect("invariant: candidates are constants");
            let w = t.to_f32().map_err(|e| PassError::Failed {
                pass: NAME.into(),
                message: format!("{}: {e}", g.name(v)),
            })?;
            let dims = t.dims().to_vec();
            let data: Vec<f32> = w.iter().copied().collect();
            let amax = data
                .iter()
                .filter(|x| x.is_finite())
                .fold(0f32, |a, &x| a.max(x.abs()));
            if !(amax > 0.0 && (amax / GRID as f32).is_normal())
                || data.iter().any(|x| !x.is_finite())
            {
                continue;
            }
            let step = amax / GRID as f32;
            let units: Vec<f32> = data.iter().map(|&x| x / step).collect();
            let levels = codebook::fit(&units, -GRID, GRID, 1 << self.opts.bits, self.kind);
            let table: Vec<f32> = levels.iter().map(|&l| l as f32 * step).collect();
            let (mut signal, mut noise) = (0f64, 0f64);
            let codes: Vec<i32> = units
                .iter()
                .zip(&data)
                .map(|(&u, &x)| {
                    let l = codebook::nearest(&levels, u);
                    let i = levels.binary_search(&l).expect("invariant: a level");
                    let e = (x - table[i]) as f64;
                    signal += (x as f64) * (x as f64);
                    noise += e * e;
                    i as i32
                })
                .collect();
            let name = g.name(v).to_string();
            let sqnr = 10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10();
            // Past float32's own precision the levels are the values.
            let sqnr = if sqnr > 140.0 {
                "exact".to_string()
            } else {
                format!("SQNR {sqnr:.1} dB")
            };
            let bytes = crate::quant::blockwise::pack4(codes);
            let codes = Tensor::from_raw(
                &format!("{name}_codes"),
                DataType::Uint4 as i32,
                &dims,
                bytes.into(),
            );
            let tarr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[table.len()]), table)
                .expect("invariant: 1-D");
            let table = Tensor::from_f32(&format!("{name}_table"), &tarr);
            super::pack_codebook::replace_with_codebook(g, v, codes, table, None);
            cx.remark(
                NAME,
                &name,
                format!(
                    "float weight stored as {} {} levels in uint4 codes ({sqnr} against the float weight); runtimes rebuild it at load (smaller file, same speed)",
                    levels.len(),
                    self.kind.name()
                ),
            );
            packed += 1;
        }
        Ok(Changed::from_bool(packed > 0))
    }
}
