//! The pipeline `onnxq quantize` runs, as strings anyone can read, print
//! and replay with `onnxq opt`.
//!
//! ```text
//! prepare    eliminate-identity,fold-constants,inline-if,eliminate-identity,
//!            shape-inference,fuse-batchnorm,fuse-affine,dce,shape-inference,
//!            upgrade-opset{min=13}
//! calibrate  [prune-channels{macs=F},]
//!            [profile-hotspots{runs=5},select-coverage{coverage=C},]
//!            calibrate,[smooth-quant{…},calibrate,]
//!            [equalize{…},dce,calibrate,[absorb-bias,calibrate,]]
//!            fold-calibration{…}[,select-speed{target=T,…}][,round-weights{…}]
//! tail       insert-qdq{…},[quantize-gather,]dce,
//!            [lower-qdq,drop-fake-quant,dce,]restore-interface
//! ```
//!
//! The order is deliberate: `fold-constants` first, so that `Constant`
//! nodes become initializers the later passes can read (and an `If` on a
//! folded condition can be inlined, its branch then quantized like the
//! rest); `shape-inference`
//! before `fuse-batchnorm`, which needs the input rank of a
//! BatchNormalization it turns into Mul+Add, and again after it, so that
//! the fused graph's values are typed for placement; the opset upgrade
//! last, on the graph that is calibrated and quantized. The tail is what
//! the automatic fallback reruns with other `keep-float` lists.

use super::QuantizeOptions;
use crate::passes::insert_qdq;
use crate::passes::Pipeline;
use crate::quant::range::Method;
use crate::quant::QType;

/// The clean-up passes that prepare a float model: what quantized nodes
/// correspond to.
pub const CLEAN_UP: &str =
    "eliminate-identity,fold-constants,inline-if,eliminate-identity,shape-inference,fuse-batchnorm,fuse-affine,dce,shape-inference";

/// The passes that prepare a float model for quantization: the clean-up
/// and the opset the weights will need.
pub fn prepare(per_channel: bool) -> String {
    prepare_for(if per_channel { 13 } else { 10 })
}

/// The clean-up, then the opset upgrade to `min` (13: per-channel Q/DQ;
/// 11: DynamicQuantizeLinear; 10: per-tensor Q/DQ).
pub fn prepare_for(min: i64) -> String {
    format!("{CLEAN_UP},upgrade-opset{{min={min}}}")
}

/// `fix-inputs{values=[…]},` for the inputs the options fix (empty when
/// none): first, so that the clean-up folds what they decide.
pub fn fix_inputs(opts: &QuantizeOptions) -> Result<String, crate::passes::PassError> {
    if opts.fixed_inputs.is_empty() {
        return Ok(String::new());
    }
    let o = crate::passes::fix_inputs::Options {
        values: opts.fixed_inputs.clone(),
    };
    let pass = crate::passes::fix_inputs::FixInputs::from_options(
        serde_json::to_value(o).expect("invariant: options serialize"),
    )?;
    let mut p = Pipeline::default();
    p.push(Box::new(pass));
    Ok(format!("{p},"))
}

/// Profiling and coverage selection (when asked for) and calibration:
/// the statistics every method folds from.
pub fn collect(opts: &QuantizeOptions) -> String {
    let mut s = String::new();
    if let Some(f) = opts.prune_channels {
        s.push_str(&format!(
            "prune-channels{{macs={f},budget-db={}}},",
            opts.prune_channels_budget
        ));
    }
    if let Some(c) = opts.coverage {
        s.push_str(&format!(
            "profile-hotspots{{runs=5}},select-coverage{{coverage={c}}},"
        ));
    }
    s.push_str("calibrate");
    s
}

/// The choice of activation ranges by `method`, then of where int8 pays
/// (runtime targets, unless speed selection is off; never for 16-bit
/// activations, which no CPU runtime runs as integer kernels: they are
/// asked for accuracy or for an NPU, not for speed here).
pub fn choose(opts: &QuantizeOptions, method: Method, ranges: &[String]) -> String {
    let mut s = fold_calibration_with(opts, method, ranges);
    if opts.speed_select
        && opts.target != crate::target::Target::Portable
        && !opts.activations.is_wide()
    {
        s.push(',');
        s.push_str(&select_speed(opts).to_string());
    }
    s
}

/// `select-speed` with the placement options of the `insert-qdq` after it.
fn select_speed(opts: &QuantizeOptions) -> Pipeline {
    let o = crate::passes::select_speed::Options {
        target: opts.target.name().into(),
        per_channel: opts.per_channel,
        weights: qtype_name(opts.weights).into(),
        exclude: opts.exclude.clone(),
        op_types: opts.op_types.clone(),
        nodes: opts.speed_nodes.clone(),
        ..Default::default()
    };
    let json = serde_json::to_value(o).expect("invariant: options serialize");
    let mut p = Pipeline::default();
    p.push(Box::new(
        crate::passes::select_speed::SelectSpeed::from_options(json)
            .expect("invariant: options built from parsed types"),
    ));
    p
}

