//! The runtime (tract) and host tensor files: small models built with the IR
//! API, checked against numbers computed by hand; file round trips for every
//! element type.

use half::f16;
use ndarray::{array, ArrayD, IxDyn};
use onnxq::ir::At;
use prost::Message;

use onnxq::ir::types::{self, Dim};
use onnxq::ir::{Graph, Model, Tensor, ValueId};
use onnxq::onnx::attribute_proto::AttributeType;
use onnxq::onnx::tensor_proto::DataType;
use onnxq::onnx::{
    AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use onnxq::runtime::{input_specs, RunOptions, Runner, RuntimeError};
use onnxq::tensorio::{self, HostTensor, TensorIoError};

const F32: i32 = DataType::Float as i32;

fn vi(name: &str, elem: i32, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(types::tensor_type_dims(elem, Some(dims))),
        ..Default::default()
    }
}

fn known(dims: &[i64]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

fn node(op: &str, name: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn model(graph: Graph) -> Model {
    Model {
        meta: ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            ..Default::default()
        },
        graph,
        dir: None,
    }
}

fn output(g: &mut Graph, v: ValueId, elem: i32) {
    let name = g.name(v).to_string();
    g.push_output(
        v,
        ValueInfoProto {
            name: Some(name),
            r#type: Some(types::tensor_type_dims(elem, None)),
            ..Default::default()
        },
    );
}

fn w_mat() -> ArrayD<f32> {
    array![
        [1.0f32, -2.0, 0.5, 0.0],
        [0.0, 1.0, -1.0, 2.0],
        [3.0, 0.0, 1.0, -1.0]
    ]
    .into_dyn()
}
fn b_vec() -> ArrayD<f32> {
    array![0.5f32, -1.0, 0.0, 0.25].into_dyn()
}

/// y = Relu(x @ W + b), x: [batch, 3].
fn mlp(batch: Dim) -> Model {
    let mut g = Graph::new();
    let x = g.add_input(vi("x", F32, &[batch, Dim::Known(3)]));
    let w = g.add_initializer(Tensor::from_f32("W", &w_mat()));
    let b = g.add_initializer(Tensor::from_f32("b", &b_vec()));
    let (_, mm) = g.add_op(
        node("MatMul", "matmul", vec![]),
        &[Some(x), Some(w)],
        &["mm"],
        At::End,
    );
    let (_, add) = g.add_op(
        node("Add", "add", vec![]),
        &[Some(mm[0]), Some(b)],
        &["biased"],
        At::End,
    );
    let (_, y) = g.add_op(
        node("Relu", "relu", vec![]),
        &[Some(add[0])],
        &["y"],
        At::End,
    );
    output(&mut g, y[0], F32);
    model(g)
}

fn x_in() -> ArrayD<f32> {
    array![[1.0f32, 2.0, 3.0], [-1.0, 0.5, 0.0]].into_dyn()
}

fn mlp_expected(x: &ArrayD<f32>) -> (ArrayD<f32>, ArrayD<f32>) {
    let x2 = x.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let w2 = w_mat().into_dimensionality::<ndarray::Ix2>().unwrap();
    let mm = x2.dot(&w2);
    let y = (&mm + &b_vec().into_dimensionality::<ndarray::Ix1>().unwrap()).mapv(|v| v.max(0.0));
    (y.into_dyn(), mm.into_dyn())
}

fn f32_of(out: &[(String, HostTensor)], name: &str) -> ArrayD<f32> {
    match &out
        .iter()
        .find(|(n, _)| n == name)
        .expect("output present")
        .1
    {
        HostTensor::F32(a) => a.clone(),
        other => panic!("{name}: expected float output, got {other}"),
    }
}

fn close(a: &ArrayD<f32>, b: &ArrayD<f32>) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{a} vs {b}");
    }
}

