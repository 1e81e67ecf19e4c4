//! `select-speed`: keeps int8 only where it makes the model faster in the
//! target's runtime, by measuring.
//!
//! # What
//! Builds the candidate with every compute op (Conv, MatMul, Gemm) of the
//! target's placement quantized, profiles it and the float model node by
//! node in the target's runtime (onnxruntime for `ort-cpu` when its library
//! loads, tract for `tract`), and charges each runtime node to the compute
//! ops whose quantization made it (`plan::speed`): each compute op gets an
//! estimated float and int8 cost and a class — int8 pays (≥ 10% faster),
//! breaks even, or loses (≥ 10% slower). Then whole candidates —
//! everything, the ops that pay or break even, the ops that pay, none —
//! are timed end to end against the float model in alternating rounds, in
//! the written form (interface restored: onnxruntime fuses differently at
//! fixed shapes), and the fastest is kept; on near-ties (within 5%) the
//! one with more int8 (a smaller file), except on a target that stores the
//! weights of float ops as int8 (tract): there every candidate's file is
//! about as small, float compute is the more accurate, and a near-tie goes
//! to the one with fewer int8 ops. The candidate with none runs the float
//! graph there (its weights are expanded at load) and counts as exactly
//! the float model's speed. Classes rather than raw timings keep the choice
//! stable from run to run; `--no-speed-select` or a saved selection makes
//! it independent of timing altogether. The choice is recorded in the pass's options
//! (`nodes=[…]`), so the printed pipeline replays it without timing
//! anything: timings vary from run to run, a replay must not.
//!
//! Without a runtime to measure in (`ort-cpu` when no `libonnxruntime` can
//! be found) or data to time on (statistics given without `--calib`),
//! every compute op stays in the selection and a remark says so:
//! onnxruntime's own quantizer does the same.
//!
//! # Example
//! ```text
//! # RUN: …,fold-calibration,select-speed{target=ort-cpu},insert-qdq{target=ort-cpu}
//! printed after the run: select-speed{…,nodes=[conv_big,mm_1]}
//! ```
//!
//! # Options
//! * `target` (default `ort-cpu`), `per-channel`, `weights`, `exclude`,
//!   `op-types`: as the `insert-qdq` that follows, so the candidates are
//!   what it will write.
//! * `runs` (default 10): timed runs per profile.
//! * `nodes`: the compute ops to keep, skipping the measurement (what a
//!   run prints back).
//!
//! # Preconditions
//! Activation parameters (`fold-calibration` before it) and calibration
//! data (its first samples are what is timed), unless `nodes` is given.
//!
//! # Numerics
//! None by itself: it decides what `insert-qdq` touches.
//!
//! # Errors
//! No parameters or data; a label in `nodes` that names no compute op; a
//! runtime that cannot run the model.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::context::{Analyses, Inputs, SpeedChoice};
use super::{Changed, Pass, PassContext, PassError};
use crate::ir::Model;
use crate::plan::COMPUTE_OPS;
use crate::runtime::bench::{self, Engine, Rounds};
use crate::target::{Runtime, Target};
use crate::tensorio::HostTensor;

const NAME: &str = "select-speed";

/// The reason a compute op left out by this pass is reported with.
const WHY: &str = "left in float by speed selection: int8 here was not measured to make the model faster in the target's runtime";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Options {
    pub target: String,
    pub per_channel: bool,
    pub weights: String,
    pub exclude: Vec<String>,
    pub op_types: Vec<String>,
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: "ort-cpu".into(),
            per_channel: true,
            weights: "s8".into(),
            exclude: vec![],
            op_types: vec![],
            runs: 10,
            nodes: None,
        }
    }
}

pub struct SelectSpeed {
    opts: Options,
    target: Target,
}

