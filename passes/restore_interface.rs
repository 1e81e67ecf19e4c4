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
        let n_in = g.inputs().len();
        for i in 0..n_in + g.outputs().len() {
            let name = if i < n_in {
                g.inputs()[i].info.name().to_string()
            } else {
                g.outputs()[i - n_in].info.name().to_string()
            };
            let Some(orig) = iface.ports.get(&name) else {
                continue;
            };
            let port = if i < n_in {
                &mut g.inputs_mut()[i]
            } else {
                &mut g.outputs_mut()[i - n_in]
            };
            if port.info != *orig {
                port.info = orig.clone();
                changed = true;
            }
        }
        let ids: Vec<_> = g.value_ids().collect();
        for v in ids {
            let Some((pos, info)) = g.value(v).info.clone() else {
                continue;
            };
            match iface.declared.get(g.name(v)) {
                None => {
                    g.value_mut(v).info = None;
                    changed = true;
                }
                Some(orig) if *orig != info => {
                    g.value_mut(v).info = Some((pos, orig.clone()));
                    changed = true;
                }
                Some(_) => {}
            }
        }
        Ok(Changed::from_bool(changed))
    }
}