#[test]
fn mlp_runs_and_captures_an_intermediate() {
    let m = mlp(Dim::Known(2));
    let opts = RunOptions {
        extra_outputs: vec!["mm".into()],
        ..Default::default()
    };
    let r = Runner::new(&m, &opts).unwrap();
    assert_eq!(r.input_names(), vec!["x".to_string()]);
    assert_eq!(r.output_names(), ["y".to_string(), "mm".to_string()]);
    let out = r.run(&[("x".into(), HostTensor::F32(x_in()))]).unwrap();
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["y", "mm"]);
    let (y, mm) = mlp_expected(&x_in());
    close(&f32_of(&out, "y"), &y);
    close(&f32_of(&out, "mm"), &mm);
}

#[test]
fn unoptimized_gives_the_same_numbers() {
    let m = mlp(Dim::Known(2));
    let opts = RunOptions {
        optimize: false,
        ..Default::default()
    };
    let out = Runner::new(&m, &opts)
        .unwrap()
        .run(&[("x".into(), HostTensor::F32(x_in()))])
        .unwrap();
    close(&f32_of(&out, "y"), &mlp_expected(&x_in()).0);
}

#[test]
fn symbolic_batch_runs_at_any_size_and_can_be_fixed() {
    let m = mlp(Dim::Symbol("N".into()));
    let specs = input_specs(&m);
    assert_eq!(specs.len(), 1);
    assert_eq!(
        specs[0].dims,
        Some(vec![Dim::Symbol("N".into()), Dim::Known(3)])
    );
    let r = Runner::new(&m, &RunOptions::default()).unwrap();
    let x5 = ArrayD::from_shape_fn(IxDyn(&[5, 3]), |i| (i[0] as f32) - (i[1] as f32) * 0.5);
    let out = r.run(&[("x".into(), HostTensor::F32(x5.clone()))]).unwrap();
    close(&f32_of(&out, "y"), &mlp_expected(&x5).0);

    let fixed = RunOptions {
        input_shapes: vec![("x".into(), vec![2, 3], 0)],
        ..Default::default()
    };
    let r = Runner::new(&m, &fixed).unwrap();
    let err = r.run(&[("x".into(), HostTensor::F32(x5))]).unwrap_err();
    assert!(matches!(err, RuntimeError::InputShape { .. }), "{err}");
    assert!(err.to_string().contains("[2,3]"), "{err}");
}

#[test]
fn input_errors_name_the_input() {
    let m = mlp(Dim::Known(2));
    let r = Runner::new(&m, &RunOptions::default()).unwrap();
    let e = r.run(&[("z".into(), HostTensor::F32(x_in()))]).unwrap_err();
    assert!(matches!(e, RuntimeError::UnexpectedInput { .. }), "{e}");
    assert!(
        e.to_string().contains("'z'") && e.to_string().contains('x'),
        "{e}"
    );
    let e = r.run(&[]).unwrap_err();
    assert!(matches!(e, RuntimeError::MissingInputs { .. }), "{e}");
    let e = r
        .run(&[("x".into(), HostTensor::F32(ArrayD::zeros(IxDyn(&[2, 4]))))])
        .unwrap_err();
    assert!(matches!(e, RuntimeError::InputShape { .. }), "{e}");
    let e = r
        .run(&[("x".into(), HostTensor::I64(ArrayD::zeros(IxDyn(&[2, 3]))))])
        .unwrap_err();
    assert!(matches!(e, RuntimeError::InputDtype { .. }), "{e}");
    assert!(
        e.to_string().contains("int64") && e.to_string().contains("float"),
        "{e}"
    );
    let e = r
        .run(&[
            ("x".into(), HostTensor::F32(x_in())),
            ("x".into(), HostTensor::F32(x_in())),
        ])
        .unwrap_err();
    assert!(matches!(e, RuntimeError::DuplicateInput { .. }), "{e}");

    let opts = RunOptions {
        extra_outputs: vec!["nope".into()],
        ..Default::default()
    };
    let e = Runner::new(&m, &opts).unwrap_err();
    assert!(matches!(e, RuntimeError::UnknownTensor { .. }), "{e}");
    let opts = RunOptions {
        input_shapes: vec![("w".into(), vec![1], 0)],
        ..Default::default()
    };
    let e = Runner::new(&m, &opts).unwrap_err();
    assert!(matches!(e, RuntimeError::UnknownInput { .. }), "{e}");
}

