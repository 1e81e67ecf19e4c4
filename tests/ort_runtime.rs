//! onnxruntime as a runtime (`onnxq::runtime::ort`): runs agree with tract,
//! profiles time every node and map ORT's fused QDQ nodes back to the ONNX
//! nodes they came from, latency rounds have the shape of
//! `eval/tools/speed.py`'s.
//!
//! These tests need `libonnxruntime`: they find it as onnxq does
//! (`ORT_DYLIB_PATH`, else the `onnxruntime` package of `$VIRTUAL_ENV` or
//! `python3`). If it cannot be found they fail, saying so, unless
//! `ONNXQ_SKIP_ORT=1` is set.
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{ArrayD, IxDyn};

use onnxq::ir::text::parse_model;
use onnxq::ir::Model;
use onnxq::runtime::ort::{
    compare_latency, library, LatencyOptions, LibraryError, OrtError, OrtOptions, OrtSession,
};
use onnxq::runtime::{RunOptions, Runner};
use onnxq::tensorio::HostTensor;

/// `true` when ORT is there; `false` (skip) only with `ONNXQ_SKIP_ORT=1`.
fn ort_available() -> bool {
    match library::find(None) {
        Ok(_) => true,
        Err(e) if std::env::var("ONNXQ_SKIP_ORT").as_deref() == Ok("1") => {
            eprintln!("skipped (ONNXQ_SKIP_ORT=1): {e}");
            false
        }
        Err(e) => panic!(
            "{e}\n(these tests need onnxruntime; set ONNXQ_SKIP_ORT=1 to skip them on purpose)"
        ),
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| format!("{x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn model(text: &str) -> Model {
    parse_model(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Conv+Relu, Flatten, MatMul+Add, Softmax, and side outputs of other
/// element types (Shape: int64, Greater: bool).
fn mlp() -> Model {
    model(&format!(
        r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] X) => (float[1,10] P, int64[4] S, bool[1,10] G)
<
  float[4,3,3,3] W = {{{w}}},
  float[4] B = {{{b}}},
  float[64,10] M = {{{m}}},
  float[10] C = {{{c}}},
  float Z = {{0.1}}
>
{{
  [conv] A = Conv <pads: ints = [1, 1, 1, 1], strides: ints = [2, 2]> (X, W, B)
  [relu] R = Relu (A)
  [flat] F = Flatten (R)
  [fc] Q = MatMul (F, M)
  [bias] Y = Add (Q, C)
  [softmax] P = Softmax <axis: int = 1> (Y)
  [shape] S = Shape (X)
  [greater] G = Greater (P, Z)
}}
"#,
        w = list(&values(108, 1)),
        b = list(&values(4, 2)),
        m = list(&values(640, 3)),
        c = list(&values(10, 4)),
    ))
}

fn mlp_input(seed: u64) -> Vec<(String, HostTensor)> {
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 3, 8, 8]), values(192, seed)).unwrap();
    vec![("X".to_string(), HostTensor::F32(x))]
}

fn close(a: &HostTensor, b: &HostTensor) {
    assert_eq!(a.dtype(), b.dtype());
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_f32(), b.to_f32());
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn runs_and_matches_tract() {
    if !ort_available() {
        return;
    }
    let m = mlp();
    let ort = OrtSession::new(&m, &OrtOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let lib = ort.library();
    assert!(lib.version.starts_with("1."), "version {}", lib.version);
    eprintln!(
        "onnxruntime {} from {} (found by {})",
        lib.version,
        lib.path.display(),
        lib.found_by
    );
    let tract = Runner::new(&m, &RunOptions::default()).unwrap();
    for seed in [10, 11] {
        let x = mlp_input(seed);
        let got = ort.run(&x).unwrap_or_else(|e| panic!("{e}"));
        let want = tract.run(&x).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["P", "S", "G"]);
        for ((gn, g), (wn, w)) in got.iter().zip(&want) {
            assert_eq!(gn, wn);
            close(g, w);
        }
        assert_eq!(
            got[1].1,
            HostTensor::I64(ArrayD::from_shape_vec(IxDyn(&[4]), vec![1, 3, 8, 8]).unwrap())
        );
    }
}

