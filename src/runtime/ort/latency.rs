//! End-to-end latency of several sessions side by side, in alternating
//! rounds: the method of `eval/tools/speed.py`, so the two agree.
//!
//! Every session is loaded first (the caller holds them); each is warmed up
//! with `max(2, iters / 4)` runs; then each of `rounds` rounds times
//! `iters` runs of every session in turn (first, second, …), cycling
//! through the samples (`samples[i % len]`), each session fed only the
//! inputs it takes. A session's time for a round is the mean per run; its
//! latency is the median over rounds. The ratio first/other is taken per
//! round — the sessions of one round ran under the same machine load — and
//! its median is what to quote; absolute times drift on shared machines.
//!
//! Unlike Python, inputs are converted to ORT values once, before timing,
//! and outputs are not copied out; both are per-run overheads outside ORT
//! that the script pays on every session alike.

use std::time::Instant;

use super::{OrtError, OrtSession};
use crate::tensorio::HostTensor;

/// How to time; the defaults are `speed.py`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyOptions {
    /// Rounds (at least 1); 5.
    pub rounds: usize,
    /// Runs per session per round (at least 1); 20.
    pub iters: usize,
    /// Warm-up runs per session; `None` is `max(2, iters / 4)`.
    pub warmup: Option<usize>,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            rounds: 5,
            iters: 20,
            warmup: None,
        }
    }
}

/// One session's times.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionLatency {
    /// Mean ms per run in each round.
    pub round_ms: Vec<f64>,
    /// Median of `round_ms`.
    pub median_ms: f64,
    /// First session's round time / this one's, per round (> 1: this one
    /// is faster). For the first session itself, all 1.
    pub ratios: Vec<f64>,
    /// Median of `ratios`: the speed-up to quote.
    pub ratio: f64,
}

/// Times `sessions` (the baseline first) on `samples`; see the module docs.
pub fn compare_latency(
    sessions: &[&OrtSession],
    samples: &[Vec<(String, HostTensor)>],
    opts: &LatencyOptions,
) -> Result<Vec<SessionLatency>, OrtError> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    if samples.is_empty() {
        return Err(OrtError::NoSamples);
    }
    let rounds = opts.rounds.max(1);
    let iters = opts.iters.max(1);
    let warmup = opts.warmup.unwrap_or((iters / 4).max(2));
    // Per session, per sample: its inputs as ORT values.
    let feeds = sessions
        .iter()
        .map(|s| {
            samples
                .iter()
                .map(|sample| {
                    let mine: Vec<(String, HostTensor)> = sample
                        .iter()
                        .filter(|(n, _)| s.inputs().iter().any(|i| &i.name == n))
                        .cloned()
                        .collect();
                    s.prepare(&mine)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let time_once = |k: usize, n: usize| -> Result<f64, OrtError> {
        let f = &feeds[k];
        let t0 = Instant::now();
        for i in 0..n {
            sessions[k].run_values(&f[i % f.len()], false)?;
        }
        Ok(t0.elapsed().as_secs_f64() * 1000.0 / n as f64)
    };
    for k in 0..sessions.len() {
        time_once(k, warmup.max(1))?;
    }
    let mut times = vec![Vec::with_capacity(rounds); sessions.len()];
    for _ in 0..rounds {
        for (k, t) in times.iter_mut().enumerate() {
            t.push(time_once(k, iters)?);
        }
    }
    let base = times[0].clone();
    Ok(times
        .into_iter()
        .map(|round_ms| {
            let ratios: Vec<f64> = base.iter().zip(&round_ms).map(|(b, c)| b / c).collect();
            SessionLatency {
                median_ms: median(&round_ms),
                ratio: median(&ratios),
                ratios,
                round_ms,
            }
        })
        .collect())
}

/// Python's `statistics.median`: the middle value, or the mean of the two
/// middle values.
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[m],
        _ => (s[m - 1] + s[m]) / 2.0,
    }
}
