//! The quantize flow is a pipeline anyone can replay: what `quantize`
//! prints as its pipeline, given to `onnxq opt` with the same data, writes
//! the same bytes; and every pass's options print in a form that parses
//! back to the same pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onnxq::passes::{registry, Pipeline};

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

fn ok(args: &[&str]) -> String {
    let o = onnxq(args);
    assert!(
        o.status.success(),
        "onnxq {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

/// Quantizes the testdata model with `extra` options, then replays the
/// printed pipeline with `onnxq opt`: the two files must be identical.
fn replays(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("ppocr_cls/model.onnx");
    let calib = testdata("ppocr_cls/calib");
    let (m, c) = (model.to_str().unwrap(), calib.to_str().unwrap());
    let q = dir.path().join("q.onnx");
    let r = dir.path().join("r.onnx");
    let mut args = vec![
        "quantize",
        "--no-speed-select",
        m,
        "--calib",
        c,
        "-q",
        "--print-pipeline",
        "-o",
        q.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let pipeline = ok(&args).trim().to_string();
    ok(&[
        "opt",
        m,
        "--calib",
        c,
        "-q",
        "-o",
        r.to_str().unwrap(),
        "-p",
        &pipeline,
    ]);
    let (a, b) = (std::fs::read(&q).unwrap(), std::fs::read(&r).unwrap());
    assert!(
        a == b,
        "replaying `{pipeline}` with onnxq opt wrote other bytes than quantize"
    );
    pipeline
}

#[test]
fn default_quantize_replays_byte_for_byte() {
    let p = replays(&[]);
    for pass in [
        "upgrade-opset",
        "calibrate",
        "insert-qdq",
        "restore-interface",
    ] {
        assert!(p.contains(pass), "the pipeline shows {pass}: {p}");
    }
}

#[test]
fn coverage_selection_replays_byte_for_byte() {
    // Timings vary from run to run; the printed pipeline pins the choice.
    let p = replays(&["--coverage", "0.5"]);
    assert!(p.contains("select-coverage{coverage=0.5,nodes=["), "{p}");
}

#[test]
fn fallback_result_replays_byte_for_byte() {
    // A target above what full quantization reaches: the fallback keeps
    // nodes in float, and the pipeline carries them as keep-float.
    let p = replays(&["--target-sqnr", "190", "--val-samples", "2"]);
    let keep = p
        .split("keep-float=[")
        .nth(1)
        .expect("insert-qdq prints keep-float");
    assert!(
        !keep.starts_with(']'),
        "the fallback kept nodes in float: {p}"
    );
}

#[test]
fn a_saved_selection_pins_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("ppocr_cls/model.onnx");
    let calib = testdata("ppocr_cls/calib");
    let (m, c) = (model.to_str().unwrap(), calib.to_str().unwrap());
    let sel = dir.path().join("sel.json");
    let q = dir.path().join("q.onnx");
    let r = dir.path().join("r.onnx");
    let s = sel.to_str().unwrap();
    ok(&[
        "quantize",
        "--no-speed-select",
        m,
        "--calib",
        c,
        "-q",
        "--target-sqnr",
        "150",
        "--val-samples",
        "2",
        "--save-selection",
        s,
        "-o",
        q.to_str().unwrap(),
    ]);
    ok(&[
        "quantize",
        "--no-speed-select",
        m,
        "--calib",
        c,
        "-q",
        "--selection",
        s,
        "--val-samples",
        "0",
        "-o",
        r.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&q).unwrap(), std::fs::read(&r).unwrap());
}

/// parse(print(p)) == p: the canonical form of every registered pass, with
/// default options and with its documented non-default example, parses back
/// to a pass that prints the same and holds the same options.
#[test]
fn every_pass_prints_options_that_parse_back() {
    for info in registry() {
        let mut forms = vec![info.name.to_string()];
        if !info.example.is_empty() {
            forms.push(format!("{}{{{}}}", info.name, info.example));
        }
        for form in forms {
            let p = Pipeline::parse(&form).unwrap_or_else(|e| panic!("{form}: {e}"));
            let printed = p.to_string();
            let again = Pipeline::parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
            assert_eq!(again.to_string(), printed, "{form}");
            assert_eq!(
                again.passes[0].options(),
                p.passes[0].options(),
                "{form}: options survive printing"
            );
            if form.contains('{') {
                assert_ne!(
                    printed,
                    Pipeline::parse(info.name).unwrap().to_string(),
                    "{form}: the example differs from the defaults"
                );
            }
        }
    }
}

#[test]
fn pipeline_values_nest_only_so_deep() {
    let deep = format!(
        "insert-qdq{{exclude={}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = Pipeline::parse(&deep).err().expect("refused").to_string();
    assert!(e.contains("nested deeper than"), "{e}");
}

#[test]
fn equalized_quantize_replays_byte_for_byte() {
    // Per-tensor weights: equalization is tried, and when kept it prints
    // as passes (with the calibrations it needs), so a replay tries
    // nothing.
    let p = replays(&["--target", "portable", "--per-tensor", "--equalize", "on"]);
    assert!(
        p.contains("calibrate,equalize{sweeps=20},dce,calibrate,absorb-bias,calibrate,"),
        "{p}"
    );
}
