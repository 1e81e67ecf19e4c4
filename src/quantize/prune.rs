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
use crate::report::quantize::{FidelityTarget, Pruning};
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
