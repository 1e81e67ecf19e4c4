//! From the IR to a tract model: the protobuf hand-over with tract's
//! wrong defaults spelled out and large weights kept out of it, input facts,
//! captured outputs, and the typed, optimised model a [`Runner`] plans.
//!
//! [`Runner`]: super::Runner

use std::collections::BTreeSet;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, OutletId, TractError,
    TractResult, TypedModel,
};
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;

use super::{fake_quant, weights, RunOptions, RuntimeError};
use crate::ir::Model;
use crate::proto::dtype_name;
use crate::proto::tensor_proto::DataType;

/// The model's name in messages: its graph's name, or `model`.
pub(super) fn model_name(model: &Model) -> String {
    match model.graph.shell.name() {
        "" => "model".to_string(),
        n => n.to_string(),
    }
}

/// Turns tract's errors while loading `model_name` into [`RuntimeError::Load`].
pub(super) fn load_error(model_name: &str) -> impl Fn(TractError) -> RuntimeError + '_ {
    move |e| RuntimeError::Load {
        model: model_name.to_string(),
        detail: chain(&e),
    }
}

/// Tract's error chain as one line: `outer: cause: root cause`.
pub(super) fn chain(e: &TractError) -> String {
    format!("{e:#}")
}

/// The typed model [`typed_model`] builds for a runner, and what it did.
pub(super) struct Typed {
    pub model: TypedModel,
    /// Graph outputs, then the captured tensors, in outlet order.
    pub output_names: Vec<String>,
    /// Activation Q/DQ pairs run as one op ([`RunOptions::fuse_qdq`]).
    pub fused_qdq: usize,
    /// Constant DequantizeLinear nodes folded
    /// ([`RunOptions::fold_weight_dequantize`]).
    pub folded_dq: usize,
    /// What [`super::lower::for_tract`] rewrote first.
    pub lowered: super::lower::Lowered,
}

/// Loads `model` into tract as `opts` ask, up to the typed (and, if asked,
/// optimised) model: load, fix input facts, select outputs, put the
/// weights back, then type and transform.
pub(super) fn typed_model(
    model: &Model,
    opts: &RunOptions,
    model_name: &str,
) -> Result<Typed, RuntimeError> {
    let load = load_error(model_name);
    let lowering = super::lower::for_tract(model);
    let (model, lowered) = match &lowering {
        Some((m, l)) => (m, *l),
        None => (model, super::lower::Lowered::default()),
    };
    let ignore_vi = opts
        .ignore_value_info
        .unwrap_or(!opts.input_shapes.is_empty());
    let (mut im, input_names, weights_moved) =
        load_inference(model, ignore_vi, &[DataType::Float as i32]).map_err(&load)?;
    set_input_facts(&mut im, &input_names, &opts.input_shapes, model_name)?;
    let output_names = select_outputs(&mut im, model, &opts.extra_outputs, model_name)?;
    let folded_dq = restore_weights(&mut im, model, &weights_moved, opts.fold_weight_dequantize)
        .map_err(&load)?;
    let (typed, fused_qdq) = into_typed(im, opts).map_err(&load)?;
    Ok(Typed {
        model: typed,
        output_names,
        fused_qdq,
        folded_dq,
        lowered,
    })
}

/// Fixed input facts: `(input name, shape, ONNX dtype)`, dtype `0` keeping
/// the declared one.
fn set_input_facts(
    im: &mut InferenceModel,
    input_names: &[String],
    input_shapes: &[(String, Vec<usize>, i32)],
    model_name: &str,
) -> Result<(), RuntimeError> {
    let load = load_error(model_name);
    for (name, shape, dtype) in input_shapes {
        let ix = input_names.iter().position(|n| n == name).ok_or_else(|| {
            RuntimeError::UnknownInput {
                model: model_name.to_string(),
                name: name.clone(),
                known: input_names.join(", "),
            }
        })?;
        let dt = if *dtype == 0 {
            use tract_onnx::prelude::Fact;
            im.input_fact(ix).map_err(&load)?.datum_type()
        } else {
            Some(
                onnx_to_datum(*dtype).ok_or_else(|| RuntimeError::UnsupportedDtype {
                    name: name.clone(),
                    dtype: *dtype,
                })?,
            )
        };
        let fact = match dt {
            Some(dt) => InferenceFact::dt_shape(dt, shape.clone()),
            None => InferenceFact::shape(shape.clone()),
        };
        im.set_input_fact(ix, fact).map_err(&load)?;
    }
    Ok(())
}

