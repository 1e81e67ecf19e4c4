//! Automatic fallback: keep the most sensitive nodes in float until a
//! fidelity target is met (or, with `--promote 16`, give their
//! activations 16-bit codes: the mixed 8/16 form NPU targets run).
//!
//! Every quantized node's isolated sensitivity is measured (the model with
//! only that node quantized), nodes are ranked by the error they add per
//! multiply-accumulate they save, and a bisection finds how many of the
//! worst to keep in float. Each trial is the quantize pipeline's tail with
//! another `keep-float` list, so the result is a pipeline like any other.

use std::collections::BTreeMap;

use super::build::{Built, Calibrated};
use super::{accounting, QuantizeError};
use crate::report::quantize::{Fallback, FidelityTarget};
use crate::sensitivity::NodeSensitivity;
use crate::validate::{Reference, Validation};

/// The fallback's report, and the build it kept (`None` when the full
/// build met the target).
pub struct Outcome {
    pub report: Fallback,
    pub built: Option<Built>,
}

/// Keeps the most sensitive nodes of `full` in float until `target` is
/// met. Deterministic: ties are broken by node label.
pub fn search(
    cal: &Calibrated,
    full: &Built,
    reference: &Reference,
    target: &FidelityTarget,
    promote: bool,
    progress: bool,
) -> Result<Outcome, QuantizeError> {
    let v0 = reference.score(&full.model)?;
    let mut report = Fallback {
        target: *target,
        reached: target.met(&v0),
        excluded: vec![],
        sensitivity: vec![],
        trials: vec![(0, v0.min_sqnr(), v0.min_cosine())],
        speed_ratio: None,
        promoted: promote,
        eight_bit_weights: false,
    };
    let quantized: Vec<String> = full
        .decisions
        .iter()
        .filter(|d| d.quantized)
        .map(|d| d.node.clone())
        .collect();
    if report.reached || quantized.is_empty() {
        return Ok(Outcome {
            report,
            built: None,
        });
    }
    let sens = sensitivities(cal, full, &quantized, reference, progress)?;
    // With codebook weights, a sensitive node first keeps all its 8-bit
    // weight codes (it stays quantized; the file grows by its codes'
    // other half) rather than going float.
    let eight_bit = cal.insert.codebook > 0 && !promote;
    report.eight_bit_weights = eight_bit;
    let ranked = if eight_bit {
        rank_by_size(cal, &sens)
    } else {
        rank(cal, &sens)
    };
    let try_k = |k: usize| -> Result<(Built, Validation), QuantizeError> {
        let built = if promote {
            cal.build_with(&[], &ranked[..k])?
        } else if eight_bit {
            cal.build_exempt(&ranked[..k])?
        } else {
            cal.build(&ranked[..k])?
        };
        let v = reference.score(&built.model)?;
        Ok((built, v))
    };
    // Bisect on k, the number of worst nodes kept in float: k = 0 fails.
    let (mut lo, mut hi) = (0usize, ranked.len());
    let mut best = {
        let (built, v) = try_k(hi)?;
        report.trials.push((hi, v.min_sqnr(), v.min_cosine()));
        report.reached = target.met(&v);
        built
    };
    if report.reached {
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let (built, v) = try_k(mid)?;
            report.trials.push((mid, v.min_sqnr(), v.min_cosine()));
            if target.met(&v) {
                hi = mid;
                best = built;
            } else {
                lo = mid;
            }
        }
    }
    report.excluded = ranked[..hi].to_vec();
    report.sensitivity = sens;
    Ok(Outcome {
        report,
        built: Some(best),
    })
}

