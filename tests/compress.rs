//! Smaller files: non-uniform weights (`--mode codebook`), magnitude
//! pruning (`--prune`), structured pruning (`--prune-channels`) and
//! power-of-two scales (`--scales pow2`) on the
//! testdata classifier: what the file holds, that validation runs it, and
//! what it buys in size.

use std::collections::BTreeSet;
mod common;
use common::{assert_refused, onnxq, quantize, scratch, testdata, worst_sqnr};

use onnxq::onnx::import;
use onnxq::onnx::tensor_proto::DataType;

/// `--mode codebook --bits 4` for the fidelity-first target.
const CODEBOOK4: &[&str] = &["--target", "portable", "--mode", "codebook", "--bits", "4"];

fn bytes(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in the report"))
}

#[test]
fn codebook_weights_are_packed_smaller_and_validated() {
    let d = scratch("codebook");
    let r8 = quantize(&d.join("int8.onnx"), &["--target", "portable"]);
    let r4 = quantize(&d.join("cb4.onnx"), CODEBOOK4);
    let m = import::read_model(&d.join("cb4.onnx")).expect("reads");
    let g = &m.graph;
    assert_eq!(m.opset(""), Some(21), "uint4 codes need opset 21");
    // Every weight DequantizeLinear big enough to pack reads a Gather of a
    // table of at most 16 int8 values by uint4 codes.
    let mut packed = 0;
    for n in g.ops() {
        let node = g.node(n);
        if !node.is("Gather") {
            continue;
        }
        let table = g.constant(node.input(0).unwrap()).expect("a table");
        assert_eq!(table.dtype(), DataType::Int8 as i32);
        assert!(table.len() <= 16, "{} levels", table.len());
        let cast = g.producer(node.input(1).unwrap());
        let codes = g
            .constant(g.node(cast).input(0).unwrap())
            .expect("constant codes");
        assert_eq!(codes.dtype(), DataType::Uint4 as i32);
        packed += 1;
    }
    assert!(packed >= 5, "{packed} weights packed");
    // Smaller than int8 on disk and compressed, validated (tract through
    // the lowering, which the report says), and still close to float.
    assert!(bytes(&r4, "quantized_bytes") < bytes(&r8, "quantized_bytes"));
    assert!(
        bytes(&r4, "quantized_compressed_bytes") < bytes(&r8, "quantized_compressed_bytes"),
        "compressed: codebook {} int8 {}",
        r4["quantized_compressed_bytes"],
        r8["quantized_compressed_bytes"]
    );
    assert!(
        bytes(&r8, "quantized_compressed_bytes") < bytes(&r8, "float_compressed_bytes") / 2,
        "{r8}"
    );
    let remarks = r4["remarks"].to_string();
    assert!(
        remarks.contains("codebook weights expanded once"),
        "{remarks}"
    );
    assert!(remarks.contains("same speed"), "{remarks}");
    let (s8, s4) = (worst_sqnr(&r8), worst_sqnr(&r4));
    assert!(
        s4 > 15.0 && s4 < s8 + 1.0,
        "codebook {s4:.1} dB, int8 {s8:.1} dB"
    );
}

/// Exact k-means levels beat the evenly spaced levels of symmetric int4
/// with the same per-channel scales, and logarithmic levels stay usable.
#[test]
fn kmeans_levels_beat_uniform_int4() {
    let d = scratch("codebook-kinds");
    let run = |kind: &str| {
        let out = d.join(format!("{kind}.onnx"));
        let r = quantize(
            &out,
            &[
                "--target",
                "portable",
                "--mode",
                "codebook",
                "--bits",
                "4",
                "--codebook",
                kind,
            ],
        );
        (worst_sqnr(&r), out)
    };
    let (k, _) = run("kmeans");
    let (u, uniform) = run("uniform");
    let (l, _) = run("log");
    assert!(k > u, "kmeans {k:.1} dB, uniform int4 {u:.1} dB");
    assert!(l > 10.0, "log {l:.1} dB");
    // Symmetric int4: at most 15 levels per table.
    let m = import::read_model(&uniform).expect("reads");
    for n in m.graph.ops() {
        let node = m.graph.node(n);
        if node.is("Gather") {
            let t = m.graph.constant(node.input(0).unwrap()).unwrap();
            assert!(t.len() <= 15);
        }
    }
}

