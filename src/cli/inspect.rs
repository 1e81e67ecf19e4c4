//! `onnxq inspect`: a model's summary (versions, op histogram, parameters,
//! inputs and outputs) as text or JSON, or the model in the text IR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;

use super::args::load;
use super::CliResult;
use crate::ir::{types, Model, NodeKind, Port};
use crate::proto::dtype_name;

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// Print the model in onnxq's text IR.
    #[arg(long)]
    pub ir: bool,
    /// Machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// With --ir: print constants up to this many elements in full.
    #[arg(long, default_value_t = 16)]
    pub elide_above: usize,
    /// Print metadata values in full (by default each is cut to its first
    /// line and 100 characters: an OCR model's dictionary is 18,000 lines).
    #[arg(long)]
    pub full_metadata: bool,
}

/// What `inspect` reports.
#[derive(serde::Serialize)]
pub struct Inspection {
    pub file: String,
    pub file_bytes: u64,
    pub ir_version: i64,
    pub opsets: BTreeMap<String, i64>,
    pub producer: String,
    pub graph_name: String,
    pub nodes: usize,
    pub op_histogram: BTreeMap<String, usize>,
    pub parameters: u64,
    pub parameter_bytes_by_dtype: BTreeMap<String, u64>,
    pub parameter_count_by_dtype: BTreeMap<String, u64>,
    pub external_tensors: usize,
    /// Compute ops (Conv, MatMul, Gemm and their quantized forms) by the
    /// precision they run in.
    pub compute_by_precision: BTreeMap<String, crate::report::precision::PrecisionShare>,
    pub inputs: Vec<PortInfo>,
    pub outputs: Vec<PortInfo>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
pub struct PortInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Option<Vec<String>>,
}

/// What `onnxq inspect` reports about `m`, read from `path`.
pub fn inspect(path: &Path, m: &Model) -> Inspection {
    let g = &m.graph;
    let mut hist = BTreeMap::new();
    for n in g.ops() {
        let node = g.node(n);
        let key = if node.domain().is_empty() {
            node.op_type().to_string()
        } else {
            format!("{}.{}", node.domain(), node.op_type())
        };
        *hist.entry(key).or_insert(0usize) += 1;
    }
    let mut bytes = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut params = 0u64;
    let mut external = 0;
    for n in g.initializer_nodes() {
        if let NodeKind::Initializer(t) = g.node(n).kind() {
            let d = dtype_name(t.dtype()).to_string();
            *bytes.entry(d.clone()).or_insert(0u64) += t.nbytes() as u64;
            *counts.entry(d).or_insert(0u64) += t.len() as u64;
            params += t.len() as u64;
            external += t.external().is_some() as usize;
        }
    }
    // Weights exporters keep in Constant nodes (and in subgraphs) are
    // parameters too.
    let mut constants = |t: &crate::proto::TensorProto| {
        let t = crate::ir::Tensor::from_proto(t.clone());
        let d = dtype_name(t.dtype()).to_string();
        *bytes.entry(d.clone()).or_insert(0u64) += t.nbytes() as u64;
        *counts.entry(d).or_insert(0u64) += t.len() as u64;
        params += t.len() as u64;
    };
    for n in g.ops() {
        if let Some(p) = g.node(n).op() {
            visit_tensors(p, &mut constants);
        }
    }
    let compute = crate::report::precision::compute_by_precision(m);
    Inspection {
        file: path.display().to_string(),
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        ir_version: m.meta.ir_version(),
        opsets: m
            .meta
            .opset_import
            .iter()
            .map(|o| {
                (
                    if o.domain().is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        o.domain().to_string()
                    },
                    o.version(),
                )
            })
            .collect(),
        producer: format!("{} {}", m.meta.producer_name(), m.meta.producer_version())
            .trim()
            .to_string(),
        graph_name: g.shell.name().to_string(),
        nodes: g.ops().len(),
        op_histogram: hist,
        parameters: params,
        parameter_bytes_by_dtype: bytes,
        parameter_count_by_dtype: counts,
        external_tensors: external,
        compute_by_precision: compute,
        inputs: g
            .inputs()
            .iter()
            .filter(|p| g.producer_node(p.value).initializer().is_none())
            .map(port_info)
            .collect(),
        outputs: g.outputs().iter().map(port_info).collect(),
        metadata: m
            .meta
            .metadata_props
            .iter()
            .map(|e| (e.key().to_string(), e.value().to_string()))
            .collect(),
    }
}

