//! Static quantization end to end, on a real model: the PP-OCR text
//! direction classifier in `testdata/ppocr_cls` (8 calibration and 4
//! validation samples; see its README).
//!
//! What users rely on, each checked here:
//! * the default quantization shrinks the file and keeps the model's answers;
//! * the output is a function of the model, the data *contents* and the
//!   options only — not of runs, thread counts or file names;
//! * saved statistics reproduce a direct run, serve every method, and are
//!   refused for another model;
//! * bad calibration data fails with exit 2 and a message naming the file and
//!   the input;
//! * `validate` thresholds set the exit code;
//! * `--per-tensor`, `--activations s8`, `--exclude`, `--op-types` do what
//!   they say in the written graph;
//! * the output passes the IR verifier and re-imports losslessly.
//!
//! Runs use few samples and `--stats` where calibration itself is not under
//! test, so the file stays well under a minute in a debug build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use onnxq::ir::{Graph, Model, NodeId, ValueId};
use onnxq::onnx::tensor_proto::DataType;
use onnxq::onnx::{export, import};
use onnxq::quantize::{quantize_file, QuantizeOptions};
use onnxq::runtime::RunnerCache;
use onnxq::tensorio::{self, HostTensor};

// ------------------------------------------------------------------ helpers

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn model_path() -> PathBuf {
    testdata("ppocr_cls/model.onnx")
}

/// Runs the binary; progress bars off.
fn onnxq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .expect("the onnxq binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stderr.
fn ok(args: &[&str]) -> String {
    let o = onnxq(args);
    assert!(
        o.status.success(),
        "onnxq {} failed ({:?}):\n{}",
        args.join(" "),
        o.status.code(),
        stderr(&o)
    );
    stderr(&o)
}

/// Asserts the exit code and returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let o = onnxq(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "onnxq {}: expected exit {code}; stderr:\n{}",
        args.join(" "),
        stderr(&o)
    );
    stderr(&o)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn read(p: &Path) -> Model {
    import::read_model(p).unwrap_or_else(|e| panic!("{}: does not import: {e}", p.display()))
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn op_histogram(m: &Model) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for n in m.graph.ops() {
        *h.entry(m.graph.node(n).op_type().to_string()).or_insert(0) += 1;
    }
    h
}

fn count(h: &BTreeMap<String, usize>, op: &str) -> usize {
    h.get(op).copied().unwrap_or(0)
}

/// The node producing `v` when it is a DequantizeLinear.
fn dq_producer(g: &Graph, v: ValueId) -> Option<NodeId> {
    let p = g.producer(v);
    g.node(p).is("DequantizeLinear").then_some(p)
}

/// Weight DequantizeLinear nodes: those whose quantized input is a
/// constant of rank ≥ 2 (biases are rank 1, activations not constant).
fn weight_dqs(g: &Graph) -> Vec<NodeId> {
    g.ops()
        .into_iter()
        .filter(|&n| {
            let node = g.node(n);
            node.is("DequantizeLinear")
                && node
                    .input(0)
                    .and_then(|x| g.constant(x))
                    .is_some_and(|t| t.dims().len() >= 2)
        })
        .collect()
}

/// Copies the first `n` calibration samples into `dir`, naming sample `i`
/// with `name(i)`.
fn copy_calib(dir: &Path, n: usize, name: impl Fn(usize) -> String) {
    std::fs::create_dir_all(dir).expect("create data dir");
    for i in 0..n {
        let src = testdata(&format!("ppocr_cls/calib/sample_{i:04}.npz"));
        std::fs::copy(&src, dir.join(name(i))).expect("copy a calibration sample");
    }
}

/// Artifacts several tests compare against, made once per test run.
struct Fixture {
    /// The first 4 calibration samples.
    calib4: PathBuf,
    /// `onnxq calibrate` on `calib4`.
    stats: PathBuf,
    /// `onnxq quantize --calib calib4` with default options.
    direct: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quantize-fixture");
        let _ = std::fs::remove_dir_all(&root);
        let calib4 = root.join("calib4");
        copy_calib(&calib4, 4, |i| format!("sample_{i:04}.npz"));
        let stats = root.join("stats.json");
        let direct = root.join("direct.onnx");
        let m = model_path();
        ok(&[
            "calibrate",
            s(&m),
            "--calib",
            s(&calib4),
            "-q",
            "-o",
            s(&stats),
        ]);
        ok(&[
            "quantize",
            s(&m),
            "--calib",
            s(&calib4),
            "-q",
            "--val-samples",
            "0",
            "--threads",
            "2",
            "--no-speed-select",
            "--method",
            "mse",
            "-o",
            s(&direct),
        ]);
        Fixture {
            calib4,
            stats,
            direct,
        }
    })
}

