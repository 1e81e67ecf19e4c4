//! `--method auto`, per tensor: each activation gets the clip range that
//! costs the ops reading it least, measured.
//!
//! Which clip rule suits a tensor depends on the tensor: a Relu output
//! with a long thin tail wants a percentile, a tensor whose extremes carry
//! the signal (a detector's objectness logits, a softmax input) wants its
//! full range, and the whole-model choice (`method.rs`) can only pick one
//! for all. Here every tensor `T` that gets a Q/DQ pair is tried with each
//! candidate rule (minmax, percentiles 99.9/99.99/99.999, entropy, mse,
//! all folded from the same statistics), and the rule kept is the one
//! whose fake-quantized `T` moves the outputs of the ops reading `T` least
//! — measured by running each reader alone in tract on `T` as calibration
//! captured it (the reader's other inputs in float), on the first
//! calibration samples: the error a range causes downstream, not its own
//! rounding error. Captures are bounded ([`CAPTURE_BYTES`]): readers are
//! measured in batches whose inputs fit, on fewer samples where tensors
//! are large. The measured error of every candidate is reported; the
//! choice prints as `fold-calibration{…,ranges=["T=percentile{p=99.9}",…]}`,
//! so a replay measures nothing.
//!
//! The readers are measured one at a time, each with only its own input
//! quantized: a local, greedy criterion. The driver therefore scores the
//! per-tensor ranges against the best single rule on the whole model and
//! keeps them only where they do not lose.

use std::collections::{BTreeMap, BTreeSet};

use super::{QuantizeError, QuantizeOptions};
use crate::calib::hist::FloatHist;
use crate::ir::{At, Graph, Model, NodeId, ValueId};
use crate::passes::PassContext;
use crate::proto::ValueInfoProto;
use crate::quant::params::{fold, ActConfig, ActParams};
use crate::quant::range::Method;
use crate::runtime::RunnerCache;
use crate::tensorio::HostTensor;

/// The rules each tensor is tried with.
pub fn candidates() -> [Method; 6] {
    [
        Method::Mse,
        Method::Percentile { p: 99.9 },
        Method::Percentile { p: 99.99 },
        Method::Percentile { p: 99.999 },
        Method::Entropy,
        Method::Minmax,
    ]
}

/// Bytes of captured tensors held at once (per batch of readers, over all
/// its samples).
pub const CAPTURE_BYTES: usize = 256 << 20;

/// Samples a reader is measured on, at most.
const SAMPLES: usize = 4;

/// A relative error this much lower than the base rule's (1%) is needed to
/// move a tensor off it: below that the measurement cannot tell them apart.
const MIN_GAIN: f64 = 0.01;

pub use crate::passes::context::TensorChoice;

/// One reader of a quantized tensor: the op, and which of its inputs is
/// the tensor.
struct Reader {
    node: NodeId,
    tensor: ValueId,
}

