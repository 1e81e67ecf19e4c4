//! Building a [`Graph`] from the parts of an ONNX graph: initializers,
//! inputs, nodes that name their operands and results, `value_info` and
//! outputs. Import (from a `GraphProto`) and the text parser (from its
//! parsed form) both build through [`GraphBuilder`], so a file and its text
//! are held to the same rules:
//!
//! * every name is defined once: by an initializer, a sparse initializer, a
//!   graph input or one node result (an initializer may also be listed as
//!   an input; a graph input may not be listed twice);
//! * every operand, every name a subgraph reads from the outer scope and
//!   every graph output is defined somewhere in the graph. Nodes may come in
//!   any order, as in a file: results are defined as nodes are added,
//!   operands resolved once all are in ([`GraphBuilder::resolve`]);
//! * the graph is acyclic ([`Resolved::finish`]).
//!
//! Errors are a [`BuildError`] carrying the caller's *site* type `S` where
//! a name was defined or listed (a line and column for the text parser, a
//! description such as "an initializer" for import), so each caller words
//! the error with its own context. Value ids and node order come out in the
//! order the parts are added, so callers that add them in file order get the
//! same graph.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;

use super::graph::Graph;
use super::tensor::Tensor;
use super::{NodeId, ValueId};
use crate::proto::{GraphProto, NodeProto, SparseTensorProto, TensorProto, ValueInfoProto};

/// Why the parts do not make a graph. `S` is the caller's site type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError<S> {
    /// `name` is defined at `first` and again at `second`.
    #[error("'{name}' is defined twice; every value must have one producer")]
    Duplicate { name: String, first: S, second: S },
    /// A graph input listed a second time, at `site`.
    #[error("graph input '{name}' is listed twice")]
    DuplicateInput { name: String, site: S },
    /// Operand `slot` of `node` names nothing the graph defines.
    #[error("'{name}', read by {}, is not defined", node.op_type)]
    UndefinedOperand {
        name: String,
        node: NodeRef,
        slot: usize,
    },
    /// A subgraph of `node` reads `name` from the outer scope, which does
    /// not define it.
    #[error("'{name}', read inside a subgraph of {}, is not defined", node.op_type)]
    UndefinedImplicit { name: String, node: NodeRef },
    /// A graph output, listed at `site`, names nothing the graph defines.
    #[error("graph output '{name}' is not produced by any node, input or initializer")]
    UndefinedOutput { name: String, site: S },
    /// The op nodes left on or after a cycle, in creation order.
    #[error("the graph has a cycle")]
    Cycle { nodes: Vec<NodeRef> },
}

/// The node an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    pub id: NodeId,
    /// The node's name; empty if it has none.
    pub name: String,
    pub op_type: String,
}

/// First phase: definitions. Add initializers, then inputs, then nodes, then
/// [`resolve`](GraphBuilder::resolve) the operands.
pub struct GraphBuilder<S> {
    g: Graph,
    /// Every defined name and where.
    defined: HashMap<String, S>,
    seen_inputs: BTreeSet<String>,
    /// Nodes whose operands are still names.
    pending: Vec<Pending>,
}

/// A node added but not yet wired to its operands.
struct Pending {
    node: NodeId,
    inputs: Vec<String>,
    /// Outer-scope names its subgraphs read.
    free: BTreeSet<String>,
}

impl<S> Default for GraphBuilder<S> {
    fn default() -> Self {
        GraphBuilder {
            g: Graph::new(),
            defined: HashMap::new(),
            seen_inputs: BTreeSet::new(),
            pending: Vec::new(),
        }
    }
}

impl<S: Clone> GraphBuilder<S> {
    pub fn new() -> Self {
        Self::default()
    }

    fn define(&mut self, name: &str, site: S) -> Result<(), BuildError<S>> {
        if let Some(first) = self.defined.get(name) {
            return Err(BuildError::Duplicate {
                name: name.to_string(),
                first: first.clone(),
                second: site,
            });
        }
        self.defined.insert(name.to_string(), site);
        Ok(())
    }