/// `quantize` reusing the fixture's statistics, plus `extra` options.
fn quantize_from_stats(out: &Path, extra: &[&str]) -> Model {
    let f = fixture();
    let m = model_path();
    let mut args = vec![
        "quantize",
        s(&m),
        "--stats",
        s(&f.stats),
        "-q",
        "--val-samples",
        "0",
        "-o",
        s(out),
    ];
    // Timing-free and method-pinned, as the fixture's direct run.
    args.push("--no-speed-select");
    if !extra.contains(&"--method") {
        args.extend(["--method", "mse"]);
    }
    args.extend_from_slice(extra);
    ok(&args);
    read(out)
}

fn sqnr_db(reference: &[f32], test: &[f32]) -> f64 {
    let (mut sig, mut err) = (0f64, 0f64);
    for (&r, &t) in reference.iter().zip(test) {
        sig += (r as f64).powi(2);
        err += (t as f64 - r as f64).powi(2);
    }
    10.0 * (sig / err.max(1e-30)).log10()
}

fn floats(t: &HostTensor) -> Vec<f32> {
    t.to_f32().iter().copied().collect()
}

// -------------------------------------------------------- default quantize

/// The headline behaviour: a smaller file that gives the same answers.
#[test]
fn default_quantization_shrinks_and_keeps_answers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let opts = QuantizeOptions {
        calib: Some(testdata("ppocr_cls/calib")),
        val: Some(testdata("ppocr_cls/val")),
        val_samples: 4,
        progress: false,
        // Every compute op the target fuses: what a timing-free build
        // writes (on this small classifier onnxruntime's int8 kernels do
        // not pay, so speed selection would keep most of it float).
        speed_select: false,
        ..QuantizeOptions::default()
    };
    let report = quantize_file(&model_path(), &out, &opts).expect("quantize ppocr_cls");
    assert_eq!(report.calibration_samples, 8);

    // Size: int8 weights where there were float ones.
    let float_bytes = std::fs::metadata(model_path()).unwrap().len();
    let q_bytes = std::fs::metadata(&out).unwrap().len();
    let ratio = q_bytes as f64 / float_bytes as f64;
    assert!(
        ratio <= 0.60,
        "quantized file is {ratio:.3}x the float file (want <= 0.60)"
    );
    assert_eq!(report.quantized_bytes, q_bytes);

    // Validation on held-out samples, as reported. The output is a
    // 2-class softmax whose rows are near one-hot on this data, so its
    // SQNR is very high (measured 144 dB); 40 dB still leaves a wide
    // margin while catching a broken rewrite.
    let v = report.validation.as_ref().expect("validation ran");
    assert_eq!(v.samples, 4);
    let out0 = &v.outputs[0];
    let sqnr = out0.sqnr_db.expect("float output has an SQNR");
    assert!(sqnr >= 40.0, "validation SQNR {sqnr:.2} dB < 40 dB");
    let top1 = out0
        .top1_agreement
        .expect("[N, 2] output counts as classes");
    assert!(top1 >= 0.95, "top-1 agreement {top1} < 0.95");

    // The softmax hides small errors; the logits feeding it do not. They
    // keep their name in the quantized graph (the Q node reads them).
    let float = read(&model_path());
    let q = read(&out);
    let g = &float.graph;
    let softmax = g
        .ops()
        .into_iter()
        .find(|&n| g.node(n).is("Softmax"))
        .expect("ppocr_cls ends in Softmax");
    let logits = g.name(g.node(softmax).input(0).unwrap()).to_string();
    let rf = RunnerCache::new(&float, vec![logits.clone()]);
    let rq = RunnerCache::new(&q, vec![logits.clone()]);
    let logit_sqnr = |set: &str, n: usize| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..n {
            let file = testdata(&format!("ppocr_cls/{set}/sample_{i:04}.npz"));
            let inputs = tensorio::read_npz(file).unwrap();
            a.extend(floats(&rf.run(&inputs).unwrap()[1].1));
            b.extend(floats(&rq.run(&inputs).unwrap()[1].1));
        }
        (sqnr_db(&a, &b), a, b)
    };
    // On the calibration samples the logits stay inside the calibrated
    // range, so the error is rounding noise accumulated through this
    // MobileNetV3-style net (hard-swish, squeeze-excite): measured 25.7 dB.
    let (db, a, b) = logit_sqnr("calib", 8);
    assert!(
        db >= 20.0,
        "logit SQNR on calibration samples {db:.2} dB < 20 dB (float {a:?}, quantized {b:?})"
    );
    // One validation sample's logits (±17.6) pass the calibrated range
    // (±14.9, from 8 samples) and are clipped, as expected of calibration on
    // so few samples: measured 17.4 dB.
    let (db, a, b) = logit_sqnr("val", 4);
    assert!(
        db >= 12.0,
        "logit SQNR on validation samples {db:.2} dB < 12 dB (float {a:?}, quantized {b:?})"
    );
    check_well_formed(&q, &out);
}

