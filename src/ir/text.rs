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
//!   of [`Tensor::content_hash`] (both halves xor-folded). The parser makes a
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

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use bytes::Bytes;

use super::graph::Graph;
use super::tensor::Tensor;
use super::{Model, NodeKind};
use crate::onnx::attribute_proto::AttributeType;
use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::tensor_shape_proto::{dimension, Dimension};
use crate::onnx::type_proto::{self, Value as TypeValue};
use crate::onnx::{
    dtype_bits, dtype_from_name, dtype_name, AttributeProto, FunctionProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, SparseTensorProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

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
    let mut p = Printer {
        out: String::new(),
        opts,
    };
    p.model_header(&m.meta);
    p.graph(&GView::from_ir(&m.graph), 0);
    p.out.push('\n');
    for f in &m.meta.functions {
        p.out.push('\n');
        p.function(f);
    }
    p.out
}

/// Prints the main graph alone (no model header), default options.
pub fn print_graph(g: &Graph) -> String {
    print_graph_with(g, &PrintOptions::default())
}

/// Prints the main graph alone (no model header).
pub fn print_graph_with(g: &Graph, opts: &PrintOptions) -> String {
    let mut p = Printer {
        out: String::new(),
        opts,
    };
    p.graph(&GView::from_ir(g), 0);
    p.out.push('\n');
    p.out
}

/// Parses a model in the textual syntax and builds its IR.
pub fn parse_model(text: &str) -> Result<Model, ParseError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
    };
    let mut meta = p.model_header()?;
    let pg = p.graph()?;
    let graph = build_graph(&p, pg)?;
    while !p.at_end() {
        let f = p.function()?;
        meta.functions.push(f);
    }
    Ok(Model {
        meta,
        graph,
        dir: None,
    })
}

/// A full-context line diff of `a` → `b`: every line of both, prefixed with
/// `' '` (in both), `'-'` (only in `a`) or `'+'` (only in `b`). Within a
/// change, removals come before additions. Deterministic.
pub fn diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut out = String::new();
    let mut line = |tag: char, s: &str| {
        out.push(tag);
        out.push_str(s);
        out.push('\n');
    };
    for s in &a[..pre] {
        line(' ', s);
    }
    let (n, m) = (am.len(), bm.len());
    if n.saturating_mul(m) > 50_000_000 {
        am.iter().for_each(|s| line('-', s));
        bm.iter().for_each(|s| line('+', s));
    } else {
        // lcs[i][j]: longest common subsequence of am[i..] and bm[j..].
        let w = m + 1;
        let mut lcs = vec![0u32; (n + 1) * w];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * w + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                line(' ', am[i]);
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                line('-', am[i]);
                i += 1;
            } else {
                line('+', bm[j]);
                j += 1;
            }
        }
    }
    for s in &a[a.len() - suf..] {
        line(' ', s);
    }
    out
}

// ===================================================================== printing

/// Everything of a graph the printer needs, from the IR or from a proto.
struct GView<'a> {
    name: &'a str,
    inputs: Vec<&'a ValueInfoProto>,
    outputs: Vec<&'a ValueInfoProto>,
    items: Vec<Item<'a>>,
    nodes: Vec<Cow<'a, NodeProto>>,
}

/// An entry of the `<…>` list after the outputs.
enum Item<'a> {
    Dense(Box<Cow<'a, Tensor>>),
    Sparse(&'a SparseTensorProto),
    Info(&'a ValueInfoProto),
}

impl<'a> GView<'a> {
    fn from_ir(g: &'a Graph) -> Self {
        let mut items = Vec::new();
        for n in g.initializer_nodes() {
            match &g.node(n).kind {
                NodeKind::Initializer(t) => items.push(Item::Dense(Box::new(Cow::Borrowed(t)))),
                NodeKind::SparseInitializer(sp) => items.push(Item::Sparse(sp)),
                _ => {}
            }
        }
        for v in g.value_info_values() {
            if let Some((_, vi)) = &g.value(v).info {
                items.push(Item::Info(vi));
            }
        }
        items.extend(g.shell.value_info.iter().map(Item::Info));
        let nodes = g
            .topo_order()
            .into_iter()
            .filter_map(|n| {
                let node = g.node(n);
                let p = node.op()?;
                let mut np = p.clone();
                let nm = |v: &Option<super::ValueId>| {
                    v.map(|v| g.name(v).to_string()).unwrap_or_default()
                };
                np.input = node.inputs().iter().map(nm).collect();
                np.output = node.outputs().iter().map(nm).collect();
                Some(Cow::Owned(np))
            })
            .collect();
        GView {
            name: g.shell.name(),
            inputs: g.inputs().iter().map(|p| &p.info).collect(),
            outputs: g.outputs().iter().map(|p| &p.info).collect(),
            items,
            nodes,
        }
    }

    fn from_proto(gp: &'a GraphProto) -> Self {
        let mut items: Vec<Item<'a>> = gp
            .initializer
            .iter()
            .map(|t| Item::Dense(Box::new(Cow::Owned(Tensor::from_proto(t.clone())))))
            .collect();
        items.extend(gp.sparse_initializer.iter().map(Item::Sparse));
        items.extend(gp.value_info.iter().map(Item::Info));
        GView {
            name: gp.name(),
            inputs: gp.input.iter().collect(),
            outputs: gp.output.iter().collect(),
            items,
            nodes: gp.node.iter().map(Cow::Borrowed).collect(),
        }
    }
}

struct Printer<'o> {
    out: String,
    opts: &'o PrintOptions,
}

const KEYWORDS: [&str; 6] = [
    "seq",
    "map",
    "optional",
    "sparse_tensor",
    "opaque",
    "undefined",
];

fn is_ident(s: &str) -> bool {
    let mut cs = s.bytes();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Words that must be quoted when used as names: they would read as a type,
/// a keyword or a special float.
fn is_reserved(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    dtype_from_name(s).is_some()
        || KEYWORDS.contains(&s)
        || matches!(l.as_str(), "nan" | "inf" | "infinity")
}

fn quote(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A name as the syntax writes it: bare when it is a plain identifier.
fn id(s: &str) -> Cow<'_, str> {
    if is_ident(s) && !is_reserved(s) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(quote(s.as_bytes()))
    }
}

fn fmt_f32(v: f32) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = v.abs();
    let s = if a != 0.0 && !(1e-4..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    };
    if s.contains(['.', 'e']) {
        s
    } else {
        s + ".0"
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = v.abs();
    let s = if a != 0.0 && !(1e-4..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    };
    if s.contains(['.', 'e']) {
        s
    } else {
        s + ".0"
    }
}

fn elem_name(dt: i32) -> &'static str {
    dtype_name(dt)
}

fn shape_str(shape: Option<&TensorShapeProto>) -> String {
    match shape {
        None => "[]".into(),
        Some(s) if s.dim.is_empty() => String::new(),
        Some(s) => {
            let dims: Vec<String> = s
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(v)) => v.to_string(),
                    Some(dimension::Value::DimParam(p)) => id(p).into_owned(),
                    None => "?".into(),
                })
                .collect();
            format!("[{}]", dims.join(","))
        }
    }
}

/// A type as text; empty when the proto holds no type.
fn type_str(t: &TypeProto) -> String {
    match &t.value {
        None => String::new(),
        Some(TypeValue::TensorType(tt)) => format!(
            "{}{}",
            elem_name(tt.elem_type()),
            shape_str(tt.shape.as_ref())
        ),
        Some(TypeValue::SequenceType(s)) => {
            format!(
                "seq({})",
                s.elem_type.as_deref().map(type_str).unwrap_or_default()
            )
        }
        Some(TypeValue::MapType(m)) => format!(
            "map({}, {})",
            elem_name(m.key_type()),
            m.value_type.as_deref().map(type_str).unwrap_or_default()
        ),
        Some(TypeValue::OptionalType(o)) => {
            format!(
                "optional({})",
                o.elem_type.as_deref().map(type_str).unwrap_or_default()
            )
        }
        Some(TypeValue::SparseTensorType(st)) => {
            format!(
                "sparse_tensor({}{})",
                elem_name(st.elem_type()),
                shape_str(st.shape.as_ref())
            )
        }
        Some(TypeValue::OpaqueType(o)) => match (o.domain(), o.name()) {
            ("", "") => "opaque()".into(),
            ("", n) => format!("opaque({n})"),
            (d, n) => format!("opaque({d}, {n})"),
        },
    }
}

fn value_info_str(vi: &ValueInfoProto) -> String {
    let t = vi.r#type.as_ref().map(type_str).unwrap_or_default();
    if t.is_empty() {
        id(vi.name()).into_owned()
    } else {
        format!("{t} {}", id(vi.name()))
    }
}

fn tensor_type_str(dtype: i32, dims: &[i64]) -> String {
    if dims.is_empty() {
        elem_name(dtype).to_string()
    } else {
        let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", elem_name(dtype), d.join(","))
    }
}