/// Captured intermediates become extra model outputs, after the graph's;
/// returns the names of all outputs.
fn select_outputs(
    im: &mut InferenceModel,
    model: &Model,
    extra_outputs: &[String],
    model_name: &str,
) -> Result<Vec<String>, RuntimeError> {
    let load = load_error(model_name);
    let mut outlets = im.output_outlets().map_err(&load)?.to_vec();
    let mut output_names: Vec<String> = model
        .graph
        .outputs()
        .iter()
        .map(|p| p.info.name().to_string())
        .collect();
    for name in extra_outputs {
        let outlet = im
            .find_outlet_label(name)
            .or_else(|| im.node_by_name(name).ok().map(|n| n.id.into()))
            .ok_or_else(|| RuntimeError::UnknownTensor {
                model: model_name.to_string(),
                name: name.clone(),
            })?;
        outlets.push(outlet);
        output_names.push(name.clone());
    }
    im.select_output_outlets(&outlets).map_err(&load)?;
    Ok(output_names)
}

/// The weights handed over as inputs: back to constants, the real inputs
/// the only inputs again. Also folds the constant DequantizeLinear nodes
/// when `fold_dequantize`; returns how many.
fn restore_weights(
    im: &mut InferenceModel,
    model: &Model,
    weights_moved: &[String],
    fold_dequantize: bool,
) -> TractResult<usize> {
    let real: Vec<OutletId> = im
        .input_outlets()?
        .iter()
        .copied()
        .filter(|o| !weights_moved.contains(&im.node(o.node).name))
        .collect();
    im.set_input_outlets(&real)?;
    weights::substitute(im, weights::float_constants(model, weights_moved))?;
    if fold_dequantize {
        weights::substitute(im, weights::dequantized_constants(model))
    } else {
        Ok(0)
    }
}

/// Types the inference model, then applies the float16 widening, the Q/DQ
/// fusion and tract's optimisation `opts` ask for; returns it with the
/// number of Q/DQ pairs fused.
fn into_typed(im: InferenceModel, opts: &RunOptions) -> TractResult<(TypedModel, usize)> {
    let mut typed: TypedModel = im.into_typed()?;
    if opts.f16_to_f32 {
        typed.transform(&FloatPrecisionTranslator::new(
            DatumType::F16,
            DatumType::F32,
        ))?;
    }
    let fused_qdq = if opts.fuse_qdq {
        fake_quant::fuse(&mut typed)?
    } else {
        0
    };
    if opts.optimize {
        typed = typed.into_optimized()?;
    }
    Ok((typed, fused_qdq))
}

/// Hands `model` to tract as an inference model, with the ONNX defaults
/// tract 0.23.9 gets wrong spelled out first; returns it with the names of
/// its inputs in order. Every load goes through here, so a workaround for
/// tract applies to running, folding and shape inference alike.
///
/// Large initializers of the types in `weights_as_inputs` are handed over
/// as typed graph inputs instead (appended after the real inputs); their
/// names are returned third. That is enough for type and shape analysis,
/// which never reads weight values; [`Runner::new`](super::Runner::new) then puts the values
/// in as constants built straight from the model's bytes. Either way tract
/// never gets the weights through protobuf, which copied each one three
/// times (encoded, decoded, converted) — and on this kind of VM freshly
/// touched memory is what costs (MiniLM's shape inference took 30 ms or
/// 450 ms depending on it; its calibration 0.25 s or 0.5 s).
#[allow(clippy::type_complexity)]
pub(super) fn load_inference(
    model: &Model,
    ignore_value_info: bool,
    weights_as_inputs: &[i32],
) -> tract_onnx::prelude::TractResult<(
    tract_onnx::prelude::InferenceModel,
    Vec<String>,
    Vec<String>,
)> {
    let mut proto = crate::onnx::export::to_proto(model);
    let mut moved = Vec::new();
    if let Some(g) = proto.graph.as_mut() {
        spell_out_defaults(&mut g.node);
        moved = move_weights_to_inputs(g, weights_as_inputs);
    }
    // Encoded, then decoded into tract's own protobuf types (tract-onnx
    // builds them with prost 0.14 too). Decoding here rather than through
    // `model_for_read` spares tract's `read_to_end` copy of the encoding,
    // and the encoding is freed before tract converts the tensors: one
    // copy of the weights fewer at the peak.
    let pb: tract_onnx::pb::ModelProto = {
        let bytes = prost::Message::encode_to_vec(&proto);
        drop(proto);
        prost::Message::decode(bytes.as_slice())?
    };
    let im = tract_onnx::onnx()
        .with_ignore_value_info(ignore_value_info)
        .model_for_proto_model(&pb)?;
    drop(pb);
    let names = im
        .input_outlets()?
        .iter()
        .map(|o| im.node(o.node).name.clone())
        .collect();
    Ok((im, names, moved))
}