/// The written model passes the verifier, has the QDQ form, and exports to
/// the same bytes after re-import (nothing is lost on a round trip).
fn check_well_formed(q: &Model, path: &Path) {
    if let Err(vs) = q.graph.verify() {
        panic!("{}: IR verify failed: {vs:?}", path.display());
    }
    let h = op_histogram(q);
    assert!(
        count(&h, "QuantizeLinear") > 0
            && count(&h, "DequantizeLinear") > count(&h, "QuantizeLinear"),
        "{h:?}"
    );
    let exported = export::to_bytes(q);
    let again = import::from_bytes(exported.clone().into(), None, "re-import").expect("re-imports");
    assert_eq!(
        export::to_bytes(&again),
        exported,
        "export → import → export changed the model"
    );
    // Every weight is stored as int8 (the default), read through
    // DequantizeLinear; a constant a join reads as its second activation
    // (an Add's constant operand) is u8 like the activations.
    let g = &q.graph;
    let wdq = weight_dqs(g);
    assert!(!wdq.is_empty());
    let mut int8 = 0;
    for n in wdq {
        let t = g.constant(g.node(n).input(0).unwrap()).unwrap();
        let reads_weight = g
            .users(g.node(n).output())
            .iter()
            .any(|&(u, _)| matches!(g.node(u).op_type(), "Conv" | "MatMul" | "Gemm"));
        if reads_weight {
            assert_eq!(
                t.dtype(),
                DataType::Int8 as i32,
                "{}: weight is not int8",
                t.name()
            );
            int8 += 1;
        }
    }
    assert!(int8 > 0, "no int8 weight");
}

// ------------------------------------------------------------- determinism

#[test]
fn output_does_not_depend_on_run_threads_or_file_names() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let m = model_path();
    let run = |calib: &Path, threads: &str, name: &str| -> Vec<u8> {
        let out = dir.path().join(name);
        ok(&[
            "quantize",
            s(&m),
            "--calib",
            s(calib),
            "-q",
            "--val-samples",
            "0",
            "--threads",
            threads,
            "--no-speed-select",
            "--method",
            "mse",
            "-o",
            s(&out),
        ]);
        bytes(&out)
    };
    let direct = bytes(&f.direct);
    assert!(
        run(&f.calib4, "2", "again.onnx") == direct,
        "two identical runs differ"
    );
    assert!(
        run(&f.calib4, "1", "t1.onnx") == direct,
        "--threads 1 and --threads 2 differ"
    );
    // The same contents under names that sort in the opposite order.
    let reversed = dir.path().join("reversed");
    copy_calib(&reversed, 4, |i| {
        format!("{}_sample.npz", (b'z' - i as u8) as char)
    });
    let mut names: Vec<_> = std::fs::read_dir(&reversed)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names[0], "w_sample.npz",
        "the copy really reverses the order"
    );
    assert!(
        run(&reversed, "2", "rev.onnx") == direct,
        "sample file order changed the output"
    );
}

