//! `select-coverage`: chooses which compute ops to quantize from where the
//! time goes.
//!
//! # What
//! Takes the fewest Conv/ConvTranspose/MatMul/Gemm whose measured time (the
//! `profile-hotspots` profile) covers `coverage` of all compute ops' time,
//! largest first, ties in graph order, and leaves the choice for
//! `insert-qdq`, which quantizes those and the elementwise ops that feed
//! them and says why every other compute op stayed float. The choice is
//! recorded in the pass's own options (`nodes=[…]`), so the printed
//! pipeline replays it exactly: timings vary from run to run, a replay
//! must not.
//!
//! # Example
//! ```text
//! # RUN: shape-inference,profile-hotspots{runs=3},select-coverage{coverage=0.9}
//! printed after the run: select-coverage{coverage=0.9,nodes=[conv_big,mm_1]}
//! ```
//!
//! # Options
//! * `coverage` (default 0.9): the fraction of compute time to cover.
//! * `nodes`: the labels to select, skipping the measurement (what a run
//!   prints back).
//!
//! # Preconditions
//! A profile in the context (`profile-hotspots` before it), unless `nodes`
//! is given.
//!
//! # Numerics
//! None by itself: it decides what `insert-qdq` touches.
//!
//! # Errors
//! No profile; a coverage outside 0–1; a label in `nodes` that names no
//! compute op of the model.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::Model;
use crate::plan::COMPUTE_OPS;

const NAME: &str = "select-coverage";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub coverage: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            coverage: 0.9,
            nodes: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct SelectCoverage {
    opts: Options,
}

impl SelectCoverage {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        if !(0.0..=1.0).contains(&opts.coverage) {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: format!(
                    "coverage={}: expected a fraction between 0 and 1",
                    opts.coverage
                ),
            });
        }
        Ok(SelectCoverage { opts })
    }
}

impl Pass for SelectCoverage {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let chosen: Vec<String> = match &self.opts.nodes {
            Some(nodes) => {
                check_labels(m, nodes, NAME)?;
                nodes.clone()
            }
            None => {
                let profile =
                    cx.analyses
                        .profile
                        .as_ref()
                        .ok_or_else(|| PassError::Precondition {
                            pass: NAME.into(),
                            message: "no profile: run `profile-hotspots` before this pass, or give the nodes to select (`nodes=[...]`)".into(),
                        })?;
                let picked = select(m, profile, self.opts.coverage);
                for (label, why) in &picked {
                    cx.remark(NAME, label, why.clone());
                }
                picked.into_keys().collect()
            }
        };
        // Printed back as the pass's options: the replay selects the same.
        self.opts.nodes = Some(chosen.clone());
        cx.analyses.keep_compute(
            chosen.into_iter().collect(),
            "left in float by --coverage: too little of the measured time to pay for its Q/DQ pairs",
        );
        Ok(Changed::No)
    }
}

fn compute_labels(m: &Model) -> Vec<(crate::ir::NodeId, String)> {
    let g = &m.graph;
    g.ops()
        .into_iter()
        .filter(|&n| g.node(n).domain().is_empty() && COMPUTE_OPS.contains(&g.node(n).op_type()))
        .map(|n| {
            let node = g.node(n);
            (n, node.label().to_string())
        })
        .collect()
}

/// Refuses a `nodes` list naming something that is not a compute op of
/// `m` (a selection replayed on another model).
pub fn check_labels(m: &Model, nodes: &[String], pass: &str) -> Result<(), PassError> {
    let known: BTreeSet<String> = compute_labels(m).into_iter().map(|(_, l)| l).collect();
    if let Some(bad) = nodes.iter().find(|n| !known.contains(*n)) {
        return Err(PassError::Options {
            pass: pass.into(),
            message: format!(
                "nodes: '{bad}' is not a Conv/ConvTranspose/MatMul/Gemm of this model"
            ),
        });
    }
    Ok(())
}

/// The fewest compute ops whose measured time covers `coverage` of all
/// compute ops' time, largest first (ties in graph order), sorted by
/// label, each with why it was chosen.
pub fn select(
    m: &Model,
    profile: &crate::analysis::profile::Profile,
    coverage: f64,
) -> BTreeMap<String, String> {
    let times: std::collections::HashMap<&str, f64> = profile
        .nodes
        .iter()
        .map(|n| (n.cost.node.as_str(), n.attributed_ms))
        .collect();
    let mut ops: Vec<(usize, String, f64)> = compute_labels(m)
        .into_iter()
        .enumerate()
        .map(|(i, (_, label))| {
            let t = times.get(label.as_str()).copied().unwrap_or(0.0);
            (i, label, t)
        })
        .collect();
    let total: f64 = ops.iter().map(|o| o.2).sum();
    ops.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut out = BTreeMap::new();
    let mut acc = 0.0;
    for (_, label, t) in ops {
        if total > 0.0 && acc >= coverage * total {
            break;
        }
        acc += t;
        out.insert(
            label,
            format!(
                "{:.3} ms, {:.1}% of compute time",
                t,
                if total > 0.0 { t / total * 100.0 } else { 0.0 }
            ),
        );
    }
    out
}