#[test]
fn initializer_listed_as_input_is_not_a_runtime_input() {
    let mut m = mlp(Dim::Known(2));
    let w = m.graph.lookup("W").unwrap();
    m.graph.push_input_port(w, vi("W", F32, &known(&[3, 4])));
    let specs = input_specs(&m);
    assert_eq!(
        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["x"]
    );
    let r = Runner::new(&m, &RunOptions::default()).unwrap();
    assert_eq!(r.input_names(), vec!["x".to_string()]);
    let out = r.run(&[("x".into(), HostTensor::F32(x_in()))]).unwrap();
    close(&f32_of(&out, "y"), &mlp_expected(&x_in()).0);
}

/// Conv(1→2 channels, 3x3, pad 1) + Relu on a 4x4 image.
fn conv_model() -> (Model, ArrayD<f32>, ArrayD<f32>) {
    let w = ArrayD::from_shape_fn(IxDyn(&[2, 1, 3, 3]), |i| {
        if i[0] == 0 {
            1.0 / 9.0
        } else {
            (i[2] as f32 - 1.0) * (i[3] as f32 + 1.0)
        }
    });
    let bias = array![0.1f32, -0.5].into_dyn();
    let mut g = Graph::new();
    let x = g.add_input(vi("img", F32, &known(&[1, 1, 4, 4])));
    let wv = g.add_initializer(Tensor::from_f32("conv.weight", &w));
    let bv = g.add_initializer(Tensor::from_f32("conv.bias", &bias));
    let (_, c) = g.add_op(
        node(
            "Conv",
            "/conv/Conv",
            vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
        ),
        &[Some(x), Some(wv), Some(bv)],
        &["conv_out"],
        At::End,
    );
    let (_, r) = g.add_op(
        node("Relu", "/act/Relu", vec![]),
        &[Some(c[0])],
        &["out"],
        At::End,
    );
    output(&mut g, r[0], F32);
    (model(g), w, bias)
}

fn conv_reference(x: &ArrayD<f32>, w: &ArrayD<f32>, b: &ArrayD<f32>) -> ArrayD<f32> {
    let mut out = ArrayD::zeros(IxDyn(&[1, 2, 4, 4]));
    for o in 0..2 {
        for i in 0..4i64 {
            for j in 0..4i64 {
                let mut s = b[[o]];
                for ki in 0..3i64 {
                    for kj in 0..3i64 {
                        let (yi, xj) = (i + ki - 1, j + kj - 1);
                        if (0..4).contains(&yi) && (0..4).contains(&xj) {
                            s += x[[0, 0, yi as usize, xj as usize]]
                                * w[[o, 0, ki as usize, kj as usize]];
                        }
                    }
                }
                out[[0, o, i as usize, j as usize]] = s.max(0.0);
            }
        }
    }
    out
}

#[test]
fn conv_relu_matches_a_direct_convolution() {
    let (m, w, b) = conv_model();
    let x = ArrayD::from_shape_fn(IxDyn(&[1, 1, 4, 4]), |i| {
        (i[2] * 4 + i[3]) as f32 * 0.25 - 1.0
    });
    let opts = RunOptions {
        extra_outputs: vec!["conv_out".into()],
        ..Default::default()
    };
    let out = Runner::new(&m, &opts)
        .unwrap()
        .run(&[("img".into(), HostTensor::F32(x.clone()))])
        .unwrap();
    let want = conv_reference(&x, &w, &b);
    close(&f32_of(&out, "out"), &want);
    // The capture is the pre-activation value: Relu of it is the output.
    close(&f32_of(&out, "conv_out").mapv(|v| v.max(0.0)), &want);
    assert!(f32_of(&out, "conv_out").iter().any(|&v| v < 0.0));
}

