//! What a new user meets first with a model onnxq was never tuned on, each
//! case a small model showing one class of real-model trouble: symbolic
//! input dims with random calibration data, `--input-shape` mistakes,
//! validation at the shapes calibration used, random indices into an
//! embedding table, an already-quantized model, a tensor empty at the
//! calibrated shapes, recurrent layers and `If` nodes on a constant.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onnxq::ir::{text, Model};
use onnxq::onnx::{export, import};

fn onnxq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .expect("the onnxq binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs onnxq and asserts the exit code; returns stderr.
fn expect(args: &[&str], code: i32) -> String {
    let o = onnxq(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "onnxq {args:?}:\n{err}");
    err
}

/// Writes the text-IR model `src` as `name`.onnx in `dir`.
fn model(dir: &Path, name: &str, src: &str) -> PathBuf {
    let m = text::parse_model(src).unwrap_or_else(|e| panic!("{name} parses: {e}"));
    let p = dir.join(format!("{name}.onnx"));
    export::write_model(&m, &p, &Default::default()).expect("model is written");
    p
}

fn read(p: &Path) -> Model {
    import::read_model(p).expect("output imports")
}

fn ops(m: &Model) -> Vec<String> {
    let g = &m.graph;
    g.ops()
        .into_iter()
        .map(|n| g.node(n).op_type().to_string())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn report(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).expect("report is JSON")
}

const CONV_SYMBOLIC: &str = r#"<ir_version: 8, opset_import: ["" : 13]>
g (float[N,3,H,W] X) => (float[N,4,H,W] Y)
<float[4,3,1,1] K = {1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0}>
{
  C = Conv (X, K)
  Y = Relu (C)
}
"#;

#[test]
fn random_data_refuses_symbolic_dims_and_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path(), "conv", CONV_SYMBOLIC);
    let out = dir.path().join("q.onnx");
    let err = expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "-q",
            "-o",
            s(&out),
        ],
        2,
    );
    assert!(
        err.contains("'H' (axis 2)") && err.contains("'W' (axis 3)"),
        "names each symbolic dim: {err}"
    );
    assert!(
        err.contains("--input-shape X=1,3,<H>,<W>"),
        "shows the flag: {err}"
    );
    assert!(!out.exists());
}

#[test]
fn input_shape_of_the_wrong_rank_or_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path(), "conv", CONV_SYMBOLIC);
    let out = dir.path().join("q.onnx");
    let base = [
        "quantize",
        s(&m),
        "--calib-random",
        "2",
        "-q",
        "-o",
        s(&out),
    ];
    let err = expect(&[&base[..], &["--input-shape", "X=1,3,8"]].concat(), 2);
    assert!(err.contains("has rank 4"), "{err}");
    let err = expect(&[&base[..], &["--input-shape", "X=1,5,8,8"]].concat(), 2);
    assert!(
        err.contains("axis 1") && err.contains("fixed at 3"),
        "{err}"
    );
    let err = expect(
        &[&base[..], &["--input-shape", "image=1,3,8,8"]].concat(),
        2,
    );
    assert!(
        err.contains("no input 'image'") && err.contains("inputs: X"),
        "{err}"
    );
}

/// Validation draws its samples at the shapes calibration used: a real
/// SQNR, not `-inf` or a mismatch from samples drawn at 1×1.
#[test]
fn validation_runs_at_the_given_input_shape() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path(), "conv", CONV_SYMBOLIC);
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "4",
            "--input-shape",
            "X=1,3,8,8",
            "--target",
            "portable",
            "-q",
            "-o",
            s(&out),
            "--report",
            s(&rep),
        ],
        0,
    );
    let r = report(&rep);
    let sqnr = r["validation"]["outputs"][0]["sqnr_db"]
        .as_f64()
        .expect("a finite SQNR");
    assert!(sqnr > 20.0 && sqnr < 150.0, "SQNR {sqnr}");
}

