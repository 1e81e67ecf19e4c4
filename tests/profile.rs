//! The static cost model, the hotspot profile and `onnxq profile`.
//!
//! Costs are checked against MACs computed by hand. The profile's
//! bookkeeping (sorting, shares, attribution, folded nodes) is checked on
//! synthetic timings; real runs are checked only for structure — times are
//! never asserted (they belong in benchmarks).

use std::time::Duration;

use onnxq::analysis::{model_costs, Profile};
use onnxq::ir::text::parse_model;
use onnxq::ir::Model;
use onnxq::passes::{PassContext, PassManager, Pipeline};
use onnxq::runtime::{FusedGroup, NodeTime, NodeTimes};

/// Conv+Relu, Flatten, MatMul+Add with a symbolic batch.
const MLP: &str = r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,16,16] X) => (Y)
<
  float[8,3,3,3] W = {... 216 elements, hash 00000000},
  float[8] B = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
  float[512,10] M = {... 5120 elements, hash 00000000},
  float[10] C = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}
>
{
  [conv] A = Conv <pads: ints = [1, 1, 1, 1], strides: ints = [2, 2]> (X, W, B)
  [relu] R = Relu (A)
  [flat] F = Flatten (R)
  [fc] Z = MatMul (F, M)
  [bias] Y = Add (Z, C)
}
"#;

/// The same graph with every shape declared (batch 2), so costs need no
/// shape inference.
const MLP_STATIC: &str = r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,16,16] X) => (float[2,10] Y)
<
  float[8,3,3,3] W = {... 216 elements, hash 00000000},
  float[8] B = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
  float[512,10] M = {... 5120 elements, hash 00000000},
  float[10] C = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
  float[2,8,8,8] A, float[2,8,8,8] R, float[2,512] F, float[2,10] Z
>
{
  [conv] A = Conv <pads: ints = [1, 1, 1, 1], strides: ints = [2, 2]> (X, W, B)
  [relu] R = Relu (A)
  [flat] F = Flatten (R)
  [fc] Z = MatMul (F, M)
  [bias] Y = Add (Z, C)
}
"#;

// Batch 2: the 16x16 input at stride 2 gives 8x8; 2·8·8·8 = 1024 outputs
// of 3·3·3 = 27 taps. The MatMul: 2·10 outputs of K = 512.
const CONV_MACS: u64 = 1024 * 27;
const FC_MACS: u64 = 2 * 10 * 512;

fn model(text: &str) -> Model {
    parse_model(text).unwrap_or_else(|e| panic!("{e}"))
}

fn profiled(runs: usize) -> (Model, PassContext) {
    let mut m = model(MLP);
    let mut cx = PassContext::with_inputs(onnxq::passes::context::Inputs {
        input_shapes: [("X".to_string(), vec![2, 3, 16, 16])].into(),
        ..Default::default()
    });
    let p = Pipeline::parse(&format!("shape-inference,profile-hotspots{{runs={runs}}}")).unwrap();
    PassManager::new(p).run(&mut m, &mut cx).unwrap();
    (m, cx)
}

#[test]
fn costs_by_hand() {
    let c = model_costs(&model(MLP_STATIC));
    let got: Vec<(&str, &str, Option<u64>, u64)> = c
        .iter()
        .map(|c| (c.node.as_str(), c.op.as_str(), c.macs, c.params))
        .collect();
    assert_eq!(
        got,
        [
            ("conv", "Conv", Some(CONV_MACS), 216 + 8),
            ("relu", "Relu", Some(0), 0),
            ("flat", "Flatten", Some(0), 0),
            ("fc", "MatMul", Some(FC_MACS), 5120),
            ("bias", "Add", Some(0), 10),
        ]
    );
    assert_eq!(c[0].output_shape, Some(vec![2, 8, 8, 8]));
    assert_eq!(c[0].bytes_read, Some((2 * 3 * 16 * 16 + 216 + 8) * 4));
    assert_eq!(c[1].elements, Some(1024));
}

#[test]
fn costs_without_shapes_are_unknown_not_zero() {
    let c = model_costs(&model(MLP));
    assert_eq!(c[0].macs, None, "Conv output shape is not declared");
    assert_eq!(c[1].macs, Some(0));
}

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn node(tract: &str, op: &str, onnx: &[&str], ms: u64) -> NodeTime {
    NodeTime {
        tract_node: tract.into(),
        op: op.into(),
        onnx_nodes: onnx.iter().map(|s| s.to_string()).collect(),
        median: t(ms),
    }
}

fn group(onnx: &[&str], tract: &[&str], ms: u64) -> FusedGroup {
    FusedGroup {
        onnx_nodes: onnx.iter().map(|s| s.to_string()).collect(),
        tract_nodes: tract.iter().map(|s| s.to_string()).collect(),
        median: t(ms),
    }
}

