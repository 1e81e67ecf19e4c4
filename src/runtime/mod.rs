//! Running models: the only module that talks to tract (and, behind the
//! `ort` feature, to onnxruntime: see [`ort`], kept apart from the tract
//! code).
//!
//! A [`Runner`] is a model loaded into tract (`tract-onnx` 0.23.9), ready to
//! run many times:
//!
//! ```text
//!  ir::Model ──export::to_bytes──▶ tract InferenceModel ──into_typed──▶ TypedModel
//!      (input facts fixed, extra outputs selected)      (f16→f32, declutter+optimize)
//!                                                              │
//!                                  Runner::run / Runner::profile ◀──into_runnable
//! ```
//!
//! * Runtime inputs are the graph inputs that are not initializers; an
//!   initializer listed among the inputs (IR < 4 style) is a constant to
//!   tract too (its ONNX loader turns it into a `Const` node).
//! * [`RunOptions::extra_outputs`] names intermediate tensors to capture. Every
//!   ONNX tensor name is an outlet label in tract's inference model, so they
//!   are promoted to model outputs *before* optimisation, which then keeps
//!   them alive. [`Runner::run`] returns them; [`Runner::run_visit`] hands
//!   each to a visitor as soon as its node has run and lets it go.
//! * Every node evaluation is followed by `vzeroupper` (see
//!   `runner::clear_upper_avx`): tract's AVX-512 kernels leave the upper register
//!   state dirty, which made the SSE code after them ~3× slower.
//! * [`Runner::profile`] times every node of tract's plan and maps each one
//!   back to the ONNX nodes it came from (see [`NodeTime`]).
//!
//! Inputs and outputs are [`HostTensor`]s, matched by name. Tract's errors are
//! `anyhow` chains; they are flattened into the text of [`RuntimeError`],
//! whose variants name the model, tensor or node concerned. Tract's panics
//! are caught where onnxq calls it and become [`RuntimeError::TractPanic`].
//!
//! | file | what |
//! |---|---|
//! | `load.rs` | the IR handed to tract, up to the typed, optimised model |
//! | `runner.rs` | [`Runner`]: plans, inputs checked, runs, tensors converted |
//! | `timing.rs` | [`Runner::profile`] and plan nodes mapped to ONNX nodes |
//! | `guard.rs` | the panic boundary: tract's panics caught, quietly |
//! | `cache.rs` | runners per input signature; parallel maps over samples |
//! | `facts.rs` | type and shape facts for the `shape-inference` pass |
//! | `weights.rs`, `fake_quant.rs` | folding and fusing Q/DQ with tract's arithmetic |
//! | `ort/` | onnxruntime (feature `ort`): sessions, ORT's profiler, latency rounds; no tract |
//!
//! [`HostTensor`]: crate::tensorio::HostTensor

use crate::ir::types::{self, Dim};
use crate::ir::{Model, NodeKind};

pub mod bench;
mod cache;
pub mod fake_quant;
mod guard;
mod load;
pub mod lower;
pub mod memory;
mod runner;
mod timing;
pub mod weights;
// onnxruntime, for speed where users deploy (the `ort` cargo feature).
#[cfg(feature = "ort")]
pub mod ort;
pub use cache::{default_threads, par_map, par_workers, signature, RunnerCache, Signature};
pub use runner::Runner;
pub use timing::{FusedGroup, NodeTime, NodeTimes};

// ---- infer_facts, for the shape-inference pass (see facts.rs) ----
mod facts;
pub use facts::{infer_facts, Fact};
// ---- end infer_facts ----