/// The per-tensor choice for `m`, calibrated in `cx`, with `base` the
/// whole-model rule; `None` when nothing could be measured (no data).
pub fn choose(
    m: &Model,
    cx: &PassContext,
    opts: &QuantizeOptions,
    base: Method,
) -> Result<Option<Vec<TensorChoice>>, QuantizeError> {
    // Ranges are fitted on the held-out statistics and measured on the
    // samples held out of them (the first ones), when calibration kept
    // them apart.
    let stats = cx
        .analyses
        .holdout_stats
        .as_ref()
        .or(cx.analyses.stats.as_ref());
    let (Some(stats), Some(data)) = (stats, cx.inputs().calib_data.as_ref()) else {
        return Ok(None);
    };
    let g = &m.graph;
    let sel = crate::plan::Selection {
        target: opts.target,
        exclude: opts.exclude.clone(),
        op_types: opts.op_types.clone(),
        ..Default::default()
    };
    let p = crate::plan::plan(m, &sel, opts.per_channel);
    // Readers of every quantized tensor whose statistics are its own.
    let mut readers: Vec<Reader> = Vec::new();
    for &v in &p.activations {
        if p.param_source(v) != v || !stats.tensors.contains_key(g.name(v)) {
            continue;
        }
        for n in g.user_nodes(v) {
            let node = g.node(n);
            if node.has_subgraphs() || node.outputs().iter().flatten().count() == 0 {
                continue;
            }
            readers.push(Reader { node: n, tensor: v });
        }
    }
    if readers.is_empty() {
        return Ok(None);
    }
    let cfg = ActConfig {
        method: base,
        qtype: opts.activations,
        symmetric: opts
            .symmetric_activations
            .unwrap_or(opts.activations.is_signed()),
        reduce_range: opts.reduce_range,
        pow2: opts.pow2_scales,
    };
    let threads = opts.threads.unwrap_or_else(crate::runtime::default_threads);
    let specs = crate::calib::data::input_specs(m);
    let shapes = &cx.inputs().input_shapes;
    // Per tensor: per rule, summed error and reference energy over readers.
    let mut err: BTreeMap<ValueId, Vec<(f64, f64)>> = BTreeMap::new();
    let rules = candidates();
    let held = match cx.analyses.held_out {
        0 => data.len(),
        k => k,
    };
    for batch in batches(g, &readers, data.len().min(SAMPLES).min(held)) {
        let (batch, samples) = batch;
        let wanted: BTreeSet<String> = batch
            .iter()
            .flat_map(|r| live_inputs(g, r.node))
            .map(|v| g.name(v).to_string())
            .collect();
        let capture = RunnerCache::new(m, wanted.iter().cloned().collect());
        let mut captured: Vec<BTreeMap<String, HostTensor>> = Vec::new();
        for i in 0..samples {
            let x = data.load(i, &specs, shapes)?;
            let out = capture.run(&x).map_err(|source| {
                QuantizeError::Usage(format!(
                    "per-tensor ranges: a calibration run failed: {source}"
                ))
            })?;
            let n_out = g.outputs().len();
            let mut map: BTreeMap<String, HostTensor> = BTreeMap::new();
            for (name, t) in out.into_iter().skip(n_out) {
                map.insert(name, t);
            }
            // Graph inputs among the reader inputs come from the sample.
            for (name, t) in x {
                if wanted.contains(&name) {
                    map.insert(name, t);
                }
            }
            captured.push(map);
        }
        let results = crate::runtime::par_map(batch.len(), threads, |i| {
            let r = batch[i];
            let h = &stats.tensors[g.name(r.tensor)];
            Ok::<_, QuantizeError>(measure(m, r, h, &cfg, &rules, &captured))
        })?;
        for (r, res) in batch.iter().zip(results) {
            let Some(res) = res else { continue };
            let e = err
                .entry(r.tensor)
                .or_insert_with(|| vec![(0.0, 0.0); rules.len()]);
            for (acc, (d, s)) in e.iter_mut().zip(res) {
                acc.0 += d;
                acc.1 += s;
            }
        }
    }
    let base_ix = rules.iter().position(|&r| r == base);
    let mut out = Vec::new();
    for (v, e) in err {
        let rel: Vec<f64> = e
            .iter()
            .map(|&(d, s)| if s > 0.0 { d / s } else { d })
            .collect();
        let base_err = base_ix.map(|i| rel[i]).unwrap_or(f64::INFINITY);
        let (best, best_err) =
            rel.iter()
                .enumerate()
                .fold((base_ix.unwrap_or(0), base_err), |acc, (i, &x)| {
                    if x < acc.1 {
                        (i, x)
                    } else {
                        acc
                    }
                });
        let keep = if best_err < base_err * (1.0 - MIN_GAIN) {
            rules[best]
        } else {
            base
        };
        out.push(TensorChoice {
            tensor: g.name(v).to_string(),
            method: keep.to_string(),
            errors: rules
                .iter()
                .zip(&rel)
                .map(|(r, &x)| (r.to_string(), x))
                .collect(),
        });
    }
    Ok(Some(out))
}

/// The non-constant inputs of `n`.
fn live_inputs(g: &Graph, n: NodeId) -> Vec<ValueId> {
    g.node(n)
        .inputs()
        .iter()
        .flatten()
        .copied()
        .filter(|&v| g.constant(v).is_none())
        .collect()
}

/// Readers in batches whose captured inputs fit [`CAPTURE_BYTES`], each
/// with the samples it is measured on (fewer for large tensors).
fn batches<'a>(
    g: &Graph,
    readers: &'a [Reader],
    max_samples: usize,
) -> Vec<(Vec<&'a Reader>, usize)> {
    let bytes = |v: ValueId| -> usize {
        g.static_shape(v)
            .map(|s| s.iter().product::<usize>() * 4)
            .unwrap_or(1 << 20)
    };
    let mut out = Vec::new();
    let mut cur: Vec<&Reader> = Vec::new();
    let mut seen: BTreeSet<ValueId> = BTreeSet::new();
    let mut cur_bytes = 0usize;
    let per_batch = CAPTURE_BYTES / max_samples.max(1);
    for r in readers {
        let add: usize = live_inputs(g, r.node)
            .into_iter()
            .filter(|v| !seen.contains(v))
            .map(bytes)
            .sum();
        if !cur.is_empty() && cur_bytes + add > per_batch {
            out.push((std::mem::take(&mut cur), max_samples));
            seen.clear();
            cur_bytes = 0;
        }
        seen.extend(live_inputs(g, r.node));
        cur_bytes += add;
        cur.push(r);
    }
    if !cur.is_empty() {
        out.push((cur, max_samples));
    }
    // A batch of one reader larger than the budget is measured on fewer
    // samples.
    out.into_iter()
        .map(|(b, k)| {
            let need: usize = b
                .iter()
                .flat_map(|r| live_inputs(g, r.node))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(bytes)
                .sum();
            let k = if need * k > CAPTURE_BYTES {
                (CAPTURE_BYTES / need.max(1)).max(1)
            } else {
                k
            };
            (b, k)
        })
        .collect()
}

