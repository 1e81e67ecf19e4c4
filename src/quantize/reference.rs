//! The data `quantize` validates on and the float model's outputs on it
//! (the reference every search and the final validation score against).

use super::build::Calibrated;
use super::{calib_data, QuantizeError, QuantizeOptions};
use crate::calib::data::DataSet;
use crate::ir::Model;
use crate::validate::Reference;

/// The validation samples and, when they are the first calibration samples
/// (the default), the float outputs calibration recorded on them.
///
/// The float graph calibration ran is the prepared one, whose exact
/// rewrites (BatchNorm folding, constant folding) leave outputs equal to
/// the original's within float rounding (160 dB or more on every model
/// measured), far below any quantization error.
pub(super) fn validation_data(
    float: &Model,
    opts: &QuantizeOptions,
    calibrated: &Calibrated,
    threads: usize,
) -> Result<(Option<DataSet>, Option<Reference>), QuantizeError> {
    let mut val = if opts.val_samples > 0 || opts.fidelity.is_some() {
        let n = opts.val_samples.max(1);
        match &opts.val {
            Some(dir) => Some(DataSet::open(dir, Some(n))?),
            None => calib_data(&opts.data_options())?.map(|d| d.take(n)),
        }
    } else {
        None
    };
    // Calibration recorded float outputs of its first samples (for
    // validation and `--method auto`); they are the reference only when
    // validation runs on those same samples.
    let outputs = &calibrated.float_outputs;
    let reference = match &mut val {
        // With structured pruning the float outputs recorded are the
        // pruned network's: the reference must be the model as given.
        Some(v)
            if opts.val.is_none() && opts.prune_channels.is_none() && outputs.len() >= v.len() =>
        {
            let mut k = v.len();
            if let Some(budget) = opts.val_values {
                let mut values = 0u64;
                for (i, outs) in outputs.iter().take(k).enumerate() {
                    values += outs.iter().map(|(_, t)| t.len() as u64).sum::<u64>();
                    if values >= budget {
                        k = i + 1;
                        break;
                    }
                }
            }
            *v = v.take(k);
            Some(Reference::from_outputs(
                float,
                v,
                threads,
                &opts.input_shapes,
                outputs[..k].to_vec(),
            )?)
        }
        _ => None,
    };
    Ok((val, reference))
}

/// The float model's outputs on the validation data, computed on first
/// use and kept for the searches that follow.
pub(super) fn reference_on<'r>(
    reference: &'r mut Option<Reference>,
    float: &Model,
    val: &DataSet,
    threads: usize,
    opts: &QuantizeOptions,
) -> Result<&'r Reference, QuantizeError> {
    if reference.is_none() {
        *reference = Some(Reference::new(float, val, threads, &opts.input_shapes)?);
    }
    Ok(reference.as_ref().expect("invariant: set above"))
}
