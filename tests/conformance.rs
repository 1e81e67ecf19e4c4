//! ONNX's backend node tests through onnxq's import → export round trip.
//!
//! ```text
//! ONNXQ_CONFORMANCE_DIR=…/site-packages/onnx/backend/test/data/node \
//!     cargo test --release --test conformance -- --ignored --nocapture
//! ```
//!
//! The `onnx` Python wheel ships these models (one directory per test with
//! `model.onnx` and `test_data_set_*/{input,output}_*.pb`); `.ci/run` installs
//! it and points the variable at them. `ONNXQ_CONFORMANCE_FILTER=substr`
//! restricts the run to matching directory names.
//!
//! For every model:
//!
//! 1. import it, write it with `write_model`, import the written file;
//! 2. **text**: `print_model` of both IRs must be identical;
//! 3. **proto**: the original `ModelProto`, `to_proto` of the first import,
//!    the decoded written file and `to_proto` of the second import must all
//!    be equal field by field after canonical ordering (below);
//! 4. **runtime**: where tract loads and runs the model on every data set,
//!    the round-tripped model must give bit-identical outputs, and the
//!    outputs are compared with the reference `.pb`s using the tolerance of
//!    ONNX's own backend runner (`np.testing.assert_allclose(ref, out,
//!    rtol=1e-3, atol=1e-7)`, NaN equal to NaN).
//!
//! Canonical ordering: only the order of the main graph's `value_info`
//! entries is normalised (stably sorted by name). The IR keeps the entries
//! of values it knows in their original order, but entries naming no value
//! of the graph are kept aside and written after them, so their relative
//! position can change; `value_info` is an unordered set of annotations to
//! every consumer (ONNX's checker and shape inference look entries up by
//! name). Everything else — node order, initializer order, inputs, outputs,
//! attributes, subgraphs, functions — must come back exactly. Node order
//! survives because the exporter's topological order breaks ties by import
//! order and ONNX requires files to be topologically sorted already.
//!
//! The test fails on any import, export or round-trip failure (text, proto,
//! panics in onnxq, or round-tripped outputs differing from the original's).
//! Models tract cannot load or run, and outputs that differ from the
//! reference, are tract's business: counted and listed in the report
//! (`<target>/conformance-report.txt`), never a failure.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use onnxq::ir::text::print_model;
use onnxq::ir::Model;
use onnxq::onnx::export::{self, ExportOptions};
use onnxq::onnx::{import, ModelProto};
use onnxq::runtime::{input_specs, RunOptions, Runner};
use onnxq::tensorio::{read_pb, HostTensor};
use prost::Message;

/// ONNX's backend test tolerance (onnx/backend/test/runner/__init__.py).
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;

/// Failure categories: a model in one of these fails the test.
const FAILING: &[&str] = &[
    "import failed",
    "export failed",
    "re-import failed",
    "text IR differs after round trip",
    "proto differs after round trip",
    "onnxq panicked",
    "tract loads the original but not the round trip",
    "outputs differ after round trip",
];

#[derive(Default)]
struct Report {
    total: usize,
    imported: usize,
    text_identical: usize,
    proto_equal: usize,
    bytes_identical: usize,
    tract_loadable: usize,
    tract_runnable: usize,
    bit_identical: usize,
    matching_reference: usize,
    /// Category → (model, detail).
    lists: BTreeMap<&'static str, Vec<(String, String)>>,
}

impl Report {
    fn note(&mut self, category: &'static str, model: &str, detail: impl Into<String>) {
        let detail: String = detail.into();
        // One line per entry in the report; long tract chains are cut.
        let mut one_line = detail.replace('\n', " | ");
        if one_line.len() > 600 {
            let cut = (0..=600)
                .rev()
                .find(|&i| one_line.is_char_boundary(i))
                .unwrap_or(0);
            one_line.truncate(cut);
            one_line.push_str(" …");
        }
        self.lists
            .entry(category)
            .or_default()
            .push((model.to_string(), one_line));
    }

    fn failures(&self) -> usize {
        FAILING
            .iter()
            .map(|c| self.lists.get(c).map_or(0, Vec::len))
            .sum()
    }

