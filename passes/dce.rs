//! `dce`: dead-code elimination.
//!
//! # What
//! Removes op nodes none of whose results is used (by another node, a
//! subgraph, or as a graph output), and initializers nothing reads, until
//! nothing more can go.
//!
//! # Example
//! ```text
//! before:  T = Relu(X)      after:  Y = Sigmoid(X)
//!          Y = Sigmoid(X)
//! ```
//!
//! # Options
//! None.
//!
//! # Preconditions
//! None. Graph inputs are never removed (they are the model's interface),
//! nor initializers also listed as graph inputs.
//!
//! # Numerics
//! Exact: nothing that contributes to an output is touched.

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Model, NodeKind};

#[derive(Debug, Default)]
pub struct Dce;

impl Dce {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>("dce", o)?;
        Ok(Dce)
    }
}

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&mut self, m: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let mut changed = false;
        // Reverse topological order removes whole dead chains in one sweep.
        let order = g.topo_order();
        for &n in order.iter().rev() {
            let node = g.node(n);
            let removable = match node.kind() {
                NodeKind::Op(_) | NodeKind::Initializer(_) | NodeKind::SparseInitializer(_) => true,
                NodeKind::Input => false,
            };
            if !removable {
                continue;
            }
            let outs: Vec<_> = node.outputs().iter().flatten().copied().collect();
            if outs.iter().any(|&v| g.is_used(v) || g.is_graph_input(v)) {
                continue;
            }
            g.remove_node(n);
            changed = true;
        }
        Ok(Changed::from_bool(changed))
    }
}
