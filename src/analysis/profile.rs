//! Hotspots: measured per-node times joined with the static cost model.
//!
//! [`crate::runtime::Runner::profile`] times every node of tract's
//! optimised plan and maps each back to the ONNX nodes it stands for;
//! plan nodes sharing an ONNX node form a fused group (`Conv_3 + Relu_4`).
//! [`Profile::build`] turns that into:
//!
//! * [`ProfileRow`]s, one per fused group, sorted by measured time (ties in
//!   plan order), with share and cumulative share of the per-node sum;
//! * [`ProfileNode`]s, one per ONNX op node in topological order, each with
//!   its [`NodeCost`], its row (`None`: folded into a constant when tract
//!   loaded the model, so it costs nothing at run time) and an *attributed*
//!   time: its group's time split over the members in proportion to their
//!   MACs, or evenly when the group has none. The split is an estimate —
//!   tract runs a fused group as one kernel — but it lets cost-aware passes
//!   ask what a single node is worth;
//! * [`OpShare`]s: attributed time per op type, largest first;
//! * totals: the sum of per-node medians against the whole-run median. The
//!   two differ by what the plan does between nodes (tensor bookkeeping,
//!   timer reads); their ratio says how far per-node numbers can be trusted.
//!
//! Shares are of the per-node sum, so that rows add up to 100%.

use std::collections::HashMap;
use std::time::Duration;

use super::cost::{model_costs, NodeCost};
use crate::ir::{Model, NodeId};
use crate::runtime::{NodeTimes, RunOptions, Runner, RuntimeError};
use crate::tensorio::HostTensor;

/// One fused group of the plan, timed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProfileRow {
    /// The ONNX nodes joined by ` + ` (`Conv_3 + Relu_4`), or the tract
    /// node's name when it stands for no ONNX node.
    pub name: String,
    /// Member ONNX nodes, in topological order.
    pub onnx_nodes: Vec<String>,
    /// Member plan nodes, in plan order.
    pub tract_nodes: Vec<String>,
    /// Member op types joined by `+` (repeats kept once, in order);
    /// `tract:<op>` for a plan node with no ONNX node.
    pub op: String,
    /// Output shape of the last member.
    pub output_shape: Option<Vec<usize>>,
    /// Sum of the members' MACs; `None` if one is unknown.
    pub macs: Option<u64>,
    /// Sum of the members' median times.
    pub median_ms: f64,
    /// Fraction of [`Profile::node_sum_ms`].
    pub share: f64,
    /// Running sum of `share` down the sorted rows.
    pub cumulative: f64,
}

/// One ONNX op node: its static cost and what it was measured to cost.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProfileNode {
    #[serde(flatten)]
    pub cost: NodeCost,
    /// Index of its row in [`Profile::rows`]; `None` when no plan node
    /// stands for it (folded into a constant at load, or optimised away).
    pub row: Option<usize>,
    /// Its share of its group's time (see the module docs).
    pub attributed_ms: f64,
}

/// Time attributed to one op type.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpShare {
    pub op: String,
    /// Nodes of this type that run (folded ones left out).
    pub nodes: usize,
    pub ms: f64,
    /// Fraction of [`Profile::node_sum_ms`].
    pub share: f64,
    /// Sum of their MACs; `None` if one is unknown.
    pub macs: Option<u64>,
}

/// A model's hotspots. See the module docs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Profile {
    /// Timed runs (after an untimed warm-up).
    pub runs: usize,
    /// Median wall time of a whole run.
    pub whole_run_ms: f64,
    /// Sum of the per-plan-node medians.
    pub node_sum_ms: f64,
    /// `node_sum_ms / whole_run_ms`.
    pub ratio: f64,
    /// Timed plan nodes.
    pub plan_nodes: usize,
    /// Sum of all nodes' MACs; `None` if one is unknown.
    pub total_macs: Option<u64>,
    /// Fused groups, by time, largest first.
    pub rows: Vec<ProfileRow>,
    /// Every ONNX op node, in topological order.
    pub nodes: Vec<ProfileNode>,
    /// Time by op type, largest first (ties by name).
    pub op_types: Vec<OpShare>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sum_opt(v: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    v.sum()
}

