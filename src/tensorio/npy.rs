//! `.npy`: NumPy's array format.

use std::fs;
use std::path::Path;

use super::host::{decode_dtype, elem_size, npy_kind};
use super::{show, HostTensor, TensorIoError};
use crate::proto::tensor_proto::DataType;

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Parses an `.npy` file's bytes. `path` is only used in messages.
pub fn npy_from_bytes(bytes: &[u8], path: &str) -> Result<HostTensor, TensorIoError> {
    let h = parse_header(bytes, path)?;
    decode_data(&h, &bytes[h.len..], path)
}

/// What an `.npy` header says about the data after it.
pub(super) struct NpyHeader {
    /// Bytes from the start of the file to the first data byte.
    pub len: usize,
    /// The descriptor as written (`<f4`), for messages.
    descr: String,
    /// ONNX element type code.
    dtype: i32,
    fortran: bool,
    /// Elements are big-endian.
    big: bool,
    shape: Vec<usize>,
    /// Data bytes the shape and element type need, computed with checked
    /// multiplication: a header cannot make it wrap.
    pub data_len: usize,
}

impl NpyHeader {
    /// The error for data of `held` bytes, which is not `data_len`.
    pub fn wrong_size(&self, held: u64, path: &str) -> TensorIoError {
        TensorIoError::NotNpy {
            path: path.to_string(),
            what: format!(
                "shape {:?} of '{}' needs {} data bytes but the file holds {held}",
                self.shape, self.descr, self.data_len
            ),
        }
    }
}

/// How many bytes from the start of a file [`header_len`] reads.
pub(super) const PREFIX_LEN: usize = 12;

/// The total header length `prefix` (the file's first [`PREFIX_LEN`]
/// bytes, or all of a shorter file) announces: magic string, version,
/// length field and the dict.
pub(super) fn header_len(prefix: &[u8], path: &str) -> Result<usize, TensorIoError> {
    let bad = |what: &str| TensorIoError::NotNpy {
        path: path.to_string(),
        what: what.to_string(),
    };
    if prefix.len() < 10 || &prefix[..6] != NPY_MAGIC {
        return Err(bad("missing the \\x93NUMPY magic string"));
    }
    let major = prefix[6];
    let (header_len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([prefix[8], prefix[9]]) as usize, 10),
        2 | 3 => {
            if prefix.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(&format!("unknown format version {v}"))),
    };
    start
        .checked_add(header_len)
        .ok_or_else(|| bad("truncated header"))
}

/// Parses the header at the start of `bytes`, which may end anywhere after
/// it. Nothing is allocated by the shape's size.
pub(super) fn parse_header(bytes: &[u8], path: &str) -> Result<NpyHeader, TensorIoError> {
    let bad = |what: &str| TensorIoError::NotNpy {
        path: path.to_string(),
        what: what.to_string(),
    };
    let end = header_len(&bytes[..bytes.len().min(PREFIX_LEN)], path)?;
    if end > bytes.len() {
        return Err(bad("truncated header"));
    }
    let start = if bytes[6] == 1 { 10 } else { 12 };
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
    // The product of the non-zero dims must fit too: an array may not
    // claim (0, 2^32, 2^32) even though it holds nothing (found by
    // fuzzing: the array constructor refuses such a shape).
    let overflows = || bad(&format!("shape {shape:?} overflows"));
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(size, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(overflows)?;
    let data_len = shape
        .iter()
        .try_fold(size, |n, &d| n.checked_mul(d))
        .ok_or_else(overflows)?;
    Ok(NpyHeader {
        len: end,
        descr,
        dtype,
        fortran,
        big,
        shape,
        data_len,
    })
}

/// Decodes the data after header `h`: exactly `h.data_len` bytes.
pub(super) fn decode_data(
    h: &NpyHeader,
    data: &[u8],
    path: &str,
) -> Result<HostTensor, TensorIoError> {
    if data.len() != h.data_len {
        return Err(h.wrong_size(data.len() as u64, path));
    }
    Ok(decode_dtype(h.dtype, data, &h.shape, h.fortran, h.big)
        .expect("invariant: dtype is supported"))
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
    let npy = npy_kind(t);
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
