//! `shape-inference`: records the element type and shape of every value
//! tract can infer, as `value_info`.
//!
//! # What
//! Loads the model into tract as an inference model, runs tract's type and
//! shape analysis ([`crate::runtime::infer_facts`]) and writes what it found
//! into the `value_info` entry of each intermediate value and into the
//! declared types of graph outputs: element type and dims, symbolic dims as
//! `dim_param`s (tract's compound expressions such as `2*N` become unknown
//! dims, `?`). What the model already declares is only ever refined: a
//! known dim is never replaced by a symbol or `?`, a declared symbol never
//! renamed, and a fact that contradicts a declaration (another element
//! type, rank or dim) leaves the declaration alone with a remark.
//! Initializers keep their intrinsic types. Results of ops with subgraphs
//! (If, Loop, Scan), and values computed from them, are left alone: tract's
//! facts for them are not reliable.
//!
//! # Example
//! ```text
//! before:  g (float[N,1,4,4] X) => (O)
//!          <float[2,1,3,3] W = {...}>
//!          {
//!            C = Conv <pads: ints = [1, 1, 1, 1]> (X, W)
//!            R = Relu (C)
//!            O = Flatten (R)
//!          }
//! after:   g (float[N,1,4,4] X) => (float[N,32] O)
//!          <float[2,1,3,3] W = {...}, float[N,2,4,4] C, float[N,2,4,4] R>
//!          { … unchanged … }
//! ```
//!
//! # Options
//! None. Input shapes come from the pass context (`--input-shape`): an
//! input listed there whose declared shape has symbolic or unknown dims is
//! analysed at the given shape, and its declared type is specialised to it
//! so that the model's interface and the inferred shapes agree.
//!
//! # Preconditions
//! Tract must be able to load the model. Nodes tract cannot analyse (ops it
//! does not implement) are not an error: their results, and what depends on
//! them, simply get no (or a partial) entry.
//!
//! # Numerics
//! None: only type annotations change.
//!
//! # Errors
//! A context input shape naming no input, or contradicting a fully static
//! declared shape; a model tract cannot load.

use std::collections::{BTreeMap, BTreeSet};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::types::{self, Dim};
use crate::ir::{Model, NodeKind, ValueId};
use crate::proto::{TypeProto, ValueInfoProto};

const NAME: &str = "shape-inference";

#[derive(Debug, Default)]
pub struct ShapeInference;

impl ShapeInference {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>(NAME, o)?;
        Ok(ShapeInference)
    }
}

/// The declared type refined by a fact, `Ok(None)` when nothing changes,
/// `Err` with the contradiction.
fn refine(
    old: Option<&TypeProto>,
    fact: &crate::runtime::Fact,
) -> Result<Option<TypeProto>, String> {
    let (fdt, fdims) = fact;
    let Some(old) = old else {
        if *fdt == 0 {
            return Ok(None);
        }
        return Ok(Some(types::tensor_type_dims(*fdt, fdims.as_deref())));
    };
    if types::as_tensor(old).is_none() {
        return Ok(None);
    }
    let odt = types::elem_type(old);
    let dt = match (odt, *fdt) {
        (0, f) => f,
        (o, 0) => o,
        (o, f) if o == f => o,
        (o, f) => {
            return Err(format!(
                "declared {} but tract infers {}",
                crate::proto::dtype_name(o),
                crate::proto::dtype_name(f)
            ))
        }
    };
    let odims = types::dims(old);
    let dims = match (&odims, fdims) {
        (None, f) => f.clone(),
        (Some(o), None) => Some(o.clone()),
        (Some(o), Some(f)) => {
            if o.len() != f.len() {
                return Err(format!(
                    "declared rank {} but tract infers rank {}",
                    o.len(),
                    f.len()
                ));
            }
            let mut out = Vec::with_capacity(o.len());
            for (i, (a, b)) in o.iter().zip(f).enumerate() {
                out.push(match (a, b) {
                    (Dim::Known(x), Dim::Known(y)) if x != y => {
                        return Err(format!("declared dim {x} at axis {i} but tract infers {y}"))
                    }
                    (Dim::Known(_), _) => a.clone(),
                    (_, Dim::Known(_)) => b.clone(),
                    (Dim::Symbol(_), _) => a.clone(),
                    (Dim::Unknown, _) => b.clone(),
                });
            }
            Some(out)
        }
    };
    if dt == odt && dims == odims {
        return Ok(None);
    }
    if dt == 0 {
        return Ok(None);
    }
    let mut t = types::tensor_type_dims(dt, dims.as_deref());
    // Keep denotations and anything else the old type carried.
    t.denotation = old.denotation.clone();
    Ok(Some(t))
}

