//! The mutation API: the only way to change a graph. Every method keeps
//! the invariants of [`Graph`] (use edges match operands, names are unique
//! and indexed, labels are unique, copies of a name agree).

use petgraph::stable_graph::EdgeIndex;
use petgraph::visit::EdgeRef;

use super::*;

/// Where a new op goes in the deterministic order nodes are printed and
/// exported in (ties of the topological order are broken by it).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum At {
    /// After every node made so far.
    End,
    /// Right after this node (a QuantizeLinear after its producer).
    After(NodeId),
    /// Just before this node (the DequantizeLinear of a weight, next to its
    /// reader).
    Before(NodeId),
}

impl Graph {
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
            label: String::new(),
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
        self.label_value_node(n);
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
        self.label_value_node(n);
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
        self.label_value_node(n);
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
    /// when free, otherwise made unique), ordered as `at` says.
    /// `proto.input`/`output` are ignored. The node's label is its name
    /// when that is free, else derived from its first output (see
    /// [`Node::label`]).
    pub fn add_op(
        &mut self,
        mut proto: NodeProto,
        inputs: &[Option<ValueId>],
        output_names: &[&str],
        at: At,
    ) -> (NodeId, Vec<ValueId>) {
        let order = match at {
            At::End => self.new_order(),
            At::After(anchor) => self.order_after(anchor),
            At::Before(anchor) => self.order_before(anchor),
        };
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
        self.assign_label(n);
        for (slot, &inp) in inputs.iter().enumerate() {
            self.node_mut(n).inputs.push(None);
            self.set_input(n, slot, inp);
        }
        (n, outs)
    }

    /// Gives an op its unique label: its name when no other node holds it,
    /// else `op@first-output` (output names are unique), else that with a
    /// `#k` suffix.
    fn assign_label(&mut self, n: NodeId) {
        let node = self.node(n);
        let name = node.name();
        let derived = match node.outputs.iter().flatten().next() {
            Some(&v) => format!("{}@{}", node.op_type(), self.name(v)),
            None => format!("{}@", node.op_type()),
        };
        let base = if !name.is_empty() && !self.labels.contains_key(name) {
            name.to_string()
        } else {
            derived
        };
        self.insert_label(n, base);
    }

    /// Gives `to` the label of `from`, which is being replaced by it (a
    /// lowering that turns an op into its quantized form): the op keeps
    /// the identity selections and reports know it by. `from` gets a fresh
    /// derived label and is expected to be removed.
    pub fn take_label(&mut self, from: NodeId, to: NodeId) {
        let label = std::mem::take(&mut self.node_mut(from).label);
        let old = std::mem::take(&mut self.node_mut(to).label);
        self.labels.remove(&old);
        self.labels.insert(label.clone(), to);
        self.node_mut(to).label = label;
        let base = format!("{}@replaced", self.node(from).op_type());
        self.insert_label(from, base);
    }

    /// Labels an input or initializer node `%name`.
    fn label_value_node(&mut self, n: NodeId) {
        let base = format!("%{}", self.name(self.node(n).output()));
        self.insert_label(n, base);
    }

    fn insert_label(&mut self, n: NodeId, base: String) {
        let label = if self.labels.contains_key(&base) {
            (2..)
                .map(|k| format!("{base}#{k}"))
                .find(|l| !self.labels.contains_key(l))
                .expect("invariant: some suffix is free")
        } else {
            base
        };
        self.labels.insert(label.clone(), n);
        self.node_mut(n).label = label;
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
        self.assign_label(n);
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

    /// Makes every subgraph of `n` that reads `old` from the outer scope
    /// read `new` instead: the references by name inside the bodies are
    /// rewritten (a body that defines the name itself shadows it and is
    /// left alone), and the implicit use moves.
    pub fn rebind_implicit(&mut self, n: NodeId, old: ValueId, new: ValueId) {
        if !self.node(n).implicit_inputs.contains(&old) {
            return;
        }
        let from = self.name(old).to_string();
        self.remove_edge(old, n, Slot::Implicit);
        self.node_mut(n).implicit_inputs.retain(|&v| v != old);
        self.bind_implicit(n, &from, new);
    }

    /// Records that the subgraphs of `n` read `v` where their bodies say
    /// `name` (the outer-scope reference of a node moved into this graph),
    /// rewriting the references when `v` goes by another name here.
    pub fn bind_implicit(&mut self, n: NodeId, name: &str, v: ValueId) {
        let to = self.name(v).to_string();
        if to != name {
            for a in &mut self.op_mut(n).attribute {
                for sg in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                    rename_outer_reads(sg, name, &to);
                }
            }
        }
        self.add_implicit_input(n, v);
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

    /// [`Self::replace_all_uses`], and every graph output showing `old`
    /// shows `new` under the output's name ([`Self::redirect_output`]):
    /// what a rewrite does before removing the node that made `old`.
    pub fn replace_value(&mut self, old: ValueId, new: ValueId) {
        self.replace_all_uses(old, new);
        for i in self.output_ports(old) {
            self.redirect_output(i, new);
        }
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
        let label = self.node(n).label.clone();
        self.labels.remove(&label);
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

    /// Edits an op's attributes, op type or domain. Operands and results
    /// stay as they are: they live on the node, not in the proto.
    pub fn op_mut(&mut self, n: NodeId) -> &mut NodeProto {
        self.node_mut(n)
            .op_mut()
            .expect("invariant: op_mut on an op node")
    }

    /// Sets (or, with `None`, removes) the `value_info` entry of `v`. The
    /// entry takes the value's name; a value that had one keeps its place
    /// in the exported list, a new one goes after every other.
    pub fn set_value_info(&mut self, v: ValueId, info: Option<ValueInfoProto>) {
        let name = self.name(v).to_string();
        let next = self
            .values
            .iter()
            .flatten()
            .filter_map(|x| x.info.as_ref().map(|(i, _)| i + 1))
            .max()
            .unwrap_or(0);
        let val = self.value_mut(v);
        val.info = info.map(|mut vi| {
            vi.name = Some(name);
            let pos = val.info.as_ref().map(|(i, _)| *i).unwrap_or(next);
            (pos, vi)
        });
    }

    /// Sets the declared type of graph input `i` (the port keeps its name).
    pub fn set_input_type(&mut self, i: usize, ty: Option<TypeProto>) {
        self.inputs[i].info.r#type = ty;
    }

    /// Sets the declared type of graph output `i` (the port keeps its name).
    pub fn set_output_type(&mut self, i: usize, ty: Option<TypeProto>) {
        self.outputs[i].info.r#type = ty;
    }

    /// Sets the graph's name (the `name` field of the graph proto).
    pub fn set_graph_name(&mut self, name: &str) {
        self.shell.name = Some(name.to_string());
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
}

/// Rewrites the reads of outer-scope name `from` inside subgraph `g` (and
/// the subgraphs within it) to `to`; a body that defines `from` itself
/// shadows it and is left alone.
fn rename_outer_reads(g: &mut crate::proto::GraphProto, from: &str, to: &str) {
    let defines = g.input.iter().any(|i| i.name() == from)
        || g.initializer.iter().any(|t| t.name() == from)
        || g.node.iter().any(|n| n.output.iter().any(|o| o == from));
    if defines {
        return;
    }
    for node in &mut g.node {
        for i in &mut node.input {
            if i == from {
                *i = to.to_string();
            }
        }
        for a in &mut node.attribute {
            for sg in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                rename_outer_reads(sg, from, to);
            }
        }
    }
    for o in &mut g.output {
        if o.name() == from {
            o.name = Some(to.to_string());
        }
    }
}
