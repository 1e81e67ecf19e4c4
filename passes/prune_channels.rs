//! `prune-channels`: structured pruning. Removes whole output channels of
//! convolutions, with the matching channels of everything that carries
//! them and the matching input channels of the convolutions that read
//! them, where the calibration data says they matter least; each removed
//! channel's mean is folded into its readers' biases.
//!
//! # What
//! A *group* starts at a Conv `P` (group 1, constant float weight) and
//! follows its output through ops that keep channels apart — unary
//! activations (Relu, Clip, LeakyRelu, HardSigmoid, HardSwish, Sigmoid,
//! Tanh, …), pooling, and depthwise convolutions (one channel in, one out)
//! — to *readers*: Convs of group 1, which read every channel. A
//! squeeze-and-excitation block is followed through: its pooling carries
//! the channels to the reducing Conv (a reader), and the Mul by its gate
//! carries them on, the gate's Conv losing the same output channels. Removing
//! channel `c` removes row `c` of `P` (and its bias), row `c` of every
//! depthwise convolution on the way (and its bias; `group` shrinks), and
//! input channel `c` of every reader. A reader's output then misses
//! `W[:, c]·x_c`; replacing `x_c` by its calibration mean `E[x_c]` and
//! adding `W[:, c]·E[x_c]` to the reader's bias (bias compensation) leaves
//! an error of energy `Var(x_c)·‖W[:, c]‖²` (an upper bound: the readers'
//! weights on the kept channels are then refitted by least squares on the
//! calibration covariance, which predicts the removed channels from the
//! kept ones where they correlate). That error, over the energy
//! of the reader's output (`Σ E[x_c²]·‖W[:, c]‖²`), is the channel's cost;
//! its saving is the multiply-accumulates it takes out of `P`, the
//! depthwise convolutions and the readers. Channels go cheapest cost per
//! saved MAC first, over all groups at once, until `macs` of the model's
//! Conv/MatMul/Gemm MACs are gone, while each reader keeps its output
//! error `budget-db` below its output (the costs of its removed channels
//! add up), each group at least a quarter of its channels, and a multiple
//! of `multiple` channels. When the
//! budget stops it short of `macs`, the remark and the report say so.
//!
//! Unlike magnitude pruning's zeros, the model gets smaller *and faster*
//! in every runtime: the tensors are narrower.
//!
//! A group is skipped, with the reason in a remark, when a tensor on the
//! way is a graph output or read by anything else: Add and Concat (a
//! residual or a concatenation would need the same channels removed from
//! the other side), a Mul by anything but a gate, reshapes, MatMul.
//!
//! # Example
//! ```text
//! before:  H = Conv (X, W1, B1)     # W1 [8, 3, 3, 3]
//!          R = Relu (H)
//!          Y = Conv (R, W2, B2)     # W2 [16, 8, 1, 1]
//! after:   H_pruned = Conv (X, W1_pruned, B1_pruned)   # [6, 3, 3, 3]
//!          R_pruned = Relu (H_pruned)
//!          Y = Conv (R_pruned, W2_pruned, B2_pruned)   # [16, 6, 1, 1]; B2 + W2[:, c]·E[R_c]
//! ```
//!
//! # Options
//! * `macs` (default 0.2): the share of the model's Conv/MatMul/Gemm
//!   multiply-accumulates to remove, in (0, 0.9].
//! * `budget-db` (default 20): each reader's output keeps its error this
//!   many dB below itself.
//! * `multiple` (default 16): channels go in blocks that leave a multiple
//!   of this many, the width runtimes' vector kernels are fastest at
//!   (onnxruntime's blocked NCHWc convolutions take 16 channels at a time
//!   with AVX-512, 8 with AVX2; an odd width runs several times slower
//!   than the wider original).
//! * `samples` (default 16): calibration samples the channel means and
//!   variances are measured on.
//!
//! # Preconditions
//! Calibration data, and static shapes (run `shape-inference` first): the
//! MACs a channel saves come from them. Statistics already in the pipeline
//! are dropped when anything changes (the network is narrower): a
//! `calibrate` must follow. The narrowed tensors' declared shapes are
//! narrowed with them.
//!
//! # Numerics
//! Approximate: the compensated channel contributes its mean instead of
//! its values, exactly so away from a reader's padded border (where the
//! padding reads 0, not the mean).
//!
//! # Errors
//! No calibration data; no static shapes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, ValueId};

mod weights;
use weights::{moments, ConvWeight};