/// Conv+Relu fused (3 ms), Flatten folded at load, MatMul+Add fused over a
/// packing node and a matmul node (2 ms), and a plan node of tract's own
/// (3 ms) that ties with the Conv group.
fn synthetic() -> Profile {
    let times = NodeTimes {
        runs: 5,
        total: t(10),
        nodes: vec![
            node("conv", "Conv", &["conv", "relu"], 3),
            node("extra", "Cast", &[], 3),
            node("fc.pack", "Pack", &["fc"], 1),
            node("bias", "OptMatMul", &["fc", "bias"], 1),
        ],
        groups: vec![
            group(&["conv", "relu"], &["conv"], 3),
            group(&[], &["extra"], 3),
            group(&["fc", "bias"], &["fc.pack", "bias"], 2),
        ],
        unattributed: vec!["flat".into()],
    };
    Profile::build(&model(MLP_STATIC), &times)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn rows_sorted_by_time_ties_in_plan_order() {
    let p = synthetic();
    let names: Vec<&str> = p.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["conv + relu", "extra", "fc + bias"]);
    let ops: Vec<&str> = p.rows.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(ops, ["Conv+Relu", "tract:Cast", "MatMul+Add"]);
    assert_eq!(p.rows[0].macs, Some(CONV_MACS));
    assert_eq!(p.rows[0].output_shape, Some(vec![2, 8, 8, 8]));
    assert_eq!(p.rows[2].output_shape, Some(vec![2, 10]));
    assert_eq!(p.rows[2].tract_nodes, ["fc.pack", "bias"]);
    assert!(close(p.node_sum_ms, 8.0));
    assert!(close(p.whole_run_ms, 10.0));
    assert!(close(p.ratio, 0.8));
    let shares: Vec<f64> = p.rows.iter().map(|r| r.share).collect();
    assert!(close(shares[0], 3.0 / 8.0) && close(shares[1], 3.0 / 8.0) && close(shares[2], 0.25));
    assert!(close(p.rows[2].cumulative, 1.0));
    for w in p.rows.windows(2) {
        assert!(w[0].median_ms >= w[1].median_ms);
    }
}

#[test]
fn every_op_has_a_node_entry() {
    let p = synthetic();
    let names: Vec<&str> = p.nodes.iter().map(|n| n.cost.node.as_str()).collect();
    assert_eq!(names, ["conv", "relu", "flat", "fc", "bias"]);
    let rows: Vec<Option<usize>> = p.nodes.iter().map(|n| n.row).collect();
    assert_eq!(rows, [Some(0), Some(0), None, Some(2), Some(2)]);
    assert_eq!(p.folded(), ["flat"]);
    // Group time goes to members by MACs: Relu and Add have none.
    let att: Vec<f64> = p.nodes.iter().map(|n| n.attributed_ms).collect();
    assert!(
        close(att[0], 3.0) && att[1] == 0.0 && att[2] == 0.0 && close(att[3], 2.0) && att[4] == 0.0
    );
    assert_eq!(p.total_macs, Some(CONV_MACS + FC_MACS));
}

#[test]
fn op_types_by_time_ties_by_name() {
    let p = synthetic();
    let ops: Vec<(&str, usize)> = p
        .op_types
        .iter()
        .map(|o| (o.op.as_str(), o.nodes))
        .collect();
    assert_eq!(
        ops,
        [
            ("Conv", 1),
            ("tract:Cast", 1),
            ("MatMul", 1),
            ("Add", 1),
            ("Relu", 1)
        ],
        "Flatten was folded: it runs nowhere"
    );
    assert!(close(p.op_types[0].share, 3.0 / 8.0));
    assert_eq!(p.op_types[2].macs, Some(FC_MACS));
}

#[test]
fn table_lists_rows_in_order_then_totals() {
    let s = synthetic().table();
    let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in\n{s}"));
    assert!(at("conv + relu") < at("extra") && at("extra") < at("fc + bias"));
    at("[2,8,8,8]");
    at("27.6K");
    at("folded at load (no run time): 1 node(s): flat");
    at("ratio 0.800");
    at("top op types: Conv 37.5% (1)");
}

#[test]
fn profile_pass_on_a_real_run() {
    let (_, cx) = profiled(2);
    let p = cx
        .analyses
        .profile
        .expect("profile-hotspots fills the context");
    assert_eq!(p.runs, 2);
    // Shape inference ran at batch 2, so every MAC count is known.
    let macs: Vec<(&str, Option<u64>)> = p
        .nodes
        .iter()
        .map(|n| (n.cost.node.as_str(), n.cost.macs))
        .collect();
    assert_eq!(
        macs,
        [
            ("conv", Some(CONV_MACS)),
            ("relu", Some(0)),
            ("flat", Some(0)),
            ("fc", Some(FC_MACS)),
            ("bias", Some(0)),
        ]
    );
    // Every op is either in a row that names it or folded.
    for (i, n) in p.nodes.iter().enumerate() {
        match n.row {
            Some(r) => assert!(p.rows[r].onnx_nodes.contains(&n.cost.node), "{i}: {p:#?}"),
            None => assert!(p.folded().contains(&n.cost.node.as_str())),
        }
    }
    for w in p.rows.windows(2) {
        assert!(w[0].median_ms >= w[1].median_ms, "{p:#?}");
    }
    let sum: f64 = p.rows.iter().map(|r| r.median_ms).sum();
    assert!((sum - p.node_sum_ms).abs() < 1e-6);
    let json: serde_json::Value = serde_json::to_value(&p).unwrap();
    assert_eq!(json["nodes"][0]["node"], "conv");
    assert_eq!(json["nodes"][0]["macs"], CONV_MACS);
    assert!(json["rows"].as_array().is_some_and(|r| !r.is_empty()));
}

