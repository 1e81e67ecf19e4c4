//! The graph: a petgraph `StableDiGraph` of nodes plus a typed value table.
//!
//! Every value (tensor) has exactly one producer node: an op, a graph input
//! or an initializer. An edge `producer → consumer` is one *use* of a value in
//! one operand slot; operand order lives on the consumer node, and edges are a
//! derived index that only the methods here keep in sync with it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::tensor::Tensor;
use crate::onnx::{GraphProto, NodeProto, SparseTensorProto, TypeProto, ValueInfoProto};

/// Index of a node. Only valid for the graph that made it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex<u32>);

/// Index of a value in the graph's value table. Never reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which operand a use fills.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The n-th entry of the node's input list.
    Input(u32),
    /// Read by name from inside a subgraph attribute (If/Loop/Scan bodies).
    Implicit,
}

/// One use of a value. The edge weight.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Use {
    pub value: ValueId,
    pub slot: Slot,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A graph input that has no initializer. Produces one value.
    Input,
    /// A dense initializer. Produces one value. It may also be listed among
    /// the graph inputs (IR < 4 style, "overridable" constant).
    Initializer(Tensor),
    /// A sparse initializer, kept as read. Produces one value.
    SparseInitializer(Box<SparseTensorProto>),
    /// An operator. `proto` is the node as read with `input` and `output`
    /// cleared: those live in [`Node::inputs`]/[`Node::outputs`].
    Op(Box<NodeProto>),
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// Operands in order; `None` is an omitted optional input (`""`).
    inputs: Vec<Option<ValueId>>,
    /// Results in order; `None` is an omitted optional output.
    outputs: Vec<Option<ValueId>>,
    /// Outer-scope values read by name from subgraph attributes.
    implicit_inputs: Vec<ValueId>,
    /// Position for deterministic ordering: `(anchor, sub)`. Imported nodes
    /// get `(i, 0)`; nodes inserted "after" an anchor share its major part.
    order: (u64, u64),
}

impl Node {
    /// What the node is (op, graph input, initializer).
    pub fn kind(&self) -> &NodeKind {
        &self.kind
    }
    pub fn inputs(&self) -> &[Option<ValueId>] {
        &self.inputs
    }
    pub fn outputs(&self) -> &[Option<ValueId>] {
        &self.outputs
    }
    pub fn implicit_inputs(&self) -> &[ValueId] {
        &self.implicit_inputs
    }
    /// The single output of an input/initializer node, or output 0 of an op.
    pub fn output(&self) -> ValueId {
        self.outputs[0].expect("invariant: node has a first output")
    }
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }
    pub fn op(&self) -> Option<&NodeProto> {
        match &self.kind {
            NodeKind::Op(p) => Some(p),
            _ => None,
        }
    }
    pub fn op_mut(&mut self) -> Option<&mut NodeProto> {
        match &mut self.kind {
            NodeKind::Op(p) => Some(p),
            _ => None,
        }
    }
    /// `op_type` of an op node; `""` for inputs and initializers.
    pub fn op_type(&self) -> &str {
        self.op().map(|p| p.op_type()).unwrap_or("")
    }
    /// Domain of an op node, with `ai.onnx` folded into the default `""`.
    pub fn domain(&self) -> &str {
        match self.op().map(|p| p.domain()) {
            Some("ai.onnx") | None => "",
            Some(d) => d,
        }
    }
    /// True for an op of the default ONNX domain with this `op_type`.
    pub fn is(&self, op_type: &str) -> bool {
        self.domain().is_empty() && self.op_type() == op_type
    }
    pub fn name(&self) -> &str {
        self.op().map(|p| p.name()).unwrap_or("")
    }
    pub fn initializer(&self) -> Option<&Tensor> {
        match &self.kind {
            NodeKind::Initializer(t) => Some(t),
            _ => None,
        }
    }
    pub fn attr(&self, name: &str) -> Option<&crate::onnx::AttributeProto> {
        self.op()?.attribute.iter().find(|a| a.name() == name)
    }
    pub fn attr_i(&self, name: &str) -> Option<i64> {
        self.attr(name).and_then(|a| a.i)
    }
    pub fn attr_f(&self, name: &str) -> Option<f32> {
        self.attr(name).and_then(|a| a.f)
    }
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }
    pub fn attr_s(&self, name: &str) -> Option<&[u8]> {
        self.attr(name).and_then(|a| a.s.as_deref())
    }
    /// True when an attribute holds a subgraph.
    pub fn has_subgraphs(&self) -> bool {
        self.op()
            .map(|p| {
                p.attribute
                    .iter()
                    .any(|a| a.g.is_some() || !a.graphs.is_empty())
            })
            .unwrap_or(false)
    }
}