impl SelectSpeed {
    pub fn from_options(o: serde_json::Value) -> Result<Self, PassError> {
        let opts: Options = super::parse_options(NAME, o)?;
        let target = Target::parse(&opts.target).ok_or_else(|| PassError::Options {
            pass: NAME.into(),
            message: format!(
                "target '{}': expected one of ort-cpu, tract, portable",
                opts.target
            ),
        })?;
        if opts.runs == 0 {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: "runs must be at least 1".into(),
            });
        }
        Ok(SelectSpeed { opts, target })
    }

    /// The tail that turns the calibrated model into a candidate keeping
    /// `compute` int8 (everything when `None`).
    fn build(
        &self,
        m: &Model,
        analyses: &Analyses,
        compute: Option<BTreeSet<String>>,
    ) -> Result<Model, PassError> {
        let insert = super::insert_qdq::Options {
            target: self.opts.target.clone(),
            per_channel: self.opts.per_channel,
            weights: self.opts.weights.clone(),
            exclude: self.opts.exclude.clone(),
            op_types: self.opts.op_types.clone(),
            ..Default::default()
        };
        let mut p = super::Pipeline::default();
        p.push(Box::new(super::insert_qdq::InsertQdq::new(insert)?));
        p.push(Box::new(super::dce::Dce));
        if self.target.spec().format == crate::target::Format::QOperator {
            p.append(super::Pipeline::parse("lower-qdq")?);
        }
        // As written: onnxruntime fuses differently at fixed shapes (with
        // calibration-fixed dims its MatMul+Add → Gemm fusion runs first
        // and leaves MiniLM's QDQ MatMuls unfused, 0.65× float against 2.4×
        // as written), so candidates are timed with the interface restored.
        p.push(Box::new(super::restore_interface::RestoreInterface));
        let mut a = analyses.clone();
        if let Some(c) = compute {
            a.keep_compute(c, WHY);
        }
        let mut cx = PassContext::resume(Inputs::default(), a);
        let mut q = m.clone();
        let mut pm = super::PassManager::new(p);
        pm.verify_each = false;
        pm.run(&mut q, &mut cx)?;
        Ok(q)
    }
}

impl SelectSpeed {
    /// The float model as the user has it: the interface restored.
    fn as_written(&self, m: &Model, analyses: &Analyses) -> Result<Model, PassError> {
        let mut p = super::Pipeline::default();
        p.push(Box::new(super::restore_interface::RestoreInterface));
        let mut cx = PassContext::resume(Inputs::default(), analyses.clone());
        let mut q = m.clone();
        super::PassManager::new(p).run(&mut q, &mut cx)?;
        Ok(q)
    }
}

/// The runtime to time in, or why none can be.
pub fn engine(target: Target, inputs: &Inputs) -> Result<Engine, String> {
    match target.spec().runtime {
        Runtime::Tract => Ok(Engine::Tract),
        Runtime::Ort => ort_engine(inputs),
    }
}

#[cfg(feature = "ort")]
fn ort_engine(inputs: &Inputs) -> Result<Engine, String> {
    let opts = crate::runtime::ort::OrtOptions {
        library: inputs.ort_library.clone(),
        ..Default::default()
    };
    crate::runtime::ort::library::load(opts.library.as_deref()).map_err(|e| e.to_string())?;
    Ok(Engine::Ort(opts))
}

#[cfg(not(feature = "ort"))]
fn ort_engine(_: &Inputs) -> Result<Engine, String> {
    Err("this onnxq was built without the `ort` feature".into())
}

impl Pass for SelectSpeed {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> serde_json::Value {
        super::options_json(&self.opts)
    }

    fn run(&mut self, m: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let chosen = match &self.opts.nodes {
            Some(nodes) => {
                super::select_coverage::check_labels(m, nodes, NAME)?;
                nodes.iter().cloned().collect()
            }
            None => self.measure(m, cx)?,
        };
        self.opts.nodes = Some(chosen.iter().cloned().collect());
        cx.analyses.keep_compute(chosen, WHY);
        Ok(Changed::No)
    }
}

