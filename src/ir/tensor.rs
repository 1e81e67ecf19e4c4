//! Constant tensors: initializers and attribute tensors.
//!
//! A [`Tensor`] keeps the `TensorProto` it came from, so that whatever onnxq
//! does not interpret (doc strings, metadata, the typed `*_data` encoding) is
//! written back unchanged. Element data is shared, never copied needlessly:
//! inline `raw_data` is a `Bytes` slice of the decoded file, and external data
//! is a window onto a memory-mapped file.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use ndarray::{ArrayD, IxDyn};

use super::external::ExternalSpan;
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::{dtype_bits, dtype_name, TensorProto};

/// A constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The proto as read. Invariant: for external tensors, `external` is set
    /// and the proto still carries its original `external_data` entries.
    proto: TensorProto,
    /// Where the elements of an external tensor live.
    external: Option<Arc<ExternalSpan>>,
}

/// Why a tensor's elements cannot be produced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("tensor '{name}' has a negative dimension {dim}")]
    NegativeDim { name: String, dim: i64 },
    #[error("tensor '{name}': the element count of shape {dims:?} overflows")]
    Overflow { name: String, dims: Vec<i64> },
    #[error(
        "tensor '{name}' holds {got} bytes of data but its shape {dims:?} of {dtype} needs {want}"
    )]
    SizeMismatch {
        name: String,
        dims: Vec<i64>,
        dtype: &'static str,
        got: usize,
        want: usize,
    },
    #[error("tensor '{name}' has element type {code}, which ONNX does not define")]
    UnknownType { name: String, code: i32 },
    #[error("tensor '{name}' has element type {dtype}, which onnxq cannot convert here")]
    Unsupported { name: String, dtype: &'static str },
    #[error(
        "tensor '{name}' is a segment of a larger tensor; segmented tensors are not supported"
    )]
    Segmented { name: String },
}

impl Tensor {
    /// Wraps a proto whose data is inline (raw or typed fields).
    pub fn from_proto(proto: TensorProto) -> Self {
        Tensor {
            proto,
            external: None,
        }
    }

    /// Wraps a proto whose data lives in an external file.
    pub fn from_external(proto: TensorProto, span: Arc<ExternalSpan>) -> Self {
        Tensor {
            proto,
            external: Some(span),
        }
    }

    /// A new tensor with little-endian `raw_data`.
    pub fn from_raw(name: &str, dtype: i32, dims: &[i64], raw: Bytes) -> Self {
        Tensor::from_proto(TensorProto {
            name: Some(name.to_string()),
            data_type: Some(dtype),
            dims: dims.to_vec(),
            raw_data: Some(raw),
            ..Default::default()
        })
    }

