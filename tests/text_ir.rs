//! The textual IR: printer/parser fixed points, parse errors, export of
//! parsed models and the diff helper.

use onnxq::ir::text::{diff, parse_model, print_model, print_model_with, PrintOptions, ELIDED_KEY};
use onnxq::onnx::attribute_proto::AttributeType;
use onnxq::onnx::export::to_proto;
use onnxq::onnx::tensor_proto::DataType;

/// Parses, prints, parses the print and prints again: both prints agree.
fn fixed_point(text: &str) -> String {
    let m = parse_model(text).unwrap_or_else(|e| panic!("parse failed: {e}\n{text}"));
    m.graph.verify().expect("parsed graph verifies");
    let once = print_model(&m);
    let m2 = parse_model(&once).unwrap_or_else(|e| panic!("reparse failed: {e}\n{once}"));
    let twice = print_model(&m2);
    assert_eq!(
        once,
        twice,
        "print -> parse -> print is not a fixed point:\n{}",
        diff(&once, &twice)
    );
    once
}

fn parse_err(text: &str) -> String {
    match parse_model(text) {
        Ok(_) => panic!("expected a parse error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const CONV: &str = r#"# RUN: --passes=nothing
# a second comment line
<
  ir_version: 8,
  opset_import: ["" : 17, "com.microsoft" : 1],
  producer_name: "onnxq-test"
>
main_graph (float[N,3,8,8] X) => (float[N,4,6,6] Y)
<
  float[4,3,3,3] W = {... 108 elements, hash 1a2b3c4d},
  float[4] B = {0.1, 0.2, 0.3, 0.4}
>
{
  [conv0] C = Conv <pads = [0,0,0,0], kernel_shape: ints = [3, 3]> (X, W, B)
  Y = Relu (C)
}
"#;

#[test]
fn conv_model_prints_in_onnx_syntax() {
    let out = fixed_point(CONV);
    let want = r#"<
  ir_version: 8,
  opset_import: ["" : 17, "com.microsoft" : 1],
  producer_name: "onnxq-test"
>
main_graph (float[N,3,8,8] X) => (float[N,4,6,6] Y)
<
  float[4,3,3,3] W = {... 108 elements, hash 1a2b3c4d},
  float[4] B = {0.1, 0.2, 0.3, 0.4}
>
{
  [conv0] C = Conv <kernel_shape: ints = [3, 3], pads: ints = [0, 0, 0, 0]> (X, W, B)
  Y = Relu (C)
}
"#;
    assert_eq!(out, want);
}

#[test]
fn elided_tensor_is_zeros_and_keeps_its_hash() {
    let m = parse_model(CONV).unwrap();
    let w = m.graph.lookup("W").unwrap();
    let t = m.graph.constant(w).unwrap();
    assert_eq!(t.dims(), &[4, 3, 3, 3]);
    assert!(t.to_f32().unwrap().iter().all(|&v| v == 0.0));
    let key = t
        .proto()
        .metadata_props
        .iter()
        .find(|e| e.key() == ELIDED_KEY)
        .unwrap();
    assert_eq!(key.value(), "1a2b3c4d");
    // Printed with a larger limit, the zeros show.
    let full = print_model_with(&m, &PrintOptions { elide_above: 1000 });
    assert!(full.contains("float[4,3,3,3] W = {0.0, 0.0,"), "{full}");
}

#[test]
fn elision_of_real_data_uses_content_hash() {
    let vals: Vec<String> = (0..20).map(|i| format!("{}.5", i)).collect();
    let text = format!(
        "<\n  opset_import: [\"\" : 17]\n>\ng (float[20] X) => (float[20] Y)\n<\n  float[20] C = {{{}}}\n>\n{{\n  Y = Add (X, C)\n}}\n",
        vals.join(", ")
    );
    let m = parse_model(&text).unwrap();
    let t = m.graph.constant(m.graph.lookup("C").unwrap()).unwrap();
    let h = t.content_hash();
    let short = format!("{:08x}", ((h >> 32) as u32) ^ (h as u32));
    let out = print_model(&m);
    assert!(
        out.contains(&format!("float[20] C = {{... 20 elements, hash {short}}}")),
        "{out}"
    );
    fixed_point(&out);
    // Not elided above the limit: the values print back exactly.
    let full = print_model_with(&m, &PrintOptions { elide_above: 20 });
    assert!(
        full.contains(&format!("float[20] C = {{{}}}", vals.join(", "))),
        "{full}"
    );
}

#[test]
fn all_element_types_round_trip() {
    let text = r#"<
  ir_version: 9,
  opset_import: ["" : 21]
>
g (float[2] X) => (float[2] Y)
<
  float[6] f = {1.0, -0.0, nan, inf, -inf, 1e-30},
  double[3] d = {0.1, 1e300, -2.5},
  float16[2] h = {15360, 48128},
  bfloat16[2] bf = {16256, 0},
  int8[3] i8 = {-128, 0, 127},
  uint8[2] u8 = {0, 255},
  int16[2] i16 = {-32768, 32767},
  uint16[1] u16 = {65535},
  int32[2] i32 = {-2147483648, 2147483647},
  uint32[1] u32 = {4294967295},
  int64[2] i64 = {-9223372036854775808, 9223372036854775807},
  uint64[1] u64 = {18446744073709551615},
  bool[3] b = {1, 0, 1},
  string[2] s = {"a \"quoted\" word", "back\\slash"},
  int4[3] i4 = {-8, 7, -1},
  uint4[3] u4 = {0, 15, 3},
  float8e4m3fn[2] f8 = {0, 126},
  complex64[1] c64 = {1.0, -2.0},
  float scalar = {3.25},
  int64[0] empty = {}
>
{
  Y = Identity (X)
}
"#;
    let out = fixed_point(text);
    for line in [
        "float[6] f = {1.0, -0.0, nan, inf, -inf, 1e-30}",
        "double[3] d = {0.1, 1e300, -2.5}",
        "float16[2] h = {15360, 48128}",
        "int8[3] i8 = {-128, 0, 127}",
        "uint64[1] u64 = {18446744073709551615}",
        "string[2] s = {\"a \\\"quoted\\\" word\", \"back\\\\slash\"}",
        "int4[3] i4 = {-8, 7, -1}",
        "uint4[3] u4 = {0, 15, 3}",
        "complex64[1] c64 = {1.0, -2.0}",
        "float scalar = {3.25}",
        "int64[0] empty = {}",
    ] {
        assert!(out.contains(line), "missing `{line}` in\n{out}");
    }
    let m = parse_model(text).unwrap();
    let g = &m.graph;
    let f = g
        .constant(g.lookup("f").unwrap())
        .unwrap()
        .to_f32()
        .unwrap();
    assert!(f[1] == 0.0 && f[1].is_sign_negative());
    assert!(f[2].is_nan() && f[3] == f32::INFINITY && f[4] == f32::NEG_INFINITY);
    let i4 = g.constant(g.lookup("i4").unwrap()).unwrap();
    assert_eq!(i4.raw_bytes().unwrap().as_ref(), &[0x78, 0x0f]);
    let s = g.constant(g.lookup("s").unwrap()).unwrap();
    assert_eq!(s.proto().string_data[0].as_ref(), b"a \"quoted\" word");
    // A float literal for float16 is converted to its bits.
    let m2 = parse_model(&text.replace("{15360, 48128}", "{1.0, -2.0}")).unwrap();
    assert!(print_model(&m2).contains("float16[2] h = {15360, 49152}"));
}

#[test]
fn attributes_of_every_kind() {
    let text = r#"<
  opset_import: ["" : 17, "custom" : 1]
>
g (float[2] X) => (float[2] Y)
{
  Y = custom.Everything <
    i: int = -3, f: float = 0.5, whole: float = 2, s: string = "he said \"hi\"",
    is: ints = [1, 2, 3], fs: floats = [1.0, 2.5, -0.0], ss: strings = ["a", "b"],
    none: ints = [], nofloats: floats = [],
    t: tensor = float[2] {1.0, 2.0}, named: tensor = int64[2] shape {2, 1}, ts: tensors = [int8 {1}, uint8[2] {3, 4}],
    tp: type_proto = float[N,3], tps: type_protos = [seq(float[2]), map(int64, string), optional(int8[]), sparse_tensor(float[10])],
    big: tensor = float[4,5] {... 20 elements, hash 00c0ffee},
    sp: sparse_tensor = sparse([10], float[2] {1.0, 2.0}, int64[2] {3, 7}),
    neg_inf: float = -inf
  > (X)
}
"#;
    let out = fixed_point(text);
    let line = out
        .lines()
        .find(|l| l.contains("custom.Everything"))
        .unwrap();
    // Sorted by name, always typed.
    let names: Vec<&str> = [
        "big:",
        "f:",
        "fs:",
        "i:",
        "is:",
        "named:",
        "neg_inf:",
        "nofloats:",
        "none:",
        "s:",
        "sp:",
        "ss:",
        "t:",
        "tp:",
        "tps:",
        "ts:",
        "whole:",
    ]
    .to_vec();
    let mut last = 0;
    for n in names {
        let at = line
            .find(&format!(" {n}"))
            .or_else(|| line.find(&format!("<{n}")))
            .unwrap_or_else(|| panic!("{n} in {line}"));
        assert!(at >= last, "{n} out of order in {line}");
        last = at;
    }
    for piece in [
        "i: int = -3",
        "f: float = 0.5",
        "whole: float = 2.0",
        "s: string = \"he said \\\"hi\\\"\"",
        "is: ints = [1, 2, 3]",
        "fs: floats = [1.0, 2.5, -0.0]",
        "ss: strings = [\"a\", \"b\"]",
        "none: ints = []",
        "nofloats: floats = []",
        "t: tensor = float[2] {1.0, 2.0}",
        "named: tensor = int64[2] shape {2, 1}",
        "ts: tensors = [int8 {1}, uint8[2] {3, 4}]",
        "tp: type_proto = float[N,3]",
        "tps: type_protos = [seq(float[2]), map(int64, string), optional(int8[]), sparse_tensor(float[10])]",
        "big: tensor = float[4,5] {... 20 elements, hash 00c0ffee}",
        "sp: sparse_tensor = sparse([10], float[2] {1.0, 2.0}, int64[2] {3, 7})",
        "neg_inf: float = -inf",
    ] {
        assert!(line.contains(piece), "missing `{piece}` in {line}");
    }
    let m = parse_model(text).unwrap();
    let n = m.graph.ops()[0];
    let node = m.graph.node(n);
    assert_eq!(node.domain(), "custom");
    assert_eq!(node.attr("whole").unwrap().r#type(), AttributeType::Float);
    assert_eq!(node.attr_f("whole"), Some(2.0));
    assert_eq!(node.attr("none").unwrap().r#type(), AttributeType::Ints);
    assert_eq!(node.attr_s("s"), Some(&b"he said \"hi\""[..]));
}

const IF_MODEL: &str = r#"<
  ir_version: 8,
  opset_import: ["" : 17]
>
main (bool cond, float[2] X) => (float[2] Y)
{
  A = Neg (X)
  [branch] Y = If (cond) <
    then_branch: graph = then_body () => (float[2] t) {
      t = Identity (A)
    },
    else_branch = else_body () => (float[2] e)
    <float[2] k = {1.0, 2.0}>
    {
      e = Add (X, k)
    }
  >
}
"#;

#[test]
fn if_with_subgraphs_reading_outer_values() {
    let out = fixed_point(IF_MODEL);
    let want = r#"<
  ir_version: 8,
  opset_import: ["" : 17]
>
main (bool cond, float[2] X) => (float[2] Y)
{
  A = Neg (X)
  [branch] Y = If (cond) <else_branch: graph = else_body () => (float[2] e)
  <
    float[2] k = {1.0, 2.0}
  >
  {
    e = Add (X, k)
  }, then_branch: graph = then_body () => (float[2] t)
  {
    t = Identity (A)
  }>
}
"#;
    assert_eq!(out, want);
    let m = parse_model(IF_MODEL).unwrap();
    let g = &m.graph;
    let iff = g.producer(g.lookup("Y").unwrap());
    let mut implicit: Vec<&str> = g
        .node(iff)
        .implicit_inputs()
        .iter()
        .map(|&v| g.name(v))
        .collect();
    implicit.sort();
    assert_eq!(implicit, ["A", "X"]);
    assert_eq!(g.node(iff).name(), "branch");
}

#[test]
fn symbolic_dims_scalars_quoted_names_and_value_info() {
    let text = r#"<
  opset_import: ["" : 17]
>
"my graph" (float[N,?,3] "input:0", float s, float[] any, int64["batch size",2] "float") => ("out put" , float[N,?,3] r)
<
  float[N,?,3] "mid/1",
  seq(float[2]) orphan_info
>
{
  "mid/1" = Relu ("input:0")
  "out put" = Mul ("mid/1", s)
  r = Identity ("out put")
}
"#;
    let out = fixed_point(text);
    assert!(out.contains(
        "\"my graph\" (float[N,?,3] \"input:0\", float s, float[] any, int64[\"batch size\",2] \"float\") => (\"out put\", float[N,?,3] r)"
    ), "{out}");
    assert!(out.contains("  \"mid/1\" = Relu (\"input:0\")"), "{out}");
    assert!(out.contains("  seq(float[2]) orphan_info\n"), "{out}");
    let m = parse_model(text).unwrap();
    let g = &m.graph;
    let mid = g.lookup("mid/1").unwrap();
    assert!(g.value(mid).info().is_some());
    assert_eq!(g.shell().value_info.len(), 1);
    // float is a scalar, float[] has unknown rank.
    let s = g.value_type(g.lookup("s").unwrap()).unwrap();
    assert_eq!(onnxq::ir::types::dims(&s), Some(vec![]));
    let any = g.value_type(g.lookup("any").unwrap()).unwrap();
    assert_eq!(onnxq::ir::types::dims(&any), None);
}

#[test]
fn omitted_inputs_and_outputs_and_custom_domains() {
    let text = r#"<
  opset_import: ["" : 17, "com.microsoft" : 1]
>
g (float[2] X, float hi) => (float[2] Y, float[2] Z)
{
  C = Clip (X, , hi)
  D, "" = Dropout (C)
  Y = com.microsoft.QLinearRelu:v2 (D, "", "")
  Z = Identity (C)
}
"#;
    let out = fixed_point(text);
    assert!(out.contains("  C = Clip (X, \"\", hi)\n"), "{out}");
    assert!(out.contains("  D, \"\" = Dropout (C)\n"), "{out}");
    assert!(
        out.contains("  Y = com.microsoft.QLinearRelu:v2 (D, \"\", \"\")\n"),
        "{out}"
    );
    let m = parse_model(text).unwrap();
    let g = &m.graph;
    let clip = g.producer_node(g.lookup("C").unwrap());
    assert_eq!(clip.inputs().len(), 3);
    assert_eq!(clip.inputs()[1], None);
    let drop = g.producer_node(g.lookup("D").unwrap());
    assert_eq!(drop.outputs().len(), 2);
    assert_eq!(drop.outputs()[1], None);
    let q = g.producer_node(g.lookup("Y").unwrap());
    assert_eq!(q.domain(), "com.microsoft");
    assert_eq!(q.op().unwrap().overload(), "v2");
}

#[test]
fn model_header_fields_and_functions() {
    let text = r#"<
  ir_version: 10,
  opset_import: ["" : 18, "local" : 1],
  producer_name: "p",
  producer_version: "1.2",
  domain: "org.test",
  model_version: 7,
  doc_string: "two
lines \"quoted\"",
  metadata_props: ["k1" : "v1", "k2" : "v2"]
>
g (float[2] X) => (float[2] Y)
{
  Y = local.Twice <alpha: float = 2.0> (X)
}
<
  domain: "local",
  opset_import: ["" : 18]
>
Twice <alpha, beta: int = 1> (x) => (y)
<float[2] x>
{
  a = Constant <value_float: float = @alpha> ()
  y = Mul (x, a)
}
"#;
    let out = fixed_point(text);
    let m = parse_model(text).unwrap();
    let p = to_proto(&m);
    assert_eq!(p.ir_version, Some(10));
    assert_eq!(p.producer_name(), "p");
    assert_eq!(p.producer_version(), "1.2");
    assert_eq!(p.domain(), "org.test");
    assert_eq!(p.model_version, Some(7));
    assert_eq!(p.doc_string(), "two\nlines \"quoted\"");
    assert_eq!(p.metadata_props.len(), 2);
    assert_eq!(p.metadata_props[1].value(), "v2");
    assert_eq!(p.functions.len(), 1);
    let f = &p.functions[0];
    assert_eq!(f.name(), "Twice");
    assert_eq!(f.domain(), "local");
    assert_eq!(f.attribute, ["alpha"]);
    assert_eq!(f.attribute_proto[0].name(), "beta");
    assert_eq!(f.input, ["x"]);
    assert_eq!(f.value_info.len(), 1);
    assert_eq!(f.node[0].attribute[0].ref_attr_name(), "alpha");
    assert!(out.contains("Twice <alpha, beta: int = 1> (x) => (y)\n<float[2] x>\n{\n  a = Constant <value_float: float = @alpha> ()\n"), "{out}");
}

#[test]
fn parse_then_export_gives_expected_proto() {
    let m = parse_model(CONV).unwrap();
    let p = to_proto(&m);
    assert_eq!(p.ir_version, Some(8));
    assert_eq!(p.opset_import.len(), 2);
    assert_eq!(p.opset_import[1].domain(), "com.microsoft");
    assert_eq!(p.opset_import[1].version(), 1);
    let g = p.graph.as_ref().unwrap();
    assert_eq!(g.name(), "main_graph");
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name(), "X");
    let dims = onnxq::ir::types::dims(g.input[0].r#type.as_ref().unwrap()).unwrap();
    assert_eq!(
        dims,
        vec![
            onnxq::ir::types::Dim::Symbol("N".into()),
            onnxq::ir::types::Dim::Known(3),
            onnxq::ir::types::Dim::Known(8),
            onnxq::ir::types::Dim::Known(8)
        ]
    );
    assert_eq!(g.output[0].name(), "Y");
    assert_eq!(g.initializer.len(), 2);
    let b = &g.initializer[1];
    assert_eq!(b.name(), "B");
    assert_eq!(b.data_type(), DataType::Float as i32);
    assert_eq!(b.dims, vec![4]);
    let raw: Vec<f32> = b
        .raw_data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(raw, vec![0.1, 0.2, 0.3, 0.4]);
    assert_eq!(g.node.len(), 2);
    let conv = &g.node[0];
    assert_eq!(conv.name(), "conv0");
    assert_eq!(conv.op_type(), "Conv");
    assert_eq!(conv.domain(), "");
    assert_eq!(conv.input, ["X", "W", "B"]);
    assert_eq!(conv.output, ["C"]);
    let ks = conv
        .attribute
        .iter()
        .find(|a| a.name() == "kernel_shape")
        .unwrap();
    assert_eq!(ks.r#type(), AttributeType::Ints);
    assert_eq!(ks.ints, vec![3, 3]);
    assert_eq!(g.node[1].op_type(), "Relu");
    assert_eq!(g.node[1].input, ["C"]);
}

#[test]
fn initializer_that_is_also_an_input() {
    let text = r#"<
  opset_import: ["" : 17]
>
g (float[2] X, float[2] W = {1.0, 2.0}) => (float[2] Y)
{
  Y = Add (X, W)
}
"#;
    let out = fixed_point(text);
    assert!(
        out.contains(
            "g (float[2] X, float[2] W) => (float[2] Y)\n<\n  float[2] W = {1.0, 2.0}\n>\n"
        ),
        "{out}"
    );
    let m = parse_model(text).unwrap();
    let w = m.graph.lookup("W").unwrap();
    assert!(m.graph.is_graph_input(w));
    assert!(
        m.graph.constant(w).is_none(),
        "overridable initializer is not a constant"
    );
    let p = to_proto(&m);
    assert_eq!(p.graph.as_ref().unwrap().input.len(), 2);
    assert_eq!(p.graph.as_ref().unwrap().initializer.len(), 1);
}

#[test]
fn nodes_print_in_topological_order() {
    let text = r#"<
  opset_import: ["" : 17]
>
g (float[2] X) => (float[2] Y)
{
  Y = Relu (A)
  A = Neg (X)
}
"#;
    let out = fixed_point(text);
    assert!(out.contains("{\n  A = Neg (X)\n  Y = Relu (A)\n}"), "{out}");
}

#[test]
fn imported_proto_with_typed_fields_prints_and_reparses() {
    use onnxq::onnx::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
        ValueInfoProto,
    };
    let ty = onnxq::ir::types::tensor_type(DataType::Float as i32, &[3]);
    let vi = |n: &str| ValueInfoProto {
        name: Some(n.into()),
        r#type: Some(ty.clone()),
        ..Default::default()
    };
    let gp = GraphProto {
        name: Some("g".into()),
        input: vec![vi("X")],
        output: vec![vi("Y")],
        initializer: vec![TensorProto {
            name: Some("c".into()),
            data_type: Some(DataType::Float as i32),
            dims: vec![3],
            float_data: vec![0.25, -1.0, 3.0e-7],
            ..Default::default()
        }],
        node: vec![NodeProto {
            input: vec!["X".into(), "c".into()],
            output: vec!["Y".into()],
            op_type: Some("Add".into()),
            name: Some("add/0".into()),
            attribute: vec![AttributeProto {
                name: Some("old_style".into()),
                i: Some(4),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mp = ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(gp),
        ..Default::default()
    };
    let m = onnxq::onnx::import::from_proto(mp, None, "mem").unwrap();
    let out = print_model(&m);
    assert!(out.contains("float[3] c = {0.25, -1.0, 3e-7}"), "{out}");
    assert!(
        out.contains("[\"add/0\"] Y = Add <old_style: int = 4> (X, c)"),
        "{out}"
    );
    assert_eq!(fixed_point(&out), out);
}

// ------------------------------------------------------------------ errors

const HEAD: &str = "<\n  opset_import: [\"\" : 17]\n>\n";

#[test]
fn error_undefined_value() {
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  Y = Add (X, Z)\n}}\n"
    ));
    assert_eq!(
        e,
        "6:15: undefined value 'Z': no node, input or initializer defines it (read by Add)"
    );
}

#[test]
fn error_undefined_output() {
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  Z = Neg (X)\n}}\n"
    ));
    assert_eq!(
        e,
        "4:29: undefined value 'Y': graph output is not produced by any node, input or initializer"
    );
}

#[test]
fn error_duplicate_name() {
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  Y = Neg (X)\n  Y = Relu (X)\n}}\n"
    ));
    assert_eq!(
        e,
        "7:3: name 'Y' is defined twice (first at 6:3); every value must have one producer"
    );
    let e = parse_err(&format!("{HEAD}g (float[2] X) => (float[2] X)\n<float[2] X = {{1.0, 2.0}}, float[1] X = {{1.0}}>\n{{\n}}\n"));
    assert!(
        e.starts_with("5:36: name 'X' is defined twice (first at 5:11)"),
        "{e}"
    );
}

