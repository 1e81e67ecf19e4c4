//! Activation quantization parameters, folded from calibration statistics.

use serde::{Deserialize, Serialize};

use super::range::{clip_range, Method};
use super::{affine_for_range, Affine, QType};
use crate::calib::hist::FloatHist;

/// How activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActConfig {
    pub method: Method,
    pub qtype: QType,
    pub symmetric: bool,
    pub reduce_range: bool,
}

/// The parameters of one activation tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActParams {
    pub qtype: QType,
    pub affine: Affine,
    /// The clip range chosen, and the range observed.
    pub clip: (f64, f64),
    pub observed: (f32, f32),
}

/// Folds one tensor's histogram into parameters.
pub fn fold(h: &FloatHist, cfg: &ActConfig) -> ActParams {
    let (lo, hi) = clip_range(h, cfg.method, cfg.qtype, cfg.symmetric, cfg.reduce_range);
    let affine = affine_for_range(lo, hi, cfg.qtype, cfg.symmetric, cfg.reduce_range);
    let observed = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.min, h.max)
    };
    ActParams {
        qtype: cfg.qtype,
        affine,
        clip: (lo, hi),
        observed,
    }
}