/// 8 hex digits of a tensor's content hash.
fn short_hash(t: &Tensor) -> String {
    let h = t.content_hash();
    format!("{:08x}", ((h >> 32) as u32) ^ (h as u32))
}

/// The elements of a tensor as literals, or `None` if they cannot be read.
fn tensor_values(t: &Tensor) -> Option<Vec<String>> {
    let dt = DataType::try_from(t.dtype()).ok()?;
    if dt == DataType::String {
        return Some(t.proto().string_data.iter().map(|s| quote(s)).collect());
    }
    let n = t.checked_len().ok()?;
    let raw = t.raw_bytes().ok()?;
    if raw.len() != n.checked_mul(dtype_bits(t.dtype())?)?.div_ceil(8) {
        return None;
    }
    use DataType::*;
    let ints = |v: Vec<i128>| v.into_iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let le2 = |c: &[u8]| [c[0], c[1]];
    let le4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let le8 = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
    Some(match dt {
        Float | Complex64 => raw
            .chunks_exact(4)
            .map(|c| fmt_f32(f32::from_le_bytes(le4(c))))
            .collect(),
        Double | Complex128 => raw
            .chunks_exact(8)
            .map(|c| fmt_f64(f64::from_le_bytes(le8(c))))
            .collect(),
        Float16 | Bfloat16 | Uint16 => ints(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes(le2(c)) as i128)
                .collect(),
        ),
        Int16 => ints(
            raw.chunks_exact(2)
                .map(|c| i16::from_le_bytes(le2(c)) as i128)
                .collect(),
        ),
        Int8 => ints(raw.iter().map(|&b| b as i8 as i128).collect()),
        Uint8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz | Float8e8m0 => {
            ints(raw.iter().map(|&b| b as i128).collect())
        }
        Int32 => ints(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes(le4(c)) as i128)
                .collect(),
        ),
        Uint32 => ints(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes(le4(c)) as i128)
                .collect(),
        ),
        Int64 => ints(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes(le8(c)) as i128)
                .collect(),
        ),
        Uint64 => ints(
            raw.chunks_exact(8)
                .map(|c| u64::from_le_bytes(le8(c)) as i128)
                .collect(),
        ),
        Int4 | Uint4 | Float4e2m1 => ints(
            (0..n)
                .map(|i| {
                    let v = (raw[i / 2] >> (4 * (i % 2))) & 0xf;
                    if dt == Int4 {
                        (((v << 4) as i8) >> 4) as i128
                    } else {
                        v as i128
                    }
                })
                .collect(),
        ),
        Int2 | Uint2 => ints(
            (0..n)
                .map(|i| {
                    let v = (raw[i / 4] >> (2 * (i % 4))) & 0x3;
                    if dt == Int2 {
                        (((v << 6) as i8) >> 6) as i128
                    } else {
                        v as i128
                    }
                })
                .collect(),
        ),
        String | Undefined => return None,
    })
}

fn attr_kind(a: &AttributeProto) -> AttributeType {
    use AttributeType as A;
    match a.r#type() {
        A::Undefined => {}
        k => return k,
    }
    if a.f.is_some() {
        A::Float
    } else if a.i.is_some() {
        A::Int
    } else if a.s.is_some() {
        A::String
    } else if a.t.is_some() {
        A::Tensor
    } else if a.g.is_some() {
        A::Graph
    } else if a.sparse_tensor.is_some() {
        A::SparseTensor
    } else if a.tp.is_some() {
        A::TypeProto
    } else if !a.floats.is_empty() {
        A::Floats
    } else if !a.strings.is_empty() {
        A::Strings
    } else if !a.tensors.is_empty() {
        A::Tensors
    } else if !a.graphs.is_empty() {
        A::Graphs
    } else if !a.sparse_tensors.is_empty() {
        A::SparseTensors
    } else if !a.type_protos.is_empty() {
        A::TypeProtos
    } else {
        A::Ints
    }
}

const ATTR_TYPES: [(&str, AttributeType); 14] = [
    ("float", AttributeType::Float),
    ("int", AttributeType::Int),
    ("string", AttributeType::String),
    ("tensor", AttributeType::Tensor),
    ("graph", AttributeType::Graph),
    ("sparse_tensor", AttributeType::SparseTensor),
    ("type_proto", AttributeType::TypeProto),
    ("floats", AttributeType::Floats),
    ("ints", AttributeType::Ints),
    ("strings", AttributeType::Strings),
    ("tensors", AttributeType::Tensors),
    ("graphs", AttributeType::Graphs),
    ("sparse_tensors", AttributeType::SparseTensors),
    ("type_protos", AttributeType::TypeProtos),
];

fn attr_type_name(k: AttributeType) -> &'static str {
    ATTR_TYPES
        .iter()
        .find(|(_, t)| *t == k)
        .map(|(n, _)| *n)
        .unwrap_or("undefined")
}

