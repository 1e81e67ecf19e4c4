//! Tensor bytes that live in a memory-mapped file: external data.
//!
//! Files are mapped once and shared by every tensor that points into them,
//! so a model with gigabytes of weights imports without copying them. Which
//! files may be mapped (a `location` must stay inside the model's
//! directory) is `crate::onnx::external`'s business; this is only the
//! storage a [`crate::ir::Tensor`] can point into.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

/// A file mapped for reading.
pub struct MappedFile {
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
}

impl MappedFile {
    pub fn open(path: &Path) -> std::io::Result<Arc<Self>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        // An empty file cannot be mapped; it can only back empty tensors.
        let map = if len == 0 {
            None
        } else {
            Some(map_file(&file)?)
        };
        Ok(Arc::new(MappedFile {
            path: path.to_path_buf(),
            file,
            map,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// Maps a whole file read-only.
///
/// `unsafe` because the mapping is only sound while no other process
/// truncates or rewrites the file. onnxq never writes to files it has mapped
/// (outputs go to a fresh temporary file that is renamed into place), and a
/// model being rewritten under a running compiler is outside what any reader
/// of ONNX files can defend against; the copy-free import of multi-gigabyte
/// weights is the reason to accept it.
#[allow(unsafe_code)]
pub fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: read-only mapping of a file onnxq does not modify; see above.
    unsafe { Mmap::map(file) }
}

/// A byte range of a mapped file: the elements of one external tensor.
pub struct ExternalSpan {
    file: Arc<MappedFile>,
    offset: usize,
    len: usize,
}

impl ExternalSpan {
    pub fn new(file: Arc<MappedFile>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= file.len()).then_some(ExternalSpan { file, offset, len })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.file.bytes()[self.offset..self.offset + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Copies the bytes to `w` with positioned reads, so that exporting a
    /// large external tensor does not fault the whole mapping into memory.
    pub fn copy_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = self.offset as u64;
        let end = (self.offset + self.len) as u64;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            self.file.file.read_exact_at(&mut buf[..n], pos)?;
            w.write_all(&buf[..n])?;
            pos += n as u64;
        }
        Ok(())
    }
}

impl fmt::Debug for ExternalSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ExternalSpan({}:{}+{})",
            self.file.path.display(),
            self.offset,
            self.len
        )
    }
}

impl PartialEq for ExternalSpan {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}
