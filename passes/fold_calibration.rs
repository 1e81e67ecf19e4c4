//! `fold-calibration`: turns calibration statistics into a scale and zero
//! point per activation tensor.
//!
//! # What
//! For every tensor in the statistics, picks a clip range by `method` and
//! derives the affine parameters for the activation type. The results go
//! into the pass context for `insert-qdq`, and each is recorded as a remark
//! (`range [lo, hi] of observed [min, max] → scale s, zero point z`).
//!
//! # Example
//! ```text
//! # RUN: calibrate,fold-calibration{method=mse,activations=u8}
//! remark: fold-calibration: X: mse range [0, 5.98] of [0, 6] -> u8 scale 0.02345 zp 0
//! ```
//!
//! # Options
//! * `method`: `minmax`, `percentile`, `entropy` or `mse` (default); the
//!   percentile is set with `percentile=99.99`.
//! * `activations`: `u8` (asymmetric, default) or `s8`; `u16`/`s16` for
//!   16-bit activations (opset 21; for accuracy and NPU targets).
//! * `symmetric`: force a symmetric range (default: true for the signed
//!   types, false for the unsigned ones).
//! * `reduce-range`: 7-bit activations.
//! * `pow2`: every scale a power of two (for NPUs that rescale by shifts,
//!   e.g. AMD Vitis-AI's DPU), symmetric: of the powers of two next to the
//!   method's scale, the one with the smaller expected error on the
//!   histogram.
//! * `ranges`: per-tensor exceptions, `"TENSOR=METHOD"` (`METHOD` as
//!   `--method` spells it: `percentile{p=99.9}`), what `--method auto`
//!   measured for each tensor.
//!
//! # Preconditions
//! Statistics in the context (`calibrate` before it).
//!
//! # Numerics
//! None by itself; it decides the numbers `insert-qdq` uses. A tensor with
//! an empty or zero range gets scale 1, never inf or NaN.
//!
//! # Errors
//! No statistics; an unknown method or activation type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::Model;
use crate::quant::params::{fold, ActConfig};
use crate::quant::range::Method;
use crate::quant::QType;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub method: String,
    pub percentile: f64,
    pub activations: String,
    pub symmetric: Option<bool>,
    pub reduce_range: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pow2: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            method: "mse".into(),
            percentile: 99.99,
            activations: "u8".into(),
            symmetric: None,
            reduce_range: false,
            ranges: vec![],
            pow2: false,
        }
    }
}

pub struct FoldCalibration {
    opts: Options,
    cfg: ActConfig,
    /// Per-tensor methods that replace `cfg.method`.
    ranges: BTreeMap<String, Method>,
}

/// `TENSOR=METHOD` into its parts, split at the last `=` outside braces
/// (`percentile{p=99.9}` holds one of its own).
pub fn parse_range(spec: &str) -> Result<(String, Method), String> {
    let mut depth = 0i32;
    let mut at = None;
    for (i, c) in spec.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '=' if depth == 0 => at = Some(i),
            _ => {}
        }
    }
    let i = at.ok_or_else(|| format!("range '{spec}': expected TENSOR=METHOD"))?;
    Ok((spec[..i].to_string(), Method::parse(&spec[i + 1..])?))
}

impl FoldCalibration {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options("fold-calibration", o)?;
        let bad = |m: String| PassError::Options {
            pass: "fold-calibration".into(),
            message: m,
        };
        let method = match opts.method.as_str() {
            "percentile" => {
                Method::parse(&format!("percentile{{p={}}}", opts.percentile)).map_err(bad)?
            }
            other => Method::parse(other).map_err(bad)?,
        };
        let qtype = QType::parse(&opts.activations).ok_or_else(|| {
            bad(format!(
                "activations '{}': expected u8, s8, u16 or s16",
                opts.activations
            ))
        })?;
        let symmetric = opts.symmetric.unwrap_or(qtype.is_signed()) || opts.pow2;
        // Resolved, so the canonical pipeline spells it out (`symmetric=false`
        // parses back; an unset option would print as `null`, which does not).
        let opts = Options {
            symmetric: Some(symmetric),
            ..opts
        };
        let cfg = ActConfig {
            method,
            qtype,
            symmetric,
            reduce_range: opts.reduce_range,
            pow2: opts.pow2,
        };
        let ranges = opts
            .ranges
            .iter()
            .map(|s| parse_range(s))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(bad)?;
        Ok(FoldCalibration { opts, cfg, ranges })
    }

    pub fn with_config(cfg: ActConfig) -> Self {
        let (method, percentile) = match cfg.method {
            Method::Percentile { p } => ("percentile".to_string(), p),
            m => (m.to_string(), 99.99),
        };
        let opts = Options {
            method,
            percentile,
            activations: cfg.qtype.name().into(),
            symmetric: Some(cfg.symmetric),
            reduce_range: cfg.reduce_range,
            ranges: vec![],
            pow2: cfg.pow2,
        };
        FoldCalibration {
            opts,
            cfg,
            ranges: BTreeMap::new(),
        }
    }
}

impl Pass for FoldCalibration {
    fn name(&self) -> &'static str {
        "fold-calibration"
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, _m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let stats =
            cx.analyses.stats.clone().ok_or_else(|| {
                PassError::Precondition {
            pass: "fold-calibration".into(),
            message:
                "no calibration statistics: run `calibrate` before this pass (or pass --stats FILE)"
                    .into(),
        }
            })?;
        let mut params = BTreeMap::new();
        let mut remarks = Vec::new();
        for (name, h) in &stats.tensors {
            let cfg = match self.ranges.get(name) {
                Some(&method) => ActConfig { method, ..self.cfg },
                None => self.cfg,
            };
            let p = fold(h, &cfg);
            remarks.push((
                name.clone(),
                format!(
                    "{} range [{}, {}] of observed [{}, {}] -> {:?} scale {} zero point {}",
                    cfg.method,
                    p.clip.0 as f32,
                    p.clip.1 as f32,
                    p.observed.0,
                    p.observed.1,
                    p.qtype,
                    p.affine.scale,
                    p.affine.zero_point
                ),
            ));
            params.insert(name.clone(), p);
        }
        let means = stats.means.clone();
        for (n, r) in remarks {
            cx.detail("fold-calibration", &n, r);
        }
        cx.analyses.channel_means = means;
        cx.analyses.act_params = Some(params);
        Ok(Changed::No)
    }
}
