//! The parser: recursive descent over the [`Lexer`], producing the parsed
//! form. Everything onnxq keeps verbatim (the model header, attributes,
//! subgraphs, functions) is parsed straight into its proto; the main graph
//! is a [`PGraph`], which keeps the position of every name for the errors
//! of lowering (see `lower`). Attribute values and tensor constants are
//! sub-grammars in [`attr`] and [`tensor`].

mod attr;
mod tensor;

use super::lex::{Lexer, PResult, KEYWORDS};
use crate::proto::tensor_shape_proto::{dimension, Dimension};
use crate::proto::type_proto::{self, Value as TypeValue};
use crate::proto::{
    dtype_from_name, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    SparseTensorProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// How deep graphs and types may nest in the text: the main graph, each
/// subgraph and each type (`seq(`, `optional(`, `map(`, `sparse_tensor(`,
/// a tensor type) is one level.
///
/// A recursive-descent parser needs a limit, or a hostile or generated text
/// overflows the stack instead of failing with an error. ONNX's own text
/// parser (onnx/defs/parser.cc, 1.22) has none: `onnx.parser.parse_graph`
/// dies with a segfault on 100 000 nested `seq(`.
///
/// 64 is chosen from the binary side. Protobuf refuses to decode messages
/// nested deeper than 100 (the default of C++ protobuf and upb, and prost's
/// `RECURSION_LIMIT`, which import decodes with). A subgraph costs three
/// messages (`GraphProto` → `NodeProto` → `AttributeProto` → `GraphProto`)
/// and a type level two (`TypeProto` → `Sequence` → `TypeProto`), so a
/// model import can read prints at most about 50 levels deep by this count
/// (tried: 33 nested subgraphs import, 34 do not; 48 nested types do, 49 do
/// not). Everything printed parses back, with room to spare; text deeper
/// than that could not survive export and re-import anyway.
///
/// And 64 levels stay well inside the 2 MiB stack of a test thread: 63
/// nested subgraphs, the costliest nesting, parse in under 512 KiB in a
/// release build and 1.5 MiB in a debug one (rustc 1.95, x86-64); types
/// take far less. The functions on the recursive path are kept lean for
/// that (see `graph_inputs`, `attr_rest`, `leaf_value`).
pub(super) const MAX_DEPTH: usize = 64;

pub(super) struct Parser<'s> {
    pub(super) lx: Lexer<'s>,
    /// Graphs and types open at the cursor (at most [`MAX_DEPTH`]).
    depth: usize,
}

/// A graph as parsed, with positions for the errors of IR building.
pub(super) struct PGraph {
    pub(super) name: String,
    pub(super) inputs: Vec<(ValueInfoProto, usize)>,
    pub(super) outputs: Vec<(ValueInfoProto, usize)>,
    pub(super) items: Vec<PItem>,
    pub(super) nodes: Vec<PNode>,
}

/// An initializer (or an input given `= data`), with the position of its
/// name, or a `value_info` entry.
pub(super) enum PItem {
    Dense(Box<TensorProto>, usize),
    Sparse(Box<SparseTensorProto>, usize),
    Info(ValueInfoProto),
}

/// A node as parsed, with the positions of the node, its operands and its
/// results.
pub(super) struct PNode {
    pub(super) proto: NodeProto,
    pub(super) pos: usize,
    pub(super) in_pos: Vec<usize>,
    pub(super) out_pos: Vec<usize>,
}

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
                PItem::Info(v) => gp.value_info.push(v),
            }
        }
        gp.node = self.nodes.into_iter().map(|n| n.proto).collect();
        gp
    }
}

impl<'s> Parser<'s> {
    pub(super) fn new(text: &'s str) -> Self {
        Parser {
            lx: Lexer::new(text),
            depth: 0,
        }
    }

