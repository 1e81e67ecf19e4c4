//! `tract`: tract 0.23.9 on x86-64 with AVX-512 VNNI.
//!
//! tract never fuses QDQ into integer kernels: `DequantizeLinearF32::
//! declutter` (`core/src/ops/quant.rs`) only folds DQ → elementwise → Q
//! chains into lookup tables, weight DequantizeLinear is constant-folded
//! and the op runs in float, so every Q/DQ pair costs time (measured: QDQ
//! CNN 0.74× float). Its integer kernels are reached only through QOperator
//! `QLinearConv` (im2col + i8×i8→i32, `core/src/ops/cnn/conv/conv.rs::
//! wire_as_quant_im2col`) and `QLinearMatMul` (`EinSum` with i32
//! accumulation), with **per-tensor** weight scales: per-channel
//! requantization is not fused into the GEMM (`QScale` is scalar-only,
//! `linalg/src/frame/mmm/fuse.rs`) and measured slower than float (0.76×
//! CNN, 0.34× MLP). Measured: QOperator per-tensor CNN 1.7×, MLP 2.2×
//! faster than float.
//!
//! Activations should be s8 and symmetric: tract shifts u8 to i8 (zp−128),
//! and any shifted zero point ≠ 0 makes it recompute the weight column
//! sums Σw on every run whenever that constant expression exceeds its
//! 4 MiB fold budget (`core/src/optim/prop_const.rs`, `CONST_FOLD_MEM_BUDGET`
//! in `core/src/optim/mod.rs`): 2.6× slower than float on a 2048² layer,
//! where s8 symmetric activations run 2.2× faster.
//!
//! On real mobile convolution nets tract's int8 convolutions rarely pay
//! (depthwise QLinearConv costs 10–100× more per MAC than pointwise), so
//! which ops run int8 is decided by measuring them; the rest stay float
//! with int8 weights stored behind a DequantizeLinear, which tract folds at
//! load while the weight has at most 2²⁰ elements (the same 4 MiB budget;
//! larger ones keep float weights).

use super::{Format, Kernel, Role, Runtime, Spec, Unloadable};
use crate::quant::QType;

pub static SPEC: Spec = Spec {
    name: "tract",
    summary: "tract (x86-64, VNNI): QOperator QLinearConv/QLinearMatMul, per-tensor weights, s8 symmetric activations",
    format: Format::QOperator,
    activations: QType::S8,
    symmetric_activations: true,
    weights: QType::S8,
    per_channel: false,
    kernels: KERNELS,
    passthrough: &[],
    unloadable: UNLOADABLE,
    // tract folds a constant expression only while its result fits
    // CONST_FOLD_MEM_BUDGET (4 MiB, 2^20 f32): larger DQ weights would be
    // dequantized on every run (0.52× float on a 2048² layer).
    folds_weight_dq: Some(1 << 20),
    runtime: Runtime::Tract,
};

static KERNELS: &[Kernel] = &[
    Kernel {
        op: "Conv",
        becomes: "QLinearConv",
        role: Role::Compute,
        data_inputs: Some(&[0]),
        note: "per-tensor weight scale; int32 bias",
    },
    Kernel {
        op: "MatMul",
        becomes: "QLinearMatMul",
        role: Role::Compute,
        data_inputs: None,
        note: "per-tensor weight scale",
    },
];

/// What tract 0.23.9 refuses at load (`onnx/src/tensor.rs` knows Bool,
/// U8–U64, I8–I64, F16, F32, F64 and String; `onnx/src/ops/quant.rs`
/// rejects blocked and 16-bit Q/DQ; com.microsoft quantized ops are
/// unimplemented, sonos/tract#1570).
static UNLOADABLE: &[Unloadable] = &[
    Unloadable {
        what: "com.microsoft:QLinearAdd",
        note: "no com.microsoft quantized ops (sonos/tract#1570)",
    },
    Unloadable {
        what: "com.microsoft:QLinearMul",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QLinearConcat",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QLinearGlobalAveragePool",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QLinearAveragePool",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QLinearSigmoid",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QLinearLeakyRelu",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QLinearSoftmax",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QGemm",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:QAttention",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:DynamicQuantizeMatMul",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:MatMulIntegerToFloat",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "com.microsoft:DynamicQuantizeLSTM",
        note: "no com.microsoft quantized ops",
    },
    Unloadable {
        what: "int4",
        note: "INT4/UINT4 tensors are not a tract datum type",
    },
    Unloadable {
        what: "uint4",
        note: "INT4/UINT4 tensors are not a tract datum type",
    },
    Unloadable {
        what: "int16",
        note: "16-bit QuantizeLinear/DequantizeLinear are rejected",
    },
    Unloadable {
        what: "uint16",
        note: "16-bit QuantizeLinear/DequantizeLinear are rejected",
    },
    Unloadable {
        what: "bfloat16",
        note: "not a tract datum type",
    },
    Unloadable {
        what: "block_size",
        note: "blocked QuantizeLinear/DequantizeLinear: \"blocked quantization is not supported\"",
    },
];
