//! Passes: one file per pass, a static registry, MLIR-style pipeline strings
//! and a pass manager.
//!
//! A pipeline is a comma-separated list of pass names, each with optional
//! options in braces:
//!
//! ```text
//! fuse-batchnorm,fold-constants{max-bytes=1048576},dce
//! insert-qdq{per-channel=true,exclude=["/head/*",Softmax]}
//! ```
//!
//! Option values are numbers, `true`/`false`, strings (bare or
//! double-quoted) or lists in brackets. Each pass declares its options as a
//! serde struct (`deny_unknown_fields`, kebab-case), so a typo is an error
//! that lists the valid names; printing a parsed pipeline gives its
//! canonical form with every default filled in.
//!
//! Passes take the whole [`Model`] rather than only its graph: several need
//! the model-level opset imports (to upgrade them, or to know which operator
//! semantics apply) or must run the model. They still touch the graph only
//! through the `ir` API.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

use crate::ir::{Model, Violation};

pub mod absorb_bias;
pub mod calibrate;
pub mod codebook_float;
pub mod context;
pub mod convert_float;
pub mod dce;
pub mod drop_fake_quant;
pub mod eliminate_identity;
pub mod equalize;
pub mod fix_inputs;
pub mod fold_calibration;
pub mod fold_constants;
pub mod fuse_affine;
pub mod fuse_batchnorm;
pub mod inline_if;
pub mod insert_qdq;
pub mod lower_qdq;
pub mod manager;
pub mod pack_codebook;
pub mod pipeline;
pub mod profile_hotspots;
pub mod prune_channels;
pub mod quantize_dynamic;
pub mod quantize_gather;
pub mod quantize_weights;
pub mod restore_interface;
pub mod round_weights;
pub mod select_coverage;
pub mod select_speed;
pub mod shape_inference;
pub mod smooth_quant;
pub mod upgrade_opset;

pub use context::PassContext;
pub use manager::{timing_table, PassManager, PassRun, PrintSel};
pub use pipeline::{parse_pipeline, Pipeline, PipelineItem};

/// Whether a pass changed the model.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

impl Changed {
    pub fn from_bool(b: bool) -> Self {
        if b {
            Changed::Yes
        } else {
            Changed::No
        }
    }
}

/// A transformation of a model.
pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError>;
    /// The pass's options with defaults filled in, for the canonical
    /// pipeline string. Passes without options return an empty object.
    fn options(&self) -> Json {
        Json::Object(Default::default())
    }
}

/// Errors a pass can report. Each names the pass and, where it applies, the
/// node or tensor.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass '{name}'; valid passes are: {valid}")]
    UnknownPass { name: String, valid: String },
    #[error("pipeline: {message} (at byte {at} of \"{pipeline}\")")]
    Syntax {
        pipeline: String,
        at: usize,
        message: String,
    },
    #[error("{pass}: bad options: {message}")]
    Options { pass: String, message: String },
    #[error("{pass}: precondition failed: {message}")]
    Precondition { pass: String, message: String },
    #[error("{pass}: node '{node}': {message}")]
    Node {
        pass: String,
        node: String,
        message: String,
    },
    #[error("{pass}: {message}")]
    Failed { pass: String, message: String },
    #[error("the model is invalid before any pass ran (fix the exporter's output; `python -m onnx.checker` often names the same problem):\n{rendered}")]
    InvalidInput {
        violations: Vec<Violation>,
        rendered: String,
    },
    #[error("{pass}: the IR is invalid after this pass:\n{rendered}")]
    Verify {
        pass: String,
        violations: Vec<Violation>,
        /// The findings under the text-IR lines of their nodes.
        rendered: String,
    },
}

/// A registry entry.
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Whether the pass may change the model's numbers (beyond float
    /// rounding): quantization does, dead-code elimination does not.
    pub changes_numerics: bool,
    pub make: fn(Json) -> Result<Box<dyn Pass>, PassError>,
    /// Non-default options, as written in a pipeline (empty for passes
    /// without options): documentation, and the round-trip test's input.
    pub example: &'static str,
}

/// Every pass, in the order `onnxq passes` lists them.
pub fn registry() -> &'static [PassInfo] {
    REGISTRY
}