/// Each quantized node's isolated sensitivity, worst first (a lower
/// cosine breaks SQNR ties, then the label).
fn sensitivities(
    cal: &Calibrated,
    full: &Built,
    quantized: &[String],
    reference: &Reference,
    progress: bool,
) -> Result<Vec<NodeSensitivity>, QuantizeError> {
    let bar = crate::calib::progress_bar(quantized.len() as u64, "sensitivity", progress);
    let mut sens = Vec::with_capacity(quantized.len());
    for label in quantized {
        // Everything else that was quantized stays float.
        let others: Vec<String> = quantized.iter().filter(|l| *l != label).cloned().collect();
        let built = cal.build(&others)?;
        let v = reference.score(&built.model)?;
        let op = full
            .decisions
            .iter()
            .find(|x| &x.node == label)
            .map(|x| x.op.clone())
            .unwrap_or_default();
        sens.push(NodeSensitivity {
            node: label.clone(),
            op,
            output_sqnr_db: v.min_sqnr().unwrap_or(crate::validate::IDENTICAL_DB),
            cosine_mean: v.min_cosine(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    sens.sort_by(|a, b| {
        a.output_sqnr_db
            .total_cmp(&b.output_sqnr_db)
            .then(
                a.cosine_mean
                    .unwrap_or(1.0)
                    .total_cmp(&b.cosine_mean.unwrap_or(1.0)),
            )
            .then(a.node.cmp(&b.node))
    });
    Ok(sens)
}

/// Order for codebook weights: the error a node adds per weight value
/// that would keep its full 8-bit codes (what exempting it costs in file
/// size), worst first.
fn rank_by_size(cal: &Calibrated, sens: &[NodeSensitivity]) -> Vec<String> {
    let g = &cal.prepared.graph;
    let values = |label: &str| -> f64 {
        g.by_label(label)
            .and_then(|n| g.node(n).input(1))
            .and_then(|w| g.constant(w))
            .map_or(0.0, |t| t.len() as f64)
    };
    let mut order: Vec<(f64, &NodeSensitivity)> = sens
        .iter()
        .map(|s| {
            let noise = 10f64.powf(-s.output_sqnr_db / 10.0);
            (noise / (values(&s.node) + 64.0), s)
        })
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.node.cmp(&b.1.node)));
    order.iter().map(|(_, s)| s.node.clone()).collect()
}

/// Fallback order: the error a node adds per unit of speed it would
/// save by staying quantized. The isolated SQNR gives the node's share of
/// output noise (10^(-SQNR/10) of the signal); dividing by the speed int8
/// was measured to win on it in the target's runtime (select-speed's
/// per-op costs; MACs where nothing was measured), plus a floor of 1% of
/// the average, ranks by accuracy gained per speed lost: sensitive ops
/// that int8 does not speed up go first, the ops that carry the speed-up
/// last, so the target is met keeping the most of it.
fn rank(cal: &Calibrated, sens: &[NodeSensitivity]) -> Vec<String> {
    // What keeping a node float costs in speed: the time int8 was measured
    // to save on it in the target's runtime (select-speed's per-op costs,
    // in ms; an op int8 did not speed up costs nothing), else its MACs.
    let measured: BTreeMap<String, f64> = cal
        .analyses
        .speed
        .as_ref()
        .map(|s| {
            s.costs
                .iter()
                .map(|(l, f, q)| (l.clone(), (f - q).max(0.0)))
                .collect()
        })
        .unwrap_or_default();
    let macs: BTreeMap<String, u64> = accounting::node_macs(&cal.prepared);
    let cost: Box<dyn Fn(&str) -> f64> = if measured.is_empty() {
        let floor = {
            let v: Vec<u64> = macs.values().copied().filter(|&m| m > 0).collect();
            (v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 * 0.01).max(1.0)
        };
        Box::new(move |n: &str| macs.get(n).copied().unwrap_or(0) as f64 + floor)
    } else {
        let floor = {
            let v: Vec<f64> = measured.values().copied().filter(|&m| m > 0.0).collect();
            (v.iter().sum::<f64>() / v.len().max(1) as f64 * 0.01).max(1e-6)
        };
        Box::new(move |n: &str| measured.get(n).copied().unwrap_or(0.0) + floor)
    };
    // Accuracy gained per speed lost: the node's share of output noise
    // over what keeping it float costs.
    let key = |s: &NodeSensitivity| -> f64 {
        let noise = 10f64.powf(-s.output_sqnr_db / 10.0);
        noise / cost(&s.node)
    };
    let mut order: Vec<(f64, &NodeSensitivity)> = sens.iter().map(|s| (key(s), s)).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.node.cmp(&b.1.node)));
    order.iter().map(|(_, s)| s.node.clone()).collect()
}