const NAME: &str = "prune-channels";

/// A group keeps at least this share of its channels.
const KEEP_AT_LEAST: f64 = 0.25;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub macs: f64,
    pub budget_db: f64,
    pub multiple: usize,
    pub samples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            macs: 0.2,
            budget_db: 20.0,
            multiple: 16,
            samples: 16,
        }
    }
}

pub struct PruneChannels {
    opts: Options,
}

impl PruneChannels {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        if !(opts.macs > 0.0 && opts.macs <= 0.9) {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!("macs={}: expected a share in (0, 0.9]", opts.macs),
            });
        }
        if !(opts.budget_db > 0.0 && opts.budget_db.is_finite()) {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!(
                    "budget-db={}: expected a positive number of dB",
                    opts.budget_db
                ),
            });
        }
        if opts.samples == 0 {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: "samples must be at least 1".into(),
            });
        }
        Ok(PruneChannels { opts })
    }
}

/// What structured pruning did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChannelPruning {
    /// The share of MACs asked to go.
    pub asked: f64,
    /// The per-reader error budget (dB) the channels were chosen under.
    pub budget_db: f64,
    /// Chosen by the search for `--target-sqnr`/`--target-cosine`
    /// (`--prune-channels auto`), or given.
    pub searched: bool,
    /// (budget dB, share of MACs removed, worst output SQNR, worst mean
    /// cosine) per budget the search tried.
    pub trials: Vec<(f64, f64, Option<f64>, Option<f64>)>,
    /// Conv/MatMul/Gemm MACs before and after (at the calibration shapes).
    pub macs_before: u64,
    pub macs_after: u64,
    /// Channels removed, and channels in the groups that could be pruned.
    pub channels_removed: usize,
    pub channels_prunable: usize,
    /// Groups pruned (at least one channel removed) and groups found.
    pub groups_pruned: usize,
    pub groups: usize,
    /// Convolutions whose output channels could not be pruned, with why.
    pub skipped: Vec<(String, String)>,
}

impl ChannelPruning {
    /// The share of the Conv/MatMul/Gemm MACs removed.
    pub fn share(&self) -> f64 {
        self.macs_before.saturating_sub(self.macs_after) as f64 / self.macs_before.max(1) as f64
    }

    /// Records the search that chose the budget: its trials, and when no
    /// budget met the target (`budget` is `None`), that the file is the
    /// unpruned model's.
    pub fn searched(
        &mut self,
        budget: Option<f64>,
        trials: Vec<(f64, f64, Option<f64>, Option<f64>)>,
    ) {
        self.searched = true;
        self.trials = trials;
        if budget.is_none() {
            self.channels_removed = 0;
            self.groups_pruned = 0;
            self.macs_after = self.macs_before;
        }
    }
}

/// A prunable group: the producer, what carries its channels, the readers
/// (with the tensor each reads) and the tensors whose channels shrink.
struct Group {
    producer: NodeId,
    channels: usize,
    /// Convs whose output rows go with the producer's: the gates of a
    /// squeeze-and-excitation block that multiply the carried channels.
    coupled: Vec<NodeId>,
    depthwise: Vec<NodeId>,
    readers: Vec<(NodeId, ValueId)>,
    carried: Vec<ValueId>,
}

/// Whether `v` is a constant holding one value.
fn scalar(g: &Graph, v: ValueId) -> bool {
    g.constant(v)
        .is_some_and(|t| t.dims().iter().product::<i64>() == 1)
}

/// The operand of elementwise arithmetic with a constant scalar
/// (`x + 3`, `x / 6`: a decomposed HardSwish), if `n` is that.
fn scalar_arithmetic(g: &Graph, n: NodeId) -> Option<ValueId> {
    let node = g.node(n);
    if !node.domain().is_empty()
        || !matches!(node.op_type(), "Add" | "Sub" | "Mul" | "Div")
        || node.inputs().len() != 2
    {
        return None;
    }
    match (node.input(0)?, node.input(1)?) {
        (x, c) if scalar(g, c) && !scalar(g, x) => Some(x),
        (c, x) if scalar(g, c) && !scalar(g, x) => Some(x),
        _ => None,
    }
}

