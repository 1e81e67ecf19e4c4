#!/usr/bin/env python3
"""Cross-runtime check of onnxq's quantized models.

Usage:  python tests/cross_runtime.py --onnxq target/release/onnxq [--keep DIR] [-k NAME]

Needs onnx (1.22), onnxruntime (1.32) and numpy. For each test model -- the
PP-OCR classifier in testdata/ppocr_cls and small nets built here with
onnx.helper and seeded random weights -- the script

1. writes calibration samples (.npz, seeded numpy; the real samples for
   ppocr_cls) and quantizes the model with `onnxq quantize`;
2. checks the output with `onnx.checker.check_model(model, full_check=True)`;
3. runs it with onnxruntime (default session options: ORT fuses the QDQ
   pairs into its integer kernels) and with tract (`onnxq run`), on inputs
   that were not used for calibration;
4. requires every output to agree within one quantization step.

Tolerance rule. Runtimes may legitimately differ by rounding: ORT computes
fused integer kernels and requantizes with its own rounding, tract
dequantizes and computes in float, so an intermediate activation can land
one step apart. The bound is one step *of the output*:
* an output produced by DequantizeLinear: its scale (the largest, if
  per-axis);
* a float output (onnxq keeps graph outputs float, so this is the usual
  case): the step the output would have as an 8-bit tensor over the range
  the float model's output spans on these inputs, (max - min) / 255.
The check is max |ORT - tract| <= step for every element, or <= 2 steps for
an output produced by DequantizeLinear: there ORT's integer kernel
requantizes the result of inputs that may already be one step apart, so
the two roundings can add up.

Prints one line per model and a summary `N passed, M failed`; exits 1 when
anything failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OPSET = 13


# ------------------------------------------------------------------ models


def _init(rng, name, shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)


def _model(name, nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cross_runtime.py")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_relu_matmul(rng):
    """Conv+Relu twice, global pooling, MatMul+Add: the common CNN head."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "wm"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "bm"], ["y"], name="add"),
    ]
    inits = [
        _init(rng, "w1", (8, 3, 3, 3)),
        _init(rng, "b1", (8,), 0.1),
        _init(rng, "w2", (16, 8, 3, 3)),
        _init(rng, "b2", (16,), 0.1),
        _init(rng, "wm", (16, 10), 0.5),
        _init(rng, "bm", (10,), 0.1),
    ]
    return _model("conv_relu_matmul", nodes, [_vi("x", [1, 3, 16, 16])], [_vi("y", [1, 10])], inits)


def conv_transpose(rng):
    """A strided ConvTranspose with bias between two Convs."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["t"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
        helper.make_node("Relu", ["t"], ["rt"], name="relu2"),
        helper.make_node("Conv", ["rt", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    inits = [
        _init(rng, "w1", (6, 4, 3, 3)),
        _init(rng, "b1", (6,), 0.1),
        _init(rng, "wt", (6, 5, 3, 3)),  # ConvTranspose: [C_in, C_out/group, kh, kw]
        _init(rng, "bt", (5,), 0.1),
        _init(rng, "w2", (3, 5, 3, 3)),
        _init(rng, "b2", (3,), 0.1),
    ]
    return _model("conv_transpose", nodes, [_vi("x", [1, 4, 8, 8])], [_vi("y", [1, 3, 16, 16])], inits)


def gemm_bias(rng):
    """Two Gemms with bias (transB both ways) around a Relu."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], name="gemm1", transB=1),
        helper.make_node("Relu", ["g1"], ["r1"], name="relu"),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"], name="gemm2"),
    ]
    inits = [
        _init(rng, "w1", (32, 24)),  # transB: [N, K]
        _init(rng, "b1", (32,), 0.1),
        _init(rng, "w2", (32, 6), 0.3),  # [K, N]
        _init(rng, "b2", (6,), 0.1),
    ]
    return _model("gemm_bias", nodes, [_vi("x", [4, 24])], [_vi("y", [4, 6])], inits)


