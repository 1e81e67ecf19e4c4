//! The verifier: checks every invariant and well-formedness rule of a
//! [`Graph`], collecting all violations rather than stopping at the first,
//! and renders them under the offending nodes in text-IR form.
//!
//! What it checks, one phase each:
//! * values: each is in the name index and is the output its producer says;
//! * operands: every operand reads a live value, use edges match operands
//!   exactly, op nodes have an op type, inputs and initializers one output;
//! * ports: graph inputs and outputs read live values under their names;
//! * labels: unique, indexed, one per node;
//! * copies of a name: a value's name is also written in its `value_info`
//!   entry, its port's `ValueInfoProto` and its initializer's tensor; all
//!   must agree;
//! * element types: an initializer's dtype and its declared type agree;
//!   operands an op's schema gives one type `T` agree where known;
//!   QuantizeLinear/DequantizeLinear zero points match the quantized side;
//! * the graph is acyclic.

use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::*;
use crate::proto::tensor_proto::DataType;

/// Ops whose listed operands share one element type `T` in the ONNX schema
/// (from the operator docs of opset 13+): checking these catches a pass
/// that wired, say, an int64 index into a float Add.
const SAME_TYPE: &[(&str, &[usize])] = &[
    ("Add", &[0, 1]),
    ("Sub", &[0, 1]),
    ("Mul", &[0, 1]),
    ("Div", &[0, 1]),
    ("MatMul", &[0, 1]),
    ("Gemm", &[0, 1, 2]),
    ("Conv", &[0, 1, 2]),
    ("ConvTranspose", &[0, 1, 2]),
    ("Where", &[1, 2]),
    ("Max", &[0, 1]),
    ("Min", &[0, 1]),
    ("Equal", &[0, 1]),
    ("Less", &[0, 1]),
    ("Greater", &[0, 1]),
];