/// Runs reader `r` alone on the captured inputs, with its tensor as
/// captured and fake-quantized by each rule: per rule, the error energy of
/// its outputs and their energy. `None` when the reader cannot be run alone.
fn measure(
    m: &Model,
    r: &Reader,
    h: &FloatHist,
    cfg: &ActConfig,
    rules: &[Method],
    captured: &[BTreeMap<String, HostTensor>],
) -> Option<Vec<(f64, f64)>> {
    let g = &m.graph;
    let mini = alone(m, r.node)?;
    let cache = RunnerCache::new(&mini, vec![]);
    let params: Vec<ActParams> = rules
        .iter()
        .map(|&method| fold(h, &ActConfig { method, ..*cfg }))
        .collect();
    let tname = g.name(r.tensor).to_string();
    let names: Vec<String> = live_inputs(g, r.node)
        .into_iter()
        .map(|v| g.name(v).to_string())
        .collect();
    let mut acc = vec![(0.0f64, 0.0f64); rules.len()];
    for sample in captured {
        let inputs: Option<Vec<(String, HostTensor)>> = names
            .iter()
            .map(|n| sample.get(n).map(|t| (n.clone(), t.clone())))
            .collect();
        let inputs = inputs?;
        let reference = cache.run(&inputs).ok()?;
        for (k, p) in params.iter().enumerate() {
            let q: Vec<(String, HostTensor)> = inputs
                .iter()
                .map(|(n, t)| {
                    if *n == tname {
                        (n.clone(), fake_quant(t, p))
                    } else {
                        (n.clone(), t.clone())
                    }
                })
                .collect();
            let out = cache.run(&q).ok()?;
            for ((_, a), (_, b)) in reference.iter().zip(&out) {
                let (HostTensor::F32(a), HostTensor::F32(b)) = (a, b) else {
                    continue;
                };
                for (&x, &y) in a.iter().zip(b.iter()) {
                    let (x, y) = (x as f64, y as f64);
                    if x.is_finite() && y.is_finite() {
                        acc[k].0 += (x - y) * (x - y);
                        acc[k].1 += x * x;
                    }
                }
            }
        }
    }
    Some(acc)
}

/// `t` through QuantizeLinear → DequantizeLinear with `p`.
fn fake_quant(t: &HostTensor, p: &ActParams) -> HostTensor {
    let HostTensor::F32(a) = t else {
        return t.clone();
    };
    let (lo, hi) = p.qtype.bounds(false, false);
    HostTensor::F32(
        a.mapv(|x| crate::quant::dequantize(crate::quant::quantize(x, p.affine, lo, hi), p.affine)),
    )
}

/// A model of `n` alone: its live inputs become graph inputs (typed as in
/// `m`, shapes left to the samples), its constants come along, its
/// outputs are the graph's.
fn alone(m: &Model, n: NodeId) -> Option<Model> {
    let g = &m.graph;
    let node = g.node(n);
    let mut sub = Graph::new();
    let mut map: BTreeMap<ValueId, ValueId> = BTreeMap::new();
    for v in node.inputs().iter().flatten().copied() {
        if map.contains_key(&v) {
            continue;
        }
        let nv = match g.constant(v) {
            Some(t) => sub.add_initializer(t.clone()),
            None => {
                let ty = g.value_type(v)?;
                let elem = crate::ir::types::as_tensor(&ty)?.elem_type?;
                sub.add_input(ValueInfoProto {
                    name: Some(g.name(v).to_string()),
                    r#type: Some(crate::ir::types::tensor_type_dims(elem, None)),
                    ..Default::default()
                })
            }
        };
        map.insert(v, nv);
    }
    let inputs: Vec<Option<ValueId>> = node.inputs().iter().map(|i| i.map(|v| map[&v])).collect();
    let outs: Vec<String> = node
        .outputs()
        .iter()
        .map(|o| o.map(|v| g.name(v).to_string()).unwrap_or_default())
        .collect();
    let out_refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let proto = node.op()?.clone();
    let (_, vals) = sub.add_op(proto, &inputs, &out_refs, At::End);
    for (v, name) in vals.iter().zip(&outs) {
        if name.is_empty() {
            continue;
        }
        sub.push_output(
            *v,
            ValueInfoProto {
                name: Some(name.clone()),
                ..Default::default()
            },
        );
    }
    Some(Model {
        meta: m.meta.clone(),
        graph: sub,
        dir: m.dir.clone(),
    })
}
