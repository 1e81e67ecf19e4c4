//! Timing a run node by node ([`Runner::profile`]) and mapping tract's plan
//! nodes back to the ONNX nodes they came from.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tract_onnx::prelude::{TypedModel, TypedSimpleState};
use tract_onnx::tract_core::ops::source::TypedSource;

use super::runner::eval_node;
use super::{Runner, RuntimeError};
use crate::ir::{Model, NodeId};
use crate::tensorio::HostTensor;

/// One node of tract's plan, timed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    /// The tract node's name. Before optimisation it is the ONNX node name
    /// (or, for unnamed nodes, its first output's name); nodes tract adds
    /// are named `<onnx name>.<suffix>`.
    pub tract_node: String,
    /// Tract's op name (`Conv`, `OptMatMul`, …).
    pub op: String,
    /// The ONNX nodes this tract node stands for, in graph order: the one
    /// whose name it carries, plus unnamed-for neighbours that may have been
    /// fused into it (see [`NodeTimes::groups`]). Empty when no ONNX node
    /// could be identified.
    pub onnx_nodes: Vec<String>,
    /// Median time over the timed runs.
    pub median: Duration,
}

/// ONNX nodes and the plan nodes they became, with their summed time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FusedGroup {
    /// In graph order of first appearance.
    pub onnx_nodes: Vec<String>,
    /// In plan order.
    pub tract_nodes: Vec<String>,
    /// Sum of the members' median times.
    pub median: Duration,
}

/// Per-node and whole-model timings from [`Runner::profile`].
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTimes {
    /// Timed runs (after one untimed warm-up).
    pub runs: usize,
    /// Median wall time of a whole run.
    pub total: Duration,
    /// Plan nodes in execution order (model inputs left out).
    pub nodes: Vec<NodeTime>,
    /// The plan nodes joined into groups that share ONNX nodes: what a set
    /// of ONNX nodes costs once tract has fused and split them.
    pub groups: Vec<FusedGroup>,
    /// ONNX nodes attributed to no tract node: folded into constants when
    /// loading, or removed by optimisation.
    pub unattributed: Vec<String>,
}

impl NodeTimes {
    /// Sum of the per-node medians.
    pub fn node_sum(&self) -> Duration {
        self.nodes.iter().map(|n| n.median).sum()
    }
}

fn median(v: &mut [Duration]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2
    }
}

impl Runner {
    /// Times the model: one untimed warm-up, then `runs` (at least one)
    /// timed runs; reports per-node and whole-run medians.
    pub fn profile(
        &self,
        inputs: &[(String, HostTensor)],
        runs: usize,
    ) -> Result<NodeTimes, RuntimeError> {
        let runs = runs.max(1);
        let values = self.prepare(inputs)?;
        let n = self.plan.model().nodes().len();
        let (mut per_node, mut totals) = self.guarded(&self.plan, || {
            let mut state = TypedSimpleState::new(&self.plan).map_err(|e| self.run_error(e))?;
            // The warm-up evaluates through `eval_node` too, so a panic in
            // it names its node.
            state
                .run_plan_with_eval(values.iter().cloned().collect(), eval_node)
                .map_err(|e| self.run_error(e))?;
            let mut per_node: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); n];
            let mut totals = Vec::with_capacity(runs);
            for _ in 0..runs {
                let mut this = vec![Duration::ZERO; n];
                let start = Instant::now();
                state
                    .run_plan_with_eval(
                        values.iter().cloned().collect(),
                        |ctx, op_state, node, ins| {
                            let t = Instant::now();
                            let r = eval_node(ctx, op_state, node, ins);
                            this[node.id] += t.elapsed();
                            r
                        },
                    )
                    .map_err(|e| self.run_error(e))?;
                totals.push(start.elapsed());
                for (acc, d) in per_node.iter_mut().zip(this) {
                    acc.push(d);
                }
            }
            Ok((per_node, totals))
        })?;
        let model = self.plan.model();
        let nodes: Vec<NodeTime> = self
            .plan
            .order_without_consts()
            .iter()
            .map(|&id| &model.nodes()[id])
            .filter(|node| node.op_as::<TypedSource>().is_none())
            .map(|node| NodeTime {
                tract_node: node.name.clone(),
                op: node.op.name().to_string(),
                onnx_nodes: self.groups[node.id].clone(),
                median: median(&mut per_node[node.id]),
            })
            .collect();
        Ok(NodeTimes {
            runs,
            total: median(&mut totals),
            groups: fused_groups(&nodes),
            nodes,
            unattributed: self.unattributed.clone(),
        })
    }
}

/// The name tract gives an ONNX node: its name, else its first output's.
fn onnx_key(model: &Model, n: NodeId) -> String {
    let g = &model.graph;
    let node = g.node(n);
    if !node.name().is_empty() {
        return node.name().to_string();
    }
    match node.outputs().iter().flatten().next() {
        Some(&v) => g.name(v).to_string(),
        None => node.op_type().to_string(),
    }
}