#[test]
fn error_bad_syntax() {
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  Y = Relu X\n}}\n"
    ));
    assert_eq!(
        e,
        "6:12: expected '(' to open the input list of Relu, found 'X'"
    );
    let e = parse_err(&format!("{HEAD}g (float[2] X) -> (float[2] Y)\n{{\n}}\n"));
    assert_eq!(
        e,
        "4:16: expected '=>' between inputs and outputs, found '-'"
    );
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  Y = Relu (X)\n"
    ));
    assert_eq!(
        e,
        "7:1: expected a node or '}' closing graph 'g', found end of input"
    );
    let e = parse_err("<\n  ir_versoin: 8\n>\ng () => () {}\n");
    assert!(
        e.starts_with("2:3: unknown model field 'ir_versoin'; expected one of ir_version,"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  Y = Pad <pads = []> (X)\n}}\n"
    ));
    assert_eq!(
        e,
        "6:19: empty list for attribute 'pads' needs a type, e.g. 'pads: ints = []'"
    );
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  Y = Pad <mode: int = \"edge\"> (X)\n}}\n"
    ));
    assert_eq!(
        e,
        "6:24: attribute 'mode' is declared int but its value is a string"
    );
}

#[test]
fn error_bad_tensors() {
    let e = parse_err(&format!("{HEAD}g (float[2] X) => (float[2] Y)\n<float[3] c = {{1.0, 2.0}}>\n{{\n  Y = Neg (X)\n}}\n"));
    assert_eq!(
        e,
        "5:11: tensor 'c' has shape [3] (3 elements) but 2 values are given"
    );
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n<uint8[1] c = {{256}}>\n{{\n  Y = Neg (X)\n}}\n"
    ));
    assert_eq!(e, "5:16: value 256 is out of range for uint8 tensor 'c'");
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n<float[N] c = {{1.0}}>\n{{\n  Y = Neg (X)\n}}\n"
    ));
    assert_eq!(e, "5:11: tensor 'c' needs numeric dimensions, found '[N]'");
    let e = parse_err(&format!("{HEAD}g (float[2] X) => (float[2] Y)\n<float[3] c = {{... 4 elements, hash 12345678}}>\n{{\n  Y = Neg (X)\n}}\n"));
    assert_eq!(
        e,
        "5:11: tensor 'c' has shape [3] (3 elements) but its elided data says 4"
    );
    let e = parse_err(&format!(
        "{HEAD}g (float[2] X) => (float[2] Y)\n<int32[1] c = {{1.5}}>\n{{\n  Y = Neg (X)\n}}\n"
    ));
    assert_eq!(
        e,
        "5:16: expected an integer for int32 tensor 'c', found '1.5'"
    );
}

