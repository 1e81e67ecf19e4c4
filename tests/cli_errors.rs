//! Bad input through the real binary: every malformed model must give exit
//! code 2, a message naming the file and the culprit (node or tensor), no
//! panic, and leave nothing behind — no output model, no temporary files.
//!
//! The bad models are built with prost, so each case is exactly the defect
//! it is named after and nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onnxq::onnx::tensor_proto::{DataLocation, DataType};
use onnxq::onnx::tensor_shape_proto::{dimension, Dimension};
use onnxq::onnx::type_proto;
use onnxq::onnx::{
    attribute_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

// ---------------------------------------------------------------- builders

fn float_type(dims: &[i64]) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(DataType::Float as i32),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| Dimension {
                        value: Some(dimension::Value::DimValue(d)),
                        denotation: None,
                    })
                    .collect(),
            }),
        })),
        denotation: None,
    }
}

fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(float_type(dims)),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64]) -> TensorProto {
    let n: i64 = dims.iter().product();
    let raw: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    TensorProto {
        name: Some(name.into()),
        data_type: Some(DataType::Float as i32),
        dims: dims.to_vec(),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

fn external_tensor(name: &str, dims: &[i64], location: &str, length: Option<u64>) -> TensorProto {
    let mut external_data = vec![kv("location", location), kv("offset", "0")];
    if let Some(l) = length {
        external_data.push(kv("length", &l.to_string()));
    }
    TensorProto {
        name: Some(name.into()),
        data_type: Some(DataType::Float as i32),
        dims: dims.to_vec(),
        data_location: Some(DataLocation::External as i32),
        external_data,
        ..Default::default()
    }
}

fn kv(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        producer_name: Some("cli_errors test".into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// `y = Relu(x + w)`: a valid graph each case breaks in one place.
fn good_graph() -> GraphProto {
    GraphProto {
        name: Some("g".into()),
        node: vec![
            node("Add", "add0", &["x", "w"], &["s"]),
            node("Relu", "relu0", &["s"], &["y"]),
        ],
        initializer: vec![f32_tensor("w", &[4])],
        input: vec![vi("x", &[4])],
        output: vec![vi("y", &[4])],
        ..Default::default()
    }
}

// ------------------------------------------------------------------ running

/// A model directory inside a scratch root, so that "outside the model's
/// directory" has somewhere to point.
struct Scratch {
    _root: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
}

impl Scratch {
    /// The model onnxq wrote to `name` in the model directory.
    fn read_model(&self, name: &str) -> ModelProto {
        let bytes = std::fs::read(self.dir.join(name)).expect("written");
        ModelProto::decode(bytes.as_slice()).expect("decodes")
    }

    fn new() -> Self {
        let root_td = tempfile::tempdir().expect("tempdir");
        let root = root_td.path().to_path_buf();
        let dir = root.join("model");
        std::fs::create_dir(&dir).expect("mkdir model");
        Scratch {
            _root: root_td,
            root,
            dir,
        }
    }

    fn write_model(&self, file: &str, m: &ModelProto) -> PathBuf {
        self.write_bytes(file, &m.encode_to_vec())
    }

    fn write_bytes(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.join(file);
        std::fs::write(&p, bytes).expect("write model");
        p
    }

    fn listing(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn onnxq(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run onnxq")
}

/// Runs `onnxq opt <file> -o out.onnx -p dce` in the model directory and
/// checks the bad-input contract; `needles` must all appear in stderr.
fn expect_rejected(s: &Scratch, file: &str, needles: &[&str]) -> String {
    let before = s.listing();
    let out = onnxq(&["opt", file, "-o", "out.onnx", "-p", "dce"], &s.dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "{file}: onnxq panicked:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{file}: expected exit code 2, stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(file),
        "{file}: message does not name the file:\n{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{file}: message lacks {n:?}:\n{stderr}");
    }
    let after = s.listing();
    assert_eq!(
        before, after,
        "{file}: files were left behind (out.onnx or temporaries)"
    );
    stderr
}

// -------------------------------------------------------------------- cases

#[test]
fn truncated_file() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.initializer = vec![f32_tensor("w", &[4]), f32_tensor("big", &[1024])];
    let bytes = model(g).encode_to_vec();
    s.write_bytes("truncated.onnx", &bytes[..bytes.len() / 2]);
    expect_rejected(&s, "truncated.onnx", &["truncated"]);
}

#[test]
fn not_onnx() {
    let s = Scratch::new();
    s.write_bytes(
        "notes.onnx",
        b"#!/bin/sh\necho this is a shell script, not an ONNX model\n",
    );
    expect_rejected(&s, "notes.onnx", &[]);
    s.write_bytes("png.onnx", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10");
    expect_rejected(&s, "png.onnx", &[]);
}

#[test]
fn empty_file() {
    let s = Scratch::new();
    s.write_bytes("empty.onnx", b"");
    expect_rejected(&s, "empty.onnx", &["no graph"]);
}

#[test]
fn graph_cycle() {
    let s = Scratch::new();
    let mut g = good_graph();
    // add0 reads relu0's output, relu0 reads add0's: a two-node cycle.
    g.node = vec![
        node("Add", "add0", &["x", "y"], &["s"]),
        node("Relu", "relu0", &["s"], &["y"]),
    ];
    s.write_model("cycle.onnx", &model(g));
    expect_rejected(&s, "cycle.onnx", &["cycle", "add0", "relu0"]);
}

#[test]
fn undefined_tensor() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.node[1] = node("Relu", "relu0", &["nowhere"], &["y"]);
    s.write_model("undef.onnx", &model(g));
    expect_rejected(&s, "undef.onnx", &["relu0", "'nowhere'"]);
}

#[test]
fn undefined_tensor_in_subgraph() {
    let s = Scratch::new();
    let mut g = good_graph();
    let branch = |name: &str, reads: &str| GraphProto {
        name: Some(name.into()),
        node: vec![node(
            "Identity",
            &format!("{name}_id"),
            &[reads],
            &["b_out"],
        )],
        output: vec![vi("b_out", &[4])],
        ..Default::default()
    };
    let sub = |name: &str, gp: GraphProto| AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Graph as i32),
        g: Some(gp),
        ..Default::default()
    };
    let mut if_node = node("If", "if0", &["cond"], &["y"]);
    if_node.attribute = vec![
        sub("then_branch", branch("then", "s")),
        sub("else_branch", branch("else", "ghost")),
    ];
    g.node[1] = if_node;
    g.input.push(ValueInfoProto {
        name: Some("cond".into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Bool as i32),
                shape: Some(TensorShapeProto { dim: vec![] }),
            })),
            denotation: None,
        }),
        ..Default::default()
    });
    s.write_model("subgraph.onnx", &model(g));
    expect_rejected(&s, "subgraph.onnx", &["if0", "'ghost'"]);
}