#[test]
fn every_element_type_round_trips() {
    if !ort_available() {
        return;
    }
    let m = model(
        r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] F, double[2] D, float16[2] H, int64[2] L, int32[2] I, int8[2] S, uint8[2] U, bool[2] B)
  => (float[2] F2, double[2] D2, float16[2] H2, int64[2] L2, int32[2] I2, int8[2] S2, uint8[2] U2, bool[2] B2)
{
  F2 = Identity (F)
  D2 = Identity (D)
  H2 = Identity (H)
  L2 = Identity (L)
  I2 = Identity (I)
  S2 = Identity (S)
  U2 = Identity (U)
  B2 = Not (B)
}
"#,
    );
    let a = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[2]), v).unwrap();
    let inputs: Vec<(String, HostTensor)> = vec![
        ("F".into(), HostTensor::F32(a(vec![1.5, -2.0]))),
        (
            "D".into(),
            HostTensor::F64(a(vec![1.5, -2.0]).mapv(f64::from)),
        ),
        (
            "H".into(),
            HostTensor::F16(a(vec![1.5, -2.0]).mapv(half::f16::from_f32)),
        ),
        (
            "L".into(),
            HostTensor::I64(a(vec![1.0, -2.0]).mapv(|x| x as i64 * 1_000_000_000_000)),
        ),
        (
            "I".into(),
            HostTensor::I32(a(vec![7.0, -9.0]).mapv(|x| x as i32)),
        ),
        (
            "S".into(),
            HostTensor::I8(a(vec![-128.0, 127.0]).mapv(|x| x as i8)),
        ),
        (
            "U".into(),
            HostTensor::U8(a(vec![0.0, 255.0]).mapv(|x| x as u8)),
        ),
        (
            "B".into(),
            HostTensor::Bool(a(vec![1.0, 0.0]).mapv(|x| x != 0.0)),
        ),
    ];
    let s = OrtSession::new(&m, &OrtOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let out = s.run(&inputs).unwrap_or_else(|e| panic!("{e}"));
    for ((n, i), (o, t)) in inputs.iter().zip(&out) {
        assert_eq!(format!("{n}2"), *o);
        if n == "B" {
            assert_eq!(*t, HostTensor::Bool(a(vec![0.0, 1.0]).mapv(|x| x != 0.0)));
        } else {
            assert_eq!(t, i, "{n}");
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    if !ort_available() {
        return;
    }
    let s = OrtSession::new(&mlp(), &OrtOptions::default()).unwrap();
    let e = s.run(&[]).unwrap_err();
    assert!(
        matches!(&e, OrtError::MissingInputs { missing, .. } if missing == &["X"]),
        "{e}"
    );
    let mut x = mlp_input(1);
    x.push(("nope".into(), x[0].1.clone()));
    let e = s.run(&x).unwrap_err();
    assert!(
        matches!(&e, OrtError::UnexpectedInput { name, .. } if name == "nope"),
        "{e}"
    );
    let wrong = vec![(
        "X".to_string(),
        HostTensor::F32(ArrayD::zeros(IxDyn(&[1, 3, 4, 4]))),
    )];
    let e = s.run(&wrong).unwrap_err();
    assert!(matches!(&e, OrtError::Run { .. }), "{e}");
}

#[test]
fn profile_times_every_node() {
    if !ort_available() {
        return;
    }
    let m = mlp();
    let s = OrtSession::new(&m, &OrtOptions::default()).unwrap();
    let p = s
        .profile(&mlp_input(3), 5)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.runs, 5);
    assert!(p.total > std::time::Duration::ZERO);
    // Every node of the optimized graph produced a kernel event.
    let timed: Vec<&str> = p.nodes.iter().map(|n| n.ort_node.as_str()).collect();
    for n in &p.map.nodes {
        assert!(
            timed.contains(&n.ort_node.as_str()),
            "{} has no time; timed: {timed:?}",
            n.ort_node
        );
    }
    for n in &p.nodes {
        assert_eq!(n.provider, "CPUExecutionProvider", "{n:?}");
        assert!(!n.op.is_empty(), "{n:?}");
    }
    assert!(p.node_sum() > std::time::Duration::ZERO);
    // Every ONNX node is accounted for: by an ORT node or as folded.
    let mut covered: Vec<&str> = p
        .nodes
        .iter()
        .flat_map(|n| n.onnx_nodes.iter().map(String::as_str))
        .collect();
    covered.extend(p.map.unattributed.iter().map(String::as_str));
    for label in [
        "conv", "relu", "flat", "fc", "bias", "softmax", "shape", "greater",
    ] {
        assert!(covered.contains(&label), "{label} missing from {p:#?}");
    }
    // The Conv runs as ORT's Conv (fused with its Relu) under its name.
    let conv = p
        .nodes
        .iter()
        .find(|n| n.carries.as_deref() == Some("conv") || n.onnx_nodes.iter().any(|o| o == "conv"));
    let conv = conv.unwrap_or_else(|| panic!("no ORT node for conv: {p:#?}"));
    assert!(conv.onnx_nodes.contains(&"conv".to_string()), "{conv:?}");
}

/// One Conv in QDQ form (u8 activations, s8 weights, int32 bias: what ORT
/// fuses on x86); its Q/DQ nodes are unnamed, as onnxq writes them.
const QDQ_CONV: &str = r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] X) => (float[1,4,8,8] Y)
<
  float X_scale = {0.0078125},
  uint8 X_zp = {128},
  int8[4,3,3,3] W_q = {WQ},
  float W_scale = {0.01},
  int8 W_zp = {0},
  int32[4] B_q = {100, -200, 300, -400},
  float B_scale = {0.000078125},
  int32 B_zp = {0},
  float Y_scale = {0.05},
  uint8 Y_zp = {128}