/// Random integer inputs that index an embedding table are drawn below
/// its size (0..100 into a 17-row table made tract fail).
#[test]
fn random_indices_stay_within_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let table: Vec<String> = (0..17 * 4)
        .map(|i| format!("{:?}", i as f32 / 10.0))
        .collect();
    let src = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\ng (int64[1,6] ids) => (float[1,6,2] Y)\n<float[17,4] T = {{{}}}, float[4,2] Wm = {{1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0}}>\n{{\n  E = Gather (T, ids)\n  Y = MatMul (E, Wm)\n}}\n",
        table.join(", ")
    );
    let m = model(dir.path(), "embed", &src);
    let out = dir.path().join("q.onnx");
    expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "8",
            "-q",
            "-o",
            s(&out),
        ],
        0,
    );
}

/// A quantized model is refused with what to do instead, not quantized a
/// second time; and the prepare passes never fold a weight's
/// DequantizeLinear back into a float weight.
#[test]
fn an_already_quantized_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = CONV_SYMBOLIC
        .replace("float[N,3,H,W] X", "float[1,3,8,8] X")
        .replace("float[N,4,H,W] Y", "float[1,4,8,8] Y");
    let m = model(dir.path(), "conv", &src);
    let q = dir.path().join("q.onnx");
    expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "--target",
            "portable",
            "-q",
            "-o",
            s(&q),
        ],
        0,
    );
    let q2 = dir.path().join("q2.onnx");
    let err = expect(
        &["quantize", s(&q), "--calib-random", "2", "-q", "-o", s(&q2)],
        2,
    );
    assert!(err.contains("already quantized"), "{err}");
    assert!(
        err.contains("onnxq lint") && err.contains("onnxq convert"),
        "{err}"
    );
    assert!(!q2.exists());

    // `opt` with the prepare passes keeps every DequantizeLinear.
    let o = dir.path().join("o.onnx");
    expect(
        &[
            "opt",
            s(&q),
            "-p",
            "eliminate-identity,fold-constants,dce",
            "-o",
            s(&o),
        ],
        0,
    );
    let count = |m: &Model| ops(m).iter().filter(|x| *x == "DequantizeLinear").count();
    assert_eq!(count(&read(&o)), count(&read(&q)));
    assert!(count(&read(&q)) >= 2);
}

/// A tensor to be quantized that held no value at the calibrated shapes
/// (here a Slice that is empty for an 8-wide input) is refused instead of
/// "quantized" with a range from nothing.
#[test]
fn an_empty_calibrated_tensor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conv = r#"<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,W] X) => (float[1,4,0] Y)
<int64[1] st = {8}, int64[1] en = {16}, int64[1] ax = {2}, float[4,3,1] K = {1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0}>
{
  S = Slice (X, st, en, ax)
  Y = Conv (S, K)
}
"#;
    let m = model(dir.path(), "empty", conv);
    let out = dir.path().join("q.onnx");
    let err = expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "--input-shape",
            "X=1,3,8",
            "-q",
            "-o",
            s(&out),
        ],
        2,
    );
    assert!(
        err.contains("held no finite value") && err.contains("--input-shape"),
        "{err}"
    );
    assert!(!out.exists());
}

/// An LSTM carries most of the compute: the share of MACs says so and a
/// warning names it; an `If` on a constant condition is inlined, so the
/// Conv in its branch is quantized.
#[test]
fn recurrent_layers_are_counted_and_constant_ifs_inlined() {
    let dir = tempfile::tempdir().unwrap();
    let w: Vec<String> = (0..32 * 6)
        .map(|i| format!("{:?}", (i % 7) as f32 / 7.0 - 0.5))
        .collect();
    let r: Vec<String> = (0..32 * 8)
        .map(|i| format!("{:?}", (i % 5) as f32 / 10.0 - 0.2))
        .collect();
    let src = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\ng (float[10,1,6] X) => (float[10,1,2] Y)\n<float[1,32,6] Wl = {{{}}}, float[1,32,8] Rl = {{{}}}, int64[1] ax = {{1}}, float[8,2] W2 = {{1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0}}>\n{{\n  [lstm] H = LSTM <hidden_size: int = 8> (X, Wl, Rl)\n  S = Squeeze (H, ax)\n  Y = MatMul (S, W2)\n}}\n",
        w.join(", "),
        r.join(", ")
    );
    let m = model(dir.path(), "lstm", &src);
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "-q",
            "-o",
            s(&out),
            "--report",
            s(&rep),
        ],
        0,
    );
    let r = report(&rep);
    let share = r["quantized_mac_share"].as_f64().unwrap();
    assert!(share < 0.2, "the LSTM's MACs count: share {share}");
    let warned = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap_or("").contains("LSTM 'lstm' stays float"));
    assert!(warned, "{}", r["warnings"]);

    let src = r#"<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,4,4] X) => (float[1,4,4,4] Y)