static REGISTRY: &[PassInfo] = &[
    PassInfo {
        name: "dce",
        summary: "remove nodes and initializers whose results nothing uses",
        changes_numerics: false,
        make: |o| Ok(Box::new(dce::Dce::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "eliminate-identity",
        summary: "remove Identity and inference-mode Dropout nodes",
        changes_numerics: false,
        make: |o| Ok(Box::new(eliminate_identity::EliminateIdentity::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "fuse-batchnorm",
        summary: "fold inference BatchNormalization into Conv/ConvTranspose/Gemm/MatMul weights, else into Mul+Add",
        changes_numerics: false,
        make: |o| Ok(Box::new(fuse_batchnorm::FuseBatchnorm::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "fuse-affine",
        summary: "fold per-channel Mul/Add by constants after a Conv into its weight and bias",
        changes_numerics: false,
        make: |o| Ok(Box::new(fuse_affine::FuseAffine::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "equalize",
        summary: "cross-layer equalization: balance the channel ranges of consecutive Conv/Gemm/MatMul weights through scale-invariant ops (for per-tensor weights)",
        changes_numerics: false,
        make: |o| Ok(Box::new(equalize::Equalize::from_options(o)?)),
        example: "sweeps=5",
    },
    PassInfo {
        name: "fix-inputs",
        summary: "read graph inputs that never change where the model is deployed (a sample rate) as constants",
        changes_numerics: false,
        make: |o| Ok(Box::new(fix_inputs::FixInputs::from_options(o)?)),
        example: "values=[\"sr=16000\",\"flags=1,0\"]",
    },
    PassInfo {
        name: "fold-constants",
        summary: "evaluate nodes whose operands are all constants and store their results as initializers",
        changes_numerics: false,
        make: |o| Ok(Box::new(fold_constants::FoldConstants::from_options(o)?)),
        example: "max-bytes=4096",
    },
    PassInfo {
        name: "inline-if",
        summary: "replace an If on a constant condition by the branch it takes",
        changes_numerics: false,
        make: |o| Ok(Box::new(inline_if::InlineIf::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "shape-inference",
        summary: "record every value's element type and shape (from tract's analysis) as value_info",
        changes_numerics: false,
        make: |o| Ok(Box::new(shape_inference::ShapeInference::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "upgrade-opset",
        summary: "raise the default-domain opset to 13 where the upgrade is known to be safe",
        changes_numerics: false,
        make: |o| Ok(Box::new(upgrade_opset::UpgradeOpset::from_options(o)?)),
        example: "min=10",
    },
    PassInfo {
        name: "profile-hotspots",
        summary: "time every node in tract (median of N runs) and join with MACs/bytes into a hotspot profile",
        changes_numerics: false,
        make: |o| Ok(Box::new(profile_hotspots::ProfileHotspots::from_options(o)?)),
        example: "runs=3",
    },
    PassInfo {
        name: "select-coverage",
        summary: "choose the fewest Conv/MatMul/Gemm covering a fraction of the measured compute time",
        changes_numerics: false,
        make: |o| Ok(Box::new(select_coverage::SelectCoverage::from_options(o)?)),
        example: "coverage=0.5,nodes=[conv_1,\"/blocks/0/MatMul\"]",
    },
    PassInfo {
        name: "select-speed",
        summary: "keep int8 only where it makes the model faster, measured in the target's runtime",
        changes_numerics: false,
        make: |o| Ok(Box::new(select_speed::SelectSpeed::from_options(o)?)),
        example: "target=tract,per-channel=false,runs=3,nodes=[conv_1]",
    },
    PassInfo {
        name: "calibrate",
        summary: "run the float model on calibration data and histogram every tensor quantization may touch",
        changes_numerics: false,
        make: |o| Ok(Box::new(calibrate::Calibrate::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "smooth-quant",
        summary: "divide outlier activation channels into the weights of the MatMuls reading them (SmoothQuant); consumes the statistics",
        changes_numerics: false,
        make: |o| Ok(Box::new(smooth_quant::SmoothQuant::from_options(o)?)),
        example: "alpha=0.5",
    },
    PassInfo {
        name: "absorb-bias",
        summary: "move per-channel activation offsets (measured) into the next layer's bias; consumes the statistics",
        changes_numerics: false,
        make: |o| Ok(Box::new(absorb_bias::AbsorbBias::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "round-weights",
        summary: "learn how Conv/Gemm/MatMul weights round to int8 from the inputs each layer sees (GPTQ), for the insert-qdq that follows",
        changes_numerics: false,
        make: |o| Ok(Box::new(round_weights::RoundWeights::from_options(o)?)),
        example: "per-channel=false,samples=16",
    },
    PassInfo {
        name: "fold-calibration",
        summary: "turn calibration histograms into scales and zero points (minmax, percentile, entropy, mse)",
        changes_numerics: false,
        make: |o| Ok(Box::new(fold_calibration::FoldCalibration::from_options(o)?)),
        example: "method=percentile,percentile=99.9,activations=s8,reduce-range=true",
    },
    PassInfo {
        name: "insert-qdq",
        summary: "insert QuantizeLinear/DequantizeLinear around quantizable ops; int8 weights, int32 biases",
        changes_numerics: true,
        make: |o| Ok(Box::new(insert_qdq::InsertQdq::from_options(o)?)),
        example: "per-channel=false,weights=u8,exclude=[\"/head/*\",Softmax],op-types=[Conv,MatMul],bias-correction=false,keep-float=[conv_2]",
    },
    PassInfo {
        name: "lower-qdq",
        summary: "rewrite whole QDQ groups of Conv/MatMul into QLinearConv/QLinearMatMul (tract's integer kernels)",
        changes_numerics: true,
        make: |o| Ok(Box::new(lower_qdq::LowerQdq::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "pack-codebook",
        summary: "store quantized weights with few distinct values as small codes into a table (Gather; smaller file, same numbers)",
        changes_numerics: false,
        make: |o| Ok(Box::new(pack_codebook::PackCodebook::from_options(o)?)),
        example: "bits=3,min-elements=16",
    },
    PassInfo {
        name: "codebook-float",
        summary: "store the weights left in float (LSTM/GRU, float Conv/MatMul/Gemm) as 4-bit codes into a table of k-means (or log, uniform) levels",
        changes_numerics: true,
        make: |o| Ok(Box::new(codebook_float::CodebookFloat::from_options(o)?)),
        example: "bits=3,kind=log,min-elements=64",
    },
    PassInfo {
        name: "drop-fake-quant",
        summary: "remove activation Q→DQ pairs that only simulate quantization (pure cost where the runtime does not fuse QDQ)",
        changes_numerics: true,
        make: |o| Ok(Box::new(drop_fake_quant::DropFakeQuant::from_options(o)?)),
        example: "",
    },
    PassInfo {
        name: "prune-channels",
        summary: "structured pruning: remove the Conv output channels that matter least on the calibration data (with what carries and reads them), their means folded into the readers' biases",
        changes_numerics: true,
        make: |o| Ok(Box::new(prune_channels::PruneChannels::from_options(o)?)),
        example: "macs=0.3",
    },
    PassInfo {
        name: "quantize-dynamic",
        summary: "int8 weights and run-time activation quantization for MatMul/Gemm (DynamicQuantizeLinear → MatMulInteger)",
        changes_numerics: true,
        make: |o| Ok(Box::new(quantize_dynamic::QuantizeDynamic::from_options(o)?)),
        example: "per-channel=false,exclude=[\"head*\"]",
    },
    PassInfo {
        name: "quantize-weights",
        summary: "weight-only int8/int4 MatMul/Gemm weights, per channel or in blocks (DequantizeLinear, or MatMulNBits); activations stay float",
        changes_numerics: true,
        make: |o| Ok(Box::new(quantize_weights::QuantizeWeights::from_options(o)?)),
        example: "bits=4,block-size=32,method=gptq",
    },
    PassInfo {
        name: "convert-float",
        summary: "float32 to float16 compute and weights, ops whose calibration range would overflow fp16 kept float32 (or storage-only: half weights cast back)",
        changes_numerics: true,
        make: |o| Ok(Box::new(convert_float::ConvertFloat::from_options(o)?)),
        example: "storage-only=true,min-elements=1024",
    },
    PassInfo {
        name: "quantize-gather",
        summary: "store large embedding tables as int8 per row (or 4-bit in blocks), dequantizing only the gathered rows",
        changes_numerics: true,
        make: |o| Ok(Box::new(quantize_gather::QuantizeGather::from_options(o)?)),
        example: "min-elements=1024,exclude=[\"pos*\"]",
    },
    PassInfo {
        name: "restore-interface",
        summary: "give graph inputs/outputs their declared types back and drop inferred value_info",
        changes_numerics: false,
        make: |o| Ok(Box::new(restore_interface::RestoreInterface::from_options(o)?)),
        example: "",
    },
];

/// Looks a pass up by name.
pub fn lookup(name: &str) -> Result<&'static PassInfo, PassError> {
    registry()
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PassError::UnknownPass {
            name: name.to_string(),
            valid: registry()
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// An unnamed node of `op` with these attributes (inputs and outputs are
/// set by [`crate::ir::Graph::add_op`]): what passes insert carries no
/// name, its values are named after what they compute.
pub(crate) fn node_proto(
    op: &str,
    attrs: Vec<crate::proto::AttributeProto>,
) -> crate::proto::NodeProto {
    crate::proto::NodeProto {
        op_type: Some(op.into()),
        attribute: attrs,
        ..Default::default()
    }
}

/// An integer attribute.
/// A pass's bad-options error with `message`, for option checks beyond
/// what deserializing catches.
pub(crate) fn options_error(pass: &'static str) -> impl Fn(String) -> PassError {
    move |message| PassError::Options {
        pass: pass.into(),
        message,
    }
}

pub(crate) fn int_attr(name: &str, v: i64) -> crate::proto::AttributeProto {
    crate::proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// Deserializes a pass's options from the pipeline's JSON form.
pub fn parse_options<T: DeserializeOwned>(pass: &str, o: Json) -> Result<T, PassError> {
    serde_json::from_value(o).map_err(|e| PassError::Options {
        pass: pass.to_string(),
        message: e.to_string(),
    })
}

/// The options type of passes that take none: any key is an error.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// Serializes options for [`Pass::options`].
pub fn options_json<T: Serialize>(o: &T) -> Json {
    serde_json::to_value(o).expect("invariant: options serialize")
}
