//! Lossless import → export: a model holding everything the IR must carry
//! without interpreting it comes back field for field, written inline or
//! with external data, and a model whose weights are memory-mapped from an
//! external file writes back correctly (also over its own files).

use std::path::Path;

use onnxq::ir::Model;
use onnxq::onnx::attribute_proto::AttributeType;
use onnxq::onnx::export::{self, ExportOptions};
use onnxq::onnx::import;
use onnxq::onnx::tensor_proto::{DataLocation, DataType};
use onnxq::onnx::tensor_shape_proto::{dimension, Dimension};
use onnxq::onnx::type_proto;
use onnxq::onnx::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    SparseTensorProto, StringStringEntryProto, TensorAnnotation, TensorProto, TensorShapeProto,
    TrainingInfoProto, TypeProto, ValueInfoProto,
};
use prost::Message;

// ---------------------------------------------------------------- builders

fn kv(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

fn ttype(elem: DataType, dims: &[Option<i64>]) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem as i32),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| Dimension {
                        value: Some(match d {
                            Some(v) => dimension::Value::DimValue(*v),
                            None => dimension::Value::DimParam("N".into()),
                        }),
                        denotation: None,
                    })
                    .collect(),
            }),
        })),
        denotation: None,
    }
}

fn vi(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(ttype(elem, dims)),
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

fn raw_f32(name: &str, dims: &[i64], seed: f32) -> TensorProto {
    let n: i64 = dims.iter().product();
    let raw: Vec<u8> = (0..n)
        .flat_map(|i| (seed + i as f32 * 0.25).to_le_bytes())
        .collect();
    TensorProto {
        name: Some(name.into()),
        data_type: Some(DataType::Float as i32),
        dims: dims.to_vec(),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// Everything the IR must keep: custom-domain ops, doc strings, metadata at
/// every level, value_info, functions, training info, a sparse initializer,
/// an If reading outer values, an initializer also listed as a graph input,
/// omitted optional inputs and outputs, typed `*_data` tensors, a string
/// tensor, quantization annotations.
fn kitchen_sink() -> ModelProto {
    let f = DataType::Float;
    let mut g = GraphProto {
        name: Some("sink".into()),
        doc_string: Some("graph doc".into()),
        metadata_props: vec![kv("graph-key", "graph-value")],
        quantization_annotation: vec![TensorAnnotation {
            tensor_name: Some("a".into()),
            quant_parameter_tensor_names: vec![kv("SCALE_TENSOR", "w")],
        }],
        ..Default::default()
    };

    g.initializer = vec![
        // Also a graph input (IR < 4 style overridable default).
        TensorProto {
            doc_string: Some("overridable".into()),
            ..raw_f32("w", &[4], 1.0)
        },
        raw_f32("big", &[2, 4], -3.0),
        // Typed float_data, not raw: must stay typed.
        TensorProto {
            name: Some("typed".into()),
            data_type: Some(DataType::Float as i32),
            dims: vec![4],
            float_data: vec![0.5, -1.5, 2.25, 1e-7],
            metadata_props: vec![kv("tensor-key", "tensor-value")],
            ..Default::default()
        },
        TensorProto {
            name: Some("cmax".into()),
            data_type: Some(DataType::Float as i32),
            dims: vec![],
            float_data: vec![6.0],
            ..Default::default()
        },
        TensorProto {
            name: Some("shape".into()),
            data_type: Some(DataType::Int64 as i32),
            dims: vec![2],
            int64_data: vec![2, 4],
            ..Default::default()
        },
        TensorProto {
            name: Some("labels".into()),
            data_type: Some(DataType::String as i32),
            dims: vec![2],
            string_data: vec![b"cat".to_vec().into(), b"dog".to_vec().into()],
            ..Default::default()
        },
        // A large raw int8 tensor (goes external with a small threshold).
        TensorProto {
            name: Some("q".into()),
            data_type: Some(DataType::Int8 as i32),
            dims: vec![2, 4],
            raw_data: Some(
                (0u8..8)
                    .map(|b| b.wrapping_mul(37))
                    .collect::<Vec<u8>>()
                    .into(),
            ),
            ..Default::default()
        },
    ];
    g.sparse_initializer = vec![SparseTensorProto {
        values: Some(TensorProto {
            name: Some("sp".into()),
            data_type: Some(DataType::Float as i32),
            dims: vec![2],
            float_data: vec![7.0, 8.0],
            ..Default::default()
        }),
        indices: Some(TensorProto {
            name: Some("sp_idx".into()),
            data_type: Some(DataType::Int64 as i32),
            dims: vec![2],
            int64_data: vec![1, 6],
            ..Default::default()
        }),
        dims: vec![2, 4],
    }];

    g.input = vec![
        ValueInfoProto {
            doc_string: Some("the input".into()),
            ..vi("x", f, &[None, Some(4)])
        },
        vi("w", f, &[Some(4)]),
        vi("cond", DataType::Bool, &[]),
    ];

    let mut add = node("Add", "add0", &["x", "w"], &["a"]);
    add.doc_string = Some("node doc".into());
    add.metadata_props = vec![kv("node-key", "node-value")];

    // A custom-domain op with every attribute kind, an omitted optional
    // output in the middle and attributes onnxq knows nothing about.
    let mut custom = node("FancyOp", "fancy", &["a", "", "big"], &["b", "", "b_aux"]);
    custom.domain = Some("com.example".into());
    custom.attribute = vec![
        AttributeProto {
            name: Some("alpha".into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(0.125),
            ..Default::default()
        },
        AttributeProto {
            name: Some("axes".into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: vec![0, -1],
            ..Default::default()
        },
        AttributeProto {
            name: Some("mode".into()),
            r#type: Some(AttributeType::String as i32),
            s: Some(b"fast".to_vec().into()),
            ..Default::default()
        },
        AttributeProto {
            name: Some("table".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(raw_f32("", &[3], 9.0)),
            doc_string: Some("attr doc".into()),
            ..Default::default()
        },
    ];

    // Clip with its optional `min` omitted.
    let clip = node("Clip", "clip0", &["b", "", "cmax"], &["c"]);

    // If whose branches read outer values (c, a, typed) by name.
    let then_g = GraphProto {
        name: Some("then".into()),
        node: vec![node("Mul", "then_mul", &["c", "typed"], &["t_out"])],
        output: vec![vi("t_out", f, &[None, Some(4)])],
        ..Default::default()
    };
    let else_g = GraphProto {
        name: Some("else".into()),
        node: vec![node("Identity", "else_id", &["a"], &["e_out"])],
        output: vec![vi("e_out", f, &[None, Some(4)])],
        ..Default::default()
    };
    let mut iff = node("If", "if0", &["cond"], &["d"]);
    iff.attribute = vec![
        attr_graph("then_branch", then_g),
        attr_graph("else_branch", else_g),
    ];

    // A call to a model-local function.
    let mut call = node("AddTwice", "call0", &["d", "sp"], &["e"]);
    call.domain = Some("com.example".into());

    let reshape = node("Reshape", "reshape0", &["e", "shape"], &["y"]);
    let cast = node("Cast", "cast0", &["q"], &["qf"]);
    g.node = vec![add, custom, clip, iff, call, reshape, cast];

    g.output = vec![
        vi("y", f, &[Some(2), Some(4)]),
        vi("qf", f, &[Some(2), Some(4)]),
        vi("b_aux", f, &[]),
    ];
    g.value_info = vec![
        vi("a", f, &[None, Some(4)]),
        ValueInfoProto {
            doc_string: Some("after fancy".into()),
            ..vi("b", f, &[None, Some(4)])
        },
        vi("d", f, &[None, Some(4)]),
    ];
    if let Some(n) = g.node.iter_mut().find(|n| n.name() == "cast0") {
        n.attribute.push(AttributeProto {
            name: Some("to".into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(DataType::Float as i64),
            ..Default::default()
        });
    }

    let function = FunctionProto {
        name: Some("AddTwice".into()),
        domain: Some("com.example".into()),
        input: vec!["p".into(), "q".into()],
        output: vec!["r".into()],
        node: vec![
            node("Add", "f_add0", &["p", "q"], &["pq"]),
            node("Add", "f_add1", &["pq", "q"], &["r"]),
        ],
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        doc_string: Some("adds q twice".into()),
        ..Default::default()
    };

    let training = TrainingInfoProto {
        algorithm: Some(GraphProto {
            name: Some("step".into()),
            node: vec![node("Sub", "sgd", &["w", "x"], &["w_new"])],
            output: vec![vi("w_new", f, &[Some(4)])],
            ..Default::default()
        }),
        update_binding: vec![kv("w", "w_new")],
        ..Default::default()
    };

    ModelProto {
        ir_version: Some(10),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(18),
            },
            OperatorSetIdProto {
                domain: Some("com.example".into()),
                version: Some(1),
            },
        ],
        producer_name: Some("onnxq roundtrip test".into()),
        producer_version: Some("1".into()),
        domain: Some("org.example".into()),
        model_version: Some(3),
        doc_string: Some("model doc".into()),
        graph: Some(g),
        metadata_props: vec![kv("author", "tests/roundtrip.rs"), kv("license", "MIT")],
        training_info: vec![training],
        functions: vec![function],
        ..Default::default()
    }
}

// ------------------------------------------------------------------ helpers

fn import_bytes(bytes: Vec<u8>) -> Model {
    import::from_bytes(bytes.into(), None, "<memory>").expect("import")
}

fn read(path: &Path) -> Model {
    import::read_model(path).unwrap_or_else(|e| panic!("{e}"))
}

fn decode(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).expect("read").as_slice()).expect("decode")
}

/// Asserts two protos are equal, and on failure shows the first differing
/// field path instead of two pages of Debug output.
fn assert_proto_eq(got: &ModelProto, want: &ModelProto, what: &str) {
    if got == want {
        return;
    }
    let g = format!("{got:#?}");
    let w = format!("{want:#?}");
    let line = g
        .lines()
        .zip(w.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    let ctx = |s: &str| {
        s.lines()
            .skip(line.saturating_sub(8))
            .take(16)
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what}: protos differ near line {line}\n--- got\n{}\n--- want\n{}",
        ctx(&g),
        ctx(&w)
    );
}

/// The names of files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// -------------------------------------------------------------------- tests

#[test]
fn in_memory_round_trip_is_lossless() {
    let original = kitchen_sink();
    let m = import_bytes(original.encode_to_vec());
    m.graph.verify().expect("imported graph verifies");
    assert_proto_eq(&export::to_proto(&m), &original, "to_proto");
    // And the bytes are what prost writes for the original: nothing reordered.
    assert_eq!(export::to_bytes(&m), original.encode_to_vec());
}

#[test]
fn inline_file_round_trip_is_lossless() {
    let original = kitchen_sink();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.onnx");
    std::fs::write(&src, original.encode_to_vec()).expect("write");
    let m = read(&src);

    let out = dir.path().join("out.onnx");
    let s = export::write_model(&m, &out, &ExportOptions::default()).expect("write_model");
    assert!(s.external.is_none());
    assert_eq!(
        s.model_bytes,
        std::fs::metadata(&out).expect("stat").len(),
        "summary reports the file size"
    );
    // The streamed writer lays fields out differently from prost, so compare
    // decoded protos, then a second import.
    assert_proto_eq(&decode(&out), &original, "written file");
    assert_proto_eq(
        &export::to_proto(&read(&out)),
        &original,
        "re-imported file",
    );
    assert_eq!(
        listing(dir.path()),
        ["out.onnx", "src.onnx"],
        "no temporaries left"
    );
}

#[test]
fn external_data_round_trip_is_lossless() {
    let original = kitchen_sink();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.onnx");
    std::fs::write(&src, original.encode_to_vec()).expect("write");
    let m = read(&src);

    let out = dir.path().join("ext.onnx");
    let opts = ExportOptions {
        external_min_bytes: Some(16),
    };
    let s = export::write_model(&m, &out, &opts).expect("write_model");
    let (data_path, data_len) = s.external.clone().expect("external data written");
    assert_eq!(data_path, dir.path().join("ext.onnx.data"));
    assert_eq!(
        std::fs::metadata(&data_path)
            .expect("data file exists")
            .len(),
        data_len
    );
    assert_eq!(
        listing(dir.path()),
        ["ext.onnx", "ext.onnx.data", "src.onnx"]
    );

    // Which tensors went out: raw ones of at least 16 bytes (w: 16, big: 32);
    // q (8 bytes) and the typed / string tensors stay inline.
    let written = decode(&out);
    let gp = written.graph.as_ref().expect("graph");
    let external: Vec<&str> = gp
        .initializer
        .iter()
        .filter(|t| t.data_location == Some(DataLocation::External as i32))
        .map(|t| t.name())
        .collect();
    assert_eq!(external, ["w", "big"]);
    assert_eq!(s.external_tensors, 2);
    for t in gp
        .initializer
        .iter()
        .filter(|t| t.data_location == Some(DataLocation::External as i32))
    {
        assert!(
            t.raw_data.is_none(),
            "{}: external tensor also has raw_data",
            t.name()
        );
        let loc = t
            .external_data
            .iter()
            .find(|e| e.key() == "location")
            .expect("location")
            .value();
        assert_eq!(loc, "ext.onnx.data", "location is relative to the model");
        assert!(!Path::new(loc).is_absolute());
    }
    let typed = gp
        .initializer
        .iter()
        .find(|t| t.name() == "typed")
        .expect("typed");
    assert_eq!(
        typed.float_data,
        [0.5, -1.5, 2.25, 1e-7],
        "typed data stays typed"
    );

    // Read back: tensors equal the originals element for element, and the
    // whole model is the original once data is inlined.
    let back = read(&out);
    let g = &back.graph;
    for name in ["w", "big"] {
        let t = g
            .producer_node(g.lookup(name).expect("value"))
            .initializer()
            .expect("initializer");
        assert!(t.external().is_some(), "{name} is backed by the data file");
        let orig = original
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap();
        assert_eq!(
            &t.raw_bytes().expect("bytes")[..],
            &orig.raw_data.as_ref().unwrap()[..],
            "{name} bytes"
        );
    }
    assert_proto_eq(
        &export::to_proto(&back),
        &original,
        "re-imported external model",
    );

    // The model file without its data file cannot be read, and says why.
    std::fs::remove_file(&data_path).expect("rm data");
    let err = import::read_model(&out).expect_err("data file is gone");
    assert!(err.to_string().contains("ext.onnx.data"), "{err}");
}

#[test]
fn mmapped_external_model_writes_back() {
    let original = kitchen_sink();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.onnx");
    std::fs::write(&src, original.encode_to_vec()).expect("write");
    let ext = dir.path().join("ext.onnx");
    let opts = ExportOptions {
        external_min_bytes: Some(16),
    };
    export::write_model(&read(&src), &ext, &opts).expect("write external");

    // This model's w and big are windows onto the mapped ext.onnx.data.
    let m = read(&ext);
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");

    // Mapped → inline: data streamed back into the model file.
    let inline = sub.join("inline.onnx");
    export::write_model(&m, &inline, &ExportOptions::default()).expect("write inline");
    assert_proto_eq(&decode(&inline), &original, "mapped model written inline");

    // Mapped → external elsewhere: a new data file beside the new model.
    let again = sub.join("again.onnx");
    export::write_model(&m, &again, &opts).expect("write external again");
    assert_proto_eq(
        &export::to_proto(&read(&again)),
        &original,
        "mapped model written external",
    );
    assert_eq!(
        std::fs::read(sub.join("again.onnx.data")).expect("data"),
        std::fs::read(dir.path().join("ext.onnx.data")).expect("data"),
        "same tensors, same layout"
    );

    // Mapped → over its own files (what `opt --in-place` does). The new
    // data file replaces the mapped one by rename, so the mapping still
    // sees the old bytes while they are copied.
    export::write_model(&m, &ext, &opts).expect("write in place");
    drop(m);
    assert_proto_eq(
        &export::to_proto(&read(&ext)),
        &original,
        "rewritten in place",
    );
    assert_eq!(
        listing(dir.path()),
        ["ext.onnx", "ext.onnx.data", "src.onnx", "sub"],
        "no temporaries left"
    );
}

#[test]
fn import_keeps_what_it_does_not_interpret() {
    // Spot checks on the IR side, so a lossless round trip cannot come from
    // the IR simply ignoring the graph.
    let m = import_bytes(kitchen_sink().encode_to_vec());
    let g = &m.graph;
    let fancy = g
        .ops()
        .into_iter()
        .find(|&n| g.node(n).name() == "fancy")
        .expect("fancy");
    let node = g.node(fancy);
    assert_eq!(node.domain(), "com.example");
    assert_eq!(node.inputs()[1], None, "omitted optional input");
    assert_eq!(node.outputs()[1], None, "omitted optional output");
    assert_eq!(node.attr_f("alpha"), Some(0.125));

    let iff = g
        .ops()
        .into_iter()
        .find(|&n| g.node(n).name() == "if0")
        .expect("if0");
    let implicit: Vec<&str> = g
        .node(iff)
        .implicit_inputs()
        .iter()
        .map(|&v| g.name(v))
        .collect();
    assert_eq!(
        implicit,
        ["a", "c", "typed"],
        "outer values read by the branches"
    );

    let w = g.lookup("w").expect("w");
    assert!(g.is_graph_input(w));
    assert!(g.producer_node(w).initializer().is_some());
    assert!(
        g.constant(w).is_none(),
        "an initializer that is also an input is overridable"
    );

    assert!(
        g.lookup("sp").is_some(),
        "sparse initializer defines its value"
    );
    assert_eq!(m.meta.functions.len(), 1);
    assert_eq!(m.meta.training_info.len(), 1);
}
