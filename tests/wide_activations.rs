//! 16-bit activations (`--activations u16|s16`) and mixed 8/16
//! (`--target-sqnr … --promote 16`) on the testdata classifier: what the
//! file holds, that validation runs it (tract through the lowering), and
//! that 16 bits buy the accuracy they are asked for.

mod common;
use common::{assert_refused, quantize, scratch, worst_sqnr};
use std::path::Path;

use onnxq::onnx::import;
use onnxq::onnx::tensor_proto::DataType;

/// The element types of the activation zero points (the QuantizeLinear
/// nodes' third inputs), with how many of each.
fn activation_zp_types(p: &Path) -> std::collections::BTreeMap<i32, usize> {
    let m = import::read_model(p).expect("reads");
    let g = &m.graph;
    let mut types = std::collections::BTreeMap::new();
    for n in g.ops() {
        let node = g.node(n);
        if node.is("QuantizeLinear") {
            let z = node.input(2).and_then(|z| g.constant(z)).expect("a zp");
            *types.entry(z.dtype()).or_insert(0) += 1;
        }
    }
    types
}

#[test]
fn sixteen_bit_activations_are_written_validated_and_more_accurate() {
    let d = scratch("wide-u16");
    let r8 = quantize(&d.join("u8.onnx"), &["--target", "portable"]);
    let r16 = quantize(
        &d.join("u16.onnx"),
        &["--target", "portable", "--activations", "u16"],
    );
    let types = activation_zp_types(&d.join("u16.onnx"));
    assert_eq!(
        types.keys().copied().collect::<Vec<_>>(),
        vec![DataType::Uint16 as i32],
        "every activation in 16 bits: {types:?}"
    );
    let m = import::read_model(&d.join("u16.onnx")).expect("reads");
    assert_eq!(m.opset(""), Some(21));
    // tract validated it through the lowering, and the report says so.
    let remarks = r16["remarks"].to_string();
    assert!(
        remarks
            .contains("16-bit activation QuantizeLinear/DequantizeLinear run as their float ops"),
        "{remarks}"
    );
    // 256 times finer activation steps: closer to the float model (the
    // int8 weights' rounding remains; measured +9.7 dB here).
    let (s8, s16) = (worst_sqnr(&r8), worst_sqnr(&r16));
    assert!(s16 > s8 + 3.0, "u16 {s16:.1} dB against u8 {s8:.1} dB");
    // s16 is symmetric: zero points 0.
    let rs = quantize(
        &d.join("s16.onnx"),
        &["--target", "portable", "--activations", "s16"],
    );
    assert!(worst_sqnr(&rs) > s8 + 3.0);
    assert_eq!(
        activation_zp_types(&d.join("s16.onnx"))
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![DataType::Int16 as i32]
    );
}

/// The fallback with `--promote 16` meets a target the 8-bit file misses
/// by giving the most sensitive nodes 16-bit activations: some tensors
/// end up 16-bit, the rest stay 8-bit, no node is kept in float.
#[test]
fn promote_16_meets_the_target_with_mixed_activations() {
    let d = scratch("wide-promote");
    let r8 = quantize(&d.join("u8.onnx"), &["--target", "portable"]);
    let goal = worst_sqnr(&r8) + 6.0;
    let goal_s = format!("{goal:.2}");
    let r = quantize(
        &d.join("mixed.onnx"),
        &[
            "--target",
            "portable",
            "--target-sqnr",
            &goal_s,
            "--promote",
            "16",
        ],
    );
    let fb = &r["fallback"];
    assert_eq!(fb["promoted"], serde_json::json!(true), "{fb}");
    assert_eq!(fb["reached"], serde_json::json!(true), "{fb}");
    assert!(worst_sqnr(&r) >= goal);
    let types = activation_zp_types(&d.join("mixed.onnx"));
    let wide = types.get(&(DataType::Uint16 as i32)).copied().unwrap_or(0);
    let narrow = types.get(&(DataType::Uint8 as i32)).copied().unwrap_or(0);
    assert!(wide > 0 && narrow > 0, "mixed 8/16: {types:?}");
    assert!(r["pipeline"].as_str().unwrap().contains("promote="));
}

#[test]
fn wide_activation_options_are_checked() {
    let cases: &[(&[&str], &str)] = &[
        (&["--promote", "8", "--target-sqnr", "30"], "only width"),
        (&["--promote", "16"], "--target-sqnr"),
        (&["--activations", "u16", "--target", "tract"], "tract"),
        (&["--weights", "s16"], "--weights"),
    ];
    assert_refused("wide-errors", cases);
}