/// `round-weights` with the placement options of the `insert-qdq` after it.
pub fn round_weights(opts: &QuantizeOptions) -> Pipeline {
    let o = crate::passes::round_weights::Options {
        per_channel: opts.per_channel,
        weights: qtype_name(opts.weights).into(),
        reduce_range: opts.reduce_range,
        exclude: opts.exclude.clone(),
        op_types: opts.op_types.clone(),
        target: opts.target.name().into(),
        ..Default::default()
    };
    let mut p = Pipeline::default();
    p.push(Box::new(
        crate::passes::round_weights::RoundWeights::new(o)
            .expect("invariant: options built from parsed types"),
    ));
    p
}

/// `fold-calibration` with `method` and the options' activation types.
pub fn fold_calibration(opts: &QuantizeOptions, method: Method) -> String {
    fold_calibration_with(opts, method, &[])
}

/// `fold-calibration` with `method`, per-tensor exceptions `ranges`
/// (`TENSOR=METHOD`) and the options' activation types.
pub fn fold_calibration_with(opts: &QuantizeOptions, method: Method, ranges: &[String]) -> String {
    let (method, p) = match method {
        Method::Percentile { p } => ("percentile".to_string(), Some(p)),
        m => (m.to_string(), None),
    };
    let mut parts = vec![
        format!("method={method}"),
        format!("activations={}", qtype_name(opts.activations)),
        format!("reduce-range={}", opts.reduce_range),
    ];
    if let Some(p) = p {
        parts.push(format!("percentile={p}"));
    }
    if let Some(sym) = opts.symmetric_activations {
        parts.push(format!("symmetric={sym}"));
    }
    if opts.pow2_scales {
        parts.push("pow2=true".into());
    }
    if !ranges.is_empty() {
        let quoted: Vec<String> = ranges
            .iter()
            .map(|r| serde_json::to_string(r).expect("invariant: strings serialize"))
            .collect();
        parts.push(format!("ranges=[{}]", quoted.join(",")));
    }
    format!("fold-calibration{{{}}}", parts.join(","))
}

fn qtype_name(q: QType) -> &'static str {
    q.name()
}

/// The `insert-qdq` options the quantize options ask for (before any
/// fallback adds `keep-float`).
pub fn insert_options(opts: &QuantizeOptions) -> insert_qdq::Options {
    insert_qdq::Options {
        per_channel: opts.per_channel,
        weights: qtype_name(opts.weights).into(),
        reduce_range: opts.reduce_range,
        exclude: opts.exclude.clone(),
        op_types: opts.op_types.clone(),
        bias_correction: opts.bias_correction,
        keep_float: opts.keep_float.clone(),
        promote: vec![],
        target: opts.target.name().into(),
        pow2: opts.pow2_scales,
        prune_db: opts.prune_db.unwrap_or(0.0),
        codebook: opts.codebook_bits,
        codebook_kind: opts.codebook_kind.name().into(),
        codebook_exempt: vec![],
        codebook_tables: if opts.codebook_per_channel {
            "channel"
        } else {
            "tensor"
        }
        .into(),
    }
}

/// The `quantize-dynamic` options the quantize options ask for.
pub fn dynamic_options(opts: &QuantizeOptions) -> crate::passes::quantize_dynamic::Options {
    let d = crate::passes::quantize_dynamic::Options::default();
    crate::passes::quantize_dynamic::Options {
        per_channel: opts.per_channel,
        exclude: opts.exclude.clone(),
        keep_float: opts.keep_float.clone(),
        op_types: if opts.op_types.is_empty() {
            d.op_types
        } else {
            opts.op_types.clone()
        },
    }
}

/// Weight-only quantization of the MatMul/Gemm weights as the options
/// say (GPTQ when `--rounding adaptive`), run where the calibration data
/// is; and the `quantize-gather` options for the embedding tables (4-bit
/// in blocks of 32 for 4-bit weights, else int8 per row).
pub fn weights_only(opts: &QuantizeOptions) -> (Pipeline, crate::passes::quantize_gather::Options) {
    let mut w = opts.weights_only.clone();
    w.method = if opts.rounding == super::Rounding::Adaptive {
        "gptq".into()
    } else {
        "nearest".into()
    };
    w.exclude.extend(opts.exclude.iter().cloned());
    let mut p = Pipeline::default();
    p.push(Box::new(
        crate::passes::quantize_weights::QuantizeWeights::from_options(
            serde_json::to_value(&w).expect("invariant: options serialize"),
        )
        .expect("invariant: options checked when parsed"),
    ));
    let d = crate::passes::quantize_gather::Options::default();
    let gather = crate::passes::quantize_gather::Options {
        bits: w.bits,
        // Embedding rows are gathered, not multiplied: their block size
        // costs no speed, so they keep the default's finer blocks.
        block_size: d.block_size,
        exclude: opts.exclude.clone(),
        ..d
    };
    (p, gather)
}

