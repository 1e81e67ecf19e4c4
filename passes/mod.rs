//! Passes: one file per pass, a static registry, MLIR-style pipeline strings
//! and a pass manager.
//!
//! A pipeline is a comma-separated list of pass names, each with optional
//! options in braces:
//!
//! ```text
//! fuse-batchnorm,fold-constants{max-bytes=1048576},dce
//! insert-qdq{per-channel=true,exclude=["/head/*",Softmax]}
//! ```
//!
//! Option values are numbers, `true`/`false`, strings (bare or
//! double-quoted) or lists in brackets. Each pass declares its options as a
//! serde struct (`deny_unknown_fields`, kebab-case), so a typo is an error
//! that lists the valid names; printing a parsed pipeline gives its
//! canonical form with every default filled in.
//!
//! Passes take the whole [`Model`] rather than only its graph: several need
//! the model-level opset imports (to upgrade them, or to know which operator
//! semantics apply) or must run the model. They still touch the graph only
//! through the `ir` API.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

use crate::ir::{text, Model, Violation};

pub mod calibrate;
pub mod context;
pub mod dce;
pub mod eliminate_identity;
pub mod fold_calibration;
pub mod fold_constants;
pub mod fuse_batchnorm;
pub mod insert_qdq;
pub mod profile_hotspots;
pub mod shape_inference;

pub use context::PassContext;

/// Whether a pass changed the model.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

impl Changed {
    pub fn from_bool(b: bool) -> Self {
        if b {
            Changed::Yes
        } else {
            Changed::No
        }
    }
}

/// A transformation of a model.
pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError>;
    /// The pass's options with defaults filled in, for the canonical
    /// pipeline string. Passes without options return an empty object.
    fn options(&self) -> Json {
        Json::Object(Default::default())
    }
}

/// Errors a pass can report. Each names the pass and, where it applies, the
/// node or tensor.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass '{name}'; valid passes are: {valid}")]
    UnknownPass { name: String, valid: String },
    #[error("pipeline: {message} (at byte {at} of \"{pipeline}\")")]
    Syntax {
        pipeline: String,
        at: usize,
        message: String,
    },
    #[error("{pass}: bad options: {message}")]
    Options { pass: String, message: String },
    #[error("{pass}: precondition failed: {message}")]
    Precondition { pass: String, message: String },
    #[error("{pass}: node '{node}': {message}")]
    Node {
        pass: String,
        node: String,
        message: String,
    },
    #[error("{pass}: {message}")]
    Failed { pass: String, message: String },
    #[error("{pass}: the IR is invalid after this pass:\n{}", list_violations(.violations))]
    Verify {
        pass: String,
        violations: Vec<Violation>,
    },
}

fn list_violations(v: &[Violation]) -> String {
    v.iter()
        .map(|x| match &x.node {
            Some(n) => format!("  - node '{n}': {}", x.what),
            None => format!("  - {}", x.what),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A registry entry.
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Whether the pass may change the model's numbers (beyond float
    /// rounding): quantization does, dead-code elimination does not.
    pub changes_numerics: bool,
    pub make: fn(Json) -> Result<Box<dyn Pass>, PassError>,
}

/// Every pass, in the order `onnxq passes` lists them.
pub fn registry() -> &'static [PassInfo] {
    REGISTRY
}

static REGISTRY: &[PassInfo] = &[
    PassInfo {
        name: "dce",
        summary: "remove nodes and initializers whose results nothing uses",
        changes_numerics: false,
        make: |o| Ok(Box::new(dce::Dce::from_options(o)?)),
    },
    PassInfo {
        name: "eliminate-identity",
        summary: "remove Identity and inference-mode Dropout nodes",
        changes_numerics: false,
        make: |o| Ok(Box::new(eliminate_identity::EliminateIdentity::from_options(o)?)),
    },
    PassInfo {
        name: "fuse-batchnorm",
        summary: "fold inference BatchNormalization into Conv/ConvTranspose/Gemm/MatMul weights, else into Mul+Add",
        changes_numerics: false,
        make: |o| Ok(Box::new(fuse_batchnorm::FuseBatchnorm::from_options(o)?)),
    },
    PassInfo {
        name: "fold-constants",
        summary: "evaluate nodes whose operands are all constants and store their results as initializers",
        changes_numerics: false,
        make: |o| Ok(Box::new(fold_constants::FoldConstants::from_options(o)?)),
    },
    PassInfo {
        name: "shape-inference",
        summary: "record every value's element type and shape (from tract's analysis) as value_info",
        changes_numerics: false,
        make: |o| Ok(Box::new(shape_inference::ShapeInference::from_options(o)?)),
    },
    PassInfo {
        name: "calibrate",
        summary: "run the float model on calibration data and histogram every tensor quantization may touch",
        changes_numerics: false,
        make: |o| Ok(Box::new(calibrate::Calibrate::from_options(o)?)),
    },
    PassInfo {
        name: "fold-calibration",
        summary: "turn calibration histograms into scales and zero points (minmax, percentile, entropy, mse)",
        changes_numerics: false,
        make: |o| Ok(Box::new(fold_calibration::FoldCalibration::from_options(o)?)),
    },
    PassInfo {
        name: "insert-qdq",
        summary: "insert QuantizeLinear/DequantizeLinear around quantizable ops; int8 weights, int32 biases",
        changes_numerics: true,
        make: |o| Ok(Box::new(insert_qdq::InsertQdq::from_options(o)?)),
    },
    PassInfo {
        name: "profile-hotspots",
        summary: "time every node in tract (median of N runs) and join with MACs/bytes into a hotspot profile",
        changes_numerics: false,
        make: |o| Ok(Box::new(profile_hotspots::ProfileHotspots::from_options(o)?)),
    },
];

/// Looks a pass up by name.
pub fn lookup(name: &str) -> Result<&'static PassInfo, PassError> {
    registry()
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PassError::UnknownPass {
            name: name.to_string(),
            valid: registry()
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Deserializes a pass's options from the pipeline's JSON form.
pub fn parse_options<T: DeserializeOwned>(pass: &str, o: Json) -> Result<T, PassError> {
    serde_json::from_value(o).map_err(|e| PassError::Options {
        pass: pass.to_string(),
        message: e.to_string(),
    })
}

/// The options type of passes that take none: any key is an error.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// Serializes options for [`Pass::options`].
pub fn options_json<T: Serialize>(o: &T) -> Json {
    serde_json::to_value(o).expect("invariant: options serialize")
}

/// One pipeline element as written: a pass name and its raw options.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineItem {
    pub name: String,
    pub options: BTreeMap<String, Json>,
}

/// Parses a pipeline string into items (names are not checked here).
pub fn parse_pipeline(s: &str) -> Result<Vec<PipelineItem>, PassError> {
    let mut p = PipeParser {
        s,
        b: s.as_bytes(),
        i: 0,
    };
    let mut items = Vec::new();
    p.ws();
    if p.i == p.b.len() {
        return Ok(items);
    }
    loop {
        p.ws();
        let name = p.ident()?;
        p.ws();
        let mut options = BTreeMap::new();
        if p.peek() == Some(b'{') {
            p.i += 1;
            p.ws();
            if p.peek() == Some(b'}') {
                p.i += 1;
            } else {
                loop {
                    p.ws();
                    let key = p.ident()?;
                    p.ws();
                    p.expect(b'=')?;
                    p.ws();
                    let v = p.value()?;
                    if options.insert(key.clone(), v).is_some() {
                        return Err(p.err(&format!("option '{key}' given twice")));
                    }
                    p.ws();
                    match p.peek() {
                        Some(b',') => p.i += 1,
                        Some(b'}') => {
                            p.i += 1;
                            break;
                        }
                        _ => return Err(p.err("expected ',' or '}' after an option")),
                    }
                }
            }
        }
        items.push(PipelineItem { name, options });
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            None => break,
            _ => return Err(p.err("expected ',' between passes")),
        }
    }
    Ok(items)
}

