//! Tensors on the host: the data a model is run on, and the files it comes in.
//!
//! [`HostTensor`] is an owned n-dimensional array of one of the element types
//! onnxq feeds to or reads back from the runtime. It is read from and written
//! to three file formats:
//!
//! * `.npy` — NumPy's array format (versions 1, 2 and 3 of the header; C or
//!   Fortran order; little-, big- or no-endian descriptors).
//! * `.npz` — a ZIP archive of `.npy` files, as written by `numpy.savez`.
//!   Entries must be *stored* (uncompressed): `numpy.savez_compressed`
//!   archives are refused with a message saying so. ZIP64 records, which
//!   NumPy always writes, are understood. Arrays are keyed by entry name
//!   without the `.npy` suffix and returned sorted by key, so the order never
//!   depends on the order in the archive.
//! * `.pb` — one serialized ONNX `TensorProto`, the format of the ONNX test
//!   suite's `test_data_set_*/input_*.pb`; data in `raw_data` or in the typed
//!   fields. The tensor's own name comes back with it.
//!
//! Both NumPy formats are implemented here rather than through `ndarray-npy`,
//! because that crate has no float16 element and picks the element type at
//! compile time, while onnxq learns a file's type only by reading it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use half::f16;
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use prost::Message;

use crate::ir::{Tensor, TensorError};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::{dtype_name, TensorProto};

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

/// What went wrong reading or writing tensors. Every variant names the file
/// (or command-line argument) concerned.
#[derive(Debug, thiserror::Error)]
pub enum TensorIoError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not an .npy file: {what}")]
    NotNpy { path: String, what: String },
    #[error("{path}: not a valid .npz (zip) archive: {what}")]
    BadZip { path: String, what: String },
    #[error("{path}: entry '{entry}' is compressed; onnxq reads archives written by numpy.savez, not numpy.savez_compressed")]
    CompressedNpz { path: String, entry: String },
    #[error("{path}: element type {dtype} is not supported (supported: float32, float64, float16, int64, int32, int8, uint8, bool)")]
    UnsupportedDtype { path: String, dtype: String },
    #[error("{path}: not a serialized ONNX TensorProto: {source}")]
    NotTensorProto {
        path: String,
        source: prost::DecodeError,
    },
    #[error("{path}: {source}")]
    Tensor { path: String, source: TensorError },
    #[error("{path}: {count} elements do not fill shape {shape:?}")]
    Shape {
        path: String,
        shape: Vec<usize>,
        count: usize,
    },
    #[error("input argument '{arg}': {what}")]
    BadArg { arg: String, what: String },
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

// ------------------------------------------------------------------ elements

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
fn decode_dtype(
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

fn elem_size(dtype: i32) -> Option<usize> {
    use DataType::*;
    Some(match DataType::try_from(dtype).ok()? {
        Float | Int32 => 4,
        Double | Int64 => 8,
        Float16 => 2,
        Int8 | Uint8 | Bool => 1,
        _ => return None,
    })
}

// ---------------------------------------------------------------- HostTensor

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
    /// the shape.
    pub fn from_le_bytes(dtype: i32, shape: &[usize], bytes: &[u8]) -> Option<HostTensor> {
        let n: usize = shape.iter().product();
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

// ----------------------------------------------------------------------- npy

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Parses an `.npy` file's bytes. `path` is only used in messages.
pub fn npy_from_bytes(bytes: &[u8], path: &str) -> Result<HostTensor, TensorIoError> {
    let bad = |what: &str| TensorIoError::NotNpy {
        path: path.to_string(),
        what: what.to_string(),
    };
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err(bad("missing the \\x93NUMPY magic string"));
    }
    let major = bytes[6];
    let (header_len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(&format!("unknown format version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text"))?;
    let descr = header_str(header, "descr").ok_or_else(|| bad("header has no 'descr' string"))?;
    let fortran = match header_value(header, "fortran_order") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err(bad("header has no 'fortran_order' flag")),
    };
    let shape = header_shape(header).ok_or_else(|| bad("header has no valid 'shape' tuple"))?;

    let unsupported = || TensorIoError::UnsupportedDtype {
        path: path.to_string(),
        dtype: format!("'{descr}'"),
    };
    let (order, kind) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('|', descr.as_str()),
    };
    let big = order == '>' || (order == '=' && cfg!(target_endian = "big"));
    let dtype = match kind {
        "f4" => DataType::Float,
        "f8" => DataType::Double,
        "f2" | "e" => DataType::Float16,
        "i8" => DataType::Int64,
        "i4" => DataType::Int32,
        "i1" | "b" => DataType::Int8,
        "u1" | "B" => DataType::Uint8,
        "b1" | "?" => DataType::Bool,
        _ => return Err(unsupported()),
    } as i32;
    let size = elem_size(dtype).expect("invariant: supported dtypes have a size");
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad("shape overflows"))?;
    let data = &bytes[end..];
    if count.checked_mul(size) != Some(data.len()) {
        return Err(bad(&format!(
            "shape {shape:?} of '{descr}' needs {} data bytes but the file holds {}",
            count.saturating_mul(size),
            data.len()
        )));
    }
    Ok(decode_dtype(dtype, data, &shape, fortran, big).expect("invariant: dtype is supported"))
}

