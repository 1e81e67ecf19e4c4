//! Helpers the CLI tests on the testdata classifier share: paths, the
//! binary, scratch directories, a quantize run that returns its report.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

pub fn onnxq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .expect("the onnxq binary runs")
}

/// A fresh directory under the target's test scratch space.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Quantizes the classifier with `extra` options (fast: minmax ranges, no
/// speed timing, 4 validation samples) into `out` and returns the report.
pub fn quantize(out: &Path, extra: &[&str]) -> serde_json::Value {
    let m = testdata("ppocr_cls/model.onnx");
    let calib = testdata("ppocr_cls/calib");
    let report = out.with_extension("json");
    let mut args = vec![
        "quantize",
        m.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "-q",
        "--method",
        "minmax",
        "--no-speed-select",
        "--val-samples",
        "4",
        "--report",
        report.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = onnxq(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr:\n{stderr}");
    serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("JSON")
}

/// The worst validated output SQNR in a report.
pub fn worst_sqnr(report: &serde_json::Value) -> f64 {
    report["validation"]["outputs"]
        .as_array()
        .expect("validated outputs")
        .iter()
        .map(|o| o["sqnr_db"].as_f64().expect("an SQNR"))
        .fold(f64::INFINITY, f64::min)
}

/// Each of `cases` (extra options, text the error must contain) added to a
/// quantize of the classifier is refused: exit 2, the message says it, no
/// file written.
pub fn assert_refused(scratch_name: &str, cases: &[(&[&str], &str)]) {
    let d = scratch(scratch_name);
    let m = testdata("ppocr_cls/model.onnx");
    let calib = testdata("ppocr_cls/calib");
    let out = d.join("q.onnx");
    let base = [
        "quantize",
        m.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "-q",
        "-o",
        out.to_str().unwrap(),
    ];
    for (extra, says) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let o = onnxq(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} wrote a file");
    }
}
