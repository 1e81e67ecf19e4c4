//! IR → ONNX file.
//!
//! Nodes are written in the graph's deterministic topological order, every
//! field onnxq does not interpret comes back from where import kept it, and
//! files are written to a temporary name and renamed into place, so a failed
//! or interrupted export never leaves a half-written model.
//!
//! Large tensors go to an external data file beside the model when asked
//! (`--external-data[=MIN_BYTES]`) and always when the model would pass
//! protobuf's 2 GiB message limit. The model file is streamed tensor by
//! tensor: exporting never holds a second copy of all the weights.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

use super::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::ir::{Graph, Model, NodeKind, Tensor};

/// Protobuf refuses messages of 2 GiB or more; stay clear with a margin for
/// everything that is not tensor data.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - (64 << 20);

/// Tensors smaller than this stay inline even when external data is forced
/// by the size limit: small constants (shapes, scales) belong in the graph.
pub const DEFAULT_EXTERNAL_MIN_BYTES: usize = 1024;

/// How to write a model.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Put tensors of at least this many bytes in the external data file.
    /// `None`: inline, unless the model would exceed the protobuf limit.
    pub external_min_bytes: Option<usize>,
}

/// What a write did.
#[derive(Clone, Debug, Default)]
pub struct WriteSummary {
    pub model_bytes: u64,
    /// The external data file, if one was written, and its size.
    pub external: Option<(PathBuf, u64)>,
    pub external_tensors: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: cannot write ({source})")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: output would replace the input model; pass --in-place (or choose another -o) to allow it")]
    WouldOverwrite { path: String },
}

/// The model as an in-memory proto with every tensor inline. External data
/// is read in; used to hand a model to the runtime and in tests.
pub fn to_proto(model: &Model) -> ModelProto {
    let mut mp = model.meta.clone();
    mp.graph = Some(graph_proto(&model.graph, &mut |t| t.to_inline_proto()));
    mp
}

/// The model encoded to bytes, all tensors inline.
pub fn to_bytes(model: &Model) -> Vec<u8> {
    to_proto(model).encode_to_vec()
}

/// Builds the graph proto; `tensor` decides how each dense initializer is
/// written (inline or pointing at external data).
pub fn graph_proto(g: &Graph, tensor: &mut dyn FnMut(&Tensor) -> TensorProto) -> GraphProto {
    let mut gp = graph_without_initializers(g);
    for n in g.initializer_nodes() {
        match g.node(n).kind() {
            NodeKind::Initializer(t) => gp.initializer.push(tensor(t)),
            NodeKind::SparseInitializer(_) => {}
            _ => unreachable!(),
        }
    }
    gp
}

/// Everything of the graph proto except dense initializers.
fn graph_without_initializers(g: &Graph) -> GraphProto {
    let mut gp = g.shell.clone();
    let orphans = std::mem::take(&mut gp.value_info);
    for n in g.topo_order() {
        let node = g.node(n);
        match node.kind() {
            NodeKind::Op(p) => gp.node.push(node_proto(g, p, node)),
            NodeKind::SparseInitializer(sp) => gp.sparse_initializer.push((**sp).clone()),
            _ => {}
        }
    }
    gp.input = g.inputs().iter().map(|p| p.info.clone()).collect();
    gp.output = g.outputs().iter().map(|p| p.info.clone()).collect();
    gp.value_info = g
        .value_info_values()
        .into_iter()
        .map(|v| {
            g.value(v)
                .info
                .as_ref()
                .expect("invariant: listed values have info")
                .1
                .clone()
        })
        .collect::<Vec<ValueInfoProto>>();
    gp.value_info.extend(orphans);
    gp
}

fn node_proto(g: &Graph, p: &NodeProto, node: &crate::ir::Node) -> NodeProto {
    let mut np = p.clone();
    np.input = node
        .inputs()
        .iter()
        .map(|v| v.map(|v| g.name(v).to_string()).unwrap_or_default())
        .collect();
    np.output = node
        .outputs()
        .iter()
        .map(|v| v.map(|v| g.name(v).to_string()).unwrap_or_default())
        .collect();
    np
}

