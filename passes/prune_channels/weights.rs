//! The arithmetic of `prune-channels`: a Conv's weight as rows and input
//! channels (rows kept, inputs dropped with their mean folded into the
//! bias or refitted by least squares), and the channel statistics that
//! choose and refit them.

use std::collections::BTreeSet;

use ndarray::{ArrayD, IxDyn};

use crate::ir::{Graph, Model, NodeId, Tensor};
use crate::proto::tensor_proto::DataType;

/// A Conv's weight as f64 with its dims `[O, I/group, k…]`.
pub(super) struct ConvWeight {
    pub node: NodeId,
    pub dims: Vec<usize>,
    pub w: Vec<f64>,
    pub bias: Option<Vec<f64>>,
}

impl ConvWeight {
    pub(super) fn read(g: &Graph, n: NodeId) -> Option<ConvWeight> {
        let node = g.node(n);
        if !node.domain().is_empty() || node.op_type() != "Conv" {
            return None;
        }
        let wv = node.input(1)?;
        let t = g.constant(wv)?;
        if t.dtype() != DataType::Float as i32 || t.dims().len() < 3 {
            return None;
        }
        let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
        let w: Vec<f64> = t.to_f32().ok()?.iter().map(|&x| x as f64).collect();
        let bias = match node.input(2) {
            None => None,
            Some(b) => {
                let t = g.constant(b)?;
                if t.dtype() != DataType::Float as i32 {
                    return None;
                }
                let b: Vec<f64> = t.to_f32().ok()?.iter().map(|&x| x as f64).collect();
                if b.len() != dims[0] {
                    return None;
                }
                Some(b)
            }
        };
        Some(ConvWeight {
            node: n,
            dims,
            w,
            bias,
        })
    }

    pub(super) fn group(g: &Graph, n: NodeId) -> usize {
        g.node(n).attr_i("group").unwrap_or(1).max(1) as usize
    }

    /// Values per output channel row.
    fn row(&self) -> usize {
        self.dims[1..].iter().product()
    }

    /// Values per (output, input) channel pair.
    fn kernel(&self) -> usize {
        self.dims[2..].iter().product()
    }

    /// Keeps only the output channels `keep` (rows and bias).
    pub(super) fn keep_rows(&mut self, keep: &[usize]) {
        let r = self.row();
        self.w = keep
            .iter()
            .flat_map(|&c| self.w[c * r..(c + 1) * r].iter().copied())
            .collect();
        self.dims[0] = keep.len();
        if let Some(b) = &mut self.bias {
            *b = keep.iter().map(|&c| b[c]).collect();
        }
    }

    /// Per input channel, the sum of squares of the weights reading it.
    pub(super) fn input_energy(&self) -> Vec<f64> {
        let (o, i, k) = (self.dims[0], self.dims[1], self.kernel());
        let mut e = vec![0f64; i];
        for oc in 0..o {
            for (ic, e) in e.iter_mut().enumerate() {
                let base = (oc * i + ic) * k;
                *e += self.w[base..base + k].iter().map(|x| x * x).sum::<f64>();
            }
        }
        e
    }

    /// Drops the input channels not in `keep`, adding what the dropped
    /// ones contributed at their `mean` to the bias.
    pub(super) fn drop_inputs(&mut self, keep: &[usize], mean: &[f64]) {
        let (o, i, k) = (self.dims[0], self.dims[1], self.kernel());
        let kept: BTreeSet<usize> = keep.iter().copied().collect();
        let mut shift = vec![0f64; o];
        let mut w = Vec::with_capacity(o * keep.len() * k);
        for (oc, s) in shift.iter_mut().enumerate() {
            for ic in 0..i {
                let base = (oc * i + ic) * k;
                let lane = &self.w[base..base + k];
                if kept.contains(&ic) {
                    w.extend_from_slice(lane);
                } else {
                    *s += lane.iter().sum::<f64>() * mean.get(ic).copied().unwrap_or(0.0);
                }
            }
        }
        self.w = w;
        self.dims[1] = keep.len();
        if shift.iter().any(|&s| s != 0.0) || self.bias.is_some() {
            let b = self.bias.get_or_insert_with(|| vec![0.0; o]);
            for (b, s) in b.iter_mut().zip(shift) {
                *b += s;
            }
        }
    }

