//! Tensors on the host: the data a model is run on, and the files it comes in.
//!
//! [`HostTensor`] is an owned n-dimensional array of one of the element types
//! onnxq feeds to or reads back from the runtime. It is read from and written
//! to three file formats:
//!
//! * `.npy` — NumPy's array format (versions 1, 2 and 3 of the header; C or
//!   Fortran order; little-, big- or no-endian descriptors).
//! * `.npz` — a ZIP archive of `.npy` files, as written by `numpy.savez`
//!   (stored entries) or `numpy.savez_compressed` (deflated ones); ZIP64
//!   records, which NumPy always writes, are understood. onnxq writes
//!   stored entries. Arrays are keyed by entry name without the `.npy`
//!   suffix and returned sorted by key, so the order never depends on the
//!   order in the archive. Sizes an archive or header declares are checked
//!   against the bytes present before anything is allocated by them.
//! * `.pb` — one serialized ONNX `TensorProto`, the format of the ONNX test
//!   suite's `test_data_set_*/input_*.pb`; data in `raw_data` or in the typed
//!   fields. The tensor's own name comes back with it.
//!
//! The `.npy` format is implemented here rather than through `ndarray-npy`,
//! because that crate has no float16 element and picks the element type at
//! compile time, while onnxq learns a file's type only by reading it; the
//! ZIP container is the `zip` crate's.
//!
//! | file | what |
//! |---|---|
//! | `host.rs` | [`HostTensor`], its element types and byte encodings |
//! | `npy.rs` | `.npy` headers and data |
//! | `npz.rs` | `.npz` archives |
//! | `pb.rs` | `.pb` `TensorProto` files |
//! | `args.rs` | `NAME=FILE` command-line inputs |

use std::path::Path;

use crate::ir::TensorError;

mod args;
mod host;
mod npy;
mod npz;
mod pb;

pub use args::{parse_input_arg, read_inputs_arg};
pub use host::HostTensor;
pub use npy::{npy_from_bytes, npy_to_bytes, read_npy, write_npy};
pub use npz::{npz_from_bytes, npz_to_bytes, read_npz, write_npz};
pub use pb::{pb_from_bytes, read_pb, write_pb};

/// What went wrong reading or writing tensors. Every variant names the file
/// (or command-line argument, or array) concerned.
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
    #[error("{path}: entry '{entry}' is compressed with {method}; onnxq reads stored and deflated entries (numpy.savez, numpy.savez_compressed)")]
    NpzCompression {
        path: String,
        entry: String,
        method: String,
    },
    /// An entry's sizes do not hold up: checked before anything is
    /// allocated by them.
    #[error("{path}: entry '{entry}' {what}")]
    NpzEntrySize {
        path: String,
        entry: String,
        what: String,
    },
    #[error("cannot write array '{key}' to an .npz archive: {what}")]
    NpzWrite { key: String, what: String },
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