/// With codebook weights the automatic fallback gives the most sensitive
/// nodes back their full 8-bit weight codes (they stay quantized) until
/// the target is met.
#[test]
fn codebook_fallback_restores_eight_bit_weights() {
    let d = scratch("codebook-fallback");
    let r4 = quantize(&d.join("cb4.onnx"), CODEBOOK4);
    let r8 = quantize(&d.join("int8.onnx"), &["--target", "portable"]);
    let (s4, s8) = (worst_sqnr(&r4), worst_sqnr(&r8));
    assert!(s8 > s4 + 10.0, "int8 {s8:.1} dB, codebook {s4:.1} dB");
    let goal = format!("{:.2}", (s4 + s8) / 2.0);
    let r = quantize(
        &d.join("mixed.onnx"),
        &[CODEBOOK4, &["--target-sqnr", &goal]].concat(),
    );
    let fb = &r["fallback"];
    assert_eq!(fb["reached"], serde_json::json!(true), "{fb}");
    assert_eq!(fb["eight_bit_weights"], serde_json::json!(true), "{fb}");
    let exempt = fb["excluded"].as_array().expect("a list").len();
    assert!(exempt > 0, "{fb}");
    assert!(r["pipeline"].as_str().unwrap().contains("codebook-exempt="));
    // Every node stays quantized; the file sits between the two sizes.
    assert_eq!(
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["quantized"] == true)
            .count(),
        r4["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["quantized"] == true)
            .count()
    );
    let size = bytes(&r, "quantized_bytes");
    assert!(size > bytes(&r4, "quantized_bytes") && size < bytes(&r8, "quantized_bytes"));
}

/// Every scale of a `--scales pow2` file — activations, weights (per
/// channel) and biases — is a power of two, and activations are symmetric.
#[test]
fn pow2_scales_are_powers_of_two() {
    let d = scratch("pow2");
    let r = quantize(
        &d.join("p2.onnx"),
        &["--target", "portable", "--scales", "pow2"],
    );
    let m = import::read_model(&d.join("p2.onnx")).expect("reads");
    let g = &m.graph;
    let mut scales = 0usize;
    let mut zps: BTreeSet<i64> = BTreeSet::new();
    for n in g.ops() {
        let node = g.node(n);
        if !(node.is("QuantizeLinear") || node.is("DequantizeLinear")) {
            continue;
        }
        let s = g.constant(node.input(1).unwrap()).expect("constant scale");
        for &x in s.to_f32().unwrap().iter() {
            assert!(
                x > 0.0 && x.to_bits() & 0x007f_ffff == 0,
                "{}: scale {x} is not a power of two",
                g.label(n)
            );
            scales += 1;
        }
        if node.is("QuantizeLinear") {
            let z = g.constant(node.input(2).unwrap()).expect("a zp");
            zps.extend(z.to_i64().unwrap());
        }
    }
    assert!(scales > 50, "{scales} scales checked");
    // u8 activations, symmetric: centred on 128.
    assert_eq!(zps, BTreeSet::from([128]));
    assert!(worst_sqnr(&r) > 15.0, "{}", worst_sqnr(&r));
    assert!(r["pipeline"].as_str().unwrap().contains("pow2=true"));
}

