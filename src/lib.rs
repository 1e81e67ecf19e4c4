//! # onnxq — an ONNX graph compiler for quantization
//!
//! onnxq reads an ONNX model, lowers it into a graph IR, runs a pipeline of
//! passes over it and writes an ONNX model back. The data flow is the folder
//! layout:
//!
//! ```text
//!  file ──onnx::import──▶ ir::Model ──passes::PassManager──▶ ir::Model ──onnx::export──▶ file
//!                              │                                  ▲
//!                              └──── runtime (tract, onnxruntime) ┘
//!                                 calibration, profiling, validation
//! ```
//!
//! Everything `onnxq quantize` does to a graph is a registered pass, and
//! the pipeline it prints (`--print-pipeline`, the report's `pipeline:`)
//! replays with `onnxq opt MODEL --calib DIR -p PIPELINE` to the same bytes.
//!
//! ## Layers
//!
//! Modules are layered, lowest first; each uses only the ones before it
//! (`tests/layers.rs` fails on a back-edge):
//!
//! 1. [`proto`]: the ONNX wire format (bindings generated from
//!    `proto/onnx.proto` by `build.rs`, no `protoc`) and element-type facts.
//! 2. [`ir`]: the graph — a petgraph `StableDiGraph` whose nodes are ops,
//!    graph inputs and initializers, with values in a typed side table and
//!    one edge per use; node labels; the verifier; the text IR (printer,
//!    lexer, parser) and the one graph builder import shares with it.
//!    Whatever the IR does not interpret — unknown ops and domains,
//!    attributes, doc strings, metadata, functions, subgraphs — is carried
//!    verbatim, so import followed by export is lossless.
//! 3. [`onnx`]: import, export and external data (file ↔ IR).
//! 4. [`tensorio`]: host tensors and the .npy/.npz/.pb sample formats.
//! 5. [`runtime`]: the engines — tract (running, capturing, timing, panics
//!    caught at the boundary) and, with the `ort` feature, onnxruntime
//!    loaded at run time.
//! 6. [`analysis`]: the static cost model and measured hotspot profiles.
//! 7. [`calib`]: calibration data, histograms, the statistics artifact.
//! 8. [`quant`]: scale/zero-point math, rounding, clip-range methods.
//! 9. [`target`]: what each deployment runtime fuses, as data.
//! 10. [`plan`]: where quantization goes, per target.
//! 11. [`passes`] (the top-level `passes/` folder): one file per pass, the
//!     registry, pipeline strings and the pass manager.
//! 12. [`validate`], then [`sensitivity`]: evaluation against the original.
//! 13. [`report`]: the quantize report's data model and HTML.
//! 14. [`quantize`]: the driver that builds and runs the quantize pipeline.
//! 15. [`cli`]: one file per subcommand.
//!
//! Determinism is a design rule: node order, new names and every output
//! path are independent of hash-map order, thread count and file order.

pub mod analysis;
pub mod calib;
pub mod cli;
pub mod ir;
pub mod onnx;
pub mod plan;
pub mod proto;
pub mod quant;
pub mod quantize;
pub mod report;
pub mod runtime;
pub mod sensitivity;
pub mod target;
pub mod tensorio;
pub mod validate;

// Passes live at the top of the repository (the design card's layout), next
// to `src/`, so that one file per pass is easy to find; mounted here.
#[path = "../passes/mod.rs"]
pub mod passes;