struct PipeParser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl PipeParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn err(&self, m: &str) -> PassError {
        PassError::Syntax {
            pipeline: self.s.to_string(),
            at: self.i,
            message: m.to_string(),
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), PassError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }
    fn ident(&mut self) -> Result<String, PassError> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(self.err("expected a name"));
        }
        Ok(self.s[start..self.i].to_string())
    }
    fn value(&mut self) -> Result<Json, PassError> {
        match self.peek() {
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    self.ws();
                    items.push(self.value()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.err("expected ',' or ']' in a list")),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated string")),
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Json::String(out));
                        }
                        Some(b'\\') => {
                            self.i += 1;
                            let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                            out.push(c as char);
                            self.i += 1;
                        }
                        Some(_) => {
                            let rest = &self.s[self.i..];
                            let ch = rest.chars().next().expect("invariant: not at end");
                            out.push(ch);
                            self.i += ch.len_utf8();
                        }
                    }
                }
            }
            _ => {
                let start = self.i;
                while matches!(self.peek(), Some(c) if !matches!(c, b',' | b'}' | b']' | b'{' | b'[' | b' '))
                {
                    self.i += 1;
                }
                let word = &self.s[start..self.i];
                if word.is_empty() {
                    return Err(self.err("expected a value"));
                }
                Ok(bare_value(word))
            }
        }
    }
}

/// A bare word as an option value: bool, integer, float, else string.
fn bare_value(w: &str) -> Json {
    match w {
        "true" => return Json::Bool(true),
        "false" => return Json::Bool(false),
        _ => {}
    }
    if let Ok(i) = w.parse::<i64>() {
        return Json::from(i);
    }
    if let Ok(f) = w.parse::<f64>() {
        if f.is_finite() {
            return Json::from(f);
        }
    }
    Json::String(w.to_string())
}

/// A pipeline of instantiated passes.
pub struct Pipeline {
    pub passes: Vec<Box<dyn Pass>>,
}

impl Pipeline {
    /// Parses and instantiates a pipeline string.
    pub fn parse(s: &str) -> Result<Pipeline, PassError> {
        let mut passes = Vec::new();
        for item in parse_pipeline(s)? {
            let info = lookup(&item.name)?;
            let opts = Json::Object(item.options.into_iter().collect());
            passes.push((info.make)(opts)?);
        }
        Ok(Pipeline { passes })
    }

    pub fn push(&mut self, p: Box<dyn Pass>) {
        self.passes.push(p);
    }
}

impl fmt::Display for Pipeline {
    /// The canonical form: every option spelled out, keys sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.passes.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{}", p.name())?;
            if let Json::Object(o) = p.options() {
                if !o.is_empty() {
                    let mut keys: Vec<&String> = o.keys().collect();
                    keys.sort();
                    let parts: Vec<String> = keys
                        .iter()
                        .map(|k| format!("{k}={}", show_value(&o[*k])))
                        .collect();
                    write!(f, "{{{}}}", parts.join(","))?;
                }
            }
        }
        Ok(())
    }
}

fn show_value(v: &Json) -> String {
    match v {
        Json::String(s) => {
            if !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_./*".contains(&c))
                && !matches!(bare_value(s), Json::Bool(_) | Json::Number(_))
            {
                s.clone()
            } else {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
        }
        Json::Array(a) => format!(
            "[{}]",
            a.iter().map(show_value).collect::<Vec<_>>().join(",")
        ),
        Json::Null => "null".into(),
        other => other.to_string(),
    }
}

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
