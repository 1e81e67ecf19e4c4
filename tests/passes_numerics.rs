//! Exact passes run through tract: the transformed model must compute what
//! the original does. `dce`, `eliminate-identity` and `fold-constants` must
//! give bit-identical outputs; `fuse-batchnorm` refolds float arithmetic, so
//! it must agree within 1e-5 of the output's magnitude.

use onnxq::ir::{text, Model};
use onnxq::passes::{PassContext, PassManager, Pipeline};
use onnxq::runtime::{RunOptions, Runner};
use onnxq::tensorio::HostTensor;

/// Deterministic pseudo-random floats in [lo, hi) (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.next(lo, hi)).collect()
    }
}

/// A pass context with calibration data (`None`: without), run on
/// `threads` workers and no progress bar.
fn with_data(data: Option<onnxq::calib::data::DataSet>, threads: usize) -> PassContext {
    PassContext::with_inputs(onnxq::passes::context::Inputs {
        calib_data: data,
        calib_options: onnxq::calib::CalibOptions {
            threads,
            progress: false,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// A float tensor literal for the textual IR.
fn lit(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("{{{}}}", items.join(", "))
}

/// BatchNormalization parameters for `c` channels, as initializer lines.
fn bn_params(r: &mut Lcg, c: usize) -> String {
    format!(
        "float[{c}] s = {}, float[{c}] b = {}, float[{c}] mean = {}, float[{c}] var = {}",
        lit(&r.vec(c, 0.5, 2.0)),
        lit(&r.vec(c, -1.0, 1.0)),
        lit(&r.vec(c, -0.5, 0.5)),
        lit(&r.vec(c, 0.1, 3.0)),
    )
}

fn parse(src: &str) -> Model {
    text::parse_model(src).unwrap_or_else(|e| panic!("test model does not parse: {e}\n{src}"))
}

fn transform(m: &Model, pipeline: &str) -> Model {
    let mut out = m.clone();
    let mut pm = PassManager::new(Pipeline::parse(pipeline).expect("pipeline parses"));
    pm.verify_each = true;
    pm.run(&mut out, &mut PassContext::new())
        .expect("pipeline runs");
    out
}

fn run(m: &Model, inputs: &[(String, HostTensor)]) -> Vec<(String, HostTensor)> {
    Runner::new(m, &RunOptions::default())
        .expect("tract loads the model")
        .run(inputs)
        .expect("tract runs the model")
}

fn input(name: &str, shape: &[usize], r: &mut Lcg) -> (String, HostTensor) {
    let n = shape.iter().product();
    let a =
        ndarray::ArrayD::from_shape_vec(shape.to_vec(), r.vec(n, -2.0, 2.0)).expect("shape fits");
    (name.to_string(), HostTensor::F32(a))
}

fn ops(m: &Model) -> Vec<String> {
    m.graph
        .ops()
        .into_iter()
        .map(|n| m.graph.node(n).op_type().to_string())
        .collect()
}

/// Outputs agree within `rel` of each output's largest magnitude.
fn assert_close(a: &[(String, HostTensor)], b: &[(String, HostTensor)], rel: f32) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(ta.shape(), tb.shape(), "output {na}");
        let (x, y) = (ta.to_f32(), tb.to_f32());
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = x
            .iter()
            .zip(y.iter())
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= rel * scale,
            "output {na}: max abs diff {worst} over {rel} x {scale}"
        );
    }
}

const HEADER: &str = "<ir_version: 8, opset_import: [\"\" : 17]>";

fn check_bn(src: &str, inputs: &[(String, HostTensor)]) -> Model {
    let m = parse(src);
    let after = transform(&m, "fuse-batchnorm,dce");
    assert!(
        !ops(&after).iter().any(|o| o == "BatchNormalization"),
        "BN left: {:?}",
        ops(&after)
    );
    assert_close(&run(&m, inputs), &run(&after, inputs), 1e-5);
    after
}

#[test]
fn conv_bn_8_channels() {
    let mut r = Lcg(1);
    let src = format!(
        "{HEADER}\ng (float[1,3,6,6] X) => (float[1,8,6,6] Y)\n<float[8,3,3,3] W = {}, float[8] cb = {}, {}>\n{{\n  C = Conv <pads: ints = [1, 1, 1, 1]> (X, W, cb)\n  Y = BatchNormalization <epsilon: float = 0.001> (C, s, b, mean, var)\n}}\n",
        lit(&r.vec(8 * 27, -1.0, 1.0)),
        lit(&r.vec(8, -0.5, 0.5)),
        bn_params(&mut r, 8)
    );
    let after = check_bn(&src, &[input("X", &[1, 3, 6, 6], &mut r)]);
    assert_eq!(ops(&after), ["Conv"]);
}

#[test]
fn grouped_conv_bn_no_bias() {
    let mut r = Lcg(2);
    let src = format!(
        "{HEADER}\ng (float[2,4,5,5] X) => (float[2,8,3,3] Y)\n<float[8,2,3,3] W = {}, {}>\n{{\n  C = Conv <group: int = 2> (X, W)\n  Y = BatchNormalization (C, s, b, mean, var)\n}}\n",
        lit(&r.vec(8 * 2 * 9, -1.0, 1.0)),
        bn_params(&mut r, 8)
    );
    let after = check_bn(&src, &[input("X", &[2, 4, 5, 5], &mut r)]);
    assert_eq!(ops(&after), ["Conv"]);
}

#[test]
fn conv_transpose_group_bn() {
    let mut r = Lcg(3);
    // Cin 4, group 2, Cout/group 4: Cout 8.
    let src = format!(
        "{HEADER}\ng (float[1,4,3,3] X) => (float[1,8,4,4] Y)\n<float[4,4,2,2] W = {}, float[8] cb = {}, {}>\n{{\n  C = ConvTranspose <group: int = 2> (X, W, cb)\n  Y = BatchNormalization (C, s, b, mean, var)\n}}\n",
        lit(&r.vec(4 * 4 * 4, -1.0, 1.0)),
        lit(&r.vec(8, -0.5, 0.5)),
        bn_params(&mut r, 8)
    );
    let after = check_bn(&src, &[input("X", &[1, 4, 3, 3], &mut r)]);
    assert_eq!(ops(&after), ["ConvTranspose"]);
}

#[test]
fn gemm_bn_trans_b_alpha_beta() {
    let mut r = Lcg(4);
    for (trans_b, bshape) in [(1, "8,5"), (0, "5,8")] {
        let src = format!(
            "{HEADER}\ng (float[3,5] X) => (float[3,8] Y)\n<float[{bshape}] B = {}, float[1,8] C = {}, {}>\n{{\n  G = Gemm <alpha: float = 0.75, beta: float = 1.5, transB: int = {trans_b}> (X, B, C)\n  Y = BatchNormalization (G, s, b, mean, var)\n}}\n",
            lit(&r.vec(40, -1.0, 1.0)),
            lit(&r.vec(8, -0.5, 0.5)),
            bn_params(&mut r, 8)
        );
        let after = check_bn(&src, &[input("X", &[3, 5], &mut r)]);
        assert_eq!(ops(&after), ["Gemm"]);
    }
}

#[test]
fn matmul_bn_and_rank3_fallback() {
    let mut r = Lcg(5);
    let src = format!(
        "{HEADER}\ng (float[4,5] X) => (float[4,8] Y)\n<float[5,8] W = {}, {}>\n{{\n  M = MatMul (X, W)\n  Y = BatchNormalization (M, s, b, mean, var)\n}}\n",
        lit(&r.vec(40, -1.0, 1.0)),
        bn_params(&mut r, 8)
    );
    let after = check_bn(&src, &[input("X", &[4, 5], &mut r)]);
    assert_eq!(ops(&after), ["MatMul", "Add"]);

    // [B, T, N]: BN's channel axis is T (here 8), not the weight's N.
    let src = format!(
        "{HEADER}\ng (float[2,8,5] X) => (float[2,8,3] Y)\n<float[5,3] W = {}, {}>\n{{\n  M = MatMul (X, W)\n  Y = BatchNormalization (M, s, b, mean, var)\n}}\n",
        lit(&r.vec(15, -1.0, 1.0)),
        bn_params(&mut r, 8)
    );
    let after = check_bn(&src, &[input("X", &[2, 8, 5], &mut r)]);
    assert_eq!(ops(&after), ["MatMul", "Mul", "Add"]);
}

#[test]
fn standalone_bn_to_mul_add() {
    let mut r = Lcg(6);
    let src = format!(
        "{HEADER}\ng (float[N,8,3,3] X) => (float[N,8,3,3] Y)\n<{}>\n{{\n  Y = BatchNormalization <epsilon: float = 0.01> (X, s, b, mean, var)\n}}\n",
        bn_params(&mut r, 8)
    );
    let after = check_bn(&src, &[input("X", &[2, 8, 3, 3], &mut r)]);
    assert_eq!(ops(&after), ["Mul", "Add"]);
}

#[test]
fn fold_constants_is_exact() {
    let mut r = Lcg(7);
    let src = format!(
        "{HEADER}\ng (float[2,3,4] X) => (float[2,5] Y)\n<float[5,12] W = {}, float[5] B = {}, int64[1] i0 = {{0}}, int64[1] m1 = {{-1}}>\n{{\n  k = Constant <value_float: float = 0.3> ()\n  Wt = Transpose <perm: ints = [1, 0]> (W)\n  Ws = Mul (Wt, k)\n  Bs = Div (B, k)\n  Be = Exp (Bs)\n  S = Shape (X)\n  d0 = Gather <axis: int = 0> (S, i0)\n  T = Concat <axis: int = 0> (d0, m1)\n  F = Reshape (X, T)\n  M = MatMul (F, Ws)\n  Y = Add (M, Be)\n}}\n",
        lit(&r.vec(60, -1.0, 1.0)),
        lit(&r.vec(5, -1.0, 1.0)),
    );
    let m = parse(&src);
    let after = transform(&m, "fold-constants,dce");
    assert_eq!(ops(&after), ["Reshape", "MatMul", "Add"]);
    let inputs = [input("X", &[2, 3, 4], &mut r)];
    assert_eq!(run(&m, &inputs), run(&after, &inputs));
}

#[test]
fn dce_and_eliminate_identity_are_exact() {
    let mut r = Lcg(8);
    let src = format!(
        "{HEADER}\ng (float[2,6] X) => (float[2,6] Y)\n<float[6] K = {}>\n{{\n  A = Identity (X)\n  D = Relu (A)\n  E = Add (A, K)\n  F = Dropout (E)\n  G = Sigmoid (F)\n  Y = Identity (G)\n}}\n",
        lit(&r.vec(6, -1.0, 1.0)),
    );
    let m = parse(&src);
    let after = transform(&m, "eliminate-identity,dce");
    assert_eq!(ops(&after), ["Add", "Sigmoid"]);
    let inputs = [input("X", &[2, 6], &mut r)];
    assert_eq!(run(&m, &inputs), run(&after, &inputs));
}

#[test]
fn shape_inference_keeps_outputs() {
    let mut r = Lcg(9);
    let src = format!(
        "{HEADER}\ng (float[N,2,4,4] X) => (Y)\n<float[3,2,1,1] W = {}>\n{{\n  C = Conv (X, W)\n  P = MaxPool <kernel_shape: ints = [2, 2], strides: ints = [2, 2]> (C)\n  Y = Flatten (P)\n}}\n",
        lit(&r.vec(6, -1.0, 1.0)),
    );
    let m = parse(&src);
    let after = transform(&m, "shape-inference");
    let printed = text::print_model(&after);
    assert!(printed.contains("float[N,12] Y"), "{printed}");
    assert!(printed.contains("float[N,3,4,4] C"), "{printed}");
    assert!(printed.contains("float[N,3,2,2] P"), "{printed}");
    let inputs = [input("X", &[3, 2, 4, 4], &mut r)];
    assert_eq!(run(&m, &inputs), run(&after, &inputs));
}

/// `smooth-quant` after a calibration on seeded random data: the outputs
/// agree with the original's within float rounding, whether the division
/// went into a LayerNormalization, a Mul by a constant, or a new Mul.
#[test]
fn smooth_quant_keeps_float_outputs() {
    use onnxq::calib::data::DataSet;
    let mut r = Lcg(11);
    let mut gamma = r.vec(16, 0.5, 1.5);
    gamma[3] = 30.0; // an outlier channel, as transformers have
    let src = format!(
        "{HEADER}\ng (float[1,6,16] I) => (float[1,6,8] Q, float[1,6,16] R, float[1,6,8] F, float[1,6,16] O)\n<float[16] gamma = {}, float[16] beta = {}, float[16,8] Wq = {}, float[16,8] Wf = {}, float h = {{0.5}}, float[8,16] Wo = {}>\n{{\n  X = LayerNormalization <axis: int = -1> (I, gamma, beta)\n  Q = MatMul (X, Wq)\n  R = Add (X, I)\n  L = LayerNormalization <axis: int = -1> (R, gamma, beta)\n  H = MatMul (L, Wf)\n  G = Relu (H)\n  G2 = Mul (G, h)\n  O = MatMul (G2, Wo)\n  P = MatMul (L, Wf)\n  F = Add (P, P)\n}}\n",
        lit(&gamma),
        lit(&r.vec(16, -0.5, 0.5)),
        lit(&r.vec(128, -1.0, 1.0)),
        lit(&r.vec(128, -1.0, 1.0)),
        lit(&r.vec(128, -1.0, 1.0)),
    );
    let m = parse(&src);
    let mut after = m.clone();
    let mut cx = with_data(Some(DataSet::random(2, 7)), 1);
    let mut pm = PassManager::new(
        Pipeline::parse("shape-inference,calibrate,smooth-quant,calibrate,dce")
            .expect("pipeline parses"),
    );
    pm.verify_each = true;
    pm.run(&mut after, &mut cx).expect("pipeline runs");
    let remark = cx
        .remarks()
        .iter()
        .find(|r| r.pass == "smooth-quant")
        .map(|r| r.message.clone())
        .unwrap_or_default();
    // X also feeds the residual Add: a new Mul. L is read by two MatMuls
    // only (one group): its LayerNormalization absorbs 1/s. G2 is a Mul by
    // a constant read by one MatMul: the constant absorbs it.
    assert!(
        remark.contains("2 folded") && remark.contains("1 through a new Mul"),
        "{remark}"
    );
    let inputs = [input("I", &[1, 6, 16], &mut r)];
    assert_close(&run(&m, &inputs), &run(&after, &inputs), 1e-5);
}

/// A MobileNet-like chain (pointwise → Relu → depthwise → max pooling →
/// pointwise, then a Gemm pair through a LeakyRelu) with channels of very
/// different weight ranges: equalized, the function is the same and the
/// depthwise layer's channel ranges are close together.
#[test]
fn equalize_keeps_outputs_and_balances_channels() {
    let mut r = Lcg(5);
    let c = 8;
    let mut wd = r.vec(c * 9, -1.0, 1.0);
    for (i, w) in wd.iter_mut().enumerate() {
        // Depthwise rows from 1/64 to 2 of each other.
        *w *= 2f32.powi((i / 9) as i32 - 6);
    }
    let src = format!(
        "{HEADER}\ng (float[1,4,6,6] X, float[2,6] G) => (float[1,4,3,3] Y, float[2,3] Z)\n<float[{c},4,1,1] Wa = {}, float[{c}] Ba = {}, float[{c},1,3,3] Wd = {}, float[{c}] Bd = {}, float[4,{c},1,1] Wb = {}, float[6,5] Wg = {}, float[5] Bg = {}, float[3,5] Wh = {}>\n{{\n  A = Conv (X, Wa, Ba)\n  R = Relu (A)\n  D = Conv <group: int = {c}, pads: ints = [1, 1, 1, 1]> (R, Wd, Bd)\n  P = MaxPool <kernel_shape: ints = [2, 2], strides: ints = [2, 2]> (D)\n  Y = Conv (P, Wb)\n  H = Gemm (G, Wg, Bg)\n  L = LeakyRelu <alpha: float = 0.1> (H)\n  Z = Gemm <transB: int = 1> (L, Wh)\n}}\n",
        lit(&r.vec(c * 4, -1.0, 1.0)),
        lit(&r.vec(c, -0.5, 0.5)),
        lit(&wd),
        lit(&r.vec(c, -0.5, 0.5)),
        lit(&r.vec(4 * c, -1.0, 1.0)),
        lit(&r.vec(30, -4.0, 4.0)),
        lit(&r.vec(5, -0.5, 0.5)),
        lit(&r.vec(15, -0.1, 0.1)),
    );
    let m = parse(&src);
    let after = transform(&m, "equalize,dce");
    let inputs = [
        input("X", &[1, 4, 6, 6], &mut r),
        input("G", &[2, 6], &mut r),
    ];
    assert_close(&run(&m, &inputs), &run(&after, &inputs), 1e-5);
    let g = &after.graph;
    let dw = g
        .ops()
        .into_iter()
        .find(|&n| g.node(n).attr_i("group") == Some(c as i64))
        .expect("the depthwise Conv");
    let w = g.constant(g.node(dw).input(1).unwrap()).unwrap();
    assert!(w.name().ends_with("_eq"), "{}", w.name());
    let w = w.to_f32().unwrap();
    let rows: Vec<f32> = w
        .as_slice()
        .unwrap()
        .chunks(9)
        .map(|k| k.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect();
    let spread = rows.iter().cloned().fold(0f32, f32::max)
        / rows.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!(
        spread < 8.0,
        "depthwise rows still spread {spread}x: {rows:?}"
    );
}

/// Bias absorption is exact on the data it measured the offsets on: the
/// Relu channels it shifts never go below the shift there.
#[test]
fn absorb_bias_is_exact_on_calibration_data() {
    use onnxq::calib::data::DataSet;
    let mut r = Lcg(9);
    let c = 6;
    let mut ba = r.vec(c, -0.5, 0.5);
    ba[1] = 6.0; // always on, far from 0
    ba[4] = 3.0;
    let src = format!(
        "{HEADER}\ng (float[1,3,4,4] X) => (float[1,2,4,4] Y, float[1,2,4,4] Z)\n<float[{c},3,1,1] Wa = {}, float[{c}] Ba = {}, float[2,{c},1,1] Wb = {}, float[{c},3,1,1] Wc = {}, float[{c}] Bc = {}, float[2,{c},1,1] Wd = {}, float[2] Bd = {}>\n{{\n  A = Conv (X, Wa, Ba)\n  R = Relu (A)\n  Y = Conv (R, Wb)\n  C = Conv (X, Wc, Bc)\n  Z = Conv (C, Wd, Bd)\n}}\n",
        lit(&r.vec(c * 3, -0.3, 0.3)),
        lit(&ba),
        lit(&r.vec(2 * c, -1.0, 1.0)),
        lit(&r.vec(c * 3, -1.0, 1.0)),
        lit(&r.vec(c, 2.0, 5.0)),
        lit(&r.vec(2 * c, -1.0, 1.0)),
        lit(&r.vec(2, -1.0, 1.0)),
    );
    let m = parse(&src);
    let mut after = m.clone();
    let mut cx = with_data(Some(DataSet::random(2, 3)), 1);
    let mut pm = PassManager::new(
        Pipeline::parse("shape-inference,calibrate,absorb-bias,calibrate,dce")
            .expect("pipeline parses"),
    );
    pm.verify_each = true;
    pm.run(&mut after, &mut cx).expect("pipeline runs");
    let remark = cx
        .remarks()
        .iter()
        .find(|r| r.pass == "absorb-bias")
        .map(|r| r.message.clone())
        .unwrap_or_default();
    assert!(remark.contains("of 2 activations"), "{remark}");
    // The calibration samples themselves.
    let data = DataSet::random(2, 3);
    for i in 0..2 {
        let s = data
            .load(i, &onnxq::calib::data::input_specs(&m), &Default::default())
            .expect("random sample");
        assert_close(&run(&m, &s), &run(&after, &s), 1e-5);
    }
}

/// Output error energy of `q` against `m` on the first `n` samples of
/// `data`.
fn error_energy(m: &Model, q: &Model, data: &onnxq::calib::data::DataSet, n: usize) -> f64 {
    let specs = onnxq::calib::data::input_specs(m);
    let mut e = 0.0;
    for i in 0..n {
        let s = data
            .load(i, &specs, &Default::default())
            .expect("random sample");
        for ((_, a), (_, b)) in run(m, &s).iter().zip(&run(q, &s)) {
            let (HostTensor::F32(a), HostTensor::F32(b)) = (a, b) else {
                panic!("float outputs")
            };
            e += a
                .iter()
                .zip(b.iter())
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum::<f64>();
        }
    }
    e
}

/// A model whose layers read correlated inputs (a smooth image through two
/// 3×3 Convs, one of them grouped, then a Gemm), quantized with and
/// without `round-weights`, at `threads`.
fn rounded_pair(threads: usize) -> (Model, Model, Model) {
    use onnxq::calib::data::DataSet;
    let mut r = Lcg(21);
    let src = format!(
        "{HEADER}\ng (float[1,4,8,8] X) => (float[1,5] Y)\n<float[8,4,3,3] Wa = {}, float[8] Ba = {}, float[8,2,3,3] Wb = {}, float[8] Bb = {}, float[5,8] Wc = {}, float[5] Bc = {}, int64[2] S = {{1, 8}}>\n{{\n  A = Conv <pads = [1,1,1,1]> (X, Wa, Ba)\n  R = Relu (A)\n  B = Conv <pads = [1,1,1,1], group = 4> (R, Wb, Bb)\n  P = GlobalAveragePool (B)\n  F = Reshape (P, S)\n  Y = Gemm <transB = 1> (F, Wc, Bc)\n}}\n",
        lit(&r.vec(8 * 4 * 9, -0.4, 0.4)),
        lit(&r.vec(8, -0.2, 0.2)),
        lit(&r.vec(8 * 2 * 9, -0.4, 0.4)),
        lit(&r.vec(8, -0.2, 0.2)),
        lit(&r.vec(5 * 8, -1.0, 1.0)),
        lit(&r.vec(5, -0.2, 0.2)),
    );
    let m = parse(&src);
    let quantize = |pipeline: &str| {
        let mut q = m.clone();
        let mut cx = with_data(Some(DataSet::random(6, 5)), threads);
        let mut pm = PassManager::new(Pipeline::parse(pipeline).expect("pipeline parses"));
        pm.verify_each = true;
        pm.run(&mut q, &mut cx).expect("pipeline runs");
        (q, cx)
    };
    let base = "shape-inference,calibrate,fold-calibration{method=minmax}";
    let tail = "insert-qdq{per-channel=false,target=portable,bias-correction=false},dce";
    let (nearest, _) = quantize(&format!("{base},{tail}"));
    let (learned, cx) = quantize(&format!(
        "{base},round-weights{{per-channel=false,target=portable}},{tail}"
    ));
    let remark = cx
        .remarks()
        .iter()
        .find(|r| r.pass == "round-weights" && r.node == "<model>")
        .map(|r| r.message.clone())
        .unwrap_or_default();
    assert!(remark.contains("learned rounding on"), "{remark}");
    (m, nearest, learned)
}

/// Learned rounding lowers the output error on the data it learned from,
/// keeps every scale (only codes move), and its output does not depend on
/// the thread count.
#[test]
fn round_weights_lowers_output_error_and_keeps_scales() {
    let (m, nearest, learned) = rounded_pair(1);
    let data = onnxq::calib::data::DataSet::random(6, 5);
    let (en, el) = (
        error_energy(&m, &nearest, &data, 6),
        error_energy(&m, &learned, &data, 6),
    );
    assert!(el < en, "learned {el} against nearest {en}");
    let scales = |q: &Model| -> Vec<(String, Vec<u8>)> {
        q.graph
            .value_ids()
            .filter(|&v| q.graph.name(v).ends_with("_scale"))
            .filter_map(|v| {
                let t = q.graph.constant(v)?;
                Some((q.graph.name(v).to_string(), t.raw_bytes().ok()?.to_vec()))
            })
            .collect()
    };
    assert_eq!(scales(&nearest), scales(&learned));
    assert!(!scales(&learned).is_empty());
    let (_, _, again) = rounded_pair(2);
    assert_eq!(
        onnxq::onnx::export::to_bytes(&learned),
        onnxq::onnx::export::to_bytes(&again)
    );
}

/// A `[k, n]` float literal of `Lcg` values for the text IR.
fn weight_literal(r: &mut Lcg, k: usize, n: usize) -> String {
    lit(&r.vec(k * n, -1.0, 1.0))
}

/// Weight-only 4-bit weights (blocked DequantizeLinear at opset 21, and
/// MatMulNBits) load in tract through the validation lowering and stay
/// within the 4-bit grid's error of the float model.
#[test]
fn weight_only_4bit_runs_in_tract_through_the_lowering() {
    let mut r = Lcg(21);
    let w = weight_literal(&mut r, 64, 16);
    let src = format!(
        "<ir_version: 10, opset_import: [\"\" : 21]>\n\
         g (float[2,64] X) => (float[2,16] Y)\n\
         <float[64,16] W = {w}>\n\
         {{\n  [mm] Y = MatMul (X, W)\n}}"
    );
    let m = parse(&src);
    let inputs = [input("X", &[2, 64], &mut r)];
    let float = run(&m, &inputs);
    for form in ["qdq", "qoperator"] {
        let q = transform(
            &m,
            &format!("quantize-weights{{bits=4,block-size=32,format={form},min-elements=16}},dce"),
        );
        assert!(
            ops(&q)
                .iter()
                .any(|o| o == "DequantizeLinear" || o == "MatMulNBits"),
            "{form}: {:?}",
            ops(&q)
        );
        let runner = Runner::new(&q, &RunOptions::default()).expect("lowered for tract");
        assert!(runner.lowered().any(), "{form}: nothing lowered");
        let out = runner.run(&inputs).expect("runs");
        // 16 levels a block: |error| per weight ≤ range/30; summed over 64
        // inputs of |x| ≤ 2 it stays well under a tenth of the output.
        assert_close(&float, &out, 0.1);
    }
}

/// A 4-bit embedding table gathers what its 16-level blocks hold: every
/// value within one step of the float table, for ids of any shape
/// (negative ids included).
#[test]
fn quantize_gather_4bit_stays_within_a_step() {
    let mut r = Lcg(7);
    let t = weight_literal(&mut r, 40, 64);
    let src = format!(
        "{HEADER}\n\
         g (int64[2,3] ids) => (float[2,3,64] E)\n\
         <float[40,64] T = {t}>\n\
         {{\n  [tok] E = Gather (T, ids)\n}}"
    );
    let m = parse(&src);
    let q = transform(
        &m,
        "quantize-gather{bits=4,block-size=32,min-elements=16},dce",
    );
    assert!(ops(&q).iter().any(|o| o == "Floor"), "{:?}", ops(&q));
    let ids = ndarray::ArrayD::from_shape_vec(vec![2, 3], vec![0i64, 39, 7, -1, 12, 7])
        .expect("shape fits");
    let inputs = [("ids".to_string(), HostTensor::I64(ids))];
    // Values in [-1, 1): a block's step is at most 2/15.
    let (a, b) = (run(&m, &inputs), run(&q, &inputs));
    assert_close(&a, &b, 2.0 / 15.0);
    // Not the float table by accident: 4 bits cannot hold it exactly.
    assert_ne!(a[0].1.to_f32(), b[0].1.to_f32());
}

/// A model whose activations pass fp16's 65504 (a sum of squares, as in a
/// norm): with calibration data, `convert-float` keeps that region in
/// float32 and the output stays finite and close; converted blindly (no
/// data) the same region overflows to inf.
#[test]
fn convert_float_keeps_overflowing_regions_float32() {
    use onnxq::calib::data::DataSet;
    let mut r = Lcg(16);
    let w = weight_literal(&mut r, 8, 8);
    let src = format!(
        "{HEADER}\n\
         g (float[1,8] X) => (float[1,8] Y)\n\
         <float[8,8] W = {w}, float K = {{300.0}}>\n\
         {{\n  M = MatMul (X, W)\n  B = Mul (M, K)\n  Q = Mul (B, B)\n  S = ReduceSum <keepdims: int = 1> (Q)\n  R = Sqrt (S)\n  Y = Div (B, R)\n}}"
    );
    let m = parse(&src);
    let convert = |data: Option<DataSet>| {
        let mut out = m.clone();
        let mut cx = with_data(data, 1);
        let mut pm = PassManager::new(
            Pipeline::parse("shape-inference,convert-float,dce").expect("pipeline parses"),
        );
        pm.verify_each = true;
        pm.run(&mut out, &mut cx).expect("pipeline runs");
        out
    };
    let inputs = [input("X", &[1, 8], &mut r)];
    let float = run(&m, &inputs);
    let guarded = convert(Some(DataSet::random(4, 3)));
    let g = &guarded.graph;
    let elem = |name: &str| {
        g.value_ids()
            .find(|&v| g.name(v) == name)
            .map(|v| g.elem_type(v))
    };
    // The sum of squares stays float32 (1); the MatMul before it is fp16 (10).
    assert_eq!(elem("S"), Some(1));
    assert_eq!(elem("M"), Some(10));
    let out = run(&guarded, &inputs);
    assert!(out[0].1.to_f32().iter().all(|v| v.is_finite()));
    assert_close(&float, &out, 5e-3);
    let blind = run(&convert(None), &inputs);
    assert!(
        blind[0]
            .1
            .to_f32()
            .iter()
            .any(|v| !v.is_finite() || *v == 0.0),
        "without data the fp16 sum of squares should overflow: {:?}",
        blind[0].1.to_f32()
    );
}

/// `prune-channels` removes a channel that is constant on the data (a
/// dead filter with a bias, a common leftover of training) first, and
/// bias compensation makes that exact: the pruned network computes what
/// the original does, with 16 channels fewer (the removal keeps a multiple
/// of 16) and fewer MACs.
#[test]
fn prune_channels_removes_a_constant_channel_exactly() {
    let mut r = Lcg(11);
    let c = 32;
    // Channels 0..16 of the first Conv are dead: zero weights, bias 1.
    let mut w1 = r.vec(c * 3, -1.0, 1.0);
    let mut b1 = r.vec(c, -0.5, 0.5);
    for k in 0..16 {
        w1[k * 3..k * 3 + 3].fill(0.0);
        b1[k] = 1.0;
    }
    let src = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\n\
         g (float[1,3,6,6] X) => (float[1,4,4,4] Y)\n\
         <float[{c},3,1,1] W1 = {}, float[{c}] B1 = {}, float[{c},1,3,3] W2 = {}, float[4,{c},1,1] W3 = {}, float[4] B3 = {}>\n\
         {{\n\
           H = Conv (X, W1, B1)\n\
           R = Relu (H)\n\
           D = Conv <group: int = {c}> (R, W2)\n\
           S = Relu (D)\n\
           Y = Conv (S, W3, B3)\n\
         }}\n",
        lit(&w1),
        lit(&b1),
        lit(&r.vec(c * 9, -0.5, 0.5)),
        lit(&r.vec(4 * c, -1.0, 1.0)),
        lit(&r.vec(4, -1.0, 1.0)),
    );
    let m = parse(&src);
    let mut after = m.clone();
    let mut cx = with_data(Some(onnxq::calib::data::DataSet::random(4, 9)), 1);
    let mut pm = PassManager::new(
        Pipeline::parse("shape-inference,prune-channels{macs=0.3}").expect("pipeline parses"),
    );
    pm.verify_each = true;
    pm.run(&mut after, &mut cx).expect("pipeline runs");
    let report = cx
        .analyses
        .channel_pruning
        .clone()
        .expect("the pass reports what it removed");
    assert_eq!(report.channels_removed, 16, "{report:?}");
    assert!(report.macs_after < report.macs_before, "{report:?}");
    // (Nothing pads: a padded border would read 0 where the removed
    // channel held its mean.)
    let x = input("X", &[1, 3, 6, 6], &mut r);
    let (want, got) = (run(&m, std::slice::from_ref(&x)), run(&after, &[x]));
    let (HostTensor::F32(a), HostTensor::F32(b)) = (&want[0].1, &got[0].1) else {
        panic!("float outputs")
    };
    let worst = a
        .iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst < 1e-5, "pruned output differs by {worst}");
}