#[test]
fn profile_times_nodes_and_maps_them_to_onnx_nodes() {
    for optimize in [true, false] {
        let (m, _, _) = conv_model();
        let r = Runner::new(
            &m,
            &RunOptions {
                optimize,
                ..Default::default()
            },
        )
        .unwrap();
        let x = HostTensor::F32(ArrayD::from_elem(IxDyn(&[1, 1, 4, 4]), 0.5));
        let t = r.profile(&[("img".into(), x)], 3).unwrap();
        assert_eq!(t.runs, 3);
        assert!(!t.nodes.is_empty());
        assert!(t.total > std::time::Duration::ZERO);
        assert!(t.node_sum() > std::time::Duration::ZERO);
        assert!(t.node_sum() <= t.total * 2, "{t:?}");
        // Every ONNX node is accounted for, once per group it belongs to.
        let mut seen: Vec<&str> = t
            .nodes
            .iter()
            .flat_map(|n| n.onnx_nodes.iter().map(String::as_str))
            .chain(t.unattributed.iter().map(String::as_str))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen,
            ["/act/Relu", "/conv/Conv"],
            "optimize={optimize}: {t:#?}"
        );
        assert!(t.unattributed.is_empty(), "optimize={optimize}: {t:#?}");
        let group_sum: std::time::Duration = t.groups.iter().map(|g| g.median).sum();
        assert_eq!(group_sum, t.node_sum());
    }
}

#[test]
fn profile_groups_fused_nodes() {
    // Tract runs MatMul+Add+Relu as one OptMatMul named after the Relu, plus
    // a weight-packing node named after the MatMul: all of it is one group.
    let m = mlp(Dim::Known(2));
    let r = Runner::new(&m, &RunOptions::default()).unwrap();
    let t = r
        .profile(&[("x".into(), HostTensor::F32(x_in()))], 2)
        .unwrap();
    assert!(t.unattributed.is_empty(), "{t:#?}");
    let all: Vec<&str> = t
        .groups
        .iter()
        .flat_map(|g| g.onnx_nodes.iter().map(String::as_str))
        .collect();
    for name in ["matmul", "add", "relu"] {
        assert_eq!(
            all.iter().filter(|n| **n == name).count(),
            1,
            "{name} in one group: {t:#?}"
        );
    }
    // Unoptimised, each ONNX node keeps a plan node of its own name.
    let r = Runner::new(
        &m,
        &RunOptions {
            optimize: false,
            ..Default::default()
        },
    )
    .unwrap();
    let t = r
        .profile(&[("x".into(), HostTensor::F32(x_in()))], 1)
        .unwrap();
    for name in ["matmul", "add", "relu"] {
        assert!(
            t.nodes.iter().any(|n| n.onnx_nodes == [name]),
            "{name}: {t:#?}"
        );
    }
}

#[test]
fn f16_models_run_natively_or_widened() {
    let mut g = Graph::new();
    let f16t = DataType::Float16 as i32;
    let x = g.add_input(vi("x", f16t, &known(&[4])));
    let (_, y) = g.add_op(node("Relu", "relu", vec![]), &[Some(x)], &["y"], At::End);
    output(&mut g, y[0], f16t);
    let m = model(g);
    let xs = array![-1.5f32, 0.0, 2.25, 3.0].into_dyn();
    let input = HostTensor::F16(xs.mapv(f16::from_f32));
    let want = xs.mapv(|v| v.max(0.0));

    let out = Runner::new(&m, &RunOptions::default())
        .unwrap()
        .run(&[("x".into(), input.clone())])
        .unwrap();
    assert_eq!(out[0].1.dtype(), f16t);
    close(&out[0].1.to_f32(), &want);

    let opts = RunOptions {
        f16_to_f32: true,
        ..Default::default()
    };
    let out = Runner::new(&m, &opts)
        .unwrap()
        .run(&[("x".into(), input)])
        .unwrap();
    assert_eq!(out[0].1.dtype(), F32);
    close(&out[0].1.to_f32(), &want);
}

// ---------------------------------------------------------------- tensorio

