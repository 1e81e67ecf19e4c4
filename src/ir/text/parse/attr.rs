//! Attribute lists and values: `<name: type = value, ...>`.
//!
//! The type after the name is optional (the printer always writes it); when
//! it is missing the value decides, and when both are given they must agree.

use bytes::Bytes;

use super::Parser;
use crate::ir::text::lex::{attr_type_name, is_float_text, parse_f32, PResult, ATTR_TYPES};
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, GraphProto, SparseTensorProto, TensorProto, TypeProto};

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

impl Parser<'_> {
    pub(super) fn attr_list(&mut self) -> PResult<Vec<AttributeProto>> {
        self.lx.expect(b'<', "to open the attribute list")?;
        let mut v: Vec<AttributeProto> = Vec::new();
        if self.lx.eat(b'>') {
            return Ok(v);
        }
        loop {
            self.lx.ws();
            let at = self.lx.pos;
            let name = self.lx.quotable_id("an attribute name")?;
            if v.iter().any(|a| a.name() == name) {
                return Err(self
                    .lx
                    .err_at(at, format!("attribute '{name}' is given twice")));
            }
            v.push(*self.attr_rest(name)?);
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b'>', "to close the attribute list")?;
        Ok(v)
    }

    /// After an attribute's name: `[: type] = value`.
    ///
    /// The attribute is built in a box: this function is on the path
    /// subgraphs recurse through, and an `AttributeProto` is 1.7 KB, which
    /// each level would otherwise hold on the stack several times over.
    pub(super) fn attr_rest(&mut self, name: String) -> PResult<Box<AttributeProto>> {
        use AttributeType as A;
        let mut a = Box::new(AttributeProto {
            name: Some(name.clone()),
            ..Default::default()
        });
        let declared = self.declared_attr_type()?;
        self.lx.expect(b'=', &format!("after attribute '{name}'"))?;
        if self.lx.eat(b'@') {
            a.ref_attr_name = Some(self.lx.quotable_id("a referenced attribute name")?);
            if declared != A::Undefined {
                a.r#type = Some(declared as i32);
            }
            return Ok(a);
        }
        self.lx.ws();
        let at = self.lx.pos;
        if self.lx.eat(b'[') {
            self.list_value(&mut a, &name, declared, at)?;
        } else {
            self.single_value(&mut a, &name, declared, at)?;
        }
        Ok(a)
    }

    /// The optional `: type` after an attribute's name (`Undefined` if none).
    fn declared_attr_type(&mut self) -> PResult<AttributeType> {
        if !self.lx.eat(b':') {
            return Ok(AttributeType::Undefined);
        }
        self.lx.ws();
        let at = self.lx.pos;
        let t = self
            .lx
            .ident("an attribute type (int, float, string, ints, ...)")?;
        ATTR_TYPES.iter().find(|(n, _)| *n == t).map(|(_, k)| *k).ok_or_else(|| {
            self.lx.err_at(at, format!("unknown attribute type '{t}'; expected int, float, string, tensor, graph, type_proto, sparse_tensor or a plural of these"))
        })
    }

    /// `[v, ...]` (the `[` at `at` already read) into the list field its
    /// kind (declared, or read off the items) selects.
    fn list_value(
        &mut self,
        a: &mut AttributeProto,
        name: &str,
        declared: AttributeType,
        at: usize,
    ) -> PResult<()> {
        use AttributeType as A;
        let singular = singular(declared);
        if declared != A::Undefined && singular == declared {
            return Err(self.lx.err_at(
                at,
                format!(
                    "attribute '{name}' is declared {} but given a list",
                    attr_type_name(declared)
                ),
            ));
        }
        let mut items = Vec::new();
        if !self.lx.eat(b']') {
            loop {
                self.lx.ws();
                let p = self.lx.pos;
                items.push((self.single(singular, name)?, p));
                if !self.lx.eat(b',') {
                    break;
                }
            }
            self.lx
                .expect(b']', &format!("to close the list of attribute '{name}'"))?;
        }
        let kind = self.list_kind(name, declared, &items, at)?;
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
                    return Err(self.lx.err_at(
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
        Ok(())
    }

    /// The kind of a list attribute: as declared, else floats if any item
    /// is one (`[1, 2.5]`), else the first item's.
    fn list_kind(
        &self,
        name: &str,
        declared: AttributeType,
        items: &[(Single, usize)],
        at: usize,
    ) -> PResult<AttributeType> {
        use AttributeType as A;
        if declared != A::Undefined {
            return Ok(declared);
        }
        if items.iter().any(|(s, _)| matches!(s, Single::Float(_))) {
            return Ok(A::Floats);
        }
        Ok(match items.first() {
            None => {
                return Err(self.lx.err_at(
                    at,
                    format!(
                        "empty list for attribute '{name}' needs a type, e.g. '{name}: ints = []'"
                    ),
                ))
            }
            Some((Single::Int(_), _)) => A::Ints,
            Some((Single::Float(_), _)) => A::Floats,
            Some((Single::Str(_), _)) => A::Strings,
            Some((Single::Tensor(_), _)) => A::Tensors,
            Some((Single::Graph(_), _)) => A::Graphs,
            Some((Single::Sparse(_), _)) => A::SparseTensors,
            Some((Single::Type(_), _)) => A::TypeProtos,
        })
    }

    /// A single value (at `at`) into the field its kind selects; an int is
    /// taken for a declared float.
    fn single_value(
        &mut self,
        a: &mut AttributeProto,
        name: &str,
        declared: AttributeType,
        at: usize,
    ) -> PResult<()> {
        use AttributeType as A;
        if singular(declared) != declared {
            return Err(self.lx.err_at(
                at,
                format!("attribute '{name}' is declared {} but given a single value; write it as [value]", attr_type_name(declared)),
            ));
        }
        let s = self.single(declared, name)?;
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
            return Err(self.lx.err_at(
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
        Ok(())
    }

    /// One attribute value; `expected` (possibly undefined) resolves the
    /// ambiguous cases (a quoted graph name, `sparse(…)`).
    fn single(&mut self, expected: AttributeType, attr: &str) -> PResult<Single> {
        if self.next_is_graph(expected) {
            return Ok(Single::Graph(Box::new(self.graph()?.into_proto())));
        }
        self.leaf_value(expected, attr)
    }

    /// Whether the value ahead is a (sub)graph: a quoted name where a graph
    /// is expected, or a bare word that is not `sparse` (where a sparse
    /// tensor is expected), a type, `nan` or `inf`.
    fn next_is_graph(&mut self, expected: AttributeType) -> bool {
        use AttributeType as A;
        match self.lx.peek() {
            Some(b'"') => expected == A::Graph,
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let w = self.lx.peek_word().unwrap_or("");
                let sparse = expected == A::SparseTensor && w == "sparse";
                let float = matches!(w.to_ascii_lowercase().as_str(), "nan" | "inf" | "infinity");
                !sparse && !float && !self.next_is_type()
            }
            _ => false,
        }
    }

    /// A value that is not a graph. Kept out of line: `single` is on the
    /// path subgraphs recurse through, and the temporaries of these values
    /// would otherwise take stack space at every nesting level.
    #[inline(never)]
    fn leaf_value(&mut self, expected: AttributeType, attr: &str) -> PResult<Single> {
        use AttributeType as A;
        self.lx.ws();
        let at = self.lx.pos;
        match self.lx.peek() {
            Some(b'"') => Ok(Single::Str(self.lx.string_lit()?)),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let (t, p) = self.lx.number("a number")?;
                if is_float_text(&t) {
                    parse_f32(&t)
                        .map(Single::Float)
                        .ok_or_else(|| self.lx.err_at(p, format!("bad number '{t}'")))
                } else {
                    t.parse::<i64>().map(Single::Int).map_err(|_| {
                        self.lx
                            .err_at(p, format!("integer '{t}' does not fit in 64 bits"))
                    })
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let w = self.lx.peek_word().unwrap_or("");
                if expected == A::SparseTensor && w == "sparse" {
                    return Ok(Single::Sparse(Box::new(self.sparse()?)));
                }
                if self.next_is_type() {
                    let ty = self.ty()?;
                    if matches!(self.lx.peek(), Some(b'{' | b'=' | b'"'))
                        || self.lx.peek_is_ident_start()
                    {
                        return Ok(Single::Tensor(Box::new(self.tensor_const_rest(ty, at)?)));
                    }
                    return Ok(Single::Type(ty));
                }
                // What `next_is_graph` leaves of a bare word: nan or inf.
                let (t, p) = self.lx.number("a number")?;
                parse_f32(&t)
                    .map(Single::Float)
                    .ok_or_else(|| self.lx.err_at(p, format!("bad number '{t}'")))
            }
            _ => self.lx.expected(&format!("a value for attribute '{attr}'")),
        }
    }
}

/// The element kind of a list kind (`ints` → `int`); other kinds map to
/// themselves, so `singular(k) != k` says "k is a list kind".
fn singular(k: AttributeType) -> AttributeType {
    use AttributeType as A;
    match k {
        A::Floats => A::Float,
        A::Ints => A::Int,
        A::Strings => A::String,
        A::Tensors => A::Tensor,
        A::Graphs => A::Graph,
        A::SparseTensors => A::SparseTensor,
        A::TypeProtos => A::TypeProto,
        k => k,
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
