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

/// Recurrent ops: MAC-heavy, and no target here runs them as integer
/// kernels from QDQ (onnxruntime's DynamicQuantizeLSTM is a contrib op
/// tract cannot load), so they stay float and count against the share.
pub const RECURRENT_OPS: &[&str] = &["LSTM", "GRU", "RNN"];

/// Fraction of the compute ops' MACs (recurrent layers included) in nodes
/// the decisions quantized. Compute inside subgraphs (which stays float)
/// counts in the total: the larger branch of an `If`, one iteration of a
/// `Loop` or `Scan` body ([`subgraph_macs`]). `None` when some compute
/// op's MACs cannot be counted.
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
        let op = node.op_type();
        if node.has_subgraphs() {
            total += subgraph_macs(prepared, n)?;
            continue;
        }
        if !node.domain().is_empty() || !(COMPUTE_OPS.contains(&op) || RECURRENT_OPS.contains(&op))
        {
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

/// What quantization does not reach, for the report's warnings: recurrent
/// layers (with their share of the model's MACs) and compute ops inside
/// subgraphs (`If`/`Loop`/`Scan` bodies), which stay float.
pub fn uncovered(prepared: &Model) -> Vec<String> {
    let g = &prepared.graph;
    let macs = node_macs(prepared);
    let total: u64 = macs.values().sum();
    let mut out = Vec::new();
    for n in g.ops() {
        let node = g.node(n);
        let op = node.op_type();
        if node.domain().is_empty() && RECURRENT_OPS.contains(&op) {
            let m = macs.get(node.label()).copied().unwrap_or(0);
            let share = if total > 0 {
                format!(
                    ", {:.0}% of the model's multiply-accumulates",
                    100.0 * m as f64 / total as f64
                )
            } else {
                String::new()
            };
            out.push(format!(
                "{op} '{}' stays float{share}: neither onnxruntime's CPU QDQ fusions nor tract run a quantized {op}",
                node.label()
            ));
        }
        if let Some(p) = node.op() {
            let inside = p
                .attribute
                .iter()
                .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
                .map(count_compute)
                .sum::<usize>();
            if inside > 0 {
                out.push(format!(
                    "{inside} Conv/MatMul/Gemm inside the subgraphs of {op} '{}' stay float: onnxq quantizes the main graph only (fold the condition, or export without control flow, to quantize them)",
                    node.label()
                ));
            }
        }
    }
    out
}

/// The compute MACs inside `n`'s subgraphs: the larger branch of an `If`,
/// one iteration of a `Loop` or `Scan` body (the trip count is a run-time
/// value). Each body is analysed as a model of its own, its outer-scope
/// reads becoming inputs of the types the outer graph gives them (or
/// initializers, for constants), so tract's shape inference can size its
/// ops. `None` when a body holds compute whose MACs stay unknown.
pub fn subgraph_macs(m: &Model, n: crate::ir::NodeId) -> Option<u64> {
    let g = &m.graph;
    let p = g.node(n).op()?;
    let mut best = 0u64;
    for body in p
        .attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
    {
        if count_compute(body) == 0 {
            continue;
        }
        best = best.max(body_macs(m, body)?);
    }
    Some(best)
}

/// MACs of one subgraph body of a node of `m` (see [`subgraph_macs`]).
fn body_macs(m: &Model, body: &crate::proto::GraphProto) -> Option<u64> {
    use crate::proto::ValueInfoProto;
    let g = &m.graph;
    let mut gp = body.clone();
    let holder = crate::proto::NodeProto {
        attribute: vec![crate::proto::AttributeProto {
            g: Some(body.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    for name in crate::ir::build::subgraph_free_names(&holder) {
        let v = g.lookup(&name)?;
        match g.constant(v) {
            Some(t) => {
                let mut tp = t.to_inline_proto();
                tp.name = Some(name.clone());
                gp.initializer.push(tp);
            }
            None => gp.input.push(ValueInfoProto {
                name: Some(name.clone()),
                r#type: g.value_type(v),
                ..Default::default()
            }),
        }
    }
    let mut meta = m.meta.clone();
    meta.graph = Some(gp);
    let mut sub = crate::onnx::import::from_proto(meta, m.dir.as_deref(), "<subgraph>").ok()?;
    let mut cx = crate::passes::PassContext::new();
    crate::passes::PassManager::new(crate::passes::Pipeline::parse("shape-inference").ok()?)
        .run(&mut sub, &mut cx)
        .ok()?;
    let sg = &sub.graph;
    let mut total = 0u64;
    for n in sg.ops() {
        let node = sg.node(n);
        let op = node.op_type();
        if node.has_subgraphs() {
            total += subgraph_macs(&sub, n)?;
        } else if node.domain().is_empty()
            && (COMPUTE_OPS.contains(&op) || RECURRENT_OPS.contains(&op))
        {
            total += crate::analysis::cost::node_cost(sg, n).macs?;
        }
    }
    Some(total)
}

/// Compute ops in a subgraph and the subgraphs within it.
fn count_compute(g: &crate::proto::GraphProto) -> usize {
    g.node
        .iter()
        .map(|n| {
            let here = usize::from(
                n.domain.as_deref().unwrap_or("").is_empty()
                    && (COMPUTE_OPS.contains(&n.op_type()) || RECURRENT_OPS.contains(&n.op_type())),
            );
            here + n
                .attribute
                .iter()
                .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
                .map(count_compute)
                .sum::<usize>()
        })
        .sum()
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
    bytes_of(&model_files(path))
}

fn bytes_of(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// [`file_size_with_data`] and [`deflated`] size of one model, which is
/// read once to find its files.
pub fn sizes(path: &Path) -> (u64, Option<u64>) {
    let files = model_files(path);
    (bytes_of(&files), deflated(&files))
}

/// The model file and the external data files its initializers name.
pub fn model_files(path: &Path) -> Vec<std::path::PathBuf> {
    let mut files = BTreeSet::new();
    if let Ok(m) = import::read_model(path) {
        for n in m.graph.initializer_nodes() {
            if let Some(t) = m.graph.node(n).initializer() {
                if let Some(e) = t.external() {
                    files.insert(e.path().to_path_buf());
                }
            }
        }
    }
    std::iter::once(path.to_path_buf()).chain(files).collect()
}

/// Models past this size are not compressed to measure them (deflate runs
/// at tens of MB/s: seconds per hundred megabytes).
pub const COMPRESS_LIMIT: u64 = 512 << 20;

/// The bytes of these files (a model and its external data) deflated (zlib's default
/// level 6, as gzip and HTTP downloads compress): what a download of the
/// file costs. Streamed, so memory stays small; `None` past
/// [`COMPRESS_LIMIT`] or when a file cannot be read.
pub fn deflated(files: &[std::path::PathBuf]) -> Option<u64> {
    if bytes_of(files) > COMPRESS_LIMIT {
        return None;
    }
    let mut enc = flate2::write::DeflateEncoder::new(Counter(0), flate2::Compression::default());
    for f in files {
        let mut r = std::fs::File::open(f).ok()?;
        std::io::copy(&mut r, &mut enc).ok()?;
    }
    Some(enc.finish().ok()?.0)
}

/// A writer that only counts.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
