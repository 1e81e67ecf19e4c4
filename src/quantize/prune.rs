//! `--prune auto`: the most magnitude pruning that still meets the
//! fidelity target.
//!
//! Pruning is part of `insert-qdq` (`prune-db`): every weight keeps all
//! but `db` dB of its energy, its smallest values zeroed, so each layer's
//! sparsity follows how many small values it has. Fewer dB prune more.
//! The search reruns only the tail (no recalibration: pruning at these
//! levels moves activation ranges little, and bias correction folds the
//! mean shift back) at the levels of [`LEVELS`], bisecting for the lowest
//! one whose validation meets the target, on the assumption that output
//! error grows as the budget shrinks. When even the gentlest level misses
//! the target, nothing is pruned and the automatic fallback takes over.

use super::build::{Built, Calibrated};
use super::QuantizeError;
use crate::report::quantize::{FidelityTarget, Pruning, QuantizeReport};
use crate::validate::Reference;

/// Per-layer budgets tried, most pruning first (dB of each weight's
/// energy kept). Every layer's error adds up through a deep network: at
/// 20 dB per layer a 50-layer classifier kept a third of the energy of its
/// output error budget (PP-OCR cls: 30% sparsity, accuracy 0.985 → 0.61),
/// at 40 dB a layer loses only its smallest values (a few percent).
pub const LEVELS: [f64; 8] = [20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 45.0, 50.0];

/// The lowest level of [`LEVELS`] whose build meets `target`, with that
/// build; `None` when none does (then the report lists what was tried).
pub fn search(
    cal: &Calibrated,
    reference: &Reference,
    target: &FidelityTarget,
    progress: bool,
) -> Result<(Pruning, Option<Built>), QuantizeError> {
    let mut trials = Vec::new();
    let mut try_level = |i: usize| -> Result<(bool, Built), QuantizeError> {
        let built = cal.build_pruned(&[], &[], LEVELS[i])?;
        let v = reference.score(&built.model)?;
        trials.push((LEVELS[i], v.min_sqnr(), v.min_cosine()));
        if progress {
            eprintln!(
                "prune: {} dB per layer: {:.1}% sparsity, worst SQNR {}",
                LEVELS[i],
                built
                    .pruned
                    .map(|(z, t)| 100.0 * z as f64 / t.max(1) as f64)
                    .unwrap_or(0.0),
                v.min_sqnr()
                    .map(|s| format!("{s:.2} dB"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        Ok((target.met(&v), built))
    };
    // The gentlest level first: if it misses, no level will.
    let (ok, gentlest) = try_level(LEVELS.len() - 1)?;
    let mut best = (LEVELS.len() - 1, gentlest);
    if ok {
        // Invariant: `best.0` meets the target; every index ≤ `lo` misses
        // or is untried below the first miss.
        let (mut lo, mut hi) = (None::<usize>, best.0);
        loop {
            let below = match lo {
                None => 0,
                Some(l) => l + 1,
            };
            if below >= hi {
                break;
            }
            let mid = (below + hi - 1) / 2;
            let (ok, built) = try_level(mid)?;
            if ok {
                hi = mid;
                best = (mid, built);
            } else {
                lo = Some(mid);
            }
        }
    }
    let (zeros, total) = best.1.pruned.unwrap_or((0, 0));
    let pruning = Pruning {
        db: if ok { LEVELS[best.0] } else { 0.0 },
        zeros: if ok { zeros } else { 0 },
        total,
        searched: true,
        trials,
    };
    Ok((pruning, ok.then_some(best.1)))
}

/// Per-reader error budgets `--prune-channels auto` tries (dB, lower
/// prunes more), gentlest last.
pub const CHANNEL_LEVELS: [f64; 7] = [10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0];

/// `--prune-channels auto`: the lowest budget of [`CHANNEL_LEVELS`] whose
/// pruned and quantized model meets `target` against the float model
/// (`reference`), by bisection (output error grows as the budget
/// shrinks). Each trial prunes, calibrates and quantizes again: the
/// network changes, so its ranges do. `first` is the run at the options'
/// own budget, which the search starts from. Returns the build kept
/// (pruned at the budget found, or unpruned when none met the target),
/// its calibrated analyses recording the search.
pub fn search_channels(
    float: &crate::ir::Model,
    opts: &super::QuantizeOptions,
    first: (Built, QuantizeReport, Calibrated),
    reference: &Reference,
    target: &FidelityTarget,
) -> Result<(Built, QuantizeReport, Calibrated), QuantizeError> {
    type Trial = (f64, f64, Option<f64>, Option<f64>);
    type Out = (Built, QuantizeReport, Calibrated);
    let mut trials: Vec<Trial> = Vec::new();
    let run = |budget: f64| -> Result<(bool, Out, Trial), QuantizeError> {
        let mut o = opts.clone();
        o.prune_channels_budget = budget;
        let out = super::quantize_model(float, &o)?;
        let v = reference.score(&out.0.model)?;
        let share = out
            .2
            .analyses
            .channel_pruning
            .as_ref()
            .map(|c| {
                c.macs_before.saturating_sub(c.macs_after) as f64 / c.macs_before.max(1) as f64
            })
            .unwrap_or(0.0);
        if opts.progress {
            eprintln!(
                "prune-channels: budget {budget} dB: {:.1}% fewer MACs, worst SQNR {}",
                100.0 * share,
                v.min_sqnr()
                    .map(|s| format!("{s:.2} dB"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        Ok((
            target.met(&v),
            out,
            (budget, share, v.min_sqnr(), v.min_cosine()),
        ))
    };
    let gentlest = CHANNEL_LEVELS.len() - 1;
    let (ok, out) = if opts.prune_channels_budget == CHANNEL_LEVELS[gentlest] {
        let v = reference.score(&first.0.model)?;
        let c = first.2.analyses.channel_pruning.as_ref();
        let share = c
            .map(|c| {
                c.macs_before.saturating_sub(c.macs_after) as f64 / c.macs_before.max(1) as f64
            })
            .unwrap_or(0.0);
        trials.push((
            CHANNEL_LEVELS[gentlest],
            share,
            v.min_sqnr(),
            v.min_cosine(),
        ));
        (target.met(&v), first)
    } else {
        let (ok, out, trial) = run(CHANNEL_LEVELS[gentlest])?;
        trials.push(trial);
        (ok, out)
    };
    if !ok {
        // Not even the gentlest budget: quantize the model unpruned.
        let mut o = opts.clone();
        o.prune_channels = None;
        o.prune_channels_auto = false;
        let mut kept = super::quantize_model(float, &o)?;
        record(&mut kept.2, None, trials);
        return Ok(kept);
    }
    let mut best = (gentlest, out);
    // Invariant: `best.0` meets the target; levels below `lo` were not
    // tried or missed.
    let (mut lo, mut hi) = (0usize, best.0);
    while lo < hi {
        let mid = (lo + hi - 1) / 2;
        let (ok, out, trial) = run(CHANNEL_LEVELS[mid])?;
        trials.push(trial);
        if ok {
            hi = mid;
            best = (mid, out);
        } else {
            lo = mid + 1;
        }
    }
    let mut kept = best.1;
    record(&mut kept.2, Some(CHANNEL_LEVELS[best.0]), trials);
    Ok(kept)
}

/// Records the search on the kept build's channel-pruning result.
fn record(
    cal: &mut Calibrated,
    budget: Option<f64>,
    trials: Vec<(f64, f64, Option<f64>, Option<f64>)>,
) {
    cal.analyses
        .channel_pruning
        .get_or_insert_with(Default::default)
        .searched(budget, trials);
}