impl Profile {
    /// Joins the static costs of `m` (see [`model_costs`]) with measured
    /// `times` of the same model.
    pub fn build(m: &Model, times: &NodeTimes) -> Profile {
        let costs = model_costs(m);
        let node_sum = ms(times.node_sum());
        let frac = |x: f64| if node_sum > 0.0 { x / node_sum } else { 0.0 };
        // Key → topological index. Only looked up, never iterated.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, c) in costs.iter().enumerate() {
            index.entry(c.node.as_str()).or_insert(i);
        }
        let groups = regroup(m, &costs, &index, times);
        let j = join_rows(&costs, &groups, times, &frac);
        let (sorted, new_ix) = sort_rows(j.rows);
        let shares = op_shares(&costs, &j.row_of, &j.attributed, &j.unowned, &frac);
        let total_macs = sum_opt(costs.iter().map(|c| c.macs));
        let nodes = costs
            .into_iter()
            .enumerate()
            .map(|(i, cost)| ProfileNode {
                cost,
                row: j.row_of[i].map(|r| new_ix[r]),
                attributed_ms: j.attributed[i],
            })
            .collect();
        let whole = ms(times.total);
        Profile {
            runs: times.runs,
            whole_run_ms: whole,
            node_sum_ms: node_sum,
            ratio: if whole > 0.0 { node_sum / whole } else { 0.0 },
            plan_nodes: times.nodes.len(),
            total_macs,
            rows: sorted,
            nodes,
            op_types: shares,
        }
    }

    /// ONNX nodes no plan node stands for, in topological order.
    pub fn folded(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.row.is_none())
            .map(|n| n.cost.node.as_str())
            .collect()
    }

    /// The hotspot table for the terminal: every row, then the totals and
    /// the op types.
    pub fn table(&self) -> String {
        let shape = |s: &Option<Vec<usize>>| match s {
            Some(s) => format!(
                "[{}]",
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => "?".into(),
        };
        let macs = |m: Option<u64>| m.map(human).unwrap_or_else(|| "?".into());
        let shown: Vec<(String, String)> = self
            .rows
            .iter()
            .map(|r| (short_name(r), shorten(&r.op, 24)))
            .collect();
        let wn = shown
            .iter()
            .map(|s| s.0.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let wo = shown
            .iter()
            .map(|s| s.1.chars().count())
            .max()
            .unwrap_or(2)
            .max(2);
        let mut s = format!(
            "{:>4}  {:<wn$}  {:<wo$}  {:<16}  {:>8}  {:>9}  {:>6}  {:>6}\n",
            "#", "node", "op", "output shape", "MACs", "median ms", "share", "cum"
        );
        for (i, (r, (name, op))) in self.rows.iter().zip(&shown).enumerate() {
            s.push_str(&format!(
                "{:>4}  {:<wn$}  {:<wo$}  {:<16}  {:>8}  {:>9.3}  {:>5.1}%  {:>5.1}%\n",
                i + 1,
                name,
                op,
                shape(&r.output_shape),
                macs(r.macs),
                r.median_ms,
                r.share * 100.0,
                r.cumulative * 100.0
            ));
        }
        let folded = self.folded();
        if !folded.is_empty() {
            s.push_str(&format!(
                "folded at load (no run time): {} node(s): {}\n",
                folded.len(),
                shorten(&folded.join(", "), 160)
            ));
        }
        s.push_str(&format!(
            "per-node sum {:.3} ms vs whole run {:.3} ms: ratio {:.3} ({} plan nodes, median of {} runs); total MACs {}\n",
            self.node_sum_ms,
            self.whole_run_ms,
            self.ratio,
            self.plan_nodes,
            self.runs,
            macs(self.total_macs)
        ));
        s.push_str("top op types:");
        for o in self.op_types.iter().take(8) {
            s.push_str(&format!(" {} {:.1}% ({}),", o.op, o.share * 100.0, o.nodes));
        }
        s.pop();
        s.push('\n');
        s
    }
}

/// A fused group after [`regroup`]: ONNX members by topological index.
struct Group {
    members: Vec<usize>,
    tract_nodes: Vec<String>,
    median: Duration,
}

/// The runtime's fused groups, with two corrections:
///
/// * `Constant` nodes leave groups that hold other nodes. The runtime links
///   an ONNX node no plan node is named after to its single user, but tract
///   folds a `Constant` at load: it costs nothing and ends up folded here.
/// * Tract fuses a matmul-like kernel with the op after it into one plan
///   node named `<successor>.prefused` (tract-core `ops/einsum/
///   einsum_matmul.rs`): a 1x1 `Conv` and its `BatchNormalization`, say.
///   Matching names, the runtime puts that node with the successor and
///   leaves the `Conv` its weight packing only, so the convolution's time
///   would be billed to the BatchNormalization. A group holding a
///   `.prefused` node (or an `OptMatMul` named exactly after an ONNX node
///   without MACs, a bias `Add` folded into its matmul) but no MACs is
///   therefore joined with the group of the nearest upstream node that has
///   MACs, through single-use data inputs (the one non-constant operand of
///   each node on the way: `Mul(scale, x)` has it second).
fn regroup(
    m: &Model,
    costs: &[NodeCost],
    index: &HashMap<&str, usize>,
    times: &NodeTimes,
) -> Vec<Group> {
    let g = &m.graph;
    let ops = g.ops();
    debug_assert_eq!(ops.len(), costs.len(), "costs are per op, in g.ops() order");
    let pos: HashMap<NodeId, usize> = ops.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut groups: Vec<Group> = times
        .groups
        .iter()
        .map(|grp| {
            let mut members: Vec<usize> = grp
                .onnx_nodes
                .iter()
                .filter_map(|k| index.get(k.as_str()).copied())
                .collect();
            members.sort_unstable();
            members.dedup();
            if members.iter().any(|&i| costs[i].op != "Constant") {
                members.retain(|&i| costs[i].op != "Constant");
            }
            Group {
                members,
                tract_nodes: grp.tract_nodes.clone(),
                median: grp.median,
            }
        })
        .collect();
    let mut group_of: Vec<Option<usize>> = vec![None; costs.len()];
    for (gi, grp) in groups.iter().enumerate() {
        for &i in &grp.members {
            group_of[i] = Some(gi);
        }
    }
    // Tract node name → op name. Only looked up.
    let tract_op: HashMap<&str, &str> = times
        .nodes
        .iter()
        .map(|n| (n.tract_node.as_str(), n.op.as_str()))
        .collect();
    let has_macs = |grp: &Group| grp.members.iter().any(|&i| costs[i].macs.unwrap_or(0) > 0);
    for b in 0..groups.len() {
        if groups[b].members.is_empty() || has_macs(&groups[b]) {
            continue;
        }
        let successors: Vec<usize> = groups[b]
            .tract_nodes
            .iter()
            .filter_map(|t| match t.strip_suffix(".prefused") {
                Some(s) => Some(s),
                // A matmul kernel under an epilogue's own name: tract folded
                // a bias `Add` into the matmul before it and kept the Add's name.
                None => (tract_op.get(t.as_str()) == Some(&"OptMatMul")).then_some(t.as_str()),
            })
            .filter_map(|s| index.get(s).copied())
            .collect();
        for j in successors {
            let mut cur = j;
            // A few steps suffice: tract prefuses one kernel with its
            // immediate successor; the walk only crosses nodes that became
            // part of the same kernel (single-use, MAC-free).
            for _ in 0..8 {
                // The data path: the one operand that is not a constant
                // (`Mul(scale, x)` puts it second).
                let mut data = g
                    .node(ops[cur])
                    .inputs()
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|&v| g.constant(v).is_none() && !g.producer_node(v).is("Constant"));
                let (Some(v), None) = (data.next(), data.next()) else {
                    break;
                };
                let Some(&p) = pos.get(&g.producer(v)) else {
                    break;
                };
                if g.user_nodes(v).len() != 1 || g.is_graph_output(v) {
                    break;
                }
                if costs[p].macs.unwrap_or(0) > 0 {
                    if let Some(a) = group_of[p].filter(|&a| a != b) {
                        // Keep the earlier group (plan order) and empty the later.
                        let (keep, gone) = (a.min(b), a.max(b));
                        let moved = std::mem::replace(
                            &mut groups[gone],
                            Group {
                                members: Vec::new(),
                                tract_nodes: Vec::new(),
                                median: Duration::ZERO,
                            },
                        );
                        for &i in &moved.members {
                            group_of[i] = Some(keep);
                        }
                        let k = &mut groups[keep];
                        k.members.extend(moved.members);
                        k.members.sort_unstable();
                        k.tract_nodes.extend(moved.tract_nodes);
                        k.median += moved.median;
                    }
                    break;
                }
                cur = p;
            }
        }
    }
    groups.retain(|grp| !grp.members.is_empty() || !grp.tract_nodes.is_empty());
    groups
}

