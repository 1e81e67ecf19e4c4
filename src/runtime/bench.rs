//! Timing models in the runtime they are deployed to, side by side.
//!
//! One interface over both engines: per-node profiles (which ONNX nodes a
//! runtime node stands for, and its median time) and end-to-end latency of
//! several models on the same samples in alternating rounds (baseline,
//! candidate 1, candidate 2, … per round; ratios per round, then their
//! median), the method of `eval/tools/speed.py`. Alternating rounds let
//! every model see the same machine state: on shared VMs absolute times
//! drift by 2× between minutes, ratios within a round do not.

use std::time::Instant;

use super::{RunOptions, Runner, RuntimeError};
use crate::ir::Model;
use crate::tensorio::HostTensor;

/// Which runtime to time in.
#[derive(Clone, Debug)]
pub enum Engine {
    Tract,
    /// onnxruntime's CPU provider, one intra-op thread unless set.
    #[cfg(feature = "ort")]
    Ort(super::ort::OrtOptions),
}

impl Engine {
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Tract => "tract",
            #[cfg(feature = "ort")]
            Engine::Ort(_) => "onnxruntime",
        }
    }
}

/// Why timing failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Tract(#[from] RuntimeError),
    #[cfg(feature = "ort")]
    #[error(transparent)]
    Ort(#[from] super::ort::OrtError),
    #[error("timing needs at least one input sample")]
    NoSamples,
}

/// How many rounds and runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Rounds {
    pub rounds: usize,
    pub iters: usize,
    /// Warm-up runs per model; `None`: `max(2, iters / 4)`.
    pub warmup: Option<usize>,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds {
            rounds: 5,
            iters: 20,
            warmup: None,
        }
    }
}

impl Rounds {
    /// Iterations so that a round of one model takes about `budget_ms`
    /// given its latency (at least 3, at most 20): a 40 ms detector gets
    /// 5 runs per round where a 1 ms classifier gets 20.
    pub fn for_latency(latency_ms: f64, budget_ms: f64, rounds: usize) -> Rounds {
        let iters = (budget_ms / latency_ms.max(1e-3)).round() as usize;
        Rounds {
            rounds,
            iters: iters.clamp(3, 20),
            warmup: None,
        }
    }
}

/// One model's times.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Mean ms per run in each round.
    pub round_ms: Vec<f64>,
    /// Median of `round_ms`.
    pub median_ms: f64,
    /// Baseline round time / this one's, per round (> 1: faster).
    pub ratios: Vec<f64>,
    /// Median of `ratios`.
    pub ratio: f64,
}

/// A runtime node's time and the ONNX node labels it stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    pub labels: Vec<String>,
    pub ms: f64,
}

/// Python's `statistics.median`.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[m],
        _ => (s[m - 1] + s[m]) / 2.0,
    }
}

fn tract_runner(m: &Model, sample: &[(String, HostTensor)]) -> Result<Runner, RuntimeError> {
    let ro = RunOptions {
        input_shapes: sample
            .iter()
            .map(|(n, t)| (n.clone(), t.shape().to_vec(), t.dtype()))
            .collect(),
        ..Default::default()
    };
    Runner::new(m, &ro)
}

/// Per-node times of `m` on `sample` (median of `runs` after a warm-up).
pub fn profile(
    engine: &Engine,
    m: &Model,
    sample: &[(String, HostTensor)],
    runs: usize,
) -> Result<Vec<NodeTime>, BenchError> {
    match engine {
        Engine::Tract => {
            let t = tract_runner(m, sample)?.profile(sample, runs)?;
            Ok(t.nodes
                .into_iter()
                .map(|n| NodeTime {
                    labels: n.onnx_nodes,
                    ms: n.median.as_secs_f64() * 1e3,
                })
                .collect())
        }
        #[cfg(feature = "ort")]
        Engine::Ort(opts) => {
            let s = super::ort::OrtSession::new(m, opts)?;
            let p = s.profile(sample, runs)?;
            Ok(p.nodes
                .into_iter()
                .map(|n| NodeTime {
                    labels: n.onnx_nodes,
                    ms: n.median.as_secs_f64() * 1e3,
                })
                .collect())
        }
    }
}

/// End-to-end latency of `models` (the baseline first) on `samples`.
pub fn compare(
    engine: &Engine,
    models: &[&Model],
    samples: &[Vec<(String, HostTensor)>],
    rounds: &Rounds,
) -> Result<Vec<Latency>, BenchError> {
    if samples.is_empty() {
        return Err(BenchError::NoSamples);
    }
    match engine {
        Engine::Tract => compare_tract(models, samples, rounds),
        #[cfg(feature = "ort")]
        Engine::Ort(opts) => {
            let sessions = models
                .iter()
                .map(|m| super::ort::OrtSession::new(m, opts))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&super::ort::OrtSession> = sessions.iter().collect();
            Ok(super::ort::compare_latency(&refs, samples, rounds)?)
        }
    }
}

fn compare_tract(
    models: &[&Model],
    samples: &[Vec<(String, HostTensor)>],
    r: &Rounds,
) -> Result<Vec<Latency>, BenchError> {
    let runners = models
        .iter()
        .map(|m| tract_runner(m, &samples[0]))
        .collect::<Result<Vec<_>, _>>()?;
    let feeds: Vec<Vec<Vec<(String, HostTensor)>>> = runners
        .iter()
        .map(|rn| {
            let names = rn.input_names();
            samples
                .iter()
                .map(|s| {
                    s.iter()
                        .filter(|(n, _)| names.contains(n))
                        .cloned()
                        .collect()
                })
                .collect()
        })
        .collect();
    let time_once = |k: usize, n: usize| -> Result<f64, RuntimeError> {
        let t0 = Instant::now();
        for i in 0..n {
            runners[k].run(&feeds[k][i % feeds[k].len()])?;
        }
        Ok(t0.elapsed().as_secs_f64() * 1e3 / n as f64)
    };
    Ok(alternate(runners.len(), r, time_once)?)
}

/// The alternating-rounds loop both engines share: warm every model up,
/// then per round time `iters` runs of each in turn (`time_once(k, n)`:
/// mean ms per run of `n` runs of model `k`); ratios to the first model
/// per round, medians over rounds.
pub(crate) fn alternate<E>(
    models: usize,
    r: &Rounds,
    mut time_once: impl FnMut(usize, usize) -> Result<f64, E>,
) -> Result<Vec<Latency>, E> {
    let iters = r.iters.max(1);
    for k in 0..models {
        time_once(k, r.warmup.unwrap_or((iters / 4).max(2)).max(1))?;
    }
    let mut times = vec![Vec::with_capacity(r.rounds.max(1)); models];
    for _ in 0..r.rounds.max(1) {
        for (k, t) in times.iter_mut().enumerate() {
            t.push(time_once(k, iters)?);
        }
    }
    let Some(base) = times.first().cloned() else {
        return Ok(Vec::new());
    };
    Ok(times
        .into_iter()
        .map(|round_ms| {
            let ratios: Vec<f64> = base.iter().zip(&round_ms).map(|(b, c)| b / c).collect();
            Latency {
                median_ms: median(&round_ms),
                ratio: median(&ratios),
                ratios,
                round_ms,
            }
        })
        .collect())
}
