//! Analyses of a model that several layers read: the static cost model and
//! measured hotspot profiles.
//!
//! * [`cost`] is the static cost model: per ONNX node, multiply-accumulates,
//!   bytes moved and parameters, computed from shapes alone.
//! * [`profile`] joins measured per-node times ([`crate::runtime::Runner::profile`])
//!   with those costs into a hotspot table, the [`Profile`] that
//!   `profile-hotspots` leaves in the pass context for cost-aware passes,
//!   and that `onnxq profile` and the quantize report print.
//!
//! They sit below the passes (which read them) and above the runtime
//! (which measures).

pub mod cost;
pub mod profile;

pub use cost::{model_costs, node_cost, NodeCost};
pub use profile::{OpShare, Profile, ProfileNode, ProfileRow};
