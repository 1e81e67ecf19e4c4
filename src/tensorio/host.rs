//! [`HostTensor`], the element types it holds, and their byte encodings.

use std::fmt;

use half::f16;
use ndarray::{ArrayD, IxDyn, ShapeBuilder};

use crate::ir::{Tensor, TensorError};
use crate::proto::dtype_name;
use crate::proto::tensor_proto::DataType;

/// An owned tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub enum HostTensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    F16(ArrayD<f16>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
}

/// An element type [`HostTensor`] can hold: its NumPy type character and
/// byte size, and little-endian (de)serialization.
trait Elem: Copy + 'static {
    /// NumPy descriptor without the byte-order character (`f4`, `b1`, …).
    const NPY: &'static str;
    const SIZE: usize;
    fn from_le(b: &[u8]) -> Self;
    fn put_le(self, out: &mut Vec<u8>);
    fn wrap(a: ArrayD<Self>) -> HostTensor;
}

macro_rules! elem_num {
    ($t:ty, $variant:ident, $npy:literal) => {
        impl Elem for $t {
            const NPY: &'static str = $npy;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("invariant: chunk of element size"))
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn wrap(a: ArrayD<Self>) -> HostTensor {
                HostTensor::$variant(a)
            }
        }
    };
}

elem_num!(f32, F32, "f4");
elem_num!(f64, F64, "f8");
elem_num!(f16, F16, "f2");
elem_num!(i64, I64, "i8");
elem_num!(i32, I32, "i4");
elem_num!(i8, I8, "i1");
elem_num!(u8, U8, "u1");

impl Elem for bool {
    const NPY: &'static str = "b1";
    const SIZE: usize = 1;
    fn from_le(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn wrap(a: ArrayD<Self>) -> HostTensor {
        HostTensor::Bool(a)
    }
}

/// Applies `$body` to the array inside any variant, bound as `$a`.
macro_rules! each {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            HostTensor::F32($a) => $body,
            HostTensor::F64($a) => $body,
            HostTensor::F16($a) => $body,
            HostTensor::I64($a) => $body,
            HostTensor::I32($a) => $body,
            HostTensor::I8($a) => $body,
            HostTensor::U8($a) => $body,
            HostTensor::Bool($a) => $body,
        }
    };
}

/// Decodes `count` packed elements; `big` swaps each element's bytes first.
fn decode<T: Elem>(bytes: &[u8], shape: &[usize], fortran: bool, big: bool) -> HostTensor {
    let v: Vec<T> = if big {
        bytes
            .chunks_exact(T::SIZE)
            .map(|c| {
                let mut b = c.to_vec();
                b.reverse();
                T::from_le(&b)
            })
            .collect()
    } else {
        bytes.chunks_exact(T::SIZE).map(T::from_le).collect()
    };
    let a = if fortran {
        ArrayD::from_shape_vec(IxDyn(shape).f(), v)
            .expect("invariant: byte count checked against shape")
            .as_standard_layout()
            .into_owned()
    } else {
        ArrayD::from_shape_vec(IxDyn(shape), v)
            .expect("invariant: byte count checked against shape")
    };
    T::wrap(a)
}

fn encode<T: Elem>(a: &ArrayD<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() * T::SIZE);
    // `iter` walks in logical (C) order whatever the memory layout.
    for &x in a.iter() {
        x.put_le(&mut out);
    }
    out
}

/// Decodes packed little-endian (or big-endian) elements of ONNX type `dtype`.
/// `None` when the type is not one a [`HostTensor`] holds.
pub(super) fn decode_dtype(
    dtype: i32,
    bytes: &[u8],
    shape: &[usize],
    fortran: bool,
    big: bool,
) -> Option<HostTensor> {
    use DataType::*;
    Some(match DataType::try_from(dtype).ok()? {
        Float => decode::<f32>(bytes, shape, fortran, big),
        Double => decode::<f64>(bytes, shape, fortran, big),
        Float16 => decode::<f16>(bytes, shape, fortran, big),
        Int64 => decode::<i64>(bytes, shape, fortran, big),
        Int32 => decode::<i32>(bytes, shape, fortran, big),
        Int8 => decode::<i8>(bytes, shape, fortran, big),
        Uint8 => decode::<u8>(bytes, shape, fortran, big),
        Bool => decode::<bool>(bytes, shape, fortran, big),
        _ => return None,
    })
}

pub(super) fn elem_size(dtype: i32) -> Option<usize> {
    use DataType::*;
    Some(match DataType::try_from(dtype).ok()? {
        Float | Int32 => 4,
        Double | Int64 => 8,
        Float16 => 2,
        Int8 | Uint8 | Bool => 1,
        _ => return None,
    })
}

