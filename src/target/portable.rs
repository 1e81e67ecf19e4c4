//! `portable`: fidelity-first QDQ that every runtime loads (onnxruntime,
//! TensorRT, tract, OpenVINO).
//!
//! The placement onnxq used before targets existed: QDQ around Conv,
//! MatMul and Gemm, elementwise ops and pools quantized only where their
//! result flows into a quantized compute op, and a compute op's output left
//! float when no quantized node reads it (requantizing it would only add
//! error). u8 asymmetric activations, s8 symmetric per-channel weights.
//! Not tuned for any runtime's speed: it is the accuracy reference and the
//! format for runtimes onnxq has no target for.

use super::{Format, Kernel, Role, Runtime, Spec};
use crate::quant::QType;

pub static SPEC: Spec = Spec {
    name: "portable",
    summary: "fidelity-first QDQ for any runtime (u8 activations, s8 per-channel weights)",
    format: Format::Qdq,
    activations: QType::U8,
    symmetric_activations: false,
    weights: QType::S8,
    per_channel: true,
    kernels: KERNELS,
    passthrough: &[],
    unloadable: &[],
    folds_weight_dq: None,
    runtime: Runtime::Tract,
};

static KERNELS: &[Kernel] = &[
    Kernel {
        op: "Conv",
        becomes: "QDQ Conv",
        role: Role::Compute,
        data_inputs: Some(&[0]),
        note: "",
    },
    Kernel {
        op: "ConvTranspose",
        becomes: "QDQ ConvTranspose",
        role: Role::Compute,
        data_inputs: Some(&[0]),
        note: "",
    },
    Kernel {
        op: "MatMul",
        becomes: "QDQ MatMul",
        role: Role::Compute,
        data_inputs: None,
        note: "",
    },
    Kernel {
        op: "Gemm",
        becomes: "QDQ Gemm",
        role: Role::Compute,
        data_inputs: Some(&[0]),
        note: "",
    },
];
