//! `.npz`: a ZIP archive of `.npy` files, as `numpy.savez` and
//! `numpy.savez_compressed` write it, read and written with the `zip` crate.
//!
//! An archive's sizes are claims, so nothing is allocated by them until
//! they are checked against bytes that are there: a stored entry's data
//! must lie inside the file and is parsed in place; a deflated entry may
//! not declare more than DEFLATE can expand its compressed bytes to, its
//! `.npy` header is read first and its shape must need exactly the declared
//! size, and its data buffer grows only as decompressed bytes arrive.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use super::npy::{self, decode_data, npy_from_bytes, npy_to_bytes, parse_header};
use super::{show, HostTensor, TensorIoError};

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
    let bad_zip = |e: zip::result::ZipError| TensorIoError::BadZip {
        path: path.to_string(),
        what: e.to_string(),
    };
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(bad_zip)?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let (name, method, data, declared) = {
            // The raw view reads the entry's headers and builds no
            // decompressor: sizes are checked before anything else.
            let raw = archive.by_index_raw(i).map_err(bad_zip)?;
            let name = raw.name().to_string();
            let data = raw
                .data_start()
                .checked_add(raw.compressed_size())
                .filter(|&end| end <= bytes.len() as u64)
                .map(|end| raw.data_start() as usize..end as usize)
                .ok_or_else(|| TensorIoError::BadZip {
                    path: path.to_string(),
                    what: format!("data of '{name}' runs past the end of the file"),
                })?;
            (name, raw.compression(), data, raw.size())
        };
        let at = format!("{path}[{name}]");
        let t = match method {
            CompressionMethod::Stored => npy_from_bytes(&bytes[data], &at)?,
            CompressionMethod::Deflated => {
                let mut entry = archive.by_index(i).map_err(bad_zip)?;
                read_deflated(&mut entry, data.len() as u64, declared, path, &name)?
            }
            other => {
                return Err(TensorIoError::NpzCompression {
                    path: path.to_string(),
                    entry: name,
                    method: other.to_string(),
                })
            }
        };
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
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

/// DEFLATE's largest expansion: a 258-byte match coded in two bits, so
/// 1032 bytes out per byte in (zlib's technical details, "Maximum
/// compression factor"). A declared size past that is a lie.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Reads a deflated `.npy` entry of `packed` compressed bytes (already
/// checked to lie inside the archive).
fn read_deflated(
    entry: &mut impl Read,
    packed: u64,
    declared: u64,
    path: &str,
    name: &str,
) -> Result<HostTensor, TensorIoError> {
    let at = format!("{path}[{name}]");
    let lie = |what: String| TensorIoError::NpzEntrySize {
        path: path.to_string(),
        entry: name.to_string(),
        what,
    };
    if declared > packed.saturating_mul(DEFLATE_MAX_RATIO) {
        return Err(lie(format!(
            "declares {declared} bytes from {packed} compressed ones, more than \
             DEFLATE can expand to (at most {DEFLATE_MAX_RATIO}:1)"
        )));
    }
    let io = |source: std::io::Error| TensorIoError::Io {
        path: at.clone(),
        source,
    };
    // The header first: its length from the first bytes, then the dict.
    let mut head = Vec::new();
    read_up_to(entry, npy::PREFIX_LEN as u64, &mut head).map_err(io)?;
    let header_len = npy::header_len(&head, &at)?;
    read_up_to(
        entry,
        header_len.saturating_sub(head.len()) as u64,
        &mut head,
    )
    .map_err(io)?;
    let h = parse_header(&head, &at)?;
    let held = declared.saturating_sub(h.len as u64);
    if held != h.data_len as u64 {
        return Err(h.wrong_size(held, &at));
    }
    // Then the data, into a buffer that starts no larger than the bytes in
    // the file could fill and grows as decompressed bytes arrive.
    let mut data = Vec::with_capacity(h.data_len.min(packed.saturating_mul(2) as usize));
    read_up_to(entry, h.data_len as u64 + 1, &mut data).map_err(io)?;
    if data.len() > h.data_len {
        return Err(lie(format!(
            "holds more than the {declared} bytes it declares"
        )));
    }
    if data.len() < h.data_len {
        return Err(lie(format!(
            "declares {declared} bytes but ends after {}",
            h.len + data.len()
        )));
    }
    decode_data(&h, &data, &at)
}

/// Appends up to `n` bytes of `r` to `buf`; fewer at the end of `r`.
/// Reading to the end is what makes `zip` check the entry's CRC.
fn read_up_to(r: &mut impl Read, n: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    r.take(n).read_to_end(buf).map(drop)
}

/// The bytes of an uncompressed `.npz` archive holding `arrays` (entry
/// `<key>.npy` each, in the order given), readable by `numpy.load`. A key
/// given twice with equal arrays is written once (a graph may list an
/// output twice); with different arrays it is an error, and so is a key
/// too long for ZIP (64 KiB with its `.npy`).
pub fn npz_to_bytes(arrays: &[(String, HostTensor)]) -> Result<Vec<u8>, TensorIoError> {
    let mut seen: BTreeMap<&str, &HostTensor> = BTreeMap::new();
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (key, t) in arrays {
        let refuse = |what: &str| TensorIoError::NpzWrite {
            key: key.clone(),
            what: what.to_string(),
        };
        if let Some(&prev) = seen.get(key.as_str()) {
            if prev != t {
                return Err(refuse("given twice with different contents"));
            }
            continue;
        }
        seen.insert(key, t);
        let name = format!("{key}.npy");
        if name.len() > u16::MAX as usize {
            return Err(refuse("the name is longer than ZIP allows (65535 bytes)"));
        }
        let data = npy_to_bytes(t);
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            // A fixed time, so the same arrays give the same bytes.
            .last_modified_time(DateTime::default())
            .large_file(data.len() as u64 >= zip::ZIP64_BYTES_THR);
        w.start_file(name, opts)
            .and_then(|()| Ok(w.write_all(&data)?))
            .expect("invariant: a checked entry is written to memory without error");
    }
    let out = w
        .finish()
        .expect("invariant: an archive in memory is finished without error");
    Ok(out.into_inner())
}

pub fn write_npz(
    path: impl AsRef<Path>,
    arrays: &[(String, HostTensor)],
) -> Result<(), TensorIoError> {
    let path = path.as_ref();
    fs::write(path, npz_to_bytes(arrays)?).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })
}
