//! Type and shape facts from tract's inference analysis, for the
//! `shape-inference` pass.
//!
//! The model is loaded as a tract `InferenceModel` (ONNX names are outlet
//! labels there), given concrete facts for the inputs the caller fixes, and
//! analysed *obstinately*: tract's rule solver keeps going past nodes it
//! cannot analyse (an op it does not implement, say), so every fact it could
//! derive elsewhere is still reported. Facts tract derives are sound — the
//! solver only unifies what the ops' rules imply — so a missing entry means
//! "unknown", never "wrong".

use std::collections::BTreeMap;

use tract_onnx::prelude::{DatumType, InferenceModelExt, OutletId, TDim};
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid, ShapeFactoid};

use super::RuntimeError;
use crate::ir::types::Dim;
use crate::ir::Model;
use crate::proto::tensor_proto::DataType;

/// Fixed input shapes: `input name → dims`.
pub type InputShapes = BTreeMap<String, Vec<usize>>;

/// What tract knows of one value: ONNX element type code (0 when unknown)
/// and dims (`None` when the rank is unknown).
pub type Fact = (i32, Option<Vec<Dim>>);

/// ONNX element type code for a tract datum type; `TDim` (tract's type for
/// shape computations) is ONNX int64.
fn datum_to_onnx(dt: DatumType) -> i32 {
    use DataType as D;
    (match dt.unquantized() {
        DatumType::F32 => D::Float,
        DatumType::F64 => D::Double,
        DatumType::F16 => D::Float16,
        DatumType::I64 | DatumType::TDim => D::Int64,
        DatumType::I32 => D::Int32,
        DatumType::I16 => D::Int16,
        DatumType::I8 => D::Int8,
        DatumType::U64 => D::Uint64,
        DatumType::U32 => D::Uint32,
        DatumType::U16 => D::Uint16,
        DatumType::U8 => D::Uint8,
        DatumType::Bool => D::Bool,
        DatumType::String => D::String,
        _ => D::Undefined,
    }) as i32
}

/// A tract dimension as an IR dimension. Compound expressions (`2*N`,
/// `N+1`) become unknown: ONNX's `dim_param` is a bare symbol, and writing
/// an expression there would read as an unrelated symbol to other tools.
fn dim(d: &GenericFactoid<TDim>) -> Dim {
    match d {
        GenericFactoid::Only(TDim::Val(v)) => Dim::Known(*v),
        GenericFactoid::Only(TDim::Sym(s)) => Dim::Symbol(s.to_string()),
        _ => Dim::Unknown,
    }
}

fn dims(s: &ShapeFactoid) -> Option<Vec<Dim>> {
    if s.is_open() {
        None
    } else {
        Some(s.dims().map(dim).collect())
    }
}

// ---- infer_facts: added for `shape-inference` (passes/shape_inference.rs) ----

/// Type and shape facts for every value tract can name, by ONNX value name.
///
/// `input_shapes` fixes the shape of the inputs it lists; others keep their
/// declared, possibly symbolic, shape. The model's `value_info` is always
/// ignored: the facts derive from the inputs and the ops alone, so a stale
/// or wrong annotation is reported against rather than propagated (the
/// caller compares). Errors only when tract cannot
/// load the model or an input name is unknown; values tract could not
/// analyse are absent or partial in the result.
pub fn infer_facts(
    model: &Model,
    input_shapes: &InputShapes,
) -> Result<BTreeMap<String, Fact>, RuntimeError> {
    let model_name = super::load::model_name(model);
    super::guard::catch(|| facts(model, input_shapes, &model_name)).unwrap_or_else(|p| {
        Err(super::runner::panicked(
            &model_name,
            super::PanicSite::Loading,
            p,
        ))
    })
}

/// [`infer_facts`], under the panic boundary.
fn facts(
    model: &Model,
    input_shapes: &InputShapes,
    model_name: &str,
) -> Result<BTreeMap<String, Fact>, RuntimeError> {
    let load = super::load::load_error(model_name);
    let lowering = super::lower::for_tract(model);
    let model = lowering.as_ref().map_or(model, |(m, _)| m);
    let (mut im, input_names, _) =
        super::load::load_inference(model, true, &super::load::FLOAT_TYPES).map_err(&load)?;
    for (name, shape) in input_shapes {
        let ix = input_names.iter().position(|n| n == name).ok_or_else(|| {
            RuntimeError::UnknownInput {
                model: model_name.to_string(),
                name: name.clone(),
                known: input_names.join(", "),
            }
        })?;
        let mut fact = im.input_fact(ix).map_err(&load)?.clone();
        fact.shape = ShapeFactoid::closed(
            shape
                .iter()
                .map(|&d| GenericFactoid::Only(TDim::from(d)))
                .collect(),
        );
        im.set_input_fact(ix, fact).map_err(&load)?;
    }
    // Obstinate: keep analysing past nodes tract cannot type; the first
    // such error is returned at the end and deliberately dropped here,
    // since partial facts are what the caller wants.
    let _ = im.analyse(true);
    let mut out = BTreeMap::new();
    for node in im.nodes() {
        for slot in 0..node.outputs.len() {
            let outlet = OutletId::new(node.id, slot);
            let name = match im.outlet_label(outlet) {
                Some(l) => l.to_string(),
                None if slot == 0 => node.name.clone(),
                None => continue,
            };
            let fact = &node.outputs[slot].fact;
            let dt = fact.datum_type.concretize().map(datum_to_onnx).unwrap_or(0);
            let d = dims(&fact.shape);
            if dt == 0 && d.is_none() {
                continue;
            }
            out.insert(name, (dt, d));
        }
    }
    Ok(out)
}

// ---- end infer_facts ----
