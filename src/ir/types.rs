//! Helpers over `TypeProto`: element types and (possibly symbolic) shapes.

use crate::proto::tensor_shape_proto::{dimension, Dimension};
use crate::proto::type_proto::{self, Tensor as TensorTypeProto};
use crate::proto::{TensorShapeProto, TypeProto};

/// One dimension of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(i64),
    Symbol(String),
    Unknown,
}

/// A tensor type with a known element type and a shape of known rank.
pub fn tensor_type(elem: i32, dims: &[i64]) -> TypeProto {
    tensor_type_dims(
        elem,
        Some(&dims.iter().map(|&d| Dim::Known(d)).collect::<Vec<_>>()),
    )
}

/// A tensor type from [`Dim`]s; `None` for unknown rank.
pub fn tensor_type_dims(elem: i32, dims: Option<&[Dim]>) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(TensorTypeProto {
            elem_type: Some(elem),
            shape: dims.map(|dims| TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| Dimension {
                        value: match d {
                            Dim::Known(v) => Some(dimension::Value::DimValue(*v)),
                            Dim::Symbol(s) => Some(dimension::Value::DimParam(s.clone())),
                            Dim::Unknown => None,
                        },
                        denotation: None,
                    })
                    .collect(),
            }),
        })),
        denotation: None,
    }
}

/// The tensor part of a type, if it is a tensor type.
pub fn as_tensor(t: &TypeProto) -> Option<&TensorTypeProto> {
    match &t.value {
        Some(type_proto::Value::TensorType(tt)) => Some(tt),
        _ => None,
    }
}

/// Element type of a tensor type, 0 when unknown or not a tensor.
pub fn elem_type(t: &TypeProto) -> i32 {
    as_tensor(t).map(|tt| tt.elem_type()).unwrap_or(0)
}

/// Dimensions of a tensor type; `None` if the rank is unknown.
pub fn dims(t: &TypeProto) -> Option<Vec<Dim>> {
    let tt = as_tensor(t)?;
    let shape = tt.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                // Exporters write -1 for "unknown" (see import's check).
                Some(dimension::Value::DimValue(v)) if *v < 0 => Dim::Unknown,
                Some(dimension::Value::DimValue(v)) => Dim::Known(*v),
                Some(dimension::Value::DimParam(s)) => Dim::Symbol(s.clone()),
                None => Dim::Unknown,
            })
            .collect(),
    )
}

/// Fully static shape, if every dimension is a known non-negative number.
pub fn static_dims(t: &TypeProto) -> Option<Vec<usize>> {
    dims(t)?
        .into_iter()
        .map(|d| match d {
            Dim::Known(v) if v >= 0 => Some(v as usize),
            _ => None,
        })
        .collect()
}

/// `(outer, channels, inner)` element counts around `axis`.
pub fn split_axis(dims: &[usize], axis: Option<usize>) -> (usize, usize, usize) {
    match axis {
        None => (1, 1, dims.iter().product()),
        Some(ax) => (
            dims[..ax].iter().product(),
            dims[ax],
            dims[ax + 1..].iter().product(),
        ),
    }
}