    fn summary(&self) -> String {
        format!(
            "models                          {}\n\
             imported                        {}\n\
             text IR identical after trip    {}\n\
             proto equal after trip          {}\n\
             byte-identical re-encoding      {}  (prost encoding of to_proto == file bytes; informational)\n\
             tract-loadable (data-set shapes) {}\n\
             tract-runnable (all data sets)  {}\n\
             bit-identical after round trip  {}\n\
             matching reference outputs      {}  (rtol {RTOL:e}, atol {ATOL:e})\n\
             failures (round-trip/onnxq)     {}\n",
            self.total,
            self.imported,
            self.text_identical,
            self.proto_equal,
            self.bytes_identical,
            self.tract_loadable,
            self.tract_runnable,
            self.bit_identical,
            self.matching_reference,
            self.failures(),
        )
    }

    fn render(&self) -> String {
        let mut s = String::from("onnxq conformance report: ONNX backend node tests\n\n");
        s.push_str(&self.summary());
        for (cat, items) in &self.lists {
            let tag = if FAILING.contains(cat) {
                "FAIL"
            } else {
                "info"
            };
            s.push_str(&format!("\n== [{tag}] {cat}: {}\n", items.len()));
            for (m, d) in items {
                s.push_str(&format!("{m}: {d}\n"));
            }
        }
        s
    }
}

/// Sorts `value_info` of the main graph by name (see the module docs).
fn canonical(mut p: ModelProto) -> ModelProto {
    if let Some(g) = p.graph.as_mut() {
        g.value_info.sort_by(|a, b| a.name().cmp(b.name()));
    }
    p
}

/// The first differing line of two Debug renderings, with its field path
/// approximated by the enclosing lines.
fn first_difference<T: std::fmt::Debug>(got: &T, want: &T) -> String {
    let g = format!("{got:#?}");
    let w = format!("{want:#?}");
    let gl: Vec<&str> = g.lines().collect();
    let wl: Vec<&str> = w.lines().collect();
    let i = gl
        .iter()
        .zip(&wl)
        .position(|(a, b)| a != b)
        .unwrap_or(gl.len().min(wl.len()));
    let path: Vec<&str> = gl[..i]
        .iter()
        .rev()
        .scan(usize::MAX, |indent, l| {
            let ind = l.len() - l.trim_start().len();
            if ind < *indent {
                *indent = ind;
                Some(Some(l.trim()))
            } else {
                Some(None)
            }
        })
        .flatten()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "at line {i} (under {}): got `{}`, want `{}`",
        path.join(" > "),
        gl.get(i).map_or("<end>", |l| l.trim()),
        wl.get(i).map_or("<end>", |l| l.trim())
    )
}

fn first_text_difference(a: &str, b: &str) -> String {
    let al: Vec<&str> = a.lines().collect();
    let bl: Vec<&str> = b.lines().collect();
    let i = al
        .iter()
        .zip(&bl)
        .position(|(x, y)| x != y)
        .unwrap_or(al.len().min(bl.len()));
    format!(
        "line {}: before `{}`, after `{}`",
        i + 1,
        al.get(i).copied().unwrap_or("<end>"),
        bl.get(i).copied().unwrap_or("<end>")
    )
}

fn bit_equal(a: &HostTensor, b: &HostTensor) -> bool {
    a.dtype() == b.dtype() && a.shape() == b.shape() && a.to_le_bytes() == b.to_le_bytes()
}

/// `np.testing.assert_allclose(reference, got, rtol, atol)` with NaN == NaN;
/// integers and booleans exactly. `Err` says where it first fails.
fn close(got: &HostTensor, want: &HostTensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, reference {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if got.dtype() != want.dtype() {
        return Err(format!(
            "type {}, reference {}",
            got.dtype_name(),
            want.dtype_name()
        ));
    }
    let pairs: Vec<(f64, f64)> = match (got, want) {
        (HostTensor::F32(a), HostTensor::F32(b)) => a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64, y as f64))
            .collect(),
        (HostTensor::F64(a), HostTensor::F64(b)) => {
            a.iter().zip(b).map(|(&x, &y)| (x, y)).collect()
        }
        (HostTensor::F16(a), HostTensor::F16(b)) => a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x.to_f64(), y.to_f64()))
            .collect(),
        _ => {
            return if got.to_le_bytes() == want.to_le_bytes() {
                Ok(())
            } else {
                Err("integer/boolean elements differ".into())
            }
        }
    };
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, &(x, y)) in pairs.iter().enumerate() {
        let ok = if x.is_nan() || y.is_nan() {
            x.is_nan() && y.is_nan()
        } else if x.is_infinite() || y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= ATOL + RTOL * y.abs()
        };
        if !ok {
            bad += 1;
            if worst.is_none() {
                worst = Some((i, x, y));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, x, y)) => Err(format!(
            "{bad}/{} elements off; first at flat index {i}: {x} vs reference {y}",
            pairs.len()
        )),
    }
}