impl SelectSpeed {
    /// Times candidates and returns the compute ops to keep int8.
    fn measure(&self, m: &Model, cx: &mut PassContext) -> Result<BTreeSet<String>, PassError> {
        let failed = |message: String| PassError::Failed {
            pass: NAME.into(),
            message,
        };
        if cx.analyses.act_params.is_none() {
            return Err(PassError::Precondition {
                pass: NAME.into(),
                message: "no quantization parameters: run `calibrate,fold-calibration` before this pass, or give the nodes to keep (`nodes=[...]`)".into(),
            });
        }
        let full = self.build(m, &cx.analyses, None)?;
        let all: Vec<String> = quantized_compute(&full);
        if all.is_empty() {
            // No compute op to choose for: nothing to time.
            return Ok(BTreeSet::new());
        }
        let engine = if cx.inputs().calib_data.is_none() {
            Err("no data to time on: statistics were given without --calib".to_string())
        } else {
            engine(self.target, cx.inputs())
        };
        let engine = match engine {
            Ok(e) => e,
            Err(why) => {
                cx.remark(
                    NAME,
                    "<model>",
                    format!("not measured in {} ({why}): every compute op stays int8, as onnxruntime's own quantizer places them; pass --calib DIR and --ort-lib PATH (or set ORT_DYLIB_PATH) to measure", self.target.spec().summary),
                );
                cx.analyses.speed = Some(SpeedChoice {
                    runtime: "not measured".into(),
                    fallback_reason: Some(why),
                    kept: all.len(),
                    of: all.len(),
                    ..Default::default()
                });
                return Ok(all.into_iter().collect());
            }
        };
        let samples = samples(m, cx.inputs())?;
        let float = self.as_written(m, &cx.analyses)?;
        let ranked = self.rank(&engine, (&float, m), &full, &samples[0], cx, &failed)?;
        // Candidates by class, so that timing noise moves an op only when
        // its measured saving sits at a class boundary: everything; the
        // ops that pay or break even; the ops that pay; none.
        let count = |c: Gain| ranked.iter().filter(|r| r.1 <= c).count();
        let mut ks: Vec<usize> = vec![all.len(), count(Gain::Even), count(Gain::Pays), 0];
        ks.sort_unstable_by(|a, b| b.cmp(a));
        ks.dedup();
        let mut models = vec![float];
        for &k in &ks {
            let keep: BTreeSet<String> = ranked.iter().take(k).map(|(l, _)| l.clone()).collect();
            models.push(if k == all.len() {
                full.clone()
            } else {
                self.build(m, &cx.analyses, Some(keep))?
            });
        }
        let float_ms = bench::compare(
            &engine,
            &[&models[0]],
            &samples,
            &Rounds::for_latency(1.0, 1.0, 1),
        )
        .map_err(|e| failed(e.to_string()))?[0]
            .median_ms;
        let rounds = Rounds::for_latency(float_ms, 200.0, 5);
        let refs: Vec<&Model> = models.iter().collect();
        let lat =
            bench::compare(&engine, &refs, &samples, &rounds).map_err(|e| failed(e.to_string()))?;
        let candidates: Vec<(usize, f64)> = ks
            .iter()
            .copied()
            .zip(lat[1..].iter().map(|l| l.ratio))
            .collect();
        let (k, ratio) = pick(&candidates, self.target.spec().folds_weight_dq.is_some());
        cx.remark(
            NAME,
            "<model>",
            format!(
                "{k} of {} compute ops kept int8: {ratio:.2}x the float model's speed in {} (candidates, ops kept: ratio: {})",
                all.len(),
                engine.name(),
                candidates.iter().map(|(k, r)| format!("{k}: {r:.2}x")).collect::<Vec<_>>().join(", ")
            ),
        );
        let keep: BTreeSet<String> = ranked.iter().take(k).map(|(l, _)| l.clone()).collect();
        if let Some(s) = cx.analyses.speed.as_mut() {
            s.candidates = candidates;
            s.kept = k;
            s.of = all.len();
            s.ratio = ratio;
        }
        Ok(keep)
    }

    /// Profiles the float model `m` and the all-int8 candidate and ranks
    /// the candidate's compute ops: those int8 makes faster first, then
    /// those it leaves even, then those it slows; MACs (from `shaped`, the
    /// model at calibration shapes) order each class.
    fn rank(
        &self,
        engine: &Engine,
        (m, shaped): (&Model, &Model),
        full: &Model,
        sample: &[(String, HostTensor)],
        cx: &mut PassContext,
        failed: &dyn Fn(String) -> PassError,
    ) -> Result<Vec<(String, Gain)>, PassError> {
        let runs = self.opts.runs;
        let tf = bench::profile(engine, m, sample, runs).map_err(|e| failed(e.to_string()))?;
        let tq = bench::profile(engine, full, sample, runs).map_err(|e| failed(e.to_string()))?;
        let anchors = crate::plan::speed::anchors(full);
        let costs = crate::plan::speed::costs(&anchors, &tf, &tq);
        let macs: std::collections::BTreeMap<String, u64> =
            crate::analysis::cost::model_costs(shaped)
                .into_iter()
                .map(|c| (c.node, c.macs.unwrap_or(0)))
                .collect();
        // Ranked by class, then by MACs (largest first), then label: the
        // order is stable under timing noise except at class boundaries.
        let mut ranked: Vec<(String, Gain, u64)> = quantized_compute(full)
            .into_iter()
            .map(|l| {
                let gain = costs.get(&l).map_or(Gain::Even, |&(f, q)| Gain::of(f, q));
                let mac = macs.get(&l).copied().unwrap_or(0);
                (l, gain, mac)
            })
            .collect();
        ranked.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        let ranked: Vec<(String, Gain)> = ranked.into_iter().map(|(l, g, _)| (l, g)).collect();
        for (label, (f, q)) in &costs {
            cx.detail(
                NAME,
                label,
                format!(
                    "measured in {}: float {f:.3} ms, int8 {q:.3} ms",
                    engine.name()
                ),
            );
        }
        cx.analyses.speed = Some(SpeedChoice {
            runtime: engine.name().into(),
            costs: costs
                .iter()
                .map(|(l, (f, q))| (l.clone(), *f, *q))
                .collect(),
            ..Default::default()
        });
        Ok(ranked)
    }
}