#[test]
fn undefined_graph_output() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.output = vec![vi("missing_out", &[4])];
    s.write_model("output.onnx", &model(g));
    expect_rejected(&s, "output.onnx", &["'missing_out'"]);
}

#[test]
fn duplicate_names() {
    let s = Scratch::new();
    // Two nodes produce the same tensor.
    let mut g = good_graph();
    g.node.push(node("Relu", "relu1", &["s"], &["y"]));
    s.write_model("dup_node.onnx", &model(g));
    expect_rejected(&s, "dup_node.onnx", &["'y'", "relu1"]);

    // Two initializers share a name.
    let mut g = good_graph();
    g.initializer.push(f32_tensor("w", &[4]));
    s.write_model("dup_init.onnx", &model(g));
    expect_rejected(&s, "dup_init.onnx", &["'w'"]);

    // A node output shadows a graph input.
    let mut g = good_graph();
    g.node[0] = node("Add", "add0", &["x", "w"], &["x"]);
    g.node[1] = node("Relu", "relu0", &["x"], &["y"]);
    s.write_model("dup_input.onnx", &model(g));
    expect_rejected(&s, "dup_input.onnx", &["'x'", "add0"]);

    // The same graph input listed twice.
    let mut g = good_graph();
    g.input.push(vi("x", &[4]));
    s.write_model("dup_port.onnx", &model(g));
    expect_rejected(&s, "dup_port.onnx", &["'x'"]);
}

#[test]
fn negative_dimension_in_initializer() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.initializer = vec![TensorProto {
        dims: vec![-4],
        raw_data: Some(Vec::new().into()),
        ..f32_tensor("w", &[4])
    }];
    s.write_model("neg_init.onnx", &model(g));
    expect_rejected(&s, "neg_init.onnx", &["'w'", "-4"]);
}

