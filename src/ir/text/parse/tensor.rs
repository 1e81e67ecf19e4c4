//! Tensor constants: `type [name] [=] {values}`, the elided form
//! `{... N elements, hash H}`, ONNX's external-data list, and
//! `sparse([dims], values, indices)`. Literals are checked against the
//! declared type and shape and packed into `raw_data` here.

use bytes::Bytes;

use super::Parser;
use crate::ir::text::lex::Lexer;
use crate::ir::text::lex::{is_float_text, parse_f32, parse_float, PResult};
use crate::ir::text::print::shape_str;
use crate::ir::text::ELIDED_KEY;
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::tensor_shape_proto::dimension;
use crate::proto::type_proto::Value as TypeValue;
use crate::proto::{
    dtype_bits, dtype_name, SparseTensorProto, StringStringEntryProto, TensorProto, TypeProto,
};

/// A literal in a tensor's data.
pub(super) enum Lit {
    Num(String, usize),
    Str(Vec<u8>, usize),
}

/// The data part of a tensor constant.
pub(super) enum Data {
    Values(Vec<Lit>),
    Elided { count: u64, hash: String },
    External(Vec<StringStringEntryProto>),
}

impl Parser<'_> {
    pub(super) fn data(&mut self) -> PResult<Data> {
        self.lx.ws();
        if self.lx.peek() == Some(b'[') {
            return Ok(Data::External(self.props()?));
        }
        self.lx.expect(b'{', "to open the tensor's values")?;
        self.lx.ws();
        if self.lx.src[self.lx.pos..].starts_with(b"...") {
            self.lx.pos += 3;
            let (t, at) = self.lx.number("the element count of an elided tensor")?;
            let count = t
                .parse::<u64>()
                .map_err(|_| self.lx.err_at(at, format!("bad element count '{t}'")))?;
            let w = self.lx.ident("'elements'")?;
            if w != "elements" && w != "element" {
                return Err(self.lx.err_at(
                    self.lx.pos - w.len(),
                    format!("expected 'elements', found '{w}'"),
                ));
            }
            self.lx
                .expect(b',', "before the hash of an elided tensor")?;
            let h = self.lx.ident("'hash'")?;
            if h != "hash" {
                return Err(self.lx.err_at(
                    self.lx.pos - h.len(),
                    format!("expected 'hash', found '{h}'"),
                ));
            }
            self.lx.ws();
            let n = self.lx.src[self.lx.pos..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count();
            if n == 0 {
                return self.lx.expected("a hex content hash");
            }
            let hash =
                String::from_utf8_lossy(&self.lx.src[self.lx.pos..self.lx.pos + n]).into_owned();
            self.lx.pos += n;
            self.lx.expect(b'}', "to close the elided tensor")?;
            return Ok(Data::Elided { count, hash });
        }
        let mut vals = Vec::new();
        if self.lx.eat(b'}') {
            return Ok(Data::Values(vals));
        }
        loop {
            self.lx.ws();
            let at = self.lx.pos;
            if self.lx.peek() == Some(b'"') {
                vals.push(Lit::Str(self.lx.string_lit()?, at));
            } else {
                let (t, at) = self.lx.number("a number, a string or '...'")?;
                vals.push(Lit::Num(t, at));
            }
            if !self.lx.eat(b',') {
                break;
            }
        }
        self.lx.expect(b'}', "to close the tensor's values")?;
        Ok(Data::Values(vals))
    }

    /// Builds a tensor proto of type `ty` named `name` from parsed data.
    pub(super) fn make_tensor(
        &self,
        name: &str,
        ty: &TypeProto,
        data: Data,
        at: usize,
    ) -> PResult<TensorProto> {
        let (dtype, dims, n) = self.tensor_shape(name, ty, at)?;
        let mut tp = TensorProto {
            name: (!name.is_empty()).then(|| name.to_string()),
            data_type: Some(dtype),
            dims,
            ..Default::default()
        };
        match data {
            Data::External(entries) => {
                tp.external_data = entries;
                tp.data_location = Some(DataLocation::External as i32);
            }
            Data::Elided { count, hash } => self.fill_elided(&mut tp, n, count, hash, at)?,
            Data::Values(vals) => self.fill_values(&mut tp, n, vals, at)?,
        }
        Ok(tp)
    }

    /// Element type, dimensions and element count of a constant's type,
    /// which must be a tensor type of known, numeric shape.
    fn tensor_shape(&self, name: &str, ty: &TypeProto, at: usize) -> PResult<(i32, Vec<i64>, u64)> {
        let Some(TypeValue::TensorType(tt)) = &ty.value else {
            return Err(self.lx.err_at(
                at,
                format!("tensor '{name}' needs a tensor type like float[2,3]"),
            ));
        };
        let dtype = tt.elem_type();
        let Some(shape) = &tt.shape else {
            return Err(self.lx.err_at(
                at,
                format!("tensor '{name}' needs a known shape; '[]' means unknown rank"),
            ));
        };
        let mut dims = Vec::new();
        for d in &shape.dim {
            match &d.value {
                Some(dimension::Value::DimValue(v)) if *v >= 0 => dims.push(*v),
                _ => {
                    return Err(self.lx.err_at(
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
            .ok_or_else(|| {
                self.lx
                    .err_at(at, format!("tensor '{name}': element count overflows"))
            })?;
        Ok((dtype, dims, n))
    }

    /// `{... count elements, hash H}`: zeros of the declared type, the hash
    /// kept under [`ELIDED_KEY`] so the printer shows it again.
    fn fill_elided(
        &self,
        tp: &mut TensorProto,
        n: u64,
        count: u64,
        hash: String,
        at: usize,
    ) -> PResult<()> {
        let (name, dims, dtype) = (tp.name(), &tp.dims, tp.data_type());
        if count != n {
            return Err(self.lx.err_at(
                at,
                format!("tensor '{name}' has shape {dims:?} ({n} elements) but its elided data says {count}"),
            ));
        }
        if dtype == DataType::String as i32 {
            tp.string_data = vec![Bytes::new(); n as usize];
        } else {
            let bits = dtype_bits(dtype).ok_or_else(|| {
                self.lx
                    .err_at(at, format!("tensor '{name}' has no element type"))
            })?;
            tp.raw_data = Some(Bytes::from(vec![0u8; (n as usize * bits).div_ceil(8)]));
        }
        tp.metadata_props.push(StringStringEntryProto {
            key: Some(ELIDED_KEY.into()),
            value: Some(hash),
        });
        Ok(())
    }

    /// `{v, ...}`: one literal per element (two per complex element).
    fn fill_values(&self, tp: &mut TensorProto, n: u64, vals: Vec<Lit>, at: usize) -> PResult<()> {
        let (name, dims, dtype) = (tp.name(), &tp.dims, tp.data_type());
        let per = if matches!(
            DataType::try_from(dtype),
            Ok(DataType::Complex64 | DataType::Complex128)
        ) {
            2
        } else {
            1
        };
        if vals.len() as u64 != n * per {
            return Err(self.lx.err_at(
                at,
                format!(
                    "tensor '{name}' has shape {dims:?} ({n} elements) but {} values are given",
                    vals.len() as u64 / per
                ),
            ));
        }
        if dtype != DataType::String as i32 {
            tp.raw_data = Some(Bytes::from(self.encode(dtype, name, &vals)?));
            return Ok(());
        }
        for v in vals {
            match v {
                Lit::Str(s, _) => tp.string_data.push(Bytes::from(s)),
                Lit::Num(t, p) => {
                    return Err(self.lx.err_at(
                        p,
                        format!("expected a string in tensor '{}', found {t}", tp.name()),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Packs literals into little-endian raw data of `dtype`.
    fn encode(&self, dtype: i32, name: &str, vals: &[Lit]) -> PResult<Vec<u8>> {
        use DataType::*;
        let dt = DataType::try_from(dtype)
            .ok()
            .filter(|d| *d != Undefined)
            .ok_or_else(|| {
                self.lx.err_at(
                    vals.first().map(lit_pos).unwrap_or(0),
                    format!("tensor '{name}' has no element type"),
                )
            })?;
        let elems = Elements {
            lx: &self.lx,
            name,
            dtype,
        };
        let mut out = Vec::new();
        let mut sub_byte: Vec<u8> = Vec::new();
        for l in vals {
            elems.push(dt, l, &mut out, &mut sub_byte)?;
        }
        Ok(match dt {
            Int4 | Uint4 | Float4e2m1 => pack_sub_byte(&sub_byte, 4),
            Int2 | Uint2 => pack_sub_byte(&sub_byte, 2),
            _ => out,
        })
    }

    /// `type [name] ['='] data`, as in attribute values and sparse parts.
    pub(super) fn tensor_const(&mut self) -> PResult<TensorProto> {
        self.lx.ws();
        let at = self.lx.pos;
        let ty = self.ty()?;
        self.tensor_const_rest(ty, at)
    }

    pub(super) fn tensor_const_rest(&mut self, ty: TypeProto, at: usize) -> PResult<TensorProto> {
        let name = if self.lx.peek_is_quotable() {
            self.lx.quotable_id("a tensor name")?
        } else {
            String::new()
        };
        self.lx.eat(b'=');
        let data = self.data()?;
        self.make_tensor(&name, &ty, data, at)
    }

    /// `sparse([dims], values, indices)`.
    pub(super) fn sparse(&mut self) -> PResult<SparseTensorProto> {
        let w = self.lx.ident("'sparse'")?;
        if w != "sparse" {
            return Err(self.lx.err_at(
                self.lx.pos - w.len(),
                format!("expected 'sparse(', found '{w}'"),
            ));
        }
        self.lx.expect(b'(', "after 'sparse'")?;
        self.lx
            .expect(b'[', "to open the sparse tensor's dimensions")?;
        let mut dims = Vec::new();
        if !self.lx.eat(b']') {
            loop {
                dims.push(self.lx.int("an integer dimension")?);
                if !self.lx.eat(b',') {
                    break;
                }
            }
            self.lx.expect(b']', "to close the dimensions")?;
        }
        self.lx.expect(b',', "after the dimensions")?;
        let values = self.tensor_const()?;
        self.lx.expect(b',', "after the values tensor")?;
        let indices = self.tensor_const()?;
        self.lx.expect(b')', "to close 'sparse('")?;
        Ok(SparseTensorProto {
            values: Some(values),
            indices: Some(indices),
            dims,
        })
    }
}

fn lit_pos(l: &Lit) -> usize {
    match l {
        Lit::Num(_, p) | Lit::Str(_, p) => *p,
    }
}

/// Reads literals as the elements of one tensor, which errors name.
struct Elements<'a> {
    lx: &'a Lexer<'a>,
    name: &'a str,
    dtype: i32,
}

impl Elements<'_> {
    fn num(&self, l: &Lit) -> PResult<(String, usize)> {
        match l {
            Lit::Num(t, p) => Ok((t.clone(), *p)),
            Lit::Str(_, p) => Err(self.lx.err_at(
                *p,
                format!(
                    "expected a number in tensor '{}', found a string",
                    self.name
                ),
            )),
        }
    }

    fn float(&self, l: &Lit) -> PResult<f64> {
        let (t, p) = self.num(l)?;
        parse_float(&t).ok_or_else(|| self.lx.err_at(p, format!("bad number '{t}'")))
    }

    fn f32(&self, l: &Lit) -> PResult<f32> {
        let (t, p) = self.num(l)?;
        parse_f32(&t).ok_or_else(|| self.lx.err_at(p, format!("bad number '{t}'")))
    }

    /// An integer literal in `lo..=hi`.
    fn int(&self, l: &Lit, lo: i128, hi: i128) -> PResult<i128> {
        let (t, p) = self.num(l)?;
        let (name, ty) = (self.name, dtype_name(self.dtype));
        let v: i128 = t.parse().map_err(|_| {
            self.lx.err_at(
                p,
                format!("expected an integer for {ty} tensor '{name}', found '{t}'"),
            )
        })?;
        if v < lo || v > hi {
            return Err(self.lx.err_at(
                p,
                format!("value {v} is out of range for {ty} tensor '{name}'"),
            ));
        }
        Ok(v)
    }

    /// Appends one element of type `dt`: bytes to `out`, or for sub-byte
    /// types one value per element to `sub_byte` (packed afterwards).
    fn push(
        &self,
        dt: DataType,
        l: &Lit,
        out: &mut Vec<u8>,
        sub_byte: &mut Vec<u8>,
    ) -> PResult<()> {
        use DataType::*;
        match dt {
            Float | Complex64 => out.extend_from_slice(&self.f32(l)?.to_le_bytes()),
            Double | Complex128 => out.extend_from_slice(&self.float(l)?.to_le_bytes()),
            Float16 | Bfloat16 => {
                // A float literal is converted; an integer is the bit pattern.
                let (t, _) = self.num(l)?;
                let bits = if is_float_text(&t) {
                    let v = self.f32(l)?;
                    if dt == Float16 {
                        half::f16::from_f32(v).to_bits()
                    } else {
                        half::bf16::from_f32(v).to_bits()
                    }
                } else {
                    self.int(l, 0, u16::MAX as i128)? as u16
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Uint16 => {
                out.extend_from_slice(&(self.int(l, 0, u16::MAX as i128)? as u16).to_le_bytes())
            }
            Int16 => out.extend_from_slice(
                &(self.int(l, i16::MIN as i128, i16::MAX as i128)? as i16).to_le_bytes(),
            ),
            Int8 => out.push(self.int(l, -128, 127)? as i8 as u8),
            Uint8 | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz | Float8e8m0 => {
                out.push(self.int(l, 0, 255)? as u8)
            }
            Bool => out.push(self.int(l, 0, 1)? as u8),
            Int32 => out.extend_from_slice(
                &(self.int(l, i32::MIN as i128, i32::MAX as i128)? as i32).to_le_bytes(),
            ),
            Uint32 => {
                out.extend_from_slice(&(self.int(l, 0, u32::MAX as i128)? as u32).to_le_bytes())
            }
            Int64 => out.extend_from_slice(
                &(self.int(l, i64::MIN as i128, i64::MAX as i128)? as i64).to_le_bytes(),
            ),
            Uint64 => {
                out.extend_from_slice(&(self.int(l, 0, u64::MAX as i128)? as u64).to_le_bytes())
            }
            Int4 => sub_byte.push((self.int(l, -8, 7)? as i8 as u8) & 0xf),
            Uint4 | Float4e2m1 => sub_byte.push(self.int(l, 0, 15)? as u8),
            Int2 => sub_byte.push((self.int(l, -2, 1)? as i8 as u8) & 0x3),
            Uint2 => sub_byte.push(self.int(l, 0, 3)? as u8),
            String | Undefined => {}
        }
        Ok(())
    }
}

/// Packs `bits`-wide values into bytes, first value in the low bits (ONNX's
/// order for int4, uint4, float4e2m1, int2 and uint2).
fn pack_sub_byte(vals: &[u8], bits: usize) -> Vec<u8> {
    vals.chunks(8 / bits)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, v)| acc | (v << (bits * i)))
        })
        .collect()
}