/// `12`, `3.4K`, `5.6M`, `7.8G`.
fn human(n: u64) -> String {
    let f = n as f64;
    if n < 1000 {
        n.to_string()
    } else if f < 1e6 {
        format!("{:.1}K", f / 1e3)
    } else if f < 1e9 {
        format!("{:.1}M", f / 1e6)
    } else {
        format!("{:.2}G", f / 1e9)
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{head}…")
    }
}

/// A row's name for the table: groups of more than three nodes show the
/// first and last (the JSON has them all).
fn short_name(r: &ProfileRow) -> String {
    let n = &r.onnx_nodes;
    let name = if n.len() > 3 {
        format!("{} + … + {} ({} nodes)", n[0], n[n.len() - 1], n.len())
    } else {
        r.name.clone()
    };
    shorten(&name, 60)
}

/// Loads `m` into the runtime at the shapes of `inputs`, times `runs` runs
/// after a warm-up and builds the profile. Costs come from the model's
/// declared shapes: run `shape-inference` first for MACs.
pub fn measure(
    m: &Model,
    inputs: &[(String, HostTensor)],
    runs: usize,
) -> Result<Profile, RuntimeError> {
    let opts = RunOptions {
        input_shapes: inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.shape().to_vec(), t.dtype()))
            .collect(),
        ..Default::default()
    };
    let runner = Runner::new(m, &opts)?;
    let times = runner.profile(inputs, runs)?;
    Ok(Profile::build(m, &times))
}