fn samples() -> Vec<(String, HostTensor)> {
    let a = |v: Vec<f32>, s: &[usize]| ArrayD::from_shape_vec(IxDyn(s), v).unwrap();
    vec![
        (
            "f32".into(),
            HostTensor::F32(a(vec![1.5, -2.0, 3.25, 0.0, 1e-3, 7.0], &[2, 3])),
        ),
        (
            "f64".into(),
            HostTensor::F64(a(vec![1.5, -2.0, 3.0], &[3]).mapv(f64::from)),
        ),
        (
            "f16".into(),
            HostTensor::F16(a(vec![0.5, -1.0, 2.0, 65504.0], &[2, 2]).mapv(f16::from_f32)),
        ),
        (
            "i64".into(),
            HostTensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![i64::MIN, 42]).unwrap()),
        ),
        (
            "i32".into(),
            HostTensor::I32(ArrayD::from_shape_vec(IxDyn(&[]), vec![-7]).unwrap()),
        ),
        (
            "i8".into(),
            HostTensor::I8(ArrayD::from_shape_vec(IxDyn(&[3]), vec![-128, 0, 127]).unwrap()),
        ),
        (
            "u8".into(),
            HostTensor::U8(ArrayD::from_shape_vec(IxDyn(&[0, 2]), vec![]).unwrap()),
        ),
        (
            "bool".into(),
            HostTensor::Bool(
                ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![true, false, true]).unwrap(),
            ),
        ),
    ]
}

#[test]
fn npy_round_trips_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for (name, t) in samples() {
        let p = dir.path().join(format!("{name}.npy"));
        tensorio::write_npy(&p, &t).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert_eq!(header_end % 64, 0, "{name}: data is 64-byte aligned");
        assert_eq!(tensorio::read_npy(&p).unwrap(), t, "{name}");
    }
}

#[test]
fn npy_reads_fortran_order_and_big_endian() {
    // Written by hand as NumPy would for np.asfortranarray([[1,2,3],[4,5,6]], '>i4').
    let header = "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in [1i32, 4, 2, 5, 3, 6] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    let t = tensorio::npy_from_bytes(&bytes, "f.npy").unwrap();
    assert_eq!(t, HostTensor::I32(array![[1, 2, 3], [4, 5, 6]].into_dyn()));
}

#[test]
fn npy_errors_name_the_file() {
    let e = tensorio::npy_from_bytes(b"PK\x03\x04 not npy", "in.npy").unwrap_err();
    assert!(
        matches!(e, TensorIoError::NotNpy { .. }) && e.to_string().starts_with("in.npy"),
        "{e}"
    );
    let header = "{'descr': '<u2', 'fortran_order': False, 'shape': (1,), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0, 0]);
    let e = tensorio::npy_from_bytes(&bytes, "u16.npy").unwrap_err();
    assert!(matches!(e, TensorIoError::UnsupportedDtype { .. }), "{e}");
    assert!(e.to_string().contains("<u2"), "{e}");
    let e = tensorio::read_npy("/definitely/not/here.npy").unwrap_err();
    assert!(e.to_string().contains("/definitely/not/here.npy"), "{e}");
}

#[test]
fn npz_round_trips_sorted_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all.npz");
    let mut arrays = samples();
    arrays.reverse();
    tensorio::write_npz(&p, &arrays).unwrap();
    let back = tensorio::read_npz(&p).unwrap();
    let mut want = samples();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(back, want);

    // The archive is a standard one: ndarray-npy reads it too.
    let mut r = ndarray_npy::NpzReader::new(std::fs::File::open(&p).unwrap()).unwrap();
    let f: ArrayD<f32> = r.by_name("f32").unwrap();
    assert_eq!(HostTensor::F32(f), samples()[0].1);
}

#[test]
fn npz_written_by_ndarray_npy_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("other.npz");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&p).unwrap());
    w.add_array("b", &array![[1i64, 2], [3, 4]]).unwrap();
    w.add_array("a", &array![true, false]).unwrap();
    w.finish().unwrap();
    let got = tensorio::read_npz(&p).unwrap();
    assert_eq!(
        got[0],
        ("a".into(), HostTensor::Bool(array![true, false].into_dyn()))
    );
    assert_eq!(
        got[1],
        (
            "b".into(),
            HostTensor::I64(array![[1i64, 2], [3, 4]].into_dyn())
        )
    );
    let e = tensorio::npz_from_bytes(b"not a zip at all", "x.npz").unwrap_err();
    assert!(matches!(e, TensorIoError::BadZip { .. }), "{e}");
}

