//! Snapshot tests for passes: one insta `glob!` driver over
//! `tests/passes/<pass>/<case>.onnxtxt`.
//!
//! A case is a model in the textual IR whose header says what to run:
//!
//! ```text
//! # RUN: fuse-batchnorm,dce
//! # INPUT-SHAPE: X=1,3,8,8        (optional, repeatable: PassContext::input_shapes)
//! # CALIB: X=-1,3                 (optional, repeatable: statistics in which
//! #                                tensor X observed exactly -1 and 3)
//! # CALIB-RANDOM: 2               (optional: 2 seeded random calibration samples)
//! # why this case exists …
//! <ir_version: 8, opset_import: ["" : 17]>
//! …
//! ```
//!
//! The driver parses the model (the parser skips `#` lines), runs the
//! pipeline through the [`PassManager`] with verification after every
//! pass, and snapshots what each pass reported (changed or not), the
//! remarks, and a full-context diff of the printed model before → after;
//! or, when parsing or a pass fails, the rendered error.

use std::collections::BTreeMap;
use std::path::Path;

use onnxq::calib::data::DataSet;
use onnxq::calib::hist::FloatHist;
use onnxq::calib::{CalibOptions, Stats};
use onnxq::ir::text;
use onnxq::passes::context::{InputShapes, Inputs};
use onnxq::passes::{Changed, PassContext, PassManager, Pipeline};

fn header<'a>(src: &'a str, key: &str) -> Vec<&'a str> {
    src.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .map(str::trim)
        .collect()
}

fn run_case(path: &Path) -> String {
    let src = std::fs::read_to_string(path).expect("case file is readable");
    let run = header(&src, "# RUN:");
    assert_eq!(
        run.len(),
        1,
        "{}: a case needs exactly one '# RUN:' line",
        path.display()
    );
    let mut shapes = BTreeMap::new();
    for spec in header(&src, "# INPUT-SHAPE:") {
        let (name, dims) = spec.split_once('=').expect("INPUT-SHAPE is name=d,d,…");
        let dims: Vec<usize> = dims
            .split(',')
            .map(|d| d.trim().parse().expect("a dimension"))
            .collect();
        shapes.insert(name.trim().to_string(), dims);
    }
    let mut m = match text::parse_model(&src) {
        Ok(m) => m,
        Err(e) => return format!("parse error: {e}\n"),
    };
    let mut cx = seed_calibration(&src, &m, shapes);
    let before = text::print_model(&m);
    let pipeline = match Pipeline::parse(run[0]) {
        Ok(p) => p,
        Err(e) => return format!("error: {e}\n"),
    };
    let canonical = pipeline.to_string();
    let mut pm = PassManager::new(pipeline);
    pm.verify_each = true;
    let mut out = format!("pipeline: {canonical}\n");
    match pm.run(&mut m, &mut cx) {
        Ok(runs) => {
            for r in &runs {
                let c = if r.changed == Changed::Yes {
                    "changed"
                } else {
                    "unchanged"
                };
                out.push_str(&format!("{}: {c}\n", r.name));
            }
        }
        Err(e) => {
            out.push_str(&format!("error: {e}\n"));
            return out;
        }
    }
    for r in cx.remarks() {
        out.push_str(&format!("remark: {}: {}: {}\n", r.pass, r.node, r.message));
    }
    out.push_str("---\n");
    out.push_str(&text::diff(&before, &text::print_model(&m)));
    out
}

/// Calibration headers. `# CALIB: name=min,max` puts into the statistics a
/// histogram that observed exactly `min` and `max` (so `minmax` ranges are
/// exactly them), tied to the parsed model's hash; `# CALIB-RANDOM: N` gives
/// `calibrate` N seeded random samples to run the model on.
fn seed_calibration(src: &str, m: &onnxq::ir::Model, input_shapes: InputShapes) -> PassContext {
    let mut inputs = Inputs {
        input_shapes,
        ..Default::default()
    };
    let mut tensors = BTreeMap::new();
    for spec in header(src, "# CALIB:") {
        let (name, range) = spec.split_once('=').expect("CALIB is name=min,max");
        let (lo, hi) = range.split_once(',').expect("CALIB is name=min,max");
        let mut h = FloatHist::new();
        h.observe(&[
            lo.trim().parse().expect("a float"),
            hi.trim().parse().expect("a float"),
        ]);
        tensors.insert(name.trim().to_string(), h);
    }
    let stats = (!tensors.is_empty()).then(|| Stats {
        model_hash: onnxq::calib::model_hash(m),
        data_hash: "# CALIB header".into(),
        samples: 1,
        input_shapes: inputs.input_shapes.clone(),
        tensors,
        means: Default::default(),
    });
    if let Some(n) = header(src, "# CALIB-RANDOM:").first() {
        let n = n.parse().expect("CALIB-RANDOM is a sample count");
        inputs.calib_data = Some(DataSet::random(n, 1));
        inputs.calib_options = CalibOptions {
            threads: 1,
            progress: false,
            ..CalibOptions::default()
        };
    }
    let mut cx = PassContext::with_inputs(inputs);
    // As if `calibrate` had run: passes after it see these statistics.
    cx.analyses.stats = stats.map(std::sync::Arc::new);
    cx
}

#[test]
fn passes() {
    insta::glob!("passes/*/*.onnxtxt", |path| {
        let out = run_case(path);
        insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(out);
        });
    });
}
