//! Running one model over many samples: a thread-safe cache of [`Runner`]s
//! per input signature, and a deterministic parallel map over samples.
//!
//! Loading and optimising a model in tract costs as much as many runs, so a
//! runner is built once per distinct set of input shapes and shared by every
//! thread (a [`Runner`] runs from `&self`). Calibration, validation and the
//! sensitivity analysis all go through here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{RunOptions, Runner, RuntimeError};
use crate::ir::Model;
use crate::tensorio::HostTensor;

/// The inputs a runner was built for: `(name, shape, ONNX dtype)` each.
pub type Signature = Vec<(String, Vec<usize>, i32)>;

/// The signature of a set of named inputs.
pub fn signature(inputs: &[(String, HostTensor)]) -> Signature {
    inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec(), t.dtype()))
        .collect()
}

/// Runners of one model, one per input signature, built on first use.
pub struct RunnerCache<'a> {
    model: &'a Model,
    extra: Vec<String>,
    validating: bool,
    runners: Mutex<BTreeMap<Signature, Arc<Runner>>>,
}

impl<'a> RunnerCache<'a> {
    /// A cache for `model`, capturing the `extra` intermediate tensors.
    pub fn new(model: &'a Model, extra: Vec<String>) -> Self {
        RunnerCache {
            model,
            extra,
            validating: false,
            runners: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runners for validating a QDQ model: constant weight dequantization
    /// folded before analysis and activation Q/DQ pairs fused
    /// ([`RunOptions::fold_weight_dequantize`], [`RunOptions::fuse_qdq`]);
    /// outputs are bit-identical to a plain run.
    pub fn validating(mut self) -> Self {
        self.validating = true;
        self
    }

    /// The captured tensors' names.
    pub fn extra(&self) -> &[String] {
        &self.extra
    }

    /// The runner for these inputs' shapes. A runner is built while the
    /// cache is locked, so two threads needing the same new shapes build
    /// it once.
    pub fn runner(&self, inputs: &[(String, HostTensor)]) -> Result<Arc<Runner>, RuntimeError> {
        let sig = signature(inputs);
        // A poisoned lock is taken over as it is: the map only ever gets a
        // runner once it is fully built, so a panic while building one
        // (tract's are caught in `Runner::new`; this is for anything
        // else) leaves it as it was.
        let mut runners = self
            .runners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = runners.get(&sig) {
            return Ok(r.clone());
        }
        let ro = RunOptions {
            input_shapes: sig.clone(),
            extra_outputs: self.extra.clone(),
            fuse_qdq: self.validating,
            fold_weight_dequantize: self.validating,
            ..Default::default()
        };
        let r = Arc::new(Runner::new(self.model, &ro)?);
        runners.insert(sig, r.clone());
        Ok(r)
    }

    /// Runs the model on named inputs: graph outputs, then the captures.
    pub fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        self.runner(inputs)?.run(inputs)
    }
}

/// `work(0) … work(threads-1)`, each on its own thread, results in worker
/// order. Worker 0 runs on the calling thread: a fresh thread starts with
/// cold allocator pages and tract scratch space, and on these VMs
/// first-touch memory is what costs.
pub fn par_workers<T: Send>(threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads.max(1))
            .map(|w| s.spawn(move || work(w)))
            .collect();
        std::iter::once(work(0))
            .chain(
                handles
                    .into_iter()
                    .map(|h| h.join().expect("invariant: workers do not panic")),
            )
            .collect()
    })
}

/// `f(0) … f(n-1)` on up to `threads` threads, results in index order.
/// Item `i` goes to thread `i % threads`; on errors, the one of the lowest
/// index is returned, so what a caller sees never depends on the thread
/// count.
pub fn par_map<T: Send, E: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let mut slots: Vec<Option<Result<T, E>>> = (0..n).map(|_| None).collect();
    let f = &f;
    let part = move |w: usize| {
        let mut out = Vec::new();
        for i in (w..n).step_by(threads) {
            let r = f(i);
            let failed = r.is_err();
            out.push((i, r));
            if failed {
                break;
            }
        }
        out
    };
    for (i, r) in par_workers(threads, part).into_iter().flatten() {
        slots[i] = Some(r);
    }
    // A worker stops at its first error, so later slots may be empty; the
    // scan stops at the first error before reaching them.
    let mut out = Vec::with_capacity(n);
    for slot in slots {
        match slot {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => unreachable!("invariant: an empty slot follows an error in the same worker"),
        }
    }
    Ok(out)
}

/// Worker threads to use by default: the machine's parallelism, at most 4
/// (beyond that, memory bandwidth, not cores, bounds tract on these models).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order_and_reports_the_first_error() {
        for threads in [1, 2, 3, 8] {
            let v = par_map(10, threads, |i| Ok::<_, String>(i * i)).unwrap();
            assert_eq!(v, (0..10).map(|i| i * i).collect::<Vec<_>>());
            let e = par_map(10, threads, |i| {
                if i == 3 || i == 7 {
                    Err(format!("bad {i}"))
                } else {
                    Ok(i)
                }
            })
            .unwrap_err();
            assert_eq!(e, "bad 3", "threads {threads}");
        }
    }
}
