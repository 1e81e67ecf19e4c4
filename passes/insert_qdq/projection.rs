//! What `insert-qdq` does to weights beyond rounding them to a uniform
//! grid: magnitude pruning, codebook levels and power-of-two scales.

use std::collections::{BTreeMap, BTreeSet};

use super::{QWeight, PASS};
use crate::ir::{Graph, ValueId};
use crate::passes::PassContext;
use crate::plan::Placement;
use crate::quant::codebook::{self, Kind};
use crate::quant::split_axis;

/// The channel of each element of a weight laid out as `dims`, quantized
/// along `axis`.
fn channel_of(dims: &[usize], axis: Option<usize>) -> impl Fn(usize) -> usize {
    let (_, channels, inner) = split_axis(dims, axis);
    move |i| (i / inner.max(1)) % channels.max(1)
}

/// `prune-db`: prunes the weights (not the constants quantized like
/// activations) and tells the context and the remarks what it zeroed.
pub(super) fn prune_weights(
    g: &Graph,
    p: &Placement,
    cx: &mut PassContext,
    weights: &mut BTreeMap<(ValueId, Option<usize>), QWeight>,
    db: f64,
) {
    let as_activation: BTreeSet<ValueId> = p
        .weights
        .iter()
        .filter(|w| w.as_activation)
        .map(|w| w.value)
        .collect();
    let pruned = prune(weights, |v| !as_activation.contains(&v), db);
    let (zeros, total) = pruned
        .iter()
        .fold((0, 0), |(z, t), &(_, zi, ti)| (z + zi, t + ti));
    cx.analyses.pruned = Some((zeros, total));
    for (v, z, t) in pruned {
        cx.detail(
            PASS,
            g.name(v),
            format!(
                "pruned {z} of {t} values ({:.1}%)",
                100.0 * z as f64 / t.max(1) as f64
            ),
        );
    }
    cx.remark(
        PASS,
        "<model>",
        format!(
            "magnitude pruning at {db} dB per layer: {zeros} of {total} weight values zeroed ({:.1}% sparsity)",
            100.0 * zeros as f64 / total.max(1) as f64
        ),
    );
}

/// `codebook`: restricts the weights to `(levels, kind, per-channel
/// tables)`, except those read by a node of `exempt` (labels; a weight
/// shared with another node is exempt for both), with a detail remark per
/// weight.
pub(super) fn codebook_weights(
    g: &Graph,
    p: &Placement,
    cx: &mut PassContext,
    weights: &mut BTreeMap<(ValueId, Option<usize>), QWeight>,
    (levels, kind, per_channel): (usize, Kind, bool),
    exempt: &[String],
) {
    let exempt: BTreeSet<ValueId> = p
        .weights
        .iter()
        .filter(|w| exempt.iter().any(|l| l == g.label(w.node)))
        .map(|w| w.value)
        .collect();
    for (v, kept, sqnr) in codebook(weights, levels, kind, per_channel, |v| !exempt.contains(&v)) {
        cx.detail(
            PASS,
            g.name(v),
            format!(
                "{kept} {} levels (SQNR {sqnr:.1} dB against the float weight)",
                kind.name()
            ),
        );
    }
}

