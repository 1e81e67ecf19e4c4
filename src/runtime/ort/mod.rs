//! onnxruntime (ORT) as a second runtime: where onnxq measures speed the way
//! most users deploy, to decide where int8 pays.
//!
//! Tract stays onnxq's reference runtime (calibration, validation,
//! profiling); this module only loads a model into ORT's CPU execution
//! provider, runs it, times its nodes with ORT's own profiler and times
//! whole models against each other. It talks to ORT through the `ort`
//! crate (pykeio/ort, built with `load-dynamic`): no ORT is linked or
//! downloaded at build time; the `libonnxruntime.so` that
//! `pip install onnxruntime` ships is found and loaded at run time.
//!
//! ```text
//!  ir::Model ──export::to_proto──▶ ModelProto ──names::label_nodes──▶ bytes ──▶ ORT session
//!                                  (every node named)                        │
//!      OrtSession::run ◀────────────────────────────────────────────────────┤
//!      OrtSession::profile: ORT profile JSON + optimized graph ──names::map_nodes──▶ per ONNX node
//!      compare_latency: alternating rounds over several sessions
//! ```
//!
//! | file | what |
//! |---|---|
//! | `library.rs` | finding and loading `libonnxruntime`, once per process |
//! | `session.rs` | [`OrtSession`], [`OrtOptions`]: load, run, tensors in and out |
//! | `names.rs` | node labels; ORT's fused nodes mapped back to ONNX nodes |
//! | `profile.rs` | [`OrtSession::profile`]: per-node times from ORT's profiler |
//! | `latency.rs` | [`compare_latency`]: the method of `eval/tools/speed.py` |

pub mod latency;
pub mod library;
pub mod names;
mod profile;
mod session;

pub use latency::{compare_latency, LatencyOptions, SessionLatency};
pub use library::{LibraryError, OrtLibrary, ORT_DYLIB_PATH};
pub use names::{NodeMap, NodeOrigin};
pub use profile::{OrtNodeTime, OrtProfile};
pub use session::{OrtIo, OrtOptLevel, OrtOptions, OrtSession};

/// Why ORT could not load or run a model.
#[derive(Debug, thiserror::Error)]
pub enum OrtError {
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error("the model bytes are not an ONNX ModelProto: {detail}")]
    Decode { detail: String },
    #[error("model '{model}': onnxruntime cannot load it: {detail}")]
    Session { model: String, detail: String },
    #[error("model '{model}': input '{name}' is not an input of the model; it takes {}", .expected.join(", "))]
    UnexpectedInput {
        model: String,
        name: String,
        expected: Vec<String>,
    },
    #[error("model '{model}': input '{name}' is given twice")]
    DuplicateInput { model: String, name: String },
    #[error("model '{model}': missing input(s) {}; the model takes {}", .missing.join(", "), .expected.join(", "))]
    MissingInputs {
        model: String,
        missing: Vec<String>,
        expected: Vec<String>,
    },
    #[error("model '{model}': input '{name}' cannot be handed to onnxruntime: {detail}")]
    Input {
        model: String,
        name: String,
        detail: String,
    },
    #[error("model '{model}': onnxruntime run failed: {detail}")]
    Run { model: String, detail: String },
    #[error("output '{name}' has type {dtype}, which onnxq cannot return")]
    UnsupportedOutput { name: String, dtype: String },
    #[error("model '{model}': profiling failed: {detail}")]
    Profile { model: String, detail: String },
    #[error("latency needs at least one input sample")]
    NoSamples,
}