impl Printer<'_> {
    fn model_header(&mut self, m: &ModelProto) {
        let mut fields: Vec<String> = Vec::new();
        if let Some(v) = m.ir_version {
            fields.push(format!("ir_version: {v}"));
        }
        fields.push(format!("opset_import: {}", opsets_str(&m.opset_import)));
        let strs = [
            ("producer_name", &m.producer_name),
            ("producer_version", &m.producer_version),
            ("domain", &m.domain),
        ];
        for (k, v) in strs {
            if let Some(v) = v {
                fields.push(format!("{k}: {}", quote(v.as_bytes())));
            }
        }
        if let Some(v) = m.model_version {
            fields.push(format!("model_version: {v}"));
        }
        if let Some(v) = &m.doc_string {
            fields.push(format!("doc_string: {}", quote(v.as_bytes())));
        }
        if !m.metadata_props.is_empty() {
            fields.push(format!("metadata_props: {}", props_str(&m.metadata_props)));
        }
        self.out.push_str("<\n");
        self.out.push_str(
            &fields
                .iter()
                .map(|f| format!("  {f}"))
                .collect::<Vec<_>>()
                .join(",\n"),
        );
        self.out.push_str("\n>\n");
    }

    fn function(&mut self, f: &FunctionProto) {
        let mut fields = vec![format!("domain: {}", quote(f.domain().as_bytes()))];
        if !f.overload().is_empty() {
            fields.push(format!("overload: {}", quote(f.overload().as_bytes())));
        }
        if let Some(d) = &f.doc_string {
            fields.push(format!("doc_string: {}", quote(d.as_bytes())));
        }
        fields.push(format!("opset_import: {}", opsets_str(&f.opset_import)));
        self.out.push_str("<\n");
        self.out.push_str(
            &fields
                .iter()
                .map(|f| format!("  {f}"))
                .collect::<Vec<_>>()
                .join(",\n"),
        );
        self.out.push_str("\n>\n");
        self.out.push_str(&id(f.name()));
        if !f.attribute.is_empty() || !f.attribute_proto.is_empty() {
            let mut parts: Vec<String> = f.attribute.iter().map(|a| id(a).into_owned()).collect();
            let mut protos: Vec<&AttributeProto> = f.attribute_proto.iter().collect();
            protos.sort_by(|a, b| a.name().cmp(b.name()));
            for a in protos {
                parts.push(self.attr_string(a, 0));
            }
            let _ = write!(self.out, " <{}>", parts.join(", "));
        }
        let ids = |v: &[String]| {
            v.iter()
                .map(|s| id(s).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(self.out, " ({}) => ({})", ids(&f.input), ids(&f.output));
        if !f.value_info.is_empty() {
            let v: Vec<String> = f.value_info.iter().map(value_info_str).collect();
            let _ = write!(self.out, "\n<{}>", v.join(", "));
        }
        self.out.push_str("\n{\n");
        for n in &f.node {
            self.node(n, 2);
        }
        self.out.push_str("}\n");
    }

    /// Prints a graph starting at the cursor; `ind` is the indentation of
    /// the line the graph starts on.
    fn graph(&mut self, g: &GView<'_>, ind: usize) {
        let pad = " ".repeat(ind);
        let ins: Vec<String> = g.inputs.iter().map(|v| value_info_str(v)).collect();
        let outs: Vec<String> = g.outputs.iter().map(|v| value_info_str(v)).collect();
        let _ = write!(
            self.out,
            "{} ({}) => ({})",
            id(g.name),
            ins.join(", "),
            outs.join(", ")
        );
        if !g.items.is_empty() {
            let _ = write!(self.out, "\n{pad}<\n");
            let n = g.items.len();
            for (i, it) in g.items.iter().enumerate() {
                let s = match it {
                    Item::Dense(t) => {
                        format!(
                            "{} {} = {}",
                            tensor_type_str(t.dtype(), t.dims()),
                            id(t.name()),
                            self.tensor_data(t)
                        )
                    }
                    Item::Sparse(sp) => {
                        let vals = sp.values.as_ref();
                        let dt = vals.map(|v| v.data_type()).unwrap_or(0);
                        let name = vals.map(|v| v.name()).unwrap_or("");
                        format!(
                            "sparse_tensor({}) {} = {}",
                            tensor_type_str(dt, &sp.dims),
                            id(name),
                            self.sparse_str(sp)
                        )
                    }
                    Item::Info(vi) => value_info_str(vi),
                };
                let _ = writeln!(self.out, "{pad}  {s}{}", if i + 1 < n { "," } else { "" });
            }
            let _ = write!(self.out, "{pad}>");
        }
        let _ = writeln!(self.out, "\n{pad}{{");
        for n in &g.nodes {
            self.node(n, ind + 2);
        }
        let _ = write!(self.out, "{pad}}}");
    }

    fn node(&mut self, n: &NodeProto, ind: usize) {
        let pad = " ".repeat(ind);
        self.out.push_str(&pad);
        if !n.name().is_empty() {
            let _ = write!(self.out, "[{}] ", id(n.name()));
        }
        let outs: Vec<String> = n.output.iter().map(|o| id(o).into_owned()).collect();
        if !outs.is_empty() {
            self.out.push_str(&outs.join(", "));
            self.out.push(' ');
        }
        self.out.push_str("= ");
        if !n.domain().is_empty() {
            let _ = write!(self.out, "{}.", n.domain());
        }
        self.out.push_str(n.op_type());
        if !n.overload().is_empty() {
            let _ = write!(self.out, ":{}", n.overload());
        }
        let mut attrs: Vec<&AttributeProto> = n.attribute.iter().collect();
        attrs.sort_by(|a, b| a.name().cmp(b.name()));
        let has_sub = attrs.iter().any(|a| a.g.is_some() || !a.graphs.is_empty());
        let attr_text = |p: &mut Self| {
            let parts: Vec<String> = attrs.iter().map(|a| p.attr_string(a, ind)).collect();
            format!(" <{}>", parts.join(", "))
        };
        if !attrs.is_empty() && !has_sub {
            let s = attr_text(self);
            self.out.push_str(&s);
        }
        let ins: Vec<String> = n.input.iter().map(|o| id(o).into_owned()).collect();
        let _ = write!(self.out, " ({})", ins.join(", "));
        if !attrs.is_empty() && has_sub {
            let s = attr_text(self);
            self.out.push_str(&s);
        }
        self.out.push('\n');
    }

    /// One attribute as `name: type = value`; subgraphs at indentation `ind`.
    fn attr_string(&mut self, a: &AttributeProto, ind: usize) -> String {
        let kind = attr_kind(a);
        let head = format!("{}: {} = ", id(a.name()), attr_type_name(kind));
        if let Some(r) = &a.ref_attr_name {
            return format!("{head}@{}", id(r));
        }
        use AttributeType as A;
        let list = |v: Vec<String>| format!("[{}]", v.join(", "));
        let val = match kind {
            A::Float => fmt_f32(a.f()),
            A::Int => a.i().to_string(),
            A::String => quote(a.s()),
            A::Tensor => self.tensor_const(&a.t.clone().unwrap_or_default()),
            A::Graph => self.sub_graph(&a.g.clone().unwrap_or_default(), ind),
            A::SparseTensor => self.sparse_str(&a.sparse_tensor.clone().unwrap_or_default()),
            A::TypeProto => type_str(&a.tp.clone().unwrap_or_default()),
            A::Floats => list(a.floats.iter().map(|&f| fmt_f32(f)).collect()),
            A::Ints => list(a.ints.iter().map(|i| i.to_string()).collect()),
            A::Strings => list(a.strings.iter().map(|s| quote(s)).collect()),
            A::Tensors => list(a.tensors.iter().map(|t| self.tensor_const(t)).collect()),
            A::Graphs => list(a.graphs.iter().map(|g| self.sub_graph(g, ind)).collect()),
            A::SparseTensors => list(
                a.sparse_tensors
                    .iter()
                    .map(|s| self.sparse_str(s))
                    .collect(),
            ),
            A::TypeProtos => list(a.type_protos.iter().map(type_str).collect()),
            A::Undefined => "[]".into(),
        };
        head + &val
    }

    fn sub_graph(&mut self, g: &GraphProto, ind: usize) -> String {
        let mut p = Printer {
            out: String::new(),
            opts: self.opts,
        };
        p.graph(&GView::from_proto(g), ind);
        p.out
    }

    /// A tensor constant as in attributes: `type [name] data`.
    fn tensor_const(&self, tp: &TensorProto) -> String {
        let t = Tensor::from_proto(tp.clone());
        let ty = tensor_type_str(t.dtype(), t.dims());
        if t.name().is_empty() {
            format!("{ty} {}", self.tensor_data(&t))
        } else {
            format!("{ty} {} {}", id(t.name()), self.tensor_data(&t))
        }
    }

    fn sparse_str(&self, sp: &SparseTensorProto) -> String {
        let dims: Vec<String> = sp.dims.iter().map(|d| d.to_string()).collect();
        let v = sp.values.clone().unwrap_or_default();
        let i = sp.indices.clone().unwrap_or_default();
        format!(
            "sparse([{}], {}, {})",
            dims.join(", "),
            self.tensor_const(&v),
            self.tensor_const(&i)
        )
    }

    /// `{v, …}`, the elided form, or ONNX's external-data list.
    fn tensor_data(&self, t: &Tensor) -> String {
        let p = t.proto();
        if t.external().is_none() && p.data_location == Some(DataLocation::External as i32) {
            return props_str(&p.external_data);
        }
        let n = t.len();
        if n <= self.opts.elide_above {
            if let Some(vals) = tensor_values(t) {
                return format!("{{{}}}", vals.join(", "));
            }
        }
        let hash = p
            .metadata_props
            .iter()
            .find(|e| e.key() == ELIDED_KEY)
            .map(|e| e.value().to_string())
            .unwrap_or_else(|| short_hash(t));
        format!(
            "{{... {n} element{}, hash {hash}}}",
            if n == 1 { "" } else { "s" }
        )
    }
}

fn opsets_str(ops: &[OperatorSetIdProto]) -> String {
    let v: Vec<String> = ops
        .iter()
        .map(|o| format!("{} : {}", quote(o.domain().as_bytes()), o.version()))
        .collect();
    format!("[{}]", v.join(", "))
}

fn props_str(props: &[StringStringEntryProto]) -> String {
    let v: Vec<String> = props
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                quote(e.key().as_bytes()),
                quote(e.value().as_bytes())
            )
        })
        .collect();
    format!("[{}]", v.join(", "))
}

// ====================================================================== parsing

struct Parser<'s> {
    src: &'s [u8],
    pos: usize,
}

/// A literal in a tensor's data.
enum Lit {
    Num(String, usize),
    Str(Vec<u8>, usize),
}

/// The data part of a tensor constant.
enum Data {
    Values(Vec<Lit>),
    Elided { count: u64, hash: String },
    External(Vec<StringStringEntryProto>),
}

/// A graph as parsed, with positions for the errors of IR building.
struct PGraph {
    name: String,
    inputs: Vec<(ValueInfoProto, usize)>,
    outputs: Vec<(ValueInfoProto, usize)>,
    items: Vec<PItem>,
    nodes: Vec<PNode>,
}

enum PItem {
    Dense(Box<TensorProto>, usize),
    Sparse(Box<SparseTensorProto>, usize),
    Info(ValueInfoProto, usize),
}

struct PNode {
    proto: NodeProto,
    pos: usize,
    in_pos: Vec<usize>,
    out_pos: Vec<usize>,
}

/// One attribute value before it is put into an `AttributeProto`.
enum Single {
    Int(i64),
    Float(f32),
    Str(Vec<u8>),
    Tensor(Box<TensorProto>),
    Graph(Box<GraphProto>),
    Sparse(Box<SparseTensorProto>),
    Type(TypeProto),
}

type PResult<T> = Result<T, ParseError>;

impl PGraph {
    fn into_proto(self) -> GraphProto {
        let mut gp = GraphProto {
            name: Some(self.name),
            ..Default::default()
        };
        gp.input = self.inputs.into_iter().map(|(v, _)| v).collect();
        gp.output = self.outputs.into_iter().map(|(v, _)| v).collect();
        for it in self.items {
            match it {
                PItem::Dense(t, _) => gp.initializer.push(*t),
                PItem::Sparse(s, _) => gp.sparse_initializer.push(*s),
                PItem::Info(v, _) => gp.value_info.push(v),
            }
        }
        gp.node = self.nodes.into_iter().map(|n| n.proto).collect();
        gp
    }
}

impl<'s> Parser<'s> {
    // ---------------------------------------------------------------- lexing

    fn loc(&self, pos: usize) -> (usize, usize) {
        let before = &self.src[..pos.min(self.src.len())];
        let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let col = before[start..]
            .iter()
            .filter(|&&c| (c & 0xc0) != 0x80)
            .count()
            + 1;
        (line, col)
    }

    fn err_at(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        let (line, col) = self.loc(pos);
        ParseError {
            line,
            col,
            msg: msg.into(),
        }
    }

    /// "expected X, found Y" at the next token.
    fn expected<T>(&mut self, what: &str) -> PResult<T> {
        self.ws();
        let found = self.found();
        Err(self.err_at(self.pos, format!("expected {what}, found {found}")))
    }

