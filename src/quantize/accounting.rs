//! Counting what quantization covered: multiply-accumulates per node and
//! the share that runs quantized, activation summaries for the report, and
//! file sizes with external data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::calib::Stats;
use crate::ir::Model;
use crate::onnx::import;
use crate::plan::{Decision, COMPUTE_OPS};
use crate::quant::params::ActParams;
use crate::report::quantize::ActivationSummary;

/// MACs of every op node by label (0 for ops without multiply-accumulates
/// or unknown shapes).
pub fn node_macs(m: &Model) -> BTreeMap<String, u64> {
    let g = &m.graph;
    g.ops()
        .into_iter()
        .map(|n| {
            let node = g.node(n);
            (
                node.label().to_string(),
                crate::analysis::cost::node_cost(g, n).macs.unwrap_or(0),
            )
        })
        .collect()
}

/// Fraction of the compute ops' MACs in nodes the decisions quantized.
pub fn mac_share(prepared: &Model, decisions: &[Decision]) -> Option<f64> {
    let quantized: BTreeSet<&str> = decisions
        .iter()
        .filter(|d| d.quantized)
        .map(|d| d.node.as_str())
        .collect();
    let g = &prepared.graph;
    let (mut q, mut total) = (0u64, 0u64);
    for n in g.ops() {
        let node = g.node(n);
        if !node.domain().is_empty() || !COMPUTE_OPS.contains(&node.op_type()) {
            continue;
        }
        let macs = crate::analysis::cost::node_cost(g, n).macs?;
        total += macs;
        if quantized.contains(node.label()) {
            q += macs;
        }
    }
    (total > 0).then(|| q as f64 / total as f64)
}

/// Histograms and chosen ranges of the activations that got a Q/DQ pair.
pub fn activation_summaries(
    stats: &Stats,
    params: &BTreeMap<String, ActParams>,
    quantized: &BTreeSet<String>,
) -> Vec<ActivationSummary> {
    const BINS: usize = 64;
    let mut out = Vec::new();
    for (name, p) in params {
        if !quantized.contains(name) {
            continue;
        }
        let Some(h) = stats.tensors.get(name) else {
            continue;
        };
        let (lo, hi) = (h.min as f64, h.max as f64);
        let mut bins = vec![0u64; BINS];
        if hi > lo {
            for b in h.bins() {
                let c = ((b.center() - lo) / (hi - lo) * BINS as f64)
                    .floor()
                    .clamp(0.0, (BINS - 1) as f64) as usize;
                bins[c] += b.count;
            }
        } else if h.count > 0 {
            bins[0] = h.count;
        }
        out.push(ActivationSummary {
            tensor: name.clone(),
            observed: (h.min, h.max),
            clip: p.clip,
            scale: p.affine.scale,
            zero_point: p.affine.zero_point,
            qtype: p.qtype,
            bins,
        });
    }
    out
}

/// A model file's size plus the external data files it references.
pub fn file_size_with_data(path: &Path) -> u64 {
    let base = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let Ok(m) = import::read_model(path) else {
        return base;
    };
    let mut files = BTreeSet::new();
    for n in m.graph.initializer_nodes() {
        if let Some(t) = m.graph.node(n).initializer() {
            if let Some(e) = t.external() {
                files.insert(e.path().to_path_buf());
            }
        }
    }
    base + files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
}
