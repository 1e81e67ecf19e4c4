//! # onnxq — an ONNX graph compiler for quantization
//!
//! onnxq reads an ONNX model, lowers it into a graph IR, runs a pipeline of
//! passes over it and writes an ONNX model back. The data flow is the folder
//! layout:
//!
//! ```text
//!  file ──onnx::import──▶ ir::Model ──passes::PassManager──▶ ir::Model ──onnx::export──▶ file
//!                              │                                  ▲
//!                              └──────── runtime (tract) ─────────┘
//!                                 calibration, profiling, validation
//! ```
//!
//! * [`onnx`] holds the protobuf bindings (compiled from `proto/onnx.proto`
//!   by `build.rs`, no `protoc` needed), import, export and external data.
//! * [`ir`] is the graph: a petgraph `StableDiGraph` whose nodes are ops,
//!   graph inputs and initializers, and whose edges are uses of values kept
//!   in a typed side table. Whatever the IR does not interpret — unknown ops
//!   and domains, attributes, doc strings, metadata, functions, subgraphs —
//!   is carried verbatim, so import followed by export is lossless.
//!   [`ir::text`] prints and parses ONNX's textual syntax; tests are written
//!   in it.
//! * [`passes`] (the top-level `passes/` folder) holds one file per pass, the
//!   registry and the pass manager.
//! * [`runtime`] is the only module that talks to tract: it runs a model,
//!   captures intermediate tensors and times nodes.
//!
//! Determinism is a design rule: node order, new names and every output
//! path are independent of hash-map order, thread count and file order.

pub mod analysis;
pub mod calib;
pub mod cli;
pub mod error;
pub mod ir;
pub mod onnx;
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
