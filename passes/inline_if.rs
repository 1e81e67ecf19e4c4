//! `inline-if`: replaces an `If` on a constant condition by the branch it
//! always takes.
//!
//! # What
//! Exporters often emit `If` nodes whose condition is fixed once the model
//! is exported (a flag baked into a constant, a shape test that constant
//! folding settles). The branch's ops are then hidden in a subgraph: they
//! are neither quantized nor counted, and tract cannot load an `If` whose
//! branches differ in rank. Inlined, the branch's nodes and initializers
//! join the main graph and the other branch is gone.
//!
//! # Example
//! ```text
//! before:  c = Constant <value = bool {1}>
//!          Y = If <then_branch = g1 { T = Relu (X) } -> T, else_branch = …> (c)
//! after:   Y = Relu (X)
//! ```
//!
//! # Options
//! None.
//!
//! # Preconditions
//! Left alone: a condition that is not a constant single bool, a branch
//! holding nodes with subgraphs of their own, an `If` whose outputs a
//! subgraph reads by name.
//!
//! # Numerics
//! Exact: the branch computes what the `If` would.
//!
//! # Errors
//! None.

use std::collections::BTreeMap;

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{At, Graph, Model, NodeId, Tensor, ValueId};
use crate::proto::GraphProto;

const NAME: &str = "inline-if";

#[derive(Debug, Default)]
pub struct InlineIf;

impl InlineIf {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>(NAME, o)?;
        Ok(InlineIf)
    }
}

/// The branch an `If` always takes, if its condition is a constant.
fn taken_branch(g: &Graph, n: NodeId) -> Option<GraphProto> {
    let node = g.node(n);
    if !node.is("If") || !node.domain().is_empty() {
        return None;
    }
    let cond = g.constant(node.input(0)?)?;
    let v = cond.to_i64().ok()?;
    if v.len() != 1 {
        return None;
    }
    let attr = if v[0] != 0 {
        "then_branch"
    } else {
        "else_branch"
    };
    let b = node.attr(attr)?.g.as_ref()?.clone();
    let outs = node.outputs().iter().flatten().copied().collect::<Vec<_>>();
    let bound = outs.iter().any(|&o| g.has_implicit_uses(o));
    (!bound && b.output.len() == outs.len()).then_some(b)
}

/// Moves the branch's initializers and nodes into the main graph before
/// `n` and returns the values standing for the branch's outputs.
fn inline(g: &mut Graph, n: NodeId, b: &GraphProto) -> Option<Vec<ValueId>> {
    // Names inside the branch shadow the outer scope.
    let mut local: BTreeMap<String, ValueId> = BTreeMap::new();
    let resolve = |local: &BTreeMap<String, ValueId>, g: &Graph, name: &str| -> Option<ValueId> {
        local.get(name).copied().or_else(|| g.lookup(name))
    };
    for t in &b.initializer {
        let name = t.name.clone().unwrap_or_default();
        let mut tensor = Tensor::from_proto(t.clone());
        tensor.set_name(&g.fresh_name(&name));
        let v = g.add_initializer(tensor);
        local.insert(name, v);
    }
    for np in &b.node {
        let mut inputs = Vec::with_capacity(np.input.len());
        for i in &np.input {
            inputs.push(if i.is_empty() {
                None
            } else {
                Some(resolve(&local, g, i)?)
            });
        }
        let outs: Vec<&str> = np.output.iter().map(String::as_str).collect();
        let (added, vals) = g.add_op(np.clone(), &inputs, &outs, At::Before(n));
        // A node with subgraphs of its own (a nested If) reads outer names
        // from the branch or beyond: bind them here.
        let mut holder = np.clone();
        holder.input.clear();
        for name in crate::ir::build::subgraph_free_names(&holder) {
            let v = resolve(&local, g, &name)?;
            g.bind_implicit(added, &name, v);
        }
        for (name, v) in np.output.iter().zip(vals) {
            if !name.is_empty() {
                local.insert(name.clone(), v);
            }
        }
    }
    b.output
        .iter()
        .map(|o| resolve(&local, g, o.name()))
        .collect()
}

impl Pass for InlineIf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut done = 0usize;
        loop {
            let g = &mut m.graph;
            let site = g
                .ops()
                .into_iter()
                .find_map(|n| taken_branch(g, n).map(|b| (n, b)));
            let Some((n, b)) = site else {
                if done == 0 {
                    break;
                }
                // The branches taken may compute the conditions of Ifs
                // nested in them (a sample-rate switch tested again
                // inside): fold what became constant and look again.
                let mut fold =
                    super::fold_constants::FoldConstants::from_options(serde_json::json!({}))?;
                fold.run(m, &mut PassContext::new())?;
                let g = &m.graph;
                if g.ops().into_iter().any(|n| taken_branch(g, n).is_some()) {
                    continue;
                }
                break;
            };
            let label = g.label(n).to_string();
            let Some(vals) = inline(g, n, &b) else {
                // A name the branch reads is nowhere: leave the If (the
                // half-inlined nodes are dead and `dce` removes them).
                cx.remark(
                    NAME,
                    &label,
                    "branch reads a name defined nowhere: left as it is",
                );
                break;
            };
            let outs: Vec<ValueId> = g.node(n).outputs().iter().flatten().copied().collect();
            for (o, v) in outs.into_iter().zip(vals) {
                g.replace_all_uses(o, v);
                let ports = g.output_ports(o);
                if ports.is_empty() {
                    continue;
                }
                // The output keeps its name on a copy: the branch's value
                // may be a graph input or another output.
                let oname = g.name(o).to_string();
                let (_, copy) = g.add_op(
                    super::node_proto("Identity", vec![]),
                    &[Some(v)],
                    &[&format!("{oname}_inlined")],
                    At::Before(n),
                );
                for i in ports {
                    g.redirect_output(i, copy[0]);
                }
            }
            g.remove_node(n);
            done += 1;
        }
        if done > 0 {
            cx.remark(
                NAME,
                "<model>",
                format!("{done} If on a constant condition replaced by the branch it takes"),
            );
        }
        Ok(Changed::from_bool(done > 0))
    }
}
