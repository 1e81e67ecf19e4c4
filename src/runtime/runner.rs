//! [`Runner`]: a model loaded into tract and planned, run on host tensors.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tract_onnx::prelude::{
    f16, Datum, DatumType, IntoTValue, IntoTensor, OutletId, TValue, Tensor as TractTensor,
    TypedFact, TypedModel, TypedSimplePlan, TypedSimpleState,
};
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::ops::source::TypedSource;
use tract_onnx::tract_core::plan::SimplePlan;

use super::guard;
use super::load::{self, chain, datum_name, load_error, onnx_to_datum};
use super::timing::attribute;
use super::{PanicSite, RunOptions, RuntimeError};
use crate::ir::Model;
use crate::tensorio::HostTensor;

/// What the plan expects on one input.
#[derive(Clone, Debug)]
struct InputSlot {
    name: String,
    dt: DatumType,
    /// Concrete dimensions; `None` for a symbolic one.
    shape: Vec<Option<usize>>,
}

/// A model loaded into tract, ready to run.
#[derive(Debug)]
pub struct Runner {
    pub(super) plan: Arc<TypedSimplePlan>,
    /// The plan [`Runner::run_visit`] uses: it computes the graph outputs
    /// and returns only them (and any captured tensor the graph outputs do
    /// not need, see `tail`); captured tensors are handed to the visitor
    /// the moment their node has run, still hot in cache, and freed as soon
    /// as the graph no longer needs them instead of living to the end of
    /// the run. Observing hundreds of large intermediates after the run
    /// read them back from memory and cost calibration more than the model.
    visit_plan: Arc<TypedSimplePlan>,
    /// Per plan node id and output slot: the indices in `outputs` of the
    /// captured tensors it produces (several names can share an outlet).
    watch: HashMap<(usize, usize), Vec<usize>>,
    /// Captured tensors `visit_plan` returns after the graph outputs
    /// (constants and tensors the graph outputs do not depend on, which
    /// it would otherwise not compute): indices in `outputs`.
    tail: Vec<usize>,
    /// Graph outputs: the first entries of `outputs`.
    n_graph: usize,
    /// Activation Q/DQ pairs run as one op ([`RunOptions::fuse_qdq`]).
    fused_qdq: usize,
    /// Constant DequantizeLinear nodes folded
    /// ([`RunOptions::fold_weight_dequantize`]).
    folded_dq: usize,
    lowered: super::lower::Lowered,
    model_name: String,
    inputs: Vec<InputSlot>,
    outputs: Vec<String>,
    f16_to_f32: bool,
    /// Per plan node id: the ONNX node names it stands for.
    pub(super) groups: Vec<Vec<String>>,
    pub(super) unattributed: Vec<String>,
}

/// The plans [`Runner::new`] builds, with what they need.
struct Planned {
    output_names: Vec<String>,
    fused_qdq: usize,
    folded_dq: usize,
    lowered: super::lower::Lowered,
    plan: Arc<TypedSimplePlan>,
    visit_plan: Arc<TypedSimplePlan>,
    watch: HashMap<(usize, usize), Vec<usize>>,
    tail: Vec<usize>,
}

impl Runner {
    /// Loads `model` into tract with `opts`.
    pub fn new(model: &Model, opts: &RunOptions) -> Result<Runner, RuntimeError> {
        let model_name = load::model_name(model);
        let planned = guard::catch(|| Self::plans(model, opts, &model_name))
            .map_err(|p| panicked(&model_name, PanicSite::Loading, p))??;
        let Planned {
            output_names,
            fused_qdq,
            folded_dq,
            lowered,
            plan,
            visit_plan,
            watch,
            tail,
        } = planned;
        let tm = plan.model();
        let inputs = input_slots(tm).map_err(load_error(&model_name))?;
        let order: Vec<usize> = plan
            .order_without_consts()
            .iter()
            .copied()
            .filter(|&id| tm.nodes()[id].op_as::<TypedSource>().is_none())
            .collect();
        let (groups, unattributed) = attribute(model, tm, &order);
        Ok(Runner {
            plan,
            visit_plan,
            watch,
            tail,
            n_graph: model.graph.outputs().len(),
            fused_qdq,
            folded_dq,
            lowered,
            model_name,
            inputs,
            outputs: output_names,
            f16_to_f32: opts.f16_to_f32,
            groups,
            unattributed,
        })
    }

