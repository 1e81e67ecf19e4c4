//! `fix-inputs`: reads graph inputs that never change where the model is
//! deployed as constants.
//!
//! # What
//! Exporters branch on inputs a deployment never varies: a voice-activity
//! model takes its sample rate as an input and picks a branch with an `If`
//! on it; a model takes a mode flag. Such an `If` cannot be inlined, and
//! when its branches differ in rank tract cannot load it at all. Given
//! `NAME=VALUE`, every use of input `NAME` reads a constant instead, so
//! `fold-constants` can evaluate the condition and `inline-if` keep the
//! branch taken. The input stays in the model's interface (callers may
//! still pass it; it is ignored), so code that feeds it keeps working.
//!
//! # Example
//! ```text
//! # RUN: fix-inputs{values=["sr=16000"]}
//! before:  g (float[1,512] x, int64 sr) => (y) { c = Equal (sr, k16000) … }
//! after:   g (float[1,512] x, int64 sr) => (y) <int64 sr_fixed = {16000}> { c = Equal (sr_fixed, k16000) … }
//! ```
//!
//! # Options
//! * `values`: `"NAME=V"` or `"NAME=V1,V2,…"` per input; the values take the
//!   input's declared element type (float, double, int8–int64, uint8,
//!   bool as 0/1) and shape (a scalar, or a static shape holding that
//!   many values; `[1]` takes one).
//!
//! # Preconditions
//! Each name is a graph input with a declared element type.
//!
//! # Numerics
//! Exact for the fixed value; the model no longer reacts to the input.
//!
//! # Errors
//! An unknown input name (the inputs are listed), a value that does not
//! parse as the input's type, or a count that does not fit its shape.

use serde::{Deserialize, Serialize};

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{Model, Tensor};
use crate::proto::tensor_proto::DataType;

const NAME: &str = "fix-inputs";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub values: Vec<String>,
}

pub struct FixInputs {
    opts: Options,
}

impl FixInputs {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        for v in &opts.values {
            split(v)?;
        }
        Ok(FixInputs { opts })
    }
}

/// `NAME=V,V,…` into the name and the value texts.
pub fn split(spec: &str) -> Result<(&str, Vec<&str>), PassError> {
    let bad = || PassError::Options {
        pass: NAME.into(),
        message: format!("'{spec}': expected NAME=VALUE or NAME=V1,V2,…"),
    };
    let (name, vals) = spec.split_once('=').ok_or_else(bad)?;
    let vals: Vec<&str> = vals.split(',').map(str::trim).collect();
    if name.trim().is_empty() || vals.iter().any(|v| v.is_empty()) {
        return Err(bad());
    }
    Ok((name.trim(), vals))
}

/// The constant for `vals` of element type `dtype` and `dims`.
fn constant(name: &str, dtype: i32, dims: &[i64], vals: &[&str]) -> Result<Tensor, String> {
    let ints = || -> Result<Vec<i64>, String> {
        vals.iter()
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("'{v}' is not an integer"))
            })
            .collect()
    };
    let floats = || -> Result<Vec<f64>, String> {
        vals.iter()
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("'{v}' is not a number"))
            })
            .collect()
    };
    let bytes: Vec<u8> = match DataType::try_from(dtype).unwrap_or(DataType::Undefined) {
        DataType::Float => floats()?
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect(),
        DataType::Double => floats()?.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        DataType::Int64 => ints()?.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        DataType::Int32 => ints()?
            .iter()
            .map(|&x| i32::try_from(x).map_err(|_| format!("{x} does not fit int32")))
            .collect::<Result<Vec<i32>, String>>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DataType::Int16 => ints()?
            .iter()
            .map(|&x| i16::try_from(x).map_err(|_| format!("{x} does not fit int16")))
            .collect::<Result<Vec<i16>, String>>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DataType::Int8 => ints()?
            .iter()
            .map(|&x| {
                i8::try_from(x)
                    .map(|b| b as u8)
                    .map_err(|_| format!("{x} does not fit int8"))
            })
            .collect::<Result<Vec<u8>, String>>()?,
        DataType::Uint8 | DataType::Bool => ints()?
            .iter()
            .map(|&x| {
                let max = if dtype == DataType::Bool as i32 {
                    1
                } else {
                    255
                };
                u8::try_from(x)
                    .ok()
                    .filter(|&b| b <= max)
                    .ok_or_else(|| format!("{x} is not a value of this type"))
            })
            .collect::<Result<Vec<u8>, String>>()?,
        other => return Err(format!("inputs of type {other:?} cannot be fixed")),
    };
    Ok(Tensor::from_raw(name, dtype, dims, bytes.into()))
}

impl Pass for FixInputs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let mut fixed = Vec::new();
        for spec in &self.opts.values {
            let (name, vals) = split(spec)?;
            let port = g
                .inputs()
                .iter()
                .find(|p| g.name(p.value) == name)
                .cloned()
                .ok_or_else(|| PassError::Precondition {
                    pass: NAME.into(),
                    message: format!(
                        "'{name}' is not an input of the model; it takes {}",
                        g.inputs()
                            .iter()
                            .map(|p| g.name(p.value).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            let v = port.value;
            let fail = |message: String| PassError::Precondition {
                pass: NAME.into(),
                message: format!("input '{name}': {message}"),
            };
            let ty = g
                .value_type(v)
                .ok_or_else(|| fail("has no declared type".into()))?;
            let dtype = g.elem_type(v);
            let declared = crate::ir::types::dims(&ty);
            let known: Option<Vec<i64>> = declared.as_ref().and_then(|d| {
                d.iter()
                    .map(|x| match x {
                        crate::ir::types::Dim::Known(k) => Some(*k),
                        _ => None,
                    })
                    .collect()
            });
            let dims: Vec<i64> = match known {
                Some(d) => d,
                None if vals.len() == 1 => vec![],
                None => vec![vals.len() as i64],
            };
            let count: i64 = dims.iter().product();
            if count != vals.len() as i64 {
                return Err(fail(format!(
                    "{} value(s) given for shape {dims:?} ({count})",
                    vals.len()
                )));
            }
            let fresh = g.fresh_name(&format!("{name}_fixed"));
            let t = constant(&fresh, dtype, &dims, &vals).map_err(fail)?;
            let c = g.add_initializer(t);
            g.replace_all_uses(v, c);
            // Subgraphs read it by name: they read the constant too.
            for (n, slot) in g.users(v) {
                if slot == crate::ir::Slot::Implicit {
                    g.rebind_implicit(n, v, c);
                }
            }
            fixed.push(format!("{name} = {}", vals.join(",")));
        }
        if fixed.is_empty() {
            return Ok(Changed::No);
        }
        cx.remark(
            NAME,
            "<model>",
            format!(
                "fixed {}: the model reads these as constants and ignores what is fed for them",
                fixed.join(", ")
            ),
        );
        Ok(Changed::Yes)
    }
}
