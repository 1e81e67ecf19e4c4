//! The ONNX wire format: protobuf bindings generated from
//! `proto/onnx.proto` by `build.rs` (protox + prost-build, no `protoc`),
//! and element-type facts every layer needs (sizes, bits, names).
//!
//! This is the lowest layer: it knows nothing of the IR. [`crate::onnx`]
//! re-exports it for code that reads ONNX files.

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
pub use generated::*;

use tensor_proto::DataType;

/// Size in bytes of one element of `dtype`, for fixed-size types. Sub-byte
/// types (int4, uint4, float4, int2, uint2) and strings return `None`.
pub fn dtype_size(dtype: i32) -> Option<usize> {
    let d = DataType::try_from(dtype).ok()?;
    use DataType::*;
    Some(match d {
        Float | Int32 | Uint32 => 4,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
        | Float8e8m0 => 1,
        Uint16 | Int16 | Float16 | Bfloat16 => 2,
        Int64 | Double | Uint64 | Complex64 => 8,
        Complex128 => 16,
        String | Undefined | Uint4 | Int4 | Float4e2m1 | Uint2 | Int2 => return None,
    })
}

/// Bits per element, for every numeric type (sub-byte types included).
pub fn dtype_bits(dtype: i32) -> Option<usize> {
    use DataType::*;
    match DataType::try_from(dtype).ok()? {
        Uint4 | Int4 | Float4e2m1 => Some(4),
        Uint2 | Int2 => Some(2),
        _ => dtype_size(dtype).map(|b| b * 8),
    }
}

/// The name ONNX's textual syntax uses for a data type (`float`, `uint8`, …).
pub fn dtype_name(dtype: i32) -> &'static str {
    use DataType::*;
    match DataType::try_from(dtype) {
        Ok(Float) => "float",
        Ok(Uint8) => "uint8",
        Ok(Int8) => "int8",
        Ok(Uint16) => "uint16",
        Ok(Int16) => "int16",
        Ok(Int32) => "int32",
        Ok(Int64) => "int64",
        Ok(String) => "string",
        Ok(Bool) => "bool",
        Ok(Float16) => "float16",
        Ok(Double) => "double",
        Ok(Uint32) => "uint32",
        Ok(Uint64) => "uint64",
        Ok(Complex64) => "complex64",
        Ok(Complex128) => "complex128",
        Ok(Bfloat16) => "bfloat16",
        Ok(Float8e4m3fn) => "float8e4m3fn",
        Ok(Float8e4m3fnuz) => "float8e4m3fnuz",
        Ok(Float8e5m2) => "float8e5m2",
        Ok(Float8e5m2fnuz) => "float8e5m2fnuz",
        Ok(Uint4) => "uint4",
        Ok(Int4) => "int4",
        Ok(Float4e2m1) => "float4e2m1",
        Ok(Float8e8m0) => "float8e8m0",
        Ok(Uint2) => "uint2",
        Ok(Int2) => "int2",
        Ok(Undefined) | Err(_) => "undefined",
    }
}

/// Inverse of [`dtype_name`].
pub fn dtype_from_name(name: &str) -> Option<i32> {
    (1..=26).find(|&d| dtype_name(d) == name)
}
