//! Per-layer error analysis: where does a quantized model lose accuracy?
//!
//! Two views, both against the float original on the same samples:
//! * **tensor error**: for every float tensor both models compute under the
//!   same name, the SQNR of the quantized model's tensor against the float
//!   one (error as it accumulates through the network);
//! * **isolated sensitivity**: for every quantized node, the output SQNR of
//!   the float model with *only that node* quantized — its own Q/DQ pairs,
//!   weights and bias copied over from the quantized model. Ranked, the
//!   worst first: these are the layers to keep in float.
//!
//! The float model's outputs are computed once ([`Reference`]) and every
//! isolated variant is scored against them.

use crate::ir::At;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::calib::data::{input_specs, DataSet};
use crate::calib::progress_bar;
use crate::ir::{Model, NodeId, NodeKind, Slot, ValueId};
use crate::proto::tensor_proto::DataType;
use crate::runtime::RunnerCache;
use crate::validate::{Reference, ValidateError, IDENTICAL_DB};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TensorError {
    pub tensor: String,
    /// Op producing it (in the float model).
    pub op: String,
    pub sqnr_db: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeSensitivity {
    pub node: String,
    pub op: String,
    /// Worst float-output SQNR with only this node quantized.
    pub output_sqnr_db: f64,
    pub cosine_mean: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerReport {
    pub samples: usize,
    /// In graph order.
    pub tensors: Vec<TensorError>,
    /// Most harmful first.
    pub nodes: Vec<NodeSensitivity>,
    /// Nodes whose inputs could not be matched in the float model.
    pub unmatched: Vec<String>,
}

impl LayerReport {
    pub fn table(&self, top: usize) -> String {
        let mut s = format!("per-layer error on {} sample(s)\n", self.samples);
        s.push_str(
            "  isolated sensitivity (output SQNR with only this node quantized; worst first):\n",
        );
        for n in self.nodes.iter().take(top) {
            s.push_str(&format!(
                "    {:>8.2} dB  {:<40} {}\n",
                n.output_sqnr_db, n.node, n.op
            ));
        }
        if self.nodes.len() > top {
            s.push_str(&format!(
                "    ... {} more (see --json)\n",
                self.nodes.len() - top
            ));
        }
        let mut worst: Vec<&TensorError> = self.tensors.iter().collect();
        worst.sort_by(|a, b| {
            a.sqnr_db
                .total_cmp(&b.sqnr_db)
                .then(a.tensor.cmp(&b.tensor))
        });
        s.push_str("  tensor SQNR in the quantized model (lowest first):\n");
        for t in worst.iter().take(top) {
            s.push_str(&format!(
                "    {:>8.2} dB  {:<40} {}\n",
                t.sqnr_db, t.tensor, t.op
            ));
        }
        s
    }
}

fn sqnr(ref2: f64, err2: f64) -> f64 {
    if err2 == 0.0 {
        IDENTICAL_DB
    } else if ref2 == 0.0 || !err2.is_finite() {
        f64::NEG_INFINITY
    } else {
        (10.0 * (ref2 / err2).log10()).min(IDENTICAL_DB)
    }
}

/// SQNR of every float tensor both models compute under the same name.
pub fn tensor_errors(
    orig: &Model,
    quant: &Model,
    data: &DataSet,
    shapes: &crate::validate::Shapes,
) -> Result<Vec<TensorError>, ValidateError> {
    let go = &orig.graph;
    let gq = &quant.graph;
    let mut names: Vec<(String, String)> = Vec::new();
    for n in go.ops() {
        let node = go.node(n);
        for v in node.outputs().iter().flatten() {
            let name = go.name(*v);
            if go.elem_type(*v) != DataType::Float as i32 && go.elem_type(*v) != 0 {
                continue;
            }
            if let Some(qv) = gq.lookup(name) {
                if matches!(gq.producer_node(qv).kind(), NodeKind::Op(_)) && !go.is_graph_output(*v)
                {
                    names.push((name.to_string(), node.op_type().to_string()));
                }
            }
        }
    }
    let extra: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let ro = RunnerCache::new(orig, extra.clone());
    let rq = RunnerCache::new(quant, extra.clone());
    let specs = input_specs(orig);
    let mut acc: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for i in 0..data.len() {
        let label = data.sources[i].label();
        let inputs = data.load(i, &specs, shapes)?;
        let a = ro.run(&inputs).map_err(|source| ValidateError::Runtime {
            which: "original",
            sample: label.clone(),
            source,
        })?;
        let b = rq.run(&inputs).map_err(|source| ValidateError::Runtime {
            which: "quantized",
            sample: label.clone(),
            source,
        })?;
        let (ka, kb) = (a.len() - extra.len(), b.len() - extra.len());
        for ((name, ta), (_, tb)) in a.iter().skip(ka).zip(b.iter().skip(kb)) {
            let (x, y) = (ta.to_f32(), tb.to_f32());
            let e = acc.entry(name.clone()).or_insert((0.0, 0.0));
            if x.len() != y.len() {
                e.1 = f64::INFINITY;
                continue;
            }
            for (&p, &q) in x.iter().zip(y.iter()) {
                e.0 += (p as f64) * (p as f64);
                e.1 += ((q - p) as f64) * ((q - p) as f64);
            }
        }
    }
    Ok(names
        .into_iter()
        .map(|(tensor, op)| {
            let (r, e) = acc.get(&tensor).copied().unwrap_or((0.0, 0.0));
            TensorError {
                tensor,
                op,
                sqnr_db: sqnr(r, e),
            }
        })
        .collect())
}

/// Op nodes of a QDQ model that read at least one DequantizeLinear output:
/// the quantized nodes.
pub fn quantized_nodes(quant: &Model) -> Vec<NodeId> {
    let g = &quant.graph;
    g.ops()
        .into_iter()
        .filter(|&n| {
            let node = g.node(n);
            !node.is("QuantizeLinear")
                && !node.is("DequantizeLinear")
                && node
                    .inputs()
                    .iter()
                    .flatten()
                    .any(|&v| g.producer_node(v).is("DequantizeLinear"))
        })
        .collect()
}

/// The float model with only node `name` quantized as in `quant`: the Q/DQ
/// chains feeding it and the pair on its output are copied over. `None`
/// when the node or its tensors cannot be matched by name.
pub fn isolate(orig: &Model, quant: &Model, qnode: NodeId) -> Option<Model> {
    let gq = &quant.graph;
    let qn = gq.node(qnode);
    let name = qn.name();
    if name.is_empty() {
        return None;
    }
    let mut m = orig.clone();
    let target = m
        .graph
        .ops()
        .into_iter()
        .find(|&n| m.graph.node(n).name() == name)?;
    // Copies a DequantizeLinear (and the QuantizeLinear before it, if any)
    // into `m`; returns the new DQ output.
    let copy_chain = |m: &mut Model, dq_out: ValueId| -> Option<ValueId> {
        let gq = &quant.graph;
        let dq = gq.producer_node(dq_out);
        let x = dq.input(0)?;
        let copy_const = |m: &mut Model, v: Option<ValueId>| -> Option<ValueId> {
            let v = v?;
            let t = gq.constant(v)?.clone();
            Some(m.graph.add_initializer(t))
        };
        let s = copy_const(m, dq.input(1))?;
        let z = copy_const(m, dq.input(2));
        let attrs = dq.op()?.attribute.clone();
        let src = if gq.constant(x).is_some() {
            copy_const(m, Some(x))?
        } else {
            let q = gq.producer_node(x);
            if !q.is("QuantizeLinear") {
                return None;
            }
            let t_name = gq.name(q.input(0)?);
            let t = m.graph.lookup(t_name)?;
            let qs = copy_const(m, q.input(1))?;
            let qz = copy_const(m, q.input(2));
            let qattrs = q.op()?.attribute.clone();
            let proto = crate::proto::NodeProto {
                op_type: Some("QuantizeLinear".into()),
                attribute: qattrs,
                ..Default::default()
            };
            let anchor = m.graph.producer(t);
            let (_, o) = m.graph.add_op(
                proto,
                &[Some(t), Some(qs), qz],
                &[&format!("{t_name}_q")],
                At::After(anchor),
            );
            o[0]
        };
        let proto = crate::proto::NodeProto {
            op_type: Some("DequantizeLinear".into()),
            attribute: attrs,
            ..Default::default()
        };
        let anchor = m.graph.producer(src);
        let (_, o) = m.graph.add_op(
            proto,
            &[Some(src), Some(s), z],
            &[&format!("{}_dq", gq.name(x))],
            At::After(anchor),
        );
        Some(o[0])
    };
    for (slot, v) in qn.inputs().iter().enumerate() {
        let Some(v) = v else { continue };
        if !gq.producer_node(*v).is("DequantizeLinear") {
            continue;
        }
        let new = copy_chain(&mut m, *v)?;
        if m.graph.node(target).inputs().len() <= slot {
            return None;
        }
        m.graph.set_input(target, slot, Some(new));
    }
    // The output pair, when the quantized model has one.
    if let Some(out) = qn.outputs().first().copied().flatten() {
        let q_users: Vec<NodeId> = gq
            .user_nodes(out)
            .into_iter()
            .filter(|&u| gq.node(u).is("QuantizeLinear"))
            .collect();
        if let Some(&qu) = q_users.first() {
            let q_out = gq.node(qu).output();
            if let Some(&dqn) = gq
                .user_nodes(q_out)
                .iter()
                .find(|&&u| gq.node(u).is("DequantizeLinear"))
            {
                let dq_out = gq.node(dqn).output();
                let t = m.graph.node(target).outputs().first().copied().flatten()?;
                let readers = m.graph.users(t);
                let new = copy_chain(&mut m, dq_out)?;
                for (r, slot) in readers {
                    if let Slot::Input(i) = slot {
                        m.graph.set_input(r, i as usize, Some(new));
                    }
                }
            }
        }
    }
    Some(m)
}

/// Ranks the quantized nodes of `quant` by the output SQNR of the float
/// model with only that node quantized.
pub fn isolated_sensitivity(
    orig: &Model,
    quant: &Model,
    reference: &Reference,
    progress: bool,
) -> Result<(Vec<NodeSensitivity>, Vec<String>), ValidateError> {
    let nodes = quantized_nodes(quant);
    let bar = progress_bar(nodes.len() as u64, "sensitivity", progress);
    let mut out = Vec::new();
    let mut unmatched = Vec::new();
    for n in nodes {
        let qn = quant.graph.node(n);
        let label = qn.label().to_string();
        match isolate(orig, quant, n) {
            None => unmatched.push(label),
            Some(m) => {
                let v = reference.score(&m)?;
                out.push(NodeSensitivity {
                    node: label,
                    op: qn.op_type().to_string(),
                    output_sqnr_db: v.min_sqnr().unwrap_or(IDENTICAL_DB),
                    cosine_mean: v.min_cosine(),
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.sort_by(|a, b| {
        a.output_sqnr_db
            .total_cmp(&b.output_sqnr_db)
            .then(a.node.cmp(&b.node))
    });
    Ok((out, unmatched))
}

/// Both views for `onnxq validate --per-layer`.
///
/// Isolated sensitivity runs one model per quantized node, so it uses at
/// most `sens_samples` samples; tensor errors use all of `data`.
pub fn per_layer(
    orig: &Model,
    quant: &Model,
    data: &DataSet,
    sens_samples: usize,
    progress: bool,
) -> Result<LayerReport, ValidateError> {
    let tensors = tensor_errors(orig, quant, data, &Default::default())?;
    let reference = Reference::new(
        orig,
        &data.take(sens_samples.max(1)),
        crate::runtime::default_threads(),
        &Default::default(),
    )?;
    let (nodes, unmatched) = isolated_sensitivity(orig, quant, &reference, progress)?;
    Ok(LayerReport {
        samples: data.len(),
        tensors,
        nodes,
        unmatched,
    })
}