/// A value: a tensor flowing between nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    name: String,
    producer: NodeId,
    /// Which output of the producer this is.
    slot: u32,
    /// The `graph.value_info` entry for this value, with its position in the
    /// original list (for stable export order).
    pub info: Option<(u64, ValueInfoProto)>,
}

impl Value {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn producer(&self) -> NodeId {
        self.producer
    }
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

/// A graph input or output: the value and its declared `ValueInfoProto`.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub value: ValueId,
    pub info: ValueInfoProto,
}

/// A dataflow graph. See the module docs for the invariants.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, Use, u32>,
    values: Vec<Option<Value>>,
    names: HashMap<String, ValueId>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    /// The graph proto as read with node/initializer/sparse_initializer/
    /// input/output/value_info cleared: name, doc string, quantization
    /// annotations and metadata are written back from here.
    pub shell: GraphProto,
    next_order: u64,
    next_sub: u64,
}

/// A broken invariant or an ill-formed graph, found by [`Graph::verify`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct Violation {
    /// The node concerned (its name or op type), if any.
    pub node: Option<String>,
    pub what: String,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    // ------------------------------------------------------------------ reading

    pub fn node(&self, n: NodeId) -> &Node {
        self.g.node_weight(n.0).expect("invariant: live node id")
    }

    pub fn node_mut(&mut self, n: NodeId) -> &mut Node {
        self.g
            .node_weight_mut(n.0)
            .expect("invariant: live node id")
    }

    pub fn contains_node(&self, n: NodeId) -> bool {
        self.g.contains_node(n.0)
    }

    pub fn value(&self, v: ValueId) -> &Value {
        self.values[v.index()]
            .as_ref()
            .expect("invariant: live value id")
    }

    pub fn value_mut(&mut self, v: ValueId) -> &mut Value {
        self.values[v.index()]
            .as_mut()
            .expect("invariant: live value id")
    }

    pub fn name(&self, v: ValueId) -> &str {
        &self.value(v).name
    }

    pub fn lookup(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    pub fn producer(&self, v: ValueId) -> NodeId {
        self.value(v).producer
    }

    pub fn producer_node(&self, v: ValueId) -> &Node {
        self.node(self.producer(v))
    }

    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    pub fn inputs_mut(&mut self) -> &mut [Port] {
        &mut self.inputs
    }

    pub fn outputs_mut(&mut self) -> &mut [Port] {
        &mut self.outputs
    }

    /// Indices of the graph output ports that name `v` (a value can be
    /// listed more than once).
    pub fn output_ports(&self, v: ValueId) -> Vec<usize> {
        self.outputs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.value == v)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.outputs.iter().any(|p| p.value == v)
    }

    pub fn is_graph_input(&self, v: ValueId) -> bool {
        self.inputs.iter().any(|p| p.value == v)
    }

    /// The constant behind `v`, if it is an initializer that is not also a
    /// graph input (a graph input can be overridden at run time).
    pub fn constant(&self, v: ValueId) -> Option<&Tensor> {
        if self.is_graph_input(v) {
            return None;
        }
        self.producer_node(v).initializer()
    }

    /// Every use of `v` by a node, as `(consumer, slot)`, in a stable order.
    pub fn users(&self, v: ValueId) -> Vec<(NodeId, Slot)> {
        let p = self.producer(v);
        let mut out: Vec<(NodeId, Slot)> = self
            .g
            .edges_directed(p.0, Direction::Outgoing)
            .filter(|e| e.weight().value == v)
            .map(|e| (NodeId(e.target()), e.weight().slot))
            .collect();
        out.sort_by_key(|(n, s)| (self.node(*n).order, n.0.index(), *s));
        out
    }

    /// Consumer nodes of `v` (each once), in a stable order.
    pub fn user_nodes(&self, v: ValueId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self.users(v).into_iter().map(|(n, _)| n).collect();
        out.dedup();
        out
    }

    /// Whether `v` is read by any node or is a graph output.
    pub fn is_used(&self, v: ValueId) -> bool {
        self.is_graph_output(v) || !self.users(v).is_empty()
    }

    /// Whether some use of `v` is from inside a subgraph attribute.
    pub fn has_implicit_uses(&self, v: ValueId) -> bool {
        self.users(v).iter().any(|(_, s)| *s == Slot::Implicit)
    }

    /// All live node ids, in creation-order key order (not topological).
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.g.node_indices().map(NodeId).collect();
        v.sort_by_key(|n| (self.node(*n).order, n.0.index()));
        v
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Op nodes in topological order, ties broken by creation order (and
    /// inserted nodes right after their anchor). Panics on a cycle, which
    /// import and [`Graph::verify`] rule out.
    pub fn topo_order(&self) -> Vec<NodeId> {
        self.try_topo_order().expect("invariant: graph is acyclic")
    }

    /// Every node (inputs, initializers, ops) in topological order, or the
    /// nodes left on a cycle.
    pub fn try_topo_order(&self) -> Result<Vec<NodeId>, Vec<NodeId>> {
        let mut indeg: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        for n in self.g.node_indices() {
            let preds: BTreeSet<NodeIndex<u32>> =
                self.g.neighbors_directed(n, Direction::Incoming).collect();
            indeg.insert(n, preds.len());
        }
        let key = |n: NodeIndex<u32>| (self.g[n].order, n.index());
        let mut ready: BinaryHeap<Reverse<((u64, u64), usize)>> = BinaryHeap::new();
        let mut by_key: HashMap<((u64, u64), usize), NodeIndex<u32>> = HashMap::new();
        for (&n, &d) in &indeg {
            by_key.insert(key(n), n);
            if d == 0 {
                ready.push(Reverse(key(n)));
            }
        }
        let mut out = Vec::with_capacity(indeg.len());
        while let Some(Reverse(k)) = ready.pop() {
            let n = by_key[&k];
            out.push(NodeId(n));
            let succs: BTreeSet<NodeIndex<u32>> =
                self.g.neighbors_directed(n, Direction::Outgoing).collect();
            for s in succs {
                let d = indeg.get_mut(&s).expect("invariant: indegree tracked");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(key(s)));
                }
            }
        }
        if out.len() == indeg.len() {
            Ok(out)
        } else {
            let done: BTreeSet<NodeIndex<u32>> = out.iter().map(|n| n.0).collect();
            let mut left: Vec<NodeId> = self
                .g
                .node_indices()
                .filter(|n| !done.contains(n))
                .map(NodeId)
                .collect();
            left.sort_by_key(|n| key(n.0));
            Err(left)
        }
    }

    /// Op nodes only, in topological order.
    pub fn ops(&self) -> Vec<NodeId> {
        self.topo_order()
            .into_iter()
            .filter(|&n| matches!(self.node(n).kind, NodeKind::Op(_)))
            .collect()
    }

    /// Initializer nodes (dense and sparse) in creation order.
    pub fn initializer_nodes(&self) -> Vec<NodeId> {
        self.node_ids()
            .into_iter()
            .filter(|&n| {
                matches!(
                    self.node(n).kind,
                    NodeKind::Initializer(_) | NodeKind::SparseInitializer(_)
                )
            })
            .collect()
    }

    /// Values carrying a `value_info` entry, in their original order.
    pub fn value_info_values(&self) -> Vec<ValueId> {
        let mut v: Vec<(u64, ValueId)> = self
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.as_ref()
                    .and_then(|v| v.info.as_ref().map(|(o, _)| (*o, ValueId(i as u32))))
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Every live value id, ascending.
    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(i, _)| ValueId(i as u32))
    }

    /// The declared type of `v`: graph input/output info, value_info, or the
    /// initializer's dtype and dims.
    pub fn value_type(&self, v: ValueId) -> Option<TypeProto> {
        if let Some(p) = self.inputs.iter().find(|p| p.value == v) {
            if let Some(t) = &p.info.r#type {
                return Some(t.clone());
            }
        }
        if let Some(p) = self.outputs.iter().find(|p| p.value == v) {
            if let Some(t) = &p.info.r#type {
                return Some(t.clone());
            }
        }
        if let Some((_, vi)) = &self.value(v).info {
            if let Some(t) = &vi.r#type {
                return Some(t.clone());
            }
        }
        if let Some(t) = self.producer_node(v).initializer() {
            return Some(super::types::tensor_type(t.dtype(), t.dims()));
        }
        None
    }

    /// Element type of `v` if known (0 = unknown).
    pub fn elem_type(&self, v: ValueId) -> i32 {
        self.value_type(v)
            .map(|t| super::types::elem_type(&t))
            .unwrap_or(0)
    }

    /// Static shape of `v` if fully known.
    pub fn static_shape(&self, v: ValueId) -> Option<Vec<usize>> {
        self.value_type(v)
            .and_then(|t| super::types::static_dims(&t))
    }

    // ----------------------------------------------------------------- building

    /// A name not yet used by any value, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.names.contains_key(base) && !base.is_empty() {
            return base.to_string();
        }
        let base = if base.is_empty() { "t" } else { base };
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.names.contains_key(n))
            .expect("invariant: some suffix is free")
    }

    fn new_order(&mut self) -> (u64, u64) {
        let o = (self.next_order, 0);
        self.next_order += 1;
        o
    }

    fn order_before(&mut self, anchor: NodeId) -> (u64, u64) {
        self.next_sub += 1;
        let (major, sub) = self.node(anchor).order;
        if sub > 0 {
            // The anchor was itself inserted; sort just ahead of it.
            return (major, sub - 1);
        }
        (major.saturating_sub(1), u64::MAX - self.next_sub)
    }

    fn order_after(&mut self, anchor: NodeId) -> (u64, u64) {
        self.next_sub += 1;
        (self.node(anchor).order.0, self.next_sub)
    }

    fn new_value(&mut self, name: String, producer: NodeId, slot: u32) -> ValueId {
        assert!(
            !self.names.contains_key(&name),
            "invariant: value name '{name}' is unique"
        );
        let id = ValueId(self.values.len() as u32);
        self.values.push(Some(Value {
            name: name.clone(),
            producer,
            slot,
            info: None,
        }));
        self.names.insert(name, id);
        id
    }

    fn add_raw_node(&mut self, kind: NodeKind, order: (u64, u64)) -> NodeId {
        NodeId(self.g.add_node(Node {
            kind,
            inputs: vec![],
            outputs: vec![],
            implicit_inputs: vec![],
            order,
        }))
    }

    /// Adds a graph input (appended to the input list).
    pub fn add_input(&mut self, info: ValueInfoProto) -> ValueId {
        let order = self.new_order();
        let n = self.add_raw_node(NodeKind::Input, order);
        let v = self.new_value(info.name().to_string(), n, 0);
        self.node_mut(n).outputs.push(Some(v));
        self.inputs.push(Port { value: v, info });
        v
    }

    /// Adds an initializer named after `tensor.name()` (made unique if needed).
    pub fn add_initializer(&mut self, mut tensor: Tensor) -> ValueId {
        let name = self.fresh_name(tensor.name());
        tensor.set_name(&name);
        let order = self.new_order();
        let n = self.add_raw_node(NodeKind::Initializer(tensor), order);
        let v = self.new_value(name, n, 0);
        self.node_mut(n).outputs.push(Some(v));
        v
    }

    /// Adds a sparse initializer (name from its `values` tensor).
    pub fn add_sparse_initializer(&mut self, sp: SparseTensorProto) -> ValueId {
        let name = sp
            .values
            .as_ref()
            .map(|t| t.name().to_string())
            .unwrap_or_default();
        let order = self.new_order();
        let n = self.add_raw_node(NodeKind::SparseInitializer(Box::new(sp)), order);
        let v = self.new_value(name, n, 0);
        self.node_mut(n).outputs.push(Some(v));
        v
    }

    /// Lists an existing initializer value among the graph inputs too.
    pub fn push_input_port(&mut self, v: ValueId, info: ValueInfoProto) {
        self.inputs.push(Port { value: v, info });
    }

    /// Appends a graph output.
    pub fn push_output(&mut self, v: ValueId, info: ValueInfoProto) {
        self.outputs.push(Port { value: v, info });
    }

    /// Removes every graph output port (the values stay).
    pub fn clear_outputs(&mut self) {
        self.outputs.clear();
    }

    /// Adds an op with the given operands and output names (each used as-is
    /// when free, otherwise made unique). `proto.input`/`output` are ignored.
    pub fn add_op(
        &mut self,
        proto: NodeProto,
        inputs: &[Option<ValueId>],
        output_names: &[&str],
    ) -> (NodeId, Vec<ValueId>) {
        let order = self.new_order();
        self.add_op_ordered(proto, inputs, output_names, order)
    }

    /// Like [`Graph::add_op`], but ordered right after `anchor` when ties are
    /// broken, so printed and exported graphs keep related nodes together.
    pub fn add_op_after(
        &mut self,
        anchor: NodeId,
        proto: NodeProto,
        inputs: &[Option<ValueId>],
        output_names: &[&str],
    ) -> (NodeId, Vec<ValueId>) {
        let order = self.order_after(anchor);
        self.add_op_ordered(proto, inputs, output_names, order)
    }

    /// Like [`Graph::add_op`], but ordered just before `anchor` when ties
    /// are broken (for the DequantizeLinear of a weight, next to its reader).
    pub fn add_op_before(
        &mut self,
        anchor: NodeId,
        proto: NodeProto,
        inputs: &[Option<ValueId>],
        output_names: &[&str],
    ) -> (NodeId, Vec<ValueId>) {
        let order = self.order_before(anchor);
        self.add_op_ordered(proto, inputs, output_names, order)
    }

    fn add_op_ordered(
        &mut self,
        mut proto: NodeProto,
        inputs: &[Option<ValueId>],
        output_names: &[&str],
        order: (u64, u64),
    ) -> (NodeId, Vec<ValueId>) {
        proto.input.clear();
        proto.output.clear();
        let n = self.add_raw_node(NodeKind::Op(Box::new(proto)), order);
        let mut outs = Vec::with_capacity(output_names.len());
        for (i, base) in output_names.iter().enumerate() {
            let name = self.fresh_name(base);
            let v = self.new_value(name, n, i as u32);
            outs.push(v);
        }
        self.node_mut(n).outputs = outs.iter().map(|&v| Some(v)).collect();
        for (slot, &inp) in inputs.iter().enumerate() {
            self.node_mut(n).inputs.push(None);
            self.set_input(n, slot, inp);
        }
        (n, outs)
    }

    /// Adds an op during import, where names come from the file and optional
    /// outputs may be omitted. Returns the node; outputs are created as given.
    pub(crate) fn import_op(&mut self, proto: NodeProto, outputs: &[Option<String>]) -> NodeId {
        let order = self.new_order();
        let n = self.add_raw_node(NodeKind::Op(Box::new(proto)), order);
        let mut outs = Vec::with_capacity(outputs.len());
        for (i, name) in outputs.iter().enumerate() {
            outs.push(
                name.as_ref()
                    .map(|nm| self.new_value(nm.clone(), n, i as u32)),
            );
        }
        self.node_mut(n).outputs = outs;
        n
    }

    /// Sets operand `slot` of `n` (growing the input list with omitted
    /// operands as needed) and keeps the use index in sync.
    pub fn set_input(&mut self, n: NodeId, slot: usize, v: Option<ValueId>) {
        if self.node(n).inputs.len() <= slot {
            self.node_mut(n).inputs.resize(slot + 1, None);
        }
        if let Some(old) = self.node(n).inputs[slot] {
            self.remove_edge(old, n, Slot::Input(slot as u32));
        }
        self.node_mut(n).inputs[slot] = v;
        if let Some(v) = v {
            let p = self.producer(v);
            self.g.add_edge(
                p.0,
                n.0,
                Use {
                    value: v,
                    slot: Slot::Input(slot as u32),
                },
            );
        }
    }

    /// Truncates trailing omitted operands (so `Clip(x, "", "")` → `Clip(x)`).
    pub fn trim_inputs(&mut self, n: NodeId) {
        while matches!(self.node(n).inputs.last(), Some(None)) {
            self.node_mut(n).inputs.pop();
        }
    }

    /// Records that `n` reads `v` from inside a subgraph attribute.
    pub(crate) fn add_implicit_input(&mut self, n: NodeId, v: ValueId) {
        if self.node(n).implicit_inputs.contains(&v) {
            return;
        }
        self.node_mut(n).implicit_inputs.push(v);
        let p = self.producer(v);
        self.g.add_edge(
            p.0,
            n.0,
            Use {
                value: v,
                slot: Slot::Implicit,
            },
        );
    }

    fn remove_edge(&mut self, v: ValueId, consumer: NodeId, slot: Slot) {
        let p = self.producer(v);
        let e: Option<EdgeIndex<u32>> = self
            .g
            .edges_connecting(p.0, consumer.0)
            .find(|e| e.weight().value == v && e.weight().slot == slot)
            .map(|e| e.id());
        let e = e.expect("invariant: every operand has its use edge");
        self.g.remove_edge(e);
    }

    /// Makes every explicit use of `old` read `new` instead. Graph outputs
    /// and implicit (subgraph) uses are left alone, because they are bound
    /// by name. Returns how many uses moved.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) -> usize {
        self.replace_uses_where(old, new, |_, _| true)
    }

    /// Like [`Graph::replace_all_uses`] but only for uses where `pred(node, slot)`.
    pub fn replace_uses_where(
        &mut self,
        old: ValueId,
        new: ValueId,
        mut pred: impl FnMut(NodeId, usize) -> bool,
    ) -> usize {
        let mut moved = 0;
        for (n, s) in self.users(old) {
            if let Slot::Input(i) = s {
                if pred(n, i as usize) {
                    self.set_input(n, i as usize, Some(new));
                    moved += 1;
                }
            }
        }
        moved
    }

    /// Points graph output `index` at another value, keeping the port's name
    /// by renaming: `new` takes the output's name and `old` gets a fresh one.
    /// Interfaces stay stable while passes rewrite what computes them.
    pub fn redirect_output(&mut self, index: usize, new: ValueId) {
        let old = self.outputs[index].value;
        if old == new {
            return;
        }
        let out_name = self.name(old).to_string();
        let tmp = self.fresh_name(&format!("{out_name}_pre"));
        // Re-point the port first: `rename` renames every port showing the
        // value, and this one must end up showing `new` under its old name.
        self.outputs[index].value = new;
        self.rename(old, &tmp);
        self.rename(new, &out_name);
    }

    /// Renames a value. Panics if the name is taken or used by a subgraph.
    pub fn rename(&mut self, v: ValueId, name: &str) {
        assert!(
            !self.names.contains_key(name),
            "invariant: rename target '{name}' is free"
        );
        assert!(
            !self.has_implicit_uses(v),
            "invariant: subgraph-bound values keep their names"
        );
        let old = std::mem::take(&mut self.value_mut(v).name);
        self.names.remove(&old);
        self.value_mut(v).name = name.to_string();
        if let Some((_, vi)) = &mut self.value_mut(v).info {
            vi.name = Some(name.to_string());
        }
        self.names.insert(name.to_string(), v);
        let p = self.producer(v);
        if let NodeKind::Initializer(t) = &mut self.node_mut(p).kind {
            t.set_name(name);
        }
        for port in self.inputs.iter_mut().chain(self.outputs.iter_mut()) {
            if port.value == v {
                port.info.name = Some(name.to_string());
            }
        }
    }

    /// Removes a node whose outputs are unused (and not graph outputs or
    /// graph inputs). Panics otherwise: callers check [`Graph::is_used`].
    pub fn remove_node(&mut self, n: NodeId) -> Node {
        for v in self.node(n).outputs.clone().into_iter().flatten() {
            assert!(
                !self.is_used(v),
                "invariant: removed node's outputs are unused"
            );
            assert!(
                !self.is_graph_input(v),
                "invariant: graph inputs are not removed"
            );
        }
        for v in self.node(n).outputs.clone().into_iter().flatten() {
            let name = std::mem::take(&mut self.value_mut(v).name);
            self.names.remove(&name);
            self.values[v.index()] = None;
        }
        self.g.remove_node(n.0).expect("invariant: live node id")
    }

    /// Replaces each result of op `n` by a new initializer holding
    /// `tensors[i]`, then removes `n`. Results keep their names, graph
    /// outputs included.
    pub fn replace_with_constants(&mut self, n: NodeId, tensors: Vec<Tensor>) {
        let outs: Vec<ValueId> = self.node(n).outputs().iter().flatten().copied().collect();
        let mut renames = Vec::new();
        for (v, mut t) in outs.into_iter().zip(tensors) {
            let name = self.name(v).to_string();
            t.set_name(&self.fresh_name(&format!("{name}_folded")));
            let c = self.add_initializer(t);
            self.replace_all_uses(v, c);
            match self.outputs().iter().position(|p| p.value == v) {
                Some(i) => self.redirect_output(i, c),
                None => renames.push((c, name)),
            }
        }
        self.remove_node(n);
        for (c, name) in renames {
            self.rename(c, &name);
        }
    }

    /// Replaces the tensor of an initializer node.
    pub fn set_initializer(&mut self, v: ValueId, mut t: Tensor) {
        let name = self.name(v).to_string();
        t.set_name(&name);
        let p = self.producer(v);
        match &mut self.node_mut(p).kind {
            NodeKind::Initializer(old) => *old = t,
            _ => panic!("invariant: set_initializer on an initializer"),
        }
    }

    // --------------------------------------------------------------- verifying

    /// Checks every invariant and well-formedness rule, collecting all
    /// violations: use edges match operands, names are unique and indexed,
    /// every operand's producer is live, ports reference live values, and
    /// the graph is acyclic.
    pub fn verify(&self) -> Result<(), Vec<Violation>> {
        let mut errs = Vec::new();
        let who = |n: NodeId| -> Option<String> {
            let node = self.node(n);
            Some(if node.name().is_empty() {
                node.op_type().to_string()
            } else {
                node.name().to_string()
            })
        };
        // Values and names.
        for (i, v) in self.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let id = ValueId(i as u32);
            if self.names.get(&v.name) != Some(&id) {
                errs.push(Violation {
                    node: None,
                    what: format!("value '{}' is not in the name index", v.name),
                });
            }
            if !self.g.contains_node(v.producer.0) {
                errs.push(Violation {
                    node: None,
                    what: format!("value '{}' has a dead producer", v.name),
                });
                continue;
            }
            let outs = &self.node(v.producer).outputs;
            if outs.get(v.slot as usize).copied().flatten() != Some(id) {
                errs.push(Violation {
                    node: who(v.producer),
                    what: format!(
                        "value '{}' is not output {} of its producer",
                        v.name, v.slot
                    ),
                });
            }
        }
        if self.names.len() != self.values.iter().filter(|v| v.is_some()).count() {
            errs.push(Violation {
                node: None,
                what: "name index and value table disagree".into(),
            });
        }
        // Operands vs edges.
        for n in self.g.node_indices().map(NodeId) {
            let node = self.node(n);
            let mut want: Vec<(ValueId, Slot)> = Vec::new();
            for (i, v) in node.inputs.iter().enumerate() {
                if let Some(v) = v {
                    if self
                        .values
                        .get(v.index())
                        .map(|x| x.is_none())
                        .unwrap_or(true)
                    {
                        errs.push(Violation {
                            node: who(n),
                            what: format!("operand {i} reads a removed value"),
                        });
                        continue;
                    }
                    want.push((*v, Slot::Input(i as u32)));
                }
            }
            for v in &node.implicit_inputs {
                want.push((*v, Slot::Implicit));
            }
            let mut have: Vec<(ValueId, Slot)> = self
                .g
                .edges_directed(n.0, Direction::Incoming)
                .map(|e| (e.weight().value, e.weight().slot))
                .collect();
            want.sort();
            have.sort();
            if want != have {
                errs.push(Violation {
                    node: who(n),
                    what: "use edges do not match operands".into(),
                });
            }
            for e in self.g.edges_directed(n.0, Direction::Incoming) {
                let v = e.weight().value;
                if let Some(Some(val)) = self.values.get(v.index()) {
                    if val.producer.0 != e.source() {
                        errs.push(Violation {
                            node: who(n),
                            what: format!("use of '{}' comes from the wrong producer", val.name),
                        });
                    }
                }
            }
            match &node.kind {
                NodeKind::Op(p) => {
                    if p.op_type().is_empty() {
                        errs.push(Violation {
                            node: who(n),
                            what: "node has no op_type".into(),
                        });
                    }
                }
                _ => {
                    if node.outputs.len() != 1 || !node.inputs.is_empty() {
                        errs.push(Violation {
                            node: None,
                            what: "input/initializer node must have one output and no operands"
                                .into(),
                        });
                    }
                }
            }
        }
        for (kind, ports) in [("input", &self.inputs), ("output", &self.outputs)] {
            for p in ports {
                match self.values.get(p.value.index()) {
                    Some(Some(v)) => {
                        if p.info.name() != v.name {
                            errs.push(Violation {
                                node: None,
                                what: format!(
                                    "graph {kind} '{}' names value '{}'",
                                    p.info.name(),
                                    v.name
                                ),
                            });
                        }
                    }
                    _ => errs.push(Violation {
                        node: None,
                        what: format!("graph {kind} '{}' reads a removed value", p.info.name()),
                    }),
                }
            }
        }
        for n in self.g.node_indices().map(NodeId) {
            if matches!(self.node(n).kind, NodeKind::Input)
                && !self
                    .inputs
                    .iter()
                    .any(|p| Some(p.value) == self.node(n).outputs[0])
            {
                errs.push(Violation {
                    node: None,
                    what: format!(
                        "input node '{}' is not a graph input",
                        self.name(self.node(n).output())
                    ),
                });
            }
        }
        if let Err(cycle) = self.try_topo_order() {
            let names: Vec<String> = cycle.iter().take(5).filter_map(|&n| who(n)).collect();
            errs.push(Violation {
                node: names.first().cloned(),
                what: format!("graph has a cycle through {}", names.join(", ")),
            });
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}