impl HostTensor {
    /// The ONNX `TensorProto.DataType` code of the elements.
    pub fn dtype(&self) -> i32 {
        (match self {
            HostTensor::F32(_) => DataType::Float,
            HostTensor::F64(_) => DataType::Double,
            HostTensor::F16(_) => DataType::Float16,
            HostTensor::I64(_) => DataType::Int64,
            HostTensor::I32(_) => DataType::Int32,
            HostTensor::I8(_) => DataType::Int8,
            HostTensor::U8(_) => DataType::Uint8,
            HostTensor::Bool(_) => DataType::Bool,
        }) as i32
    }

    /// ONNX's name for the element type (`float`, `int64`, …).
    pub fn dtype_name(&self) -> &'static str {
        dtype_name(self.dtype())
    }

    pub fn shape(&self) -> &[usize] {
        each!(self, a => a.shape())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements converted to f32 (bool as 0/1; wide integers rounded).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            HostTensor::F32(a) => a.clone(),
            HostTensor::F64(a) => a.mapv(|x| x as f32),
            HostTensor::F16(a) => a.mapv(f16::to_f32),
            HostTensor::I64(a) => a.mapv(|x| x as f32),
            HostTensor::I32(a) => a.mapv(|x| x as f32),
            HostTensor::I8(a) => a.mapv(f32::from),
            HostTensor::U8(a) => a.mapv(f32::from),
            HostTensor::Bool(a) => a.mapv(|x| if x { 1.0 } else { 0.0 }),
        }
    }

    /// The elements as packed little-endian bytes in C order (bool: one byte).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        each!(self, a => encode(a))
    }

    /// An IR constant with these elements, stored as `raw_data`.
    pub fn to_tensor(&self, name: &str) -> Tensor {
        let dims: Vec<i64> = self.shape().iter().map(|&d| d as i64).collect();
        Tensor::from_raw(name, self.dtype(), &dims, self.to_le_bytes().into())
    }

    /// The elements of an IR constant (raw, typed-field or external data).
    /// Fails for element types a [`HostTensor`] does not hold.
    pub fn from_tensor(t: &Tensor) -> Result<HostTensor, TensorError> {
        let unsupported = || TensorError::Unsupported {
            name: t.name().into(),
            dtype: dtype_name(t.dtype()),
        };
        let size = elem_size(t.dtype()).ok_or_else(unsupported)?;
        let n = t.checked_len()?;
        let raw = t.raw_bytes()?;
        if raw.len() != n * size {
            return Err(TensorError::SizeMismatch {
                name: t.name().into(),
                dims: t.dims().to_vec(),
                dtype: dtype_name(t.dtype()),
                got: raw.len(),
                want: n * size,
            });
        }
        let shape: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
        decode_dtype(t.dtype(), &raw, &shape, false, false).ok_or_else(unsupported)
    }

    /// Builds a tensor of ONNX type `dtype` from packed little-endian bytes.
    /// `None` when the type is unsupported or the byte count does not fit
    /// the shape (whose element count is computed without wrapping).
    pub fn from_le_bytes(dtype: i32, shape: &[usize], bytes: &[u8]) -> Option<HostTensor> {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
        if n.checked_mul(elem_size(dtype)?)? != bytes.len() {
            return None;
        }
        decode_dtype(dtype, bytes, shape, false, false)
    }
}

impl fmt::Display for HostTensor {
    /// `float[1,3,224,224]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape().iter().map(|d| d.to_string()).collect();
        write!(f, "{}[{}]", self.dtype_name(), dims.join(","))
    }
}

macro_rules! from_array {
    ($t:ty, $variant:ident) => {
        impl From<ArrayD<$t>> for HostTensor {
            fn from(a: ArrayD<$t>) -> Self {
                HostTensor::$variant(a)
            }
        }
    };
}
from_array!(f32, F32);
from_array!(f64, F64);
from_array!(f16, F16);
from_array!(i64, I64);
from_array!(i32, I32);
from_array!(i8, I8);
from_array!(u8, U8);
from_array!(bool, Bool);

/// NumPy's descriptor of the element type, without the byte-order
/// character (`f4`, `b1`, …).
pub(super) fn npy_kind(t: &HostTensor) -> &'static str {
    each!(t, a => npy_descr(a))
}

fn npy_descr<T: Elem>(_: &ArrayD<T>) -> &'static str {
    T::NPY
}