/// Unary ops that act on each channel by itself, and arithmetic with a
/// constant scalar.
fn channelwise(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if !node.domain().is_empty() {
        return false;
    }
    if scalar_arithmetic(g, n).is_some() {
        return true;
    }
    // Extra operands (Clip's bounds) must be constant scalars.
    let scalar_operands = node
        .inputs()
        .iter()
        .skip(1)
        .flatten()
        .all(|&v| scalar(g, v));
    matches!(
        node.op_type(),
        "Relu"
            | "Clip"
            | "LeakyRelu"
            | "HardSigmoid"
            | "HardSwish"
            | "Sigmoid"
            | "Tanh"
            | "Elu"
            | "Selu"
            | "Softplus"
            | "Mish"
            | "Gelu"
            | "MaxPool"
            | "AveragePool"
            | "GlobalAveragePool"
            | "GlobalMaxPool"
    ) && scalar_operands
        && node
            .outputs()
            .iter()
            .skip(1)
            .flatten()
            .all(|&v| !g.is_used(v))
}

/// The group starting at `p`, or why there is none.
fn group_at(g: &Graph, p: NodeId) -> Result<Group, String> {
    let w = ConvWeight::read(g, p).ok_or("not a Conv with a constant float weight")?;
    if ConvWeight::group(g, p) != 1 {
        return Err("a grouped convolution".into());
    }
    let channels = w.dims[0];
    let mut out = Group {
        producer: p,
        channels,
        coupled: vec![],
        depthwise: vec![],
        readers: vec![],
        carried: vec![],
    };
    let mut todo = vec![g.node(p).output()];
    let mut seen: BTreeSet<NodeId> = BTreeSet::new();
    while let Some(v) = todo.pop() {
        if g.is_graph_output(v) || g.has_implicit_uses(v) {
            return Err(format!(
                "'{}' is a graph output or read by a subgraph",
                g.name(v)
            ));
        }
        out.carried.push(v);
        let mut users: Vec<(NodeId, usize)> = Vec::new();
        for (u, slot) in g.users(v) {
            match slot {
                crate::ir::Slot::Input(i) => users.push((u, i as usize)),
                crate::ir::Slot::Implicit => {
                    return Err(format!("'{}' is read by a subgraph", g.name(v)))
                }
            }
        }
        users.sort();
        users.dedup();
        for (u, slot) in users {
            let node = g.node(u);
            let op = node.op_type();
            if !seen.insert(u) {
                // Reached again through its other operand (x · f(x)).
                continue;
            }
            if channelwise(g, u) {
                todo.push(node.output());
                continue;
            }
            if op == "Mul" && node.domain().is_empty() && node.inputs().len() == 2 {
                let other = node.input(1 - slot).ok_or("Mul with a missing operand")?;
                if derived(g, other, v) {
                    // x · f(x) with f channel-wise (a decomposed HardSwish):
                    // both operands carry the channels.
                    todo.push(node.output());
                    continue;
                }
                // x · gate(x): the gate's channels must go too.
                let (q, chain) = gate(g, other, channels).ok_or_else(|| {
                    format!(
                        "'{}' is multiplied in Mul '{}' by a tensor that is not a squeeze-and-excitation gate",
                        g.name(v),
                        g.label(u)
                    )
                })?;
                out.coupled.push(q);
                out.carried.extend(chain);
                todo.push(node.output());
                continue;
            }
            if slot != 0 {
                return Err(format!(
                    "'{}' is read by {op} '{}' as operand {slot}",
                    g.name(v),
                    g.label(u)
                ));
            }
            if op == "Conv" && node.domain().is_empty() {
                let Some(r) = ConvWeight::read(g, u) else {
                    return Err(format!(
                        "read by Conv '{}' without a constant float weight",
                        g.label(u)
                    ));
                };
                let groups = ConvWeight::group(g, u);
                if groups == 1 && r.dims[1] == channels {
                    out.readers.push((u, v));
                    continue;
                }
                if groups == channels && r.dims[0] == channels && r.dims[1] == 1 {
                    out.depthwise.push(u);
                    todo.push(node.output());
                    continue;
                }
                return Err(format!("read by grouped Conv '{}'", g.label(u)));
            }
            return Err(format!(
                "'{}' is read by {op} '{}' (its channels would have to match)",
                g.name(v),
                g.label(u)
            ));
        }
    }
    if out.readers.is_empty() {
        return Err("no Conv reads its channels".into());
    }
    Ok(out)
}