    /// Runs `f` (which parses a graph or a type) one nesting level deeper,
    /// or fails at the cursor if that would pass [`MAX_DEPTH`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth == MAX_DEPTH {
            self.lx.ws();
            return Err(self.lx.err_at(
                self.lx.pos,
                format!("nesting deeper than {MAX_DEPTH} levels of graphs and types"),
            ));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    // ---------------------------------------------------------------- model

    pub(super) fn model_header(&mut self) -> PResult<ModelProto> {
        let mut m = ModelProto::default();
        if !self.lx.eat(b'<') {
            return Ok(m);
        }
        if self.lx.eat(b'>') {
            return Ok(m);
        }
        loop {
            let at = {
                self.lx.ws();
                self.lx.pos
            };
            let key = self
                .lx
                .ident("a model field name (ir_version, opset_import, producer_name, ...)")?;
            self.lx.expect(b':', &format!("after '{key}'"))?;
            match key.as_str() {
                "ir_version" => m.ir_version = Some(self.lx.int("an integer IR version")?),
                "opset_import" => m.opset_import = self.opsets()?,
                "producer_name" => m.producer_name = Some(self.lx.string("a string producer name")?),
                "producer_version" => m.producer_version = Some(self.lx.string("a string producer version")?),
                "domain" => m.domain = Some(self.lx.string("a string domain")?),
                "model_version" => m.model_version = Some(self.lx.int("an integer model version")?),
                "doc_string" => m.doc_string = Some(self.lx.string("a string doc_string")?),
                "metadata_props" => m.metadata_props = self.props()?,
                _ => {
                    return Err(self.lx.err_at(
                        at,
                        format!(
                            "unknown model field '{key}'; expected one of ir_version, opset_import, producer_name, \
                             producer_version, domain, model_version, doc_string, metadata_props"
                        ),
                    ))
                }
            }
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b'>', "to close the model header")?;
        Ok(m)
    }

    fn opsets(&mut self) -> PResult<Vec<OperatorSetIdProto>> {
        let mut v = Vec::new();
        self.lx.expect(b'[', "to open the opset list")?;
        if self.lx.eat(b']') {
            return Ok(v);
        }
        loop {
            let d = self
                .lx
                .string("a quoted opset domain like \"\" or \"com.microsoft\"")?;
            self.lx.expect(b':', "between opset domain and version")?;
            let ver = self.lx.int("an integer opset version")?;
            v.push(OperatorSetIdProto {
                domain: Some(d),
                version: Some(ver),
            });
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b']', "to close the opset list")?;
        Ok(v)
    }

    fn props(&mut self) -> PResult<Vec<StringStringEntryProto>> {
        let mut v = Vec::new();
        self.lx.expect(b'[', "to open the key/value list")?;
        if self.lx.eat(b']') {
            return Ok(v);
        }
        loop {
            let k = self.lx.string("a quoted key")?;
            self.lx.expect(b':', "between key and value")?;
            let val = self.lx.string("a quoted value")?;
            v.push(StringStringEntryProto {
                key: Some(k),
                value: Some(val),
            });
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b']', "to close the key/value list")?;
        Ok(v)
    }