/// The default run measures where int8 pays (speed selection) and picks
/// the calibration method; both choices go into a saved selection, and a
/// rerun with it times nothing and gives the same bytes at any thread
/// count.
#[test]
fn a_saved_selection_pins_what_the_default_run_measured() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let m = model_path();
    let first = dir.path().join("first.onnx");
    let sel = dir.path().join("sel.json");
    ok(&[
        "quantize",
        s(&m),
        "--calib",
        s(&f.calib4),
        "-q",
        "--val-samples",
        "0",
        "-o",
        s(&first),
        "--save-selection",
        s(&sel),
    ]);
    let saved: serde_json::Value = serde_json::from_slice(&bytes(&sel)).unwrap();
    assert!(saved["int8"].is_array(), "{saved}");
    assert!(saved["method"].is_string(), "{saved}");
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}.onnx"));
        ok(&[
            "quantize",
            s(&m),
            "--calib",
            s(&f.calib4),
            "-q",
            "--val-samples",
            "0",
            "--threads",
            threads,
            "--selection",
            s(&sel),
            "-o",
            s(&out),
        ]);
        assert!(
            bytes(&out) == bytes(&first),
            "--selection with --threads {threads} differs from the run that saved it"
        );
    }
}

/// `--mode dynamic`: the classifier's MatMul gets int8 weights and a
/// run-time activation quantizer; its convolutions stay float (no Q/DQ at
/// all), no calibration is needed, and validation runs when data is given.
#[test]
fn dynamic_mode_rewrites_matmuls_only() {
    let dir = tempfile::tempdir().unwrap();
    let m = model_path();
    let out = dir.path().join("dyn.onnx");
    let report = dir.path().join("dyn.json");
    ok(&[
        "quantize",
        s(&m),
        "--mode",
        "dynamic",
        "--calib",
        s(&testdata("ppocr_cls/calib")),
        "-q",
        "-o",
        s(&out),
        "--report",
        s(&report),
    ]);
    let q = read(&out);
    let h = op_histogram(&q);
    assert_eq!(count(&h, "DynamicQuantizeLinear"), 1, "{h:?}");
    assert_eq!(count(&h, "MatMulInteger"), 1, "{h:?}");
    assert_eq!(count(&h, "QuantizeLinear"), 0, "{h:?}");
    assert_eq!(count(&h, "MatMul"), 0, "{h:?}");
    let hf = op_histogram(&read(&m));
    assert_eq!(
        count(&h, "Conv"),
        count(&hf, "Conv"),
        "convolutions stay float"
    );
    let r: serde_json::Value = serde_json::from_slice(&bytes(&report)).unwrap();
    let sqnr = r["validation"]["outputs"][0]["sqnr_db"].as_f64().unwrap();
    assert!(sqnr >= 40.0, "dynamic validation {sqnr} dB");
    // Convolutions cannot be asked for.
    let err = fails(
        &[
            "quantize",
            s(&m),
            "--mode",
            "dynamic",
            "--op-types",
            "Conv",
            "-o",
            s(&out),
        ],
        2,
    );
    assert!(err.contains("ConvInteger"), "{err}");
    // No calibration data is needed: this opset-11 model (whose Softmax
    // rank is unknown without data) is rewritten at opset 11.
    let bare = dir.path().join("bare.onnx");
    ok(&["quantize", s(&m), "--mode", "dynamic", "-q", "-o", s(&bare)]);
    let hb = op_histogram(&read(&bare));
    assert_eq!(count(&hb, "MatMulInteger"), 1, "{hb:?}");
}

// -------------------------------------------------------------- statistics

#[test]
fn stats_reproduce_a_direct_run() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("from_stats.onnx");
    // No data at all: the statistics carry what is needed.
    quantize_from_stats(&out, &[]);
    assert!(
        bytes(&out) == bytes(&f.direct),
        "quantize --stats differs from quantize --calib"
    );
}