    /// Adds a dense initializer, defined at `site`. The name is checked
    /// before `load` turns the proto into a tensor (mapping external data,
    /// validating sizes), so a duplicate is reported even when the tensor
    /// is also bad. The outer error is the builder's, the inner `load`'s.
    pub fn initializer<E>(
        &mut self,
        tp: TensorProto,
        site: S,
        load: impl FnOnce(TensorProto) -> Result<Tensor, E>,
    ) -> Result<Result<ValueId, E>, BuildError<S>> {
        self.define(tp.name(), site)?;
        Ok(load(tp).map(|t| self.g.add_initializer(t)))
    }

    /// Adds a sparse initializer (named by its `values` tensor), defined at
    /// `site`.
    pub fn sparse_initializer(
        &mut self,
        sp: SparseTensorProto,
        site: S,
    ) -> Result<ValueId, BuildError<S>> {
        let name = sp
            .values
            .as_ref()
            .map(|t| t.name().to_string())
            .unwrap_or_default();
        self.define(&name, site)?;
        Ok(self.g.add_sparse_initializer(sp))
    }

    /// Adds a graph input listed at `site`. An input that names an
    /// initializer (added before) lists that initializer among the inputs
    /// (IR < 4 style) instead of defining a new value.
    pub fn input(&mut self, vi: ValueInfoProto, site: S) -> Result<ValueId, BuildError<S>> {
        if !self.seen_inputs.insert(vi.name().to_string()) {
            return Err(BuildError::DuplicateInput {
                name: vi.name().to_string(),
                site,
            });
        }
        match self.g.lookup(vi.name()) {
            Some(v) => {
                self.g.push_input_port(v, vi);
                Ok(v)
            }
            None => {
                self.define(vi.name(), site)?;
                Ok(self.g.add_input(vi))
            }
        }
    }

    /// Adds an op from a node proto whose `input`/`output` name its operands
    /// and results (`""` for an omitted one). Results are defined now, each
    /// at `output_site(index)`; operands are names until
    /// [`resolve`](GraphBuilder::resolve), so they may name results of
    /// nodes added later.
    pub fn node(
        &mut self,
        mut np: NodeProto,
        mut output_site: impl FnMut(usize) -> S,
    ) -> Result<NodeId, BuildError<S>> {
        let inputs = std::mem::take(&mut np.input);
        let outputs = std::mem::take(&mut np.output);
        for (i, o) in outputs.iter().enumerate() {
            if !o.is_empty() {
                self.define(o, output_site(i))?;
            }
        }
        let free = subgraph_free_names(&np);
        let outs: Vec<Option<String>> = outputs
            .into_iter()
            .map(|o| (!o.is_empty()).then_some(o))
            .collect();
        let node = self.g.import_op(np, &outs);
        self.pending.push(Pending { node, inputs, free });
        Ok(node)
    }

    /// Second phase: wires every node's operands, and the outer-scope names
    /// its subgraphs read (as implicit uses), to the values they name, node
    /// by node in the order added.
    pub fn resolve(mut self) -> Result<Resolved<S>, BuildError<S>> {
        for p in std::mem::take(&mut self.pending) {
            for (slot, name) in p.inputs.iter().enumerate() {
                let v = if name.is_empty() {
                    None
                } else {
                    Some(
                        self.g
                            .lookup(name)
                            .ok_or_else(|| BuildError::UndefinedOperand {
                                name: name.clone(),
                                node: node_ref(&self.g, p.node),
                                slot,
                            })?,
                    )
                };
                self.g.set_input(p.node, slot, v);
            }
            for name in p.free {
                let v = self
                    .g
                    .lookup(&name)
                    .ok_or_else(|| BuildError::UndefinedImplicit {
                        node: node_ref(&self.g, p.node),
                        name,
                    })?;
                self.g.add_implicit_input(p.node, v);
            }
        }
        Ok(Resolved {
            g: self.g,
            infos: 0,
            orphans: Vec::new(),
            site: PhantomData,
        })
    }
}