/// A graph input or output with its type as `inspect` shows it (`?` where
/// the model does not say).
fn port_info(p: &Port) -> PortInfo {
    let ty = p.info.r#type.as_ref();
    PortInfo {
        name: p.info.name().to_string(),
        dtype: ty
            .map(|t| dtype_name(types::elem_type(t)).to_string())
            .unwrap_or_else(|| "?".into()),
        shape: ty.and_then(types::dims).map(|ds| {
            ds.into_iter()
                .map(|d| match d {
                    types::Dim::Known(v) => v.to_string(),
                    types::Dim::Symbol(s) => s,
                    types::Dim::Unknown => "?".into(),
                })
                .collect()
        }),
    }
}

pub fn cmd_inspect(a: &InspectArgs) -> CliResult {
    let m = load(&a.model)?;
    if a.ir {
        let opts = crate::ir::text::PrintOptions {
            elide_above: a.elide_above,
        };
        print!("{}", crate::ir::text::print_model_with(&m, &opts));
        return Ok(());
    }
    let r = inspect(&a.model, &m);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("invariant: serializable")
        );
        return Ok(());
    }
    print_summary(&r, a.full_metadata);
    Ok(())
}

/// The text form of `onnxq inspect`.
fn print_summary(r: &Inspection, full: bool) {
    println!("{}  ({} bytes)", r.file, r.file_bytes);
    println!(
        "  ir_version {}   opsets {}",
        r.ir_version,
        r.opsets
            .iter()
            .map(|(d, v)| format!("{d} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.producer.is_empty() {
        println!("  producer   {}", r.producer);
    }
    println!("  nodes      {}", r.nodes);
    let mut hist: Vec<(&String, &usize)> = r.op_histogram.iter().collect();
    hist.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!(
        "  ops        {}",
        hist.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  parameters {} ({})",
        r.parameters,
        r.parameter_bytes_by_dtype
            .iter()
            .map(|(d, b)| format!("{d}: {} in {b} bytes", r.parameter_count_by_dtype[d]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if r.external_tensors > 0 {
        println!("  external   {} tensors", r.external_tensors);
    }
    for (p, c) in &r.compute_by_precision {
        println!(
            "  compute    {p}: {} ops, {} weight bytes, {}",
            c.ops,
            c.weight_bytes,
            c.macs
                .map(|m| format!("{m} MACs"))
                .unwrap_or_else(|| "MACs unknown (symbolic shapes)".into())
        );
    }
    let show = |p: &PortInfo| {
        format!(
            "{} {}[{}]",
            p.name,
            p.dtype,
            p.shape
                .as_ref()
                .map(|s| s.join(","))
                .unwrap_or_else(|| "?".into())
        )
    };
    for p in &r.inputs {
        println!("  input      {}", show(p));
    }
    for p in &r.outputs {
        println!("  output     {}", show(p));
    }
    for (k, v) in &r.metadata {
        println!(
            "  metadata   {k} = {}",
            if full { v.clone() } else { shorten(v) }
        );
    }
}

/// Calls `f` on the `value` of a Constant node and on the initializers and
/// Constants of its subgraphs, recursively.
fn visit_tensors(p: &crate::proto::NodeProto, f: &mut dyn FnMut(&crate::proto::TensorProto)) {
    if p.op_type() == "Constant" {
        if let Some(t) = p
            .attribute
            .iter()
            .find(|a| a.name() == "value")
            .and_then(|a| a.t.as_ref())
        {
            f(t);
        }
    }
    for a in &p.attribute {
        for sg in a.g.iter().chain(a.graphs.iter()) {
            for t in &sg.initializer {
                f(t);
            }
            for n in &sg.node {
                visit_tensors(n, f);
            }
        }
    }
}

/// A metadata value cut to its first line and 100 characters, saying how
/// much was left out.
fn shorten(v: &str) -> String {
    const MAX: usize = 100;
    let first = v.lines().next().unwrap_or("");
    let cut: String = first.chars().take(MAX).collect();
    if cut.len() == v.len() {
        return cut;
    }
    format!(
        "{cut}… ({} characters, {} lines; --full-metadata shows all)",
        v.chars().count(),
        v.lines().count()
    )
}