#[test]
fn stats_serve_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = BTreeMap::new();
    for method in ["minmax", "percentile", "entropy", "mse"] {
        let out = dir.path().join(format!("{method}.onnx"));
        let q = quantize_from_stats(&out, &["--method", method]);
        if let Err(vs) = q.graph.verify() {
            panic!("--method {method}: IR verify failed: {vs:?}");
        }
        files.insert(method, bytes(&out));
    }
    // Each method chose its own ranges (the method is really applied).
    let distinct: std::collections::BTreeSet<&Vec<u8>> = files.values().collect();
    assert_eq!(distinct.len(), 4, "some methods gave identical models");
    assert!(
        files["mse"] == bytes(&fixture().direct),
        "mse is the default method"
    );
}

#[test]
fn stats_for_another_model_are_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(testdata("tiny/conv_relu.onnxtxt")).unwrap();
    let tiny = onnxq::ir::text::parse_model(&src).expect("tiny model parses");
    let tiny_path = dir.path().join("tiny.onnx");
    export::write_model(&tiny, &tiny_path, &Default::default()).unwrap();
    let out = dir.path().join("q.onnx");
    let err = fails(
        &[
            "quantize",
            "--no-speed-select",
            s(&tiny_path),
            "--stats",
            s(&f.stats),
            "-q",
            "-o",
            s(&out),
        ],
        2,
    );
    assert!(err.contains("computed for another model"), "{err}");
    assert!(
        err.contains(s(&f.stats)),
        "message names the statistics file: {err}"
    );
    assert!(!out.exists(), "no output is written");
}

// ---------------------------------------------------- calibration data errors

/// A directory with one sample holding `arrays`.
fn data_dir(root: &Path, name: &str, arrays: Vec<(String, HostTensor)>) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    tensorio::write_npz(d.join("bad.npz"), &arrays).unwrap();
    d
}

fn zeros_f32(shape: &[usize]) -> HostTensor {
    HostTensor::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(shape)))
}

#[test]
fn bad_calibration_data_names_file_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let m = model_path();
    let out = root.join("q.onnx");
    let quantize = |calib: &Path| {
        fails(
            &[
                "quantize",
                "--no-speed-select",
                s(&m),
                "--calib",
                s(calib),
                "-q",
                "-o",
                s(&out),
            ],
            2,
        )
    };

    let d = data_dir(
        root,
        "name",
        vec![("image".into(), zeros_f32(&[1, 3, 48, 192]))],
    );
    let e = quantize(&d);
    assert!(
        e.contains("bad.npz") && e.contains("'image'") && e.contains("inputs: x"),
        "{e}"
    );

    let f64s = HostTensor::F64(ndarray::ArrayD::zeros(ndarray::IxDyn(&[1, 3, 48, 192])));
    let d = data_dir(root, "dtype", vec![("x".into(), f64s)]);
    let e = quantize(&d);
    assert!(
        e.contains("bad.npz") && e.contains("'x'") && e.contains("double") && e.contains("float"),
        "{e}"
    );

    let d = data_dir(root, "rank", vec![("x".into(), zeros_f32(&[3, 48, 192]))]);
    let e = quantize(&d);
    assert!(
        e.contains("bad.npz") && e.contains("'x'") && e.contains("[3, 48, 192]"),
        "{e}"
    );

    // A later sample whose shape differs from the first one's: caught while
    // calibrating, still naming that file.
    let d = root.join("shape");
    copy_calib(&d, 1, |_| "a.npz".into());
    tensorio::write_npz(d.join("b.npz"), &[("x".into(), zeros_f32(&[1, 3, 48, 96]))]).unwrap();
    let e = quantize(&d);
    assert!(
        e.contains("b.npz") && e.contains("'x'") && e.contains("[1, 3, 48, 96]"),
        "{e}"
    );

    let d = root.join("empty");
    std::fs::create_dir_all(&d).unwrap();
    let e = quantize(&d);
    assert!(e.contains("empty") && e.contains("no samples found"), "{e}");

    assert!(!out.exists(), "no output is written on bad data");
}

#[test]
fn random_calibration_works_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let e = ok(&[
        "quantize",
        "--no-speed-select",
        s(&model_path()),
        "--calib-random",
        "2",
        // The classifier's height and width are symbolic: random data
        // needs the deployed size (text lines of 48×192).
        "--input-shape",
        "x=1,3,48,192",
        "-q",
        "--val-samples",
        "0",
        "-o",
        s(&out),
    ]);
    assert!(
        e.contains("warning:") && e.contains("RANDOM"),
        "no loud warning: {e}"
    );
    let q = read(&out);
    assert!(count(&op_histogram(&q), "QuantizeLinear") > 0);
}

