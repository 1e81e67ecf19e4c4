//! `profile-hotspots`: times the model in tract node by node and leaves a
//! hotspot [`Profile`](crate::analysis::Profile) in the pass context.
//!
//! # What
//! Loads the model into tract (optimised plan, as it would really run) at
//! the shapes of one input sample, runs it once to warm up and `runs`
//! times measured, and joins the per-plan-node medians, mapped back to ONNX
//! nodes and fused groups (`Conv_3 + Relu_4`), with the static cost model
//! (MACs, bytes, parameters; see `analysis::cost`). The result goes into
//! `cx.profile` for cost-aware passes; `onnxq profile` prints it.
//!
//! # Example
//! ```text
//! # RUN: shape-inference,profile-hotspots{runs=5}
//! ```
//! The graph is not changed.
//!
//! # Options
//! `runs` (default 10): timed runs; each node's time is its median.
//!
//! # Preconditions
//! The input sample is the first of `cx.calib_data` (`--data DIR`), else a
//! seeded random one at `cx.input_shapes` (symbolic dims not given there
//! are 1). MACs need static shapes: run `shape-inference` first with the
//! same input shapes, or the costs that need shapes are unknown (`?`).
//!
//! # Numerics
//! None: analysis only. Times are wall-clock medians and vary from run to
//! run; nothing downstream should depend on them exactly.
//!
//! # Errors
//! A sample that does not fit the model's inputs; a model tract cannot
//! load or run.

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::calib::data::{input_specs, DataSet};
use crate::ir::Model;

const NAME: &str = "profile-hotspots";

/// Seed of the random sample used when the context has no data.
pub const RANDOM_SEED: u64 = 0x70_726f_6669_6c65;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProfileHotspotsOptions {
    /// Timed runs after the warm-up.
    #[serde(default = "default_runs")]
    pub runs: usize,
}

fn default_runs() -> usize {
    10
}

impl Default for ProfileHotspotsOptions {
    fn default() -> Self {
        ProfileHotspotsOptions {
            runs: default_runs(),
        }
    }
}

#[derive(Debug, Default)]
pub struct ProfileHotspots {
    pub opts: ProfileHotspotsOptions,
}

impl ProfileHotspots {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: ProfileHotspotsOptions = super::parse_options(NAME, o)?;
        if opts.runs == 0 {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: "runs must be at least 1".into(),
            });
        }
        Ok(ProfileHotspots { opts })
    }
}

impl Pass for ProfileHotspots {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let failed = |message: String| PassError::Failed {
            pass: NAME.into(),
            message,
        };
        let specs = input_specs(m);
        let random;
        let data = match &cx.inputs().calib_data {
            Some(d) if !d.is_empty() => d,
            _ => {
                random = DataSet::random(1, RANDOM_SEED);
                &random
            }
        };
        let sample = data
            .load(0, &specs, &cx.inputs().input_shapes)
            .map_err(|e| PassError::Precondition {
                pass: NAME.into(),
                message: e.to_string(),
            })?;
        let profile = crate::analysis::profile::measure(m, &sample, self.opts.runs)
            .map_err(|e| failed(e.to_string()))?;
        cx.analyses.profile = Some(profile);
        Ok(Changed::No)
    }
}
