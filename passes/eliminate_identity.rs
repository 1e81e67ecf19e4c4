//! `eliminate-identity`: removes Identity and inference-mode Dropout.
//!
//! # What
//! A node that copies its input (`Identity`, or `Dropout` without training
//! mode and with an unused mask) is removed and its readers read the input
//! directly.
//!
//! # Example
//! ```text
//! before:  T = Identity(X)     after:  Y = Relu(X)
//!          Y = Relu(T)
//! ```
//!
//! # Options
//! None.
//!
//! # Preconditions
//! Skips (without error) a copy whose result a subgraph reads by name, a
//! Dropout whose `training_mode` is not a constant false or whose mask is
//! used, and a copy of a graph input straight to a graph output (removing it
//! would merge two interface names). When the copy's result is a graph
//! output, the input value takes the output's name so the interface stays.
//!
//! # Numerics
//! Exact.

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId};

#[derive(Debug, Default)]
pub struct EliminateIdentity;

impl EliminateIdentity {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>("eliminate-identity", o)?;
        Ok(EliminateIdentity)
    }
}

/// Whether `n` is a pure copy of its first input at inference.
fn is_copy(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if node.is("Identity") {
        return node.inputs().len() == 1 && node.input(0).is_some() && node.outputs().len() == 1;
    }
    if node.is("Dropout") {
        // Opset < 7 had `is_test`; before 12 inference mode is the default.
        if node.attr_i("is_test") == Some(0) {
            return false;
        }
        if let Some(Some(mask)) = node.outputs().get(1) {
            if g.is_used(*mask) {
                return false;
            }
        }
        return match node.input(2) {
            None => true,
            Some(tm) => g
                .constant(tm)
                .and_then(|t| t.to_i64().ok())
                .is_some_and(|v| v.iter().all(|&x| x == 0)),
        };
    }
    false
}

impl Pass for EliminateIdentity {
    fn name(&self) -> &'static str {
        "eliminate-identity"
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let mut changed = false;
        for n in g.ops() {
            if !is_copy(g, n) {
                continue;
            }
            let node = g.node(n);
            let (x, y) = (
                node.input(0).expect("invariant: copy has an input"),
                node.output(),
            );
            let label = node.label().to_string();
            if g.has_implicit_uses(y) {
                cx.remark(
                    self.name(),
                    &label,
                    "kept: a subgraph reads its result by name",
                );
                continue;
            }
            let out_ports: Vec<usize> = g.output_ports(y);
            if !out_ports.is_empty() {
                // The output keeps its name; x must be free to take it.
                let x_bound = g.is_graph_input(x)
                    || g.is_graph_output(x)
                    || g.has_implicit_uses(x)
                    || g.constant(x).is_some();
                if x_bound || out_ports.len() > 1 {
                    cx.remark(
                        self.name(),
                        &label,
                        "kept: it separates two interface names",
                    );
                    continue;
                }
                g.redirect_output(out_ports[0], x);
            }
            g.replace_all_uses(y, x);
            // Dropout's unused mask goes with the node.
            g.remove_node(n);
            changed = true;
        }
        Ok(Changed::from_bool(changed))
    }
}