/// How to load a model into the runtime.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Concrete facts for runtime inputs: `(input name, shape, ONNX dtype)`;
    /// dtype `0` keeps the model's declared element type. Inputs not listed
    /// keep their declared (possibly symbolic) shape.
    pub input_shapes: Vec<(String, Vec<usize>, i32)>,
    /// Intermediate tensors to capture, by ONNX value name. They are
    /// returned after the graph outputs, in this order.
    pub extra_outputs: Vec<String>,
    /// Rewrite float16 computation to float32 (tract's `f16_to_f32`
    /// transform). Tract runs float16 graphs very slowly; with this set,
    /// float16 inputs are accepted and widened, and float16 values —
    /// outputs included — are computed and returned as float32.
    pub f16_to_f32: bool,
    /// Declutter and optimise (fuse, pick kernels). Off runs tract's typed
    /// model as translated from ONNX, nearly one tract node per ONNX node:
    /// slower, but profiles map one-to-one.
    pub optimize: bool,
    /// Ignore the model's `value_info` shapes. `None` (the default) ignores
    /// them exactly when [`RunOptions::input_shapes`] is non-empty: stale
    /// intermediate shapes from exporters often contradict fixed inputs.
    pub ignore_value_info: Option<bool>,
    /// Run activation QuantizeLinear → DequantizeLinear pairs as one
    /// vectorized op with identical results (see [`fake_quant`]).
    pub fuse_qdq: bool,
    /// Fold constant DequantizeLinear nodes (quantized weights) before
    /// tract analyses the model, with identical results (see [`weights`]).
    pub fold_weight_dequantize: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            input_shapes: Vec::new(),
            extra_outputs: Vec::new(),
            f16_to_f32: false,
            optimize: true,
            ignore_value_info: None,
            fuse_qdq: false,
            fold_weight_dequantize: false,
        }
    }
}

/// A runtime input of a model, as declared in the ONNX graph.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    /// ONNX element type code (0 if undeclared).
    pub dtype: i32,
    /// Declared dimensions, symbolic ones included; `None` if the rank is
    /// unknown.
    pub dims: Option<Vec<Dim>>,
    /// For an integer input that indexes a table of known shape (a Gather's
    /// or GatherElements' indices, directly or through a Cast or reshape):
    /// the table's size along the gathered axis. Random samples draw
    /// indices below it.
    pub index_bound: Option<u64>,
}

/// Ops an index passes through unchanged on its way to a Gather.
const INDEX_THROUGH: &[&str] = &[
    "Cast",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Identity",
];

/// The smallest table size along the gathered axis of any Gather that `v`
/// indexes (through [`INDEX_THROUGH`] ops), if any.
fn index_bound(g: &crate::ir::Graph, v: crate::ir::ValueId, depth: usize) -> Option<u64> {
    if depth > 8 {
        return None;
    }
    let mut bound: Option<u64> = None;
    for (n, slot) in g.users(v) {
        let node = g.node(n);
        let b = match (node.op_type(), slot) {
            ("Gather" | "GatherElements", crate::ir::Slot::Input(1)) => node
                .input(0)
                .and_then(|d| match g.constant(d) {
                    Some(t) => Some(t.dims().to_vec()),
                    None => g
                        .static_shape(d)
                        .map(|s| s.iter().map(|&x| x as i64).collect()),
                })
                .and_then(|dims| {
                    let r = dims.len() as i64;
                    let a = node.attr_i("axis").unwrap_or(0);
                    let a = if a < 0 { a + r } else { a };
                    (0..r).contains(&a).then(|| dims[a as usize].max(0) as u64)
                }),
            (op, crate::ir::Slot::Input(0)) if INDEX_THROUGH.contains(&op) => {
                index_bound(g, node.output(), depth + 1)
            }
            _ => None,
        };
        if let Some(b) = b {
            bound = Some(bound.map_or(b, |x: u64| x.min(b)));
        }
    }
    bound
}

/// The graph inputs a caller must feed: graph inputs that are not
/// initializers, in graph order.
pub fn input_specs(model: &Model) -> Vec<InputSpec> {
    let g = &model.graph;
    g.inputs()
        .iter()
        .filter(|p| matches!(g.producer_node(p.value).kind(), NodeKind::Input))
        .map(|p| {
            let ty = p.info.r#type.as_ref();
            InputSpec {
                name: p.info.name().to_string(),
                dtype: ty.map(types::elem_type).unwrap_or(0),
                dims: ty.and_then(types::dims),
                index_bound: index_bound(g, p.value, 0),
            }
        })
        .collect()
}