/// Whether `other` is `x` through channel-wise ops (HardSwish's
/// `x · clip(x + 3, 0, 6) / 6`).
fn derived(g: &Graph, other: ValueId, x: ValueId) -> bool {
    let mut v = other;
    for _ in 0..6 {
        if v == x {
            return true;
        }
        let n = g.producer(v);
        if !matches!(g.node(n).kind(), crate::ir::NodeKind::Op(_)) || !channelwise(g, n) {
            return false;
        }
        v = match scalar_arithmetic(g, n) {
            Some(x) => x,
            None => match g.node(n).input(0) {
                Some(x) => x,
                None => return false,
            },
        };
    }
    v == x
}

/// The gate a Mul multiplies carried channels by: `other` produced by a
/// Conv of group 1 with `channels` output channels through channel-wise
/// ops only, each tensor on the way read once. Returns the Conv and the
/// tensors from it to `other`.
fn gate(g: &Graph, other: ValueId, channels: usize) -> Option<(NodeId, Vec<ValueId>)> {
    let mut chain = vec![other];
    let mut v = other;
    for _ in 0..6 {
        if g.is_graph_output(v) || g.has_implicit_uses(v) || g.users(v).len() != 1 {
            return None;
        }
        let n = g.producer(v);
        if !matches!(g.node(n).kind(), crate::ir::NodeKind::Op(_)) {
            return None;
        }
        if g.node(n).op_type() == "Conv" {
            let w = ConvWeight::read(g, n)?;
            return (ConvWeight::group(g, n) == 1 && w.dims[0] == channels).then_some((n, chain));
        }
        if !channelwise(g, n) {
            return None;
        }
        v = match scalar_arithmetic(g, n) {
            Some(x) => x,
            None => g.node(n).input(0)?,
        };
        chain.push(v);
    }
    None
}

/// Each pruned Conv's MACs as its channels go: `base · (1 − out removed /
/// out) · (1 − in removed / in)` (a depthwise Conv scales with its
/// channels once).
struct MacCounts {
    /// Per node: base MACs, output and input channels, and how many of
    /// each are gone.
    nodes: std::collections::BTreeMap<NodeId, (f64, f64, f64, f64, f64)>,
}

impl MacCounts {
    fn new(g: &Graph, groups: &[Group]) -> MacCounts {
        let mut nodes = std::collections::BTreeMap::new();
        for gr in groups {
            let all = std::iter::once(&gr.producer)
                .chain(&gr.coupled)
                .chain(&gr.depthwise)
                .chain(gr.readers.iter().map(|(r, _)| r));
            for &n in all {
                nodes.entry(n).or_insert_with(|| {
                    let w = ConvWeight::read(g, n).expect("invariant: grouped");
                    let base = macs(g, n).unwrap_or(0) as f64;
                    (base, w.dims[0] as f64, w.dims[1] as f64, 0.0, 0.0)
                });
            }
        }
        MacCounts { nodes }
    }

    fn mac(&self, n: NodeId) -> f64 {
        let (base, o, i, ro, ri) = self.nodes[&n];
        base * (1.0 - ro / o) * (1.0 - ri / i)
    }

    /// Takes `k` more channels out of `gr`; returns the MACs saved.
    fn remove(&mut self, gr: &Group, k: usize) -> f64 {
        let k = k as f64;
        let mut saved = 0.0;
        let mut step = |n: NodeId, out: bool, this: &mut MacCounts| {
            let before = this.mac(n);
            let e = this.nodes.get_mut(&n).expect("invariant: counted");
            if out {
                e.3 += k;
            } else {
                e.4 += k;
            }
            saved += before - this.mac(n);
        };
        for &n in std::iter::once(&gr.producer)
            .chain(&gr.coupled)
            .chain(&gr.depthwise)
        {
            step(n, true, self);
        }
        for &(n, _) in &gr.readers {
            step(n, false, self);
        }
        saved
    }
}

/// MACs of `n` at the model's static shapes.
fn macs(g: &Graph, n: NodeId) -> Option<u64> {
    crate::analysis::cost::node_cost(g, n).macs
}

/// Total MACs of the weighted ops (what `macs` is a share of).
fn weighted_macs(g: &Graph) -> u64 {
    g.ops()
        .into_iter()
        .filter(|&n| {
            matches!(
                g.node(n).op_type(),
                "Conv" | "ConvTranspose" | "MatMul" | "Gemm"
            )
        })
        .filter_map(|n| macs(g, n))
        .sum()
}

