//! The textual form of the IR: ONNX's own textual syntax (the one
//! `onnx.parser.parse_model` and `onnx.printer.to_text` use, see ONNX's
//! `docs/Syntax.md`), printed by [`print_model`] and read back by
//! [`parse_model`]. Tests are written in it.
//!
//! ```text
//! <
//!   ir_version: 8,
//!   opset_import: ["" : 17, "com.microsoft" : 1]
//! >
//! main_graph (float[N,3,8,8] X) => (float[N,4,6,6] Y)
//! <
//!   float[4,3,3,3] W = {... 108 elements, hash 1a2b3c4d},
//!   float[4] B = {0.1, 0.2, 0.3, 0.4}
//! >
//! {
//!   [conv0] C = Conv <kernel_shape: ints = [3, 3]> (X, W, B)
//!   Y = Relu (C)
//! }
//! ```
//!
//! What the printer guarantees: values by name (names that are not plain
//! identifiers, or that would read as a type or keyword, are double-quoted
//! with `\"` and `\\` escaped), attributes sorted by name and always written
//! with their type (`name: type = value`, as ONNX's printer does), floats in
//! shortest round-trip form (always with a `.` or exponent so they never read
//! as integers; `nan`, `inf`, `-inf`, `-0.0` included), nodes in
//! [`Graph::topo_order`] order, and print → parse → print is a fixed point.
//!
//! Syntax as in ONNX:
//! * types: `float[N,?,3]` (symbolic / unknown dims), `float` is a scalar
//!   (rank 0), `float[]` has unknown rank; `seq(T)`, `map(K, T)`,
//!   `optional(T)`, `sparse_tensor(float[3])`, `opaque(domain, name)`.
//! * node names: `[name] Y = Relu (X)` (ONNX's `node-label`).
//! * omitted optional operands and results: `""`, e.g. `Clip (X, "", max)`;
//!   the parser also accepts nothing between commas, `Clip (X, , max)`.
//! * domains: `com.microsoft.QLinearConv (…)`; an overload `Op:overload`.
//! * initializers live in the `<…>` list after the outputs; an initializer
//!   that is also a graph input appears in both lists (the parser also takes
//!   `(float[3] X = {…})` in the input list). Other `<…>` entries without
//!   data are `value_info`.
//! * tensor data: one literal per element; float16/bfloat16/float8 are bit
//!   patterns as integers (as ONNX does; the parser also converts a float
//!   literal like `1.5` for float16/bfloat16), bool is 0/1, sub-byte types
//!   one integer per element, complex two floats per element. External data
//!   uses ONNX's `["location": "w.bin", …]` form.
//! * functions follow the main graph, in ONNX's function syntax.
//! * lines whose first non-blank character is `#` are comments.
//!
//! Extensions ONNX's syntax lacks (onnx.parser cannot read these):
//! * **elided constants**: tensors with more than
//!   [`PrintOptions::elide_above`] elements print as
//!   `{... 108 elements, hash 1a2b3c4d}` — the element count and 8 hex digits
//!   of [`Tensor::content_hash`](crate::ir::Tensor::content_hash) (both
//!   halves xor-folded). The parser makes a
//!   tensor of the declared type and shape filled with zeros and records the
//!   printed hash in the tensor's `metadata_props` under [`ELIDED_KEY`]; the
//!   printer prefers that recorded hash, so print → parse → print is a fixed
//!   point even though the values are gone.
//! * sparse tensors: `sparse([dims], values-tensor, indices-tensor)`, as an
//!   initializer (`sparse_tensor(float[10]) S = sparse(…)`) or attribute.
//! * quoted names where ONNX only takes identifiers (attribute names, tensor
//!   names inside attribute values, graph names of subgraphs).
//!
//! Not printed (and so not kept through print → parse): doc strings and
//! metadata of graphs, nodes, values and tensors, quantization annotations,
//! dimension and type denotations, training info and device configurations.
//!
//! # How the pieces fit
//!
//! Printing and parsing are two directions over one syntax, kept in
//! separate files so each reads as one job:
//!
//! * `print` walks a [`Graph`] (or, for subgraphs and functions, the
//!   protos they are kept as) and writes text. It only ever
//!   writes what the lexer reads back: names that would lex as a keyword,
//!   type or special float are quoted, floats always carry a `.` or exponent.
//! * `lex` turns bytes into tokens on demand (whitespace, `#` comment lines,
//!   identifiers, strings, numbers) and owns the positions: every error
//!   anywhere in parsing is made there, so it names a line and column.
//!   The words both directions share (type keywords, attribute type names)
//!   live there too.
//! * `parse` is a recursive-descent parser over the lexer. It produces the
//!   parsed form: protos for everything onnxq keeps verbatim (model header,
//!   attributes, subgraphs, functions) and, for the main graph, a `PGraph`
//!   that still carries the position of every name. Attribute values and
//!   tensor constants are sub-grammars in `parse/attr.rs` and
//!   `parse/tensor.rs`. Graphs and types nested deeper than 64 levels are
//!   an error, not a stack overflow (`parse::MAX_DEPTH` says why 64).
//! * `lower` builds the IR from the main graph's parsed form through
//!   [`GraphBuilder`](crate::ir::build::GraphBuilder), the builder import
//!   uses, so text and files are held to the same rules; it reports what
//!   the builder finds wrong (an undefined or twice-defined name, a cycle)
//!   at the position the parsed form remembered.
//!
//! [`diff`] is the full-context line diff the snapshot tests show.

mod diff;
mod lex;
mod lower;
mod parse;
mod print;

pub use self::diff::diff;

use self::parse::Parser;
use super::graph::Graph;
use super::Model;

/// `metadata_props` key under which a parsed elided tensor keeps the hash
/// its text showed (see the module docs).
pub const ELIDED_KEY: &str = "onnxq.elided";

/// How to print.
#[derive(Clone, Debug)]
pub struct PrintOptions {
    /// Tensors with more elements than this print as `{... N elements, hash H}`.
    pub elide_above: usize,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions { elide_above: 16 }
    }
}

/// A syntax or well-formedness error, with the 1-based line and column
/// where it was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// Prints a model with the default options.
pub fn print_model(m: &Model) -> String {
    print_model_with(m, &PrintOptions::default())
}

/// Prints a model: header, main graph, then functions.
pub fn print_model_with(m: &Model, opts: &PrintOptions) -> String {
    print::model(m, opts)
}

/// Prints the main graph alone (no model header), default options.
/// One op of `g` as its line in the printed graph (subgraph attributes
/// printed in full): what the verifier shows a finding under.
pub fn node_line(g: &Graph, n: crate::ir::NodeId) -> String {
    print::node_line(g, n, &PrintOptions::default())
}

pub fn print_graph(g: &Graph) -> String {
    print_graph_with(g, &PrintOptions::default())
}

/// Prints the main graph alone (no model header).
pub fn print_graph_with(g: &Graph, opts: &PrintOptions) -> String {
    print::main_graph(g, opts)
}

/// Parses a model in the textual syntax and builds its IR.
pub fn parse_model(text: &str) -> Result<Model, ParseError> {
    let mut p = Parser::new(text);
    let mut meta = p.model_header()?;
    let main = p.graph()?;
    let graph = lower::main_graph(&p.lx, main)?;
    meta.functions.extend(p.functions()?);
    Ok(Model {
        meta,
        graph,
        dir: None,
    })
}
