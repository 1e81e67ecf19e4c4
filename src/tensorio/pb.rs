//! `.pb`: one serialized ONNX `TensorProto`.

use std::fs;
use std::path::Path;

use prost::Message;

use super::host::elem_size;
use super::{show, HostTensor, TensorIoError};
use crate::ir::{Tensor, TensorError};
use crate::proto::{dtype_name, TensorProto};

/// Reads one serialized ONNX `TensorProto`: its name and elements.
pub fn read_pb(path: impl AsRef<Path>) -> Result<(String, HostTensor), TensorIoError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| TensorIoError::Io {
        path: show(path),
        source,
    })?;
    pb_from_bytes(&bytes, &show(path))
}

/// Parses a serialized `TensorProto`; `path` is only used in messages.
pub fn pb_from_bytes(bytes: &[u8], path: &str) -> Result<(String, HostTensor), TensorIoError> {
    let proto = TensorProto::decode(bytes).map_err(|source| TensorIoError::NotTensorProto {
        path: path.to_string(),
        source,
    })?;
    if !proto.external_data.is_empty() {
        return Err(TensorIoError::Tensor {
            path: path.to_string(),
            source: TensorError::Unsupported {
                name: proto.name().into(),
                dtype: "external data",
            },
        });
    }
    let t = Tensor::from_proto(proto);
    // Shape against data before anything is allocated for it.
    t.validate().map_err(|source| TensorIoError::Tensor {
        path: path.to_string(),
        source,
    })?;
    let name = t.name().to_string();
    if elem_size(t.dtype()).is_none() {
        return Err(TensorIoError::UnsupportedDtype {
            path: path.to_string(),
            dtype: dtype_name(t.dtype()).to_string(),
        });
    }
    let host = HostTensor::from_tensor(&t).map_err(|source| TensorIoError::Tensor {
        path: path.to_string(),
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
