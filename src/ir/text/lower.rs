//! Lowering: the main graph's parsed form to the IR.
//!
//! Nodes may come in any order in the text, as in a file: every node's
//! results are defined first, its operands resolved second.

use std::collections::{BTreeSet, HashMap};

use super::lex::{Lexer, PResult};
use super::parse::{PGraph, PItem};
use crate::ir::graph::Graph;
use crate::ir::tensor::Tensor;
use crate::ir::{NodeId, NodeKind};
use crate::onnx::tensor_proto::DataLocation;

/// Builds the main graph through the graph API, with import's checks:
/// every name defined once, every operand and output defined, no cycle.
pub(super) fn main_graph(lx: &Lexer<'_>, pg: PGraph) -> PResult<Graph> {
    let mut g = Graph::new();
    let mut defined: HashMap<String, usize> = HashMap::new();
    let define = |defined: &mut HashMap<String, usize>, name: &str, at: usize| -> PResult<()> {
        if let Some(&first) = defined.get(name) {
            let (l, c) = lx.loc(first);
            return Err(lx.err_at(at, format!("name '{name}' is defined twice (first at {l}:{c}); every value must have one producer")));
        }
        defined.insert(name.to_string(), at);
        Ok(())
    };
    let mut infos = Vec::new();
    for it in pg.items {
        match it {
            PItem::Dense(tp, at) => {
                define(&mut defined, tp.name(), at)?;
                let t = Tensor::from_proto(*tp);
                if t.external().is_none()
                    && t.proto().data_location != Some(DataLocation::External as i32)
                {
                    t.validate().map_err(|e| lx.err_at(at, e.to_string()))?;
                }
                g.add_initializer(t);
            }
            PItem::Sparse(sp, at) => {
                let name = sp
                    .values
                    .as_ref()
                    .map(|v| v.name().to_string())
                    .unwrap_or_default();
                define(&mut defined, &name, at)?;
                g.add_sparse_initializer(*sp);
            }
            PItem::Info(vi, at) => infos.push((vi, at)),
        }
    }
    let mut seen_inputs = BTreeSet::new();
    for (vi, at) in pg.inputs {
        let name = vi.name().to_string();
        if !seen_inputs.insert(name.clone()) {
            return Err(lx.err_at(at, format!("graph input '{name}' is listed twice")));
        }
        let is_init = g.lookup(&name).is_some_and(|v| {
            matches!(
                g.producer_node(v).kind,
                NodeKind::Initializer(_) | NodeKind::SparseInitializer(_)
            )
        });
        if is_init {
            let v = g.lookup(&name).expect("invariant: just looked up");
            g.push_input_port(v, vi);
        } else {
            define(&mut defined, &name, at)?;
            g.add_input(vi);
        }
    }
    let mut pending = Vec::new();
    let mut node_pos: HashMap<NodeId, usize> = HashMap::new();
    for mut n in pg.nodes {
        let outputs = std::mem::take(&mut n.proto.output);
        let inputs = std::mem::take(&mut n.proto.input);
        for (o, &at) in outputs.iter().zip(&n.out_pos) {
            if !o.is_empty() {
                define(&mut defined, o, at)?;
            }
        }
        let free = crate::onnx::import::subgraph_free_names(&n.proto);
        let outs: Vec<Option<String>> = outputs
            .into_iter()
            .map(|o| (!o.is_empty()).then_some(o))
            .collect();
        let op = n.proto.op_type().to_string();
        let id = g.import_op(n.proto, &outs);
        node_pos.insert(id, n.pos);
        pending.push((id, op, inputs, n.in_pos, free, n.pos));
    }
    for (id, op, inputs, in_pos, free, at) in pending {
        for (slot, (name, &ip)) in inputs.iter().zip(&in_pos).enumerate() {
            let v = if name.is_empty() {
                None
            } else {
                Some(g.lookup(name).ok_or_else(|| {
                    lx.err_at(ip, format!("undefined value '{name}': no node, input or initializer defines it (read by {op})"))
                })?)
            };
            g.set_input(id, slot, v);
        }
        for name in free {
            let v = g.lookup(&name).ok_or_else(|| {
                lx.err_at(at, format!("undefined value '{name}': read inside a subgraph of {op}, but nothing defines it"))
            })?;
            g.add_implicit_input(id, v);
        }
    }
    let mut orphans = Vec::new();
    for (i, (vi, _)) in infos.into_iter().enumerate() {
        match g.lookup(vi.name()) {
            Some(v) if g.value(v).info.is_none() => g.value_mut(v).info = Some((i as u64, vi)),
            _ => orphans.push(vi),
        }
    }
    for (vi, at) in pg.outputs {
        let v = g.lookup(vi.name()).ok_or_else(|| {
            lx.err_at(at, format!("undefined value '{}': graph output is not produced by any node, input or initializer", vi.name()))
        })?;
        g.push_output(v, vi);
    }
    g.shell.name = Some(pg.name);
    g.shell.value_info = orphans;
    if let Err(cycle) = g.try_topo_order() {
        let names: Vec<String> = cycle
            .iter()
            .filter_map(|&n| {
                g.node(n).op().map(|o| {
                    if o.name().is_empty() {
                        o.op_type().to_string()
                    } else {
                        o.name().to_string()
                    }
                })
            })
            .take(6)
            .collect();
        let at = cycle
            .iter()
            .filter_map(|n| node_pos.get(n))
            .min()
            .copied()
            .unwrap_or(0);
        return Err(lx.err_at(
            at,
            format!(
                "the graph has a cycle; nodes on it or after it: {}",
                names.join(", ")
            ),
        ));
    }
    Ok(g)
}