#[test]
fn negative_dimension_in_value_info() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.value_info = vec![vi("s", &[2, -3])];
    s.write_model("neg_vi.onnx", &model(g));
    expect_rejected(&s, "neg_vi.onnx", &["'s'", "-3"]);

    let mut g = good_graph();
    // (-1 alone is accepted: several exporters write it for "unknown".)
    g.input = vec![vi("x", &[-7])];
    s.write_model("neg_input.onnx", &model(g));
    expect_rejected(&s, "neg_input.onnx", &["'x'", "-7"]);
}

#[test]
fn overflowing_dimension_in_initializer() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.initializer = vec![TensorProto {
        dims: vec![i64::MAX, 4],
        ..f32_tensor("w", &[4])
    }];
    s.write_model("ovf_init.onnx", &model(g));
    expect_rejected(&s, "ovf_init.onnx", &["'w'", "overflow"]);

    // The element count fits in 64 bits but its byte size does not.
    let mut g = good_graph();
    g.initializer = vec![TensorProto {
        dims: vec![1 << 62],
        ..f32_tensor("w", &[4])
    }];
    s.write_model("ovf_bytes.onnx", &model(g));
    expect_rejected(&s, "ovf_bytes.onnx", &["'w'"]);

    // Same, for an external tensor without a `length` (its size comes from
    // the shape).
    let mut g = good_graph();
    std::fs::write(s.dir.join("w.bin"), [0u8; 16]).expect("write data");
    g.initializer = vec![external_tensor("w", &[1 << 62], "w.bin", None)];
    s.write_model("ovf_ext.onnx", &model(g));
    expect_rejected(&s, "ovf_ext.onnx", &["'w'"]);
}

#[test]
fn overflowing_dimension_in_value_info() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.value_info = vec![vi("s", &[i64::MAX, i64::MAX])];
    s.write_model("ovf_vi.onnx", &model(g));
    expect_rejected(&s, "ovf_vi.onnx", &["'s'", "overflow"]);

    let mut g = good_graph();
    g.output = vec![vi("y", &[1 << 40, 1 << 40])];
    s.write_model("ovf_out.onnx", &model(g));
    expect_rejected(&s, "ovf_out.onnx", &["'y'", "overflow"]);
}

#[test]
fn size_mismatch() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.initializer = vec![TensorProto {
        dims: vec![5],
        ..f32_tensor("w", &[4])
    }];
    s.write_model("size.onnx", &model(g));
    expect_rejected(&s, "size.onnx", &["'w'", "16 bytes"]);
}

#[test]
fn external_data_absolute_path() {
    let s = Scratch::new();
    let secret = s.root.join("secret.bin");
    std::fs::write(&secret, [0u8; 16]).expect("write secret");
    let mut g = good_graph();
    g.initializer = vec![external_tensor(
        "w",
        &[4],
        secret.to_str().expect("utf-8 path"),
        Some(16),
    )];
    s.write_model("abs.onnx", &model(g));
    expect_rejected(&s, "abs.onnx", &["'w'", "absolute"]);
}

#[test]
fn external_data_dotdot() {
    let s = Scratch::new();
    std::fs::write(s.root.join("secret.bin"), [0u8; 16]).expect("write secret");
    let mut g = good_graph();
    g.initializer = vec![external_tensor("w", &[4], "../secret.bin", Some(16))];
    s.write_model("dotdot.onnx", &model(g));
    expect_rejected(&s, "dotdot.onnx", &["'w'", "../secret.bin"]);
}

#[test]
fn external_data_symlink_out() {
    let s = Scratch::new();
    let secret = s.root.join("secret.bin");
    std::fs::write(&secret, [0u8; 16]).expect("write secret");
    std::os::unix::fs::symlink(&secret, s.dir.join("link.bin")).expect("symlink");
    let mut g = good_graph();
    g.initializer = vec![external_tensor("w", &[4], "link.bin", Some(16))];
    s.write_model("symlink.onnx", &model(g));
    expect_rejected(&s, "symlink.onnx", &["'w'", "link.bin"]);

    // A symlinked directory leading out.
    std::os::unix::fs::symlink(&s.root, s.dir.join("up")).expect("symlink dir");
    let mut g = good_graph();
    g.initializer = vec![external_tensor("w", &[4], "up/secret.bin", Some(16))];
    s.write_model("symdir.onnx", &model(g));
    expect_rejected(&s, "symdir.onnx", &["'w'", "up/secret.bin"]);
}