// ---------------------------------------------------------------- validate

#[test]
fn validate_thresholds_set_the_exit_code() {
    let f = fixture();
    let m = model_path();
    let val = testdata("ppocr_cls/val");
    let e = fails(
        &[
            "validate",
            s(&m),
            s(&f.direct),
            "--data",
            s(&val),
            "--min-sqnr",
            "1000",
        ],
        1,
    );
    assert!(e.contains("below --min-sqnr 1000"), "{e}");
    let o = onnxq(&[
        "validate",
        s(&m),
        s(&f.direct),
        "--data",
        s(&val),
        "--min-sqnr",
        "20",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("validation on 4 sample(s)")
            && table.contains("save_infer_model/scale_0.tmp_1"),
        "{table}"
    );
}

// ------------------------------------------------------------------ options

#[test]
fn per_tensor_gives_scalar_weight_scales_without_opset_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let direct = read(&fixture().direct);
    // Per-channel (the default) needs opset 13; the model imports 11.
    assert_eq!(direct.opset(""), Some(13));
    let g = &direct.graph;
    assert!(weight_dqs(g)
        .iter()
        .any(|&n| g.node(n).attr_i("axis").is_some()));

    let q = quantize_from_stats(&dir.path().join("pt.onnx"), &["--per-tensor"]);
    let g = &q.graph;
    assert_eq!(
        q.opset(""),
        Some(11),
        "--per-tensor must not upgrade the opset"
    );
    let wdq = weight_dqs(g);
    assert_eq!(
        wdq.len(),
        weight_dqs(&direct.graph).len(),
        "same weights quantized"
    );
    for n in wdq {
        let scale = g.constant(g.node(n).input(1).unwrap()).unwrap();
        assert_eq!(
            scale.len(),
            1,
            "{}: per-tensor scale has {} elements",
            scale.name(),
            scale.len()
        );
    }
    // Opset 11's DequantizeLinear has no `axis`: no node may carry one
    // (biases included), or ORT and onnx.checker reject the model.
    for n in g.ops() {
        if g.node(n).is("DequantizeLinear") {
            assert!(
                g.node(n).attr_i("axis").is_none(),
                "{}: axis at opset 11",
                g.node(n).name()
            );
        }
    }
}

/// The zero points of all QuantizeLinear nodes.
fn activation_zero_points(g: &Graph) -> Vec<(i32, Vec<i64>)> {
    g.ops()
        .into_iter()
        .filter(|&n| g.node(n).is("QuantizeLinear"))
        .map(|n| {
            let z = g
                .constant(g.node(n).input(2).expect("explicit zero point"))
                .unwrap();
            (z.dtype(), z.to_i64().unwrap())
        })
        .collect()
}

#[test]
fn activations_s8_are_symmetric_int8() {
    let dir = tempfile::tempdir().unwrap();
    let direct = read(&fixture().direct);
    let zps = activation_zero_points(&direct.graph);
    assert!(
        !zps.is_empty() && zps.iter().all(|(t, _)| *t == DataType::Uint8 as i32),
        "default is u8"
    );

    let q = quantize_from_stats(&dir.path().join("s8.onnx"), &["--activations", "s8"]);
    let zps = activation_zero_points(&q.graph);
    assert_eq!(zps.len(), activation_zero_points(&direct.graph).len());
    for (t, z) in zps {
        assert_eq!(t, DataType::Int8 as i32);
        assert_eq!(z, vec![0], "s8 activations are symmetric");
    }
}

