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
    /// Power-of-two scales (`--scales pow2`, for NPUs that shift instead
    /// of multiplying); symmetric.
    #[serde(default)]
    pub pow2: bool,
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

impl ActParams {
    /// The same tensor in 16 bits of the same signedness (symmetric where
    /// these parameters are signed and centred), over its whole observed
    /// range.
    pub fn widened(&self) -> ActParams {
        let (qtype, symmetric) = match self.qtype {
            QType::S8 | QType::S16 => (QType::S16, self.affine.zero_point == 0),
            QType::U8 | QType::U16 => (QType::U16, false),
        };
        let (lo, hi) = (self.observed.0 as f64, self.observed.1 as f64);
        let pow2 = super::is_pow2(self.affine.scale);
        let symmetric = symmetric || (pow2 && self.affine.zero_point == 0);
        let mut affine = affine_for_range(lo, hi, qtype, symmetric, false);
        if pow2 {
            // Power-of-two grids stay power-of-two, rounded up: a 16-bit
            // range has steps to spare.
            affine.scale = super::pow2_around(affine.scale).1;
        }
        ActParams {
            qtype,
            affine,
            clip: (lo.min(0.0), hi.max(0.0)),
            observed: self.observed,
        }
    }
}

/// Folds one tensor's histogram into parameters.
pub fn fold(h: &FloatHist, cfg: &ActConfig) -> ActParams {
    let symmetric = cfg.symmetric || cfg.pow2;
    let (lo, hi) = clip_range(h, cfg.method, cfg.qtype, symmetric, cfg.reduce_range);
    let mut affine = affine_for_range(lo, hi, cfg.qtype, symmetric, cfg.reduce_range);
    if cfg.pow2 {
        affine.scale = pow2_scale(h, affine, cfg.qtype, cfg.reduce_range);
    }
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

/// The power of two next to `a.scale` (below or above) whose grid, with
/// `a`'s zero point, quantizes the histogram with the smaller expected
/// squared error: rounding up never clips but doubles the step at worst;
/// rounding down halves the step and clips the tail.
fn pow2_scale(h: &FloatHist, a: super::Affine, qt: QType, reduce_range: bool) -> f32 {
    let (down, up) = super::pow2_around(a.scale);
    if h.is_empty() || down == up {
        return up;
    }
    let (qmin, qmax) = qt.bounds(true, reduce_range);
    let bins = h.bins();
    let err = |s: f32| {
        let (lo, hi) = (
            (qmin - a.zero_point) as f64 * s as f64,
            (qmax - a.zero_point) as f64 * s as f64,
        );
        super::range::expected_error(&bins, lo, hi, (qmax - qmin) as f64)
    };
    if err(down) < err(up) {
        down
    } else {
        up
    }
}

/// The SQNR (dB) of symmetric int8 rounding of weight `w`, with one scale
/// for the whole tensor and with one per slice along `axis`; `None` for an
/// all-zero weight or an axis out of range.
pub fn per_tensor_weight_sqnr(w: &ndarray::ArrayD<f32>, axis: usize) -> Option<(f64, f64)> {
    if axis >= w.ndim() {
        return None;
    }
    let signal: f64 = w.iter().map(|&x| (x as f64).powi(2)).sum();
    let err = |x: f32, scale: f64| {
        if scale <= 0.0 {
            return 0.0;
        }
        let q = (x as f64 / scale).round().clamp(-127.0, 127.0) * scale;
        (x as f64 - q).powi(2)
    };
    let absmax =
        |it: &mut dyn Iterator<Item = &f32>| it.fold(0f64, |m, &x| m.max((x as f64).abs()));
    let tensor_scale = absmax(&mut w.iter()) / 127.0;
    if signal <= 0.0 || tensor_scale <= 0.0 || !signal.is_finite() {
        return None;
    }
    let tensor_err: f64 = w.iter().map(|&x| err(x, tensor_scale)).sum();
    let mut channel_err = 0f64;
    for lane in w.axis_iter(ndarray::Axis(axis)) {
        let scale = absmax(&mut lane.iter()) / 127.0;
        channel_err += lane.iter().map(|&x| err(x, scale)).sum::<f64>();
    }
    let db = |e: f64| 10.0 * (signal / e.max(1e-300)).log10();
    Some((db(tensor_err), db(channel_err)))
}
