//! `restore-interface`: gives the model back the interface it came with.
//!
//! # What
//! Passes that run the model fix symbolic input dims to the calibration
//! shapes (`shape-inference` specialises the declared input types and
//! writes `value_info` for every value it can). This pass undoes that for
//! the file users deploy: graph inputs and outputs get back the types they
//! were declared with when the pipeline started (dynamic dims included),
//! and `value_info` entries are dropped, except for the values that had
//! one then, which get it back as it was.
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
                if g.inputs()[i].info.r#type != orig.r#type {
                    g.set_input_type(i, orig.r#type.clone());
                    changed = true;
                }
            }
        }
        for i in 0..g.outputs().len() {
            if let Some(orig) = iface.ports.get(g.outputs()[i].info.name()) {
                if g.outputs()[i].info.r#type != orig.r#type {
                    g.set_output_type(i, orig.r#type.clone());
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
                    g.set_value_info(v, Some(orig.clone()));
                    changed = true;
                }
                Some(_) => {}
            }
        }
        Ok(Changed::from_bool(changed))
    }
}