/// Reads `dir/{prefix}_N.pb` for N = 0, 1, … until one is missing.
fn read_pbs(dir: &Path, prefix: &str) -> Result<Vec<(String, HostTensor)>, String> {
    let mut out = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.pb"));
        if !p.exists() {
            break;
        }
        out.push(read_pb(&p).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn data_sets(model_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(model_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `f`, turning a panic into `Err(message)`.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic payload".into())
    })
}

/// The round trip of one model: `None` when it failed (already noted).
fn round_trip(
    r: &mut Report,
    name: &str,
    model_path: &Path,
    scratch: &Path,
) -> Option<(Model, Model)> {
    let file_bytes = std::fs::read(model_path).expect("read model.onnx");
    let original = match ModelProto::decode(file_bytes.as_slice()) {
        Ok(p) => p,
        Err(e) => {
            r.note(
                "import failed",
                name,
                format!("prost cannot decode the file: {e}"),
            );
            return None;
        }
    };
    let m1 = match guarded(|| import::read_model(model_path)) {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            r.note("import failed", name, e.to_string());
            return None;
        }
        Err(p) => {
            r.note("onnxq panicked", name, format!("in import: {p}"));
            return None;
        }
    };
    r.imported += 1;

    let out = scratch.join(format!("{name}.onnx"));
    let written = guarded(|| export::write_model(&m1, &out, &ExportOptions::default()));
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            r.note("export failed", name, e.to_string());
            return None;
        }
        Err(p) => {
            r.note("onnxq panicked", name, format!("in write_model: {p}"));
            return None;
        }
    }
    let m2 = match guarded(|| import::read_model(&out)) {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            r.note("re-import failed", name, e.to_string());
            return None;
        }
        Err(p) => {
            r.note("onnxq panicked", name, format!("in re-import: {p}"));
            return None;
        }
    };

    // (a) text IR.
    match guarded(|| (print_model(&m1), print_model(&m2))) {
        Ok((t1, t2)) if t1 == t2 => r.text_identical += 1,
        Ok((t1, t2)) => r.note(
            "text IR differs after round trip",
            name,
            first_text_difference(&t1, &t2),
        ),
        Err(p) => r.note("onnxq panicked", name, format!("in print_model: {p}")),
    }

    // (b) protos, at every stage of the trip.
    let checked = guarded(|| {
        let want = canonical(original.clone());
        let stages = [
            ("to_proto(import(file))", export::to_proto(&m1)),
            (
                "decoded written file",
                ModelProto::decode(std::fs::read(&out).expect("read written").as_slice())
                    .expect("written file decodes"),
            ),
            ("to_proto(import(written file))", export::to_proto(&m2)),
        ];
        for (stage, got) in stages {
            let got = canonical(got);
            // Equal encodings, not `PartialEq`: float fields may hold NaN
            // (tree-ensemble split values do), and NaN != NaN. prost encodes
            // fields in tag order, so equal encodings mean equal fields,
            // floats compared bit for bit.
            if got.encode_to_vec() != want.encode_to_vec() {
                return Err(format!("{stage}: {}", first_difference(&got, &want)));
            }
        }
        Ok(export::to_bytes(&m1) == file_bytes)
    });
    match checked {
        Ok(Ok(same_bytes)) => {
            r.proto_equal += 1;
            r.bytes_identical += same_bytes as usize;
        }
        Ok(Err(d)) => r.note("proto differs after round trip", name, d),
        Err(p) => r.note("onnxq panicked", name, format!("in export/compare: {p}")),
    }
    let _ = std::fs::remove_file(&out);
    Some((m1, m2))
}

/// Loads a model and its round trip into tract. `Ok(None)`: tract cannot
/// load the original (noted as info); `Err(())`: it loads the original but
/// not the round trip (noted as a failure).
fn load_pair(
    r: &mut Report,
    name: &str,
    m1: &Model,
    m2: &Model,
    opts: &RunOptions,
) -> Result<Option<(Runner, Runner)>, ()> {
    let r1 = match guarded(|| Runner::new(m1, opts)) {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            r.note("tract cannot load (info)", name, e.to_string());
            return Ok(None);
        }
        Err(p) => {
            r.note("tract panicked while loading (info)", name, p);
            return Ok(None);
        }
    };
    match guarded(|| Runner::new(m2, opts)) {
        Ok(Ok(r2)) => Ok(Some((r1, r2))),
        Ok(Err(e)) => {
            r.note(
                "tract loads the original but not the round trip",
                name,
                e.to_string(),
            );
            Err(())
        }
        Err(p) => {
            r.note(
                "tract loads the original but not the round trip",
                name,
                format!("panic: {p}"),
            );
            Err(())
        }
    }
}