    /// Drops the input channels not in `keep` and refits the kept ones by
    /// least squares (channel pruning's linear reconstruction, He et al.,
    /// "Channel Pruning for Accelerating Very Deep Neural Networks", ICCV
    /// 2017): each dropped channel is predicted from the kept ones,
    /// `x_R ≈ μ_R + M (x_K − μ_K)` with `M = C_RK C_KK⁻¹` from the
    /// calibration covariance, and its weights move onto them by `M`, per
    /// kernel tap; the constant part goes to the bias. `false` (nothing
    /// changed) when the kept channels' covariance is singular.
    pub(super) fn reconstruct(&mut self, keep: &[usize], st: &Moments) -> bool {
        let (o, i, k) = (self.dims[0], self.dims[1], self.kernel());
        if st.mean.len() != i {
            return false;
        }
        let kept: BTreeSet<usize> = keep.iter().copied().collect();
        let gone: Vec<usize> = (0..i).filter(|c| !kept.contains(c)).collect();
        let (nk, nr) = (keep.len(), gone.len());
        // A = C_KK + λI (a ridge of 1e-4 of the mean variance keeps it
        // definite when channels repeat), B = C_KR.
        let mut a = vec![0f64; nk * nk];
        for (x, &ci) in keep.iter().enumerate() {
            for (y, &cj) in keep.iter().enumerate() {
                a[x * nk + y] = st.cov[ci * i + cj];
            }
        }
        let ridge = 1e-4 * (0..nk).map(|x| a[x * nk + x]).sum::<f64>() / nk.max(1) as f64
            + f64::MIN_POSITIVE;
        for x in 0..nk {
            a[x * nk + x] += ridge;
        }
        let mut b = vec![0f64; nk * nr];
        for (x, &ci) in keep.iter().enumerate() {
            for (y, &cr) in gone.iter().enumerate() {
                b[x * nr + y] = st.cov[ci * i + cr];
            }
        }
        // X = A⁻¹ B (nk × nr); M = Xᵀ.
        if crate::quant::gptq::solve_spd(&a, nk, &mut b, nr).is_none()
            || b.iter().any(|v| !v.is_finite())
        {
            return false;
        }
        let mut w = Vec::with_capacity(o * nk * k);
        let mut shift = vec![0f64; o];
        for (oc, s) in shift.iter_mut().enumerate() {
            let at = |ic: usize, t: usize| self.w[(oc * i + ic) * k + t];
            for (x, &ci) in keep.iter().enumerate() {
                for t in 0..k {
                    let delta: f64 = gone
                        .iter()
                        .enumerate()
                        .map(|(y, &cr)| at(cr, t) * b[x * nr + y])
                        .sum();
                    w.push(at(ci, t) + delta);
                    *s -= delta * st.mean[ci];
                }
            }
            for &cr in &gone {
                *s += (0..k).map(|t| at(cr, t)).sum::<f64>() * st.mean[cr];
            }
        }
        self.w = w;
        self.dims[1] = nk;
        let bias = self.bias.get_or_insert_with(|| vec![0.0; o]);
        for (b, s) in bias.iter_mut().zip(shift) {
            *b += s;
        }
        true
    }