#[test]
fn pipeline_options() {
    let p = Pipeline::parse("profile-hotspots").unwrap();
    assert_eq!(p.to_string(), "profile-hotspots{runs=10}");
    let e = Pipeline::parse("profile-hotspots{runs=0}").err().unwrap();
    assert!(e.to_string().contains("runs must be at least 1"), "{e}");
    let e = Pipeline::parse("profile-hotspots{repeat=3}").err().unwrap();
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn cli_json_parses_and_covers_every_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.onnx");
    onnxq::onnx::export::write_model(&model(MLP), &path, &Default::default()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(["profile", path.to_str().unwrap(), "--runs", "1", "--json"])
        .args(["--input-shape", "X=2,3,16,16"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["conv", "relu", "flat", "fc", "bias"]);
    assert_eq!(v["runs"], 1);
    assert!(v["whole_run_ms"].as_f64().is_some());
    // The table form prints a header and a totals line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(["profile", path.to_str().unwrap(), "--runs", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("median ms") && s.contains("per-node sum"), "{s}");
}

#[test]
fn prefused_kernels_and_constants_are_regrouped() {
    // Tract fuses the 1x1 Conv into the BatchNormalization after it as one
    // node named `bn.prefused`, leaving the Conv its weight packing; the
    // Constant is folded at load although the runtime links it to its user.
    let m = model(
        r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] X) => (float[1,4,8,8] Y)
<
  float[4,3,1,1] W = {... 12 elements, hash 00000000},
  float[4] S = {1.0, 1.0, 1.0, 1.0}, float[4] O = {0.0, 0.0, 0.0, 0.0},
  float[4] Me = {0.0, 0.0, 0.0, 0.0}, float[4] Va = {1.0, 1.0, 1.0, 1.0},
  float[1] S1 = {0.5},
  float[1,4,8,8] A0, float[1,4,8,8] A, float[1,4,8,8] B, float[1] K
>
{
  [conv] A0 = Conv (X, W)
  [scale] A = Mul (S1, A0)
  [bn] B = BatchNormalization (A, S, O, Me, Va)
  [k] K = Constant <value: tensor = float[1] {2.0}> ()
  [mul] Y = Mul (K, B)
}
"#,
    );
    let times = NodeTimes {
        runs: 1,
        total: t(4),
        nodes: vec![
            node("conv.pack_b", "OptMatMulPack", &["conv"], 1),
            node("bn.prefused", "OptMatMul", &["scale", "bn"], 2),
            node("mul", "Mul", &["k", "mul"], 1),
        ],
        groups: vec![
            group(&["conv"], &["conv.pack_b"], 1),
            group(&["scale", "bn"], &["bn.prefused"], 2),
            group(&["k", "mul"], &["mul"], 1),
        ],
        unattributed: vec![],
    };
    let p = Profile::build(&m, &times);
    let rows: Vec<(&str, &str, f64)> = p
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.op.as_str(), r.median_ms))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].0, rows[0].1),
        ("conv + scale + bn", "Conv+Mul+BatchNormalization")
    );
    assert!(close(rows[0].2, 3.0));
    assert_eq!(p.rows[0].tract_nodes, ["conv.pack_b", "bn.prefused"]);
    assert_eq!((rows[1].0, rows[1].1), ("mul", "Mul"));
    assert_eq!(p.folded(), ["k"]);
    assert_eq!(p.rows[0].macs, Some(4 * 64 * 3));
    // All of the group's time goes to the Conv, the node with MACs.
    assert!(close(p.op_types[0].ms, 3.0) && p.op_types[0].op == "Conv");
}

#[test]
fn matmul_kernel_named_after_its_bias_add_is_regrouped() {
    // Tract folds the bias Add into the MatMul and names the kernel `bias`.
    let times = NodeTimes {
        runs: 1,
        total: t(5),
        nodes: vec![
            node("conv", "Conv", &["conv", "relu"], 1),
            node("fc.pack_b", "OptMatMulPack", &["flat", "fc"], 1),
            node("bias", "OptMatMul", &["bias"], 3),
        ],
        groups: vec![
            group(&["conv", "relu"], &["conv"], 1),
            group(&["flat", "fc"], &["fc.pack_b"], 1),
            group(&["bias"], &["bias"], 3),
        ],
        unattributed: vec![],
    };
    let p = Profile::build(&model(MLP_STATIC), &times);
    assert_eq!(p.rows[0].name, "flat + fc + bias");
    assert!(close(p.rows[0].median_ms, 4.0));
    assert_eq!(p.op_types[0].op, "MatMul");
}