#[test]
fn error_cycle() {
    let e = parse_err(&format!("{HEAD}g (float[2] X) => (float[2] Y)\n{{\n  A = Add (X, B)\n  B = Neg (A)\n  Y = Relu (B)\n}}\n"));
    assert_eq!(
        e,
        "6:3: the graph has a cycle; nodes on it or after it: Add, Neg, Relu"
    );
}

// ----------------------------------------------------------- nesting limit

/// A model whose main graph holds `n` nested subgraphs: each If's then-branch
/// holds the next If, one per line.
fn nested_subgraphs(n: usize) -> String {
    let mut s = format!("{HEAD}g (bool c) => ()\n{{\n");
    for _ in 0..n {
        s.push_str("  = If (c) <then_branch: graph = s () => () {\n");
    }
    for _ in 0..n {
        s.push_str("  }>\n");
    }
    s.push_str("}\n");
    s
}

/// A model whose input type is `n` nested `seq(` around `float[2]`.
fn nested_types(n: usize) -> String {
    let ty = format!("{}float[2]{}", "seq(".repeat(n), ")".repeat(n));
    format!("{HEAD}g ({ty} X) => ({ty} X)\n{{\n}}\n")
}

#[test]
fn nesting_a_million_deep_is_an_error_not_a_stack_overflow() {
    // Without a limit either text overflows any stack long before its end.
    let e = parse_err(&nested_types(1_000_000));
    // Level 64 is the 63rd `seq(` (the main graph is level 1); the 64th
    // starts at column 4 + 4 * 63.
    assert_eq!(
        e,
        "4:256: nesting deeper than 64 levels of graphs and types"
    );
    let e = parse_err(&nested_subgraphs(1_000_000));
    // The 64th subgraph's name, on the 64th If's line.
    assert_eq!(
        e,
        "69:34: nesting deeper than 64 levels of graphs and types"
    );
}

#[test]
fn nesting_up_to_the_limit_parses_and_prints_back() {
    let deepest = fixed_point(&nested_subgraphs(63));
    assert_eq!(deepest.matches("If (c)").count(), 63);
    fixed_point(&nested_types(62));
    assert!(parse_model(&nested_types(63)).is_err());
}

// -------------------------------------------------------------------- diff

#[test]
fn diff_full_context() {
    assert_eq!(diff("a\nb\nc\n", "a\nb\nc\n"), " a\n b\n c\n");
    assert_eq!(
        diff("a\nb\nc\nd\n", "a\nx\nc\nd\ny\n"),
        " a\n-b\n+x\n c\n d\n+y\n"
    );
    assert_eq!(diff("", "n\n"), "+n\n");
    assert_eq!(diff("p\nq\n", ""), "-p\n-q\n");
    assert_eq!(diff("1\n2\n3\n4\n", "1\n3\n2\n4\n"), " 1\n-2\n 3\n+2\n 4\n");
}