/// Last phase: every value is defined; attach `value_info` and the graph
/// outputs, then [`finish`](Resolved::finish).
pub struct Resolved<S> {
    g: Graph,
    /// `value_info` entries seen so far (their index orders them on export).
    infos: u64,
    /// `value_info` entries for no value of the graph, or repeated ones.
    orphans: Vec<ValueInfoProto>,
    site: PhantomData<S>,
}

impl<S> Resolved<S> {
    /// Attaches a `value_info` entry to the value it names. Entries for
    /// unknown names (or repeated entries) are not ours to judge: they are
    /// kept verbatim in the graph's shell.
    pub fn value_info(&mut self, vi: ValueInfoProto) {
        let i = self.infos;
        self.infos += 1;
        match self.g.lookup(vi.name()) {
            Some(v) if self.g.value(v).info.is_none() => self.g.value_mut(v).info = Some((i, vi)),
            _ => self.orphans.push(vi),
        }
    }

    /// Appends a graph output, listed at `site`.
    pub fn output(&mut self, vi: ValueInfoProto, site: S) -> Result<(), BuildError<S>> {
        let v = self
            .g
            .lookup(vi.name())
            .ok_or_else(|| BuildError::UndefinedOutput {
                name: vi.name().to_string(),
                site,
            })?;
        self.g.push_output(v, vi);
        Ok(())
    }

    /// The graph, with `shell` (the graph proto's name, doc string and other
    /// fields the IR does not model) kept as [`Graph::shell`]; its
    /// `value_info` becomes the entries [`value_info`](Resolved::value_info)
    /// could not attach. Fails if the graph has a cycle.
    pub fn finish(mut self, mut shell: GraphProto) -> Result<Graph, BuildError<S>> {
        shell.value_info = self.orphans;
        self.g.shell = shell;
        if let Err(cycle) = self.g.try_topo_order() {
            let nodes = cycle
                .into_iter()
                .filter(|&n| self.g.node(n).op().is_some())
                .map(|n| node_ref(&self.g, n))
                .collect();
            return Err(BuildError::Cycle { nodes });
        }
        Ok(self.g)
    }
}

fn node_ref(g: &Graph, n: NodeId) -> NodeRef {
    let node = g.node(n);
    NodeRef {
        id: n,
        name: node.name().to_string(),
        op_type: node.op_type().to_string(),
    }
}

/// Names read inside a node's subgraph attributes that the subgraphs do not
/// define themselves: the outer-scope values the node implicitly uses.
///
/// Recursive, one level per nested subgraph. The depth is bounded by
/// whoever made the proto: a decoded file holds at most 100 nested messages
/// (prost's recursion limit), i.e. about 33 subgraph levels, since each costs
/// three (`GraphProto` → `NodeProto` → `AttributeProto`); the text parser
/// refuses deeper nesting than its own limit.
pub fn subgraph_free_names(np: &NodeProto) -> BTreeSet<String> {
    let mut free = BTreeSet::new();
    for a in &np.attribute {
        for sg in a.g.iter().chain(a.graphs.iter()) {
            free.extend(graph_free_names(sg));
        }
    }
    free
}

