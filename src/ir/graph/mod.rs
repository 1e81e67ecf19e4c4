//! The graph: a petgraph `StableDiGraph` of nodes plus a typed value table.
//!
//! Every value (tensor) has exactly one producer node: an op, a graph input
//! or an initializer. An edge `producer → consumer` is one *use* of a value in
//! one operand slot; operand order lives on the consumer node, and edges are a
//! derived index that only the methods here keep in sync with it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::tensor::Tensor;

mod edit;
mod verify;

use crate::proto::{GraphProto, NodeProto, SparseTensorProto, TypeProto, ValueInfoProto};
pub use edit::At;

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
// Most nodes of a model are initializers, so boxing the common variant to
// shrink the rare `Input` would only add a pointer chase per weight.
#[allow(clippy::large_enum_variant)]
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
    kind: NodeKind,
    /// Unique in the graph and stable for the node's life (a rename of its
    /// outputs does not change it): what selections, reports and cost
    /// accounting key a node by. An op's name when it is free, else
    /// `op@first-output`; `%name` for graph inputs and initializers.
    label: String,
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
    /// The node's unique, stable label (see the field's doc).
    pub fn label(&self) -> &str {
        &self.label
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
    pub(super) fn op_mut(&mut self) -> Option<&mut NodeProto> {
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
    pub fn attr(&self, name: &str) -> Option<&crate::proto::AttributeProto> {
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
    /// original list (for stable export order). Its name is the value's.
    pub(crate) info: Option<(u64, ValueInfoProto)>,
}

impl Value {
    /// The value's `value_info` entry, if it has one.
    pub fn info(&self) -> Option<&ValueInfoProto> {
        self.info.as_ref().map(|(_, vi)| vi)
    }
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
    pub(crate) shell: GraphProto,
    /// Node label → node: labels are unique.
    labels: HashMap<String, NodeId>,
    next_order: u64,
    next_sub: u64,
}

/// A broken invariant or an ill-formed graph, found by [`Graph::verify`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct Violation {
    /// The label of the node concerned, if any.
    pub node: Option<String>,
    /// The node concerned, for rendering the finding under it.
    pub at: Option<NodeId>,
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

    pub(super) fn node_mut(&mut self, n: NodeId) -> &mut Node {
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

    pub(crate) fn value_mut(&mut self, v: ValueId) -> &mut Value {
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

    /// The graph proto fields the IR does not interpret (name, doc string,
    /// quantization annotations, metadata, dangling value_info).
    pub fn shell(&self) -> &GraphProto {
        &self.shell
    }

    /// The node with this label.
    pub fn by_label(&self, label: &str) -> Option<NodeId> {
        self.labels.get(label).copied()
    }

    /// `n`'s label (see [`Node::label`]).
    pub fn label(&self, n: NodeId) -> &str {
        &self.node(n).label
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
            .filter(|&n| matches!(self.node(n).kind(), NodeKind::Op(_)))
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
}