/// `--prune DB` zeroes weights (more of them at fewer dB), the report
/// counts them, and the compressed file shrinks; `--prune auto` picks the
/// most pruning that still meets the target.
#[test]
fn pruning_zeroes_weights_and_meets_the_target() {
    let d = scratch("prune");
    let r0 = quantize(&d.join("int8.onnx"), &["--target", "portable"]);
    let r20 = quantize(
        &d.join("p20.onnx"),
        &["--target", "portable", "--prune", "20"],
    );
    let r12 = quantize(
        &d.join("p12.onnx"),
        &["--target", "portable", "--prune", "12"],
    );
    let sparsity = |r: &serde_json::Value| {
        let p = &r["pruning"];
        p["zeros"].as_f64().expect("zeros") / p["total"].as_f64().expect("total")
    };
    let (s20, s12) = (sparsity(&r20), sparsity(&r12));
    assert!(s20 > 0.05 && s12 > s20 && s12 < 1.0, "{s20} {s12}");
    assert!(r0.get("pruning").is_none_or(|p| p.is_null()));
    // The zeros are in the file: the int8 weights hold at least that share
    // of zero codes.
    let m = import::read_model(&d.join("p12.onnx")).expect("reads");
    let (mut zeros, mut total) = (0usize, 0usize);
    for n in m.graph.ops() {
        let node = m.graph.node(n);
        if !node.is("DequantizeLinear") {
            continue;
        }
        let Some(t) = m.graph.constant(node.input(0).unwrap()) else {
            continue;
        };
        if t.dtype() == DataType::Int8 as i32 {
            let raw = t.raw_bytes().unwrap();
            zeros += raw.iter().filter(|&&b| b == 0).count();
            total += raw.len();
        }
    }
    assert!(
        zeros as f64 >= s12 * total as f64 * 0.9,
        "{zeros} of {total}"
    );
    assert!(
        bytes(&r12, "quantized_compressed_bytes") < bytes(&r0, "quantized_compressed_bytes"),
        "pruned {} unpruned {}",
        r12["quantized_compressed_bytes"],
        r0["quantized_compressed_bytes"]
    );
    // auto: a target well under the unpruned file's leaves room to prune
    // (this classifier's saturated softmax scores over 100 dB unpruned).
    let goal = format!("{:.2}", (worst_sqnr(&r0) - 6.0).min(40.0));
    let ra = quantize(
        &d.join("auto.onnx"),
        &[
            "--target",
            "portable",
            "--prune",
            "auto",
            "--target-sqnr",
            &goal,
        ],
    );
    let p = &ra["pruning"];
    assert_eq!(p["searched"], serde_json::json!(true), "{p}");
    assert!(sparsity(&ra) > 0.0, "{p}");
    assert!(worst_sqnr(&ra) >= goal.parse::<f64>().unwrap());
    assert!(ra["pipeline"].as_str().unwrap().contains("prune-db="));
}

#[test]
fn channel_pruning_narrows_the_network_and_replays() {
    let d = scratch("prune-channels");
    let r0 = quantize(&d.join("int8.onnx"), &["--target", "portable"]);
    let out = d.join("pc.onnx");
    let r = quantize(&out, &["--target", "portable", "--prune-channels", "0.2"]);
    let c = &r["channel_pruning"];
    let (before, after) = (
        c["macs_before"].as_u64().expect("macs_before"),
        c["macs_after"].as_u64().expect("macs_after"),
    );
    assert!(after < before, "{c}");
    assert!(c["channels_removed"].as_u64().unwrap() > 0, "{c}");
    // Validated against the float model as given (this classifier's
    // saturated softmax keeps both far above 40 dB).
    let (s0, s) = (worst_sqnr(&r0), worst_sqnr(&r));
    assert!(s > 40.0, "pruned {s} dB, unpruned {s0} dB");
    // The printed pipeline replays to the same bytes.
    let pipeline = r["pipeline"].as_str().expect("pipeline");
    assert!(pipeline.contains("prune-channels{"), "{pipeline}");
    let replay = d.join("replay.onnx");
    let o = onnxq(&[
        "opt",
        testdata("ppocr_cls/model.onnx").to_str().unwrap(),
        "--calib",
        testdata("ppocr_cls/calib").to_str().unwrap(),
        "-p",
        pipeline,
        "-o",
        replay.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(&replay).unwrap(),
        std::fs::read(&out).unwrap()
    );
    // auto: the most pruning whose quantized model meets the target.
    let goal = format!("{:.2}", (s - 6.0).min(40.0));
    let ra = quantize(
        &d.join("auto.onnx"),
        &[
            "--target",
            "portable",
            "--prune-channels",
            "auto",
            "--target-sqnr",
            &goal,
        ],
    );
    let c = &ra["channel_pruning"];
    assert_eq!(c["searched"], serde_json::json!(true), "{c}");
    assert!(!c["trials"].as_array().unwrap().is_empty(), "{c}");
    assert!(worst_sqnr(&ra) >= goal.parse::<f64>().unwrap());
}

#[test]
fn codebook_and_scale_options_are_checked() {
    let cases: &[(&[&str], &str)] = &[
        (&["--codebook", "log"], "--mode codebook"),
        (&["--codebook-tables", "channel"], "--mode codebook"),
        (&["--prune", "auto"], "--target-sqnr"),
        (&["--prune", "0"], "positive number of dB"),
        (&["--bits", "4"], "--mode weights"),
        (&["--mode", "weights", "--bits", "3"], "expected 8 or 4"),
        (&["--mode", "dynamic", "--scales", "pow2"], "--scales pow2"),
        (&["--prune-channels", "auto"], "--target-sqnr"),
        (&["--prune-channels", "1.5"], "at most 0.9"),
        (
            &["--mode", "dynamic", "--prune-channels", "0.2"],
            "static quantization",
        ),
    ];
    assert_refused("codebook-errors", cases);
}