fn graph_free_names(g: &GraphProto) -> BTreeSet<String> {
    let mut defined: BTreeSet<&str> = BTreeSet::new();
    for i in &g.input {
        defined.insert(i.name());
    }
    for t in &g.initializer {
        defined.insert(t.name());
    }
    for s in &g.sparse_initializer {
        if let Some(v) = &s.values {
            defined.insert(v.name());
        }
    }
    for n in &g.node {
        for o in &n.output {
            defined.insert(o);
        }
    }
    let mut free = BTreeSet::new();
    for n in &g.node {
        for i in &n.input {
            if !i.is_empty() && !defined.contains(i.as_str()) {
                free.insert(i.clone());
            }
        }
        for name in subgraph_free_names(n) {
            if !defined.contains(name.as_str()) {
                free.insert(name);
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name()) {
            free.insert(o.name().to_string());
        }
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vi(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn tensor(name: &str) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            data_type: Some(1),
            dims: vec![1],
            float_data: vec![1.0],
            ..Default::default()
        }
    }

    fn ok(tp: TensorProto) -> Result<Tensor, ()> {
        Ok(Tensor::from_proto(tp))
    }

    #[test]
    fn duplicate_names_carry_both_sites() {
        let mut b = GraphBuilder::new();
        b.input(vi("X"), 1).unwrap();
        b.node(node("Relu", &["X"], &["Y"]), |_| 2).unwrap();
        let e = b
            .node(node("Neg", &["X"], &["", "Y"]), |i| 3 + i)
            .unwrap_err();
        let want = BuildError::Duplicate {
            name: "Y".into(),
            first: 2,
            second: 4,
        };
        assert_eq!(e, want);
    }

    #[test]
    fn a_duplicate_initializer_is_reported_before_it_is_loaded() {
        let mut b = GraphBuilder::new();
        b.initializer(tensor("c"), 1, ok).unwrap().unwrap();
        let e = b.initializer(tensor("c"), 2, |_| -> Result<Tensor, ()> { Err(()) });
        assert!(matches!(
            e,
            Err(BuildError::Duplicate {
                first: 1,
                second: 2,
                ..
            })
        ));
    }

    #[test]
    fn an_initializer_may_be_an_input_once() {
        let mut b = GraphBuilder::new();
        let c = b.initializer(tensor("c"), 1, ok).unwrap().unwrap();
        assert_eq!(b.input(vi("c"), 2), Ok(c));
        let e = b.input(vi("c"), 3).unwrap_err();
        let want = BuildError::DuplicateInput {
            name: "c".into(),
            site: 3,
        };
        assert_eq!(e, want);
    }

    #[test]
    fn operands_may_name_later_nodes_and_undefined_ones_are_named() {
        let mut b = GraphBuilder::new();
        b.input(vi("X"), 0).unwrap();
        b.node(node("Relu", &["A"], &["Y"]), |_| 1).unwrap();
        b.node(node("Neg", &["X"], &["A"]), |_| 2).unwrap();
        let mut r = b.resolve().unwrap();
        r.output(vi("Y"), 3).unwrap();
        let e = r.output(vi("Z"), 4).unwrap_err();
        let want = BuildError::UndefinedOutput {
            name: "Z".into(),
            site: 4,
        };
        assert_eq!(e, want);
        let g = r.finish(GraphProto::default()).unwrap();
        let names: Vec<&str> = g.ops().iter().map(|&n| g.node(n).op_type()).collect();
        assert_eq!(names, ["Neg", "Relu"]);

        let mut b = GraphBuilder::new();
        let n = b.node(node("Add", &["", "Q"], &["Y"]), |_| 0).unwrap();
        match b.resolve() {
            Err(BuildError::UndefinedOperand { name, node, slot }) => {
                assert_eq!((name.as_str(), node.id, slot), ("Q", n, 1));
            }
            _ => panic!("expected an undefined operand"),
        }
    }

    #[test]
    fn cycles_name_their_op_nodes() {
        let mut b = GraphBuilder::new();
        b.input(vi("X"), 0).unwrap();
        b.node(node("Add", &["X", "B"], &["A"]), |_| 1).unwrap();
        b.node(node("Neg", &["A"], &["B"]), |_| 2).unwrap();
        let r = b.resolve().unwrap();
        match r.finish(GraphProto::default()) {
            Err(BuildError::Cycle { nodes }) => {
                let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
                assert_eq!(ops, ["Add", "Neg"]);
            }
            _ => panic!("expected a cycle"),
        }
    }

    #[test]
    fn unattached_value_info_is_kept_in_the_shell() {
        let mut b = GraphBuilder::<u32>::new();
        b.input(vi("X"), 0).unwrap();
        let mut r = b.resolve().unwrap();
        r.value_info(vi("nowhere"));
        r.value_info(vi("X"));
        r.value_info(vi("X"));
        let g = r.finish(GraphProto::default()).unwrap();
        let x = g.lookup("X").unwrap();
        assert_eq!(g.value(x).info.as_ref().map(|(i, _)| *i), Some(1));
        let kept: Vec<&str> = g.shell.value_info.iter().map(|v| v.name()).collect();
        assert_eq!(kept, ["nowhere", "X"]);
    }
}