>
{
  X_q = QuantizeLinear (X, X_scale, X_zp)
  X_dq = DequantizeLinear (X_q, X_scale, X_zp)
  W_dq = DequantizeLinear (W_q, W_scale, W_zp)
  B_dq = DequantizeLinear (B_q, B_scale, B_zp)
  [conv] C = Conv <pads: ints = [1, 1, 1, 1]> (X_dq, W_dq, B_dq)
  C_q = QuantizeLinear (C, Y_scale, Y_zp)
  Y = DequantizeLinear (C_q, Y_scale, Y_zp)
}
"#;

#[test]
fn qdq_conv_maps_back_to_its_nodes() {
    if !ort_available() {
        return;
    }
    let w: Vec<i32> = values(108, 5).iter().map(|v| (v * 127.0) as i32).collect();
    let m = model(&QDQ_CONV.replace("WQ", &list(&w)));
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("optimized.onnx");
    let opts = OrtOptions {
        save_optimized: Some(saved.clone()),
        ..Default::default()
    };
    let s = OrtSession::new(&m, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(saved.is_file(), "the optimized graph was not saved");
    let x: Vec<(String, HostTensor)> = mlp_input(7);
    let p = s.profile(&x, 3).unwrap_or_else(|e| panic!("{e}"));
    let fused: Vec<_> = p.nodes.iter().filter(|n| n.op == "QLinearConv").collect();
    assert_eq!(fused.len(), 1, "{p:#?}");
    let q = fused[0];
    assert_eq!(q.carries.as_deref(), Some("conv"), "{q:?}");
    // The fused node stands for the Conv and the Q/DQ around it; the input
    // Q and the output DQ still run on their own.
    assert_eq!(
        q.onnx_nodes,
        [
            "DequantizeLinear@X_dq",
            "DequantizeLinear@W_dq",
            "DequantizeLinear@B_dq",
            "conv",
            "QuantizeLinear@C_q"
        ],
        "{q:?}"
    );
    let own = |label: &str| {
        p.nodes
            .iter()
            .find(|n| n.carries.as_deref() == Some(label))
            .map(|n| n.op.as_str())
    };
    assert_eq!(own("QuantizeLinear@X_q"), Some("QuantizeLinear"), "{p:#?}");
    assert_eq!(
        own("DequantizeLinear@Y"),
        Some("DequantizeLinear"),
        "{p:#?}"
    );
    assert_eq!(p.time_of("conv"), q.median);
    // Nodes ORT inserted (layout transposes) carry nothing.
    for n in &p.nodes {
        if n.carries.is_none() {
            assert!(n.onnx_nodes.is_empty(), "{n:?}");
        }
    }
}

fn onnxq_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_onnxq"))
}

fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

/// `onnxq quantize` of ppocr_cls into `dir`.
fn quantized_ppocr_cls(dir: &Path) -> PathBuf {
    let q = dir.join("q.onnx");
    let out = Command::new(onnxq_bin())
        .arg("quantize")
        .arg("--no-speed-select")
        .arg(testdata("ppocr_cls/model.onnx"))
        .arg("--calib")
        .arg(testdata("ppocr_cls/calib"))
        .arg("-o")
        .arg(&q)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    q
}

fn ppocr_input() -> Vec<(String, HostTensor)> {
    let dir = testdata("ppocr_cls/calib");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npz"))
        .collect();
    files.sort();
    onnxq::tensorio::read_npz(&files[0]).unwrap()
}

#[test]
fn quantized_ppocr_cls_convs_map_back() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let q = onnxq::onnx::import::read_model(&quantized_ppocr_cls(dir.path())).unwrap();
    let convs: Vec<String> = q
        .graph
        .ops()
        .iter()
        .map(|&n| q.graph.node(n))
        .filter(|n| n.op_type() == "Conv")
        .map(|n| n.name().to_string())
        .collect();
    let s = OrtSession::new(&q, &OrtOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let p = s
        .profile(&ppocr_input(), 2)
        .unwrap_or_else(|e| panic!("{e}"));
    let fused: Vec<_> = p.nodes.iter().filter(|n| n.op == "QLinearConv").collect();
    assert!(!fused.is_empty(), "no QLinearConv in {p:#?}");
    for f in &fused {
        let c = f
            .carries
            .as_deref()
            .unwrap_or_else(|| panic!("{f:?} carries nothing"));
        assert!(
            convs.iter().any(|n| n == c),
            "{f:?} carries {c}, not a Conv"
        );
        assert!(f.onnx_nodes.len() >= 3, "{f:?}: Conv and its Q/DQ");
    }
    // Every ONNX Conv is found in ORT, fused or not.
    for c in &convs {
        assert!(
            !p.map.ort_nodes_of(c).is_empty(),
            "Conv {c} has no ORT node"
        );
    }
}

#[test]
fn latency_rounds() {
    if !ort_available() {
        return;
    }
    let m = mlp();
    let a = OrtSession::new(&m, &OrtOptions::default()).unwrap();
    let b = OrtSession::new(&m, &OrtOptions::default()).unwrap();
    let opts = LatencyOptions {
        rounds: 3,
        iters: 4,
        warmup: None,
    };
    let samples = vec![mlp_input(1), mlp_input(2)];
    let l = compare_latency(&[&a, &b], &samples, &opts).unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].ratios, [1.0, 1.0, 1.0]);
    assert_eq!(l[1].round_ms.len(), 3);
    assert!(l[1].median_ms > 0.0 && l[1].ratio > 0.0, "{l:?}");
    assert!(matches!(
        compare_latency(&[&a], &[], &opts),
        Err(OrtError::NoSamples)
    ));
}

#[test]
fn missing_library_is_a_typed_error() {
    // No ORT needed: a path that does not exist is refused before loading.
    let bad = Path::new("/nonexistent/onnxq-test/libonnxruntime.so");
    match library::load(Some(bad)) {
        Err(LibraryError::NotFound { tried }) => {
            assert_eq!(tried.len(), 1, "{tried:?}");
            assert!(
                tried[0].starts_with("--ort-lib: /nonexistent/onnxq-test/"),
                "{tried:?}"
            );
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let opts = OrtOptions {
        library: Some(bad.to_path_buf()),
        ..Default::default()
    };
    let e = OrtSession::new(&mlp(), &opts).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, OrtError::Library(LibraryError::NotFound { .. })),
        "{e}"
    );
    assert!(
        text.contains("--ort-lib PATH") && text.contains("ORT_DYLIB_PATH"),
        "{text}"
    );
    // A folder without the library has none to offer.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(library::library_in(empty.path()), None);
    std::fs::write(empty.path().join("libonnxruntime_providers_shared.so"), b"").unwrap();
    assert_eq!(library::library_in(empty.path()), None);
    std::fs::write(empty.path().join("libonnxruntime.so.1.32.0"), b"").unwrap();
    assert_eq!(
        library::library_in(empty.path()),
        Some(empty.path().join("libonnxruntime.so.1.32.0"))
    );
}

