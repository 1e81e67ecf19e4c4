//! Finding the layers that hurt: automatic fallback, cost-aware selection
//! and the per-layer report, end to end through the CLI on the shipped
//! PP-OCR direction classifier.

use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = "testdata/ppocr_cls/model.onnx";
const CALIB: &str = "testdata/ppocr_cls/calib";
const VAL: &str = "testdata/ppocr_cls/val";

fn onnxq(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .expect("run onnxq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("report written")).expect("report is JSON")
}

#[test]
fn fallback_meets_the_target_and_its_exclude_list_pins_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let (q, r) = (path(dir.path(), "fb.onnx"), path(dir.path(), "fb.json"));
    // The validation outputs are near one-hot softmax rows; full
    // quantization reaches about 160 dB on them, so 190 dB forces fallback.
    let (code, _, err) = onnxq(&[
        "quantize",
        "--no-speed-select",
        MODEL,
        "--calib",
        CALIB,
        "--val",
        VAL,
        "-o",
        q.to_str().unwrap(),
        "-q",
        "--target-sqnr",
        "190",
        "--report",
        r.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("fallback: SQNR >= 190 dB met by keeping"),
        "{err}"
    );
    let rep = json(&r);
    let fb = &rep["fallback"];
    assert_eq!(fb["reached"], true);
    let excluded: Vec<String> = fb["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(!excluded.is_empty());
    let worst = rep["validation"]["outputs"][0]["sqnr_db"].as_f64().unwrap();
    assert!(worst >= 190.0, "validation after fallback: {worst} dB");
    // Every excluded node is reported as kept in float.
    for e in &excluded {
        let d = rep["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["node"] == e.as_str())
            .expect("decision per node");
        assert_eq!(d["quantized"], false, "{e}");
    }
    // Pinning the printed list (and the method `auto` chose, which a
    // different placement could change) reproduces the fallback's model
    // exactly.
    let method = rep["method"]
        .as_str()
        .unwrap()
        .strip_prefix("auto: ")
        .expect("the method was chosen")
        .to_string();
    let pinned = path(dir.path(), "pinned.onnx");
    let mut args: Vec<String> = [
        "quantize",
        "--no-speed-select",
        MODEL,
        "--calib",
        CALIB,
        "--val",
        VAL,
        "-o",
        pinned.to_str().unwrap(),
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for e in &excluded {
        args.push("--exclude".into());
        args.push(e.clone());
    }
    args.push("--method".into());
    args.push(method);
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (code, _, err) = onnxq(&argv);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(&q).unwrap(),
        std::fs::read(&pinned).unwrap(),
        "pinned excludes give the same file"
    );
}

#[test]
fn coverage_quantizes_fewer_compute_ops_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (full, part) = (path(dir.path(), "full.json"), path(dir.path(), "part.json"));
    for (cov, rep) in [(None, &full), (Some("0.5"), &part)] {
        let out = path(dir.path(), "q.onnx");
        let mut args = vec![
            "quantize",
            "--no-speed-select",
            MODEL,
            "--calib",
            CALIB,
            "-o",
            out.to_str().unwrap(),
            "-q",
            "--val-samples",
            "0",
        ];
        args.extend(["--report", rep.to_str().unwrap()]);
        if let Some(c) = cov {
            args.extend(["--coverage", c]);
        }
        let (code, _, err) = onnxq(&args);
        assert_eq!(code, 0, "{err}");
    }
    let convs = |p: &Path| -> usize {
        json(p)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["op"] == "Conv" && d["quantized"] == true)
            .count()
    };
    let (n_full, n_part) = (convs(&full), convs(&part));
    assert!(
        n_part > 0 && n_part < n_full,
        "coverage 0.5 quantized {n_part} of {n_full} Conv"
    );
    let reasons = json(&part)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["op"] == "Conv" && d["reason"].as_str().unwrap().contains("--coverage"))
        .count();
    assert_eq!(
        reasons,
        n_full - n_part,
        "each skipped Conv says it was --coverage"
    );
    let share = json(&part)["quantized_mac_share"].as_f64().unwrap();
    // Coverage is of measured time, not of MACs (depthwise convolutions
    // take time out of proportion to their MACs): only partial.
    assert!(share > 0.0 && share < 1.0, "MAC share {share}");
    let (code, _, err) = onnxq(&[
        "quantize",
        "--no-speed-select",
        MODEL,
        "--calib",
        CALIB,
        "-o",
        "/dev/null",
        "--coverage",
        "1.5",
    ]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn per_layer_report_ranks_nodes_worst_first() {
    let dir = tempfile::tempdir().unwrap();
    let q = path(dir.path(), "q.onnx");
    let (code, _, err) = onnxq(&[
        "quantize",
        "--no-speed-select",
        MODEL,
        "--calib",
        CALIB,
        "-o",
        q.to_str().unwrap(),
        "-q",
        "--val-samples",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = onnxq(&[
        "validate",
        MODEL,
        q.to_str().unwrap(),
        "--data",
        VAL,
        "--per-layer",
        "--json",
        "-q",
        "--sensitivity-samples",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = j["per_layer"]["nodes"].as_array().unwrap();
    assert!(
        nodes.len() > 50,
        "every quantized node is ranked ({})",
        nodes.len()
    );
    let sqnrs: Vec<f64> = nodes
        .iter()
        .map(|n| n["output_sqnr_db"].as_f64().unwrap())
        .collect();
    assert!(sqnrs.windows(2).all(|w| w[0] <= w[1]), "worst first");
    let tensors = j["per_layer"]["tensors"].as_array().unwrap();
    assert!(tensors.len() > 50);
    // Quantization error accumulates: some tensor is worse than the output.
    let min_tensor = tensors
        .iter()
        .map(|t| t["sqnr_db"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(min_tensor < 100.0, "{min_tensor}");
}