/// The text after `'key':` in a header dict, trimmed at the start.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

fn header_str(header: &str, key: &str) -> Option<String> {
    let v = header_value(header, key)?;
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &v[1..];
    Some(body[..body.find(q)?].to_string())
}

fn header_shape(header: &str) -> Option<Vec<usize>> {
    let v = header_value(header, "shape")?.strip_prefix('(')?;
    let body = &v[..v.find(')')?];
    body.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        // Python 2 wrote long integers with an `L` suffix.
        .map(|s| s.trim_end_matches('L').parse::<usize>().ok())
        .collect()
}

/// The bytes of an `.npy` file (format 1.0, or 2.0 for huge headers) holding `t`.
pub fn npy_to_bytes(t: &HostTensor) -> Vec<u8> {
    let npy = each!(t, a => npy_descr(a));
    let order = if npy == "b1" || npy.ends_with('1') {
        '|'
    } else {
        '<'
    };
    let shape = match t.shape() {
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{order}{npy}', 'fortran_order': False, 'shape': {shape}, }}");
    // NumPy pads the header with spaces and a newline so the data starts at
    // a multiple of 64 bytes.
    let prefix = if header.len() + 11 > u16::MAX as usize {
        12
    } else {
        10
    };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - prefix - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + t.len() * 8);
    out.extend_from_slice(NPY_MAGIC);
    if prefix == 10 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}

fn npy_descr<T: Elem>(_: &ArrayD<T>) -> &'static str {
    T::NPY
}

pub fn read_npy(path: impl AsRef<Path>) -> Result<HostTensor, TensorIoError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })?;
    npy_from_bytes(&bytes, &show(path))
}

pub fn write_npy(path: impl AsRef<Path>, t: &HostTensor) -> Result<(), TensorIoError> {
    let path = path.as_ref();
    fs::write(path, npy_to_bytes(t)).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })
}

// ----------------------------------------------------------------------- npz

/// Reads every array of an `.npz` archive, keyed by entry name without the
/// `.npy` suffix, sorted by key.
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, HostTensor)>, TensorIoError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })?;
    npz_from_bytes(&bytes, &show(path))
}

/// Parses an `.npz` archive's bytes. `path` is only used in messages.
pub fn npz_from_bytes(
    bytes: &[u8],
    path: &str,
) -> Result<Vec<(String, HostTensor)>, TensorIoError> {
    let mut out = Vec::new();
    for e in zip::entries(bytes).map_err(|what| TensorIoError::BadZip {
        path: path.to_string(),
        what,
    })? {
        if e.method != 0 {
            return Err(TensorIoError::CompressedNpz {
                path: path.to_string(),
                entry: e.name,
            });
        }
        let key = e.name.strip_suffix(".npy").unwrap_or(&e.name).to_string();
        let t = npy_from_bytes(e.data, &format!("{path}[{}]", e.name))?;
        out.push((key, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(TensorIoError::BadZip {
            path: path.to_string(),
            what: format!("array '{}' appears twice", w[0].0),
        });
    }
    Ok(out)
}

/// The bytes of an uncompressed `.npz` archive holding `arrays` (entry
/// `<key>.npy` each, in the order given), readable by `numpy.load`.
pub fn npz_to_bytes(arrays: &[(String, HostTensor)]) -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> = arrays
        .iter()
        .map(|(k, t)| (format!("{k}.npy"), npy_to_bytes(t)))
        .collect();
    zip::write_stored(&files)
}

pub fn write_npz(
    path: impl AsRef<Path>,
    arrays: &[(String, HostTensor)],
) -> Result<(), TensorIoError> {
    let path = path.as_ref();
    fs::write(path, npz_to_bytes(arrays)).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })
}