#[test]
fn exclude_conv_keeps_every_conv_float() {
    let dir = tempfile::tempdir().unwrap();
    let q = quantize_from_stats(&dir.path().join("ex.onnx"), &["--exclude", "Conv"]);
    let g = &q.graph;
    let convs: Vec<NodeId> = g
        .ops()
        .into_iter()
        .filter(|&n| g.node(n).is("Conv"))
        .collect();
    assert_eq!(
        convs.len(),
        count(&op_histogram(&read(&fixture().direct)), "Conv")
    );
    for n in convs {
        let w = g.node(n).input(1).unwrap();
        assert!(
            dq_producer(g, w).is_none(),
            "{}: weight still dequantized",
            g.node(n).name()
        );
        assert!(g
            .constant(w)
            .is_some_and(|t| t.dtype() == DataType::Float as i32));
    }
    // Everything else is still quantized: the MatMul's weight is int8.
    let matmul = g
        .ops()
        .into_iter()
        .find(|&n| g.node(n).is("MatMul"))
        .unwrap();
    assert!(dq_producer(g, g.node(matmul).input(1).unwrap()).is_some());
    assert!(count(&op_histogram(&q), "QuantizeLinear") > 0);
}

#[test]
fn op_types_limit_quantization_to_those_ops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ops.onnx");
    let report = dir.path().join("report.json");
    let q = quantize_from_stats(&out, &["--op-types", "Conv,MatMul", "--report", s(&report)]);
    let r: serde_json::Value = serde_json::from_slice(&bytes(&report)).unwrap();
    let mut quantized = std::collections::BTreeSet::new();
    for d in r["nodes"].as_array().unwrap() {
        if d["quantized"].as_bool().unwrap() {
            quantized.insert(d["op"].as_str().unwrap().to_string());
        }
    }
    // A Relu right after a quantized Conv is part of its group on the
    // default target (onnxruntime folds it into the Conv's output
    // QuantizeLinear), so it counts as quantized with it.
    assert_eq!(
        quantized,
        ["Conv", "MatMul", "Relu"].map(String::from).into(),
        "quantized op types"
    );
    // In the graph: int8 weights feed only Conv and MatMul, and the ops that
    // were quantized by default (Add, HardSigmoid, …) read no DQ weights.
    let g = &q.graph;
    for dq in weight_dqs(g) {
        for (user, _) in g.users(g.node(dq).output()) {
            let op = g.node(user).op_type();
            assert!(op == "Conv" || op == "MatMul", "an int8 weight feeds {op}");
        }
    }
    let h = op_histogram(&q);
    let hd = op_histogram(&read(&fixture().direct));
    assert!(
        count(&h, "QuantizeLinear") > 0
            && count(&h, "QuantizeLinear") < count(&hd, "QuantizeLinear"),
        "{h:?} vs {hd:?}"
    );
}

// ------------------------------------------------------------- validation

/// Validation hands tract the quantized model with its constant
/// DequantizeLinear nodes folded (tract's own folding is slow) and its
/// activation Q/DQ pairs fused into one vectorized op; the outputs must be
/// bit-identical to running the file as written, per-channel and
/// per-tensor alike.
#[test]
fn validation_speedups_change_no_output_bit() {
    let dir = tempfile::tempdir().unwrap();
    let per_channel = read(&fixture().direct);
    let per_tensor = quantize_from_stats(&dir.path().join("pt.onnx"), &["--per-tensor"]);
    for (what, q) in [("per-channel", &per_channel), ("per-tensor", &per_tensor)] {
        let (ra, rb) = (
            RunnerCache::new(q, vec![]),
            RunnerCache::new(q, vec![]).validating(),
        );
        for i in 0..4 {
            let file = testdata(&format!("ppocr_cls/val/sample_{i:04}.npz"));
            let inputs = tensorio::read_npz(file).unwrap();
            let (a, b) = (ra.run(&inputs).unwrap(), rb.run(&inputs).unwrap());
            let r = rb.runner(&inputs).unwrap();
            assert!(r.fused_qdq() > 10, "{what}: pairs fused");
            assert!(
                r.folded_dq() >= weight_dqs(&q.graph).len(),
                "{what}: every weight DequantizeLinear folded"
            );
            for ((name, x), (_, y)) in a.iter().zip(&b) {
                let bits =
                    |t: &HostTensor| floats(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(x), bits(y), "{what}: output {name}, sample {i}");
            }
        }
    }
}