    fn function(&mut self) -> PResult<FunctionProto> {
        let mut f = FunctionProto::default();
        if self.lx.eat(b'<') && !self.lx.eat(b'>') {
            loop {
                let at = {
                    self.lx.ws();
                    self.lx.pos
                };
                let key = self
                    .lx
                    .ident("a function field name (domain, opset_import, ...)")?;
                self.lx.expect(b':', &format!("after '{key}'"))?;
                match key.as_str() {
                    "domain" => f.domain = Some(self.lx.string("a string domain")?),
                    "overload" => f.overload = Some(self.lx.string("a string overload")?),
                    "doc_string" => f.doc_string = Some(self.lx.string("a string doc_string")?),
                    "opset_import" => f.opset_import = self.opsets()?,
                    _ => {
                        return Err(self.lx.err_at(
                            at,
                            format!("unknown function field '{key}'; expected domain, overload, doc_string or opset_import"),
                        ))
                    }
                }
                if !self.lx.eat(b',') {
                    break;
                }
            }
            self.lx.expect(b'>', "to close the function header")?;
        }
        f.name = Some(self.lx.quotable_id("a function name")?);
        if self.lx.eat(b'<') && !self.lx.eat(b'>') {
            loop {
                let name = self.lx.quotable_id("an attribute name")?;
                if matches!(self.lx.peek(), Some(b':' | b'=')) {
                    f.attribute_proto.push(*self.attr_rest(name)?);
                } else {
                    f.attribute.push(name);
                }
                if !self.lx.eat(b',') {
                    break;
                }
            }
            self.lx
                .expect(b'>', "to close the function's attribute list")?;
        }
        let (ins, mut vis) = self.fn_io()?;
        f.input = ins;
        self.lx.arrow()?;
        let (outs, vis2) = self.fn_io()?;
        f.output = outs;
        vis.extend(vis2);
        if self.lx.eat(b'<') && !self.lx.eat(b'>') {
            loop {
                vis.push(self.value_info()?.0);
                if !self.lx.eat(b',') {
                    break;
                }
            }
            self.lx
                .expect(b'>', "to close the function's value_info list")?;
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
        self.lx
            .expect(b'(', "to open a function's input or output list")?;
        if self.lx.eat(b')') {
            return Ok((names, vis));
        }
        loop {
            let (vi, _) = self.value_info()?;
            names.push(vi.name().to_string());
            if vi.r#type.is_some() {
                vis.push(vi);
            }
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b')', "to close the list")?;
        Ok((names, vis))
    }

    /// The function definitions after the main graph, up to the end.
    pub(super) fn functions(&mut self) -> PResult<Vec<FunctionProto>> {
        let mut fs = Vec::new();
        while !self.lx.at_end() {
            fs.push(self.function()?);
        }
        Ok(fs)
    }

    // ---------------------------------------------------------------- types

    fn next_is_type(&mut self) -> bool {
        match self.lx.peek_word() {
            Some(w) => dtype_from_name(w).is_some() || KEYWORDS.contains(&w),
            None => false,
        }
    }

    fn prim_type(&mut self) -> PResult<i32> {
        self.lx.ws();
        let at = self.lx.pos;
        let w = self.lx.ident("an element type like float or int64")?;
        if w == "undefined" {
            return Ok(0);
        }
        dtype_from_name(&w).ok_or_else(|| {
            self.lx.err_at(
                at,
                format!("expected an element type like float or int64, found '{w}'"),
            )
        })
    }

    fn shape(&mut self) -> PResult<Option<TensorShapeProto>> {
        if !self.lx.eat(b'[') {
            return Ok(Some(TensorShapeProto::default()));
        }
        if self.lx.eat(b']') {
            return Ok(None);
        }
        let mut dims = Vec::new();
        loop {
            let value = if self.lx.eat(b'?') {
                None
            } else if self.lx.peek_is_quotable() {
                Some(dimension::Value::DimParam(
                    self.lx.quotable_id("a dimension")?,
                ))
            } else {
                let d = self.lx.int("a dimension (integer, name or '?')")?;
                Some(dimension::Value::DimValue(d))
            };
            dims.push(Dimension {
                value,
                denotation: None,
            });
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b']', "to close the shape")?;
        Ok(Some(TensorShapeProto { dim: dims }))
    }

    fn ty(&mut self) -> PResult<TypeProto> {
        self.nested(Self::ty_inner)
    }