/// Writes `model` to `path` (and its external data beside it), atomically.
pub fn write_model(
    model: &Model,
    path: &Path,
    opts: &ExportOptions,
) -> Result<WriteSummary, ExportError> {
    let io = |source| ExportError::Io {
        path: path.display().to_string(),
        source,
    };
    let g = &model.graph;
    let tensors: Vec<&Tensor> = g
        .initializer_nodes()
        .into_iter()
        .filter_map(|n| g.node(n).initializer())
        .collect();
    let total: u64 = tensors.iter().map(|t| t.nbytes() as u64).sum();
    let min = match opts.external_min_bytes {
        Some(m) => Some(m),
        None if total > PROTOBUF_LIMIT => Some(DEFAULT_EXTERNAL_MIN_BYTES),
        None => None,
    };
    let goes_external = |t: &Tensor| -> bool {
        min.is_some_and(|m| {
            t.nbytes() >= m && t.is_raw() && crate::proto::dtype_bits(t.dtype()).is_some()
        })
    };

    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "model.onnx".into());
    let data_name = format!("{file_name}.data");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let data_path = dir.join(&data_name);

    let mut summary = WriteSummary::default();
    // External data first: the model file must never point at a data file
    // that is not there yet.
    let mut placements: Vec<Option<(u64, u64)>> = vec![None; tensors.len()];
    let mut data_tmp: Option<TempFile> = None;
    if tensors.iter().any(|t| goes_external(t)) {
        let mut tmp = TempFile::create(&data_path).map_err(io)?;
        let mut pos: u64 = 0;
        {
            let mut w = BufWriter::with_capacity(1 << 20, tmp.file());
            for (i, t) in tensors.iter().enumerate() {
                if !goes_external(t) {
                    continue;
                }
                // Page-align large tensors so runtimes can map them directly.
                let align: u64 = if t.nbytes() >= 1 << 20 { 4096 } else { 64 };
                let pad = (align - pos % align) % align;
                w.write_all(&vec![0u8; pad as usize]).map_err(io)?;
                pos += pad;
                let len = write_tensor_bytes(t, &mut w).map_err(io)?;
                placements[i] = Some((pos, len));
                pos += len;
                summary.external_tensors += 1;
            }
            w.flush().map_err(io)?;
        }
        summary.external = Some((data_path.clone(), pos));
        data_tmp = Some(tmp);
    }

    // The model: everything but dense initializers is small and built in
    // memory; initializers are streamed one at a time.
    let mut meta = model.meta.clone();
    meta.graph = None;
    let shell = graph_without_initializers(g);
    let entries: Vec<InitEntry> = tensors
        .iter()
        .zip(&placements)
        .map(|(t, p)| match p {
            Some((off, len)) => InitEntry::Proto(t.to_external_proto(&data_name, *off, *len)),
            None => InitEntry::inline(t),
        })
        .collect();
    let graph_len: u64 = shell.encoded_len() as u64
        + entries
            .iter()
            .map(|e| key_len(5) as u64 + encoded_len_varint(e.len()) as u64 + e.len())
            .sum::<u64>();

    let mut tmp = TempFile::create(path).map_err(io)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.file());
        let mut head = meta.encode_to_vec();
        encode_key(7, WireType::LengthDelimited, &mut head);
        encode_varint(graph_len, &mut head);
        head.extend_from_slice(&shell.encode_to_vec());
        w.write_all(&head).map_err(io)?;
        for e in &entries {
            let mut buf = Vec::new();
            encode_key(5, WireType::LengthDelimited, &mut buf);
            encode_varint(e.len(), &mut buf);
            w.write_all(&buf).map_err(io)?;
            e.write(&mut w).map_err(io)?;
        }
        w.flush().map_err(io)?;
        summary.model_bytes = head.len() as u64 + (graph_len - shell.encoded_len() as u64);
    }
    if let Some(d) = data_tmp {
        d.commit().map_err(io)?;
    }
    tmp.commit().map_err(io)?;
    Ok(summary)
}