impl Graph {
    /// Checks every invariant and well-formedness rule (see the module
    /// docs), collecting all violations.
    pub fn verify(&self) -> Result<(), Vec<Violation>> {
        let mut errs = Vec::new();
        self.verify_values(&mut errs);
        self.verify_operands(&mut errs);
        self.verify_ports(&mut errs);
        self.verify_labels(&mut errs);
        self.verify_name_copies(&mut errs);
        self.verify_dtypes(&mut errs);
        if let Err(cycle) = self.try_topo_order() {
            let names: Vec<&str> = cycle.iter().take(5).map(|&n| self.label(n)).collect();
            errs.push(self.at(
                cycle.first().copied(),
                format!("graph has a cycle through {}", names.join(", ")),
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    fn at(&self, n: Option<NodeId>, what: String) -> Violation {
        Violation {
            node: n.map(|n| self.node(n).label.clone()),
            at: n,
            what,
        }
    }

    fn verify_values(&self, errs: &mut Vec<Violation>) {
        for (i, v) in self.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let id = ValueId(i as u32);
            if self.names.get(&v.name) != Some(&id) {
                errs.push(self.at(None, format!("value '{}' is not in the name index", v.name)));
            }
            if !self.g.contains_node(v.producer.0) {
                errs.push(self.at(None, format!("value '{}' has a dead producer", v.name)));
                continue;
            }
            let outs = &self.node(v.producer).outputs;
            if outs.get(v.slot as usize).copied().flatten() != Some(id) {
                errs.push(self.at(
                    Some(v.producer),
                    format!(
                        "value '{}' is not output {} of its producer",
                        v.name, v.slot
                    ),
                ));
            }
        }
        if self.names.len() != self.values.iter().filter(|v| v.is_some()).count() {
            errs.push(self.at(None, "name index and value table disagree".into()));
        }
    }

    fn verify_operands(&self, errs: &mut Vec<Violation>) {
        for n in self.g.node_indices().map(NodeId) {
            let node = self.node(n);
            let mut want: Vec<(ValueId, Slot)> = Vec::new();
            for (i, v) in node.inputs.iter().enumerate() {
                let Some(v) = v else { continue };
                if self.values.get(v.index()).is_none_or(|x| x.is_none()) {
                    errs.push(self.at(Some(n), format!("operand {i} reads a removed value")));
                    continue;
                }
                want.push((*v, Slot::Input(i as u32)));
            }
            want.extend(node.implicit_inputs.iter().map(|v| (*v, Slot::Implicit)));
            let mut have: Vec<(ValueId, Slot)> = self
                .g
                .edges_directed(n.0, Direction::Incoming)
                .map(|e| (e.weight().value, e.weight().slot))
                .collect();
            want.sort();
            have.sort();
            if want != have {
                errs.push(self.at(Some(n), "use edges do not match operands".into()));
            }
            for e in self.g.edges_directed(n.0, Direction::Incoming) {
                if let Some(Some(val)) = self.values.get(e.weight().value.index()) {
                    if val.producer.0 != e.source() {
                        errs.push(self.at(
                            Some(n),
                            format!("use of '{}' comes from the wrong producer", val.name),
                        ));
                    }
                }
            }
            match node.kind() {
                NodeKind::Op(p) if p.op_type().is_empty() => {
                    errs.push(self.at(Some(n), "node has no op_type".into()));
                }
                NodeKind::Op(_) => {}
                _ if node.outputs.len() != 1 || !node.inputs.is_empty() => {
                    errs.push(self.at(
                        None,
                        "input/initializer node must have one output and no operands".into(),
                    ));
                }
                NodeKind::Input
                    if !self.inputs.iter().any(|p| Some(p.value) == node.outputs[0]) =>
                {
                    errs.push(self.at(
                        None,
                        format!(
                            "input node '{}' is not a graph input",
                            self.name(node.output())
                        ),
                    ));
                }
                _ => {}
            }
        }
    }

    fn verify_ports(&self, errs: &mut Vec<Violation>) {
        for (kind, ports) in [("input", &self.inputs), ("output", &self.outputs)] {
            for p in ports {
                match self.values.get(p.value.index()) {
                    Some(Some(v)) if p.info.name() != v.name => errs.push(self.at(
                        None,
                        format!("graph {kind} '{}' names value '{}'", p.info.name(), v.name),
                    )),
                    Some(Some(_)) => {}
                    _ => errs.push(self.at(
                        None,
                        format!("graph {kind} '{}' reads a removed value", p.info.name()),
                    )),
                }
            }
        }
    }

    fn verify_labels(&self, errs: &mut Vec<Violation>) {
        for n in self.g.node_indices().map(NodeId) {
            let label = &self.node(n).label;
            if label.is_empty() {
                errs.push(self.at(Some(n), "node has no label".into()));
            } else if self.labels.get(label) != Some(&n) {
                errs.push(self.at(
                    Some(n),
                    format!("label '{label}' is not indexed to this node (labels must be unique)"),
                ));
            }
        }
        if self.labels.len() != self.g.node_count() {
            errs.push(self.at(None, "label index and node set disagree".into()));
        }
    }

    fn verify_name_copies(&self, errs: &mut Vec<Violation>) {
        for (i, v) in self.values.iter().enumerate() {
            let Some(v) = v else { continue };
            if let Some((_, vi)) = &v.info {
                if vi.name() != v.name {
                    errs.push(self.at(
                        Some(v.producer),
                        format!(
                            "value '{}' has a value_info entry named '{}'",
                            v.name,
                            vi.name()
                        ),
                    ));
                }
            }
            if !self.g.contains_node(v.producer.0) {
                continue;
            }
            if let NodeKind::Initializer(t) = self.node(v.producer).kind() {
                if t.name() != v.name {
                    errs.push(self.at(
                        Some(v.producer),
                        format!(
                            "initializer '{}' holds a tensor named '{}'",
                            v.name,
                            t.name()
                        ),
                    ));
                }
                if let Some((_, vi)) = &v.info {
                    let declared = vi.r#type.as_ref().map(super::super::types::elem_type);
                    if declared.is_some_and(|d| d != 0 && d != t.dtype()) {
                        errs.push(self.at(
                            Some(v.producer),
                            format!(
                                "initializer '{}' is {} but its value_info says {}",
                                v.name,
                                crate::proto::dtype_name(t.dtype()),
                                crate::proto::dtype_name(declared.unwrap_or(0))
                            ),
                        ));
                    }
                }
            }
            let _ = i;
        }
    }

    fn verify_dtypes(&self, errs: &mut Vec<Violation>) {
        for n in self.ops() {
            let node = self.node(n);
            if !node.domain().is_empty() {
                continue;
            }
            let ty = |slot: usize| node.input(slot).map(|v| (v, self.elem_type(v)));
            if let Some((_, slots)) = SAME_TYPE.iter().find(|(op, _)| *op == node.op_type()) {
                let known: Vec<(ValueId, i32)> = slots
                    .iter()
                    .filter_map(|&s| ty(s))
                    .filter(|(_, t)| *t != 0)
                    .collect();
                if let Some(&(b, tb)) = known.iter().find(|(_, t)| *t != known[0].1) {
                    let (a, ta) = known[0];
                    errs.push(self.at(
                        Some(n),
                        format!(
                            "operands '{}' ({}) and '{}' ({}) must have one element type",
                            self.name(a),
                            crate::proto::dtype_name(ta),
                            self.name(b),
                            crate::proto::dtype_name(tb)
                        ),
                    ));
                }
            }
            self.verify_qdq_types(n, errs);
        }
    }

    /// QuantizeLinear: float input and scale, zero point of the output
    /// type. DequantizeLinear: zero point of the input type, float scale.
    fn verify_qdq_types(&self, n: NodeId, errs: &mut Vec<Violation>) {
        let node = self.node(n);
        let is_q = node.is("QuantizeLinear");
        if !is_q && !node.is("DequantizeLinear") {
            return;
        }
        let t = |slot: usize| node.input(slot).map(|v| self.elem_type(v)).unwrap_or(0);
        let float_like = |d: i32| {
            d == 0
                || [DataType::Float, DataType::Float16, DataType::Bfloat16]
                    .iter()
                    .any(|x| *x as i32 == d)
        };
        if !float_like(t(1)) {
            errs.push(self.at(
                Some(n),
                format!(
                    "scale is {}, not a float type",
                    crate::proto::dtype_name(t(1))
                ),
            ));
        }
        let quantized_side = if is_q {
            node.outputs()
                .first()
                .copied()
                .flatten()
                .map(|v| self.elem_type(v))
                .unwrap_or(0)
        } else {
            t(0)
        };
        let zp = t(2);
        if zp != 0 && quantized_side != 0 && zp != quantized_side {
            errs.push(self.at(
                Some(n),
                format!(
                    "zero point is {} but the quantized {} is {}",
                    crate::proto::dtype_name(zp),
                    if is_q { "output" } else { "input" },
                    crate::proto::dtype_name(quantized_side)
                ),
            ));
        }
    }

    /// The violations as a reader wants them: each under the text-IR line
    /// of the node it concerns (Cranelift style), graph-wide ones first.
    pub fn render_violations(&self, violations: &[Violation]) -> String {
        let mut out = String::new();
        for v in violations
            .iter()
            .filter(|v| v.at.is_none_or(|n| !self.contains_node(n)))
        {
            out.push_str(&format!("  error: {}\n", v.what));
        }
        let mut nodes: Vec<NodeId> = violations
            .iter()
            .filter_map(|v| v.at)
            .filter(|&n| self.contains_node(n))
            .collect();
        nodes.sort_by_key(|&n| (self.node(n).order, n.0.index()));
        nodes.dedup();
        for n in nodes {
            let line = crate::ir::text::node_line(self, n);
            out.push_str(&format!("  {}\n", line.trim_end()));
            for v in violations.iter().filter(|v| v.at == Some(n)) {
                out.push_str(&format!("  ^ error: {}\n", v.what));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::text::parse_model;

    fn graph() -> crate::ir::Graph {
        parse_model(
            r#"<ir_version: 8, opset_import: ["" : 17]>
g (float[2] X) => (float[2] Y)
<float[2] W = {1.0, 2.0}>
{
  [add] Y = Add (X, W)
}
"#,
        )
        .expect("parses")
        .graph
    }

    #[test]
    fn a_renamed_copy_of_a_name_is_found_and_shown_under_its_node() {
        let mut g = graph();
        let w = g.lookup("W").unwrap();
        let p = g.producer(w);
        if let super::NodeKind::Initializer(t) = &mut g.node_mut(p).kind {
            t.set_name("stale");
        }
        let errs = g.verify().unwrap_err();
        assert!(errs
            .iter()
            .any(|e| e.what == "initializer 'W' holds a tensor named 'stale'"));
    }

    #[test]
    fn a_duplicated_label_is_found() {
        let mut g = graph();
        let add = g.by_label("add").unwrap();
        let w = g.producer(g.lookup("W").unwrap());
        g.node_mut(w).label = "add".into();
        let errs = g.verify().unwrap_err();
        let text = g.render_violations(&errs);
        assert!(
            text.contains("label 'add' is not indexed to this node"),
            "{text}"
        );
        let _ = add;
    }
}