    /// Everything tract does to load `model`: the typed model, then the
    /// plans. Runs under [`guard::catch`].
    fn plans(model: &Model, opts: &RunOptions, model_name: &str) -> Result<Planned, RuntimeError> {
        let load = load_error(model_name);
        let built = load::typed_model(model, opts, model_name)?;
        let typed = Arc::new(built.model);
        let outlets = typed.output_outlets().map_err(&load)?.to_vec();
        let plan = SimplePlan::new(typed.clone()).map_err(&load)?;
        let n_graph = model.graph.outputs().len();
        let (visit_plan, watch, tail) = if outlets.len() == n_graph {
            // Nothing captured: the visiting plan is the plain one.
            (plan.clone(), HashMap::new(), Vec::new())
        } else {
            Self::visit_plan(&typed, &outlets, n_graph).map_err(&load)?
        };
        Ok(Planned {
            output_names: built.output_names,
            fused_qdq: built.fused_qdq,
            folded_dq: built.folded_dq,
            lowered: built.lowered,
            plan,
            visit_plan,
            watch,
            tail,
        })
    }

    /// Builds the plan for [`Runner::run_visit`] over `outlets` (graph
    /// outputs first, `n_graph` of them, then captured tensors).
    #[allow(clippy::type_complexity)]
    fn visit_plan(
        typed: &Arc<TypedModel>,
        outlets: &[OutletId],
        n_graph: usize,
    ) -> tract_onnx::prelude::TractResult<(
        Arc<TypedSimplePlan>,
        HashMap<(usize, usize), Vec<usize>>,
        Vec<usize>,
    )> {
        let graph_outlets = &outlets[..n_graph];
        // `new_for_outputs` is deprecated in favour of selecting the model's
        // outputs, which here must stay selected: they are what kept the
        // captured tensors from being fused away by the optimiser.
        #[allow(deprecated)]
        let graph_only = SimplePlan::new_for_outputs(typed.clone(), graph_outlets)?;
        let computed: BTreeSet<usize> = graph_only.order_without_consts().iter().copied().collect();
        let mut watch: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
        let mut tail = Vec::new();
        let mut plan_outlets = graph_outlets.to_vec();
        for (i, o) in outlets.iter().enumerate().skip(n_graph) {
            if computed.contains(&o.node) {
                watch.entry((o.node, o.slot)).or_default().push(i);
            } else {
                tail.push(i);
                plan_outlets.push(*o);
            }
        }
        let plan = if tail.is_empty() {
            graph_only
        } else {
            #[allow(deprecated)]
            SimplePlan::new_for_outputs(typed.clone(), &plan_outlets)?
        };
        Ok((plan, watch, tail))
    }

    /// How many activation Q/DQ pairs run fused ([`RunOptions::fuse_qdq`]).
    pub fn fused_qdq(&self) -> usize {
        self.fused_qdq
    }

    /// How many constant DequantizeLinear nodes were folded
    /// ([`RunOptions::fold_weight_dequantize`]).
    pub fn folded_dq(&self) -> usize {
        self.folded_dq
    }

    /// What was rewritten before the hand-over because tract cannot load
    /// it ([`super::lower`]).
    pub fn lowered(&self) -> super::lower::Lowered {
        self.lowered
    }

