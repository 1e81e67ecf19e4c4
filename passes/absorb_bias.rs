//! `absorb-bias`: shifts the offset of an activation's channels out of the
//! tensor and into the next layer's bias (bias absorption, Nagel et al.,
//! "Data-Free Quantization Through Weight Equalization and Bias
//! Correction", ICCV 2019, section 4.1.1).
//!
//! # What
//! One scale and zero point cover every channel of an activation, so a
//! channel that never goes below 3 (Relu after a large bias; a channel
//! scaled up by `equalize`) or one centred far from the others widens the
//! range all channels share. When layer `A` (Conv, Gemm) feeds layer `B`
//! (Conv without padding, Gemm) directly or through one `Relu`, a
//! per-channel constant `c` can leave the tensor: `A`'s bias loses `c`,
//! and `B`'s bias gains `W_B·c`, which is what `c` contributed to every
//! output.
//!
//! * Through a Relu, `relu(x − c) = relu(x) − c` wherever `x ≥ c`, so `c`
//!   is the channel's smallest value on the calibration data (0 when it
//!   reaches 0): exact on that data. The paper takes `β − 3γ` from the
//!   BatchNormalization before the Relu as a data-free stand-in; onnxq has
//!   folded those by now and has the measured minimum instead.
//! * With nothing between the layers every shift is exact; `c` is the
//!   middle of the channel's measured range, so every channel is centred
//!   on zero and the shared range shrinks to the widest single channel.
//!
//! `B` must not pad its input: a padded border would see 0 where the
//! shifted tensor holds `−c`.
//!
//! # Example
//! ```text
//! before:  H = Conv (X, W1, B1)       # channel 0 of R ranges over [3, 5]
//!          R = Relu (H)
//!          Y = Conv (R, W2, B2)       # 1×1, no padding
//! after:   H = Conv (X, W1, B1_absorbed)    # B1[0] − 3
//!          R = Relu (H)                     # channel 0 now over [0, 2]
//!          Y = Conv (R, W2, B2_absorbed)    # B2 + W2·(3, 0, …)
//! ```
//!
//! # Options
//! None.
//!
//! # Preconditions
//! Statistics from `calibrate` with per-channel minima and maxima of the
//! inputs of weighted ops. The pass consumes them: the shifted tensors
//! have new ranges, so a `calibrate` must follow before
//! `fold-calibration`.
//!
//! # Numerics
//! Exact in real arithmetic on the calibration data (float rounding of the
//! biases only); on other data a Relu channel that goes below the measured
//! minimum is clipped at it.
//!
//! # Errors
//! No statistics.

use super::equalize::{follow, Layer, Layout};
use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId};

const NAME: &str = "absorb-bias";

#[derive(Debug, Default)]
pub struct AbsorbBias;

impl AbsorbBias {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>(NAME, o)?;
        Ok(AbsorbBias)
    }
}

/// Whether Conv `n` reads its input without padding.
fn unpadded(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    let auto = node.attr_s("auto_pad").unwrap_or(b"NOTSET");
    let explicit = node
        .attr_ints("pads")
        .is_none_or(|p| p.iter().all(|&x| x == 0));
    match auto {
        b"NOTSET" | b"" => explicit,
        b"VALID" => true,
        _ => false,
    }
}

/// A site: `a`'s output reaches `b` directly (`relu` false) or through one
/// Relu.
struct Site {
    a: NodeId,
    b: NodeId,
    relu: bool,
}

fn site(g: &Graph, a: NodeId) -> Option<Site> {
    let p = follow(g, a, true)?;
    let relu = match p.via.as_slice() {
        [] => false,
        [r] if g.node(*r).is("Relu") => true,
        _ => return None,
    };
    let la = Layer::read(g, p.a)?;
    let lb = Layer::read(g, p.b)?;
    if !la.has_bias_slot || !lb.has_bias_slot {
        return None;
    }
    if let Layout::Conv { .. } = lb.layout {
        if !unpadded(g, p.b) {
            return None;
        }
    }
    Some(Site {
        a: p.a,
        b: p.b,
        relu,
    })
}

impl Pass for AbsorbBias {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let stats = cx
            .analyses
            .stats
            .clone()
            .ok_or_else(|| PassError::Precondition {
                pass: NAME.into(),
                message: "no calibration statistics: run `calibrate` first".into(),
            })?;
        let g = &mut m.graph;
        let sites: Vec<Site> = g
            .topo_order()
            .into_iter()
            .filter_map(|n| site(g, n))
            .collect();
        let mut shifted = 0usize;
        let mut channels = 0usize;
        for s in sites {
            let x = g.node(s.b).input(0).expect("invariant: B reads A");
            let mut la = Layer::read(g, s.a).expect("invariant: site");
            let mut lb = Layer::read(g, s.b).expect("invariant: site");
            let axis = match lb.layout {
                Layout::Conv { .. } => Some(1),
                Layout::Dense { .. } => g.static_shape(x).map(|s| s.len().saturating_sub(1)),
            };
            let Some(cm) = stats.means.get(g.name(x)) else {
                continue;
            };
            let n = la.out_channels();
            if Some(cm.axis) != axis || cm.min.len() != n || cm.max.len() != n {
                continue;
            }
            let c: Vec<f64> = (0..n)
                .map(|i| {
                    if s.relu {
                        cm.min[i].max(0.0)
                    } else {
                        (cm.min[i] + cm.max[i]) / 2.0
                    }
                })
                .collect();
            let moved = c.iter().filter(|&&v| v != 0.0).count();
            if moved == 0 {
                continue;
            }
            let added = lb.shift_response(&c);
            let ba = la.bias.get_or_insert_with(|| vec![0.0; n]);
            for (b, &ci) in ba.iter_mut().zip(&c) {
                *b -= ci;
            }
            let nb = lb.out_channels();
            let bb = lb.bias.get_or_insert_with(|| vec![0.0; nb]);
            for (b, d) in bb.iter_mut().zip(added) {
                *b += d;
            }
            la.write_bias(g, "_absorbed");
            lb.write_bias(g, "_absorbed");
            // The tensors between the layers now hold shifted values: new
            // names, so that nothing compares them with the old ones.
            let mut v = g.node(s.a).output();
            while v != x {
                let next = g.users(v)[0].0;
                let name = g.fresh_name(&format!("{}_absorbed", g.name(v)));
                g.rename(v, &name);
                v = g.node(next).output();
            }
            let name = g.fresh_name(&format!("{}_absorbed", g.name(x)));
            g.rename(x, &name);
            shifted += 1;
            channels += moved;
        }
        if shifted == 0 {
            return Ok(Changed::No);
        }
        // The shifted tensors have new ranges: what was measured before
        // must not be folded into ranges for them.
        cx.analyses.stats = None;
        cx.analyses.holdout_stats = None;
        cx.analyses.act_params = None;
        cx.remark(
            NAME,
            "<model>",
            format!(
                "absorbed the offsets of {channels} channels of {shifted} activations into the next layer's bias"
            ),
        );
        Ok(Changed::Yes)
    }
}