    fn found(&self) -> String {
        let rest = &self.src[self.pos..];
        match rest.first() {
            None => "end of input".into(),
            Some(b'"') => "a string".into(),
            Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => {
                let n = rest
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'.')
                    .count();
                format!("'{}'", String::from_utf8_lossy(&rest[..n]))
            }
            Some(_) => {
                let s = String::from_utf8_lossy(&rest[..rest.len().min(4)])
                    .chars()
                    .next()
                    .unwrap_or('?');
                format!("'{s}'")
            }
        }
    }

    fn at_line_start(&self, pos: usize) -> bool {
        self.src[..pos]
            .iter()
            .rev()
            .take_while(|&&c| c != b'\n')
            .all(|&c| c == b' ' || c == b'\t' || c == b'\r')
    }

    /// Skips whitespace and comment lines.
    fn ws(&mut self) {
        loop {
            while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.pos < self.src.len()
                && self.src[self.pos] == b'#'
                && self.at_line_start(self.pos)
            {
                while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            break;
        }
    }

    fn at_end(&mut self) -> bool {
        self.ws();
        self.pos >= self.src.len()
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.src.get(self.pos).copied()
    }

    fn peek_is_ident_start(&mut self) -> bool {
        matches!(self.peek(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> PResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.expected(&format!("'{}' {what}", c as char))
        }
    }

    fn peek_word(&mut self) -> Option<&'s str> {
        self.ws();
        let rest = &self.src[self.pos..];
        match rest.first() {
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
            _ => return None,
        }
        let n = rest
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        std::str::from_utf8(&rest[..n]).ok()
    }

    fn ident_opt(&mut self) -> Option<String> {
        let w = self.peek_word()?;
        self.pos += w.len();
        Some(w.to_string())
    }

    fn ident(&mut self, what: &str) -> PResult<String> {
        match self.ident_opt() {
            Some(s) => Ok(s),
            None => self.expected(what),
        }
    }

    fn string_lit(&mut self) -> PResult<Vec<u8>> {
        self.ws();
        let start = self.pos;
        if self.src.get(self.pos) != Some(&b'"') {
            return self.expected("a string");
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.src.get(self.pos) {
                None => {
                    return Err(self.err_at(start, "unterminated string: expected a closing '\"'"))
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.src.get(self.pos) {
                        None => {
                            return Err(
                                self.err_at(start, "unterminated string: expected a closing '\"'")
                            )
                        }
                        Some(&c) => out.push(c),
                    }
                    self.pos += 1;
                }
                Some(&c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn string(&mut self, what: &str) -> PResult<String> {
        if self.peek() != Some(b'"') {
            return self.expected(what);
        }
        Ok(String::from_utf8_lossy(&self.string_lit()?).into_owned())
    }

    fn quotable_id(&mut self, what: &str) -> PResult<String> {
        if self.peek() == Some(b'"') {
            return Ok(String::from_utf8_lossy(&self.string_lit()?).into_owned());
        }
        self.ident(what)
    }

    fn peek_is_quotable(&mut self) -> bool {
        self.peek() == Some(b'"') || self.peek_is_ident_start()
    }

    /// A number literal's text: `-?digits(.digits)?(e[+-]?digits)?` or
    /// `-?(nan|inf|infinity)`.
    fn number(&mut self, what: &str) -> PResult<(String, usize)> {
        self.ws();
        let start = self.pos;
        let s = self.src;
        let mut p = self.pos;
        if s.get(p) == Some(&b'-') {
            p += 1;
        }
        if s.get(p).is_some_and(|c| c.is_ascii_alphabetic()) {
            let n = s[p..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            let w = String::from_utf8_lossy(&s[p..p + n]).to_ascii_lowercase();
            if matches!(w.as_str(), "nan" | "inf" | "infinity") {
                self.pos = p + n;
                return Ok((
                    String::from_utf8_lossy(&s[start..self.pos]).into_owned(),
                    start,
                ));
            }
            return self.expected(what);
        }
        let digits = |p: &mut usize| {
            let b = *p;
            while s.get(*p).is_some_and(|c| c.is_ascii_digit()) {
                *p += 1;
            }
            *p > b
        };
        if !digits(&mut p) {
            return self.expected(what);
        }
        if s.get(p) == Some(&b'.') {
            p += 1;
            digits(&mut p);
        }
        if matches!(s.get(p), Some(b'e' | b'E')) {
            let mut q = p + 1;
            if matches!(s.get(q), Some(b'+' | b'-')) {
                q += 1;
            }
            if digits(&mut q) {
                p = q;
            }
        }
        self.pos = p;
        Ok((String::from_utf8_lossy(&s[start..p]).into_owned(), start))
    }

    fn int(&mut self, what: &str) -> PResult<i64> {
        let (t, at) = self.number(what)?;
        t.parse::<i64>()
            .map_err(|_| self.err_at(at, format!("expected {what}, found '{t}'")))
    }

    // ---------------------------------------------------------------- model

    fn model_header(&mut self) -> PResult<ModelProto> {
        let mut m = ModelProto::default();
        if !self.eat(b'<') {
            return Ok(m);
        }
        if self.eat(b'>') {
            return Ok(m);
        }
        loop {
            let at = {
                self.ws();
                self.pos
            };
            let key =
                self.ident("a model field name (ir_version, opset_import, producer_name, ...)")?;
            self.expect(b':', &format!("after '{key}'"))?;
            match key.as_str() {
                "ir_version" => m.ir_version = Some(self.int("an integer IR version")?),
                "opset_import" => m.opset_import = self.opsets()?,
                "producer_name" => m.producer_name = Some(self.string("a string producer name")?),
                "producer_version" => m.producer_version = Some(self.string("a string producer version")?),
                "domain" => m.domain = Some(self.string("a string domain")?),
                "model_version" => m.model_version = Some(self.int("an integer model version")?),
                "doc_string" => m.doc_string = Some(self.string("a string doc_string")?),
                "metadata_props" => m.metadata_props = self.props()?,
                _ => {
                    return Err(self.err_at(
                        at,
                        format!(
                            "unknown model field '{key}'; expected one of ir_version, opset_import, producer_name, \
                             producer_version, domain, model_version, doc_string, metadata_props"
                        ),
                    ))
                }
            }
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b'>', "to close the model header")?;
        Ok(m)
    }

    fn opsets(&mut self) -> PResult<Vec<OperatorSetIdProto>> {
        let mut v = Vec::new();
        self.expect(b'[', "to open the opset list")?;
        if self.eat(b']') {
            return Ok(v);
        }
        loop {
            let d = self.string("a quoted opset domain like \"\" or \"com.microsoft\"")?;
            self.expect(b':', "between opset domain and version")?;
            let ver = self.int("an integer opset version")?;
            v.push(OperatorSetIdProto {
                domain: Some(d),
                version: Some(ver),
            });
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b']', "to close the opset list")?;
        Ok(v)
    }

    fn props(&mut self) -> PResult<Vec<StringStringEntryProto>> {
        let mut v = Vec::new();
        self.expect(b'[', "to open the key/value list")?;
        if self.eat(b']') {
            return Ok(v);
        }
        loop {
            let k = self.string("a quoted key")?;
            self.expect(b':', "between key and value")?;
            let val = self.string("a quoted value")?;
            v.push(StringStringEntryProto {
                key: Some(k),
                value: Some(val),
            });
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b']', "to close the key/value list")?;
        Ok(v)
    }

    fn function(&mut self) -> PResult<FunctionProto> {
        let mut f = FunctionProto::default();
        if self.eat(b'<') && !self.eat(b'>') {
            loop {
                let at = {
                    self.ws();
                    self.pos
                };
                let key = self.ident("a function field name (domain, opset_import, ...)")?;
                self.expect(b':', &format!("after '{key}'"))?;
                match key.as_str() {
                    "domain" => f.domain = Some(self.string("a string domain")?),
                    "overload" => f.overload = Some(self.string("a string overload")?),
                    "doc_string" => f.doc_string = Some(self.string("a string doc_string")?),
                    "opset_import" => f.opset_import = self.opsets()?,
                    _ => {
                        return Err(self.err_at(
                            at,
                            format!("unknown function field '{key}'; expected domain, overload, doc_string or opset_import"),
                        ))
                    }
                }
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b'>', "to close the function header")?;
        }
        f.name = Some(self.quotable_id("a function name")?);
        if self.eat(b'<') && !self.eat(b'>') {
            loop {
                let name = self.quotable_id("an attribute name")?;
                if matches!(self.peek(), Some(b':' | b'=')) {
                    f.attribute_proto.push(self.attr_rest(name)?);
                } else {
                    f.attribute.push(name);
                }
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b'>', "to close the function's attribute list")?;
        }
        let (ins, mut vis) = self.fn_io()?;
        f.input = ins;
        self.arrow()?;
        let (outs, vis2) = self.fn_io()?;
        f.output = outs;
        vis.extend(vis2);
        if self.eat(b'<') && !self.eat(b'>') {
            loop {
                vis.push(self.value_info()?.0);
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b'>', "to close the function's value_info list")?;
        }
        f.value_info = vis;
        f.node = self
            .node_list("function")?
            .into_iter()
            .map(|n| n.proto)
            .collect();
        Ok(f)
    }

    fn fn_io(&mut self) -> PResult<(Vec<String>, Vec<ValueInfoProto>)> {
        let (mut names, mut vis) = (Vec::new(), Vec::new());
        self.expect(b'(', "to open a function's input or output list")?;
        if self.eat(b')') {
            return Ok((names, vis));
        }
        loop {
            let (vi, _) = self.value_info()?;
            names.push(vi.name().to_string());
            if vi.r#type.is_some() {
                vis.push(vi);
            }
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b')', "to close the list")?;
        Ok((names, vis))
    }

    fn arrow(&mut self) -> PResult<()> {
        self.ws();
        if self.src[self.pos..].starts_with(b"=>") {
            self.pos += 2;
            Ok(())
        } else {
            self.expected("'=>' between inputs and outputs")
        }
    }

    // ---------------------------------------------------------------- types

    fn next_is_type(&mut self) -> bool {
        match self.peek_word() {
            Some(w) => dtype_from_name(w).is_some() || KEYWORDS.contains(&w),
            None => false,
        }
    }

    fn prim_type(&mut self) -> PResult<i32> {
        self.ws();
        let at = self.pos;
        let w = self.ident("an element type like float or int64")?;
        if w == "undefined" {
            return Ok(0);
        }
        dtype_from_name(&w).ok_or_else(|| {
            self.err_at(
                at,
                format!("expected an element type like float or int64, found '{w}'"),
            )
        })
    }

    fn shape(&mut self) -> PResult<Option<TensorShapeProto>> {
        if !self.eat(b'[') {
            return Ok(Some(TensorShapeProto::default()));
        }
        if self.eat(b']') {
            return Ok(None);
        }
        let mut dims = Vec::new();
        loop {
            let value = if self.eat(b'?') {
                None
            } else if self.peek_is_quotable() {
                Some(dimension::Value::DimParam(self.quotable_id("a dimension")?))
            } else {
                let d = self.int("a dimension (integer, name or '?')")?;
                Some(dimension::Value::DimValue(d))
            };
            dims.push(Dimension {
                value,
                denotation: None,
            });
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b']', "to close the shape")?;
        Ok(Some(TensorShapeProto { dim: dims }))
    }

    fn ty(&mut self) -> PResult<TypeProto> {
        self.ws();
        let w = self.peek_word().unwrap_or("");
        let boxed = |p: &mut Self, close: bool| -> PResult<Option<Box<TypeProto>>> {
            let t = if close && p.peek() == Some(b')') {
                None
            } else {
                Some(Box::new(p.ty()?))
            };
            Ok(t)
        };
        let value = match w {
            "seq" | "optional" => {
                self.pos += w.len();
                self.expect(b'(', &format!("after '{w}'"))?;
                let elem = boxed(self, true)?;
                self.expect(b')', &format!("to close '{w}('"))?;
                if w == "seq" {
                    TypeValue::SequenceType(Box::new(type_proto::Sequence { elem_type: elem }))
                } else {
                    TypeValue::OptionalType(Box::new(type_proto::Optional { elem_type: elem }))
                }
            }
            "map" => {
                self.pos += w.len();
                self.expect(b'(', "after 'map'")?;
                let k = self.prim_type()?;
                self.expect(b',', "after the map key type")?;
                let v = boxed(self, false)?;
                self.expect(b')', "to close 'map('")?;
                TypeValue::MapType(Box::new(type_proto::Map {
                    key_type: Some(k),
                    value_type: v,
                }))
            }
            "sparse_tensor" => {
                self.pos += w.len();
                self.expect(b'(', "after 'sparse_tensor'")?;
                let e = self.prim_type()?;
                let shape = self.shape()?;
                self.expect(b')', "to close 'sparse_tensor('")?;
                TypeValue::SparseTensorType(type_proto::SparseTensor {
                    elem_type: Some(e),
                    shape,
                })
            }
            "opaque" => {
                self.pos += w.len();
                self.expect(b'(', "after 'opaque'")?;
                let mut parts = Vec::new();
                while self.peek_is_ident_start() {
                    let mut q = self.ident("a name")?;
                    while self.eat(b'.') {
                        q.push('.');
                        q.push_str(&self.ident("a name after '.'")?);
                    }
                    parts.push(q);
                    if !self.eat(b',') {
                        break;
                    }
                }
                self.expect(b')', "to close 'opaque('")?;
                let (domain, name) = match parts.len() {
                    0 => (None, None),
                    1 => (None, parts.pop()),
                    _ => (Some(parts[0].clone()), Some(parts[1].clone())),
                };
                TypeValue::OpaqueType(type_proto::Opaque { domain, name })
            }
            _ => {
                let e = self.prim_type()?;
                let shape = self.shape()?;
                TypeValue::TensorType(type_proto::Tensor {
                    elem_type: Some(e),
                    shape,
                })
            }
        };
        Ok(TypeProto {
            value: Some(value),
            denotation: None,
        })
    }

    fn value_info(&mut self) -> PResult<(ValueInfoProto, usize)> {
        let r#type = if self.next_is_type() {
            Some(self.ty()?)
        } else {
            None
        };
        self.ws();
        let at = self.pos;
        let name = self.quotable_id("a value name")?;
        Ok((
            ValueInfoProto {
                name: Some(name),
                r#type,
                ..Default::default()
            },
            at,
        ))
    }

    // ---------------------------------------------------------------- tensors

    fn data(&mut self) -> PResult<Data> {
        self.ws();
        if self.peek() == Some(b'[') {
            return Ok(Data::External(self.props()?));
        }
        self.expect(b'{', "to open the tensor's values")?;
        self.ws();
        if self.src[self.pos..].starts_with(b"...") {
            self.pos += 3;
            let (t, at) = self.number("the element count of an elided tensor")?;
            let count = t
                .parse::<u64>()
                .map_err(|_| self.err_at(at, format!("bad element count '{t}'")))?;
            let w = self.ident("'elements'")?;
            if w != "elements" && w != "element" {
                return Err(self.err_at(
                    self.pos - w.len(),
                    format!("expected 'elements', found '{w}'"),
                ));
            }
            self.expect(b',', "before the hash of an elided tensor")?;
            let h = self.ident("'hash'")?;
            if h != "hash" {
                return Err(
                    self.err_at(self.pos - h.len(), format!("expected 'hash', found '{h}'"))
                );
            }
            self.ws();
            let n = self.src[self.pos..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count();
            if n == 0 {
                return self.expected("a hex content hash");
            }
            let hash = String::from_utf8_lossy(&self.src[self.pos..self.pos + n]).into_owned();
            self.pos += n;
            self.expect(b'}', "to close the elided tensor")?;
            return Ok(Data::Elided { count, hash });
        }
        let mut vals = Vec::new();
        if self.eat(b'}') {
            return Ok(Data::Values(vals));
        }
        loop {
            self.ws();
            let at = self.pos;
            if self.peek() == Some(b'"') {
                vals.push(Lit::Str(self.string_lit()?, at));
            } else {
                let (t, at) = self.number("a number, a string or '...'")?;
                vals.push(Lit::Num(t, at));
            }
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b'}', "to close the tensor's values")?;
        Ok(Data::Values(vals))
    }

    /// Builds a tensor proto of type `ty` named `name` from parsed data.
    fn make_tensor(
        &self,
        name: &str,
        ty: &TypeProto,
        data: Data,
        at: usize,
    ) -> PResult<TensorProto> {
        let Some(TypeValue::TensorType(tt)) = &ty.value else {
            return Err(self.err_at(
                at,
                format!("tensor '{name}' needs a tensor type like float[2,3]"),
            ));
        };
        let dtype = tt.elem_type();
        let Some(shape) = &tt.shape else {
            return Err(self.err_at(
                at,
                format!("tensor '{name}' needs a known shape; '[]' means unknown rank"),
            ));
        };
        let mut dims = Vec::new();
        for d in &shape.dim {
            match &d.value {
                Some(dimension::Value::DimValue(v)) if *v >= 0 => dims.push(*v),
                _ => {
                    return Err(self.err_at(
                        at,
                        format!(
                            "tensor '{name}' needs numeric dimensions, found '{}'",
                            shape_str(Some(shape))
                        ),
                    ))
                }
            }
        }
        let n = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| self.err_at(at, format!("tensor '{name}': element count overflows")))?;
        let mut tp = TensorProto {
            name: (!name.is_empty()).then(|| name.to_string()),
            data_type: Some(dtype),
            dims: dims.clone(),
            ..Default::default()
        };
        let is_string = dtype == DataType::String as i32;
        match data {
            Data::External(entries) => {
                tp.external_data = entries;
                tp.data_location = Some(DataLocation::External as i32);
            }
            Data::Elided { count, hash } => {
                if count != n {
                    return Err(self.err_at(
                        at,
                        format!("tensor '{name}' has shape {dims:?} ({n} elements) but its elided data says {count}"),
                    ));
                }
                if is_string {
                    tp.string_data = vec![Bytes::new(); n as usize];
                } else {
                    let bits = dtype_bits(dtype).ok_or_else(|| {
                        self.err_at(at, format!("tensor '{name}' has no element type"))
                    })?;
                    tp.raw_data = Some(Bytes::from(vec![0u8; (n as usize * bits).div_ceil(8)]));
                }
                tp.metadata_props.push(StringStringEntryProto {
                    key: Some(ELIDED_KEY.into()),
                    value: Some(hash),
                });
            }
            Data::Values(vals) => {
                let per = if matches!(
                    DataType::try_from(dtype),
                    Ok(DataType::Complex64 | DataType::Complex128)
                ) {
                    2
                } else {
                    1
                };
                if vals.len() as u64 != n * per {
                    return Err(self.err_at(
                        at,
                        format!(
                            "tensor '{name}' has shape {dims:?} ({n} elements) but {} values are given",
                            vals.len() as u64 / per
                        ),
                    ));
                }
                if is_string {
                    for v in vals {
                        match v {
                            Lit::Str(s, _) => tp.string_data.push(Bytes::from(s)),
                            Lit::Num(t, p) => {
                                return Err(self.err_at(
                                    p,
                                    format!("expected a string in tensor '{name}', found {t}"),
                                ))
                            }
                        }
                    }
                } else {
                    tp.raw_data = Some(Bytes::from(self.encode(dtype, name, &vals)?));
                }
            }
        }
        Ok(tp)
    }

    /// Packs literals into little-endian raw data of `dtype`.
    fn encode(&self, dtype: i32, name: &str, vals: &[Lit]) -> PResult<Vec<u8>> {
        use DataType::*;
        let dt = DataType::try_from(dtype)
            .ok()
            .filter(|d| *d != Undefined)
            .ok_or_else(|| {
                self.err_at(
                    vals.first().map(lit_pos).unwrap_or(0),
                    format!("tensor '{name}' has no element type"),
                )
            })?;
        let num = |l: &Lit| -> PResult<(std::string::String, usize)> {
            match l {
                Lit::Num(t, p) => Ok((t.clone(), *p)),
                Lit::Str(_, p) => Err(self.err_at(
                    *p,
                    format!("expected a number in tensor '{name}', found a string"),
                )),
            }
        };
        let float = |l: &Lit| -> PResult<f64> {
            let (t, p) = num(l)?;
            parse_float(&t).ok_or_else(|| self.err_at(p, format!("bad number '{t}'")))
        };
        let int = |l: &Lit, lo: i128, hi: i128| -> PResult<i128> {
            let (t, p) = num(l)?;
            let v: i128 = t.parse().map_err(|_| {
                self.err_at(
                    p,
                    format!(
                        "expected an integer for {} tensor '{name}', found '{t}'",
                        dtype_name(dtype)
                    ),
                )
            })?;
            if v < lo || v > hi {
                return Err(self.err_at(
                    p,
                    format!(
                        "value {v} is out of range for {} tensor '{name}'",
                        dtype_name(dtype)
                    ),
                ));
            }
            Ok(v)
        };
        let mut out = Vec::new();
        let mut nibbles: Vec<u8> = Vec::new();
        for l in vals {
            match dt {
                Float | Complex64 => {
                    let (t, p) = num(l)?;
                    let v: f32 =
                        parse_f32(&t).ok_or_else(|| self.err_at(p, format!("bad number '{t}'")))?;
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Double | Complex128 => out.extend_from_slice(&float(l)?.to_le_bytes()),
                Float16 | Bfloat16 => {
                    let (t, p) = num(l)?;
                    let bits = if is_float_text(&t) {
                        let v = parse_f32(&t)
                            .ok_or_else(|| self.err_at(p, format!("bad number '{t}'")))?;
                        if dt == Float16 {
                            half::f16::from_f32(v).to_bits()
                        } else {
                            half::bf16::from_f32(v).to_bits()
                        }
                    } else {
                        int(l, 0, u16::MAX as i128)? as u16
                    };
                    out.extend_from_slice(&bits.to_le_bytes());
                }
                Uint16 => {
                    out.extend_from_slice(&(int(l, 0, u16::MAX as i128)? as u16).to_le_bytes())
                }
                Int16 => out.extend_from_slice(
                    &(int(l, i16::MIN as i128, i16::MAX as i128)? as i16).to_le_bytes(),
                ),
                Int8 => out.push(int(l, -128, 127)? as i8 as u8),
                Uint8 | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
                | Float8e8m0 => out.push(int(l, 0, 255)? as u8),
                Bool => out.push(int(l, 0, 1)? as u8),
                Int32 => out.extend_from_slice(
                    &(int(l, i32::MIN as i128, i32::MAX as i128)? as i32).to_le_bytes(),
                ),
                Uint32 => {
                    out.extend_from_slice(&(int(l, 0, u32::MAX as i128)? as u32).to_le_bytes())
                }
                Int64 => out.extend_from_slice(
                    &(int(l, i64::MIN as i128, i64::MAX as i128)? as i64).to_le_bytes(),
                ),
                Uint64 => {
                    out.extend_from_slice(&(int(l, 0, u64::MAX as i128)? as u64).to_le_bytes())
                }
                Int4 => nibbles.push((int(l, -8, 7)? as i8 as u8) & 0xf),
                Uint4 | Float4e2m1 => nibbles.push(int(l, 0, 15)? as u8),
                Int2 => nibbles.push((int(l, -2, 1)? as i8 as u8) & 0x3),
                Uint2 => nibbles.push(int(l, 0, 3)? as u8),
                String | Undefined => {}
            }
        }
        match dt {
            Int4 | Uint4 | Float4e2m1 => {
                out = nibbles
                    .chunks(2)
                    .map(|c| c[0] | c.get(1).map(|h| h << 4).unwrap_or(0))
                    .collect();
            }
            Int2 | Uint2 => {
                out = nibbles
                    .chunks(4)
                    .map(|c| {
                        c.iter()
                            .enumerate()
                            .fold(0u8, |acc, (i, v)| acc | (v << (2 * i)))
                    })
                    .collect();
            }
            _ => {}
        }
        Ok(out)
    }

    /// `type [name] ['='] data`, as in attribute values and sparse parts.
    fn tensor_const(&mut self) -> PResult<TensorProto> {
        self.ws();
        let at = self.pos;
        let ty = self.ty()?;
        self.tensor_const_rest(ty, at)
    }

    fn tensor_const_rest(&mut self, ty: TypeProto, at: usize) -> PResult<TensorProto> {
        let name = if self.peek_is_quotable() {
            self.quotable_id("a tensor name")?
        } else {
            String::new()
        };
        self.eat(b'=');
        let data = self.data()?;
        self.make_tensor(&name, &ty, data, at)
    }

    /// `sparse([dims], values, indices)`.
    fn sparse(&mut self) -> PResult<SparseTensorProto> {
        let w = self.ident("'sparse'")?;
        if w != "sparse" {
            return Err(self.err_at(
                self.pos - w.len(),
                format!("expected 'sparse(', found '{w}'"),
            ));
        }
        self.expect(b'(', "after 'sparse'")?;
        self.expect(b'[', "to open the sparse tensor's dimensions")?;
        let mut dims = Vec::new();
        if !self.eat(b']') {
            loop {
                dims.push(self.int("an integer dimension")?);
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b']', "to close the dimensions")?;
        }
        self.expect(b',', "after the dimensions")?;
        let values = self.tensor_const()?;
        self.expect(b',', "after the values tensor")?;
        let indices = self.tensor_const()?;
        self.expect(b')', "to close 'sparse('")?;
        Ok(SparseTensorProto {
            values: Some(values),
            indices: Some(indices),
            dims,
        })
    }

    // ---------------------------------------------------------------- graphs

    fn graph(&mut self) -> PResult<PGraph> {
        let name = self.quotable_id("a graph name")?;
        let mut g = PGraph {
            name,
            inputs: vec![],
            outputs: vec![],
            items: vec![],
            nodes: vec![],
        };
        self.expect(
            b'(',
            &format!("to open the input list of graph '{}'", g.name),
        )?;
        if !self.eat(b')') {
            loop {
                let (vi, at) = self.value_info()?;
                if self.eat(b'=') {
                    let ty = vi.r#type.clone().unwrap_or_default();
                    let data = self.data()?;
                    g.items.push(PItem::Dense(
                        Box::new(self.make_tensor(vi.name(), &ty, data, at)?),
                        at,
                    ));
                }
                g.inputs.push((vi, at));
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b')', "to close the input list")?;
        }
        self.arrow()?;
        self.expect(
            b'(',
            &format!("to open the output list of graph '{}'", g.name),
        )?;
        if !self.eat(b')') {
            loop {
                g.outputs.push(self.value_info()?);
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b')', "to close the output list")?;
        }
        if self.eat(b'<') && !self.eat(b'>') {
            loop {
                let (vi, at) = self.value_info()?;
                if self.eat(b'=') {
                    let ty = vi.r#type.clone().unwrap_or_default();
                    if matches!(ty.value, Some(TypeValue::SparseTensorType(_))) {
                        g.items.push(PItem::Sparse(Box::new(self.sparse()?), at));
                    } else {
                        let data = self.data()?;
                        g.items.push(PItem::Dense(
                            Box::new(self.make_tensor(vi.name(), &ty, data, at)?),
                            at,
                        ));
                    }
                } else {
                    g.items.push(PItem::Info(vi, at));
                }
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b'>', "to close the initializer/value_info list")?;
        }
        let what = format!("graph '{}'", g.name);
        g.nodes = self.node_list(&what)?;
        Ok(g)
    }

    fn node_list(&mut self, what: &str) -> PResult<Vec<PNode>> {
        self.expect(b'{', &format!("to open the node list of {what}"))?;
        let mut nodes = Vec::new();
        while !self.eat(b'}') {
            if self.at_end() {
                return self.expected(&format!("a node or '}}' closing {what}"));
            }
            nodes.push(self.node()?);
        }
        Ok(nodes)
    }

    /// Names separated by commas up to `close` (not consumed); an empty
    /// entry (`""` or nothing between commas) is an omitted operand.
    fn id_list(&mut self, close: u8) -> PResult<(Vec<String>, Vec<usize>)> {
        let (mut ids, mut pos) = (Vec::new(), Vec::new());
        if self.peek() == Some(close) {
            return Ok((ids, pos));
        }
        loop {
            self.ws();
            pos.push(self.pos);
            if matches!(self.peek(), Some(c) if c == b',' || c == close) {
                ids.push(String::new());
            } else {
                ids.push(self.quotable_id("a value name")?);
            }
            if !self.eat(b',') || self.peek() == Some(close) {
                break;
            }
        }
        Ok((ids, pos))
    }

    fn node(&mut self) -> PResult<PNode> {
        self.ws();
        let pos = self.pos;
        let mut np = NodeProto::default();
        if self.eat(b'[') {
            if self.peek() != Some(b']') {
                np.name = Some(self.quotable_id("a node name")?);
            }
            self.expect(b']', "to close the node name")?;
        }
        let (outs, out_pos) = self.id_list(b'=')?;
        if self.peek() != Some(b'=') {
            return self.expected("'=' after the node's outputs");
        }
        self.pos += 1;
        self.ws();
        let op_at = self.pos;
        let mut parts = vec![self.ident("an operator name after '='")?];
        while self.eat(b'.') {
            parts.push(self.ident("an operator name after '.'")?);
        }
        let op = parts.pop().unwrap_or_default();
        if op.is_empty() {
            return Err(self.err_at(op_at, "expected an operator name"));
        }
        np.op_type = Some(op.clone());
        if !parts.is_empty() {
            np.domain = Some(parts.join("."));
        }
        if self.eat(b':') {
            np.overload = Some(self.ident("an overload name after ':'")?);
        }
        if self.peek() == Some(b'<') {
            np.attribute = self.attr_list()?;
        }
        self.expect(b'(', &format!("to open the input list of {op}"))?;
        let (ins, in_pos) = self.id_list(b')')?;
        self.expect(b')', &format!("to close the input list of {op}"))?;
        if np.attribute.is_empty() && self.peek() == Some(b'<') {
            np.attribute = self.attr_list()?;
        }
        np.input = ins;
        np.output = outs;
        Ok(PNode {
            proto: np,
            pos,
            in_pos,
            out_pos,
        })
    }

    fn attr_list(&mut self) -> PResult<Vec<AttributeProto>> {
        self.expect(b'<', "to open the attribute list")?;
        let mut v: Vec<AttributeProto> = Vec::new();
        if self.eat(b'>') {
            return Ok(v);
        }
        loop {
            self.ws();
            let at = self.pos;
            let name = self.quotable_id("an attribute name")?;
            if v.iter().any(|a| a.name() == name) {
                return Err(self.err_at(at, format!("attribute '{name}' is given twice")));
            }
            v.push(self.attr_rest(name)?);
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b'>', "to close the attribute list")?;
        Ok(v)
    }

    /// After an attribute's name: `[: type] = value`.
    fn attr_rest(&mut self, name: String) -> PResult<AttributeProto> {
        use AttributeType as A;
        let mut a = AttributeProto {
            name: Some(name.clone()),
            ..Default::default()
        };
        let mut declared = A::Undefined;
        if self.eat(b':') {
            self.ws();
            let at = self.pos;
            let t = self.ident("an attribute type (int, float, string, ints, ...)")?;
            declared = ATTR_TYPES.iter().find(|(n, _)| *n == t).map(|(_, k)| *k).ok_or_else(|| {
                self.err_at(at, format!("unknown attribute type '{t}'; expected int, float, string, tensor, graph, type_proto, sparse_tensor or a plural of these"))
            })?;
        }
        self.expect(b'=', &format!("after attribute '{name}'"))?;
        if self.eat(b'@') {
            a.ref_attr_name = Some(self.quotable_id("a referenced attribute name")?);
            if declared != A::Undefined {
                a.r#type = Some(declared as i32);
            }
            return Ok(a);
        }
        let singular = match declared {
            A::Floats => A::Float,
            A::Ints => A::Int,
            A::Strings => A::String,
            A::Tensors => A::Tensor,
            A::Graphs => A::Graph,
            A::SparseTensors => A::SparseTensor,
            A::TypeProtos => A::TypeProto,
            k => k,
        };
        let is_list_type = singular != declared;
        self.ws();
        let at = self.pos;
        if self.eat(b'[') {
            if declared != A::Undefined && !is_list_type {
                return Err(self.err_at(
                    at,
                    format!(
                        "attribute '{name}' is declared {} but given a list",
                        attr_type_name(declared)
                    ),
                ));
            }
            let mut items = Vec::new();
            if !self.eat(b']') {
                loop {
                    self.ws();
                    let p = self.pos;
                    items.push((self.single(singular, &name)?, p));
                    if !self.eat(b',') {
                        break;
                    }
                }
                self.expect(b']', &format!("to close the list of attribute '{name}'"))?;
            }
            let kind = if declared != A::Undefined {
                declared
            } else if items.iter().any(|(s, _)| matches!(s, Single::Float(_))) {
                A::Floats
            } else {
                match items.first() {
                    None => {
                        return Err(self.err_at(
                            at,
                            format!("empty list for attribute '{name}' needs a type, e.g. '{name}: ints = []'"),
                        ))
                    }
                    Some((Single::Int(_), _)) => A::Ints,
                    Some((Single::Float(_), _)) => A::Floats,
                    Some((Single::Str(_), _)) => A::Strings,
                    Some((Single::Tensor(_), _)) => A::Tensors,
                    Some((Single::Graph(_), _)) => A::Graphs,
                    Some((Single::Sparse(_), _)) => A::SparseTensors,
                    Some((Single::Type(_), _)) => A::TypeProtos,
                }
            };
            a.r#type = Some(kind as i32);
            for (s, p) in items {
                match (kind, s) {
                    (A::Ints, Single::Int(i)) => a.ints.push(i),
                    (A::Floats, Single::Float(f)) => a.floats.push(f),
                    (A::Floats, Single::Int(i)) => a.floats.push(i as f32),
                    (A::Strings, Single::Str(s)) => a.strings.push(Bytes::from(s)),
                    (A::Tensors, Single::Tensor(t)) => a.tensors.push(*t),
                    (A::Graphs, Single::Graph(g)) => a.graphs.push(*g),
                    (A::SparseTensors, Single::Sparse(s)) => a.sparse_tensors.push(*s),
                    (A::TypeProtos, Single::Type(t)) => a.type_protos.push(t),
                    (k, s) => {
                        return Err(self.err_at(
                            p,
                            format!(
                                "attribute '{name}' is a list of {} but this item is {}",
                                attr_type_name(k),
                                single_kind(&s)
                            ),
                        ))
                    }
                }
            }
            return Ok(a);
        }
        if is_list_type {
            return Err(self.err_at(
                at,
                format!("attribute '{name}' is declared {} but given a single value; write it as [value]", attr_type_name(declared)),
            ));
        }
        let s = self.single(declared, &name)?;
        let kind = match (&s, declared) {
            (Single::Int(_), A::Float) => A::Float,
            (Single::Int(_), _) => A::Int,
            (Single::Float(_), _) => A::Float,
            (Single::Str(_), _) => A::String,
            (Single::Tensor(_), _) => A::Tensor,
            (Single::Graph(_), _) => A::Graph,
            (Single::Sparse(_), _) => A::SparseTensor,
            (Single::Type(_), _) => A::TypeProto,
        };
        if declared != A::Undefined && declared != kind {
            return Err(self.err_at(
                at,
                format!(
                    "attribute '{name}' is declared {} but its value is {}",
                    attr_type_name(declared),
                    single_kind(&s)
                ),
            ));
        }
        a.r#type = Some(kind as i32);
        match s {
            Single::Int(i) if kind == A::Float => a.f = Some(i as f32),
            Single::Int(i) => a.i = Some(i),
            Single::Float(f) => a.f = Some(f),
            Single::Str(s) => a.s = Some(Bytes::from(s)),
            Single::Tensor(t) => a.t = Some(*t),
            Single::Graph(g) => a.g = Some(*g),
            Single::Sparse(s) => a.sparse_tensor = Some(*s),
            Single::Type(t) => a.tp = Some(t),
        }
        Ok(a)
    }

    /// One attribute value; `expected` (possibly undefined) resolves the
    /// ambiguous cases (a quoted graph name, `sparse(…)`).
    fn single(&mut self, expected: AttributeType, attr: &str) -> PResult<Single> {
        use AttributeType as A;
        self.ws();
        let at = self.pos;
        match self.peek() {
            Some(b'"') if expected == A::Graph => {
                Ok(Single::Graph(Box::new(self.graph()?.into_proto())))
            }
            Some(b'"') => Ok(Single::Str(self.string_lit()?)),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let (t, p) = self.number("a number")?;
                if is_float_text(&t) {
                    parse_f32(&t)
                        .map(Single::Float)
                        .ok_or_else(|| self.err_at(p, format!("bad number '{t}'")))
                } else {
                    t.parse::<i64>().map(Single::Int).map_err(|_| {
                        self.err_at(p, format!("integer '{t}' does not fit in 64 bits"))
                    })
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let w = self.peek_word().unwrap_or("");
                if expected == A::SparseTensor && w == "sparse" {
                    return Ok(Single::Sparse(Box::new(self.sparse()?)));
                }
                if self.next_is_type() {
                    let ty = self.ty()?;
                    if matches!(self.peek(), Some(b'{' | b'=' | b'"')) || self.peek_is_ident_start()
                    {
                        return Ok(Single::Tensor(Box::new(self.tensor_const_rest(ty, at)?)));
                    }
                    return Ok(Single::Type(ty));
                }
                if matches!(w.to_ascii_lowercase().as_str(), "nan" | "inf" | "infinity") {
                    let (t, p) = self.number("a number")?;
                    return parse_f32(&t)
                        .map(Single::Float)
                        .ok_or_else(|| self.err_at(p, format!("bad number '{t}'")));
                }
                Ok(Single::Graph(Box::new(self.graph()?.into_proto())))
            }
            _ => self.expected(&format!("a value for attribute '{attr}'")),
        }
    }
}

fn lit_pos(l: &Lit) -> usize {
    match l {
        Lit::Num(_, p) | Lit::Str(_, p) => *p,
    }
}

fn single_kind(s: &Single) -> &'static str {
    match s {
        Single::Int(_) => "an int",
        Single::Float(_) => "a float",
        Single::Str(_) => "a string",
        Single::Tensor(_) => "a tensor",
        Single::Graph(_) => "a graph",
        Single::Sparse(_) => "a sparse tensor",
        Single::Type(_) => "a type",
    }
}

fn is_float_text(t: &str) -> bool {
    t.contains(['.', 'e', 'E']) || t.bytes().any(|c| c.is_ascii_alphabetic())
}

fn parse_float(t: &str) -> Option<f64> {
    let l = t.to_ascii_lowercase();
    let (neg, body) = match l.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, l.as_str()),
    };
    let v = match body {
        "nan" => f64::NAN,
        "inf" | "infinity" => f64::INFINITY,
        _ => body.parse::<f64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// Parses an f32 directly (not via f64, which could double-round).
fn parse_f32(t: &str) -> Option<f32> {
    let l = t.to_ascii_lowercase();
    let (neg, body) = match l.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, l.as_str()),
    };
    let v = match body {
        "nan" => f32::NAN,
        "inf" | "infinity" => f32::INFINITY,
        _ => body.parse::<f32>().ok()?,
    };
    Some(if neg { -v } else { v })
}

// ================================================================ building the IR

/// Builds the main graph through the graph API, with import's checks:
/// every name defined once, every operand and output defined, no cycle.
fn build_graph(p: &Parser<'_>, pg: PGraph) -> PResult<Graph> {
    let mut g = Graph::new();
    let mut defined: HashMap<String, usize> = HashMap::new();
    let define = |defined: &mut HashMap<String, usize>, name: &str, at: usize| -> PResult<()> {
        if let Some(&first) = defined.get(name) {
            let (l, c) = p.loc(first);
            return Err(p.err_at(at, format!("name '{name}' is defined twice (first at {l}:{c}); every value must have one producer")));
        }
        defined.insert(name.to_string(), at);
        Ok(())
    };
    let mut infos = Vec::new();
    for it in pg.items {
        match it {
            PItem::Dense(tp, at) => {
                define(&mut defined, tp.name(), at)?;
                let t = Tensor::from_proto(*tp);
                if t.external().is_none()
                    && t.proto().data_location != Some(DataLocation::External as i32)
                {
                    t.validate().map_err(|e| p.err_at(at, e.to_string()))?;
                }
                g.add_initializer(t);
            }
            PItem::Sparse(sp, at) => {
                let name = sp
                    .values
                    .as_ref()
                    .map(|v| v.name().to_string())
                    .unwrap_or_default();
                define(&mut defined, &name, at)?;
                g.add_sparse_initializer(*sp);
            }
            PItem::Info(vi, at) => infos.push((vi, at)),
        }
    }
    let mut seen_inputs = BTreeSet::new();
    for (vi, at) in pg.inputs {
        let name = vi.name().to_string();
        if !seen_inputs.insert(name.clone()) {
            return Err(p.err_at(at, format!("graph input '{name}' is listed twice")));
        }
        let is_init = g.lookup(&name).is_some_and(|v| {
            matches!(
                g.producer_node(v).kind,
                NodeKind::Initializer(_) | NodeKind::SparseInitializer(_)
            )
        });
        if is_init {
            let v = g.lookup(&name).expect("invariant: just looked up");
            g.push_input_port(v, vi);
        } else {
            define(&mut defined, &name, at)?;
            g.add_input(vi);
        }
    }
    let mut pending = Vec::new();
    let mut node_pos: HashMap<super::NodeId, usize> = HashMap::new();
    for mut n in pg.nodes {
        let outputs = std::mem::take(&mut n.proto.output);
        let inputs = std::mem::take(&mut n.proto.input);
        for (o, &at) in outputs.iter().zip(&n.out_pos) {
            if !o.is_empty() {
                define(&mut defined, o, at)?;
            }
        }
        let free = crate::onnx::import::subgraph_free_names(&n.proto);
        let outs: Vec<Option<String>> = outputs
            .into_iter()
            .map(|o| (!o.is_empty()).then_some(o))
            .collect();
        let op = n.proto.op_type().to_string();
        let id = g.import_op(n.proto, &outs);
        node_pos.insert(id, n.pos);
        pending.push((id, op, inputs, n.in_pos, free, n.pos));
    }
    for (id, op, inputs, in_pos, free, at) in pending {
        for (slot, (name, &ip)) in inputs.iter().zip(&in_pos).enumerate() {
            let v = if name.is_empty() {
                None
            } else {
                Some(g.lookup(name).ok_or_else(|| {
                    p.err_at(ip, format!("undefined value '{name}': no node, input or initializer defines it (read by {op})"))
                })?)
            };
            g.set_input(id, slot, v);
        }
        for name in free {
            let v = g.lookup(&name).ok_or_else(|| {
                p.err_at(at, format!("undefined value '{name}': read inside a subgraph of {op}, but nothing defines it"))
            })?;
            g.add_implicit_input(id, v);
        }
    }
    let mut orphans = Vec::new();
    for (i, (vi, _)) in infos.into_iter().enumerate() {
        match g.lookup(vi.name()) {
            Some(v) if g.value(v).info.is_none() => g.value_mut(v).info = Some((i as u64, vi)),
            _ => orphans.push(vi),
        }
    }
    for (vi, at) in pg.outputs {
        let v = g.lookup(vi.name()).ok_or_else(|| {
            p.err_at(at, format!("undefined value '{}': graph output is not produced by any node, input or initializer", vi.name()))
        })?;
        g.push_output(v, vi);
    }
    g.shell.name = Some(pg.name);
    g.shell.value_info = orphans;
    if let Err(cycle) = g.try_topo_order() {
        let names: Vec<String> = cycle
            .iter()
            .filter_map(|&n| {
                g.node(n).op().map(|o| {
                    if o.name().is_empty() {
                        o.op_type().to_string()
                    } else {
                        o.name().to_string()
                    }
                })
            })
            .take(6)
            .collect();
        let at = cycle
            .iter()
            .filter_map(|n| node_pos.get(n))
            .min()
            .copied()
            .unwrap_or(0);
        return Err(p.err_at(
            at,
            format!(
                "the graph has a cycle; nodes on it or after it: {}",
                names.join(", ")
            ),
        ));
    }
    Ok(g)
}
