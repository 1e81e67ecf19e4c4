//! The printer: IR (and the protos subgraphs and functions are kept as) to
//! text. See the module docs of [`super`] for what it guarantees.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::lex::{attr_type_name, KEYWORDS};
use super::{PrintOptions, ELIDED_KEY};
use crate::ir::graph::Graph;
use crate::ir::tensor::Tensor;
use crate::ir::{Model, NodeKind, ValueId};
use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::tensor_shape_proto::dimension;
use crate::proto::type_proto::Value as TypeValue;
use crate::proto::{
    dtype_bits, dtype_from_name, dtype_name, AttributeProto, FunctionProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, SparseTensorProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// A model: header, main graph, then functions.
pub(super) fn model(m: &Model, opts: &PrintOptions) -> String {
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

/// The main graph alone (no model header).
pub(super) fn main_graph(g: &Graph, opts: &PrintOptions) -> String {
    let mut p = Printer {
        out: String::new(),
        opts,
    };
    p.graph(&GView::from_ir(g), 0);
    p.out.push('\n');
    p.out
}

/// One op node of `g` as its printed line.
pub(super) fn node_line(g: &Graph, n: crate::ir::NodeId, opts: &PrintOptions) -> String {
    let mut p = Printer {
        out: String::new(),
        opts,
    };
    let node = g.node(n);
    match node.op() {
        Some(proto) => {
            let mut np = proto.clone();
            let nm = |v: &Option<ValueId>| v.map(|v| g.name(v).to_string()).unwrap_or_default();
            np.input = node.inputs().iter().map(nm).collect();
            np.output = node.outputs().iter().map(nm).collect();
            p.node(&np, 0);
        }
        None => p
            .out
            .push_str(&format!("{} (graph input or initializer)\n", node.label())),
    }
    p.out
}

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
            match g.node(n).kind() {
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
                let nm = |v: &Option<ValueId>| v.map(|v| g.name(v).to_string()).unwrap_or_default();
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

pub(super) fn shape_str(shape: Option<&TensorShapeProto>) -> String {
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