/// How close to a tie two whole-model ratios must be to count as one.
const NEAR_TIE: f64 = 0.95;

/// The candidate kept among `(int8 compute ops, measured speed ratio)`,
/// listed from most int8 to none: the most int8 within [`NEAR_TIE`] of the
/// fastest (run-to-run noise of whole-model ratios is 1-3% here, so a
/// near-tie goes to the smaller file rather than to the luckier round),
/// or the fewest where float ops keep int8 weights (`weights_only`: every
/// file is about as small, float compute the more accurate, and the
/// candidate with none is the float graph itself, so it counts as exactly
/// the float model's speed); but never one measured slower than float
/// when another is not: the promise is a file no slower than the float
/// model.
fn pick(candidates: &[(usize, f64)], weights_only: bool) -> (usize, f64) {
    let judged: Vec<(usize, f64)> = candidates
        .iter()
        .map(|&(k, r)| (k, if k == 0 && weights_only { 1.0 } else { r }))
        .collect();
    let best = judged.iter().map(|c| c.1).fold(f64::MIN, f64::max);
    let floor = (best * NEAR_TIE).max(1.0_f64.min(best));
    let clears = |c: &&(usize, f64)| c.1 >= floor;
    *if weights_only {
        judged.iter().rev().find(clears)
    } else {
        judged.iter().find(clears)
    }
    .expect("invariant: the best candidate clears the floor")
}

/// What int8 does to one compute op's measured time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Gain {
    /// At least 10% faster.
    Pays,
    /// Within 10% either way (or not measurable on its own).
    Even,
    /// At least 10% slower.
    Loses,
}

impl Gain {
    fn of(float_ms: f64, int8_ms: f64) -> Gain {
        if int8_ms <= float_ms * 0.9 {
            Gain::Pays
        } else if int8_ms >= float_ms * 1.1 {
            Gain::Loses
        } else {
            Gain::Even
        }
    }
}

/// Labels of the compute ops a candidate quantized.
fn quantized_compute(q: &Model) -> Vec<String> {
    let g = &q.graph;
    g.ops()
        .into_iter()
        .filter(|&n| {
            let node = g.node(n);
            node.domain().is_empty()
                && COMPUTE_OPS.contains(&node.op_type())
                && node
                    .inputs()
                    .iter()
                    .flatten()
                    .any(|&v| g.producer_node(v).is("DequantizeLinear"))
                || matches!(node.op_type(), "QLinearConv" | "QLinearMatMul")
        })
        .map(|n| g.label(n).to_string())
        .collect()
}

/// Up to four calibration samples to time on (the first is profiled).
fn samples(m: &Model, inputs: &Inputs) -> Result<Vec<Vec<(String, HostTensor)>>, PassError> {
    let data = inputs
        .calib_data
        .as_ref()
        .ok_or_else(|| PassError::Precondition {
            pass: NAME.into(),
            message: "no data to time on: give --calib DIR (its first samples are timed), or the nodes to keep (`nodes=[...]`)".into(),
        })?;
    let specs = crate::calib::data::input_specs(m);
    (0..data.len().min(4))
        .map(|i| {
            data.load(i, &specs, &inputs.input_shapes)
                .map_err(|e| PassError::Precondition {
                    pass: NAME.into(),
                    message: e.to_string(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn near_ties_go_to_the_smaller_file_or_to_float_compute() {
        // onnxruntime: no weights-only storage, so more int8 is smaller.
        let c = [(62, 0.26), (12, 1.00), (6, 0.99), (0, 0.97)];
        assert_eq!(pick(&c, false), (12, 1.00));
        // tract: the float graph (int8 weights expanded at load) is as
        // small and counts as the float speed; a 1% gain is noise.
        assert_eq!(pick(&c, true), (0, 1.0));
        // A real gain still wins, with the fewest int8 ops within 5%.
        let c = [(21, 1.12), (18, 1.82), (17, 1.79), (0, 1.00)];
        assert_eq!(pick(&c, true), (17, 1.79));
        assert_eq!(pick(&c, false), (18, 1.82));
        // Never slower than float when another candidate is not.
        let c = [(6, 1.02), (0, 0.99)];
        assert_eq!(pick(&c, false), (6, 1.02));
    }
}
