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

/// How to time: [`crate::runtime::bench::Rounds`], whose defaults are
/// `speed.py`'s (5 rounds of 20 runs, warm-up `max(2, iters / 4)`).
pub type LatencyOptions = crate::runtime::bench::Rounds;

/// One session's times: [`crate::runtime::bench::Latency`] (per-round
/// means, their median, ratios to the first session per round and their
/// median, the speed-up to quote).
pub type SessionLatency = crate::runtime::bench::Latency;

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
    crate::runtime::bench::alternate(sessions.len(), opts, time_once)
}