/// One dense initializer on its way into the model file.
enum InitEntry<'a> {
    /// Fully built proto (inline data, or a pointer to external data).
    Proto(TensorProto),
    /// An external-sourced tensor being inlined: the proto without data,
    /// followed by a streamed `raw_data` field.
    Streamed {
        head: TensorProto,
        tensor: &'a Tensor,
        data_len: u64,
    },
}

impl<'a> InitEntry<'a> {
    fn inline(t: &'a Tensor) -> Self {
        match t.external() {
            None => InitEntry::Proto(t.proto().clone()),
            Some(ext) => {
                let mut head = t.proto().clone();
                head.external_data.clear();
                head.data_location = None;
                head.raw_data = None;
                InitEntry::Streamed {
                    head,
                    tensor: t,
                    data_len: ext.len() as u64,
                }
            }
        }
    }

    fn len(&self) -> u64 {
        match self {
            InitEntry::Proto(p) => p.encoded_len() as u64,
            InitEntry::Streamed { head, data_len, .. } => {
                head.encoded_len() as u64
                    + key_len(9) as u64
                    + encoded_len_varint(*data_len) as u64
                    + data_len
            }
        }
    }

    fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        match self {
            InitEntry::Proto(p) => w.write_all(&p.encode_to_vec()),
            InitEntry::Streamed {
                head,
                tensor,
                data_len,
            } => {
                let mut buf = head.encode_to_vec();
                encode_key(9, WireType::LengthDelimited, &mut buf);
                encode_varint(*data_len, &mut buf);
                w.write_all(&buf)?;
                tensor
                    .external()
                    .expect("invariant: streamed tensors are external")
                    .copy_to(w)
            }
        }
    }
}

/// Writes a tensor's packed little-endian bytes; returns how many.
fn write_tensor_bytes(t: &Tensor, w: &mut dyn Write) -> std::io::Result<u64> {
    if let Some(ext) = t.external() {
        ext.copy_to(w)?;
        return Ok(ext.len() as u64);
    }
    let raw: Bytes = match t.raw_bytes() {
        Ok(b) => Bytes::copy_from_slice(&b),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    w.write_all(&raw)?;
    Ok(raw.len() as u64)
}

/// The temporary files being written now: what an interruption removes
/// ([`abandon_and_exit`]). Held while a temporary file is created, renamed
/// or removed, so that none appears or moves while the list is cleared.
static PENDING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic elsewhere while holding it leaves the list as it was.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary file being written and exits with `code`, the
/// list locked to the end: no output is half-written, no temporary file
/// is left, and a rename that already happened left a complete file. For
/// a signal handler (the binary's SIGINT/SIGTERM).
pub fn abandon_and_exit(code: i32) -> ! {
    let list = pending();
    for p in list.iter() {
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(code)
}

/// A file written under a temporary name beside its destination and renamed
/// into place on [`TempFile::commit`]; dropped uncommitted, or abandoned by
/// an interruption, it is removed.
pub struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn create(dest: &Path) -> std::io::Result<Self> {
        let name = dest
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut list = pending();
        let file = File::create(&tmp)?;
        list.push(tmp.clone());
        drop(list);
        Ok(TempFile {
            tmp,
            dest: dest.to_path_buf(),
            file: Some(file),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("invariant: file open until commit")
    }

    pub fn commit(mut self) -> std::io::Result<()> {
        let f = self.file.take().expect("invariant: file open until commit");
        f.sync_all()?;
        drop(f);
        let mut list = pending();
        let renamed = std::fs::rename(&self.tmp, &self.dest);
        if renamed.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        list.retain(|p| p != &self.tmp);
        renamed
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let mut list = pending();
            let _ = std::fs::remove_file(&self.tmp);
            list.retain(|p| p != &self.tmp);
        }
    }
}

/// Writes bytes atomically (temporary file + rename).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut t = TempFile::create(dest)?;
    t.file().write_all(bytes)?;
    t.commit()
}
