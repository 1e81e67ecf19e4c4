//! What `quantize` checks about a model before working on it: that it is
//! a float model with something to compute, at an opset onnxq knows, and
//! that running it fits in memory.

use std::path::Path;

use super::{Mode, QuantizeError, QuantizeOptions};
use crate::ir::Model;

/// Ops that only a quantized model has.
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "MatMulNBits",
    "DynamicQuantizeLSTM",
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearConcat",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearSoftmax",
    "QGemm",
    "QAttention",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
];

/// Refuses a model that is already quantized (a QDQ or QOperator file:
/// onnxq's, onnxruntime's, a quantization-aware-training export):
/// quantizing it again would stack Q/DQ pairs on the ones there and
/// re-round weights that were rounded already. `what` names the model in
/// the message.
pub fn check_not_quantized(m: &Model, what: &str) -> Result<(), QuantizeError> {
    check_computes(m, what)?;
    let mut found: std::collections::BTreeMap<&str, usize> = Default::default();
    let g = &m.graph;
    for n in g.ops() {
        let op = g.node(n).op_type();
        if let Some(q) = QUANTIZED_OPS.iter().find(|&&q| q == op) {
            *found.entry(q).or_default() += 1;
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = found.iter().map(|(op, n)| format!("{n} {op}")).collect();
    Err(QuantizeError::Usage(format!(
        "{what} is already quantized ({}): quantizing it again would stack quantization on quantization. To see what a runtime runs as integer kernels: `onnxq lint {what} --target ort-cpu|tract`; to rewrite it into tract's fast form: `onnxq convert {what} --target tract -o OUT`; to measure it against the float model: `onnxq validate FLOAT {what} --data DIR`. Quantize the float model it came from instead.",
        list.join(", ")
    )))
}

/// The options with as many worker threads as fit under the memory limit
/// (`--max-memory`, else 90% of the available memory) when the model will
/// run in tract (calibration, validation); an error saying what to do when
/// even one run does not fit. See [`crate::runtime::memory`].
pub(super) fn memory_guard(
    float: &Model,
    input: &Path,
    opts: &QuantizeOptions,
) -> Result<QuantizeOptions, QuantizeError> {
    use crate::runtime::memory;
    let mut o = opts.clone();
    let runs = opts.val_samples > 0
        || opts.mode == Mode::Static
        || opts.calib.is_some()
        || opts.calib_random.is_some();
    let Some(limit) = opts.max_memory.or_else(memory::default_limit) else {
        return Ok(o);
    };
    if !runs {
        return Ok(o);
    }
    let (weights, acts) = memory::estimate(float);
    let threads = opts.threads.unwrap_or_else(crate::runtime::default_threads);
    match memory::workers_within(weights, acts, threads, limit) {
        Ok(w) if w < threads => {
            o.threads = Some(w);
            Ok(o)
        }
        Ok(_) => Ok(o),
        Err(need) => Err(QuantizeError::Usage(format!(
            "{}: running it in tract (calibration, validation) needs about {} ({} of weights, {} of intermediate tensors per run), more than the memory limit of {} ({}); raise --max-memory if the machine has it, or use --mode weights --val-samples 0, which never runs the model",
            input.display(),
            memory::show(need),
            memory::show(weights),
            memory::show(acts),
            memory::show(limit),
            if opts.max_memory.is_some() {
                "--max-memory"
            } else {
                "90% of the memory available now"
            }
        ))),
    }
}

/// The newest default-domain opset ONNX defines (onnx 1.22): a larger
/// one is a corrupt `opset_import` or a file from a release onnxq does
/// not know, whose ops it could misread.
pub const NEWEST_OPSET: i64 = 27;

/// A model with something to compute and an opset onnxq knows.
fn check_computes(m: &Model, what: &str) -> Result<(), QuantizeError> {
    if m.graph.outputs().is_empty() {
        return Err(QuantizeError::Usage(format!(
            "{what} has no graph outputs: there is nothing to compute, quantize or validate; re-export it with its outputs"
        )));
    }
    if let Some(v) = m.opset("").filter(|&v| v > NEWEST_OPSET) {
        return Err(QuantizeError::Usage(format!(
            "{what} imports opset {v} of the default ONNX domain; the newest ONNX defines is {NEWEST_OPSET}: the opset_import is corrupt or the file comes from an ONNX release onnxq does not know; re-export it at opset {NEWEST_OPSET} or below"
        )));
    }
    Ok(())
}