/// What to do about a model tract cannot load, from tract's message: onnxq
/// runs every model in tract to calibrate and validate it, so such a model
/// cannot be quantized as it is.
pub fn load_hint(detail: &str) -> String {
    if detail.contains("expected attribute 'axes'") {
        return "The Squeeze/Unsqueeze there has no `axes` (allowed before opset 13, \"every dim of size 1\"), which tract cannot read: re-export the model with explicit axes (torch: x.squeeze(dim)), or run it through onnxsim, which writes them".into();
    }
    if detail.contains("IfThenElse") {
        return "An If whose two branches give tensors of different ranks cannot be loaded by tract: if its condition depends only on an input that is fixed where the model is deployed (a sample rate, a mode flag), pin it with --fix-input NAME=VALUE so that the If folds away; otherwise export the model without the If".into();
    }
    if let Some(rest) = detail.split("Unimplemented(").nth(1) {
        let op = rest.split(')').next().unwrap_or("?");
        return format!("tract 0.23.9, which onnxq runs models in to calibrate and validate them, does not implement {op}: export the model without it (or with a form tract has), or quantize this model with a tool that runs it in another runtime");
    }
    "onnxq runs the model in tract 0.23.9 to calibrate and validate it: re-export the model in a form tract loads (onnxsim often gives one), or report the node named above".into()
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("model '{model}': tract cannot load it: {detail}. {}", load_hint(.detail))]
    Load { model: String, detail: String },
    #[error("model '{model}': run options name input '{name}', which is not a runtime input (inputs: {known})")]
    UnknownInput {
        model: String,
        name: String,
        known: String,
    },
    #[error("model '{model}': cannot capture tensor '{name}': no value of that name")]
    UnknownTensor { model: String, name: String },
    #[error("input '{name}': element type code {dtype} is not supported by the runtime")]
    UnsupportedDtype { name: String, dtype: i32 },
    #[error("missing input(s) {}; the model takes {}", .missing.join(", "), .expected.join(", "))]
    MissingInputs {
        missing: Vec<String>,
        expected: Vec<String>,
    },
    #[error("input '{name}' is not an input of the model; it takes {}", .expected.join(", "))]
    UnexpectedInput { name: String, expected: Vec<String> },
    #[error("input '{name}' is given twice")]
    DuplicateInput { name: String },
    #[error("input '{name}' has element type {got}, the model expects {expected}")]
    InputDtype {
        name: String,
        expected: String,
        got: String,
    },
    #[error("input '{name}' has shape {got:?}, the model expects {expected}")]
    InputShape {
        name: String,
        expected: String,
        got: Vec<usize>,
    },
    #[error("model '{model}': run failed: {detail}")]
    Run { model: String, detail: String },
    #[error("output '{name}' has tract element type {dtype}, which onnxq cannot return")]
    UnsupportedOutput { name: String, dtype: String },
    /// Tract panicked: a model it should have refused, or a bug of its own.
    /// Caught at the runtime boundary (see `guard.rs`). The site is boxed
    /// to keep every `Result` carrying this error small.
    #[error("model '{model}': tract panicked {at}: {message}")]
    TractPanic {
        model: String,
        at: Box<PanicSite>,
        message: String,
    },
}

/// Where in the runtime tract panicked.
#[derive(Clone, Debug, PartialEq)]
pub enum PanicSite {
    /// Loading, analysing, optimising or planning the model.
    Loading,
    /// Running it, between nodes.
    Running,
    /// Evaluating one node of tract's plan: its tract name (for a node
    /// translated from ONNX, the ONNX node's name) and tract op.
    Node { name: String, op: String },
}

impl std::fmt::Display for PanicSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PanicSite::Loading => write!(f, "while loading it"),
            PanicSite::Running => write!(f, "while running it"),
            PanicSite::Node { name, op } => write!(f, "in node '{name}' ({op})"),
        }
    }
}

#[cfg(test)]
mod hint_tests {
    use super::load_hint;

    #[test]
    fn load_errors_say_what_to_do() {
        let h = load_hint("Building node Squeeze_41 (Squeeze): Node Squeeze_41 (Squeeze): expected attribute 'axes'");
        assert!(h.contains("explicit axes"), "{h}");
        let h = load_hint("Translating node #72 \"If_25\" If ToTypedTranslator: in output_facts invocation for If: IfThenElse: Condition failed");
        assert!(h.contains("--fix-input"), "{h}");
        let h = load_hint(
            "Translating node #3 \"z\" Unimplemented(NegativeLogLikelihoodLoss) ToTypedTranslator",
        );
        assert!(
            h.contains("does not implement NegativeLogLikelihoodLoss"),
            "{h}"
        );
        assert!(load_hint("something else").contains("re-export"));
    }
}