    /// Runtime input names, in the model's order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.name.clone()).collect()
    }

    /// Names of what [`Runner::run`] returns: graph outputs, then captures.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Matches named inputs to the plan's inputs, checking types and shapes.
    pub(super) fn prepare(
        &self,
        given: &[(String, HostTensor)],
    ) -> Result<Vec<TValue>, RuntimeError> {
        let expected = self.input_names();
        let mut by_name: HashMap<&str, &HostTensor> = HashMap::new();
        for (name, t) in given {
            if !expected.iter().any(|e| e == name) {
                return Err(RuntimeError::UnexpectedInput {
                    name: name.clone(),
                    expected,
                });
            }
            if by_name.insert(name.as_str(), t).is_some() {
                return Err(RuntimeError::DuplicateInput { name: name.clone() });
            }
        }
        let missing: Vec<String> = expected
            .iter()
            .filter(|e| !by_name.contains_key(e.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(RuntimeError::MissingInputs { missing, expected });
        }
        self.inputs
            .iter()
            .map(|slot| {
                let t = by_name[slot.name.as_str()];
                self.check_input(slot, t)?;
                Ok(to_tract(t, slot.dt, self.f16_to_f32).into_tvalue())
            })
            .collect()
    }

    fn check_input(&self, slot: &InputSlot, t: &HostTensor) -> Result<(), RuntimeError> {
        let host_dt = onnx_to_datum(t.dtype()).expect("invariant: host dtypes map to tract");
        let widened = self.f16_to_f32 && host_dt == DatumType::F16 && slot.dt == DatumType::F32;
        if host_dt != slot.dt.unquantized() && !widened {
            return Err(RuntimeError::InputDtype {
                name: slot.name.clone(),
                expected: datum_name(slot.dt),
                got: t.dtype_name().to_string(),
            });
        }
        let fits = t.shape().len() == slot.shape.len()
            && t.shape()
                .iter()
                .zip(&slot.shape)
                .all(|(g, w)| w.is_none_or(|w| w == *g));
        if !fits {
            let dims: Vec<String> = slot
                .shape
                .iter()
                .map(|d| d.map(|d| d.to_string()).unwrap_or_else(|| "?".into()))
                .collect();
            return Err(RuntimeError::InputShape {
                name: slot.name.clone(),
                expected: format!("[{}]", dims.join(",")),
                got: t.shape().to_vec(),
            });
        }
        Ok(())
    }

    pub(super) fn run_error(&self, e: tract_onnx::prelude::TractError) -> RuntimeError {
        RuntimeError::Run {
            model: self.model_name.clone(),
            detail: chain(&e),
        }
    }

    fn collect(&self, values: Vec<TValue>) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        self.outputs
            .iter()
            .zip(values)
            .map(|(name, v)| Ok((name.clone(), from_tract(name, v)?)))
            .collect()
    }

    /// Runs the model on named inputs (any order). Returns the graph outputs
    /// followed by the captured tensors, named.
    pub fn run(
        &self,
        inputs: &[(String, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        let values = self.prepare(inputs)?;
        self.guarded(&self.plan, || {
            let mut state = TypedSimpleState::new(&self.plan).map_err(|e| self.run_error(e))?;
            let out = state
                .run_plan_with_eval(values.into_iter().collect(), eval_node)
                .map_err(|e| self.run_error(e))?;
            self.collect(out.into_iter().collect())
        })
    }

    /// Runs `f`, a run of `plan`, under [`guard::catch`]: a panic in tract
    /// becomes [`RuntimeError::TractPanic`] naming the node it happened in.
    pub(super) fn guarded<T>(
        &self,
        plan: &TypedSimplePlan,
        f: impl FnOnce() -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        guard::catch(f).unwrap_or_else(|p| {
            let at = match p.node.and_then(|id| plan.model().nodes().get(id)) {
                Some(n) => PanicSite::Node {
                    name: n.name.clone(),
                    op: n.op.name().to_string(),
                },
                None => PanicSite::Running,
            };
            Err(panicked(&self.model_name, at, p))
        })
    }

    /// Runs the model, hands each captured tensor to `visit` without
    /// copying it, and returns the graph outputs. `visit` gets the
    /// tensor's index in [`Runner::output_names`], name, shape, and
    /// `Some(values)` for float32 (`None` for other types); it is called
    /// while the model runs, right after the node that makes the tensor
    /// (see `visit_plan`). Calibration observes hundreds of large
    /// intermediates per sample this way.
    pub fn run_visit(
        &self,
        inputs: &[(String, HostTensor)],
        mut visit: impl FnMut(usize, &str, &[usize], Option<&[f32]>),
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        fn show(
            visit: &mut impl FnMut(usize, &str, &[usize], Option<&[f32]>),
            i: usize,
            name: &str,
            v: &TValue,
        ) {
            let shape = v.shape();
            let view = if v.datum_type() == DatumType::F32 {
                v.to_plain_array_view::<f32>().ok()
            } else {
                None
            };
            match view {
                Some(a) => match a.as_slice() {
                    Some(sl) => visit(i, name, shape, Some(sl)),
                    None => visit(
                        i,
                        name,
                        shape,
                        Some(&a.iter().copied().collect::<Vec<f32>>()),
                    ),
                },
                None => visit(i, name, shape, None),
            }
        }
        let values = self.prepare(inputs)?;
        self.guarded(&self.visit_plan, || {
            let mut state =
                TypedSimpleState::new(&self.visit_plan).map_err(|e| self.run_error(e))?;
            let out = state
                .run_plan_with_eval(values.into_iter().collect(), |ctx, op_state, node, ins| {
                    let r = eval_node(ctx, op_state, node, ins)?;
                    for (slot, v) in r.iter().enumerate() {
                        if let Some(ixs) = self.watch.get(&(node.id, slot)) {
                            for &i in ixs {
                                guard::outside(|| show(&mut visit, i, &self.outputs[i], v));
                            }
                        }
                    }
                    Ok::<_, tract_onnx::prelude::TractError>(r)
                })
                .map_err(|e| self.run_error(e))?;
            for (&i, v) in self.tail.iter().zip(out.iter().skip(self.n_graph)) {
                guard::outside(|| show(&mut visit, i, &self.outputs[i], v));
            }
            self.outputs[..self.n_graph]
                .iter()
                .zip(out)
                .map(|(name, v)| Ok((name.clone(), from_tract(name, v)?)))
                .collect()
        })
    }
}

/// What the plan of `tm` expects on each input.
fn input_slots(tm: &TypedModel) -> tract_onnx::prelude::TractResult<Vec<InputSlot>> {
    let mut inputs = Vec::new();
    for (ix, o) in tm.input_outlets()?.iter().enumerate() {
        let fact: &TypedFact = tm.input_fact(ix)?;
        inputs.push(InputSlot {
            name: tm.node(o.node).name.clone(),
            dt: fact.datum_type,
            shape: fact.shape.iter().map(|d| d.to_usize().ok()).collect(),
        });
    }
    Ok(inputs)
}

/// Evaluates one plan node the way every run here does: tract's own
/// evaluation, with the node noted for the panic boundary (see `guard`),
/// then [`clear_upper_avx`].
pub(super) fn eval_node(
    ctx: &tract_onnx::tract_core::plan::EvalContext,
    state: Option<&mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
    node: &tract_onnx::prelude::TypedNode,
    inputs: tract_onnx::prelude::TVec<TValue>,
) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::TVec<TValue>> {
    guard::enter_node(node.id);
    let r = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
    guard::leave_node();
    clear_upper_avx();
    r
}

/// The error for a panic caught in tract.
pub(super) fn panicked(model_name: &str, at: PanicSite, p: guard::TractPanic) -> RuntimeError {
    RuntimeError::TractPanic {
        model: model_name.to_string(),
        at: Box::new(at),
        message: p.message,
    }
}

/// Ends the AVX "dirty upper state" tract's hand-written AVX-512 kernels
/// leave behind them.
///
/// Those kernels return without `vzeroupper`, and every SSE-encoded
/// instruction that runs afterwards, ours and tract's own Rust-compiled ops
/// alike (everything this crate and tract build for baseline x86-64), then
/// pays a false dependency on the upper register halves. Measured on this
/// project's EPYC machines: scanning a ppocr_det activation for its range
/// took 0.49 ns per value right after a tract node and 0.15 ns after
/// `vzeroupper`. Called after every node the runner evaluates.
#[inline]
fn clear_upper_avx() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above, cached by std), and
        // `vzeroupper` only zeroes bits 128 and up of ymm0–15; LLVM knows
        // the intrinsic clobbers them, and code built for baseline x86-64
        // keeps nothing there.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::x86_64::_mm256_zeroupper()
        }
    }
}