#[test]
fn external_data_missing_file() {
    let s = Scratch::new();
    let mut g = good_graph();
    g.initializer = vec![external_tensor("w", &[4], "weights.bin", Some(16))];
    s.write_model("missing.onnx", &model(g));
    expect_rejected(&s, "missing.onnx", &["'w'", "weights.bin"]);
}

#[test]
fn external_data_out_of_range() {
    let s = Scratch::new();
    std::fs::write(s.dir.join("short.bin"), [0u8; 8]).expect("write data");
    let mut g = good_graph();
    g.initializer = vec![external_tensor("w", &[4], "short.bin", Some(16))];
    s.write_model("range.onnx", &model(g));
    expect_rejected(&s, "range.onnx", &["'w'", "short.bin"]);

    // No `location` at all.
    let mut g = good_graph();
    let mut t = external_tensor("w", &[4], "short.bin", Some(16));
    t.external_data.retain(|e| e.key() != "location");
    g.initializer = vec![t];
    s.write_model("noloc.onnx", &model(g));
    expect_rejected(&s, "noloc.onnx", &["'w'", "location"]);

    // A malformed offset.
    let mut g = good_graph();
    let mut t = external_tensor("w", &[4], "short.bin", Some(16));
    t.external_data[1] = kv("offset", "-8");
    g.initializer = vec![t];
    s.write_model("badoff.onnx", &model(g));
    expect_rejected(&s, "badoff.onnx", &["'w'", "offset"]);
}

#[test]
fn opt_refuses_to_overwrite_input() {
    let s = Scratch::new();
    let path = s.write_model("m.onnx", &model(good_graph()));
    let original = std::fs::read(&path).expect("read");
    let before = s.listing();
    let out = onnxq(&["opt", "m.onnx", "-o", "m.onnx", "-p", "dce"], &s.dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("--in-place"),
        "message should say how to allow it:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        original,
        "input was modified"
    );
    assert_eq!(s.listing(), before);

    // The same file reached by another spelling is still the input.
    let out = onnxq(&["opt", "m.onnx", "-o", "./m.onnx", "-p", "dce"], &s.dir);
    assert_eq!(out.status.code(), Some(2));

    // With --in-place it is allowed and leaves a valid model.
    let out = onnxq(
        &["opt", "m.onnx", "-o", "m.onnx", "--in-place", "-p", "dce"],
        &s.dir,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.listing(), before, "--in-place left temporaries");
    ModelProto::decode(std::fs::read(&path).expect("read").as_slice())
        .expect("valid model after --in-place");
}

#[test]
fn unknown_pass_name() {
    let s = Scratch::new();
    s.write_model("m.onnx", &model(good_graph()));
    let before = s.listing();
    let out = onnxq(
        &["opt", "m.onnx", "-o", "out.onnx", "-p", "dce,no-such-pass"],
        &s.dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("no-such-pass"), "{stderr}");
    assert!(stderr.contains("valid passes are"), "{stderr}");
    assert!(
        stderr.contains("dce") && stderr.contains("eliminate-identity"),
        "{stderr}"
    );
    assert_eq!(s.listing(), before);
}

#[test]
fn missing_input_file() {
    let s = Scratch::new();
    let out = onnxq(&["opt", "nope.onnx", "-o", "out.onnx", "-p", "dce"], &s.dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("nope.onnx"), "{stderr}");
    assert!(s.listing().is_empty());
}

