//! The target commands through the real binary, on the shipped classifier:
//! `lint` judges a file for a runtime, `convert` rewrites a QDQ file for
//! tract, `bench` times models side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn onnxq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .expect("the onnxq binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = onnxq(args);
    assert!(
        o.status.success(),
        "onnxq {}:\n{}",
        args.join(" "),
        text(&o)
    );
    text(&o)
}

fn op_histogram(p: &Path) -> BTreeMap<String, usize> {
    let m = onnxq::onnx::import::read_model(p).unwrap();
    let mut h = BTreeMap::new();
    for n in m.graph.ops() {
        *h.entry(m.graph.node(n).op_type().to_string()).or_insert(0) += 1;
    }
    h
}

/// Quantizes the classifier for `target` with every compute op int8
/// (timing-free), per-tensor weights where asked.
fn quantized(dir: &Path, target: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{target}.onnx"));
    let model = testdata("ppocr_cls/model.onnx");
    let calib = testdata("ppocr_cls/calib");
    let mut args = vec![
        "quantize",
        s(&model),
        "--calib",
        s(&calib),
        "--calib-limit",
        "2",
        "--method",
        "minmax",
        "--no-speed-select",
        "--val-samples",
        "0",
        "-q",
        "--target",
        target,
        "-o",
        s(&out),
    ];
    args.extend_from_slice(extra);
    ok(&args);
    out
}

#[test]
fn lint_tells_each_target_what_it_runs_as_integer_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let q = quantized(dir.path(), "ort-cpu", &[]);
    // For onnxruntime every Conv group onnxq wrote is whole.
    let json = ok(&["lint", s(&q), "--target", "ort-cpu", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let convs: Vec<&serde_json::Value> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["op"] == "Conv")
        .collect();
    assert!(!convs.is_empty());
    assert!(
        convs.iter().all(|g| g["integer"] == true),
        "a Conv group onnxq wrote for ort-cpu is not whole: {convs:?}"
    );
    assert!(v["macs_integer"].as_u64().unwrap() > 0);
    // tract runs the same QDQ file in float: every Conv is a warning, and
    // --deny-warnings fails with exit 1.
    let o = onnxq(&["lint", s(&q), "--target", "tract", "--deny-warnings"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("QDQ form: tract runs it in float"), "{t}");
    assert!(t.contains("0.0% of the compute MACs"), "{t}");
    // The float model has nothing to warn about.
    let float = testdata("ppocr_cls/model.onnx");
    ok(&["lint", s(&float), "--target", "tract", "--deny-warnings"]);
    // Nor has a tract file whose compute stays float with int8 weights
    // (expanded at load): no Q/DQ pair is left for tract to run.
    let weights_only = quantized(dir.path(), "tract", &["--coverage", "0"]);
    let t = ok(&[
        "lint",
        s(&weights_only),
        "--target",
        "tract",
        "--deny-warnings",
    ]);
    assert!(
        t.contains("int8 weights (tract expands them at load"),
        "{t}"
    );
    // A bad target is a usage error.
    let o = onnxq(&["lint", s(&float), "--target", "gpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("expected ort-cpu, tract or portable"));
}

#[test]
fn convert_lowers_per_tensor_groups_for_tract() {
    let dir = tempfile::tempdir().unwrap();
    // A QDQ file with per-tensor weights, as a QAT export might be.
    let q = quantized(dir.path(), "portable", &["--per-tensor"]);
    let out = dir.path().join("tract.onnx");
    let log = ok(&[
        "convert",
        s(&q),
        "--target",
        "tract",
        "--no-speed-select",
        "-o",
        s(&out),
    ]);
    assert!(log.contains("QOperator groups for tract"), "{log}");
    let h = op_histogram(&out);
    assert!(h.get("QLinearConv").copied().unwrap_or(0) > 0, "{h:?}");
    // lint agrees: the lowered Convs are tract integer kernels.
    let l = ok(&["lint", s(&out), "--target", "tract"]);
    assert!(l.contains("tract integer kernel"), "{l}");
    // The lowered file still runs and gives the QDQ file's answers within
    // quantization noise.
    let v = ok(&[
        "validate",
        s(&q),
        s(&out),
        "--data",
        s(&testdata("ppocr_cls/val")),
        "--min-sqnr",
        "20",
    ]);
    assert!(v.contains("SQNR"), "{v}");
    // Nothing but tract has a QOperator form to convert to.
    let o = onnxq(&["convert", s(&q), "--target", "ort-cpu", "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn bench_prints_a_ratio_per_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let q = quantized(dir.path(), "ort-cpu", &[]);
    let float = testdata("ppocr_cls/model.onnx");
    let json = ok(&[
        "bench",
        s(&float),
        s(&q),
        s(&q),
        "--data",
        s(&testdata("ppocr_cls/val")),
        "--samples",
        "2",
        "--rounds",
        "2",
        "--iters",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["runtime"], "tract");
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    for m in models {
        assert_eq!(m["round_ms"].as_array().unwrap().len(), 2);
        assert!(m["ratio"].as_f64().unwrap() > 0.0);
    }
    // The baseline's ratio to itself is exactly 1 in every round.
    assert_eq!(models[0]["ratio"].as_f64().unwrap(), 1.0);
    let o = onnxq(&["bench", s(&float), s(&q), "--rounds", "0"]);
    assert_eq!(o.status.code(), Some(2));
}