<bool c = {1}, float[4,3,1,1] K = {1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0}>
{
  [branch] Y = If (c) <
    then_branch: graph = then_body () => (float[1,4,4,4] t) {
      t = Conv (X, K)
    },
    else_branch: graph = else_body () => (float[1,4,4,4] e) {
      e0 = Conv (X, K)
      e = Neg (e0)
    }
  >
}
"#;
    let m = model(dir.path(), "if", src);
    let out = dir.path().join("qi.onnx");
    let rep = dir.path().join("ri.json");
    expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "--target",
            "portable",
            "-q",
            "-o",
            s(&out),
            "--report",
            s(&rep),
        ],
        0,
    );
    let q = read(&out);
    assert!(!ops(&q).contains(&"If".to_string()), "{:?}", ops(&q));
    assert!(
        ops(&q).contains(&"QuantizeLinear".to_string()),
        "{:?}",
        ops(&q)
    );
    assert!(
        !ops(&q).contains(&"Neg".to_string()),
        "the else branch is gone"
    );
    let said = report(&rep)["remarks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["pass"] == "inline-if");
    assert!(said, "the report says the If was inlined");
}

/// Shape arithmetic (int64 Shape → Gather → Concat → Reshape's shape) is
/// not a quantization candidate: the report lists only float ops, on every
/// target.
#[test]
fn integer_shape_arithmetic_is_not_a_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let src = r#"<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,4,4] X) => (float[1,64] Y)
<float[4,3,1,1] K = {1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0}, int64[1] zero = {0}, int64[1] rest = {-1}>
{
  C = Conv (X, K)
  R = Relu (C)
  [shape] S = Shape (R)
  [dim] D = Gather <axis: int = 0> (S, zero)
  [cat] T = Concat <axis: int = 0> (D, rest)
  Y = Reshape (R, T)
}
"#;
    let m = model(dir.path(), "shapes", src);
    for target in ["ort-cpu", "tract", "portable"] {
        let out = dir.path().join(format!("q-{target}.onnx"));
        let rep = dir.path().join(format!("r-{target}.json"));
        expect(
            &[
                "quantize",
                s(&m),
                "--calib-random",
                "2",
                "--target",
                target,
                "--no-speed-select",
                "-q",
                "-o",
                s(&out),
                "--report",
                s(&rep),
            ],
            0,
        );
        let r = report(&rep);
        let listed: Vec<&str> = r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["node"].as_str().unwrap())
            .collect();
        for n in ["shape", "dim", "cat"] {
            assert!(!listed.contains(&n), "{target}: {n} listed in {listed:?}");
        }
    }
}