    fn ty_inner(&mut self) -> PResult<TypeProto> {
        self.lx.ws();
        let w = self.lx.peek_word().unwrap_or("");
        let boxed = |p: &mut Self, close: bool| -> PResult<Option<Box<TypeProto>>> {
            let t = if close && p.lx.peek() == Some(b')') {
                None
            } else {
                Some(Box::new(p.ty()?))
            };
            Ok(t)
        };
        let value = match w {
            "seq" | "optional" => {
                self.lx.pos += w.len();
                self.lx.expect(b'(', &format!("after '{w}'"))?;
                let elem = boxed(self, true)?;
                self.lx.expect(b')', &format!("to close '{w}('"))?;
                if w == "seq" {
                    TypeValue::SequenceType(Box::new(type_proto::Sequence { elem_type: elem }))
                } else {
                    TypeValue::OptionalType(Box::new(type_proto::Optional { elem_type: elem }))
                }
            }
            "map" => {
                self.lx.pos += w.len();
                self.lx.expect(b'(', "after 'map'")?;
                let k = self.prim_type()?;
                self.lx.expect(b',', "after the map key type")?;
                let v = boxed(self, false)?;
                self.lx.expect(b')', "to close 'map('")?;
                TypeValue::MapType(Box::new(type_proto::Map {
                    key_type: Some(k),
                    value_type: v,
                }))
            }
            "sparse_tensor" => {
                self.lx.pos += w.len();
                self.lx.expect(b'(', "after 'sparse_tensor'")?;
                let e = self.prim_type()?;
                let shape = self.shape()?;
                self.lx.expect(b')', "to close 'sparse_tensor('")?;
                TypeValue::SparseTensorType(type_proto::SparseTensor {
                    elem_type: Some(e),
                    shape,
                })
            }
            "opaque" => {
                self.lx.pos += w.len();
                self.lx.expect(b'(', "after 'opaque'")?;
                let mut parts = Vec::new();
                while self.lx.peek_is_ident_start() {
                    let mut q = self.lx.ident("a name")?;
                    while self.lx.eat(b'.') {
                        q.push('.');
                        q.push_str(&self.lx.ident("a name after '.'")?);
                    }
                    parts.push(q);
                    if !self.lx.eat(b',') {
                        break;
                    }
                }
                self.lx.expect(b')', "to close 'opaque('")?;
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
        self.lx.ws();
        let at = self.lx.pos;
        let name = self.lx.quotable_id("a value name")?;
        Ok((
            ValueInfoProto {
                name: Some(name),
                r#type,
                ..Default::default()
            },
            at,
        ))
    }

    // ---------------------------------------------------------------- graphs

    /// `name (inputs) => (outputs) [<initializers and value_info>] {nodes}`.
    pub(super) fn graph(&mut self) -> PResult<PGraph> {
        self.nested(Self::graph_inner)
    }

    fn graph_inner(&mut self) -> PResult<PGraph> {
        let name = self.lx.quotable_id("a graph name")?;
        let mut g = PGraph {
            name,
            inputs: vec![],
            outputs: vec![],
            items: vec![],
            nodes: vec![],
        };
        self.graph_inputs(&mut g)?;
        self.lx.arrow()?;
        self.graph_outputs(&mut g)?;
        self.graph_items(&mut g)?;
        let what = format!("graph '{}'", g.name);
        g.nodes = self.node_list(&what)?;
        Ok(g)
    }

    // The three lists before the nodes are parsed out of line: only the
    // nodes lead to subgraphs, and these lists' temporaries (tensors,
    // value infos) would otherwise take stack space at every nesting level.

    /// `(inputs)`; an input given `= data` is also an initializer.
    #[inline(never)]
    fn graph_inputs(&mut self, g: &mut PGraph) -> PResult<()> {
        self.lx.expect(
            b'(',
            &format!("to open the input list of graph '{}'", g.name),
        )?;
        if self.lx.eat(b')') {
            return Ok(());
        }
        loop {
            let (vi, at) = self.value_info()?;
            if self.lx.eat(b'=') {
                let ty = vi.r#type.clone().unwrap_or_default();
                let data = self.data()?;
                g.items.push(PItem::Dense(
                    Box::new(self.make_tensor(vi.name(), &ty, data, at)?),
                    at,
                ));
            }
            g.inputs.push((vi, at));
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b')', "to close the input list")
    }

    /// `(outputs)`.
    #[inline(never)]
    fn graph_outputs(&mut self, g: &mut PGraph) -> PResult<()> {
        self.lx.expect(
            b'(',
            &format!("to open the output list of graph '{}'", g.name),
        )?;
        if self.lx.eat(b')') {
            return Ok(());
        }
        loop {
            g.outputs.push(self.value_info()?);
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b')', "to close the output list")
    }

    /// The optional `<…>` list: initializers (with `= data`) and
    /// `value_info` entries (without).
    #[inline(never)]
    fn graph_items(&mut self, g: &mut PGraph) -> PResult<()> {
        if !self.lx.eat(b'<') || self.lx.eat(b'>') {
            return Ok(());
        }
        loop {
            let (vi, at) = self.value_info()?;
            if self.lx.eat(b'=') {
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
                g.items.push(PItem::Info(vi));
            }
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx
            .expect(b'>', "to close the initializer/value_info list")
    }

    fn node_list(&mut self, what: &str) -> PResult<Vec<PNode>> {
        self.lx
            .expect(b'{', &format!("to open the node list of {what}"))?;
        let mut nodes = Vec::new();
        while !self.lx.eat(b'}') {
            if self.lx.at_end() {
                return self.lx.expected(&format!("a node or '}}' closing {what}"));
            }
            nodes.push(self.node()?);
        }
        Ok(nodes)
    }

    /// Names separated by commas up to `close` (not consumed); an empty
    /// entry (`""` or nothing between commas) is an omitted operand.
    fn id_list(&mut self, close: u8) -> PResult<(Vec<String>, Vec<usize>)> {
        let (mut ids, mut pos) = (Vec::new(), Vec::new());
        if self.lx.peek() == Some(close) {
            return Ok((ids, pos));
        }
        loop {
            self.lx.ws();
            pos.push(self.lx.pos);
            if matches!(self.lx.peek(), Some(c) if c == b',' || c == close) {
                ids.push(String::new());
            } else {
                ids.push(self.lx.quotable_id("a value name")?);
            }
            if !self.lx.eat(b',') || self.lx.peek() == Some(close) {
                break;
            }
        }
        Ok((ids, pos))
    }

    fn node(&mut self) -> PResult<PNode> {
        self.lx.ws();
        let pos = self.lx.pos;
        let mut np = NodeProto::default();
        if self.lx.eat(b'[') {
            if self.lx.peek() != Some(b']') {
                np.name = Some(self.lx.quotable_id("a node name")?);
            }
            self.lx.expect(b']', "to close the node name")?;
        }
        let (outs, out_pos) = self.id_list(b'=')?;
        if self.lx.peek() != Some(b'=') {
            return self.lx.expected("'=' after the node's outputs");
        }
        self.lx.pos += 1;
        self.lx.ws();
        let op_at = self.lx.pos;
        let mut parts = vec![self.lx.ident("an operator name after '='")?];
        while self.lx.eat(b'.') {
            parts.push(self.lx.ident("an operator name after '.'")?);
        }
        let op = parts.pop().unwrap_or_default();
        if op.is_empty() {
            return Err(self.lx.err_at(op_at, "expected an operator name"));
        }
        np.op_type = Some(op.clone());
        if !parts.is_empty() {
            np.domain = Some(parts.join("."));
        }
        if self.lx.eat(b':') {
            np.overload = Some(self.lx.ident("an overload name after ':'")?);
        }
        if self.lx.peek() == Some(b'<') {
            np.attribute = self.attr_list()?;
        }
        self.lx
            .expect(b'(', &format!("to open the input list of {op}"))?;
        let (ins, in_pos) = self.id_list(b')')?;
        self.lx
            .expect(b')', &format!("to close the input list of {op}"))?;
        if np.attribute.is_empty() && self.lx.peek() == Some(b'<') {
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
}