/// Maps every plan node (`order`: the plan's non-constant nodes) to the
/// ONNX nodes it stands for, and lists the ONNX nodes no plan node stands for.
///
/// Tract keeps ONNX node names through translation and optimisation: a plan
/// node's name is an ONNX node's, or one followed by `.suffix`/`-suffix` for
/// nodes tract derives from it; the longest such ONNX name wins. Tract also
/// names a fused node after *either* end of the chain it fused (MatMul, Add,
/// Relu run as one `OptMatMul` named `relu.low`, next to `matmul.pack_b`
/// packing the weights), so an ONNX node no plan node is named after is
/// linked to both neighbours it could have been fused into: its producer's
/// plan node when it was that value's only user, and its user's plan node
/// when it has a single user. [`fused_groups`] then joins plan nodes sharing
/// an ONNX node into one group. An ONNX node with neither neighbour (folded
/// into a constant at load, or removed) is unattributed.
pub(super) fn attribute(
    model: &Model,
    tm: &TypedModel,
    order: &[usize],
) -> (Vec<Vec<String>>, Vec<String>) {
    let g = &model.graph;
    let ops = g.ops();
    // Plan nodes carry tract's names (`onnx_key`); what callers get back
    // are the nodes' labels.
    let keys: Vec<String> = ops.iter().map(|&n| onnx_key(model, n)).collect();
    let labels: Vec<String> = ops.iter().map(|&n| g.label(n).to_string()).collect();
    let index: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let op_pos: HashMap<NodeId, usize> = ops.iter().enumerate().map(|(i, &n)| (n, i)).collect();

    // For each ONNX op (by position in `ops`), the plan nodes named after it.
    let mut named: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ops.len()];
    for &id in order {
        let name = tm.nodes()[id].name.as_str();
        let mut cut = name.len();
        loop {
            if let Some(&i) = index.get(&name[..cut]) {
                named[i].insert(id);
                break;
            }
            match name[..cut].rfind(['.', '-']) {
                Some(p) => cut = p,
                None => break,
            }
        }
    }
    let rank: HashMap<usize, usize> = order.iter().enumerate().map(|(r, &id)| (id, r)).collect();
    let by_rank = |id: &usize| rank.get(id).copied();
    // `holders[i]`: plan nodes ONNX op `i` is attributed to.
    let mut holders = named.clone();

    // Upstream, in graph order so fused chains (Conv, BatchNormalization,
    // Relu) follow their head: join the last plan node of the producer.
    for (i, &n) in ops.iter().enumerate() {
        if !named[i].is_empty() {
            continue;
        }
        let from = g.node(n).inputs().iter().flatten().find_map(|&v| {
            let pi = *op_pos.get(&g.producer(v))?;
            (g.user_nodes(v) == [n] && !g.is_graph_output(v)).then_some(pi)
        });
        if let Some(id) = from.and_then(|pi| holders[pi].iter().copied().max_by_key(by_rank)) {
            holders[i].insert(id);
        }
    }
    // Downstream, in reverse order: join the first plan node of the user.
    for (i, &n) in ops.iter().enumerate().rev() {
        if !named[i].is_empty() {
            continue;
        }
        let outs: Vec<_> = g.node(n).outputs().iter().flatten().copied().collect();
        let [v] = outs.as_slice() else { continue };
        if g.is_graph_output(*v) {
            continue;
        }
        let [u] = g.user_nodes(*v)[..] else { continue };
        let Some(&ui) = op_pos.get(&u) else { continue };
        if let Some(id) = holders[ui].iter().copied().min_by_key(by_rank) {
            holders[i].insert(id);
        }
    }

    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); tm.nodes().len()];
    let mut unattributed = Vec::new();
    for (i, h) in holders.iter().enumerate() {
        if h.is_empty() {
            unattributed.push(labels[i].clone());
        }
        for &id in h {
            per_node[id].push(labels[i].clone());
        }
    }
    (per_node, unattributed)
}

/// Joins timed plan nodes that share an ONNX node into groups (union-find
/// over the relation [`attribute`] built), in plan order.
fn fused_groups(nodes: &[NodeTime]) -> Vec<FusedGroup> {
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in &n.onnx_nodes {
            if let Some(&j) = owner.get(o.as_str()) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                // The earlier node is the root, so groups come out in plan order.
                parent[a.max(b)] = a.min(b);
            } else {
                owner.insert(o, i);
            }
        }
    }
    let mut groups: Vec<FusedGroup> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let root = find(&mut parent, i);
        let gi = *slot.entry(root).or_insert_with(|| {
            groups.push(FusedGroup::default());
            groups.len() - 1
        });
        let grp = &mut groups[gi];
        grp.tract_nodes.push(n.tract_node.clone());
        for o in &n.onnx_nodes {
            if !grp.onnx_nodes.contains(o) {
                grp.onnx_nodes.push(o.clone());
            }
        }
        grp.median += n.median;
    }
    groups
}