    pub fn from_f32(name: &str, a: &ArrayD<f32>) -> Self {
        let dims: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
        let mut raw = Vec::with_capacity(a.len() * 4);
        for v in a.iter() {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        Tensor::from_raw(name, DataType::Float as i32, &dims, raw.into())
    }

    pub fn from_i64(name: &str, dims: &[i64], data: &[i64]) -> Self {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(name, DataType::Int64 as i32, dims, raw.into())
    }

    pub fn from_i32(name: &str, dims: &[i64], data: &[i32]) -> Self {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(name, DataType::Int32 as i32, dims, raw.into())
    }

    pub fn from_i8(name: &str, dims: &[i64], data: &[i8]) -> Self {
        let raw: Vec<u8> = data.iter().map(|&v| v as u8).collect();
        Tensor::from_raw(name, DataType::Int8 as i32, dims, raw.into())
    }

    pub fn from_u8(name: &str, dims: &[i64], data: &[u8]) -> Self {
        Tensor::from_raw(
            name,
            DataType::Uint8 as i32,
            dims,
            Bytes::copy_from_slice(data),
        )
    }

    pub fn proto(&self) -> &TensorProto {
        &self.proto
    }

    pub fn external(&self) -> Option<&Arc<ExternalSpan>> {
        self.external.as_ref()
    }

    pub fn name(&self) -> &str {
        self.proto.name()
    }

    pub(crate) fn set_name(&mut self, name: &str) {
        self.proto.name = Some(name.to_string());
    }

    pub fn dtype(&self) -> i32 {
        self.proto.data_type()
    }

    pub fn dims(&self) -> &[i64] {
        &self.proto.dims
    }

    /// Number of elements; checked for negative dimensions and overflow.
    pub fn checked_len(&self) -> Result<usize, TensorError> {
        let mut n: usize = 1;
        for &d in &self.proto.dims {
            if d < 0 {
                return Err(TensorError::NegativeDim {
                    name: self.name().into(),
                    dim: d,
                });
            }
            n = n
                .checked_mul(d as usize)
                .ok_or_else(|| TensorError::Overflow {
                    name: self.name().into(),
                    dims: self.proto.dims.clone(),
                })?;
        }
        // An empty shape's other dims must multiply within range too
        // ((0, 2^32, 2^32) holds nothing but no array can have it).
        let nonzero = self
            .proto
            .dims
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
            .filter(|&a| a <= isize::MAX as usize);
        if nonzero.is_none() {
            return Err(TensorError::Overflow {
                name: self.name().into(),
                dims: self.proto.dims.clone(),
            });
        }
        Ok(n)
    }

    /// Element count; the tensor was validated at import.
    pub fn len(&self) -> usize {
        self.checked_len().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes this tensor's elements take in packed raw form.
    pub fn nbytes(&self) -> usize {
        match dtype_bits(self.dtype()) {
            Some(bits) => (self.len() * bits).div_ceil(8),
            None => self.proto.string_data.iter().map(|s| s.len()).sum(),
        }
    }

    /// Checks the data against the shape: dimensions, element count, byte size.
    pub fn validate(&self) -> Result<(), TensorError> {
        let n = self.checked_len()?;
        if self.proto.segment.is_some() {
            return Err(TensorError::Segmented {
                name: self.name().into(),
            });
        }
        match DataType::try_from(self.dtype()) {
            Ok(DataType::Undefined) | Err(_) => {
                return Err(TensorError::UnknownType {
                    name: self.name().into(),
                    code: self.dtype(),
                })
            }
            Ok(_) => {}
        }
        let Some(bits) = dtype_bits(self.dtype()) else {
            return Ok(());
        };
        let want =
            n.checked_mul(bits)
                .map(|b| b.div_ceil(8))
                .ok_or_else(|| TensorError::Overflow {
                    name: self.name().into(),
                    dims: self.dims().to_vec(),
                })?;
        let got = if let Some(ext) = &self.external {
            ext.len()
        } else if let Some(r) = &self.proto.raw_data {
            r.len()
        } else {
            // Typed fields (float_data, int32_data, …) packed as raw data
            // would be: a size lie there is as bad as in raw_data.
            self.typed_byte_len().unwrap_or(want)
        };
        {
            if got != want {
                return Err(TensorError::SizeMismatch {
                    name: self.name().into(),
                    dims: self.dims().to_vec(),
                    dtype: dtype_name(self.dtype()),
                    got,
                    want,
                });
            }
        }
        Ok(())
    }

    /// True when the data is in `raw_data` or external (not typed fields).
    pub fn is_raw(&self) -> bool {
        self.external.is_some() || self.proto.raw_data.is_some()
    }

    /// How many bytes [`Self::raw_bytes`] makes of the typed fields
    /// (`float_data`, `int32_data`, …), counted without converting them;
    /// `None` for types it does not convert (string, undefined).
    fn typed_byte_len(&self) -> Option<usize> {
        use DataType::*;
        let p = &self.proto;
        Some(match DataType::try_from(self.dtype()).ok()? {
            Float | Complex64 => p.float_data.len() * 4,
            Double | Complex128 => p.double_data.len() * 8,
            Int64 => p.int64_data.len() * 8,
            Uint64 => p.uint64_data.len() * 8,
            Uint32 => p.uint64_data.len() * 4,
            Int32 => p.int32_data.len() * 4,
            Int16 | Uint16 | Float16 | Bfloat16 => p.int32_data.len() * 2,
            Int8 | Uint8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
            | Float8e8m0 | Int4 | Uint4 | Float4e2m1 | Int2 | Uint2 => p.int32_data.len(),
            String | Undefined => return None,
        })
    }

    /// The elements as packed little-endian bytes, borrowing when they
    /// already are (raw or external), converting from the typed fields
    /// otherwise.
    pub fn raw_bytes(&self) -> Result<Cow<'_, [u8]>, TensorError> {
        if let Some(ext) = &self.external {
            return Ok(Cow::Borrowed(ext.bytes()));
        }
        if let Some(raw) = &self.proto.raw_data {
            return Ok(Cow::Borrowed(raw));
        }
        let p = &self.proto;
        let unsupported = || TensorError::Unsupported {
            name: self.name().into(),
            dtype: dtype_name(self.dtype()),
        };
        use DataType::*;
        let dt = DataType::try_from(self.dtype()).map_err(|_| unsupported())?;
        let out: Vec<u8> = match dt {
            Float => p.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Double => p.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Int64 => p.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Uint64 => p.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Uint32 => p
                .uint64_data
                .iter()
                .flat_map(|&v| (v as u32).to_le_bytes())
                .collect(),
            Int32 => p.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Int16 => p
                .int32_data
                .iter()
                .flat_map(|&v| (v as i16).to_le_bytes())
                .collect(),
            Uint16 | Float16 | Bfloat16 => p
                .int32_data
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect(),
            Int8 | Uint8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
            | Float8e8m0 => p.int32_data.iter().map(|&v| v as u8).collect(),
            Complex64 => p.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Complex128 => p.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            // Sub-byte types pack two (or four) elements per int32_data entry's low byte.
            Int4 | Uint4 | Float4e2m1 | Int2 | Uint2 => {
                p.int32_data.iter().map(|&v| v as u8).collect()
            }
            String | Undefined => return Err(unsupported()),
        };
        Ok(Cow::Owned(out))
    }

    /// The elements converted to f32 (from any real numeric type).
    pub fn to_f32(&self) -> Result<ArrayD<f32>, TensorError> {
        let shape: Vec<usize> = self.dims().iter().map(|&d| d as usize).collect();
        let raw = self.raw_bytes()?;
        let n = self.checked_len()?;
        use DataType::*;
        let dt = DataType::try_from(self.dtype()).ok();
        let v: Vec<f32> = match dt {
            Some(Float) => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Some(Double) => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Some(Float16) => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Some(Bfloat16) => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Some(Int8) => raw.iter().map(|&b| b as i8 as f32).collect(),
            Some(Uint8) | Some(Bool) => raw.iter().map(|&b| b as f32).collect(),
            Some(Int16) => raw
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            Some(Uint16) => raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            Some(Int32) => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Some(Uint32) => raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Some(Int64) => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Some(Uint64) => raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            // Two per byte, the first in the low nibble.
            Some(t @ (Int4 | Uint4)) if raw.len() == n.div_ceil(2) => unpack4(&raw, n, t == Int4)
                .into_iter()
                .map(|q| q as f32)
                .collect(),
            Some(Int4 | Uint4) => vec![],
            _ => {
                return Err(TensorError::Unsupported {
                    name: self.name().into(),
                    dtype: dtype_name(self.dtype()),
                })
            }
        };
        if v.len() != n {
            return Err(TensorError::SizeMismatch {
                name: self.name().into(),
                dims: self.dims().to_vec(),
                dtype: dtype_name(self.dtype()),
                got: raw.len(),
                want: n * dtype_bits(self.dtype()).unwrap_or(8) / 8,
            });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), v).expect("invariant: element count checked"))
    }

    /// The elements as i64 (integer types only).
    pub fn to_i64(&self) -> Result<Vec<i64>, TensorError> {
        let raw = self.raw_bytes()?;
        use DataType::*;
        Ok(match DataType::try_from(self.dtype()).ok() {
            Some(Int64) => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Some(Int32) => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            Some(Int8) => raw.iter().map(|&b| b as i8 as i64).collect(),
            Some(Uint8) | Some(Bool) => raw.iter().map(|&b| b as i64).collect(),
            Some(Int16) => raw
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            Some(Uint16) => raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            Some(Uint32) => raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            Some(Uint64) => raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            _ => {
                return Err(TensorError::Unsupported {
                    name: self.name().into(),
                    dtype: dtype_name(self.dtype()),
                })
            }
        })
    }

    /// The proto with its data inline as `raw_data` (external data read in).
    /// Used when writing a tensor into the model file itself.
    pub fn to_inline_proto(&self) -> TensorProto {
        if let Some(ext) = &self.external {
            let mut p = self.proto.clone();
            p.external_data.clear();
            p.data_location = None;
            p.raw_data = Some(Bytes::copy_from_slice(ext.bytes()));
            p
        } else {
            self.proto.clone()
        }
    }

    /// The proto pointing at `location`/`offset`/`length` in an external file,
    /// for export. Fields onnxq does not interpret are kept.
    pub fn to_external_proto(&self, location: &str, offset: u64, length: u64) -> TensorProto {
        let mut p = self.proto.clone();
        p.raw_data = None;
        p.float_data.clear();
        p.int32_data.clear();
        p.int64_data.clear();
        p.double_data.clear();
        p.uint64_data.clear();
        p.external_data = vec![
            entry("location", location),
            entry("offset", &offset.to_string()),
            entry("length", &length.to_string()),
        ];
        p.data_location = Some(DataLocation::External as i32);
        p
    }

    /// A short content hash (FNV-1a 64 over dtype, dims and data), used by the
    /// text printer to identify elided constants.
    pub fn content_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&self.dtype().to_le_bytes());
        for d in self.dims() {
            feed(&d.to_le_bytes());
        }
        match self.raw_bytes() {
            Ok(b) => feed(&b),
            Err(_) => {
                for s in &self.proto.string_data {
                    feed(&(s.len() as u64).to_le_bytes());
                    feed(s);
                }
            }
        }
        h
    }
}