/// `inspect` shows a long metadata value (an OCR dictionary) cut to its
/// first line unless asked for in full, and counts weights held in
/// `Constant` nodes as parameters.
#[test]
fn inspect_cuts_long_metadata_and_counts_constant_weights() {
    let dir = tempfile::tempdir().unwrap();
    let dict: Vec<String> = (0..500).map(|i| format!("char{i}")).collect();
    let src = format!(
        "<ir_version: 8, opset_import: [\"\" : 13], metadata_props: [\"character\" : \"{}\"]>\ng (float[1,4] X) => (float[1,4] Y)\n{{\n  W = Constant <value: tensor = float[4,4] {{1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0}}> ()\n  Y = MatMul (X, W)\n}}\n",
        dict.join("\\n")
    );
    let m = model(dir.path(), "meta", &src);
    let o = onnxq(&["inspect", s(&m)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.lines().count() < 30, "metadata printed in full:\n{out}");
    assert!(out.contains("char0") && !out.contains("char499"), "{out}");
    assert!(out.contains("parameters 16"), "{out}");
    let o = onnxq(&["inspect", s(&m), "--full-metadata"]);
    let full = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(full.contains("char499"), "--full-metadata prints it all");
}

/// An `If` on a run-time condition keeps its branches: their Convs stay
/// float, count against the quantized share of MACs, and a warning says
/// so (the report must not claim everything runs quantized).
#[test]
fn compute_inside_a_runtime_if_is_counted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = r#"<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,4,4] X, bool c) => (float[1,4,4,4] Y)
<float[4,3,1,1] K = {1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0}, float[4,4,1,1] K2 = {1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, 0.5, 0.25, 2.0}>
{
  A = Conv (X, K)
  [branch] Y = If (c) <
    then_branch: graph = then_body () => (float[1,4,4,4] t) {
      t = Conv (A, K2)
    },
    else_branch: graph = else_body () => (float[1,4,4,4] e) {
      e0 = Conv (A, K2)
      e = Neg (e0)
    }
  >
}
"#;
    let m = model(dir.path(), "runtime_if", src);
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "--target",
            "portable",
            "-q",
            "-o",
            s(&out),
            "--report",
            s(&rep),
        ],
        0,
    );
    let r = report(&rep);
    let share = r["quantized_mac_share"].as_f64().unwrap();
    assert!(share < 0.9, "the branches' MACs count: share {share}");
    let warned = r["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap_or("")
            .contains("inside the subgraphs of If 'branch'")
    });
    assert!(warned, "{}", r["warnings"]);
}

/// `--fix-input` pins an input the deployment never varies: the `If` on
/// it folds away and the Conv in the branch taken is quantized, while the
/// input stays in the interface.
#[test]
fn a_fixed_input_folds_its_if_and_stays_in_the_interface() {
    let dir = tempfile::tempdir().unwrap();
    let src = r#"<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,4,4] X, int64 sr) => (float[1,4,4,4] Y)
<int64 k = {16000}, float[4,3,1,1] K = {1.0, -1.0, 0.5, 0.25, -0.5, 2.0, 1.0, -1.0, 0.5, 0.25, -0.5, 2.0}>
{
  c = Equal (sr, k)
  [branch] Y = If (c) <
    then_branch: graph = then_body () => (float[1,4,4,4] t) {
      t = Conv (X, K)
    },
    else_branch: graph = else_body () => (float[1,4,4,4] e) {
      e0 = Conv (X, K)
      e = Neg (e0)
    }
  >
}
"#;
    let m = model(dir.path(), "sr_if", src);
    let out = dir.path().join("q.onnx");
    let err = expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "--target",
            "portable",
            "--fix-input",
            "sr=16000",
            "-o",
            s(&out),
        ],
        0,
    );
    assert!(err.contains("fixed sr = 16000"), "{err}");
    let q = read(&out);
    assert!(!ops(&q).contains(&"If".to_string()), "{:?}", ops(&q));
    assert!(ops(&q).contains(&"QuantizeLinear".to_string()));
    let names: Vec<&str> = q
        .graph
        .inputs()
        .iter()
        .map(|p| q.graph.name(p.value))
        .collect();
    assert_eq!(names, ["X", "sr"], "the interface keeps the fixed input");
    let err = expect(
        &[
            "quantize",
            s(&m),
            "--calib-random",
            "2",
            "--fix-input",
            "sr",
            "-o",
            s(&out),
        ],
        2,
    );
    assert!(err.contains("expected NAME=VALUE"), "{err}");
}
