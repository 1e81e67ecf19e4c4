//! Every node has one unique, stable label, and selection, reports and
//! exclusion key nodes by it: two unnamed Convs are two nodes everywhere.

use std::path::Path;
use std::process::Command;

use onnxq::ir::text::parse_model;
use onnxq::onnx::export;

/// Two unnamed Convs (ONNX allows nodes without names; several exporters
/// write them so), each with its own weights.
const TWO_UNNAMED_CONVS: &str = r#"<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,6,6] X) => (float[1,2,6,6] Y)
<
  float[2,2,1,1] W1 = {1.0, 0.5, -0.5, 1.0},
  float[2,2,1,1] W2 = {0.25, 1.0, 1.0, -0.75}
>
{
  C1 = Conv (X, W1)
  R = Relu (C1)
  C2 = Conv (R, W2)
  Y = Relu (C2)
}
"#;

fn write_model(dir: &Path) -> std::path::PathBuf {
    let m = parse_model(TWO_UNNAMED_CONVS).expect("the test model parses");
    let labels: Vec<String> = m
        .graph
        .ops()
        .into_iter()
        .map(|n| m.graph.label(n).to_string())
        .collect();
    assert_eq!(labels, ["Conv@C1", "Relu@R", "Conv@C2", "Relu@Y"]);
    let path = dir.join("two_convs.onnx");
    export::write_model(&m, &path, &Default::default()).expect("written");
    path
}

fn quantize(model: &Path, out: &Path, report: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "quantize",
        "--no-speed-select",
        model.to_str().unwrap(),
        "--calib-random",
        "2",
        "-q",
        "--target",
        "portable",
        "-o",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(&args)
        .output()
        .expect("onnxq runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(report).unwrap()).expect("a JSON report")
}

fn decisions(r: &serde_json::Value) -> Vec<(String, bool)> {
    r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["op"] == "Conv")
        .map(|d| {
            (
                d["node"].as_str().unwrap().to_string(),
                d["quantized"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_unnamed_convs_are_selected_reported_and_excluded_separately() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let (out, report) = (dir.path().join("q.onnx"), dir.path().join("r.json"));

    let all = quantize(&model, &out, &report, &[]);
    assert_eq!(
        decisions(&all),
        [("Conv@C1".to_string(), true), ("Conv@C2".to_string(), true)]
    );

    let one = quantize(&model, &out, &report, &["--exclude", "Conv@C2"]);
    assert_eq!(
        decisions(&one),
        [
            ("Conv@C1".to_string(), true),
            ("Conv@C2".to_string(), false)
        ]
    );
    // The written file: only the first Conv reads a dequantized weight.
    let q = onnxq::onnx::import::read_model(&out).unwrap();
    let g = &q.graph;
    let conv_weight_dq: Vec<bool> = g
        .ops()
        .into_iter()
        .filter(|&n| g.node(n).is("Conv"))
        .map(|n| {
            let w = g.node(n).input(1).unwrap();
            g.producer_node(w).is("DequantizeLinear")
        })
        .collect();
    assert_eq!(conv_weight_dq, [true, false]);

    // A selection file names them apart too.
    let sel = dir.path().join("sel.json");
    std::fs::write(
        &sel,
        r#"{"format": "onnxq-selection", "version": 1, "keep-float": ["Conv@C1"]}"#,
    )
    .unwrap();
    let pinned = quantize(
        &model,
        &out,
        &report,
        &["--selection", sel.to_str().unwrap()],
    );
    assert_eq!(
        decisions(&pinned),
        [
            ("Conv@C1".to_string(), false),
            ("Conv@C2".to_string(), true)
        ]
    );
}