fn entry(k: &str, v: &str) -> crate::proto::StringStringEntryProto {
    crate::proto::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

/// Unpacks `len` 4-bit codes (`signed`: two's complement nibbles).
pub fn unpack4(bytes: &[u8], len: usize, signed: bool) -> Vec<i32> {
    (0..len)
        .map(|i| {
            let b = bytes.get(i / 2).copied().unwrap_or(0);
            let nib = if i % 2 == 0 { b & 0xf } else { b >> 4 };
            if signed && nib >= 8 {
                nib as i32 - 16
            } else {
                nib as i32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size check counts typed fields exactly as `raw_bytes` packs
    /// them, for every type it converts.
    #[test]
    fn typed_byte_len_matches_raw_bytes() {
        for code in 1..=26 {
            let Ok(dt) = DataType::try_from(code) else {
                continue;
            };
            let proto = TensorProto {
                name: Some("t".into()),
                data_type: Some(code),
                dims: vec![3],
                float_data: vec![1.0, 2.0, 3.0],
                double_data: vec![1.0, 2.0, 3.0],
                int32_data: vec![1, 2, 3],
                int64_data: vec![1, 2, 3],
                uint64_data: vec![1, 2, 3],
                ..Default::default()
            };
            let t = Tensor::from_proto(proto);
            assert_eq!(
                t.typed_byte_len(),
                t.raw_bytes().ok().map(|b| b.len()),
                "{dt:?}"
            );
        }
    }
}
