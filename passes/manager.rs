//! The pass manager: runs a pipeline with the debugging aids compilers
//! offer (verify after each pass, IR dumps before/after, per-pass timing,
//! a bisect limit).

use std::time::{Duration, Instant};

use super::context::Interface;
use super::{Changed, PassContext, PassError, Pipeline};
use crate::ir::{text, Model};

/// Which passes to dump the IR around.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PrintSel {
    #[default]
    None,
    All,
    Passes(Vec<String>),
}

impl PrintSel {
    pub fn parse(s: Option<&str>) -> PrintSel {
        match s {
            None => PrintSel::None,
            Some("all") => PrintSel::All,
            Some(list) => PrintSel::Passes(list.split(',').map(|x| x.trim().to_string()).collect()),
        }
    }
    fn wants(&self, pass: &str) -> bool {
        match self {
            PrintSel::None => false,
            PrintSel::All => true,
            PrintSel::Passes(v) => v.iter().any(|p| p == pass),
        }
    }
}

/// What one pass execution did.
#[derive(Clone, Debug)]
pub struct PassRun {
    pub name: &'static str,
    pub changed: Changed,
    pub elapsed: Duration,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// Runs a pipeline with the debugging aids compilers offer.
pub struct PassManager {
    pub pipeline: Pipeline,
    /// Run [`crate::ir::Graph::verify`] after every pass (on in tests and by
    /// default on the CLI; it is cheap next to any pass that runs a model).
    pub verify_each: bool,
    pub print_before: PrintSel,
    pub print_after: PrintSel,
    /// Run at most this many passes, skipping the rest: bisects which pass
    /// breaks a model.
    pub bisect_limit: Option<usize>,
    /// Where IR dumps go (stderr on the CLI).
    pub dump: Box<dyn FnMut(&str)>,
}

impl PassManager {
    pub fn new(pipeline: Pipeline) -> Self {
        PassManager {
            pipeline,
            verify_each: true,
            print_before: PrintSel::None,
            print_after: PrintSel::None,
            bisect_limit: None,
            dump: Box::new(|s| eprint!("{s}")),
        }
    }

    pub fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Vec<PassRun>, PassError> {
        let mut runs = Vec::new();
        // What `restore-interface` gives back: the model as the first
        // pipeline run on this context received it.
        if cx.analyses.interface.is_none() {
            cx.analyses.interface = Some(Interface::of(m));
            // The input as read: an error here is the file's, not a pass's.
            if self.verify_each {
                m.graph
                    .verify()
                    .map_err(|violations| PassError::InvalidInput {
                        rendered: m.graph.render_violations(&violations),
                        violations,
                    })?;
            }
        }
        let total = self.pipeline.passes.len();
        for (i, pass) in self.pipeline.passes.iter_mut().enumerate() {
            let name = pass.name();
            if let Some(limit) = self.bisect_limit {
                if i >= limit {
                    (self.dump)(&format!(
                        "bisect-limit {limit}: skipping pass {} of {total} '{name}'\n",
                        i + 1
                    ));
                    continue;
                }
            }
            if self.print_before.wants(name) {
                (self.dump)(&format!(
                    "// ----- IR before {name} -----\n{}",
                    text::print_model(m)
                ));
            }
            let nodes_before = m.graph.ops().len();
            let t0 = Instant::now();
            let changed = pass.run(m, cx)?;
            let elapsed = t0.elapsed();
            if self.verify_each {
                m.graph.verify().map_err(|violations| PassError::Verify {
                    pass: name.to_string(),
                    rendered: m.graph.render_violations(&violations),
                    violations,
                })?;
            }
            if self.print_after.wants(name) {
                (self.dump)(&format!(
                    "// ----- IR after {name} -----\n{}",
                    text::print_model(m)
                ));
            }
            runs.push(PassRun {
                name,
                changed,
                elapsed,
                nodes_before,
                nodes_after: m.graph.ops().len(),
            });
        }
        Ok(runs)
    }
}

/// Renders per-pass timings as a table (for `--time-passes`).
pub fn timing_table(runs: &[PassRun]) -> String {
    let total: Duration = runs.iter().map(|r| r.elapsed).sum();
    let mut s = String::from("pass                       time (ms)   share  changed  nodes\n");
    for r in runs {
        let share = if total.is_zero() {
            0.0
        } else {
            r.elapsed.as_secs_f64() / total.as_secs_f64() * 100.0
        };
        s.push_str(&format!(
            "{:<26} {:>9.3} {:>6.1}%  {:<7}  {} -> {}\n",
            r.name,
            r.elapsed.as_secs_f64() * 1e3,
            share,
            if r.changed == Changed::Yes {
                "yes"
            } else {
                "no"
            },
            r.nodes_before,
            r.nodes_after
        ));
    }
    s.push_str(&format!(
        "{:<26} {:>9.3}\n",
        "total",
        total.as_secs_f64() * 1e3
    ));
    s
}
