//! Lowering: the main graph's parsed form to the IR, through the
//! [`GraphBuilder`] import uses, so text is held to import's rules (every
//! name defined once, every operand and output defined, no cycle). What
//! this file adds is where: each builder error is reported at the position
//! the parsed form kept for the name or node concerned.

use std::collections::HashMap;

use super::lex::{Lexer, PResult};
use super::parse::{PGraph, PItem};
use super::ParseError;
use crate::ir::build::{BuildError, GraphBuilder};
use crate::ir::graph::Graph;
use crate::ir::tensor::Tensor;
use crate::ir::NodeId;
use crate::proto::tensor_proto::DataLocation;
use crate::proto::{GraphProto, TensorProto};

/// Builds the main graph from its parsed form.
pub(super) fn main_graph(lx: &Lexer<'_>, pg: PGraph) -> PResult<Graph> {
    let mut at = Positions {
        lx,
        nodes: HashMap::new(),
    };
    let mut b = GraphBuilder::new();
    let mut infos = Vec::new();
    for it in pg.items {
        match it {
            PItem::Dense(tp, pos) => {
                b.initializer(*tp, pos, |tp| load(lx, tp, pos))
                    .map_err(|e| at.error(e))??;
            }
            PItem::Sparse(sp, pos) => {
                b.sparse_initializer(*sp, pos).map_err(|e| at.error(e))?;
            }
            PItem::Info(vi) => infos.push(vi),
        }
    }
    for (vi, pos) in pg.inputs {
        b.input(vi, pos).map_err(|e| at.error(e))?;
    }
    for n in pg.nodes {
        let id = b.node(n.proto, |i| n.out_pos[i]).map_err(|e| at.error(e))?;
        at.nodes.insert(id, (n.pos, n.in_pos));
    }
    let mut r = b.resolve().map_err(|e| at.error(e))?;
    for vi in infos {
        r.value_info(vi);
    }
    for (vi, pos) in pg.outputs {
        r.output(vi, pos).map_err(|e| at.error(e))?;
    }
    let shell = GraphProto {
        name: Some(pg.name),
        ..Default::default()
    };
    r.finish(shell).map_err(|e| at.error(e))
}

/// An initializer's tensor, checked unless its data is external (the text
/// names the file; nothing is read).
fn load(lx: &Lexer<'_>, tp: TensorProto, pos: usize) -> PResult<Tensor> {
    let t = Tensor::from_proto(tp);
    if t.external().is_none() && t.proto().data_location != Some(DataLocation::External as i32) {
        t.validate().map_err(|e| lx.err_at(pos, e.to_string()))?;
    }
    Ok(t)
}

/// Where things are in the source, to word builder errors.
struct Positions<'a> {
    lx: &'a Lexer<'a>,
    /// Each node's position and its operands' positions.
    nodes: HashMap<NodeId, (usize, Vec<usize>)>,
}

impl Positions<'_> {
    fn node(&self, id: NodeId) -> &(usize, Vec<usize>) {
        self.nodes
            .get(&id)
            .expect("invariant: every node's position is kept when it is added")
    }

    fn error(&self, e: BuildError<usize>) -> ParseError {
        let lx = self.lx;
        match e {
            BuildError::Duplicate {
                name,
                first,
                second,
            } => {
                let (l, c) = lx.loc(first);
                lx.err_at(second, format!("name '{name}' is defined twice (first at {l}:{c}); every value must have one producer"))
            }
            BuildError::DuplicateInput { name, site } => {
                lx.err_at(site, format!("graph input '{name}' is listed twice"))
            }
            BuildError::UndefinedOperand { name, node, slot } => {
                let op = &node.op_type;
                lx.err_at(
                    self.node(node.id).1[slot],
                    format!("undefined value '{name}': no node, input or initializer defines it (read by {op})"),
                )
            }
            BuildError::UndefinedImplicit { name, node } => {
                let op = &node.op_type;
                lx.err_at(
                    self.node(node.id).0,
                    format!("undefined value '{name}': read inside a subgraph of {op}, but nothing defines it"),
                )
            }
            BuildError::UndefinedOutput { name, site } => lx.err_at(
                site,
                format!("undefined value '{name}': graph output is not produced by any node, input or initializer"),
            ),
            BuildError::Cycle { nodes } => {
                let names: Vec<&str> = nodes
                    .iter()
                    .take(6)
                    .map(|n| {
                        if n.name.is_empty() {
                            n.op_type.as_str()
                        } else {
                            n.name.as_str()
                        }
                    })
                    .collect();
                let at = nodes
                    .iter()
                    .filter_map(|n| self.nodes.get(&n.id))
                    .map(|(pos, _)| *pos)
                    .min()
                    .unwrap_or(0);
                lx.err_at(
                    at,
                    format!(
                        "the graph has a cycle; nodes on it or after it: {}",
                        names.join(", ")
                    ),
                )
            }
        }
    }
}