/// The subset of ZIP that `.npz` files use: stored entries, with ZIP64
/// extensions (NumPy opens every entry with `force_zip64=True`).
mod zip {
    pub struct Entry<'a> {
        pub name: String,
        /// 0 = stored, 8 = deflate, …
        pub method: u16,
        pub data: &'a [u8],
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }
    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }
    fn u64_at(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    }

    const EOCD: u32 = 0x0605_4b50;
    const EOCD64: u32 = 0x0606_4b50;
    const EOCD64_LOCATOR: u32 = 0x0706_4b50;
    const CENTRAL: u32 = 0x0201_4b50;
    const LOCAL: u32 = 0x0403_4b50;

    /// Every entry, read through the central directory.
    pub fn entries(b: &[u8]) -> Result<Vec<Entry<'_>>, String> {
        let bad = |s: &str| s.to_string();
        // The end record is the last 22 bytes plus a comment of up to 64 KiB.
        let min = b.len().saturating_sub(22 + 0xFFFF);
        let eocd = (min..=b.len().saturating_sub(22))
            .rev()
            .find(|&i| u32_at(b, i) == Some(EOCD))
            .ok_or_else(|| bad("no end-of-central-directory record"))?;
        let mut count = u16_at(b, eocd + 10).ok_or_else(|| bad("truncated end record"))? as u64;
        let mut cd = u32_at(b, eocd + 16).ok_or_else(|| bad("truncated end record"))? as u64;
        // Saturated counts point at the ZIP64 end record, found through the
        // locator just before the classic end record.
        if (count == 0xFFFF || cd == 0xFFFF_FFFF)
            && eocd >= 20
            && u32_at(b, eocd - 20) == Some(EOCD64_LOCATOR)
        {
            let at = u64_at(b, eocd - 12).ok_or_else(|| bad("truncated zip64 locator"))? as usize;
            if u32_at(b, at) != Some(EOCD64) {
                return Err(bad("zip64 end record not found"));
            }
            count = u64_at(b, at + 32).ok_or_else(|| bad("truncated zip64 end record"))?;
            cd = u64_at(b, at + 48).ok_or_else(|| bad("truncated zip64 end record"))?;
        }
        let mut at = usize::try_from(cd).map_err(|_| bad("central directory offset overflows"))?;
        let mut out = Vec::new();
        for _ in 0..count {
            let trunc = || bad("truncated central directory");
            if u32_at(b, at) != Some(CENTRAL) {
                return Err(bad("central directory entry signature not found"));
            }
            let method = u16_at(b, at + 10).ok_or_else(trunc)?;
            let mut csize = u32_at(b, at + 20).ok_or_else(trunc)? as u64;
            let mut usize_ = u32_at(b, at + 24).ok_or_else(trunc)? as u64;
            let name_len = u16_at(b, at + 28).ok_or_else(trunc)? as usize;
            let extra_len = u16_at(b, at + 30).ok_or_else(trunc)? as usize;
            let comment_len = u16_at(b, at + 32).ok_or_else(trunc)? as usize;
            let mut local = u32_at(b, at + 42).ok_or_else(trunc)? as u64;
            let name_bytes = b.get(at + 46..at + 46 + name_len).ok_or_else(trunc)?;
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            // ZIP64 extra field: the 64-bit values present are exactly those
            // whose 32-bit field is saturated, in this order.
            let extra = b
                .get(at + 46 + name_len..at + 46 + name_len + extra_len)
                .ok_or_else(trunc)?;
            let mut e = 0;
            while e + 4 <= extra.len() {
                let id = u16_at(extra, e).ok_or_else(trunc)?;
                let len = u16_at(extra, e + 2).ok_or_else(trunc)? as usize;
                if id == 0x0001 {
                    let mut p = e + 4;
                    for field in [&mut usize_, &mut csize, &mut local] {
                        if *field == 0xFFFF_FFFF {
                            *field = u64_at(extra, p).ok_or_else(trunc)?;
                            p += 8;
                        }
                    }
                }
                e += 4 + len;
            }
            let lh = usize::try_from(local).map_err(|_| trunc())?;
            if u32_at(b, lh) != Some(LOCAL) {
                return Err(format!("local header of '{name}' not found"));
            }
            let lname = u16_at(b, lh + 26).ok_or_else(trunc)? as usize;
            let lextra = u16_at(b, lh + 28).ok_or_else(trunc)? as usize;
            let start = lh + 30 + lname + lextra;
            let data = usize::try_from(csize)
                .ok()
                .and_then(|n| b.get(start..start.checked_add(n)?))
                .ok_or_else(|| format!("data of '{name}' runs past the end of the file"))?;
            if method == 0 && csize != usize_ {
                return Err(format!("stored entry '{name}' has differing sizes"));
            }
            out.push(Entry { name, method, data });
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(out)
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut table = [0u32; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *t = c;
        }
        let mut c = !0u32;
        for &x in data {
            c = table[((c ^ x as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        !c
    }

    /// A ZIP archive of stored files. Sizes or offsets past 4 GiB use ZIP64
    /// extra fields and end records.
    pub fn write_stored(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        const SAT: u64 = 0xFFFF_FFFF;
        for (name, data) in files {
            let crc = crc32(data);
            let offset = out.len() as u64;
            let size = data.len() as u64;
            let big = size >= SAT || offset >= SAT;
            let local_extra: Vec<u8> = if size >= SAT {
                let mut x = vec![1, 0, 16, 0];
                x.extend_from_slice(&size.to_le_bytes());
                x.extend_from_slice(&size.to_le_bytes());
                x
            } else {
                vec![]
            };
            let size32 = size.min(SAT) as u32;
            let version: u16 = if big { 45 } else { 20 };
            out.extend_from_slice(&LOCAL.to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]); // flags, method = stored
            out.extend_from_slice(&[0, 0, 0x21, 0]); // time, date (1980-01-01)
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&size32.to_le_bytes());
            out.extend_from_slice(&size32.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(local_extra.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&local_extra);
            out.extend_from_slice(data);

            let mut cextra = Vec::new();
            if big {
                let mut body = Vec::new();
                if size >= SAT {
                    body.extend_from_slice(&size.to_le_bytes());
                    body.extend_from_slice(&size.to_le_bytes());
                }
                if offset >= SAT {
                    body.extend_from_slice(&offset.to_le_bytes());
                }
                cextra.extend_from_slice(&[1, 0]);
                cextra.extend_from_slice(&(body.len() as u16).to_le_bytes());
                cextra.extend_from_slice(&body);
            }
            central.extend_from_slice(&CENTRAL.to_le_bytes());
            central.extend_from_slice(&version.to_le_bytes()); // made by
            central.extend_from_slice(&version.to_le_bytes()); // needed
            central.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x21, 0]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&size32.to_le_bytes());
            central.extend_from_slice(&size32.to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(cextra.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
            central.extend_from_slice(&[0; 4]); // external attributes
            central.extend_from_slice(&(offset.min(SAT) as u32).to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            central.extend_from_slice(&cextra);
        }
        let cd_offset = out.len() as u64;
        let cd_size = central.len() as u64;
        out.extend_from_slice(&central);
        let n = files.len() as u64;
        if cd_offset >= SAT || n >= 0xFFFF {
            let eocd64 = out.len() as u64;
            out.extend_from_slice(&EOCD64.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&cd_size.to_le_bytes());
            out.extend_from_slice(&cd_offset.to_le_bytes());
            out.extend_from_slice(&EOCD64_LOCATOR.to_le_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&eocd64.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(&EOCD.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        let n16 = n.min(0xFFFF) as u16;
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&(cd_size.min(SAT) as u32).to_le_bytes());
        out.extend_from_slice(&(cd_offset.min(SAT) as u32).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }
}

// ------------------------------------------------------------------------ pb

/// Reads one serialized ONNX `TensorProto`: its name and elements.
pub fn read_pb(path: impl AsRef<Path>) -> Result<(String, HostTensor), TensorIoError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })?;
    let proto =
        TensorProto::decode(bytes.as_slice()).map_err(|source| TensorIoError::NotTensorProto {
            path: show(path),
            source,
        })?;
    if !proto.external_data.is_empty() {
        return Err(TensorIoError::Tensor {
            path: show(path),
            source: TensorError::Unsupported {
                name: proto.name().into(),
                dtype: "external data",
            },
        });
    }
    let t = Tensor::from_proto(proto);
    let name = t.name().to_string();
    if elem_size(t.dtype()).is_none() {
        return Err(TensorIoError::UnsupportedDtype {
            path: show(path),
            dtype: dtype_name(t.dtype()).to_string(),
        });
    }
    let host = HostTensor::from_tensor(&t).map_err(|source| TensorIoError::Tensor {
        path: show(path),
        source,
    })?;
    Ok((name, host))
}

/// Writes `t` as a serialized ONNX `TensorProto` named `name` (`raw_data`).
pub fn write_pb(path: impl AsRef<Path>, name: &str, t: &HostTensor) -> Result<(), TensorIoError> {
    let path = path.as_ref();
    let bytes = t.to_tensor(name).proto().encode_to_vec();
    fs::write(path, bytes).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })
}

// ------------------------------------------------------------ command line

/// Splits a command-line input argument: `NAME=FILE` names the tensor,
/// a bare `FILE` leaves the name to the file (`.npz` keys, `.pb` names,
/// the `.npy` file stem).
pub fn parse_input_arg(arg: &str) -> Result<(Option<String>, PathBuf), TensorIoError> {
    // A path may itself contain '=', so only split when the left part looks
    // like a name rather than an existing file.
    if let Some((name, file)) = arg.split_once('=') {
        if !Path::new(arg).exists() {
            if name.is_empty() || file.is_empty() {
                return Err(TensorIoError::BadArg {
                    arg: arg.to_string(),
                    what: "expected NAME=FILE or FILE".into(),
                });
            }
            return Ok((Some(name.to_string()), PathBuf::from(file)));
        }
    }
    if arg.is_empty() {
        return Err(TensorIoError::BadArg {
            arg: arg.to_string(),
            what: "expected NAME=FILE or FILE".into(),
        });
    }
    Ok((None, PathBuf::from(arg)))
}

/// Reads the tensors a command-line input argument names (see
/// [`parse_input_arg`]), by extension: `.npy` (one tensor), `.npz` (every
/// array; with `NAME=`, the archive must hold exactly one), `.pb` (one
/// `TensorProto`; `NAME=` overrides its name).
pub fn read_inputs_arg(arg: &str) -> Result<Vec<(String, HostTensor)>, TensorIoError> {
    let (name, path) = parse_input_arg(arg)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let bad = |what: String| TensorIoError::BadArg {
        arg: arg.to_string(),
        what,
    };
    match ext.as_str() {
        "npy" => {
            let t = read_npy(&path)?;
            let name = match name {
                Some(n) => n,
                None => path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| bad("cannot take a tensor name from the file name".into()))?,
            };
            Ok(vec![(name, t)])
        }
        "npz" => {
            let mut all = read_npz(&path)?;
            match name {
                None => Ok(all),
                Some(n) if all.len() == 1 => {
                    let t = all.pop().expect("invariant: one array").1;
                    Ok(vec![(n, t)])
                }
                Some(_) => Err(bad(format!(
                    "NAME= needs an archive with one array, this one has {}",
                    all.len()
                ))),
            }
        }
        "pb" => {
            let (pb_name, t) = read_pb(&path)?;
            let name = name.unwrap_or(pb_name);
            if name.is_empty() {
                return Err(bad("the TensorProto has no name; pass NAME=FILE".into()));
            }
            Ok(vec![(name, t)])
        }
        _ => Err(bad("unknown file type; expected .npy, .npz or .pb".into())),
    }
}