/// Item 4 of the brief, by hand: float against quantized ppocr_cls on the
/// eval samples, to compare with
/// `python eval/tools/speed.py ppocr_cls q.onnx` (same rounds, iters).
/// Needs the eval cache (`~/.cache/onnxq-eval`); run with
/// `cargo test --release --test ort_runtime -- --ignored --nocapture`.
#[test]
#[ignore]
fn latency_ppocr_cls_like_speed_py() {
    if !ort_available() {
        return;
    }
    let home = std::env::var("HOME").unwrap();
    let cache = Path::new(&home).join(".cache/onnxq-eval/cache");
    let float =
        onnxq::onnx::import::read_model(&cache.join("models/ppocr_cls/model.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let qpath = std::env::var("ONNXQ_Q")
        .map(PathBuf::from)
        .unwrap_or_else(|_| quantized_ppocr_cls(dir.path()));
    let q = onnxq::onnx::import::read_model(&qpath).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache.join("data/ppocr_cls/eval/npz"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let samples: Vec<_> = files
        .iter()
        .take(8)
        .map(|f| onnxq::tensorio::read_npz(f).unwrap())
        .collect();
    let a = OrtSession::new(&float, &OrtOptions::default()).unwrap();
    let b = OrtSession::new(&q, &OrtOptions::default()).unwrap();
    let l = compare_latency(&[&a, &b], &samples, &LatencyOptions::default()).unwrap();
    eprintln!(
        "ppocr_cls (ORT {}, 1 thread): float {:.3} ms, q {:.3} ms, float/q = {:.3}x {:?}",
        a.library().version,
        l[0].median_ms,
        l[1].median_ms,
        l[1].ratio,
        l[1].ratios
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
}

fn proto_node(
    name: &str,
    op: &str,
    domain: &str,
    ins: &[&str],
    outs: &[&str],
) -> onnxq::onnx::NodeProto {
    onnxq::onnx::NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        domain: Some(domain.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The names ORT 1.32 gave the nodes it made, as seen in the optimized
/// graphs of ppocr_cls (float and QDQ), mapped without running ORT.
#[test]
fn ort_names_map_back_without_ort() {
    use onnxq::onnx::{GraphProto, ModelProto, TensorProto};
    use onnxq::runtime::ort::names::{label_nodes, map_nodes};
    let init = |n: &str| TensorProto {
        name: Some(n.into()),
        ..Default::default()
    };
    // x → Q → DQ → Conv(DQ w) → Q → DQ → [bn] BatchNormalization → Relu
    //   → MatMul → Add, and a constant Shape subgraph; Q/DQ unnamed.
    let mut m = ModelProto {
        graph: Some(GraphProto {
            node: vec![
                proto_node("", "QuantizeLinear", "", &["x", "s", "z"], &["x_q"]),
                proto_node("", "DequantizeLinear", "", &["x_q", "s", "z"], &["x_dq"]),
                proto_node("", "DequantizeLinear", "", &["w_q", "s", "z"], &["w_dq"]),
                proto_node("Conv@1", "Conv", "", &["x_dq", "w_dq"], &["c"]),
                proto_node("", "QuantizeLinear", "", &["c", "s", "z"], &["c_q"]),
                proto_node("", "DequantizeLinear", "", &["c_q", "s", "z"], &["c_dq"]),
                proto_node("conv2", "Conv", "", &["c_dq", "w2"], &["c2"]),
                proto_node(
                    "bn",
                    "BatchNormalization",
                    "",
                    &["c2", "g", "b", "m", "v"],
                    &["bn_out"],
                ),
                proto_node("relu", "Relu", "", &["bn_out"], &["r"]),
                proto_node("MatMul@0", "MatMul", "", &["r", "w3"], &["mm"]),
                proto_node("Add@0", "Add", "", &["mm", "b3"], &["y"]),
                proto_node("", "Constant", "", &[], &["k"]),
                proto_node("", "Cast", "", &["k"], &["k32"]),
            ],
            initializer: ["s", "z", "w_q", "w2", "g", "b", "m", "v", "w3", "b3"]
                .map(init)
                .to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let labels = label_nodes(&mut m);
    let got: Vec<&str> = labels.labels().collect();
    assert_eq!(
        got,
        [
            "QuantizeLinear@x_q",
            "DequantizeLinear@x_dq",
            "DequantizeLinear@w_dq",
            "Conv@1",
            "QuantizeLinear@c_q",
            "DequantizeLinear@c_dq",
            "conv2",
            "bn",
            "relu",
            "MatMul@0",
            "Add@0",
            "Constant@k",
            "Cast@k32"
        ]
    );
    let optimized = GraphProto {
        node: vec![
            proto_node(
                "QuantizeLinear@x_q",
                "QuantizeLinear",
                "",
                &["x", "s", "z"],
                &["x_q"],
            ),
            proto_node("Transpose", "Transpose", "", &["x_q"], &["t0"]),
            proto_node(
                "Conv@1_token_17",
                "QLinearConv",
                "com.microsoft",
                &["t0", "s", "z", "w_q"],
                &["Conv@1"],
            ),
            proto_node(
                "Transpose_token_165",
                "Transpose",
                "",
                &["Conv@1"],
                &["c_q"],
            ),
            proto_node(
                "DequantizeLinear@c_dq",
                "DequantizeLinear",
                "",
                &["c_q", "s", "z"],
                &["c_dq"],
            ),
            proto_node(
                "ReorderInput",
                "ReorderInput",
                "com.microsoft.nchwc",
                &["c_dq"],
                &["ri"],
            ),
            // Named after the fused Conv+BN+Relu's output tensor.
            proto_node(
                "r_nchwc",
                "Conv",
                "com.microsoft.nchwc",
                &["ri", "w2_nchwc"],
                &["rn"],
            ),
            proto_node(
                "ReorderOutput_token_3",
                "ReorderOutput",
                "com.microsoft.nchwc",
                &["rn"],
                &["r"],
            ),
            proto_node(
                "MatMul@0/MatMulAddFusion",
                "Gemm",
                "",
                &["r", "w3", "b3"],
                &["y"],
            ),
        ],
        ..Default::default()
    };
    let map = map_nodes(&labels, &optimized);
    let row = |n: &str| {
        let o = map.get(n).unwrap_or_else(|| panic!("{n} not in {map:#?}"));
        (
            o.carries.as_deref(),
            o.onnx_nodes.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        row("QuantizeLinear@x_q"),
        (Some("QuantizeLinear@x_q"), vec!["QuantizeLinear@x_q"])
    );
    assert_eq!(row("Transpose"), (None, vec![]));
    assert_eq!(row("Transpose_token_165"), (None, vec![]));
    assert_eq!(
        row("Conv@1_token_17"),
        (
            Some("Conv@1"),
            vec![
                "DequantizeLinear@x_dq",
                "DequantizeLinear@w_dq",
                "Conv@1",
                "QuantizeLinear@c_q"
            ]
        )
    );
    assert_eq!(
        row("DequantizeLinear@c_dq"),
        (Some("DequantizeLinear@c_dq"), vec!["DequantizeLinear@c_dq"])
    );
    assert_eq!(row("r_nchwc"), (Some("relu"), vec!["conv2", "bn", "relu"]));
    assert_eq!(row("ReorderOutput_token_3"), (None, vec![]));
    assert_eq!(
        row("MatMul@0/MatMulAddFusion"),
        (Some("MatMul@0"), vec!["MatMul@0", "Add@0"])
    );
    assert_eq!(map.unattributed, ["Constant@k", "Cast@k32"]);
    assert_eq!(map.ort_nodes_of("bn").len(), 1);
}