impl Pass for PruneChannels {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &m.graph;
        let mut groups = Vec::new();
        let mut skipped = Vec::new();
        for n in g.ops() {
            if g.node(n).op_type() != "Conv" {
                continue;
            }
            // Depthwise convolutions belong to the group before them.
            if ConvWeight::group(g, n) != 1 {
                continue;
            }
            match group_at(g, n) {
                Ok(gr) => groups.push(gr),
                Err(why) => skipped.push((g.label(n).to_string(), why)),
            }
        }
        let before = weighted_macs(g);
        if groups.is_empty() || before == 0 {
            let why = if before == 0 {
                "no static shapes to count MACs with (run shape-inference first)".to_string()
            } else {
                format!(
                    "no convolution's output channels can be pruned: {}",
                    skipped
                        .iter()
                        .take(3)
                        .map(|(n, why)| format!("'{n}': {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            cx.remark(NAME, "<model>", why);
            cx.analyses.channel_pruning = Some(ChannelPruning {
                asked: self.opts.macs,
                budget_db: self.opts.budget_db,
                macs_before: before,
                macs_after: before,
                skipped,
                ..Default::default()
            });
            return Ok(Changed::No);
        }
        // Channel means and mean squares of what the readers read.
        let data = cx
            .inputs()
            .calib_data
            .as_ref()
            .ok_or_else(|| PassError::Precondition {
                pass: NAME.into(),
                message: "needs calibration data (--calib DIR) to measure the channels".into(),
            })?
            .take(self.opts.samples);
        let read: BTreeSet<String> = groups
            .iter()
            .flat_map(|gr| gr.readers.iter().map(|&(_, v)| g.name(v).to_string()))
            .collect();
        let tensors: Vec<String> = read.iter().cloned().collect();
        let stats = moments(m, &data, &tensors, &cx.inputs().input_shapes).map_err(|message| {
            PassError::Failed {
                pass: NAME.into(),
                message,
            }
        })?;
        let g = &m.graph;
        // Per group, its channels cheapest first, taken in blocks that
        // leave a multiple of `multiple` channels: (cost per MAC saved,
        // group, block index, channels, MACs saved, cost).
        let mut blocks: Vec<(f64, usize, usize, Vec<usize>, u64, f64)> = Vec::new();
        for (gi, gr) in groups.iter().enumerate() {
            let c = gr.channels as u64;
            let mut per_channel = macs(g, gr.producer).unwrap_or(0) / c;
            for &d in gr.depthwise.iter().chain(&gr.coupled) {
                per_channel += macs(g, d).unwrap_or(0) / c;
            }
            for &(r, _) in &gr.readers {
                per_channel += macs(g, r).unwrap_or(0) / c;
            }
            let mut cost = vec![0f64; gr.channels];
            let mut measured = true;
            for &(r, v) in &gr.readers {
                let w = ConvWeight::read(g, r).expect("invariant: read when grouped");
                let e = w.input_energy();
                let Some(cm) = stats.get(g.name(v)) else {
                    measured = false;
                    break;
                };
                if cm.mean.len() != gr.channels || cm.meansq.len() != gr.channels {
                    measured = false;
                    break;
                }
                let signal: f64 = (0..gr.channels).map(|i| cm.meansq[i] * e[i]).sum();
                for i in 0..gr.channels {
                    let var = (cm.meansq[i] - cm.mean[i] * cm.mean[i]).max(0.0);
                    cost[i] += var * e[i] / signal.max(f64::MIN_POSITIVE);
                }
            }
            if !measured || per_channel == 0 {
                continue;
            }
            let mut order: Vec<usize> = (0..gr.channels).collect();
            order.sort_by(|&a, &b| cost[a].total_cmp(&cost[b]).then(a.cmp(&b)));
            let m = self.opts.multiple.max(1);
            let floor = (((gr.channels as f64) * KEEP_AT_LEAST).ceil() as usize).max(m);
            let mut at = 0;
            let mut size = match gr.channels % m {
                0 => m,
                r => r,
            };
            let mut index = 0;
            while gr.channels - at - size >= floor && at + size < gr.channels {
                let chans: Vec<usize> = order[at..at + size].to_vec();
                let cst: f64 = chans.iter().map(|&i| cost[i]).sum();
                let saved = per_channel * size as u64;
                blocks.push((cst / saved as f64, gi, index, chans, saved, cst));
                at += size;
                size = m;
                index += 1;
            }
        }
        blocks.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let goal = (self.opts.macs * before as f64) as u64;
        let budget = 10f64.powf(-self.opts.budget_db / 10.0);
        let mut removed: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); groups.len()];
        // Per group: blocks taken (a block follows the ones before it) and
        // the error spent.
        let mut taken = vec![0usize; groups.len()];
        let mut closed = vec![false; groups.len()];
        let mut spent = vec![0f64; groups.len()];
        // MACs saved, counted exactly: a Conv that loses output channels
        // in one group and input channels in another saves less than the
        // two shares added (the block's estimate ranks, this decides).
        let mut counts = MacCounts::new(g, &groups);
        let mut saved = 0f64;
        for (_, gi, index, chans, _, cost) in &blocks {
            if saved >= goal as f64 {
                break;
            }
            let gi = *gi;
            if closed[gi] || taken[gi] != *index || spent[gi] + cost > budget {
                // Later blocks of this group cost more per channel.
                closed[gi] = true;
                continue;
            }
            removed[gi].extend(chans.iter().copied());
            taken[gi] += 1;
            spent[gi] += cost;
            saved += counts.remove(&groups[gi], chans.len());
        }
        let saved = saved as u64;
        let prunable: usize = groups.iter().map(|gr| gr.channels).sum();
        let pruned_groups = removed.iter().filter(|r| !r.is_empty()).count();
        let channels_removed: usize = removed.iter().map(|r| r.len()).sum();
        if channels_removed == 0 {
            cx.remark(
                NAME,
                "<model>",
                "no channel was measured cheap enough to remove",
            );
            return Ok(Changed::No);
        }
        // Rewrite: weights first (reading the graph), then the tensors.
        let g = &mut m.graph;
        for (gr, gone) in groups.iter().zip(&removed) {
            if gone.is_empty() {
                continue;
            }
            let keep: Vec<usize> = (0..gr.channels).filter(|c| !gone.contains(c)).collect();
            for &q in std::iter::once(&gr.producer).chain(&gr.coupled) {
                let mut p = ConvWeight::read(g, q).expect("invariant: grouped");
                p.keep_rows(&keep);
                p.write(g);
            }
            for &d in &gr.depthwise {
                let mut w = ConvWeight::read(g, d).expect("invariant: grouped");
                w.keep_rows(&keep);
                w.write(g);
                for a in &mut g.op_mut(d).attribute {
                    if a.name() == "group" {
                        a.i = Some(keep.len() as i64);
                    }
                }
            }
            for &(r, v) in &gr.readers {
                let cm = stats
                    .get(g.name(v))
                    .expect("invariant: measured when chosen");
                let mut w = ConvWeight::read(g, r).expect("invariant: grouped");
                if !w.reconstruct(&keep, cm) {
                    w.drop_inputs(&keep, &cm.mean);
                }
                w.write(g);
            }
            // Narrower tensors: new names (nothing may compare them with
            // the original model's) and their new channel count.
            for &v in &gr.carried {
                let info = g.static_shape(v).filter(|s| s.len() > 1).map(|mut s| {
                    s[1] = keep.len();
                    let dims: Vec<i64> = s.iter().map(|&d| d as i64).collect();
                    crate::proto::ValueInfoProto {
                        r#type: Some(crate::ir::types::tensor_type(g.elem_type(v), &dims)),
                        ..Default::default()
                    }
                });
                g.set_value_info(v, info);
                let name = g.fresh_name(&format!("{}_pruned", g.name(v)));
                g.rename(v, &name);
            }
        }
        let after = weighted_macs(&m.graph);
        cx.analyses.stats = None;
        cx.analyses.holdout_stats = None;
        cx.analyses.act_params = None;
        let share = before.saturating_sub(after) as f64 / before as f64;
        let short = if saved < goal {
            format!(
                "; {:.0}% was asked: the other channels cost more than the {} dB error budget per reader or their group's last quarter",
                100.0 * self.opts.macs,
                self.opts.budget_db
            )
        } else {
            String::new()
        };
        cx.remark(
            NAME,
            "<model>",
            format!(
                "removed {channels_removed} of {prunable} prunable channels in {pruned_groups} of {} groups: {:.1}% of the Conv/MatMul/Gemm MACs ({} convolutions could not be pruned){short}",
                groups.len(),
                100.0 * share,
                skipped.len()
            ),
        );
        cx.analyses.channel_pruning = Some(ChannelPruning {
            asked: self.opts.macs,
            budget_db: self.opts.budget_db,
            searched: false,
            trials: vec![],
            macs_before: before,
            macs_after: after,
            channels_removed,
            channels_prunable: prunable,
            groups_pruned: pruned_groups,
            groups: groups.len(),
            skipped,
        });
        Ok(Changed::Yes)
    }
}
