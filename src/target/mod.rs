//! Targets as data: what a runtime executes as integer kernels, under which
//! conditions, and what it cannot load.
//!
//! A quantized model is only faster where the runtime it is deployed to
//! turns a quantized group into an integer kernel; everywhere else a
//! QuantizeLinear/DequantizeLinear pair is pure overhead. The two CPU
//! runtimes onnxq users deploy with want different files (see
//! `../shared/RUNTIMES.md` in the project's measurements and each target
//! file's evidence):
//!
//! * [`ort_cpu`]: onnxruntime's CPU provider fuses whole QDQ groups
//!   (DequantizeLinear on every input → op → QuantizeLinear) with u8
//!   activations and s8 weights into integer kernels;
//! * [`tract`]: tract runs QDQ in float and reaches its integer kernels only
//!   through QOperator `QLinearConv` / `QLinearMatMul` with per-tensor
//!   weights, fastest with s8 symmetric activations;
//! * [`portable`]: fidelity-first QDQ that loads everywhere (the placement
//!   onnxq used before targets existed).
//!
//! Placement, lowering, `onnxq lint` and the docs all read these tables, so
//! what a runtime fuses is written down once.

pub mod lint;
pub mod ort_cpu;
pub mod portable;
pub mod tract;

use crate::quant::QType;

/// A deployment target. The default is `ort-cpu`, the runtime most users
/// deploy ONNX models with.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    #[default]
    OrtCpu,
    Tract,
    Portable,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::OrtCpu, Target::Tract, Target::Portable];

    pub fn parse(s: &str) -> Option<Target> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn spec(self) -> &'static Spec {
        match self {
            Target::OrtCpu => &ort_cpu::SPEC,
            Target::Tract => &tract::SPEC,
            Target::Portable => &portable::SPEC,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How quantized groups are written in the file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// QuantizeLinear/DequantizeLinear around float ops; the runtime fuses.
    Qdq,
    /// Quantized ops (`QLinearConv`, `QLinearMatMul`) with Q/DQ only at
    /// float islands.
    QOperator,
}

/// How an op with an integer kernel joins the quantized region.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Where the multiply-accumulates are (Conv, MatMul, Gemm): chosen one
    /// by one, by measured speed or cost.
    Compute,
    /// Elementwise, pooling and concatenation kernels: quantized when
    /// every activation input already arrives quantized, so the group
    /// saves DequantizeLinear nodes instead of adding QuantizeLinear ones.
    Joins,
    /// Fused into the quantized producer before it (Relu and Clip whose
    /// range the output QuantizeLinear covers).
    FusedActivation,
}

/// An op the target runs as an integer kernel when its group is whole.
#[derive(Copy, Clone, Debug)]
pub struct Kernel {
    /// ONNX op type (default domain).
    pub op: &'static str,
    /// What the runtime turns the group into.
    pub becomes: &'static str,
    pub role: Role,
    /// Which operands carry activations (the others are weights, bias or
    /// parameters). `None`: every operand.
    pub data_inputs: Option<&'static [usize]>,
    /// Conditions beyond the target-wide ones, and the evidence.
    pub note: &'static str,
}

/// Something the target cannot load.
#[derive(Copy, Clone, Debug)]
pub struct Unloadable {
    /// `domain:op` or an element type (`int16`), as `lint` matches it.
    pub what: &'static str,
    pub note: &'static str,
}

/// A target's description.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub summary: &'static str,
    pub format: Format,
    /// Activation type and symmetry the integer kernels want.
    pub activations: QType,
    pub symmetric_activations: bool,
    /// Weight type (always symmetric, zero point 0 or 128).
    pub weights: QType,
    /// Whether per-channel weight scales keep the kernel fast.
    pub per_channel: bool,
    pub kernels: &'static [Kernel],
    /// Ops beyond [`DATA_MOVEMENT`] that run directly on quantized data: a
    /// tensor stays quantized through them (its scale and zero point pass
    /// through). Read through [`Spec::passes_through`].
    pub passthrough: &'static [&'static str],
    pub unloadable: &'static [Unloadable],
    /// The largest constant (in elements) whose DequantizeLinear the
    /// runtime folds into a float weight at load: a compute op left float
    /// can still store its weight as int8 there (a 4× smaller file at
    /// float speed). `None`: the runtime dequantizes on every run.
    pub folds_weight_dq: Option<usize>,
    /// Whether speed is judged by measuring: `true` when the runtime is at
    /// hand in-process (tract always; onnxruntime when its library loads).
    pub runtime: Runtime,
}

/// The runtime that measures a target's speed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    Ort,
    Tract,
}

impl Spec {
    pub fn kernel(&self, op: &str) -> Option<&'static Kernel> {
        self.kernels.iter().find(|k| k.op == op)
    }

    pub fn passes_through(&self, op: &str) -> bool {
        DATA_MOVEMENT.contains(&op) || self.passthrough.contains(&op)
    }
}

/// Data movement: no arithmetic, so a quantized tensor keeps its scale
/// through it in every runtime (onnxruntime drops the Q/DQ around them,
/// `qdq_selector_action_transformer.cc`; tract's ops are type-generic).
pub const DATA_MOVEMENT: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Gather",
    "Split",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
    "Tile",
];
