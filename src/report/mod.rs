//! What `onnxq quantize` tells its user: the report's data model
//! ([`quantize`]: the JSON a build pipeline reads and the terminal summary)
//! and its HTML rendering ([`html`]).

pub mod diagnose;
pub mod html;
pub mod precision;
pub mod quantize;

pub use quantize::{ActivationSummary, Fallback, FidelityTarget, QuantizeReport, Timings};