#[test]
fn pb_round_trips_raw_and_typed_fields() {
    let dir = tempfile::tempdir().unwrap();
    for (name, t) in samples() {
        let p = dir.path().join(format!("{name}.pb"));
        tensorio::write_pb(&p, &name, &t).unwrap();
        assert_eq!(
            tensorio::read_pb(&p).unwrap(),
            (name.clone(), t.clone()),
            "{name}"
        );
        assert_eq!(HostTensor::from_tensor(&t.to_tensor(&name)).unwrap(), t);
    }
    // Typed fields, as older exporters and the ONNX test suite write them.
    let typed = [
        (
            TensorProto {
                name: Some("f".into()),
                data_type: Some(F32),
                dims: vec![2],
                float_data: vec![1.0, -2.5],
                ..Default::default()
            },
            HostTensor::F32(array![1.0f32, -2.5].into_dyn()),
        ),
        (
            TensorProto {
                name: Some("i".into()),
                data_type: Some(DataType::Int64 as i32),
                dims: vec![1, 2],
                int64_data: vec![-3, 9],
                ..Default::default()
            },
            HostTensor::I64(array![[-3i64, 9]].into_dyn()),
        ),
        (
            TensorProto {
                name: Some("h".into()),
                data_type: Some(DataType::Float16 as i32),
                dims: vec![2],
                int32_data: vec![
                    f16::from_f32(1.5).to_bits() as i32,
                    f16::from_f32(-2.0).to_bits() as i32,
                ],
                ..Default::default()
            },
            HostTensor::F16(array![f16::from_f32(1.5), f16::from_f32(-2.0)].into_dyn()),
        ),
        (
            TensorProto {
                name: Some("b".into()),
                data_type: Some(DataType::Bool as i32),
                dims: vec![3],
                int32_data: vec![1, 0, 1],
                ..Default::default()
            },
            HostTensor::Bool(array![true, false, true].into_dyn()),
        ),
    ];
    for (proto, want) in typed {
        let name = proto.name().to_string();
        let p = dir.path().join(format!("typed_{name}.pb"));
        std::fs::write(&p, proto.encode_to_vec()).unwrap();
        assert_eq!(tensorio::read_pb(&p).unwrap(), (name, want));
    }
    let p = dir.path().join("u16.pb");
    let proto = TensorProto {
        name: Some("u".into()),
        data_type: Some(DataType::Uint16 as i32),
        dims: vec![1],
        int32_data: vec![1],
        ..Default::default()
    };
    std::fs::write(&p, proto.encode_to_vec()).unwrap();
    let e = tensorio::read_pb(&p).unwrap_err();
    assert!(
        matches!(e, TensorIoError::UnsupportedDtype { .. }) && e.to_string().contains("u16.pb"),
        "{e}"
    );
    let p = dir.path().join("garbage.pb");
    std::fs::write(&p, [0xffu8; 7]).unwrap();
    assert!(matches!(
        tensorio::read_pb(&p).unwrap_err(),
        TensorIoError::NotTensorProto { .. }
    ));
}

#[test]
fn input_arguments_read_named_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("x.npy");
    let t = HostTensor::F32(x_in());
    tensorio::write_npy(&npy, &t).unwrap();
    let got = tensorio::read_inputs_arg(npy.to_str().unwrap()).unwrap();
    assert_eq!(got, vec![("x".to_string(), t.clone())]);
    let got = tensorio::read_inputs_arg(&format!("input0={}", npy.display())).unwrap();
    assert_eq!(got, vec![("input0".to_string(), t.clone())]);
    let pb = dir.path().join("input_0.pb");
    tensorio::write_pb(&pb, "x", &t).unwrap();
    assert_eq!(
        tensorio::read_inputs_arg(pb.to_str().unwrap()).unwrap()[0].0,
        "x"
    );
    let e = tensorio::read_inputs_arg("x=foo.txt").unwrap_err();
    assert!(matches!(e, TensorIoError::BadArg { .. }), "{e}");

    // And they feed a runner directly.
    let out = Runner::new(&mlp(Dim::Known(2)), &RunOptions::default())
        .unwrap()
        .run(&tensorio::read_inputs_arg(npy.to_str().unwrap()).unwrap())
        .unwrap();
    close(&f32_of(&out, "y"), &mlp_expected(&x_in()).0);
}
