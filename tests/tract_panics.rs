//! Models that make tract panic: the panic is caught at the runtime
//! boundary and reported as an error naming the model and, for a run, the
//! node — exit code 2 from the binary, not 101 with a backtrace.
//!
//! * `gather`: a Gather whose indices arrive at run time and are out of
//!   range; tract 0.23.9 indexes without checking (`gather.rs:75`). With
//!   constant indices it refuses the model properly instead, at declutter.
//! * `maxpool`: a MaxPool with a zero-size kernel, which tract's patch
//!   builder unwraps a `None` on while optimising.

use std::path::Path;
use std::process::{Command, Output};

use ndarray::{array, ArrayD};
use onnxq::ir::text::parse_model;
use onnxq::ir::Model;
use onnxq::runtime::{PanicSite, RunOptions, Runner, RunnerCache, RuntimeError};
use onnxq::tensorio::{self, HostTensor};

/// `Y = X[I]`, with `I` fed at run time.
const GATHER: &str = r#"
<ir_version: 8, opset_import: ["" : 13]>
g (float[4] X, int64[1] I) => (float[1] Y)
{
  [gather] Y = Gather (X, I)
}
"#;

/// A MatMul to quantize, then a Gather whose indices are the input plus
/// 100: out of range for any input, random calibration data included.
const MATMUL_GATHER: &str = r#"
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,4] X, int64[1] I) => (float[1,1] Y)
<
  float[4,4] W = {1.0, 0.5, 0.25, 2.0, -1.0, 0.5, 1.5, 0.0, 0.1, 0.2, 0.3, 0.4, 1.0, 1.0, 1.0, 1.0},
  int64[1] C = {100}
>
{
  [matmul] H = MatMul (X, W)
  [shift] J = Add (I, C)
  [gather] Y = Gather <axis = 1> (H, J)
}
"#;

const MAXPOOL: &str = r#"
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,1,4,4] X) => (float[1,1,4,4] Y)
{
  [pool] Y = MaxPool <kernel_shape = [0, 0]> (X)
}
"#;

fn model(src: &str) -> Model {
    parse_model(src).expect("test model parses")
}

fn write_model(dir: &Path, file: &str, src: &str) {
    std::fs::write(dir.join(file), onnxq::onnx::export::to_bytes(&model(src))).unwrap();
}

fn onnxq(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run onnxq")
}

/// Exit code 2, an error line with every needle, and no trace of the
/// panic itself (std's "thread 'main' panicked at" and its backtrace note).
fn expect_caught(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "missing {n:?} in stderr: {stderr}");
    }
    assert!(!stderr.contains("thread '"), "stderr: {stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "stderr: {stderr}");
}

fn gather_inputs(index: i64) -> Vec<(String, HostTensor)> {
    vec![
        (
            "X".into(),
            HostTensor::F32(array![1.0f32, 2.0, 3.0, 4.0].into_dyn()),
        ),
        (
            "I".into(),
            HostTensor::I64(ArrayD::from_elem(vec![1], index)),
        ),
    ]
}

#[test]
fn run_names_the_node_tract_panicked_in() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "gather.onnx", GATHER);
    for (name, t) in gather_inputs(10) {
        tensorio::write_npy(dir.path().join(format!("{name}.npy")), &t).unwrap();
    }
    let out = onnxq(
        &["run", "gather.onnx", "-i", "X=X.npy", "-i", "I=I.npy"],
        dir.path(),
    );
    expect_caught(
        &out,
        &[
            "model 'g': tract panicked in node 'gather' (Gather)",
            "index out of bounds",
            "gather.rs",
        ],
    );
}

#[test]
fn quantize_with_random_calibration_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "m.onnx", MATMUL_GATHER);
    let out = onnxq(
        &["quantize", "m.onnx", "--calib-random", "1", "-o", "q.onnx"],
        dir.path(),
    );
    expect_caught(&out, &["tract panicked in node 'gather' (Gather)"]);
    assert!(!dir.path().join("q.onnx").exists());
}

#[test]
fn a_panic_while_loading_names_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "pool.onnx", MAXPOOL);
    let out = onnxq(&["run", "pool.onnx"], dir.path());
    expect_caught(&out, &["model 'g': tract panicked while loading it"]);
    let e = Runner::new(&model(MAXPOOL), &RunOptions::default()).unwrap_err();
    match e {
        RuntimeError::TractPanic { at, .. } => assert_eq!(*at, PanicSite::Loading),
        e => panic!("not a caught panic: {e}"),
    }
}

#[test]
fn a_runner_that_panicked_runs_again() {
    let m = model(GATHER);
    let runner = Runner::new(&m, &RunOptions::default()).unwrap();
    for _ in 0..2 {
        match runner.run(&gather_inputs(10)).unwrap_err() {
            RuntimeError::TractPanic { model, at, .. } => {
                assert_eq!(model, "g");
                assert_eq!(
                    *at,
                    PanicSite::Node {
                        name: "gather".into(),
                        op: "Gather".into()
                    }
                );
            }
            e => panic!("not a caught panic: {e}"),
        }
        let out = runner.run(&gather_inputs(2)).unwrap();
        assert_eq!(out[0].1, HostTensor::F32(array![3.0f32].into_dyn()));
    }
    // Through the cache, whose lock a panic used to poison, and with a
    // visitor.
    let cache = RunnerCache::new(&m, vec!["X".into()]);
    for _ in 0..2 {
        let e = cache.run(&gather_inputs(-7)).unwrap_err();
        assert!(matches!(e, RuntimeError::TractPanic { .. }), "{e}");
    }
    let r = cache.runner(&gather_inputs(0)).unwrap();
    let e = r.run_visit(&gather_inputs(4), |_, _, _, _| {}).unwrap_err();
    assert!(matches!(e, RuntimeError::TractPanic { .. }), "{e}");
    assert_eq!(cache.run(&gather_inputs(3)).unwrap()[0].1.len(), 1);
}