/// By default validation reuses the float outputs calibration recorded on
/// the first samples, and stops adding samples once their outputs hold
/// `val_values` values; `--val-samples N` asks for exactly N.
#[test]
fn default_validation_sample_count_follows_output_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let base = QuantizeOptions {
        calib: Some(testdata("ppocr_cls/calib")),
        progress: false,
        ..QuantizeOptions::default()
    };
    // ppocr_cls outputs 2 values per sample: 8 samples stay far below the
    // default budget.
    let r = quantize_file(&model_path(), &out, &base).unwrap();
    assert_eq!(r.validation.as_ref().unwrap().samples, 8);
    // A budget of 5 values is met by the third sample.
    let small = QuantizeOptions {
        val_values: Some(5),
        ..base.clone()
    };
    let r = quantize_file(&model_path(), &out, &small).unwrap();
    assert_eq!(r.validation.as_ref().unwrap().samples, 3);
    // An explicit count is kept.
    let exact = QuantizeOptions {
        val_values: None,
        val_samples: 5,
        ..base
    };
    let r = quantize_file(&model_path(), &out, &exact).unwrap();
    assert_eq!(r.validation.as_ref().unwrap().samples, 5);
}

// ------------------------------------------------------------- SmoothQuant

/// A transformer-shaped block with an outlier LayerNorm channel (as BERT's
/// have): `--smooth auto` keeps SmoothQuant because it measurably lifts the
/// output SQNR, says so, and beats `--smooth off` on validation.
#[test]
fn smooth_auto_keeps_smoothquant_where_it_helps() {
    use onnxq::quantize::Smooth;
    let dir = tempfile::tempdir().unwrap();
    let mut gamma = [1.0f32; 32];
    gamma[5] = 40.0;
    gamma[17] = -25.0;
    // As in trained transformers, the outlier channels' weight rows are
    // small: the output's energy comes from the ordinary channels, which
    // a per-tensor activation scale stretched for the outliers rounds away.
    let w: Vec<String> = (0..32 * 32)
        .map(|i| {
            let v = (i * 37 % 101) as f32 / 50.0 - 1.0;
            let row = i / 32;
            format!("{:?}", if row == 5 || row == 17 { v * 0.01 } else { v })
        })
        .collect();
    let g: Vec<String> = gamma.iter().map(|x| format!("{x:?}")).collect();
    let src = format!(
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[1,8,32] I) => (float[1,8,32] Y, float[1,8,32] R)\n<float[32] gamma = {{{}}}, float[32,32] W = {{{}}}>\n{{\n  X = LayerNormalization <axis: int = -1> (I, gamma)\n  Y = MatMul (X, W)\n  R = Add (X, I)\n}}\n",
        g.join(", "),
        w.join(", ")
    );
    let m = onnxq::ir::text::parse_model(&src).expect("block parses");
    let path = dir.path().join("block.onnx");
    export::write_model(&m, &path, &Default::default()).unwrap();
    let run = |smooth: Smooth, name: &str| {
        let out = dir.path().join(name);
        let opts = QuantizeOptions {
            calib_random: Some(16),
            progress: false,
            speed_select: false,
            target: onnxq::target::Target::Portable,
            smooth,
            ..QuantizeOptions::default()
        };
        let r = quantize_file(&path, &out, &opts).expect("quantize the block");
        let sqnr = r
            .validation
            .as_ref()
            .and_then(|v| v.outputs.iter().find(|o| o.name == "Y"))
            .and_then(|o| o.sqnr_db)
            .expect("Y is validated");
        (r, sqnr, read(&out))
    };
    let (auto, auto_db, auto_m) = run(Smooth::Auto, "auto.onnx");
    let (_, off_db, off_m) = run(Smooth::Off, "off.onnx");
    assert!(
        auto.remarks
            .iter()
            .any(|r| r.message.contains("smooth-quant kept")),
        "{:?}",
        auto.remarks
    );
    assert!(auto.pipeline.contains("smooth-quant{"), "{}", auto.pipeline);
    assert!(
        auto_db > off_db + 3.0,
        "smoothed {auto_db:.2} dB against {off_db:.2} dB without: {:?}",
        auto.remarks
    );
    let has_mul = |m: &Model| m.graph.ops().into_iter().any(|n| m.graph.node(n).is("Mul"));
    assert!(has_mul(&auto_m) && !has_mul(&off_m));
}