    pub(super) fn write(self, g: &mut Graph) {
        let node = g.node(self.node);
        let wname = g
            .name(node.input(1).expect("invariant: read from slot 1"))
            .to_string();
        let bname = node
            .input(2)
            .map(|b| g.name(b).to_string())
            .unwrap_or_else(|| format!("{wname}_bias"));
        let w: Vec<f32> = self.w.iter().map(|&x| x as f32).collect();
        let wt = ArrayD::from_shape_vec(IxDyn(&self.dims), w).expect("invariant: dims match");
        let nv = g.add_initializer(Tensor::from_f32(
            &g.fresh_name(&format!("{wname}_pruned")),
            &wt,
        ));
        g.set_input(self.node, 1, Some(nv));
        if let Some(b) = self.bias {
            let n = b.len();
            let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            let bt = ArrayD::from_shape_vec(IxDyn(&[n]), b).expect("invariant: one per channel");
            let bv = g.add_initializer(Tensor::from_f32(
                &g.fresh_name(&format!("{bname}_pruned")),
                &bt,
            ));
            g.set_input(self.node, 2, Some(bv));
        }
    }
}

/// Channel statistics of a tensor a reader reads, over the calibration
/// samples and every position: mean, mean square and the centred
/// covariance (`C × C`, row major).
pub(super) struct Moments {
    pub mean: Vec<f64>,
    pub meansq: Vec<f64>,
    pub cov: Vec<f64>,
}

/// [`Moments`] of `tensors` (channel axis 1) over `data`, one sample at a
/// time in order (deterministic; memory is one sample's tensors and a
/// `C × C` sum per tensor).
pub(super) fn moments(
    m: &Model,
    data: &crate::calib::data::DataSet,
    tensors: &[String],
    shapes: &crate::passes::context::InputShapes,
) -> Result<std::collections::BTreeMap<String, Moments>, String> {
    use ndarray::Array2;
    let specs = crate::calib::data::input_specs(m);
    let runners = crate::runtime::RunnerCache::new(m, tensors.to_vec());
    // Per tensor: positions seen, sums, sums of outer products.
    let mut acc: std::collections::BTreeMap<String, (f64, Vec<f64>, Array2<f64>)> =
        std::collections::BTreeMap::new();
    for i in 0..data.len() {
        let inputs = data.load(i, &specs, shapes).map_err(|e| e.to_string())?;
        let outs = runners.run(&inputs).map_err(|e| e.to_string())?;
        for (name, t) in outs {
            if !tensors.contains(&name) {
                continue;
            }
            let crate::tensorio::HostTensor::F32(a) = &t else {
                continue;
            };
            let shape = a.shape();
            if shape.len() < 2 {
                continue;
            }
            let (n, c) = (shape[0], shape[1]);
            let p: usize = shape[2..].iter().product();
            let flat: Vec<f32> = a.iter().copied().collect();
            // X: channels × positions (every batch item's positions).
            let mut x = Array2::<f64>::zeros((c, n * p));
            for b in 0..n {
                for ch in 0..c {
                    let src = &flat[(b * c + ch) * p..(b * c + ch + 1) * p];
                    for (k, &v) in src.iter().enumerate() {
                        x[[ch, b * p + k]] = if v.is_finite() { v as f64 } else { 0.0 };
                    }
                }
            }
            let e = acc
                .entry(name)
                .or_insert_with(|| (0.0, vec![0.0; c], Array2::zeros((c, c))));
            if e.1.len() != c {
                return Err("a captured tensor changed its channel count between samples".into());
            }
            e.0 += (n * p) as f64;
            for (s, row) in e.1.iter_mut().zip(x.rows()) {
                *s += row.sum();
            }
            e.2 += &x.dot(&x.t());
        }
    }
    Ok(acc
        .into_iter()
        .map(|(name, (count, sum, outer))| {
            let c = sum.len();
            let count = count.max(1.0);
            let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
            let meansq: Vec<f64> = (0..c).map(|i| outer[[i, i]] / count).collect();
            let mut cov = vec![0f64; c * c];
            for i in 0..c {
                for j in 0..c {
                    cov[i * c + j] = outer[[i, j]] / count - mean[i] * mean[j];
                }
            }
            (name, Moments { mean, meansq, cov })
        })
        .collect())
}