def concat_resize_maxpool(rng):
    """Two branches joined by Concat, MaxPool, nearest Resize, a final Conv."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["ca"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["x", "wb", "bb"], ["cb"], name="conv_b"),
        helper.make_node("Concat", ["ra", "cb"], ["cat"], name="concat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["mp", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Conv", ["up", "wc", "bc"], ["y"], name="conv_c", pads=[1, 1, 1, 1]),
    ]
    inits = [
        _init(rng, "wa", (4, 3, 3, 3)),
        _init(rng, "ba", (4,), 0.1),
        _init(rng, "wb", (4, 3, 1, 1)),
        _init(rng, "bb", (4,), 0.1),
        _init(rng, "wc", (2, 8, 3, 3)),
        _init(rng, "bc", (2,), 0.1),
        scales,
    ]
    return _model("concat_resize_maxpool", nodes, [_vi("x", [1, 3, 16, 16])], [_vi("y", [1, 2, 16, 16])], inits)


def mlp(rng):
    """Two wide layers (a MatMul and a transposed-weight Gemm) with a GELU-like
    Erf between: the weights weight-only and float16 modes rewrite."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Erf", ["hb"], ["e"], name="erf"),
        helper.make_node("Mul", ["hb", "e"], ["g"], name="gate"),
        helper.make_node("Gemm", ["g", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    inits = [
        _init(rng, "w1", (128, 96)),
        _init(rng, "b1", (96,), 0.1),
        _init(rng, "w2", (64, 96)),  # [N, K], read transposed
        _init(rng, "b2", (64,), 0.1),
    ]
    return _model("mlp", nodes, [_vi("x", [16, 128])], [_vi("y", [16, 64])], inits)


BUILT = [conv_relu_matmul, conv_transpose, gemm_bias, concat_resize_maxpool, mlp]

# Precision modes (weight-only, float16) and what each file must hold.
PRECISIONS = {
    "w8": (("--mode", "weights"), "DequantizeLinear"),
    "w4": (("--mode", "weights", "--bits", "4"), "DequantizeLinear"),
    "w4_gptq": (("--mode", "weights", "--bits", "4", "--rounding", "adaptive"), "DequantizeLinear"),
    "w4_nbits": (("--mode", "weights", "--bits", "4", "--format", "qoperator"), "MatMulNBits"),
    "f16": (("--mode", "f16"), "float16"),
    "f16_storage": (("--mode", "f16", "--storage-only"), "float16"),
}


# ------------------------------------------------------------------- cases


class Case:
    def __init__(self, name: str, model: Path, calib: Path, inputs: list[Path], args: tuple[str, ...] = ()):
        self.name = name
        self.model = model
        self.calib = calib
        self.inputs = inputs
        # Extra `onnxq quantize` options.
        self.args = list(args)


def random_samples(model: onnx.ModelProto, dir: Path, n: int, seed: int) -> list[Path]:
    """`n` .npz samples of standard-normal inputs, keyed by input name."""
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    out = []
    for k in range(n):
        arrays = {}
        for i in model.graph.input:
            if i.name in inits:
                continue
            shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
            arrays[i.name] = rng.standard_normal(shape).astype(np.float32)
        p = dir / f"sample_{k:04d}.npz"
        np.savez(p, **arrays)
        out.append(p)
    return out


def make_cases(work: Path, only: str | None) -> list[Case]:
    cases = []
    ppocr = ROOT / "testdata" / "ppocr_cls"
    val = sorted((ppocr / "val").glob("*.npz"))
    cases.append(Case("ppocr_cls", ppocr / "model.onnx", ppocr / "calib", val))
    # Per-tensor weights keep the model at opset 11 (no upgrade).
    cases.append(Case("ppocr_cls.per_tensor", ppocr / "model.onnx", ppocr / "calib", val, ("--per-tensor",)))
    # Codebook weights: uint4 codes into int8 tables (opset 21), which
    # onnxruntime folds at load and tract's validation lowering expands;
    # per-channel tables add each channel's offset.
    # Structured pruning: narrower convolutions (depthwise groups shrink).
    cases.append(Case("ppocr_cls.prune_channels", ppocr / "model.onnx", ppocr / "calib", val, ("--prune-channels", "0.2")))
    for tables in ("tensor", "channel"):
        cases.append(
            Case(
                f"ppocr_cls.codebook4.{tables}",
                ppocr / "model.onnx",
                ppocr / "calib",
                val,
                ("--mode", "codebook", "--bits", "4", "--codebook-tables", tables),
            )
        )
    for i, build in enumerate(BUILT):
        name = build.__name__
        if only and not only.startswith(name):
            continue
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        m = build(np.random.default_rng(1000 + i))
        onnx.save(m, d / "model.onnx")
        random_samples(m, d / "calib", 8, seed=2000 + i)
        inputs = random_samples(m, d / "inputs", 3, seed=3000 + i)
        cases.append(Case(name, d / "model.onnx", d / "calib", inputs))
        if build is mlp:
            # mlp only exercises the precision modes below.
            for tag, (args, _) in PRECISIONS.items():
                cases.append(Case(f"{name}.{tag}", d / "model.onnx", d / "calib", inputs, args))
            continue
        if build is conv_relu_matmul:
            # Symmetric int8 activations: ORT's s8s8 kernels.
            cases.append(Case(name + ".s8", d / "model.onnx", d / "calib", inputs, ("--activations", "s8")))
            # 16-bit activations (opset 21): onnxruntime runs the file as
            # written, tract through the validation lowering.
            for t in ("u16", "s16"):
                cases.append(Case(f"{name}.{t}", d / "model.onnx", d / "calib", inputs, ("--activations", t)))
            # Power-of-two scales and pruning: plain QDQ with other numbers.
            cases.append(Case(name + ".pow2", d / "model.onnx", d / "calib", inputs, ("--scales", "pow2")))
            cases.append(Case(name + ".prune", d / "model.onnx", d / "calib", inputs, ("--prune", "30")))
    # Every target's placement, timing-free (the default run keeps int8
    # only where it measures a speed-up, which on these small nets may be
    # nowhere), and dynamic quantization where there is a MatMul/Gemm.
    expanded = []
    for c in cases:
        if "--mode" in c.args and c.args[c.args.index("--mode") + 1] in ("weights", "f16"):
            expanded.append(c)
            continue
        expanded.append(Case(c.name, c.model, c.calib, c.inputs, tuple(c.args) + ("--no-speed-select",)))
        # (tract has no Gemm kernel: gemm_bias stays float there.)
        if c.name in ("ppocr_cls", "conv_relu_matmul", "concat_resize_maxpool"):
            for t in ("tract", "portable"):
                expanded.append(
                    Case(f"{c.name}.{t}", c.model, c.calib, c.inputs, tuple(c.args) + ("--target", t, "--no-speed-select"))
                )
        if c.name in ("ppocr_cls", "conv_relu_matmul", "gemm_bias"):
            expanded.append(Case(f"{c.name}.dynamic", c.model, c.calib, c.inputs, ("--mode", "dynamic")))
    return [c for c in expanded if not only or c.name == only]


# ------------------------------------------------------------------ checks


def run(cmd: list[str]) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr.strip()}")


def output_step(model: onnx.ModelProto, name: str, reference: list[np.ndarray]) -> tuple[float, str]:
    """One quantization step of output `name` (see the module docstring)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.input[1] in inits:
        return float(np.max(inits[node.input[1]])), "DequantizeLinear scale"
    lo = min(float(r.min()) for r in reference)
    hi = max(float(r.max()) for r in reference)
    return max(hi - lo, 1e-12) / 255.0, "float output range / 255"


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = float(np.sum((test.astype(np.float64) - ref) ** 2))
    sig = float(np.sum(ref.astype(np.float64) ** 2))
    return 200.0 if err == 0 else 10 * np.log10(max(sig, 1e-30) / err)


def check(case: Case, onnxq: str, work: Path) -> str:
    d = work / case.name
    d.mkdir(parents=True, exist_ok=True)
    q_path = d / "quantized.onnx"
    run([onnxq, "quantize", str(case.model), "--calib", str(case.calib), "-q", "--val-samples", "0", "-o", str(q_path)]
        + case.args)

    q = onnx.load(q_path)
    onnx.checker.check_model(q, full_check=True)
    precision = next((want for tag, (_, want) in PRECISIONS.items() if case.name.endswith("." + tag)), None)
    if precision == "float16":
        n_q = sum(i.data_type == TensorProto.FLOAT16 for i in q.graph.initializer)
    elif precision is not None:
        n_q = sum(n.op_type == precision for n in q.graph.node)
    else:
        n_q = sum(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in q.graph.node)
    if n_q == 0:
        raise RuntimeError(f"the file has no {precision or 'QuantizeLinear or DynamicQuantizeLinear'}")

    sess = ort.InferenceSession(str(q_path), providers=["CPUExecutionProvider"])
    fsess = ort.InferenceSession(str(case.model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ort_out, tract_out, float_out = [], [], []
    for k, inp in enumerate(case.inputs):
        feeds = dict(np.load(inp))
        ort_out.append(sess.run(None, feeds))
        float_out.append(fsess.run(None, feeds))
        out_npz = d / f"tract_{k}.npz"
        run([onnxq, "run", str(q_path), "--input", str(inp), "-o", str(out_npz)])
        z = np.load(out_npz)
        tract_out.append([z[n] for n in names])

    notes = []
    for j, name in enumerate(names):
        step, why = output_step(q, name, [f[j] for f in float_out])
        a = np.stack([o[j] for o in ort_out]).astype(np.float64)
        b = np.stack([t[j] for t in tract_out]).astype(np.float64)
        if a.shape != b.shape:
            raise RuntimeError(f"output {name}: ORT shape {a.shape}, tract shape {b.shape}")
        diff = float(np.max(np.abs(a - b)))
        f = np.stack([o[j] for o in float_out])
        notes.append(
            f"{name}: max|ORT-tract| {diff:.3g} = {diff / step:.2f} step (step {step:.3g}, {why}); "
            f"SQNR vs float: ORT {sqnr_db(f, a):.1f} dB, tract {sqnr_db(f, b):.1f} dB"
        )
        # onnxruntime runs weight-only MatMuls as MatMulNBits, quantizing
        # the activations to int8 on the fly; tract computes them in float.
        allowed = 2 if why == "DequantizeLinear scale" or precision not in (None, "float16") else 1
        if not diff <= allowed * step * (1 + 1e-5):
            raise RuntimeError(f"outputs disagree beyond {allowed} step(s): " + "; ".join(notes))
    ops = sorted({n.op_type for n in q.graph.node
                  if "uant" in n.op_type or n.op_type.startswith(("QLinear", "MatMulInteger", "MatMulNBits"))})
    what = "float16 weight(s)" if precision == "float16" else "quantizer(s)"
    return f"{n_q} {what} [{', '.join(ops)}]; " + "; ".join(notes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnxq", required=True, help="path to the onnxq binary")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    ap.add_argument("-k", dest="only", help="run only the case with this name")
    a = ap.parse_args()
    onnxq = shutil.which(a.onnxq) or a.onnxq
    if not Path(onnxq).is_file():
        print(f"error: --onnxq {a.onnxq}: no such file (build it with cargo build --release)", file=sys.stderr)
        return 2
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    tmp = None
    if a.keep:
        work = a.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="onnxq-cross-")
        work = Path(tmp.name)
    passed, failed = 0, 0
    try:
        cases = make_cases(work, a.only)
        if not cases:
            print(f"error: no case named {a.only}", file=sys.stderr)
            return 2
        for c in cases:
            try:
                msg = check(c, onnxq, work)
                passed += 1
                print(f"PASS {c.name}: {msg}")
            except Exception as e:  # every failure is reported, then the next case runs
                failed += 1
                detail = str(e) if isinstance(e, RuntimeError) else traceback.format_exc()
                print(f"FAIL {c.name}: {type(e).__name__}: {detail}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