/// Runs both models on every data set; compares with each other and with
/// the reference outputs. Each data set's input shapes are given to tract
/// as concrete facts (as ONNX's backend runner effectively does by feeding
/// arrays), which lets it load models whose declared shapes are symbolic.
fn run_tract(r: &mut Report, name: &str, model_dir: &Path, m1: &Model, m2: &Model) {
    let sets = data_sets(model_dir);
    if sets.is_empty() {
        r.note("no test data sets (info)", name, "");
        if let Ok(Some(_)) = load_pair(r, name, m1, m2, &RunOptions::default()) {
            r.tract_loadable += 1;
        }
        return;
    }
    let runtime_inputs: Vec<String> = input_specs(m1).into_iter().map(|s| s.name).collect();
    let mut all_ran = true;
    let mut all_identical = true;
    let mut all_match = true;
    for (i, set) in sets.iter().enumerate() {
        let set_name = set
            .file_name()
            .expect("dir name")
            .to_string_lossy()
            .into_owned();
        let inputs = match read_pbs(set, "input") {
            Ok(v) => v,
            Err(e) => {
                r.note("inputs unreadable (info)", name, format!("{set_name}: {e}"));
                if i == 0 {
                    if let Ok(Some(_)) = load_pair(r, name, m1, m2, &RunOptions::default()) {
                        r.tract_loadable += 1;
                    }
                }
                all_ran = false;
                break;
            }
        };
        // Unnamed .pb tensors feed the runtime inputs in order.
        let inputs: Vec<(String, HostTensor)> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, (n, t))| {
                let n = if n.is_empty() {
                    runtime_inputs.get(i).cloned().unwrap_or_default()
                } else {
                    n
                };
                (n, t)
            })
            .collect();
        let opts = RunOptions {
            input_shapes: inputs
                .iter()
                .map(|(n, t)| (n.clone(), t.shape().to_vec(), 0))
                .collect(),
            ..RunOptions::default()
        };
        let (r1, r2) = match load_pair(r, name, m1, m2, &opts) {
            Ok(Some(pair)) => pair,
            Ok(None) => {
                all_ran = false;
                break;
            }
            Err(()) => {
                all_ran = false;
                all_identical = false;
                break;
            }
        };
        if i == 0 {
            r.tract_loadable += 1;
        }
        let out1 = match guarded(|| r1.run(&inputs)) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                r.note("tract cannot run (info)", name, format!("{set_name}: {e}"));
                all_ran = false;
                break;
            }
            Err(p) => {
                r.note(
                    "tract panicked while running (info)",
                    name,
                    format!("{set_name}: {p}"),
                );
                all_ran = false;
                break;
            }
        };
        match guarded(|| r2.run(&inputs)) {
            Ok(Ok(out2)) => {
                let same = out1.len() == out2.len()
                    && out1
                        .iter()
                        .zip(&out2)
                        .all(|((n1, a), (n2, b))| n1 == n2 && bit_equal(a, b));
                if !same {
                    all_identical = false;
                    r.note("outputs differ after round trip", name, set_name.clone());
                }
            }
            Ok(Err(e)) => {
                all_identical = false;
                r.note(
                    "outputs differ after round trip",
                    name,
                    format!("{set_name}: round trip cannot run: {e}"),
                );
            }
            Err(p) => {
                all_identical = false;
                r.note(
                    "outputs differ after round trip",
                    name,
                    format!("{set_name}: round trip panicked: {p}"),
                );
            }
        }
        match read_pbs(set, "output") {
            Ok(refs) => {
                if refs.len() != out1.len() {
                    all_match = false;
                    r.note(
                        "differs from reference (info)",
                        name,
                        format!(
                            "{set_name}: {} outputs, reference has {}",
                            out1.len(),
                            refs.len()
                        ),
                    );
                    continue;
                }
                for ((oname, got), (_, want)) in out1.iter().zip(&refs) {
                    if let Err(d) = close(got, want) {
                        all_match = false;
                        r.note(
                            "differs from reference (info)",
                            name,
                            format!("{set_name} output '{oname}': {d}"),
                        );
                        break;
                    }
                }
            }
            Err(e) => {
                all_match = false;
                r.note(
                    "reference unreadable (info)",
                    name,
                    format!("{set_name}: {e}"),
                );
            }
        }
    }
    if all_ran {
        r.tract_runnable += 1;
        r.bit_identical += all_identical as usize;
        r.matching_reference += all_match as usize;
    }
}