/// Every floating-point type: what shape inference hands over as inputs.
pub(super) const FLOAT_TYPES: [i32; 4] = [
    DataType::Float as i32,
    DataType::Double as i32,
    DataType::Float16 as i32,
    DataType::Bfloat16 as i32,
];

/// Initializers of more than [`WEIGHT_ELEMENTS`] elements whose type is in
/// `types` become graph inputs of the same type and shape (see
/// [`load_inference`]); returns their names. Shape computations read small
/// integer tensors, never these.
fn move_weights_to_inputs(g: &mut crate::proto::GraphProto, types: &[i32]) -> Vec<String> {
    use crate::proto::{type_proto, TensorShapeProto, TypeProto, ValueInfoProto};
    const WEIGHT_ELEMENTS: i64 = 4096;
    if types.is_empty() {
        return vec![];
    }
    let declared: BTreeSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    let (weights, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut g.initializer)
        .into_iter()
        .partition(|t| {
            types.contains(&t.data_type())
                && t.dims.iter().all(|&d| d >= 0)
                && t.dims.iter().product::<i64>() > WEIGHT_ELEMENTS
        });
    g.initializer = keep;
    let moved = weights.iter().map(|t| t.name().to_string()).collect();
    for t in weights {
        if declared.contains(t.name()) {
            continue;
        }
        let dims = t
            .dims
            .iter()
            .map(|&d| crate::proto::tensor_shape_proto::Dimension {
                value: Some(crate::proto::tensor_shape_proto::dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect();
        g.input.push(ValueInfoProto {
            name: t.name.clone(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: t.data_type,
                    shape: Some(TensorShapeProto { dim: dims }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    moved
}

/// Writes out ONNX attribute defaults tract 0.23.9 gets wrong:
/// `ConstantOfShape` without `value` makes float32 zeros, where tract's
/// loader uses an f64 zero (`rctensor0(0.0)`) and every type downstream —
/// a folded initializer, an inferred value_info — would follow it.
fn spell_out_defaults(nodes: &mut [crate::proto::NodeProto]) {
    use crate::proto::attribute_proto::AttributeType;
    for n in nodes {
        let default_domain = matches!(n.domain(), "" | "ai.onnx");
        if default_domain
            && n.op_type() == "ConstantOfShape"
            && !n.attribute.iter().any(|a| a.name() == "value")
        {
            n.attribute.push(crate::proto::AttributeProto {
                name: Some("value".into()),
                r#type: Some(AttributeType::Tensor as i32),
                t: Some(crate::proto::TensorProto {
                    data_type: Some(DataType::Float as i32),
                    dims: vec![1],
                    float_data: vec![0.0],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
}

pub(super) fn onnx_to_datum(dtype: i32) -> Option<DatumType> {
    use DataType::*;
    Some(match DataType::try_from(dtype).ok()? {
        Float => DatumType::F32,
        Double => DatumType::F64,
        Float16 => DatumType::F16,
        Int64 => DatumType::I64,
        Int32 => DatumType::I32,
        Int16 => DatumType::I16,
        Int8 => DatumType::I8,
        Uint64 => DatumType::U64,
        Uint32 => DatumType::U32,
        Uint16 => DatumType::U16,
        Uint8 => DatumType::U8,
        Bool => DatumType::Bool,
        _ => return None,
    })
}

/// ONNX's name for a tract element type where one exists.
pub(super) fn datum_name(dt: DatumType) -> String {
    let code = match dt.unquantized() {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I64 => DataType::Int64,
        DatumType::I32 => DataType::Int32,
        DatumType::I16 => DataType::Int16,
        DatumType::I8 => DataType::Int8,
        DatumType::U64 => DataType::Uint64,
        DatumType::U32 => DataType::Uint32,
        DatumType::U16 => DataType::Uint16,
        DatumType::U8 => DataType::Uint8,
        DatumType::Bool => DataType::Bool,
        other => return format!("{other:?}"),
    };
    dtype_name(code as i32).to_string()
}