/// Float16 conversion as the options say (run where the calibration data
/// is, for the range check).
pub fn half(opts: &QuantizeOptions) -> Pipeline {
    let mut o = opts.float16.clone();
    o.exclude.extend(opts.exclude.iter().cloned());
    let mut p = Pipeline::default();
    p.push(Box::new(
        crate::passes::convert_float::ConvertFloat::from_options(
            serde_json::to_value(&o).expect("invariant: options serialize"),
        )
        .expect("invariant: options checked when parsed"),
    ));
    p
}

/// Clean-up and interface only.
pub fn clean_tail() -> Pipeline {
    let mut p = Pipeline::default();
    p.push(Box::new(crate::passes::dce::Dce));
    p.push(Box::new(crate::passes::restore_interface::RestoreInterface));
    p
}

/// The tail of weight-only quantization: embedding tables, clean-up,
/// interface.
pub fn weights_tail(gather: &crate::passes::quantize_gather::Options) -> Pipeline {
    let mut p = Pipeline::default();
    p.push(Box::new(
        crate::passes::quantize_gather::QuantizeGather::from_options(
            serde_json::to_value(gather).expect("invariant: options serialize"),
        )
        .expect("invariant: options checked when parsed"),
    ));
    p.push(Box::new(crate::passes::dce::Dce));
    p.push(Box::new(crate::passes::restore_interface::RestoreInterface));
    p
}

/// The tail of dynamic quantization: the rewrite, clean-up, interface.
pub fn dynamic_tail(o: &crate::passes::quantize_dynamic::Options) -> Pipeline {
    let mut p = Pipeline::default();
    p.push(Box::new(
        crate::passes::quantize_dynamic::QuantizeDynamic::from_options(
            serde_json::to_value(o).expect("invariant: options serialize"),
        )
        .expect("invariant: options checked when parsed"),
    ));
    p.push(Box::new(
        crate::passes::quantize_gather::QuantizeGather::from_options(serde_json::json!({}))
            .expect("invariant: default options"),
    ));
    p.push(Box::new(crate::passes::dce::Dce));
    p.push(Box::new(crate::passes::restore_interface::RestoreInterface));
    p
}

/// The tail that turns a calibrated model into the quantized file.
pub fn tail(insert: &insert_qdq::Options) -> Pipeline {
    let mut p = Pipeline::default();
    p.push(Box::new(
        insert_qdq::InsertQdq::new(insert.clone())
            .expect("invariant: options built from parsed types"),
    ));
    let target = crate::target::Target::parse(&insert.target);
    if target.is_some_and(|t| t != crate::target::Target::Portable) {
        p.push(Box::new(
            crate::passes::quantize_gather::QuantizeGather::from_options(serde_json::json!({}))
                .expect("invariant: default options"),
        ));
    }
    p.push(Box::new(crate::passes::dce::Dce));
    if target.is_some_and(|t| t.spec().format == crate::target::Format::QOperator) {
        // QOperator targets run what is left of the QDQ form in float: a
        // Q → DQ pair whose readers all stay float (a tensor read by both a
        // QLinearMatMul and a residual Add keeps its Q for the former) only
        // costs time and adds rounding, so those readers take the float
        // tensor.
        p.push(Box::new(crate::passes::lower_qdq::LowerQdq));
        p.push(Box::new(crate::passes::drop_fake_quant::DropFakeQuant));
        p.push(Box::new(crate::passes::dce::Dce));
    }
    // Codes of up to 4 bits pack two per byte (uint4, opset 21); tract
    // cannot load uint4, and wider codes would take a byte each like the
    // int8 weight: those files keep int8 weights of few distinct values,
    // which compress as well.
    if (1..=4).contains(&insert.codebook) && target != Some(crate::target::Target::Tract) {
        let o = crate::passes::pack_codebook::Options {
            bits: insert.codebook,
            ..Default::default()
        };
        p.push(Box::new(
            crate::passes::pack_codebook::PackCodebook::from_options(
                serde_json::to_value(o).expect("invariant: options serialize"),
            )
            .expect("invariant: options checked when parsed"),
        ));
        let f = crate::passes::codebook_float::Options {
            bits: insert.codebook,
            kind: insert.codebook_kind.clone(),
            ..Default::default()
        };
        p.push(Box::new(
            crate::passes::codebook_float::CodebookFloat::from_options(
                serde_json::to_value(f).expect("invariant: options serialize"),
            )
            .expect("invariant: options checked when parsed"),
        ));
        p.push(Box::new(crate::passes::dce::Dce));
    }
    p.push(Box::new(crate::passes::restore_interface::RestoreInterface));
    p
}