/// Context input shapes that apply: those whose input is not already static.
fn applicable_shapes(
    m: &Model,
    cx: &PassContext,
) -> Result<BTreeMap<String, Vec<usize>>, PassError> {
    let g = &m.graph;
    let mut out = BTreeMap::new();
    for (name, shape) in &cx.inputs().input_shapes {
        let port = g
            .inputs()
            .iter()
            .find(|p| p.info.name() == name)
            .ok_or_else(|| PassError::Precondition {
                pass: NAME.into(),
                message: format!(
                    "input shape given for '{name}', which is not a graph input (inputs: {})",
                    g.inputs()
                        .iter()
                        .map(|p| p.info.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let declared = port.info.r#type.as_ref().and_then(types::static_dims);
        match declared {
            Some(d) if d == *shape => {}
            Some(d) => {
                return Err(PassError::Precondition {
                    pass: NAME.into(),
                    message: format!(
                        "input shape {shape:?} for '{name}' contradicts its declared shape {d:?}"
                    ),
                })
            }
            None => {
                out.insert(name.clone(), shape.clone());
            }
        }
    }
    Ok(out)
}

impl Pass for ShapeInference {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let shapes = applicable_shapes(m, cx)?;
        let facts = crate::runtime::infer_facts(m, &shapes).map_err(|e| PassError::Failed {
            pass: NAME.into(),
            message: e.to_string(),
        })?;
        let g = &mut m.graph;
        let mut changed = false;

        // Specialise the inputs the analysis fixed.
        for (name, shape) in &shapes {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let i = g
                .inputs()
                .iter()
                .position(|p| p.info.name() == name)
                .expect("invariant: checked above");
            let elem = g.inputs()[i]
                .info
                .r#type
                .as_ref()
                .map(types::elem_type)
                .unwrap_or(0);
            let elem = if elem == 0 {
                facts.get(name).map_or(0, |f| f.0)
            } else {
                elem
            };
            if elem != 0 {
                g.set_input_type(i, Some(types::tensor_type(elem, &dims)));
                changed = true;
            }
        }

        // Values in topological order of their producers: deterministic.
        // Tract's facts for results of ops with subgraphs (If, Loop, Scan)
        // are not trustworthy (0.23.9 types an If whose condition folds to
        // true from its else branch, seen on ONNX's affine_grid tests), so
        // those results and everything computed from them are left alone.
        let mut tainted: BTreeSet<ValueId> = BTreeSet::new();
        let mut values: Vec<ValueId> = Vec::new();
        for n in g.topo_order() {
            let node = g.node(n);
            if !matches!(node.kind(), NodeKind::Op(_)) {
                continue;
            }
            let outs = node.outputs().iter().flatten().copied();
            if node.has_subgraphs() || node.inputs().iter().flatten().any(|v| tainted.contains(v)) {
                tainted.extend(outs);
            } else {
                values.extend(outs);
            }
        }
        for v in values {
            let name = g.name(v).to_string();
            let Some(fact) = facts.get(&name) else {
                continue;
            };
            let out_ix = g.outputs().iter().position(|p| p.value == v);
            let old = match out_ix {
                Some(i) => g.outputs()[i].info.r#type.clone(),
                None => g.value(v).info().and_then(|vi| vi.r#type.clone()),
            };
            let new = match refine(old.as_ref(), fact) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(why) => {
                    let p = g.producer_node(v);
                    cx.remark(NAME, p.label(), format!("'{name}' kept its type: {why}"));
                    continue;
                }
            };
            match out_ix {
                Some(i) => g.set_output_type(i, Some(new)),
                None => {
                    let mut vi = g
                        .value(v)
                        .info()
                        .cloned()
                        .unwrap_or_else(|| ValueInfoProto {
                            name: Some(name),
                            ..Default::default()
                        });
                    vi.r#type = Some(new);
                    g.set_value_info(v, Some(vi));
                }
            }
            changed = true;
        }
        Ok(Changed::from_bool(changed))
    }
}
