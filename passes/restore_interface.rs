//! `restore-interface`: gives the model back the interface it came with.
//!
//! # What
//! Passes that run the model fix symbolic input dims to the calibration
//! shapes (`shape-inference` specialises the declared input types and
//! writes `value_info` for every value it can). This pass undoes that for
//! the file users deploy: graph inputs and outputs get back the types they
//! were declared with when the pipeline started (dynamic dims included),
//! and `value_info` entries are dropped, except for the values that had
//! one then, which get it back as it was — shapes as they were, element
//! types as passes left them (`convert-float` changes precisions).
//!
//! # Example
//! ```text
//! before:  g (float[1,3,8,8] X) => (float[1,2,8,8] Y)  <float[1,2,8,8] C>
//! after:   g (float[N,3,8,8] X) => (Y)
//! ```
//!
//! # Options
//! None.
//!
//! # Preconditions
//! The interface the pipeline started from, which the pass manager records
//! before the first pass runs.
//!
//! # Numerics
//! None: only type annotations change.
//!
//! # Errors
//! None.

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::Model;

const NAME: &str = "restore-interface";

#[derive(Debug, Default)]
pub struct RestoreInterface;

impl RestoreInterface {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        super::parse_options::<super::NoOptions>(NAME, o)?;
        Ok(RestoreInterface)
    }
}

impl Pass for RestoreInterface {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let iface = cx
            .analyses
            .interface
            .clone()
            .expect("invariant: the pass manager records the interface before the first pass");
        let g = &mut m.graph;
        let mut changed = false;
        for i in 0..g.inputs().len() {
            if let Some(orig) = iface.ports.get(g.inputs()[i].info.name()) {
                let ty = keep_elem(&g.inputs()[i].info.r#type, &orig.r#type);
                if g.inputs()[i].info.r#type != ty {
                    g.set_input_type(i, ty);
                    changed = true;
                }
            }
        }
        for i in 0..g.outputs().len() {
            if let Some(orig) = iface.ports.get(g.outputs()[i].info.name()) {
                let ty = keep_elem(&g.outputs()[i].info.r#type, &orig.r#type);
                if g.outputs()[i].info.r#type != ty {
                    g.set_output_type(i, ty);
                    changed = true;
                }
            }
        }
        let ids: Vec<_> = g.value_ids().collect();
        for v in ids {
            let Some(info) = g.value(v).info().cloned() else {
                continue;
            };
            match iface.declared.get(g.name(v)) {
                None => {
                    g.set_value_info(v, None);
                    changed = true;
                }
                Some(orig) if *orig != info => {
                    let mut back = orig.clone();
                    back.r#type = keep_elem(&info.r#type, &orig.r#type);
                    g.set_value_info(v, Some(back));
                    changed = true;
                }
                Some(_) => {}
            }
        }
        Ok(Changed::from_bool(changed))
    }
}

/// The declared type `orig` with the element type a pass gave the value
/// (`now`): a precision change (`convert-float`) is kept, the shape the
/// model came with restored.
fn keep_elem(
    now: &Option<crate::proto::TypeProto>,
    orig: &Option<crate::proto::TypeProto>,
) -> Option<crate::proto::TypeProto> {
    use crate::ir::types::elem_type;
    use crate::proto::type_proto;
    let (Some(n), Some(o)) = (now, orig) else {
        return orig.clone();
    };
    let e = elem_type(n);
    if e == 0 || e == elem_type(o) {
        return orig.clone();
    }
    let mut out = o.clone();
    if let Some(type_proto::Value::TensorType(t)) = &mut out.value {
        t.elem_type = Some(e);
    }
    Some(out)
}
