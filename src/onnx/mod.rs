//! The two doors between files and the IR — [`import`] (file →
//! [`crate::ir::Model`]) and [`export`] (IR → file), with [`external`]
//! handling tensors stored beside the model. The protobuf bindings are
//! [`crate::proto`], re-exported here for readers of ONNX files.

pub use crate::proto::*;

pub mod export;
pub mod external;
pub mod import;
