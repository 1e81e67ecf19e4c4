//! `.npz`: a ZIP archive of `.npy` files, as `numpy.savez` writes it.

use std::fs;
use std::path::Path;

use super::{npy_from_bytes, npy_to_bytes, show, HostTensor, TensorIoError};

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