#[test]
fn good_model_passes() {
    // The control: the same harness accepts the unbroken graph.
    let s = Scratch::new();
    s.write_model("m.onnx", &model(good_graph()));
    let out = onnxq(&["opt", "m.onnx", "-o", "out.onnx", "-p", "dce"], &s.dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = s.listing();
    assert_eq!(
        names,
        ["m.onnx", "out.onnx"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

/// `onnxq inspect m.onnx | head`: when the reader of stdout has gone, the
/// command ends quietly with 141 (128 + SIGPIPE), no panic message.
#[test]
fn closed_stdout_pipe_ends_quietly() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ppocr_cls/model.onnx");
    let out = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .arg("inspect")
        .arg(&model)
        .stdout(writer)
        .output()
        .expect("the onnxq binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
}

/// `y = x · W` with a 64×64 weight: large enough for weight-only
/// quantization's defaults.
fn matmul_model() -> ModelProto {
    let w: Vec<u8> = (0..64 * 64)
        .flat_map(|i: i32| (((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.1).to_le_bytes())
        .collect();
    let mut m = model(GraphProto {
        name: Some("g".into()),
        node: vec![node("MatMul", "mm", &["x", "w"], &["y"])],
        initializer: vec![TensorProto {
            name: Some("w".into()),
            data_type: Some(DataType::Float as i32),
            dims: vec![64, 64],
            raw_data: Some(w.into()),
            ..Default::default()
        }],
        input: vec![vi("x", &[1, 64])],
        output: vec![vi("y", &[1, 64])],
        ..Default::default()
    });
    m.opset_import[0].version = Some(13);
    m
}

/// Weight-only 4-bit: the opset goes to 21, the weight to a blocked
/// DequantizeLinear, and validation (tract cannot load 4-bit tensors) runs
/// through the lowering and says so.
#[test]
fn weight_only_4bit_is_written_and_validated_through_the_lowering() {
    let s = Scratch::new();
    s.write_model("m.onnx", &matmul_model());
    let out = onnxq(
        &[
            "quantize",
            "m.onnx",
            "-o",
            "q.onnx",
            "--mode",
            "weights",
            "--bits",
            "4",
            "--calib-random",
            "2",
        ],
        &s.dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("validated through an equivalent lowering"),
        "{stderr}"
    );
    // The summary says where the compute sits by precision.
    assert!(
        stderr.contains("compute 4-bit weights (DequantizeLinear), float activations: 1 ops"),
        "{stderr}"
    );
    let q = s.read_model("q.onnx");
    assert_eq!(
        q.opset_import
            .iter()
            .find(|o| o.domain() == "")
            .and_then(|o| o.version),
        Some(21)
    );
    let g = q.graph.expect("graph");
    let dq = g
        .node
        .iter()
        .find(|n| n.op_type() == "DequantizeLinear")
        .expect("a DequantizeLinear");
    assert!(dq
        .attribute
        .iter()
        .any(|a| a.name() == "block_size" && a.i == Some(32)));
    let codes = g
        .initializer
        .iter()
        .find(|t| t.name() == dq.input[0])
        .expect("codes");
    assert_eq!(codes.data_type, Some(DataType::Uint4 as i32));
}

/// Weight-only options without `--mode weights` are refused, not ignored.
#[test]
fn weight_only_options_need_mode_weights() {
    let s = Scratch::new();
    s.write_model("m.onnx", &matmul_model());
    let out = onnxq(
        &[
            "quantize",
            "m.onnx",
            "-o",
            "q.onnx",
            "--bits",
            "4",
            "--calib-random",
            "2",
        ],
        &s.dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("--mode weights"), "{stderr}");
    assert!(!s.dir.join("q.onnx").exists());
}

/// `--mode f16`: float16 weights and compute, float32 at the interface;
/// `--storage-only` without a half-precision mode is refused.
#[test]
fn float16_mode_writes_half_weights_and_keeps_the_interface() {
    let s = Scratch::new();
    s.write_model("m.onnx", &matmul_model());
    let out = onnxq(
        &[
            "quantize",
            "m.onnx",
            "-o",
            "h.onnx",
            "--mode",
            "f16",
            "--calib-random",
            "2",
        ],
        &s.dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let q = s.read_model("h.onnx");
    let g = q.graph.expect("graph");
    let w = g
        .initializer
        .iter()
        .find(|t| t.name() == "w")
        .expect("weight");
    assert_eq!(w.data_type, Some(DataType::Float16 as i32));
    let elem = |p: &ValueInfoProto| match p.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.elem_type,
        _ => None,
    };
    assert_eq!(elem(&g.input[0]), Some(DataType::Float as i32));
    assert_eq!(elem(&g.output[0]), Some(DataType::Float as i32));
    assert_eq!(g.output[0].name(), "y");

    let out = onnxq(
        &[
            "quantize",
            "m.onnx",
            "-o",
            "x.onnx",
            "--storage-only",
            "--calib-random",
            "2",
        ],
        &s.dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mode f16"));
}