#[test]
#[ignore = "needs ONNXQ_CONFORMANCE_DIR=<onnx wheel>/backend/test/data/node; run by .ci/run"]
fn onnx_backend_node_tests() {
    let Some(root) = std::env::var_os("ONNXQ_CONFORMANCE_DIR") else {
        panic!(
            "set ONNXQ_CONFORMANCE_DIR to the onnx wheel's backend/test/data/node directory \
             (python -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')"
        );
    };
    let root = PathBuf::from(root);
    let filter = std::env::var("ONNXQ_CONFORMANCE_FILTER").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&filter))
        })
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "{}: no */model.onnx found",
        root.display()
    );

    let scratch = tempfile::tempdir().expect("tempdir");
    // Panics are caught and reported per model; keep their default noise
    // off the test output.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let mut r = Report::default();
    for dir in &dirs {
        let name = dir
            .file_name()
            .expect("dir name")
            .to_string_lossy()
            .into_owned();
        r.total += 1;
        if let Some((m1, m2)) = round_trip(&mut r, &name, &dir.join("model.onnx"), scratch.path()) {
            run_tract(&mut r, &name, dir, &m1, &m2);
        }
    }
    panic::set_hook(hook);

    let report_path = std::env::var_os("ONNXQ_CONFORMANCE_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // CARGO_TARGET_TMPDIR is <target>/tmp.
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("target dir")
                .join("conformance-report.txt")
        });
    std::fs::write(&report_path, r.render()).expect("write report");
    println!("\n{}", r.summary());
    println!(
        "report: {} ({:.1}s)",
        report_path.display(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        r.failures(),
        0,
        "round-trip failures; see {}",
        report_path.display()
    );
}

/// Ops that carry quantized data: a preparation pass may move or fold them
/// only into something still quantized, never into float.
const QUANTIZED_OPS: &[&str] = &[
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
];

fn quantized_op_count(m: &Model) -> usize {
    m.graph
        .ops()
        .into_iter()
        .filter(|&n| QUANTIZED_OPS.contains(&m.graph.node(n).op_type()))
        .count()
}

/// The passes `quantize` prepares a model with never undo quantization:
/// over every backend node test that holds a quantized op (ONNX's own
/// QDQ, QOperator and integer-op tests), the clean-up pipeline keeps every
/// DequantizeLinear and integer op (folding a weight's DequantizeLinear
/// into a float initializer would grow the file and take the integer
/// kernels away from the runtime).
#[test]
#[ignore = "needs ONNXQ_CONFORMANCE_DIR=<onnx wheel>/backend/test/data/node; run by .ci/run"]
fn preparation_keeps_quantized_ops() {
    let Some(root) = std::env::var_os("ONNXQ_CONFORMANCE_DIR") else {
        panic!("set ONNXQ_CONFORMANCE_DIR to the onnx wheel's backend/test/data/node directory");
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(PathBuf::from(&root))
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    let (mut checked, mut unloadable) = (0usize, Vec::new());
    for dir in &dirs {
        let Ok(m) = onnxq::onnx::import::read_model(&dir.join("model.onnx")) else {
            continue;
        };
        let before = quantized_op_count(&m);
        if before == 0 {
            continue;
        }
        match onnxq::quantize::prepare(&m, &Default::default()) {
            Ok(p) => {
                let after = quantized_op_count(&p);
                assert!(
                    after >= before,
                    "{}: preparation left {after} of {before} quantized ops",
                    dir.display()
                );
                checked += 1;
            }
            // Preparation runs shape inference in tract; a model tract
            // cannot load is refused with a message, not de-quantized.
            Err(_) => unloadable.push(dir.file_name().unwrap().to_string_lossy().into_owned()),
        }
    }
    println!(
        "preparation kept every quantized op in {checked} models ({} not loadable by tract: {})",
        unloadable.len(),
        unloadable.join(", ")
    );
    assert!(checked >= 15, "only {checked} quantized models checked");
}