/// Rows in plan order, each ONNX node's row and attributed time, and the
/// time of plan nodes that stand for no ONNX node (by tract op).
struct Joined {
    rows: Vec<ProfileRow>,
    row_of: Vec<Option<usize>>,
    attributed: Vec<f64>,
    unowned: Vec<(String, f64)>,
}

fn join_rows(
    costs: &[NodeCost],
    groups: &[Group],
    times: &NodeTimes,
    frac: &dyn Fn(f64) -> f64,
) -> Joined {
    let mut j = Joined {
        rows: Vec::with_capacity(groups.len()),
        row_of: vec![None; costs.len()],
        attributed: vec![0.0f64; costs.len()],
        unowned: Vec::new(),
    };
    for grp in groups {
        let t = ms(grp.median);
        let members = grp.members.clone();
        let r = j.rows.len();
        if members.is_empty() {
            let op = times
                .nodes
                .iter()
                .find(|n| grp.tract_nodes.first() == Some(&n.tract_node))
                .map(|n| format!("tract:{}", n.op))
                .unwrap_or_else(|| "tract:?".into());
            j.unowned.push((op.clone(), t));
            j.rows.push(ProfileRow {
                name: grp.tract_nodes.join(" + "),
                onnx_nodes: Vec::new(),
                tract_nodes: grp.tract_nodes.clone(),
                op,
                output_shape: None,
                macs: None,
                median_ms: t,
                share: frac(t),
                cumulative: 0.0,
            });
            continue;
        }
        let macs = sum_opt(members.iter().map(|&i| costs[i].macs));
        let known: u64 = members.iter().filter_map(|&i| costs[i].macs).sum();
        for &i in &members {
            j.row_of[i] = Some(r);
            j.attributed[i] = if known > 0 {
                t * costs[i].macs.unwrap_or(0) as f64 / known as f64
            } else {
                t / members.len() as f64
            };
        }
        let mut ops: Vec<&str> = Vec::new();
        for &i in &members {
            if !ops.contains(&costs[i].op.as_str()) {
                ops.push(&costs[i].op);
            }
        }
        let last = *members.last().expect("invariant: members is not empty");
        j.rows.push(ProfileRow {
            name: members
                .iter()
                .map(|&i| costs[i].node.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
            onnx_nodes: members.iter().map(|&i| costs[i].node.clone()).collect(),
            tract_nodes: grp.tract_nodes.clone(),
            op: ops.join("+"),
            output_shape: costs[last].output_shape.clone(),
            macs,
            median_ms: t,
            share: frac(t),
            cumulative: 0.0,
        });
    }
    j
}

/// Rows by time, largest first (the stable sort keeps plan order on ties),
/// with cumulative shares; and each old row index's new one.
fn sort_rows(rows: Vec<ProfileRow>) -> (Vec<ProfileRow>, Vec<usize>) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[b].median_ms.total_cmp(&rows[a].median_ms));
    let mut new_ix = vec![0; rows.len()];
    for (new, &old) in order.iter().enumerate() {
        new_ix[old] = new;
    }
    let mut sorted: Vec<ProfileRow> = order.iter().map(|&i| rows[i].clone()).collect();
    let mut cum = 0.0;
    for r in &mut sorted {
        cum += r.share;
        r.cumulative = cum;
    }
    (sorted, new_ix)
}

/// Time per op type, first seen in topological order, then by time.
fn op_shares(
    costs: &[NodeCost],
    row_of: &[Option<usize>],
    attributed: &[f64],
    unowned: &[(String, f64)],
    frac: &dyn Fn(f64) -> f64,
) -> Vec<OpShare> {
    let mut shares: Vec<OpShare> = Vec::new();
    let mut add = |op: &str, t: f64, macs: Option<u64>| {
        let pos = match shares.iter().position(|s| s.op == op) {
            Some(p) => p,
            None => {
                shares.push(OpShare {
                    op: op.to_string(),
                    nodes: 0,
                    ms: 0.0,
                    share: 0.0,
                    macs: Some(0),
                });
                shares.len() - 1
            }
        };
        let s = &mut shares[pos];
        s.nodes += 1;
        s.ms += t;
        s.macs = s.macs.zip(macs).map(|(a, b)| a + b);
    };
    for (i, c) in costs.iter().enumerate() {
        if row_of[i].is_some() {
            add(&c.op, attributed[i], c.macs);
        }
    }
    for (op, t) in unowned {
        add(op, *t, Some(0));
    }
    for s in &mut shares {
        s.share = frac(s.ms);
    }
    shares.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.op.cmp(&b.op)));
    shares
}