/// Restricts every quantized constant to at most `levels` codes of one
/// table (`per_channel`: one table per channel of its quantization axis),
/// fitted in the code domain (value / channel scale), so its values are
/// `level · scale`; the float weights are kept for bias correction.
/// Returns, per weight, the most levels a table kept and the SQNR (dB) of
/// the restricted weight against the float one.
fn codebook(
    weights: &mut BTreeMap<(ValueId, Option<usize>), QWeight>,
    levels: usize,
    kind: Kind,
    per_channel: bool,
    included: impl Fn(ValueId) -> bool,
) -> Vec<(ValueId, usize, f64)> {
    let mut out = Vec::new();
    for (&(v, _), qw) in weights.iter_mut() {
        if !included(v) {
            continue;
        }
        let chan = channel_of(&qw.dims, qw.axis);
        let units: Vec<f32> = qw
            .data
            .iter()
            .enumerate()
            .map(|(i, &x)| x / qw.scales[chan(i)])
            .collect();
        let (lo, hi) = (qw.lo - qw.zp, qw.hi - qw.zp);
        let tables: Vec<Vec<i32>> = if per_channel && qw.axis.is_some() {
            let mut by_channel: Vec<Vec<f32>> = vec![Vec::new(); qw.scales.len()];
            for (i, &u) in units.iter().enumerate() {
                by_channel[chan(i)].push(u);
            }
            by_channel
                .iter()
                .map(|u| codebook::fit(u, lo, hi, levels, kind))
                .collect()
        } else {
            vec![codebook::fit(&units, lo, hi, levels, kind)]
        };
        let table_of = |i: usize| &tables[if tables.len() > 1 { chan(i) } else { 0 }];
        let float = qw.float.clone().unwrap_or_else(|| qw.data.clone());
        let (mut signal, mut noise) = (0f64, 0f64);
        for (i, (d, &u)) in qw.data.iter_mut().zip(&units).enumerate() {
            let s = qw.scales[chan(i)];
            *d = codebook::nearest(table_of(i), u) as f32 * s;
            let f = float[i] as f64;
            signal += f * f;
            noise += (f - *d as f64) * (f - *d as f64);
        }
        qw.float = Some(float);
        let sqnr = if noise > 0.0 {
            10.0 * (signal / noise).log10()
        } else {
            f64::INFINITY
        };
        let most = tables.iter().map(Vec::len).max().unwrap_or(0);
        out.push((v, most, sqnr));
    }
    out
}

/// Magnitude pruning with one error budget for every layer: each weight's
/// smallest values are set to zero while the energy removed stays within
/// `10^(−db/10)` of the weight's own (a weight-space SQNR of `db` for
/// every layer). A layer with many near-zero weights loses many; one whose
/// values are all alike loses few — the sparsity follows how much each
/// layer can spare instead of being one number for all. Works on the
/// values to be rounded (learned or float), keeps the float weights for
/// bias correction. Returns, per weight, how many values it zeroed.
fn prune(
    weights: &mut BTreeMap<(ValueId, Option<usize>), QWeight>,
    is_weight: impl Fn(ValueId) -> bool,
    db: f64,
) -> Vec<(ValueId, usize, usize)> {
    let budget = 10f64.powf(-db / 10.0);
    let mut out = Vec::new();
    for (&(v, _), qw) in weights.iter_mut() {
        if !is_weight(v) {
            continue;
        }
        let energy: f64 = qw.data.iter().map(|&x| (x as f64) * (x as f64)).sum();
        if !(energy > 0.0 && energy.is_finite()) {
            continue;
        }
        // Smallest magnitudes first; ties by position, so the result does
        // not depend on the sort's stability.
        let mut order: Vec<usize> = (0..qw.data.len()).collect();
        order.sort_by(|&a, &b| {
            qw.data[a]
                .abs()
                .total_cmp(&qw.data[b].abs())
                .then(a.cmp(&b))
        });
        let mut removed = 0f64;
        let mut zeroed = 0usize;
        let float = qw.float.clone().unwrap_or_else(|| qw.data.clone());
        for i in order {
            let x = qw.data[i] as f64;
            if removed + x * x > budget * energy {
                break;
            }
            removed += x * x;
            if qw.data[i] != 0.0 {
                qw.data[i] = 0.0;
                zeroed += 1;
            }
        }
        if zeroed > 0 {
            qw.float = Some(float);
        }
        out.push((v, zeroed, qw.data.len()));
    }
    out
}

/// Replaces each channel's scale by the power of two next to it (below or
/// above) that quantizes the channel's values to codes `lo..=hi` (zero
/// point 0) with the smaller squared error.
pub(super) fn pow2_scales(
    data: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    scales: &mut [f32],
    lo: i32,
    hi: i32,
) {
    let chan = channel_of(dims, axis);
    let mut err = vec![[0f64; 2]; scales.len()];
    let cands: Vec<(f32, f32)> = scales
        .iter()
        .map(|&s| crate::quant::pow2_around(s))
        .collect();
    for (i, &x) in data.iter().enumerate() {
        if !x.is_finite() {
            continue;
        }
        let c = chan(i);
        let (down, up) = cands[c];
        for (k, s) in [down, up].into_iter().enumerate() {
            let q = (x / s).round_ties_even().clamp(lo as f32, hi as f32);
            let e = (x - q * s) as f64;
            err[c][k] += e * e;
        }
    }
    for ((s, (down, up)), e) in scales.iter_mut().zip(cands).zip(err) {
        *s = if e[0] < e[1] { down } else { up };
    }
}