fn to_tract(t: &HostTensor, want: DatumType, f16_to_f32: bool) -> TractTensor {
    match t {
        HostTensor::F16(a) if f16_to_f32 && want == DatumType::F32 => {
            TractTensor::from(a.mapv(f16::to_f32))
        }
        HostTensor::F32(a) => TractTensor::from(a.clone()),
        HostTensor::F64(a) => TractTensor::from(a.clone()),
        HostTensor::F16(a) => TractTensor::from(a.clone()),
        HostTensor::I64(a) => TractTensor::from(a.clone()),
        HostTensor::I32(a) => TractTensor::from(a.clone()),
        HostTensor::I8(a) => TractTensor::from(a.clone()),
        HostTensor::U8(a) => TractTensor::from(a.clone()),
        HostTensor::Bool(a) => TractTensor::from(a.clone()),
    }
}

fn from_tract(name: &str, v: TValue) -> Result<HostTensor, RuntimeError> {
    let t = v.into_tensor();
    let dt = t.datum_type();
    let unsupported = || RuntimeError::UnsupportedOutput {
        name: name.to_string(),
        dtype: format!("{dt:?}"),
    };
    // Quantized types carry their bytes as the plain integer type; symbolic
    // dimensions (shape computations) come back as int64.
    let want = match dt {
        DatumType::TDim => DatumType::I64,
        d => d.unquantized(),
    };
    let t = if want != dt {
        t.cast_to_dt(want).map_err(|_| unsupported())?.into_owned()
    } else {
        t
    };
    fn arr<T: Datum + Clone>(t: &TractTensor) -> Option<ndarray::ArrayD<T>> {
        t.to_plain_array_view::<T>().ok().map(|a| a.to_owned())
    }
    let out = match want {
        DatumType::F32 => arr::<f32>(&t).map(HostTensor::F32),
        DatumType::F64 => arr::<f64>(&t).map(HostTensor::F64),
        DatumType::F16 => arr::<f16>(&t).map(HostTensor::F16),
        DatumType::I64 => arr::<i64>(&t).map(HostTensor::I64),
        DatumType::I32 => arr::<i32>(&t).map(HostTensor::I32),
        DatumType::I8 => arr::<i8>(&t).map(HostTensor::I8),
        DatumType::U8 => arr::<u8>(&t).map(HostTensor::U8),
        DatumType::Bool => arr::<bool>(&t).map(HostTensor::Bool),
        _ => None,
    };
    out.ok_or_else(unsupported)
}
